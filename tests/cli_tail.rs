//! `claude-relay tail` against a real hub: refused without the hub token (and the token never
//! echoed), then one line per event for the traffic the test sends — with and without
//! `--content`, filtered with `--session`, and as JSON lines with `--json` — with control
//! characters from bodies escaped.

use crate::common;

use std::{path::Path, process::Stdio};

use common::{
    hub::{Hub, WAIT, bin},
    ws::Ws,
};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, BufReader, Lines},
    process::{Child, ChildStdout, Command},
};

const TOKEN: &str = "tail-token-77e1d0";

struct Tail {
    child: Child,
    out: Lines<BufReader<ChildStdout>>,
}

fn command(url: &str, token_file: Option<&Path>, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin());
    common::clean_env(&mut cmd);
    cmd.arg("tail").arg("--relay-url").arg(url).args(args);
    if let Some(f) = token_file {
        cmd.arg("--token-file").arg(f);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

impl Tail {
    /// Starts `tail` and waits until it follows the feed.
    async fn start(url: &str, token_file: Option<&Path>, args: &[&str]) -> Tail {
        let mut child = command(url, token_file, args).spawn().expect("spawn tail");
        let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
        let line = tokio::time::timeout(WAIT, err.next_line())
            .await
            .expect("tail did not start in time")
            .unwrap()
            .unwrap_or_default();
        assert!(line.starts_with("following "), "{line}");
        tokio::spawn(async move { while let Ok(Some(_)) = err.next_line().await {} });
        let out = BufReader::new(child.stdout.take().unwrap()).lines();
        Tail { child, out }
    }

    /// Lines until one contains `needle` (bounded); returns them all.
    async fn until(&mut self, needle: &str) -> Vec<String> {
        let mut seen = Vec::new();
        let found = tokio::time::timeout(WAIT, async {
            while let Ok(Some(line)) = self.out.next_line().await {
                let hit = line.contains(needle);
                seen.push(line);
                if hit {
                    return true;
                }
            }
            false
        })
        .await;
        assert!(
            matches!(found, Ok(true)),
            "no line with {needle:?}; got {seen:#?}"
        );
        seen
    }
}

async fn token_hub(dir: &Path) -> (Hub, std::path::PathBuf) {
    Hub::start_with_token(dir, TOKEN, &[]).await
}

async fn register(url: &str, id: &str) -> Ws {
    let mut ws = Ws::connect(url).await;
    ws.send(json!({"type": "register", "clientId": id, "token": TOKEN}))
        .await;
    ws.expect("registered").await;
    ws
}

async fn send(ws: &mut Ws, to: &str, content: &str) -> Value {
    ws.send(json!({"type": "message", "to": to, "content": content}))
        .await;
    ws.until("sent").await
}

#[tokio::test]
async fn tail_needs_the_token_and_never_shows_it() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, _) = token_hub(dir.path()).await;
    let wrong = dir.path().join("wrong.token");
    std::fs::write(&wrong, "not-the-token\n").unwrap();
    for token_file in [None, Some(wrong.as_path())] {
        let out = tokio::time::timeout(WAIT, command(&hub.url, token_file, &[]).output())
            .await
            .expect("tail did not give up in time")
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("token"), "{err}");
        assert!(
            !err.contains("not-the-token") && !err.contains(TOKEN),
            "{err}"
        );
        assert!(out.stdout.is_empty());
    }
}

#[tokio::test]
async fn tail_prints_one_line_per_event_with_bodies_only_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, token_file) = token_hub(dir.path()).await;
    let mut plain = Tail::start(&hub.url, Some(&token_file), &[]).await;
    let mut bodies = Tail::start(&hub.url, Some(&token_file), &["--content"]).await;
    let mut only_b = Tail::start(&hub.url, Some(&token_file), &["--session", "Beta"]).await;

    let mut a = register(&hub.url, "Alpha").await;
    let mut b = register(&hub.url, "Beta").await;
    let live = send(&mut a, "Beta", "hello beta\n\u{1b}[31mred?").await;
    let stored = send(&mut a, "Gamma", "for later").await;
    send(&mut b, "all", "hi all").await;
    b.send(json!({"type": "mark_read", "seqs": [live["seq"]]}))
        .await;
    b.expect("marked").await;
    drop(a);

    let lines = plain.until("Beta  read").await;
    let text = lines.join("\n");
    for needle in [
        "Alpha  online",
        "Beta  online",
        &format!(
            "Alpha → Beta  message  {} B  delivered  #{}",
            "hello beta\n\u{1b}[31mred?".len(),
            live["seq"]
        ),
        &format!("Alpha → Gamma  message  9 B  stored  #{}", stored["seq"]),
        "Beta → all  message  6 B  delivered to 1",
        &format!("Beta  read  #{}  (0 unread left)", live["seq"]),
    ] {
        assert!(text.contains(needle), "{needle:?} not in:\n{text}");
    }
    assert!(
        !text.contains("hello beta"),
        "no bodies without --content:\n{text}"
    );
    // Every line starts with the time.
    for l in &lines {
        assert!(
            l.starts_with("20") && l.contains('T') && l.contains("Z  "),
            "{l}"
        );
    }
    plain.until("Alpha  offline").await;

    let text = bodies.until("Beta  read").await.join("\n");
    assert!(
        text.contains("    │ hello beta\n    │ \\u{1b}[31mred?"),
        "{text}"
    );
    assert!(
        !text.contains('\u{1b}'),
        "raw escape reached the terminal:\n{text}"
    );
    assert!(text.contains("    │ for later"), "{text}");

    let text = only_b.until("Beta  read").await.join("\n");
    assert!(
        text.contains("Alpha → Beta") && text.contains("Beta → all"),
        "{text}"
    );
    assert!(
        !text.contains("Gamma") && !text.contains("Alpha  online"),
        "{text}"
    );
    for t in [&mut plain, &mut bodies, &mut only_b] {
        let _ = t.child.start_kill();
    }
}

#[tokio::test]
async fn tail_json_lines_parse_and_carry_bodies_only_with_content() {
    let dir = tempfile::tempdir().unwrap();
    // No token: loopback connections may follow the feed.
    let hub = Hub::start(dir.path()).await;
    let mut meta = Tail::start(&hub.url, None, &["--json"]).await;
    let mut full = Tail::start(&hub.url, None, &["--json", "--content"]).await;
    let (mut a, _) = Ws::register(&hub.url, "Alpha").await;
    let body = "tab\there \u{202e}bidi \u{7f}";
    let sent = send(&mut a, "Beta", body).await;

    for (tail, with_body) in [(&mut meta, false), (&mut full, true)] {
        let lines = tail.until("\"kind\":\"message\"").await;
        let events: Vec<Value> = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert!(
            events
                .iter()
                .any(|e| e["kind"] == "session" && e["id"] == "Alpha")
        );
        let m = events.last().unwrap();
        assert_eq!(m["from"], "Alpha");
        assert_eq!(m["to"], "Beta");
        assert_eq!(m["seq"], sent["seq"]);
        assert_eq!(m["bytes"], body.len());
        assert_eq!(m["state"], "stored");
        if with_body {
            assert_eq!(m["content"], body);
            // The raw line has the unsafe characters escaped; parsed, it is the same text.
            let raw = lines.last().unwrap();
            assert!(
                !raw.contains('\u{202e}') && !raw.contains('\u{7f}'),
                "{raw}"
            );
        } else {
            assert!(m.get("content").is_none(), "{m}");
        }
        let _ = tail.child.start_kill();
    }
}
