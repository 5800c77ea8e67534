//! Read-after-write at the source: ask every authoritative nameserver of the
//! zone directly (RD=0, UDP then TCP on truncation) until each one serves
//! exactly the desired RRset, or the deadline passes. Also finds a zone's
//! authoritative servers (NS → addresses) when the plan does not list them.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use hickory_proto::rr::{RData, RecordType as WireType};

use super::wire::{self, answer_set, rcode_words, wire_type};
use super::{RecordSet, fqdn};

/// How to verify.
#[derive(Debug, Clone, Copy)]
pub struct VerifyOptions {
    /// Compare TTLs too (false for providers that cannot set one, e.g. DreamHost).
    pub check_ttl: bool,
    /// Wait between rounds of queries.
    pub interval: Duration,
    /// Timeout of one query.
    pub query_timeout: Duration,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            check_ttl: true,
            interval: Duration::from_millis(500),
            query_timeout: Duration::from_secs(2),
        }
    }
}

/// Outcome of a read-after-write check at the authoritative servers.
#[derive(Debug, Clone)]
pub struct Verification {
    /// Per nameserver: what it served (`Ok(None)` = no such RRset; `Err` = no
    /// usable answer, with the reason).
    pub servers: Vec<(SocketAddr, Result<Option<RecordSet>, String>)>,
    /// Rounds of queries made.
    pub rounds: u32,
}

impl Verification {
    /// True when every nameserver answered with exactly the desired values and TTL.
    pub fn agrees_with(&self, desired: &RecordSet) -> bool {
        self.agrees(desired, true)
    }

    /// True when every nameserver answered with exactly the desired values
    /// (any TTL).
    pub fn agrees_on_values(&self, desired: &RecordSet) -> bool {
        self.agrees(desired, false)
    }

    fn agrees(&self, desired: &RecordSet, check_ttl: bool) -> bool {
        !self.servers.is_empty()
            && self.servers.iter().all(|(_, got)| match got {
                Ok(Some(rs)) => {
                    rs.name == desired.name
                        && rs.rtype == desired.rtype
                        && same_values(&rs.values, &desired.values)
                        && (!check_ttl || rs.ttl == desired.ttl)
                }
                _ => false,
            })
    }

    /// One line per server that does not agree, for logs and errors.
    pub fn disagreements(&self, desired: &RecordSet, check_ttl: bool) -> Vec<String> {
        if self.servers.is_empty() {
            return vec!["no nameservers to ask".into()];
        }
        self.servers
            .iter()
            .filter_map(|(ns, got)| match got {
                Ok(Some(rs))
                    if same_values(&rs.values, &desired.values)
                        && (!check_ttl || rs.ttl == desired.ttl) =>
                {
                    None
                }
                Ok(Some(rs)) => Some(format!(
                    "{ns} serves {} (want {})",
                    rs.describe(),
                    desired.describe()
                )),
                Ok(None) => Some(format!("{ns} has no {} {}", desired.rtype, desired.name)),
                Err(e) => Some(format!("{ns}: {e}")),
            })
            .collect()
    }
}

/// The same values in any order (a set built by hand need not be sorted).
fn same_values(a: &[String], b: &[String]) -> bool {
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort();
    a.dedup();
    b.sort();
    b.dedup();
    a == b
}

/// Queries each authoritative server (RD=0) for `name`/`rtype` until all agree
/// with `desired` (values and TTL) or `deadline` passes; returns the last
/// observation either way.
pub async fn verify(
    nameservers: &[SocketAddr],
    desired: &RecordSet,
    deadline: Duration,
) -> Verification {
    verify_with(nameservers, desired, deadline, VerifyOptions::default()).await
}

/// [`verify`] with options.
pub async fn verify_with(
    nameservers: &[SocketAddr],
    desired: &RecordSet,
    deadline: Duration,
    opts: VerifyOptions,
) -> Verification {
    let started = Instant::now();
    let mut rounds = 0;
    loop {
        rounds += 1;
        let servers = join_all(
            nameservers
                .iter()
                .map(|ns| async move { (*ns, observe(*ns, desired, opts.query_timeout).await) }),
        )
        .await;
        let v = Verification { servers, rounds };
        if v.agrees(desired, opts.check_ttl) || started.elapsed() + opts.interval > deadline {
            if !v.agrees(desired, opts.check_ttl) {
                tracing::warn!(
                    set = %desired.describe(),
                    disagreements = ?v.disagreements(desired, opts.check_ttl),
                    "authoritative servers do not agree yet; giving up at the deadline"
                );
            }
            return v;
        }
        tokio::time::sleep(opts.interval).await;
    }
}

