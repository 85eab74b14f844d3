//! The task state machine: who may make which move from which state, as one pure function.
//!
//! The hub calls [`decide`] inside the store transaction that applies the move, so the
//! decision and the change are one atomic step (a claim is a compare-and-set: the second of
//! two concurrent claims sees `working` and is refused with the holder's name). No client
//! ever decides a move. The rules (see `docs/HANDOFF.md`):
//!
//! | action   | who                | from                        | to |
//! |----------|--------------------|-----------------------------|----|
//! | claim    | an addressee       | submitted                   | working (holder = actor) |
//! | progress | the holder         | working, input-required     | unchanged |
//! | ask      | the holder         | working                     | input-required |
//! | answer   | the creator        | input-required              | working |
//! | complete | the holder         | working, input-required     | completed |
//! | fail     | the holder         | working, input-required     | failed |
//! | release  | the holder         | working, input-required     | submitted (no holder) |
//! | decline  | the addressee of a task to one session | submitted | rejected |
//! | cancel   | the creator        | any non-terminal state      | canceled |
//!
//! Terminal states (completed, failed, rejected, canceled) never change. A task offered to
//! `any` cannot be declined by one of its many addressees (it would take it from all the
//! others); the creator cancels it instead.

use sessions::wire_tasks::{TaskAction, TaskState};

/// How the actor stands to the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// It created the task.
    Creator,
    /// It holds the task now.
    Holder,
    /// It may claim the task: its `to`, or, for a task to `any`, any session but the creator.
    Addressee,
    /// None of these.
    Other,
}

impl Role {
    /// Every role (for exhaustive tests).
    pub const ALL: [Role; 4] = [Self::Creator, Self::Holder, Self::Addressee, Self::Other];

    /// The actor's role: holder first (a holder is also an addressee), then creator.
    pub fn of(actor: &str, from: &str, to: &str, holder: Option<&str>) -> Role {
        if holder == Some(actor) {
            Role::Holder
        } else if actor == from {
            Role::Creator
        } else if actor == to || to == sessions::wire_tasks::ANY {
            Role::Addressee
        } else {
            Role::Other
        }
    }
}

/// Why a move was refused (the caller words it with names; see [`Refusal::reason`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The task is in a terminal state.
    Terminal,
    /// Someone already holds it (a claim that lost).
    Held,
    /// Only an addressee may claim.
    NotAddressee,
    /// Only the holder may make this move.
    NotHolder,
    /// Only the creator may make this move.
    NotCreator,
    /// The actor holds it: declining is for tasks not taken (release or fail instead).
    HolderDeclines,
    /// A task to `any` cannot be declined by one session.
    DeclineAny,
    /// The move does not apply in this state.
    WrongState,
}

impl Refusal {
    /// The reason in words, naming the task, its state, its creator and its holder.
    pub fn reason(
        self,
        action: TaskAction,
        id: &str,
        state: TaskState,
        from: &str,
        to: &str,
        holder: Option<&str>,
    ) -> String {
        let holder = holder.unwrap_or("nobody");
        match self {
            Self::Terminal => format!(
                "{id} is {state}: a finished task never changes. For follow-up work create a \
                 new task with refs [\"{id}\"]."
            ),
            Self::Held => format!("{id} is already claimed: {holder} holds it ({state})."),
            Self::NotAddressee => {
                format!("only {to} may claim {id} (it was offered to {to}, not to you).")
            }
            Self::NotHolder => format!(
                "only the holder of {id} may {} it; it is {state} and held by {holder}.",
                action.as_str()
            ),
            Self::NotCreator => {
                format!("only {from}, who created {id}, may {} it.", action.as_str())
            }
            Self::HolderDeclines => format!(
                "you hold {id}: release it (hand it back) or fail it (with a reason) instead \
                 of declining."
            ),
            Self::DeclineAny => format!(
                "{id} was offered to any session: leave it for another, or ask {from} to \
                 cancel it."
            ),
            Self::WrongState => match (action, state) {
                (TaskAction::Answer, _) => {
                    format!("{id} is {state}: there is no open question to answer.")
                }
                (TaskAction::Ask, TaskState::InputRequired) => {
                    format!("{id} already waits for an answer from {from}.")
                }
                _ => format!("{id} is {state}: {} does not apply.", action.as_str()),
            },
        }
    }
}

