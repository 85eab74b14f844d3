//! Tasks at the hub, over raw WebSockets (as any client speaks the protocol) and through the
//! `claude-relay tasks` CLI: the hub enforces every move, refusals change nothing, every
//! move is mail, offers wait for offline sessions, and tasks survive `kill -9`.

use crate::common;

use common::{
    hub::{Hub, WAIT},
    ws::Ws,
};
use serde_json::{Value, json};

/// Registers `id` as an owned name (as the bridge does) and returns the connection and its
/// owner secret.
async fn owned(url: &str, id: &str) -> (Ws, String) {
    let mut ws = Ws::connect(url).await;
    ws.send(json!({"type": "register", "clientId": id, "ownership": true, "presence": "none"}))
        .await;
    let reg = ws.expect("registered").await;
    (ws, reg["ownerSecret"].as_str().expect("minted").to_string())
}

/// Sends a frame with a rid and returns the reply to it (skipping pushes).
async fn ask(ws: &mut Ws, mut frame: Value, rid: &str) -> Value {
    frame["rid"] = json!(rid);
    ws.send(frame).await;
    loop {
        let f = ws.next().await;
        if f["rid"] == rid {
            return f;
        }
    }
}

/// The next `message` frame (skipping everything else).
async fn mail(ws: &mut Ws) -> Value {
    ws.until("message").await
}

/// Everything a party can read about a task: the record and its whole history.
async fn read(ws: &mut Ws, id: &str) -> Value {
    let f = ask(
        ws,
        json!({"type": "task_get", "id": id, "history": 200}),
        "get",
    )
    .await;
    assert_eq!(f["type"], "task", "{f}");
    f["task"].clone()
}

