//! The receiver's side: [`checkout`] recreates the sender's working state on this machine
//! (docs/HANDOFF.md, "How checkout rebuilds it").
//!
//! 1. Everything received is checked first: the task id, the commit ids, the remote URL,
//!    and the bundle's header (it must carry `refs/relay/tasks/<id>` at the recorded tip).
//! 2. Where: when [`CheckoutTarget::here`] is in a clone of the same remote
//!    ([`super::url`]'s comparison), a new work tree of that clone (`git worktree add`);
//!    otherwise a fresh clone of the remote URL (`git clone --no-checkout`, under git's policy
//!    for URLs the user did not type: `GIT_PROTOCOL_FROM_USER=0`), or, when the sender had no
//!    remote, a new repository filled from the bundle alone.
//! 3. The commits: the bundle's prerequisites (or, without a bundle, HEAD and the snapshot)
//!    must be here; missing ones are fetched from the remote once; still missing is a clear
//!    error before any work tree exists. The bundle is fetched into `refs/relay/tasks/<id>`
//!    with `transfer.fsckObjects`, since it is another machine's data.
//! 4. Branch `relay/<id>` at the sender's HEAD; then the snapshot `W` is laid over it with
//!    `read-tree -m -u HEAD W` (git's own checkout logic: modes, symlinks, binary files,
//!    deletions, and no path outside the work tree), and the index is set to the staged
//!    state `I` (`W`'s second parent) with `read-tree -m I`. So files modified, staged,
//!    deleted and untracked on the sender's side are exactly that here.
//!
//! A failure after the new work tree or clone was created removes it again (and the branch),
//! so a retry starts clean.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use super::{
    bundle::{self, Header},
    context::{self, GitContext},
    error::GitError,
    refs::{check_task_id, task_branch, task_ref},
    run::{Git, absolute},
    url,
};

/// Where [`checkout`] puts the sender's work.
#[derive(Debug, Clone)]
pub struct CheckoutTarget {
    /// Where the receiver is (the CLI passes its current directory). When this is inside a
    /// clone of the task's remote, the checkout becomes a new work tree of that clone;
    /// otherwise a fresh clone is made, by default in this directory.
    pub here: PathBuf,
    /// The directory to create (relative paths are taken from `here`). It must not exist or
    /// be empty. Default: `<clone top>-relay-<id>` next to the existing clone, or
    /// `here/<repository name>-relay-<id>` for a fresh clone.
    pub dir: Option<PathBuf>,
    /// How git is run.
    pub git: Git,
}

/// How the work tree came to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A new work tree (`git worktree add`) of the clone at `repo`.
    Worktree {
        /// The existing clone's top directory.
        repo: PathBuf,
    },
    /// A fresh clone of `url`.
    Clone {
        /// The remote URL cloned.
        url: String,
    },
    /// A new repository holding only what the bundle carried (the sender had no remote).
    BundleOnly,
}

/// The result of a checkout: where the work is and what state it is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedOut {
    /// The new work tree.
    pub path: PathBuf,
    /// The branch checked out there, `relay/<id>`.
    pub branch: String,
    /// The sender's HEAD, which the branch points at.
    pub head: String,
    /// The snapshot laid over it, when the sender had uncommitted work.
    pub snapshot: Option<String>,
    /// How the work tree came to be.
    pub source: Source,
    /// Files with staged changes, as `git status` sees the new work tree.
    pub staged: usize,
    /// Files with unstaged changes.
    pub unstaged: usize,
    /// Untracked files.
    pub untracked: usize,
}

impl CheckedOut {
    /// One line for a person: where, which branch, what is uncommitted.
    pub fn summary(&self) -> String {
        let how = match &self.source {
            Source::Worktree { repo } => format!("a new work tree of {}", repo.display()),
            Source::Clone { url } => format!("a fresh clone of {url}"),
            Source::BundleOnly => "a new repository from the task's bundle".into(),
        };
        let state = if self.snapshot.is_some() {
            format!(
                "uncommitted work restored: {} staged, {} unstaged, {} untracked",
                self.staged, self.unstaged, self.untracked
            )
        } else {
            "no uncommitted work".into()
        };
        format!(
            "{} on branch {} at {} ({how}); {state}",
            self.path.display(),
            self.branch,
            &self.head[..self.head.len().min(12)],
        )
    }
}

