//! The root package's integration tests, as one test binary.
//!
//! Each file next to this one is a module of this crate (`mod` lines below), not a binary
//! of its own: cargo runs test binaries one after another, but the tests of one binary run
//! side by side, and nearly every test here waits on sockets, child processes or timers
//! rather than on the CPU. As one binary they overlap, and the workspace links one test
//! executable instead of one per file. How many run at once: `.cargo/config.toml`
//! (`RUST_TEST_THREADS`). Run one file's tests with `cargo test --test suite <file>::`.
//!
//! A new test file must be added below; `every_test_file_is_a_module_of_the_suite` fails
//! when one is not (otherwise it would silently never build or run).
//!
//! Shared harness: [`common`].
#![allow(clippy::unwrap_used)] // a test that unwraps fails loudly; that is what it is for

mod common;

mod approvals_channel;
mod approvals_cli;
mod approvals_hub;
mod bad_network;
mod bridge_durability;
mod bridge_lifecycle;
mod bridge_outbox;
mod bridge_probe;
mod bridge_reconnect;
mod bridge_tools;
mod cli_doctor;
mod cli_service;
mod cli_sessions;
mod cli_tail;
mod conn_memory;
mod console_browser;
mod console_http;
mod dead_links;
mod disk_full;
mod durability;
mod hostile;
mod hostile_conns;
mod hostile_listings;
mod hostile_output;
mod hostile_store;
mod hub_logs;
mod hub_protocol;
mod impair_proxy;
mod limits;
mod operator;
mod plugin_claude_code;
mod refusal_logs;
mod rust_version;
mod secrets_in_logs;
mod security_ownership;
mod security_privacy;
mod security_tls;
mod security_token;
mod store_damage;
mod store_upgrade;
mod tasks_bridges;
mod tasks_git;
mod tasks_hub;
mod threads;
mod wake_channel;
mod wake_hooks;
mod wake_relay_wait;
mod wake_wait;

/// A file in `tests/` that is not declared above is never compiled: cargo's test discovery
/// is off (`autotests = false` in Cargo.toml) so that this suite is the only test binary.
#[test]
fn every_test_file_is_a_module_of_the_suite() {
    let declared: Vec<&str> = include_str!("suite.rs")
        .lines()
        .filter_map(|line| line.strip_prefix("mod ")?.strip_suffix(';'))
        .collect();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        let is_module =
            path.extension().is_some_and(|e| e == "rs") || path.join("mod.rs").is_file();
        if is_module && stem != "suite" && !declared.contains(&stem) {
            missing.push(stem.to_owned());
        }
    }
    assert!(
        missing.is_empty(),
        "tests/{{{}}}.rs: not a module of tests/suite.rs, so never built or run — add `mod NAME;` \
         there (and `use crate::common;` in place of `mod common;` in the file)",
        missing.join(",")
    );
}
