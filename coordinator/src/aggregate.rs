//! Sliding windows of probe evidence, keyed by (check, target, region).
//!
//! Each series keeps one bucket per second for the last `window` seconds:
//! samples, failures, hard failures, the probes seen, a log-scale latency
//! histogram and the latest error. DNS results additionally keep, per
//! (check, region), the latest answer class of each probe's **system**
//! resolver — the share of probes answered with the new address is the
//! per-region propagation figure.
//!
//! For the verdicts (`crate::verdict`), each series also keeps every probe's
//! own recent results (time, outcome, duration, system-resolver answer class),
//! so a guard can compute one value per probe and take the median over probes:
//! [`Aggregator::probe_figures`]. Those are kept for the longest guard window
//! ([`Aggregator::retain_at_least`]), at most [`PER_PROBE_PER_SEC`] results a
//! second per probe and series (between [`PER_PROBE_MIN`] and
//! [`PER_PROBE_MAX`]; the oldest are dropped first).
//!
//! Pure data structure: no I/O, no clock (callers pass `now_ms`), no gRPC
//! types other than the decoded results.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use cutover_proto::v1;

/// Latency histogram resolution: 4 buckets per doubling, from 1 µs up to ~2^32 µs.
const HIST_PER_OCTAVE: f64 = 4.0;
const HIST_BUCKETS: usize = 128;

/// Per-probe results kept per second of retention, per probe and series:
/// checks run at most every 250 ms before the oldest of a window are dropped.
pub const PER_PROBE_PER_SEC: usize = 4;
/// Per-probe results kept at least, per probe and series.
pub const PER_PROBE_MIN: usize = 64;
/// Per-probe results kept at most, per probe and series (16 bytes each).
pub const PER_PROBE_MAX: usize = 1024;

/// Series key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesKey {
    /// Check id.
    pub check: String,
    /// `old`, `new`, `dns`.
    pub target: &'static str,
    /// Region of the probe.
    pub region: String,
}

/// Figures of one series over the window.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesStats {
    /// Which series.
    pub key: SeriesKey,
    /// Results in the window.
    pub samples: u64,
    /// Results that failed (hard failures included).
    pub failures: u64,
    /// Hard failures (corruption).
    pub hard_failures: u64,
    /// Distinct probes that reported.
    pub probes: u32,
    /// Median duration of successful results, milliseconds.
    pub p50_ms: Option<f64>,
    /// 95th percentile duration of successful results, milliseconds.
    pub p95_ms: Option<f64>,
    /// Latest failure reason in the window (empty if none).
    pub last_error: String,
}

impl SeriesStats {
    /// failures / samples (0 without samples).
    pub fn error_ratio(&self) -> f64 {
        if self.samples == 0 {
            0.0
        } else {
            self.failures as f64 / self.samples as f64
        }
    }
}

/// DNS propagation in one region for one check.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsStats {
    /// Check id.
    pub check: String,
    /// Region.
    pub region: String,
    /// Probes whose latest system-resolver answer is within the window.
    pub probes: u32,
    /// Share pointing at the old site.
    pub share_old: f64,
    /// Share pointing at the new site.
    pub share_new: f64,
    /// Share with addresses of both.
    pub share_mixed: f64,
    /// Share with neither (or no answer).
    pub share_other: f64,
    /// Highest remaining TTL among those answers, seconds.
    pub max_ttl: u32,
}

/// One probe's figures for one (check, target, region) over a guard's window.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeFigures {
    /// Probe id.
    pub probe: Arc<str>,
    /// Results in the window.
    pub samples: u64,
    /// Results that failed (hard failures included).
    pub failures: u64,
    /// Hard failures (corruption, e.g. hash mismatches).
    pub hard_failures: u64,
    /// Durations of the successful results, milliseconds, sorted ascending.
    pub success_ms: Vec<f64>,
    /// Results that carried a system-resolver answer (DNS checks).
    pub dns_answers: u64,
    /// Of those, answers with addresses of neither site (or no address).
    pub dns_other: u64,
}

/// Everything in the windows at one instant.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Per (check, target, region), sorted by key.
    pub series: Vec<SeriesStats>,
    /// Per (check, region), sorted.
    pub dns: Vec<DnsStats>,
}

