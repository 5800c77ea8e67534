//! Every metric the coordinator exports: names as constants, described once,
//! and the Prometheus exporter that serves them at `/metrics`.
//!
//! Labels come only from {check, target, region, guard, step, outcome, phase},
//! plus `version` on [`BUILD_INFO`] and [`PROBE_VERSIONS`]: never a probe id
//! or a URL, so cardinality stays bounded however many volunteers enrol
//! (DESIGN §7). Dashboards and alert rules use these names.

use std::net::SocketAddr;

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

/// `cutover_build_info{version}`: always 1.
pub const BUILD_INFO: &str = "cutover_build_info";
/// `cutover_probes_connected{region}`: probes with an open session.
pub const PROBES_CONNECTED: &str = "cutover_probes_connected";
/// `cutover_probe_sessions_total{outcome}`: sessions ended, by how (`ok`, `replaced`, `error`, `shutdown`, `rejected`).
pub const PROBE_SESSIONS: &str = "cutover_probe_sessions_total";
/// `cutover_results_ingested_total{check,target,region,outcome}`: results stored.
pub const RESULTS_INGESTED: &str = "cutover_results_ingested_total";
/// `cutover_results_duplicate_total`: results dropped because their seq was already stored.
pub const RESULTS_DUPLICATE: &str = "cutover_results_duplicate_total";
/// `cutover_rejected_messages_total{outcome}`: rejected calls, messages or results, by reason.
pub const REJECTED_MESSAGES: &str = "cutover_rejected_messages_total";
/// `cutover_check_duration_seconds{check,target,region}`: how long checks took.
pub const CHECK_DURATION: &str = "cutover_check_duration_seconds";
/// `cutover_http_phase_duration_seconds{check,target,region,phase}`.
pub const HTTP_PHASE_DURATION: &str = "cutover_http_phase_duration_seconds";
/// `cutover_hash_mismatches_total{check,target,region}`: archives whose hash was wrong.
pub const HASH_MISMATCHES: &str = "cutover_hash_mismatches_total";
/// `cutover_window_samples{check,target,region}`.
pub const WINDOW_SAMPLES: &str = "cutover_window_samples";
/// `cutover_window_error_ratio{check,target,region}`: failures / samples in the window.
pub const WINDOW_ERROR_RATIO: &str = "cutover_window_error_ratio";
/// `cutover_window_probes{check,target,region}`: distinct probes in the window.
pub const WINDOW_PROBES: &str = "cutover_window_probes";
/// `cutover_window_latency_p50_seconds{check,target,region}`.
pub const WINDOW_LATENCY_P50: &str = "cutover_window_latency_p50_seconds";
/// `cutover_window_latency_p95_seconds{check,target,region}`.
pub const WINDOW_LATENCY_P95: &str = "cutover_window_latency_p95_seconds";
/// `cutover_dns_answer_share{check,region,outcome}`: share of probes whose system resolver answers old/new/mixed/other.
pub const DNS_ANSWER_SHARE: &str = "cutover_dns_answer_share";
/// `cutover_dns_ttl_remaining_seconds{check,region}`: highest remaining TTL among the latest answers.
pub const DNS_TTL_REMAINING: &str = "cutover_dns_ttl_remaining_seconds";
/// `cutover_tls_cert_expiry_timestamp_seconds{check,target,region}`: the
/// earliest certificate `not_after` (Unix seconds) among the `tls` results of
/// the last hour (or the window, if longer: tls checks run every few minutes);
/// NaN once no `tls` result is left in that time.
pub const TLS_CERT_EXPIRY: &str = "cutover_tls_cert_expiry_timestamp_seconds";
/// `cutover_region_last_result_timestamp_seconds{region}`: when the newest
/// result ingested from the region happened (Unix seconds, coordinator clock).
pub const REGION_LAST_RESULT: &str = "cutover_region_last_result_timestamp_seconds";
/// `cutover_probe_versions{version}`: connected probes per probe software
/// version (from their Hello). `version` is the one label outside the fixed
/// set, as on [`BUILD_INFO`]: releases are few, and the coordinator keeps
/// only short version-like strings (anything else counts as `other`).
pub const PROBE_VERSIONS: &str = "cutover_probe_versions";
/// `cutover_store_commit_duration_seconds`: one group commit.
pub const STORE_COMMIT_DURATION: &str = "cutover_store_commit_duration_seconds";
/// `cutover_store_commit_batches`: batches per group commit.
pub const STORE_COMMIT_BATCHES: &str = "cutover_store_commit_batches";
/// `cutover_plan_steps_total{step,outcome}`: plan step attempts ended, by outcome (`ok`, `failed`).
pub const PLAN_STEPS: &str = "cutover_plan_steps_total";
/// `cutover_plan_step_active{step}`: 1 while the step runs (or waits), else 0.
pub const PLAN_STEP_ACTIVE: &str = "cutover_plan_step_active";
/// `cutover_plan_run_state{outcome}`: 1 for the latest plan run's state
/// (`running`, `paused`, `waiting_approval`, `done`, `failed`, `aborted`, `fell_back`), 0 for the others.
pub const PLAN_RUN_STATE: &str = "cutover_plan_run_state";
/// `cutover_plan_fallback_active`: 1 while the latest plan run executes its
/// fallback runbook and has not finished (running, paused or waiting for
/// approval on that runbook), else 0.
pub const PLAN_FALLBACK_ACTIVE: &str = "cutover_plan_fallback_active";
/// `cutover_plan_step_deadline_timestamp_seconds{step}`: when the active step's
/// limit ends (its `timeout`, a wait's `max` or duration, a soak's duration),
/// Unix seconds; 0 while the step has no limit or is not active.
pub const PLAN_STEP_DEADLINE: &str = "cutover_plan_step_deadline_timestamp_seconds";
/// `cutover_guard_verdict{guard,region}`: the region's latest verdict:
/// 0 `PASS`, 1 `FAIL`, -1 `NO_EVIDENCE` (non-probe sources use region `global`).
pub const GUARD_VERDICT: &str = "cutover_guard_verdict";
/// `cutover_guard_value{guard,region}`: the value the region's verdict compared
/// with the guard's threshold (NaN while the region has no value: no voting probe, no reading).
pub const GUARD_VALUE: &str = "cutover_guard_value";
/// `cutover_guard_failing_regions{guard}`: regions whose verdict is `FAIL` now.
pub const GUARD_FAILING_REGIONS: &str = "cutover_guard_failing_regions";
/// `cutover_guard_tripped{guard}`: 1 once the guard tripped in the current run (it stays tripped), else 0.
pub const GUARD_TRIPPED: &str = "cutover_guard_tripped";
/// `cutover_guard_threshold{guard}`: the threshold of the guard's condition, in
/// the unit of [`GUARD_VALUE`] (set when the guard is armed).
pub const GUARD_THRESHOLD: &str = "cutover_guard_threshold";
/// `cutover_status_page_indicator{guard}`: a `status_page` guard's latest
/// reading as a rank (0 none, 1 minor, 2 maintenance, 3 major, 4 critical);
/// NaN while the page cannot be read or the guard is not armed.
pub const STATUS_PAGE_INDICATOR: &str = "cutover_status_page_indicator";
/// `cutover_guard_trips_total{guard,outcome}`: trips, by the action taken
/// (`fallback`, `pause`, `alert`, `shadow`).
pub const GUARD_TRIPS: &str = "cutover_guard_trips_total";
/// `cutover_alerts_total{outcome}`: alert deliveries per destination, `sent` or `failed`.
pub const ALERTS: &str = "cutover_alerts_total";

