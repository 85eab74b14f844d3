//! Figures and how they are shown: each scenario run produces a [`Row`] (named figures, the
//! same object `--json` prints), runs are combined into a median row, and rows become
//! readable tables.
//!
//! The median is taken per figure, independently (the median p99 and the median throughput
//! may come from different runs): that is what "median of three runs" means in
//! docs/BENCHMARKS.md, and it keeps one disturbed run from moving any figure.

use std::io::{self, Write};

use serde_json::{Map, Value};

/// A run's (or a median's) figures by name.
pub(crate) type Row = Map<String, Value>;

/// Sets one figure.
pub(crate) fn put(row: &mut Row, key: &str, v: impl Into<Value>) {
    row.insert(key.to_string(), v.into());
}

/// Sets a figure if it exists.
pub(crate) fn put_opt(row: &mut Row, key: &str, v: Option<impl Into<Value>>) {
    if let Some(v) = v {
        put(row, key, v);
    }
}

/// The median of `xs` (the mean of the middle two for an even count); `None` when empty.
pub(crate) fn median(xs: &mut [f64]) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(f64::total_cmp);
    let m = xs.len() / 2;
    Some(if !xs.len().is_multiple_of(2) {
        xs[m]
    } else {
        (xs[m - 1] + xs[m]) / 2.0
    })
}

