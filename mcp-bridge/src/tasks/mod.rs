//! Typed task handoff in the bridge (see `docs/HANDOFF.md`): the tools `relay_handoff`,
//! `relay_tasks` and `relay_task`.
//!
//! - [`tools`]: definitions (with output schemas) and argument parsing.
//! - [`run`]: what each call asks of the hub, and its answer (text + structured record).
//! - [`upload`]: the chunked, resumable bundle upload.
//! - [`git_seam`]: what the handoff asks of the git library (capture, pin, checkout).
//! - [`text`]: the wording.

pub mod git_seam;
pub mod run;
pub mod text;
pub mod tools;
pub mod upload;
