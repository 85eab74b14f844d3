//! The workspace's `rust-version` is the real minimum: no locked dependency needs a newer
//! Rust, and the README states the same minimum. A dependency update that raises the bar
//! fails here instead of failing for a user's `cargo install --locked`.

use std::process::Command;

use serde_json::Value;

/// `1.95`, `1.88.0` → comparable triples.
fn version(v: &str) -> (u64, u64, u64) {
    let mut parts = v
        .split('.')
        .map(|p| p.parse::<u64>().expect("numeric rust-version"));
    (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    )
}

fn metadata() -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // Not --offline: the metadata covers every platform's packages, and a package only some
    // other platform builds (say, a wasm-only dependency of a dev-dependency) is not
    // downloaded by this machine's build; cargo fetches it once (`.ci/run` runs `cargo fetch`).
    let out = Command::new(cargo)
        .args(["metadata", "--locked", "--format-version", "1"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cargo metadata JSON")
}

#[test]
fn rust_version_covers_every_locked_dependency_and_the_readme_says_it() {
    let meta = metadata();
    let packages = meta["packages"].as_array().unwrap();
    let ours = packages
        .iter()
        .find(|p| p["name"] == "claude-relay")
        .expect("the root package");
    let declared = ours["rust_version"]
        .as_str()
        .expect("the workspace declares rust-version");
    let needs_more: Vec<String> = packages
        .iter()
        .filter_map(|p| {
            let v = p["rust_version"].as_str()?;
            (version(v) > version(declared)).then(|| {
                format!(
                    "{} {} needs {v}",
                    p["name"].as_str().unwrap_or_default(),
                    p["version"].as_str().unwrap_or_default()
                )
            })
        })
        .collect();
    assert!(
        needs_more.is_empty(),
        "rust-version = {declared:?} in Cargo.toml, but: {needs_more:?}; raise it (and the README)"
    );
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    assert!(
        readme.contains(&format!("Rust ({declared} or newer)")),
        "README.md must say \"Rust ({declared} or newer)\""
    );
    assert!(
        readme.contains("cargo install --locked --path ."),
        "README.md's install line must build the locked dependencies"
    );
}
