//! Verdicts: per (guard, region), every tick, `PASS`, `FAIL` or `NO_EVIDENCE`,
//! and whether the guard trips (DESIGN.md §5, docs/verdicts.md).
//!
//! Pure code: the caller passes the [`Aggregator`] and the time, so the same
//! evaluator runs in the engine and in the deterministic simulation.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::aggregate::Aggregator;
use crate::plan::{Guard, GuardAction, GuardMode};

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
    /// The region's value (lower median of the voting probes), if any voted.
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
    /// Probes left out by paired attribution.
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

/// One armed guard: the hysteresis counter, the last verdict per region and the latch.
#[derive(Debug, Clone)]
pub struct GuardEvaluator {
    guard: Guard,
    /// Regions listed on earlier ticks: a region that goes silent stays listed.
    seen_regions: BTreeSet<String>,
    last: BTreeMap<String, Verdict>,
    consecutive: u32,
    tripped: bool,
}

impl GuardEvaluator {
    /// A fresh evaluator: nothing seen, not tripped.
    pub fn new(guard: Guard) -> Self {
        Self {
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

    /// Probe-source guards: evaluates the window of per-probe figures ending at
    /// `now_ms`. `connected_regions` are regions with a probe connected now, so
    /// a region whose probes are all silent still shows (as NO_EVIDENCE).
    pub fn tick_probes(
        &mut self,
        agg: &Aggregator,
        now_ms: i64,
        connected_regions: &BTreeSet<String>,
    ) -> Tick {
        let _ = agg;
        self.seen_regions.extend(connected_regions.iter().cloned());
        let regions = self
            .seen_regions
            .iter()
            .map(|r| self.no_evidence(r, "not evaluated yet"))
            .collect();
        self.finish(now_ms, regions)
    }

    /// Status page and Prometheus guards: evaluates the latest reading
    /// (`None`: nothing read yet; `Some((read_at_ms, Err(e)))`: the read failed).
    pub fn tick_reading(
        &mut self,
        now_ms: i64,
        reading: Option<&(i64, Result<f64, String>)>,
    ) -> Tick {
        let _ = reading;
        let regions = vec![self.no_evidence("global", "not evaluated yet")];
        self.finish(now_ms, regions)
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

    fn finish(&mut self, now_ms: i64, regions: Vec<RegionVerdict>) -> Tick {
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
        Tick {
            at_ms: now_ms,
            regions,
            failing: 0,
            consecutive: self.consecutive,
            changes,
            trip: None,
        }
    }
}
