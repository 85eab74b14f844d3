//! The git half of the task handoff against real `git` in temp dirs: a bare "origin", a
//! sender clone with pushed and unpushed commits and every kind of uncommitted change, and
//! receivers on "other machines" (their own HOME and git config). Nothing of the user's git
//! configuration is read: every command runs with its machine's HOME, `GIT_CONFIG_NOSYSTEM`
//! and `GIT_CONFIG_GLOBAL`.

use std::{
    collections::BTreeMap,
    ffi::OsString,
    fs,
    os::unix::fs::{PermissionsExt, symlink},
    path::{Path, PathBuf},
    process::Command,
};

use mcp_bridge::git::{
    Capture, CaptureOptions, CheckedOut, CheckoutTarget, GitContext, GitError, Source, capture,
    checkout, forget, task_ref,
};
use tempfile::TempDir;

/// One "machine": its own HOME and global git config.
struct Machine {
    env: Vec<(&'static str, OsString)>,
}

impl Machine {
    fn new(root: &Path, name: &str) -> Self {
        let home = root.join(format!("{name}-home"));
        fs::create_dir_all(&home).unwrap();
        let config = home.join(".gitconfig");
        fs::write(
            &config,
            "[init]\n\tdefaultBranch = main\n[advice]\n\tdetachedHead = false\n",
        )
        .unwrap();
        Self {
            env: vec![
                ("HOME", home.clone().into()),
                ("XDG_CONFIG_HOME", home.join(".config").into()),
                ("GIT_CONFIG_NOSYSTEM", "1".into()),
                ("GIT_CONFIG_GLOBAL", config.into()),
            ],
        }
    }

    /// The library's runner, on this machine.
    fn runner(&self) -> mcp_bridge::git::Git {
        let mut git = mcp_bridge::git::Git::new();
        for (k, v) in &self.env {
            git = git.env(*k, v);
        }
        git
    }

    fn opts(&self) -> CaptureOptions {
        CaptureOptions {
            git: self.runner(),
            ..CaptureOptions::default()
        }
    }

    fn target(&self, here: &Path, dir: Option<PathBuf>) -> CheckoutTarget {
        CheckoutTarget {
            here: here.into(),
            dir,
            git: self.runner(),
        }
    }

    /// Runs git in `dir` (as the user would), requires success, returns stdout.
    fn git_bytes(&self, dir: &Path, args: &[&str]) -> Vec<u8> {
        let mut cmd = Command::new("git");
        cmd.current_dir(dir).args(args).env("LC_ALL", "C");
        for key in ["GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"] {
            cmd.env_remove(key);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "git {args:?} in {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    fn git(&self, dir: &Path, args: &[&str]) -> String {
        String::from_utf8(self.git_bytes(dir, args))
            .unwrap()
            .trim_end()
            .to_string()
    }

    /// `git clone origin dir` with an identity.
    fn clone_of(&self, origin: &Path, dir: &Path) {
        self.git(
            dir.parent().unwrap(),
            &[
                "clone",
                "-q",
                origin.to_str().unwrap(),
                dir.to_str().unwrap(),
            ],
        );
        self.identity(dir);
    }

    fn identity(&self, dir: &Path) {
        self.git(dir, &["config", "user.name", "Sender"]);
        self.git(dir, &["config", "user.email", "sender@example.invalid"]);
    }
}

fn write(path: &Path, bytes: impl AsRef<[u8]>) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
}

/// 4 KiB that do not compress (so a tiny cap is surely exceeded) and hold NULs.
fn binary_bytes(seed: u32) -> Vec<u8> {
    let mut x = seed;
    (0..4096)
        .map(|_| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (x >> 24) as u8
        })
        .collect()
}

/// Two machines and a fresh repository `name` (no remote) on machine A.
struct Solo {
    root: TempDir,
    a: Machine,
    b: Machine,
    repo: PathBuf,
}

impl Solo {
    fn new(name: &str) -> Self {
        let root = tempfile::tempdir().unwrap();
        let (a, b) = (
            Machine::new(root.path(), "a"),
            Machine::new(root.path(), "b"),
        );
        let repo = root.path().join(name);
        fs::create_dir(&repo).unwrap();
        a.git(&repo, &["init", "-q"]);
        a.identity(&repo);
        Self { root, a, b, repo }
    }

    /// Writes the files and commits everything.
    fn commit(&self, files: &[(&str, &str)], message: &str) {
        for (name, text) in files {
            write(&self.repo.join(name), text);
        }
        self.a.git(&self.repo, &["add", "-A"]);
        self.a.git(&self.repo, &["commit", "-q", "-m", message]);
    }

    /// An empty directory on machine B to check out from.
    fn receiving_dir(&self) -> PathBuf {
        let here = self.root.path().join("b-work");
        fs::create_dir(&here).unwrap();
        here
    }

    /// Checks the captured task out on machine B, in a fresh `receiving_dir`.
    async fn hand_over(&self, cap: &Capture, task_id: &str) -> CheckedOut {
        let target = self.b.target(&self.receiving_dir(), None);
        checkout(&cap.context, cap.bundle.as_deref(), task_id, &target)
            .await
            .unwrap()
    }
}

