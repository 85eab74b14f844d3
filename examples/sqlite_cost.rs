//! `sqlite_cost`: what SQLite itself costs per stored message, without the hub around it
//! (docs/BENCHMARKS.md, "Where a stored message's CPU goes in SQLite").
//!
//! The hub's `direct` figure mixes the network, the router, the store's writer and the
//! search index's thread; this takes the two SQLite parts apart and changes one thing at a
//! time (the index's three settings count as one: they ship together), alternating the
//! variants round by round in one invocation:
//!
//! - **store**: group commits of `--batch` messages (the size `direct` reaches, ~180) into a
//!   table of the shape of `relay.db`'s `messages` (hub/src/store/sqlite.rs: the row and the
//!   partial key and thread indexes), in WAL mode with `synchronous=NORMAL` and a passive
//!   checkpoint every 100 commits, as the hub ships. How each message is found by who sent
//!   and who was sent it varies: schema version 2's two per-message indexes
//!   (`messages_by_recipient`, `messages_by_sender`; also with one of them, twice the batch
//!   and smaller pages), none at all (the bound below), `(party, seq)` tables filled in
//!   sorted passes behind the commits, and postings (hub/src/store/sqlite/postings.rs) written
//!   with every commit or, as schema version 3 ships, once per 4,096 messages. (The hub
//!   writes a flush in a transaction of its own right after the commit; here it rides in
//!   that commit.)
//! - **index**: the search thread's passes (hub/src/store/sqlite/search.rs) over those
//!   messages: `INSERT … SELECT` of 16,384 at a time into the contentless FTS5 table, with
//!   FTS5's default merge options and with the hub's.
//!
//! Bodies are the load generator's: one 100-character token per message (`LG` + hex, padded
//! with `x`), the worst case for an inverted index. Each figure is the process's CPU time
//! (user + system, `getrusage`) per message and the bytes it wrote (`/proc/self/io`
//! `wchar`), medians over `--rounds`. Linux only.
//!
//! Run: `cargo run --release --example sqlite_cost` (about a minute; `--rounds`,
//! `--commits`, `--batch`, `--messages`).

use std::{path::Path, time::Duration};

use anyhow::{Context, Result};
use clap::Parser;
use rusqlite::{Connection, params};

#[derive(Parser)]
struct Args {
    /// Rounds of every variant (medians are reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Group commits timed per store round (after 300 not timed).
    #[arg(long, default_value_t = 2_000)]
    commits: u64,
    /// Messages per group commit.
    #[arg(long, default_value_t = 180)]
    batch: u64,
    /// Messages indexed per index round.
    #[arg(long, default_value_t = 400_000)]
    messages: u64,
}

/// The shape of `relay.db`'s messages table with what every message goes into: a copy of
/// `SCHEMA` in hub/src/store/sqlite.rs (the hub's is private); keep them alike.
const MESSAGES: &str = "
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE messages (
    seq INTEGER PRIMARY KEY, ts INTEGER NOT NULL, sender TEXT NOT NULL,
    recipient TEXT NOT NULL, content TEXT NOT NULL, delivered_at INTEGER, read_at INTEGER,
    ckey TEXT, reply_to INTEGER, thread INTEGER);
CREATE UNIQUE INDEX messages_by_key ON messages(sender, ckey) WHERE ckey IS NOT NULL;
CREATE INDEX messages_by_thread ON messages(thread, seq) WHERE thread IS NOT NULL;
";
const BY_RECIPIENT: &str = "CREATE INDEX messages_by_recipient ON messages(recipient, seq);";
const BY_SENDER: &str = "CREATE INDEX messages_by_sender ON messages(sender, seq);";

/// The search index's table: a copy of `SCHEMA` in hub/src/store/sqlite/search.rs, whose
/// `PASS_MAX`, `AUTOMERGE`, `HASHSIZE` and `CHECKPOINT_PAGES` the variants below repeat.
const FTS: &str = "CREATE VIRTUAL TABLE messages_fts USING fts5(
    content, content='', contentless_delete=1, detail=none,
    tokenize='unicode61 remove_diacritics 2');
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;";

/// The load generator's body for message `i` of a ring of 10.
fn body(i: u64) -> String {
    let mut s = format!(
        "LG{:04x}{:04x}{:012x}{:016x}",
        i % 10,
        (i + 1) % 10,
        i / 10,
        i.wrapping_mul(7919)
    );
    s.extend(std::iter::repeat_n('x', 100 - s.len()));
    s
}

