//! The deterministic simulation (issue 4, "How it is proven"): simulated
//! probes produce results at their check interval, with jitter, into the real
//! [`Aggregator`]; a tick loop on tokio's paused clock calls the real
//! [`GuardEvaluator`]. Each case asserts the verdict sequence per region and
//! the time the guard trips (or that it never does); the randomized noise runs
//! must never trip. `figures` (ignored; run it in release) prints the
//! detection-time and false-trip table of docs/verdicts.md:
//!
//! ```sh
//! cargo test --release -p cutover-coordinator --lib verdict::sim::figures -- --ignored --nocapture
//! ```

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::sync::Arc;
use std::time::Duration;

use cutover_proto::v1;

use super::{GuardEvaluator, Trip, TripKind, Verdict};
use crate::aggregate::Aggregator;
use crate::config::TargetName;
use crate::plan::{CompareOp, Condition, Guard, GuardAction, GuardMode, GuardSource, Metric};

/// Simulated wall clock at t = 0.
const BASE_MS: i64 = 1_800_000_000_000;
const CHECK: &str = "install-core";
const REGIONS: [&str; 3] = ["asia", "eu", "us"];

/// What goes wrong on new, where and when.
#[derive(Debug, Clone)]
struct Fault {
    /// Runs starting at or after this fail (ms since the start).
    from_ms: i64,
    /// … and before this.
    until_ms: i64,
    /// Regions whose probes see it.
    regions: Vec<&'static str>,
    /// Corrupt archives (hard failures) instead of errors.
    corrupt: bool,
    /// Flapping: on for `.0` ms, off for `.1` ms, from `from_ms`.
    flap: Option<(i64, i64)>,
}

impl Fault {
    fn new(from_ms: i64, regions: &[&'static str]) -> Self {
        Self {
            from_ms,
            until_ms: i64::MAX,
            regions: regions.to_vec(),
            corrupt: false,
            flap: None,
        }
    }

    fn active(&self, region: &str, t: i64) -> bool {
        if t < self.from_ms || t >= self.until_ms || !self.regions.contains(&region) {
            return false;
        }
        match self.flap {
            None => true,
            Some((on, off)) => (t - self.from_ms) % (on + off) < on,
        }
    }
}

/// The world: 3 regions × `probes` probes running one check on old and new.
#[derive(Debug, Clone)]
struct Scenario {
    probes: usize,
    interval_ms: i64,
    /// Each run starts `interval + U(0, jitter)` after the previous one (as the
    /// probe's scheduler does); 0 = a fixed phase per probe, no randomness.
    jitter_ms: i64,
    fault: Option<Fault>,
    /// Independent failure probability of each result on new / old.
    noise_new: f64,
    noise_old: f64,
    /// A probe that reports every result on new as failed (old fine).
    liar: Option<String>,
    /// Probes whose own network fails everything (old and new).
    broken: Vec<String>,
    /// A region with no results (probes cut off) during these spans.
    silent: Vec<(&'static str, i64, i64)>,
}

impl Scenario {
    fn quiet() -> Self {
        Self {
            probes: 3,
            interval_ms: 1000,
            jitter_ms: 0,
            fault: None,
            noise_new: 0.0,
            noise_old: 0.0,
            liar: None,
            broken: Vec::new(),
            silent: Vec::new(),
        }
    }

    fn silent(&self, region: &str, t: i64) -> bool {
        self.silent
            .iter()
            .any(|(r, from, until)| *r == region && (*from..*until).contains(&t))
    }

