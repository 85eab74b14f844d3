//! `claude-relay service install|uninstall|status` against a throw-away HOME.
//!
//! No service is ever started: `systemctl` and `launchctl` on the PATH the binary sees are
//! small recording scripts (they log their arguments, and `launchctl print` / `systemctl
//! show` answer from a state file), so the tests see exactly which commands the binary runs.
//! What the service manager would read is checked for real: the systemd unit by
//! `systemd-analyze verify` (Debian's systemd; `.ci/run` installs it and sets
//! `RELAY_TEST_REQUIRE_SYSTEMD=1`), the plist by a plist parser.

use crate::common;

use std::{
    io::Write as _,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Output, Stdio},
};

use common::hub::{Hub, HubOpts, WAIT, bin};
use tokio::process::Command;

/// A recording stand-in for `systemctl` / `launchctl`: appends its arguments to `$FAKE_LOG`;
/// `systemctl --user show …` prints `$FAKE_STATE`; `launchctl print` succeeds only while
/// `$FAKE_STATE` exists, which `bootstrap` creates and `bootout` removes.
const FAKE: &str = r#"#!/bin/sh
echo "$(basename "$0") $*" >> "$FAKE_LOG"
case "$(basename "$0") $1 $2" in
  "systemctl --user show") cat "$FAKE_STATE" 2>/dev/null ;;
  "launchctl print "*) [ -e "$FAKE_STATE" ] || exit 113 ;;
  "launchctl bootstrap "*) : > "$FAKE_STATE" ;;
  "launchctl bootout "*) rm -f "$FAKE_STATE" ;;
esac
exit 0
"#;

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        let env = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::create_dir_all(env.home()).unwrap();
        let fakes = env.dir.path().join("fake-bin");
        std::fs::create_dir_all(&fakes).unwrap();
        for name in ["systemctl", "launchctl"] {
            let p = fakes.join(name);
            std::fs::write(&p, FAKE).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        env
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("manager.log")
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("manager.state")
    }

    /// The commands the binary ran since the last call, one per line.
    fn calls(&self) -> Vec<String> {
        let text = std::fs::read_to_string(self.log()).unwrap_or_default();
        let _ = std::fs::remove_file(self.log());
        text.lines().map(String::from).collect()
    }

    /// `claude-relay service ARGS` as the user of this HOME, with the recording service
    /// managers first on PATH.
    async fn output(&self, args: &[&str]) -> Output {
        let mut c = Command::new(bin());
        common::clean_env(&mut c);
        c.arg("service")
            .args(args)
            .env("HOME", self.home())
            .env(
                "PATH",
                format!(
                    "{}:/usr/bin:/bin",
                    self.dir.path().join("fake-bin").display()
                ),
            )
            .env("FAKE_LOG", self.log())
            .env("FAKE_STATE", self.state())
            .env_remove("XDG_CONFIG_HOME")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        tokio::time::timeout(WAIT, c.output())
            .await
            .expect("service timed out")
            .unwrap()
    }

    /// [`Self::output`], which must succeed unless it is `status`.
    async fn run(&self, args: &[&str]) -> Output {
        let out = self.output(args).await;
        assert!(
            out.status.success() || args[0] == "status",
            "service {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Every file under HOME (directories included), relative.
    fn files(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, base: &Path, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                out.push(p.strip_prefix(base).unwrap().to_path_buf());
                if p.is_dir() {
                    walk(&p, base, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.home(), &self.home(), &mut out);
        out.sort();
        out
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The file a dry run shows between `--- begin PATH ---` and `--- end PATH ---`.
fn shown_file(out: &str, path: &Path) -> String {
    let begin = format!("--- begin {} ---\n", path.display());
    let end = format!("--- end {} ---\n", path.display());
    let start = out
        .find(&begin)
        .unwrap_or_else(|| panic!("no {begin:?} in\n{out}"))
        + begin.len();
    let stop = out[start..].find(&end).expect("end marker") + start;
    out[start..stop].to_string()
}

fn exe() -> String {
    Path::new(bin())
        .canonicalize()
        .unwrap()
        .display()
        .to_string()
}

/// `systemd-analyze --user verify` on `unit`; `None` when systemd-analyze is not installed
/// (allowed only without `RELAY_TEST_REQUIRE_SYSTEMD`).
fn systemd_verify(unit: &str) -> Option<std::process::Output> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("claude-relay-hub.service");
    std::fs::write(&file, unit).unwrap();
    // A user-mode verify needs a runtime directory; give it a private one.
    let runtime = dir.path().join("runtime");
    std::fs::create_dir(&runtime).unwrap();
    std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).unwrap();
    match std::process::Command::new("systemd-analyze")
        .args(["--user", "verify"])
        .arg(&file)
        .env("XDG_RUNTIME_DIR", &runtime)
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) => Some(out),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                std::env::var_os("RELAY_TEST_REQUIRE_SYSTEMD").is_none(),
                "systemd-analyze is not installed but RELAY_TEST_REQUIRE_SYSTEMD is set"
            );
            None
        }
        Err(e) => panic!("cannot run systemd-analyze: {e}"),
    }
}