/// The scene of docs/HANDOFF.md: origin, and a sender clone with one pushed commit, one
/// unpushed commit and every kind of uncommitted change.
struct Scene {
    root: TempDir,
    a: Machine,
    b: Machine,
    origin: PathBuf,
    sender: PathBuf,
    pushed: String,
    unpushed: String,
}

impl Scene {
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        let (a, b) = (
            Machine::new(root.path(), "a"),
            Machine::new(root.path(), "b"),
        );
        let origin = root.path().join("origin.git");
        a.git(root.path(), &["init", "-q", "--bare", "origin.git"]);
        let sender = root.path().join("sender");
        a.clone_of(&origin, &sender);
        let s = |p: &str| sender.join(p);
        write(&s(".gitignore"), "*.log\nbuild/\n");
        write(&s("README.md"), "# demo\n");
        write(&s("src/lib.rs"), "pub fn one() -> u32 { 1 }\n");
        write(&s("staged.txt"), "staged v1\n");
        write(&s("both.txt"), "both v1\n");
        write(&s("deleted.txt"), "to be deleted\n");
        write(&s("config/.env.example"), "TOKEN=placeholder\n");
        write(&s("assets/logo.bin"), binary_bytes(1));
        a.git(&sender, &["add", "-A"]);
        a.git(&sender, &["commit", "-q", "-m", "pushed commit"]);
        a.git(&sender, &["push", "-q", "origin", "main"]);
        let pushed = a.git(&sender, &["rev-parse", "HEAD"]);
        write(&s("src/feature.rs"), "pub fn feature() {}\n");
        a.git(&sender, &["add", "src/feature.rs"]);
        a.git(&sender, &["commit", "-q", "-m", "unpushed commit"]);
        let unpushed = a.git(&sender, &["rev-parse", "HEAD"]);

