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
    CoordinatorMessage, Heartbeat, Hello, ProbeMessage, ResultBatch,
    coordinator_message::Msg as In, probe_message::Msg as Out,
    probe_service_client::ProbeServiceClient,
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
/// A session that lasted this long resets the reconnect backoff.
const HEALTHY_AFTER: Duration = Duration::from_secs(10);
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
    /// How long a shutdown may spend delivering unacked results ([`FLUSH_GRACE`]).
    pub flush_grace: Duration,
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
    Endpoint {
        coordinator: String,
        message: String,
    },
    #[error("cannot read the CA file {path} for the coordinator connection: {source}")]
    CaFile {
        path: PathBuf,
        source: std::io::Error,
    },
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
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| endpoint_err(e.to_string()))?;
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
    pub async fn run(
        &mut self,
        scheduler: &mut Scheduler,
        shutdown: CancellationToken,
    ) -> Result<(), SessionError> {
        // Fires FLUSH_GRACE after shutdown was requested, wherever we are then
        // (connecting, waiting for Welcome, waiting for acks, backing off).
        let hard_stop = CancellationToken::new();
        let timer = {
            let (shutdown, hard_stop) = (shutdown.clone(), hard_stop.clone());
            let grace = self.cfg.flush_grace;
            tokio::spawn(async move {
                shutdown.cancelled().await;
                tokio::time::sleep(grace).await;
                hard_stop.cancel();
            })
        };
        let result = self.run_until(scheduler, &shutdown, &hard_stop).await;
        timer.abort();
        if result.is_ok() {
            self.report_undelivered();
        }
        result
    }

    async fn run_until(
        &mut self,
        scheduler: &mut Scheduler,
        shutdown: &CancellationToken,
        hard_stop: &CancellationToken,
    ) -> Result<(), SessionError> {
        let mut backoff = self.cfg.backoff.clone();
        loop {
            if shutdown.is_cancelled() {
                self.stop_checks(scheduler).await;
                if self.outbox.with(|o| o.pending()) == 0 {
                    return Ok(());
                }
            }
            let end = tokio::select! {
                biased;
                () = hard_stop.cancelled() => return Ok(()),
                r = self.connect_once(scheduler, shutdown, &mut backoff) => r?,
            };
            let delay = match end {
                End::Shutdown => return Ok(()),
                End::Drain(d) => {
                    tracing::info!(retry_after = ?d, "coordinator asked us to drain; reconnecting later");
                    // A little jitter so a drained fleet does not return at once.
                    let spread = u64::try_from(d.as_millis() / 10).unwrap_or(500).min(500);
                    d + Duration::from_millis(fastrand::u64(0..=spread))
                }
                End::Lost(why) => {
                    let d = backoff.next_delay();
                    tracing::warn!(coordinator = %self.cfg.coordinator, error = %why, retry_in = ?d, "coordinator session lost");
                    d
                }
            };
            // While shutting down, retry quickly: the hard stop bounds us.
            let delay = if shutdown.is_cancelled() {
                delay.min(Duration::from_millis(100))
            } else {
                delay
            };
            tokio::select! {
                () = hard_stop.cancelled() => return Ok(()),
                () = shutdown.cancelled(), if !shutdown.is_cancelled() => {}
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Stops the checks (once) so the outbox only shrinks from here on.
    async fn stop_checks(&self, scheduler: &mut Scheduler) {
        if scheduler.stop().await {
            let pending = self.outbox.with(|o| o.pending());
            tracing::info!(
                pending,
                grace = ?self.cfg.flush_grace,
                "shutting down: checks stopped, flushing unacked results"
            );
        }
    }

    fn report_undelivered(&self) {
        let (pending, last) = self.outbox.with(|o| (o.pending(), o.last_produced()));
        if pending > 0 {
            tracing::warn!(
                pending,
                last_seq = last,
                "exiting with results the coordinator has not acknowledged"
            );
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
        backoff: &mut Backoff,
    ) -> Result<End, SessionError> {
        // Draining: checks are stopped, we only deliver what is pending.
        let mut draining = shutdown.is_cancelled();
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
        req.metadata_mut()
            .insert("authorization", self.auth.clone());
        let mut inbound = match client.session(req).await {
            Ok(r) => r.into_inner(),
            Err(s) => return self.status_end(s),
        };

        let welcome = match tokio::time::timeout(WELCOME_TIMEOUT, inbound.message()).await {
            Err(_) => return Ok(End::Lost(format!("no Welcome within {WELCOME_TIMEOUT:?}"))),
            Ok(Err(s)) => return self.status_end(s),
            Ok(Ok(None)) => return Ok(End::Lost("stream closed before Welcome".into())),
            Ok(Ok(Some(CoordinatorMessage {
                msg: Some(In::Welcome(w)),
            }))) => w,
            Ok(Ok(Some(other))) => {
                return Ok(End::Lost(format!("expected Welcome first, got {other:?}")));
            }
        };
        self.outbox.with(|o| o.on_welcome(welcome.stored_seq));
        // Only a session that stays up counts as recovery: a coordinator that
        // welcomes and then drops us at once must not get a tight retry loop.
        let welcomed = Instant::now();
        let mut backoff_reset = false;
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
        let mut heartbeat =
            tokio::time::interval_at(Instant::now() + heartbeat_every, heartbeat_every);
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
            if draining && self.outbox.with(|o| o.pending()) == 0 {
                return Ok(End::Shutdown);
            }
            if !backoff_reset && welcomed.elapsed() >= HEALTHY_AFTER {
                backoff.reset();
                backoff_reset = true;
            }
            tokio::select! {
                () = shutdown.cancelled(), if !draining => {
                    self.stop_checks(scheduler).await;
                    draining = true;
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
                            if !draining {
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
        let part = c.to_string();
        // Some layers repeat their source in their own message.
        if !s.ends_with(&part) {
            s.push_str(": ");
            s.push_str(&part);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use cutover_proto::v1::{Assignment, CheckResult, CheckSpec, Site, Target};

    use super::*;
    use crate::checks::Sites;
    use crate::outbox::Outbox;
    use crate::scheduler::ProbeEnv;
    use crate::testutil::{TestCa, context};

    use std::net::SocketAddr;

    use crate::testutil::{Fake, serve_coordinator as serve};
    fn assignment() -> Assignment {
        // An unsupported check needs no network and still reports every tick.
        Assignment {
            config_version: 3,
            old: Some(Site::default()),
            new: Some(Site::default()),
            checks: vec![CheckSpec {
                id: "tick".into(),
                kind: "quantum".into(),
                targets: vec![Target::New as i32],
                interval_ms: 100,
                ..Default::default()
            }],
        }
    }

    struct Probe {
        session: Session,
        scheduler: Scheduler,
        outbox: Arc<SharedOutbox>,
    }

    fn probe(addr: SocketAddr, token: &str, record: Option<&std::path::Path>) -> Probe {
        let mut outbox = Outbox::new(1000);
        if let Some(p) = record {
            outbox = outbox.with_record_file(p).unwrap();
        }
        let outbox = Arc::new(SharedOutbox::new(outbox));
        let ctx = context(TestCa::new().roots(), Sites::default(), None);
        let scheduler = Scheduler::new(
            ProbeEnv {
                http: ctx.http,
                authoritative_port: 53,
                dns_timeout: Duration::from_secs(1),
            },
            outbox.clone(),
        );
        let session = Session::new(
            SessionConfig {
                coordinator: format!("http://{addr}"),
                token: token.into(),
                region: "test".into(),
                ca_file: None,
                capabilities: vec!["dns".into()],
                backoff: Backoff::new(Duration::from_millis(50), Duration::from_millis(200)),
                flush_grace: Duration::from_millis(400),
            },
            outbox.clone(),
        )
        .unwrap();
        Probe {
            session,
            scheduler,
            outbox,
        }
    }

    #[tokio::test]
    async fn rejected_token_is_final_and_names_the_coordinator() {
        let addr = serve(
            Fake {
                token: "right".into(),
                ..Default::default()
            },
            None,
        )
        .await;
        let mut p = probe(addr, "wrong", None);
        let err = tokio::time::timeout(
            Duration::from_secs(5),
            p.session.run(&mut p.scheduler, CancellationToken::new()),
        )
        .await
        .expect("a rejected token must not be retried")
        .unwrap_err();
        assert!(matches!(
            err,
            SessionError::Rejected {
                code: Code::Unauthenticated,
                ..
            }
        ));
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
    }

    #[tokio::test]
    async fn results_survive_an_outage_exactly_once_and_flush_on_shutdown() {
        let fake = Fake {
            token: "t".into(),
            assignment: assignment(),
            ..Default::default()
        };
        let addr = serve(fake.clone(), None).await;
        let dir = tempfile::tempdir().unwrap();
        let record = dir.path().join("produced.tsv");
        let mut p = probe(addr, "t", Some(&record));
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let f = fake.clone();
        let driver = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            // Outage: cut the stream and refuse reconnects for a while.
            f.down.lock().unwrap().cancel();
            tokio::time::sleep(Duration::from_millis(600)).await;
            *f.down.lock().unwrap() = CancellationToken::new();
            tokio::time::sleep(Duration::from_millis(600)).await;
            stop.cancel();
        });
        tokio::time::timeout(
            Duration::from_secs(10),
            p.session.run(&mut p.scheduler, shutdown),
        )
        .await
        .unwrap()
        .unwrap();
        driver.await.unwrap();

        let last = p.outbox.with(|o| o.last_produced());
        assert!(last >= 10, "only {last} results produced");
        assert_eq!(p.outbox.with(|o| o.pending()), 0, "shutdown must flush");
        let stored = fake.stored.lock().unwrap().clone();
        let seqs: Vec<u64> = stored.keys().copied().collect();
        assert_eq!(
            seqs,
            (1..=last).collect::<Vec<_>>(),
            "every seq stored, none lost"
        );
        assert!(*fake.sessions.lock().unwrap() >= 2, "probe reconnected");
        let hellos = fake.hellos.lock().unwrap().clone();
        assert_eq!(hellos[0].last_produced_seq, 0);
        assert!(
            hellos[1].last_produced_seq > 0,
            "second Hello reports progress"
        );
        assert_eq!(hellos[0].region, "test");
        // The record file lists exactly what was produced.
        let lines = std::fs::read_to_string(&record).unwrap();
        let want: String = (1..=last)
            .map(|seq| format!("{seq}\ttick\tnew\tfailure\n"))
            .collect();
        assert_eq!(lines, want);
    }

    #[tokio::test]
    async fn numbering_continues_after_the_stored_seq() {
        let fake = Fake {
            token: "t".into(),
            assignment: assignment(),
            ..Default::default()
        };
        fake.stored
            .lock()
            .unwrap()
            .extend((1..=41).map(|s| (s, CheckResult::default())));
        let addr = serve(fake.clone(), None).await;
        let mut p = probe(addr, "t", None);
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            stop.cancel();
        });
        p.session.run(&mut p.scheduler, shutdown).await.unwrap();
        let stored = fake.stored.lock().unwrap().clone();
        assert_eq!(stored[&42].check_id, "tick", "first new result is seq 42");
    }

    #[tokio::test]
    async fn shutdown_gives_up_after_the_grace_period_when_nothing_is_acked() {
        let fake = Fake {
            token: "t".into(),
            assignment: assignment(),
            no_ack: true,
            ..Default::default()
        };
        let addr = serve(fake.clone(), None).await;
        let mut p = probe(addr, "t", None);
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            stop.cancel();
        });
        let started = std::time::Instant::now();
        tokio::time::timeout(
            Duration::from_secs(5),
            p.session.run(&mut p.scheduler, shutdown),
        )
        .await
        .expect("shutdown must not wait for acks forever")
        .unwrap();
        assert!(
            started.elapsed() >= Duration::from_millis(650),
            "gave up before the grace period"
        );
        assert!(p.outbox.with(|o| o.pending()) > 0);
    }

    #[tokio::test]
    async fn an_idle_probe_sends_heartbeats_at_the_welcome_interval() {
        let fake = Fake {
            token: "t".into(),
            assignment: Assignment::default(),
            ..Default::default()
        };
        let addr = serve(fake.clone(), None).await;
        let mut p = probe(addr, "t", None);
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(450)).await;
            stop.cancel();
        });
        p.session.run(&mut p.scheduler, shutdown).await.unwrap();
        let beats = *fake.heartbeats.lock().unwrap();
        // Welcome says every 100 ms.
        assert!((2..=5).contains(&beats), "{beats} heartbeats in 450 ms");
    }

    #[tokio::test]
    async fn drain_reconnects_after_retry_after() {
        let fake = Fake {
            token: "t".into(),
            assignment: assignment(),
            drain_next: Arc::new(Mutex::new(Some(300))),
            ..Default::default()
        };
        let addr = serve(fake.clone(), None).await;
        let mut p = probe(addr, "t", None);
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let f = fake.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(150)).await;
            assert_eq!(
                *f.sessions.lock().unwrap(),
                1,
                "no reconnect before retry_after"
            );
            tokio::time::sleep(Duration::from_millis(600)).await;
            stop.cancel();
        });
        p.session.run(&mut p.scheduler, shutdown).await.unwrap();
        assert_eq!(*fake.sessions.lock().unwrap(), 2);
        assert!(!fake.stored.lock().unwrap().is_empty());
    }
}
