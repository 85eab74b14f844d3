//! Tasks in the short plain text a model reads: one line per task on a board, a bounded
//! detail view of one task, and the next move that applies to the reader. Pure (time is
//! passed in), so it is tested directly; the structured record goes alongside as
//! `structuredContent`.

use serde_json::Value;
use sessions::wire_tasks::{ANY, TaskState, TaskView};

use crate::format::{ago_text, cut, plural};

/// Characters of a brief shown in the detail view (the rest: read the task again later or
/// ask its creator; a brief is capped at 16 KiB by the hub anyway).
pub const BRIEF_CAP: usize = 6_000;
/// Characters of one note in the history.
pub const NOTE_CAP: usize = 300;
/// Characters of a result shown.
pub const RESULT_CAP: usize = 2_000;

/// `T-7 · working · CC-1 → CC-2 (held by CC-2) · 3m ago · "Fix parser"`.
pub fn line(t: &TaskView, now_ms: i64) -> String {
    let holder = match &t.holder {
        Some(h) if *h != t.to => format!(" (held by {h})"),
        _ => String::new(),
    };
    format!(
        "{} · {} · {} → {}{holder} · {} · \"{}\"",
        t.id,
        t.state,
        t.from,
        t.to,
        ago_text(&t.updated, now_ms),
        t.title
    )
}

/// A summary of the git context: the fields the git library records, read tolerantly.
pub fn git_summary(git: &Value) -> Option<String> {
    let obj = git.as_object()?;
    let s = |k: &str| obj.get(k).and_then(Value::as_str);
    let n = |k: &str| obj.get(k).and_then(Value::as_array).map(Vec::len);
    let mut parts = Vec::new();
    if let Some(b) = s("branch") {
        parts.push(format!("branch {b}"));
    }
    if let Some(h) = s("head") {
        parts.push(format!("@ {}", cut(h, 12).0));
    }
    if let Some(r) = s("remote") {
        parts.push(format!("remote {r}"));
    }
    if let Some(d) = obj.get("dirty").and_then(Value::as_bool) {
        parts.push(if d { "dirty".into() } else { "clean".into() });
    }
    let count = |k: &str, list: &str| {
        obj.get(k)
            .and_then(Value::as_u64)
            .or(n(list).map(|c| c as u64))
            .filter(|c| *c > 0)
    };
    for (k, list, what) in [
        ("changedCount", "changed", "changed"),
        ("untrackedCount", "untracked", "untracked"),
        (
            "omittedCount",
            "omitted",
            "left out (secret-looking or nested repositories)",
        ),
    ] {
        if let Some(c) = count(k, list) {
            parts.push(format!("{c} {what}"));
        }
    }
    if let Some(a) = obj.get("ahead").and_then(Value::as_u64).filter(|a| *a > 0) {
        parts.push(format!("{a} unpushed"));
    }
    if let Some(o) = s("bundleOmitted") {
        parts.push(format!("no bundle: {o}"));
    }
    Some(if parts.is_empty() {
        "recorded".to_string()
    } else {
        parts.join(", ")
    })
}

/// What `me` can do next with `t`, as tool calls.
pub fn next_step(t: &TaskView, me: &str) -> Option<String> {
    let id = &t.id;
    let holder = t.holder.as_deref() == Some(me);
    match t.state {
        TaskState::Submitted if t.from != me && (t.to == me || t.to == ANY) => Some(format!(
            "Take it: relay_task {{\"id\":\"{id}\",\"action\":\"claim\"}}{}.",
            if t.to == ANY { "" } else { " (or decline)" }
        )),
        TaskState::Working | TaskState::InputRequired if holder => Some(format!(
            "You hold it. When done: relay_task {{\"id\":\"{id}\",\"action\":\"complete\",\"result\":\"…\"}}; \
             to ask {}: action ask with a note; to hand it back: release.",
            t.from
        )),
        TaskState::InputRequired if t.from == me => Some(format!(
            "{} asks you something (see history): relay_task {{\"id\":\"{id}\",\"action\":\"answer\",\"note\":\"…\"}}.",
            t.holder.as_deref().unwrap_or("the holder")
        )),
        _ => None,
    }
}