#[tokio::test]
async fn refused_moves_change_nothing_and_every_move_is_mail() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path()).await;
    let (mut cc1, cc1_secret) = owned(&hub.url, "CC-1").await;
    let (mut cc2, _) = owned(&hub.url, "CC-2").await;
    // CC-1's Stop-hook doorbell (`claude-relay wait` watches its mail without its name).
    let mut doorbell = Ws::connect(&hub.url).await;
    doorbell
        .send(json!({"type": "watch", "clientId": "CC-1", "ownerSecret": cc1_secret}))
        .await;
    doorbell.expect("watching").await;
    let (mut cc3, _) = owned(&hub.url, "CC-3").await;

    let created = ask(
        &mut cc1,
        json!({"type": "task_create", "to": "CC-2", "title": "Fix the parser",
               "brief": "src/parse.rs:42 panics on `{`", "acceptance": ["cargo test passes"]}),
        "c",
    )
    .await;
    assert_eq!(created["type"], "task", "{created}");
    let id = created["task"]["id"].as_str().unwrap().to_string();
    assert_eq!(created["task"]["state"], "submitted");
    assert_eq!(created["notice"], "delivered: CC-2 is online");
    let offer = mail(&mut cc2).await;
    assert_eq!(offer["from"], "CC-1");
    assert_eq!(offer["task"], json!({"id": id, "state": "submitted"}));
    assert!(
        offer["content"]
            .as_str()
            .unwrap()
            .contains("Fix the parser")
    );

    // The wrong people first: each refusal says why and leaves the task byte-identical.
    let before = read(&mut cc1, &id).await;
    let refusals = [
        (
            "CC-3",
            json!({"type": "task_act", "id": id, "action": "claim"}),
            "only CC-2 may claim",
        ),
        (
            "CC-1",
            json!({"type": "task_act", "id": id, "action": "claim"}),
            "only CC-2 may claim",
        ),
        (
            "CC-2",
            json!({"type": "task_act", "id": id, "action": "complete", "result": "x"}),
            "complete does not apply",
        ),
        (
            "CC-2",
            json!({"type": "task_act", "id": id, "action": "cancel"}),
            "only CC-1",
        ),
    ];
    for (who, frame, why) in refusals {
        let ws = match who {
            "CC-1" => &mut cc1,
            "CC-2" => &mut cc2,
            _ => &mut cc3,
        };
        let r = ask(ws, frame, "no").await;
        assert_eq!(r["type"], "task_refused", "{r}");
        assert!(r["reason"].as_str().unwrap().contains(why), "{r}");
        assert_eq!(
            read(&mut cc1, &id).await,
            before,
            "{who}'s refused move changed the task"
        );
    }
    // CC-3 is no party: it is not even shown the task.
    let r = ask(&mut cc3, json!({"type": "task_get", "id": id}), "g3").await;
    assert_eq!(
        (r["type"].as_str(), r["code"].as_str()),
        (Some("error"), Some("not_found"))
    );
    assert_eq!(
        read(&mut cc1, &id).await,
        before,
        "a refusal changed the task"
    );

    // Claim, ask, answer, complete: each is mail to the other party, tagged with the state.
    let steps = [
        ("CC-2", json!({"action": "claim"}), "working"),
        (
            "CC-2",
            json!({"action": "ask", "note": "which branch?"}),
            "input-required",
        ),
        (
            "CC-1",
            json!({"action": "answer", "note": "main"}),
            "working",
        ),
        (
            "CC-2",
            json!({"action": "progress", "note": "half done"}),
            "working",
        ),
        (
            "CC-2",
            json!({"action": "complete", "result": "fixed in abc123"}),
            "completed",
        ),
    ];
    for (who, mut act, state) in steps {
        act["type"] = json!("task_act");
        act["id"] = json!(id);
        let (actor, other) = if who == "CC-1" {
            (&mut cc1, &mut cc2)
        } else {
            (&mut cc2, &mut cc1)
        };
        let r = ask(actor, act.clone(), "mv").await;
        assert_eq!(r["type"], "task", "{act}: {r}");
        assert_eq!(r["task"]["state"], state);
        let m = mail(other).await;
        assert_eq!(m["from"], who);
        assert_eq!(m["task"], json!({"id": id, "state": state}), "{m}");
        if let Some(note) = act.get("note").or(act.get("result")) {
            assert!(
                m["content"]
                    .as_str()
                    .unwrap()
                    .contains(note.as_str().unwrap()),
                "{m}"
            );
        }
    }
    // Every move CC-1 was told of also rang its doorbell (claim, ask, progress, complete).
    for _ in 0..4 {
        let ring = doorbell.until("mail").await;
        assert_eq!(
            (ring["clientId"].as_str(), ring["from"].as_str()),
            (Some("CC-1"), Some("CC-2"))
        );
    }
    let done = read(&mut cc2, &id).await;
    assert_eq!(done["result"], "fixed in abc123");
    assert_eq!(done["holder"], "CC-2");
    let actions: Vec<&str> = done["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["create", "claim", "ask", "answer", "progress", "complete"]
    );

    // A finished task never changes, whoever asks.
    for ws in [&mut cc1, &mut cc2, &mut cc3] {
        for action in [
            "claim", "progress", "complete", "fail", "release", "cancel", "decline",
        ] {
            let r = ask(
                ws,
                json!({"type": "task_act", "id": id, "action": action, "note": "n", "result": null}),
                "t",
            )
            .await;
            assert_eq!(r["type"], "task_refused", "{action}: {r}");
        }
    }
    assert_eq!(read(&mut cc1, &id).await, done);

    // Old clients: a task frame is unknown to them, but they never get one unasked; a
    // malformed task frame is an error and the connection stays.
    let r = ask(
        &mut cc1,
        json!({"type": "task_act", "id": "T-x", "action": "claim"}),
        "bad",
    )
    .await;
    assert_eq!(r["code"], "bad_frame", "{r}");
    let r = ask(
        &mut cc1,
        json!({"type": "task_act", "id": id, "action": "steal"}),
        "bad2",
    )
    .await;
    assert_eq!(r["code"], "bad_frame", "{r}");
    cc1.roundtrip().await;
}

/// Registers `id` (not owned) with the backlog pushed after `registered`.
async fn plain(url: &str, id: &str) -> (Ws, Value) {
    let mut ws = Ws::connect(url).await;
    ws.send(json!({"type": "register", "clientId": id, "backlog": true}))
        .await;
    let reg = ws.expect("registered").await;
    (ws, reg)
}

/// [`plain`] for a name whose previous connection the test just dropped: the hub lets go of
/// it when it reads the close, which may come after this register (then the name is still in
/// use), so it registers again until the hub has.
async fn plain_again(url: &str, id: &str) -> (Ws, Value) {
    common::eventually(&format!("{id} registered again"), WAIT, async || {
        let mut ws = Ws::connect(url).await;
        ws.send(json!({"type": "register", "clientId": id, "backlog": true}))
            .await;
        let reg = ws.next().await;
        if reg["type"] == "registered" {
            Ok((ws, reg))
        } else {
            Err(reg.to_string())
        }
    })
    .await
}

