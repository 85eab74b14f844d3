//! `claude-relay hooks install|uninstall`: add (or remove) the Stop-hook doorbell in Claude
//! Code's user settings, `~/.claude/settings.json`:
//!
//! ```json
//! {"hooks": {"Stop": [{"matcher": "", "hooks": [{"type": "command",
//!   "command": "/path/to/claude-relay wait", "async": true, "asyncRewake": true,
//!   "timeout": 3600}]}]}}
//! ```
//!
//! With it, every turn end starts `claude-relay wait` in the background; when mail arrives for
//! the session it exits 2 and Claude Code wakes the idle session with its one-line notice.
//!
//! The file belongs to the user, so the edit is careful:
//! - a file that is not valid JSON (or whose `hooks`/`Stop` have an unexpected shape) is
//!   refused with the reason, and left untouched;
//! - every other key, hook and setting is kept, in its order (`serde_json`'s
//!   `preserve_order`);
//! - installing is idempotent (our entry is recognised by its command, `…claude-relay wait`,
//!   and updated in place if it differs, e.g. after the binary moved);
//! - the old file is copied to `settings.json.claude-relay.bak` before anything is written (one
//!   backup, replaced at each change we make, so repeated installs do not pile up copies;
//!   nothing is written, nor backed up, when nothing changes), and the new one replaces it
//!   atomically (through a symlink to its target, for dotfile managers);
//! - `--dry-run` prints what the file would become and writes nothing (and says so);
//! - uninstall removes exactly our entry, and the group, `Stop` array and `hooks` object only
//!   when removing our entry left them empty — so the file means what it meant before.
//!
//! `--approvals` also adds the approval hook (docs/SECURITY.md, "Approvals") to the
//! `PermissionRequest` hooks, with the same care:
//!
//! ```json
//! {"hooks": {"PermissionRequest": [{"matcher": "", "hooks": [{"type": "command",
//!   "command": "/path/to/claude-relay approval-hook --timeout 600", "timeout": 630}]}]}}
//! ```
//!
//! and prints the same entry for Codex (`~/.codex/hooks.json`). Claude Code runs it when a
//! permission dialog opens; it files the prompt on the hub and prints a human's verdict, or
//! nothing (the dialog stays). Uninstall removes both hooks.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::Context as _;
use relay_proto::wire_approvals::{DEFAULT_TIMEOUT_S, MAX_TIMEOUT_S};
use serde_json::{Map, Value, json};

use super::{
    external::sh_quote,
    user_files::{Home, write_user_file},
};

/// The hook event we attach to.
const EVENT: &str = "Stop";
/// The subcommand the hook runs.
const WAIT_ARG: &str = "wait";
/// The hook event of the approval hook.
const APPROVAL_EVENT: &str = "PermissionRequest";
/// The subcommand the approval hook runs.
const APPROVAL_ARG: &str = "approval-hook";
/// Seconds Claude Code lets the approval hook run beyond the hook's own `--timeout`, so the
/// hook always ends by itself (printing nothing) before Claude Code would kill it.
const APPROVAL_HOOK_GRACE_SECS: u64 = 30;
/// Our binary's name, to recognise our entry whatever path it was installed with.
const BIN_NAME: &str = "claude-relay";
/// Seconds Claude Code lets the hook run; matches `wait`'s default timeout.
const HOOK_TIMEOUT_SECS: u64 = 3600;
/// Extension of our one backup of the settings file.
const BACKUP_SUFFIX: &str = "claude-relay.bak";

/// Arguments of `claude-relay hooks`.
#[derive(Debug, clap::Args)]
pub(crate) struct HooksArgs {
    #[command(subcommand)]
    action: HooksAction,
}

