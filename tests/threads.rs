//! Replies, threads and search through the parts an agent uses (issue 17): real bridges
//! driven over MCP, a real hub process (killed with SIGKILL where durability is the point),
//! and raw connections where a frame is the subject.
//!
//! - A question, two answers with `reply_to` and an unrelated message: the thread holds
//!   exactly the three, and each answer names its question in one line.
//! - A `reply_to` the sender cannot see (another pair's direct message, an unknown id) is
//!   refused and stores nothing.
//! - Search finds a message from yesterday (its time moved back a day in the store), ranks
//!   the exact phrase first, and never returns another pair's direct mail — the privacy
//!   test's probes (`tests/security_privacy.rs`), repeated through search.
//! - The index survives a hub kill -9: a message acked before the kill is found after.

use crate::common;

use std::path::Path;

use common::{
    bridge::{Bridge, BridgeOpts, sent_id},
    hub::Hub,
    ws::Ws,
};
use serde_json::{Value, json};

fn on(dir: &Path, machine: &str, url: &str, id: &str) -> BridgeOpts {
    let mut o = BridgeOpts::new(&dir.join(machine), url, id);
    for k in ["RELAY_TOKEN", "RELAY_TOKEN_FILE", "RELAY_CA_CERT"] {
        o.env.push((k.to_string(), String::new()));
    }
    o
}

async fn bridges(dir: &Path, url: &str, ids: &[&str]) -> Vec<Bridge> {
    let mut out = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let b = Bridge::start_with(on(dir, &format!("m{i}"), url, id), false).await;
        b.wait_connected().await;
        out.push(b);
    }
    out
}

/// The ids of the messages in a `relay_receive` or search result, in order.
fn shown_ids(out: &str) -> Vec<String> {
    out.lines()
        .filter(|l| l.starts_with('['))
        .filter_map(|l| l.split(" · id ").nth(1))
        .map(|rest| rest.split([']', ' ']).next().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_question_and_its_two_answers_are_one_thread_and_the_answers_name_it() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path()).await;
    let b = bridges(dir.path(), &hub.url, &["LEAD", "CC-2", "CC-3"]).await;
    let (lead, cc2, cc3) = (&b[0], &b[1], &b[2]);

    let q = sent_id(
        &lead
            .ok(
                "relay_send",
                json!({"message": "who owns the auth migration?"}),
            )
            .await,
    );
    let a1 = cc2
        .ok(
            "relay_send",
            json!({"message": "I do, half done", "to": "LEAD", "reply_to": q}),
        )
        .await;
    assert!(a1.contains(&format!("answering {q}")), "{a1}");
    let a1 = sent_id(&a1);
    let a2 = sent_id(
        &cc3.ok(
            "relay_send",
            json!({"message": "I review it", "to": "LEAD", "reply_to": q}),
        )
        .await,
    );
    let other = sent_id(
        &cc2.ok("relay_send", json!({"message": "lunch?", "to": "LEAD"}))
            .await,
    );

    let thread = lead.ok("relay_receive", json!({"thread": q})).await;
    assert_eq!(
        shown_ids(&thread),
        [q.clone(), a1.clone(), a2.clone()],
        "{thread}"
    );
    assert!(!thread.contains("lunch?"), "{thread}");
    // A participant reads the part of the thread it may see: CC-2's answer went to LEAD
    // only.
    assert_eq!(
        shown_ids(&cc3.ok("relay_receive", json!({"thread": q})).await),
        [q.clone(), a2.clone()]
    );
    // An answer to an answer stays in the question's thread.
    let a3 = sent_id(
        &lead
            .ok(
                "relay_send",
                json!({"message": "thanks, ship it", "to": "CC-2", "reply_to": a1}),
            )
            .await,
    );

    // Unread, the answers say what they answer — one line each, never the quoted text.
    let unread = lead.ok("relay_receive", json!({"count": 10})).await;
    assert_eq!(
        shown_ids(&unread),
        [a1.clone(), a2.clone(), other.clone()],
        "{unread}"
    );
    assert!(unread.contains(&format!("↳ answers {q}\n")), "{unread}");
    assert_eq!(unread.matches("↳").count(), 2, "{unread}");
    let reply = cc2.ok("relay_receive", json!({"count": 10})).await;
    assert_eq!(shown_ids(&reply), [q.clone(), a3.clone()], "{reply}");
    assert!(
        reply.contains(&format!("↳ answers {a1} (thread {q})\n")),
        "{reply}"
    );
    assert_eq!(
        shown_ids(&lead.ok("relay_receive", json!({"thread": q})).await),
        [q.clone(), a1.clone(), a2.clone(), a3.clone()]
    );
    assert_eq!(unread.matches("who owns").count(), 0, "{unread}");

    // The raw frames: the answer carries both ids; the unrelated message neither.
    let (mut raw, _) = Ws::register(&hub.url, "RAW").await;
    raw.send(json!({"type": "get_history", "thread": q, "count": 10, "rid": 1}))
        .await;
    let h = raw.until("history").await;
    let ids: Vec<&str> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [q.as_str()], "RAW sees the broadcast only: {h}");
    raw.send(json!({"type": "get_history", "count": 10, "rid": 2}))
        .await;
    let all = raw.until("history").await;
    let question = &all["messages"][0];
    assert!(question.get("replyTo").is_none() && question.get("thread").is_none());
}