/// Label names (the fixed set).
pub mod label {
    /// Check id from the config.
    pub const CHECK: &str = "check";
    /// `old`, `new`, `dns`.
    pub const TARGET: &str = "target";
    /// Probe region.
    pub const REGION: &str = "region";
    /// Outcome or reason.
    pub const OUTCOME: &str = "outcome";
    /// HTTP phase.
    pub const PHASE: &str = "phase";
    /// Plan step id.
    pub const STEP: &str = "step";
    /// Guard id from the plan.
    pub const GUARD: &str = "guard";
    /// Software version ([`super::BUILD_INFO`], [`super::PROBE_VERSIONS`]).
    pub const VERSION: &str = "version";
}

/// The `version` label for a probe's self-reported version: kept when it looks
/// like a release (at most 32 characters of letters, digits and `.-+_`),
/// `other` otherwise, so a probe cannot grow the label set with arbitrary text.
pub fn probe_version_label(version: &str) -> String {
    let ok = !version.is_empty()
        && version.len() <= 32
        && version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'+' | b'_'));
    if ok {
        version.to_string()
    } else {
        "other".to_string()
    }
}

/// Reasons used as `outcome` on [`REJECTED_MESSAGES`].
pub mod reject {
    /// No `authorization: Bearer` metadata.
    pub const MISSING_TOKEN: &str = "missing_token";
    /// Token unknown.
    pub const BAD_TOKEN: &str = "bad_token";
    /// Token of a revoked probe.
    pub const REVOKED: &str = "revoked";
    /// First message was not Hello.
    pub const NOT_HELLO: &str = "not_hello";
    /// Batch or message over the limit.
    pub const OVERSIZED: &str = "oversized";
    /// A message or result that makes no sense (seq 0, no target, undecodable).
    pub const MALFORMED: &str = "malformed";
    /// A result naming a check id not in the assignment.
    pub const UNKNOWN_CHECK: &str = "unknown_check";
    /// Admin call with a wrong token.
    pub const BAD_ADMIN_TOKEN: &str = "bad_admin_token";
}

