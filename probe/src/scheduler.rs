//! Runs the assigned checks: one task per check, ticking on its interval plus
//! random jitter (so probes drift apart instead of hitting the sites in
//! lockstep). Each tick runs all of the check's targets back-to-back in random
//! order, so old and new are compared from the same place at the same moment
//! and neither is always first. Each run has a timeout; a timed-out run is a
//! result (`FailureKind::Timeout`), never silence.
//!
//! A new assignment replaces all running checks at once; an identical one
//! (sent again after a reconnect) changes nothing, so timers are not reset.
//!
//! Before a check starts it is screened against the volunteer's [`Policy`]: a
//! check naming a host outside the allowlist, or listing a private resolver,
//! is refused whole; a target whose site addresses are private is refused
//! alone. A refusal is logged at warn and reported once, as a failed result,
//! so the operator sees it; the refused check or target never runs.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cutover_proto::v1::{Assignment, CheckResult, CheckSpec, FailureKind, Target};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::checks::{self, Check, CheckContext, CheckOutcome, Sites};
use crate::net::{HttpClient, micros};
use crate::outbox::SharedOutbox;
use crate::policy::{self, Policy, Refusal};

/// Interval used when the assignment gives none.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
/// Shortest interval accepted, so a typo cannot turn a probe into a load test.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// Longest per-run timeout used when the assignment gives none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// What checks share that does not come from the assignment.
#[derive(Debug, Clone)]
pub struct ProbeEnv {
    pub http: HttpClient,
    pub authoritative_port: u16,
    pub dns_timeout: Duration,
}

/// Timing of one check, from its spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub interval: Duration,
    pub jitter: Duration,
    pub timeout: Duration,
}

impl Timing {
    /// Defaults: interval 30 s, timeout = min(interval, 30 s).
    pub fn from_spec(spec: &CheckSpec) -> Self {
        let interval = match spec.interval_ms {
            0 => DEFAULT_INTERVAL,
            ms => Duration::from_millis(u64::from(ms)).max(MIN_INTERVAL),
        };
        let timeout = match spec.timeout_ms {
            0 => interval.min(DEFAULT_TIMEOUT),
            ms => Duration::from_millis(u64::from(ms)),
        };
        Self {
            interval,
            jitter: Duration::from_millis(u64::from(spec.jitter_ms)),
            timeout,
        }
    }
}

fn random_up_to(max: Duration) -> Duration {
    let ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(fastrand::u64(0..=ms))
}

struct Running {
    assignment: Assignment,
    cancel: CancellationToken,
    tasks: JoinSet<()>,
}

/// Owns the per-check tasks of the current assignment.
pub struct Scheduler {
    env: ProbeEnv,
    outbox: Arc<SharedOutbox>,
    running: Option<Running>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("config_version", &self.config_version())
            .finish_non_exhaustive()
    }
}

impl Scheduler {
    pub fn new(env: ProbeEnv, outbox: Arc<SharedOutbox>) -> Self {
        Self {
            env,
            outbox,
            running: None,
        }
    }

    /// Version of the running assignment.
    pub fn config_version(&self) -> Option<u64> {
        self.running.as_ref().map(|r| r.assignment.config_version)
    }

    /// Replaces the running checks with those of `assignment`.
    pub async fn apply(&mut self, assignment: Assignment) {
        if self
            .running
            .as_ref()
            .is_some_and(|r| r.assignment == assignment)
        {
            tracing::debug!(version = assignment.config_version, "assignment unchanged");
            return;
        }
        self.stop().await;
        let ctx = Arc::new(CheckContext {
            http: self.env.http.clone(),
            sites: Sites::from_assignment(&assignment),
            authoritative_port: self.env.authoritative_port,
            dns_timeout: self.env.dns_timeout,
        });
        let cancel = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let policy = self.env.http.policy().clone();
        policy.reset_warnings();
        for spec in &assignment.checks {
            let check = checks::build(spec);
            let wanted = check.targets(&spec_targets(spec));
            let (targets, refused) = screen(&policy, &spec.id, check.as_ref(), &wanted, &ctx.sites);
            for (target, refusal) in refused {
                self.outbox.push(refused_result(
                    &spec.id,
                    target,
                    &refusal,
                    assignment.config_version,
                ));
            }
            if targets.is_empty() {
                continue;
            }
            let job = Job {
                check_id: spec.id.clone(),
                targets,
                timing: Timing::from_spec(spec),
                config_version: assignment.config_version,
                check,
                ctx: ctx.clone(),
                outbox: self.outbox.clone(),
                cancel: cancel.clone(),
            };
            tasks.spawn(job.run());
        }
        tracing::info!(
            version = assignment.config_version,
            checks = assignment.checks.len(),
            old = ?ctx.sites.old,
            new = ?ctx.sites.new,
            "assignment applied"
        );
        self.running = Some(Running {
            assignment,
            cancel,
            tasks,
        });
    }

