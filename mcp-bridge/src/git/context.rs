//! What a task records about the sender's repository ([`GitContext`], serialized camelCase
//! like the wire protocol) and how it is read: one `git status --porcelain=v2` for branch,
//! HEAD, upstream, ahead/behind and the file lists, one `git config` for the remotes.
//! Reading never writes anything (see [`super::run`] for `GIT_OPTIONAL_LOCKS=0`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{error::GitError, run::Git, url::strip_credentials};

/// The sender's git state as a task carries it (docs/HANDOFF.md, "What is recorded").
/// Optional fields and empty lists are left out of the JSON; unknown fields are ignored when
/// reading, so a newer sender's context still parses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GitContext {
    /// The remote's URL, credentials stripped ([`strip_credentials`]): the upstream's remote,
    /// else `origin`, else the first remote. None when the repository has no remote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
    /// The checked-out branch; None when HEAD is detached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// The HEAD commit, full hex.
    pub head: String,
    /// The branch's upstream, e.g. `origin/main`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// Commits on HEAD that the upstream lacks (None without an upstream, or when the
    /// upstream's remote-tracking branch is gone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ahead: Option<u32>,
    /// Commits on the upstream that HEAD lacks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behind: Option<u32>,
    /// Tracked files changed (staged or not) or untracked files present (ignored files do
    /// not count).
    pub dirty: bool,
    /// Tracked files modified, staged, deleted or conflicted; at most the list cap of names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed: Vec<String>,
    /// How many such files there are (`changed` is truncated when this is larger).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub changed_count: usize,
    /// Untracked files that are not ignored (secret-looking ones too: see `omitted`); capped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub untracked: Vec<String>,
    /// How many untracked files there are.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub untracked_count: usize,
    /// The snapshot commit of the uncommitted changes (a child of `head`), when there were
    /// any that may travel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// The bundle attached to the task, when one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<BundleInfo>,
    /// Why no bundle is attached although the remote lacks work (e.g. over the cap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle_omitted: Option<String>,
    /// Paths left out of the snapshot: secret-looking files and nested repositories; capped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub omitted: Vec<String>,
    /// How many paths were left out.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub omitted_count: usize,
}

/// The bundle that travels with a task: exactly the commits (and snapshot) the remote lacks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BundleInfo {
    /// Size of the bundle file.
    pub bytes: u64,
    /// The one ref it carries: `refs/relay/tasks/<id>`.
    #[serde(rename = "ref")]
    pub ref_name: String,
    /// Where that ref points: the snapshot, or HEAD when nothing is uncommitted.
    pub tip: String,
    /// How many commits it carries (the snapshot's two included).
    pub commits: u32,
    /// Commits the receiver must already have (on the remote); empty when the bundle holds
    /// the whole history.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prerequisites: Vec<String>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The repository state as read, before anything is decided about it. Paths are git's raw
/// bytes (work-tree relative, `/`-separated).
#[derive(Debug, Default)]
pub(crate) struct State {
    /// The work tree's top directory.
    pub top: PathBuf,
    /// The index file git uses for this work tree.
    pub index: PathBuf,
    /// None on an unborn branch.
    pub head: Option<String>,
    pub branch: Option<String>,
    pub upstream: Option<String>,
    pub ahead_behind: Option<(u32, u32)>,
    /// Tracked paths with staged or unstaged changes (conflicted ones too).
    pub changed: Vec<Vec<u8>>,
    /// The conflicted subset of `changed`.
    pub unmerged: Vec<Vec<u8>>,
    /// Untracked, not ignored; a nested repository shows as `dir/`.
    pub untracked: Vec<Vec<u8>>,
    /// The chosen remote's name and its URL (not yet stripped).
    pub remote: Option<(String, String)>,
    /// Whether `refs/remotes/<remote>/` holds any ref (what the remote is known to have).
    pub remote_tracked: bool,
}

