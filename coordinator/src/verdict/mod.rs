//! Verdicts: per (guard, region), every tick, `PASS`, `FAIL` or `NO_EVIDENCE`,
//! and whether the guard trips (DESIGN.md §5, docs/verdicts.md).
//!
//! Pure code: the caller passes the [`Aggregator`] and the time, so the same
//! evaluator runs in the engine and in the deterministic simulation.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Serialize;

use crate::aggregate::{Aggregator, ProbeFigures};
use crate::config::TargetName;
use crate::plan::{Guard, GuardAction, GuardMode, GuardSource, human_duration};

mod region;
#[cfg(test)]
mod sim;
mod summary;
#[cfg(test)]
mod tests;

use region::Settings;

/// The pseudo-region of status page and Prometheus guards.
pub const GLOBAL: &str = "global";

/// A non-probe reading older than this many guard intervals is stale.
pub const STALE_INTERVALS: i64 = 3;

/// One region's verdict on one tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Verdict {
    /// Enough evidence, and the condition does not hold.
    #[serde(rename = "PASS")]
    Pass,
    /// Enough evidence, and the condition holds.
    #[serde(rename = "FAIL")]
    Fail,
    /// Too few probes or samples (or no reading): never counts as a failure.
    #[serde(rename = "NO_EVIDENCE")]
    NoEvidence,
}

impl Verdict {
    /// `PASS`, `FAIL` or `NO_EVIDENCE`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Pass => "PASS",
            Self::Fail => "FAIL",
            Self::NoEvidence => "NO_EVIDENCE",
        }
    }

    /// The `cutover_guard_verdict` gauge value: 0 PASS, 1 FAIL, -1 NO_EVIDENCE.
    pub fn gauge(self) -> f64 {
        match self {
            Self::Pass => 0.0,
            Self::Fail => 1.0,
            Self::NoEvidence => -1.0,
        }
    }
}

/// A probe left out of a region's value, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Excluded {
    /// Probe id.
    pub probe: String,
    /// Plain words, e.g. `own network: old failed too (5/5)`.
    pub reason: String,
}

/// One region's verdict with its evidence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RegionVerdict {
    /// Region name (`global` for status page and Prometheus guards).
    pub region: String,
    /// The verdict.
    pub verdict: Verdict,
    /// The region's value (lower median of the voting probes; the reading for
    /// non-probe guards); `None` when NO_EVIDENCE.
    pub value: Option<f64>,
    /// The condition's threshold.
    pub threshold: f64,
    /// Probes that voted (enough samples, not excluded).
    pub voters: u32,
    /// Probes with any result in the window.
    pub probes_seen: u32,
    /// Voters whose own value meets the condition.
    pub failing_probes: u32,
    /// Results of the voters in the window.
    pub samples: u64,
    /// Probes left out by paired attribution (their other target meets the condition too).
    pub excluded: Vec<Excluded>,
    /// Why, in plain words: `1 of 2 probes needed` for NO_EVIDENCE, empty otherwise.
    pub reason: String,
}

/// How a guard tripped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TripKind {
    /// `quorum` regions FAIL for `for` consecutive ticks.
    Quorum,
    /// Hash mismatches from at least two probes: at once.
    HardFail,
}

impl TripKind {
    /// `quorum` or `hard_fail`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Quorum => "quorum",
            Self::HardFail => "hard_fail",
        }
    }
}

fn action_label<S: serde::Serializer>(a: &GuardAction, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(a.label())
}

fn mode_label<S: serde::Serializer>(m: &GuardMode, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(mode_name(*m))
}

/// `shadow` or `enforce`, as written in plans.
pub fn mode_name(m: GuardMode) -> &'static str {
    match m {
        GuardMode::Shadow => "shadow",
        GuardMode::Enforce => "enforce",
    }
}

/// A guard tripped: what it does and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Trip {
    /// Guard id.
    pub guard: String,
    /// What the trip does (shadow guards: what it would have done).
    #[serde(serialize_with = "action_label")]
    pub action: GuardAction,
    /// Shadow guards record the trip and do nothing.
    #[serde(serialize_with = "mode_label")]
    pub mode: GuardMode,
    /// Quorum or hard fail.
    pub kind: TripKind,
    /// The tick it tripped on, ms since the Unix epoch.
    pub at_ms: i64,
    /// Every listed region's verdict on that tick.
    pub regions: Vec<RegionVerdict>,
    /// Plain words: `3 of 3 regions saw install-core failures on new (…): asia 1.00 (…), …`.
    pub summary: String,
}

/// A region whose verdict differs from the previous tick (or appeared).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerdictChange {
    /// Region.
    pub region: String,
    /// The previous verdict; `None` on the region's first tick.
    pub from: Option<Verdict>,
    /// The new verdict with its evidence.
    pub to: RegionVerdict,
}

