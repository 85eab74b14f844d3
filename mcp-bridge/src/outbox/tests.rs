//! The outbox's contract, on real files in temp dirs: order, durability across reopen, torn
//! writes, bounds, acks by key, the one-drainer lock, private modes.

use std::os::unix::fs::PermissionsExt;

use super::*;

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn outbox(home: &Path) -> Outbox {
    Outbox::open(home.join("outbox").join("CC-1"), Limits::default()).unwrap()
}

fn keys(entries: &[Entry]) -> Vec<&str> {
    entries.iter().map(|e| e.key.as_str()).collect()
}

#[test]
fn entries_come_out_in_order_with_what_a_resend_needs() {
    let home = tempfile::tempdir().unwrap();
    let o = outbox(home.path());
    let before = relay_proto::time::now_ms();
    for (i, to) in ["CC-2", "all", "codex"].iter().enumerate() {
        o.append(&format!("k{i}"), to, &format!("text {i}"))
            .unwrap();
    }
    let d = o.try_drain().unwrap().unwrap();
    let p = d.pending(10).unwrap();
    assert_eq!(keys(&p), ["k0", "k1", "k2"]);
    assert_eq!(p[1].to, "all");
    assert_eq!(p[2].content, "text 2");
    assert!(
        p.iter()
            .all(|e| e.queued_at_ms >= before && e.attempts == 0)
    );
    assert_eq!(keys(&d.pending(2).unwrap()), ["k0", "k1"]);
    // The frame a resend uses carries the original key, recipient and text.
    let frame = serde_json::to_value(p[0].frame()).unwrap();
    assert_eq!(
        frame,
        serde_json::json!({"type": "message", "to": "CC-2", "content": "text 0", "key": "k0"})
    );
}

#[test]
fn files_are_private_and_a_loose_directory_is_tightened() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("outbox").join("CC-1");
    fs::create_dir_all(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    let o = Outbox::open(&dir, Limits::default()).unwrap();
    assert_eq!(mode(&dir), 0o700);
    let e = o.append("k", "CC-2", "secret plans").unwrap();
    assert_eq!(mode(&dir.join(entry::file_name(e.seq, QUEUED))), 0o600);
    o.try_drain().unwrap().unwrap();
    for lock in ["lock", "drain.lock"] {
        assert_eq!(mode(&dir.join(lock)), 0o600, "{lock}");
    }
    // A fresh home gets both levels at 0700.
    let fresh = tempfile::tempdir().unwrap();
    let o = outbox(fresh.path());
    assert_eq!(mode(o.dir()), 0o700);
    assert_eq!(mode(o.dir().parent().unwrap()), 0o700);
}

#[test]
fn a_reopened_outbox_keeps_entries_attempts_and_errors() {
    let home = tempfile::tempdir().unwrap();
    {
        let o = outbox(home.path());
        o.append("a", "CC-2", "one").unwrap();
        o.append("b", "CC-2", "two").unwrap();
        let d = o.try_drain().unwrap().unwrap();
        let head = &d.pending(1).unwrap()[0];
        let updated = d
            .record_failure(head, "no ack within 10 s")
            .unwrap()
            .unwrap();
        assert_eq!(updated.attempts, 1);
    }
    let o = outbox(home.path());
    let stats = o.stats().unwrap();
    assert_eq!(stats.queued, 2);
    assert_eq!(stats.head_attempts, 1);
    assert_eq!(stats.last_error.as_deref(), Some("no ack within 10 s"));
    assert!(stats.oldest_age.is_some() && stats.oldest_queued_at_ms.is_some());
    let d = o.try_drain().unwrap().unwrap();
    let p = d.pending(10).unwrap();
    assert_eq!(keys(&p), ["a", "b"]);
    assert_eq!((p[0].attempts, p[1].attempts), (1, 0));
    // New entries go after the old ones.
    o.append("c", "CC-2", "three").unwrap();
    assert_eq!(keys(&d.pending(10).unwrap()), ["a", "b", "c"]);
}

