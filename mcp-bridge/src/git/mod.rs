//! The git half of a task handoff (docs/HANDOFF.md): what the sender's repository looks like,
//! the sender's unpushed and uncommitted work as a bundle, and the receiver's checkout that
//! rebuilds that exact working state. Everything runs the `git` binary through one bounded
//! runner ([`Git`]: time limits, no prompts, capped output); nothing here talks to the hub.
//!
//! The API, for the handoff tool and the `tasks checkout` command:
//! - [`capture`]`(dir, task_id, &CaptureOptions)` → `Option<`[`Capture`]`>`: None when `dir`
//!   is not in a git work tree (one `git rev-parse`; a caller that skips git simply does not
//!   call it). Otherwise the [`GitContext`] (remote without credentials, branch, HEAD,
//!   upstream, ahead/behind, dirty, capped file lists, snapshot, bundle facts, omitted paths)
//!   and the bundle bytes (at most [`CaptureOptions::bundle_cap`], default
//!   [`DEFAULT_BUNDLE_CAP`] = 16 MiB). The user's index, work tree, HEAD, branches and stash
//!   are never changed; the snapshot lives under `refs/relay/tasks/<id>` ([`task_ref`]).
//! - [`checkout`]`(&context, bundle, task_id, &CheckoutTarget)` → [`CheckedOut`]: a new
//!   work tree of a local clone of the same remote, or a fresh clone, on branch `relay/<id>`
//!   ([`task_branch`]) at the sender's HEAD with the sender's staged, unstaged and untracked
//!   changes as they were; [`CheckedOut::summary`] says where, for a person.
//! - [`forget`]`(dir, task_id, &git)`: drops `refs/relay/tasks/<id>` once the task is over.
//!
//! [`GitContext`] serializes **camelCase** (`changedCount`, `bundleOmitted`, …, and `ref` in
//! [`BundleInfo`]) like the wire protocol, leaving out empty fields. Everything received is
//! treated as another machine's word: ids, URLs and the bundle are checked before use.
//!
//! Files: `run.rs` the runner, `error.rs` the error type, `context.rs` reading the state,
//! `snapshot.rs` the snapshot commits, `bundle.rs` the bundle, `capture.rs` and `checkout.rs`
//! the two sides, [`secrets`] what never travels, [`url`] remote URLs, `refs.rs` the ref and
//! branch names of a task.

mod bundle;
mod capture;
mod checkout;
mod context;
mod error;
mod refs;
mod run;
pub mod secrets;
mod snapshot;
pub mod url;

pub use capture::{Capture, CaptureOptions, DEFAULT_BUNDLE_CAP, DEFAULT_LIST_CAP, capture, forget};
pub use checkout::{CheckedOut, CheckoutTarget, Source, checkout};
pub use context::{BundleInfo, GitContext};
pub use error::GitError;
pub use refs::{MAX_TASK_ID, check_task_id, task_branch, task_ref};
pub use run::{DEFAULT_NETWORK_TIMEOUT, DEFAULT_STDOUT_CAP, DEFAULT_TIMEOUT, Git};
