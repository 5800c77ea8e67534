//! Results waiting to be acknowledged by the coordinator.
//!
//! Delivery is at-least-once: each result gets the next `seq` when it is produced,
//! stays here until an `Ack` covers it, and everything unacked is sent again after
//! a reconnect (the coordinator drops duplicates by (probe, seq)). Memory is
//! bounded: past `capacity` the oldest result is dropped, loudly, because a probe
//! that cannot reach its coordinator for days must not eat the volunteer's RAM.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use cutover_proto::v1::{CheckResult, Outcome, Target};

/// Default bound on unacked results kept in memory.
pub const DEFAULT_CAPACITY: usize = 100_000;

/// Failure to open the `--record-produced` file.
#[derive(Debug, thiserror::Error)]
#[error("cannot open record file {path}: {source}")]
pub struct RecordError {
    path: PathBuf,
    source: std::io::Error,
}

/// Unacked results in seq order plus the numbering state.
#[derive(Debug)]
pub struct Outbox {
    /// Highest seq handed out so far.
    last_produced: u64,
    /// Highest seq the coordinator acknowledged.
    acked: u64,
    /// Highest seq sent on the current stream; rewound on reconnect.
    sent: u64,
    pending: VecDeque<CheckResult>,
    capacity: usize,
    dropped: u64,
    record: Option<(PathBuf, File)>,
}

impl Outbox {
    /// An empty outbox holding at most `capacity` unacked results.
    pub fn new(capacity: usize) -> Self {
        Self {
            last_produced: 0,
            acked: 0,
            sent: 0,
            pending: VecDeque::new(),
            capacity: capacity.max(1),
            dropped: 0,
            record: None,
        }
    }

    /// Also append one line per produced result to `path` (testing aid).
    pub fn with_record_file(mut self, path: &Path) -> Result<Self, RecordError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| RecordError {
                path: path.to_owned(),
                source,
            })?;
        self.record = Some((path.to_owned(), file));
        Ok(self)
    }

    /// Numbers `result` and keeps it until acked. Returns its seq.
    pub fn push(&mut self, mut result: CheckResult) -> u64 {
        self.last_produced += 1;
        let seq = self.last_produced;
        result.seq = seq;
        self.record_line(&result);
        if self.pending.len() >= self.capacity
            && let Some(old) = self.pending.pop_front()
        {
            self.dropped += 1;
            // Rate-limited: a probe cut off for days would otherwise log every result.
            if self.dropped.is_power_of_two() || self.dropped.is_multiple_of(10_000) {
                tracing::warn!(
                    seq = old.seq,
                    check = %old.check_id,
                    dropped_total = self.dropped,
                    capacity = self.capacity,
                    "outbox full: dropping the oldest unacked results"
                );
            }
        }
        self.pending.push_back(result);
        seq
    }

    fn record_line(&mut self, r: &CheckResult) {
        let Some((path, file)) = &mut self.record else {
            return;
        };
        let outcome = match r.outcome() {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::HardFailure => "hard_failure",
            Outcome::Unspecified => "unspecified",
        };
        let target = Target::try_from(r.target)
            .unwrap_or(Target::Unspecified)
            .label();
        // One write per line, no buffering: tests read the file while we run.
        let line = format!("{}\t{}\t{}\t{}\n", r.seq, r.check_id, target, outcome);
        if let Err(e) = file.write_all(line.as_bytes()).and_then(|()| file.flush()) {
            tracing::warn!(path = %path.display(), error = %e, "cannot append to record file");
        }
    }

    /// The coordinator stored everything up to `seq`: forget it.
    pub fn ack(&mut self, seq: u64) {
        if seq <= self.acked {
            return;
        }
        self.acked = seq;
        while self.pending.front().is_some_and(|r| r.seq <= seq) {
            self.pending.pop_front();
        }
        self.sent = self.sent.max(seq);
    }

    /// A new stream was welcomed: continue numbering after what the coordinator
    /// already stored (a restarted probe has lost its own counter), drop what it
    /// has stored, and resend everything else from the start.
    pub fn on_welcome(&mut self, stored_seq: u64) {
        if stored_seq > self.last_produced {
            tracing::info!(
                own = self.last_produced,
                stored_seq,
                "coordinator has seen higher seqs; continuing after them"
            );
            self.last_produced = stored_seq;
        }
        self.ack(stored_seq);
        self.sent = self.acked;
    }

    /// Up to `max` results not yet sent on this stream, in seq order.
    pub fn next_batch(&mut self, max: usize) -> Vec<CheckResult> {
        let sent = self.sent;
        // `pending` is in seq order, so the unsent part starts at a partition point.
        let start = self.pending.partition_point(|r| r.seq <= sent);
        let batch: Vec<CheckResult> = self
            .pending
            .range(start..)
            .take(max.max(1))
            .cloned()
            .collect();
        if let Some(last) = batch.last() {
            self.sent = last.seq;
        }
        batch
    }

    /// Whether results are waiting to be sent on this stream.
    pub fn has_unsent(&self) -> bool {
        self.pending.back().is_some_and(|r| r.seq > self.sent)
    }

    /// Results produced but not yet acknowledged.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Highest seq produced so far.
    pub fn last_produced(&self) -> u64 {
        self.last_produced
    }

    /// Highest seq acknowledged so far.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Results dropped because the outbox was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// The outbox shared between the check tasks (producers) and the session