#[tokio::test]
async fn an_offer_to_an_offline_session_waits_and_tasks_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = Hub::start(dir.path()).await;
    let port = hub.port;
    // CC-2 has been here before, then left.
    let (cc2, _) = plain(&hub.url, "CC-2").await;
    drop(cc2);
    let (mut cc1, _) = plain(&hub.url, "CC-1").await;
    common::eventually("CC-2 left", WAIT, async || {
        let p = ask(&mut cc1, json!({"type": "get_peers"}), "p").await;
        if p["peers"].as_array().unwrap().iter().any(|x| x == "CC-2") {
            Err(p.to_string())
        } else {
            Ok(())
        }
    })
    .await;
    let offline = ask(
        &mut cc1,
        json!({"type": "task_create", "to": "CC-2", "title": "Take over the frontend",
               "brief": "see docs/ui.md"}),
        "c",
    )
    .await;
    let notice = offline["notice"].as_str().unwrap();
    assert!(
        notice.starts_with("queued: CC-2 offline since "),
        "{notice}"
    );
    assert!(
        notice.contains("UTC") && notice.contains("delivered when it connects"),
        "{notice}"
    );
    let never = ask(
        &mut cc1,
        json!({"type": "task_create", "to": "CC-9", "title": "x", "brief": "y"}),
        "c9",
    )
    .await;
    assert!(
        never["notice"]
            .as_str()
            .unwrap()
            .contains("never connected"),
        "{never}"
    );

    // A task to any, claimed and moved by CC-3: all acknowledged before the hard kill.
    let (mut cc3, _) = plain(&hub.url, "CC-3").await;
    let open = ask(
        &mut cc1,
        json!({"type": "task_create", "to": "any", "title": "Triage CI", "brief": "red since 9"}),
        "ca",
    )
    .await;
    assert!(
        open["notice"]
            .as_str()
            .unwrap()
            .starts_with("offered to every session"),
        "{open}"
    );
    let any_id = open["task"]["id"].as_str().unwrap().to_string();
    for (act, note) in [
        ("claim", None),
        ("progress", Some("bisecting")),
        ("ask", Some("revert?")),
    ] {
        let mut f = json!({"type": "task_act", "id": any_id, "action": act});
        if let Some(n) = note {
            f["note"] = json!(n);
        }
        assert_eq!(ask(&mut cc3, f, act).await["type"], "task");
    }
    let before = read(&mut cc1, &any_id).await;
    assert_eq!(before["state"], "input-required");

    hub.kill().await;
    let hub = Hub::start_on(dir.path(), port).await;

    // CC-2 connects: the offer is its unread mail, pushed with the backlog.
    let (mut cc2, reg) = plain(&hub.url, "CC-2").await;
    // Its mail: the offer, and the broadcast offer of the task to any (claimed since).
    assert_eq!(reg["unread"], 2, "{reg}");
    let m = mail(&mut cc2).await;
    assert_eq!(m["from"], "CC-1");
    assert!(
        m["content"]
            .as_str()
            .unwrap()
            .contains("Take over the frontend"),
        "{m}"
    );
    let offline_id = offline["task"]["id"].as_str().unwrap();
    assert_eq!(
        m["task"],
        json!({"id": offline_id, "state": "submitted"}),
        "{m}"
    );
    // Read back from the store (receive, history), task mail keeps its tag.
    let inbox = ask(&mut cc2, json!({"type": "receive"}), "r").await;
    assert_eq!(inbox["messages"][0]["task"]["id"], offline_id, "{inbox}");
    assert_eq!(
        inbox["messages"][1]["task"]["id"],
        any_id.as_str(),
        "{inbox}"
    );
    let history = ask(&mut cc2, json!({"type": "get_history"}), "h").await;
    assert_eq!(
        history["messages"][0]["task"]["state"], "submitted",
        "{history}"
    );
    let mine = ask(&mut cc2, json!({"type": "task_list"}), "l").await;
    let ids: Vec<&str> = mine["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [offline["task"]["id"].as_str().unwrap()], "{mine}");

    // The moved task and its whole history survived the kill, unchanged.
    let (mut cc1, _) = plain(&hub.url, "CC-1").await;
    assert_eq!(read(&mut cc1, &any_id).await, before);
    // And the state machine goes on from where it was.
    let r = ask(
        &mut cc1,
        json!({"type": "task_act", "id": any_id, "action": "answer", "note": "yes"}),
        "a",
    )
    .await;
    assert_eq!(r["task"]["state"], "working", "{r}");
}

