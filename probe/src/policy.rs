//! What the probe is willing to connect to, fixed by the volunteer when the
//! probe starts and never changed by the coordinator: a probe runs on someone
//! else's machine, so an assignment must not be able to point it at any host
//! on the internet or at the volunteer's own network.
//!
//! Two rules, checked before any connection is made:
//! - **Allowlist**: every host a check names (URL hosts, the TLS host, DNS
//!   names queried, a `Host` header) and every host reached later (a redirect,
//!   the archive URL in `endpoint.json`) must equal one of the allowed domains
//!   or be under it (`elm-lang.org` allows `package.elm-lang.org`, not
//!   `evilelm-lang.org`).
//! - **No private addresses**: addresses the assignment or a DNS answer makes
//!   the probe connect to (pinned site addresses, resolved addresses, listed
//!   resolvers, authoritative name servers) must be public unless the
//!   volunteer started the probe with `--allow-private-addresses`. The
//!   coordinator's address and the volunteer's own `--resolver` are the
//!   volunteer's configuration, not the assignment's, and are not checked.
//!
//! A refusal is logged at warn, naming the check (from [`in_check`]), and the
//! run fails without touching the network.

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};

/// Distinct dynamic refusal lines remembered to log each once; past this the
/// memory is cleared (and lines may repeat) rather than growing without bound.
const WARNED_CAPACITY: usize = 1024;

/// The volunteer's rules. Cheap to clone; immutable after construction.
#[derive(Clone)]
pub struct Policy {
    inner: Arc<Inner>,
}

struct Inner {
    /// `None`: any domain (`--allow-any-domain`, for labs).
    domains: Option<Vec<String>>,
    allow_private: bool,
    warned: Mutex<HashSet<String>>,
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("domains", &self.inner.domains)
            .field("allow_private", &self.inner.allow_private)
            .finish()
    }
}

/// Why a host or an address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The host is outside the allowlist.
    #[error("host {host} is not under the allowed domains {allowed}")]
    Host { host: String, allowed: String },
    /// A private, loopback or otherwise non-public address.
    #[error("{what} {addr} is {class}, refused without --allow-private-addresses")]
    Address {
        /// What the address is, e.g. "site new address", "resolver".
        what: String,
        addr: String,
        /// From [`address_class`], e.g. "a loopback address".
        class: &'static str,
    },
}

impl Policy {
    /// Only hosts under `domains` (normalised with [`normalize_domain`]);
    /// private addresses only if `allow_private`.
    pub fn new(domains: Vec<String>, allow_private: bool) -> Self {
        Self::build(Some(domains), allow_private)
    }

    /// Any domain (`--allow-any-domain`); private addresses only if `allow_private`.
    pub fn any_domain(allow_private: bool) -> Self {
        Self::build(None, allow_private)
    }

    /// No restriction at all: unit tests against local stand-ins.
    pub fn unrestricted() -> Self {
        Self::build(None, true)
    }

    fn build(domains: Option<Vec<String>>, allow_private: bool) -> Self {
        Self {
            inner: Arc::new(Inner {
                domains,
                allow_private,
                warned: Mutex::new(HashSet::new()),
            }),
        }
    }

    /// The allowed domains, `None` for any.
    pub fn domains(&self) -> Option<&[String]> {
        self.inner.domains.as_deref()
    }

    /// Whether private and loopback addresses are allowed.
    pub fn allows_private(&self) -> bool {
        self.inner.allow_private
    }

    /// The allowlist as logged: `elm-lang.org, elm.test`, or `any domain`.
    pub fn describe(&self) -> String {
        match &self.inner.domains {
            Some(d) => d.join(", "),
            None => "any domain".into(),
        }
    }

    /// `host` (a name or an IP literal, as in a URL) must be allowed.
    pub fn check_host(&self, host: &str) -> Result<(), Refusal> {
        let Some(domains) = &self.inner.domains else {
            return Ok(());
        };
        if host_allowed(host, domains) {
            Ok(())
        } else {
            Err(Refusal::Host {
                host: host.trim_end_matches('.').to_owned(),
                allowed: self.describe(),
            })
        }
    }

    /// `addr` (`what` says what it is, for the message) must be public.
    pub fn check_address(&self, ip: IpAddr, what: &str) -> Result<(), Refusal> {
        self.check_address_text(ip, &ip.to_string(), what)
    }

    /// Like [`Policy::check_address`], showing `addr` (e.g. `IP:PORT`) in the message.
    pub fn check_address_text(&self, ip: IpAddr, addr: &str, what: &str) -> Result<(), Refusal> {
        if self.inner.allow_private {
            return Ok(());
        }
        match address_class(ip) {
            None => Ok(()),
            Some(class) => Err(Refusal::Address {
                what: what.to_owned(),
                addr: addr.to_owned(),
                class,
            }),
        }
    }