/// Reads the state of the work tree containing `dir`; None when `dir` is not in one (or is
/// inside a `.git` directory or a bare repository).
pub(crate) async fn read_state(git: &Git, dir: &Path) -> Result<Option<State>, GitError> {
    if !in_work_tree(git, dir).await? {
        return Ok(None);
    }
    let paths = git
        .at(dir)
        .args(["rev-parse", "--show-toplevel", "--git-path", "index"])
        .text()
        .await?;
    let mut lines = paths.lines();
    let top = PathBuf::from(lines.next().unwrap_or_default());
    let index = super::run::absolute(dir, Path::new(lines.next().unwrap_or("index")));
    let status = git
        .at(&top)
        .args([
            "status",
            "--porcelain=v2",
            "-z",
            "--branch",
            "--untracked-files=all",
            "--no-renames",
        ])
        .run()
        .await?;
    let mut state = parse_status(&status)?;
    state.top = top;
    state.index = index;
    let remotes = read_remotes(git, &state.top).await?;
    let chosen = choose_remote(
        &remotes.urls,
        state.branch.as_deref(),
        &remotes.branch_remotes,
    );
    if let Some((name, raw_url)) = chosen {
        // `get-url` applies `url.<base>.insteadOf`: the URL another machine can use.
        let url = git
            .at(&state.top)
            .args(["remote", "get-url", "--", &name])
            .text()
            .await
            .unwrap_or(raw_url);
        let tracked = git
            .at(&state.top)
            .args(["for-each-ref", "--count=1", "--format=%(refname)"])
            .arg(format!("refs/remotes/{name}/"))
            .run()
            .await?;
        state.remote_tracked = !tracked.trim_ascii().is_empty();
        state.remote = Some((name, url));
    }
    Ok(Some(state))
}

/// Whether `dir` is inside a git work tree (not a `.git` directory, not a bare repository).
pub(crate) async fn in_work_tree(git: &Git, dir: &Path) -> Result<bool, GitError> {
    let probe = git
        .at(dir)
        .args(["rev-parse", "--is-inside-work-tree"])
        .output()
        .await?;
    if probe.status.success() {
        return Ok(probe.stdout.trim_ascii() == b"true");
    }
    if String::from_utf8_lossy(&probe.stderr).contains("not a git repository") {
        return Ok(false);
    }
    Err(super::run::failed(
        "git rev-parse --is-inside-work-tree".into(),
        &probe,
    ))
}

/// Parses `git status --porcelain=v2 -z --branch` output.
fn parse_status(out: &[u8]) -> Result<State, GitError> {
    let bad = |what: &str| GitError::Failed {
        command: "git status --porcelain=v2".into(),
        status: "unexpected output".into(),
        stderr: what.chars().take(200).collect(),
    };
    let mut state = State::default();
    let mut records = out.split(|&b| b == 0).filter(|r| !r.is_empty());
    while let Some(rec) = records.next() {
        let text = || String::from_utf8_lossy(rec).into_owned();
        match rec[0] {
            b'#' => {
                let line = text();
                let mut words = line.splitn(3, ' ').skip(1);
                let (key, value) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
                match key {
                    "branch.oid" if value != "(initial)" => state.head = Some(value.into()),
                    "branch.head" if value != "(detached)" => state.branch = Some(value.into()),
                    "branch.upstream" => state.upstream = Some(value.into()),
                    "branch.ab" => {
                        let mut it = value
                            .split(' ')
                            .map(|n| n.trim_start_matches(['+', '-']).parse::<u32>().ok());
                        if let (Some(Some(a)), Some(Some(b))) = (it.next(), it.next()) {
                            state.ahead_behind = Some((a, b));
                        }
                    }
                    _ => {}
                }
            }
            // `1 XY sub mH mI mW hH hI path`, `u XY sub m1 m2 m3 mW h1 h2 h3 path`.
            b'1' | b'u' => {
                let fields = if rec[0] == b'1' { 8 } else { 10 };
                let path = rec
                    .splitn(fields + 1, |&b| b == b' ')
                    .nth(fields)
                    .ok_or_else(|| bad(&text()))?
                    .to_vec();
                if rec[0] == b'u' {
                    state.unmerged.push(path.clone());
                }
                state.changed.push(path);
            }
            // `2 XY sub mH mI mW hH hI Xscore path` NUL `origPath` (renames are off; kept
            // for safety: both paths changed).
            b'2' => {
                let path = rec
                    .splitn(10, |&b| b == b' ')
                    .nth(9)
                    .ok_or_else(|| bad(&text()))?
                    .to_vec();
                state.changed.push(path);
                if let Some(orig) = records.next() {
                    state.changed.push(orig.to_vec());
                }
            }
            b'?' => state
                .untracked
                .push(rec.get(2..).unwrap_or_default().to_vec()),
            _ => {}
        }
    }
    Ok(state)
}

