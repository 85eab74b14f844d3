//! The session registry: `~/.claude-relay/sessions/registry.json`, the local record of which
//! human-readable names exist, where (cwd, host) and which processes hold them.
//!
//! Several processes write it at once — every bridge on start and exit, `claude-session`,
//! `claude-sessions` pruning ghosts — so every change goes through [`Registry::update`]:
//! take an exclusive lock on the sibling `registry.lock`, read, change, write a temp file in
//! the same directory, fsync it, rename it over the registry. Readers ([`Registry::load`])
//! take no lock: a rename is atomic, so they see the old file or the new one, never half of
//! one. A file that is not a registry at all (not JSON, `sessions` not an object) is moved
//! aside (`registry.json.corrupt-<ms>`) with a warning rather than bricking every tool that
//! reads it. Within a good file, entries are read one by one: an entry this version cannot
//! read (an unknown `state`, a field of the wrong type — say, written by a newer claude-relay)
//! costs only itself. It is reported ([`RegistryFile::unreadable`]) and written back exactly
//! as it was, as are fields this version does not know, so an older binary never destroys
//! what a newer one recorded.
//!
//! An ended session keeps its entry (name → cwd), so a session restarted in the same
//! directory can come home to the same name. The schema is documented in `docs/REGISTRY.md`.