    /// Logs a refusal at warn, naming the running check: for refusals decided
    /// once per assignment.
    pub fn warn(&self, refusal: &Refusal) {
        tracing::warn!("{}", refusal_line(refusal));
    }

    /// Logs a refusal at warn the first time this exact line comes up, at
    /// debug afterwards: for refusals met on every run of a check.
    pub fn warn_once(&self, refusal: &Refusal) {
        let line = refusal_line(refusal);
        let first = match self.inner.warned.lock() {
            Ok(mut seen) => {
                if seen.len() >= WARNED_CAPACITY {
                    seen.clear();
                }
                seen.insert(line.clone())
            }
            Err(_) => true,
        };
        if first {
            tracing::warn!("{line}");
        } else {
            tracing::debug!("{line}");
        }
    }

    /// Forgets which refusals were logged (a new assignment logs them again).
    pub fn reset_warnings(&self) {
        if let Ok(mut seen) = self.inner.warned.lock() {
            seen.clear();
        }
    }
}

/// The check a refusal happens in, for the log line.
#[derive(Debug, Clone)]
struct Scope {
    check: String,
    target: &'static str,
}

tokio::task_local! {
    static SCOPE: Scope;
}

/// Runs `fut` (one run of `check` against `target`) so that refusals inside
/// it are logged with the check's id.
pub async fn in_check<F: Future>(check: &str, target: &'static str, fut: F) -> F::Output {
    SCOPE
        .scope(
            Scope {
                check: check.to_owned(),
                target,
            },
            fut,
        )
        .await
}

/// `refusing check ID (target T): REASON`, or without the check outside one.
pub fn refusal_line(refusal: &Refusal) -> String {
    match SCOPE.try_with(Scope::clone) {
        Ok(s) => format_refusal(&s.check, Some(s.target), refusal),
        Err(_) => format!("refusing: {refusal}"),
    }
}

/// The log line of a refusal of `check` (and of one `target` of it, when the
/// refusal is about that target only).
pub fn format_refusal(check: &str, target: Option<&str>, refusal: &Refusal) -> String {
    match target {
        Some(t) if matches!(refusal, Refusal::Address { .. }) => {
            format!("refusing check {check} (target {t}): {refusal}")
        }
        _ => format!("refusing check {check}: {refusal}"),
    }
}

/// Whether `host` equals one of `domains` or is under one (a dot boundary:
/// `evilelm-lang.org` is not under `elm-lang.org`). Case and a trailing dot
/// are ignored; an IP literal matches only itself.
pub fn host_allowed(host: &str, domains: &[String]) -> bool {
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase();
    if host.is_empty() {
        return false;
    }
    domains.iter().any(|d| {
        host == *d
            || (host.len() > d.len()
                && host.ends_with(d.as_str())
                && host.as_bytes()[host.len() - d.len() - 1] == b'.'
                && d.parse::<IpAddr>().is_err())
    })
}

/// Normalises an `--allow-domain` value: lower case, no trailing dot. Errors
/// say what is wrong with it (a URL, a wildcard, a port).
pub fn normalize_domain(raw: &str) -> Result<String, String> {
    let d = raw.trim().trim_end_matches('.').to_ascii_lowercase();
    if d.is_empty() {
        return Err(format!("allowed domain {raw:?} is empty"));
    }
    if d.contains("://") || d.contains('/') {
        return Err(format!(
            "allowed domain {raw:?}: expected a domain name like elm-lang.org, not a URL"
        ));
    }
    if let Some(rest) = d.strip_prefix("*.") {
        return Err(format!(
            "allowed domain {raw:?}: write {rest:?} without the wildcard; a domain always covers its subdomains"
        ));
    }
    let ip = d.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = ip.parse::<IpAddr>() {
        return Ok(ip.to_string());
    }
    let labels_ok = d.split('.').all(|l| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    if !labels_ok || d.len() > 253 {
        return Err(format!(
            "allowed domain {raw:?}: expected a domain name like elm-lang.org (letters, digits, '-', dots; no port)"
        ));
    }
    Ok(d)
}

/// Why `ip` is not a public address, or `None` when it is. Covers loopback,
/// RFC 1918, link-local, shared CGNAT space (100.64.0.0/10), unique local
/// IPv6 (fc00::/7), the unspecified address, multicast and broadcast; an
/// IPv4-mapped IPv6 address is judged as its IPv4 address.
pub fn address_class(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_class(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4_class(v4),
            None => v6_class(v6),
        },
    }
}

fn v4_class(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    if o[0] == 0 {
        Some("an unspecified (0.0.0.0/8) address")
    } else if ip.is_loopback() {
        Some("a loopback address")
    } else if ip.is_private() {
        Some("a private (RFC 1918) address")
    } else if ip.is_link_local() {
        Some("a link-local address")
    } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
        Some("a shared (CGNAT, 100.64.0.0/10) address")
    } else if ip.is_multicast() {
        Some("a multicast address")
    } else if ip.is_broadcast() {
        Some("the broadcast address")
    } else {
        None
    }
}

