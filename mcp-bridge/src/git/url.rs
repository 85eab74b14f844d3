//! Remote URLs: what of them may leave the machine, and when two of them name the same
//! repository.
//!
//! [`strip_credentials`] decides what is recorded in a task (docs/HANDOFF.md, "What is
//! recorded"):
//! - `http(s)://` and `ftp(s)://`: the whole user-info goes (`https://user:tok@host/x` →
//!   `https://host/x`; a token is often the user name alone), and so do `?query` and
//!   `#fragment`, where tokens hide too.
//! - `ssh://user:pw@host/x` → `ssh://user@host/x`, and scp-like `git@host:x` stays as it is:
//!   the ssh login name is not a secret and the receiver needs it to fetch.
//! - other schemes (`git://`, `file://`): the user-info goes.
//! - local paths are kept as they are.
//!
//! `same_repo` compares URLs by host and path only (scheme, user, port, trailing `/` and
//! `.git` ignored), so an https clone and an ssh clone of one repository match; local paths
//! compare canonicalized.

use std::path::Path;

fn is_ssh(scheme: &str) -> bool {
    matches!(
        scheme.to_ascii_lowercase().as_str(),
        "ssh" | "git+ssh" | "ssh+git"
    )
}

fn is_http(scheme: &str) -> bool {
    matches!(
        scheme.to_ascii_lowercase().as_str(),
        "http" | "https" | "ftp" | "ftps"
    )
}

/// The URL with its credentials removed (the rules are in the module header).
pub fn strip_credentials(url: &str) -> String {
    let Some(sep) = url.find("://") else {
        return strip_scp_password(url);
    };
    let (scheme, rest) = (&url[..sep], &url[sep + 3..]);
    let auth_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (auth, mut tail) = rest.split_at(auth_end);
    let host = match auth.rfind('@') {
        Some(at) if is_ssh(scheme) => {
            let user = auth[..at].split(':').next().unwrap_or_default();
            format!("{user}@{}", &auth[at + 1..])
        }
        Some(at) => auth[at + 1..].to_string(),
        None => auth.to_string(),
    };
    if is_http(scheme) {
        tail = &tail[..tail.find(['?', '#']).unwrap_or(tail.len())];
    }
    format!("{scheme}://{host}{tail}")
}

/// `user:pw@host:path` (not valid scp syntax, but it would leak) → `user@host:path`.
fn strip_scp_password(url: &str) -> String {
    let head_end = url.find('/').unwrap_or(url.len());
    match url[..head_end].find('@') {
        Some(at) if url[..at].contains(':') => {
            let user = &url[..url.find(':').unwrap_or(at)];
            format!("{user}{}", &url[at..])
        }
        _ => url.to_string(),
    }
}

/// Removes the user-info of every `scheme://user@host` inside free text (git's error
/// messages quote URLs).
pub(crate) fn scrub_credentials(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(sep) = rest.find("://") {
        out.push_str(&rest[..sep + 3]);
        rest = &rest[sep + 3..];
        let auth_end = rest
            .find(|c: char| c == '/' || c.is_whitespace() || "'\"<>`".contains(c))
            .unwrap_or(rest.len());
        if let Some(at) = rest[..auth_end].rfind('@') {
            rest = &rest[at + 1..];
        }
    }
    out.push_str(rest);
    out
}

/// Whether two remote URLs name the same repository (see the module header).
pub(crate) fn same_repo(a: &str, b: &str) -> bool {
    repo_key(a) == repo_key(b)
}

/// A directory name for a clone of `url`: its last path component without `.git`, with
/// anything but ASCII letters, digits, `.`, `_` and `-` replaced (the URL is another
/// machine's word); `repo` when nothing usable is left.
pub(crate) fn repo_name(url: &str) -> String {
    let path = &url[..url.find(['?', '#']).unwrap_or(url.len())];
    let last = path
        .trim_end_matches('/')
        .rsplit(['/', ':'])
        .next()
        .unwrap_or_default();
    let last = last.strip_suffix(".git").unwrap_or(last);
    let name: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() || name.starts_with('.') {
        "repo".into()
    } else {
        name
    }
}

