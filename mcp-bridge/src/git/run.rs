//! The bounded runner every git call goes through ([`Git`]).
//!
//! Each call:
//! - runs the `git` binary (no libgit2) in a given directory, never through a shell;
//! - has a time limit ([`Git::timeout`], or [`Git::network_timeout`] for clone and fetch),
//!   after which git is killed (`kill_on_drop`);
//! - never prompts: stdin is `/dev/null` unless the call feeds data, `GIT_TERMINAL_PROMPT=0`
//!   (no credential prompts), and network calls run ssh with `BatchMode=yes` unless the user
//!   chose their own ssh command (`GIT_SSH_COMMAND`, `GIT_SSH`, `core.sshCommand`);
//! - never writes the user's index on the side: `GIT_OPTIONAL_LOCKS=0` (so `git status` does
//!   not refresh `.git/index`);
//! - is decided by its directory alone: the repository-selecting variables a parent may have
//!   set (`GIT_DIR`, `GIT_WORK_TREE`, `GIT_INDEX_FILE`, …) are removed;
//! - speaks English (`LC_ALL=C`), so the few messages we recognize are stable;
//! - keeps at most `stdout_cap` bytes of output (default [`DEFAULT_STDOUT_CAP`]) and the first
//!   [`STDERR_KEPT`] bytes of stderr, which errors summarize.

use std::{
    ffi::{OsStr, OsString},
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    process::Command,
};

use super::error::{GitError, summarize_stderr};

/// Default time limit of one local git command.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Default time limit of one clone or fetch.
pub const DEFAULT_NETWORK_TIMEOUT: Duration = Duration::from_secs(600);
/// Default bound on what one git command may print (a `git status` of ~300k paths).
pub const DEFAULT_STDOUT_CAP: usize = 32 << 20;
/// How much of a command's stderr is kept (the rest is read and dropped).
pub const STDERR_KEPT: usize = 64 << 10;

/// Variables that would point git at another repository, index or object store than the
/// directory's own (`git rev-parse --local-env-vars`, plus the config injections).
const REPO_ENV: &[&str] = &[
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
    "GIT_PREFIX",
    "GIT_IMPLICIT_WORK_TREE",
    "GIT_GRAFT_FILE",
    "GIT_NO_REPLACE_OBJECTS",
    "GIT_REPLACE_REF_BASE",
    "GIT_SHALLOW_FILE",
    "GIT_QUARANTINE_PATH",
    "GIT_INTERNAL_SUPER_PREFIX",
    "GIT_CONFIG",
    "GIT_CONFIG_PARAMETERS",
    "GIT_CONFIG_COUNT",
    "GIT_LITERAL_PATHSPECS",
    "GIT_GLOB_PATHSPECS",
    "GIT_NOGLOB_PATHSPECS",
    "GIT_ICASE_PATHSPECS",
];

/// How git is run: the program, the time limits and extra environment. Cheap to clone; one
/// value serves any number of calls.
#[derive(Debug, Clone)]
pub struct Git {
    program: OsString,
    timeout: Duration,
    network_timeout: Duration,
    env: Vec<(OsString, OsString)>,
}

impl Default for Git {
    fn default() -> Self {
        Self {
            program: "git".into(),
            timeout: DEFAULT_TIMEOUT,
            network_timeout: DEFAULT_NETWORK_TIMEOUT,
            env: Vec::new(),
        }
    }
}

impl Git {
    /// `git` from PATH with the default limits and the caller's environment.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs this program instead of `git` from PATH.
    pub fn program(mut self, program: impl Into<OsString>) -> Self {
        self.program = program.into();
        self
    }

    /// The time limit of each local command.
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = limit;
        self
    }

    /// The time limit of each clone or fetch.
    pub fn network_timeout(mut self, limit: Duration) -> Self {
        self.network_timeout = limit;
        self
    }

    /// Sets a variable for every call (tests give each "machine" its own `HOME`; applied after
    /// the runner's own settings, so it can override them).
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// A command run in `dir`.
    pub(crate) fn at<'a>(&'a self, dir: &'a Path) -> Cmd<'a> {
        Cmd {
            git: self,
            dir,
            args: Vec::new(),
            env: Vec::new(),
            stdin: None,
            stdout_cap: DEFAULT_STDOUT_CAP,
            network: false,
        }
    }

    fn user_sets(&self, key: &str) -> bool {
        self.env.iter().any(|(k, _)| k == key) || std::env::var_os(key).is_some()
    }
}

/// What a finished command left.
#[derive(Debug)]
pub(crate) struct Output {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// One git command being assembled (see the module header for what every call gets).
pub(crate) struct Cmd<'a> {
    git: &'a Git,
    dir: &'a Path,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    stdin: Option<Vec<u8>>,
    stdout_cap: usize,
    network: bool,
}