/// Seconds buckets for check durations: 1 ms … 60 s.
const CHECK_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Seconds buckets for HTTP phases: 0.5 ms … 30 s.
const PHASE_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Seconds buckets for SQLite commits: 0.1 ms … 5 s.
const COMMIT_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];
const COUNT_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// Failure to start the metrics listener.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// Port discovery for `:0` failed.
    #[error("cannot bind metrics listener on {addr}: {source}")]
    Bind {
        /// Requested address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The exporter refused to start.
    #[error("cannot start metrics exporter on {addr}: {message}")]
    Exporter {
        /// Requested address.
        addr: SocketAddr,
        /// The exporter's message.
        message: String,
    },
}

/// Installs the process-wide Prometheus recorder serving `/metrics` on `addr` and
/// returns the bound address. Must run inside a tokio runtime.
pub fn install(addr: SocketAddr) -> Result<SocketAddr, MetricsError> {
    // The exporter binds internally and does not report its port, so for `:0`
    // we pick a free port first. The gap between the two binds is tiny and
    // only exists when a test asks for an ephemeral port.
    let addr = if addr.port() == 0 {
        let l = std::net::TcpListener::bind(addr)
            .map_err(|source| MetricsError::Bind { addr, source })?;
        l.local_addr()
            .map_err(|source| MetricsError::Bind { addr, source })?
    } else {
        addr
    };
    let exporter_err = |e: &dyn std::fmt::Display| MetricsError::Exporter {
        addr,
        message: e.to_string(),
    };
    let builder = PrometheusBuilder::new()
        .with_http_listener(addr)
        // Histogram samples queue until upkeep folds them into buckets; at a
        // million results/s (six samples each) the default 5 s held ~250 MiB.
        .upkeep_timeout(std::time::Duration::from_secs(1))
        .set_buckets_for_metric(Matcher::Full(CHECK_DURATION.into()), CHECK_BUCKETS)
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Full(HTTP_PHASE_DURATION.into()), PHASE_BUCKETS)
        })
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Full(STORE_COMMIT_DURATION.into()), COMMIT_BUCKETS)
        })
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Full(STORE_COMMIT_BATCHES.into()), COUNT_BUCKETS)
        })
        .map_err(|e| exporter_err(&e))?;
    builder.install().map_err(|e| exporter_err(&e))?;
    describe();
    metrics::gauge!(BUILD_INFO, label::VERSION => env!("CARGO_PKG_VERSION")).set(1.0);
    Ok(addr)
}