#[tokio::test]
async fn dry_run_prints_the_systemd_unit_and_commands_and_changes_nothing() {
    let env = Env::new();
    let token = env.dir.path().join("hub.token");
    std::fs::write(&token, "t\n").unwrap();
    let data = env.dir.path().join("hub data");
    let out = env
        .run(&[
            "install",
            "--dry-run",
            "--system",
            "systemd",
            "--port",
            "4567",
            "--data-dir",
            data.to_str().unwrap(),
            "--token-file",
            token.to_str().unwrap(),
        ])
        .await;
    let text = stdout(&out);
    let unit_path = env
        .home()
        .join(".config/systemd/user/claude-relay-hub.service");
    let unit = shown_file(&text, &unit_path);
    let exec = format!(
        "ExecStart={} hub --host 127.0.0.1 --port 4567 --data-dir \"{}\" --token-file {}\n",
        exe(),
        data.display(),
        token.canonicalize().unwrap().display()
    );
    assert!(unit.contains(&exec), "want {exec:?} in\n{unit}");
    assert!(unit.contains("Restart=always\n") && unit.contains("WantedBy=default.target\n"));
    assert!(
        text.ends_with(
            "run: systemctl --user daemon-reload\n\
             run: systemctl --user enable --now claude-relay-hub.service\n"
        ),
        "{text}"
    );
    assert!(env.files().is_empty(), "a dry run wrote {:?}", env.files());
    assert!(env.calls().is_empty(), "a dry run ran the service manager");

    match systemd_verify(&unit) {
        Some(v) => {
            let said = String::from_utf8_lossy(&v.stderr);
            assert!(
                v.status.success(),
                "systemd-analyze verify refused the unit: {said}\n{unit}"
            );
            assert!(
                said.trim().is_empty(),
                "systemd-analyze verify warned: {said}\n{unit}"
            );
        }
        // Straight to stderr: the test harness would swallow eprintln! of a passing test.
        None => {
            let _ = writeln!(
                std::io::stderr(),
                "\n*** SKIPPED: systemd-analyze is not installed, so the unit was not verified \
                 (apt-get install systemd; CI sets RELAY_TEST_REQUIRE_SYSTEMD=1) ***\n"
            );
        }
    }
}

