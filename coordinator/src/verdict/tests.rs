//! One test per rule of the verdict model (docs/verdicts.md); the
//! simulation (`sim.rs`) runs them together over time.

use std::sync::Arc;

use cutover_proto::v1;

use super::*;
use crate::plan::{CompareOp, Condition, Metric};

const NOW: i64 = 1_800_000_000_000;

fn guard(metric: Metric, op: CompareOp, threshold: f64) -> Guard {
    Guard {
        id: "install".into(),
        source: GuardSource::Probe {
            check: "install-core".into(),
            target: TargetName::New,
        },
        condition: Condition {
            metric,
            op,
            threshold,
        },
        window: Duration::from_secs(10),
        quorum: 2,
        for_ticks: 1,
        action: GuardAction::Fallback,
        armed_from: "switch".into(),
        mode: GuardMode::Enforce,
        min_samples: 3,
        min_probes: 2,
        paired: true,
        interval: Duration::from_secs(10),
    }
}

fn errors() -> Guard {
    guard(Metric::ErrorRatio, CompareOp::Gt, 0.5)
}

fn result(target: v1::Target, outcome: v1::Outcome, ms: u64) -> v1::CheckResult {
    v1::CheckResult {
        check_id: "install-core".into(),
        target: target as i32,
        outcome: outcome as i32,
        duration_us: ms * 1000,
        ..Default::default()
    }
}

/// `n` results of one probe on one target, one a second ending at `NOW`;
/// the last `failed` of them failed (hard failures when `hard`).
fn feed(agg: &mut Aggregator, probe: &str, target: v1::Target, n: u64, failed: u64, hard: bool) {
    let region = probe.split('-').next().unwrap().to_string();
    let p: Arc<str> = Arc::from(probe);
    for i in 0..n {
        let outcome = match (i >= n - failed, hard) {
            (false, _) => v1::Outcome::Success,
            (true, false) => v1::Outcome::Failure,
            (true, true) => v1::Outcome::HardFailure,
        };
        let at = NOW - (n - 1 - i) as i64 * 1000;
        agg.add(&p, &region, at, &result(target, outcome, 10 + i), NOW);
    }
}

fn new(agg: &mut Aggregator, probe: &str, n: u64, failed: u64) {
    feed(agg, probe, v1::Target::New, n, failed, false);
}

fn old(agg: &mut Aggregator, probe: &str, n: u64, failed: u64) {
    feed(agg, probe, v1::Target::Old, n, failed, false);
}

fn none() -> BTreeSet<String> {
    BTreeSet::new()
}

fn region<'a>(t: &'a Tick, name: &str) -> &'a RegionVerdict {
    t.regions.iter().find(|r| r.region == name).unwrap()
}

fn verdicts(t: &Tick) -> Vec<(&str, Verdict)> {
    t.regions
        .iter()
        .map(|r| (r.region.as_str(), r.verdict))
        .collect()
}

#[test]
fn a_region_is_the_lower_median_of_its_probes_so_one_loud_probe_moves_nothing() {
    let mut agg = Aggregator::new(60);
    // eu: one probe reports only failures.
    new(&mut agg, "eu-1", 5, 5);
    new(&mut agg, "eu-2", 5, 0);
    new(&mut agg, "eu-3", 5, 0);
    // us: two of three fail.
    new(&mut agg, "us-1", 5, 5);
    new(&mut agg, "us-2", 5, 4);
    new(&mut agg, "us-3", 5, 0);
    // asia: two probes, one failing: the lower median is the passing one.
    new(&mut agg, "asia-1", 5, 5);
    new(&mut agg, "asia-2", 5, 1);
    let mut g = GuardEvaluator::new(errors());
    let t = g.tick_probes(&agg, NOW, &none());
    let eu = region(&t, "eu");
    assert_eq!(eu.verdict, Verdict::Pass);
    assert_eq!(eu.value, Some(0.0));
    assert_eq!(
        (eu.voters, eu.probes_seen, eu.failing_probes, eu.samples),
        (3, 3, 1, 15)
    );
    let us = region(&t, "us");
    assert_eq!((us.verdict, us.value), (Verdict::Fail, Some(0.8)));
    let asia = region(&t, "asia");
    assert_eq!((asia.verdict, asia.value), (Verdict::Pass, Some(0.2)));
    assert_eq!(t.failing, 1);
    assert!(t.trip.is_none(), "one region is below the quorum of 2");
}