#[tokio::test]
async fn a_reply_to_a_message_the_sender_cannot_see_is_refused_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path()).await;
    let b = bridges(dir.path(), &hub.url, &["CC-1", "CC-2", "EVE"]).await;
    let (cc1, cc2, eve) = (&b[0], &b[1], &b[2]);
    let private = sent_id(
        &cc1.ok(
            "relay_send",
            json!({"message": "private: the deploy key is in vault", "to": "CC-2"}),
        )
        .await,
    );
    let (epoch, _) = private.rsplit_once('-').unwrap();
    for target in [
        private.clone(),
        format!("{epoch}-999999"),
        "0badc0de-1".into(),
    ] {
        let out = eve
            .call(
                "relay_send",
                json!({"message": "me too", "to": "CC-2", "reply_to": target}),
            )
            .await;
        assert!(out.is_error, "{target}: {}", out.text);
        assert!(
            out.text.contains("NOT sent") && out.text.contains("no message you can see"),
            "{target}: {}",
            out.text
        );
        // The same words whether the message exists or not: nothing about others' mail.
        assert!(!out.text.contains("vault"), "{}", out.text);
    }
    // Nothing was stored: not in EVE's sends, not in CC-2's mail.
    let status = eve.ok("relay_status", Value::Null).await;
    assert!(status.contains("Recent sends: none"), "{status}");
    let got = cc2.ok("relay_receive", json!({"count": 50})).await;
    assert_eq!(shown_ids(&got), std::slice::from_ref(&private), "{got}");
    // A raw client gets the refusal as an error frame, with its rid.
    let (mut raw, _) = Ws::register(&hub.url, "MALLORY").await;
    raw.send(
        json!({"type": "message", "to": "CC-2", "content": "x", "replyTo": private, "rid": 7}),
    )
    .await;
    let r = raw.next().await;
    assert_eq!(
        (r["type"].as_str(), r["code"].as_str()),
        (Some("error"), Some("not_found")),
        "{r}"
    );
    assert_eq!(r["rid"], 7);
    // The recipient of the private message may answer it.
    cc2.ok(
        "relay_send",
        json!({"message": "rotated", "to": "CC-1", "reply_to": private}),
    )
    .await;
}

/// Moves every message containing `word` back a day, as if it was sent yesterday (the
/// store's own file, next to the running hub: SQLite in WAL mode lets a second writer in).
fn make_yesterdays(data_dir: &Path, word: &str) {
    let conn = rusqlite::Connection::open(data_dir.join("relay.db")).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .unwrap();
    let n = conn
        .execute(
            "UPDATE messages SET ts = ts - 86400000 WHERE instr(content, ?1) > 0",
            [word],
        )
        .unwrap();
    assert_eq!(n, 1);
}