pub(crate) struct Remotes {
    /// (name, URL) in config order.
    pub urls: Vec<(String, String)>,
    /// (branch, remote name) from `branch.<name>.remote`.
    branch_remotes: Vec<(String, String)>,
}

pub(crate) async fn read_remotes(git: &Git, top: &Path) -> Result<Remotes, GitError> {
    let out = git
        .at(top)
        .args([
            "config",
            "-z",
            "--get-regexp",
            r"^(remote\..+\.url|branch\..+\.remote)$",
        ])
        .output()
        .await?;
    // Exit 1: no such keys.
    if !out.status.success() && out.status.code() != Some(1) {
        return Err(super::run::failed("git config --get-regexp".into(), &out));
    }
    let mut remotes = Remotes {
        urls: Vec::new(),
        branch_remotes: Vec::new(),
    };
    for entry in out.stdout.split(|&b| b == 0).filter(|e| !e.is_empty()) {
        let entry = String::from_utf8_lossy(entry);
        let Some((key, value)) = entry.split_once('\n') else {
            continue;
        };
        if let Some(name) = key
            .strip_prefix("remote.")
            .and_then(|k| k.strip_suffix(".url"))
        {
            if !remotes.urls.iter().any(|(n, _)| n == name) {
                remotes.urls.push((name.into(), value.into()));
            }
        } else if let Some(b) = key
            .strip_prefix("branch.")
            .and_then(|k| k.strip_suffix(".remote"))
        {
            remotes.branch_remotes.push((b.into(), value.into()));
        }
    }
    Ok(remotes)
}

/// The remote whose URL is recorded: the branch's upstream remote, else `origin`, else the
/// first configured one.
fn choose_remote(
    urls: &[(String, String)],
    branch: Option<&str>,
    branch_remotes: &[(String, String)],
) -> Option<(String, String)> {
    let find = |name: &str| urls.iter().find(|(n, _)| n == name).cloned();
    branch
        .and_then(|b| branch_remotes.iter().find(|(name, _)| name == b))
        .and_then(|(_, remote)| find(remote))
        .or_else(|| find("origin"))
        .or_else(|| urls.first().cloned())
}

/// Builds the recorded context from the state (no snapshot or bundle yet).
pub(crate) fn describe(state: &State, head: &str, list_cap: usize) -> GitContext {
    let (changed, changed_count) = names(&state.changed, list_cap);
    let (untracked, untracked_count) = names(&state.untracked, list_cap);
    GitContext {
        remote: state.remote.as_ref().map(|(_, url)| strip_credentials(url)),
        branch: state.branch.clone(),
        head: head.into(),
        upstream: state.upstream.clone(),
        ahead: state.ahead_behind.map(|(a, _)| a),
        behind: state.ahead_behind.map(|(_, b)| b),
        dirty: changed_count + untracked_count > 0,
        changed,
        changed_count,
        untracked,
        untracked_count,
        ..GitContext::default()
    }
}

