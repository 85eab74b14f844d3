//! Every task move is mail: who gets it and what it says (pure), and the `message` frame
//! that carries it with its `task` tag.
//!
//! The mail is an ordinary message in the store (stored in the move's transaction, counted
//! as unread, read with `receive`), so every wake path — the channel push, the Stop-hook
//! doorbell, `relay_wait` — applies to it unchanged. Its `message` frame carries an extra
//! `task: {id, state}` field that old clients ignore.

use sessions::{
    BROADCAST,
    wire::{Envelope, ServerFrame},
    wire_tasks::{ANY, TaskAction, TaskState, TaskTag},
};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::{outbound::to_frame, store::StoredMessage};

/// Who gets the mail of a move (`None` = creation), given the task before the move.
pub fn recipient<'a>(
    action: Option<TaskAction>,
    from: &'a str,
    to: &'a str,
    holder_before: Option<&'a str>,
) -> &'a str {
    let offered = if to == ANY { BROADCAST } else { to };
    match action {
        None => offered,
        Some(TaskAction::Answer) => holder_before.unwrap_or(offered),
        Some(TaskAction::Cancel) => holder_before.unwrap_or(offered),
        Some(_) => from,
    }
}

/// The text of the mail of a move (`None` = creation): task id, title, new state and note,
/// and for the receiver the call that acts on it.
pub fn content(
    action: Option<TaskAction>,
    id: &str,
    title: &str,
    state: TaskState,
    actor: &str,
    to: &str,
    note: Option<&str>,
) -> String {
    let with = |s: String| match note.filter(|n| !n.trim().is_empty()) {
        Some(n) => format!("{s}: {n}"),
        None => s,
    };
    let head = format!("[{id} {state}] \"{title}\"");
    match action {
        None => {
            let whom = if to == ANY {
                "for any session (first to claim holds it)".to_string()
            } else {
                "for you".to_string()
            };
            format!(
                "{head} — task from {actor} {whom}. Read it with relay_tasks {{\"id\":\"{id}\"}}; \
                 take it with relay_task {{\"id\":\"{id}\",\"action\":\"claim\"}}."
            )
        }
        Some(TaskAction::Claim) => format!("{head} — {actor} claimed it."),
        Some(TaskAction::Progress) => with(format!("{head} — progress from {actor}")),
        Some(TaskAction::Ask) => format!(
            "{} — answer with relay_task {{\"id\":\"{id}\",\"action\":\"answer\",\"note\":\"…\"}}",
            with(format!("{head} — {actor} asks"))
        ),
        Some(TaskAction::Answer) => with(format!("{head} — {actor} answered")),
        Some(TaskAction::Complete) => with(format!("{head} — {actor} completed it")),
        Some(TaskAction::Fail) => with(format!("{head} — {actor} failed it")),
        Some(TaskAction::Release) => with(format!(
            "{head} — {actor} released it; it is open to be claimed again"
        )),
        Some(TaskAction::Decline) => with(format!("{head} — {actor} declined it")),
        Some(TaskAction::Cancel) => with(format!("{head} — {actor} canceled it")),
    }
}

/// The `message` frame of stored task mail, with its `task` tag.
pub fn frame(epoch: &str, msg: &StoredMessage, tag: &TaskTag) -> Utf8Bytes {
    let mut envelope: Envelope = msg.envelope(epoch);
    envelope.task = Some(tag.clone());
    to_frame(&ServerFrame::Message(envelope))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_other_party_gets_the_mail() {
        use TaskAction::*;
        assert_eq!(recipient(None, "A", "B", None), "B");
        assert_eq!(recipient(None, "A", ANY, None), BROADCAST);
        for a in [Claim, Progress, Ask, Complete, Fail, Release, Decline] {
            assert_eq!(recipient(Some(a), "A", "B", Some("B")), "A", "{a:?}");
        }
        assert_eq!(recipient(Some(Answer), "A", ANY, Some("C")), "C");
        assert_eq!(recipient(Some(Cancel), "A", ANY, Some("C")), "C");
        assert_eq!(recipient(Some(Cancel), "A", ANY, None), BROADCAST);
        assert_eq!(recipient(Some(Cancel), "A", "B", None), "B");
    }

    #[test]
    fn mail_names_id_title_state_and_note() {
        let m = content(
            Some(TaskAction::Ask),
            "T-3",
            "Fix auth",
            TaskState::InputRequired,
            "CC-2",
            "CC-2",
            Some("which branch?"),
        );
        assert!(
            m.starts_with("[T-3 input-required] \"Fix auth\" — CC-2 asks: which branch?"),
            "{m}"
        );
        assert!(m.contains(r#""action":"answer""#), "{m}");
        let m = content(
            None,
            "T-3",
            "Fix auth",
            TaskState::Submitted,
            "CC-1",
            "CC-2",
            None,
        );
        assert!(
            m.contains("task from CC-1 for you") && m.contains(r#""action":"claim""#),
            "{m}"
        );
    }
}
