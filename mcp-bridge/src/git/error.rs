//! The one error type of the git handoff ([`GitError`]). Every message says what failed and,
//! where there is one, what the user can do about it; git's own stderr is summarized (last
//! lines, credentials in URLs removed, control characters replaced) so an error stays short
//! and safe to show to the model.

use std::{io, path::PathBuf, time::Duration};

/// Why reading, snapshotting or recreating git state failed.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// The `git` program could not be found.
    #[error(
        "git is not installed (no `{program}` on PATH): install git, or hand off without the git state"
    )]
    NotInstalled {
        /// The program that was looked for.
        program: String,
    },
    /// A directory the operation needs does not exist.
    #[error("{} does not exist or is not a directory", path.display())]
    NoSuchDir {
        /// The directory.
        path: PathBuf,
    },
    /// `git` could not be started (other than "not installed").
    #[error("cannot run git: {0}")]
    Spawn(#[source] io::Error),
    /// A git command ran past its time limit and was killed.
    #[error("`{command}` did not finish within {} s and was stopped", after.as_secs())]
    Timeout {
        /// The command, shortened.
        command: String,
        /// The limit it ran into.
        after: Duration,
    },
    /// A git command exited with an error.
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        /// The command, shortened.
        command: String,
        /// Exit code or signal.
        status: String,
        /// git's stderr, summarized.
        stderr: String,
    },
    /// A git command printed more than the caller's bound.
    #[error("`{command}` printed more than {limit} bytes")]
    OutputTooLarge {
        /// The command, shortened.
        command: String,
        /// The bound, in bytes.
        limit: usize,
    },
    /// The directory is not inside a git work tree (checkout was pointed at a non-repository).
    #[error("{} is not a git work tree", path.display())]
    NotAWorkTree {
        /// The directory.
        path: PathBuf,
    },
    /// The branch has no commit yet, so there is nothing to hand over or build on.
    #[error("the repository at {} has no commits yet: commit once, or hand off without the git state", path.display())]
    NoCommits {
        /// The work tree.
        path: PathBuf,
    },
    /// A task id that cannot name a git ref or branch.
    #[error("task id {id:?} cannot name a git ref: {reason}")]
    BadTaskId {
        /// The id as given.
        id: String,
        /// Why.
        reason: &'static str,
    },
    /// A received git context that is malformed (it came from another machine: never trusted).
    #[error("the task's git context is unusable: {0}")]
    BadContext(String),
    /// A received bundle that is malformed or does not carry what the context says.
    #[error("the task's bundle is unusable: {0}")]
    BadBundle(String),
    /// The checkout target exists and holds something.
    #[error("{} already exists and is not an empty directory: choose another directory", path.display())]
    TargetNotEmpty {
        /// The directory.
        path: PathBuf,
    },
    /// The branch the checkout would create already exists.
    #[error("branch {branch} already exists in {}: delete it (git branch -D {branch}) or check out in another repository", repo.display())]
    BranchExists {
        /// `relay/<id>`.
        branch: String,
        /// The repository.
        repo: PathBuf,
    },
    /// Commits the checkout needs are neither on this machine, nor on the remote, nor in a
    /// bundle.
    #[error("the sender's work cannot be rebuilt here: {0}")]
    MissingCommits(String),
    /// Local file work (temp files, the target directory) failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, naming the file.
        what: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl GitError {
    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}

/// The last few lines of git's stderr, at most `MAX` characters, with credentials removed
/// from URLs and control characters replaced: fit for an error message.
pub(crate) fn summarize_stderr(raw: &[u8]) -> String {
    const MAX: usize = 400;
    let text = String::from_utf8_lossy(raw);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let tail = &lines[lines.len().saturating_sub(3)..];
    let joined = super::url::scrub_credentials(&tail.join("; "));
    let clean: String = joined
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if clean.is_empty() {
        return "no error output".into();
    }
    match clean.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &clean[..cut]),
        None => clean,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_summary_keeps_the_last_lines_without_credentials() {
        let raw = b"hint: zero\nhint: one\nhint: two\n\nfatal: unable to access 'https://me:ghp_secret@github.com/a/b/': 403\x1b[31m\n";
        let s = summarize_stderr(raw);
        assert!(!s.contains("ghp_secret"), "{s}");
        assert!(!s.contains('\x1b'), "{s}");
        assert!(
            s.starts_with(
                "hint: one; hint: two; fatal: unable to access 'https://github.com/a/b/'"
            ),
            "{s}"
        );
        assert_eq!(summarize_stderr(b"\n \n"), "no error output");
        let long = "x".repeat(1000);
        assert_eq!(summarize_stderr(long.as_bytes()).chars().count(), 401);
    }
}
