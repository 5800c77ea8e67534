//! `cutover plan dry-run FILE`: what a plan would do, step by step, forward
//! then fallback — touching nothing (no provider, no network, no commands).

use std::fmt::Write as _;
use std::time::Duration;

use super::*;

fn dur(d: Duration) -> String {
    human_duration(d)
}

fn ttl(secs: u32) -> String {
    human_duration(Duration::from_secs(u64::from(secs)))
}

/// Text on one line, runs of whitespace (newlines included) as one space.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn argv(args: &[String]) -> String {
    let quoted: Vec<String> = args.iter().map(|a| format!("{a:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

fn guard_summary(g: &Guard) -> String {
    let source = match &g.source {
        GuardSource::Probe { check, target } => {
            format!("probe check {check} on {}", target.label())
        }
        GuardSource::StatusPage { url } => format!("status page {url}"),
        GuardSource::Prometheus { url, query } => format!("Prometheus {url} `{query}`"),
    };
    let threshold = if g.condition.metric == Metric::Indicator {
        [
            Indicator::None,
            Indicator::Minor,
            Indicator::Maintenance,
            Indicator::Major,
            Indicator::Critical,
        ]
        .into_iter()
        .find(|i| *i as u8 as f64 == g.condition.threshold)
        .map_or_else(
            || g.condition.threshold.to_string(),
            |i| i.label().to_string(),
        )
    } else {
        g.condition.threshold.to_string()
    };
    let regions = if g.is_probe() {
        format!(
            " in ≥{} region{} (each: ≥{} probe{} with ≥{} result{}{})",
            g.quorum,
            if g.quorum == 1 { "" } else { "s" },
            g.min_probes,
            if g.min_probes == 1 { "" } else { "s" },
            g.min_samples,
            if g.min_samples == 1 { "" } else { "s" },
            if g.paired {
                ", probes failing on both sites excluded"
            } else {
                ""
            }
        )
    } else {
        format!(" (read every {})", dur(g.interval))
    };
    format!(
        "{}: {source}: {} {} {threshold} over {}{regions} for {} tick{} → {}{}",
        g.id,
        g.condition.metric.label(),
        g.condition.op.symbol(),
        dur(g.window),
        g.for_ticks,
        if g.for_ticks == 1 { "" } else { "s" },
        g.action.label(),
        if g.mode == GuardMode::Shadow {
            " (shadow: logged, not acted on)"
        } else {
            ""
        }
    )
}

/// The whole dry run as text.
pub fn render(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "plan {}", plan.name);
    if !plan.description.trim().is_empty() {
        for line in plan.description.trim().lines() {
            let _ = writeln!(out, "  {}", line.trim());
        }
    }
    let _ = writeln!(
        out,
        "dry run of {}: nothing is contacted, changed or run\n",
        plan.path.display()
    );
    let addrs = |s: &SiteConfig| {
        s.addresses
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(out, "sites:  old {}", addrs(&plan.old));
    let _ = writeln!(out, "        new {}", addrs(&plan.new));
    let ns = if plan.dns.nameservers.is_empty() {
        "the zone's NS records".to_string()
    } else {
        plan.dns
            .nameservers
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(
        out,
        "dns:    zone {} through provider {}, verified at {ns}",
        plan.dns.zone, plan.dns.provider.provider
    );
    let _ = writeln!(
        out,
        "        TTL normal {}{}",
        ttl(plan.dns.normal_ttl),
        plan.dns
            .lowered_ttl
            .map_or(String::new(), |l| format!(", lowered {}", ttl(l)))
    );
    for r in &plan.dns.records {
        let _ = writeln!(
            out,
            "        {} {}: old {} | new {}",
            r.name,
            r.rtype,
            r.old.join(", "),
            r.new.join(", ")
        );
    }
    let ids: Vec<String> = plan
        .checks
        .iter()
        .map(|c| format!("{} ({})", c.id, c.params.kind()))
        .collect();
    let _ = writeln!(
        out,
        "checks: {}",
        if ids.is_empty() {
            "none".into()
        } else {
            ids.join(", ")
        }
    );
    if plan.guards.is_empty() {
        let _ = writeln!(out, "guards: none");
    }
    for g in &plan.guards {
        let _ = writeln!(out, "guard:  {}", guard_summary(g));
    }
    if !plan.guards.is_empty() {
        let _ = writeln!(out, "        judged every {} ([plan] tick)", dur(plan.tick));
    }
    for c in plan.channels.values() {
        let from = match &c.url {
            SecretSource::Env(e) => format!("URL from ${e}"),
            SecretSource::File(f) => format!("URL from {}", f.display()),
        };
        let kind = match c.kind {
            ChannelKind::Slack => "slack",
            ChannelKind::Json => "json",
        };
        let _ = writeln!(out, "notify: {} ({kind}, {from})", c.name);
    }
    let mut to: Vec<String> = plan.alerts.channels.clone();
    match &plan.alerts.alertmanager {
        Some(UrlSource::Inline(url)) => to.push(format!("Alertmanager {url}")),
        Some(UrlSource::Secret(s)) => to.push(format!("Alertmanager (URL from {})", s.describe())),
        None => {}
    }
    if !to.is_empty() {
        let _ = writeln!(
            out,
            "alerts: {}; a region without evidence for {} is alerted too",
            to.join(", "),
            dur(plan.alerts.no_evidence_after)
        );
    } else if !plan.guards.is_empty() {
        let _ = writeln!(out, "alerts: none ([alerts] names no destination)");
    }

    let _ = writeln!(
        out,
        "\nforward: {} step{}",
        plan.steps.len(),
        if plan.steps.len() == 1 { "" } else { "s" }
    );
    for (i, s) in plan.steps.iter().enumerate() {
        step(&mut out, plan, i + 1, s, Runbook::Forward);
    }
    let start = plan.fallback.iter().find_map(|s| match &s.action {
        Action::Dns(d) => Some(d.from),
        _ => None,
    });
    let _ = writeln!(
        out,
        "\nfallback: {} step{} (on a guard trip or `cutover rollback`{})",
        plan.fallback.len(),
        if plan.fallback.len() == 1 { "" } else { "s" },
        start.map_or(String::new(), |s| format!(
            "; assumes DNS points at {} with TTL {}",
            s.site.label(),
            ttl(s.ttl)
        ))
    );
    if plan.fallback.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    for (i, s) in plan.fallback.iter().enumerate() {
        step(&mut out, plan, i + 1, s, Runbook::Fallback);
    }
    out
}

fn step(out: &mut String, plan: &Plan, n: usize, s: &Step, runbook: Runbook) {
    let once = if s.is_once() { ", once" } else { "" };
    let _ = write!(out, "\n{n:>3}. {} [{}{once}]", s.id, s.kind());
    if !s.description.trim().is_empty() {
        let _ = write!(out, " {}", s.description.trim());
    }
    out.push('\n');
    let pad = "     ";
    match &s.action {
        Action::Gate(g) => {
            let _ = writeln!(out, "{pad}waits until all hold at once:");
            for p in &g.status_pages {
                let unknown = match g.on_unknown {
                    OnUnknown::Fail => "unreadable = unknown = not holding",
                    OnUnknown::Approve => "unreadable = unknown: asks for `cutover approve`",
                };
                let _ = writeln!(
                    out,
                    "{pad}  - {} status page {} reports indicator ≤ {} ({unknown})",
                    p.name,
                    p.url,
                    p.max_indicator.label()
                );
            }
            if let Some(sc) = &g.same_code {
                let what = match &sc.compare {
                    Compare::BodySha256 => "body SHA-256".to_string(),
                    Compare::Header(h) => format!("header {h}"),
                };
                let _ = writeln!(
                    out,
                    "{pad}  - same code: {} pinned to old and to new, same {what}",
                    sc.url
                );
            }
            if g.registry_consistent {
                let _ = writeln!(
                    out,
                    "{pad}  - registry consistent: {} passing from ≥{} region(s)",
                    g.consistency_checks.join(", "),
                    g.min_regions
                );
            }
            if !g.checks_passing.is_empty() {
                let _ = writeln!(
                    out,
                    "{pad}  - checks passing on their targets from ≥{} region(s): {}",
                    g.min_regions,
                    g.checks_passing.join(", ")
                );
            }
        }
        Action::Dns(d) => {
            if plan.dns.provider.provider == "manual" {
                let _ = writeln!(
                    out,
                    "{pad}prints this change for a person to make, waits for `cutover approve`, then verifies at the authoritative servers:"
                );
            } else {
                let _ = writeln!(
                    out,
                    "{pad}sets through {}, then verifies at the authoritative servers:",
                    plan.dns.provider.provider
                );
            }
            for r in &plan.dns.records {
                let to = r.values(d.to.site).join(", ");
                let from = r.values(d.from.site).join(", ");
                if d.sets_site {
                    let was = if d.from.site == d.to.site && d.from.ttl == d.to.ttl {
                        " (already so: idempotent)".to_string()
                    } else if d.from.ttl != d.to.ttl {
                        format!(" (was {from}, TTL {})", d.from.ttl)
                    } else {
                        format!(" (was {from})")
                    };
                    let _ = writeln!(
                        out,
                        "{pad}  {} {} {} → {to}{was}",
                        r.name, r.rtype, d.to.ttl
                    );
                } else {
                    let _ = writeln!(
                        out,
                        "{pad}  {} {} TTL {} → {} (values stay {from})",
                        r.name, r.rtype, d.from.ttl, d.to.ttl
                    );
                }
            }
        }
        Action::Wait(w) => {
            let limit = w
                .max
                .map_or("no limit".to_string(), |m| format!("at most {}", dur(m)));
            match &w.until {
                WaitFor::Duration(d) => {
                    let _ = writeln!(out, "{pad}waits {}", dur(*d));
                }
                WaitFor::Propagation {
                    share,
                    site,
                    checks,
                } => {
                    let _ = writeln!(
                        out,
                        "{pad}waits until ≥{:.0}% of the resolvers in every region with probes answer {} ({}); {limit}",
                        share * 100.0,
                        site.label(),
                        checks.join(", ")
                    );
                }
                WaitFor::TtlDrained { ttl: t, checks } => {
                    let _ = writeln!(
                        out,
                        "{pad}waits until the remaining TTL at every region's resolvers is ≤ {t}s ({}); {limit}",
                        checks.join(", ")
                    );
                }
            }
        }
        Action::Announce(a) => {
            let to: Vec<String> = a.channels.clone();
            let _ = writeln!(
                out,
                "{pad}announces to {}{}: {:?}",
                if to.is_empty() {
                    "the status page only".to_string()
                } else {
                    to.join(", ")
                },
                if to.is_empty() {
                    ""
                } else {
                    " and the status page"
                },
                one_line(&a.message)
            );
            if let Some(w) = &a.maintenance_window {
                let _ = writeln!(
                    out,
                    "{pad}maintenance window: starts {} after the announcement, lasts {}",
                    dur(w.starts_in),
                    dur(w.duration)
                );
            }
        }
        Action::Exec(e) => {
            let _ = writeln!(out, "{pad}runs {}", argv(&e.command));
            for (k, v) in &e.env {
                let v = match v {
                    EnvValue::Literal(l) => format!("{l:?}"),
                    EnvValue::FromEnv(n) => format!("from ${n}"),
                };
                let _ = writeln!(out, "{pad}  env {k} = {v}");
            }
            if e.once {
                let _ = writeln!(
                    out,
                    "{pad}once: never run twice, even across a crash (if unsure, the engine asks)"
                );
            }
            if !e.capture_output {
                let _ = writeln!(out, "{pad}output not kept in the journal");
            }
        }
        Action::Verify(v) => {
            let _ = writeln!(
                out,
                "{pad}waits until {} pass on {} from ≥{} region(s) over the coordinator's aggregation window (median probe failure ratio ≤ {}; `window = {}` is not honoured yet)",
                v.checks.join(", "),
                v.site.label(),
                v.min_regions,
                v.max_error_ratio,
                dur(v.window)
            );
        }
        Action::Approve { prompt } => {
            let _ = writeln!(
                out,
                "{pad}waits for `cutover approve`: {:?}",
                one_line(prompt)
            );
        }
        Action::Soak { duration } => {
            let armed: Vec<&str> = plan
                .guards
                .iter()
                .filter(|g| {
                    plan.steps
                        .iter()
                        .position(|x| x.id == g.armed_from)
                        .zip(plan.steps.iter().position(|x| x.id == s.id))
                        .is_some_and(|(a, here)| a <= here)
                })
                .map(|g| g.id.as_str())
                .collect();
            let _ = writeln!(
                out,
                "{pad}soaks {} with guards watching: {}",
                dur(*duration),
                if armed.is_empty() {
                    "none armed".to_string()
                } else {
                    armed.join(", ")
                }
            );
        }
    }
    let _ = writeln!(
        out,
        "{pad}limit {} · on failure: {}",
        s.timeout.map_or("none".to_string(), dur),
        s.on_failure.label()
    );
    if runbook == Runbook::Forward {
        let armed: Vec<String> = plan
            .guards_armed_at(&s.id)
            .map(|g| format!("{} ({})", g.id, g.action.label()))
            .collect();
        if !armed.is_empty() {
            let _ = writeln!(out, "{pad}guards armed from here: {}", armed.join(", "));
        }
    }
}