/// Recreates the sender's working state described by `context` (with the task's bundle, when
/// one came) for task `task_id`; see the module header for the steps.
pub async fn checkout(
    context: &GitContext,
    bundle: Option<&[u8]>,
    task_id: &str,
    target: &CheckoutTarget,
) -> Result<CheckedOut, GitError> {
    check_task_id(task_id)?;
    let plan = Plan::new(context, bundle, task_id)?;
    let git = &target.git;
    // Absolute: later commands run in other directories (the clone, the new work tree).
    let here = target
        .here
        .canonicalize()
        .ok()
        .filter(|p| p.is_dir())
        .ok_or_else(|| GitError::NoSuchDir {
            path: target.here.clone(),
        })?;
    let dir = target.dir.as_deref().map(|d| absolute(&here, d));
    let clone = match &context.remote {
        Some(remote) => find_clone(git, &here, remote).await?,
        None => None,
    };
    match clone {
        Some((repo, remote)) => into_worktree(git, &plan, dir, &repo, &remote).await,
        None => into_new_repository(git, &plan, context, &here, dir).await,
    }
}

/// What was received, checked.
struct Plan<'a> {
    task_id: &'a str,
    head: &'a str,
    snapshot: Option<&'a str>,
    task_ref: String,
    branch: String,
    bundle: Option<BundleFile>,
    /// Sender-side facts for error messages.
    sender_branch: Option<&'a str>,
    bundle_omitted: Option<&'a str>,
}