impl Cmd<'_> {
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Feeds `data` on stdin (otherwise stdin is /dev/null).
    pub fn stdin(mut self, data: Vec<u8>) -> Self {
        self.stdin = Some(data);
        self
    }

    /// Bounds stdout: more than `cap` bytes stops git and fails with
    /// [`GitError::OutputTooLarge`].
    pub fn stdout_cap(mut self, cap: usize) -> Self {
        self.stdout_cap = cap;
        self
    }

    /// A clone or fetch: the network time limit and ssh in batch mode.
    pub fn network(mut self) -> Self {
        self.network = true;
        self
    }

    /// The command for messages: `git` and its arguments, shortened.
    fn describe(&self) -> String {
        let mut s = String::from("git");
        for a in &self.args {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
            if s.len() > 100 {
                let cut = (0..=100)
                    .rev()
                    .find(|&i| s.is_char_boundary(i))
                    .unwrap_or(0);
                s.truncate(cut);
                s.push('…');
                break;
            }
        }
        super::url::scrub_credentials(&s)
    }

    /// Runs to the end; any exit status is returned, not an error.
    pub async fn output(self) -> Result<Output, GitError> {
        if !self.dir.is_dir() {
            return Err(GitError::NoSuchDir {
                path: self.dir.to_path_buf(),
            });
        }
        let ssh_batch = self.network && !self.user_has_ssh_command().await;
        let command = self.describe();
        let git = self.git;
        let mut cmd = self.command(ssh_batch);
        let mut child = cmd.spawn().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => GitError::NotInstalled {
                program: git.program.to_string_lossy().into_owned(),
            },
            _ => GitError::Spawn(e),
        })?;
        let limit = if self.network {
            git.network_timeout
        } else {
            git.timeout
        };
        let (stdin, stdout, stderr) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take());
        let (input, cap) = (self.stdin, self.stdout_cap);
        let work = async {
            let feed = async {
                if let (Some(mut pipe), Some(data)) = (stdin, input) {
                    // git may exit before reading everything; its status says what happened.
                    let _ = pipe.write_all(&data).await;
                }
                Ok::<(), GitError>(())
            };
            let (_, out, err) = tokio::try_join!(
                feed,
                read_capped(stdout, cap, &command),
                read_stderr(stderr),
            )?;
            let status = child.wait().await.map_err(GitError::Spawn)?;
            Ok::<_, GitError>(Output {
                status,
                stdout: out,
                stderr: err,
            })
        };
        let finished = tokio::time::timeout(limit, work).await;
        match finished {
            Ok(result) => result,
            Err(_) => Err(GitError::Timeout {
                command,
                after: limit,
            }),
        }
    }

    /// The process to start, with the environment the module header describes.
    fn command(&self, ssh_batch: bool) -> Command {
        let mut cmd = Command::new(&self.git.program);
        cmd.current_dir(self.dir)
            .args(&self.args)
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for key in REPO_ENV {
            cmd.env_remove(key);
        }
        cmd.env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_OPTIONAL_LOCKS", "0")
            .env("LC_ALL", "C");
        if ssh_batch {
            cmd.env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes");
        }
        cmd.envs(self.git.env.iter().map(|(k, v)| (k, v)))
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Runs and requires success; returns stdout.
    pub async fn run(self) -> Result<Vec<u8>, GitError> {
        let command = self.describe();
        let out = self.output().await?;
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(failed(command, &out))
        }
    }

    /// Runs and requires success; returns stdout as text without the final newline.
    pub async fn text(self) -> Result<String, GitError> {
        let out = self.run().await?;
        let text = String::from_utf8_lossy(&out);
        Ok(text.trim_end_matches(['\n', '\r']).to_string())
    }

    /// Whether the user picked an ssh command of their own (then it is left alone).
    async fn user_has_ssh_command(&self) -> bool {
        if self.git.user_sets("GIT_SSH_COMMAND") || self.git.user_sets("GIT_SSH") {
            return true;
        }
        let probe = Cmd {
            git: self.git,
            dir: self.dir,
            args: ["config", "--get", "core.sshCommand"]
                .map(OsString::from)
                .to_vec(),
            env: Vec::new(),
            stdin: None,
            stdout_cap: 64 << 10,
            network: false,
        };
        match Box::pin(probe.output()).await {
            Ok(out) => out.status.success() && !out.stdout.trim_ascii().is_empty(),
            Err(_) => false,
        }
    }
}

/// The error of a command that exited unsuccessfully.
pub(crate) fn failed(command: String, out: &Output) -> GitError {
    let status = match out.status.code() {
        Some(code) => format!("exit {code}"),
        None => "killed by a signal".into(),
    };
    GitError::Failed {
        command,
        status,
        stderr: summarize_stderr(&out.stderr),
    }
}

