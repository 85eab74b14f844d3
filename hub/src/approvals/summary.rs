//! What a human reads about a prompt: one line saying what would run, and a bounded preview
//! of the tool's input. Both come from the agent and are attacker-controlled: control
//! characters are replaced, lengths are cut (`relay_proto::wire_approvals` caps), and every
//! view renders them as text, never as markup.

use relay_proto::wire_approvals::{MAX_DESCRIPTION, MAX_PLACE, MAX_PREVIEW};
use serde_json::Value;

/// The input field that says what a well-known tool would do.
fn key_field(tool: &str) -> &'static [&'static str] {
    match tool {
        "Bash" | "shell" | "exec_command" => &["command", "cmd"],
        "Edit" | "MultiEdit" | "Write" | "Read" | "NotebookEdit" => &["file_path", "notebook_path"],
        "WebFetch" => &["url"],
        "WebSearch" => &["query"],
        "Glob" | "Grep" => &["pattern"],
        _ => &["command", "file_path", "path", "url", "query", "pattern"],
    }
}

/// One line: the key field of the input (the command, the file path, the URL), else the
/// filer's description (a channel prompt has no input), else the tool name.
pub(super) fn summary(tool: &str, input: Option<&Value>, description: Option<&str>) -> String {
    let from_input = || {
        let obj = input?.as_object()?;
        key_field(tool)
            .iter()
            .find_map(|k| obj.get(*k).and_then(Value::as_str))
            .or_else(|| obj.values().find_map(Value::as_str))
            .map(str::to_string)
    };
    // What would run comes first: a model's description of its own command is not what a
    // human should approve.
    let text = from_input()
        .filter(|t| !t.trim().is_empty())
        .or_else(|| {
            description
                .map(str::to_string)
                .filter(|d| !d.trim().is_empty())
        })
        .unwrap_or_else(|| tool.to_string());
    one_line(&text, MAX_DESCRIPTION)
}

/// The input as compact JSON (or the filer's own preview), cut to [`MAX_PREVIEW`].
pub(super) fn preview(input: Option<&Value>, given: Option<&str>) -> String {
    let text = match (input, given) {
        (Some(v), _) => v.to_string(),
        (None, Some(p)) => p.to_string(),
        (None, None) => String::new(),
    };
    cut(&clean(&text, true), MAX_PREVIEW)
}

/// A place (cwd, host): one line, cut.
pub(super) fn place(s: Option<&str>) -> Option<String> {
    s.map(|s| one_line(s, MAX_PLACE)).filter(|s| !s.is_empty())
}

/// One line of at most `max` characters.
pub(crate) fn one_line(s: &str, max: usize) -> String {
    cut(clean(s, false).trim(), max)
}

/// Control characters become spaces (newlines and tabs kept only when `multiline`).
fn clean(s: &str, multiline: bool) -> String {
    s.chars()
        .map(|c| match c {
            '\n' | '\t' if multiline => c,
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202e}') => ' ',
            c => c,
        })
        .collect()
}

fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn summaries_say_what_would_run() {
        let bash = json!({"command": "npm test\n; rm -rf /tmp/x", "description": "x"});
        assert_eq!(
            summary("Bash", Some(&bash), None),
            "npm test ; rm -rf /tmp/x"
        );
        assert_eq!(
            summary(
                "Edit",
                Some(&json!({"file_path": "/a/b.rs", "old_string": "x"})),
                None
            ),
            "/a/b.rs"
        );
        assert_eq!(summary("Bash", None, Some("list files")), "list files");
        assert_eq!(summary("Mystery", None, None), "Mystery");
        let long = "x".repeat(5000);
        assert_eq!(
            summary("Bash", Some(&json!({"command": long})), None)
                .chars()
                .count(),
            MAX_DESCRIPTION
        );
        assert_eq!(
            preview(Some(&json!({"command": "y".repeat(9000)})), None)
                .chars()
                .count(),
            MAX_PREVIEW
        );
        assert_eq!(preview(None, Some("a\u{1b}[31m\nb")), "a [31m\nb");
    }
}
