//! Structured logs: every connection's log lines carry a span with its peer address and, once
//! it registered, its session name — so one grep follows one session — and `--log-format
//! json` writes one JSON object per line for log shippers.

use crate::common;

use common::{
    hub::{Hub, HubOpts, WAIT},
    ws::Ws,
};
use serde_json::{Value, json};

/// Polls the hub's log until a line satisfies `pick` (bounded).
async fn log_until(hub: &Hub, pick: impl Fn(&str) -> bool) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let lines = hub.log.lock().unwrap().clone();
        if lines.iter().any(|l| pick(l)) {
            return lines;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no such log line in {lines:#?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn json_logs_carry_the_connection_span_with_the_session_name() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start_with(
        dir.path(),
        HubOpts {
            args: vec!["--log-format".into(), "json".into()],
            ..HubOpts::default()
        },
    )
    .await;
    let (mut a, _) = Ws::register(&hub.url, "CC-7").await;
    a.send(json!({"type": "message", "to": "Nobody", "content": "x"}))
        .await;
    a.until("sent").await;
    drop(a);
    let lines = log_until(&hub, |l| l.contains("disconnected")).await;
    let events: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let of_session: Vec<&Value> = events
        .iter()
        .filter(|e| e["span"]["session"] == "CC-7")
        .collect();
    let messages: Vec<&str> = of_session
        .iter()
        .filter_map(|e| e["fields"]["message"].as_str())
        .collect();
    assert!(messages.contains(&"registered"), "{events:#?}");
    assert!(messages.contains(&"disconnected"), "{events:#?}");
    for e in &of_session {
        assert_eq!(e["span"]["name"], "conn", "{e}");
        assert!(
            e["span"]["peer"]
                .as_str()
                .unwrap()
                .starts_with("127.0.0.1:"),
            "{e}"
        );
    }
}

#[tokio::test]
async fn text_logs_name_the_session_on_every_line_of_its_connection() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path()).await;
    let (a, _) = Ws::register(&hub.url, "CC-8").await;
    drop(a);
    let lines = log_until(&hub, |l| l.contains("disconnected")).await;
    let line = lines.iter().find(|l| l.contains("disconnected")).unwrap();
    assert!(
        line.contains("session=CC-8") && line.contains("peer=127.0.0.1:"),
        "{line}"
    );
}

#[tokio::test]
async fn a_registration_storm_is_logged_as_a_sample_and_a_count() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path()).await;
    // A few sessions: every one is logged.
    let (_first, _) = Ws::register(&hub.url, "First").await;
    log_until(&hub, |l| l.contains("registered") && l.contains("First")).await;

    // A storm: far more than the budget of 50 lines a second.
    const STORM: usize = 200;
    let started = std::time::Instant::now();
    let mut held = Vec::new();
    for i in 0..STORM {
        held.push(Ws::register(&hub.url, &format!("S{i}")).await.0);
    }
    let seconds = started.elapsed().as_secs() + 1;
    // The line after the storm says how many were left out.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let (_last, _) = Ws::register(&hub.url, "Last").await;
    let lines = log_until(&hub, |l| l.contains("registered") && l.contains("Last")).await;
    let storm_lines = lines
        .iter()
        .filter(|l| l.contains("registered") && l.contains("id=S"))
        .count();
    assert!(
        storm_lines as u64 <= 50 * (seconds + 1),
        "{storm_lines} lines for {STORM} registrations in {seconds} s"
    );
    let skipped: u64 = lines
        .iter()
        .filter_map(|l| l.split("skipped=").nth(1))
        .map(|n| n.split_whitespace().next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(
        storm_lines as u64 + skipped,
        STORM as u64,
        "every registration is either a line or counted in one: {lines:#?}"
    );
}
