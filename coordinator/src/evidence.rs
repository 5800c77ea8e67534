//! The evidence task: folds committed results into the windows, counts them
//! in Prometheus counters, and refreshes the window gauges once a second
//! (with the earliest certificate expiry per series, kept here: the windows
//! hold no tls details).
//!
//! It is the only place results meet the [`Aggregator`]; sessions never touch
//! it, so the hot path holds no lock shared by all sessions.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cutover_proto::v1;
use prost::Message;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::aggregate::{Aggregator, SeriesKey, Snapshot};
use crate::metrics::{self as m, label};
use crate::store::{Store, StoreError};
use crate::writer::Committed;

/// The shared windows (locked by this task per batch and by Status requests).
pub type Windows = Arc<Mutex<Aggregator>>;

/// Wall clock, milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// When a result happened on the coordinator's clock.
fn at_ms(r: &v1::CheckResult, received_ms: i64, skew_ms: i64) -> i64 {
    if r.started_unix_ms <= 0 {
        return received_ms;
    }
    let end = r.started_unix_ms + (r.duration_us / 1000) as i64 + skew_ms;
    end.min(received_ms)
}

/// Locks the windows; a panic while holding the lock leaves them usable
/// (they are only statistics), so poisoning is ignored.
pub fn lock(w: &Windows) -> std::sync::MutexGuard<'_, Aggregator> {
    w.lock().unwrap_or_else(|e| e.into_inner())
}

/// Refills the windows from batches stored within the last window, so a
/// restart does not blank the status. Returns the number of results replayed.
pub fn rebuild(store: &dyn Store, windows: &Windows, now: i64) -> Result<usize, StoreError> {
    let since = now - i64::from(lock(windows).window_secs()) * 1000;
    let batches = store.batches_since(since)?;
    let mut agg = lock(windows);
    let mut n = 0;
    for b in batches {
        let Ok(batch) = v1::ResultBatch::decode(b.payload.as_slice()) else {
            tracing::warn!(probe = %b.probe_id, "skipping undecodable stored batch");
            continue;
        };
        let probe: Arc<str> = Arc::from(b.probe_id.as_str());
        for r in &batch.results {
            agg.add(&probe, &b.region, at_ms(r, b.received_unix_ms, 0), r, now);
            n += 1;
        }
    }
    Ok(n)
}

/// Outcomes in the order of [`SeriesMetrics::ingested`].
const OUTCOMES: [&str; 4] = ["unspecified", "success", "failure", "hard_failure"];
/// HTTP phases in the order of [`SeriesMetrics::phases`].
const PHASES: [&str; 5] = ["resolve", "connect", "tls", "first_byte", "transfer"];

fn outcome_index(o: v1::Outcome) -> usize {
    match o {
        v1::Outcome::Unspecified => 0,
        v1::Outcome::Success => 1,
        v1::Outcome::Failure => 2,
        v1::Outcome::HardFailure => 3,
    }
}

