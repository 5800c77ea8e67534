//! `cutover serve`: opens the store, binds the three listeners and runs the
//! probe service, the admin service and the metrics exporter until shutdown.
//!
//! Listeners are bound before anything is served and their real addresses are
//! logged as `probe service listening on ADDR`, `admin service listening on
//! ADDR` and `metrics listening on ADDR`, so tests can ask for port 0.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cutover_proto::{FILE_DESCRIPTOR_SET, services, v1};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};

use crate::admin::{self, AdminApi};
use crate::aggregate::Aggregator;
use crate::auth;
use crate::config::Config;
use crate::evidence::{self, Windows, now_ms};
use crate::ingest::{IngestState, MAX_MESSAGE_BYTES, ProbeApi};
use crate::registry::Registry;
use crate::store::{SqliteStore, Store, StoreError};
use crate::{assign, metrics as m, writer};

/// How long in-flight sessions and commits get to finish after shutdown starts.
pub const GRACE: Duration = Duration::from_secs(10);

/// Why the server could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// `data_dir` could not be created.
    #[error("cannot create data directory {}: {source}", path.display())]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The admin token failed.
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// Requested address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// TLS files unusable.
    #[error("cannot read TLS {what} {}: {source}", path.display())]
    TlsFile {
        /// `certificate` or `key`.
        what: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// gRPC transport setup or serving failed.
    #[error("{what}: {source}")]
    Transport {
        /// What was being done.
        what: &'static str,
        /// Why.
        source: tonic::transport::Error,
    },
    /// The metrics exporter failed.
    #[error(transparent)]
    Metrics(#[from] m::MetricsError),
    /// The plan engine could not start (journal unreadable).
    #[error("plan engine: {0}")]
    Engine(String),
}

/// A server whose listeners are bound but not yet serving.
pub struct Bound {
    config: Config,
    store: Arc<dyn Store>,
    admin_token: String,
    probe_listener: TcpListener,
    admin_listener: TcpListener,
    /// Real address of the probe service.
    pub probe_addr: SocketAddr,
    /// Real address of the admin service.
    pub admin_addr: SocketAddr,
    /// Real address of `/metrics`, if enabled.
    pub metrics_addr: Option<SocketAddr>,
}

/// Accept queue length: after a coordinator restart thousands of probes
/// reconnect at about the same time, and the default (1024) would reset some.
const BACKLOG: u32 = 8192;

async fn bind(
    what: &'static str,
    addr: SocketAddr,
) -> Result<(TcpListener, SocketAddr), ServeError> {
    let err = |source| ServeError::Bind { what, addr, source };
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(err)?;
    socket.set_reuseaddr(true).map_err(err)?;
    socket.bind(addr).map_err(err)?;
    let l = socket.listen(BACKLOG).map_err(err)?;
    let real = l.local_addr().map_err(err)?;
    Ok((l, real))
}

/// Opens storage, ensures the admin token and binds every listener.
///
/// `install_metrics = false` skips the process-wide Prometheus recorder (tests
/// that start several servers in one process).
pub async fn bind_all(config: Config, install_metrics: bool) -> Result<Bound, ServeError> {
    let data_dir = config.server.data_dir.clone();
    std::fs::create_dir_all(&data_dir).map_err(|source| ServeError::DataDir {
        path: data_dir.clone(),
        source,
    })?;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&data_dir)?);
    let (admin_token, created) = auth::ensure_admin_token(&data_dir)?;
    let token_path = data_dir.join(auth::ADMIN_TOKEN_FILE);
    if created {
        tracing::info!(path = %token_path.display(), "created admin token file");
    } else if let Ok(meta) = std::fs::metadata(&token_path) {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %token_path.display(), "admin token file is readable by other users; chmod 600 it");
        }
    }
    let (probe_listener, probe_addr) = bind("probe service", config.server.listen).await?;
    let (admin_listener, admin_addr) = bind("admin service", config.server.admin_listen).await?;
    let metrics_addr = match (config.server.metrics_listen, install_metrics) {
        (Some(addr), true) => Some(m::install(addr)?),
        _ => None,
    };
    let scheme = if config.server.tls.is_some() {
        "TLS"
    } else {
        "plaintext"
    };
    // These exact lines are a contract: tests and operators read the bound ports from them.
    println!("probe service listening on {probe_addr} ({scheme})");
    println!("admin service listening on {admin_addr} ({scheme})");
    if let Some(a) = metrics_addr {
        println!("metrics listening on {a}");
    }
    Ok(Bound {
        config,
        store,
        admin_token,
        probe_listener,
        admin_listener,
        probe_addr,
        admin_addr,
        metrics_addr,
    })
}

