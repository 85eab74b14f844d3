//! Making text that came from the hub safe to show — on a terminal (`claude-relay sessions`,
//! `claude-relay wait`) and to a model (the bridge's tool results and channel events).
//!
//! Anything another client wrote reaches us through the hub: session metadata (cwd, host,
//! …), message bodies, error texts. Raw, an ESC byte there clears a terminal or recolours it,
//! a newline forges a table row or a message header, and a bidi override (U+202E) makes text
//! read differently from what it is. So every such string goes through one of these
//! functions before it is printed, and what they remove is never silently dropped: each such
//! character becomes a visible escape (`\u{1b}`), so nothing is lost and nothing is hidden.
//!
//! - [`line`]: one-line fields (metadata, names, error messages): every control character,
//!   newlines and tabs included, is escaped.
//! - [`text`]: multi-line text (message bodies): newlines and tabs stay, everything else is
//!   escaped as in [`line`].
//! - [`json`]: JSON output for `--json`: serde_json already escapes C0 controls; this also
//!   writes DEL, C1 controls, bidi controls and line separators as `\uXXXX`, so the JSON
//!   still parses to exactly the same data.

use std::borrow::Cow;

/// The one rule of what is unsafe (defined in relay-proto so the hub uses it too).
pub use relay_proto::chars::is_unsafe;

fn escape(s: &str, keep: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !s.chars().any(|c| is_unsafe(c) && !keep(c)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if is_unsafe(c) && !keep(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `s` with every unsafe character (see [`is_unsafe`]) — newlines and tabs included —
/// written as a visible escape (`\u{1b}`), for fields shown on one line.
pub fn line(s: &str) -> Cow<'_, str> {
    escape(s, |_| false)
}

/// `s` with every unsafe character except `\n` and `\t` written as a visible escape, for
/// multi-line text such as message bodies. A `\r\n` line ending counts as `\n`.
pub fn text(s: &str) -> Cow<'_, str> {
    let keep = |c: char| c == '\n' || c == '\t';
    if s.contains("\r\n") {
        let joined = s.replace("\r\n", "\n");
        return Cow::Owned(escape(&joined, keep).into_owned());
    }
    escape(s, keep)
}

/// JSON text (as serde_json writes it) with every unsafe character that serde_json leaves raw
/// written as a `\uXXXX` escape. The result parses to the same value: those characters can
/// only occur inside strings, where the escape means the same character.
pub fn json(serialized: &str) -> Cow<'_, str> {
    if !serialized.chars().any(is_unsafe) {
        return Cow::Borrowed(serialized);
    }
    let mut out = String::with_capacity(serialized.len() + 16);
    for c in serialized.chars() {
        // Outside strings JSON only has ASCII whitespace, which is kept as it is.
        if is_unsafe(c) && !matches!(c, '\n' | '\t' | '\r') {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_escape_controls_newlines_and_bidi() {
        assert_eq!(line("/work/app"), "/work/app");
        assert!(matches!(line("plain ü"), Cow::Borrowed(_)));
        assert_eq!(line("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(line("x\ny\tz\r"), "x\\u{a}y\\u{9}z\\u{d}");
        assert_eq!(line("evil\u{202e}txt.exe"), "evil\\u{202e}txt.exe");
        assert_eq!(line("\u{9b}31m"), "\\u{9b}31m");
        assert_eq!(line("\u{7f}"), "\\u{7f}");
        assert_eq!(line("a\u{2028}b"), "a\\u{2028}b");
    }

    #[test]
    fn text_keeps_newlines_and_tabs() {
        assert_eq!(text("one\n\ttwo"), "one\n\ttwo");
        assert_eq!(text("one\r\ntwo"), "one\ntwo");
        assert_eq!(
            text("bell\u{7}\u{1b}]0;x\u{7}"),
            "bell\\u{7}\\u{1b}]0;x\\u{7}"
        );
        assert_eq!(text("lone\rcr"), "lone\\u{d}cr");
    }

    #[test]
    fn json_stays_the_same_data() {
        let v = serde_json::json!({"cwd": "a\u{1b}b\u{9b}c\u{202e}d\u{7f}e\n", "n": 1});
        let raw = serde_json::to_string_pretty(&v).unwrap();
        let safe = json(&raw);
        assert!(!safe.chars().any(is_unsafe_outside_whitespace), "{safe}");
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(back, v);
    }

    fn is_unsafe_outside_whitespace(c: char) -> bool {
        is_unsafe(c) && !matches!(c, '\n' | '\t' | '\r')
    }
}