/// Describes every metric once (HELP and unit).
pub fn describe() {
    describe_gauge!(
        BUILD_INFO,
        "Build information of the cutover coordinator; always 1."
    );
    describe_gauge!(PROBES_CONNECTED, "Probes with an open session, per region.");
    describe_counter!(PROBE_SESSIONS, "Probe sessions ended, by outcome.");
    describe_counter!(
        RESULTS_INGESTED,
        "Probe results stored, by check, target, region and outcome."
    );
    describe_counter!(
        RESULTS_DUPLICATE,
        "Probe results dropped because their seq was already stored."
    );
    describe_counter!(
        REJECTED_MESSAGES,
        "Rejected calls, messages or results, by reason (outcome)."
    );
    describe_histogram!(
        CHECK_DURATION,
        Unit::Seconds,
        "Duration of checks as reported by probes."
    );
    describe_histogram!(
        HTTP_PHASE_DURATION,
        Unit::Seconds,
        "HTTP phase durations as reported by probes."
    );
    describe_counter!(
        HASH_MISMATCHES,
        "Downloads whose content hash differed from the published one."
    );
    describe_gauge!(WINDOW_SAMPLES, "Results in the aggregation window.");
    describe_gauge!(
        WINDOW_ERROR_RATIO,
        "Failed results / results in the aggregation window."
    );
    describe_gauge!(
        WINDOW_PROBES,
        "Distinct probes that reported in the aggregation window."
    );
    describe_gauge!(
        WINDOW_LATENCY_P50,
        Unit::Seconds,
        "Median check duration in the window."
    );
    describe_gauge!(
        WINDOW_LATENCY_P95,
        Unit::Seconds,
        "95th percentile check duration in the window."
    );
    describe_gauge!(
        DNS_ANSWER_SHARE,
        "Share of probes whose system resolver's latest answer points at old, new, mixed or other."
    );
    describe_gauge!(
        DNS_TTL_REMAINING,
        Unit::Seconds,
        "Highest remaining TTL among probes' latest system resolver answers."
    );
    describe_gauge!(
        TLS_CERT_EXPIRY,
        Unit::Seconds,
        "Earliest certificate not_after (Unix time) among the tls results of the last hour."
    );
    describe_gauge!(
        REGION_LAST_RESULT,
        Unit::Seconds,
        "Unix time of the newest result ingested from the region."
    );
    describe_gauge!(PROBE_VERSIONS, "Connected probes per probe version.");
    describe_histogram!(
        STORE_COMMIT_DURATION,
        Unit::Seconds,
        "Duration of one SQLite group commit."
    );
    describe_histogram!(
        STORE_COMMIT_BATCHES,
        "Result batches per SQLite group commit."
    );
    describe_counter!(PLAN_STEPS, "Plan step attempts ended, by step and outcome.");
    describe_gauge!(
        PLAN_STEP_ACTIVE,
        "1 while a plan step runs or waits, else 0."
    );
    describe_gauge!(
        PLAN_RUN_STATE,
        "1 for the latest plan run's state (outcome label), 0 for the others."
    );
    describe_gauge!(
        PLAN_FALLBACK_ACTIVE,
        "1 while the latest plan run executes its fallback runbook, else 0."
    );
    describe_gauge!(
        PLAN_STEP_DEADLINE,
        Unit::Seconds,
        "Unix time when the active step's timeout, wait or soak ends; 0 without one."
    );
    describe_gauge!(
        GUARD_VERDICT,
        "Latest verdict of a guard in a region: 0 PASS, 1 FAIL, -1 NO_EVIDENCE."
    );
    describe_gauge!(
        GUARD_VALUE,
        "The value a guard's regional verdict compared with its threshold."
    );
    describe_gauge!(
        GUARD_FAILING_REGIONS,
        "Regions whose latest verdict for the guard is FAIL."
    );
    describe_gauge!(
        GUARD_TRIPPED,
        "1 once the guard tripped in the current plan run, else 0."
    );
    describe_gauge!(
        GUARD_THRESHOLD,
        "The threshold of a guard's condition, in the unit of cutover_guard_value."
    );
    describe_gauge!(
        STATUS_PAGE_INDICATOR,
        "A status page guard's latest indicator: 0 none, 1 minor, 2 maintenance, 3 major, 4 critical."
    );
    describe_counter!(
        GUARD_TRIPS,
        "Guard trips, by the action taken (fallback, pause, alert, shadow)."
    );
    describe_counter!(
        ALERTS,
        "Alert deliveries per destination, by outcome (sent, failed)."
    );
}

/// Counts a rejected call/message/result.
pub fn rejected(reason: &'static str) {
    metrics::counter!(REJECTED_MESSAGES, label::OUTCOME => reason).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_versions_keep_release_like_strings_only() {
        for v in ["0.3.0", "1.2.3-rc.1+build_7", "v2"] {
            assert_eq!(probe_version_label(v), v);
        }
        for v in ["", "0.3.0 (linux)", "{\"x\":1}", &"9".repeat(33), "ünïcode"] {
            assert_eq!(probe_version_label(v), "other", "{v:?}");
        }
    }
}
