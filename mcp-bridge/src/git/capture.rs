//! The sender's side: [`capture`] reads the state, snapshots uncommitted work, keeps it under
//! `refs/relay/tasks/<id>` and bundles exactly what the remote lacks; [`forget`] lets go of
//! that ref when the task is over.

use std::path::Path;

use super::{
    bundle::{self, Built},
    context::{self, GitContext},
    error::GitError,
    refs::{check_task_id, task_ref},
    run::Git,
    snapshot,
};

/// Default bound on a task's bundle (docs/HANDOFF.md, "The cap").
pub const DEFAULT_BUNDLE_CAP: usize = 16 << 20;
/// Default bound on each list of file names in a [`GitContext`].
pub const DEFAULT_LIST_CAP: usize = 200;

/// How [`capture`] runs.
#[derive(Debug, Clone)]
pub struct CaptureOptions {
    /// Largest bundle attached; a bigger one is omitted (`bundleOmitted` says why) and the
    /// task carries only the commit ids.
    pub bundle_cap: usize,
    /// Most names listed in each of `changed`, `untracked` and `omitted` (counts stay exact).
    pub list_cap: usize,
    /// How git is run.
    pub git: Git,
}

impl Default for CaptureOptions {
    fn default() -> Self {
        Self {
            bundle_cap: DEFAULT_BUNDLE_CAP,
            list_cap: DEFAULT_LIST_CAP,
            git: Git::new(),
        }
    }
}

/// What travels with a task: the context, and the bundle bytes when one was made (at most
/// [`CaptureOptions::bundle_cap`]; `context.bundle` describes them).
#[derive(Debug, Clone)]
pub struct Capture {
    /// The recorded state.
    pub context: GitContext,
    /// The `git bundle` file's bytes.
    pub bundle: Option<Vec<u8>>,
}

/// Records the git state of the work tree containing `dir` for task `task_id`; None when
/// `dir` is not in a git work tree (one cheap `git rev-parse` finds that out).
///
/// When the remote lacks work — commits HEAD has that no remote-tracking branch of the
/// remote has (all of history when there is no remote), or uncommitted changes that may
/// travel — it builds the snapshot (see `snapshot.rs` and docs/HANDOFF.md), points `refs/relay/tasks/<id>`
/// at it (or at HEAD when only commits are missing) and bundles that ref minus the remote's
/// branches. The user's index, work tree, HEAD, branches and stash are never changed.
pub async fn capture(
    dir: &Path,
    task_id: &str,
    opts: &CaptureOptions,
) -> Result<Option<Capture>, GitError> {
    check_task_id(task_id)?;
    let git = &opts.git;
    let Some(state) = context::read_state(git, dir).await? else {
        return Ok(None);
    };
    let head = state.head.clone().ok_or_else(|| GitError::NoCommits {
        path: state.top.clone(),
    })?;
    let mut ctx = context::describe(&state, &head, opts.list_cap);
    let built = snapshot::build(git, &state, &head, task_id).await?;
    (ctx.omitted, ctx.omitted_count) = context::names(&built.omitted, opts.list_cap);
    ctx.snapshot = built.commit.clone();

    // What the remote is known to have: its remote-tracking branches.
    let known = state
        .remote
        .as_ref()
        .filter(|_| state.remote_tracked)
        .map(|(name, _)| name.as_str());
    let tip = built.commit.as_deref().unwrap_or(&head);
    let lacking = built.commit.is_some() || {
        let mut count = git.at(&state.top).args(["rev-list", "--count", &head]);
        if let Some(name) = known {
            count = count.args(["--not".to_string(), format!("--remotes={name}")]);
        }
        count.text().await? != "0"
    };
    if !lacking {
        return Ok(Some(Capture {
            context: ctx,
            bundle: None,
        }));
    }
    let task_ref = task_ref(task_id);
    git.at(&state.top)
        .args(["update-ref", "-m", "claude-relay handoff", &task_ref, tip])
        .run()
        .await?;
    let bundle =
        match bundle::create(git, &state.top, &task_ref, tip, known, opts.bundle_cap).await? {
            Built::Bundle(bytes, info) => {
                ctx.bundle = Some(info);
                Some(bytes)
            }
            Built::Omitted(reason) => {
                ctx.bundle_omitted = Some(reason);
                None
            }
        };
    Ok(Some(Capture {
        context: ctx,
        bundle,
    }))
}

/// Deletes `refs/relay/tasks/<id>` in the repository containing `dir` (on either machine),
/// so git may collect the snapshot once the task is over. True when a ref was deleted.
pub async fn forget(dir: &Path, task_id: &str, git: &Git) -> Result<bool, GitError> {
    check_task_id(task_id)?;
    let task_ref = task_ref(task_id);
    let exists = git
        .at(dir)
        .args(["rev-parse", "--verify", "--quiet", &task_ref])
        .output()
        .await?;
    if !exists.status.success() {
        return Ok(false);
    }
    git.at(dir)
        .args(["update-ref", "-d", &task_ref])
        .run()
        .await?;
    Ok(true)
}