struct Bucket {
    second: i64,
    samples: u64,
    failures: u64,
    hard: u64,
    hist: Box<[u32; HIST_BUCKETS]>,
    last_error: Option<(i64, String)>,
}

impl Bucket {
    fn new(second: i64) -> Self {
        Self {
            second,
            samples: 0,
            failures: 0,
            hard: 0,
            hist: Box::new([0; HIST_BUCKETS]),
            last_error: None,
        }
    }
}

/// One result of one probe, as the verdicts need it (16 bytes).
#[derive(Debug, Clone, Copy)]
struct ProbeSample {
    at_ms: i64,
    /// Duration in microseconds, saturating (successes only matter).
    duration_us: u32,
    outcome: SampleOutcome,
    dns: DnsClass,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SampleOutcome {
    Ok,
    Failed,
    Hard,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DnsClass {
    /// No system-resolver answer in the result.
    None,
    /// Old, new or both.
    Site,
    /// Neither (or no address).
    Other,
}

#[derive(Default)]
struct Series {
    /// Ordered by `second`, oldest first.
    buckets: VecDeque<Bucket>,
    /// The latest second each probe reported in: the distinct probes of the
    /// window are those at or after its oldest second. One entry per probe
    /// rather than a set per bucket keeps the once-a-second snapshot cheap
    /// with thousands of probes.
    probes: HashMap<Arc<str>, i64>,
    /// Each probe's own results, oldest first, within the retention.
    per_probe: HashMap<Arc<str>, VecDeque<ProbeSample>>,
}

#[derive(Debug, Clone, Copy)]
struct DnsLatest {
    at_ms: i64,
    class: v1::AnswerClass,
    ttl: u32,
}

/// The windows.
pub struct Aggregator {
    window_secs: i64,
    /// How far back per-probe results are kept (at least the window).
    retain_ms: i64,
    /// Per-probe results kept per probe and series.
    per_probe_cap: usize,
    series: HashMap<SeriesKey, Series>,
    dns: HashMap<(String, String), HashMap<Arc<str>, DnsLatest>>,
}

fn hist_index(us: u64) -> usize {
    let v = (us.max(1) as f64).log2() * HIST_PER_OCTAVE;
    (v.floor() as usize).min(HIST_BUCKETS - 1)
}

/// Geometric middle of a histogram bucket, in microseconds.
fn hist_value_us(index: usize) -> f64 {
    2f64.powf((index as f64 + 0.5) / HIST_PER_OCTAVE)
}

fn quantile(hist: &[u64; HIST_BUCKETS], total: u64, q: f64) -> Option<f64> {
    if total == 0 {
        return None;
    }
    // Nearest-rank: the smallest value with at least q of the samples at or below it.
    let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    for (i, &n) in hist.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return Some(hist_value_us(i) / 1000.0);
        }
    }
    None
}

impl Aggregator {
    /// Windows of `window_secs` seconds (at least 1).
    pub fn new(window_secs: u32) -> Self {
        let window_secs = i64::from(window_secs.max(1));
        let mut agg = Self {
            window_secs,
            retain_ms: 0,
            per_probe_cap: PER_PROBE_MIN,
            series: HashMap::new(),
            dns: HashMap::new(),
        };
        agg.retain_at_least(window_secs * 1000);
        agg
    }

    /// Keeps per-probe results for at least `ms` milliseconds (the longest
    /// guard window of a loaded plan). Never shortens the retention, and the
    /// snapshot window (`[server] window`) does not change.
    pub fn retain_at_least(&mut self, ms: i64) {
        self.retain_ms = self.retain_ms.max(ms);
        let secs = usize::try_from(self.retain_ms.div_euclid(1000) + 1).unwrap_or(usize::MAX);
        self.per_probe_cap = secs
            .saturating_mul(PER_PROBE_PER_SEC)
            .clamp(PER_PROBE_MIN, PER_PROBE_MAX);
    }

    /// How far back per-probe results are kept, milliseconds.
    pub fn retention_ms(&self) -> i64 {
        self.retain_ms
    }

    /// Window length in seconds.
    pub fn window_secs(&self) -> u32 {
        self.window_secs as u32
    }

    fn oldest_second(&self, now_ms: i64) -> i64 {
        now_ms.div_euclid(1000) - self.window_secs + 1
    }

