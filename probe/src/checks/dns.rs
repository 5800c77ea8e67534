//! `dns`: asks each resolver directly — the probe's own (system or
//! `--resolver`), the listed public ones, and each authoritative name server of
//! a zone without recursion — and reports rcode, addresses, the remaining TTL,
//! the SOA serial (authoritative) and latency, classifying each answer as
//! old/new/mixed/other against the sites. Raw queries, not a stub resolver,
//! so the TTL a cache counts down and a SERVFAIL are seen as they are.

use std::net::{IpAddr, SocketAddr};

use cutover_proto::v1::{
    AnswerClass, DnsDetail, DnsParams, FailureKind, ResolverAnswer, ResolverKind, Target,
    check_result::Detail,
};
use futures_util::future::{BoxFuture, join_all};
use hickory_proto::rr::{Name, RData, RecordType};

use super::{Check, CheckContext, CheckOutcome, Sites};
use crate::config::parse_resolver;
use crate::net::dns::{absolute_name, query, rcode_name};
use crate::net::micros;

/// A validated `dns` check.
#[derive(Debug)]
pub struct DnsCheck {
    name: Name,
    rtype: RecordType,
    system: bool,
    resolvers: Vec<SocketAddr>,
    zone: Option<Name>,
}

/// One server to ask.
#[derive(Debug, Clone)]
struct Server {
    label: String,
    addr: SocketAddr,
    kind: ResolverKind,
}