#[tokio::test]
async fn dry_run_prints_a_launchd_plist_that_parses() {
    let env = Env::new();
    let out = env
        .run(&[
            "install",
            "--dry-run",
            "--system",
            "launchd",
            "--port",
            "4568",
        ])
        .await;
    let text = stdout(&out);
    let plist_path = env
        .home()
        .join("Library/LaunchAgents/com.claude-relay.hub.plist");
    let shown = shown_file(&text, &plist_path);
    let parsed = plist::Value::from_reader_xml(shown.as_bytes())
        .unwrap_or_else(|e| panic!("the plist does not parse: {e}\n{shown}"));
    let dict = parsed.as_dictionary().expect("a dictionary");
    assert_eq!(dict["Label"].as_string(), Some("com.claude-relay.hub"));
    let args: Vec<&str> = dict["ProgramArguments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_string().unwrap())
        .collect();
    assert_eq!(
        args,
        [
            exe().as_str(),
            "hub",
            "--host",
            "127.0.0.1",
            "--port",
            "4568"
        ]
    );
    assert_eq!(dict["RunAtLoad"].as_boolean(), Some(true));
    assert_eq!(dict["KeepAlive"].as_boolean(), Some(true));
    let logs = env.home().join("Library/Logs/claude-relay");
    assert_eq!(
        dict["StandardErrorPath"].as_string(),
        Some(logs.join("hub.err.log").to_str().unwrap())
    );
    let uid = String::from_utf8(
        std::process::Command::new("id")
            .arg("-u")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let domain = format!("gui/{}", uid.trim());
    assert!(
        text.starts_with(&format!(
            "--dry-run: nothing was written or run. `claude-relay service install` would:\n\
             create directory {}\nwrite {}:\n",
            logs.display(),
            plist_path.display()
        )),
        "{text}"
    );
    assert!(
        text.ends_with(&format!(
            "run: launchctl enable {domain}/com.claude-relay.hub\n\
             run: launchctl bootstrap {domain} {}\n",
            plist_path.display()
        )),
        "{text}"
    );
    assert!(env.files().is_empty(), "a dry run wrote {:?}", env.files());
    // Only the read-only question "is it loaded?" was asked.
    assert_eq!(
        env.calls(),
        [format!("launchctl print {domain}/com.claude-relay.hub")]
    );
}

#[tokio::test]
async fn systemd_install_is_idempotent_and_uninstall_twice_is_fine() {
    let env = Env::new();
    let dry = stdout(
        &env.run(&["install", "--dry-run", "--system", "systemd"])
            .await,
    );
    let unit_path = env
        .home()
        .join(".config/systemd/user/claude-relay-hub.service");

    let first = stdout(&env.run(&["install", "--system", "systemd"]).await);
    assert_eq!(
        std::fs::read_to_string(&unit_path).unwrap(),
        shown_file(&dry, &unit_path),
        "install wrote something else than the dry run showed"
    );
    assert_eq!(
        env.calls(),
        [
            "systemctl --user daemon-reload",
            "systemctl --user enable --now claude-relay-hub.service"
        ]
    );
    assert!(first.contains("claude-relay service status"), "{first}");

    let before = std::fs::read(&unit_path).unwrap();
    let again = stdout(&env.run(&["install", "--system", "systemd"]).await);
    assert_eq!(std::fs::read(&unit_path).unwrap(), before);
    assert!(again.contains("is up to date"), "{again}");
    // Already installed: restarted, so it runs this binary.
    assert_eq!(
        env.calls(),
        [
            "systemctl --user daemon-reload",
            "systemctl --user enable claude-relay-hub.service",
            "systemctl --user restart claude-relay-hub.service"
        ]
    );
    assert_eq!(env.files().len(), 4, "{:?}", env.files()); // .config/systemd/user/unit

    env.run(&["uninstall", "--system", "systemd"]).await;
    assert!(!unit_path.exists());
    assert_eq!(
        env.calls(),
        [
            "systemctl --user disable --now claude-relay-hub.service",
            "systemctl --user daemon-reload"
        ]
    );
    let twice = stdout(&env.run(&["uninstall", "--system", "systemd"]).await);
    assert!(twice.contains("not installed"), "{twice}");
    assert!(env.calls().is_empty());
}

#[tokio::test]
async fn launchd_install_loads_then_restarts_and_uninstall_boots_out() {
    let env = Env::new();
    let plist_path = env
        .home()
        .join("Library/LaunchAgents/com.claude-relay.hub.plist");
    env.run(&["install", "--system", "launchd"]).await;
    assert!(plist_path.is_file());
    assert!(env.home().join("Library/Logs/claude-relay").is_dir());
    let calls = env.calls();
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert!(calls[0].starts_with("launchctl print gui/"));
    assert!(calls[1].starts_with("launchctl enable gui/"));
    assert!(calls[2].starts_with("launchctl bootstrap gui/") && calls[2].ends_with(".plist"));

    let before = std::fs::read(&plist_path).unwrap();
    env.run(&["install", "--system", "launchd"]).await;
    assert_eq!(std::fs::read(&plist_path).unwrap(), before);
    let calls = env.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(
        calls[1].starts_with("launchctl kickstart -k gui/"),
        "{calls:?}"
    );

    // Different flags: the loaded agent is replaced.
    env.run(&["install", "--system", "launchd", "--port", "4570"])
        .await;
    assert!(
        std::fs::read_to_string(&plist_path)
            .unwrap()
            .contains("<string>4570</string>")
    );
    let calls = env.calls();
    assert!(calls[1].starts_with("launchctl bootout gui/"), "{calls:?}");
    assert!(
        calls
            .last()
            .unwrap()
            .starts_with("launchctl bootstrap gui/"),
        "{calls:?}"
    );

    env.run(&["uninstall", "--system", "launchd"]).await;
    assert!(!plist_path.exists());
    let calls = env.calls();
    assert!(calls[1].starts_with("launchctl bootout gui/"), "{calls:?}");
    let twice = stdout(&env.run(&["uninstall", "--system", "launchd"]).await);
    assert!(twice.contains("not installed"), "{twice}");
}

#[tokio::test]
async fn status_pings_the_hub_the_service_was_installed_with() {
    let env = Env::new();
    let token = env.dir.path().join("hub.token");
    std::fs::write(&token, "status-token-91ab\n").unwrap();
    let mut hub = Hub::start_with(
        env.dir.path(),
        HubOpts {
            args: vec!["--token-file".into(), token.display().to_string()],
            ..HubOpts::default()
        },
    )
    .await;

    // Not installed: says so, and how.
    let out = env.run(&["status", "--system", "systemd"]).await;
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.starts_with("installed: no"), "{text}");
    assert!(text.contains("claude-relay service install"), "{text}");

    let port = hub.port.to_string();
    env.run(&[
        "install",
        "--system",
        "systemd",
        "--port",
        &port,
        "--token-file",
        token.to_str().unwrap(),
    ])
    .await;
    std::fs::write(
        env.state(),
        format!(
            "LoadState=loaded\nActiveState=active\nSubState=running\nMainPID={}\nUnitFileState=enabled\n",
            hub.pid()
        ),
    )
    .unwrap();
    let out = env.run(&["status", "--system", "systemd"]).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("loaded:    yes (enabled)"), "{text}");
    assert!(
        text.contains(&format!("running:   yes (pid {})", hub.pid())),
        "{text}"
    );
    // The hub has a token: only the unit's --token-file gets this answer.
    assert!(
        text.contains(&format!(
            "reachable: yes — ws://127.0.0.1:{port} answered (hub {})",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    assert!(!text.contains("status-token-91ab"), "{text}");

    hub.kill().await;
    std::fs::write(
        env.state(),
        "LoadState=loaded\nActiveState=activating\nSubState=auto-restart\nMainPID=0\n",
    )
    .unwrap();
    let out = env.run(&["status", "--system", "systemd"]).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("running:   no\n"), "{text}");
    assert!(
        text.contains("reachable: no — the hub at ws://127.0.0.1:"),
        "{text}"
    );
}

#[tokio::test]
async fn install_refuses_an_open_network_hub_and_missing_files() {
    let env = Env::new();
    let out = env
        .output(&[
            "install",
            "--dry-run",
            "--system",
            "systemd",
            "--host",
            "0.0.0.0",
        ])
        .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("without a token"),
        "{out:?}"
    );
    let out = env
        .output(&[
            "install",
            "--system",
            "systemd",
            "--token-file",
            "/no/such/token",
        ])
        .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--token-file /no/such/token"),
        "{out:?}"
    );
    assert!(
        env.calls().is_empty(),
        "a refused install ran the service manager"
    );
    assert!(env.files().is_empty());
}

#[test]
fn the_tunnel_example_plist_parses() {
    // The one service file kept in examples/ (an SSH tunnel; not rendered by the binary).
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/com.claude-relay.tunnel.plist");
    let parsed =
        plist::Value::from_file(&path).expect("examples/com.claude-relay.tunnel.plist parses");
    let dict = parsed.as_dictionary().unwrap();
    assert_eq!(dict["Label"].as_string(), Some("com.claude-relay.tunnel"));
    assert_eq!(dict["KeepAlive"].as_boolean(), Some(true));
}
