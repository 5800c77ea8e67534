//! One region's verdict from its probes' own figures: a value per probe by
//! metric, paired attribution, the lower median over the voters.

use std::collections::BTreeMap;

use crate::aggregate::ProbeFigures;
use crate::plan::{Condition, Metric};

use super::{Excluded, RegionVerdict, Verdict};

/// The guard fields the evaluation needs, with their defaults applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Settings {
    /// A probe votes with at least this many results in the window.
    pub min_samples: u32,
    /// A region needs at least this many voters, else NO_EVIDENCE.
    pub min_probes: u32,
    /// Leave out probes whose other target meets the condition too.
    pub paired: bool,
    /// Non-probe sources: how often they are read, ms.
    pub interval_ms: i64,
}

/// A probe's value for `metric`, or why it does not vote (too few results).
/// Latency votes on successful results, DNS mismatch on system-resolver answers.
pub(crate) fn probe_value(metric: Metric, f: &ProbeFigures, min_samples: u32) -> Option<f64> {
    let min = u64::from(min_samples.max(1));
    match metric {
        Metric::ErrorRatio => (f.samples >= min).then(|| f.failures as f64 / f.samples as f64),
        Metric::LatencyMs(q) => {
            let n = f.success_ms.len();
            (n as u64 >= min).then(|| {
                // Nearest rank, as the aggregator's window quantiles.
                let rank = ((f64::from(q) / 100.0 * n as f64).ceil() as usize).clamp(1, n);
                f.success_ms[rank - 1]
            })
        }
        Metric::DnsMismatchRatio => {
            (f.dns_answers >= min).then(|| f.dns_other as f64 / f.dns_answers as f64)
        }
        Metric::HashMismatches => (f.samples >= min).then_some(f.hard_failures as f64),
        Metric::Indicator | Metric::Value => None,
    }
}

/// Why a probe's other target counts against the probe: `old failed too (5/5)`.
fn paired_reason(metric: Metric, other_target: &str, f: &ProbeFigures, value: f64) -> String {
    let detail = match metric {
        Metric::ErrorRatio => format!("failed too ({}/{})", f.failures, f.samples),
        Metric::LatencyMs(q) => format!("slow too (p{q} {value:.0} ms)"),
        Metric::DnsMismatchRatio => {
            format!(
                "answered outside both sites too ({}/{})",
                f.dns_other, f.dns_answers
            )
        }
        Metric::HashMismatches => format!("had hash mismatches too ({})", f.hard_failures),
        Metric::Indicator | Metric::Value => "met the condition too".to_string(),
    };
    format!("own network: {other_target} {detail}")
}

/// The lower median: index `(n-1)/2` of the sorted values, so one probe moves
/// the region's value by at most one position. `values` must not be empty.
pub(crate) fn lower_median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[(values.len() - 1) / 2]
}

/// One region's verdict. `figures` are the region's probes on the watched
/// target, `other` (paired guards on old/new) each probe's figures on the
/// other target, by probe id.
pub(crate) fn evaluate(
    region: &str,
    condition: &Condition,
    settings: Settings,
    figures: &[ProbeFigures],
    other: Option<(&str, &BTreeMap<&str, &ProbeFigures>)>,
) -> RegionVerdict {
    let mut excluded = Vec::new();
    let mut values = Vec::new();
    let (mut samples, mut failing_probes, mut too_few) = (0, 0, 0);
    for f in figures {
        if let Some((other_target, other)) = other
            && let Some(o) = other.get(&*f.probe)
            && let Some(v) = probe_value(condition.metric, o, settings.min_samples)
            && condition.op.holds(v, condition.threshold)
        {
            excluded.push(Excluded {
                probe: f.probe.to_string(),
                reason: paired_reason(condition.metric, other_target, o, v),
            });
            continue;
        }
        match probe_value(condition.metric, f, settings.min_samples) {
            Some(v) => {
                if condition.op.holds(v, condition.threshold) {
                    failing_probes += 1;
                }
                samples += f.samples;
                values.push(v);
            }
            None => too_few += 1,
        }
    }
    let voters = values.len() as u32;
    let mut rv = RegionVerdict {
        region: region.to_string(),
        verdict: Verdict::NoEvidence,
        value: None,
        threshold: condition.threshold,
        voters,
        probes_seen: figures.len() as u32,
        failing_probes,
        samples,
        excluded,
        reason: String::new(),
    };
    if voters < settings.min_probes.max(1) {
        let mut why = Vec::new();
        if figures.is_empty() {
            why.push("no results in the window".to_string());
        } else {
            why.push(format!("{} seen", figures.len()));
        }
        if !rv.excluded.is_empty() {
            why.push(format!("{} excluded", rv.excluded.len()));
        }
        if too_few > 0 {
            let what = match condition.metric {
                Metric::LatencyMs(_) => "successful results",
                Metric::DnsMismatchRatio => "resolver answers",
                _ => "results",
            };
            why.push(format!(
                "{too_few} with fewer than {} {what}",
                settings.min_samples.max(1)
            ));
        }
        rv.reason = format!(
            "{voters} of {} probes needed ({})",
            settings.min_probes.max(1),
            why.join(", ")
        );
        return rv;
    }
    let value = lower_median(&mut values);
    rv.value = Some(value);
    rv.verdict = if condition.op.holds(value, condition.threshold) {
        Verdict::Fail
    } else {
        Verdict::Pass
    };
    rv
}
