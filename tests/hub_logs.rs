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