/// Per-figure medians of `runs`. Numeric figures become their median over the runs that
/// have them; anything else (names, first errors) is taken from the first run that has it.
pub(crate) fn median_row(runs: &[Row]) -> Row {
    let mut out = Row::new();
    let mut keys: Vec<&String> = Vec::new();
    for r in runs {
        for k in r.keys() {
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
    }
    for k in keys {
        let values: Vec<&Value> = runs.iter().filter_map(|r| r.get(k)).collect();
        let mut nums: Vec<f64> = values.iter().filter_map(|v| v.as_f64()).collect();
        if nums.len() == values.len()
            && let Some(m) = median(&mut nums)
        {
            let all_int = values.iter().all(|v| v.is_u64()) && m.fract() == 0.0;
            out.insert(
                k.clone(),
                if all_int {
                    Value::from(m as u64)
                } else {
                    Value::from(m)
                },
            );
        } else if let Some(v) = values.first() {
            out.insert(k.clone(), (*v).clone());
        }
    }
    out
}

/// One column of a table: header, figure name, decimals.
pub(crate) type Column = (&'static str, &'static str, usize);

/// Columns of the message scenarios.
pub(crate) const TRAFFIC: &[Column] = &[
    ("deliv/s", "deliveries_per_sec", 0),
    ("p50 ms", "p50_ms", 3),
    ("p99 ms", "p99_ms", 3),
    ("max ms", "max_ms", 2),
    ("lost", "lost", 0),
    ("dup", "duplicated", 0),
    ("misrt", "misrouted", 0),
    ("rejct", "rejected", 0),
    ("hub ms/1k", "hub_cpu_ms_per_1k", 2),
    ("hub CPU%", "hub_cpu_pct", 0),
    ("store thr%", "hub_store_thread_pct", 0),
    ("search ms/1k", "hub_search_ms_per_1k", 2),
    ("hub RSS MiB", "hub_rss_mib", 1),
    ("gen CPU%", "gen_cpu_pct", 0),
    ("gen ms/1k", "gen_cpu_ms_per_1k", 2),
    ("other CPU%", "other_cpu_pct", 0),
];

/// Columns of the registration scenario.
pub(crate) const REGISTER: &[Column] = &[
    ("presence", "presence", 0),
    ("sessions", "sessions", 0),
    ("wall s", "register_wall_s", 2),
    ("hub CPU ms", "hub_cpu_ms", 0),
    ("µs/session", "hub_cpu_us_per_session", 0),
    ("presence frames", "presence_frames", 0),
    ("joins seen", "presence_joins", 0),
    ("resyncs", "presence_resyncs", 0),
    ("informed", "presence_informed", 0),
    ("told stale", "presence_told_stale", 0),
    ("presence MiB", "presence_mib", 1),
    ("rate waits", "register_rate_limited", 0),
    ("hub RSS MiB", "hub_rss_mib", 1),
    ("gen CPU ms", "gen_cpu_ms", 0),
    ("other CPU%", "other_cpu_pct", 0),
];

/// Columns of the idle-connections scenario.
pub(crate) const IDLE: &[Column] = &[
    ("conns", "connections", 0),
    ("RSS rest MiB", "hub_rss_rest_mib", 2),
    ("RSS conn MiB", "hub_rss_connected_mib", 1),
    ("KiB/conn", "hub_kib_per_connection", 1),
    ("idle s", "idle_s", 0),
    ("idle CPU ms", "idle_hub_cpu_ms", 0),
    ("dropped idle", "closed_by_hub_in_idle_window", 0),
    ("RSS closed MiB", "hub_rss_after_close_mib", 1),
    ("hub CPU ms reg", "hub_cpu_ms", 0),
    ("wall s reg", "register_wall_s", 1),
    ("other CPU%", "other_cpu_pct", 0),
];

/// Figures of the message scenarios compared with the floor relay (`--floor`): header,
/// figure name. Lower is better for each, so a ratio above 1 is what the hub costs beyond
/// routing plus the write.
pub(crate) const VERSUS_TRAFFIC: &[(&str, &str)] = &[
    ("hub CPU ms per 1,000 deliveries", "hub_cpu_ms_per_1k"),
    ("p50 ms", "p50_ms"),
    ("p99 ms", "p99_ms"),
    ("hub RSS MiB", "hub_rss_mib"),
];
/// Figures of the registration scenario compared with the floor relay.
pub(crate) const VERSUS_REGISTER: &[(&str, &str)] = &[
    ("hub CPU ms to register them all", "hub_cpu_ms"),
    ("hub RSS MiB afterwards", "hub_rss_mib"),
];
/// Figures of the idle scenario compared with the floor relay.
pub(crate) const VERSUS_IDLE: &[(&str, &str)] = &[
    ("KiB per connection", "hub_kib_per_connection"),
    ("idle CPU ms", "idle_hub_cpu_ms"),
    ("hub CPU ms to register them", "hub_cpu_ms"),
];

/// One line of the comparison with the floor: the hub's and the floor's medians and the
/// median of the per-run ratios (run *i* of the hub ÷ run *i* of the floor, measured back to
/// back, so a slow drift of the machine's load cancels).
pub(crate) struct Versus {
    /// Header of the figure.
    pub figure: &'static str,
    /// Its key in a [`Row`].
    pub key: &'static str,
    /// The hub's median.
    pub hub: f64,
    /// The floor's median.
    pub floor: f64,
    /// Median of the paired ratios.
    pub ratio: f64,
}

/// The `figures` (e.g. [`VERSUS_TRAFFIC`]) that both sides reported, paired run by run.
pub(crate) fn versus(
    hub: &[Row],
    floor: &[Row],
    figures: &[(&'static str, &'static str)],
) -> Vec<Versus> {
    let f = |r: &Row, k: &str| r.get(k).and_then(Value::as_f64);
    let mut out = Vec::new();
    for &(figure, key) in figures {
        let mut ratios: Vec<f64> = hub
            .iter()
            .zip(floor)
            .filter_map(|(h, fl)| Some((f(h, key)?, f(fl, key)?)))
            .filter(|&(_, fl)| fl > 0.0)
            .map(|(h, fl)| h / fl)
            .collect();
        let mut hs: Vec<f64> = hub.iter().filter_map(|r| f(r, key)).collect();
        let mut fs: Vec<f64> = floor.iter().filter_map(|r| f(r, key)).collect();
        if let (Some(ratio), Some(h), Some(fl)) =
            (median(&mut ratios), median(&mut hs), median(&mut fs))
        {
            out.push(Versus {
                figure,
                key,
                hub: h,
                floor: fl,
                ratio,
            });
        }
    }
    out
}

fn cell(row: &Row, key: &str, decimals: usize) -> String {
    match row.get(key) {
        None | Some(Value::Null) => "–".into(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => match v.as_f64() {
            Some(x) if decimals == 0 && x.abs() >= 10_000.0 => group(x.round() as i64),
            Some(x) => format!("{x:.decimals$}"),
            None => v.to_string(),
        },
    }
}

/// 1234567 → "1,234,567".
pub(crate) fn group(n: i64) -> String {
    let s = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// Writes a table: one line per `(label, row)`.
pub(crate) fn table(
    w: &mut impl Write,
    columns: &[Column],
    rows: &[(String, Row)],
) -> io::Result<()> {
    let mut grid: Vec<Vec<String>> = vec![
        std::iter::once("scenario".to_string())
            .chain(columns.iter().map(|c| c.0.to_string()))
            .collect(),
    ];
    for (label, row) in rows {
        grid.push(
            std::iter::once(label.clone())
                .chain(columns.iter().map(|&(_, k, d)| cell(row, k, d)))
                .collect(),
        );
    }
    let widths: Vec<usize> = (0..=columns.len())
        .map(|i| grid.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for (n, r) in grid.iter().enumerate() {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let pad = widths[i] - c.chars().count();
                if i == 0 {
                    format!("{c}{}", " ".repeat(pad))
                } else {
                    format!("{}{c}", " ".repeat(pad))
                }
            })
            .collect();
        writeln!(w, "{}", line.join("  "))?;
        if n == 0 {
            let total = widths.iter().sum::<usize>() + 2 * columns.len();
            writeln!(w, "{}", "-".repeat(total))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn medians() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&mut [7.5]), Some(7.5));
    }

    #[test]
    fn median_row_is_per_figure() {
        let runs: Vec<Row> = [
            json!({"scenario": "direct", "p99_ms": 3.0, "lost": 0, "x": 10}),
            json!({"scenario": "direct", "p99_ms": 1.0, "lost": 2, "x": 30}),
            json!({"scenario": "direct", "p99_ms": 2.0, "lost": 0, "first_error": "boom"}),
        ]
        .into_iter()
        .map(|v| v.as_object().unwrap().clone())
        .collect();
        let m = median_row(&runs);
        assert_eq!(m["scenario"], "direct");
        assert_eq!(m["p99_ms"], 2.0);
        assert_eq!(m["lost"], 0);
        assert!(m["lost"].is_u64());
        assert_eq!(m["x"], 20.0, "median over the runs that have it");
        assert_eq!(m["first_error"], "boom");
    }

    #[test]
    fn table_aligns_and_marks_missing() {
        let row = json!({"deliveries_per_sec": 61234.4, "p50_ms": 0.41234})
            .as_object()
            .unwrap()
            .clone();
        let mut out = Vec::new();
        table(
            &mut out,
            &[
                ("deliv/s", "deliveries_per_sec", 0),
                ("p50 ms", "p50_ms", 3),
                ("x", "x", 0),
            ],
            &[("direct".into(), row)],
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(
            lines[2].contains("61,234") && lines[2].contains("0.412"),
            "{text}"
        );
        assert!(lines[2].ends_with('–'), "{text}");
        assert_eq!(lines[0].len(), lines[2].len() - "–".len() + 1);
    }

    #[test]
    fn ratios_to_the_floor_are_paired_run_by_run() {
        let rows = |v: &[f64]| -> Vec<Row> {
            v.iter()
                .map(|x| json!({"hub_cpu_ms_per_1k": x}).as_object().unwrap().clone())
                .collect()
        };
        let v = versus(
            &rows(&[6.0, 9.0, 4.0]),
            &rows(&[3.0, 3.0, 4.0]),
            VERSUS_TRAFFIC,
        );
        assert_eq!(v.len(), 1, "only figures both sides have");
        assert_eq!((v[0].hub, v[0].floor, v[0].ratio), (6.0, 3.0, 2.0));
    }

    #[test]
    fn grouping() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
        assert_eq!(group(-1234567), "-1,234,567");
    }
}
