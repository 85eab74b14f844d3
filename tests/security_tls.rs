//! `wss://` end to end: a private CA and a server certificate for 127.0.0.1/localhost made
//! with rcgen in a temp dir, a real hub serving TLS (with a token, as in the two-machine
//! setup of docs/SECURITY.md), real bridges and the `sessions` CLI trusting that CA — and
//! the clear messages a bridge gives when the CA is missing or wrong, the certificate does
//! not name the host, or the scheme does not match the hub.

use crate::common;

use std::path::{Path, PathBuf};

use common::{
    bridge::{Bridge, BridgeOpts},
    hub::{Hub, HubOpts, WAIT, bin},
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde_json::{Value, json};

const TOKEN: &str = "tls-test-token-5f0c";

/// A CA: its certificate (PEM) and what signs with it.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn make_ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

/// A server certificate for `names` signed by `ca`, written as `stem.crt` / `stem.key`.
fn server_cert(dir: &Path, ca: &Ca, names: &[&str], stem: &str) -> (PathBuf, PathBuf) {
    let mut params =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, names[0]);
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    let (crt, keyf) = (
        dir.join(format!("{stem}.crt")),
        dir.join(format!("{stem}.key")),
    );
    std::fs::write(&crt, cert.pem()).unwrap();
    std::fs::write(&keyf, key.serialize_pem()).unwrap();
    (crt, keyf)
}

struct Pki {
    ca: PathBuf,
    other_ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    token_file: PathBuf,
}

fn pki(dir: &Path) -> Pki {
    let ca = make_ca("claude-relay test CA");
    let other = make_ca("some other CA");
    let (cert, key) = server_cert(dir, &ca, &["127.0.0.1", "localhost"], "hub");
    let (ca_path, other_path) = (dir.join("ca.pem"), dir.join("other-ca.pem"));
    std::fs::write(&ca_path, &ca.pem).unwrap();
    std::fs::write(&other_path, &other.pem).unwrap();
    let token_file = dir.join("hub.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    Pki {
        ca: ca_path,
        other_ca: other_path,
        cert,
        key,
        token_file,
    }
}

async fn tls_hub(dir: &Path, cert: &Path, key: &Path, token_file: Option<&Path>) -> Hub {
    let mut args = vec![
        "--tls-cert".to_string(),
        cert.display().to_string(),
        "--tls-key".to_string(),
        key.display().to_string(),
    ];
    if let Some(t) = token_file {
        args.extend(["--token-file".to_string(), t.display().to_string()]);
    }
    Hub::start_with(
        dir,
        HubOpts {
            args,
            ..HubOpts::default()
        },
    )
    .await
}

fn bridge_opts(dir: &Path, url: &str, id: &str, env: &[(&str, &str)]) -> BridgeOpts {
    let mut o = BridgeOpts::new(dir, url, id);
    o.env = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for k in ["RELAY_TOKEN", "RELAY_TOKEN_FILE", "RELAY_CA_CERT"] {
        if !env.iter().any(|(key, _)| *key == k) {
            o.env.push((k.to_string(), String::new()));
        }
    }
    o
}