        // Uncommitted: unstaged edit, staged edit, staged-then-edited, staged new file,
        // unstaged deletion, modified tracked secret-looking file, modified binary.
        write(
            &s("src/lib.rs"),
            "pub fn one() -> u32 { 1 }\npub fn two() -> u32 { 2 }\n",
        );
        write(&s("staged.txt"), "staged v2\n");
        a.git(&sender, &["add", "staged.txt"]);
        write(&s("both.txt"), "both v2\n");
        a.git(&sender, &["add", "both.txt"]);
        write(&s("both.txt"), "both v3\n");
        write(&s("added.txt"), "new and staged\n");
        a.git(&sender, &["add", "added.txt"]);
        fs::remove_file(s("deleted.txt")).unwrap();
        write(&s("config/.env.example"), "TOKEN=real-secret-value\n");
        let mut logo = binary_bytes(1);
        logo[100..200].copy_from_slice(&binary_bytes(2)[..100]);
        write(&s("assets/logo.bin"), logo);
        // Untracked: plain, binary, executable, a symlink out of the tree; secrets; ignored.
        write(&s("notes/todo.md"), "- finish the frontend\n");
        write(&s("assets/new.bin"), binary_bytes(3));
        write(&s("run.sh"), "#!/bin/sh\necho hi\n");
        fs::set_permissions(s("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        write(&root.path().join("outside.txt"), "outside the tree\n");
        symlink(root.path().join("outside.txt"), s("link-out")).unwrap();
        write(&s(".env"), "SECRET=hunter2\n");
        write(&s("id_rsa"), "-----BEGIN OPENSSH PRIVATE KEY-----\n");
        write(&s("debug.log"), "ignored\n");
        write(&s("build/out.bin"), binary_bytes(4));
        Self {
            root,
            a,
            b,
            origin,
            sender,
            pushed,
            unpushed,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    /// A clone of origin on machine B.
    fn receiver_clone(&self) -> PathBuf {
        let dir = self.path("receiver");
        self.b.clone_of(&self.origin, &dir);
        dir
    }
}

/// What the sender must never send, relative to the work tree.
const NEVER: &[&str] = &[".env", "id_rsa", "debug.log", "build/out.bin"];

#[derive(Debug, PartialEq, Eq)]
enum Entry {
    File { bytes: Vec<u8>, executable: bool },
    Link(PathBuf),
}

/// Every file and symlink under `dir` (not `.git`), by relative path.
fn tree(dir: &Path) -> BTreeMap<String, Entry> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, Entry>) {
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let rel = path
                .strip_prefix(base)
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            if rel == ".git" {
                continue;
            }
            let meta = fs::symlink_metadata(&path).unwrap();
            if meta.file_type().is_symlink() {
                out.insert(rel, Entry::Link(fs::read_link(&path).unwrap()));
            } else if meta.is_dir() {
                walk(base, &path, out);
            } else {
                out.insert(
                    rel,
                    Entry::File {
                        bytes: fs::read(&path).unwrap(),
                        executable: meta.permissions().mode() & 0o111 != 0,
                    },
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Where two entries differ, short enough for a failure message.
fn describe_diff(got: &Entry, want: &Entry) -> String {
    match (got, want) {
        (
            Entry::File {
                bytes: g,
                executable: ge,
            },
            Entry::File {
                bytes: w,
                executable: we,
            },
        ) => {
            let first = g.iter().zip(w).position(|(a, b)| a != b);
            format!(
                "got {} bytes (exec {ge}), want {} (exec {we}), first difference at {first:?}",
                g.len(),
                w.len()
            )
        }
        _ => format!("got {got:?}, want {want:?}"),
    }
}

/// `git status --porcelain -uall` lines, minus those naming `skip`.
fn status_lines(m: &Machine, dir: &Path, skip: &[&str]) -> Vec<String> {
    m.git(dir, &["status", "--porcelain", "-uall"])
        .lines()
        .filter(|l| !skip.iter().any(|s| &l[3..] == *s))
        .map(String::from)
        .collect()
}

/// Everything about the sender's repository a capture must leave alone.
fn untouchables(m: &Machine, dir: &Path) -> Vec<Vec<u8>> {
    let mut all: Vec<Vec<u8>> = [
        &["status", "--porcelain=v1", "-z", "-uall"][..],
        &["diff", "--cached", "--binary"],
        &["diff", "--binary"],
        &["rev-parse", "HEAD"],
        &["symbolic-ref", "-q", "HEAD"],
        &[
            "for-each-ref",
            "refs/heads",
            "refs/remotes",
            "refs/tags",
            "refs/stash",
        ],
        &["stash", "list"],
        &["ls-files", "-s"],
    ]
    .iter()
    .map(|args| m.git_bytes(dir, args))
    .collect();
    all.push(fs::read(dir.join(".git/index")).unwrap());
    all.push(fs::read(dir.join(".git/HEAD")).unwrap());
    all
}

/// The sender's work tree must reappear in `dir` exactly, minus what never travels, with the
/// tracked secret-looking file at HEAD's version; and `git status` must read the same.
fn assert_rebuilt(scene: &Scene, receiver: &Machine, dir: &Path) {
    let mut want = tree(&scene.sender);
    for never in NEVER {
        assert!(want.remove(*never).is_some(), "the scene has {never}");
    }
    want.insert(
        "config/.env.example".into(),
        Entry::File {
            bytes: b"TOKEN=placeholder\n".to_vec(),
            executable: false,
        },
    );
    let got = tree(dir);
    let names = |t: &BTreeMap<String, Entry>| t.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&got), names(&want), "file lists");
    for (name, entry) in &want {
        assert!(
            &got[name] == entry,
            "{name} differs: {}",
            describe_diff(&got[name], entry)
        );
    }
    for never in NEVER {
        assert!(!dir.join(never).exists(), "{never} must not travel");
    }
    let skip = [".env", "id_rsa", "config/.env.example"];
    assert_eq!(
        status_lines(receiver, dir, &[]),
        status_lines(&scene.a, &scene.sender, &skip),
        "the same staged, unstaged and untracked state"
    );
    assert_eq!(
        receiver.git(dir, &["diff", "--cached", "--binary"]),
        scene
            .a
            .git(&scene.sender, &["diff", "--cached", "--binary"]),
        "the same staged changes"
    );
    assert_eq!(receiver.git(dir, &["rev-parse", "HEAD"]), scene.unpushed);
    let log = receiver.git(dir, &["log", "--format=%H"]);
    assert_eq!(
        log.lines().collect::<Vec<_>>(),
        [&scene.unpushed, &scene.pushed]
    );
}

#[tokio::test]
async fn capture_records_the_state_and_touches_nothing() {
    let scene = Scene::new();
    let a = &scene.a;
    let before = untouchables(a, &scene.sender);
    let cap = capture(&scene.sender.join("src"), "T1", &a.opts())
        .await
        .unwrap()
        .expect("a work tree");
    assert_eq!(
        before,
        untouchables(a, &scene.sender),
        "capture changed the sender's repo"
    );

    let ctx = &cap.context;
    assert_eq!(ctx.remote.as_deref(), Some(scene.origin.to_str().unwrap()));
    assert_eq!(ctx.branch.as_deref(), Some("main"));
    assert_eq!(ctx.head, scene.unpushed);
    assert_eq!(ctx.upstream.as_deref(), Some("origin/main"));
    assert_eq!((ctx.ahead, ctx.behind), (Some(1), Some(0)));
    assert!(ctx.dirty);
    let sorted = |v: &[String]| {
        let mut v = v.to_vec();
        v.sort();
        v
    };
    assert_eq!(
        sorted(&ctx.changed),
        [
            "added.txt",
            "assets/logo.bin",
            "both.txt",
            "config/.env.example",
            "deleted.txt",
            "src/lib.rs",
            "staged.txt"
        ]
    );
    assert_eq!(ctx.changed_count, 7);
    assert_eq!(
        sorted(&ctx.untracked),
        [
            ".env",
            "assets/new.bin",
            "id_rsa",
            "link-out",
            "notes/todo.md",
            "run.sh"
        ]
    );
    assert_eq!(ctx.untracked_count, 6);
    assert_eq!(
        sorted(&ctx.omitted),
        [".env", "config/.env.example", "id_rsa"]
    );
    assert_eq!(ctx.omitted_count, 3);

    // The snapshot: a child of HEAD (and of the staged-state commit), kept under the task ref,
    // without the secrets, with HEAD's version of the tracked secret-looking file.
    let snapshot = ctx.snapshot.clone().expect("a snapshot");
    assert_eq!(
        a.git(&scene.sender, &["rev-parse", &task_ref("T1")]),
        snapshot
    );
    let parents = a.git(
        &scene.sender,
        &["rev-list", "--parents", "-n", "1", &snapshot],
    );
    let parents: Vec<&str> = parents.split(' ').collect();
    assert_eq!(parents.len(), 3, "{parents:?}");
    assert_eq!(parents[1], scene.unpushed);
    let files = a.git(&scene.sender, &["ls-tree", "-r", "--name-only", &snapshot]);
    for never in NEVER {
        assert!(
            !files.lines().any(|f| f == *never),
            "{never} in the snapshot"
        );
    }
    assert!(files.lines().any(|f| f == "notes/todo.md"));
    assert_eq!(
        a.git_bytes(
            &scene.sender,
            &["show", &format!("{snapshot}:assets/logo.bin")]
        ),
        fs::read(scene.sender.join("assets/logo.bin")).unwrap(),
        "the binary edit, byte for byte"
    );
    assert!(!files.lines().any(|f| f == "deleted.txt"));
    assert_eq!(
        a.git(
            &scene.sender,
            &["show", &format!("{snapshot}:config/.env.example")]
        ),
        "TOKEN=placeholder"
    );
    // The symlink travels as a link (its target's text), never as the file it points to.
    let link = a.git(&scene.sender, &["ls-tree", &snapshot, "link-out"]);
    assert!(link.starts_with("120000 "), "{link}");

    // The bundle: exactly what origin lacks (the unpushed commit and the two snapshot
    // commits), built on the pushed commit.
    let info = ctx.bundle.as_ref().expect("a bundle");
    let bytes = cap.bundle.as_ref().expect("bundle bytes");
    assert_eq!(info.bytes, bytes.len() as u64);
    assert_eq!(info.ref_name, "refs/relay/tasks/T1");
    assert_eq!(info.tip, snapshot);
    assert_eq!(info.commits, 3);
    assert_eq!(info.prerequisites, std::slice::from_ref(&scene.pushed));
    assert!(ctx.bundle_omitted.is_none());
    let file = scene.path("t1.bundle");
    fs::write(&file, bytes).unwrap();
    let heads = a.git(
        &scene.sender,
        &["bundle", "list-heads", file.to_str().unwrap()],
    );
    assert_eq!(heads, format!("{snapshot} refs/relay/tasks/T1"));

    // The context survives JSON (camelCase) unchanged.
    let json = serde_json::to_value(ctx).unwrap();
    assert_eq!(json["changedCount"], 7);
    assert_eq!(json["bundle"]["ref"], "refs/relay/tasks/T1");
    let back: GitContext = serde_json::from_value(json).unwrap();
    assert_eq!(&back, ctx);

    // Capturing again (another task) still changes nothing, and forget drops the ref.
    capture(&scene.sender, "T2", &a.opts())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(before, untouchables(a, &scene.sender));
    assert!(forget(&scene.sender, "T1", &a.runner()).await.unwrap());
    assert!(!forget(&scene.sender, "T1", &a.runner()).await.unwrap());
    let left = a.git(
        &scene.sender,
        &["for-each-ref", "--format=%(refname)", "refs/relay"],
    );
    assert_eq!(left, "refs/relay/tasks/T2");
}

#[tokio::test]
async fn checkout_in_another_machines_clone_adds_a_worktree_with_the_same_state() {
    let scene = Scene::new();
    let receiver = scene.receiver_clone();
    let cap = capture(&scene.sender, "T1", &scene.a.opts())
        .await
        .unwrap()
        .unwrap();
    // The unpushed commit and the snapshot exist only in the bundle. The receiver is in a
    // subdirectory of its clone.
    let done = checkout(
        &cap.context,
        cap.bundle.as_deref(),
        "T1",
        &scene.b.target(&receiver.join("src"), None),
    )
    .await
    .unwrap();
    assert_eq!(
        done.source,
        Source::Worktree {
            repo: receiver.clone()
        }
    );
    assert_eq!(done.path, scene.path("receiver-relay-T1"));
    assert_eq!(done.branch, "relay/T1");
    assert_eq!(done.head, scene.unpushed);
    assert_eq!(done.snapshot, cap.context.snapshot);
    assert_rebuilt(&scene, &scene.b, &done.path);
    assert_eq!((done.staged, done.unstaged, done.untracked), (3, 4, 4));
    let summary = done.summary();
    assert!(
        summary.contains("relay/T1") && summary.contains("3 staged"),
        "{summary}"
    );
    assert_eq!(
        scene
            .b
            .git(&done.path, &["symbolic-ref", "--short", "HEAD"]),
        "relay/T1"
    );
    // The receiver's own work tree is untouched, and the snapshot is kept alive there too.
    assert_eq!(scene.b.git(&receiver, &["status", "--porcelain"]), "");
    assert_eq!(
        scene.b.git(&receiver, &["rev-parse", &task_ref("T1")]),
        cap.context.snapshot.clone().unwrap()
    );

    // Twice is refused: the branch exists.
    fs::create_dir(scene.path("elsewhere")).unwrap();
    let again = checkout(
        &cap.context,
        cap.bundle.as_deref(),
        "T1",
        &scene.b.target(&receiver, Some("../elsewhere".into())),
    )
    .await
    .unwrap_err();
    assert!(matches!(again, GitError::BranchExists { .. }), "{again}");
    assert!(
        again.to_string().contains("branch relay/T1 already exists"),
        "{again}"
    );
    assert_eq!(fs::read_dir(scene.path("elsewhere")).unwrap().count(), 0);
    // Another task checks out into an existing empty directory, named relative to `here`.
    let cap = capture(&scene.sender, "T2", &scene.a.opts())
        .await
        .unwrap()
        .unwrap();
    let done = checkout(
        &cap.context,
        cap.bundle.as_deref(),
        "T2",
        &scene.b.target(&receiver, Some("../elsewhere".into())),
    )
    .await
    .unwrap();
    assert_eq!(done.path, scene.path("elsewhere"));
    assert_rebuilt(&scene, &scene.b, &done.path);
}

#[tokio::test]
async fn checkout_without_a_copy_clones_the_remote() {
    let scene = Scene::new();
    let cap = capture(&scene.sender, "T1", &scene.a.opts())
        .await
        .unwrap()
        .unwrap();
    let empty_here = scene.path("b-work");
    fs::create_dir(&empty_here).unwrap();
    let done = checkout(
        &cap.context,
        cap.bundle.as_deref(),
        "T1",
        &scene.b.target(&empty_here, None),
    )
    .await
    .unwrap();
    assert_eq!(
        done.source,
        Source::Clone {
            url: scene.origin.to_str().unwrap().into()
        }
    );
    assert_eq!(done.path, empty_here.join("origin-relay-T1"));
    assert_rebuilt(&scene, &scene.b, &done.path);

    // A target that exists and is not empty is refused and left alone.
    let busy = scene.path("busy");
    write(&busy.join("keep.txt"), "mine");
    let err = checkout(
        &cap.context,
        cap.bundle.as_deref(),
        "T1",
        &scene.b.target(&empty_here, Some(busy.clone())),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, GitError::TargetNotEmpty { .. }), "{err}");
    assert_eq!(fs::read_dir(&busy).unwrap().count(), 1);
}

#[tokio::test]
async fn over_the_cap_only_refs_travel_and_checkout_needs_the_commits_pushed() {
    let scene = Scene::new();
    let opts = CaptureOptions {
        bundle_cap: 1024,
        ..scene.a.opts()
    };
    let cap = capture(&scene.sender, "T1", &opts).await.unwrap().unwrap();
    assert!(cap.bundle.is_none() && cap.context.bundle.is_none());
    let reason = cap.context.bundle_omitted.clone().expect("a reason");
    assert!(reason.starts_with("bundle over the 1 KiB cap"), "{reason}");
    assert!(reason.contains("3 commit(s) origin lacks"), "{reason}");
    // The refs are still recorded, and the sender still keeps the snapshot.
    let snapshot = cap.context.snapshot.clone().expect("snapshot id recorded");
    assert_eq!(
        scene.a.git(&scene.sender, &["rev-parse", &task_ref("T1")]),
        snapshot
    );

    // Neither the unpushed commit nor the snapshot is on origin: a clear refusal, and the
    // clone it started is gone again.
    let here = scene.path("b-work");
    fs::create_dir(&here).unwrap();
    let err = checkout(&cap.context, None, "T1", &scene.b.target(&here, None))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, GitError::MissingCommits(_)), "{msg}");
    assert!(msg.contains(&scene.unpushed[..12]), "{msg}");
    assert!(msg.contains("bundle over the 1 KiB cap"), "{msg}");
    assert!(msg.contains("ask the sender to push main"), "{msg}");
    assert_eq!(
        fs::read_dir(&here).unwrap().count(),
        0,
        "the failed clone is removed"
    );

