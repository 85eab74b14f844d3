//! No secret reaches a log, at any level: a hub with a token and a bridge that claims an
//! owned name both run with `RELAY_LOG=trace` (everything, dependencies included), do their
//! whole dance — upgrade with the Bearer token, register with ownership, get the owner
//! secret minted, reconnect presenting it, send and read — and their stderr must hold
//! neither the token nor the owner secret (nor its hex, which is how a frame dump prints it).

use crate::common;

use common::{
    bridge::{Bridge, BridgeOpts},
    hub::{Hub, HubOpts, WAIT},
    ws::Ws,
};
use serde_json::json;

const TOKEN: &str = "trace-log-token-1c9f2a7e";

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn assert_clean(who: &str, log: &[String], secrets: &[&str]) {
    let text = log.join("\n");
    for s in secrets {
        for form in [s.to_string(), hex(s)] {
            assert!(
                !text.contains(&form),
                "{who}'s trace log holds a secret ({form}):\n{}",
                log.iter()
                    .filter(|l| l.contains(&form))
                    .take(5)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
}

#[tokio::test]
async fn trace_logs_of_hub_and_bridge_hold_no_token_and_no_owner_secret() {
    let dir = tempfile::tempdir().unwrap();
    let mut hub_opts = HubOpts::with_token(dir.path(), TOKEN, &[]);
    hub_opts.env = vec![("RELAY_LOG".into(), "trace".into())];
    let hub = Hub::start_with(dir.path(), hub_opts).await;
    let token_file = dir.path().join("hub.token");

    let mut opts = BridgeOpts::new(dir.path(), &hub.url, "CC-1");
    opts.env = vec![
        ("RELAY_TOKEN_FILE".into(), token_file.display().to_string()),
        ("RELAY_LOG".into(), "trace".into()),
    ];
    let mut bridge = Bridge::start_with(opts.clone(), false).await;
    bridge.wait_connected().await;
    let owner_file = opts.home.join("owners").join("CC-1");
    common::eventually("the owner secret is saved", WAIT, async || {
        if owner_file.exists() {
            Ok(())
        } else {
            Err("no file yet".into())
        }
    })
    .await;
    let secret = std::fs::read_to_string(&owner_file)
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(secret.len(), 64, "{secret}");

    // A peer with the token in its register frame (the other way to present it).
    let mut peer = Ws::connect(&hub.url).await;
    peer.send(json!({"type": "register", "clientId": "Peer", "token": TOKEN}))
        .await;
    peer.expect("registered").await;
    bridge
        .ok("relay_send", json!({"to": "Peer", "message": "hello"}))
        .await;
    peer.until("message").await;
    peer.send(json!({"type": "message", "to": "CC-1", "content": "hi back"}))
        .await;
    peer.until("sent").await;
    bridge.ok("relay_receive", json!({})).await;

    // The bridge restarts: it reconnects presenting the owner secret.
    bridge.close_stdin().await;
    bridge
        .wait_exit(WAIT)
        .await
        .expect("bridge exits on stdin EOF");
    let first_log = bridge.log.lock().unwrap().clone();
    let again = Bridge::start_with(opts, false).await;
    again.wait_connected().await;
    again.ok("relay_status", json!({})).await;
    peer.roundtrip().await;

    // The filter really was wide open (dependencies' debug lines are there; their trace
    // lines are the ones that dumped frames and headers, and are always left out).
    let hub_log = hub.log.lock().unwrap().clone();
    for (who, log) in [("hub", &hub_log), ("bridge", &first_log)] {
        assert!(
            log.iter().any(|l| l.contains("DEBUG")),
            "the {who} did not log below info: the test proves nothing"
        );
    }
    let secrets = [TOKEN, secret.as_str()];
    assert_clean("the hub", &hub_log, &secrets);
    assert_clean("the bridge", &first_log, &secrets);
    assert_clean("the restarted bridge", &again.log.lock().unwrap(), &secrets);
}
