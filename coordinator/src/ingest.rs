//! `ProbeService.Session`: authenticates a probe, sends it its assignment,
//! and turns its result batches into committed, acknowledged evidence.
//!
//! Per batch: results at or below the probe's stored seq are duplicates
//! (dropped and counted), results naming unknown checks are rejected (counted;
//! the rest is stored), the remainder goes to the single writer task, and only
//! after the commit does the probe get `Ack{seq}`. A session processes one batch
//! at a time, so its memory is bounded and its seqs are stored in order.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cutover_proto::v1::{self, coordinator_message::Msg as Out, probe_message::Msg as In};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::auth;
use crate::evidence::now_ms;
use crate::metrics::{self as m, reject};
use crate::registry::{Registration, Registry};
use crate::store::{BatchWrite, ProbeRecord, Store, StoreError};
use crate::writer::{Committed, WriteError, Writer};

/// Largest encoded message accepted from a probe.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
/// How long a new stream may take to send Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(30);
/// Shortest silence after which a session is considered dead.
const MIN_IDLE: Duration = Duration::from_secs(30);
/// Probes are asked to wait this long before reconnecting after a Drain.
const DRAIN_RETRY_MS: u32 = 5_000;

/// Why a probe's credentials were refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthFailure {
    /// No bearer token on the call.
    #[error(
        "missing `authorization: Bearer <token>` metadata: start the probe with the --token printed by `cutover probe enrol`"
    )]
    Missing,
    /// Token not known.
    #[error(
        "unknown probe token: enrol the probe with `cutover probe enrol --region R` and use the token it prints"
    )]
    Unknown,
    /// Token of a revoked probe.
    #[error("probe {0} has been revoked: ask the operator for a new token (`cutover probe enrol`)")]
    Revoked(String),
    /// The registry could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a session ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The first message was not Hello.
    #[error("the first message of a session must be Hello")]
    NotHello,
    /// No Hello in time.
    #[error("no Hello within {}s of opening the session", HELLO_TIMEOUT.as_secs())]
    HelloTimeout,
    /// A message that makes no sense.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// Batch over the limit.
    #[error(
        "result batch has {got} results, more than the {max} announced in Welcome.max_batch_results; send smaller batches"
    )]
    Oversized {
        /// Results in the batch.
        got: usize,
        /// The limit.
        max: u32,
    },
    /// A newer session of the same probe took over.
    #[error("session replaced by a newer session of the same probe")]
    Replaced,
    /// The probe was revoked during the session.
    #[error("this probe has been revoked")]
    Revoked,
    /// Storing failed; the probe should resend.
    #[error("could not store results ({0}); they were not acknowledged, resend them")]
    Storage(String),
    /// The coordinator is stopping.
    #[error("coordinator is shutting down")]
    Stopped,
    /// Nothing received for too long.
    #[error("no message for {}s; a probe must send a Heartbeat every Welcome.heartbeat_interval_ms", .0.as_secs())]
    Idle(Duration),
    /// The stream itself failed (decode error, message too large, reset).
    #[error("stream error: {}", .0.message())]
    Transport(Status),
}

/// Shared state of the probe service.
pub struct IngestState {
    /// Probe registry and batches.
    pub store: Arc<dyn Store>,
    /// The writer task.
    pub writer: Writer,
    /// Current assignment; a change is pushed to every session.
    pub assignment: watch::Receiver<Arc<v1::Assignment>>,
    /// Live probes.
    pub registry: Arc<Registry>,
    /// Asked of probes in Welcome.
    pub heartbeat_interval_ms: u32,
    /// Largest batch accepted, in results.
    pub max_batch_results: u32,
    /// Cancelled on shutdown: sessions send Drain and end.
    pub shutdown: CancellationToken,
}

/// The `ProbeService` implementation.
#[derive(Clone)]
pub struct ProbeApi {
    state: Arc<IngestState>,
}

impl ProbeApi {
    /// Wraps the shared state.
    pub fn new(state: Arc<IngestState>) -> Self {
        Self { state }
    }