fn v6_class(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    if ip.is_unspecified() {
        Some("the unspecified address")
    } else if ip.is_loopback() {
        Some("a loopback address")
    } else if (first & 0xfe00) == 0xfc00 {
        Some("a unique local (fc00::/7) address")
    } else if (first & 0xffc0) == 0xfe80 {
        Some("a link-local address")
    } else if ip.is_multicast() {
        Some("a multicast address")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domains(d: &[&str]) -> Vec<String> {
        d.iter().map(|s| normalize_domain(s).unwrap()).collect()
    }

    #[test]
    fn allowlist_matches_exact_names_and_subdomains_only() {
        let d = domains(&["elm-lang.org", "Elm.Test."]);
        for ok in [
            "elm-lang.org",
            "package.elm-lang.org",
            "a.b.elm-lang.org",
            "ELM-LANG.ORG.",
            "elm.test",
            "package.elm.test",
        ] {
            assert!(host_allowed(ok, &d), "{ok} should be allowed");
        }
        for no in [
            "evilelm-lang.org",
            "elm-lang.org.evil.example",
            "lang.org",
            "org",
            "elm-lang.com",
            "",
            "notelm.test",
        ] {
            assert!(!host_allowed(no, &d), "{no} should be refused");
        }
    }

    #[test]
    fn ip_literals_match_only_themselves() {
        let d = domains(&["203.0.113.5", "[2001:db8::1]"]);
        assert!(host_allowed("203.0.113.5", &d));
        assert!(host_allowed("[2001:db8::1]", &d));
        assert!(!host_allowed("1.203.0.113.5", &d));
        assert!(!host_allowed("203.0.113.6", &d));
    }

    #[test]
    fn domain_values_are_checked() {
        assert_eq!(normalize_domain(" Elm-Lang.org. ").unwrap(), "elm-lang.org");
        for bad in [
            "",
            "https://elm-lang.org",
            "elm-lang.org/x",
            "elm-lang.org:443",
            "-a.org",
            "a..org",
        ] {
            assert!(normalize_domain(bad).is_err(), "{bad:?} accepted");
        }
        let e = normalize_domain("*.elm-lang.org").unwrap_err();
        assert!(e.contains("\"elm-lang.org\""), "{e}");
    }

    #[test]
    fn address_classifier() {
        let private = [
            "127.0.0.1",
            "127.8.9.10",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "0.0.0.0",
            "224.0.0.251",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
        ];
        for a in private {
            assert!(
                address_class(a.parse().unwrap()).is_some(),
                "{a} should be refused"
            );
        }
        let public = [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "172.15.255.255",
            "100.63.255.255",
            "100.128.0.1",
            "192.169.0.1",
            "203.0.113.10",
            "2001:db8::20",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
        ];
        for a in public {
            assert_eq!(address_class(a.parse().unwrap()), None, "{a} is public");
        }
        assert_eq!(
            address_class("192.168.0.7".parse().unwrap()),
            Some("a private (RFC 1918) address")
        );
    }

    #[test]
    fn refusal_messages_name_host_allowlist_and_flag() {
        let p = Policy::new(domains(&["elm-lang.org", "elm.test"]), false);
        let r = p.check_host("evil.example").unwrap_err();
        assert_eq!(
            format_refusal("install-core", None, &r),
            "refusing check install-core: host evil.example is not under the allowed domains elm-lang.org, elm.test"
        );
        let r = p
            .check_address("10.0.0.5".parse().unwrap(), "site new address")
            .unwrap_err();
        assert_eq!(
            format_refusal("install-core", Some("new"), &r),
            "refusing check install-core (target new): site new address 10.0.0.5 is a private (RFC 1918) address, refused without --allow-private-addresses"
        );
        assert!(p.check_host("package.elm-lang.org").is_ok());
        assert!(p.check_address("1.1.1.1".parse().unwrap(), "x").is_ok());
        let lab = Policy::any_domain(true);
        assert!(lab.check_host("anything.example").is_ok());
        assert!(lab.check_address("127.0.0.1".parse().unwrap(), "x").is_ok());
    }

    #[tokio::test]
    async fn refusal_line_names_the_running_check() {
        let r = Refusal::Host {
            host: "x.example".into(),
            allowed: "elm.test".into(),
        };
        assert_eq!(
            refusal_line(&r),
            "refusing: host x.example is not under the allowed domains elm.test"
        );
        let line = in_check("home", "dns", async { refusal_line(&r) }).await;
        assert_eq!(
            line,
            "refusing check home: host x.example is not under the allowed domains elm.test"
        );
    }
}