#[test]
fn a_probe_votes_only_with_min_samples_and_a_region_needs_min_probes() {
    let mut agg = Aggregator::new(60);
    new(&mut agg, "eu-1", 3, 3);
    new(&mut agg, "eu-2", 2, 2);
    new(&mut agg, "eu-3", 1, 1);
    let mut g = GuardEvaluator::new(errors());
    let t = g.tick_probes(&agg, NOW, &none());
    let eu = region(&t, "eu");
    assert_eq!(eu.verdict, Verdict::NoEvidence);
    assert_eq!(eu.value, None);
    assert_eq!((eu.voters, eu.probes_seen), (1, 3));
    assert_eq!(
        eu.reason,
        "1 of 2 probes needed (3 seen, 2 with fewer than 3 results)"
    );

    let mut lenient = errors();
    lenient.min_samples = 2;
    let t = GuardEvaluator::new(lenient).tick_probes(&agg, NOW, &none());
    assert_eq!(region(&t, "eu").verdict, Verdict::Fail);
    assert_eq!(region(&t, "eu").voters, 2);
}

#[test]
fn values_by_metric() {
    let f = |samples, failures, hard, success: &[f64], dns: (u64, u64)| ProbeFigures {
        probe: Arc::from("p"),
        samples,
        failures,
        hard_failures: hard,
        success_ms: success.to_vec(),
        dns_answers: dns.0,
        dns_other: dns.1,
    };
    let v = region::probe_value;
    let ok: Vec<f64> = (1..=20).map(f64::from).collect();
    let p = f(24, 4, 1, &ok, (0, 0));
    assert_eq!(v(Metric::ErrorRatio, &p, 3), Some(4.0 / 24.0));
    assert_eq!(v(Metric::LatencyMs(50), &p, 3), Some(10.0));
    assert_eq!(v(Metric::LatencyMs(95), &p, 3), Some(19.0));
    assert_eq!(v(Metric::LatencyMs(99), &p, 3), Some(20.0));
    assert_eq!(v(Metric::HashMismatches, &p, 3), Some(1.0));
    assert_eq!(v(Metric::DnsMismatchRatio, &p, 3), None, "no DNS answers");
    assert_eq!(v(Metric::Value, &p, 3), None, "not a probe metric");
    // Latency votes on successful results only.
    let p = f(10, 8, 0, &[5.0, 7.0], (0, 0));
    assert_eq!(v(Metric::LatencyMs(50), &p, 3), None);
    assert_eq!(v(Metric::ErrorRatio, &p, 3), Some(0.8));
    // DNS: share of system-resolver answers outside both sites.
    let p = f(4, 0, 0, &[1.0; 4], (4, 1));
    assert_eq!(v(Metric::DnsMismatchRatio, &p, 3), Some(0.25));
    assert_eq!(v(Metric::DnsMismatchRatio, &p, 5), None);
}

#[test]
fn a_latency_guard_takes_each_probes_quantile() {
    let mut agg = Aggregator::new(60);
    for (probe, ms) in [("eu-1", 900), ("eu-2", 800), ("eu-3", 20)] {
        let p: Arc<str> = Arc::from(probe);
        for i in 0..5 {
            agg.add(
                &p,
                "eu",
                NOW - i * 1000,
                &result(v1::Target::New, v1::Outcome::Success, ms),
                NOW,
            );
        }
    }
    let mut g = GuardEvaluator::new(guard(Metric::LatencyMs(95), CompareOp::Gt, 500.0));
    let t = g.tick_probes(&agg, NOW, &none());
    let eu = region(&t, "eu");
    assert_eq!((eu.verdict, eu.value), (Verdict::Fail, Some(800.0)));
    assert_eq!(eu.failing_probes, 2);
}