/// CPU seconds of this process so far (user + system).
fn cpu_secs() -> f64 {
    // SAFETY: rusage is plain integers, for which all zeroes is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes only the struct it is given, which lives across the call.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    assert_eq!(rc, 0, "getrusage: {}", std::io::Error::last_os_error());
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

/// Bytes this process has written so far (`wchar`).
fn written() -> Result<u64> {
    let io = std::fs::read_to_string("/proc/self/io")?;
    io.lines()
        .find_map(|l| l.strip_prefix("wchar: "))
        .context("no wchar in /proc/self/io")?
        .trim()
        .parse()
        .context("wchar")
}

fn fresh(path: &Path, page_size: i64) -> Result<Connection> {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
    let conn = Connection::open(path)?;
    // Before anything is written: a database's page size is fixed by its first page.
    conn.pragma_update(None, "page_size", page_size)?;
    conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(conn)
}

/// One store variant.
struct Store {
    name: &'static str,
    indexes: &'static [&'static str],
    batch_factor: u64,
    /// `PRAGMA page_size` of a new database (SQLite's default is 4096).
    page_size: i64,
    /// Fill (party, seq) tables in sorted passes of this many messages, in their own
    /// transaction after a commit, instead of indexing each message in its commit.
    deferred: Option<u64>,
    /// Keep each (party, role)'s new seqs in memory and write them as one posting row each
    /// every this many seqs, inside that commit (the hub's shape since schema version 3:
    /// hub/src/store/sqlite/postings.rs); 1 writes them with every commit.
    postings: Option<u64>,
}

/// The postings table, a copy of the one in hub/src/store/sqlite/postings.rs.
const POSTINGS: &str = "
CREATE TABLE postings (party TEXT NOT NULL, role INTEGER NOT NULL, last_seq INTEGER NOT NULL,
    first_seq INTEGER NOT NULL, deltas BLOB NOT NULL,
    PRIMARY KEY (party, role, last_seq)) WITHOUT ROWID;";

/// The (party, seq) tables a deferred variant fills behind the commits.
const PARTIES: &str = "
CREATE TABLE by_recipient (recipient TEXT NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (recipient, seq)) WITHOUT ROWID;
CREATE TABLE by_sender (sender TEXT NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (sender, seq)) WITHOUT ROWID;";