    /// Stops every check and waits for the tasks to end. A run in flight is
    /// abandoned without a result. Returns whether anything was running.
    pub async fn stop(&mut self) -> bool {
        match self.running.take() {
            Some(mut r) => {
                r.cancel.cancel();
                while r.tasks.join_next().await.is_some() {}
                true
            }
            None => false,
        }
    }
}

/// Splits `targets` into those `check` may run and those the policy refuses
/// (with why), logging each refusal at warn.
fn screen(
    policy: &Policy,
    check_id: &str,
    check: &dyn Check,
    targets: &[Target],
    sites: &Sites,
) -> (Vec<Target>, Vec<(Target, Refusal)>) {
    if check.kind() == "unsupported" {
        // Never connects anywhere; it reports why it cannot run.
        return (targets.to_vec(), Vec::new());
    }
    let whole = check
        .hosts()
        .iter()
        .map(|h| policy.check_host(h))
        .chain(
            check
                .listed_resolvers()
                .iter()
                .map(|a| policy.check_address_text(a.ip(), &a.to_string(), "resolver")),
        )
        .find_map(Result::err);
    if let Some(r) = whole {
        tracing::warn!("{}", policy::format_refusal(check_id, None, &r));
        return (
            Vec::new(),
            targets.iter().map(|t| (*t, r.clone())).collect(),
        );
    }
    let mut run = Vec::new();
    let mut refused = Vec::new();
    for &target in targets {
        let refusal = check
            .sites(target)
            .into_iter()
            .flat_map(|site| {
                let addrs = match site {
                    Target::Old => sites.old.as_slice(),
                    Target::New => sites.new.as_slice(),
                    Target::Dns | Target::Unspecified => &[],
                };
                addrs.iter().map(move |ip| (site, *ip))
            })
            .find_map(|(site, ip)| {
                policy
                    .check_address(ip, &format!("site {} address", site.label()))
                    .err()
            });
        match refusal {
            Some(r) => {
                tracing::warn!(
                    "{}",
                    policy::format_refusal(check_id, Some(target.label()), &r)
                );
                refused.push((target, r));
            }
            None => run.push(target),
        }
    }
    (run, refused)
}

