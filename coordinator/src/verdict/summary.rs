//! A trip in plain words, for the decision log, `cutover why` and alerts:
//! `3 of 3 regions saw install-core failures on new (…): asia 1.00 (…), …`.

use crate::config::TargetName;
use crate::plan::{Condition, Guard, GuardSource, Indicator, Metric};

use super::{HardProbe, RegionVerdict, Verdict};

/// A value the way the metric reads: ratios with two decimals, milliseconds,
/// counts, status page levels by name.
pub(crate) fn value(metric: Metric, v: f64) -> String {
    match metric {
        Metric::ErrorRatio | Metric::DnsMismatchRatio => format!("{v:.2}"),
        Metric::LatencyMs(_) => format!("{v:.0} ms"),
        Metric::HashMismatches => format!("{v:.0}"),
        Metric::Indicator => indicator(v),
        Metric::Value => format!("{v}"),
    }
}

fn indicator(rank: f64) -> String {
    let levels = [
        Indicator::None,
        Indicator::Minor,
        Indicator::Maintenance,
        Indicator::Major,
        Indicator::Critical,
    ];
    match levels.get(rank.max(0.0) as usize) {
        Some(l) if rank.fract() == 0.0 => l.label().to_string(),
        _ => format!("{rank}"),
    }
}

/// `error_ratio > 0.5`, `indicator >= major`.
pub(crate) fn condition(c: &Condition) -> String {
    let threshold = match c.metric {
        Metric::Indicator => indicator(c.threshold),
        _ => format!("{}", c.threshold),
    };
    format!("{} {} {threshold}", c.metric.label(), c.op.symbol())
}

fn target_words(target: TargetName) -> &'static str {
    match target {
        TargetName::Old => "on old",
        TargetName::New => "on new",
        TargetName::Dns => "through the resolvers",
    }
}

fn ticks(n: u32) -> String {
    if n == 1 {
        "1 tick".to_string()
    } else {
        format!("{n} ticks")
    }
}

/// `asia 1.00 (3/3 probes failing, 9 samples; excluded asia-2: own network: old failed too (5/5))`,
/// `eu NO_EVIDENCE: 1 of 2 probes needed (3 seen, 2 excluded); excluded eu-1: …`.
fn region(metric: Metric, r: &RegionVerdict) -> String {
    let mut out = r.region.clone();
    if r.verdict != Verdict::Fail {
        out.push(' ');
        out.push_str(r.verdict.label());
    }
    match r.value {
        Some(v) => {
            out.push_str(&format!(
                " {} ({}/{} probes failing, {} samples",
                value(metric, v),
                r.failing_probes,
                r.probes_seen,
                r.samples
            ));
        }
        None => {
            // NO_EVIDENCE: the reason says why, in its own parentheses.
            out.push_str(&format!(": {}", r.reason));
            for e in &r.excluded {
                out.push_str(&format!("; excluded {}: {}", e.probe, e.reason));
            }
            return out;
        }
    }
    for e in &r.excluded {
        out.push_str(&format!("; excluded {}: {}", e.probe, e.reason));
    }
    out.push(')');
    out
}

/// A quorum trip: which regions failed, on what, for how long, with the evidence.
pub(crate) fn quorum(
    guard: &Guard,
    regions: &[RegionVerdict],
    failing: u32,
    consecutive: u32,
) -> String {
    let c = &guard.condition;
    let held = format!(
        "{} over the last {}, {} in a row",
        condition(c),
        crate::plan::human_duration(guard.window),
        ticks(consecutive)
    );
    match &guard.source {
        GuardSource::Probe { check, target } => {
            let what = match c.metric {
                Metric::LatencyMs(_) => format!("slow {check} responses {}", target_words(*target)),
                Metric::DnsMismatchRatio => {
                    format!(
                        "{check} DNS answers outside old and new {}",
                        target_words(*target)
                    )
                }
                Metric::HashMismatches => {
                    format!("{check} hash mismatches {}", target_words(*target))
                }
                _ => format!("{check} failures {}", target_words(*target)),
            };
            let failed: Vec<String> = regions
                .iter()
                .filter(|r| r.verdict == Verdict::Fail)
                .map(|r| region(c.metric, r))
                .collect();
            let others: Vec<String> = regions
                .iter()
                .filter(|r| r.verdict != Verdict::Fail)
                .map(|r| region(c.metric, r))
                .collect();
            let mut out = format!(
                "{failing} of {} regions saw {what} ({held}): {}",
                regions.len(),
                failed.join(", ")
            );
            if !others.is_empty() {
                out.push_str(&format!("; not failing: {}", others.join(", ")));
            }
            out
        }
        GuardSource::StatusPage { url } => {
            let v = regions.first().and_then(|r| r.value).unwrap_or(f64::NAN);
            format!(
                "the status page {url} reports {} ({})",
                value(c.metric, v),
                ticks_only(c, consecutive)
            )
        }
        GuardSource::Prometheus { url, query } => {
            let v = regions.first().and_then(|r| r.value).unwrap_or(f64::NAN);
            format!(
                "the Prometheus query `{query}` on {url} returned {} ({})",
                value(c.metric, v),
                ticks_only(c, consecutive)
            )
        }
    }
}

fn ticks_only(c: &Condition, consecutive: u32) -> String {
    format!("{}, {} in a row", condition(c), ticks(consecutive))
}

/// A hard fail: corruption from at least two probes trips at once.
pub(crate) fn hard_fail(guard: &Guard, hard: &[HardProbe]) -> String {
    let (check, target) = match &guard.source {
        GuardSource::Probe { check, target } => (check.as_str(), *target),
        _ => ("", TargetName::New),
    };
    let probes: Vec<String> = hard
        .iter()
        .map(|h| format!("{} in {}: {}", h.probe, h.region, h.count))
        .collect();
    format!(
        "{check} hash mismatches {} from {} probes within {} ({}): corruption trips at once, without quorum or `for`",
        target_words(target),
        hard.len(),
        crate::plan::human_duration(guard.window),
        probes.join(", ")
    )
}