fn tls(config: &Config) -> Result<Option<ServerTlsConfig>, ServeError> {
    let Some(files) = &config.server.tls else {
        return Ok(None);
    };
    let read = |what, path: &std::path::Path| {
        std::fs::read(path).map_err(|source| ServeError::TlsFile {
            what,
            path: path.to_path_buf(),
            source,
        })
    };
    let cert = read("certificate", &files.cert)?;
    let key = read("key", &files.key)?;
    Ok(Some(
        ServerTlsConfig::new().identity(Identity::from_pem(cert, key)),
    ))
}

fn builder(tls: &Option<ServerTlsConfig>) -> Result<Server, ServeError> {
    let b = Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)));
    match tls {
        Some(t) => b
            .tls_config(t.clone())
            .map_err(|source| ServeError::Transport {
                what: "invalid TLS certificate or key",
                source,
            }),
        None => Ok(b),
    }
}

impl Bound {
    /// Serves until `shutdown` is cancelled, then drains within [`GRACE`].
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ServeError> {
        let cfg = &self.config;
        let assignment = Arc::new(assign::assignment(cfg));
        tracing::info!(
            config_version = format!("{:016x}", assignment.config_version),
            checks = assignment.checks.len(),
            "assignment ready"
        );
        let (assignment_tx, assignment_rx) = watch::channel(assignment);
        spawn_reload_on_sighup(cfg.path.clone(), assignment_tx.clone(), shutdown.clone());

        // Every enrolled region shows up with 0 connected probes, so "a region
        // went silent" is a value an alert can see, not a missing series.
        {
            let store = self.store.clone();
            let probes = tokio::task::spawn_blocking(move || store.list_probes())
                .await
                .map_err(|_| StoreError::Poisoned)??;
            for p in probes.iter().filter(|p| p.revoked_unix_ms.is_none()) {
                metrics::gauge!(m::PROBES_CONNECTED, m::label::REGION => p.region.clone()).set(0.0);
            }
        }

        let windows: Windows = Arc::new(Mutex::new(Aggregator::new(
            cfg.server.window.as_secs() as u32
        )));
        {
            let store = self.store.clone();
            let w = windows.clone();
            let replayed =
                tokio::task::spawn_blocking(move || evidence::rebuild(&*store, &w, now_ms()))
                    .await
                    .map_err(|_| StoreError::Poisoned)??;
            tracing::info!(results = replayed, "windows rebuilt from stored batches");
        }

        spawn_retention(self.store.clone(), cfg.server.retention, shutdown.clone());

        // Evidence outlives the sessions a little: it stops when the writer does.
        let evidence_stop = CancellationToken::new();
        let (evidence_tx, evidence_rx) = mpsc::channel(1024);
        let evidence_task = tokio::spawn(evidence::run(
            windows.clone(),
            evidence_rx,
            evidence_stop.clone(),
        ));
        let (writer, writer_task) = writer::spawn(self.store.clone(), evidence_tx);

        let registry = Arc::new(Registry::default());
        let ingest = Arc::new(IngestState {
            store: self.store.clone(),
            writer,
            assignment: assignment_rx.clone(),
            registry: registry.clone(),
            heartbeat_interval_ms: cfg.server.heartbeat_interval.as_millis() as u32,
            max_batch_results: cfg.server.max_batch_results,
            shutdown: shutdown.clone(),
        });
        let probe_svc =
            v1::probe_service_server::ProbeServiceServer::new(ProbeApi::new(ingest.clone()))
                .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let engine = crate::engine::serve(
            cfg,
            assignment_tx,
            windows.clone(),
            registry.clone(),
            shutdown.clone(),
        )
        .await
        .map_err(ServeError::Engine)?;
        let admin_api = AdminApi {
            store: self.store.clone(),
            registry,
            windows,
            assignment: assignment_rx,
            engine: Some(engine),
        };
        let admin_svc = v1::admin_service_server::AdminServiceServer::with_interceptor(
            admin_api,
            admin::interceptor(&self.admin_token),
        );

        let (health, health_svc) = tonic_health::server::health_reporter();
        health
            .set_service_status(services::PROBE, tonic_health::ServingStatus::Serving)
            .await;
        health
            .set_service_status(services::ADMIN, tonic_health::ServingStatus::Serving)
            .await;
        // Both reflection versions: grpcurl and other tools still differ in which they ask for.
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .build_v1()
                .map_err(|e| {
                    // Only fails if the committed descriptor set is corrupt: a build defect.
                    tracing::error!(error = %e, "reflection descriptor set unusable");
                })
                .ok()
        };
        let reflection_alpha = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .build_v1alpha()
                .map_err(|e| tracing::error!(error = %e, "reflection descriptor set unusable"))
                .ok()
        };

        let tls = tls(cfg)?;
        // Servers stop accepting when `stop` fires; sessions see `shutdown` first and send Drain.
        let stop = CancellationToken::new();
        let probe_server = builder(&tls)?
            .add_service(health_svc.clone())
            .add_optional_service(reflection())
            .add_optional_service(reflection_alpha())
            .add_service(probe_svc)
            .serve_with_incoming_shutdown(
                // `serve_with_incoming` ignores the builder's TCP_NODELAY, so set it
                // here: with Nagle, a small Ack can wait for the peer's delayed ACK.
                TcpIncoming::from(self.probe_listener).with_nodelay(Some(true)),
                stop.clone().cancelled_owned(),
            );
        let admin_server = builder(&tls)?
            .add_service(health_svc)
            .add_optional_service(reflection())
            .add_optional_service(reflection_alpha())
            .add_service(admin_svc)
            .serve_with_incoming_shutdown(
                TcpIncoming::from(self.admin_listener).with_nodelay(Some(true)),
                stop.clone().cancelled_owned(),
            );
        let probe_task = tokio::spawn(probe_server);
        let admin_task = tokio::spawn(admin_server);
        let aborts = [probe_task.abort_handle(), admin_task.abort_handle()];

        shutdown.cancelled().await;
        tracing::info!(
            grace_secs = GRACE.as_secs(),
            "shutting down: draining sessions"
        );
        health
            .set_service_status(services::PROBE, tonic_health::ServingStatus::NotServing)
            .await;
        stop.cancel();
        let drained = tokio::time::timeout(GRACE, async {
            let p = probe_task.await;
            let a = admin_task.await;
            (p, a)
        })
        .await;
        let mut result = Ok(());
        match drained {
            Ok((p, a)) => {
                for (what, r) in [("probe service", p), ("admin service", a)] {
                    match r {
                        Ok(Ok(())) => {}
                        Ok(Err(source)) => {
                            result = Err(ServeError::Transport { what, source });
                        }
                        Err(e) => tracing::error!(what, error = %e, "server task failed"),
                    }
                }
            }
            Err(_) => {
                tracing::warn!("sessions did not drain within the grace period; closing them");
                for a in aborts {
                    a.abort();
                }
            }
        }
        // The writer ends once the last session (holding a Writer clone) is gone.
        drop(ingest);
        if tokio::time::timeout(GRACE, writer_task).await.is_err() {
            tracing::warn!("storage writer did not finish within the grace period");
        }
        evidence_stop.cancel();
        let _ = evidence_task.await;
        tracing::info!("stopped");
        result
    }
}