#[test]
fn paired_attribution_excludes_a_probe_whose_old_fails_too() {
    let mut agg = Aggregator::new(60);
    for p in ["eu-1", "eu-2", "eu-3"] {
        new(&mut agg, p, 5, 5);
    }
    // eu-3's own network is broken: old fails from there as well.
    old(&mut agg, "eu-3", 5, 5);
    // eu-2 also reaches old, fine.
    old(&mut agg, "eu-2", 5, 0);
    // eu-1's old figures are too few to say anything about the probe.
    old(&mut agg, "eu-1", 2, 2);
    let mut g = GuardEvaluator::new(errors());
    let t = g.tick_probes(&agg, NOW, &none());
    let eu = region(&t, "eu");
    assert_eq!(eu.verdict, Verdict::Fail);
    assert_eq!((eu.voters, eu.probes_seen), (2, 3));
    assert_eq!(
        eu.excluded,
        [Excluded {
            probe: "eu-3".into(),
            reason: "own network: old failed too (5/5)".into()
        }]
    );

    // Two broken probes of three: not enough voters left.
    old(&mut agg, "eu-2", 6, 6);
    let t = g.tick_probes(&agg, NOW, &none());
    let eu = region(&t, "eu");
    assert_eq!(eu.verdict, Verdict::NoEvidence);
    assert_eq!(eu.reason, "1 of 2 probes needed (3 seen, 2 excluded)");

    // paired = false: every probe votes.
    let mut unpaired = errors();
    unpaired.paired = false;
    let t = GuardEvaluator::new(unpaired).tick_probes(&agg, NOW, &none());
    assert_eq!(region(&t, "eu").voters, 3);
    assert!(region(&t, "eu").excluded.is_empty());
}

#[test]
fn a_guard_on_old_pairs_with_new() {
    let mut agg = Aggregator::new(60);
    for p in ["eu-1", "eu-2"] {
        old(&mut agg, p, 4, 4);
    }
    new(&mut agg, "eu-1", 4, 4);
    let mut g = errors();
    g.source = GuardSource::Probe {
        check: "install-core".into(),
        target: TargetName::Old,
    };
    g.min_probes = 1;
    let t = GuardEvaluator::new(g).tick_probes(&agg, NOW, &none());
    let eu = region(&t, "eu");
    assert_eq!(eu.excluded[0].reason, "own network: new failed too (4/4)");
    assert_eq!((eu.verdict, eu.voters), (Verdict::Fail, 1));
}

#[test]
fn regions_listed_are_those_with_data_connected_or_seen_before() {
    let mut agg = Aggregator::new(60);
    for p in ["eu-1", "eu-2", "us-1", "us-2"] {
        new(&mut agg, p, 3, 0);
    }
    // asia has only results on old: listed (data for the check), no evidence on new.
    old(&mut agg, "asia-1", 3, 0);
    let mut g = GuardEvaluator::new(errors());
    let connected = BTreeSet::from(["sa".to_string()]);
    let t = g.tick_probes(&agg, NOW, &connected);
    assert_eq!(
        verdicts(&t),
        [
            ("asia", Verdict::NoEvidence),
            ("eu", Verdict::Pass),
            ("sa", Verdict::NoEvidence),
            ("us", Verdict::Pass)
        ]
    );
    assert_eq!(
        region(&t, "sa").reason,
        "0 of 2 probes needed (no results in the window)"
    );
    // Everything goes silent and nobody is connected: still listed.
    let t = g.tick_probes(&agg, NOW + 60_000, &none());
    assert_eq!(t.regions.len(), 4);
    assert!(t.regions.iter().all(|r| r.verdict == Verdict::NoEvidence));
    assert_eq!(t.failing, 0);
}