/// The metric handles of one (check, target, region) series, resolved once:
/// a label lookup in the recorder costs far more than the increment itself.
/// Handles are created on first use, so a series appears in `/metrics` exactly
/// when it would have with per-result lookups.
struct SeriesMetrics {
    labels: [(&'static str, String); 3],
    ingested: [Option<metrics::Counter>; 4],
    duration: metrics::Histogram,
    hash_mismatches: Option<metrics::Counter>,
    phases: [Option<metrics::Histogram>; 5],
}

impl SeriesMetrics {
    fn new(check: &str, target: v1::Target, region: &str) -> Self {
        let labels = [
            (label::CHECK, check.to_string()),
            (label::TARGET, target.label().to_string()),
            (label::REGION, region.to_string()),
        ];
        Self {
            duration: metrics::histogram!(m::CHECK_DURATION, &labels),
            labels,
            ingested: Default::default(),
            hash_mismatches: None,
            phases: Default::default(),
        }
    }

    fn ingested(&mut self, outcome: usize) -> &metrics::Counter {
        let labels = &self.labels;
        self.ingested[outcome].get_or_insert_with(|| {
            let mut l = labels.to_vec();
            l.push((label::OUTCOME, OUTCOMES[outcome].to_string()));
            metrics::counter!(m::RESULTS_INGESTED, &l)
        })
    }

    fn phase(&mut self, phase: usize) -> &metrics::Histogram {
        let labels = &self.labels;
        self.phases[phase].get_or_insert_with(|| {
            let mut l = labels.to_vec();
            l.push((label::PHASE, PHASES[phase].to_string()));
            metrics::histogram!(m::HTTP_PHASE_DURATION, &l)
        })
    }
}

/// One check's series handles, indexed by `v1::Target`.
type ByTarget = [Option<Box<SeriesMetrics>>; 4];

/// Metric handles by region, check and target. Bounded: checks come from the
/// assignment and regions from enrolment (DESIGN §7).
#[derive(Default)]
struct Handles {
    by_region: HashMap<Arc<str>, HashMap<String, ByTarget>>,
    /// Per region: the newest result's time (ms) and its gauge.
    last_result: HashMap<Arc<str>, (i64, metrics::Gauge)>,
}

impl Handles {
    /// Moves the region's newest-result time forward (never back: a backlog
    /// replayed after a reconnect is older than what came live).
    fn last_result(&mut self, region: &Arc<str>, at_ms: i64) {
        let (newest, gauge) = self.last_result.entry(region.clone()).or_insert_with(|| {
            (
                i64::MIN,
                metrics::gauge!(m::REGION_LAST_RESULT, label::REGION => region.to_string()),
            )
        });
        if at_ms > *newest {
            *newest = at_ms;
            gauge.set(at_ms as f64 / 1000.0);
        }
    }
}

/// How far back certificate expiries count (or the window, if longer). Longer
/// than the window because tls checks run every few minutes: over a 60 s
/// window most regions would have no tls result most of the time, and the
/// gauge would flicker. A renewed certificate shows within this time.
const CERT_HORIZON_SECS: i64 = 3600;

/// The earliest certificate `not_after` per (check, target, region) among the
/// tls results of the last [`CERT_HORIZON_SECS`]. Per series it keeps the
/// earliest per second of result time, so it holds at most one entry per
/// second however many probes report, and the minimum is one pass a second.
#[derive(Default)]
struct CertExpiry {
    by_series: HashMap<SeriesKey, BTreeMap<i64, i64>>,
}

impl CertExpiry {
    /// Notes the tls results of one (check, target) group.
    fn add(&mut self, region: &str, check: &str, target: v1::Target, results: &[(i64, i64)]) {
        if results.is_empty() {
            return;
        }
        let key = SeriesKey {
            check: check.to_string(),
            target: target.label(),
            region: region.to_string(),
        };
        let secs = self.by_series.entry(key).or_default();
        for &(at_ms, not_after) in results {
            let earliest = secs.entry(at_ms.div_euclid(1000)).or_insert(not_after);
            *earliest = (*earliest).min(not_after);
        }
    }

    /// Sets the gauges for the horizon ending at `now_ms`; a series without a
    /// tls result left in it reads NaN and is forgotten.
    fn export(&mut self, now_ms: i64, window_secs: i64) {
        let oldest = now_ms.div_euclid(1000) - window_secs.max(CERT_HORIZON_SECS) + 1;
        self.by_series.retain(|key, secs| {
            *secs = secs.split_off(&oldest);
            let earliest = secs.values().min().copied();
            metrics::gauge!(m::TLS_CERT_EXPIRY, &series_labels(key))
                .set(earliest.map_or(f64::NAN, |s| s as f64));
            earliest.is_some()
        });
    }
}

impl Handles {
    fn series(&mut self, region: &Arc<str>, check: &str, target: v1::Target) -> &mut SeriesMetrics {
        let checks = self.by_region.entry(region.clone()).or_default();
        if !checks.contains_key(check) {
            checks.insert(check.to_string(), Default::default());
        }
        let targets = checks.get_mut(check).expect("inserted above");
        targets[target as usize & 3]
            .get_or_insert_with(|| Box::new(SeriesMetrics::new(check, target, region)))
    }
}

/// A batch's results grouped by (check, target), in first-seen order. A probe
/// batch holds a handful of series, so a linear scan beats hashing.
fn group(results: &[v1::CheckResult]) -> Vec<(&str, v1::Target, Vec<&v1::CheckResult>)> {
    let mut groups: Vec<(&str, v1::Target, Vec<&v1::CheckResult>)> = Vec::new();
    for r in results {
        let target = r.target();
        match groups
            .iter_mut()
            .find(|(c, t, _)| *t == target && *c == r.check_id)
        {
            Some((_, _, g)) => g.push(r),
            None => groups.push((&r.check_id, target, vec![r])),
        }
    }
    groups
}

/// Counts one group's results in the Prometheus series (counters once per group).
fn count(h: &mut SeriesMetrics, results: &[&v1::CheckResult]) {
    let mut by_outcome = [0u64; 4];
    let mut hash_mismatches = 0;
    for r in results {
        by_outcome[outcome_index(r.outcome())] += 1;
        h.duration.record(r.duration_us as f64 / 1e6);
        if r.failure() == v1::FailureKind::HashMismatch {
            hash_mismatches += 1;
        }
        let timings = match &r.detail {
            Some(v1::check_result::Detail::Http(h)) => h.timings,
            Some(v1::check_result::Detail::Download(d)) => d.timings,
            Some(v1::check_result::Detail::ElmPackage(e)) => e.archive_timings,
            _ => None,
        };
        if let Some(t) = timings {
            for (i, us) in [
                t.resolve_us,
                t.connect_us,
                t.tls_us,
                t.first_byte_us,
                t.transfer_us,
            ]
            .into_iter()
            .enumerate()
            {
                if us > 0 {
                    h.phase(i).record(us as f64 / 1e6);
                }
            }
        }
    }
    for (i, n) in by_outcome.into_iter().enumerate() {
        if n > 0 {
            h.ingested(i).increment(n);
        }
    }
    if hash_mismatches > 0 {
        let labels = &h.labels;
        h.hash_mismatches
            .get_or_insert_with(|| metrics::counter!(m::HASH_MISMATCHES, labels))
            .increment(hash_mismatches);
    }
}

/// Counts a committed batch and folds it into the windows.
fn fold(c: &Committed, handles: &mut Handles, certs: &mut CertExpiry, windows: &Windows) {
    let groups = group(&c.results);
    let at = |r: &v1::CheckResult| at_ms(r, c.received_unix_ms, c.skew_ms);
    for (check, target, results) in &groups {
        count(handles.series(&c.region, check, *target), results);
        let tls: Vec<(i64, i64)> = results
            .iter()
            .filter_map(|r| match &r.detail {
                Some(v1::check_result::Detail::Tls(t)) if t.not_after_unix > 0 => {
                    Some((at(r), t.not_after_unix))
                }
                _ => None,
            })
            .collect();
        certs.add(&c.region, check, *target, &tls);
    }
    if let Some(newest) = c.results.iter().map(at).max() {
        handles.last_result(&c.region, newest);
    }
    let now = now_ms();
    let mut agg = lock(windows);
    for (check, target, results) in &groups {
        agg.add_series(
            &c.probe,
            &c.region,
            check,
            *target,
            results.iter().map(|r| (at(r), *r)),
            now,
        );
    }
}

fn series_labels(k: &SeriesKey) -> [(&'static str, String); 3] {
    [
        (label::CHECK, k.check.clone()),
        (label::TARGET, k.target.to_string()),
        (label::REGION, k.region.clone()),
    ]
}

/// Keys exported last time, so series that left the window are zeroed rather than frozen.
#[derive(Default)]
struct Exported {
    series: HashSet<SeriesKey>,
    dns: HashSet<(String, String)>,
}

fn export(s: &Snapshot, prev: &mut Exported) {
    let mut now = Exported::default();
    for st in &s.series {
        let l = series_labels(&st.key);
        metrics::gauge!(m::WINDOW_SAMPLES, &l).set(st.samples as f64);
        metrics::gauge!(m::WINDOW_ERROR_RATIO, &l).set(st.error_ratio());
        metrics::gauge!(m::WINDOW_PROBES, &l).set(f64::from(st.probes));
        metrics::gauge!(m::WINDOW_LATENCY_P50, &l).set(st.p50_ms.map_or(f64::NAN, |v| v / 1000.0));
        metrics::gauge!(m::WINDOW_LATENCY_P95, &l).set(st.p95_ms.map_or(f64::NAN, |v| v / 1000.0));
        now.series.insert(st.key.clone());
    }
    for gone in prev.series.difference(&now.series) {
        let l = series_labels(gone);
        metrics::gauge!(m::WINDOW_SAMPLES, &l).set(0.0);
        metrics::gauge!(m::WINDOW_ERROR_RATIO, &l).set(0.0);
        metrics::gauge!(m::WINDOW_PROBES, &l).set(0.0);
        metrics::gauge!(m::WINDOW_LATENCY_P50, &l).set(f64::NAN);
        metrics::gauge!(m::WINDOW_LATENCY_P95, &l).set(f64::NAN);
    }
    for d in &s.dns {
        for (outcome, share) in [
            ("old", d.share_old),
            ("new", d.share_new),
            ("mixed", d.share_mixed),
            ("other", d.share_other),
        ] {
            metrics::gauge!(m::DNS_ANSWER_SHARE, label::CHECK => d.check.clone(), label::REGION => d.region.clone(), label::OUTCOME => outcome)
                .set(share);
        }
        metrics::gauge!(m::DNS_TTL_REMAINING, label::CHECK => d.check.clone(), label::REGION => d.region.clone())
            .set(f64::from(d.max_ttl));
        now.dns.insert((d.check.clone(), d.region.clone()));
    }
    for (check, region) in prev.dns.difference(&now.dns) {
        for outcome in ["old", "new", "mixed", "other"] {
            metrics::gauge!(m::DNS_ANSWER_SHARE, label::CHECK => check.clone(), label::REGION => region.clone(), label::OUTCOME => outcome)
                .set(0.0);
        }
        metrics::gauge!(m::DNS_TTL_REMAINING, label::CHECK => check.clone(), label::REGION => region.clone())
            .set(0.0);
    }
    *prev = now;
}

/// Runs until `rx` closes (all writers gone) or shutdown.
pub async fn run(windows: Windows, mut rx: mpsc::Receiver<Committed>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut exported = Exported::default();
    let mut handles = Handles::default();
    let mut certs = CertExpiry::default();
    loop {
        tokio::select! {
            c = rx.recv() => {
                let Some(c) = c else { break };
                fold(&c, &mut handles, &mut certs, &windows);
            }
            _ = tick.tick() => {
                let now = now_ms();
                let (snapshot, window_secs) = {
                    let mut agg = lock(&windows);
                    (agg.snapshot(now), i64::from(agg.window_secs()))
                };
                export(&snapshot, &mut exported);
                certs.export(now, window_secs);
            }
            () = shutdown.cancelled() => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{BatchWrite, SqliteStore};

    #[test]
    fn rebuild_replays_recent_batches_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let probe = store.enrol("asia", "", 0).unwrap().probe.id;
        let now = 1_800_000_000_000;
        let result = |seq: u64, started: i64| v1::CheckResult {
            seq,
            check_id: "home".into(),
            target: v1::Target::New as i32,
            outcome: v1::Outcome::Success as i32,
            started_unix_ms: started,
            duration_us: 1_000,
            ..Default::default()
        };
        let batch = |first: u64, received: i64, results: Vec<v1::CheckResult>| BatchWrite {
            probe_id: probe.clone(),
            first_seq: first,
            last_seq: first + results.len() as u64 - 1,
            seq_through: first + results.len() as u64 - 1,
            received_unix_ms: received,
            payload: v1::ResultBatch { results }.encode_to_vec(),
        };
        store
            .commit(&[
                // Received long ago: not replayed.
                batch(1, now - 600_000, vec![result(1, now - 600_000)]),
                // Received recently, but one result is a backlog from an hour ago.
                batch(
                    2,
                    now - 5_000,
                    vec![result(2, now - 3_600_000), result(3, now - 6_000)],
                ),
            ])
            .unwrap();
        let windows: Windows = Arc::new(Mutex::new(Aggregator::new(60)));
        assert_eq!(
            rebuild(&store, &windows, now).unwrap(),
            2,
            "two results read back"
        );
        let snap = lock(&windows).snapshot(now);
        assert_eq!(snap.series.len(), 1);
        assert_eq!(
            snap.series[0].samples, 1,
            "only the result inside the window counts"
        );
        assert_eq!(snap.series[0].key.region, "asia");
    }

    /// The value of `series` (as rendered) in a scrape.
    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn fold_keeps_the_earliest_certificate_and_the_newest_result_per_region() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let now = now_ms();
        let tls = |seq: u64, target: v1::Target, not_after: i64, started: i64| v1::CheckResult {
            seq,
            check_id: "cert".into(),
            target: target as i32,
            outcome: v1::Outcome::Success as i32,
            started_unix_ms: started,
            duration_us: 1_000,
            detail: Some(v1::check_result::Detail::Tls(v1::TlsDetail {
                valid: true,
                not_after_unix: not_after,
                ..Default::default()
            })),
            ..Default::default()
        };
        let batch = |probe: &str, region: &str, results: Vec<v1::CheckResult>| Committed {
            probe: Arc::from(probe),
            region: Arc::from(region),
            received_unix_ms: now,
            skew_ms: 0,
            results,
        };
        let expiry = |target: &str, region: &str| {
            format!(
                "cutover_tls_cert_expiry_timestamp_seconds{{check=\"cert\",target=\"{target}\",region=\"{region}\"}}"
            )
        };
        metrics::with_local_recorder(&recorder, || {
            let windows: Windows = Arc::new(Mutex::new(Aggregator::new(60)));
            let mut handles = Handles::default();
            let mut certs = CertExpiry::default();
            let mut fold = |c: Committed| fold(&c, &mut handles, &mut certs, &windows);
            // Two probes in eu see two certificates on new: the earlier expiry counts.
            fold(batch(
                "p1",
                "eu",
                vec![
                    tls(1, v1::Target::New, 2_000_000_000, now - 5_000),
                    tls(2, v1::Target::New, 1_900_000_000, now - 3_000),
                    tls(3, v1::Target::Old, 1_800_000_000, now - 3_000),
                ],
            ));
            fold(batch(
                "p2",
                "eu",
                vec![tls(1, v1::Target::New, 2_100_000_000, now - 1_000)],
            ));
            // A backlog from two hours ago: outside the horizon, and it does
            // not move the region's newest result back.
            fold(batch(
                "p3",
                "eu",
                vec![tls(1, v1::Target::New, 1_000_000_000, now - 7_200_000)],
            ));
            // A failed handshake without a certificate says nothing about expiry.
            let mut failed = tls(1, v1::Target::New, 0, now - 1_000);
            failed.outcome = v1::Outcome::Failure as i32;
            fold(batch("p4", "asia", vec![failed]));
            certs.export(now, 60);
        });
        let text = handle.render();
        assert_eq!(
            value(&text, &expiry("new", "eu")),
            Some(1_900_000_000.0),
            "{text}"
        );
        assert_eq!(
            value(&text, &expiry("old", "eu")),
            Some(1_800_000_000.0),
            "{text}"
        );
        assert_eq!(value(&text, &expiry("new", "asia")), None, "{text}");
        let eu = value(
            &text,
            "cutover_region_last_result_timestamp_seconds{region=\"eu\"}",
        )
        .expect("eu's newest result");
        assert!(
            (eu - (now - 999) as f64 / 1000.0).abs() < 0.01,
            "the newest eu result ended at now - 999 ms: {eu}"
        );
        assert!(
            value(
                &text,
                "cutover_region_last_result_timestamp_seconds{region=\"asia\"}"
            )
            .is_some(),
            "{text}"
        );

        // An hour later no tls result is left: the gauges read NaN.
        metrics::with_local_recorder(&recorder, || {
            let mut certs = CertExpiry::default();
            certs.add("eu", "cert", v1::Target::New, &[(now, 1_900_000_000)]);
            certs.export(now, 60);
            assert_eq!(certs.by_series.len(), 1);
            certs.export(now + 3_600_000, 60);
            assert!(certs.by_series.is_empty(), "forgotten once reported as NaN");
        });
        let text = handle.render();
        assert!(
            value(&text, &expiry("new", "eu")).is_some_and(f64::is_nan),
            "{text}"
        );
    }

    #[test]
    fn result_time_uses_skew_and_never_exceeds_arrival() {
        let r = v1::CheckResult {
            started_unix_ms: 10_000,
            duration_us: 2_000_000,
            ..Default::default()
        };
        assert_eq!(at_ms(&r, 20_000, 0), 12_000);
        assert_eq!(at_ms(&r, 20_000, 5_000), 17_000);
        assert_eq!(at_ms(&r, 20_000, 50_000), 20_000);
        let unset = v1::CheckResult::default();
        assert_eq!(at_ms(&unset, 20_000, 0), 20_000);
    }
}