/// Re-reads the config file and publishes its assignment if the checks or
/// sites changed. Returns whether it changed. Listener, TLS and storage
/// settings are only read at start.
pub fn reload(
    path: &std::path::Path,
    assignment: &watch::Sender<Arc<v1::Assignment>>,
) -> Result<bool, crate::config::ConfigError> {
    let cfg = crate::config::load(path)?;
    let next = assign::assignment(&cfg);
    let changed = assignment.borrow().config_version != next.config_version;
    if changed {
        assignment.send_replace(Arc::new(next));
    }
    Ok(changed)
}

/// SIGHUP → [`reload`]: new checks reach every connected probe at once.
fn spawn_reload_on_sighup(
    path: std::path::PathBuf,
    assignment: watch::Sender<Arc<v1::Assignment>>,
    shutdown: CancellationToken,
) {
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGHUP; config reload disabled");
            return;
        }
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                got = hup.recv() => if got.is_none() { return },
            }
            match reload(&path, &assignment) {
                Ok(true) => tracing::info!(
                    config_version = format!("{:016x}", assignment.borrow().config_version),
                    "config reloaded: new assignment sent to connected probes"
                ),
                Ok(false) => tracing::info!("config reloaded: checks unchanged"),
                // Keep running on the old, valid config; the operator sees why.
                Err(e) => {
                    tracing::error!("config reload refused, keeping the running config:\n{e}")
                }
            }
        }
    });
}

/// Deletes stored batches older than `retention`, at start and every 10 minutes,
/// so a long soak does not fill the disk. The probe registry (and each probe's
/// stored seq, which dedupe relies on) is never pruned.
fn spawn_retention(store: Arc<dyn Store>, retention: Duration, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(600));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let before = now_ms() - retention.as_millis() as i64;
            let store = store.clone();
            match tokio::task::spawn_blocking(move || store.prune(before)).await {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => tracing::info!(batches = n, "deleted result batches past retention"),
                Ok(Err(e)) => tracing::warn!(error = %e, "retention pruning failed"),
                Err(e) => tracing::warn!(error = %e, "retention task failed"),
            }
        }
    });
}