async fn read_capped(
    pipe: Option<impl AsyncRead + Unpin>,
    cap: usize,
    command: &str,
) -> Result<Vec<u8>, GitError> {
    let mut buf = Vec::new();
    let Some(pipe) = pipe else { return Ok(buf) };
    pipe.take(cap as u64 + 1)
        .read_to_end(&mut buf)
        .await
        .map_err(GitError::Spawn)?;
    if buf.len() > cap {
        return Err(GitError::OutputTooLarge {
            command: command.to_string(),
            limit: cap,
        });
    }
    Ok(buf)
}

async fn read_stderr(pipe: Option<impl AsyncRead + Unpin>) -> Result<Vec<u8>, GitError> {
    let mut kept = Vec::new();
    let Some(mut pipe) = pipe else {
        return Ok(kept);
    };
    let mut chunk = [0u8; 8192];
    loop {
        match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => return Ok(kept),
            Ok(n) => {
                let room = STDERR_KEPT.saturating_sub(kept.len());
                kept.extend_from_slice(&chunk[..n.min(room)]);
            }
        }
    }
}

/// `path` made absolute against `base` (git prints some paths relative to its directory).
pub(crate) fn absolute(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_program_says_git_is_not_installed() {
        let git = Git::new().program("/nonexistent/git-for-relay-test");
        let err = git
            .at(Path::new("/"))
            .arg("--version")
            .run()
            .await
            .unwrap_err();
        assert!(matches!(err, GitError::NotInstalled { .. }), "{err}");
        assert!(err.to_string().contains("git is not installed"), "{err}");
    }

    #[tokio::test]
    async fn a_missing_directory_is_named() {
        let err = Git::new()
            .at(Path::new("/nonexistent/relay-dir"))
            .arg("status")
            .run()
            .await
            .unwrap_err();
        assert!(matches!(err, GitError::NoSuchDir { .. }), "{err}");
    }

    #[tokio::test]
    async fn output_over_the_cap_stops_the_command() {
        // A shell stands in for git in these runner tests: the runner is what is tested.
        let err = Git::new()
            .program("sh")
            .at(Path::new("/"))
            .args(["-c", "yes relay | head -c 100000"])
            .stdout_cap(1000)
            .run()
            .await
            .unwrap_err();
        assert!(
            matches!(err, GitError::OutputTooLarge { limit: 1000, .. }),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_slow_command_is_stopped_at_its_limit() {
        let err = Git::new()
            .program("sh")
            .timeout(Duration::from_millis(200))
            .at(Path::new("/"))
            .args(["-c", "sleep 30"])
            .run()
            .await
            .unwrap_err();
        assert!(matches!(err, GitError::Timeout { .. }), "{err}");
    }

    #[tokio::test]
    async fn calls_never_prompt_never_lock_and_get_their_stdin() {
        let out = Git::new()
            .program("sh")
            .at(Path::new("/"))
            .args([
                "-c",
                "echo \"$GIT_TERMINAL_PROMPT|$GIT_OPTIONAL_LOCKS|$LC_ALL\"; cat",
            ])
            .stdin(b"fed".to_vec())
            .text()
            .await
            .unwrap();
        assert_eq!(out, "0|0|C\nfed");
    }

    #[test]
    fn repository_selecting_variables_are_removed_and_batch_ssh_is_opt_out() {
        let git = Git::new().env("HOME", "/tmp/relay-home");
        let cmd = git.at(Path::new("/")).arg("status").command(true);
        let envs: Vec<_> = cmd.as_std().get_envs().collect();
        for key in [
            "GIT_DIR",
            "GIT_WORK_TREE",
            "GIT_INDEX_FILE",
            "GIT_CONFIG_PARAMETERS",
        ] {
            assert!(envs.contains(&(OsStr::new(key), None)), "{key} is removed");
        }
        let get = |key: &str| envs.iter().find(|(k, _)| *k == key).and_then(|(_, v)| *v);
        assert_eq!(
            get("GIT_SSH_COMMAND"),
            Some(OsStr::new("ssh -o BatchMode=yes"))
        );
        assert_eq!(get("HOME"), Some(OsStr::new("/tmp/relay-home")));
        let plain = git.at(Path::new("/")).arg("status").command(false);
        assert!(
            plain
                .as_std()
                .get_envs()
                .all(|(k, _)| k != "GIT_SSH_COMMAND")
        );
    }

    #[tokio::test]
    async fn a_failure_carries_the_summarized_stderr() {
        let err = Git::new()
            .program("sh")
            .at(Path::new("/"))
            .args(["-c", "echo 'fatal: https://u:tok@h/x gone' >&2; exit 3"])
            .run()
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("exit 3") && msg.contains("https://h/x gone"),
            "{msg}"
        );
        assert!(!msg.contains("tok"), "{msg}");
    }
}
