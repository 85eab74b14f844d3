//! Running another program (`systemctl`, `launchctl`, `claude --version`, …) with a time
//! bound, capturing what it printed. A service manager stuck on a stop, or a program that
//! waits for input, must not hang `doctor` or `service`: each run is killed at its deadline
//! and its stdin is closed.

use std::{io, process::Stdio, time::Duration};

/// Most bytes kept of each of stdout and stderr (the programs we run print a few lines).
const MAX_OUTPUT: usize = 64 * 1024;

/// What a finished program printed, and how it ended.
#[derive(Debug, Clone)]
pub(crate) struct Output {
    /// Its exit code; `None` when a signal ended it.
    pub(crate) code: Option<i32>,
    /// Standard output (lossy UTF-8, at most [`MAX_OUTPUT`] bytes).
    pub(crate) stdout: String,
    /// Standard error (lossy UTF-8, at most [`MAX_OUTPUT`] bytes).
    pub(crate) stderr: String,
}

impl Output {
    /// True for exit code 0.
    pub(crate) fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// The first non-empty line of stderr, else of stdout, for messages.
    pub(crate) fn first_line(&self) -> &str {
        self.stderr
            .lines()
            .chain(self.stdout.lines())
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("")
    }
}

/// Runs `argv` (the program is looked up on PATH) and waits at most `timeout`. Errors:
/// `NotFound` when there is no such program, `TimedOut` when it had to be killed.
pub(crate) fn run(argv: &[String], timeout: Duration) -> io::Result<Output> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no program to run"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let child = tokio::process::Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(timeout, child).await.map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{program} did not finish within {timeout:?}"),
            )
        })??;
        let text = |b: &[u8]| String::from_utf8_lossy(&b[..b.len().min(MAX_OUTPUT)]).into_owned();
        Ok(Output {
            code: out.status.code(),
            stdout: text(&out.stdout),
            stderr: text(&out.stderr),
        })
    })
}

/// `argv` as one line a user could paste into a shell (words quoted when needed).
pub(crate) fn shell_line(argv: &[String]) -> String {
    argv.iter()
        .map(|w| sh_quote(w))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `s` as one shell word: as is when it only has safe characters, else single-quoted.
pub(crate) fn sh_quote(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "/._-+:@%,=".contains(c);
    if !s.is_empty() && s.chars().all(safe) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn runs_captures_and_bounds() {
        let out = run(
            &argv(&["sh", "-c", "echo out; echo err >&2; exit 3"]),
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(out.code, Some(3));
        assert_eq!(out.stdout, "out\n");
        assert_eq!(out.first_line(), "err");
        let missing = run(
            &argv(&["claude-relay-no-such-program"]),
            Duration::from_secs(10),
        );
        assert_eq!(missing.unwrap_err().kind(), io::ErrorKind::NotFound);
        let slow = run(&argv(&["sleep", "30"]), Duration::from_millis(200));
        assert_eq!(slow.unwrap_err().kind(), io::ErrorKind::TimedOut);
    }

    #[test]
    fn quoting() {
        assert_eq!(sh_quote("/usr/bin/claude-relay"), "/usr/bin/claude-relay");
        assert_eq!(sh_quote("/a b/claude-relay"), "'/a b/claude-relay'");
        assert_eq!(sh_quote("/it's/x"), r"'/it'\''s/x'");
        assert_eq!(
            shell_line(&argv(&["launchctl", "bootstrap", "gui/501", "/a b"])),
            "launchctl bootstrap gui/501 '/a b'"
        );
    }
}