#[tokio::test]
async fn two_bridges_talk_over_wss_with_a_private_ca_and_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    let hub = tls_hub(dir.path(), &p.cert, &p.key, Some(&p.token_file)).await;
    assert!(hub.url.starts_with("wss://127.0.0.1:"), "{}", hub.url);
    let ca = p.ca.display().to_string();
    let env = [("RELAY_CA_CERT", ca.as_str()), ("RELAY_TOKEN", TOKEN)];
    let a = Bridge::start_with(bridge_opts(dir.path(), &hub.url, "LAPTOP-1", &env), false).await;
    let b = Bridge::start_with(bridge_opts(dir.path(), &hub.url, "SERVER-1", &env), false).await;
    a.wait_connected().await;
    b.wait_connected().await;

    let sent = a
        .ok(
            "relay_send",
            json!({"message": "over TLS: tests pass", "to": "SERVER-1"}),
        )
        .await;
    assert!(sent.starts_with("Delivered to SERVER-1 (live)"), "{sent}");
    let got = b.ok("relay_receive", Value::Null).await;
    assert!(
        got.contains("[LAPTOP-1 → you · ") && got.contains("over TLS: tests pass"),
        "{got}"
    );
    let reply = b
        .ok("relay_send", json!({"message": "ack", "to": "LAPTOP-1"}))
        .await;
    assert!(reply.starts_with("Delivered to LAPTOP-1 (live)"), "{reply}");
    assert!(a.ok("relay_receive", Value::Null).await.contains("ack"));

    // The CLI over the same wss:// with --ca-cert and --token-file.
    let out = tokio::process::Command::new(bin())
        .args([
            "sessions",
            "--json",
            "--relay-url",
            &hub.url,
            "--ca-cert",
            &ca,
        ])
        .arg("--token-file")
        .arg(&p.token_file)
        .env("CLAUDE_RELAY_HOME", dir.path().join("cli-home"))
        .env_remove("RELAY_TOKEN")
        .env_remove("RELAY_TOKEN_FILE")
        .env_remove("RELAY_CA_CERT")
        .output();
    let out = tokio::time::timeout(WAIT, out).await.unwrap().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(v["hub"]["reachable"], true, "{v}");
    let connected: Vec<&str> = v["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["connected"] == true)
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(
        connected.contains(&"LAPTOP-1") && connected.contains(&"SERVER-1"),
        "{v}"
    );
}

#[tokio::test]
async fn a_missing_or_wrong_ca_fails_with_a_message_that_says_what_to_check() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    let hub = tls_hub(dir.path(), &p.cert, &p.key, None).await;

    // No CA given: the system roots do not know our private CA.
    let none = Bridge::start_with(bridge_opts(dir.path(), &hub.url, "NO-CA", &[]), false).await;
    let s = none.status_until("TLS", WAIT).await;
    assert!(
        s.contains("not connected") && s.contains("RELAY_CA_CERT"),
        "{s}"
    );
    let out = none
        .call("relay_send", json!({"message": "hi", "to": "X"}))
        .await;
    assert!(
        out.is_error && out.text.starts_with("NOT sent"),
        "{}",
        out.text
    );

    // The wrong CA: the message names the CA file.
    let other = p.other_ca.display().to_string();
    let wrong = Bridge::start_with(
        bridge_opts(
            dir.path(),
            &hub.url,
            "WRONG-CA",
            &[("RELAY_CA_CERT", other.as_str())],
        ),
        false,
    )
    .await;
    let s = wrong.status_until("TLS handshake", WAIT).await;
    assert!(
        s.contains("not signed by the CA in") && s.contains("other-ca.pem"),
        "{s}"
    );

    // A CA file that is not a certificate.
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "hello").unwrap();
    let junk_s = junk.display().to_string();
    let bad = Bridge::start_with(
        bridge_opts(
            dir.path(),
            &hub.url,
            "JUNK-CA",
            &[("RELAY_CA_CERT", junk_s.as_str())],
        ),
        false,
    )
    .await;
    let s = bad.status_until("junk.pem", WAIT).await;
    assert!(s.contains("no certificate in it"), "{s}");

    // With the right CA the same hub works.
    let ca = p.ca.display().to_string();
    let good = Bridge::start_with(
        bridge_opts(
            dir.path(),
            &hub.url,
            "GOOD-CA",
            &[("RELAY_CA_CERT", ca.as_str())],
        ),
        false,
    )
    .await;
    good.wait_connected().await;
}