    // In an existing clone, the same: refused before any work tree or branch exists.
    let receiver = scene.receiver_clone();
    let err = checkout(&cap.context, None, "T1", &scene.b.target(&receiver, None))
        .await
        .unwrap_err();
    assert!(matches!(err, GitError::MissingCommits(_)), "{err}");
    assert!(!scene.path("receiver-relay-T1").exists());
    assert_eq!(scene.b.git(&receiver, &["branch", "--list", "relay/*"]), "");
}

#[tokio::test]
async fn without_a_bundle_the_pushed_commits_are_fetched_from_the_remote() {
    let scene = Scene::new();
    let (a, b) = (&scene.a, &scene.b);
    // A receiver clone made before the sender pushed: it has to fetch.
    let receiver = scene.receiver_clone();
    // Commit everything that may travel, then push: only the refs travel (tiny cap).
    a.git(
        &scene.sender,
        &["add", "-A", "src", "notes", "assets", "*.txt", "run.sh"],
    );
    a.git(&scene.sender, &["commit", "-q", "-m", "everything"]);
    a.git(&scene.sender, &["push", "-q", "origin", "main"]);
    let head = a.git(&scene.sender, &["rev-parse", "HEAD"]);
    let opts = CaptureOptions {
        bundle_cap: 1024,
        ..a.opts()
    };
    let cap = capture(&scene.sender, "T7", &opts).await.unwrap().unwrap();
    let ctx = &cap.context;
    assert_eq!((ctx.ahead, ctx.behind), (Some(0), Some(0)));
    assert!(
        ctx.dirty,
        "the secrets, the link and the tracked secret edit remain"
    );
    // Only secrets and an untracked link remain uncommitted; the link travels, so there is
    // a snapshot and its bundle is small enough.
    assert!(ctx.snapshot.is_some());
    assert!(ctx.bundle.is_some(), "{:?}", ctx.bundle_omitted);

    // Without the bundle, HEAD comes from origin and the snapshot cannot.
    let err = checkout(ctx, None, "T7", &b.target(&receiver, None))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("travels only in a bundle"),
        "{err}"
    );
    // With it: origin is fetched for the prerequisite, and the work tree matches.
    let done = checkout(ctx, cap.bundle.as_deref(), "T7", &b.target(&receiver, None))
        .await
        .unwrap();
    assert_eq!(b.git(&done.path, &["rev-parse", "HEAD"]), head);
    assert_eq!(
        b.git(&done.path, &["status", "--porcelain", "-uall"]),
        "?? link-out"
    );
    assert_eq!(
        b.git(&receiver, &["rev-parse", "origin/main"]),
        head,
        "the receiver's remote-tracking branch was fetched"
    );
}

