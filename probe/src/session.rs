//! The one outbound gRPC stream to the coordinator (`ProbeService.Session`).
//!
//! Per connection: send `Hello`, wait for `Welcome` (continue numbering after
//! the coordinator's `stored_seq`, resend everything unacked), then apply
//! `Assignment`s, drop what each `Ack` covers, send result batches as they are
//! produced and a heartbeat on the Welcome's interval. `Drain` means reconnect
//! after `retry_after`. Any other loss reconnects forever with capped, jittered
//! backoff. A rejected token is final: retrying cannot fix it, the volunteer can.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cutover_proto::v1::{
    CoordinatorMessage, Heartbeat, Hello, ProbeMessage, ResultBatch, coordinator_message::Msg as In,
    probe_message::Msg as Out, probe_service_client::ProbeServiceClient,
};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Status};

use crate::backoff::Backoff;
use crate::outbox::SharedOutbox;
use crate::scheduler::Scheduler;

/// How long a shutdown may spend delivering unacked results.
pub const FLUSH_GRACE: Duration = Duration::from_secs(5);
/// How long to wait for `Welcome` after opening the stream.
pub const WELCOME_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);
const DEFAULT_MAX_BATCH: usize = 500;

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub coordinator: String,
    pub token: String,
    pub region: String,
    pub ca_file: Option<PathBuf>,
    pub capabilities: Vec<String>,
    pub backoff: Backoff,
}

/// Why the session ended for good.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(
        "the coordinator at {coordinator} rejected this probe's token ({code:?}: {message}). \
         Check --token / CUTOVER_TOKEN, or ask the operator to enrol this probe again \
         (`cutover probe enrol --region REGION`) and start it with the new token."
    )]
    Rejected {
        coordinator: String,
        code: Code,
        message: String,
    },
    #[error("coordinator URL {coordinator:?}: {message}")]
    Endpoint { coordinator: String, message: String },
    #[error("cannot read the CA file {path} for the coordinator connection: {source}")]
    CaFile { path: PathBuf, source: std::io::Error },
    #[error("the token cannot be sent as gRPC metadata (it must be printable ASCII)")]
    BadToken,
}

/// How one connection ended, when it was not fatal.
#[derive(Debug)]
enum End {
    /// Shutting down: flushed, or the grace period ran out.
    Shutdown,
    /// The coordinator asked us to go away for a while.
    Drain(Duration),
    /// The stream broke or never came up; back off and retry.
    Lost(String),
}

fn is_rejection(s: &Status) -> bool {
    matches!(s.code(), Code::Unauthenticated | Code::PermissionDenied)
}

fn now_unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The coordinator connection and its state across reconnects.
pub struct Session {
    cfg: SessionConfig,
    endpoint: Endpoint,
    auth: MetadataValue<Ascii>,
    outbox: Arc<SharedOutbox>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("coordinator", &self.cfg.coordinator)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Validates the endpoint and credentials; does not connect yet.
    pub fn new(cfg: SessionConfig, outbox: Arc<SharedOutbox>) -> Result<Self, SessionError> {
        let endpoint_err = |message: String| SessionError::Endpoint {
            coordinator: cfg.coordinator.clone(),
            message,
        };
        let mut endpoint = Endpoint::from_shared(cfg.coordinator.clone())
            .map_err(|e| endpoint_err(e.to_string()))?
            .connect_timeout(Duration::from_secs(10))
            .tcp_keepalive(Some(Duration::from_secs(30)))
            // HTTP/2 pings notice a dead coordinator (or a NAT that forgot us)
            // even while we have nothing to send.
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(20))
            .keep_alive_while_idle(true);
        if cfg.coordinator.starts_with("https://") {
            let mut tls = ClientTlsConfig::new().with_native_roots();
            if let Some(path) = &cfg.ca_file {
                let pem = std::fs::read(path).map_err(|source| SessionError::CaFile {
                    path: path.clone(),
                    source,
                })?;
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            endpoint = endpoint.tls_config(tls).map_err(|e| endpoint_err(e.to_string()))?;
        }
        let auth = format!("Bearer {}", cfg.token)
            .parse::<MetadataValue<Ascii>>()
            .map_err(|_| SessionError::BadToken)?;
        Ok(Self {
            cfg,
            endpoint,
            auth,
            outbox,
        })
    }