    fn outcome(
        &self,
        probe: &SimProbe,
        target: v1::Target,
        t: i64,
        rng: &mut fastrand::Rng,
    ) -> v1::Outcome {
        if self.broken.iter().any(|b| **b == *probe.id) {
            return v1::Outcome::Failure;
        }
        if target == v1::Target::Old {
            return if self.noise_old > 0.0 && rng.f64() < self.noise_old {
                v1::Outcome::Failure
            } else {
                v1::Outcome::Success
            };
        }
        if let Some(f) = &self.fault
            && f.active(probe.region, t)
        {
            return if f.corrupt {
                v1::Outcome::HardFailure
            } else {
                v1::Outcome::Failure
            };
        }
        if self.liar.as_deref() == Some(&*probe.id)
            || (self.noise_new > 0.0 && rng.f64() < self.noise_new)
        {
            return v1::Outcome::Failure;
        }
        v1::Outcome::Success
    }
}

struct SimProbe {
    id: Arc<str>,
    region: &'static str,
    next_run_ms: i64,
}

/// Guard settings under test, with the tick the engine evaluates them at.
#[derive(Debug, Clone, Copy)]
struct Settings {
    window_ms: u64,
    op: CompareOp,
    threshold: f64,
    min_samples: u32,
    min_probes: u32,
    quorum: u32,
    for_ticks: u32,
    tick_ms: i64,
}

/// FAST: the fault→fallback benchmark's settings (docs/verdicts.md): every
/// result of the last ~2 check intervals (1 s + up to 100 ms jitter) failed,
/// at least 2 of them, in 2 of 3 regions, on one 250 ms tick.
const FAST: Settings = Settings {
    window_ms: 2200,
    op: CompareOp::Ge,
    threshold: 1.0,
    min_samples: 2,
    min_probes: 2,
    quorum: 2,
    for_ticks: 1,
    tick_ms: 250,
};

/// The production defaults (the plan's defaults; docs/verdicts.md) with the
/// example plan's condition.
const PRODUCTION: Settings = Settings {
    window_ms: 60_000,
    op: CompareOp::Gt,
    threshold: 0.5,
    min_samples: 3,
    min_probes: 2,
    quorum: 2,
    for_ticks: 3,
    tick_ms: 1000,
};

/// The cases' settings: easy to follow by hand (5 results a window, 3 must fail).
const CASE: Settings = Settings {
    window_ms: 5000,
    op: CompareOp::Gt,
    threshold: 0.5,
    min_samples: 3,
    min_probes: 2,
    quorum: 2,
    for_ticks: 3,
    tick_ms: 1000,
};

impl Settings {
    fn guard(&self) -> Guard {
        Guard {
            id: "install".into(),
            source: GuardSource::Probe {
                check: CHECK.into(),
                target: TargetName::New,
            },
            condition: Condition {
                metric: Metric::ErrorRatio,
                op: self.op,
                threshold: self.threshold,
            },
            window: Duration::from_millis(self.window_ms),
            quorum: self.quorum,
            for_ticks: self.for_ticks,
            action: GuardAction::Fallback,
            armed_from: "switch".into(),
            mode: GuardMode::Enforce,
            min_samples: self.min_samples,
            min_probes: self.min_probes,
            paired: true,
            interval: Duration::from_secs(10),
        }
    }
}

/// One run's outcome.
#[derive(Debug, Default)]
struct SimRun {
    /// Per region, every tick: (t ms, verdict). Only when recording.
    verdicts: BTreeMap<String, Vec<(i64, Verdict)>>,
    /// Probes excluded on any tick, with the reason (recording only).
    excluded: BTreeSet<String>,
    /// The trip and its tick time (ms since the start).
    trip: Option<(i64, Trip)>,
    /// Ticks evaluated.
    ticks: u64,
}

impl SimRun {
    /// A region's verdicts as runs: `NO_EVIDENCE@1 PASS@3 FAIL@13` (seconds).
    fn timeline(&self, region: &str) -> String {
        let mut out = Vec::new();
        let mut last = None;
        for (t, v) in &self.verdicts[region] {
            if last != Some(*v) {
                out.push(format!("{}@{}", v.label(), secs(*t)));
                last = Some(*v);
            }
        }
        out.join(" ")
    }