/// The state after `action` by an actor in `role` on a task in `state` (`open`: offered to
/// `any`), or why not. Pure: no names, no clock, no store.
pub fn decide(
    role: Role,
    open: bool,
    action: TaskAction,
    state: TaskState,
) -> Result<TaskState, Refusal> {
    use Role::*;
    use TaskAction as A;
    use TaskState as S;
    if state.is_terminal() {
        return Err(Refusal::Terminal);
    }
    let live = matches!(state, S::Working | S::InputRequired);
    match action {
        A::Claim => match (role, state) {
            (Addressee, S::Submitted) => Ok(S::Working),
            (Holder | Addressee, _) => Err(Refusal::Held),
            (Creator | Other, S::Submitted) => Err(Refusal::NotAddressee),
            (Creator | Other, _) => Err(Refusal::Held),
        },
        A::Progress | A::Complete | A::Fail | A::Release => match role {
            Holder if live => Ok(match action {
                A::Progress => state,
                A::Complete => S::Completed,
                A::Fail => S::Failed,
                _ => S::Submitted,
            }),
            Holder => Err(Refusal::WrongState),
            _ if state == S::Submitted => Err(Refusal::WrongState),
            _ => Err(Refusal::NotHolder),
        },
        A::Ask => match (role, state) {
            (Holder, S::Working) => Ok(S::InputRequired),
            (Holder, _) => Err(Refusal::WrongState),
            (_, S::Submitted) => Err(Refusal::WrongState),
            _ => Err(Refusal::NotHolder),
        },
        A::Answer => match (role, state) {
            (Creator, S::InputRequired) => Ok(S::Working),
            (Creator, _) => Err(Refusal::WrongState),
            _ => Err(Refusal::NotCreator),
        },
        A::Decline => match role {
            Holder => Err(Refusal::HolderDeclines),
            Addressee if state != S::Submitted => Err(Refusal::Held),
            Addressee if open => Err(Refusal::DeclineAny),
            Addressee => Ok(S::Rejected),
            Creator => Err(Refusal::WrongState),
            Other => Err(Refusal::NotAddressee),
        },
        A::Cancel => match role {
            Creator => Ok(S::Canceled),
            _ => Err(Refusal::NotCreator),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Role::*;
    use TaskAction as A;
    use TaskState as S;

    /// Every move that is allowed, written out independently of `decide`:
    /// (role, open, action, from) → to. Everything not listed must be refused.
    fn allowed() -> Vec<(Role, bool, TaskAction, TaskState, TaskState)> {
        let mut v = Vec::new();
        for open in [false, true] {
            v.push((Addressee, open, A::Claim, S::Submitted, S::Working));
            for from in [S::Working, S::InputRequired] {
                v.push((Holder, open, A::Progress, from, from));
                v.push((Holder, open, A::Complete, from, S::Completed));
                v.push((Holder, open, A::Fail, from, S::Failed));
                v.push((Holder, open, A::Release, from, S::Submitted));
            }
            v.push((Holder, open, A::Ask, S::Working, S::InputRequired));
            v.push((Creator, open, A::Answer, S::InputRequired, S::Working));
            for from in [S::Submitted, S::Working, S::InputRequired] {
                v.push((Creator, open, A::Cancel, from, S::Canceled));
            }
        }
        v.push((Addressee, false, A::Decline, S::Submitted, S::Rejected));
        v
    }

    #[test]
    fn every_combination_is_decided_as_the_table_says() {
        let table = allowed();
        let mut checked = 0;
        for role in Role::ALL {
            for open in [false, true] {
                for action in TaskAction::ALL {
                    for state in TaskState::ALL {
                        let want = table
                            .iter()
                            .find(|(r, o, a, s, _)| (*r, *o, *a, *s) == (role, open, action, state))
                            .map(|t| t.4);
                        let got = decide(role, open, action, state);
                        match want {
                            Some(to) => assert_eq!(
                                got,
                                Ok(to),
                                "{role:?} open={open} {action:?} from {state:?}"
                            ),
                            None => assert!(
                                got.is_err(),
                                "{role:?} open={open} {action:?} from {state:?} should be \
                                 refused, got {got:?}"
                            ),
                        }
                        if state.is_terminal() {
                            assert_eq!(got, Err(Refusal::Terminal));
                        }
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked, 4 * 2 * 9 * 7);
    }

    #[test]
    fn refusals_say_why_with_names() {
        // A lost claim names the holder.
        assert_eq!(
            decide(Addressee, true, A::Claim, S::Working),
            Err(Refusal::Held)
        );
        let why = Refusal::Held.reason(A::Claim, "T-1", S::Working, "CC-1", "any", Some("CC-3"));
        assert!(why.contains("CC-3 holds it"), "{why}");
        assert_eq!(
            decide(Other, false, A::Claim, S::Submitted),
            Err(Refusal::NotAddressee)
        );
        let why = Refusal::NotAddressee.reason(A::Claim, "T-1", S::Submitted, "CC-1", "CC-2", None);
        assert!(why.contains("only CC-2 may claim T-1"), "{why}");
        assert_eq!(
            decide(Addressee, false, A::Complete, S::Working),
            Err(Refusal::NotHolder)
        );
        let why = Refusal::Terminal.reason(A::Cancel, "T-1", S::Completed, "CC-1", "CC-2", None);
        assert!(
            why.contains("never changes") && why.contains("refs"),
            "{why}"
        );
        assert_eq!(
            decide(Addressee, true, A::Decline, S::Submitted),
            Err(Refusal::DeclineAny)
        );
        assert_eq!(
            decide(Holder, false, A::Decline, S::Working),
            Err(Refusal::HolderDeclines)
        );
    }

    #[test]
    fn roles_put_the_holder_first() {
        assert_eq!(Role::of("B", "A", "B", Some("B")), Holder);
        assert_eq!(Role::of("B", "A", "B", None), Addressee);
        assert_eq!(Role::of("A", "A", "B", None), Creator);
        assert_eq!(Role::of("C", "A", "any", None), Addressee);
        assert_eq!(Role::of("A", "A", "any", None), Creator);
        assert_eq!(Role::of("C", "A", "B", Some("B")), Other);
    }
}