    /// Per-probe results before this are dropped.
    fn horizon_ms(&self, now_ms: i64) -> i64 {
        (now_ms - self.retain_ms).min(self.oldest_second(now_ms) * 1000)
    }

    /// Folds one result into the windows. `at_ms` is when it happened on the
    /// coordinator's clock; results older than the window are ignored.
    pub fn add(
        &mut self,
        probe: &Arc<str>,
        region: &str,
        at_ms: i64,
        result: &v1::CheckResult,
        now_ms: i64,
    ) {
        self.add_series(
            probe,
            region,
            &result.check_id,
            result.target(),
            std::iter::once((at_ms, result)),
            now_ms,
        );
    }

    /// Folds results of one probe that all belong to the same (check, target)
    /// series, each with the time it happened on the coordinator's clock: the
    /// same as [`Aggregator::add`] for each, but the series is looked up once.
    /// Results whose `check_id`/`target` differ from `check`/`target` are
    /// counted under `check`/`target`; callers group first.
    pub fn add_series<'a>(
        &mut self,
        probe: &Arc<str>,
        region: &str,
        check: &str,
        target: v1::Target,
        results: impl IntoIterator<Item = (i64, &'a v1::CheckResult)>,
        now_ms: i64,
    ) {
        let oldest = self.oldest_second(now_ms);
        let horizon = self.horizon_ms(now_ms);
        let cap = self.per_probe_cap;
        // A probe's clock may run ahead; never put evidence in the future.
        // Results older than the retention are ignored.
        let mut results = results
            .into_iter()
            .map(|(at_ms, r)| (at_ms.min(now_ms), r))
            .filter(|(at_ms, _)| *at_ms >= horizon)
            .peekable();
        if results.peek().is_none() {
            return;
        }
        let key = SeriesKey {
            check: check.to_string(),
            target: target.label(),
            region: region.to_string(),
        };
        let series = self.series.entry(key).or_default();
        let own = match series.per_probe.get_mut(probe) {
            Some(own) => own,
            None => series.per_probe.entry(probe.clone()).or_default(),
        };
        let mut latest_second = i64::MIN;
        for (at_ms, result) in results {
            let system = match &result.detail {
                Some(v1::check_result::Detail::Dns(dns)) => dns
                    .answers
                    .iter()
                    .find(|a| a.kind() == v1::ResolverKind::System),
                _ => None,
            };
            push_sample(
                own,
                ProbeSample {
                    at_ms,
                    duration_us: u32::try_from(result.duration_us).unwrap_or(u32::MAX),
                    outcome: match result.outcome() {
                        v1::Outcome::Success => SampleOutcome::Ok,
                        v1::Outcome::HardFailure => SampleOutcome::Hard,
                        _ => SampleOutcome::Failed,
                    },
                    dns: match system.map(|a| a.class()) {
                        None => DnsClass::None,
                        Some(
                            v1::AnswerClass::Old | v1::AnswerClass::New | v1::AnswerClass::Mixed,
                        ) => DnsClass::Site,
                        Some(v1::AnswerClass::Other | v1::AnswerClass::Unspecified) => {
                            DnsClass::Other
                        }
                    },
                },
                horizon,
                cap,
            );

            let second = at_ms.div_euclid(1000);
            if second < oldest {
                // Kept for a guard's longer window only.
                continue;
            }
            let pos = series.buckets.iter().rposition(|b| b.second <= second);
            let bucket = match pos {
                Some(i) if series.buckets[i].second == second => &mut series.buckets[i],
                Some(i) => {
                    series.buckets.insert(i + 1, Bucket::new(second));
                    &mut series.buckets[i + 1]
                }
                None => {
                    series.buckets.push_front(Bucket::new(second));
                    &mut series.buckets[0]
                }
            };
            bucket.samples += 1;
            latest_second = latest_second.max(second);
            match result.outcome() {
                v1::Outcome::Success => {
                    bucket.hist[hist_index(result.duration_us)] += 1;
                }
                outcome => {
                    bucket.failures += 1;
                    if outcome == v1::Outcome::HardFailure {
                        bucket.hard += 1;
                    }
                    let newer = bucket.last_error.as_ref().is_none_or(|(t, _)| *t <= at_ms);
                    if newer {
                        let reason = if result.error.is_empty() {
                            result.failure().label().to_string()
                        } else {
                            result.error.clone()
                        };
                        bucket.last_error = Some((at_ms, reason));
                    }
                }
            }

            if let Some(answer) = system {
                let probes = self
                    .dns
                    .entry((check.to_string(), region.to_string()))
                    .or_default();
                let latest = DnsLatest {
                    at_ms,
                    class: answer.class(),
                    ttl: answer.ttl,
                };
                match probes.get_mut(probe) {
                    Some(old) if old.at_ms > at_ms => {}
                    Some(old) => *old = latest,
                    None => {
                        probes.insert(probe.clone(), latest);
                    }
                }
            }
        }
        if latest_second == i64::MIN {
            return;
        }
        match series.probes.get_mut(probe) {
            Some(seen) => *seen = (*seen).max(latest_second),
            None => {
                series.probes.insert(probe.clone(), latest_second);
            }
        }
    }