fn repo_key(url: &str) -> String {
    if let Some(path) = url.strip_prefix("file://") {
        let path = path.strip_prefix("localhost").unwrap_or(path);
        return local_key(path);
    }
    if let Some(sep) = url.find("://") {
        let rest = &url[sep + 3..];
        let auth_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (auth, tail) = rest.split_at(auth_end);
        let host_port = &auth[auth.rfind('@').map_or(0, |at| at + 1)..];
        let host = host_port.split(':').next().unwrap_or_default();
        let path = &tail[..tail.find(['?', '#']).unwrap_or(tail.len())];
        return remote_key(host, path);
    }
    // scp-like `[user@]host:path`: a ':' before the first '/'.
    let slash = url.find('/').unwrap_or(url.len());
    if let Some(colon) = url[..slash].find(':') {
        let host = &url[url[..colon].rfind('@').map_or(0, |at| at + 1)..colon];
        return remote_key(host, &url[colon + 1..]);
    }
    local_key(url)
}

fn remote_key(host: &str, path: &str) -> String {
    let path = path.trim_start_matches('/');
    let path = path.trim_end_matches('/');
    let path = path
        .strip_suffix(".git")
        .unwrap_or(path)
        .trim_end_matches('/');
    format!("{}/{path}", host.to_ascii_lowercase())
}

fn local_key(path: &str) -> String {
    let p = Path::new(path);
    let canon = p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    format!("file:{}", canon.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_stripped_and_ssh_users_kept() {
        for (url, want) in [
            (
                "https://user:tok@github.com/a/b.git",
                "https://github.com/a/b.git",
            ),
            ("https://ghp_abc@github.com/a/b", "https://github.com/a/b"),
            (
                "https://github.com/a/b?access_token=x#frag",
                "https://github.com/a/b",
            ),
            ("HTTP://u:p@host:8080/x", "HTTP://host:8080/x"),
            ("ssh://git:pw@host:2222/a/b", "ssh://git@host:2222/a/b"),
            ("ssh://git@host/a/b", "ssh://git@host/a/b"),
            ("git+ssh://me@host/a", "git+ssh://me@host/a"),
            ("git://u:p@host/a", "git://host/a"),
            ("file://u@localhost/srv/a.git", "file://localhost/srv/a.git"),
            ("git@github.com:a/b.git", "git@github.com:a/b.git"),
            ("me:pw@host:a/b", "me@host:a/b"),
            ("/srv/git/a.git", "/srv/git/a.git"),
            ("../a@b:c", "../a@b:c"),
            ("https://host", "https://host"),
        ] {
            assert_eq!(strip_credentials(url), want, "{url}");
        }
    }

    #[test]
    fn free_text_is_scrubbed() {
        assert_eq!(
            scrub_credentials("fatal: 'https://u:t@h/x' and ssh://git@h2/y, at me@host"),
            "fatal: 'https://h/x' and ssh://h2/y, at me@host"
        );
        assert_eq!(scrub_credentials("no urls"), "no urls");
        assert_eq!(scrub_credentials("odd ://@"), "odd ://");
    }

    #[test]
    fn the_same_repository_matches_across_transports() {
        assert!(same_repo(
            "https://github.com/A/b.git",
            "git@GitHub.com:A/b"
        ));
        assert!(same_repo(
            "ssh://git@github.com:22/A/b/",
            "https://tok@github.com/A/b.git"
        ));
        assert!(!same_repo(
            "https://github.com/a/b",
            "https://github.com/a/c"
        ));
        assert!(!same_repo(
            "https://github.com/a/b",
            "https://gitlab.com/a/b"
        ));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("origin.git");
        std::fs::create_dir(&path).unwrap();
        let p = path.display().to_string();
        assert!(same_repo(&p, &format!("file://{p}")));
        assert!(same_repo(
            &p,
            &format!("{}/./origin.git/", dir.path().display())
        ));
        assert!(!same_repo(
            &p,
            &format!("{}/other.git", dir.path().display())
        ));
    }

    #[test]
    fn clone_directory_names() {
        assert_eq!(
            repo_name("https://github.com/a/claude-relay.git"),
            "claude-relay"
        );
        assert_eq!(repo_name("git@host:team/app"), "app");
        assert_eq!(repo_name("/srv/git/origin.git/"), "origin");
        assert_eq!(repo_name("https://host/"), "host");
        assert_eq!(repo_name("/"), "repo");
        assert_eq!(repo_name("https://host/a/.."), "repo");
        assert_eq!(repo_name("https://host/a/b c?x=/y"), "b_c");
    }
}
