//! What the engine reads from the probes' evidence windows, and the pure
//! functions that turn a [`Snapshot`] into per-region progress for `wait`
//! (propagation, TTL drained), `verify` and `gate` (checks passing).
//!
//! "No evidence" never counts as holding: a region without answers is not
//! propagated, a plan with no probe region at all never passes.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::aggregate::{Aggregator, Snapshot};
use crate::config::{CheckParams, TargetName};
use crate::evidence::{Windows, lock, now_ms};
use crate::plan::{Plan, Site};
use crate::registry::Registry;

/// Where the engine reads evidence from (the live windows, or a fake in tests).
pub trait EvidenceSource: Send + Sync {
    /// The windows now.
    fn snapshot(&self) -> Snapshot;
    /// Regions with at least one connected probe.
    fn connected_regions(&self) -> BTreeSet<String>;
    /// Runs `f` over the windows themselves (guards read their per-probe figures).
    fn with_aggregator(&self, f: &mut dyn FnMut(&Aggregator));
    /// Keeps per-probe results for at least `ms` (the longest guard window of a loaded plan).
    fn retain_at_least(&self, ms: i64) {
        let _ = ms;
    }
}

/// The coordinator's own windows and probe registry.
pub struct LiveEvidence {
    /// Aggregated windows.
    pub windows: Windows,
    /// Connected probes.
    pub registry: Arc<Registry>,
}

impl EvidenceSource for LiveEvidence {
    fn snapshot(&self) -> Snapshot {
        lock(&self.windows).snapshot(now_ms())
    }

    fn connected_regions(&self) -> BTreeSet<String> {
        self.registry
            .connected_per_region()
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(r, _)| r)
            .collect()
    }

    fn with_aggregator(&self, f: &mut dyn FnMut(&Aggregator)) {
        f(&lock(&self.windows));
    }

    fn retain_at_least(&self, ms: i64) {
        lock(&self.windows).retain_at_least(ms);
    }
}

/// The longest window of the plan's probe guards, milliseconds (0 without any).
pub fn longest_guard_window_ms(plan: &Plan) -> i64 {
    plan.guards
        .iter()
        .filter(|g| g.is_probe())
        .map(|g| g.window.as_millis() as i64)
        .max()
        .unwrap_or(0)
}

/// One region's progress toward a condition.
#[derive(Debug, Clone, PartialEq)]
pub struct RegionProgress {
    /// Region.
    pub region: String,
    /// Current value.
    pub value: f64,
    /// The value that satisfies the condition.
    pub target: f64,
    /// `share`, `ttl_seconds` or `regions`.
    pub unit: &'static str,
    /// Satisfied.
    pub done: bool,
    /// Words for the status view.
    pub detail: String,
}

/// The `dns` checks a wait looks at: the named ones, or every `dns` check of the plan.
pub fn dns_checks(plan: &Plan, named: &[String]) -> Vec<String> {
    if !named.is_empty() {
        return named.to_vec();
    }
    plan.checks
        .iter()
        .filter(|c| matches!(c.params, CheckParams::Dns { .. }))
        .map(|c| c.id.clone())
        .collect()
}

/// Regions that count for "every region with probes": connected ones and any
/// with DNS answers in the window for these checks.
fn regions(snap: &Snapshot, connected: &BTreeSet<String>, checks: &[String]) -> BTreeSet<String> {
    let mut r = connected.clone();
    r.extend(
        snap.dns
            .iter()
            .filter(|d| checks.contains(&d.check) && d.probes > 0)
            .map(|d| d.region.clone()),
    );
    r
}

/// Per region, the lowest (over `checks`) share of probes whose resolver answers `site`.
pub fn propagation(
    snap: &Snapshot,
    connected: &BTreeSet<String>,
    checks: &[String],
    site: Site,
    share: f64,
) -> Vec<RegionProgress> {
    regions(snap, connected, checks)
        .into_iter()
        .map(|region| {
            let mut value: Option<f64> = None;
            for c in checks {
                let v = snap
                    .dns
                    .iter()
                    .find(|d| &d.check == c && d.region == region && d.probes > 0)
                    .map(|d| match site {
                        Site::Old => d.share_old,
                        Site::New => d.share_new,
                    })
                    .unwrap_or(0.0);
                value = Some(value.map_or(v, |m: f64| m.min(v)));
            }
            let value = value.unwrap_or(0.0);
            let done = !checks.is_empty() && value + 1e-9 >= share;
            RegionProgress {
                detail: format!(
                    "{:.0}% of resolvers answer {} (need {:.0}%)",
                    value * 100.0,
                    site.label(),
                    share * 100.0
                ),
                region,
                value,
                target: share,
                unit: "share",
                done,
            }
        })
        .collect()
}