/// The one result reporting that `target` of a check was refused.
fn refused_result(
    check_id: &str,
    target: Target,
    refusal: &Refusal,
    config_version: u64,
) -> CheckResult {
    CheckResult {
        seq: 0,
        check_id: check_id.to_owned(),
        target: target as i32,
        started_unix_ms: unix_ms(),
        duration_us: 0,
        outcome: cutover_proto::v1::Outcome::Failure as i32,
        failure: FailureKind::Unsupported as i32,
        error: format!("refused by this probe's safety rules: {refusal}"),
        config_version,
        detail: None,
    }
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The spec's targets, unknown numbers skipped.
fn spec_targets(spec: &CheckSpec) -> Vec<Target> {
    spec.targets
        .iter()
        .filter_map(|t| Target::try_from(*t).ok())
        .filter(|t| *t != Target::Unspecified)
        .collect()
}

/// One check's loop.
struct Job {
    check_id: String,
    targets: Vec<Target>,
    timing: Timing,
    config_version: u64,
    check: Arc<dyn Check>,
    ctx: Arc<CheckContext>,
    outbox: Arc<SharedOutbox>,
    cancel: CancellationToken,
}

impl Job {
    async fn run(self) {
        // Start within the jitter window rather than a full interval later, so
        // a fresh probe reports quickly but probes still spread out.
        let mut next = tokio::time::Instant::now() + random_up_to(self.timing.jitter);
        loop {
            tokio::select! {
                () = self.cancel.cancelled() => return,
                () = tokio::time::sleep_until(next) => {}
            }
            let tick = tokio::time::Instant::now();
            let mut order = self.targets.clone();
            fastrand::shuffle(&mut order);
            for target in order {
                let Some(result) = self.run_one(target).await else {
                    return;
                };
                self.outbox.push(result);
            }
            next = tick + self.timing.interval + random_up_to(self.timing.jitter);
            // A run longer than the interval: start the next one right away
            // rather than trying to catch up on missed ticks.
            next = next.max(tokio::time::Instant::now());
        }
    }

    /// One run against one target; `None` when cancelled mid-run.
    async fn run_one(&self, target: Target) -> Option<CheckResult> {
        let started_unix_ms = unix_ms();
        let t = Instant::now();
        let run = policy::in_check(
            &self.check_id,
            target.label(),
            self.check.run(&self.ctx, target),
        );
        let outcome = tokio::select! {
            () = self.cancel.cancelled() => return None,
            r = tokio::time::timeout(self.timing.timeout, run) => match r {
                Ok(o) => o,
                Err(_) => CheckOutcome::failure(
                    FailureKind::Timeout,
                    format!("check {} ({}) timed out after {:?}", self.check_id, target.label(), self.timing.timeout),
                    None,
                ),
            },
        };
        let duration = t.elapsed();
        tracing::debug!(
            check = %self.check_id,
            target = target.label(),
            outcome = ?outcome.outcome,
            failure = outcome.failure.label(),
            error = %outcome.error,
            ms = duration.as_millis(),
            "check ran"
        );
        Some(CheckResult {
            seq: 0,
            check_id: self.check_id.clone(),
            target: target as i32,
            started_unix_ms,
            duration_us: micros(duration),
            outcome: outcome.outcome as i32,
            failure: outcome.failure as i32,
            error: outcome.error,
            config_version: self.config_version,
            detail: outcome.detail,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::Outbox;
    use crate::testutil::{Reply, TestCa, TestServer, context};
    use cutover_proto::v1::{HttpParams, Outcome, Site, check_spec::Params};

    fn env() -> ProbeEnv {
        let ctx = context(TestCa::new().roots(), Sites::default(), None);
        ProbeEnv {
            http: ctx.http,
            authoritative_port: 53,
            dns_timeout: Duration::from_secs(1),
        }
    }

    fn http_spec(id: &str, url: String, interval_ms: u32, timeout_ms: u32) -> CheckSpec {
        CheckSpec {
            id: id.into(),
            kind: "http".into(),
            targets: vec![Target::Old as i32, Target::New as i32],
            interval_ms,
            jitter_ms: 0,
            timeout_ms,
            params: Some(Params::Http(HttpParams {
                url,
                ..Default::default()
            })),
        }
    }

    fn assignment(version: u64, checks: Vec<CheckSpec>) -> Assignment {
        Assignment {
            config_version: version,
            old: Some(Site {
                name: "old".into(),
                addresses: vec!["127.0.0.1".into()],
            }),
            new: Some(Site {
                name: "new".into(),
                addresses: vec!["127.0.0.1".into()],
            }),
            checks,
        }
    }

    fn results(o: &SharedOutbox) -> Vec<CheckResult> {
        o.with(|o| o.next_batch(10_000))
    }

    #[tokio::test]
    async fn runs_all_targets_each_tick_and_replaces_on_new_assignment() {
        let server = TestServer::start(None, |s| match s.path.as_str() {
            "/slow" => Reply::ok("late").delay(Duration::from_millis(300)),
            _ => Reply::ok("ok"),
        })
        .await;
        let outbox = Arc::new(SharedOutbox::new(Outbox::new(1000)));
        let mut s = Scheduler::new(env(), outbox.clone());
        let url = format!("http://site.test:{}/", server.addr.port());
        s.apply(assignment(
            1,
            vec![http_spec("home", url.clone(), 100, 1000)],
        ))
        .await;
        tokio::time::sleep(Duration::from_millis(350)).await;
        let got = results(&outbox);
        assert!(got.len() >= 4, "expected several ticks, got {}", got.len());
        // Every tick produced old and new back-to-back.
        for pair in got.chunks(2).filter(|c| c.len() == 2) {
            let mut t = vec![pair[0].target, pair[1].target];
            t.sort();
            assert_eq!(t, vec![Target::Old as i32, Target::New as i32]);
        }
        assert!(
            got.iter()
                .all(|r| r.outcome == Outcome::Success as i32 && r.config_version == 1)
        );
        let seqs: Vec<u64> = got.iter().map(|r| r.seq).collect();
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");

        // A new assignment: the old check stops, the new one runs and times out.
        let slow = format!("http://site.test:{}/slow", server.addr.port());
        s.apply(assignment(2, vec![http_spec("slow", slow, 10_000, 100)]))
            .await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        s.stop().await;
        let got = results(&outbox);
        assert!(!got.is_empty());
        assert!(
            got.iter()
                .all(|r| r.check_id == "slow" && r.config_version == 2),
            "{got:?}"
        );
        assert!(
            got.iter().all(|r| r.failure == FailureKind::Timeout as i32),
            "{got:?}"
        );
        assert_eq!(got.len(), 2, "one tick, two targets");
    }

    #[tokio::test]
    async fn same_assignment_again_is_a_no_op_and_unsupported_reports() {
        let outbox = Arc::new(SharedOutbox::new(Outbox::new(1000)));
        let mut s = Scheduler::new(env(), outbox.clone());
        let spec = CheckSpec {
            id: "mystery".into(),
            kind: "quantum".into(),
            targets: vec![Target::New as i32],
            interval_ms: 10_000,
            ..Default::default()
        };
        s.apply(assignment(7, vec![spec.clone()])).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        s.apply(assignment(7, vec![spec])).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let got = results(&outbox);
        assert_eq!(
            got.len(),
            1,
            "re-sent assignment must not restart the check"
        );
        assert_eq!(got[0].failure, FailureKind::Unsupported as i32);
        s.stop().await;
    }

    /// A scheduler whose client follows `policy`, with sites old and new on
    /// 127.0.0.1 and the test DNS responder as the probe's resolver.
    fn guarded(
        policy: Policy,
        resolver: Option<std::net::SocketAddr>,
    ) -> (Scheduler, Arc<SharedOutbox>) {
        let resolver = crate::net::SystemResolver::with_server(
            resolver.unwrap_or_else(|| "127.0.0.1:9".parse().unwrap()),
        )
        .unwrap();
        let http = HttpClient::new(TestCa::new().roots(), resolver, policy).unwrap();
        let outbox = Arc::new(SharedOutbox::new(Outbox::new(1000)));
        let env = ProbeEnv {
            http,
            authoritative_port: 53,
            dns_timeout: Duration::from_secs(1),
        };
        (Scheduler::new(env, outbox.clone()), outbox)
    }

    fn elm_test(allow_private: bool) -> Policy {
        Policy::new(
            vec!["elm-lang.org".into(), "elm.test".into()],
            allow_private,
        )
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_check_outside_the_allowlist_is_refused_logged_reported_and_never_connects() {
        let (logs, _guard) = crate::testutil::Logs::capture();
        let listener = crate::testutil::CountingListener::start().await;
        let port = listener.addr.port();
        // Private addresses are allowed here: only the host is wrong.
        let (mut s, outbox) = guarded(elm_test(true), None);
        s.apply(assignment(
            3,
            vec![
                http_spec(
                    "install-core",
                    format!("http://evil.example:{port}/"),
                    100,
                    1000,
                ),
                // `evilelm-lang.org` is not under `elm-lang.org`.
                http_spec(
                    "lookalike",
                    format!("http://evilelm-lang.org:{port}/"),
                    100,
                    1000,
                ),
            ],
        ))
        .await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        s.stop().await;

        assert_eq!(listener.accepted(), 0, "a refused check connected");
        let warnings = logs.warnings();
        assert!(
            warnings.iter().any(|l| l.ends_with(
                "refusing check install-core: host evil.example is not under the allowed domains elm-lang.org, elm.test"
            )),
            "{warnings:#?}"
        );
        assert!(
            warnings.iter().any(|l| l.ends_with(
                "refusing check lookalike: host evilelm-lang.org is not under the allowed domains elm-lang.org, elm.test"
            )),
            "{warnings:#?}"
        );
        // Reported once per target, as a failure naming the refusal; never run again.
        let got = results(&outbox);
        assert_eq!(got.len(), 4, "{got:?}");
        for r in &got {
            assert_eq!(r.outcome, Outcome::Failure as i32);
            assert_eq!(r.failure, FailureKind::Unsupported as i32);
            assert!(
                r.error
                    .starts_with("refused by this probe's safety rules: host evil"),
                "{}",
                r.error
            );
            assert_eq!(r.config_version, 3);
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_private_site_address_is_refused_without_the_flag_and_allowed_with_it() {
        let listener = crate::testutil::CountingListener::start().await;
        let url = format!("http://package.elm.test:{}/", listener.addr.port());
        {
            let (logs, _guard) = crate::testutil::Logs::capture();
            let (mut s, outbox) = guarded(elm_test(false), None);
            s.apply(assignment(
                1,
                vec![http_spec("home", url.clone(), 100, 1000)],
            ))
            .await;
            tokio::time::sleep(Duration::from_millis(400)).await;
            s.stop().await;
            assert_eq!(
                listener.accepted(),
                0,
                "connected to a loopback site address"
            );
            let warnings = logs.warnings();
            for target in ["old", "new"] {
                let want = format!(
                    "refusing check home (target {target}): site {target} address 127.0.0.1 is a loopback address, refused without --allow-private-addresses"
                );
                assert!(
                    warnings.iter().any(|l| l.ends_with(&want)),
                    "{want}\n{warnings:#?}"
                );
            }
            let got = results(&outbox);
            assert_eq!(got.len(), 2, "{got:?}");
            assert!(
                got.iter()
                    .all(|r| r.error.contains("--allow-private-addresses"))
            );
        }
        // The same assignment with --allow-private-addresses connects.
        let (mut s, _outbox) = guarded(elm_test(true), None);
        s.apply(assignment(1, vec![http_spec("home", url, 100, 1000)]))
            .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        s.stop().await;
        assert!(listener.accepted() > 0, "allowed with the flag");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn resolved_private_addresses_and_redirects_outside_the_allowlist_are_refused_per_run() {
        let (logs, _guard) = crate::testutil::Logs::capture();
        let dns = crate::testutil::dns_responder().await;
        let outside = crate::testutil::CountingListener::start().await;
        // www.elm.test resolves to 127.0.0.20 in the test zone.
        let (mut s, outbox) = guarded(elm_test(false), Some(dns.addr));
        let mut spec = http_spec("www", "http://www.elm.test:8080/".into(), 100, 1000);
        spec.targets = vec![Target::Dns as i32];
        s.apply(assignment(1, vec![spec])).await;
        tokio::time::sleep(Duration::from_millis(350)).await;
        s.stop().await;
        let got = results(&outbox);
        assert!(got.len() >= 2, "one failed result per run: {got:?}");
        for r in &got {
            assert_eq!(r.failure, FailureKind::Connect as i32, "{r:?}");
            assert!(
                r.error
                    .contains("www.elm.test address 127.0.0.20 is a loopback address"),
                "{}",
                r.error
            );
        }
        let want = "refusing check www (target dns): www.elm.test address 127.0.0.20 is a loopback address, refused without --allow-private-addresses";
        let warned: Vec<String> = logs
            .warnings()
            .into_iter()
            .filter(|l| l.ends_with(want))
            .collect();
        assert_eq!(
            warned.len(),
            1,
            "logged once, not on every run: {}",
            logs.text()
        );

        // A site (allowed host, private addresses allowed) redirecting to a
        // host outside the allowlist: the redirect is not followed.
        let port = outside.addr.port();
        let server = TestServer::start(None, move |_s| {
            Reply::status(302).header("location", &format!("http://evil.example:{port}/x"))
        })
        .await;
        let (mut s, outbox) = guarded(elm_test(true), None);
        let mut spec = http_spec(
            "home",
            format!("http://package.elm.test:{}/", server.addr.port()),
            10_000,
            1000,
        );
        spec.targets = vec![Target::New as i32];
        s.apply(assignment(2, vec![spec])).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        s.stop().await;
        assert_eq!(outside.accepted(), 0);
        let got = results(&outbox);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0]
                .error
                .contains("host evil.example is not under the allowed domains"),
            "{}",
            got[0].error
        );
        assert!(
            logs.warnings().iter().any(|l| l.ends_with(
                "refusing check home: host evil.example is not under the allowed domains elm-lang.org, elm.test"
            )),
            "{}",
            logs.text()
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_dns_check_listing_a_private_resolver_is_refused() {
        let (logs, _guard) = crate::testutil::Logs::capture();
        let (mut s, outbox) = guarded(elm_test(false), None);
        let spec = CheckSpec {
            id: "www-dns".into(),
            kind: "dns".into(),
            interval_ms: 10_000,
            params: Some(Params::Dns(cutover_proto::v1::DnsParams {
                name: "www.elm.test".into(),
                record_type: "A".into(),
                resolvers: vec!["192.168.1.1".into()],
                ..Default::default()
            })),
            ..Default::default()
        };
        s.apply(assignment(1, vec![spec])).await;
        s.stop().await;
        let got = results(&outbox);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].target, Target::Dns as i32);
        assert!(
            logs.warnings().iter().any(|l| l.ends_with(
                "refusing check www-dns: resolver 192.168.1.1:53 is a private (RFC 1918) address, refused without --allow-private-addresses"
            )),
            "{}",
            logs.text()
        );
    }

    #[test]
    fn timing_defaults() {
        let t = Timing::from_spec(&CheckSpec::default());
        assert_eq!((t.interval, t.timeout), (DEFAULT_INTERVAL, DEFAULT_TIMEOUT));
        let t = Timing::from_spec(&CheckSpec {
            interval_ms: 5,
            ..Default::default()
        });
        assert_eq!(t.interval, MIN_INTERVAL);
    }
}
