//! `claude-relay hooks install|uninstall` against a temporary HOME whose
//! `.claude/settings.json` already holds the user's own hooks and settings.

use crate::common;

use std::{path::Path, process::Output};

use common::hub::bin;
use serde_json::{Value, json};

fn hooks(home: &Path, args: &[&str]) -> Output {
    std::process::Command::new(bin())
        .arg("hooks")
        .args(args)
        .env("HOME", home)
        .env_remove("RELAY_LOG")
        .env_remove("RUST_LOG")
        .output()
        .expect("run claude-relay hooks")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn settings_path(home: &Path) -> std::path::PathBuf {
    home.join(".claude").join("settings.json")
}

fn read(home: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(settings_path(home)).unwrap()).unwrap()
}

fn backups(home: &Path) -> Vec<std::path::PathBuf> {
    let mut list: Vec<_> = std::fs::read_dir(home.join(".claude"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("settings.json.")
                && p.to_string_lossy().contains("bak")
        })
        .collect();
    list.sort();
    list
}

/// Every Stop hook entry that runs `claude-relay wait`.
fn ours(settings: &Value) -> Vec<Value> {
    settings["hooks"]["Stop"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["hooks"].as_array().cloned().unwrap_or_default())
        .filter(|h| {
            h["command"]
                .as_str()
                .is_some_and(|c| c.ends_with("claude-relay wait"))
        })
        .collect()
}

fn users_settings() -> Value {
    json!({
        "model": "opus",
        "env": {"FOO": "1"},
        "permissions": {"allow": ["Bash(ls:*)"], "deny": []},
        "hooks": {
            "Stop": [
                {"matcher": "", "hooks": [{"type": "command", "command": "say done"}]}
            ],
            "PreToolUse": [
                {"matcher": "Bash", "hooks": [{"type": "command", "command": "echo pre", "timeout": 5}]}
            ]
        },
        "statusLine": {"type": "command", "command": "printf hi"}
    })
}

#[test]
fn install_keeps_everything_adds_ours_once_and_uninstall_restores_the_meaning() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    std::fs::create_dir_all(home.join(".claude")).unwrap();
    let original = users_settings();
    let original_text = serde_json::to_string_pretty(&original).unwrap();
    std::fs::write(settings_path(home), &original_text).unwrap();

    // --dry-run shows the result, writes nothing, and does not claim otherwise.
    let out = ok(&hooks(home, &["install", "--dry-run"]));
    assert!(out.contains("would become"), "{out}");
    assert!(out.contains("nothing was written"), "{out}");
    assert!(
        !out.contains("Added"),
        "--dry-run must not say it wrote: {out}"
    );
    assert!(out.contains("\"asyncRewake\": true"), "{out}");
    assert_eq!(
        std::fs::read_to_string(settings_path(home)).unwrap(),
        original_text
    );
    assert!(backups(home).is_empty());

    let out = ok(&hooks(home, &["install"]));
    assert!(out.contains("Added the claude-relay Stop hook"), "{out}");
    let installed = read(home);
    // Everything the user had is still there, unchanged.
    for key in ["model", "env", "permissions", "statusLine"] {
        assert_eq!(installed[key], original[key], "{key}");
    }
    assert_eq!(
        installed["hooks"]["PreToolUse"],
        original["hooks"]["PreToolUse"]
    );
    assert_eq!(installed["hooks"]["Stop"][0], original["hooks"]["Stop"][0]);
    // …in the same order.
    let keys: Vec<&String> = installed.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["model", "env", "permissions", "hooks", "statusLine"]);
    // Plus ours, once, exactly as documented.
    let mine = ours(&installed);
    assert_eq!(mine.len(), 1, "{installed:#}");
    let exe = std::fs::canonicalize(bin()).unwrap();
    assert_eq!(
        mine[0],
        json!({"type": "command", "command": format!("{} wait", exe.display()),
               "async": true, "asyncRewake": true, "timeout": 3600})
    );
    assert_eq!(installed["hooks"]["Stop"].as_array().unwrap().len(), 2);
    // The previous file was backed up first.
    let first_backups = backups(home);
    assert_eq!(first_backups.len(), 1);
    assert_eq!(
        std::fs::read_to_string(&first_backups[0]).unwrap(),
        original_text
    );

    // Installing twice changes nothing (not even a backup).
    let bytes = std::fs::read(settings_path(home)).unwrap();
    let out = ok(&hooks(home, &["install"]));
    assert!(out.contains("already"), "{out}");
    assert_eq!(std::fs::read(settings_path(home)).unwrap(), bytes);
    assert_eq!(backups(home), first_backups);

    // Uninstall: the file means what it meant before.
    let out = ok(&hooks(home, &["uninstall", "--dry-run"]));
    assert!(!out.contains("Removed"), "{out}");
    let out = ok(&hooks(home, &["uninstall"]));
    assert!(out.contains("Removed"), "{out}");
    assert_eq!(read(home), original);
    let out = ok(&hooks(home, &["uninstall"]));
    assert!(out.contains("nothing changed"), "{out}");
    assert_eq!(read(home), original);

    // Installing and uninstalling again and again keeps one backup: the file as it was
    // before the last change.
    for _ in 0..3 {
        ok(&hooks(home, &["install"]));
        ok(&hooks(home, &["uninstall"]));
    }
    let kept = backups(home);
    assert_eq!(kept.len(), 1, "{kept:?}");
    let before_last: Value = serde_json::from_slice(&std::fs::read(&kept[0]).unwrap()).unwrap();
    assert_eq!(
        ours(&before_last).len(),
        1,
        "the backup is from before the uninstall"
    );
}

#[test]
fn a_missing_file_is_created_and_uninstall_leaves_it_empty() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    ok(&hooks(home, &["install"]));
    let installed = read(home);
    assert_eq!(ours(&installed).len(), 1);
    assert!(backups(home).is_empty(), "nothing to back up");
    ok(&hooks(home, &["uninstall"]));
    assert_eq!(read(home), json!({}));
}

#[test]
fn a_file_that_is_not_json_is_refused_and_left_untouched() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    std::fs::create_dir_all(home.join(".claude")).unwrap();
    let broken = "{\"model\": \"opus\",, }\n";
    std::fs::write(settings_path(home), broken).unwrap();
    for action in ["install", "uninstall"] {
        let out = hooks(home, &[action]);
        assert!(!out.status.success(), "{action} succeeded");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("settings.json is not valid JSON")
                && stderr.contains("nothing was changed"),
            "{stderr}"
        );
        assert_eq!(
            std::fs::read_to_string(settings_path(home)).unwrap(),
            broken
        );
        assert!(backups(home).is_empty());
    }
    // A shape we do not understand is refused the same way.
    std::fs::write(settings_path(home), "{\"hooks\": {\"Stop\": \"nope\"}}").unwrap();
    let out = hooks(home, &["install"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not an array"),
        "{out:?}"
    );
}