    /// Each probe's figures for `check` on `target` (`old`, `new`, `dns`) over
    /// the `window_ms` milliseconds ending at `now_ms` (`now - window < at <= now`),
    /// per region, probes sorted by id. Regions and probes without a result in
    /// that window are left out. A window longer than the retention sees only
    /// what is retained ([`Aggregator::retain_at_least`]).
    pub fn probe_figures(
        &self,
        check: &str,
        target: &str,
        window_ms: i64,
        now_ms: i64,
    ) -> BTreeMap<String, Vec<ProbeFigures>> {
        let from = now_ms - window_ms;
        let mut out: BTreeMap<String, Vec<ProbeFigures>> = BTreeMap::new();
        for (key, series) in &self.series {
            if key.check != check || key.target != target {
                continue;
            }
            let mut probes = Vec::new();
            for (probe, own) in &series.per_probe {
                let mut f = ProbeFigures {
                    probe: probe.clone(),
                    samples: 0,
                    failures: 0,
                    hard_failures: 0,
                    success_ms: Vec::new(),
                    dns_answers: 0,
                    dns_other: 0,
                };
                for s in own.iter().rev().skip_while(|s| s.at_ms > now_ms) {
                    if s.at_ms <= from {
                        break;
                    }
                    f.samples += 1;
                    match s.outcome {
                        SampleOutcome::Ok => f.success_ms.push(f64::from(s.duration_us) / 1000.0),
                        SampleOutcome::Failed => f.failures += 1,
                        SampleOutcome::Hard => {
                            f.failures += 1;
                            f.hard_failures += 1;
                        }
                    }
                    match s.dns {
                        DnsClass::None => {}
                        DnsClass::Site => f.dns_answers += 1,
                        DnsClass::Other => {
                            f.dns_answers += 1;
                            f.dns_other += 1;
                        }
                    }
                }
                if f.samples > 0 {
                    f.success_ms.sort_by(f64::total_cmp);
                    probes.push(f);
                }
            }
            if !probes.is_empty() {
                probes.sort_by(|a, b| a.probe.cmp(&b.probe));
                out.entry(key.region.clone()).or_default().extend(probes);
            }
        }
        out
    }

    /// Regions with any result of `check` (any target) in the `window_ms`
    /// milliseconds ending at `now_ms`.
    pub fn regions_with_data(&self, check: &str, window_ms: i64, now_ms: i64) -> BTreeSet<String> {
        let from = now_ms - window_ms;
        self.series
            .iter()
            .filter(|(key, series)| {
                key.check == check
                    && series.per_probe.values().any(|own| {
                        own.iter()
                            .rev()
                            .find(|s| s.at_ms <= now_ms)
                            .is_some_and(|s| s.at_ms > from)
                    })
            })
            .map(|(key, _)| key.region.clone())
            .collect()
    }

