//! Who the operator is: one rule for the whole hub, decided by [`decide`] and nowhere else
//! (docs/SECURITY.md, "The operator").
//!
//! The operator may see everything that crosses the hub: the web console and its event
//! stream, `/metrics`, the live feed on a WebSocket (`subscribe`, what `claude-relay tail`
//! uses), and every session's tasks (`task_list` / `task_get` with `all`, what
//! `claude-relay tasks --all` sends). The rule:
//!
//! - **A hub with a token**: whoever presented it — an `Authorization: Bearer` header on an
//!   HTTP request or on the WebSocket upgrade, the `token` field of a frame, or the console's
//!   login cookie (which `/login` hands out only in exchange for the token). Every bridge of
//!   a token hub holds the token, so every bridge may act as the operator: the token is the
//!   operator's key, and whoever is given it is trusted with everything the hub carries.
//! - **A hub without a token** (it binds loopback unless started with `--insecure`): a
//!   loopback peer, asking under a loopback host name (`localhost`, `127.x`, `[::1]`: a page
//!   reached through DNS rebinding names another host) and — when the request carries an
//!   `Origin`, as a browser's always does on a WebSocket — from this hub's own origin, so a
//!   web page of another origin cannot open a WebSocket to the hub and follow its feed.
//!
//! The caller gathers what was presented into a [`Claim`]; the decision, its reasons and
//! their wording live here, so the console, `subscribe` and the task view cannot drift apart.

use std::net::IpAddr;

use crate::auth::token_ok;

/// What one request or connection presented.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Claim<'a> {
    /// The peer's address.
    pub peer: IpAddr,
    /// The `Host` header (or the request's authority).
    pub host: Option<&'a str>,
    /// The `Origin` header.
    pub origin: Option<&'a str>,
    /// Whether the connection is TLS (the hub's own origin is then `https://…`).
    pub tls: bool,
    /// The credential.
    pub key: Key<'a>,
}

/// A credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Key<'a> {
    /// Nothing presented.
    None,
    /// A hub token (a Bearer header or a frame's `token` field), not yet checked.
    Token(&'a str),
    /// A live console login (the cookie named one; logins are made only for the token).
    Login,
}

/// How the operator got in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operator {
    /// Presented the hub token.
    Token,
    /// A console login.
    Login,
    /// A loopback client of a hub without a token.
    Loopback,
}

/// Why someone is not the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Denied {
    /// A hub with a token, and none presented.
    NeedToken,
    /// A wrong token.
    WrongToken,
    /// A hub without a token, and a peer that is not on loopback.
    NotLoopback,
    /// A hub without a token, asked under a host name that is not a loopback one.
    BadHost,
    /// A hub without a token, asked by a page of another origin.
    ForeignOrigin,
}

impl Denied {
    /// What to tell the asker.
    pub(crate) fn why(self) -> &'static str {
        match self {
            Denied::NeedToken => {
                "this hub needs its token: an Authorization: Bearer header, the `token` field, \
                 or log in to the console"
            }
            Denied::WrongToken => "wrong hub token",
            Denied::NotLoopback => {
                "this hub has no token, so the operator's view is only for loopback clients \
                 (start it with --token-file to open it to others)"
            }
            Denied::BadHost => {
                "this hub has no token: reach it as 127.0.0.1:PORT or localhost:PORT"
            }
            Denied::ForeignOrigin => {
                "this hub has no token, so the operator's view is refused to pages of other \
                 origins"
            }
        }
    }
}

impl Operator {
    /// How the operator got in, in one word (the console shows it).
    pub(crate) fn how(self) -> &'static str {
        match self {
            Operator::Token => "token",
            Operator::Login => "login",
            Operator::Loopback => "loopback",
        }
    }
}