impl DnsCheck {
    pub fn new(p: &DnsParams) -> Result<Self, String> {
        let name = absolute_name(p.name.trim())?;
        let rtype = match p.record_type.trim().to_ascii_uppercase().as_str() {
            "" | "A" => RecordType::A,
            "AAAA" => RecordType::AAAA,
            other => return Err(format!("record_type {other:?}: expected A or AAAA")),
        };
        let resolvers = p
            .resolvers
            .iter()
            .map(|r| {
                parse_resolver(r.trim())
                    .ok_or_else(|| format!("resolver {r:?}: expected IP or IP:PORT"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let zone = match p.authoritative_zone.trim() {
            "" => None,
            z => Some(absolute_name(z)?),
        };
        if !p.system_resolver && resolvers.is_empty() && zone.is_none() {
            return Err("dns check asks no resolver: enable system_resolver, list resolvers or set authoritative_zone".into());
        }
        Ok(Self {
            name,
            rtype,
            system: p.system_resolver,
            resolvers,
            zone,
        })
    }

    async fn run_inner(&self, ctx: &CheckContext) -> CheckOutcome {
        let mut servers = Vec::new();
        let mut answers = Vec::new();
        let system_servers = ctx.http.resolver().servers();
        if self.system {
            match system_servers.first() {
                Some(addr) => servers.push(Server {
                    label: addr.to_string(),
                    addr: *addr,
                    kind: ResolverKind::System,
                }),
                None => answers.push(ResolverAnswer {
                    resolver: "system".into(),
                    kind: ResolverKind::System as i32,
                    error: "no system resolver configured".into(),
                    ..Default::default()
                }),
            }
        }
        servers.extend(self.resolvers.iter().map(|addr| Server {
            label: addr.to_string(),
            addr: *addr,
            kind: ResolverKind::Listed,
        }));
        if let Some(zone) = &self.zone {
            match self.authoritative_servers(ctx, zone).await {
                Ok(found) => servers.extend(found),
                Err(error) => answers.push(ResolverAnswer {
                    resolver: format!("authoritative for {zone}"),
                    kind: ResolverKind::Authoritative as i32,
                    error,
                    ..Default::default()
                }),
            }
        }
        answers.extend(join_all(servers.iter().map(|s| self.ask(ctx, s))).await);
        evaluate(&self.name, answers)
    }

    /// NS names of `zone` via the probe's resolver, then their addresses.
    async fn authoritative_servers(
        &self,
        ctx: &CheckContext,
        zone: &Name,
    ) -> Result<Vec<Server>, String> {
        let resolver = ctx
            .http
            .resolver()
            .servers()
            .first()
            .copied()
            .ok_or_else(|| {
                format!("cannot find the name servers of {zone}: no system resolver configured")
            })?;
        let resp = query(resolver, zone, RecordType::NS, true, ctx.dns_timeout)
            .await
            .map_err(|e| format!("cannot find the name servers of {zone}: {e}"))?;
        let rcode = rcode_name(&resp.message);
        let mut names: Vec<Name> = resp
            .message
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::NS(ns) => Some(ns.0.clone()),
                _ => None,
            })
            .collect();
        names.sort();
        names.dedup();
        if names.is_empty() {
            return Err(format!(
                "{resolver} lists no NS records for {zone} (rcode {rcode})"
            ));
        }
        let mut servers = Vec::new();
        let mut errors = Vec::new();
        for ns in names {
            match ctx.http.resolver().lookup_ip(&ns.to_string()).await {
                Ok(ips) => servers.extend(ips.into_iter().map(|ip: IpAddr| {
                    let addr = SocketAddr::new(ip, ctx.authoritative_port);
                    Server {
                        label: format!("{ns} {addr}"),
                        addr,
                        kind: ResolverKind::Authoritative,
                    }
                })),
                Err(e) => errors.push(e.to_string()),
            }
        }
        if servers.is_empty() {
            return Err(format!(
                "no address for any name server of {zone}: {}",
                errors.join("; ")
            ));
        }
        Ok(servers)
    }

    async fn ask(&self, ctx: &CheckContext, s: &Server) -> ResolverAnswer {
        let authoritative = s.kind == ResolverKind::Authoritative;
        let mut answer = ResolverAnswer {
            resolver: s.label.clone(),
            kind: s.kind as i32,
            ..Default::default()
        };
        // The probe's own resolver is the volunteer's choice; listed resolvers
        // and name servers come from the assignment and DNS answers.
        if s.kind != ResolverKind::System {
            let what = if authoritative {
                "name server"
            } else {
                "resolver"
            };
            let policy = ctx.http.policy();
            if let Err(r) = policy.check_address_text(s.addr.ip(), &s.label, what) {
                policy.warn_once(&r);
                answer.error = format!("refused by this probe's safety rules: {r}");
                answer.class = AnswerClass::Other as i32;
                return answer;
            }
        }
        match query(
            s.addr,
            &self.name,
            self.rtype,
            !authoritative,
            ctx.dns_timeout,
        )
        .await
        {
            Ok(resp) => {
                answer.rcode = rcode_name(&resp.message);
                answer.latency_us = micros(resp.latency);
                let mut ttl: Option<u32> = None;
                for r in &resp.message.answers {
                    let ip = match &r.data {
                        RData::A(a) if self.rtype == RecordType::A => IpAddr::V4(a.0),
                        RData::AAAA(a) if self.rtype == RecordType::AAAA => IpAddr::V6(a.0),
                        _ => continue,
                    };
                    answer.addresses.push(ip.to_string());
                    ttl = Some(ttl.map_or(r.ttl, |t| t.min(r.ttl)));
                }
                answer.ttl = ttl.unwrap_or(0);
                answer.class = classify(&answer.addresses, &ctx.sites) as i32;
            }
            Err(e) => {
                answer.error = e.to_string();
                answer.class = AnswerClass::Other as i32;
                return answer;
            }
        }
        if authoritative && let Some(zone) = &self.zone {
            // The serial tells whether every authoritative server has the change.
            match query(s.addr, zone, RecordType::SOA, false, ctx.dns_timeout).await {
                Ok(resp) => {
                    answer.soa_serial = resp
                        .message
                        .answers
                        .iter()
                        .chain(resp.message.authorities.iter())
                        .find_map(|r| match &r.data {
                            RData::SOA(soa) => Some(soa.serial),
                            _ => None,
                        })
                        .unwrap_or(0);
                }
                Err(e) => tracing::debug!(server = %s.label, error = %e, "SOA query failed"),
            }
        }
        answer
    }
}

/// Which site the addresses point at.
pub fn classify(addresses: &[String], sites: &Sites) -> AnswerClass {
    let mut old = false;
    let mut new = false;
    for a in addresses {
        let Ok(ip) = a.parse::<IpAddr>() else {
            return AnswerClass::Other;
        };
        let in_old = sites.old.contains(&ip);
        let in_new = sites.new.contains(&ip);
        if !in_old && !in_new {
            return AnswerClass::Other;
        }
        // An address shared by both sites says nothing about which one is live.
        old |= in_old && !in_new;
        new |= in_new && !in_old;
    }
    match (old, new) {
        (true, false) => AnswerClass::Old,
        (false, true) => AnswerClass::New,
        (true, true) => AnswerClass::Mixed,
        (false, false) => AnswerClass::Other,
    }
}

/// Fails on a missing response or rcode ≠ NOERROR (`Dns`), or on an answer
/// outside both sites (`UnexpectedAnswer`); every problem is named.
fn evaluate(name: &Name, answers: Vec<ResolverAnswer>) -> CheckOutcome {
    let mut dns_problems = Vec::new();
    let mut answer_problems = Vec::new();
    for a in &answers {
        if !a.error.is_empty() {
            dns_problems.push(format!("{}: {}", a.resolver, a.error));
        } else if a.rcode != "NOERROR" {
            dns_problems.push(format!("{} answered {}", a.resolver, a.rcode));
        } else if a.class == AnswerClass::Other as i32 {
            if a.addresses.is_empty() {
                answer_problems.push(format!("{} has no address for {name}", a.resolver));
            } else {
                answer_problems.push(format!(
                    "{} answered {} (neither old nor new)",
                    a.resolver,
                    a.addresses.join(", ")
                ));
            }
        }
    }
    let detail = Some(Detail::Dns(DnsDetail {
        name: name.to_string(),
        answers,
    }));
    let (kind, problems) = if !dns_problems.is_empty() {
        dns_problems.extend(answer_problems);
        (FailureKind::Dns, dns_problems)
    } else if !answer_problems.is_empty() {
        (FailureKind::UnexpectedAnswer, answer_problems)
    } else {
        return CheckOutcome::success(detail);
    };
    CheckOutcome::failure(kind, format!("{name}: {}", problems.join("; ")), detail)
}

impl Check for DnsCheck {
    fn kind(&self) -> &'static str {
        "dns"
    }

    fn hosts(&self) -> Vec<String> {
        let mut h = vec![self.name.to_string()];
        h.extend(self.zone.iter().map(Name::to_string));
        h
    }

    fn listed_resolvers(&self) -> Vec<SocketAddr> {
        self.resolvers.clone()
    }

    /// The probe's resolvers are the target: one run per tick.
    fn targets(&self, _spec: &[Target]) -> Vec<Target> {
        vec![Target::Dns]
    }

    fn run<'a>(&'a self, ctx: &'a CheckContext, _target: Target) -> BoxFuture<'a, CheckOutcome> {
        Box::pin(self.run_inner(ctx))
    }
}

#[cfg(test)]
mod tests {
    use tokio::net::UdpSocket;