impl<'a> Plan<'a> {
    fn new(ctx: &'a GitContext, bundle: Option<&[u8]>, task_id: &'a str) -> Result<Self, GitError> {
        let oid = |id: &'a str, what: &str| {
            bundle::check_oid(id)
                .map_err(|_| GitError::BadContext(format!("{what} is not a full commit id")))
        };
        let head = oid(&ctx.head, "head")?;
        let snapshot = ctx
            .snapshot
            .as_deref()
            .map(|s| oid(s, "snapshot"))
            .transpose()?;
        if let Some(remote) = &ctx.remote
            && (remote.is_empty()
                || remote.starts_with('-')
                || remote.chars().any(char::is_control))
        {
            return Err(GitError::BadContext(
                "the remote URL is empty, starts with '-' or holds control characters".into(),
            ));
        }
        let task_ref = task_ref(task_id);
        let tip = snapshot.unwrap_or(head);
        let bundle = bundle
            .map(|bytes| BundleFile::new(bytes, &task_ref, tip))
            .transpose()?;
        if ctx.remote.is_none() {
            match &bundle {
                None => {
                    return Err(GitError::MissingCommits(format!(
                        "the sender's repository has no remote and no bundle came with the task{}",
                        reason_suffix(ctx.bundle_omitted.as_deref())
                    )));
                }
                Some(b) if !b.header.prerequisites.is_empty() => {
                    return Err(GitError::MissingCommits(
                        "the sender's repository has no remote, and its bundle builds on \
                         commits that only the sender has"
                            .into(),
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(Self {
            task_id,
            head,
            snapshot,
            branch: task_branch(task_id),
            task_ref,
            bundle,
            sender_branch: ctx.branch.as_deref(),
            bundle_omitted: ctx.bundle_omitted.as_deref(),
        })
    }
}

/// The received bundle, checked and written to a temporary file for `git fetch`.
struct BundleFile {
    header: Header,
    file: tempfile::NamedTempFile,
}

impl BundleFile {
    fn new(bytes: &[u8], task_ref: &str, tip: &str) -> Result<Self, GitError> {
        let header = bundle::parse_header(bytes)?;
        match header.refs.iter().find(|(_, name)| name == task_ref) {
            Some((id, _)) if id == tip => {}
            Some((id, _)) => {
                return Err(GitError::BadBundle(format!(
                    "its {task_ref} is {id}, but the task says {tip}"
                )));
            }
            None => {
                return Err(GitError::BadBundle(format!("it does not carry {task_ref}")));
            }
        }
        let mut file = tempfile::Builder::new()
            .prefix("relay-task-")
            .suffix(".bundle")
            .tempfile()
            .map_err(|e| GitError::io("cannot create a temporary bundle file", e))?;
        file.write_all(bytes)
            .and_then(|()| file.flush())
            .map_err(|e| GitError::io("cannot write the temporary bundle file", e))?;
        Ok(Self { header, file })
    }
}

/// The top of the clone at `here` with a remote naming the same repository as `remote`, and
/// that remote's name.
async fn find_clone(
    git: &Git,
    here: &Path,
    remote: &str,
) -> Result<Option<(PathBuf, String)>, GitError> {
    if !context::in_work_tree(git, here).await? {
        return Ok(None);
    }
    let top = PathBuf::from(
        git.at(here)
            .args(["rev-parse", "--show-toplevel"])
            .text()
            .await?,
    );
    let remotes = context::read_remotes(git, &top).await?;
    Ok(remotes
        .urls
        .into_iter()
        .find(|(_, u)| url::same_repo(u, remote))
        .map(|(name, _)| (top, name)))
}

async fn into_worktree(
    git: &Git,
    plan: &Plan<'_>,
    dir: Option<PathBuf>,
    repo: &Path,
    remote: &str,
) -> Result<CheckedOut, GitError> {
    let dir = match dir {
        Some(d) => d,
        None => {
            let name = repo.file_name().map(|n| n.to_string_lossy().into_owned());
            let parent = repo.parent().unwrap_or(repo);
            parent.join(format!(
                "{}-relay-{}",
                name.as_deref().unwrap_or("repo"),
                plan.task_id
            ))
        }
    };
    ensure_empty(&dir)?;
    let branch_ref = format!("refs/heads/{}", plan.branch);
    let exists = git
        .at(repo)
        .args(["rev-parse", "--verify", "--quiet", &branch_ref])
        .output()
        .await?;
    if exists.status.success() {
        return Err(GitError::BranchExists {
            branch: plan.branch.clone(),
            repo: repo.to_path_buf(),
        });
    }
    bring_commits(git, repo, Some(remote), false, plan).await?;
    git.at(repo)
        .args(["worktree", "add", "--quiet", "-b", &plan.branch])
        .arg(&dir)
        .arg(plan.head)
        .run()
        .await?;
    match rebuild(git, &dir, plan).await {
        Ok(counts) => Ok(done(
            dir,
            plan,
            Source::Worktree { repo: repo.into() },
            counts,
        )),
        Err(e) => {
            let _ = git
                .at(repo)
                .args(["worktree", "remove", "--force"])
                .arg(&dir)
                .run()
                .await;
            let _ = git
                .at(repo)
                .args(["branch", "-D", &plan.branch])
                .run()
                .await;
            Err(e)
        }
    }
}

async fn into_new_repository(
    git: &Git,
    plan: &Plan<'_>,
    ctx: &GitContext,
    here: &Path,
    dir: Option<PathBuf>,
) -> Result<CheckedOut, GitError> {
    let name = ctx
        .remote
        .as_deref()
        .map_or_else(|| "repo".to_string(), url::repo_name);
    let dir = dir.unwrap_or_else(|| here.join(format!("{name}-relay-{}", plan.task_id)));
    let existed = ensure_empty(&dir)?;
    let mut made = Made {
        dir: &dir,
        existed,
        keep: false,
    };
    let source = match &ctx.remote {
        Some(remote) => {
            // The URL is another machine's word: git's policy for URLs not typed by the user
            // (`GIT_PROTOCOL_FROM_USER=0`: http(s), ssh and git, no `ext::` and no remote
            // helper the user has not allowed), plus local paths.
            git.at(here)
                .args(["-c", "protocol.file.allow=always"])
                .args(["clone", "--no-checkout", "--quiet", "--", remote])
                .env("GIT_PROTOCOL_FROM_USER", "0")
                .arg(&dir)
                .network()
                .run()
                .await?;
            Source::Clone {
                url: remote.clone(),
            }
        }
        None => {
            git.at(here)
                .args(["init", "--quiet"])
                .arg(&dir)
                .run()
                .await?;
            Source::BundleOnly
        }
    };
    let remote = git.at(&dir).arg("remote").text().await?;
    let remote = remote.lines().next().filter(|r| !r.is_empty());
    bring_commits(git, &dir, remote, true, plan).await?;
    git.at(&dir)
        .args(["checkout", "--quiet", "-b", &plan.branch, plan.head])
        .run()
        .await?;
    let counts = rebuild(git, &dir, plan).await?;
    made.keep = true;
    Ok(done(dir.clone(), plan, source, counts))
}

/// Removes a directory this checkout created (or empties one that was empty) unless kept.
struct Made<'a> {
    dir: &'a Path,
    existed: bool,
    keep: bool,
}

impl Drop for Made<'_> {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        // Everything in it is ours: it did not exist or was empty when we started.
        let _ = std::fs::remove_dir_all(self.dir);
        if self.existed {
            let _ = std::fs::create_dir(self.dir);
        }
    }
}

/// Whether `dir` exists (as an empty directory); an error when it exists otherwise.
fn ensure_empty(dir: &Path) -> Result<bool, GitError> {
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(GitError::io(format!("cannot inspect {}", dir.display()), e)),
        Ok(meta) if meta.is_dir() => {
            let mut entries = std::fs::read_dir(dir)
                .map_err(|e| GitError::io(format!("cannot list {}", dir.display()), e))?;
            if entries.next().is_none() {
                Ok(true)
            } else {
                Err(GitError::TargetNotEmpty { path: dir.into() })
            }
        }
        Ok(_) => Err(GitError::TargetNotEmpty { path: dir.into() }),
    }
}