/// The result of one evaluation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tick {
    /// When, ms since the Unix epoch.
    pub at_ms: i64,
    /// Every listed region, sorted by name.
    pub regions: Vec<RegionVerdict>,
    /// Regions that FAIL on this tick.
    pub failing: u32,
    /// Consecutive ticks (this one included) with `failing >= quorum`.
    pub consecutive: u32,
    /// Regions whose verdict changed: the decision log.
    pub changes: Vec<VerdictChange>,
    /// Set on the one tick the guard trips; later ticks stay latched without a new trip.
    pub trip: Option<Trip>,
}

/// A probe whose hard failures (hash mismatches) count toward a hard fail.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HardProbe {
    probe: String,
    region: String,
    count: u64,
}

/// One armed guard: the hysteresis counter, the last verdict per region and the latch.
#[derive(Debug, Clone)]
pub struct GuardEvaluator {
    guard: Guard,
    settings: Settings,
    /// Regions listed on earlier ticks: a region that goes silent stays listed.
    seen_regions: BTreeSet<String>,
    last: BTreeMap<String, Verdict>,
    consecutive: u32,
    tripped: bool,
}

/// The guard's evaluation settings, defaults applied.
fn settings(g: &Guard) -> Settings {
    Settings {
        min_samples: g.min_samples.max(1),
        min_probes: g.min_probes.max(1),
        paired: g.paired,
        interval_ms: millis(g.interval).max(1),
    }
}