/// The detail view of one task, bounded.
pub fn detail(t: &TaskView, me: &str, now_ms: i64) -> String {
    let mut out = format!("{} \"{}\" — {}", t.id, t.title, t.state);
    if let Some(h) = &t.holder {
        out.push_str(&format!(", held by {h}"));
    }
    out.push_str(&format!(
        "\nFrom {} to {} · created {} · updated {}",
        t.from,
        t.to,
        ago_text(&t.created, now_ms),
        ago_text(&t.updated, now_ms)
    ));
    if !t.refs.is_empty() {
        out.push_str(&format!(" · follows {}", t.refs.join(", ")));
    }
    if !t.acceptance.is_empty() {
        out.push_str("\nAcceptance:");
        for c in &t.acceptance {
            out.push_str(&format!("\n- {c}"));
        }
    }
    if let Some(g) = t.git.as_ref().and_then(git_summary) {
        out.push_str(&format!("\nGit: {g}"));
    }
    if let Some(b) = &t.bundle {
        out.push_str(&format!(
            "\nBundle: {} — recreate the work tree with: claude-relay tasks checkout {}",
            size(b.bytes),
            t.id
        ));
    }
    if let Some(brief) = &t.brief {
        let (shown, was_cut) = cut(brief, BRIEF_CAP);
        out.push_str(&format!("\nBrief:\n{shown}"));
        if was_cut {
            out.push_str(&format!(
                "\n[brief cut at {BRIEF_CAP} of {} characters]",
                brief.chars().count()
            ));
        }
    }
    if let Some(r) = &t.result {
        let label = if t.state == TaskState::Failed {
            "Reason"
        } else {
            "Result"
        };
        out.push_str(&format!("\n{label}: {}", cut(r, RESULT_CAP).0));
    }
    if let Some(events) = &t.history {
        let older = t
            .history_omitted
            .map(|n| format!(", {} older not shown", plural(n, "event", "events")))
            .unwrap_or_default();
        out.push_str(&format!("\nHistory (oldest first{older}):"));
        for e in events {
            let note = e
                .note
                .as_deref()
                .map(|n| {
                    let (s, c) = cut(n, NOTE_CAP);
                    format!(": {s}{}", if c { "…" } else { "" })
                })
                .unwrap_or_default();
            out.push_str(&format!(
                "\n- {} {} {} → {}{note}",
                ago_text(&e.at, now_ms),
                e.by,
                e.action,
                e.state
            ));
        }
    }
    if let Some(next) = next_step(t, me) {
        out.push_str(&format!("\n{next}"));
    }
    out
}

/// "12 KiB".
pub fn size(bytes: u64) -> String {
    match bytes {
        b if b < 1024 => format!("{b} bytes"),
        b if b < 1 << 20 => format!("{} KiB", b.div_ceil(1024)),
        b => format!("{:.1} MiB", b as f64 / f64::from(1 << 20)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn task() -> TaskView {
        serde_json::from_value(json!({
            "id": "T-7", "from": "CC-1", "to": "CC-2", "holder": null, "title": "Fix parser",
            "brief": "x".repeat(BRIEF_CAP + 5), "acceptance": ["tests pass"], "state": "submitted",
            "created": "2026-01-01T00:00:00.000Z", "updated": "2026-01-01T00:00:00.000Z",
            "result": null, "refs": [], "git": {"branch": "main", "head": "abcdef0123456789",
            "dirty": true, "changed": ["a.rs"], "untracked": []},
            "bundle": {"bytes": 12000, "sha256": "00"},
            "history": [{"at": "2026-01-01T00:00:00.000Z", "by": "CC-1", "action": "create",
                         "state": "submitted"}]
        }))
        .unwrap()
    }

    #[test]
    fn detail_is_bounded_and_says_what_to_do() {
        let d = detail(&task(), "CC-2", 1_767_225_600_000 + 60_000);
        assert!(d.starts_with("T-7 \"Fix parser\" — submitted"), "{d}");
        assert!(
            d.contains("Git: branch main, @ abcdef012345, dirty, 1 changed"),
            "{d}"
        );
        assert!(d.contains("claude-relay tasks checkout T-7"), "{d}");
        assert!(d.contains("[brief cut at 6000"), "{d}");
        assert!(d.contains(r#""action":"claim""#), "{d}");
        assert!(d.contains("- 1m ago CC-1 create → submitted"), "{d}");
        assert!(detail(&task(), "CC-3", 0).find("claim").is_none());
    }

    #[test]
    fn board_lines() {
        let mut t = task();
        t.to = "any".into();
        t.holder = Some("CC-3".into());
        t.state = TaskState::Working;
        let l = line(&t, 1_767_225_600_000 + 180_000);
        assert_eq!(
            l,
            "T-7 · working · CC-1 → any (held by CC-3) · 3m ago · \"Fix parser\""
        );
        assert_eq!(size(12_000), "12 KiB");
    }
}