    /// Drops what fell out of the window and summarises the rest.
    pub fn snapshot(&mut self, now_ms: i64) -> Snapshot {
        let oldest = self.oldest_second(now_ms);
        let oldest_ms = oldest * 1000;
        let horizon = self.horizon_ms(now_ms);
        self.series.retain(|_, s| {
            while s.buckets.front().is_some_and(|b| b.second < oldest) {
                s.buckets.pop_front();
            }
            s.probes.retain(|_, second| *second >= oldest);
            s.per_probe.retain(|_, own| {
                while own.front().is_some_and(|x| x.at_ms < horizon) {
                    own.pop_front();
                }
                !own.is_empty()
            });
            !s.buckets.is_empty() || !s.per_probe.is_empty()
        });
        self.dns.retain(|_, probes| {
            probes.retain(|_, l| l.at_ms >= oldest_ms);
            !probes.is_empty()
        });

        let mut series: Vec<SeriesStats> = self
            .series
            .iter()
            // Series kept only for a guard's longer window are not in the snapshot.
            .filter(|(_, s)| !s.buckets.is_empty())
            .map(|(key, s)| {
                let mut hist = [0u64; HIST_BUCKETS];
                let (mut samples, mut failures, mut hard) = (0, 0, 0);
                let mut last_error: Option<&(i64, String)> = None;
                for b in &s.buckets {
                    samples += b.samples;
                    failures += b.failures;
                    hard += b.hard;
                    for (h, &n) in hist.iter_mut().zip(b.hist.iter()) {
                        *h += u64::from(n);
                    }
                    if let Some(e) = &b.last_error
                        && last_error.is_none_or(|l| l.0 <= e.0)
                    {
                        last_error = Some(e);
                    }
                }
                let ok = samples - failures;
                SeriesStats {
                    key: key.clone(),
                    samples,
                    failures,
                    hard_failures: hard,
                    probes: s.probes.len() as u32,
                    p50_ms: quantile(&hist, ok, 0.5),
                    p95_ms: quantile(&hist, ok, 0.95),
                    last_error: last_error.map(|e| e.1.clone()).unwrap_or_default(),
                }
            })
            .collect();
        series.sort_by(|a, b| a.key.cmp(&b.key));

        let mut dns: BTreeMap<(String, String), DnsStats> = BTreeMap::new();
        for ((check, region), probes) in &self.dns {
            let n = probes.len() as f64;
            let count = |c: &[v1::AnswerClass]| {
                probes.values().filter(|l| c.contains(&l.class)).count() as f64 / n
            };
            dns.insert(
                (check.clone(), region.clone()),
                DnsStats {
                    check: check.clone(),
                    region: region.clone(),
                    probes: probes.len() as u32,
                    share_old: count(&[v1::AnswerClass::Old]),
                    share_new: count(&[v1::AnswerClass::New]),
                    share_mixed: count(&[v1::AnswerClass::Mixed]),
                    share_other: count(&[v1::AnswerClass::Other, v1::AnswerClass::Unspecified]),
                    max_ttl: probes.values().map(|l| l.ttl).max().unwrap_or(0),
                },
            );
        }
        Snapshot {
            series,
            dns: dns.into_values().collect(),
        }
    }
}

