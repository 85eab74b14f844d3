//! `claude-relay init bash|zsh|fish`: prints the shell functions `claude-session`,
//! `claude-sessions` and `claude-peers`, for `eval "$(claude-relay init zsh)"` in a shell rc
//! file (fish: `claude-relay init fish | source`).
//!
//! The functions are thin: all logic (validating the name, recording it in the registry,
//! reusing the name recorded for the current directory) lives in `claude-relay sessions`, so
//! the three shells behave the same. The only thing a child process cannot do — export
//! `CLAUDE_RELAY_SESSION_ID` into the user's shell — is what the function adds. The binary is
//! called by the absolute path it was started from, so the functions keep working when PATH
//! changes.

use std::process::ExitCode;

use super::external::sh_quote;

/// Arguments of `claude-relay init`.
#[derive(Debug, clap::Args)]
pub(crate) struct InitArgs {
    /// The shell to print functions for.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// Shells we print functions for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Shell {
    /// GNU bash.
    Bash,
    /// Z shell.
    Zsh,
    /// fish.
    Fish,
}

/// Runs `claude-relay init`.
pub(super) fn run(args: InitArgs) -> anyhow::Result<ExitCode> {
    print!("{}", script(args.shell, &binary_path()));
    Ok(ExitCode::SUCCESS)
}

/// The absolute path of this executable, falling back to `claude-relay` (found on PATH).
fn binary_path() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.into_os_string().into_string().ok())
        .unwrap_or_else(|| "claude-relay".into())
}

/// The functions for `shell`, calling the binary at `bin`.
pub(super) fn script(shell: Shell, bin: &str) -> String {
    match shell {
        Shell::Bash | Shell::Zsh => posix_script(shell, &sh_quote(bin)),
        Shell::Fish => fish_script(&fish_quote(bin)),
    }
}

fn posix_script(shell: Shell, bin: &str) -> String {
    let (name, rc) = match shell {
        Shell::Zsh => ("zsh", "~/.zshrc"),
        _ => ("bash", "~/.bashrc"),
    };
    format!(
        r#"# claude-relay shell functions ({name}). In {rc}:  eval "$(claude-relay init {name})"
# claude-session NAME   name the next agent started from this shell, then run: claude
# claude-session        reuse the name recorded for this directory
# claude-sessions       every session: name, pid, alive, connected, cwd
# claude-peers          only the sessions connected to the hub
unalias claude-session claude-sessions claude-peers 2>/dev/null || true
function claude-session {{
    local __claude_relay_id
    __claude_relay_id="$({bin} sessions name "$@")" || return
    export CLAUDE_RELAY_SESSION_ID="$__claude_relay_id"
}}
function claude-sessions {{
    {bin} sessions "$@"
}}
function claude-peers {{
    {bin} sessions --connected "$@"
}}
"#
    )
}

fn fish_script(bin: &str) -> String {
    format!(
        r#"# claude-relay shell functions (fish). In ~/.config/fish/config.fish:  claude-relay init fish | source
# claude-session NAME   name the next agent started from this shell, then run: claude
# claude-session        reuse the name recorded for this directory
# claude-sessions       every session: name, pid, alive, connected, cwd
# claude-peers          only the sessions connected to the hub
function claude-session --description 'Name the next agent session started from this shell'
    set -l __claude_relay_id ({bin} sessions name $argv)
    or return $status
    set -gx CLAUDE_RELAY_SESSION_ID $__claude_relay_id
end
function claude-sessions --description 'List claude-relay sessions'
    {bin} sessions $argv
end
function claude-peers --description 'List claude-relay sessions connected to the hub'
    {bin} sessions --connected $argv
end
"#
    )
}

/// Single-quotes `s` for fish (backslash and `'` are escaped with a backslash).
fn fish_quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', r"\\").replace('\'', r"\'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(fish_quote(r"/a\b/it's"), r"'/a\\b/it\'s'");
    }

    #[test]
    fn scripts_call_the_given_binary() {
        let s = script(Shell::Zsh, "/opt/my tools/claude-relay");
        assert!(
            s.contains("'/opt/my tools/claude-relay' sessions name \"$@\""),
            "{s}"
        );
        let f = script(Shell::Fish, "/x/claude-relay");
        assert!(f.contains("('/x/claude-relay' sessions name $argv)"), "{f}");
    }
}