#[tokio::test]
async fn a_clean_pushed_detached_head_travels_as_ids_only() {
    let scene = Scene::new();
    let (a, b) = (&scene.a, &scene.b);
    let clean = scene.path("clean");
    a.clone_of(&scene.origin, &clean);
    a.git(&clean, &["checkout", "-q", "--detach", "HEAD"]);
    let cap = capture(&clean, "T3", &a.opts()).await.unwrap().unwrap();
    let ctx = &cap.context;
    assert_eq!(ctx.branch, None);
    assert_eq!(ctx.head, scene.pushed);
    assert_eq!(
        (ctx.upstream.as_deref(), ctx.ahead, ctx.behind),
        (None, None, None)
    );
    assert!(!ctx.dirty);
    assert!(ctx.changed.is_empty() && ctx.untracked.is_empty());
    assert!(ctx.snapshot.is_none() && ctx.bundle.is_none() && ctx.bundle_omitted.is_none());
    assert!(cap.bundle.is_none());
    assert_eq!(
        a.git(&clean, &["for-each-ref", "refs/relay"]),
        "",
        "no ref needed"
    );
    let json = serde_json::to_string(ctx).unwrap();
    assert!(
        !json.contains("snapshot") && !json.contains("bundle"),
        "{json}"
    );

    let here = scene.path("b-work");
    fs::create_dir(&here).unwrap();
    let done = checkout(ctx, None, "T3", &b.target(&here, Some("co".into())))
        .await
        .unwrap();
    assert_eq!(done.path, here.join("co"));
    assert_eq!(b.git(&done.path, &["rev-parse", "HEAD"]), scene.pushed);
    assert_eq!(b.git(&done.path, &["status", "--porcelain", "-uall"]), "");
    assert_eq!((done.staged, done.unstaged, done.untracked), (0, 0, 0));
    assert!(done.summary().contains("no uncommitted work"));
}