/// At most `cap` of the paths as text (lossy for non-UTF-8 names), and how many there are.
pub(crate) fn names(paths: &[Vec<u8>], cap: usize) -> (Vec<String>, usize) {
    let listed = paths
        .iter()
        .take(cap)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    (listed, paths.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_parsing() {
        let out = b"# branch.oid 19ff90b0b3f34246f0d20e957ab3fe1c6f7cac1d\0# branch.head main\0\
# branch.upstream origin/main\0# branch.ab +2 -1\0\
1 .M N... 100644 100644 100644 7898 7898 a file\0\
1 D. N... 100644 000000 000000 7898 0000 gone\0\
u UU N... 100644 100644 100644 100644 a b c both\0\
2 R. N... 100644 100644 100644 aa bb R100 new name\0old name\0\
? untracked file\0? nested/\0";
        let s = parse_status(out).unwrap();
        assert_eq!(
            s.head.as_deref(),
            Some("19ff90b0b3f34246f0d20e957ab3fe1c6f7cac1d")
        );
        assert_eq!(s.branch.as_deref(), Some("main"));
        assert_eq!(s.upstream.as_deref(), Some("origin/main"));
        assert_eq!(s.ahead_behind, Some((2, 1)));
        let text = |v: &[Vec<u8>]| -> Vec<String> {
            v.iter()
                .map(|p| String::from_utf8_lossy(p).into())
                .collect()
        };
        assert_eq!(
            text(&s.changed),
            ["a file", "gone", "both", "new name", "old name"]
        );
        assert_eq!(text(&s.unmerged), ["both"]);
        assert_eq!(text(&s.untracked), ["untracked file", "nested/"]);

        let s = parse_status(b"# branch.oid (initial)\0# branch.head (detached)\0").unwrap();
        assert_eq!((s.head, s.branch, s.ahead_behind), (None, None, None));
        assert!(parse_status(b"1 .M short\0").is_err());
    }

    #[test]
    fn remote_choice() {
        let urls = vec![
            ("fork".to_string(), "f".to_string()),
            ("origin".to_string(), "o".to_string()),
        ];
        let up = vec![("main".to_string(), "fork".to_string())];
        let pick = |b, u: &[(String, String)], r: &[(String, String)]| {
            choose_remote(u, b, r).map(|(n, _)| n)
        };
        assert_eq!(pick(Some("main"), &urls, &up).as_deref(), Some("fork"));
        assert_eq!(pick(Some("dev"), &urls, &up).as_deref(), Some("origin"));
        assert_eq!(pick(None, &urls[..1], &up).as_deref(), Some("fork"));
        assert_eq!(pick(None, &[], &up), None);
        let local = vec![("main".to_string(), ".".to_string())];
        assert_eq!(pick(Some("main"), &urls, &local).as_deref(), Some("origin"));
    }

    #[test]
    fn names_are_capped_and_counted() {
        let paths: Vec<Vec<u8>> = (0..5).map(|i| format!("f{i}").into_bytes()).collect();
        assert_eq!(names(&paths, 2), (vec!["f0".into(), "f1".into()], 5));
        assert_eq!(names(&[b"bad\xff".to_vec()], 9).0, ["bad\u{fffd}"]);
    }

    #[test]
    fn json_is_camel_case_and_short() {
        let ctx = GitContext {
            head: "abc".into(),
            changed: vec!["a".into()],
            changed_count: 1,
            bundle_omitted: Some("over".into()),
            bundle: Some(BundleInfo {
                bytes: 10,
                ref_name: "refs/relay/tasks/t".into(),
                tip: "def".into(),
                commits: 1,
                prerequisites: vec![],
            }),
            ..GitContext::default()
        };
        let json = serde_json::to_value(&ctx).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"head": "abc", "dirty": false, "changed": ["a"], "changedCount": 1,
                "bundle": {"bytes": 10, "ref": "refs/relay/tasks/t", "tip": "def", "commits": 1},
                "bundleOmitted": "over"})
        );
        let back: GitContext = serde_json::from_value(json).unwrap();
        assert_eq!(back, ctx);
        let newer: GitContext =
            serde_json::from_str(r#"{"head":"x","dirty":true,"futureField":1}"#).unwrap();
        assert!(newer.dirty);
    }
}