#[tokio::test]
async fn search_finds_yesterday_ranks_the_phrase_first_and_never_shows_another_pairs_mail() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path()).await;
    let b = bridges(dir.path(), &hub.url, &["CC-1", "CC-2", "EVE"]).await;
    let (cc1, cc2, eve) = (&b[0], &b[1], &b[2]);
    // The privacy test's conversation.
    let first = sent_id(
        &cc1.ok(
            "relay_send",
            json!({"message": "private: the deploy key is in vault", "to": "CC-2"}),
        )
        .await,
    );
    cc2.ok(
        "relay_send",
        json!({"message": "private: thanks, rotating it", "to": "CC-1"}),
    )
    .await;
    let public = sent_id(
        &cc1.ok(
            "relay_send",
            json!({"message": "public: standup in 5 (everyone)"}),
        )
        .await,
    );
    cc1.ok(
        "relay_send",
        json!({"message": "private: second note", "to": "CC-2"}),
    )
    .await;

    let probes = [
        json!({"search": "private"}),
        json!({"search": "deploy key vault"}),
        json!({"search": "rotating"}),
        json!({"search": "second note", "count": 50}),
        json!({"search": "private", "from": "CC-1"}),
        json!({"search": "private", "from": "CC-2"}),
        json!({"search": "private", "thread": first}),
        json!({"search": "priv*"}),
        json!({"search": "private", "after": "2000-01-01T00:00:00.000Z"}),
        json!({"search": "private OR public"}),
        json!({"search": "public private"}),
    ];
    for q in probes {
        let out = eve.ok("relay_receive", q.clone()).await;
        assert!(!out.contains("private:"), "{q} leaked: {out}");
        assert!(
            shown_ids(&out).iter().all(|id| *id == public),
            "{q} leaked: {out}"
        );
    }
    let out = eve.ok("relay_receive", json!({"search": "standup"})).await;
    assert_eq!(shown_ids(&out), [public], "the broadcast is found: {out}");
    // The pair finds its own mail, from both ends.
    assert!(
        cc2.ok("relay_receive", json!({"search": "deploy key"}))
            .await
            .contains(&first)
    );
    assert!(
        cc1.ok("relay_receive", json!({"search": "deploy key"}))
            .await
            .contains(&first)
    );

    // Yesterday's message, found by a word in it and by its day.
    let old = sent_id(
        &cc2.ok(
            "relay_send",
            json!({"message": "the flamingo cache needs a restart", "to": "CC-1"}),
        )
        .await,
    );
    make_yesterdays(&hub.data_dir, "flamingo");
    let found = cc1.ok("relay_receive", json!({"search": "flamingo"})).await;
    assert_eq!(shown_ids(&found), std::slice::from_ref(&old), "{found}");
    assert!(found.contains("1d ago"), "{found}");
    let two_days_ago = relay_proto::time::iso(relay_proto::time::now_ms() - 2 * 86_400_000);
    let hour_ago = relay_proto::time::iso(relay_proto::time::now_ms() - 3_600_000);
    let since = |t: &str| json!({"search": "flamingo cache", "after": t});
    assert_eq!(
        shown_ids(&cc1.ok("relay_receive", since(&two_days_ago)).await),
        [old]
    );
    assert!(
        shown_ids(&cc1.ok("relay_receive", since(&hour_ago)).await).is_empty(),
        "stored yesterday, not within the hour"
    );

    // The exact phrase first, before a message with more of both words apart.
    let scattered = sent_id(
        &cc2.ok(
            "relay_send",
            json!({"message": "migration: auth, auth; migration? migration, auth", "to": "CC-1"}),
        )
        .await,
    );
    let exact = sent_id(
        &cc2.ok(
            "relay_send",
            json!({"message": "status: the auth migration is done, and the rest is fine", "to": "CC-1"}),
        )
        .await,
    );
    let ranked = cc1
        .ok("relay_receive", json!({"search": "auth migration"}))
        .await;
    assert_eq!(shown_ids(&ranked), [exact, scattered], "{ranked}");
    assert!(ranked.contains("[auth] [migration]"), "{ranked}");
}

#[tokio::test]
async fn the_index_survives_a_hub_kill_9_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = Hub::start(dir.path()).await;
    let (mut a, _) = Ws::register(&hub.url, "CC-1").await;
    a.send(
        json!({"type": "message", "to": "CC-2", "content": "the kiwi deploy is green", "rid": 1}),
    )
    .await;
    let sent = a.until("sent").await;
    assert_eq!(sent["rid"], 1);
    hub.kill().await;

    let hub = Hub::start_on(dir.path(), hub.port).await;
    let (mut b, _) = Ws::register(&hub.url, "CC-2").await;
    b.send(json!({"type": "search", "query": "KIWI deploy", "rid": 2}))
        .await;
    let found = b.until("found").await;
    assert_eq!(found["hits"][0]["id"], sent["id"], "{found}");
    assert_eq!(found["hits"][0]["snippet"], "the [kiwi] [deploy] is green");
    assert_eq!(found["hits"][0]["thread"], sent["id"]);
    // Another session sees nothing of it.
    let (mut c, _) = Ws::register(&hub.url, "CC-3").await;
    c.send(json!({"type": "search", "query": "kiwi", "rid": 3}))
        .await;
    let none = c.until("found").await;
    assert_eq!(none["hits"], json!([]), "{none}");
}