/// Makes sure `repo` has the sender's commits: the bundle's prerequisites (then the bundle)
/// or, without a bundle, HEAD and the snapshot — fetching `remote` once when some are
/// missing (`fetched`: it was just cloned, a fetch would bring nothing new).
async fn bring_commits(
    git: &Git,
    repo: &Path,
    remote: Option<&str>,
    fetched: bool,
    plan: &Plan<'_>,
) -> Result<(), GitError> {
    let needed: Vec<&str> = match &plan.bundle {
        Some(b) => b.header.prerequisites.iter().map(String::as_str).collect(),
        None => std::iter::once(plan.head).chain(plan.snapshot).collect(),
    };
    let mut missing = missing_commits(git, repo, &needed).await?;
    if !missing.is_empty()
        && !fetched
        && let Some(remote) = remote
    {
        git.at(repo)
            .args(["fetch", "--quiet", "--no-tags", "--", remote])
            .network()
            .run()
            .await?;
        missing = missing_commits(git, repo, &needed).await?;
    }
    if !missing.is_empty() {
        return Err(GitError::MissingCommits(explain_missing(
            plan, remote, &missing,
        )));
    }
    if let Some(b) = &plan.bundle {
        let refspec = format!("+{0}:{0}", plan.task_ref);
        git.at(repo)
            .args([
                "-c",
                "transfer.fsckObjects=true",
                "fetch",
                "--quiet",
                "--no-tags",
            ])
            .arg(b.file.path())
            .arg(&refspec)
            .run()
            .await?;
    } else if let Some(snapshot) = plan.snapshot {
        // It was here already (this machine shares the sender's repository): keep it alive.
        git.at(repo)
            .args(["update-ref", &plan.task_ref, snapshot])
            .run()
            .await?;
    }
    if let Some(snapshot) = plan.snapshot {
        let parents = git
            .at(repo)
            .args(["rev-list", "--parents", "-n", "1", snapshot])
            .text()
            .await?;
        if parents.split(' ').nth(1) != Some(plan.head) {
            return Err(GitError::BadBundle(format!(
                "the snapshot {snapshot} does not sit on the recorded HEAD {}",
                plan.head
            )));
        }
    }
    Ok(())
}