    use super::*;
    use crate::testutil::{TestCa, context, dns_responder as responder};
    use cutover_proto::v1::Outcome;

    fn sites() -> Sites {
        Sites {
            old: vec!["127.0.0.10".parse().unwrap()],
            new: vec!["127.0.0.20".parse().unwrap()],
        }
    }

    fn params(n: &str) -> DnsParams {
        DnsParams {
            name: n.into(),
            record_type: "A".into(),
            system_resolver: true,
            ..Default::default()
        }
    }

    fn detail(o: &CheckOutcome) -> DnsDetail {
        match &o.detail {
            Some(Detail::Dns(d)) => d.clone(),
            other => panic!("no dns detail: {other:?}"),
        }
    }

    #[tokio::test]
    async fn system_listed_and_authoritative_answers_with_ttl_serial_and_class() {
        let r = responder().await;
        let mut ctx = context(TestCa::new().roots(), sites(), Some(r.addr));
        ctx.authoritative_port = r.addr.port();
        let mut p = params("www.elm.test");
        p.resolvers = vec![r.addr.to_string()];
        p.authoritative_zone = "elm.test".into();
        let check = DnsCheck::new(&p).unwrap();
        assert_eq!(
            check.targets(&[Target::Old, Target::New]),
            vec![Target::Dns]
        );
        let out = check.run(&ctx, Target::Dns).await;
        assert_eq!(out.outcome, Outcome::Success, "{out:?}");
        let d = detail(&out);
        assert_eq!(d.answers.len(), 3);
        for a in &d.answers {
            assert_eq!(a.rcode, "NOERROR");
            assert_eq!(a.addresses, vec!["127.0.0.20"]);
            assert_eq!(a.ttl, 287);
            assert_eq!(a.class, AnswerClass::New as i32);
            assert!(a.latency_us > 0);
        }
        let auth = d
            .answers
            .iter()
            .find(|a| a.kind == ResolverKind::Authoritative as i32)
            .unwrap();
        assert_eq!(auth.soa_serial, 2026112701);
        assert!(
            auth.resolver.starts_with("ns1.elm.test."),
            "{}",
            auth.resolver
        );
        // The authoritative query went out without recursion, the others with.
        let seen = r.rd_seen.lock().unwrap().clone();
        let www: Vec<bool> = seen
            .iter()
            .filter(|(n, _)| n == "www.elm.test.")
            .map(|(_, rd)| *rd)
            .collect();
        assert_eq!(www.iter().filter(|rd| !**rd).count(), 1, "{seen:?}");
        assert_eq!(www.iter().filter(|rd| **rd).count(), 2, "{seen:?}");
    }

