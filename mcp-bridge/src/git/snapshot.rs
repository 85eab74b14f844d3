//! The snapshot of uncommitted work, built like `git stash` builds its commits but without
//! touching anything the user has: the index, the work tree, HEAD, branches and the stash all
//! stay as they are (docs/HANDOFF.md, "How the snapshot is made").
//!
//! 1. Copy the index to a temporary file (`GIT_INDEX_FILE`), dated 1970 so git compares
//!    the listed paths by content rather than trusting cached stat data; with no index,
//!    `read-tree HEAD`.
//! 2. On the copy: resolve conflicted paths to their work-tree content; put secret-looking
//!    paths back to HEAD's version (or drop them when HEAD has none) — [`super::secrets`].
//!    `write-tree` → the *index tree* (what the sender had staged).
//! 3. `add -A` exactly the changed and untracked paths `git status` listed, minus the
//!    omitted ones (secrets, nested repositories). Ignored files are never listed, so they
//!    never enter. `write-tree` → the *work tree* tree. git stores symlinks as links and
//!    never follows them, so nothing outside the work tree is read.
//! 4. When either tree differs from HEAD's: `commit-tree` the index commit `I` (parent HEAD)
//!    and the snapshot `W` (parents HEAD and `I`). Both are unsigned and made by a fixed
//!    identity, so no pinentry or missing `user.email` can stop a handoff.
//!
//! The new objects land in the repository's object store, like a stash's; the caller keeps
//! them alive with `refs/relay/tasks/<id>` ([`super::forget`] drops it).

use std::{ffi::OsStr, os::unix::ffi::OsStrExt, path::Path};

use super::{
    context::State,
    error::GitError,
    run::{Cmd, Git},
    secrets::is_secret,
};

/// Author and committer of snapshot commits.
const IDENTITY: [(&str, &str); 4] = [
    ("GIT_AUTHOR_NAME", "claude-relay"),
    ("GIT_AUTHOR_EMAIL", "relay@claude-relay.invalid"),
    ("GIT_COMMITTER_NAME", "claude-relay"),
    ("GIT_COMMITTER_EMAIL", "relay@claude-relay.invalid"),
];

/// What building the snapshot produced.
pub(crate) struct Built {
    /// The snapshot commit `W`, when anything uncommitted may travel.
    pub commit: Option<String>,
    /// Paths left out (secrets, nested repositories).
    pub omitted: Vec<Vec<u8>>,
}

/// Builds the snapshot of `state`'s uncommitted work on top of `head` (see the module
/// header).
pub(crate) async fn build(
    git: &Git,
    state: &State,
    head: &str,
    task_id: &str,
) -> Result<Built, GitError> {
    let omit = |p: &Vec<u8>| is_secret(p) || p.ends_with(b"/");
    let omitted: Vec<Vec<u8>> = state
        .changed
        .iter()
        .chain(&state.untracked)
        .filter(|p| omit(p))
        .cloned()
        .collect();
    if state.changed.is_empty() && state.untracked.is_empty() {
        return Ok(Built {
            commit: None,
            omitted,
        });
    }
    let tmp = tempfile::Builder::new()
        .prefix("relay-snapshot-")
        .tempdir()
        .map_err(|e| GitError::io("cannot create a temporary directory", e))?;
    let index = tmp.path().join("index");
    let top = state.top.as_path();
    if state.index.is_file() {
        copy_index(&state.index, &index)?;
    } else {
        on_copy(git.at(top).args(["read-tree", head]), &index)
            .run()
            .await?;
    }

    // 2. The index tree.
    let conflicted: Vec<&Vec<u8>> = state.unmerged.iter().filter(|p| !omit(p)).collect();
    if !conflicted.is_empty() {
        add(git, top, &index, &conflicted).await?;
    }
    let secrets: Vec<&Vec<u8>> = state.changed.iter().filter(|p| is_secret(p)).collect();
    if !secrets.is_empty() {
        restore_from_head(git, top, &index, head, &secrets).await?;
    }
    let index_tree = on_copy(git.at(top).arg("write-tree"), &index)
        .text()
        .await?;

    // 3. The work-tree tree.
    let to_add: Vec<&Vec<u8>> = state
        .changed
        .iter()
        .chain(&state.untracked)
        .filter(|p| !omit(p))
        .collect();
    if !to_add.is_empty() {
        add(git, top, &index, &to_add).await?;
    }
    let work_tree = on_copy(git.at(top).arg("write-tree"), &index)
        .text()
        .await?;

    // 4. The commits, when anything differs from HEAD.
    let head_tree = git
        .at(top)
        .args(["rev-parse", &format!("{head}^{{tree}}")])
        .text()
        .await?;
    if index_tree == head_tree && work_tree == head_tree {
        return Ok(Built {
            commit: None,
            omitted,
        });
    }
    let on = state.branch.as_deref().unwrap_or("a detached HEAD");
    let index_commit = commit(
        git,
        top,
        &index_tree,
        &[head],
        &format!("relay: staged changes of task {task_id}"),
    )
    .await?;
    let snapshot = commit(
        git,
        top,
        &work_tree,
        &[head, &index_commit],
        &format!("relay: uncommitted work of task {task_id}\n\nOn {on} at {head}.\n"),
    )
    .await?;
    Ok(Built {
        commit: Some(snapshot),
        omitted,
    })
}

