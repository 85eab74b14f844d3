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
    Iso(ms).to_string()
}

/// Unix milliseconds that display as `YYYY-MM-DDTHH:MM:SS.mmmZ` without allocating (the hub
/// writes one per message it routes). Years outside 0000–9999 fall back to chrono.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Iso(pub i64);

impl Iso {
    /// The 24 bytes of `YYYY-MM-DDTHH:MM:SS.mmmZ`, for years 0000–9999 (`None` outside them),
    /// for a writer that appends bytes: going through `Display` and `write!` cost the hub's
    /// routing a seventh of its time per message (docs/BENCHMARKS.md, "Routing").
    pub fn bytes(self) -> Option<[u8; 24]> {
        let ms = self.0;
        let days = ms.div_euclid(86_400_000);
        let in_day = ms.rem_euclid(86_400_000);
        let (y, m, d) = civil_from_days(days);
        if !(0..=9999).contains(&y) {
            return None;
        }
        let (h, rest) = (in_day / 3_600_000, in_day % 3_600_000);
        let (min, rest) = (rest / 60_000, rest % 60_000);
        let (sec, milli) = (rest / 1000, rest % 1000);
        let mut b = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, v: i64, width: usize| {
            let mut v = v;
            for i in (0..width).rev() {
                b[at + i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(0, y, 4);
        put(5, m, 2);
        put(8, d, 2);
        put(11, h, 2);
        put(14, min, 2);
        put(17, sec, 2);
        put(20, milli, 3);
        Some(b)
    }
}

impl std::fmt::Display for Iso {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.bytes() {
            Some(b) => f.write_str(std::str::from_utf8(&b).expect("ASCII")),
            None => {
                let t = DateTime::<Utc>::from_timestamp_millis(self.0).unwrap_or_default();
                f.write_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true))
            }
        }
    }
}

/// (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
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
    fn fast_iso_matches_chrono_everywhere() {
        for ms in [
            0i64,
            1,
            999,
            86_399_999,
            951_782_400_000,   // 2000-02-29
            1_795_462_667_123, // 2026-11-23
            4_102_444_800_000, // 2100-01-01
            -1,
            -86_400_001,
            253_402_300_799_999, // 9999-12-31T23:59:59.999
            253_402_300_800_000, // 10000-01-01: chrono's form, not the fixed 24 bytes
            -62_167_219_200_000, // 0000-01-01T00:00:00.000: the first fixed-width time
            -62_167_219_200_001, // a millisecond before: year -0001, chrono's form
        ] {
            let chrono = DateTime::<Utc>::from_timestamp_millis(ms)
                .unwrap()
                .to_rfc3339_opts(SecondsFormat::Millis, true);
            assert_eq!(iso(ms), chrono, "{ms}");
            let fixed = Iso(ms)
                .bytes()
                .map(|b| String::from_utf8(b.to_vec()).unwrap());
            assert_eq!(fixed.is_some(), chrono.len() == 24, "{ms}: {chrono}");
            assert!(fixed.is_none_or(|f| f == chrono), "{ms}");
        }
        let mut ms = -10_000_000_000_000i64;
        while ms < 200_000_000_000_000 {
            let chrono = DateTime::<Utc>::from_timestamp_millis(ms)
                .unwrap()
                .to_rfc3339_opts(SecondsFormat::Millis, true);
            assert_eq!(iso(ms), chrono, "{ms}");
            ms += 7_777_777_777;
        }
    }

    #[test]
    fn ages() {
        assert_eq!(ago(0, 59_000), "59s");
        assert_eq!(ago(0, 120_000), "2m");
        assert_eq!(ago(0, 7_200_000), "2h");
        assert_eq!(ago(0, 3 * 86_400_000), "3d");
    }
}