/// `31s`, `2m5s`, `400ms`: whole seconds from a second on.
fn age(ms: i64) -> String {
    let ms = u64::try_from(ms).unwrap_or(0);
    if ms >= 1000 {
        human_duration(Duration::from_secs(ms / 1000))
    } else {
        human_duration(Duration::from_millis(ms))
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl GuardEvaluator {
    /// A fresh evaluator: nothing seen, not tripped.
    pub fn new(guard: Guard) -> Self {
        Self {
            settings: settings(&guard),
            guard,
            seen_regions: BTreeSet::new(),
            last: BTreeMap::new(),
            consecutive: 0,
            tripped: false,
        }
    }

    /// The guard as planned.
    pub fn guard(&self) -> &Guard {
        &self.guard
    }

    /// Whether the guard has tripped in this run (latched).
    pub fn tripped(&self) -> bool {
        self.tripped
    }

    /// Probe-source guards: evaluates each probe's results in the guard's
    /// window ending at `now_ms`. Regions listed: those with results of the
    /// check in the window, `connected_regions` (a probe connected now) and
    /// every region listed before, so a region whose probes all went silent
    /// shows as NO_EVIDENCE instead of vanishing.
    pub fn tick_probes(
        &mut self,
        agg: &Aggregator,
        now_ms: i64,
        connected_regions: &BTreeSet<String>,
    ) -> Tick {
        let GuardSource::Probe { check, target } = &self.guard.source else {
            let rv = self.no_evidence(GLOBAL, "not a probe guard (evaluated from its readings)");
            return self.finish(now_ms, vec![rv], Vec::new());
        };
        let window_ms = millis(self.guard.window);
        let figures = agg.probe_figures(check, target.label(), window_ms, now_ms);
        let other_target = match target {
            TargetName::New => Some("old"),
            TargetName::Old => Some("new"),
            TargetName::Dns => None,
        }
        .filter(|_| self.settings.paired);
        let other_figures = other_target.map(|t| agg.probe_figures(check, t, window_ms, now_ms));

        self.seen_regions.extend(connected_regions.iter().cloned());
        self.seen_regions
            .extend(agg.regions_with_data(check, window_ms, now_ms));
        let mut regions = Vec::with_capacity(self.seen_regions.len());
        let mut hard = Vec::new();
        for region in &self.seen_regions {
            let figs = figures.get(region).map_or(&[][..], Vec::as_slice);
            let other: Option<BTreeMap<&str, &ProbeFigures>> = other_figures.as_ref().map(|o| {
                o.get(region)
                    .into_iter()
                    .flatten()
                    .map(|f| (&*f.probe, f))
                    .collect()
            });
            let rv = region::evaluate(
                region,
                &self.guard.condition,
                self.settings,
                figs,
                other_target.zip(other.as_ref()),
            );
            for f in figs.iter().filter(|f| f.hard_failures > 0) {
                let excluded = rv.excluded.iter().any(|e| *e.probe == *f.probe);
                // Corruption seen on both targets is the probe's own path (a proxy).
                let both = other
                    .as_ref()
                    .and_then(|o| o.get(&*f.probe))
                    .is_some_and(|o| o.hard_failures > 0);
                if !excluded && !both && !hard.iter().any(|h: &HardProbe| *h.probe == *f.probe) {
                    hard.push(HardProbe {
                        probe: f.probe.to_string(),
                        region: region.clone(),
                        count: f.hard_failures,
                    });
                }
            }
            regions.push(rv);
        }
        self.finish(now_ms, regions, hard)
    }

    /// Status page and Prometheus guards: evaluates the latest reading
    /// (`None`: nothing read yet; `Some((read_at_ms, Err(e)))`: the read
    /// failed). One pseudo-region, [`GLOBAL`], quorum 1. A reading older than
    /// [`STALE_INTERVALS`] guard intervals, a failed read and a value that is
    /// not a number are NO_EVIDENCE.
    pub fn tick_reading(
        &mut self,
        now_ms: i64,
        reading: Option<&(i64, Result<f64, String>)>,
    ) -> Tick {
        let stale_ms = STALE_INTERVALS * self.settings.interval_ms;
        let rv = match reading {
            _ if matches!(self.guard.source, GuardSource::Probe { .. }) => {
                self.no_evidence(GLOBAL, "a probe guard (evaluated from probe results)")
            }
            None => self.no_evidence(GLOBAL, "nothing read yet"),
            Some((at_ms, _)) if now_ms - at_ms > stale_ms => self.no_evidence(
                GLOBAL,
                &format!(
                    "last reading {} old (stale after {})",
                    age(now_ms - at_ms),
                    age(stale_ms),
                ),
            ),
            Some((_, Err(e))) => self.no_evidence(GLOBAL, e),
            Some((_, Ok(v))) if v.is_nan() => {
                self.no_evidence(GLOBAL, "the value is not a number (NaN)")
            }
            Some((_, Ok(v))) => {
                let c = &self.guard.condition;
                let fails = c.op.holds(*v, c.threshold);
                RegionVerdict {
                    region: GLOBAL.to_string(),
                    verdict: if fails { Verdict::Fail } else { Verdict::Pass },
                    value: Some(*v),
                    threshold: c.threshold,
                    voters: 1,
                    probes_seen: 0,
                    failing_probes: u32::from(fails),
                    samples: 1,
                    excluded: Vec::new(),
                    reason: String::new(),
                }
            }
        };
        self.finish(now_ms, vec![rv], Vec::new())
    }

    fn no_evidence(&self, region: &str, reason: &str) -> RegionVerdict {
        RegionVerdict {
            region: region.to_string(),
            verdict: Verdict::NoEvidence,
            value: None,
            threshold: self.guard.condition.threshold,
            voters: 0,
            probes_seen: 0,
            failing_probes: 0,
            samples: 0,
            excluded: Vec::new(),
            reason: reason.to_string(),
        }
    }

    /// Regions that must FAIL together: the guard's quorum for probe guards,
    /// 1 for the single pseudo-region of the others.
    fn quorum(&self) -> u32 {
        match self.guard.source {
            GuardSource::Probe { .. } => self.guard.quorum.max(1),
            _ => 1,
        }
    }

    /// Hysteresis, the decision log and the latch.
    fn finish(&mut self, now_ms: i64, regions: Vec<RegionVerdict>, hard: Vec<HardProbe>) -> Tick {
        let failing = regions
            .iter()
            .filter(|r| r.verdict == Verdict::Fail)
            .count() as u32;
        if failing >= self.quorum() {
            self.consecutive = self.consecutive.saturating_add(1);
        } else {
            self.consecutive = 0;
        }
        let mut changes = Vec::new();
        for r in &regions {
            let from = self.last.insert(r.region.clone(), r.verdict);
            if from != Some(r.verdict) {
                changes.push(VerdictChange {
                    region: r.region.clone(),
                    from,
                    to: r.clone(),
                });
            }
        }
        let kind = if self.tripped {
            None
        } else if hard.len() >= 2 {
            Some(TripKind::HardFail)
        } else if self.consecutive >= self.guard.for_ticks.max(1) {
            Some(TripKind::Quorum)
        } else {
            None
        };
        let trip = kind.map(|kind| {
            self.tripped = true;
            let summary = match kind {
                TripKind::HardFail => summary::hard_fail(&self.guard, &hard),
                TripKind::Quorum => {
                    summary::quorum(&self.guard, &regions, failing, self.consecutive)
                }
            };
            Trip {
                guard: self.guard.id.clone(),
                action: self.guard.action,
                mode: self.guard.mode,
                kind,
                at_ms: now_ms,
                regions: regions.clone(),
                summary,
            }
        });
        Tick {
            at_ms: now_ms,
            regions,
            failing,
            consecutive: self.consecutive,
            changes,
            trip,
        }
    }
}
