//! The hub under test: either one this generator starts (a release binary on `--port 0`
//! with a fresh temporary data dir, durable store on, killed at the end) or one that is
//! already running (`--url`, optionally `--hub-pid` for CPU and memory figures).
//!
//! A fresh hub per scenario run keeps runs independent: an empty store, no sessions left over
//! from the previous scenario, and RSS that starts from rest.

use std::{
    cell::RefCell,
    path::{Path, PathBuf},
    process::Stdio,
    rc::Rc,
    time::Duration,
};

use anyhow::{Context, bail};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

/// How long a started hub has to print its listening line.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// Warnings/errors kept from the hub's log for the report (the rest are only counted).
const KEEP_LINES: usize = 5;

/// What the hub logged at WARN or ERROR while we watched (its log at INFO is discarded).
#[derive(Default, Debug)]
pub(crate) struct LogTally {
    /// WARN lines seen.
    pub warnings: u64,
    /// ERROR lines seen.
    pub errors: u64,
    /// The first few of them, for the report.
    pub first: Vec<String>,
}

/// A hub to measure.
pub(crate) struct HubUnderTest {
    /// `ws://HOST:PORT`.
    pub url: String,
    /// Its process id, when known (CPU and RSS come from /proc/PID).
    pub pid: Option<u32>,
    child: Option<Child>,
    _data: Option<tempfile::TempDir>,
    /// What it logged (only for a hub we started).
    pub log: Rc<RefCell<LogTally>>,
}

/// A fresh temporary data dir for one run.
fn temp_dir() -> anyhow::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("loadgen-hub-")
        .tempdir()
        .context("creating the hub's temporary data dir")
}

/// The default hub binary: `claude-relay` next to the directory of this example's executable
/// (`target/release/examples/loadgen` → `target/release/claude-relay`).
pub(crate) fn default_hub_bin() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.parent()?.join("claude-relay"))
}

impl HubUnderTest {
    /// A hub that is already running.
    pub(crate) fn external(url: String, pid: Option<u32>) -> Self {
        Self {
            url,
            pid,
            child: None,
            _data: None,
            log: Rc::default(),
        }
    }

    /// Starts `bin hub --host 127.0.0.1 --port 0 --data-dir <fresh temp dir> EXTRA…` and
    /// waits for its `listening on ws://…` line on stderr. Must run inside a `LocalSet` (the
    /// rest of its log is drained by a local task).
    pub(crate) async fn start(bin: &Path, extra: &[String]) -> anyhow::Result<Self> {
        if !bin.is_file() {
            bail!(
                "hub binary {} not found: run `cargo build --release` first, or pass --hub-bin PATH",
                bin.display()
            );
        }
        let data = temp_dir()?;
        let mut cmd = Command::new(bin);
        cmd.args(["hub", "--host", "127.0.0.1", "--port", "0", "--data-dir"])
            .arg(data.path())
            .args(extra)
            .env_remove("RELAY_HOST")
            .env_remove("RELAY_PORT")
            .env_remove("RELAY_DATA_DIR")
            .env_remove("RELAY_SYNC");
        Self::spawn(cmd, bin, data).await
    }

    /// Starts the floor relay (this generator, `--serve-floor <fresh temp dir>`: see
    /// [`crate::floor`]) the same way; with `presence`, it sends the Node relay's presence.
    pub(crate) async fn start_floor(presence: bool) -> anyhow::Result<Self> {
        let bin = std::env::current_exe().context("locating the generator's own binary")?;
        let data = temp_dir()?;
        let mut cmd = Command::new(&bin);
        cmd.arg("--serve-floor").arg(data.path());
        if presence {
            cmd.arg("--floor-presence");
        }
        Self::spawn(cmd, &bin, data).await
    }

    async fn spawn(mut cmd: Command, bin: &Path, data: tempfile::TempDir) -> anyhow::Result<Self> {
        // SAFETY: prctl is async-signal-safe; it only asks the kernel to SIGKILL the child
        // when this (single-threaded) generator dies, so an interrupted run leaves no hub behind.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id();
        let mut lines = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
        let mut seen = Vec::new();
        let url = tokio::time::timeout(START_TIMEOUT, async {
            while let Some(line) = lines.next_line().await? {
                if let Some(at) = line.find("listening on ") {
                    return Ok(line[at + "listening on ".len()..].trim().to_string());
                }
                seen.push(line);
            }
            anyhow::Ok(String::new())
        })
        .await
        .context("the hub did not print its listening line in time")??;
        if url.is_empty() {
            bail!("the hub exited before listening:\n{}", seen.join("\n"));
        }
        let log: Rc<RefCell<LogTally>> = Rc::default();
        let tally = log.clone();
        tokio::task::spawn_local(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let mut t = tally.borrow_mut();
                let warn = line.contains(" WARN ");
                let error = line.contains(" ERROR ");
                t.warnings += warn as u64;
                t.errors += error as u64;
                if (warn || error) && t.first.len() < KEEP_LINES {
                    t.first.push(line);
                }
            }
        });
        Ok(Self {
            url,
            pid,
            child: Some(child),
            _data: Some(data),
            log,
        })
    }

    /// Kills a hub we started (SIGKILL: it must not spend minutes telling thousands of
    /// sessions that the others left; the store is a throw-away temp dir) and waits for it.
    /// An external hub is left alone.
    pub(crate) async fn stop(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
        }
    }
}
