//! What a human reads about a prompt: one line saying what would run, and a bounded preview
//! of the tool's input. Both come from the agent and are attacker-controlled: control
//! characters and bidi controls (`relay_proto::chars::is_unsafe`) are replaced, lengths are cut (`relay_proto::wire_approvals` caps), and every
//! view renders them as text, never as markup.

use relay_proto::{
    chars::is_unsafe,
    wire_approvals::{CHANNEL_PREVIEW, MAX_DESCRIPTION, MAX_PLACE, MAX_PREVIEW},
};
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

/// One line: the key field of the input (the command, the file path, the URL) — for a
/// channel prompt, of its `input_preview` when that still reads as JSON, else the preview's
/// text itself — else the tool name. Never the model's own description of its call: what
/// would run is what a human approves.
pub(super) fn summary(tool: &str, input: Option<&Value>, given_preview: Option<&str>) -> String {
    let from_input = |input: Option<&Value>| {
        let obj = input?.as_object()?;
        key_field(tool)
            .iter()
            .find_map(|k| obj.get(*k).and_then(Value::as_str))
            .or_else(|| obj.values().find_map(Value::as_str))
            .map(str::to_string)
    };
    let parsed = match (input, given_preview) {
        (None, Some(p)) => serde_json::from_str::<Value>(p).ok(),
        _ => None,
    };
    let text = from_input(input.or(parsed.as_ref()))
        .or_else(|| {
            given_preview
                .filter(|_| input.is_none())
                .map(str::to_string)
        })
        .filter(|t| !t.trim().is_empty())
        .unwrap_or_else(|| tool.to_string());
    one_line(&text, MAX_DESCRIPTION)
}

/// The input a human is shown, and whether it is all of it.
pub(super) struct Preview {
    /// Compact JSON of the input (or the filer's own preview), cut to [`MAX_PREVIEW`].
    pub(super) text: String,
    /// Whether `text` is not the whole input.
    pub(super) truncated: bool,
    /// The whole input's length in characters, when the hub saw it whole.
    pub(super) input_chars: Option<u64>,
}

/// The input as compact JSON (or the filer's own preview), cut to [`MAX_PREVIEW`], and
/// whether it was cut — here, or (a channel preview of [`CHANNEL_PREVIEW`] characters or
/// more) by the agent's client before it reached us.
pub(super) fn preview(input: Option<&Value>, given: Option<&str>) -> Preview {
    let (text, whole) = match (input, given) {
        (Some(v), _) => (v.to_string(), true),
        (None, Some(p)) => (p.to_string(), false),
        (None, None) => (String::new(), true),
    };
    let chars = text.chars().count();
    let cut_here = chars > MAX_PREVIEW;
    let cut_before = !whole && chars >= CHANNEL_PREVIEW;
    Preview {
        text: cut(&clean(&text, true), MAX_PREVIEW),
        truncated: cut_here || cut_before,
        input_chars: (!cut_before).then_some(chars as u64),
    }
}

/// A place (cwd, host): one line, cut.
pub(super) fn place(s: Option<&str>) -> Option<String> {
    s.map(|s| one_line(s, MAX_PLACE)).filter(|s| !s.is_empty())
}

/// One line of at most `max` characters.
pub(crate) fn one_line(s: &str, max: usize) -> String {
    cut(clean(s, false).trim(), max)
}

/// Unsafe characters ([`is_unsafe`]: controls, bidi controls and marks, line separators)
/// become spaces (newlines and tabs kept only when `multiline`).
fn clean(s: &str, multiline: bool) -> String {
    s.chars()
        .map(|c| match c {
            '\n' | '\t' if multiline => c,
            c if is_unsafe(c) => ' ',
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
        // A channel prompt: from its preview, never from the model's description.
        assert_eq!(
            summary("Bash", None, Some(r#"{"command":"npm test"}"#)),
            "npm test"
        );
        assert_eq!(
            summary("Bash", None, Some(r#"{"command":"npm te"#)),
            r#"{"command":"npm te"#
        );
        assert_eq!(summary("Mystery", None, None), "Mystery");
        let long = "x".repeat(5000);
        assert_eq!(
            summary("Bash", Some(&json!({"command": long})), None)
                .chars()
                .count(),
            MAX_DESCRIPTION
        );
        let big = preview(Some(&json!({"command": "y".repeat(9000)})), None);
        assert_eq!(big.text.chars().count(), MAX_PREVIEW);
        assert!(big.truncated);
        assert_eq!(
            big.input_chars,
            Some(9000 + r#"{"command":""}"#.len() as u64)
        );
        let small = preview(Some(&json!({"command": "ls"})), None);
        assert!(!small.truncated);
        assert_eq!(small.input_chars, Some(16));
        let channel = preview(None, Some(&"z".repeat(CHANNEL_PREVIEW)));
        assert!(
            channel.truncated,
            "a full-length channel preview may have been cut"
        );
        assert_eq!(channel.input_chars, None, "its whole length is not known");
        let short = preview(None, Some("{}"));
        assert!(!short.truncated);
        assert_eq!(short.input_chars, Some(2));
        assert_eq!(preview(None, Some("a\u{1b}[31m\nb")).text, "a [31m\nb");
        let bidi = "x\u{202a}\u{202b}\u{202c}\u{202d}\u{2066}\u{2067}\u{2068}\u{2069}\u{200e}\u{200f}\u{61c}y";
        assert_eq!(one_line(bidi, 100), "x           y");
        assert_eq!(preview(None, Some(bidi)).text, "x           y");
    }
}
