//! `GET /api/feed`: the operator feed as server-sent events, for the console.
//!
//! Each event is `event: <kind>` and one `data:` line holding the event's JSON (serde_json
//! never writes a raw newline, so one line is always enough) — the same objects a WebSocket
//! `subscribe` gets (docs/PROTOCOL.md, "The operator feed"). The stream opens with a `hello`
//! event (`{epoch}`); a comment line every [`KEEPALIVE`] keeps proxies and the idle timeout
//! from closing a quiet stream. Bodies are never on this stream. It ends when the hub shuts
//! down; a subscriber that cannot keep up is sent `lagged` rather than slowing the hub.

use std::{convert::Infallible, time::Duration};

use bytes::Bytes;
use futures_util::stream;
use http_body_util::{BodyExt, StreamBody};
use hyper::{
    Response, StatusCode,
    body::Frame,
    header::{self, HeaderValue},
};
use relay_proto::wire_feed::FeedEvent;
use tokio::sync::watch;

use super::{Body, Ctx, routes};
use crate::feed::Subscription;

/// Comment lines on a quiet stream, this often.
pub(super) const KEEPALIVE: Duration = Duration::from_secs(15);

pub(crate) fn feed(cx: &Ctx) -> Response<Body> {
    let sub = match cx.hub.feed.subscribe(false) {
        Ok(s) => s,
        Err(full) => return routes::text(StatusCode::SERVICE_UNAVAILABLE, &format!("{full}\n")),
    };
    let hello = format!(
        "retry: 2000\nevent: hello\ndata: {}\n\n",
        serde_json::json!({"epoch": &*cx.hub.store.epoch()})
    );
    let state = State {
        sub,
        shutdown: cx.shutdown.clone(),
        first: Some(hello),
    };
    let events = stream::unfold(state, |mut st| async move {
        if let Some(hello) = st.first.take() {
            return Some((frame(hello), st));
        }
        let chunk = tokio::select! {
            ev = st.sub.next() => match ev {
                Some(ev) => sse_event(&ev),
                None => return None,
            },
            _ = tokio::time::sleep(KEEPALIVE) => ": keepalive\n\n".to_string(),
            _ = st.shutdown.wait_for(|s| *s) => return None,
        };
        Some((frame(chunk), st))
    });
    let mut r = Response::new(StreamBody::new(events).boxed_unsync());
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

struct State {
    sub: Subscription,
    shutdown: watch::Receiver<bool>,
    first: Option<String>,
}

fn frame(s: String) -> Result<Frame<Bytes>, Infallible> {
    Ok(Frame::data(Bytes::from(s)))
}

/// One event in SSE framing.
fn sse_event(ev: &FeedEvent) -> String {
    let kind = match ev {
        FeedEvent::Session(_) => "session",
        FeedEvent::Message(_) => "message",
        FeedEvent::Delivered(_) => "delivered",
        FeedEvent::Read(_) => "read",
        FeedEvent::Task(_) => "task",
        FeedEvent::Approval(_) => "approval",
        FeedEvent::Lagged(_) => "lagged",
    };
    let data = serde_json::to_string(ev).expect("feed events always serialize");
    format!("event: {kind}\ndata: {data}\n\n")
}
