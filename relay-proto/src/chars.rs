//! Which characters must never reach a human or a model raw — one rule, shared by the hub
//! (which refuses or replaces them in what it stores for humans, e.g. approval prompts) and
//! by clients (which escape them before printing, `relay_local::display`).

/// True for characters that must never reach a terminal or a model raw: C0 and C1 controls
/// and DEL (`char::is_control`), bidi embedding/override/isolate controls and marks
/// (U+061C, U+200E, U+200F, U+202A–U+202E, U+2066–U+2069), and the Unicode line and
/// paragraph separators (U+2028, U+2029), which some renderers treat as newlines.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
                | '\u{2028}'
                | '\u{2029}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bidi_controls_marks_and_separators_are_unsafe() {
        for c in [
            '\u{1b}', '\u{7f}', '\u{9b}', '\u{61c}', '\u{200e}', '\u{200f}', '\u{202a}',
            '\u{202b}', '\u{202c}', '\u{202d}', '\u{202e}', '\u{2066}', '\u{2067}', '\u{2068}',
            '\u{2069}', '\u{2028}', '\u{2029}',
        ] {
            assert!(is_unsafe(c), "{:?}", c);
        }
        for c in ['a', 'ü', '…', '\u{200d}', ' '] {
            assert!(!is_unsafe(c), "{:?}", c);
        }
    }
}