/// Per message: (µs of CPU, bytes written).
fn store_round(dir: &Path, v: &Store, args: &Args) -> Result<(f64, f64)> {
    let conn = fresh(&dir.join("relay.db"), v.page_size)?;
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    conn.execute_batch(MESSAGES)?;
    for ddl in v.indexes {
        conn.execute_batch(ddl)?;
    }
    if v.deferred.is_some() {
        conn.execute_batch(PARTIES)?;
    }
    if v.postings.is_some() {
        conn.execute_batch(POSTINGS)?;
    }
    // Seqs not yet in a posting row, by (party, role).
    let mut lists: std::collections::BTreeMap<(String, i64), Vec<u64>> = Default::default();
    let mut posted = 0u64;
    let batch = args.batch * v.batch_factor;
    let mut seq = 1u64;
    let mut indexed = 0u64;
    let mut commits = |n: u64| -> Result<()> {
        for k in 0..n {
            let tx = conn.unchecked_transaction()?;
            {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO messages(seq, ts, sender, recipient, content, ckey,
                                          delivered_at, reply_to, thread)
                     VALUES (?1, ?2, ?3, ?4, ?5, NULL, ?2, NULL, NULL)",
                )?;
                for _ in 0..batch {
                    let s = seq % 10;
                    if v.postings.is_some() {
                        lists
                            .entry((format!("lg-{:02}", (s + 1) % 10), 0))
                            .or_default()
                            .push(seq);
                        lists
                            .entry((format!("lg-{s:02}"), 1))
                            .or_default()
                            .push(seq);
                    }
                    insert.execute(params![
                        seq as i64,
                        1_700_000_000_000i64 + seq as i64,
                        format!("lg-{s:02}"),
                        format!("lg-{:02}", (s + 1) % 10),
                        body(seq),
                    ])?;
                    seq += 1;
                }
                if let Some(every) = v.postings
                    && seq - 1 - posted >= every
                {
                    // Each (party, role)'s seqs as u16 offsets from its first.
                    posted = seq - 1;
                    let mut post =
                        tx.prepare_cached("INSERT INTO postings VALUES (?1, ?2, ?3, ?4, ?5)")?;
                    for ((party, role), seqs) in std::mem::take(&mut lists) {
                        let (Some(&base), Some(&last)) = (seqs.first(), seqs.last()) else {
                            continue;
                        };
                        let deltas: Vec<u8> = seqs
                            .iter()
                            .flat_map(|q| ((q - base) as u16).to_le_bytes())
                            .collect();
                        post.execute(params![party, role, last as i64, base as i64, deltas])?;
                    }
                }
                let mut meta = tx.prepare_cached("INSERT OR REPLACE INTO meta VALUES (?1, ?2)")?;
                meta.execute(params!["high_seq", seq.to_string()])?;
                meta.execute(params!["total_bytes", (seq * 100).to_string()])?;
            }
            tx.commit()?;
            if let Some(pass) = v.deferred
                && seq - 1 - indexed >= pass
            {
                let tx = conn.unchecked_transaction()?;
                tx.prepare_cached(
                    "INSERT INTO by_recipient SELECT recipient, seq FROM messages
                     WHERE seq > ?1 ORDER BY recipient, seq",
                )?
                .execute([indexed as i64])?;
                tx.prepare_cached(
                    "INSERT INTO by_sender SELECT sender, seq FROM messages
                     WHERE seq > ?1 ORDER BY sender, seq",
                )?
                .execute([indexed as i64])?;
                indexed = seq - 1;
                tx.prepare_cached("INSERT OR REPLACE INTO meta VALUES ('indexed', ?1)")?
                    .execute([indexed.to_string()])?;
                tx.commit()?;
            }
            if k % 100 == 99 {
                conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
            }
        }
        Ok(())
    };
    commits(300)?;
    let (c0, w0) = (cpu_secs(), written()?);
    commits(args.commits / v.batch_factor)?;
    let (c1, w1) = (cpu_secs(), written()?);
    let n = (args.commits / v.batch_factor * batch) as f64;
    Ok(((c1 - c0) * 1e6 / n, (w1 - w0) as f64 / n))
}

/// One index variant: FTS5 options set after the table is made.
struct Index {
    name: &'static str,
    options: &'static [(&'static str, i64)],
    checkpoint_pages: i64,
}