#[test]
fn a_torn_write_is_never_an_entry() {
    let home = tempfile::tempdir().unwrap();
    let o = outbox(home.path());
    o.append("a", "CC-2", "complete").unwrap();
    // A crash mid-append leaves a temporary file with half a record…
    let torn = o
        .dir()
        .join(format!(".{}.4242.0.tmp", entry::file_name(2, QUEUED)));
    fs::write(&torn, br#"{"v":1,"key":"b","to":"CC-2","content":"half"#).unwrap();
    // …and damage from outside can leave a named file that is not an entry.
    let bad = o.dir().join(entry::file_name(7, QUEUED));
    fs::write(&bad, br#"{"v":1,"key":"c","#).unwrap();

    assert_eq!(o.stats().unwrap().queued, 2, "before anyone looks inside");
    let o = outbox(home.path());
    assert!(!torn.exists(), "reopening clears unfinished writes");
    let d = o.try_drain().unwrap().unwrap();
    assert_eq!(keys(&d.pending(10).unwrap()), ["a"]);
    assert!(!bad.exists());
    assert!(
        o.dir().join(entry::file_name(7, CORRUPT)).exists(),
        "kept aside"
    );
    let stats = o.stats().unwrap();
    assert_eq!((stats.queued, stats.corrupt), (1, 1));
    // New entries still sort after everything seen, corrupt files included.
    assert_eq!(o.append("d", "CC-2", "next").unwrap().seq, 8);
}

#[test]
fn bounds_refuse_and_say_so_and_an_ack_makes_room() {
    let home = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_count: 3,
        max_bytes: 1 << 20,
    };
    let o = Outbox::open(home.path().join("ob"), limits).unwrap();
    for k in ["a", "b", "c"] {
        o.append(k, "CC-2", "x").unwrap();
    }
    let e = o.append("d", "CC-2", "x").unwrap_err();
    assert!(matches!(e, OutboxError::Full { count: 3, .. }), "{e}");
    assert!(e.to_string().contains("NOT queued"), "{e}");
    let d = o.try_drain().unwrap().unwrap();
    let head = d.pending(1).unwrap().remove(0);
    assert!(d.ack(&head).unwrap());
    o.append("d", "CC-2", "x").unwrap();
    assert_eq!(keys(&d.pending(10).unwrap()), ["b", "c", "d"]);

    // The byte bound counts the files as stored.
    let o = Outbox::open(
        home.path().join("small"),
        Limits {
            max_count: 100,
            max_bytes: 400,
        },
    )
    .unwrap();
    o.append("a", "CC-2", &"y".repeat(200)).unwrap();
    let e = o.append("b", "CC-2", &"y".repeat(200)).unwrap_err();
    assert!(matches!(e, OutboxError::Full { .. }), "{e}");
    assert_eq!(o.stats().unwrap().queued, 1);
}

#[test]
fn what_the_hub_would_refuse_is_not_queued() {
    let home = tempfile::tempdir().unwrap();
    let o = outbox(home.path());
    let long_key = "k".repeat(MAX_KEY_BYTES + 1);
    let huge = "z".repeat(MAX_CONTENT_BYTES + 1);
    for (key, to, content) in [
        ("", "CC-2", "x"),
        (long_key.as_str(), "CC-2", "x"),
        ("k", "../etc", "x"),
        ("k", "", "x"),
        ("k", "CC-2", huge.as_str()),
    ] {
        let e = o.append(key, to, content).unwrap_err();
        assert!(matches!(e, OutboxError::Invalid(_)), "{e}");
        assert!(e.to_string().contains("NOT queued"), "{e}");
    }
    assert_eq!(o.stats().unwrap().queued, 0);
    o.append("k", "ALL", "x").unwrap();
}

#[test]
fn an_ack_removes_exactly_the_acked_key() {
    let home = tempfile::tempdir().unwrap();
    let o = outbox(home.path());
    for k in ["a", "b", "c"] {
        o.append(k, "CC-2", k).unwrap();
    }
    let d = o.try_drain().unwrap().unwrap();
    let p = d.pending(10).unwrap();
    assert!(d.ack(&p[1]).unwrap());
    assert_eq!(keys(&d.pending(10).unwrap()), ["a", "c"]);
    assert!(!d.ack(&p[1]).unwrap(), "a second ack removes nothing");
    // An entry whose sequence number now holds another key (the queue emptied and
    // numbering restarted) is not removed by a stale ack.
    d.ack(&p[0]).unwrap();
    d.ack(&p[2]).unwrap();
    let fresh = o.append("z", "CC-2", "z").unwrap();
    assert_eq!(fresh.seq, p[0].seq);
    assert!(!d.ack(&p[0]).unwrap());
    assert_eq!(keys(&d.pending(10).unwrap()), ["z"]);
}

#[test]
fn a_rejected_entry_leaves_the_queue_and_is_reported_once() {
    let home = tempfile::tempdir().unwrap();
    let o = outbox(home.path());
    o.append("a", "CC-2", "bad").unwrap();
    o.append("b", "CC-2", "good").unwrap();
    let d = o.try_drain().unwrap().unwrap();
    let head = d.pending(1).unwrap().remove(0);
    let r = d.reject(&head, "unknown recipient").unwrap().unwrap();
    assert_eq!(r.last_error.as_deref(), Some("unknown recipient"));
    assert_eq!(keys(&d.pending(10).unwrap()), ["b"]);
    let stats = o.stats().unwrap();
    assert_eq!((stats.queued, stats.rejected), (1, 1));
    let taken = o.take_rejected().unwrap();
    assert_eq!(keys(&taken), ["a"]);
    assert_eq!(taken[0].last_error.as_deref(), Some("unknown recipient"));
    assert!(o.take_rejected().unwrap().is_empty());
    assert_eq!(o.stats().unwrap().rejected, 0);
    // A failure or rejection of an entry that is gone changes nothing.
    assert_eq!(d.record_failure(&head, "late").unwrap(), None);
}

#[test]
fn only_one_drainer_at_a_time() {
    let home = tempfile::tempdir().unwrap();
    let first = outbox(home.path());
    let second = outbox(home.path());
    let d = first.try_drain().unwrap().expect("first drainer");
    assert!(second.try_drain().unwrap().is_none());
    assert!(
        first.try_drain().unwrap().is_none(),
        "not even twice in one process"
    );
    // Appending still works while someone drains.
    second.append("a", "CC-2", "x").unwrap();
    assert_eq!(keys(&d.pending(10).unwrap()), ["a"]);
    drop(d);
    assert!(second.try_drain().unwrap().is_some());
}

#[test]
fn concurrent_appends_get_distinct_places_and_keep_each_writers_order() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("ob");
    Outbox::open(&dir, Limits::default()).unwrap();
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let o = Outbox::open(&dir, Limits::default()).unwrap();
            std::thread::spawn(move || {
                for i in 0..40 {
                    o.append(&format!("w{w}-{i:02}"), "CC-2", "x").unwrap();
                }
            })
        })
        .collect();
    for t in writers {
        t.join().unwrap();
    }
    let o = Outbox::open(&dir, Limits::default()).unwrap();
    let all = o.try_drain().unwrap().unwrap().pending(1000).unwrap();
    assert_eq!(all.len(), 80);
    for w in 0..2 {
        let mine: Vec<_> = all
            .iter()
            .filter(|e| e.key.starts_with(&format!("w{w}-")))
            .map(|e| e.key.clone())
            .collect();
        let mut sorted = mine.clone();
        sorted.sort();
        assert_eq!(mine, sorted, "writer {w}'s order");
        assert_eq!(mine.len(), 40);
    }
}

