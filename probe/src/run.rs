//! Wires the parts together: trust store, resolver, outbox, scheduler, session.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::config::Config;
use crate::net::resolve::ResolveError;
use crate::net::{HttpClient, SystemResolver};
use crate::outbox::{DEFAULT_CAPACITY, Outbox, RecordError, SharedOutbox};
use crate::scheduler::{ProbeEnv, Scheduler};
use crate::session::{Session, SessionConfig, SessionError};
use crate::trust::TrustError;

/// Why the probe stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Trust(#[from] TrustError),
    #[error(transparent)]
    Resolver(#[from] ResolveError),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error(transparent)]
    Session(#[from] SessionError),
}

impl RunError {
    /// Process exit status: 2 for a rejected token (the volunteer must act),
    /// 1 for anything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Session(SessionError::Rejected { .. }) => 2,
            _ => 1,
        }
    }
}

/// Runs the probe until `shutdown` is cancelled (then flushes for a few
/// seconds) or the coordinator rejects the token.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    let roots = crate::trust::load_roots(config.ca_file.as_deref())?;
    let resolver = SystemResolver::new(config.resolver)?;
    tracing::info!(servers = ?resolver.servers(), "resolver");
    let policy = config.policy();
    tracing::info!(
        allowed_domains = %policy.describe(),
        private_addresses = if policy.allows_private() { "allowed" } else { "refused" },
        "connection rules"
    );
    let http = HttpClient::new(roots, resolver, policy)?.with_source_address(config.source_address);
    let mut outbox = Outbox::new(DEFAULT_CAPACITY);
    if let Some(path) = &config.record_produced {
        outbox = outbox.with_record_file(path)?;
    }
    let outbox = Arc::new(SharedOutbox::new(outbox));
    let mut scheduler = Scheduler::new(
        ProbeEnv {
            http,
            authoritative_port: 53,
            dns_timeout: Duration::from_secs(3),
        },
        outbox.clone(),
    );
    let mut session = Session::new(
        SessionConfig {
            coordinator: config.coordinator.clone(),
            token: config.token.clone(),
            region: config.region.clone(),
            ca_file: config.ca_file.clone(),
            capabilities: crate::checks::KINDS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            backoff: Backoff::default(),
            flush_grace: crate::session::FLUSH_GRACE,
        },
        outbox,
    )?;
    tracing::info!(
        version = crate::VERSION,
        coordinator = %config.coordinator,
        region = %config.region,
        "cutover-probe starting"
    );
    let result = session.run(&mut scheduler, shutdown).await;
    scheduler.stop().await;
    result.map_err(RunError::from)
}

#[cfg(test)]
mod tests {
    use cutover_proto::v1::{
        Assignment, CheckSpec, ElmPackageParams, Outcome, Site, Target, check_result::Detail,
        check_spec::Params,
    };

    use super::*;
    use crate::testutil::{
        Fake, Reply, Seen, TestCa, TestServer, dns_responder, serve_coordinator,
    };

    /// The whole probe in-process: TLS to the coordinator through `--ca-file`,
    /// an Elm install check pinned to old and new, results stored and recorded.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn probe_reports_pinned_install_checks_over_tls() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ca = TestCa::new();
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        let record = dir.path().join("produced.tsv");

        let archive = b"zipball".to_vec();
        let hash = crate::checks::hex(
            ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &archive).as_ref(),
        );
        let registry = TestServer::start(
            Some(ca.server_config(&["package.elm.test"], 90)),
            move |s: &Seen| match s.path.as_str() {
                "/packages/elm/core/releases.json" => Reply::ok(r#"{"1.0.5":1}"#),
                "/packages/elm/core/1.0.5/endpoint.json" => {
                    Reply::ok(format!(r#"{{"url":"/zip","hash":"{hash}"}}"#))
                }
                "/zip" => Reply::gzip(&archive),
                "/all-packages" => Reply::ok(r#"{"elm/core":["1.0.5"]}"#),
                _ => Reply::status(404),
            },
        )
        .await;
        let dns = dns_responder().await;
        let fake = Fake {
            token: "tok".into(),
            assignment: Assignment {
                config_version: 1,
                old: Some(Site {
                    name: "old".into(),
                    addresses: vec!["127.0.0.1".into()],
                }),
                new: Some(Site {
                    name: "new".into(),
                    addresses: vec!["127.0.0.1".into()],
                }),
                checks: vec![CheckSpec {
                    id: "install-core".into(),
                    kind: "elm_package".into(),
                    targets: vec![Target::Old as i32, Target::New as i32],
                    interval_ms: 200,
                    jitter_ms: 50,
                    timeout_ms: 5_000,
                    params: Some(Params::ElmPackage(ElmPackageParams {
                        registry_url: format!("https://package.elm.test:{}", registry.addr.port()),
                        package: "elm/core".into(),
                        version: "1.0.5".into(),
                    })),
                }],
            },
            ..Default::default()
        };
        let addr = serve_coordinator(fake.clone(), Some(ca.issue_pem(&["127.0.0.1"]))).await;
        let config = Config {
            coordinator: format!("https://127.0.0.1:{}", addr.port()),
            token: "tok".into(),
            region: "asia".into(),
            allow_domains: Some(vec!["elm.test".into()]),
            allow_private_addresses: true,
            resolver: Some(dns.addr),
            ca_file: Some(ca_file),
            record_produced: Some(record.clone()),
            source_address: None,
        };
        let shutdown = CancellationToken::new();
        let probe = tokio::spawn(run(config, shutdown.clone()));
        tokio::time::sleep(Duration::from_millis(1_200)).await;
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), probe)
            .await
            .unwrap()
            .unwrap()
            .unwrap();

        let stored = fake.stored.lock().unwrap().clone();
        assert!(stored.len() >= 4, "only {} results stored", stored.len());
        for r in stored.values() {
            assert_eq!(r.outcome(), Outcome::Success, "{r:?}");
            let Some(Detail::ElmPackage(d)) = &r.detail else {
                panic!("no detail: {r:?}")
            };
            assert_eq!(d.actual_sha1, d.expected_sha1);
        }
        let targets: std::collections::BTreeSet<i32> = stored.values().map(|r| r.target).collect();
        assert_eq!(targets.len(), 2, "both old and new ran");
        let recorded = std::fs::read_to_string(&record).unwrap();
        let want: String = stored
            .values()
            .map(|r| format!("{}\tinstall-core\t{}\tsuccess\n", r.seq, r.target().label()))
            .collect();
        assert_eq!(recorded, want, "record file and coordinator agree");
        assert_eq!(fake.hellos.lock().unwrap()[0].region, "asia");
    }
}
