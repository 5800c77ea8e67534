//! The single writer task: group-commits result batches into the store.
//!
//! Sessions send a [`WriteRequest`] and wait for its reply before acking, so
//! an `Ack` always means "committed" — a SIGKILL right after cannot lose it.
//! The writer takes everything queued at that moment (up to [`MAX_GROUP`]) into
//! one transaction, which is what keeps thousands of probes cheap: one
//! commit's cost is shared by every batch in it. Committed results then go
//! to the evidence task (windows and counters).

use std::sync::Arc;
use std::time::Instant;

use cutover_proto::v1;
use tokio::sync::{mpsc, oneshot};

use crate::metrics as m;
use crate::store::{BatchWrite, Store};

/// Most batches in one transaction.
pub const MAX_GROUP: usize = 512;

/// Queue length in front of the writer; sessions wait when it is full.
const QUEUE: usize = 4096;

/// Results that were committed, on their way to the windows.
#[derive(Debug)]
pub struct Committed {
    /// The probe.
    pub probe: Arc<str>,
    /// Its enrolled region.
    pub region: Arc<str>,
    /// When the batch arrived (server clock).
    pub received_unix_ms: i64,
    /// Server clock minus probe clock at Hello, to place results in time.
    pub skew_ms: i64,
    /// The new results.
    pub results: Vec<v1::CheckResult>,
}

/// One probe batch to commit.
#[derive(Debug)]
pub struct WriteRequest {
    /// What to store.
    pub batch: BatchWrite,
    /// The same results decoded, forwarded to the windows once committed.
    pub committed: Committed,
    /// Told the outcome once the transaction is done.
    pub done: oneshot::Sender<Result<(), String>>,
}

/// Handle to submit batches.
#[derive(Debug, Clone)]
pub struct Writer {
    tx: mpsc::Sender<WriteRequest>,
}

/// Why a write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The writer has stopped (shutdown).
    #[error("the storage writer has stopped")]
    Stopped,
    /// The transaction failed.
    #[error("storing results failed: {0}")]
    Failed(String),
}

impl Writer {
    /// Commits one batch; returns once it is durable.
    pub async fn write(&self, batch: BatchWrite, committed: Committed) -> Result<(), WriteError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(WriteRequest {
                batch,
                committed,
                done,
            })
            .await
            .map_err(|_| WriteError::Stopped)?;
        match wait.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(WriteError::Failed(e)),
            Err(_) => Err(WriteError::Stopped),
        }
    }
}

/// Starts the writer. It ends when every [`Writer`] clone is dropped and the queue is empty.
pub fn spawn(
    store: Arc<dyn Store>,
    evidence: mpsc::Sender<Committed>,
) -> (Writer, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<WriteRequest>(QUEUE);
    let task = tokio::spawn(async move {
        let mut group = Vec::with_capacity(MAX_GROUP);
        while rx.recv_many(&mut group, MAX_GROUP).await > 0 {
            let requests = std::mem::take(&mut group);
            let store = store.clone();
            let outcome =
                tokio::task::spawn_blocking(move || commit_group(&*store, requests)).await;
            let done = match outcome {
                Ok(done) => done,
                Err(e) => {
                    // The blocking task panicked: the requests (and their reply
                    // channels) are gone, so those sessions see `Stopped` and the
                    // probes resend. Keep serving the others.
                    tracing::error!(error = %e, "storage writer task failed");
                    continue;
                }
            };
            for ((committed, reply), result) in done {
                let ok = result.is_ok();
                let _ = reply.send(result);
                if ok && !committed.results.is_empty() {
                    // Backpressure: if the windows fall behind, the writer waits.
                    let _ = evidence.send(committed).await;
                }
            }
        }
    });
    (Writer { tx }, task)
}

/// What is left of a request once its batch has gone to the store.
type Pending = (Committed, oneshot::Sender<Result<(), String>>);
type Reply = (Pending, Result<(), String>);

fn commit_group(store: &dyn Store, requests: Vec<WriteRequest>) -> Vec<Reply> {
    let started = Instant::now();
    // Split rather than clone: the payloads are most of the bytes.
    let (batches, pending): (Vec<BatchWrite>, Vec<Pending>) = requests
        .into_iter()
        .map(|r| (r.batch, (r.committed, r.done)))
        .unzip();
    let result = store.commit(&batches);
    metrics::histogram!(m::STORE_COMMIT_DURATION).record(started.elapsed().as_secs_f64());
    metrics::histogram!(m::STORE_COMMIT_BATCHES).record(batches.len() as f64);
    match result {
        Ok(()) => pending.into_iter().map(|p| (p, Ok(()))).collect(),
        Err(e) if batches.len() == 1 => {
            tracing::error!(probe = %batches[0].probe_id, error = %e, "commit failed");
            pending
                .into_iter()
                .map(|p| (p, Err(e.to_string())))
                .collect()
        }
        Err(e) => {
            // One bad batch must not fail everyone else's: retry them one by one.
            tracing::warn!(error = %e, batches = batches.len(), "group commit failed; retrying batches one by one");
            batches
                .iter()
                .zip(pending)
                .map(|(b, p)| {
                    let res = store.commit(std::slice::from_ref(b)).map_err(|e| {
                        tracing::error!(probe = %b.probe_id, error = %e, "commit failed");
                        e.to_string()
                    });
                    (p, res)
                })
                .collect()
        }
    }
}