/// Environment variable that turns [`appender_child`] on (it names the outbox directory).
const CHILD_DIR_ENV: &str = "OUTBOX_TEST_APPENDER_DIR";

/// The child process of [`a_sigkill_mid_append_loses_nothing_that_was_queued`]: appends
/// numbered entries until it is killed. Does nothing unless that test started it.
#[test]
#[ignore = "helper process, started by a_sigkill_mid_append_loses_nothing_that_was_queued"]
fn appender_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    let limits = Limits {
        max_count: 1_000_000,
        max_bytes: 1 << 40,
    };
    let o = Outbox::open(PathBuf::from(dir), limits).unwrap();
    for i in 0..1_000_000u32 {
        // Sizes vary so the kill lands at different points of a write.
        let text = "m".repeat(1 + (i as usize * 997) % 20_000);
        o.append(&format!("k{i:07}"), "CC-2", &text).unwrap();
    }
}

#[test]
fn a_sigkill_mid_append_loses_nothing_that_was_queued() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("ob");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["outbox::tests::appender_child", "--exact", "--ignored"])
        .env(CHILD_DIR_ENV, &dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Let it queue a few dozen entries, then kill it (SIGKILL) wherever it is.
    let deadline = Instant::now() + Duration::from_secs(30);
    let queued = |dir: &Path| {
        fs::read_dir(dir).map_or(0, |r| {
            r.filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".msg"))
            })
            .count()
        })
    };
    while queued(&dir) < 40 {
        assert!(Instant::now() < deadline, "the appender queued too little");
        assert!(child.try_wait().unwrap().is_none(), "the appender died");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();

    let o = Outbox::open(&dir, Limits::default()).unwrap();
    let all = o.try_drain().unwrap().unwrap().pending(usize::MAX).unwrap();
    assert!(all.len() >= 40);
    for (i, e) in all.iter().enumerate() {
        assert_eq!(
            e.key,
            format!("k{i:07}"),
            "entries complete, in order, no gap"
        );
        assert_eq!(e.content.len(), 1 + (i * 997) % 20_000);
    }
    let stats = o.stats().unwrap();
    assert_eq!((stats.queued, stats.corrupt), (all.len(), 0));
    assert!(
        fs::read_dir(&dir)
            .unwrap()
            .all(|e| !files::is_temp(&e.unwrap().file_name().to_string_lossy())),
        "the torn write was cleared"
    );
}

#[test]
fn a_queued_reply_is_resent_as_the_same_reply_after_a_reopen() {
    let home = tempfile::tempdir().unwrap();
    outbox(home.path())
        .append_reply("k1", "CC-2", "yes, merged", Some("3ae061b7-40"))
        .unwrap();
    outbox(home.path()).append("k2", "CC-2", "plain").unwrap();
    let o = outbox(home.path());
    let d = o.try_drain().unwrap().unwrap();
    let p = d.pending(10).unwrap();
    let frames: Vec<serde_json::Value> = p
        .iter()
        .map(|e| serde_json::to_value(e.frame()).unwrap())
        .collect();
    assert_eq!(frames[0]["replyTo"], "3ae061b7-40");
    assert!(frames[1].get("replyTo").is_none());
    // An entry written before replies existed (no field) still reads, answering nothing.
    let raw = fs::read_to_string(o.dir().join(super::entry::file_name(p[1].seq, "msg"))).unwrap();
    assert!(!raw.contains("reply_to"), "{raw}");
}