#[tokio::test]
async fn a_repository_without_a_remote_travels_whole() {
    let solo = Solo::new("solo");
    let (a, b, repo) = (&solo.a, &solo.b, &solo.repo);
    solo.commit(&[("one.txt", "1\n")], "one");
    solo.commit(&[("two.txt", "2\n")], "two");
    let head = a.git(repo, &["rev-parse", "HEAD"]);
    write(&repo.join("one.txt"), "1 edited\n");
    write(&repo.join("new.txt"), "new\n");
    // A nested repository is left out (its commits are not ours to carry).
    let nested = repo.join("vendor/lib");
    fs::create_dir_all(&nested).unwrap();
    a.git(&nested, &["init", "-q"]);
    a.identity(&nested);
    write(&nested.join("lib.txt"), "nested\n");
    a.git(&nested, &["add", "-A"]);
    a.git(&nested, &["commit", "-q", "-m", "nested"]);

    let cap = capture(repo, "T4", &a.opts()).await.unwrap().unwrap();
    let ctx = &cap.context;
    assert_eq!(
        (ctx.remote.as_deref(), ctx.upstream.as_deref()),
        (None, None)
    );
    let info = ctx.bundle.as_ref().expect("the whole history");
    assert!(info.prerequisites.is_empty());
    assert_eq!(info.commits, 4);
    assert_eq!(ctx.untracked, ["new.txt", "vendor/lib/"]);
    assert_eq!(ctx.omitted, ["vendor/lib/"]);

    let here = solo.receiving_dir();
    let done = checkout(ctx, cap.bundle.as_deref(), "T4", &b.target(&here, None))
        .await
        .unwrap();
    assert_eq!(done.source, Source::BundleOnly);
    assert_eq!(done.path, here.join("repo-relay-T4"));
    assert_eq!(b.git(&done.path, &["rev-parse", "HEAD"]), head);
    let mut want = tree(repo);
    want.retain(|name, _| !name.starts_with("vendor/"));
    assert_eq!(tree(&done.path), want);
    assert!(!done.path.join("vendor").exists());
    assert_eq!(
        b.git(&done.path, &["status", "--porcelain", "-uall"]),
        " M one.txt\n?? new.txt"
    );

    // Without the bundle there is nowhere to get it from: refused before anything is made.
    let err = checkout(ctx, None, "T4", &b.target(&here, Some("again".into())))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("has no remote and no bundle"),
        "{err}"
    );
    assert!(!here.join("again").exists());
}