/// Lowercase hex SHA-256 (the bridge's helper).
fn sha256(bytes: &[u8]) -> String {
    mcp_bridge::tasks::upload::sha256_hex(bytes)
}

fn b64(bytes: &[u8]) -> String {
    data_encoding::BASE64.encode(bytes)
}

#[tokio::test]
async fn uploads_resume_across_connections_attach_whole_and_only_parties_download() {
    let dir = tempfile::tempdir().unwrap();
    let hub = common::hub::Hub::start_with(
        dir.path(),
        common::hub::HubOpts {
            args: vec!["--max-bundle-bytes".into(), "1000".into()],
            ..Default::default()
        },
    )
    .await;
    let (mut cc1, _) = plain(&hub.url, "CC-1").await;
    // Over the hub's cap: refused before anything is stored, with the cap in the reason.
    let r = ask(
        &mut cc1,
        json!({"type": "blob_put", "offset": 0, "data": "", "size": 1001}),
        "big",
    )
    .await;
    assert!(
        r["message"].as_str().unwrap().contains("up to 1000 bytes"),
        "{r}"
    );

    let bytes: Vec<u8> = (0..900u32).map(|i| (i * 7 % 251) as u8).collect();
    let r = ask(
        &mut cc1,
        json!({"type": "blob_put", "offset": 0, "data": b64(&bytes[..400]), "size": 900}),
        "p1",
    )
    .await;
    assert_eq!(
        (r["received"].as_u64(), r["complete"].as_bool()),
        (Some(400), Some(false)),
        "{r}"
    );
    let blob = r["blob"].as_str().unwrap().to_string();
    // Half an upload cannot be attached.
    let r = ask(
        &mut cc1,
        json!({"type": "task_create", "to": "CC-2", "title": "t", "brief": "b", "blob": blob}),
        "early",
    )
    .await;
    assert!(
        r["message"].as_str().unwrap().contains("not complete"),
        "{r}"
    );
    // The connection drops; a new one resumes the same blob. A repeated chunk is answered
    // with where the hub is, and is not stored twice.
    drop(cc1);
    let (mut cc1, _) = plain_again(&hub.url, "CC-1").await;
    let r = ask(
        &mut cc1,
        json!({"type": "blob_put", "blob": blob, "offset": 0, "data": b64(&bytes[..400])}),
        "again",
    )
    .await;
    assert_eq!(
        (r["accepted"].as_bool(), r["received"].as_u64()),
        (Some(false), Some(400)),
        "{r}"
    );
    // Someone else cannot touch it.
    let (mut cc3, _) = plain(&hub.url, "CC-3").await;
    let r = ask(
        &mut cc3,
        json!({"type": "blob_put", "blob": blob, "offset": 400, "data": b64(&bytes[400..]),
               "last": true, "sha256": sha256(&bytes)}),
        "steal",
    )
    .await;
    assert_eq!(r["type"], "error", "{r}");
    let r = ask(
        &mut cc1,
        json!({"type": "blob_put", "blob": blob, "offset": 400, "data": b64(&bytes[400..]),
               "last": true, "sha256": sha256(&bytes)}),
        "p2",
    )
    .await;
    assert_eq!(r["complete"], true, "{r}");
    let r = ask(
        &mut cc1,
        json!({"type": "task_create", "to": "CC-2", "title": "t", "brief": "b", "blob": blob}),
        "c",
    )
    .await;
    assert_eq!(r["task"]["bundle"]["bytes"], 900, "{r}");
    assert_eq!(r["task"]["bundle"]["sha256"], sha256(&bytes).as_str());
    let id = r["task"]["id"].as_str().unwrap().to_string();

    // CC-3 is no party: no bundle for it. CC-2 is: it gets the bytes, in pieces from any offset.
    let r = ask(&mut cc3, json!({"type": "task_bundle", "id": id}), "b3").await;
    assert_eq!(r["code"], "not_found", "{r}");
    let (mut cc2, _) = plain(&hub.url, "CC-2").await;
    let r = ask(
        &mut cc2,
        json!({"type": "task_bundle", "id": id, "offset": 100}),
        "b2",
    )
    .await;
    assert_eq!(
        (r["total"].as_u64(), r["offset"].as_u64()),
        (Some(900), Some(100)),
        "{r}"
    );
    let got = data_encoding::BASE64
        .decode(r["data"].as_str().unwrap().as_bytes())
        .unwrap();
    assert_eq!(got, bytes[100..]);
}