async fn observe(
    ns: SocketAddr,
    desired: &RecordSet,
    timeout: Duration,
) -> Result<Option<RecordSet>, String> {
    let msg = wire::query(ns, &desired.name, wire_type(desired.rtype), false, timeout)
        .await
        .map_err(|e| e.to_string())?;
    if !msg.metadata.authoritative {
        return Err(format!(
            "not authoritative for {} ({})",
            desired.name,
            rcode_words(msg.metadata.response_code)
        ));
    }
    answer_set(&msg, &desired.name, desired.rtype)
}

/// The authoritative servers of `zone` as `resolver` (a recursive resolver,
/// e.g. [`system_resolver`]) sees them: its NS records, each resolved to its
/// IPv4 and IPv6 addresses (glue when given), port 53.
pub async fn discover_nameservers(
    zone: &str,
    resolver: SocketAddr,
) -> Result<Vec<SocketAddr>, String> {
    let zone = fqdn(zone);
    let t = wire::TIMEOUT;
    let ns_msg = wire::query(resolver, &zone, WireType::NS, true, t)
        .await
        .map_err(|e| format!("asking {resolver} for the NS records of {zone}: {e}"))?;
    let names: Vec<String> = ns_msg
        .answers
        .iter()
        .filter(|r| fqdn(&r.name.to_ascii()) == zone)
        .filter_map(|r| match &r.data {
            RData::NS(ns) => Some(fqdn(&ns.0.to_ascii())),
            _ => None,
        })
        .collect();
    if names.is_empty() {
        return Err(format!(
            "{resolver} returned no NS records for {zone} ({})",
            rcode_words(ns_msg.metadata.response_code)
        ));
    }
    let mut out: Vec<SocketAddr> = Vec::new();
    for name in &names {
        let mut ips: Vec<IpAddr> = glue(&ns_msg, name);
        if ips.is_empty() {
            for qtype in [WireType::A, WireType::AAAA] {
                if let Ok(m) = wire::query(resolver, name, qtype, true, t).await {
                    ips.extend(glue_in(&m.answers, name));
                }
            }
        }
        if ips.is_empty() {
            tracing::warn!(nameserver = %name, "no address found for a nameserver of {zone}");
        }
        out.extend(ips.into_iter().map(|ip| SocketAddr::new(ip, 53)));
    }
    out.sort();
    out.dedup();
    if out.is_empty() {
        return Err(format!(
            "none of the nameservers of {zone} ({}) has an address",
            names.join(", ")
        ));
    }
    Ok(out)
}

fn glue(msg: &hickory_proto::op::Message, name: &str) -> Vec<IpAddr> {
    glue_in(&msg.additionals, name)
}

fn glue_in(records: &[hickory_proto::rr::Record], name: &str) -> Vec<IpAddr> {
    records
        .iter()
        .filter(|r| fqdn(&r.name.to_ascii()) == name)
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

/// The first `nameserver` of `/etc/resolv.conf`, port 53.
pub fn system_resolver() -> Result<SocketAddr, String> {
    let text = std::fs::read_to_string("/etc/resolv.conf")
        .map_err(|e| format!("reading /etc/resolv.conf: {e}"))?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.trim().split('%').next()?.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .next()
        .ok_or_else(|| "no nameserver line in /etc/resolv.conf".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::RecordType;

    fn set(ttl: u32, values: &[&str]) -> RecordSet {
        RecordSet::new("package.elm.test", RecordType::A, ttl, values).unwrap()
    }

    #[test]
    fn agreement_needs_every_server() {
        let want = set(60, &["10.0.0.2"]);
        let a: SocketAddr = "127.0.0.1:53".parse().unwrap();
        let b: SocketAddr = "127.0.0.2:53".parse().unwrap();
        let v = Verification {
            servers: vec![
                (a, Ok(Some(want.clone()))),
                (b, Ok(Some(set(300, &["10.0.0.2"])))),
            ],
            rounds: 1,
        };
        assert!(!v.agrees_with(&want));
        assert!(v.agrees_on_values(&want));
        assert_eq!(v.disagreements(&want, true).len(), 1);
        let v = Verification {
            servers: vec![(a, Ok(Some(want.clone()))), (b, Err("timeout".into()))],
            rounds: 1,
        };
        assert!(!v.agrees_on_values(&want));
        let none = Verification {
            servers: vec![],
            rounds: 1,
        };
        assert!(!none.agrees_with(&want));
    }

    #[test]
    fn order_of_values_does_not_matter() {
        let got = set(60, &["10.0.0.1", "10.0.0.2"]);
        let unsorted = RecordSet {
            values: vec!["10.0.0.2".into(), "10.0.0.1".into()],
            ..got.clone()
        };
        let v = Verification {
            servers: vec![("127.0.0.1:53".parse().unwrap(), Ok(Some(got)))],
            rounds: 1,
        };
        assert!(v.agrees_with(&unsorted));
    }
}
