//! Process-level test harness for cutover.
//!
//! Everything a test needs to build a small, real world on loopback: a block of
//! 127.x addresses of its own ([`addr`]), an authoritative BIND ([`bind`]), one
//! caching Unbound per region ([`unbound`]), stand-in Elm registries over HTTPS
//! with fault knobs ([`registry`]) signed by a test CA ([`tls`]), the real
//! `cutover` and `cutover-probe` binaries as child processes ([`procs`]), and the
//! whole arrangement wired together ([`cluster`]), with plans written for it
//! ([`plan`]). Guards get their evidence
//! and deliver their alerts through an alert receiver ([`alert_receiver`]), a
//! Statuspage stand-in ([`statuspage`]) and a real Prometheus scraping a
//! target the test controls ([`prometheus`]). The operations kit is checked
//! with the same pieces plus a real Alertmanager ([`alertmanager`]), a
//! stand-in for the user's service metrics ([`production`]) and the
//! dashboards' queries ([`dashboards`]).
//!
//! Every resource cleans itself up on drop, also when the test panics, and the
//! logs of the processes are printed when it does.

pub mod addr;
pub mod admin;
pub mod alert_receiver;
pub mod alertmanager;
pub mod bind;
pub mod cluster;
pub mod dashboards;
pub mod http;
pub mod journal;
pub mod ops;
pub mod plan;
pub mod poll;
pub mod procs;
pub mod production;
pub mod prom;
pub mod prometheus;
pub mod registry;
pub mod statuspage;
pub mod store;
pub mod tls;
pub mod unbound;

/// Installs the process-wide rustls crypto provider (ring) and a test log
/// subscriber. Safe to call from every test; only the first call does anything.
pub fn init() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Fails only if another provider was installed first, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("CUTOVER_E2E_LOG")
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
            )
            .with_test_writer()
            .try_init();
    });
}
