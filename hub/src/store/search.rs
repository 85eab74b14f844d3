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
/// Words of message text around the matches in a snippet.
pub(crate) const SNIPPET_TOKENS: usize = 12;
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

    /// The words of [`expr`](Self::expr) and whether each matches as a prefix (what a
    /// snippet marks).
    fn words(&self) -> Vec<(&str, bool)> {
        self.expr
            .split(' ')
            .filter_map(|w| {
                let prefix = w.ends_with('*');
                let w = w.trim_end_matches('*').trim_matches('"');
                (!w.is_empty()).then_some((w, prefix))
            })
            .collect()
    }

    /// A few words of `content` around the matches of this query: the [`SNIPPET_TOKENS`]
    /// words holding the most of them (the earliest such run), each match in `[` `]`, `…`
    /// where the text was cut, at most [`SNIPPET_CHARS`] characters. Words are split as the
    /// index's tokenizer splits them (runs of letters and digits) and compared in lower case
    /// (an accented word found through its unaccented form is shown unmarked).
    pub(crate) fn snippet(&self, content: &str) -> String {
        let words = self.words();
        let tokens = tokens(content);
        let hit = |&(at, end): &(usize, usize)| {
            let token = content[at..end].to_lowercase();
            words.iter().any(|&(w, prefix)| {
                if prefix {
                    token.starts_with(w)
                } else {
                    token == w
                }
            })
        };
        let hits: Vec<bool> = tokens.iter().map(hit).collect();
        let span = SNIPPET_TOKENS.min(tokens.len());
        let mut best = (0, 0);
        for start in 0..=tokens.len() - span {
            let n = hits[start..start + span].iter().filter(|h| **h).count();
            if n > best.1 {
                best = (start, n);
            }
        }
        // Two words before the first match, as long as every match of the run stays in.
        let in_run = |i: &usize| hits[*i];
        let first = match (
            (best.0..best.0 + span).find(in_run),
            (best.0..best.0 + span).rfind(in_run),
        ) {
            (Some(h), Some(l)) => h
                .saturating_sub(2)
                .min(tokens.len() - span)
                .max((l + 1).saturating_sub(span)),
            _ => 0,
        };
        let last = first + span; // one past the last word shown
        let from = if first == 0 { 0 } else { tokens[first].0 };
        let to = if last >= tokens.len() {
            content.len()
        } else {
            tokens[last - 1].1
        };
        let mut out = String::new();
        if first > 0 {
            out.push('…');
        }
        let mut at = from;
        for (i, &(t_at, t_end)) in tokens.iter().enumerate().take(last).skip(first) {
            out.push_str(&content[at..t_at]);
            if hits[i] {
                out.push('[');
                out.push_str(&content[t_at..t_end]);
                out.push(']');
            } else {
                out.push_str(&content[t_at..t_end]);
            }
            at = t_end;
        }
        out.push_str(&content[at..to]);
        if last < tokens.len() {
            out.push('…');
        }
        cut_snippet(out)
    }
}

#[cfg(test)]
impl SearchQuery {
    /// The first page of 10 for `text`, without filters (for tests).
    pub(crate) fn of(text: &str) -> Self {
        let (expr, phrase) = Self::terms(text).unwrap();
        Self {
            expr,
            phrase,
            from: None,
            thread: None,
            since: None,
            until: None,
            offset: 0,
            count: 10,
        }
    }
}

/// Byte ranges of the words of `s` (runs of letters and digits).
fn tokens(s: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in s.char_indices() {
        match (c.is_alphanumeric(), start) {
            (true, None) => start = Some(i),
            (false, Some(at)) => {
                out.push((at, i));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(at) = start {
        out.push((at, s.len()));
    }
    out
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

    fn query(text: &str) -> SearchQuery {
        SearchQuery::of(text)
    }

    #[test]
    fn a_snippet_marks_the_matches_in_the_densest_run_of_words() {
        let q = query("Auth MIGRAT*");
        assert_eq!(
            q.snippet("status: auth migration done, and the rest"),
            "status: [auth] [migration] done, and the rest"
        );
        let long = format!(
            "{} the auth migrations landed {}",
            "one two three four five six seven eight nine ten eleven twelve thirteen",
            "and then we went home for the weekend"
        );
        assert_eq!(
            q.snippet(&long),
            "…thirteen the [auth] [migrations] landed and then we went home for the…"
        );
        // No match in the text (a stale hit): its first words.
        assert_eq!(query("zebra").snippet("a b c"), "a b c");
        assert_eq!(query("zebra").snippet(""), "");
        // A long token is cut with the rest.
        let blob = "x".repeat(500);
        let s = query("auth").snippet(&format!("auth {blob}"));
        assert!(s.starts_with("[auth] xxx") && s.ends_with('…'), "{s}");
        assert_eq!(s.chars().count(), super::SNIPPET_CHARS + 1);
    }

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
