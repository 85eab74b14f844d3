//! Task handoff through real bridges driven by a real MCP client, and through the
//! `claude-relay tasks` CLI: one claim of ten wins, the creator hears each move as a channel
//! event, every structured result matches its tool's `outputSchema`, and the CLI shows a
//! task only to its parties, and every task only to the hub's operator — whoever presents
//! the hub token (the wrong people are tried first).

use crate::common;

use std::{collections::HashMap, path::Path, process::Output};

use common::{
    bridge::{Bridge, BridgeOpts},
    channel::Recorded,
    hub::{Hub, WAIT, bin},
};
use serde_json::{Value, json};

/// Every way `doc` breaks `schema` (empty: valid), by the `jsonschema` crate.
fn violations(schema: &Value, doc: &Value) -> Vec<String> {
    let validator = jsonschema::validator_for(schema)
        .unwrap_or_else(|e| panic!("the outputSchema itself is invalid: {e}\n{schema}"));
    validator.iter_errors(doc).map(|e| e.to_string()).collect()
}

/// `tool name → outputSchema` of a bridge.
async fn output_schemas(b: &Recorded) -> HashMap<String, Value> {
    let tools = tokio::time::timeout(WAIT, b.client.list_all_tools())
        .await
        .unwrap()
        .unwrap();
    tools
        .into_iter()
        .filter_map(|t| {
            let s = t.output_schema.as_ref()?;
            Some((t.name.to_string(), Value::Object((**s).clone())))
        })
        .collect()
}

/// Calls `tool` and checks its structured result against the tool's output schema; returns
/// (text, isError, structuredContent).
async fn checked(
    b: &Recorded,
    schemas: &HashMap<String, Value>,
    tool: &str,
    args: Value,
) -> (String, bool, Value) {
    let r = b.call_result(tool, args).await;
    let text: String = r
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect();
    let structured = r.structured_content.clone().unwrap_or(Value::Null);
    let errors = violations(&schemas[tool], &structured);
    assert!(
        errors.is_empty(),
        "{tool}: {errors:?}\n{structured}\n{text}"
    );
    (text, r.is_error == Some(true), structured)
}