#[tokio::test]
async fn credentials_never_leave_with_the_remote_url() {
    let scene = Scene::new();
    let a = &scene.a;
    a.git(
        &scene.sender,
        &[
            "remote",
            "set-url",
            "origin",
            "https://alice:ghp_tok3n@example.invalid/team/app.git",
        ],
    );
    // Capture reads only local state: no network is used.
    let cap = capture(&scene.sender, "T5", &a.opts())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        cap.context.remote.as_deref(),
        Some("https://example.invalid/team/app.git")
    );
    let json = serde_json::to_string(&cap.context).unwrap();
    assert!(
        !json.contains("ghp_tok3n") && !json.contains("alice"),
        "{json}"
    );
    assert!(
        cap.context.bundle.is_some(),
        "origin's tracking refs still bound the bundle"
    );
}

#[tokio::test]
async fn outside_a_work_tree_there_is_nothing_to_record() {
    let root = tempfile::tempdir().unwrap();
    let a = Machine::new(root.path(), "a");
    let plain = root.path().join("plain");
    fs::create_dir(&plain).unwrap();
    assert!(capture(&plain, "T1", &a.opts()).await.unwrap().is_none());
    a.git(root.path(), &["init", "-q", "--bare", "bare.git"]);
    assert!(
        capture(&root.path().join("bare.git"), "T1", &a.opts())
            .await
            .unwrap()
            .is_none()
    );
    a.git(root.path(), &["init", "-q", "repo"]);
    let dot_git = root.path().join("repo/.git");
    assert!(capture(&dot_git, "T1", &a.opts()).await.unwrap().is_none());

    // A repository without commits cannot be handed over: say so.
    let err = capture(&root.path().join("repo"), "T1", &a.opts())
        .await
        .unwrap_err();
    assert!(matches!(err, GitError::NoCommits { .. }), "{err}");
    assert!(err.to_string().contains("no commits yet"), "{err}");

    // Bad ids and a missing git are clear errors.
    let err = capture(&plain, "../x", &a.opts()).await.unwrap_err();
    assert!(matches!(err, GitError::BadTaskId { .. }), "{err}");
    let opts = CaptureOptions {
        git: a.runner().program("/nonexistent/git"),
        ..a.opts()
    };
    let err = capture(&plain, "T1", &opts).await.unwrap_err();
    assert!(err.to_string().starts_with("git is not installed"), "{err}");
}

#[tokio::test]
async fn received_contexts_and_bundles_are_checked_before_use() {
    let scene = Scene::new();
    let b = &scene.b;
    let cap = capture(&scene.sender, "T1", &scene.a.opts())
        .await
        .unwrap()
        .unwrap();
    let other = capture(&scene.sender, "T2", &scene.a.opts())
        .await
        .unwrap()
        .unwrap();
    let here = scene.path("b-work");
    fs::create_dir(&here).unwrap();
    let target = b.target(&here, None);
    let refused = |r: Result<_, GitError>| {
        let e = r.unwrap_err();
        assert_eq!(
            fs::read_dir(&here).unwrap().count(),
            0,
            "nothing made for: {e}"
        );
        e
    };

    // Another task's bundle does not carry this task's ref.
    let e = refused(checkout(&cap.context, other.bundle.as_deref(), "T1", &target).await);
    assert!(matches!(e, GitError::BadBundle(_)), "{e}");
    // Garbage instead of a bundle.
    let e = refused(checkout(&cap.context, Some(b"PACK garbage"), "T1", &target).await);
    assert!(matches!(e, GitError::BadBundle(_)), "{e}");
    // A context whose HEAD is not a commit id, or whose remote is an option.
    let mut bad = cap.context.clone();
    bad.head = "HEAD; rm -rf /".into();
    let e = refused(checkout(&bad, cap.bundle.as_deref(), "T1", &target).await);
    assert!(matches!(e, GitError::BadContext(_)), "{e}");
    let mut bad = cap.context.clone();
    bad.remote = Some("--upload-pack=touch /tmp/pwned".into());
    let e = refused(checkout(&bad, cap.bundle.as_deref(), "T1", &target).await);
    assert!(matches!(e, GitError::BadContext(_)), "{e}");
    // Transports other than file/git/http(s)/ssh are not allowed.
    let mut bad = cap.context.clone();
    bad.remote = Some("ext::sh -c touch% /tmp/relay-ext-pwned".into());
    let e = refused(checkout(&bad, cap.bundle.as_deref(), "T1", &target).await);
    assert!(e.to_string().contains("transport 'ext' not allowed"), "{e}");
    assert!(!Path::new("/tmp/relay-ext-pwned").exists());
    // Nor any remote helper the receiver did not allow: the URL is not the user's own.
    let mut bad = cap.context.clone();
    bad.remote = Some("relaytest::whatever".into());
    let e = refused(checkout(&bad, cap.bundle.as_deref(), "T1", &target).await);
    assert!(
        e.to_string().contains("transport 'relaytest' not allowed"),
        "{e}"
    );
    // A task id that is not a ref name.
    let e = refused(checkout(&cap.context, cap.bundle.as_deref(), "a/../b", &target).await);
    assert!(matches!(e, GitError::BadTaskId { .. }), "{e}");
}