#[derive(Debug, clap::Subcommand)]
enum HooksAction {
    /// Add the `claude-relay wait` Stop hook to ~/.claude/settings.json (idempotent; backs
    /// the file up first).
    Install {
        /// Print the resulting settings.json instead of writing it.
        #[arg(long)]
        dry_run: bool,
        /// Also add `claude-relay approval-hook` to the PermissionRequest hooks: permission
        /// prompts reach the hub's approval inbox, where only a human answers them.
        #[arg(long)]
        approvals: bool,
        /// With --approvals: how long the approval hook waits for a human's verdict before
        /// it gives up (the local dialog stays). Claude Code is told to allow the hook 30 s
        /// more. At most 3600.
        #[arg(long, value_name = "SECS", requires = "approvals",
              value_parser = clap::value_parser!(u64).range(1..=MAX_TIMEOUT_S))]
        timeout: Option<u64>,
    },
    /// Remove the `claude-relay wait` Stop hook from ~/.claude/settings.json.
    Uninstall {
        /// Print the resulting settings.json instead of writing it.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Runs `claude-relay hooks`.
pub(super) fn run(args: HooksArgs) -> anyhow::Result<ExitCode> {
    let home = Home::current()?;
    let path = home.claude_settings();
    let (install, dry_run, approvals, timeout) = match args.action {
        HooksAction::Install {
            dry_run,
            approvals,
            timeout,
        } => (
            true,
            dry_run,
            approvals,
            timeout.unwrap_or(DEFAULT_TIMEOUT_S),
        ),
        HooksAction::Uninstall { dry_run } => (false, dry_run, false, DEFAULT_TIMEOUT_S),
    };
    let existing = match std::fs::read(&path) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut settings = match &existing {
        None => Value::Object(Map::new()),
        Some(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Value::Object(Map::new()),
        Some(bytes) => serde_json::from_slice(bytes).map_err(|e| {
            anyhow::anyhow!(
                "{} is not valid JSON ({e}); fix it first — nothing was changed",
                path.display()
            )
        })?,
    };
    let shown = home.show(&path);
    // What the change is, in words that stay true with --dry-run.
    let (mut changed, mut did, mut would) = if install {
        let entry = our_entry(&command_line(WAIT_ARG)?);
        let change = install_entry(&mut settings, entry)
            .map_err(|e| anyhow::anyhow!("{shown}: {e} — nothing was changed"))?;
        match change {
            Install::Unchanged => (
                false,
                "The claude-relay Stop hook is already in",
                "leave the claude-relay Stop hook in",
            ),
            Install::Added => (
                true,
                "Added the claude-relay Stop hook to",
                "add the claude-relay Stop hook to",
            ),
            Install::Updated => (
                true,
                "Updated the claude-relay Stop hook in",
                "update the claude-relay Stop hook in",
            ),
        }
    } else {
        let removed = uninstall_entry(&mut settings)
            .map_err(|e| anyhow::anyhow!("{shown}: {e} — nothing was changed"))?;
        let approvals_removed = uninstall_approval_entry(&mut settings)
            .map_err(|e| anyhow::anyhow!("{shown}: {e} — nothing was changed"))?;
        (
            removed + approvals_removed > 0,
            "Removed the claude-relay hooks from",
            "remove the claude-relay hooks from",
        )
    };
    if approvals {
        let entry = approval_entry(&command_line(APPROVAL_ARG)?, timeout);
        let change = install_approval_entry(&mut settings, entry)
            .map_err(|e| anyhow::anyhow!("{shown}: {e} — nothing was changed"))?;
        if change != Install::Unchanged {
            changed = true;
            did = "Installed the claude-relay Stop and approval hooks in";
            would = "install the claude-relay Stop and approval hooks in";
        }
    }
    if !changed {
        if install {
            println!("The claude-relay hooks are already in {shown}; nothing changed.");
        } else {
            println!("No claude-relay hook in {shown}; nothing changed.");
        }
        if approvals {
            print_codex_snippet(timeout)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut text = serde_json::to_string_pretty(&settings).context("serializing settings")?;
    text.push('\n');
    if dry_run {
        println!("--dry-run: nothing was written. This would {would} {shown}, which would become:");
        print!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    let target = write_target(&path);
    if existing.is_some() {
        let backup = backup(&target)?;
        println!("Backup of the previous file: {}", home.show(&backup));
    }
    write_user_file(&target, text.as_bytes())?;
    println!("{did} {shown}.");
    if install {
        println!(
            "Claude Code sessions started from now on run `claude-relay wait` when a turn \
             ends, and wake up when relay mail arrives."
        );
    }
    if approvals {
        println!(
            "Permission prompts now also go to the hub's approval inbox: answer them in the \
             console or with `claude-relay approvals` (only a human can; see docs/SECURITY.md)."
        );
        print_codex_snippet(timeout)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints the approval hook for Codex, which reads its hooks from `~/.codex/hooks.json`.
fn print_codex_snippet(timeout: u64) -> anyhow::Result<()> {
    let snippet = json!({"hooks": {APPROVAL_EVENT: [
        {"hooks": [approval_entry(&command_line(APPROVAL_ARG)?, timeout)]}
    ]}});
    println!(
        "For Codex, add this to ~/.codex/hooks.json (merge it with what is there; Codex asks \
         you to trust a new hook once, with /hooks):"
    );
    println!(
        "{}",
        serde_json::to_string_pretty(&snippet).context("serializing the Codex snippet")?
    );
    Ok(())
}

/// A hook's command: this binary's absolute path (quoted for the shell when needed) and
/// `arg`.
fn command_line(arg: &str) -> anyhow::Result<String> {
    let exe = std::env::current_exe().context("cannot find the path of this binary")?;
    let exe = exe.canonicalize().unwrap_or(exe);
    let exe = exe
        .to_str()
        .context("the path of this binary is not UTF-8; install it somewhere else")?;
    Ok(format!("{} {arg}", sh_quote(exe)))
}

/// Our approval hook entry for `command`, waiting `timeout` seconds for a verdict; Claude
/// Code allows it [`APPROVAL_HOOK_GRACE_SECS`] more.
pub(crate) fn approval_entry(command: &str, timeout: u64) -> Value {
    json!({
        "type": "command",
        "command": format!("{command} --timeout {timeout}"),
        "timeout": timeout + APPROVAL_HOOK_GRACE_SECS,
    })
}

/// True for a hook entry that runs `claude-relay approval-hook` (any path to a binary named
/// `claude-relay`, with `approval-hook` and possibly its own options after it).
pub(crate) fn is_our_approval_hook(hook: &Value) -> bool {
    if hook.get("type").and_then(Value::as_str) != Some("command") {
        return false;
    }
    let Some(command) = hook.get("command").and_then(Value::as_str) else {
        return false;
    };
    let Some((program, rest)) = command.trim().rsplit_once(&format!(" {APPROVAL_ARG}")) else {
        return false;
    };
    if !(rest.is_empty() || rest.starts_with(' ')) {
        return false;
    }
    our_binary(program.trim()).is_some()
}

/// `program` without its shell quotes (as `external::sh_quote` or a person wrote it) when it
/// names a binary called `claude-relay`; `None` otherwise.
fn our_binary(program: &str) -> Option<String> {
    let unquoted = program
        .strip_prefix('\'')
        .and_then(|p| p.strip_suffix('\''))
        .or_else(|| program.strip_prefix('"').and_then(|p| p.strip_suffix('"')))
        .unwrap_or(program)
        .replace(r"'\''", "'");
    (Path::new(&unquoted).file_name().and_then(|n| n.to_str()) == Some(BIN_NAME))
        .then_some(unquoted)
}

/// Our hook entry for `command`.
pub(crate) fn our_entry(command: &str) -> Value {
    json!({
        "type": "command",
        "command": command,
        "async": true,
        "asyncRewake": true,
        "timeout": HOOK_TIMEOUT_SECS,
    })
}

/// True for a hook entry that runs `claude-relay wait` (any path to a binary named
/// `claude-relay`, quoted or not, with exactly the argument `wait`).
pub(crate) fn is_ours(hook: &Value) -> bool {
    our_program(hook).is_some()
}

/// The program of a hook entry of ours (`claude-relay wait`): the path or name before
/// `wait`, unquoted; `None` for any other entry.
pub(crate) fn our_program(hook: &Value) -> Option<String> {
    if hook.get("type").and_then(Value::as_str) != Some("command") {
        return None;
    }
    let command = hook.get("command").and_then(Value::as_str)?;
    let program = command.trim().strip_suffix(WAIT_ARG)?;
    if !program.ends_with(char::is_whitespace) {
        return None;
    }
    our_binary(program.trim())
}

/// What [`install_entry`] did.
#[derive(Debug, PartialEq, Eq)]
enum Install {
    Added,
    Updated,
    Unchanged,
}

/// `settings.hooks.<event>` as a mutable array, creating the missing levels when `create`.
/// Errors name a level with an unexpected shape.
fn event_groups<'a>(
    settings: &'a mut Value,
    event: &str,
    create: bool,
) -> Result<Option<&'a mut Vec<Value>>, String> {
    let Value::Object(root) = settings else {
        return Err("the top level is not a JSON object".into());
    };
    if !root.contains_key("hooks") {
        if !create {
            return Ok(None);
        }
        root.insert("hooks".into(), Value::Object(Map::new()));
    }
    let Some(Value::Object(hooks)) = root.get_mut("hooks") else {
        return Err("\"hooks\" is not an object".into());
    };
    if !hooks.contains_key(event) {
        if !create {
            return Ok(None);
        }
        hooks.insert(event.into(), Value::Array(Vec::new()));
    }
    match hooks.get_mut(event) {
        Some(Value::Array(groups)) => Ok(Some(groups)),
        _ => Err(format!("\"hooks\".\"{event}\" is not an array")),
    }
}

/// Adds `entry` to the Stop hooks unless an entry of ours is there: then it is updated in
/// place when it differs (and further copies of ours are removed).
fn install_entry(settings: &mut Value, entry: Value) -> Result<Install, String> {
    install_in(settings, EVENT, entry, is_ours)
}

/// Adds the approval hook `entry` to the PermissionRequest hooks, as [`install_entry`] does.
fn install_approval_entry(settings: &mut Value, entry: Value) -> Result<Install, String> {
    install_in(settings, APPROVAL_EVENT, entry, is_our_approval_hook)
}

/// Adds `entry` to the hooks of `event` unless an entry that `ours` recognises is there.
fn install_in(
    settings: &mut Value,
    event: &str,
    entry: Value,
    ours: fn(&Value) -> bool,
) -> Result<Install, String> {
    let groups = event_groups(settings, event, true)?.expect("created");
    let mut found: Option<(usize, usize)> = None;
    for (g, group) in groups.iter().enumerate() {
        if let Some(list) = group.get("hooks").and_then(Value::as_array)
            && let Some(h) = list.iter().position(ours)
        {
            found = Some((g, h));
            break;
        }
    }
    let Some((g, h)) = found else {
        groups.push(json!({"matcher": "", "hooks": [entry]}));
        return Ok(Install::Added);
    };
    let mut change = Install::Unchanged;
    let list = groups[g]["hooks"].as_array_mut().expect("checked above");
    if list[h] != entry {
        list[h] = entry;
        change = Install::Updated;
    }
    // Exactly one entry of ours: drop any other copies (an earlier install from elsewhere).
    let duplicates = remove_ours(groups, Some((g, h)), ours);
    if duplicates > 0 {
        change = Install::Updated;
    }
    Ok(change)
}

/// Removes every entry of ours from `groups` except the one at `keep`; a group that this
/// emptied is removed too. Returns how many entries went.
fn remove_ours(
    groups: &mut Vec<Value>,
    keep: Option<(usize, usize)>,
    ours: fn(&Value) -> bool,
) -> usize {
    let mut removed = 0;
    let mut emptied = Vec::new();
    for (g, group) in groups.iter_mut().enumerate() {
        let Some(list) = group.get_mut("hooks").and_then(Value::as_array_mut) else {
            continue;
        };
        let before = list.len();
        let mut index = 0;
        list.retain(|hook| {
            let drop = ours(hook) && keep != Some((g, index));
            index += 1;
            !drop
        });
        removed += before - list.len();
        if before > 0 && list.is_empty() {
            emptied.push(g);
        }
    }
    for g in emptied.into_iter().rev() {
        groups.remove(g);
    }
    removed
}

/// Removes our entries (and the containers that removing them emptied). Returns how many.
fn uninstall_entry(settings: &mut Value) -> Result<usize, String> {
    uninstall_in(settings, EVENT, is_ours)
}

/// Removes our approval hook entries, as [`uninstall_entry`] does.
fn uninstall_approval_entry(settings: &mut Value) -> Result<usize, String> {
    uninstall_in(settings, APPROVAL_EVENT, is_our_approval_hook)
}

/// Removes the entries of `event` that `ours` recognises, and the containers that emptied.
fn uninstall_in(
    settings: &mut Value,
    event: &str,
    ours: fn(&Value) -> bool,
) -> Result<usize, String> {
    let (removed, emptied) = {
        let Some(groups) = event_groups(settings, event, false)? else {
            return Ok(0);
        };
        let had_groups = !groups.is_empty();
        let removed = remove_ours(groups, None, ours);
        (removed, removed > 0 && had_groups && groups.is_empty())
    };
    if emptied {
        let hooks = settings["hooks"].as_object_mut().expect("checked above");
        hooks.remove(event);
        if hooks.is_empty() {
            settings
                .as_object_mut()
                .expect("checked above")
                .remove("hooks");
        }
    }
    Ok(removed)
}

/// The file to write: the target of a symlink (so a dotfile manager's link survives), else
/// `path` itself.
fn write_target(path: &Path) -> PathBuf {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => path.canonicalize().unwrap_or(path.to_path_buf()),
        _ => path.to_path_buf(),
    }
}

/// Copies `path` to `path.claude-relay.bak`: one backup, the file as it was before our last
/// change, replaced at each change (so installing and uninstalling again and again leaves
/// one copy, not one per run).
fn backup(path: &Path) -> anyhow::Result<PathBuf> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("settings.json");
    let target = path.with_file_name(format!("{name}.{BACKUP_SUFFIX}"));
    std::fs::copy(path, &target)
        .with_context(|| format!("cannot back up {} — nothing was changed", path.display()))?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_our_entry_only() {
        let cmd = |c: &str| json!({"type": "command", "command": c});
        for ours in [
            "claude-relay wait",
            "/usr/local/bin/claude-relay wait",
            "'/Users/me/my tools/claude-relay' wait",
            "\"/opt/x/claude-relay\"  wait ",
        ] {
            assert!(is_ours(&cmd(ours)), "{ours}");
        }
        for other in [
            "claude-relay waiting",
            "claude-relay wait --session CC-1",
            "my-claude-relay wait",
            "claude-relaywait",
            "echo wait",
        ] {
            assert!(!is_ours(&cmd(other)), "{other}");
        }
        assert!(!is_ours(
            &json!({"type": "prompt", "command": "claude-relay wait"})
        ));
    }

    #[test]
    fn quoted_paths_are_ours() {
        assert!(is_ours(&json!({"type": "command",
            "command": format!("{} wait", sh_quote("/it's here/claude-relay"))})));
    }

    #[test]
    fn install_is_idempotent_and_uninstall_restores() {
        let original = json!({
            "model": "opus",
            "hooks": {
                "Stop": [{"matcher": "", "hooks": [{"type": "command", "command": "say done"}]}],
                "PreToolUse": [{"matcher": "Bash", "hooks": [{"type": "command", "command": "x"}]}]
            }
        });
        let entry = our_entry("/bin/claude-relay wait");
        let mut s = original.clone();
        assert_eq!(install_entry(&mut s, entry.clone()), Ok(Install::Added));
        let once = s.clone();
        assert_eq!(install_entry(&mut s, entry.clone()), Ok(Install::Unchanged));
        assert_eq!(s, once);
        assert_eq!(
            install_entry(&mut s, our_entry("/new/claude-relay wait")),
            Ok(Install::Updated)
        );
        assert_eq!(uninstall_entry(&mut s), Ok(1));
        assert_eq!(s, original);
        assert_eq!(uninstall_entry(&mut s), Ok(0));

        let mut empty = json!({});
        install_entry(&mut empty, entry.clone()).unwrap();
        assert_eq!(empty["hooks"]["Stop"][0]["hooks"][0], entry);
        uninstall_entry(&mut empty).unwrap();
        assert_eq!(empty, json!({}));
    }

    #[test]
    fn the_plugin_rings_the_same_doorbell() {
        // plugins/claude-relay/hooks/hooks.json is what `hooks install` writes, with the
        // binary found on PATH (the plugin cannot know where it is installed).
        let plugin: Value =
            serde_json::from_str(include_str!("../../plugins/claude-relay/hooks/hooks.json"))
                .expect("the plugin's hooks.json is JSON");
        let mut installed = json!({});
        install_entry(&mut installed, our_entry("claude-relay wait")).unwrap();
        assert_eq!(plugin["hooks"], installed["hooks"]);
        assert_eq!(
            our_program(&plugin["hooks"]["Stop"][0]["hooks"][0]).as_deref(),
            Some("claude-relay")
        );
    }

    #[test]
    fn the_approval_hook_installs_next_to_others_and_uninstalls_cleanly() {
        let original = json!({
            "permissions": {"allow": ["Bash(ls)"]},
            "hooks": {
                "PermissionRequest": [{"matcher": "Bash", "hooks": [{"type": "command", "command": "notify-me"}]}],
                "Stop": [{"matcher": "", "hooks": [{"type": "command", "command": "say done"}]}]
            },
            "model": "opus"
        });
        let entry = approval_entry("/bin/claude-relay approval-hook", 3600);
        assert_eq!(entry["timeout"], 3630);
        assert_eq!(
            entry["command"],
            "/bin/claude-relay approval-hook --timeout 3600"
        );
        let mut s = original.clone();
        assert_eq!(
            install_approval_entry(&mut s, entry.clone()),
            Ok(Install::Added)
        );
        let keys: Vec<&String> = s.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["permissions", "hooks", "model"], "key order kept");
        assert_eq!(s["hooks"]["PermissionRequest"][1]["hooks"][0], entry);
        let once = s.clone();
        assert_eq!(
            install_approval_entry(&mut s, entry.clone()),
            Ok(Install::Unchanged)
        );
        assert_eq!(s, once);
        // The Stop hook is another entry; neither touches the other.
        install_entry(&mut s, our_entry("/bin/claude-relay wait")).unwrap();
        assert_eq!(uninstall_approval_entry(&mut s), Ok(1));
        assert_eq!(uninstall_entry(&mut s), Ok(1));
        assert_eq!(s, original);
        for ours in [
            "claude-relay approval-hook",
            "'/a b/claude-relay' approval-hook --timeout 60",
        ] {
            assert!(
                is_our_approval_hook(&json!({"type": "command", "command": ours})),
                "{ours}"
            );
        }
        for other in [
            "claude-relay approval-hooks",
            "other approval-hook",
            "claude-relay wait",
        ] {
            assert!(
                !is_our_approval_hook(&json!({"type": "command", "command": other})),
                "{other}"
            );
        }
    }

    #[test]
    fn odd_shapes_are_refused() {
        let entry = our_entry("claude-relay wait");
        for bad in [
            json!([]),
            json!({"hooks": []}),
            json!({"hooks": {"Stop": {}}}),
        ] {
            let mut s = bad.clone();
            assert!(install_entry(&mut s, entry.clone()).is_err(), "{bad}");
            assert_eq!(s, bad);
        }
    }
}