/// (consumer). Critical sections are short and never await, so a plain mutex is
/// right; [`SharedOutbox::wait`] wakes the session when results arrive.
#[derive(Debug)]
pub struct SharedOutbox {
    inner: std::sync::Mutex<Outbox>,
    notify: tokio::sync::Notify,
}

impl SharedOutbox {
    pub fn new(outbox: Outbox) -> Self {
        Self {
            inner: std::sync::Mutex::new(outbox),
            notify: tokio::sync::Notify::new(),
        }
    }

    /// Runs `f` with the outbox locked.
    pub fn with<R>(&self, f: impl FnOnce(&mut Outbox) -> R) -> R {
        // A panic while holding the lock leaves a consistent outbox (every
        // method finishes its updates before anything can panic), so a
        // poisoned lock is still safe to use.
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    /// Numbers and stores `result`, then wakes the session. Returns its seq.
    pub fn push(&self, result: CheckResult) -> u64 {
        let seq = self.with(|o| o.push(result));
        self.notify.notify_one();
        seq
    }

    /// Resolves after the next [`SharedOutbox::push`] (or at once if one
    /// happened since the last wait).
    pub async fn wait(&self) {
        self.notify.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(check: &str) -> CheckResult {
        CheckResult {
            check_id: check.into(),
            target: Target::New as i32,
            outcome: Outcome::Success as i32,
            ..Default::default()
        }
    }

    fn seqs(b: &[CheckResult]) -> Vec<u64> {
        b.iter().map(|r| r.seq).collect()
    }

    #[test]
    fn numbers_batches_acks_and_resends() {
        let mut o = Outbox::new(100);
        o.on_welcome(0);
        for _ in 0..5 {
            o.push(result("c"));
        }
        assert_eq!(seqs(&o.next_batch(2)), vec![1, 2]);
        assert_eq!(seqs(&o.next_batch(10)), vec![3, 4, 5]);
        assert!(o.next_batch(10).is_empty());
        o.ack(3);
        assert_eq!(o.pending(), 2);
        // Reconnect: everything unacked goes again, in order.
        o.on_welcome(3);
        assert!(o.has_unsent());
        assert_eq!(seqs(&o.next_batch(10)), vec![4, 5]);
        // A stale ack changes nothing.
        o.ack(1);
        assert_eq!(o.pending(), 2);
    }

    #[test]
    fn continues_after_stored_seq_of_a_forgetful_restart() {
        let mut o = Outbox::new(100);
        o.on_welcome(41);
        assert_eq!(o.push(result("c")), 42);
        assert_eq!(o.pending(), 1);
    }

    #[test]
    fn welcome_drops_what_the_coordinator_already_stored() {
        let mut o = Outbox::new(100);
        for _ in 0..4 {
            o.push(result("c"));
        }
        o.on_welcome(2);
        assert_eq!(seqs(&o.next_batch(10)), vec![3, 4]);
        assert_eq!(o.push(result("c")), 5);
    }

    #[test]
    fn bounded_drops_oldest_and_counts() {
        let mut o = Outbox::new(3);
        for _ in 0..5 {
            o.push(result("c"));
        }
        assert_eq!(o.pending(), 3);
        assert_eq!(o.dropped(), 2);
        assert_eq!(seqs(&o.next_batch(10)), vec![3, 4, 5]);
    }

    #[test]
    fn record_file_gets_one_line_per_result() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("produced.tsv");
        let mut o = Outbox::new(10).with_record_file(&path).unwrap();
        o.push(result("install-core"));
        let mut r = result("dns-www");
        r.target = Target::Dns as i32;
        r.outcome = Outcome::HardFailure as i32;
        o.push(r);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "1\tinstall-core\tnew\tsuccess\n2\tdns-www\tdns\thard_failure\n"
        );
    }
}