    /// Runs until shutdown (after a best-effort flush) or a rejected token.
    pub async fn run(&mut self, scheduler: &mut Scheduler, shutdown: CancellationToken) -> Result<(), SessionError> {
        let mut backoff = self.cfg.backoff.clone();
        // Set once shutdown was requested: the moment we stop trying to flush.
        let mut flush_deadline: Option<Instant> = None;
        loop {
            if flush_deadline.is_none() && shutdown.is_cancelled() {
                flush_deadline = Some(self.begin_shutdown(scheduler).await);
            }
            if let Some(deadline) = flush_deadline
                && (self.outbox.with(|o| o.pending()) == 0 || Instant::now() >= deadline)
            {
                self.report_undelivered();
                return Ok(());
            }
            let attempt = self.connect_once(scheduler, &shutdown, flush_deadline, &mut backoff);
            let end = match flush_deadline {
                Some(deadline) => tokio::time::timeout_at(deadline, attempt)
                    .await
                    .unwrap_or(Ok(End::Shutdown))?,
                None => attempt.await?,
            };
            let delay = match end {
                End::Shutdown => {
                    self.report_undelivered();
                    return Ok(());
                }
                End::Drain(d) => {
                    tracing::info!(retry_after = ?d, "coordinator asked us to drain; reconnecting later");
                    // A little jitter so a drained fleet does not return at once.
                    d + Duration::from_millis(fastrand::u64(0..=d.as_millis().min(5_000) as u64 / 10))
                }
                End::Lost(why) => {
                    let d = backoff.next_delay();
                    tracing::warn!(coordinator = %self.cfg.coordinator, error = %why, retry_in = ?d, "coordinator session lost");
                    d
                }
            };
            if flush_deadline.is_some() {
                // Shutting down: retry at once, the deadline bounds us.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    async fn begin_shutdown(&self, scheduler: &mut Scheduler) -> Instant {
        scheduler.stop().await;
        let pending = self.outbox.with(|o| o.pending());
        tracing::info!(pending, "shutting down: checks stopped, flushing unacked results");
        Instant::now() + FLUSH_GRACE
    }

    fn report_undelivered(&self) {
        let (pending, last) = self.outbox.with(|o| (o.pending(), o.last_produced()));
        if pending > 0 {
            tracing::warn!(pending, last_seq = last, "exiting with results the coordinator has not acknowledged");
        } else {
            tracing::info!(last_seq = last, "all results acknowledged");
        }
    }

    fn hello(&self) -> ProbeMessage {
        ProbeMessage {
            msg: Some(Out::Hello(Hello {
                region: self.cfg.region.clone(),
                version: crate::VERSION.to_owned(),
                capabilities: self.cfg.capabilities.clone(),
                clock_unix_ms: now_unix_ms(),
                last_produced_seq: self.outbox.with(|o| o.last_produced()),
            })),
        }
    }

    async fn connect_once(
        &self,
        scheduler: &mut Scheduler,
        shutdown: &CancellationToken,
        mut flush_deadline: Option<Instant>,
        backoff: &mut Backoff,
    ) -> Result<End, SessionError> {
        let channel: Channel = match self.endpoint.connect().await {
            Ok(c) => c,
            Err(e) => return Ok(End::Lost(format!("connecting: {}", error_chain(&e)))),
        };
        let mut client = ProbeServiceClient::new(channel);
        let (tx, rx) = mpsc::channel::<ProbeMessage>(16);
        // Queue Hello before opening the call: the coordinator may wait for it
        // before sending response headers.
        if tx.send(self.hello()).await.is_err() {
            return Ok(End::Lost("request stream closed before Hello".into()));
        }
        let mut req = tonic::Request::new(ReceiverStream::new(rx));
        req.metadata_mut().insert("authorization", self.auth.clone());
        let mut inbound = match client.session(req).await {
            Ok(r) => r.into_inner(),
            Err(s) => return self.status_end(s),
        };

        let welcome = match tokio::time::timeout(WELCOME_TIMEOUT, inbound.message()).await {
            Err(_) => return Ok(End::Lost(format!("no Welcome within {WELCOME_TIMEOUT:?}"))),
            Ok(Err(s)) => return self.status_end(s),
            Ok(Ok(None)) => return Ok(End::Lost("stream closed before Welcome".into())),
            Ok(Ok(Some(CoordinatorMessage { msg: Some(In::Welcome(w)) }))) => w,
            Ok(Ok(Some(other))) => {
                return Ok(End::Lost(format!("expected Welcome first, got {other:?}")));
            }
        };
        self.outbox.with(|o| o.on_welcome(welcome.stored_seq));
        backoff.reset();
        let max_batch = match welcome.max_batch_results {
            0 => DEFAULT_MAX_BATCH,
            n => n as usize,
        };
        let heartbeat_every = match welcome.heartbeat_interval_ms {
            0 => DEFAULT_HEARTBEAT,
            ms => Duration::from_millis(u64::from(ms)),
        };
        tracing::info!(
            probe_id = %welcome.probe_id,
            region = %welcome.region,
            stored_seq = welcome.stored_seq,
            pending = self.outbox.with(|o| o.pending()),
            "connected to coordinator {}", self.cfg.coordinator
        );
        let mut heartbeat = tokio::time::interval_at(Instant::now() + heartbeat_every, heartbeat_every);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        loop {
            // Send everything produced so far, in seq order.
            loop {
                let batch = self.outbox.with(|o| o.next_batch(max_batch));
                if batch.is_empty() {
                    break;
                }
                let msg = ProbeMessage {
                    msg: Some(Out::Results(ResultBatch { results: batch })),
                };
                if tx.send(msg).await.is_err() {
                    return Ok(End::Lost("request stream closed".into()));
                }
            }
            if flush_deadline.is_some() && self.outbox.with(|o| o.pending()) == 0 {
                return Ok(End::Shutdown);
            }
            tokio::select! {
                () = shutdown.cancelled(), if flush_deadline.is_none() => {
                    flush_deadline = Some(self.begin_shutdown(scheduler).await);
                }
                () = self.outbox.wait() => {}
                _ = heartbeat.tick() => {
                    let hb = ProbeMessage {
                        msg: Some(Out::Heartbeat(Heartbeat {
                            clock_unix_ms: now_unix_ms(),
                            pending_results: self.outbox.with(|o| o.pending()) as u64,
                        })),
                    };
                    if tx.send(hb).await.is_err() {
                        return Ok(End::Lost("request stream closed".into()));
                    }
                }
                msg = inbound.message() => match msg {
                    Err(s) => return self.status_end(s),
                    Ok(None) => return Ok(End::Lost("coordinator closed the stream".into())),
                    Ok(Some(CoordinatorMessage { msg: None })) => {}
                    Ok(Some(CoordinatorMessage { msg: Some(m) })) => match m {
                        In::Ack(a) => self.outbox.with(|o| o.ack(a.seq)),
                        In::Assignment(a) => {
                            if flush_deadline.is_none() {
                                scheduler.apply(a).await;
                            }
                        }
                        In::Drain(d) => {
                            tracing::info!(reason = %d.reason, "drain requested");
                            return Ok(End::Drain(Duration::from_millis(u64::from(d.retry_after_ms))));
                        }
                        In::Welcome(_) => tracing::debug!("ignoring a second Welcome"),
                    },
                },
            }
        }
    }

    fn status_end(&self, s: Status) -> Result<End, SessionError> {
        if is_rejection(&s) {
            return Err(SessionError::Rejected {
                coordinator: self.cfg.coordinator.clone(),
                code: s.code(),
                message: s.message().to_owned(),
            });
        }
        Ok(End::Lost(format!("{:?}: {}", s.code(), s.message())))
    }
}

/// An error with its sources, e.g. "transport error: tcp connect error: Connection refused".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