    async fn authenticate(
        &self,
        md: &tonic::metadata::MetadataMap,
    ) -> Result<ProbeRecord, AuthFailure> {
        let token = md
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(auth::bearer)
            .ok_or(AuthFailure::Missing)?;
        let hash = auth::hash_token(token);
        let store = self.state.store.clone();
        let found = tokio::task::spawn_blocking(move || store.probe_by_token(&hash))
            .await
            .map_err(|_| AuthFailure::Store(StoreError::Poisoned))??;
        match found {
            None => Err(AuthFailure::Unknown),
            Some(p) if p.revoked_unix_ms.is_some() => Err(AuthFailure::Revoked(p.id)),
            Some(p) => Ok(p),
        }
    }
}

#[tonic::async_trait]
impl v1::probe_service_server::ProbeService for ProbeApi {
    type SessionStream = ReceiverStream<Result<v1::CoordinatorMessage, Status>>;

    async fn session(
        &self,
        request: Request<Streaming<v1::ProbeMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let probe = match self.authenticate(request.metadata()).await {
            Ok(p) => p,
            Err(e) => {
                let reason = match &e {
                    AuthFailure::Missing => reject::MISSING_TOKEN,
                    AuthFailure::Unknown => reject::BAD_TOKEN,
                    AuthFailure::Revoked(_) => reject::REVOKED,
                    AuthFailure::Store(_) => "store_error",
                };
                m::rejected(reason);
                metrics::counter!(m::PROBE_SESSIONS, m::label::OUTCOME => "rejected").increment(1);
                tracing::info!(reason, "probe session refused");
                return Err(e.into());
            }
        };
        let peer = request.remote_addr();
        let inbound = request.into_inner();
        // Small: the session waits for each commit, so little queues here.
        let (tx, rx) = mpsc::channel(8);
        let state = self.state.clone();
        tokio::spawn(async move { run_session(state, probe, peer, inbound, tx).await });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

type Outbox = mpsc::Sender<Result<v1::CoordinatorMessage, Status>>;

fn out(msg: Out) -> Result<v1::CoordinatorMessage, Status> {
    Ok(v1::CoordinatorMessage { msg: Some(msg) })
}

/// Sorts a stream error: a message we refused (counted under its reason) or a
/// probe that went away (not the probe's fault, not counted as a rejection).
fn stream_error(status: Status) -> Result<Ended, SessionError> {
    match status.code() {
        // tonic's decoder: "decoded message length too large".
        tonic::Code::OutOfRange => {
            m::rejected(reject::OVERSIZED);
            Err(SessionError::Transport(status))
        }
        // Undecodable protobuf, bad compression flag.
        tonic::Code::Internal | tonic::Code::InvalidArgument => {
            m::rejected(reject::MALFORMED);
            Err(SessionError::Transport(status))
        }
        // Reset, cancelled, connection lost.
        _ => Ok(Ended::Lost),
    }
}

/// How a session ended without error.
enum Ended {
    /// The probe closed the stream.
    Closed,
    /// Shutdown: Drain was sent.
    Drained,
    /// The connection broke (reset, probe killed, network).
    Lost,
}

async fn run_session(
    state: Arc<IngestState>,
    probe: ProbeRecord,
    peer: Option<SocketAddr>,
    mut inbound: Streaming<v1::ProbeMessage>,
    tx: Outbox,
) {
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
        Ok(Ok(Some(v1::ProbeMessage {
            msg: Some(In::Hello(h)),
        }))) => h,
        Ok(Ok(Some(_))) => {
            m::rejected(reject::NOT_HELLO);
            return finish(&tx, Err(SessionError::NotHello)).await;
        }
        Ok(Ok(None)) => return finish(&tx, Ok(Ended::Closed)).await,
        Ok(Err(status)) => return finish(&tx, stream_error(status)).await,
        Err(_) => return finish(&tx, Err(SessionError::HelloTimeout)).await,
    };
    if hello.region != probe.region && !hello.region.is_empty() {
        tracing::warn!(probe = %probe.id, said = %hello.region, enrolled = %probe.region, "probe claims another region; the enrolled one is used");
    }
    let peer = peer.map(|p| p.to_string()).unwrap_or_default();
    let reg = state.registry.begin(
        &probe.id,
        &probe.region,
        &hello.version,
        &peer,
        &state.shutdown,
        now_ms(),
    );
    tracing::info!(probe = %probe.id, region = %probe.region, version = %hello.version, %peer, "probe connected");
    let result = session(&state, &probe, &hello, &reg, &mut inbound, &tx).await;
    if state.registry.end(&reg, now_ms()) {
        let store = state.store.clone();
        let id = probe.id.clone();
        let now = now_ms();
        // Best effort: last_seen is informational.
        let _ = tokio::task::spawn_blocking(move || store.touch(&id, None, now)).await;
    }
    match &result {
        Ok(_) => tracing::info!(probe = %probe.id, "probe disconnected"),
        Err(e) => tracing::info!(probe = %probe.id, error = %e, "probe session ended"),
    }
    finish(&tx, result).await;
}

async fn finish(tx: &Outbox, result: Result<Ended, SessionError>) {
    let outcome = match &result {
        Ok(Ended::Closed) => "closed",
        Ok(Ended::Drained) => "drained",
        Ok(Ended::Lost) => "lost",
        Err(SessionError::Replaced) => "replaced",
        Err(_) => "error",
    };
    metrics::counter!(m::PROBE_SESSIONS, m::label::OUTCOME => outcome).increment(1);
    if let Err(e) = result {
        let _ = tx.send(Err(e.into())).await;
    }
}

async fn session(
    state: &IngestState,
    probe: &ProbeRecord,
    hello: &v1::Hello,
    reg: &Registration,
    inbound: &mut Streaming<v1::ProbeMessage>,
    tx: &Outbox,
) -> Result<Ended, SessionError> {
    // Wait for an older session of this probe to finish its in-flight commit.
    let _lease = tokio::select! {
        lease = state.registry.lease(reg) => lease,
        () = reg.cancel.cancelled() => return Err(cancelled(state)),
    };
    let store = state.store.clone();
    let id = probe.id.clone();
    let version = hello.version.clone();
    let now = now_ms();
    let record = tokio::task::spawn_blocking(move || {
        store.touch(&id, Some(&version), now)?;
        store.probe(&id)
    })
    .await
    .map_err(|e| SessionError::Storage(e.to_string()))?
    .map_err(|e| SessionError::Storage(e.to_string()))?
    .ok_or(SessionError::Revoked)?;
    if record.revoked_unix_ms.is_some() {
        return Err(SessionError::Revoked);
    }
    let mut stored_seq = record.stored_seq;
    if hello.last_produced_seq < stored_seq {
        // Numbering restarted (a probe restart without its spool); Welcome tells
        // it to continue after stored_seq, otherwise its results read as duplicates.
        tracing::info!(probe = %probe.id, last_produced = hello.last_produced_seq, stored_seq, "probe restarted its numbering below the stored seq");
    }
    let skew_ms = if hello.clock_unix_ms > 0 {
        now - hello.clock_unix_ms
    } else {
        0
    };
    if skew_ms.abs() > 5_000 {
        tracing::warn!(probe = %probe.id, skew_ms, "probe clock differs from the coordinator's; correcting result times");
    }

    // A probe that stops reading must not pin this session (and its lease):
    // every send gives way to cancellation. Nothing is lost — an unsent Ack
    // only means the probe resends, and the results are deduplicated.
    let cancel = &reg.cancel;
    let send = |msg| async move {
        tokio::select! {
            sent = tx.send(out(msg)) => sent.is_ok(),
            () = cancel.cancelled() => false,
        }
    };
    let welcome = v1::Welcome {
        probe_id: probe.id.clone(),
        region: probe.region.clone(),
        stored_seq,
        heartbeat_interval_ms: state.heartbeat_interval_ms,
        max_batch_results: state.max_batch_results,
    };
    let mut assignment = state.assignment.clone();
    let current = assignment.borrow_and_update().clone();
    let mut check_ids: HashSet<String> = current.checks.iter().map(|c| c.id.clone()).collect();
    if !send(Out::Welcome(welcome)).await || !send(Out::Assignment((*current).clone())).await {
        return Ok(Ended::Closed);
    }

    let region: Arc<str> = Arc::from(probe.region.as_str());
    let probe_id: Arc<str> = Arc::from(probe.id.as_str());
    // A probe that stops talking (no heartbeat) is not "connected", whatever TCP thinks.
    let idle = (Duration::from_millis(u64::from(state.heartbeat_interval_ms)) * 3).max(MIN_IDLE);
    let mut deadline = tokio::time::Instant::now() + idle;
    loop {
        let msg = tokio::select! {
            biased;
            () = tokio::time::sleep_until(deadline) => return Err(SessionError::Idle(idle)),
            () = reg.cancel.cancelled() => {
                if state.shutdown.is_cancelled() {
                    let drain = out(Out::Drain(v1::Drain {
                        reason: "coordinator shutting down".into(),
                        retry_after_ms: DRAIN_RETRY_MS,
                    }));
                    let _ = tokio::time::timeout(Duration::from_secs(1), tx.send(drain)).await;
                    return Ok(Ended::Drained);
                }
                return Err(replaced_or_revoked(state, &probe.id).await);
            }
            changed = assignment.changed() => {
                if changed.is_ok() {
                    let next = assignment.borrow_and_update().clone();
                    check_ids = next.checks.iter().map(|c| c.id.clone()).collect();
                    if !send(Out::Assignment((*next).clone())).await {
                        return Ok(Ended::Closed);
                    }
                }
                continue;
            }
            msg = inbound.message() => msg,
        };
        let msg = match msg {
            Ok(Some(m)) => m,
            Ok(None) => return Ok(Ended::Closed),
            Err(status) => return stream_error(status),
        };
        let now = now_ms();
        deadline = tokio::time::Instant::now() + idle;
        state.registry.seen(reg, now);
        match msg.msg {
            Some(In::Heartbeat(_)) => {}
            Some(In::Results(batch)) => {
                let n = batch.results.len();
                if n > state.max_batch_results as usize {
                    m::rejected(reject::OVERSIZED);
                    return Err(SessionError::Oversized {
                        got: n,
                        max: state.max_batch_results,
                    });
                }
                let filtered = filter(batch, stored_seq, &check_ids);
                if filtered.seq_through > stored_seq {
                    let payload = encode_results(&filtered.accepted);
                    let write = BatchWrite {
                        probe_id: probe.id.clone(),
                        first_seq: filtered.accepted.first().map_or(0, |r| r.seq),
                        last_seq: filtered.accepted.last().map_or(0, |r| r.seq),
                        seq_through: filtered.seq_through,
                        received_unix_ms: now,
                        payload,
                    };
                    let committed = Committed {
                        probe: probe_id.clone(),
                        region: region.clone(),
                        received_unix_ms: now,
                        skew_ms,
                        results: filtered.accepted,
                    };
                    // Deliberately not raced against cancellation: the lease must be
                    // held until this commit's outcome is known.
                    state
                        .writer
                        .write(write, committed)
                        .await
                        .map_err(|e| match e {
                            WriteError::Stopped => SessionError::Stopped,
                            WriteError::Failed(msg) => SessionError::Storage(msg),
                        })?;
                    stored_seq = filtered.seq_through;
                }
                if !send(Out::Ack(v1::Ack { seq: stored_seq })).await {
                    return Ok(Ended::Closed);
                }
            }
            Some(In::Hello(_)) => {
                m::rejected(reject::MALFORMED);
                return Err(SessionError::Malformed(
                    "Hello sent twice in one session".into(),
                ));
            }
            None => {
                m::rejected(reject::MALFORMED);
                return Err(SessionError::Malformed("empty ProbeMessage".into()));
            }
        }
    }
}

/// Encodes results as a `cutover.v1.ResultBatch` (empty for no results)
/// without copying them into one first.
pub fn encode_results(results: &[v1::CheckResult]) -> Vec<u8> {
    // `ResultBatch.results` is field 1, repeated.
    let mut buf = Vec::with_capacity(prost::encoding::message::encoded_len_repeated(1, results));
    for r in results {
        prost::encoding::message::encode(1, r, &mut buf);
    }
    buf
}

/// A session cancelled other than by shutdown was either replaced or revoked;
/// the probe should hear which, since only one of them is worth retrying.
async fn replaced_or_revoked(state: &IngestState, probe_id: &str) -> SessionError {
    let store = state.store.clone();
    let id = probe_id.to_string();
    match tokio::task::spawn_blocking(move || store.probe(&id)).await {
        Ok(Ok(Some(p))) if p.revoked_unix_ms.is_none() => SessionError::Replaced,
        Ok(Ok(_)) => SessionError::Revoked,
        _ => SessionError::Replaced,
    }
}

fn cancelled(state: &IngestState) -> SessionError {
    if state.shutdown.is_cancelled() {
        SessionError::Stopped
    } else {
        SessionError::Replaced
    }
}

/// The outcome of deduplicating and validating one batch.
#[derive(Debug, Default)]
pub struct Filtered {
    /// New, valid results in seq order.
    pub accepted: Vec<v1::CheckResult>,
    /// The probe's stored seq after this batch: the highest seq processed,
    /// rejected ones included (a rejected result is answered, not retried).
    pub seq_through: u64,
    /// Results dropped as already stored.
    pub duplicates: u64,
    /// Results naming a check not in the assignment.
    pub unknown_check: u64,
    /// Results without a seq or target.
    pub malformed: u64,
}

/// Deduplicates a batch against `stored_seq` and drops invalid results, counting each.
pub fn filter(batch: v1::ResultBatch, stored_seq: u64, check_ids: &HashSet<String>) -> Filtered {
    let mut results = batch.results;
    results.sort_by_key(|r| r.seq);
    let mut f = Filtered {
        seq_through: stored_seq,
        ..Default::default()
    };
    for r in results {
        if r.seq == 0 {
            f.malformed += 1;
            continue;
        }
        if r.seq <= f.seq_through {
            // At or below the stored seq, or repeated within the batch.
            f.duplicates += 1;
            continue;
        }
        f.seq_through = r.seq;
        if !check_ids.contains(&r.check_id) {
            f.unknown_check += 1;
        } else if r.target() == v1::Target::Unspecified {
            f.malformed += 1;
        } else {
            f.accepted.push(r);
        }
    }
    if f.duplicates > 0 {
        metrics::counter!(m::RESULTS_DUPLICATE).increment(f.duplicates);
    }
    if f.unknown_check > 0 {
        metrics::counter!(m::REJECTED_MESSAGES, m::label::OUTCOME => reject::UNKNOWN_CHECK)
            .increment(f.unknown_check);
    }
    if f.malformed > 0 {
        metrics::counter!(m::REJECTED_MESSAGES, m::label::OUTCOME => reject::MALFORMED)
            .increment(f.malformed);
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn r(seq: u64, check: &str) -> v1::CheckResult {
        v1::CheckResult {
            seq,
            check_id: check.into(),
            target: v1::Target::New as i32,
            ..Default::default()
        }
    }

    #[test]
    fn filter_dedupes_and_rejects() {
        let ids: HashSet<String> = ["a".to_string()].into();
        let batch = v1::ResultBatch {
            results: vec![
                r(7, "a"),
                r(5, "a"),
                r(6, "zzz"),
                r(3, "a"),
                r(7, "a"),
                r(0, "a"),
                r(8, "a"),
            ],
        };
        let f = filter(batch, 4, &ids);
        let seqs: Vec<u64> = f.accepted.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, vec![5, 7, 8]);
        assert_eq!(f.seq_through, 8);
        assert_eq!((f.duplicates, f.unknown_check, f.malformed), (2, 1, 1));
    }

    #[test]
    fn encoded_results_are_a_result_batch() {
        let results = vec![r(1, "a"), r(2, "b")];
        let bytes = encode_results(&results);
        assert_eq!(
            bytes,
            v1::ResultBatch {
                results: results.clone()
            }
            .encode_to_vec()
        );
        assert_eq!(
            v1::ResultBatch::decode(bytes.as_slice()).unwrap().results,
            results
        );
        assert!(encode_results(&[]).is_empty());
    }

    #[test]
    fn all_duplicates_leave_seq_alone() {
        let ids: HashSet<String> = ["a".to_string()].into();
        let f = filter(
            v1::ResultBatch {
                results: vec![r(1, "a"), r(2, "a")],
            },
            2,
            &ids,
        );
        assert!(f.accepted.is_empty());
        assert_eq!(f.seq_through, 2);
        assert_eq!(f.duplicates, 2);
    }
}
