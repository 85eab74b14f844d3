//! Headless Chromium driven over the DevTools protocol, for the console test.
//!
//! The protocol is JSON messages over a WebSocket, so this speaks it with the WebSocket
//! client the tests already use (tokio-tungstenite) instead of a browser-automation crate:
//! no new dependency tree, no browser download — it uses Debian's `chromium` (or
//! `RELAY_TEST_CHROMIUM`). Started with a fresh profile and everything that phones home
//! turned off; killed when dropped. Every wait is bounded by [`WAIT`].

use std::{path::Path, process::Stdio, time::Duration};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    net::TcpStream,
    process::{Child, Command},
};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async, tungstenite::Message};

use super::hub::WAIT;

/// A running headless Chromium with one page attached.
pub(crate) struct Browser {
    _child: Child,
    _profile: tempfile::TempDir,
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    session: String,
}

/// The Chromium binary: `RELAY_TEST_CHROMIUM`, else the first of the usual names on PATH.
fn find() -> Option<String> {
    if let Ok(p) = std::env::var("RELAY_TEST_CHROMIUM") {
        return Some(p);
    }
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|name| {
            std::process::Command::new("sh")
                .args(["-c", &format!("command -v {name}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .map(str::to_string)
}

impl Browser {
    /// Starts Chromium, or returns None (after saying so loudly) when there is none — unless
    /// `RELAY_TEST_REQUIRE_CHROMIUM=1` (CI), where a missing browser fails the test.
    pub(crate) async fn launch(width: u32, height: u32) -> Option<Browser> {
        let Some(bin) = find() else {
            assert!(
                std::env::var("RELAY_TEST_REQUIRE_CHROMIUM").as_deref() != Ok("1"),
                "chromium is required (RELAY_TEST_REQUIRE_CHROMIUM=1) but not installed"
            );
            eprintln!(
                "SKIPPED: no chromium on PATH (apt-get install chromium, or set RELAY_TEST_CHROMIUM)"
            );
            return None;
        };
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(&bin)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                &format!("--window-size={width},{height}"),
                &format!("--user-data-dir={}", profile.path().display()),
                "about:blank",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {bin}: {e}"));
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let url = tokio::time::timeout(WAIT, async {
            let mut seen = Vec::new();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(url) = line.split("DevTools listening on ").nth(1) {
                    return url.trim().to_string();
                }
                seen.push(line);
            }
            panic!("{bin} exited before listening: {seen:#?}");
        })
        .await
        .expect("chromium did not start in time");
        // Keep draining its stderr so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let (ws, _) = tokio::time::timeout(WAIT, connect_async(&url))
            .await
            .expect("DevTools connect timed out")
            .expect("DevTools connect");
        let mut b = Browser {
            _child: child,
            _profile: profile,
            ws,
            next_id: 0,
            session: String::new(),
        };
        let target = b
            .call("Target.createTarget", json!({"url": "about:blank"}))
            .await;
        let attached = b
            .call(
                "Target.attachToTarget",
                json!({"targetId": target["targetId"], "flatten": true}),
            )
            .await;
        b.session = attached["sessionId"].as_str().unwrap().to_string();
        b.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
        )
        .await;
        Some(b)
    }

    /// Sends one command (to the page, once attached) and returns its result.
    pub(crate) async fn call(&mut self, method: &str, params: Value) -> Value {
        match self.try_call(method, params).await {
            Ok(v) => v,
            Err(e) => panic!("{method} failed: {e}"),
        }
    }

    /// Like [`call`](Self::call), with the protocol's error as `Err` (a navigation in
    /// progress, say, destroys the context an evaluation was meant for).
    pub(crate) async fn try_call(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            msg["sessionId"] = json!(self.session);
        }
        self.ws
            .send(Message::text(msg.to_string()))
            .await
            .expect("send DevTools command");
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("{method}: no answer within {WAIT:?}"));
            let Some(Ok(Message::Text(text))) = next else {
                match next {
                    Some(Ok(_)) => continue,
                    other => panic!("DevTools connection ended: {other:?}"),
                }
            };
            let v: Value = serde_json::from_str(&text).expect("DevTools sends JSON");
            if v["id"] == id {
                return match v.get("error") {
                    Some(e) => Err(e.clone()),
                    None => Ok(v["result"].clone()),
                };
            }
        }
    }

    /// Loads `url` in the page.
    pub(crate) async fn open(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url})).await;
    }

    /// Evaluates `expr` in the page (awaiting a promise) and returns its value.
    pub(crate) async fn eval(&mut self, expr: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        assert!(
            r.get("exceptionDetails").is_none(),
            "{expr} threw: {}",
            r["exceptionDetails"]
        );
        r["result"]["value"].clone()
    }

    /// Polls `expr` until it is truthy (bounded by [`WAIT`]); returns its value. While the
    /// page is loading, an expression that throws (no `body` yet) or a context destroyed by
    /// the navigation counts as "not yet".
    pub(crate) async fn wait_for(&mut self, expr: &str) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        let guarded =
            format!("(() => {{ try {{ return ({expr}); }} catch (e) {{ return null; }} }})()");
        loop {
            let v = self
                .try_call(
                    "Runtime.evaluate",
                    json!({"expression": guarded, "returnByValue": true, "awaitPromise": true}),
                )
                .await
                .map(|r| r["result"]["value"].clone())
                .unwrap_or(Value::Null);
            let truthy =
                !matches!(&v, Value::Null | Value::Bool(false)) && v != json!(0) && v != json!("");
            if truthy {
                return v;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "never true within {WAIT:?}: {expr}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Saves a PNG of the page to `path`.
    pub(crate) async fn screenshot(&mut self, path: &Path) {
        use base64::Engine;
        let shot = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("screenshot data"))
            .expect("base64 screenshot");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }
}