#[test]
fn quorum_and_for_consecutive_ticks() {
    let mut g = errors();
    g.for_ticks = 3;
    g.window = Duration::from_secs(3);
    let mut g = GuardEvaluator::new(g);
    let fail_both = |agg: &mut Aggregator| {
        for p in ["eu-1", "eu-2", "us-1", "us-2"] {
            new(agg, p, 3, 3);
        }
    };
    let mut agg = Aggregator::new(60);
    fail_both(&mut agg);
    let t1 = g.tick_probes(&agg, NOW, &none());
    let t2 = g.tick_probes(&agg, NOW, &none());
    assert_eq!((t1.failing, t1.consecutive, t2.consecutive), (2, 1, 2));
    assert!(t1.trip.is_none() && t2.trip.is_none());
    // One region recovers for a tick: the count starts again.
    let mut agg = Aggregator::new(60);
    fail_both(&mut agg);
    new(&mut agg, "us-1", 3, 0);
    new(&mut agg, "us-2", 3, 0);
    let t3 = g.tick_probes(&agg, NOW, &none());
    assert_eq!((t3.failing, t3.consecutive), (1, 0));
    let mut agg = Aggregator::new(60);
    fail_both(&mut agg);
    let ticks: Vec<u32> = (0..3)
        .map(|_| g.tick_probes(&agg, NOW, &none()).consecutive)
        .collect();
    assert_eq!(ticks, [1, 2, 3]);
    assert!(g.tripped());

    // Quorum 3 with two failing regions never trips.
    let mut q3 = errors();
    q3.quorum = 3;
    let mut g = GuardEvaluator::new(q3);
    for _ in 0..10 {
        let t = g.tick_probes(&agg, NOW, &none());
        assert!(t.trip.is_none());
        assert_eq!(t.consecutive, 0);
    }
}

#[test]
fn a_trip_latches_and_says_why_in_plain_words() {
    let mut agg = Aggregator::new(60);
    for r in ["asia", "eu", "us"] {
        for i in 1..=3 {
            new(&mut agg, &format!("{r}-{i}"), 3, 3);
        }
    }
    old(&mut agg, "us-2", 5, 5);
    new(&mut agg, "us-3", 3, 1);
    let mut g = GuardEvaluator::new(errors());
    let t = g.tick_probes(&agg, NOW, &BTreeSet::from(["sa".to_string()]));
    let trip = t.trip.expect("3 failing regions, quorum 2, for 1");
    assert_eq!(trip.kind, TripKind::Quorum);
    assert_eq!((trip.guard.as_str(), trip.at_ms), ("install", NOW));
    assert_eq!(trip.regions, t.regions);
    assert_eq!(
        trip.summary,
        "3 of 4 regions saw install-core failures on new (error_ratio > 0.5 over the last 10s, \
         1 tick in a row): asia 1.00 (3/3 probes failing, 9 samples), eu 1.00 (3/3 probes \
         failing, 9 samples), us 0.67 (2/3 probes failing, 9 samples; excluded us-2: own \
         network: old failed too (5/5)); not failing: sa NO_EVIDENCE: 0 of 2 probes needed (no \
         results in the window)"
    );
    assert!(g.tripped());
    // Latched: evaluation goes on, no second trip, even after recovery.
    let t = g.tick_probes(&agg, NOW, &none());
    assert!(t.trip.is_none());
    assert_eq!(t.consecutive, 2);
    let t = g.tick_probes(&agg, NOW + 60_000, &none());
    assert!(t.trip.is_none() && g.tripped());
}

