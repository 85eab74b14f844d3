//! The seam between task handoff and the git library: what `relay_handoff` asks of git on
//! the sender's machine, and what `claude-relay tasks checkout` asks of it on the receiver's
//! (see `docs/HANDOFF.md`).
//!
//! The task side treats the git context as an opaque JSON object (stored and shown as the
//! bridge recorded it) plus an optional bundle of bytes. Everything about reading a work
//! tree, snapshotting uncommitted work without touching it, bundling what the remote lacks
//! and recreating it elsewhere belongs to the git library; this module only adapts its calls.

use std::path::{Path, PathBuf};

use serde_json::Value;

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
/// reserved, so the snapshot can be kept under `refs/relay/tasks/<task_id>` before the task
/// exists). `Ok(None)`: `cwd` is not in a git work tree (nothing to record). A bundle larger
/// than `max_bundle` bytes is left out (and said so in `bundle_omitted`).
pub async fn capture(
    cwd: &Path,
    task_id: &str,
    max_bundle: u64,
) -> Result<Option<Captured>, String> {
    let _ = (cwd, task_id, max_bundle);
    Err("this build has no git support yet".into())
}

/// Lets go of `refs/relay/tasks/<task_id>` when the task was not created after all.
pub async fn forget(cwd: &Path, task_id: &str) {
    let _ = (cwd, task_id);
}

/// Recreates the sender's working state for task `task_id` on this machine (a worktree of
/// the local clone, or a fresh clone) from `context` and the downloaded bundle; returns the
/// work tree's path.
pub async fn checkout(
    task_id: &str,
    context: &Value,
    bundle: Option<Vec<u8>>,
    dir: Option<&Path>,
) -> Result<PathBuf, String> {
    let _ = (task_id, context, bundle, dir);
    Err("this build has no git support yet: the bundle was downloaded but not applied".into())
}