/// Per region, the highest remaining TTL at its resolvers (over `checks`).
pub fn ttl_drained(
    snap: &Snapshot,
    connected: &BTreeSet<String>,
    checks: &[String],
    ttl: u32,
) -> Vec<RegionProgress> {
    regions(snap, connected, checks)
        .into_iter()
        .map(|region| {
            let mut worst: Option<u32> = None;
            let mut missing = checks.is_empty();
            for c in checks {
                match snap
                    .dns
                    .iter()
                    .find(|d| &d.check == c && d.region == region && d.probes > 0)
                {
                    Some(d) => worst = Some(worst.map_or(d.max_ttl, |w| w.max(d.max_ttl))),
                    None => missing = true,
                }
            }
            let value = worst.unwrap_or(0);
            let done = !missing && value <= ttl;
            RegionProgress {
                detail: if missing {
                    "no DNS answers in the window yet".to_string()
                } else {
                    format!("remaining TTL {value}s (need ≤ {ttl}s)")
                },
                region,
                value: f64::from(value),
                target: f64::from(ttl),
                unit: "ttl_seconds",
                done,
            }
        })
        .collect()
}

/// True when every region in `p` is done and there is at least one region.
pub fn all_done(p: &[RegionProgress]) -> bool {
    !p.is_empty() && p.iter().all(|r| r.done)
}

/// Per region, whether `check` passes on `site`: results in the window and a
/// failure ratio of at most `max_error_ratio` on the site's pinned target and,
/// if the check also runs through users' resolvers, on its `dns` target (what
/// users get must work too); for `dns` checks, every answer points at `site`.
pub fn check_passing(
    plan: &Plan,
    snap: &Snapshot,
    check: &str,
    site: Site,
    max_error_ratio: f64,
) -> Vec<RegionProgress> {
    let cfg = plan.check(check);
    let runs_on = |t: TargetName| cfg.is_none_or(|c| c.targets.contains(&t));
    let pinned = match site {
        Site::Old => TargetName::Old,
        Site::New => TargetName::New,
    };
    let mut targets: Vec<&'static str> = Vec::new();
    if cfg.is_none() || runs_on(pinned) {
        targets.push(site.label());
    }
    if cfg.is_some() && runs_on(TargetName::Dns) {
        targets.push("dns");
    }
    let is_dns_kind = cfg.is_some_and(|c| matches!(c.params, CheckParams::Dns { .. }));
    let regions: BTreeSet<&str> = snap
        .series
        .iter()
        .filter(|s| s.key.check == check && targets.contains(&s.key.target))
        .map(|s| s.key.region.as_str())
        .collect();
    regions
        .into_iter()
        .map(|region| {
            let mut ok = true;
            let mut worst = 0.0_f64;
            let mut parts = Vec::new();
            for target in &targets {
                match snap.series.iter().find(|s| {
                    s.key.check == check && s.key.target == *target && s.key.region == region
                }) {
                    Some(s) => {
                        let ratio = s.error_ratio();
                        worst = worst.max(ratio);
                        if s.samples == 0 || ratio > max_error_ratio + 1e-9 {
                            ok = false;
                        }
                        parts.push(format!(
                            "{target} {}/{} failed from {} probe(s)",
                            s.failures, s.samples, s.probes
                        ));
                    }
                    None => {
                        ok = false;
                        parts.push(format!("{target}: no results"));
                    }
                }
            }
            if is_dns_kind {
                let share = snap
                    .dns
                    .iter()
                    .find(|d| d.check == check && d.region == region)
                    .map(|d| match site {
                        Site::Old => d.share_old,
                        Site::New => d.share_new,
                    })
                    .unwrap_or(0.0);
                if share + 1e-9 < 1.0 - max_error_ratio {
                    ok = false;
                }
                parts.push(format!("{:.0}% answer {}", share * 100.0, site.label()));
            }
            RegionProgress {
                region: region.to_string(),
                value: 1.0 - worst,
                target: 1.0 - max_error_ratio,
                unit: "share",
                done: ok,
                detail: format!(
                    "{check}: {} (max {:.0}% failed)",
                    parts.join(", "),
                    max_error_ratio * 100.0
                ),
            }
        })
        .collect()
}