use std::{
    collections::BTreeMap,
    fs::{self, File, OpenOptions, TryLockError},
    io::{self, Write},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::{
    liveness::{self, ProcessStamp},
    paths, time,
};

/// The schema version this code writes.
pub const VERSION: u32 = 1;

/// Bound on the number of entries kept. Ended (then named-but-never-started) entries are
/// evicted oldest first beyond it; running ones never are. Bridges named by hostname+pid make
/// a new name every run, so without a cap the file would grow forever.
pub const MAX_ENTRIES: usize = 1024;

/// How long [`Registry::update`] waits for the lock by default before giving up with
/// [`RegistryError::LockTimeout`]. The lock is held only for one read-modify-write, so
/// waiting this long means a holder is stuck (e.g. stopped with SIGSTOP).
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the registry could not be read or written. Every variant names the file involved.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry's directory could not be created.
    #[error("cannot create the registry directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The lock file could not be opened or locked.
    #[error("cannot lock the registry via {path}: {source}")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Another process held the lock for longer than the timeout.
    #[error(
        "timed out after {waited:?} waiting for the registry lock {path} (another claude-relay process holds it)"
    )]
    LockTimeout {
        /// The lock file.
        path: PathBuf,
        /// How long we waited.
        waited: Duration,
    },
    /// The registry file exists but could not be read.
    #[error("cannot read the registry {path}: {source}")]
    Read {
        /// The registry file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Writing the temp file or renaming it over the registry failed.
    #[error("cannot write the registry {path}: {source}")]
    Write {
        /// The file being written.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A corrupt registry could not be moved aside.
    #[error("the registry {path} is corrupt and could not be moved aside: {source}")]
    MoveAside {
        /// The corrupt registry file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// Handle on one registry file. Holds only the path; every call opens, locks and closes what
/// it needs, so a handle is cheap and can be shared or re-created freely.
#[derive(Debug, Clone)]
pub struct Registry {
    path: PathBuf,
    lock_timeout: Duration,
}

impl Registry {
    /// The registry at `path` (its lock file is the sibling with extension `.lock`).
    pub fn at(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
        }
    }

    /// The registry at [`paths::registry_path`] (honours `CLAUDE_RELAY_HOME`).
    pub fn open_default() -> Self {
        Self::at(paths::registry_path())
    }

    /// Sets how long [`update`](Self::update) waits for the lock. A bridge on its way out
    /// may want to wait less than [`DEFAULT_LOCK_TIMEOUT`].
    pub fn with_lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// The registry file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The lock file's path (`registry.lock` next to `registry.json`).
    pub fn lock_path(&self) -> PathBuf {
        self.path.with_extension("lock")
    }

    /// Reads the registry without locking (the file is only ever replaced by rename). A
    /// missing file is an empty registry; a corrupt one is moved aside (under the lock) and
    /// read as empty.
    pub fn load(&self) -> Result<RegistryFile, RegistryError> {
        match self.read_raw()? {
            None => Ok(RegistryFile::default()),
            Some(bytes) => match parse(&bytes) {
                Ok(file) => Ok(file),
                Err(_) => {
                    let _lock = self.lock()?;
                    Ok(self.read_locked()?.0)
                }
            },
        }
    }

    /// Locks the registry, reads it, lets `f` change it, and writes it back atomically
    /// (skipping the write when nothing changed). Returns what `f` returned.
    pub fn update<R>(&self, f: impl FnOnce(&mut RegistryFile) -> R) -> Result<R, RegistryError> {
        let _lock = self.lock()?;
        let (mut file, raw) = self.read_locked()?;
        let out = f(&mut file);
        file.version = VERSION;
        file.trim(MAX_ENTRIES);
        let mut bytes = serde_json::to_vec_pretty(&file).expect("registry always serializes");
        bytes.push(b'\n');
        if raw.as_deref() != Some(bytes.as_slice()) {
            self.write_atomic(&bytes)?;
        }
        Ok(out)
    }

    /// The file's bytes, or `None` when it does not exist.
    fn read_raw(&self) -> Result<Option<Vec<u8>>, RegistryError> {
        match fs::read(&self.path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(RegistryError::Read {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// Reads the registry while holding the lock, moving a corrupt file aside. Returns the
    /// parsed file and the raw bytes it came from (to skip no-op writes).
    fn read_locked(&self) -> Result<(RegistryFile, Option<Vec<u8>>), RegistryError> {
        let Some(bytes) = self.read_raw()? else {
            return Ok((RegistryFile::default(), None));
        };
        match parse(&bytes) {
            Ok(file) => Ok((file, Some(bytes))),
            Err(err) => {
                let aside = self.path.with_file_name(format!(
                    "{}.corrupt-{}",
                    file_name(&self.path),
                    time::now_ms()
                ));
                fs::rename(&self.path, &aside).map_err(|source| RegistryError::MoveAside {
                    path: self.path.clone(),
                    source,
                })?;
                tracing::warn!(
                    "the session registry {} was unreadable ({err}); moved it to {} and started a fresh one",
                    self.path.display(),
                    aside.display()
                );
                Ok((RegistryFile::default(), None))
            }
        }
    }

    /// Takes the exclusive lock, polling with a short backoff up to the lock timeout. The
    /// lock is released when the returned file is dropped (closed).
    fn lock(&self) -> Result<File, RegistryError> {
        let dir = parent_dir(&self.path);
        fs::create_dir_all(dir).map_err(|source| RegistryError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let lock_path = self.lock_path();
        let lock_err = |source| RegistryError::Lock {
            path: lock_path.clone(),
            source,
        };
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(lock_err)?;
        let start = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            match try_lock(&file) {
                Ok(()) => return Ok(file),
                Err(TryLockError::WouldBlock) => {
                    let waited = start.elapsed();
                    if waited >= self.lock_timeout {
                        return Err(RegistryError::LockTimeout {
                            path: lock_path,
                            waited,
                        });
                    }
                    std::thread::sleep(pause);
                    // Short cap: the lock is held for one small read-modify-write.
                    pause = (pause * 2).min(Duration::from_millis(8));
                }
                Err(TryLockError::Error(source)) => return Err(lock_err(source)),
            }
        }
    }

    /// Writes `bytes` to a temp file beside the registry, fsyncs it, renames it over the
    /// registry and fsyncs the directory. Called with the lock held, so one temp name is
    /// enough (a crashed writer's leftover is simply overwritten).
    fn write_atomic(&self, bytes: &[u8]) -> Result<(), RegistryError> {
        let tmp = self
            .path
            .with_file_name(format!("{}.tmp", file_name(&self.path)));
        let write_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| RegistryError::Write { path, source }
        };
        let mut f = File::create(&tmp).map_err(write_err(&tmp))?;
        f.write_all(bytes).map_err(write_err(&tmp))?;
        f.sync_all().map_err(write_err(&tmp))?;
        drop(f);
        fs::rename(&tmp, &self.path).map_err(write_err(&self.path))?;
        #[cfg(unix)]
        if let Ok(dir) = File::open(parent_dir(&self.path)) {
            // Makes the rename itself durable; failure here loses nothing already visible.
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

fn try_lock(file: &File) -> Result<(), TryLockError> {
    file.try_lock()
}

fn parse(bytes: &[u8]) -> Result<RegistryFile, serde_json::Error> {
    // An empty file (e.g. `touch`ed by hand) is an empty registry, not a corrupt one.
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(RegistryFile::default());
    }
    serde_json::from_slice(bytes)
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "registry.json".into())
}

fn now_iso() -> String {
    time::iso(time::now_ms())
}

/// The whole registry file.
#[derive(Default, Clone, Debug)]
pub struct RegistryFile {
    /// Schema version ([`VERSION`]).
    pub version: u32,
    /// Every known session by name.
    pub sessions: BTreeMap<String, Entry>,
    /// Entries this version cannot read, by name: kept as they were and written back
    /// unchanged (an entry of the same name in `sessions` replaces one here).
    pub unreadable: BTreeMap<String, Unreadable>,
    /// Top-level fields this version does not know, written back unchanged.
    pub extra: Map<String, Value>,
}

/// A registry entry that could not be read.
#[derive(Clone, Debug, PartialEq)]
pub struct Unreadable {
    /// The entry exactly as it is in the file.
    pub raw: Value,
    /// Why it could not be read.
    pub reason: String,
}

/// The file's shape before entries are read one by one.
#[derive(Serialize, Deserialize)]
struct RawFile {
    #[serde(default)]
    version: u32,
    #[serde(default)]
    sessions: Map<String, Value>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

impl<'de> Deserialize<'de> for RegistryFile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawFile::deserialize(d)?;
        let mut file = RegistryFile {
            version: raw.version,
            extra: raw.extra,
            ..Default::default()
        };
        for (name, value) in raw.sessions {
            match Entry::deserialize(&value) {
                Ok(entry) => {
                    file.sessions.insert(name, entry);
                }
                Err(e) => {
                    file.unreadable.insert(
                        name,
                        Unreadable {
                            raw: value,
                            reason: e.to_string(),
                        },
                    );
                }
            }
        }
        Ok(file)
    }
}

impl Serialize for RegistryFile {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error;
        let mut sessions = Map::new();
        for (name, u) in &self.unreadable {
            sessions.insert(name.clone(), u.raw.clone());
        }
        for (name, e) in &self.sessions {
            sessions.insert(
                name.clone(),
                serde_json::to_value(e).map_err(S::Error::custom)?,
            );
        }
        // Keys in name order, as the BTreeMap wrote them before.
        sessions.sort_keys();
        RawFile {
            version: self.version,
            sessions,
            extra: self.extra.clone(),
        }
        .serialize(s)
    }
}

/// Where a session stands in its life.
#[derive(Serialize, Deserialize, Default, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum EntryState {
    /// Named by `claude-session` in a shell; no agent has started under it yet.
    #[default]
    Named,
    /// A bridge runs under this name (it may have died since: see [`Entry::is_live`]).
    Running,
    /// The bridge ended (or was found dead). The entry stays so the name can come home.
    Ended,
}

/// One session's record.
#[derive(Serialize, Deserialize, Default, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// Named, running or ended.
    #[serde(default)]
    pub state: EntryState,
    /// The session's working directory (physical path, as `getcwd` reports it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// The machine the session runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The agent process (the bridge's parent, e.g. Claude Code).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<ProcessStamp>,
    /// The bridge process itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<ProcessStamp>,
    /// `CLAUDE_CODE_SESSION_ID` the bridge was started with (lets hooks find their session).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claude_session_id: Option<String>,
    /// The hub URL the bridge connects to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay_url: Option<String>,
    /// When `claude-session` named it (ISO-8601).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub named_at: Option<String>,
    /// When the current (or last) bridge started (ISO-8601).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// When the last bridge ended or was found dead (ISO-8601).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    /// When the entry last changed (ISO-8601); "most recently used" means this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    /// Fields this version does not know (written by a newer one), kept and written back.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Entry {
    /// True when the entry is `Running` and its process still runs: the bridge's stamp if
    /// recorded, else the agent's. Pid reuse does not fool it (stamps carry start times).
    pub fn is_live(&self) -> bool {
        self.state == EntryState::Running && self.process().is_some_and(|s| liveness::is_alive(&s))
    }

    /// The process that stands for this session: the bridge, else the agent.
    pub fn process(&self) -> Option<ProcessStamp> {
        self.bridge.or(self.agent)
    }

    /// `updated_at` as Unix milliseconds (0 when missing or unreadable), for recency order.
    fn recency(&self) -> i64 {
        self.updated_at
            .as_deref()
            .and_then(time::parse_iso)
            .unwrap_or(0)
    }
}

/// What a bridge records when it starts under a name ([`RegistryFile::mark_running`]).
#[derive(Default, Clone, Debug)]
pub struct EntryUpdate {
    /// Working directory; kept from the old entry when `None`.
    pub cwd: Option<String>,
    /// Host name; kept from the old entry when `None`.
    pub host: Option<String>,
    /// The agent (the bridge's parent). Replaces the old stamp, even with `None`.
    pub agent: Option<ProcessStamp>,
    /// The bridge itself. Replaces the old stamp, even with `None`.
    pub bridge: Option<ProcessStamp>,
    /// `CLAUDE_CODE_SESSION_ID`. Replaces the old value, even with `None`.
    pub claude_session_id: Option<String>,
    /// Hub URL; kept from the old entry when `None`.
    pub relay_url: Option<String>,
}

impl RegistryFile {
    /// The most recently used name recorded for `cwd`, if any.
    pub fn name_for_cwd(&self, cwd: &str) -> Option<&str> {
        self.names_for_cwd(cwd).into_iter().next()
    }

    /// Every name recorded for `cwd`, most recently used first.
    pub fn names_for_cwd(&self, cwd: &str) -> Vec<&str> {
        let mut found: Vec<(&str, &Entry)> = self
            .sessions
            .iter()
            .filter(|(_, e)| e.cwd.as_deref() == Some(cwd))
            .map(|(n, e)| (n.as_str(), e))
            .collect();
        found.sort_by(|a, b| b.1.recency().cmp(&a.1.recency()).then(a.0.cmp(b.0)));
        found.into_iter().map(|(n, _)| n).collect()
    }

    /// The session a Claude Code session id belongs to (the most recently used if several).
    pub fn find_by_claude_session(&self, claude_session_id: &str) -> Option<(&str, &Entry)> {
        self.sessions
            .iter()
            .filter(|(_, e)| e.claude_session_id.as_deref() == Some(claude_session_id))
            .max_by(|a, b| a.1.recency().cmp(&b.1.recency()).then(b.0.cmp(a.0)))
            .map(|(n, e)| (n.as_str(), e))
    }

    /// Marks `Running` entries whose process is dead as `Ended` (keeping name → cwd) and
    /// returns the names it changed.
    pub fn prune_ghosts(&mut self) -> Vec<String> {
        let now = now_iso();
        let mut changed = Vec::new();
        for (name, e) in &mut self.sessions {
            if e.state == EntryState::Running && !e.is_live() {
                e.state = EntryState::Ended;
                e.ended_at = Some(now.clone());
                e.updated_at = Some(now.clone());
                changed.push(name.clone());
            }
        }
        changed
    }

    /// Records that the next agent started from a shell in `cwd` will be `name` (what
    /// `claude-session NAME` does). Returns `false` and changes nothing when a live session
    /// holds the name: its record must not be clobbered.
    pub fn mark_named(&mut self, name: &str, cwd: Option<String>) -> bool {
        let now = now_iso();
        let e = self.sessions.entry(name.to_string()).or_default();
        if e.is_live() {
            return false;
        }
        *e = Entry {
            state: EntryState::Named,
            cwd: cwd.or(e.cwd.take()),
            host: e.host.take(),
            relay_url: e.relay_url.take(),
            named_at: Some(now.clone()),
            updated_at: Some(now),
            ..Entry::default()
        };
        true
    }

    /// Records that a bridge now runs under `name` (after the hub accepted the name).
    pub fn mark_running(&mut self, name: &str, up: EntryUpdate) {
        let now = now_iso();
        let e = self.sessions.entry(name.to_string()).or_default();
        e.state = EntryState::Running;
        if up.cwd.is_some() {
            e.cwd = up.cwd;
        }
        if up.host.is_some() {
            e.host = up.host;
        }
        if up.relay_url.is_some() {
            e.relay_url = up.relay_url;
        }
        e.agent = up.agent;
        e.bridge = up.bridge;
        e.claude_session_id = up.claude_session_id;
        e.started_at = Some(now.clone());
        e.ended_at = None;
        e.updated_at = Some(now);
    }

    /// Records that the bridge `bridge_pid` running `name` ended. Acts only when the entry
    /// is `Running` under that very bridge (a newer bridge may own the name by now); returns
    /// whether it changed anything.
    pub fn mark_ended(&mut self, name: &str, bridge_pid: u32) -> bool {
        let Some(e) = self.sessions.get_mut(name) else {
            return false;
        };
        if e.state != EntryState::Running || e.bridge.map(|b| b.pid) != Some(bridge_pid) {
            return false;
        }
        let now = now_iso();
        e.state = EntryState::Ended;
        e.ended_at = Some(now.clone());
        e.updated_at = Some(now);
        true
    }

    /// Evicts entries beyond `max`: ended ones first, then named ones, oldest first. Running
    /// entries are never evicted (nor unreadable ones: this version cannot tell what they are).
    pub fn trim(&mut self, max: usize) {
        if self.sessions.len() <= max {
            return;
        }
        let mut evictable: Vec<(u8, i64, String)> = self
            .sessions
            .iter()
            .filter_map(|(n, e)| match e.state {
                EntryState::Ended => Some((0, e.recency(), n.clone())),
                EntryState::Named => Some((1, e.recency(), n.clone())),
                EntryState::Running => None,
            })
            .collect();
        evictable.sort();
        let excess = self.sessions.len() - max;
        for (_, _, name) in evictable.into_iter().take(excess) {
            self.sessions.remove(&name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_registry() -> (tempfile::TempDir, Registry) {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::at(dir.path().join("sessions").join("registry.json"));
        (dir, reg)
    }

    fn dead_stamp() -> ProcessStamp {
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let s = liveness::stamp(child.id()).expect("child exists until reaped");
        child.wait().unwrap();
        assert!(!liveness::is_alive(&s));
        s
    }

    #[test]
    fn missing_file_is_empty_and_update_creates_it() {
        let (_d, reg) = temp_registry();
        assert!(reg.load().unwrap().sessions.is_empty());
        reg.update(|f| f.mark_named("CC-1", Some("/src/app".into())))
            .unwrap();
        let text = fs::read_to_string(reg.path()).unwrap();
        assert!(text.contains(r#""version": 1"#), "{text}");
        assert!(text.contains(r#""state": "named""#), "{text}");
        assert!(text.contains(r#""namedAt""#), "{text}");
        let f = reg.load().unwrap();
        assert_eq!(f.sessions["CC-1"].cwd.as_deref(), Some("/src/app"));
        assert!(reg.lock_path().ends_with("sessions/registry.lock"));
        // No temp file is left behind.
        let names: Vec<_> = fs::read_dir(reg.path().parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(
            names.iter().filter(|n| n.contains(".tmp")).count(),
            0,
            "{names:?}"
        );
    }

    #[test]
    fn concurrent_updates_from_threads_lose_nothing() {
        let (_d, reg) = temp_registry();
        std::thread::scope(|s| {
            for t in 0..8 {
                let reg = reg.clone();
                s.spawn(move || {
                    for i in 0..50 {
                        reg.update(|f| {
                            f.sessions.insert(format!("T{t}-{i}"), Entry::default());
                        })
                        .unwrap();
                    }
                });
            }
            // Readers running alongside never see a half-written file.
            let reg = reg.clone();
            s.spawn(move || {
                for _ in 0..200 {
                    let text = match fs::read(reg.path()) {
                        Ok(t) => t,
                        Err(_) => continue,
                    };
                    serde_json::from_slice::<RegistryFile>(&text).expect("whole file");
                }
            });
        });
        assert_eq!(reg.load().unwrap().sessions.len(), 400);
    }

    const CHILD_ENV: &str = "SESSIONS_REGISTRY_TEST_CHILD";

    /// Not a test on its own: the body of the multi-process test below, run in a child
    /// process (the test binary re-executed) when `CHILD_ENV` is set.
    #[test]
    fn child_process_worker() {
        let Ok(spec) = std::env::var(CHILD_ENV) else {
            return;
        };
        let (path, tag) = spec.split_once('\n').unwrap();
        let reg = Registry::at(path);
        for i in 0..50 {
            reg.update(|f| {
                f.sessions.insert(format!("{tag}-{i}"), Entry::default());
            })
            .unwrap();
        }
    }

    #[test]
    fn concurrent_updates_from_processes_lose_nothing() {
        let (_d, reg) = temp_registry();
        let exe = std::env::current_exe().unwrap();
        let mut children: Vec<_> = (0..4)
            .map(|p| {
                std::process::Command::new(&exe)
                    .args([
                        "--exact",
                        "registry::tests::child_process_worker",
                        "--test-threads=1",
                        "--quiet",
                    ])
                    .env(CHILD_ENV, format!("{}\nP{p}", reg.path().display()))
                    .stdout(std::process::Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        for c in &mut children {
            loop {
                if let Some(status) = c.try_wait().unwrap() {
                    assert!(status.success(), "child failed: {status}");
                    break;
                }
                if Instant::now() > deadline {
                    let _ = c.kill();
                    panic!("child process did not finish in time");
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let f = reg.load().unwrap();
        assert_eq!(f.sessions.len(), 200, "{:?}", f.sessions.keys());
    }

    #[test]
    fn lock_timeout_is_reported_with_the_path() {
        let (_d, reg) = temp_registry();
        let reg = reg.with_lock_timeout(Duration::from_millis(50));
        let held = reg.lock().unwrap();
        let err = reg.update(|_| ()).unwrap_err();
        assert!(matches!(err, RegistryError::LockTimeout { .. }), "{err}");
        assert!(err.to_string().contains("registry.lock"), "{err}");
        drop(held);
        reg.update(|_| ()).unwrap();
    }

    #[test]
    fn corrupt_file_is_moved_aside_and_the_registry_starts_fresh() {
        let (_d, reg) = temp_registry();
        fs::create_dir_all(reg.path().parent().unwrap()).unwrap();
        fs::write(reg.path(), b"{\"sessions\": {\"CC-1\": tru").unwrap();
        assert!(reg.load().unwrap().sessions.is_empty());
        let aside: Vec<_> = fs::read_dir(reg.path().parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().contains("registry.json.corrupt-"))
            .collect();
        assert_eq!(aside.len(), 1);
        assert_eq!(
            fs::read(&aside[0]).unwrap(),
            b"{\"sessions\": {\"CC-1\": tru"
        );
        assert!(!reg.path().exists());
        reg.update(|f| f.mark_named("CC-2", None)).unwrap();
        assert!(reg.load().unwrap().sessions.contains_key("CC-2"));

        // The same through update() directly, with a file whose `sessions` is no object.
        fs::write(reg.path(), br#"{"version":1,"sessions":[1,2]}"#).unwrap();
        reg.update(|f| assert!(f.sessions.is_empty())).unwrap();
        // An empty file is just empty.
        fs::write(reg.path(), b"").unwrap();
        assert!(reg.load().unwrap().sessions.is_empty());
    }

    #[test]
    fn an_unreadable_entry_costs_only_itself_and_is_written_back_unchanged() {
        let (_d, reg) = temp_registry();
        fs::create_dir_all(reg.path().parent().unwrap()).unwrap();
        fs::write(
            reg.path(),
            br#"{"version":1,"future":{"x":1},"sessions":{
                "CC-1":{"state":"ended","cwd":"/a","colour":"blue"},
                "NEW":{"state":"sleeping","cwd":"/n"},
                "ODD":{"state":"named","cwd":42}}}"#,
        )
        .unwrap();
        let f = reg.load().unwrap();
        assert_eq!(f.sessions.keys().collect::<Vec<_>>(), ["CC-1"]);
        assert_eq!(f.sessions["CC-1"].cwd.as_deref(), Some("/a"));
        assert_eq!(
            f.unreadable.keys().collect::<Vec<_>>(),
            ["NEW", "ODD"],
            "reported"
        );
        assert!(
            f.unreadable["NEW"].reason.contains("sleeping"),
            "{:?}",
            f.unreadable
        );
        // A write keeps everything this version did not understand, as it was.
        reg.update(|f| f.mark_named("CC-2", Some("/b".into())))
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&fs::read(reg.path()).unwrap()).unwrap();
        assert_eq!(
            v["sessions"]["NEW"],
            serde_json::json!({"state":"sleeping","cwd":"/n"})
        );
        assert_eq!(v["sessions"]["ODD"]["cwd"], 42);
        assert_eq!(v["sessions"]["CC-1"]["colour"], "blue");
        assert_eq!(v["future"], serde_json::json!({"x": 1}));
        assert_eq!(v["sessions"]["CC-2"]["state"], "named");
        let names: Vec<&String> = v["sessions"].as_object().unwrap().keys().collect();
        assert_eq!(names, ["CC-1", "CC-2", "NEW", "ODD"], "still in name order");
        // Naming an unreadable name replaces it with a readable entry.
        reg.update(|f| f.mark_named("NEW", None)).unwrap();
        let f = reg.load().unwrap();
        assert_eq!(f.sessions["NEW"].state, EntryState::Named);
        assert!(!f.unreadable.contains_key("NEW"));
        let v: serde_json::Value = serde_json::from_slice(&fs::read(reg.path()).unwrap()).unwrap();
        assert_eq!(v["sessions"]["NEW"]["state"], "named");
    }

    #[test]
    fn prune_ghosts_ends_dead_sessions_and_keeps_their_cwd() {
        let (_d, reg) = temp_registry();
        let dead = dead_stamp();
        let me = liveness::current();
        reg.update(|f| {
            f.mark_running(
                "GHOST",
                EntryUpdate {
                    cwd: Some("/src/ghost".into()),
                    bridge: Some(dead),
                    ..Default::default()
                },
            );
            f.mark_running(
                "LIVE",
                EntryUpdate {
                    cwd: Some("/src/live".into()),
                    bridge: Some(me),
                    ..Default::default()
                },
            );
            f.mark_named("WAITING", Some("/src/waiting".into()));
        })
        .unwrap();
        let f = reg.load().unwrap();
        assert!(!f.sessions["GHOST"].is_live());
        assert!(f.sessions["LIVE"].is_live());
        assert!(!f.sessions["WAITING"].is_live());

        let pruned = reg.update(|f| f.prune_ghosts()).unwrap();
        assert_eq!(pruned, vec!["GHOST".to_string()]);
        let f = reg.load().unwrap();
        let ghost = &f.sessions["GHOST"];
        assert_eq!(ghost.state, EntryState::Ended);
        assert!(ghost.ended_at.is_some());
        assert_eq!(f.name_for_cwd("/src/ghost"), Some("GHOST"));
        assert_eq!(f.sessions["LIVE"].state, EntryState::Running);
        assert_eq!(f.sessions["WAITING"].state, EntryState::Named);
        // Pruning again changes nothing.
        assert!(reg.update(|f| f.prune_ghosts()).unwrap().is_empty());
    }

    #[test]
    fn a_stamp_with_a_reused_pid_is_a_ghost() {
        let me = liveness::current();
        let mut f = RegistryFile::default();
        f.mark_running(
            "OLD",
            EntryUpdate {
                bridge: Some(ProcessStamp {
                    started: me.started - 3600,
                    ..me
                }),
                ..Default::default()
            },
        );
        assert!(!f.sessions["OLD"].is_live());
        assert_eq!(f.prune_ghosts(), vec!["OLD".to_string()]);
    }

    #[test]
    fn mark_ended_only_for_the_owning_bridge() {
        let mut f = RegistryFile::default();
        let me = liveness::current();
        f.mark_running(
            "CC-1",
            EntryUpdate {
                bridge: Some(me),
                claude_session_id: Some("abc".into()),
                ..Default::default()
            },
        );
        assert!(!f.mark_ended("CC-1", me.pid + 1));
        assert_eq!(f.sessions["CC-1"].state, EntryState::Running);
        assert!(!f.mark_ended("NOPE", me.pid));
        assert!(f.mark_ended("CC-1", me.pid));
        assert_eq!(f.sessions["CC-1"].state, EntryState::Ended);
        assert!(!f.mark_ended("CC-1", me.pid), "already ended");
        assert_eq!(
            f.find_by_claude_session("abc").map(|(n, _)| n),
            Some("CC-1")
        );
        assert!(f.find_by_claude_session("zzz").is_none());
    }

    #[test]
    fn naming_does_not_clobber_a_live_session() {
        let mut f = RegistryFile::default();
        f.mark_running(
            "CC-1",
            EntryUpdate {
                cwd: Some("/a".into()),
                bridge: Some(liveness::current()),
                ..Default::default()
            },
        );
        assert!(!f.mark_named("CC-1", Some("/b".into())));
        assert_eq!(f.sessions["CC-1"].state, EntryState::Running);
        assert_eq!(f.sessions["CC-1"].cwd.as_deref(), Some("/a"));

        f.mark_running(
            "CC-2",
            EntryUpdate {
                cwd: Some("/a".into()),
                bridge: Some(dead_stamp()),
                ..Default::default()
            },
        );
        assert!(f.mark_named("CC-2", Some("/c".into())));
        let e = &f.sessions["CC-2"];
        assert_eq!(e.state, EntryState::Named);
        assert_eq!(e.cwd.as_deref(), Some("/c"));
        assert!(e.bridge.is_none(), "a named entry has no process yet");
    }

    #[test]
    fn name_for_cwd_prefers_the_most_recent() {
        let mut f = RegistryFile::default();
        for (name, at) in [("A", 1_000), ("B", 3_000), ("C", 2_000)] {
            f.sessions.insert(
                name.into(),
                Entry {
                    cwd: Some("/x".into()),
                    updated_at: Some(time::iso(at)),
                    ..Default::default()
                },
            );
        }
        assert_eq!(f.name_for_cwd("/x"), Some("B"));
        assert_eq!(f.names_for_cwd("/x"), vec!["B", "C", "A"]);
        assert_eq!(f.name_for_cwd("/y"), None);
    }

    #[test]
    fn trim_evicts_ended_then_named_never_running() {
        let mut f = RegistryFile::default();
        let mk = |state, at| Entry {
            state,
            updated_at: Some(time::iso(at)),
            ..Default::default()
        };
        f.sessions.insert("R".into(), mk(EntryState::Running, 0));
        f.sessions.insert("N-old".into(), mk(EntryState::Named, 1));
        f.sessions.insert("E-old".into(), mk(EntryState::Ended, 2));
        f.sessions.insert("E-new".into(), mk(EntryState::Ended, 9));
        f.trim(2);
        let left: Vec<_> = f.sessions.keys().cloned().collect();
        assert_eq!(left, vec!["N-old", "R"]);
        f.trim(1);
        assert_eq!(f.sessions.keys().collect::<Vec<_>>(), vec!["R"]);
        f.trim(0);
        assert_eq!(f.sessions.len(), 1, "running entries stay");
    }
}
