//! The `git bundle` that travels with a task: built straight into memory from git's stdout
//! under the cap (so an oversized bundle costs neither memory nor disk: git is stopped at the
//! cap), and its header read back on the receiving side to check what it carries and what it
//! needs before git touches it.

use std::path::Path;

use super::{context::BundleInfo, error::GitError, run::Git};

/// Largest bundle header read (a header lists refs and prerequisite commits, ~100 bytes each).
const MAX_HEADER: usize = 1 << 20;

/// A built bundle, or why none is attached.
pub(crate) enum Built {
    Bundle(Vec<u8>, BundleInfo),
    Omitted(String),
}

/// `git bundle create` of `task_ref` (pointing at `tip`) minus everything under
/// `refs/remotes/<remote>/` (or the whole history when `remote` is None), at most `cap` bytes.
pub(crate) async fn create(
    git: &Git,
    top: &Path,
    task_ref: &str,
    tip: &str,
    remote: Option<&str>,
    cap: usize,
) -> Result<Built, GitError> {
    let not: Vec<String> = match remote {
        Some(name) => vec!["--not".into(), format!("--remotes={name}")],
        None => Vec::new(),
    };
    let commits: u32 = git
        .at(top)
        .args(["rev-list", "--count", tip])
        .args(&not)
        .text()
        .await?
        .parse()
        .unwrap_or(0);
    let built = git
        .at(top)
        .args(["bundle", "create", "-", task_ref])
        .args(&not)
        .stdout_cap(cap)
        .run()
        .await;
    let bytes = match built {
        Ok(bytes) => bytes,
        Err(GitError::OutputTooLarge { .. }) => {
            return Ok(Built::Omitted(format!(
                "bundle over the {} cap: the {commits} commit(s) {} lacks take more than that; \
                 the task carries only their ids. Push the branch (and leave large files out of \
                 the work tree) so the receiver can fetch it",
                human_size(cap as u64),
                remote.unwrap_or("the receiver"),
            )));
        }
        Err(e) => return Err(e),
    };
    let header = parse_header(&bytes)?;
    let info = BundleInfo {
        bytes: bytes.len() as u64,
        ref_name: task_ref.into(),
        tip: tip.into(),
        commits,
        prerequisites: header.prerequisites,
    };
    Ok(Built::Bundle(bytes, info))
}

/// What a bundle's header says.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Header {
    /// Commits the receiver must have.
    pub prerequisites: Vec<String>,
    /// (object id, ref name) pairs it carries.
    pub refs: Vec<(String, String)>,
}

/// Reads the header of a v2 or v3 bundle (`# v2 git bundle`, v3 capability lines `@…`,
/// prerequisites `-<id> <subject>`, refs `<id> <name>`, a blank line, the pack).
pub(crate) fn parse_header(bytes: &[u8]) -> Result<Header, GitError> {
    let bad = |why: &str| GitError::BadBundle(why.into());
    let window = &bytes[..bytes.len().min(MAX_HEADER)];
    let end = window
        .windows(2)
        .position(|w| w == b"\n\n")
        .ok_or_else(|| bad("no bundle header (not a git bundle, or cut short)"))?;
    let text = std::str::from_utf8(&window[..end]).map_err(|_| bad("header is not text"))?;
    let mut lines = text.lines();
    match lines.next() {
        Some("# v2 git bundle" | "# v3 git bundle") => {}
        _ => return Err(bad("not a git bundle (v2 or v3)")),
    }
    let mut header = Header {
        prerequisites: Vec::new(),
        refs: Vec::new(),
    };
    for line in lines {
        if line.starts_with('@') {
            continue;
        }
        if let Some(rest) = line.strip_prefix('-') {
            let id = rest.split(' ').next().unwrap_or_default();
            header.prerequisites.push(check_oid(id)?.into());
        } else {
            let (id, name) = line
                .split_once(' ')
                .ok_or_else(|| bad("malformed ref line"))?;
            header.refs.push((check_oid(id)?.into(), name.into()));
        }
    }
    Ok(header)
}

/// `id` when it is a full object id (40 or 64 lowercase hex digits).
pub(crate) fn check_oid(id: &str) -> Result<&str, GitError> {
    if matches!(id.len(), 40 | 64) && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(id)
    } else {
        Err(GitError::BadBundle(format!(
            "{:?} is not a full commit id",
            id.chars().take(70).collect::<String>()
        )))
    }
}

/// `16 MiB`, `1.5 MiB`, `12 KiB`, `300 bytes`.
pub(crate) fn human_size(n: u64) -> String {
    const MIB: u64 = 1 << 20;
    if n >= MIB {
        if n.is_multiple_of(MIB) {
            format!("{} MiB", n / MIB)
        } else {
            format!("{:.1} MiB", n as f64 / MIB as f64)
        }
    } else if n >= 1024 {
        format!("{} KiB", n / 1024)
    } else {
        format!("{n} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "19ff90b0b3f34246f0d20e957ab3fe1c6f7cac1d";
    const B: &str = "27ec5aec4f1374b1c4aad1b136dd832de1754dcb";

    #[test]
    fn headers() {
        let v2 = format!("# v2 git bundle\n-{B} one\n{A} refs/relay/tasks/t\n\nPACK\n\n");
        assert_eq!(
            parse_header(v2.as_bytes()).unwrap(),
            Header {
                prerequisites: vec![B.into()],
                refs: vec![(A.into(), "refs/relay/tasks/t".into())],
            }
        );
        let v3 = format!("# v3 git bundle\n@object-format=sha1\n{A} refs/heads/main\n\nPACK");
        assert!(
            parse_header(v3.as_bytes())
                .unwrap()
                .prerequisites
                .is_empty()
        );
        for bad in [
            "PACK".to_string(),
            "# v9 git bundle\n\n".into(),
            format!("# v2 git bundle\n{A}\n\n"),
            format!("# v2 git bundle\n-xyz\n{A} r\n\n"),
            format!("# v2 git bundle\n{} r\n\n", A.to_uppercase()),
        ] {
            assert!(parse_header(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(human_size(16 << 20), "16 MiB");
        assert_eq!(human_size(3 << 19), "1.5 MiB");
        assert_eq!(human_size(4096), "4 KiB");
        assert_eq!(human_size(1000), "1000 bytes");
    }
}