/// Copies the index, dated one second after the epoch. git trusts an entry's cached stat data
/// only when the file is older than the index file ("racy git"); a copy made now would look
/// newer than an edit made in the same second as the last real index write, and a same-size
/// edit would be missed. Dated 1 (0 means "unknown" to git and disables the check), every
/// listed path is compared by content instead.
fn copy_index(from: &Path, to: &Path) -> Result<(), GitError> {
    std::fs::copy(from, to)
        .and_then(|_| {
            std::fs::File::options()
                .write(true)
                .open(to)?
                .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1))
        })
        .map_err(|e| GitError::io(format!("cannot copy the index {}", from.display()), e))
}

/// `git add -A` of exactly `paths` (literal pathspecs, NUL-separated on stdin) into the
/// temporary index.
async fn add(git: &Git, top: &Path, index: &Path, paths: &[&Vec<u8>]) -> Result<(), GitError> {
    git.at(top)
        .args(["add", "-A", "--pathspec-from-file=-", "--pathspec-file-nul"])
        .env("GIT_INDEX_FILE", index.as_os_str())
        .env("GIT_LITERAL_PATHSPECS", "1")
        .stdin(nul_joined(paths))
        .run()
        .await?;
    Ok(())
}

/// Puts `paths` back to HEAD's version in the temporary index, or removes them when HEAD
/// has none, so a secret edit or a staged secret never enters a snapshot.
async fn restore_from_head(
    git: &Git,
    top: &Path,
    index: &Path,
    head: &str,
    paths: &[&Vec<u8>],
) -> Result<(), GitError> {
    let listed = git
        .at(top)
        .args(["ls-tree", "-z", "--full-tree", head, "--"])
        .args(paths.iter().map(|p| OsStr::from_bytes(p)))
        .env("GIT_LITERAL_PATHSPECS", "1")
        .run()
        .await?;
    // `<mode> <type> <id>\t<path>` records, which `update-index --index-info` accepts as is.
    let mut info = Vec::new();
    let mut in_head = Vec::new();
    for rec in listed.split(|&b| b == 0).filter(|r| !r.is_empty()) {
        if let Some(tab) = rec.iter().position(|&b| b == b'\t') {
            in_head.push(rec[tab + 1..].to_vec());
        }
        info.extend_from_slice(rec);
        info.push(0);
    }
    let zero = "0".repeat(head.len());
    for p in paths.iter().filter(|p| !in_head.contains(p)) {
        info.extend_from_slice(format!("0 {zero}\t").as_bytes());
        info.extend_from_slice(p);
        info.push(0);
    }
    git.at(top)
        .args(["update-index", "-z", "--index-info"])
        .env("GIT_INDEX_FILE", index.as_os_str())
        .stdin(info)
        .run()
        .await?;
    Ok(())
}

async fn commit(
    git: &Git,
    top: &Path,
    tree: &str,
    parents: &[&str],
    message: &str,
) -> Result<String, GitError> {
    let mut cmd = git.at(top).args(["commit-tree", "--no-gpg-sign", tree]);
    for p in parents {
        cmd = cmd.args(["-p", p]);
    }
    for (k, v) in IDENTITY {
        cmd = cmd.env(k, v);
    }
    cmd.args(["-m", message]).text().await
}

/// The command, run on the temporary index.
fn on_copy<'a>(cmd: Cmd<'a>, index: &Path) -> Cmd<'a> {
    cmd.env("GIT_INDEX_FILE", index.as_os_str())
}

fn nul_joined(paths: &[&Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in paths {
        out.extend_from_slice(p);
        out.push(0);
    }
    out
}
