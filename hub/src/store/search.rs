//! What a `search` asks of the store and what it gets back (docs/PROTOCOL.md, "search").
//!
//! The query is turned into an FTS5 expression here, never by pasting the client's text
//! into one: every word is quoted, so FTS5 operators (`OR`, `NEAR`, `:`, `^`, parentheses)
//! in a query are just words. Bounds: [`MAX_TERMS`] words, [`MAX_OFFSET`] results paged
//! through, [`SNIPPET_CHARS`] characters of snippet.

use std::sync::Arc;

use super::Reply;

/// Most words in one query (more are refused, not dropped: the asker should know).
pub(crate) const MAX_TERMS: usize = 16;
/// Deepest position a page may start at: ranking sorts every match, so paging is for the
/// first few pages, not for walking the whole history (that is `get_history`).
pub(crate) const MAX_OFFSET: usize = 1000;
/// Tokens of message text around the matches in a snippet (FTS5 `snippet()`).
pub(crate) const SNIPPET_TOKENS: i64 = 12;
/// Longest snippet, in characters: one token can be long (a URL, a hash, a blob of text
/// without spaces), so the snippet is cut here whatever FTS5 made.
pub(crate) const SNIPPET_CHARS: usize = 160;

/// A validated `search`.
#[derive(Debug, Clone)]
pub(crate) struct SearchQuery {
    /// The FTS5 expression: every word quoted, all required.
    pub expr: String,
    /// The words as one lower-case phrase: messages containing it rank first (empty for a
    /// one-word query, where it would add nothing).
    pub phrase: String,
    /// Only from this sender.
    pub from: Option<String>,
    /// Only this thread (its root's seq).
    pub thread: Option<u64>,
    /// Only stored at or after this time (Unix ms).
    pub since: Option<i64>,
    /// Only stored before this time (Unix ms).
    pub until: Option<i64>,
    /// Results to skip (the page's start).
    pub offset: usize,
    /// Page size.
    pub count: usize,
}

impl SearchQuery {
    /// The expression and phrase for `query`, or why it cannot be searched. Words are runs
    /// of letters and digits (as the index's tokenizer splits them); a word typed with a
    /// trailing `*` matches as a prefix.
    pub(crate) fn terms(query: &str) -> Result<(String, String), String> {
        let mut words: Vec<(String, bool)> = Vec::new();
        for raw in query.split_whitespace() {
            let prefix = raw.ends_with('*');
            let mut pieces = raw
                .split(|c: char| !c.is_alphanumeric())
                .filter(|p| !p.is_empty())
                .peekable();
            while let Some(p) = pieces.next() {
                let last = pieces.peek().is_none();
                words.push((p.to_lowercase(), prefix && last));
            }
        }
        if words.is_empty() {
            return Err("the query has no words to search for (letters or digits)".into());
        }
        if words.len() > MAX_TERMS {
            return Err(format!(
                "the query has {} words; at most {MAX_TERMS} are searched at once",
                words.len()
            ));
        }
        let expr = words
            .iter()
            .map(|(w, prefix)| format!("\"{w}\"{}", if *prefix { "*" } else { "" }))
            .collect::<Vec<_>>()
            .join(" ");
        let phrase = if words.len() > 1 {
            words
                .iter()
                .map(|(w, _)| w.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        } else {
            String::new()
        };
        Ok((expr, phrase))
    }
}

/// One result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SearchHit {
    /// The message's seq.
    pub seq: u64,
    /// When it was stored (Unix ms).
    pub ts: i64,
    /// Sender.
    pub from: Arc<str>,
    /// Recipient or `all`.
    pub to: Arc<str>,
    /// What it answers, if anything.
    pub reply: Option<Reply>,
    /// A few words around the matches.
    pub snippet: String,
}

/// A page of results, best first.
#[derive(Debug, Clone, Default)]
pub(crate) struct SearchPage {
    /// The hits.
    pub hits: Vec<SearchHit>,
    /// More results follow (and the next page starts within [`MAX_OFFSET`]).
    pub more: bool,
}

/// Cuts `s` to [`SNIPPET_CHARS`] characters, marking the cut.
pub(crate) fn cut_snippet(s: String) -> String {
    match s.char_indices().nth(SNIPPET_CHARS) {
        None => s,
        Some((at, _)) => format!("{}…", &s[..at]),
    }
}

#[cfg(test)]
mod tests {
    use super::SearchQuery;

    #[test]
    fn words_are_quoted_so_fts_operators_are_only_words() {
        let (expr, phrase) = SearchQuery::terms("auth OR (migration) NEAR:x").unwrap();
        assert_eq!(expr, r#""auth" "or" "migration" "near" "x""#);
        assert_eq!(phrase, "auth or migration near x");
        let (expr, phrase) = SearchQuery::terms("migrat*").unwrap();
        assert_eq!(expr, r#""migrat"*"#);
        assert_eq!(phrase, "");
        assert!(SearchQuery::terms(" \"*\" ()").is_err());
        assert!(SearchQuery::terms(&"w ".repeat(17)).is_err());
    }
}