#[tokio::test]
async fn structured_results_match_their_output_schemas() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path()).await;
    let cc1 = Recorded::start(BridgeOpts::new(dir.path(), &hub.url, "CC-1")).await;
    let cc2 = Recorded::start(BridgeOpts::new(dir.path(), &hub.url, "CC-2")).await;
    cc1.wait_connected(WAIT).await;
    cc2.wait_connected(WAIT).await;
    let schemas = output_schemas(&cc1).await;
    assert_eq!(schemas.len(), 3, "{:?}", schemas.keys());

    let (text, err, s) = checked(
        &cc1,
        &schemas,
        "relay_handoff",
        json!({"to": "CC-2", "title": "Port the parser", "brief": "src/parse.rs; keep the API",
               "acceptance": ["cargo test passes", "no new deps"], "git": false}),
    )
    .await;
    assert!(
        !err && text.starts_with("Created T-1 for CC-2 (submitted)."),
        "{text}"
    );
    assert!(text.contains("Delivered: CC-2 is online"), "{text}");
    assert_eq!(
        s["task"]["acceptance"],
        json!(["cargo test passes", "no new deps"])
    );
    assert_eq!(s["task"]["git"], Value::Null);

    let (text, _, s) = checked(&cc2, &schemas, "relay_tasks", json!({})).await;
    assert!(text.contains("T-1 · submitted · CC-1 → CC-2"), "{text}");
    assert_eq!(s["tasks"][0]["id"], "T-1");
    assert_eq!(s["more"], false);
    let (text, _, s) = checked(&cc2, &schemas, "relay_tasks", json!({"id": "T-1"})).await;
    assert!(
        text.contains("src/parse.rs") && text.contains(r#""action":"claim""#),
        "{text}"
    );
    assert_eq!(s["task"]["history"][0]["action"], "create");

    let (text, err, s) = checked(
        &cc2,
        &schemas,
        "relay_task",
        json!({"id": "T-1", "action": "claim"}),
    )
    .await;
    assert!(
        !err && text.starts_with("T-1 is now working (you hold it)"),
        "{text}"
    );
    assert_eq!(s["task"]["holder"], "CC-2");
    // A refusal is an error result that still carries the task as it stands.
    let (text, err, s) = checked(
        &cc1,
        &schemas,
        "relay_task",
        json!({"id": "T-1", "action": "complete", "result": "x"}),
    )
    .await;
    assert!(
        err && text.starts_with("Refused — nothing changed: only the holder"),
        "{text}"
    );
    assert_eq!(s["task"]["state"], "working");
    let (_, err, s) = checked(
        &cc2,
        &schemas,
        "relay_task",
        json!({"id": "T-1", "action": "complete", "result": "merged as 4e1f2a0"}),
    )
    .await;
    assert!(!err);
    assert_eq!(
        (s["task"]["state"].as_str(), s["task"]["result"].as_str()),
        (Some("completed"), Some("merged as 4e1f2a0"))
    );
    // A wrong argument never reaches the hub.
    let r = cc2
        .call_result("relay_task", json!({"id": "T-1", "action": "finish"}))
        .await;
    assert_eq!(r.is_error, Some(true));

    // A finished task never changes; the refusal says to follow it up with `refs`, and the
    // model can: the new task names the old one (written loosely, stored as T-1).
    let (text, err, _) = checked(
        &cc1,
        &schemas,
        "relay_task",
        json!({"id": "T-1", "action": "cancel"}),
    )
    .await;
    assert!(
        err && text.contains(r#"new task with refs ["T-1"]"#),
        "{text}"
    );
    let r = cc1
        .call_result(
            "relay_handoff",
            json!({"to": "CC-2", "title": "t", "brief": "b", "git": false, "refs": ["T-one"]}),
        )
        .await;
    assert_eq!(
        r.is_error,
        Some(true),
        "a bad ref is refused before the hub"
    );
    let (text, err, s) = checked(
        &cc1,
        &schemas,
        "relay_handoff",
        json!({"to": "CC-2", "title": "Parser: error messages", "brief": "follow-up",
               "git": false, "refs": [" t-1 "]}),
    )
    .await;
    assert!(!err && text.starts_with("Created T-2 for CC-2"), "{text}");
    assert_eq!(s["task"]["refs"], json!(["T-1"]));
    let (text, _, _) = checked(&cc2, &schemas, "relay_tasks", json!({"id": "T-2"})).await;
    assert!(text.contains("follows T-1"), "{text}");
}

#[tokio::test]
async fn ten_bridges_claim_at_once_and_exactly_one_wins() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path()).await;
    // The creator runs under Claude Code: it hears each move as a channel event.
    let mut opts = BridgeOpts::new(dir.path(), &hub.url, "CC-0");
    opts.env
        .push(("CLAUDE_CODE_SESSION_ID".into(), "c0ffee".into()));
    let mut creator = Recorded::start(opts).await;
    creator.wait_connected(WAIT).await;
    let names: Vec<String> = (1..=10).map(|i| format!("W{i}")).collect();
    let workers = futures_util::future::join_all(
        names.iter().map(|n| Bridge::start(dir.path(), &hub.url, n)),
    )
    .await;
    futures_util::future::join_all(workers.iter().map(|w| w.wait_connected())).await;

    let created = creator
        .call(
            "relay_handoff",
            json!({"to": "any", "title": "Triage the red CI", "brief": "since 09:00", "git": false}),
        )
        .await;
    assert!(
        created.contains("Offered to every session (10 other online now"),
        "{created}"
    );

    let claims = futures_util::future::join_all(
        workers
            .iter()
            .map(|w| w.call("relay_task", json!({"id": "T-1", "action": "claim"}))),
    )
    .await;
    let winners: Vec<&str> = workers
        .iter()
        .zip(&claims)
        .filter(|(_, c)| !c.is_error)
        .map(|(w, _)| w.id.as_str())
        .collect();
    assert_eq!(winners.len(), 1, "{claims:#?}");
    let winner = winners[0];
    for (w, c) in workers.iter().zip(&claims) {
        if w.id != winner {
            assert!(
                c.text
                    .contains(&format!("already claimed: {winner} holds it")),
                "{}: {}",
                w.id,
                c.text
            );
        }
    }

    // The creator's Claude Code session gets the claim as a channel event, tagged.
    let (method, params) = creator.next_event().await;
    assert_eq!(method, "notifications/claude/channel");
    assert_eq!(params["meta"]["from"], winner);
    assert_eq!(params["meta"]["task_id"], "T-1");
    assert_eq!(params["meta"]["task_state"], "working");
    assert!(
        params["content"]
            .as_str()
            .unwrap()
            .contains(&format!("{winner} claimed it")),
        "{params}"
    );
    // And as mail it can read.
    let mail = creator.call("relay_receive", Value::Null).await;
    assert!(mail.contains("[T-1 working]"), "{mail}");
}

/// Runs `claude-relay tasks ARGS` with `home` as CLAUDE_RELAY_HOME and `token` as
/// RELAY_TOKEN.
async fn cli_as(home: &Path, url: &str, token: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(bin());
    common::clean_env(&mut cmd);
    cmd.arg("tasks")
        .args(args)
        .env("CLAUDE_RELAY_HOME", home)
        .env("RELAY_URL", url)
        .kill_on_drop(true);
    if let Some(t) = token {
        cmd.env("RELAY_TOKEN", t);
    }
    tokio::time::timeout(WAIT, cmd.output())
        .await
        .expect("claude-relay tasks in time")
        .expect("run claude-relay tasks")
}

