//! Spawning and stopping a real hub process (`claude-relay hub --port 0`), finding its port
//! from the `listening on ws://HOST:PORT` line it prints to stderr.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

/// How long any harness wait may take before the test fails.
pub(crate) const WAIT: Duration = Duration::from_secs(15);

/// Path of the binary under test.
pub(crate) fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_claude-relay")
}

/// A running hub process. Killed when dropped.
pub(crate) struct Hub {
    /// The child process.
    pub child: Child,
    /// `ws://127.0.0.1:PORT`.
    pub url: String,
    /// The port it listens on.
    pub port: u16,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Lines the hub wrote to stderr after the listening line (collected in the background).
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// Options for [`Hub::start_with`].
#[derive(Clone, Default)]
pub(crate) struct HubOpts {
    /// Port to bind (0 = any free port).
    pub port: u16,
    /// Extra arguments after `hub`.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
}

impl HubOpts {
    /// Options for a hub that requires `token`: it is written to `dir/hub.token` (the first
    /// line, as `--token-file` reads it) and passed with `--token-file`, then `extra` flags.
    pub(crate) fn with_token(dir: &Path, token: &str, extra: &[&str]) -> HubOpts {
        let file = dir.join("hub.token");
        std::fs::write(&file, format!("{token}\n")).expect("write token file");
        let mut args = vec!["--token-file".to_string(), file.display().to_string()];
        args.extend(extra.iter().map(|s| s.to_string()));
        HubOpts {
            args,
            ..Default::default()
        }
    }
}

impl Hub {
    /// Starts a hub on a free port with its data dir under `dir`.
    pub(crate) async fn start(dir: &Path) -> Hub {
        Self::start_with(dir, HubOpts::default()).await
    }

    /// Starts a hub on a given port (say, the port of a hub that was just killed: a restart
    /// on the same address and data directory).
    pub(crate) async fn start_on(dir: &Path, port: u16) -> Hub {
        Self::start_with(
            dir,
            HubOpts {
                port,
                ..Default::default()
            },
        )
        .await
    }

    /// Starts a hub with options; panics (failing the test) if it does not come up in time.
    pub(crate) async fn start_with(dir: &Path, opts: HubOpts) -> Hub {
        let data_dir = dir.join("hub-data");
        let mut cmd = Command::new(bin());
        super::clean_env(&mut cmd);
        cmd.arg("hub")
            .arg("--host")
            .arg("127.0.0.1")
            .arg("--port")
            .arg(opts.port.to_string())
            .arg("--data-dir")
            .arg(&data_dir)
            .args(&opts.args)
            .env("CLAUDE_RELAY_HOME", dir.join("home"))
            .env_remove("RELAY_HOST")
            .env_remove("RELAY_PORT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn hub");
        let stderr = child.stderr.take().expect("hub stderr");
        let mut lines = BufReader::new(stderr).lines();
        let mut seen = Vec::new();
        let (scheme, port) = tokio::time::timeout(WAIT, async {
            while let Some(line) = lines.next_line().await.expect("read hub stderr") {
                if let Some(rest) = line.split("listening on ").nth(1)
                    && let Some((scheme, addr)) = rest.trim().split_once("://")
                {
                    let port = addr.rsplit(':').next().unwrap().parse::<u16>().unwrap();
                    return (scheme.to_string(), port);
                }
                seen.push(line);
            }
            panic!("hub exited before listening; stderr: {seen:#?}");
        })
        .await
        .expect("hub did not print its listening line in time");
        let log = std::sync::Arc::new(std::sync::Mutex::new(seen));
        let sink = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        Hub {
            child,
            url: format!("{scheme}://127.0.0.1:{port}"),
            port,
            data_dir,
            log,
        }
    }

    /// Starts a hub whose token is `token` (written to `dir/hub.token`, passed with
    /// `--token-file`), with `extra` arguments; returns the hub and the token file.
    pub(crate) async fn start_with_token(
        dir: &Path,
        token: &str,
        extra: &[&str],
    ) -> (Hub, PathBuf) {
        let token_file = dir.join("hub.token");
        std::fs::write(&token_file, format!("{token}\n")).unwrap();
        let mut args = vec!["--token-file".to_string(), token_file.display().to_string()];
        args.extend(extra.iter().map(|s| s.to_string()));
        let hub = Self::start_with(
            dir,
            HubOpts {
                args,
                ..HubOpts::default()
            },
        )
        .await;
        (hub, token_file)
    }

    /// Sends SIGKILL and waits for the process to go.
    pub(crate) async fn kill(&mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(WAIT, self.child.wait()).await;
    }

    /// Sends SIGTERM and returns the exit status (bounded by [`WAIT`]).
    pub(crate) async fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().expect("hub running") as i32;
        signal(pid, "TERM");
        tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("hub did not exit after SIGTERM")
            .expect("wait hub")
    }

    /// The hub's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id().expect("hub running")
    }
}

/// Sends a signal by name (`TERM`, `KILL`, `INT`, `STOP`, `CONT`).
pub(crate) fn signal(pid: i32, name: &str) {
    let sig = match name {
        "KILL" => libc::SIGKILL,
        "TERM" => libc::SIGTERM,
        "INT" => libc::SIGINT,
        "STOP" => libc::SIGSTOP,
        "CONT" => libc::SIGCONT,
        other => panic!("signal {other} is not one the tests send"),
    };
    // The syscall itself, not a `kill` process: a test that kills a hub mid-burst needs the
    // signal sent now, not after a fork and exec that a loaded machine can stretch while
    // the hub acks the rest of the burst.
    // SAFETY: kill(2) with a pid this test started and a valid signal number.
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(
        rc,
        0,
        "kill -{name} {pid}: {}",
        std::io::Error::last_os_error()
    );
}

/// Forbids the process `pid` to grow any file past `bytes` (what a full disk does to SQLite).
#[cfg(target_os = "linux")]
pub(crate) fn limit_file_size(pid: u32, bytes: u64) {
    let limit = libc::rlimit {
        rlim_cur: bytes as libc::rlim_t,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: prlimit only reads `limit`; a null old-limit pointer is allowed.
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_FSIZE,
            &limit,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

/// A memory figure of process `pid` from `/proc/PID/status`, in KiB: `VmRSS` (resident now)
/// or `VmHWM` (the peak). Linux only, as the tests that read it.
pub(crate) fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}