fn index_round(dir: &Path, v: &Index, args: &Args) -> Result<(f64, f64)> {
    let relay = dir.join("messages.db");
    if !relay.exists() {
        let conn = Connection::open(&relay)?;
        conn.execute_batch(
            "CREATE TABLE messages(seq INTEGER PRIMARY KEY, content TEXT NOT NULL);",
        )?;
        let tx = conn.unchecked_transaction()?;
        for i in 1..=args.messages {
            tx.execute(
                "INSERT INTO messages VALUES (?1, ?2)",
                params![i as i64, body(i)],
            )?;
        }
        tx.commit()?;
    }
    let conn = fresh(&dir.join("search.db"), 4096)?;
    conn.pragma_update(None, "wal_autocheckpoint", v.checkpoint_pages)?;
    conn.execute_batch(FTS)?;
    for (k, val) in v.options {
        conn.execute(
            "INSERT INTO messages_fts(messages_fts, rank) VALUES (?1, ?2)",
            params![k, val],
        )?;
    }
    conn.execute(
        "ATTACH DATABASE ?1 AS r",
        [relay.to_string_lossy().as_ref()],
    )?;
    let (c0, w0) = (cpu_secs(), written()?);
    let mut upto = 0i64;
    while upto < args.messages as i64 {
        let end = (upto + 16_384).min(args.messages as i64);
        let tx = conn.unchecked_transaction()?;
        tx.execute(
            "INSERT INTO messages_fts(rowid, content)
             SELECT seq, content FROM r.messages WHERE seq > ?1 AND seq <= ?2",
            params![upto, end],
        )?;
        tx.execute(
            "INSERT OR REPLACE INTO meta VALUES ('upto', ?1)",
            [end.to_string()],
        )?;
        tx.commit()?;
        upto = end;
    }
    let (c1, w1) = (cpu_secs(), written()?);
    let n = args.messages as f64;
    Ok(((c1 - c0) * 1e6 / n, (w1 - w0) as f64 / n))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn report(title: &str, names: &[&str], runs: &mut [Vec<(f64, f64)>]) {
    println!("{title}");
    let base = median(&mut runs[0].iter().map(|r| r.0).collect::<Vec<_>>());
    for (name, r) in names.iter().zip(runs.iter_mut()) {
        let cpu = median(&mut r.iter().map(|r| r.0).collect::<Vec<_>>());
        let bytes = median(&mut r.iter().map(|r| r.1).collect::<Vec<_>>());
        println!(
            "  {name:<44} {cpu:>6.2} µs/msg  ({:>4.2}× the first)  {bytes:>6.0} B written/msg",
            cpu / base
        );
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let stores = [
        Store {
            name: "schema 2 (both per-message indexes)",
            indexes: &[BY_RECIPIENT, BY_SENDER],
            batch_factor: 1,
            page_size: 4096,
            deferred: None,
            postings: None,
        },
        Store {
            name: "without messages_by_sender",
            indexes: &[BY_RECIPIENT],
            batch_factor: 1,
            page_size: 4096,
            deferred: None,
            postings: None,
        },
        Store {
            name: "without both",
            indexes: &[],
            batch_factor: 1,
            page_size: 4096,
            deferred: None,
            postings: None,
        },
        Store {
            name: "schema 2, twice the batch",
            indexes: &[BY_RECIPIENT, BY_SENDER],
            batch_factor: 2,
            page_size: 4096,
            deferred: None,
            postings: None,
        },
        Store {
            name: "schema 2, 2 KiB pages",
            indexes: &[BY_RECIPIENT, BY_SENDER],
            batch_factor: 1,
            page_size: 2048,
            deferred: None,
            postings: None,
        },
        Store {
            name: "schema 2, 1 KiB pages",
            indexes: &[BY_RECIPIENT, BY_SENDER],
            batch_factor: 1,
            page_size: 1024,
            deferred: None,
            postings: None,
        },
        Store {
            name: "(party, seq) tables in sorted passes of 1,024",
            indexes: &[],
            batch_factor: 1,
            page_size: 4096,
            deferred: Some(1024),
            postings: None,
        },
        Store {
            name: "(party, seq) tables in sorted passes of 4,096",
            indexes: &[],
            batch_factor: 1,
            page_size: 4096,
            deferred: Some(4096),
            postings: None,
        },
        Store {
            name: "postings written with every commit",
            indexes: &[],
            batch_factor: 1,
            page_size: 4096,
            deferred: None,
            postings: Some(1),
        },
        Store {
            name: "postings of 4,096 seqs (schema 3, as shipped)",
            indexes: &[],
            batch_factor: 1,
            page_size: 4096,
            deferred: None,
            postings: Some(4096),
        },
    ];
    let indexes = [
        Index {
            name: "FTS5 defaults (automerge 4, 1 MiB, ckpt 1,000)",
            options: &[],
            checkpoint_pages: 1_000,
        },
        Index {
            name: "as shipped (automerge 16, 4 MiB, ckpt 4,000)",
            options: &[("automerge", 16), ("hashsize", 4 << 20)],
            checkpoint_pages: 4_000,
        },
    ];
    let mut store_runs = vec![Vec::new(); stores.len()];
    let mut index_runs = vec![Vec::new(); indexes.len()];
    for round in 0..args.rounds {
        for (v, runs) in stores.iter().zip(store_runs.iter_mut()) {
            runs.push(store_round(dir.path(), v, &args)?);
        }
        for (v, runs) in indexes.iter().zip(index_runs.iter_mut()) {
            runs.push(index_round(dir.path(), v, &args)?);
        }
        eprintln!("round {} of {} done", round + 1, args.rounds);
        std::thread::sleep(Duration::from_millis(100));
    }
    report(
        &format!(
            "store: group commits of {} messages (medians of {})",
            args.batch, args.rounds
        ),
        &stores.map(|s| s.name),
        &mut store_runs,
    );
    report(
        &format!(
            "search index: passes of 16,384 over {} messages (medians of {})",
            args.messages, args.rounds
        ),
        &indexes.map(|s| s.name),
        &mut index_runs,
    );
    Ok(())
}