    fn trip_at(&self) -> Option<String> {
        self.trip.as_ref().map(|(t, _)| secs(*t))
    }
}

fn secs(ms: i64) -> String {
    let s = format!("{:.2}", ms as f64 / 1000.0);
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Runs `scenario` for `until_ms` of simulated time on tokio's (paused)
/// clock. Stops at the trip unless `record` (then it keeps ticking, latched).
async fn simulate(
    s: &Scenario,
    guard: Guard,
    tick_ms: i64,
    until_ms: i64,
    seed: u64,
    record: bool,
) -> SimRun {
    let mut rng = fastrand::Rng::with_seed(seed);
    let start = tokio::time::Instant::now();
    let mut agg = Aggregator::new(60);
    agg.retain_at_least(i64::try_from(guard.window.as_millis()).unwrap_or(i64::MAX));
    let mut eval = GuardEvaluator::new(guard);
    let mut probes: Vec<SimProbe> = Vec::new();
    for (r, region) in REGIONS.iter().enumerate() {
        for i in 0..s.probes {
            let n = (r * s.probes + i) as i64;
            // Fixed phases without jitter; otherwise probes connected at random moments.
            let phase = if s.jitter_ms == 0 {
                50 + n * 100 % s.interval_ms
            } else {
                rng.i64(0..s.interval_ms)
            };
            probes.push(SimProbe {
                id: Arc::from(format!("{region}-{}", i + 1)),
                region,
                next_run_ms: phase,
            });
        }
    }
    // Results on their way to the coordinator: (arrives, seq, probe, at, target, outcome, µs).
    type InFlight = (i64, u64, usize, i64, i32, i32, u64);
    let mut pending: BinaryHeap<Reverse<InFlight>> = BinaryHeap::new();
    let mut template = v1::CheckResult {
        check_id: CHECK.into(),
        ..Default::default()
    };
    let mut seq = 0u64;
    let mut run = SimRun::default();
    let mut t = tick_ms;
    while t <= until_ms {
        // Every run that starts before this tick, in start order per probe.
        for (p, probe) in probes.iter_mut().enumerate() {
            while probe.next_run_ms <= t {
                let started = probe.next_run_ms;
                let step = s.interval_ms
                    + if s.jitter_ms > 0 {
                        rng.i64(0..=s.jitter_ms)
                    } else {
                        0
                    };
                probe.next_run_ms += step;
                if s.silent(probe.region, started) {
                    continue;
                }
                let mut targets = [v1::Target::Old, v1::Target::New];
                if s.jitter_ms > 0 {
                    rng.shuffle(&mut targets);
                }
                let mut at = started;
                for target in targets {
                    let outcome = s.outcome(probe, target, at, &mut rng);
                    let ms = match (outcome, s.jitter_ms) {
                        (v1::Outcome::Success, 0) => 30,
                        (v1::Outcome::Success, _) => rng.i64(15..=80),
                        (_, 0) => 5,
                        _ => rng.i64(2..=20),
                    };
                    at += ms;
                    let delivery = if s.jitter_ms == 0 {
                        10
                    } else {
                        rng.i64(2..=40)
                    };
                    seq += 1;
                    pending.push(Reverse((
                        at + delivery,
                        seq,
                        p,
                        at,
                        target as i32,
                        outcome as i32,
                        ms as u64 * 1000,
                    )));
                }
            }
        }
        while let Some(Reverse((arrives, ..))) = pending.peek()
            && *arrives <= t
        {
            let Reverse((arrives, _, p, at, target, outcome, us)) = pending.pop().expect("peeked");
            (template.target, template.outcome, template.duration_us) = (target, outcome, us);
            let probe = &probes[p];
            agg.add(
                &probe.id,
                probe.region,
                BASE_MS + at,
                &template,
                BASE_MS + arrives,
            );
        }
        tokio::time::sleep_until(start + Duration::from_millis(t as u64)).await;
        let connected: BTreeSet<String> = REGIONS
            .iter()
            .filter(|r| !s.silent(r, t))
            .map(|r| r.to_string())
            .collect();
        let tick = eval.tick_probes(&agg, BASE_MS + t, &connected);
        run.ticks += 1;
        if record {
            for r in &tick.regions {
                run.verdicts
                    .entry(r.region.clone())
                    .or_default()
                    .push((t, r.verdict));
                for e in &r.excluded {
                    run.excluded.insert(format!("{}: {}", e.probe, e.reason));
                }
            }
        }
        if let Some(trip) = tick.trip {
            run.trip = Some((t, trip));
            if !record {
                break;
            }
        }
        t += tick_ms;
    }
    assert_eq!(
        start.elapsed().as_millis() as i64,
        t.min(until_ms / tick_ms * tick_ms),
        "the paused clock moved exactly with the simulation"
    );
    run
}

async fn case(s: &Scenario, settings: Settings, until_ms: i64) -> SimRun {
    let mut g = settings.guard();
    g.mode = GuardMode::Enforce;
    simulate(s, g, settings.tick_ms, until_ms, 1, true).await
}

// -- The cases: CASE settings (window 5 s, 3 of ~5 results failing, quorum 2,
// -- for 3, tick 1 s), a fault on new from t = 10 s. Each probe runs once a
// -- second at a fixed phase (0.05 … 0.85 s), so 3 failures are in by 12.x s:
// -- FAIL from 13 s, the third consecutive failing tick at 15 s.

const BEFORE: &str = "NO_EVIDENCE@1 PASS@3";

#[tokio::test(start_paused = true)]
async fn a_fault_in_one_region_never_trips_with_quorum_2() {
    let mut s = Scenario::quiet();
    s.fault = Some(Fault::new(10_000, &["asia"]));
    let run = case(&s, CASE, 60_000).await;
    assert_eq!(run.timeline("asia"), format!("{BEFORE} FAIL@13"));
    assert_eq!(run.timeline("eu"), BEFORE);
    assert_eq!(run.timeline("us"), BEFORE);
    assert_eq!(run.trip_at(), None);
}

#[tokio::test(start_paused = true)]
async fn a_fault_in_two_regions_trips_after_for_ticks() {
    let mut s = Scenario::quiet();
    s.fault = Some(Fault::new(10_000, &["asia", "us"]));
    let run = case(&s, CASE, 30_000).await;
    assert_eq!(run.timeline("asia"), format!("{BEFORE} FAIL@13"));
    assert_eq!(run.timeline("eu"), BEFORE);
    assert_eq!(run.timeline("us"), format!("{BEFORE} FAIL@13"));
    assert_eq!(run.trip_at().as_deref(), Some("15"));
    let (_, trip) = run.trip.unwrap();
    assert_eq!(trip.kind, TripKind::Quorum);
    assert_eq!(
        trip.summary,
        "2 of 3 regions saw install-core failures on new (error_ratio > 0.5 over the last 5s, 3 \
         ticks in a row): asia 1.00 (3/3 probes failing, 15 samples), us 1.00 (3/3 probes \
         failing, 15 samples); not failing: eu PASS 0.00 (0/3 probes failing, 15 samples)"
    );
}

#[tokio::test(start_paused = true)]
async fn a_fault_in_three_regions_trips_after_for_ticks() {
    let mut s = Scenario::quiet();
    s.fault = Some(Fault::new(10_000, &REGIONS));
    let run = case(&s, CASE, 30_000).await;
    for r in REGIONS {
        assert_eq!(run.timeline(r), format!("{BEFORE} FAIL@13"), "{r}");
    }
    assert_eq!(run.trip_at().as_deref(), Some("15"));
    assert!(run.trip.unwrap().1.summary.starts_with("3 of 3 regions"));
}

#[tokio::test(start_paused = true)]
async fn quorum_is_the_number_of_regions_that_must_fail_together() {
    let mut s = Scenario::quiet();
    s.fault = Some(Fault::new(10_000, &["asia", "us"]));
    let three = Settings { quorum: 3, ..CASE };
    assert_eq!(case(&s, three, 60_000).await.trip_at(), None);
    s.fault = Some(Fault::new(10_000, &["eu"]));
    let one = Settings { quorum: 1, ..CASE };
    assert_eq!(case(&s, one, 60_000).await.trip_at().as_deref(), Some("15"));
}

#[tokio::test(start_paused = true)]
async fn for_holds_off_a_short_burst() {
    // 3 s of errors in every region: the 3 failed runs (10.x, 11.x, 12.x s)
    // are 3 of the 5 results in the window at 13, 14 and 15 s: 3 FAILing
    // ticks. `for` 4 holds off; `for` 3 trips on the third.
    let mut s = Scenario::quiet();
    s.fault = Some(Fault {
        until_ms: 13_000,
        ..Fault::new(10_000, &REGIONS)
    });
    let four = Settings {
        for_ticks: 4,
        ..CASE
    };
    let run = case(&s, four, 40_000).await;
    for r in REGIONS {
        assert_eq!(run.timeline(r), format!("{BEFORE} FAIL@13 PASS@16"), "{r}");
    }
    assert_eq!(run.trip_at(), None);
    assert_eq!(
        case(&s, CASE, 40_000).await.trip_at().as_deref(),
        Some("15")
    );
}

#[tokio::test(start_paused = true)]
async fn a_single_loud_probe_moves_its_region_by_one_position_only() {
    let mut s = Scenario::quiet();
    s.liar = Some("asia-1".into());
    let run = case(&s, CASE, 120_000).await;
    for r in REGIONS {
        assert_eq!(run.timeline(r), BEFORE, "{r}");
    }
    assert!(
        run.excluded.is_empty(),
        "old works from asia-1: not excluded"
    );
    assert_eq!(run.trip_at(), None);
    // With a real fault in asia, the liar adds nothing: still one region.
    s.fault = Some(Fault::new(10_000, &["asia"]));
    assert_eq!(case(&s, CASE, 60_000).await.trip_at(), None);
}

#[tokio::test(start_paused = true)]
async fn a_silent_region_is_no_evidence_never_fail() {
    // us is cut off from 10 s to 40 s while new fails in asia: one region
    // FAILs, us shows NO_EVIDENCE once fewer than 3 results are in its
    // window (at 13 s) — it does not count toward the quorum.
    let mut s = Scenario::quiet();
    s.silent = vec![("us", 10_000, 40_000)];
    s.fault = Some(Fault::new(10_000, &["asia"]));
    let run = case(&s, CASE, 60_000).await;
    assert_eq!(run.timeline("asia"), format!("{BEFORE} FAIL@13"));
    assert_eq!(
        run.timeline("us"),
        format!("{BEFORE} NO_EVIDENCE@13 PASS@43")
    );
    assert_eq!(run.trip_at(), None);
    // Silence does not block a real fault elsewhere either.
    s.fault = Some(Fault::new(10_000, &["asia", "eu"]));
    assert_eq!(
        case(&s, CASE, 60_000).await.trip_at().as_deref(),
        Some("15")
    );
}

#[tokio::test(start_paused = true)]
async fn a_probe_whose_own_network_is_broken_is_excluded() {
    // One probe in each of two regions fails on old and new alike.
    let mut s = Scenario::quiet();
    s.broken = vec!["asia-2".into(), "eu-3".into()];
    let run = case(&s, CASE, 60_000).await;
    for r in REGIONS {
        assert_eq!(run.timeline(r), BEFORE, "{r}");
    }
    assert_eq!(
        run.excluded.iter().map(String::as_str).collect::<Vec<_>>(),
        [
            "asia-2: own network: old failed too (3/3)",
            "asia-2: own network: old failed too (4/4)",
            "asia-2: own network: old failed too (5/5)",
            "eu-3: own network: old failed too (3/3)",
            "eu-3: own network: old failed too (4/4)",
            "eu-3: own network: old failed too (5/5)",
        ]
    );
    assert_eq!(run.trip_at(), None);
    // Two broken probes in one region leave it without evidence.
    s.broken = vec!["asia-1".into(), "asia-2".into()];
    s.fault = Some(Fault::new(10_000, &["asia", "eu"]));
    let run = case(&s, CASE, 60_000).await;
    assert_eq!(run.timeline("asia"), "NO_EVIDENCE@1");
    assert_eq!(run.timeline("eu"), format!("{BEFORE} FAIL@13"));
    assert_eq!(run.trip_at(), None);
}

#[tokio::test(start_paused = true)]
async fn five_percent_noise_on_new_never_trips() {
    let mut s = Scenario::quiet();
    s.jitter_ms = 100;
    s.noise_new = 0.05;
    let run = simulate(&s, CASE.guard(), CASE.tick_ms, 600_000, 7, true).await;
    assert_eq!(run.trip_at(), None);
    for r in REGIONS {
        let t = run.timeline(r);
        assert!(t.starts_with("NO_EVIDENCE@"), "{r}: {t}");
        assert!(!t.contains("FAIL"), "{r}: {t}");
    }
}

#[tokio::test(start_paused = true)]
async fn flapping_shows_in_the_verdicts_and_trips_only_when_it_holds() {
    // `for` 4. New fails 2 s in every 6 s in all regions: never 3 failures in
    // a 5 s window, no region FAILs.
    let four = Settings {
        for_ticks: 4,
        ..CASE
    };
    let flap = |on, off| Fault {
        flap: Some((on, off)),
        ..Fault::new(10_000, &REGIONS)
    };
    let mut s = Scenario::quiet();
    s.fault = Some(flap(2000, 4000));
    let run = case(&s, four, 60_000).await;
    for r in REGIONS {
        assert_eq!(run.timeline(r), BEFORE, "{r}");
    }
    assert_eq!(run.trip_at(), None);
    // 3 s in 6: every region FAILs for 3 ticks, PASSes for 3: the decision
    // log shows the flapping, the guard does not trip.
    s.fault = Some(flap(3000, 3000));
    let run = case(&s, four, 60_000).await;
    for r in REGIONS {
        assert_eq!(
            run.timeline(r),
            format!(
                "{BEFORE} FAIL@13 PASS@16 FAIL@19 PASS@22 FAIL@25 PASS@28 FAIL@31 PASS@34 \
                 FAIL@37 PASS@40 FAIL@43 PASS@46 FAIL@49 PASS@52 FAIL@55 PASS@58"
            ),
            "{r}"
        );
    }
    assert_eq!(run.trip_at(), None);
    // 4 s in 6: always at least 3 failures of 5 in the window: it holds.
    s.fault = Some(flap(4000, 2000));
    let run = case(&s, four, 60_000).await;
    assert_eq!(run.timeline("eu"), format!("{BEFORE} FAIL@13"));
    assert_eq!(run.trip_at().as_deref(), Some("16"));
}

#[tokio::test(start_paused = true)]
async fn corrupt_archives_from_two_probes_trip_at_once() {
    // Hash mismatches in one region only: no quorum, no `for`: the first tick
    // after two probes reported one trips. Ticks every 250 ms to see it.
    let mut s = Scenario::quiet();
    s.fault = Some(Fault {
        corrupt: true,
        ..Fault::new(10_000, &["eu"])
    });
    let quick = Settings {
        tick_ms: 250,
        ..CASE
    };
    let run = case(&s, quick, 30_000).await;
    // eu's probes run at .35, .45 and .55 s; a result on new arrives 45 ms
    // later: the second mismatch at 10.495 s.
    assert_eq!(run.trip_at().as_deref(), Some("10.5"));
    let (_, trip) = run.trip.as_ref().unwrap();
    assert_eq!(trip.kind, TripKind::HardFail);
    assert_eq!(
        trip.summary,
        "install-core hash mismatches on new from 2 probes within 5s (eu-1 in eu: 1, eu-2 in eu: 1): corruption trips at once, without quorum or `for`"
    );
    assert_eq!(
        run.timeline("eu"),
        "NO_EVIDENCE@0.25 PASS@2.75 FAIL@12.75",
        "the error ratio follows as usual"
    );
}

#[tokio::test(start_paused = true)]
async fn shadow_mode_trips_the_same_and_leaves_acting_to_nobody() {
    let mut s = Scenario::quiet();
    s.fault = Some(Fault::new(10_000, &REGIONS));
    let mut g = CASE.guard();
    g.mode = GuardMode::Shadow;
    let run = simulate(&s, g, CASE.tick_ms, 40_000, 1, true).await;
    let (t, trip) = run.trip.as_ref().unwrap();
    assert_eq!((*t, trip.mode), (15_000, GuardMode::Shadow));
    // Latched: one trip, the verdicts keep being evaluated.
    assert_eq!(run.verdicts["asia"].len(), 40);
    assert_eq!(run.timeline("asia"), format!("{BEFORE} FAIL@13"));
}

// -- Randomized noise runs: 5 % random errors on new, one lying probe, one
// -- region partitioned half the time. Zero trips allowed.

/// A random noisy world: probes jittered by up to a tenth of the interval,
/// 5 % errors on new (1 % on old), a liar and a region silent about half the
/// time in spans of 5–60 s.
fn noisy(rng: &mut fastrand::Rng, until_ms: i64, interval_ms: i64) -> Scenario {
    let mut s = Scenario::quiet();
    s.interval_ms = interval_ms;
    s.jitter_ms = interval_ms / 10;
    s.noise_new = 0.05;
    s.noise_old = 0.01;
    s.liar = Some(format!(
        "{}-{}",
        REGIONS[rng.usize(0..3)],
        rng.usize(1..=s.probes)
    ));
    let region = REGIONS[rng.usize(0..3)];
    let mut t = 0;
    let mut silent = rng.bool();
    while t < until_ms {
        let span = rng.i64(5_000..=60_000);
        if silent {
            s.silent.push((region, t, t + span));
        }
        silent = !silent;
        t += span;
    }
    s
}

/// Runs `n` random noisy worlds of `until_ms` each; returns the trips.
async fn noise_runs(settings: Settings, n: u64, until_ms: i64, seed: u64) -> Vec<String> {
    let mut trips = Vec::new();
    for i in 0..n {
        let mut rng = fastrand::Rng::with_seed(seed + i);
        let s = noisy(&mut rng, until_ms, 1000);
        let run = simulate(
            &s,
            settings.guard(),
            settings.tick_ms,
            until_ms,
            seed + i,
            false,
        )
        .await;
        if let Some((t, trip)) = run.trip {
            trips.push(format!(
                "seed {}: at {}: {}",
                seed + i,
                secs(t),
                trip.summary
            ));
        }
    }
    trips
}

/// Runs per test; `CUTOVER_SIM_RUNS` overrides (each test runs that many).
fn runs(default: u64) -> u64 {
    std::env::var("CUTOVER_SIM_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(start_paused = true)]
async fn noise_liar_and_partition_never_trip_fast_settings() {
    let trips = noise_runs(FAST, runs(2000), 120_000, 1_000_000).await;
    assert!(
        trips.is_empty(),
        "{} false trips:\n{}",
        trips.len(),
        trips.join("\n")
    );
}

#[tokio::test(start_paused = true)]
async fn noise_liar_and_partition_never_trip_production_defaults() {
    let trips = noise_runs(PRODUCTION, runs(500), 300_000, 2_000_000).await;
    assert!(
        trips.is_empty(),
        "{} false trips:\n{}",
        trips.len(),
        trips.join("\n")
    );
}

// -- Figures for docs/verdicts.md: detection time and false trips per hour
// -- for a range of settings, 3 regions × 3 probes at a 1 s check interval.

/// Seconds from a fault (every result on new fails, every region, from a
/// random moment after the warm-up) to the trip; `noise` adds the noisy world
/// (5 % errors, a liar, a region partitioned half the time).
async fn detection(row: Row, n: u64, noise: bool, seed: u64) -> Vec<f64> {
    detect(row, n, noise, false, seed).await
}

/// [`detection`] of a fault that is errors or (`corrupt`) corrupt archives.
async fn detect(row: Row, n: u64, noise: bool, corrupt: bool, seed: u64) -> Vec<f64> {
    let Row(settings, interval_ms) = row;
    let window_ms = settings.window_ms as i64;
    let mut out = Vec::new();
    for i in 0..n {
        let mut rng = fastrand::Rng::with_seed(seed + i);
        let from_ms = (2 * window_ms).max(30_000) + rng.i64(0..interval_ms);
        // Long enough for a partition (at most 60 s) to end.
        let until_ms = from_ms + 5 * window_ms + 3 * interval_ms + 90_000;
        let mut s = if noise {
            noisy(&mut rng, until_ms, interval_ms)
        } else {
            Scenario {
                interval_ms,
                jitter_ms: interval_ms / 10,
                ..Scenario::quiet()
            }
        };
        s.fault = Some(Fault {
            corrupt,
            ..Fault::new(from_ms, &REGIONS)
        });
        let run = simulate(
            &s,
            settings.guard(),
            settings.tick_ms,
            until_ms,
            seed + i,
            false,
        )
        .await;
        match run.trip {
            Some((t, _)) if t >= from_ms => out.push((t - from_ms) as f64 / 1000.0),
            // A trip before the fault is a false trip: counted as never detected.
            _ => out.push(f64::INFINITY),
        }
    }
    out.sort_by(f64::total_cmp);
    out
}

/// Runs with a trip in noisy worlds, over `hours` of simulated time in
/// 10-minute runs (each run a new world; a run ends at its trip): the seed,
/// the time and the trip's summary of each.
async fn false_trips(row: Row, hours: u64, seed: u64) -> Vec<String> {
    let Row(settings, interval_ms) = row;
    let run_ms = 600_000;
    let mut trips = Vec::new();
    for i in 0..hours * 6 {
        let mut rng = fastrand::Rng::with_seed(seed + i);
        let s = noisy(&mut rng, run_ms, interval_ms);
        let run = simulate(
            &s,
            settings.guard(),
            settings.tick_ms,
            run_ms,
            seed + i,
            false,
        )
        .await;
        if let Some((t, trip)) = run.trip {
            trips.push(format!(
                "seed {}, at {} s: {}",
                seed + i,
                secs(t),
                trip.summary
            ));
        }
    }
    trips
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Settings with the check interval they run at, ms.
#[derive(Debug, Clone, Copy)]
struct Row(Settings, i64);

#[tokio::test(start_paused = true)]
#[ignore = "prints the trade-off table of docs/verdicts.md; run in release"]
async fn figures() {
    let trials = runs(1000);
    let hours: u64 = std::env::var("CUTOVER_SIM_HOURS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let half = |window_ms, min_samples, for_ticks| Settings {
        window_ms,
        op: CompareOp::Gt,
        threshold: 0.5,
        min_samples,
        for_ticks,
        ..FAST
    };
    let rows = [
        Row(FAST, 1000),
        Row(
            Settings {
                tick_ms: 100,
                ..FAST
            },
            1000,
        ),
        Row(
            Settings {
                for_ticks: 2,
                ..FAST
            },
            1000,
        ),
        Row(Settings { quorum: 1, ..FAST }, 1000),
        Row(Settings { quorum: 3, ..FAST }, 1000),
        Row(half(3000, 2, 1), 1000),
        Row(half(3000, 2, 2), 1000),
        Row(half(4000, 3, 1), 1000),
        Row(
            Settings {
                window_ms: 10_000,
                ..PRODUCTION
            },
            1000,
        ),
        Row(
            Settings {
                window_ms: 30_000,
                ..PRODUCTION
            },
            1000,
        ),
        Row(PRODUCTION, 1000),
        Row(
            Settings {
                quorum: 1,
                ..PRODUCTION
            },
            1000,
        ),
        Row(PRODUCTION, 15_000),
        Row(
            Settings {
                window_ms: 120_000,
                ..PRODUCTION
            },
            30_000,
        ),
    ];
    println!(
        "3 regions x 3 probes, jitter up to a tenth of the check interval; {trials} faults per row, {hours} h of noise per row"
    );
    println!(
        "| check interval | condition | window | min_samples | quorum | for | tick | fault → trip: median | p99 | with noise: median | p99 | false trips |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (i, row) in rows.iter().enumerate() {
        let Row(c, interval_ms) = *row;
        let seed = 10_000_000 * (i as u64 + 1);
        let clean = detection(*row, trials, false, seed).await;
        let noisy = detection(*row, trials, true, seed + 5_000_000).await;
        let trips = false_trips(*row, hours, seed + 7_000_000).await;
        let s = |v: f64| {
            if v.is_finite() {
                format!("{v:.2} s")
            } else {
                "never".to_string()
            }
        };
        println!(
            "| {} | error_ratio {} {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} in {hours} h |",
            secs(interval_ms) + " s",
            c.op.symbol(),
            c.threshold,
            secs(c.window_ms as i64) + " s",
            c.min_samples,
            c.quorum,
            c.for_ticks,
            secs(c.tick_ms) + " s",
            s(quantile(&clean, 0.5)),
            s(quantile(&clean, 0.99)),
            s(quantile(&noisy, 0.5)),
            s(quantile(&noisy, 0.99)),
            trips.len(),
        );
    }
}

#[tokio::test(start_paused = true)]
#[ignore = "prints the hard-fail line of docs/verdicts.md; run in release"]
async fn figures_hard_fail() {
    let trials = runs(1000);
    println!("corrupt archives on new (every region), {trials} faults per row: fault → trip");
    for (name, row) in [
        ("fast", Row(FAST, 1000)),
        ("production", Row(PRODUCTION, 1000)),
        ("production, 15 s checks", Row(PRODUCTION, 15_000)),
    ] {
        let clean = detect(row, trials, false, true, 90_000_000).await;
        let noisy = detect(row, trials, true, true, 95_000_000).await;
        println!(
            "{name}: median {:.2} s, p99 {:.2} s; with noise: median {:.2} s, p99 {:.2} s",
            quantile(&clean, 0.5),
            quantile(&clean, 0.99),
            quantile(&noisy, 0.5),
            quantile(&noisy, 0.99),
        );
    }
}

#[tokio::test(start_paused = true)]
#[ignore = "a long noisy soak of the fast settings; run in release"]
async fn figures_fast_soak() {
    let hours: u64 = std::env::var("CUTOVER_SIM_HOURS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let seed = 500_000_000;
    let trips = false_trips(Row(FAST, 1000), hours, seed).await;
    println!(
        "fast settings, noisy world: {} false trips in {hours} simulated hours",
        trips.len()
    );
    for t in trips {
        println!("{t}");
    }
}
