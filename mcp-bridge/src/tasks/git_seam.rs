//! Task handoff's use of the git library ([`crate::git`], `docs/HANDOFF.md`): what
//! `relay_handoff` asks of git on the sender's machine, and what `claude-relay tasks
//! checkout` asks of it on the receiver's.
//!
//! The task side treats the git context as an opaque JSON object — stored by the hub and
//! shown as the bridge recorded it — plus an optional bundle of bytes uploaded beside it.
//! Reading a work tree, snapshotting uncommitted work without touching it, bundling what the
//! remote lacks and recreating it elsewhere all belong to the git library; this module only
//! adapts its calls and turns its errors into sentences.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::git::{self, CaptureOptions, CheckoutTarget, Git, GitContext};

/// What the git library recorded for a handoff.
#[derive(Debug, Clone)]
pub struct Captured {
    /// The git context (remote, branch, HEAD, upstream, dirty state, file names…).
    pub context: Value,
    /// A `git bundle` of what the remote lacks, when there is such work and it fits.
    pub bundle: Option<Vec<u8>>,
    /// Why there is no bundle although there is work the remote lacks (over the cap, say).
    pub bundle_omitted: Option<String>,
}

/// Records the git state of the work tree at `cwd` for task `task_id` (an id the hub
/// reserved, so the snapshot is kept under `refs/relay/tasks/<task_id>` before the task
/// exists). `Ok(None)`: `cwd` is not in a git work tree (nothing to record). A bundle larger
/// than `max_bundle` bytes is left out (and said so in `bundle_omitted`).
pub async fn capture(
    cwd: &Path,
    task_id: &str,
    max_bundle: u64,
) -> Result<Option<Captured>, String> {
    let opts = CaptureOptions {
        bundle_cap: usize::try_from(max_bundle).unwrap_or(usize::MAX),
        ..CaptureOptions::default()
    };
    let Some(c) = git::capture(cwd, task_id, &opts)
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(None);
    };
    Ok(Some(Captured {
        bundle_omitted: c.context.bundle_omitted.clone(),
        context: serde_json::to_value(&c.context).map_err(|e| e.to_string())?,
        bundle: c.bundle,
    }))
}

/// Lets go of `refs/relay/tasks/<task_id>` when the task was not created after all.
pub async fn forget(cwd: &Path, task_id: &str) {
    if let Err(e) = git::forget(cwd, task_id, &Git::new()).await {
        tracing::warn!("could not delete refs/relay/tasks/{task_id}: {e}");
    }
}

/// Recreates the sender's working state for task `task_id` on this machine — a new work
/// tree of a local clone of the same remote (found from the current directory), or a fresh
/// clone — from `context` and the downloaded bundle. Returns the work tree's path and a
/// one-line summary for a person.
pub async fn checkout(
    task_id: &str,
    context: &Value,
    bundle: Option<Vec<u8>>,
    dir: Option<&Path>,
) -> Result<(PathBuf, String), String> {
    let context: GitContext = serde_json::from_value(context.clone())
        .map_err(|e| format!("the task's git context is not one this version can read ({e})"))?;
    let target = CheckoutTarget {
        here: std::env::current_dir().map_err(|e| format!("no current directory: {e}"))?,
        dir: dir.map(Path::to_path_buf),
        git: Git::new(),
    };
    let done = git::checkout(&context, bundle.as_deref(), task_id, &target)
        .await
        .map_err(|e| e.to_string())?;
    Ok((done.path.clone(), done.summary()))
}