/// Inserts in time order (results mostly arrive in order), then drops what is
/// older than `horizon` and the oldest beyond `cap`.
fn push_sample(own: &mut VecDeque<ProbeSample>, sample: ProbeSample, horizon: i64, cap: usize) {
    if own.back().is_none_or(|b| b.at_ms <= sample.at_ms) {
        own.push_back(sample);
    } else {
        let i = own.partition_point(|x| x.at_ms <= sample.at_ms);
        own.insert(i, sample);
    }
    while own.len() > cap || own.front().is_some_and(|x| x.at_ms < horizon) {
        own.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    fn result(check: &str, target: v1::Target, outcome: v1::Outcome, ms: u64) -> v1::CheckResult {
        v1::CheckResult {
            check_id: check.into(),
            target: target as i32,
            outcome: outcome as i32,
            duration_us: ms * 1000,
            error: if outcome == v1::Outcome::Success {
                String::new()
            } else {
                format!("failed after {ms} ms")
            },
            ..Default::default()
        }
    }

    fn dns(class: v1::AnswerClass, ttl: u32, system: bool) -> v1::CheckResult {
        let mut r = result("www", v1::Target::Dns, v1::Outcome::Success, 3);
        r.detail = Some(v1::check_result::Detail::Dns(v1::DnsDetail {
            name: "elm-lang.org".into(),
            answers: vec![
                v1::ResolverAnswer {
                    kind: if system {
                        v1::ResolverKind::System
                    } else {
                        v1::ResolverKind::Listed
                    } as i32,
                    class: class as i32,
                    ttl,
                    ..Default::default()
                },
                // A listed resolver answering something else must not count.
                v1::ResolverAnswer {
                    kind: v1::ResolverKind::Listed as i32,
                    class: v1::AnswerClass::Other as i32,
                    ttl: 9999,
                    ..Default::default()
                },
            ],
        }));
        r
    }

    fn probe(name: &str) -> Arc<str> {
        Arc::from(name)
    }

    #[test]
    fn counts_failures_probes_and_quantiles() {
        let mut a = Aggregator::new(60);
        let (p1, p2) = (probe("asia-1"), probe("asia-2"));
        for i in 1..=100u64 {
            let p = if i % 2 == 0 { &p1 } else { &p2 };
            a.add(
                p,
                "asia",
                NOW - 1000,
                &result("home", v1::Target::New, v1::Outcome::Success, i),
                NOW,
            );
        }
        a.add(
            &p1,
            "asia",
            NOW - 2000,
            &result("home", v1::Target::New, v1::Outcome::Failure, 5),
            NOW,
        );
        a.add(
            &p1,
            "asia",
            NOW - 500,
            &result("home", v1::Target::New, v1::Outcome::HardFailure, 7),
            NOW,
        );
        a.add(
            &p1,
            "us",
            NOW,
            &result("home", v1::Target::Old, v1::Outcome::Success, 1),
            NOW,
        );

        let s = a.snapshot(NOW);
        assert_eq!(s.series.len(), 2);
        let asia = &s.series[0];
        assert_eq!(asia.key.region, "asia");
        assert_eq!(asia.key.target, "new");
        assert_eq!(
            (asia.samples, asia.failures, asia.hard_failures, asia.probes),
            (102, 2, 1, 2)
        );
        assert_eq!(
            asia.last_error, "failed after 7 ms",
            "the newest error wins"
        );
        let p50 = asia.p50_ms.unwrap();
        let p95 = asia.p95_ms.unwrap();
        // Log buckets are accurate to about ±10 %.
        assert!((45.0..=56.0).contains(&p50), "p50 {p50}");
        assert!((86.0..=105.0).contains(&p95), "p95 {p95}");
        assert!((asia.error_ratio() - 2.0 / 102.0).abs() < 1e-9);
    }

    #[test]
    fn window_slides_and_old_results_are_ignored() {
        let mut a = Aggregator::new(10);
        let p = probe("p");
        a.add(
            &p,
            "eu",
            NOW - 9_000,
            &result("c", v1::Target::Old, v1::Outcome::Failure, 1),
            NOW,
        );
        a.add(
            &p,
            "eu",
            NOW - 1_000,
            &result("c", v1::Target::Old, v1::Outcome::Success, 1),
            NOW,
        );
        // Too old to count: outside the window already.
        a.add(
            &p,
            "eu",
            NOW - 60_000,
            &result("c", v1::Target::Old, v1::Outcome::Failure, 1),
            NOW,
        );
        // From the future (clock skew): counted now.
        a.add(
            &p,
            "eu",
            NOW + 5_000,
            &result("c", v1::Target::Old, v1::Outcome::Success, 1),
            NOW,
        );
        let s = a.snapshot(NOW);
        assert_eq!((s.series[0].samples, s.series[0].failures), (3, 1));

        let s = a.snapshot(NOW + 2_000);
        assert_eq!((s.series[0].samples, s.series[0].failures), (2, 0));
        assert_eq!(s.series[0].last_error, "");

        let s = a.snapshot(NOW + 60_000);
        assert!(s.series.is_empty(), "empty series are dropped");
    }

    #[test]
    fn dns_shares_use_the_latest_system_answer_per_probe() {
        let mut a = Aggregator::new(60);
        let (p1, p2, p3, p4) = (probe("1"), probe("2"), probe("3"), probe("4"));
        a.add(
            &p1,
            "asia",
            NOW - 5000,
            &dns(v1::AnswerClass::Old, 300, true),
            NOW,
        );
        // p1 later sees the new address: only the latest counts.
        a.add(
            &p1,
            "asia",
            NOW - 1000,
            &dns(v1::AnswerClass::New, 120, true),
            NOW,
        );
        // An older answer arriving late does not overwrite a newer one.
        a.add(
            &p1,
            "asia",
            NOW - 3000,
            &dns(v1::AnswerClass::Old, 250, true),
            NOW,
        );
        a.add(
            &p2,
            "asia",
            NOW - 1000,
            &dns(v1::AnswerClass::Old, 200, true),
            NOW,
        );
        a.add(
            &p3,
            "asia",
            NOW - 1000,
            &dns(v1::AnswerClass::Mixed, 50, true),
            NOW,
        );
        a.add(
            &p4,
            "asia",
            NOW - 1000,
            &dns(v1::AnswerClass::New, 10, true),
            NOW,
        );
        // Answers without a system resolver do not vote.
        a.add(
            &p4,
            "us",
            NOW - 1000,
            &dns(v1::AnswerClass::Old, 10, false),
            NOW,
        );

        let s = a.snapshot(NOW);
        assert_eq!(s.dns.len(), 1, "{:?}", s.dns);
        let d = &s.dns[0];
        assert_eq!(
            (d.check.as_str(), d.region.as_str(), d.probes),
            ("www", "asia", 4)
        );
        assert_eq!(
            (d.share_old, d.share_new, d.share_mixed, d.share_other),
            (0.25, 0.5, 0.25, 0.0)
        );
        assert_eq!(d.max_ttl, 200);
        // The dns results still count as samples of the (www, dns, region) series.
        assert_eq!(s.series.iter().map(|x| x.samples).sum::<u64>(), 7);

        let s = a.snapshot(NOW + 61_000);
        assert!(s.dns.is_empty());
    }

    #[test]
    fn probe_figures_are_per_probe_with_a_millisecond_window() {
        let mut a = Aggregator::new(60);
        let (p1, p2) = (probe("eu-1"), probe("eu-2"));
        let new = |o, ms| result("home", v1::Target::New, o, ms);
        a.add(&p1, "eu", NOW - 2_500, &new(v1::Outcome::Success, 30), NOW);
        a.add(&p1, "eu", NOW - 1_500, &new(v1::Outcome::Failure, 5), NOW);
        // Out of order: inserted in time order.
        a.add(&p1, "eu", NOW - 2_000, &new(v1::Outcome::Success, 10), NOW);
        a.add(&p1, "eu", NOW - 100, &new(v1::Outcome::HardFailure, 7), NOW);
        a.add(&p2, "eu", NOW - 900, &new(v1::Outcome::Success, 20), NOW);
        a.add(&p2, "us", NOW - 900, &new(v1::Outcome::Success, 20), NOW);
        // Another target of the same check is another series.
        a.add(
            &p2,
            "eu",
            NOW - 900,
            &result("home", v1::Target::Old, v1::Outcome::Failure, 1),
            NOW,
        );

        let f = a.probe_figures("home", "new", 3_000, NOW);
        assert_eq!(f.keys().collect::<Vec<_>>(), ["eu", "us"]);
        let eu = &f["eu"];
        assert_eq!(eu.len(), 2);
        assert_eq!(&*eu[0].probe, "eu-1");
        assert_eq!(
            (eu[0].samples, eu[0].failures, eu[0].hard_failures),
            (4, 2, 1)
        );
        assert_eq!(eu[0].success_ms, [10.0, 30.0], "sorted, in ms");
        assert_eq!((eu[1].samples, eu[1].failures), (1, 0));

        // `now - window < at`: the result exactly 2 000 ms old is out.
        let f = a.probe_figures("home", "new", 2_000, NOW);
        assert_eq!(f["eu"][0].samples, 2);
        // Results after `now` (an evaluation in the past) are out too.
        let f = a.probe_figures("home", "new", 1_000, NOW - 1_000);
        assert_eq!(f["eu"][0].samples, 1);
        assert_eq!(f["eu"][0].failures, 1);
        assert!(!f.contains_key("us"));

        let old = a.probe_figures("home", "old", 3_000, NOW);
        assert_eq!(old["eu"][0].failures, 1);
        assert!(a.probe_figures("other", "new", 3_000, NOW).is_empty());
        assert_eq!(
            a.regions_with_data("home", 3_000, NOW),
            BTreeSet::from(["eu".to_string(), "us".to_string()])
        );
        assert!(a.regions_with_data("home", 3_000, NOW + 10_000).is_empty());
    }

    #[test]
    fn probe_figures_count_system_resolver_answers_outside_both_sites() {
        let mut a = Aggregator::new(60);
        let p = probe("asia-1");
        for (i, class) in [
            v1::AnswerClass::Old,
            v1::AnswerClass::New,
            v1::AnswerClass::Mixed,
            v1::AnswerClass::Other,
            v1::AnswerClass::Unspecified,
        ]
        .into_iter()
        .enumerate()
        {
            a.add(
                &p,
                "asia",
                NOW - 1000 * i as i64,
                &dns(class, 60, true),
                NOW,
            );
        }
        // Only listed resolvers: not a system-resolver answer.
        a.add(
            &p,
            "asia",
            NOW - 10,
            &dns(v1::AnswerClass::Other, 60, false),
            NOW,
        );
        let f = &a.probe_figures("www", "dns", 10_000, NOW)["asia"][0];
        assert_eq!((f.samples, f.dns_answers, f.dns_other), (6, 5, 2));
    }

    #[test]
    fn retention_can_outlast_the_snapshot_window() {
        let mut a = Aggregator::new(10);
        a.retain_at_least(120_000);
        a.retain_at_least(30_000);
        assert_eq!(a.retention_ms(), 120_000, "never shortened");
        let p = probe("p");
        let fail = result("c", v1::Target::New, v1::Outcome::Failure, 1);
        a.add(&p, "eu", NOW - 100_000, &fail, NOW);
        a.add(&p, "eu", NOW - 1_000, &fail, NOW);
        a.add(&p, "eu", NOW - 130_000, &fail, NOW);

        let s = a.snapshot(NOW);
        assert_eq!(s.series[0].samples, 1, "the snapshot keeps its own window");
        assert_eq!(s.series[0].probes, 1);
        assert_eq!(
            a.probe_figures("c", "new", 120_000, NOW)["eu"][0].samples,
            2
        );

        // Only the old result is left: the series stays for the guard, not in the snapshot.
        let s = a.snapshot(NOW + 15_000);
        assert!(s.series.is_empty(), "{:?}", s.series);
        assert_eq!(
            a.probe_figures("c", "new", 120_000, NOW + 15_000)["eu"][0].samples,
            2
        );
        let s = a.snapshot(NOW + 200_000);
        assert!(s.series.is_empty());
        assert!(
            a.probe_figures("c", "new", 120_000, NOW + 200_000)
                .is_empty()
        );
        assert!(a.series.is_empty(), "series past the retention are dropped");
    }

    #[test]
    fn per_probe_results_are_capped_oldest_first() {
        let mut a = Aggregator::new(60);
        let cap = 61 * PER_PROBE_PER_SEC;
        let p = probe("p");
        let ok = result("c", v1::Target::New, v1::Outcome::Success, 1);
        let fail = result("c", v1::Target::New, v1::Outcome::Failure, 1);
        // Results a millisecond apart, 10 more than the cap; the first 10 fail.
        let n = cap + 10;
        for i in 0..n {
            let r = if i < 10 { &fail } else { &ok };
            a.add(&p, "eu", NOW - 30_000 + i as i64, r, NOW);
        }
        let f = &a.probe_figures("c", "new", 60_000, NOW)["eu"][0];
        assert_eq!(f.samples as usize, cap);
        assert_eq!(f.failures, 0, "the oldest were dropped");
        // The snapshot's buckets are not capped.
        assert_eq!(a.snapshot(NOW).series[0].samples as usize, n);

        a.retain_at_least(3_600_000);
        assert_eq!(a.per_probe_cap, PER_PROBE_MAX);
        let a = Aggregator::new(1);
        assert_eq!(a.per_probe_cap, PER_PROBE_MIN);
    }

    #[test]
    fn histogram_buckets_are_monotonic() {
        let mut last = 0;
        for us in [1, 10, 100, 1_000, 10_000, 1_000_000, 60_000_000] {
            let i = hist_index(us);
            assert!(i >= last);
            last = i;
            let v = hist_value_us(i);
            assert!((v / us as f64 - 1.0).abs() < 0.2, "{us} -> {v}");
        }
    }
}
