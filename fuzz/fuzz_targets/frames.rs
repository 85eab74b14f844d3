//! Fuzzes frame parsing and dispatch: each input is split into lines, each line is one text
//! frame on one connection of a real hub state (real SQLite store in a temp dir). Whatever
//! the bytes, parsing must return a frame or an error, dispatch must not panic, and every
//! frame must get at most a bounded number of replies.
#![no_main]

use std::sync::{Arc, OnceLock};

use hub::{
    Hub, HubConfig, HubState,
    fuzzing::{ConnSession, outbox, parse},
};
use libfuzzer_sys::fuzz_target;

struct World {
    rt: tokio::runtime::Runtime,
    state: Arc<HubState>,
    _hub: Hub,
    _dir: tempfile::TempDir,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let hub = rt.block_on(async { Hub::open(HubConfig::new(dir.path())).unwrap() });
        World { state: hub.state(), rt, _hub: hub, _dir: dir }
    })
}

fuzz_target!(|data: &[u8]| {
    let w = world();
    let Ok(text) = std::str::from_utf8(data) else { return };
    w.rt.block_on(async {
        let (out, mut rx) = outbox(1, 1 << 16, 64 << 20);
        let mut session = ConnSession::new(out, "127.0.0.1:9".parse().unwrap(), true);
        for line in text.split('\n').take(64) {
            match parse(line) {
                Ok(frame) => session.handle(&w.state, frame).await,
                Err(e) => session.parse_error(e),
            }
        }
        session.disconnected(&w.state);
        let mut replies = 0;
        while rx.try_recv().is_some() {
            replies += 1;
        }
        assert!(replies <= 64 * 4, "{replies} replies for at most 64 frames");
    });
});
