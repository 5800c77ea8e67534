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
    let http = HttpClient::new(roots, resolver)?;
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