/// Decides whether `claim` is the operator of a hub whose token is `token` (None: no token).
pub(crate) fn decide(token: Option<&str>, claim: &Claim<'_>) -> Result<Operator, Denied> {
    let Some(expected) = token else {
        if !claim.peer.is_loopback() {
            return Err(Denied::NotLoopback);
        }
        let Some(host) = claim.host.filter(|h| is_loopback_host(h)) else {
            return Err(Denied::BadHost);
        };
        if let Some(origin) = claim.origin
            && !same_origin(origin, host, claim.tls)
        {
            return Err(Denied::ForeignOrigin);
        }
        return Ok(Operator::Loopback);
    };
    match claim.key {
        Key::Token(t) if token_ok(expected, t) => Ok(Operator::Token),
        Key::Token(_) => Err(Denied::WrongToken),
        Key::Login => Ok(Operator::Login),
        Key::None => Err(Denied::NeedToken),
    }
}

/// Whether `origin` is this hub's own origin, reached as `host` (scheme by `tls`).
pub(crate) fn same_origin(origin: &str, host: &str, tls: bool) -> bool {
    let scheme = if tls { "https" } else { "http" };
    origin
        .strip_prefix(scheme)
        .and_then(|rest| rest.strip_prefix("://"))
        .is_some_and(|o| o.eq_ignore_ascii_case(host))
}

/// `localhost`, `127.x.y.z` or `[::1]`, with or without a port.
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split_once(']').map_or(rest, |(h, _)| h)
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    const REMOTE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7));

    fn claim(peer: IpAddr, host: Option<&'static str>, key: Key<'static>) -> Claim<'static> {
        Claim {
            peer,
            host,
            origin: None,
            tls: false,
            key,
        }
    }

    #[test]
    fn a_token_hub_takes_only_its_token_or_a_login() {
        let t = Some("s3cret");
        let host = Some("127.0.0.1:9");
        // Loopback is no key on a token hub.
        assert_eq!(
            decide(t, &claim(LOOPBACK, host, Key::None)),
            Err(Denied::NeedToken)
        );
        assert_eq!(
            decide(t, &claim(LOOPBACK, host, Key::Token("guess"))),
            Err(Denied::WrongToken)
        );
        assert_eq!(
            decide(t, &claim(REMOTE, Some("hub.example"), Key::Token("s3cret"))),
            Ok(Operator::Token)
        );
        assert_eq!(
            decide(t, &claim(REMOTE, None, Key::Login)),
            Ok(Operator::Login)
        );
    }

    #[test]
    fn a_hub_without_a_token_takes_loopback_under_a_loopback_name_from_its_own_origin() {
        assert_eq!(
            decide(None, &claim(REMOTE, Some("127.0.0.1:9"), Key::None)),
            Err(Denied::NotLoopback)
        );
        assert_eq!(
            decide(None, &claim(LOOPBACK, Some("evil.example:9"), Key::None)),
            Err(Denied::BadHost)
        );
        assert_eq!(
            decide(None, &claim(LOOPBACK, None, Key::None)),
            Err(Denied::BadHost)
        );
        // A token does not stand in for loopback on a hub that has none.
        assert_eq!(
            decide(None, &claim(REMOTE, Some("localhost:9"), Key::Token("x"))),
            Err(Denied::NotLoopback)
        );
        let mut c = claim(LOOPBACK, Some("localhost:9"), Key::None);
        assert_eq!(decide(None, &c), Ok(Operator::Loopback));
        c.origin = Some("https://evil.example");
        assert_eq!(decide(None, &c), Err(Denied::ForeignOrigin));
        c.origin = Some("null");
        assert_eq!(decide(None, &c), Err(Denied::ForeignOrigin));
        c.origin = Some("http://localhost:10");
        assert_eq!(decide(None, &c), Err(Denied::ForeignOrigin));
        c.origin = Some("http://LOCALHOST:9");
        assert_eq!(decide(None, &c), Ok(Operator::Loopback));
        c.tls = true;
        assert_eq!(decide(None, &c), Err(Denied::ForeignOrigin));
    }

    #[test]
    fn loopback_host_names() {
        for h in [
            "127.0.0.1:9999",
            "localhost",
            "LOCALHOST:1",
            "[::1]:80",
            "127.1.2.3",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "evil.example",
            "10.0.0.1:9999",
            "localhost.evil.example",
            "[::2]:1",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }
}