/// Runs `claude-relay search ARGS` on the machine whose relay home is `home`.
async fn search_cli(home: &Path, url: &str, args: &[&str]) -> (bool, String, String) {
    let mut cmd = tokio::process::Command::new(common::hub::bin());
    common::clean_env(&mut cmd);
    cmd.arg("search")
        .args(args)
        .env("CLAUDE_RELAY_HOME", home)
        .env("RELAY_URL", url)
        .env_remove("CLAUDE_RELAY_SESSION_ID")
        .kill_on_drop(true);
    let o = tokio::time::timeout(common::hub::WAIT, cmd.output())
        .await
        .expect("claude-relay search in time")
        .expect("run claude-relay search");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_search_cli_reads_only_as_a_session_whose_owner_secret_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path()).await;
    let b = bridges(dir.path(), &hub.url, &["CC-1", "CC-2", "EVE"]).await;
    let private = sent_id(
        &b[0]
            .ok(
                "relay_send",
                json!({"message": "private: the deploy key is in vault", "to": "CC-2"}),
            )
            .await,
    );
    let public = sent_id(
        &b[0]
            .ok(
                "relay_send",
                json!({"message": "public: vault tour at noon"}),
            )
            .await,
    );
    let home = |i: usize| dir.path().join(format!("m{i}")).join("home");

    // The wrong person first: EVE's machine holds no secret of CC-2, then a forged one.
    let (ok, out, err) = search_cli(&home(2), &hub.url, &["vault", "--session", "CC-2"]).await;
    assert!(
        !ok && out.is_empty() && err.contains("no owner secret for CC-2"),
        "{err}"
    );
    std::fs::write(home(2).join("owners").join("CC-2"), "f".repeat(64)).unwrap();
    let (ok, out, err) = search_cli(&home(2), &hub.url, &["vault", "--session", "CC-2"]).await;
    assert!(!ok && out.is_empty(), "{out}");
    assert!(
        err.contains("wrong or missing owner secret for CC-2"),
        "{err}"
    );
    // As itself, EVE finds the broadcast only.
    let (ok, out, err) = search_cli(&home(2), &hub.url, &["vault", "--session", "EVE"]).await;
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.starts_with(&format!("{public} ")) && !out.contains("private"),
        "{out}"
    );

    // CC-2, on its own machine, finds both; --json is the hub's frame.
    let (ok, out, err) = search_cli(
        &home(1),
        &hub.url,
        &["deploy", "vault", "--session", "CC-2", "--json"],
    )
    .await;
    assert!(ok, "{err}");
    let found: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(found["hits"][0]["id"], private.as_str(), "{found}");
    assert_eq!(
        found["hits"][0]["snippet"],
        "private: the [deploy] key is in [vault]"
    );
    let (ok, out, _) = search_cli(&home(1), &hub.url, &["vault", "--session", "CC-2"]).await;
    assert!(
        ok && out.contains(&private) && out.contains(&public),
        "{out}"
    );
}

#[tokio::test]
async fn a_hub_without_the_index_says_so_and_deletes_an_old_one() {
    let dir = tempfile::tempdir().unwrap();
    // A hub with the index makes search.db; one started without it deletes it.
    let mut hub = Hub::start(dir.path()).await;
    let (mut a, _) = Ws::register(&hub.url, "CC-1").await;
    a.send(json!({"type": "search", "query": "anything", "rid": 1}))
        .await;
    a.until("found").await;
    drop(a);
    let data = hub.data_dir.clone();
    assert!(data.join("search.db").exists());
    hub.kill().await;
    let hub = Hub::start_with(
        dir.path(),
        common::hub::HubOpts {
            args: vec!["--no-search-index".into()],
            ..Default::default()
        },
    )
    .await;
    let (mut a, _) = Ws::register(&hub.url, "CC-1").await;
    a.send(json!({"type": "search", "query": "anything", "rid": 2}))
        .await;
    let refused = a.until("error").await;
    assert_eq!(refused["code"], "unavailable", "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("--no-search-index"),
        "{refused}"
    );
    assert!(!data.join("search.db").exists());
}