    #[tokio::test]
    async fn a_private_name_server_is_refused_but_the_own_resolver_is_asked() {
        let r = responder().await;
        let mut ctx = context(TestCa::new().roots(), sites(), Some(r.addr));
        ctx.http = crate::net::HttpClient::new(
            TestCa::new().roots(),
            crate::net::SystemResolver::with_server(r.addr).unwrap(),
            crate::policy::Policy::new(vec!["elm.test".into()], false),
        )
        .unwrap();
        ctx.authoritative_port = r.addr.port();
        let mut p = params("www.elm.test");
        p.authoritative_zone = "elm.test".into();
        let out = DnsCheck::new(&p).unwrap().run(&ctx, Target::Dns).await;
        let d = detail(&out);
        let system = &d.answers[0];
        assert_eq!(system.kind, ResolverKind::System as i32);
        assert_eq!(
            system.rcode, "NOERROR",
            "the volunteer's resolver is theirs to use"
        );
        let auth = d
            .answers
            .iter()
            .find(|a| a.kind == ResolverKind::Authoritative as i32)
            .unwrap();
        assert_eq!(
            auth.error,
            format!(
                "refused by this probe's safety rules: name server ns1.elm.test. {} is a loopback address, refused without --allow-private-addresses",
                r.addr
            )
        );
        assert_eq!(out.failure, FailureKind::Dns);
        let seen = r.rd_seen.lock().unwrap().clone();
        assert!(
            !seen.iter().any(|(n, rd)| n == "www.elm.test." && !rd),
            "a non-recursive query went out: {seen:?}"
        );
    }

    #[tokio::test]
    async fn nxdomain_and_servfail_fail_as_dns() {
        let r = responder().await;
        let ctx = context(TestCa::new().roots(), sites(), Some(r.addr));
        let out = DnsCheck::new(&params("gone.elm.test"))
            .unwrap()
            .run(&ctx, Target::Dns)
            .await;
        assert_eq!(out.failure, FailureKind::Dns, "{out:?}");
        assert!(out.error.contains("NXDOMAIN"), "{}", out.error);
        let out = DnsCheck::new(&params("servfail.elm.test"))
            .unwrap()
            .run(&ctx, Target::Dns)
            .await;
        assert_eq!(detail(&out).answers[0].rcode, "SERVFAIL");
    }

    #[tokio::test]
    async fn answers_outside_both_sites_are_unexpected_and_mixed_is_fine() {
        let r = responder().await;
        let ctx = context(TestCa::new().roots(), sites(), Some(r.addr));
        let out = DnsCheck::new(&params("stray.elm.test"))
            .unwrap()
            .run(&ctx, Target::Dns)
            .await;
        assert_eq!(out.failure, FailureKind::UnexpectedAnswer, "{out:?}");
        assert!(out.error.contains("127.0.0.99"), "{}", out.error);
        let out = DnsCheck::new(&params("mixed.elm.test"))
            .unwrap()
            .run(&ctx, Target::Dns)
            .await;
        assert_eq!(out.outcome, Outcome::Success);
        assert_eq!(detail(&out).answers[0].class, AnswerClass::Mixed as i32);
    }

    #[tokio::test]
    async fn silent_resolver_is_a_dns_failure() {
        // A bound socket that never answers.
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut ctx = context(
            TestCa::new().roots(),
            sites(),
            Some(silent.local_addr().unwrap()),
        );
        ctx.dns_timeout = std::time::Duration::from_millis(200);
        let out = DnsCheck::new(&params("www.elm.test"))
            .unwrap()
            .run(&ctx, Target::Dns)
            .await;
        assert_eq!(out.failure, FailureKind::Dns);
        assert!(out.error.contains("no response"), "{}", out.error);
    }

    #[tokio::test]
    async fn truncated_udp_answer_is_retried_over_tcp() {
        let r = responder().await;
        let ctx = context(TestCa::new().roots(), sites(), Some(r.addr));
        let out = DnsCheck::new(&params("big.elm.test"))
            .unwrap()
            .run(&ctx, Target::Dns)
            .await;
        assert_eq!(out.outcome, Outcome::Success, "{out:?}");
        let a = &detail(&out).answers[0];
        assert_eq!(
            (a.addresses.clone(), a.ttl),
            (vec!["127.0.0.20".to_owned()], 99)
        );
        assert!(r.tcp_queries() >= 1);
    }

    #[test]
    fn classification() {
        let s = sites();
        let c = |a: &[&str]| classify(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>(), &s);
        assert_eq!(c(&["127.0.0.10"]), AnswerClass::Old);
        assert_eq!(c(&["127.0.0.20"]), AnswerClass::New);
        assert_eq!(c(&["127.0.0.10", "127.0.0.20"]), AnswerClass::Mixed);
        assert_eq!(c(&["127.0.0.10", "127.0.0.99"]), AnswerClass::Other);
        assert_eq!(c(&[]), AnswerClass::Other);
    }
}