/// The ids among `ids` that are not commits in `repo`.
async fn missing_commits(git: &Git, repo: &Path, ids: &[&str]) -> Result<Vec<String>, GitError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let input: String = ids.iter().map(|id| format!("{id}\n")).collect();
    let out = git
        .at(repo)
        .args(["cat-file", "--batch-check=%(objectname) %(objecttype)"])
        .stdin(input.into_bytes())
        .text()
        .await?;
    Ok(out
        .lines()
        .filter(|l| !l.ends_with(" commit"))
        .map(|l| l.split(' ').next().unwrap_or_default().to_string())
        .collect())
}

fn explain_missing(plan: &Plan<'_>, remote: Option<&str>, missing: &[String]) -> String {
    let ids: Vec<&str> = missing
        .iter()
        .take(3)
        .map(|id| &id[..id.len().min(12)])
        .collect();
    let more = if missing.len() > 3 { ", …" } else { "" };
    let ids = format!("{}{more}", ids.join(", "));
    let whence = remote.map_or("here".to_string(), |r| format!("here or on {r}"));
    let push = match plan.sender_branch {
        Some(b) => format!("ask the sender to push {b} and hand off again"),
        None => "ask the sender to push its commits and hand off again".into(),
    };
    if plan.bundle.is_some() {
        return format!(
            "the task's bundle builds on commit(s) {ids}, which are not {whence}; {push}"
        );
    }
    if missing.iter().any(|m| m == plan.head) {
        return format!(
            "the sender's HEAD {ids} is not {whence}{}; {push}",
            reason_suffix(plan.bundle_omitted)
        );
    }
    format!(
        "the sender's uncommitted work (snapshot {ids}) travels only in a bundle, and none came \
         with the task{}",
        reason_suffix(plan.bundle_omitted)
    )
}

fn reason_suffix(omitted: Option<&str>) -> String {
    omitted.map_or_else(String::new, |r| format!(" ({r})"))
}

/// Lays the snapshot over the checked-out HEAD in `dir` and counts the result.
async fn rebuild(git: &Git, dir: &Path, plan: &Plan<'_>) -> Result<Counts, GitError> {
    if let Some(snapshot) = plan.snapshot {
        git.at(dir)
            .args(["read-tree", "-m", "-u", "HEAD", snapshot])
            .run()
            .await?;
        let parents = git
            .at(dir)
            .args(["rev-list", "--parents", "-n", "1", snapshot])
            .text()
            .await?;
        let staged = parents.split(' ').nth(2).unwrap_or("HEAD").to_string();
        git.at(dir).args(["read-tree", "-m", &staged]).run().await?;
        // Fresh stat data, so `git status` does not re-read every file (exit 1 = some
        // files differ from the index, which is the point).
        git.at(dir)
            .args(["update-index", "-q", "--refresh"])
            .output()
            .await?;
    }
    let status = git
        .at(dir)
        .args([
            "status",
            "--porcelain=v2",
            "-z",
            "--untracked-files=all",
            "--no-renames",
        ])
        .run()
        .await?;
    Ok(Counts::of(&status))
}

#[derive(Debug, Default)]
struct Counts {
    staged: usize,
    unstaged: usize,
    untracked: usize,
}

impl Counts {
    fn of(status: &[u8]) -> Self {
        let mut c = Self::default();
        for rec in status.split(|&b| b == 0).filter(|r| !r.is_empty()) {
            match rec {
                [b'1' | b'2' | b'u', b' ', x, y, ..] => {
                    c.staged += usize::from(*x != b'.');
                    c.unstaged += usize::from(*y != b'.');
                }
                [b'?', ..] => c.untracked += 1,
                _ => {}
            }
        }
        c
    }
}

fn done(path: PathBuf, plan: &Plan<'_>, source: Source, counts: Counts) -> CheckedOut {
    CheckedOut {
        path: path.canonicalize().unwrap_or(path),
        branch: plan.branch.clone(),
        head: plan.head.into(),
        snapshot: plan.snapshot.map(Into::into),
        source,
        staged: counts.staged,
        unstaged: counts.unstaged,
        untracked: counts.untracked,
    }
}