#[test]
fn hash_mismatches_from_two_probes_trip_at_once() {
    let mut g = errors();
    g.quorum = 3;
    g.for_ticks = 5;
    let mut agg = Aggregator::new(60);
    for p in ["eu-1", "eu-2", "eu-3", "us-1", "us-2"] {
        new(&mut agg, p, 5, 0);
    }
    // One probe: not yet (it could be the probe's own path).
    feed(&mut agg, "eu-1", v1::Target::New, 1, 1, true);
    let mut e = GuardEvaluator::new(g.clone());
    assert!(e.tick_probes(&agg, NOW, &none()).trip.is_none());
    // A probe with corruption on old too does not count.
    feed(&mut agg, "eu-2", v1::Target::New, 1, 1, true);
    feed(&mut agg, "eu-2", v1::Target::Old, 1, 1, true);
    assert!(e.tick_probes(&agg, NOW, &none()).trip.is_none());
    // A second probe, in another region: at once, whatever quorum and `for` say.
    feed(&mut agg, "us-1", v1::Target::New, 1, 1, true);
    let t = e.tick_probes(&agg, NOW, &none());
    assert_eq!(t.failing, 0, "the error ratio itself is low");
    let trip = t.trip.expect("hard fail");
    assert_eq!(trip.kind, TripKind::HardFail);
    assert_eq!(
        trip.summary,
        "install-core hash mismatches on new from 2 probes within 10s (eu-1 in eu: 1, us-1 in \
         us: 1): corruption trips at once, without quorum or `for`"
    );
    assert!(e.tick_probes(&agg, NOW, &none()).trip.is_none(), "latched");

    // A probe excluded by paired attribution does not count either.
    let mut agg = Aggregator::new(60);
    for p in ["eu-1", "us-1"] {
        feed(&mut agg, p, v1::Target::New, 3, 3, true);
    }
    old(&mut agg, "us-1", 3, 3);
    let t = GuardEvaluator::new(g).tick_probes(&agg, NOW, &none());
    assert!(t.trip.is_none());
    assert_eq!(region(&t, "us").excluded.len(), 1);
}

#[test]
fn shadow_guards_trip_the_same_and_say_so() {
    let mut agg = Aggregator::new(60);
    for p in ["eu-1", "eu-2", "us-1", "us-2"] {
        new(&mut agg, p, 3, 3);
    }
    let mut g = errors();
    g.mode = GuardMode::Shadow;
    let trip = GuardEvaluator::new(g)
        .tick_probes(&agg, NOW, &none())
        .trip
        .unwrap();
    assert_eq!(
        (trip.mode, trip.action),
        (GuardMode::Shadow, GuardAction::Fallback)
    );
    let json = serde_json::to_value(&trip).unwrap();
    assert_eq!(json["mode"], "shadow");
    assert_eq!(json["action"], "fallback");
    assert_eq!(json["kind"], "quorum");
    assert_eq!(json["regions"][0]["verdict"], "FAIL");
}

#[test]
fn verdict_changes_are_the_decision_log() {
    let mut agg = Aggregator::new(60);
    for p in ["eu-1", "eu-2"] {
        new(&mut agg, p, 3, 0);
    }
    let mut g = GuardEvaluator::new(errors());
    let connected = BTreeSet::from(["us".to_string()]);
    let t = g.tick_probes(&agg, NOW, &connected);
    let first: Vec<_> = t
        .changes
        .iter()
        .map(|c| (c.region.as_str(), c.from, c.to.verdict))
        .collect();
    assert_eq!(
        first,
        [
            ("eu", None, Verdict::Pass),
            ("us", None, Verdict::NoEvidence)
        ]
    );
    assert!(g.tick_probes(&agg, NOW, &connected).changes.is_empty());
    for p in ["eu-1", "eu-2"] {
        new(&mut agg, p, 6, 6);
    }
    let t = g.tick_probes(&agg, NOW, &connected);
    assert_eq!(t.changes.len(), 1);
    assert_eq!(t.changes[0].from, Some(Verdict::Pass));
    assert_eq!(t.changes[0].to.verdict, Verdict::Fail);
    assert_eq!(t.changes[0].to.value, Some(6.0 / 9.0));
}

fn status_page() -> Guard {
    let mut g = guard(Metric::Indicator, CompareOp::Ge, 3.0);
    g.source = GuardSource::StatusPage {
        url: "https://status.example/api/v2/status.json".into(),
    };
    g.quorum = 2;
    g.for_ticks = 2;
    g
}