/// For each check, per-region results, and whether at least `min_regions` pass every one.
pub fn checks_pass(
    plan: &Plan,
    snap: &Snapshot,
    checks: &[String],
    site: Site,
    max_error_ratio: f64,
    min_regions: u32,
) -> (bool, Vec<RegionProgress>) {
    let mut all = Vec::new();
    let mut ok = !checks.is_empty();
    for c in checks {
        let per = check_passing(plan, snap, c, site, max_error_ratio);
        let passing = per.iter().filter(|r| r.done).count() as u32;
        if passing < min_regions.max(1) {
            ok = false;
        }
        all.extend(per);
    }
    (ok, all)
}

/// For a gate: every check passes on every one of its targets (samples in the
/// window, no failures) from at least `min_regions` regions. Returns the
/// failing `check/target` pairs and the per-region figures.
pub fn gate_checks(
    plan: &Plan,
    snap: &Snapshot,
    checks: &[String],
    min_regions: u32,
) -> (Vec<String>, Vec<RegionProgress>) {
    let mut failing = Vec::new();
    let mut all = Vec::new();
    for c in checks {
        let targets: Vec<&'static str> = match plan.check(c) {
            Some(cfg) => cfg
                .targets
                .iter()
                .map(|t| match t {
                    TargetName::Old => "old",
                    TargetName::New => "new",
                    TargetName::Dns => "dns",
                })
                .collect(),
            None => vec!["new"],
        };
        for target in targets {
            let per: Vec<RegionProgress> = snap
                .series
                .iter()
                .filter(|s| &s.key.check == c && s.key.target == target)
                .map(|s| RegionProgress {
                    region: s.key.region.clone(),
                    value: 1.0 - s.error_ratio(),
                    target: 1.0,
                    unit: "share",
                    done: s.samples > 0 && s.failures == 0,
                    detail: format!("{c}/{target}: {}/{} failed", s.failures, s.samples),
                })
                .collect();
            if (per.iter().filter(|r| r.done).count() as u32) < min_regions.max(1) {
                failing.push(format!("{c}/{target}"));
            }
            all.extend(per);
        }
    }
    (failing, all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::DnsStats;

    fn dns(check: &str, region: &str, new: f64, ttl: u32) -> DnsStats {
        DnsStats {
            check: check.into(),
            region: region.into(),
            probes: 1,
            share_old: 1.0 - new,
            share_new: new,
            share_mixed: 0.0,
            share_other: 0.0,
            max_ttl: ttl,
        }
    }

    #[test]
    fn propagation_needs_every_region_and_counts_silent_ones_as_not_there() {
        let snap = Snapshot {
            series: vec![],
            dns: vec![dns("a", "asia", 1.0, 30), dns("a", "us", 0.5, 30)],
        };
        let connected: BTreeSet<String> = ["asia", "us", "australia"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let p = propagation(&snap, &connected, &["a".into()], Site::New, 0.9);
        assert_eq!(p.len(), 3);
        assert!(p.iter().find(|r| r.region == "asia").unwrap().done);
        assert!(!p.iter().find(|r| r.region == "us").unwrap().done);
        assert!(!p.iter().find(|r| r.region == "australia").unwrap().done);
        assert!(!all_done(&p));
        let snap = Snapshot {
            series: vec![],
            dns: vec![dns("a", "asia", 1.0, 30), dns("a", "us", 1.0, 30)],
        };
        let p = propagation(
            &snap,
            &["asia".into(), "us".into()].into(),
            &["a".into()],
            Site::New,
            0.9,
        );
        assert!(all_done(&p));
        // No probes at all is never "propagated".
        assert!(!all_done(&propagation(
            &Snapshot::default(),
            &BTreeSet::new(),
            &["a".into()],
            Site::New,
            0.9
        )));
    }

    #[test]
    fn ttl_drain_is_judged_on_the_highest_remaining_ttl() {
        let snap = Snapshot {
            series: vec![],
            dns: vec![dns("a", "asia", 0.0, 300), dns("a", "us", 0.0, 20)],
        };
        let p = ttl_drained(&snap, &BTreeSet::new(), &["a".into()], 30);
        assert!(!p[0].done && p[1].done);
        let snap = Snapshot {
            series: vec![],
            dns: vec![dns("a", "asia", 0.0, 30)],
        };
        assert!(all_done(&ttl_drained(
            &snap,
            &BTreeSet::new(),
            &["a".into()],
            30
        )));
    }
}