#[tokio::test]
async fn a_certificate_for_another_host_and_a_scheme_mismatch_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    let ca = make_ca("name test CA");
    let ca_path = dir.path().join("name-ca.pem");
    std::fs::write(&ca_path, &ca.pem).unwrap();
    let (cert, key) = server_cert(dir.path(), &ca, &["hub.elsewhere.example"], "elsewhere");
    let elsewhere = tls_hub(&dir.path().join("h1"), &cert, &key, None).await;
    let ca_s = ca_path.display().to_string();
    let b = Bridge::start_with(
        bridge_opts(
            dir.path(),
            &elsewhere.url,
            "NAMES",
            &[("RELAY_CA_CERT", ca_s.as_str())],
        ),
        false,
    )
    .await;
    let s = b.status_until("TLS handshake", WAIT).await;
    assert!(
        s.contains("does not name \"127.0.0.1\"") && s.contains("subjectAltName"),
        "{s}"
    );

    // ws:// to a hub that serves wss://.
    let tls = tls_hub(&dir.path().join("h2"), &p.cert, &p.key, None).await;
    let plain_url = tls.url.replace("wss://", "ws://");
    let c = Bridge::start_with(bridge_opts(dir.path(), &plain_url, "PLAIN", &[]), false).await;
    let s = c.status_until("use a wss:// URL", WAIT).await;
    assert!(s.contains("not connected"), "{s}");
    // The hub's operator sees the failed TLS handshake, with the peer.
    common::eventually("a TLS refusal in the hub log", WAIT, async || {
        let log = tls.log.lock().unwrap();
        let refused = log
            .iter()
            .any(|l| l.contains("refused: TLS handshake failed") && l.contains("addr=127.0.0.1:"));
        if refused {
            Ok(())
        } else {
            Err(format!("{log:#?}"))
        }
    })
    .await;

    // wss:// to a hub that serves ws://.
    let plain = Hub::start(&dir.path().join("h3")).await;
    let wss_url = plain.url.replace("ws://", "wss://");
    let ca = p.ca.display().to_string();
    let d = Bridge::start_with(
        bridge_opts(
            dir.path(),
            &wss_url,
            "TLS-TO-PLAIN",
            &[("RELAY_CA_CERT", ca.as_str())],
        ),
        false,
    )
    .await;
    let s = d.status_until("TLS handshake", WAIT).await;
    assert!(s.contains("serves ws://, not wss://"), "{s}");
}

#[tokio::test]
async fn the_console_metrics_and_tail_share_the_tls_listener() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    let hub = tls_hub(dir.path(), &p.cert, &p.key, Some(&p.token_file)).await;
    let bearer = format!("Bearer {TOKEN}");
    let health = common::http::request_tls(hub.port, &p.ca, "GET", "/healthz", &[]).await;
    assert_eq!(health.status, 200, "{}", health.body);
    assert_eq!(health.json()["store"], "ok");
    let denied = common::http::request_tls(hub.port, &p.ca, "GET", "/metrics", &[]).await;
    assert_eq!(denied.status, 401);
    let metrics = common::http::request_tls(
        hub.port,
        &p.ca,
        "GET",
        "/metrics",
        &[("Authorization", &bearer)],
    )
    .await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.body.contains("relay_sessions_online"),
        "{}",
        metrics.body
    );
    // Over TLS the login cookie is Secure.
    let login = common::http::request_tls(hub.port, &p.ca, "GET", "/", &[]).await;
    assert_eq!(login.status, 401);
    assert!(
        login
            .all("set-cookie")
            .iter()
            .all(|c| c.contains("; Secure")),
        "{:?}",
        login.headers
    );

    // tail over the same wss:// port, trusting the private CA.
    let ca = p.ca.display().to_string();
    let mut tail = tokio::process::Command::new(bin());
    common::clean_env(&mut tail);
    let mut tail = tail
        .args(["tail", "--relay-url", &hub.url, "--ca-cert", &ca])
        .arg("--token-file")
        .arg(&p.token_file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    use tokio::io::AsyncBufReadExt;
    let mut err = tokio::io::BufReader::new(tail.stderr.take().unwrap()).lines();
    let first = tokio::time::timeout(WAIT, err.next_line())
        .await
        .unwrap()
        .unwrap();
    assert!(
        first
            .as_deref()
            .unwrap_or("")
            .starts_with("following wss://"),
        "{first:?}"
    );
    let env = [("RELAY_CA_CERT", ca.as_str()), ("RELAY_TOKEN", TOKEN)];
    let a = Bridge::start_with(bridge_opts(dir.path(), &hub.url, "LAPTOP-2", &env), false).await;
    a.wait_connected().await;
    a.ok(
        "relay_send",
        json!({"message": "seen by tail", "to": "SERVER-2"}),
    )
    .await;
    let mut out = tokio::io::BufReader::new(tail.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(WAIT, async {
        while let Ok(Some(l)) = out.next_line().await {
            if l.contains("message") {
                return l;
            }
        }
        panic!("tail ended");
    })
    .await
    .expect("tail showed no message");
    assert!(
        line.contains("LAPTOP-2 → SERVER-2  message  12 B  stored"),
        "{line}"
    );
}
