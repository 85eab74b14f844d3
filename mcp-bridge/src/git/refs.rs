//! The names a task gets in git: the ref that keeps its snapshot alive on both machines
//! (`refs/relay/tasks/<id>`) and the branch a checkout creates (`relay/<id>`). A task id comes
//! from the hub, but it becomes part of a ref and a directory name, so it is checked here.

use super::error::GitError;

/// Longest task id accepted.
pub const MAX_TASK_ID: usize = 128;

/// `refs/relay/tasks/<id>`.
pub fn task_ref(task_id: &str) -> String {
    format!("refs/relay/tasks/{task_id}")
}

/// `relay/<id>`.
pub fn task_branch(task_id: &str) -> String {
    format!("relay/{task_id}")
}

/// Accepts ids of ASCII letters, digits, `_`, `-` and inner single dots, starting with a
/// letter or digit, at most [`MAX_TASK_ID`] long: always a valid ref component and file name.
pub fn check_task_id(id: &str) -> Result<(), GitError> {
    let bad = |reason| {
        Err(GitError::BadTaskId {
            id: id.chars().take(MAX_TASK_ID + 8).collect(),
            reason,
        })
    };
    if id.is_empty() || id.len() > MAX_TASK_ID {
        return bad("it must be 1 to 128 characters");
    }
    if !id.as_bytes()[0].is_ascii_alphanumeric() {
        return bad("it must start with a letter or digit");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return bad("only letters, digits, '_', '-' and '.' are allowed");
    }
    if id.contains("..") || id.ends_with('.') || id.ends_with(".lock") {
        return bad("'..', a final '.' and a final '.lock' are not allowed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids() {
        for ok in ["t1", "01HZX3K9", "task-42", "a.b_c-d", "T"] {
            check_task_id(ok).unwrap();
        }
        for bad in [
            "",
            "-x",
            ".x",
            "a..b",
            "a.",
            "a.lock",
            "a/b",
            "a b",
            "ü",
            "a~1",
            "a^",
            "a:b",
            "@{u}",
            &"x".repeat(129),
        ] {
            let err = check_task_id(bad).unwrap_err();
            assert!(
                err.to_string().contains("cannot name a git ref"),
                "{bad}: {err}"
            );
        }
        assert_eq!(task_ref("t1"), "refs/relay/tasks/t1");
        assert_eq!(task_branch("t1"), "relay/t1");
    }
}
