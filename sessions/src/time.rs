//! Wall-clock helpers: the protocol's timestamps are ISO-8601 UTC strings with milliseconds
//! (`2026-11-23T19:37:47.123Z`, what JavaScript's `toISOString()` prints), stored as Unix
//! milliseconds.

use chrono::{DateTime, SecondsFormat, Utc};

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// Formats Unix milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn iso(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses an RFC 3339 / ISO-8601 time (any offset) into Unix milliseconds.
pub fn parse_iso(s: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// "3s", "5m", "2h", "4d": a short human age for tables and tool output.
pub fn ago(ms: i64, now: i64) -> String {
    let s = (now - ms).max(0) / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_round_trip() {
        let ms = 1_795_462_667_123;
        let s = iso(ms);
        assert_eq!(s, "2026-11-23T19:37:47.123Z");
        assert_eq!(parse_iso(&s), Some(ms));
        assert_eq!(parse_iso("2026-11-23T20:37:47.123+01:00"), Some(ms));
        assert_eq!(parse_iso("yesterday"), None);
    }

    #[test]
    fn ages() {
        assert_eq!(ago(0, 59_000), "59s");
        assert_eq!(ago(0, 120_000), "2m");
        assert_eq!(ago(0, 7_200_000), "2h");
        assert_eq!(ago(0, 3 * 86_400_000), "3d");
    }
}
