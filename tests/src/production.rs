//! A stand-in for the user's own service as Prometheus sees it: `/metrics`
//! with the common `http_requests_total{code}` counter and the
//! `http_request_duration_seconds` histogram, the names the Production load
//! dashboard reads (`dashboards/production-load.json`).
//!
//! The figures grow with time at a steady request rate and a given share of
//! 5xx answers, so every rate, ratio and quantile the dashboard draws has a
//! value from the second scrape on.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Instant;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

/// Upper bounds of the latency histogram's buckets (seconds), and the share
/// of requests at or below each: most are fast, a few slow.
const BUCKETS: [(f64, f64); 6] = [
    (0.025, 0.40),
    (0.05, 0.70),
    (0.1, 0.90),
    (0.25, 0.97),
    (0.5, 0.99),
    (1.0, 1.0),
];
/// Mean request duration (seconds), for `_sum`.
const MEAN_SECS: f64 = 0.045;

/// A running stand-in. Stops when dropped.
#[derive(Debug)]
pub struct ServiceTarget {
    addr: SocketAddr,
    stop: CancellationToken,
}

impl ServiceTarget {
    /// Listens on `ip` (which must be on `lo`), port 0, serving `per_sec`
    /// requests a second of which `errors` (0..=1) answer 500.
    pub async fn start(ip: Ipv4Addr, per_sec: f64, errors: f64) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind((ip, 0))
            .await
            .with_context(|| format!("binding the service stand-in on {ip}"))?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let started = Instant::now();
        crate::http::serve(listener, stop.clone(), move |req| {
            if req.path != "/metrics" {
                return (404, "text/plain", b"not found\n".to_vec());
            }
            let total = per_sec * started.elapsed().as_secs_f64();
            (
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                exposition(total, errors).into_bytes(),
            )
        });
        Ok(ServiceTarget { addr, stop })
    }

    /// Its address (`host:port`, as Prometheus's `targets` want it).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for ServiceTarget {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The exposition after `total` requests of which a share `errors` failed.
/// Counts are whole numbers, monotonic in `total`.
pub fn exposition(total: f64, errors: f64) -> String {
    let total = total.max(0.0).floor();
    let failed = (total * errors.clamp(0.0, 1.0)).floor();
    let mut out = String::from(
        "# HELP http_requests_total Requests answered, by status code.\n\
         # TYPE http_requests_total counter\n",
    );
    let _ = writeln!(
        out,
        "http_requests_total{{code=\"200\"}} {}",
        total - failed
    );
    let _ = writeln!(out, "http_requests_total{{code=\"500\"}} {failed}");
    out.push_str(
        "# HELP http_request_duration_seconds Time to answer a request.\n\
         # TYPE http_request_duration_seconds histogram\n",
    );
    for (le, share) in BUCKETS {
        let _ = writeln!(
            out,
            "http_request_duration_seconds_bucket{{le=\"{le}\"}} {}",
            (total * share).floor()
        );
    }
    let _ = writeln!(
        out,
        "http_request_duration_seconds_bucket{{le=\"+Inf\"}} {total}\n\
         http_request_duration_seconds_sum {}\n\
         http_request_duration_seconds_count {total}",
        total * MEAN_SECS
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prom::parse;

    #[test]
    fn counts_add_up_and_buckets_are_cumulative() {
        let samples = parse(&exposition(1000.0, 0.05));
        let value = |name: &str, label: (&str, &str)| {
            samples
                .iter()
                .find(|s| s.name == name && s.has(&[label]))
                .map(|s| s.value)
        };
        assert_eq!(value("http_requests_total", ("code", "200")), Some(950.0));
        assert_eq!(value("http_requests_total", ("code", "500")), Some(50.0));
        let buckets: Vec<f64> = samples
            .iter()
            .filter(|s| s.name == "http_request_duration_seconds_bucket")
            .map(|s| s.value)
            .collect();
        assert_eq!(buckets.len(), BUCKETS.len() + 1);
        assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
        assert_eq!(buckets.last(), Some(&1000.0));
        let count = samples
            .iter()
            .find(|s| s.name == "http_request_duration_seconds_count")
            .map(|s| s.value);
        assert_eq!(count, Some(1000.0));
        assert_eq!(
            value("http_request_duration_seconds_bucket", ("le", "+Inf")),
            count
        );
    }
}