#[test]
fn readings_are_one_global_region_with_quorum_one() {
    let mut g = GuardEvaluator::new(status_page());
    let t = g.tick_reading(NOW, None);
    assert_eq!(verdicts(&t), [(GLOBAL, Verdict::NoEvidence)]);
    assert_eq!(t.regions[0].reason, "nothing read yet");
    let failed = (
        NOW,
        Err("GET https://status.example: timed out".to_string()),
    );
    let t = g.tick_reading(NOW, Some(&failed));
    assert_eq!(t.regions[0].reason, "GET https://status.example: timed out");
    assert_eq!(t.regions[0].verdict, Verdict::NoEvidence);
    let minor = (NOW, Ok(1.0));
    let t = g.tick_reading(NOW, Some(&minor));
    assert_eq!(t.regions[0].verdict, Verdict::Pass);
    let major = (NOW, Ok(3.0));
    let t = g.tick_reading(NOW, Some(&major));
    assert_eq!((t.failing, t.consecutive), (1, 1), "quorum is 1");
    assert!(t.trip.is_none(), "for = 2");
    let t = g.tick_reading(NOW + 1000, Some(&major));
    let trip = t.trip.expect("second failing tick");
    assert_eq!(
        trip.summary,
        "the status page https://status.example/api/v2/status.json reports major (indicator >= \
         major, 2 ticks in a row)"
    );
}

#[test]
fn a_stale_or_nan_reading_is_no_evidence() {
    let mut g = GuardEvaluator::new(status_page());
    let major = (NOW, Ok(3.0));
    let t = g.tick_reading(NOW + 30_000, Some(&major));
    assert_eq!(
        t.regions[0].verdict,
        Verdict::Fail,
        "3 intervals: not stale yet"
    );
    let t = g.tick_reading(NOW + 30_001, Some(&major));
    assert_eq!(t.regions[0].verdict, Verdict::NoEvidence);
    assert_eq!(
        t.regions[0].reason,
        "last reading 30s old (stale after 30s)"
    );
    assert_eq!(t.consecutive, 0);

    let mut p = guard(Metric::Value, CompareOp::Gt, 0.05);
    p.source = GuardSource::Prometheus {
        url: "http://127.0.0.1:9090".into(),
        query: "rate(http_5xx[1m])".into(),
    };
    let mut g = GuardEvaluator::new(p);
    let nan = (NOW, Ok(f64::NAN));
    let t = g.tick_reading(NOW, Some(&nan));
    assert_eq!(t.regions[0].verdict, Verdict::NoEvidence);
    let bad = (NOW, Ok(0.25));
    let t = g.tick_reading(NOW, Some(&bad));
    assert_eq!(
        t.trip.unwrap().summary,
        "the Prometheus query `rate(http_5xx[1m])` on http://127.0.0.1:9090 returned 0.25 \
         (value > 0.05, 1 tick in a row)"
    );
}

#[test]
fn the_wrong_tick_function_is_no_evidence_not_a_panic() {
    let agg = Aggregator::new(60);
    let t = GuardEvaluator::new(status_page()).tick_probes(&agg, NOW, &none());
    assert_eq!(verdicts(&t), [(GLOBAL, Verdict::NoEvidence)]);
    let t = GuardEvaluator::new(errors()).tick_reading(NOW, Some(&(NOW, Ok(1.0))));
    assert_eq!(verdicts(&t), [(GLOBAL, Verdict::NoEvidence)]);
}

#[test]
fn labels_and_gauges() {
    assert_eq!(
        [Verdict::Pass, Verdict::Fail, Verdict::NoEvidence].map(|v| (v.label(), v.gauge())),
        [("PASS", 0.0), ("FAIL", 1.0), ("NO_EVIDENCE", -1.0)]
    );
    assert_eq!(
        serde_json::to_string(&Verdict::NoEvidence).unwrap(),
        "\"NO_EVIDENCE\""
    );
    assert_eq!(TripKind::HardFail.label(), "hard_fail");
}