#[tokio::test]
async fn a_conflicted_merge_travels_as_its_work_tree() {
    let solo = Solo::new("merge");
    let (a, repo) = (&solo.a, &solo.repo);
    solo.commit(&[("f.txt", "base\n")], "base");
    a.git(repo, &["checkout", "-q", "-b", "other"]);
    write(&repo.join("f.txt"), "other\n");
    a.git(repo, &["commit", "-q", "-am", "other"]);
    a.git(repo, &["checkout", "-q", "main"]);
    write(&repo.join("f.txt"), "mine\n");
    a.git(repo, &["commit", "-q", "-am", "mine"]);
    let status = Command::new("git")
        .current_dir(repo)
        .args(["merge", "-q", "other"])
        .envs(a.env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert!(!status.status.success(), "the merge conflicts");
    let before = untouchables(a, repo);

    let cap = capture(repo, "T6", &a.opts()).await.unwrap().unwrap();
    assert_eq!(before, untouchables(a, repo));
    assert_eq!(cap.context.changed, ["f.txt"]);
    let done = solo.hand_over(&cap, "T6").await;
    assert_eq!(
        fs::read(done.path.join("f.txt")).unwrap(),
        fs::read(repo.join("f.txt")).unwrap(),
        "the conflict markers as the sender had them"
    );
}

#[tokio::test]
async fn a_same_size_edit_git_could_mistake_for_clean_is_seen() {
    // "Racy git", made deterministic: the edit keeps the size and mtime the index recorded,
    // and the index file has that same mtime. git status must compare contents — and so must
    // the snapshot, although its index is a copy made later.
    let solo = Solo::new("racy");
    let (a, repo) = (&solo.a, &solo.repo);
    a.git(repo, &["config", "core.trustctime", "false"]);
    let file = repo.join("data.txt");
    let then = std::time::SystemTime::now() - std::time::Duration::from_secs(100);
    let set_mtime = |path: &Path| {
        fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(then)
            .unwrap();
    };
    write(&file, "version 1\n");
    set_mtime(&file);
    a.git(repo, &["add", "-A"]);
    a.git(repo, &["commit", "-q", "-m", "v1"]);
    write(&file, "version 2\n");
    set_mtime(&file);
    set_mtime(&repo.join(".git/index"));
    // (No `git status` here: it would rewrite the index and "smudge" the racy entry.)

    let cap = capture(repo, "T8", &a.opts()).await.unwrap().unwrap();
    assert_eq!(cap.context.changed, ["data.txt"]);
    let snapshot = cap.context.snapshot.clone().expect("the edit is seen");
    assert_eq!(
        a.git(repo, &["show", &format!("{snapshot}:data.txt")]),
        "version 2"
    );
    let done = solo.hand_over(&cap, "T8").await;
    assert_eq!(
        fs::read_to_string(done.path.join("data.txt")).unwrap(),
        "version 2\n"
    );
}

#[tokio::test]
async fn staged_secrets_stay_out_of_both_snapshot_commits() {
    let solo = Solo::new("keys");
    let (a, repo) = (&solo.a, &solo.repo);
    solo.commit(
        &[("deploy.key", "old key\n"), ("app.rs", "fn main() {}\n")],
        "base",
    );
    // A staged edit of a tracked key, a staged new .env, a staged new certificate, and an
    // ordinary staged edit next to them.
    write(&repo.join("deploy.key"), "NEW PRIVATE KEY\n");
    write(&repo.join(".env.local"), "TOKEN=staged-secret\n");
    write(
        &repo.join("tls/server.pem"),
        "-----BEGIN CERTIFICATE-----\n",
    );
    write(&repo.join("app.rs"), "fn main() { println!(\"hi\"); }\n");
    a.git(repo, &["add", "-A"]);
    let before = untouchables(a, repo);

    let cap = capture(repo, "T9", &a.opts()).await.unwrap().unwrap();
    assert_eq!(
        before,
        untouchables(a, repo),
        "the staged secrets stay staged"
    );
    let ctx = &cap.context;
    let mut omitted = ctx.omitted.clone();
    omitted.sort();
    assert_eq!(omitted, [".env.local", "deploy.key", "tls/server.pem"]);
    let snapshot = ctx.snapshot.clone().unwrap();
    for commit in [snapshot.clone(), format!("{snapshot}^2")] {
        let files = a.git(repo, &["ls-tree", "-r", "--name-only", &commit]);
        assert_eq!(files, "app.rs\ndeploy.key", "{commit}");
        assert_eq!(
            a.git(repo, &["show", &format!("{commit}:deploy.key")]),
            "old key",
            "{commit}"
        );
        assert_eq!(
            a.git(repo, &["show", &format!("{commit}:app.rs")]),
            "fn main() { println!(\"hi\"); }",
            "{commit}: the ordinary staged edit travels"
        );
    }
}