/// `claude-relay tasks ARGS` without a hub token.
async fn cli(home: &Path, url: &str, args: &[&str]) -> Output {
    cli_as(home, url, None, args).await
}

fn out(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_cli_shows_a_task_only_to_its_parties_and_the_operator() {
    const TOKEN: &str = "tasks-operator-token-5e1c";
    let dir = tempfile::tempdir().unwrap();
    let (hub, token_file) = Hub::start_with_token(dir.path(), TOKEN, &[]).await;
    let home = dir.path().join("home");
    let bridges = futures_util::future::join_all(["CC-1", "CC-2", "CC-3"].map(|id| {
        let mut o = BridgeOpts::new(dir.path(), &hub.url, id);
        o.env
            .push(("RELAY_TOKEN_FILE".into(), token_file.display().to_string()));
        Bridge::start_with(o, false)
    }))
    .await;
    futures_util::future::join_all(bridges.iter().map(|b| b.wait_connected())).await;
    let made = bridges[0]
        .ok(
            "relay_handoff",
            json!({"to": "CC-2", "title": "Review PR 7", "brief": "the auth part", "git": false}),
        )
        .await;
    assert!(made.starts_with("Created T-1"), "{made}");

    // The wrong people first. CC-3 (its secret is here) is no party.
    let o = cli_as(
        &home,
        &hub.url,
        Some(TOKEN),
        &["show", "T-1", "--session", "CC-3"],
    )
    .await;
    assert!(!o.status.success());
    assert!(
        out(&o)
            .1
            .contains("no task T-1 (or not one you are party to)"),
        "{:?}",
        out(&o)
    );
    let o = cli_as(&home, &hub.url, Some(TOKEN), &["--session", "CC-3"]).await;
    assert_eq!(out(&o).0.trim(), "no open tasks for CC-3", "{:?}", out(&o));
    // Another machine without CC-2's secret, then with a forged one.
    let elsewhere = dir.path().join("elsewhere");
    let o = cli_as(&elsewhere, &hub.url, Some(TOKEN), &["--session", "CC-2"]).await;
    assert!(
        out(&o).1.contains("no owner secret for CC-2"),
        "{:?}",
        out(&o)
    );
    std::fs::create_dir_all(elsewhere.join("owners")).unwrap();
    std::fs::write(elsewhere.join("owners").join("CC-2"), "f".repeat(64)).unwrap();
    let o = cli_as(
        &elsewhere,
        &hub.url,
        Some(TOKEN),
        &["show", "T-1", "--session", "CC-2"],
    )
    .await;
    assert!(
        out(&o).1.contains("wrong or missing owner secret for CC-2"),
        "{:?}",
        out(&o)
    );
    // The operator's view is the hub token's: not without it, not with a wrong one.
    let o = cli(&home, &hub.url, &["--all"]).await;
    assert!(
        !o.status.success() && out(&o).1.contains("requires a token"),
        "{:?}",
        out(&o)
    );
    let o = cli_as(&home, &hub.url, Some("not-the-token"), &["--all"]).await;
    assert!(
        !o.status.success() && out(&o).0.is_empty() && !out(&o).1.contains("T-1"),
        "{:?}",
        out(&o)
    );

    // The parties, and the operator.
    for session in ["CC-1", "CC-2"] {
        let o = cli_as(&home, &hub.url, Some(TOKEN), &["--session", session]).await;
        let (stdout, stderr) = out(&o);
        assert!(o.status.success(), "{stderr}");
        let lines: Vec<&str> = stdout.lines().collect();
        assert!(
            lines[0].starts_with("ID ") && lines[0].contains("FROM → HOLDER"),
            "{stdout}"
        );
        assert!(
            lines[1].starts_with("T-1") && lines[1].contains("CC-1 → (CC-2)"),
            "{stdout}"
        );
        assert!(lines[1].ends_with("Review PR 7"), "{stdout}");
    }
    let o = cli_as(
        &home,
        &hub.url,
        Some(TOKEN),
        &["show", "T-1", "--session", "CC-2"],
    )
    .await;
    assert!(out(&o).0.contains("the auth part"), "{:?}", out(&o));
    // The token holder is the operator, on any machine: no owner secret, no session.
    let o = cli_as(&elsewhere, &hub.url, Some(TOKEN), &["--all", "--json"]).await;
    let board: Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {:?}", out(&o)));
    assert_eq!(board["tasks"][0]["id"], "T-1");
    // With no git context there is nothing to check out, and it says so.
    let o = cli_as(
        &home,
        &hub.url,
        Some(TOKEN),
        &["checkout", "T-1", "--session", "CC-2"],
    )
    .await;
    assert!(
        out(&o).1.contains("carries no git context"),
        "{:?}",
        out(&o)
    );
}
