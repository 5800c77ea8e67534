//! The plan journal: every plan run and every transition of it, committed
//! *before* the side effect it leads to (`intent`) and *after* it (`outcome`).
//!
//! The engine ([`crate::engine`]) rebuilds where a run stands from this alone,
//! so a coordinator killed at any moment resumes where it was. Storage sits
//! behind the [`Journal`] trait: SQLite (WAL, its own tables in the shared
//! `cutover.db`, its own connection) is the embedded default; a PostgreSQL
//! backend with a leader lease may follow (DESIGN §9). Nothing here assumes
//! this process is the only one that ever wrote the journal: sequence numbers
//! are assigned inside the inserting transaction, and the run's state changes
//! in the same transaction as the entry that explains it.
//!
//! Tables: `plan_runs(id, plan_path, plan_sha256, plan_text, direction, state,
//! forward_blocked, created_unix_ms, updated_unix_ms)` and
//! `journal(run_id, seq, unix_ms, step_id, phase, detail, output)`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

/// Which runbook a run is executing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// `[[steps]]`.
    Forward,
    /// `[[fallback]]`.
    Fallback,
}

impl Direction {
    /// `forward` / `fallback`, as stored.
    pub fn label(self) -> &'static str {
        match self {
            Self::Forward => "forward",
            Self::Fallback => "fallback",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "forward" => Some(Self::Forward),
            "fallback" => Some(Self::Fallback),
            _ => None,
        }
    }
}

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// Executing steps.
    Running,
    /// Stopped by the operator or by a failing step (`on_failure = "pause"`); `resume` continues.
    Paused,
    /// Waiting for `cutover approve` (an `approve` step, a `manual` DNS change, or an
    /// `exec once` step whose outcome is unknown).
    WaitingApproval,
    /// Every forward step succeeded.
    Done,
    /// A step failed with `on_failure = "abort"`.
    Failed,
    /// The operator aborted it.
    Aborted,
    /// The fallback runbook ran to its end.
    FellBack,
}

impl RunState {
    /// As stored and shown.
    pub fn label(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Paused => "paused",
            Self::WaitingApproval => "waiting_approval",
            Self::Done => "done",
            Self::Failed => "failed",
            Self::Aborted => "aborted",
            Self::FellBack => "fell_back",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "running" => Self::Running,
            "paused" => Self::Paused,
            "waiting_approval" => Self::WaitingApproval,
            "done" => Self::Done,
            "failed" => Self::Failed,
            "aborted" => Self::Aborted,
            "fell_back" => Self::FellBack,
            _ => return None,
        })
    }

    /// True when nothing more will run.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            Self::Done | Self::Failed | Self::Aborted | Self::FellBack
        )
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// What kind of transition an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// About to do a step's side effect (committed before it).
    Intent,
    /// What the step's side effect came to (committed after it).
    Outcome,
    /// Anything else: operator actions, progress, questions, state changes.
    Note,
}

impl Phase {
    /// As stored.
    pub fn label(self) -> &'static str {
        match self {
            Self::Intent => "intent",
            Self::Outcome => "outcome",
            Self::Note => "note",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "intent" => Some(Self::Intent),
            "outcome" => Some(Self::Outcome),
            "note" => Some(Self::Note),
            _ => None,
        }
    }
}

/// One plan run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRecord {
    /// Increasing id.
    pub id: u64,
    /// The plan file as given to `cutover start`.
    pub plan_path: PathBuf,
    /// Hex SHA-256 of `plan_text`.
    pub plan_sha256: String,
    /// The exact plan text the run executes (a later edit of the file does not change a run).
    pub plan_text: String,
    /// Runbook being executed.
    pub direction: Direction,
    /// Where it stands.
    pub state: RunState,
    /// The run fell back; a new forward start needs the operator's `--force`.
    pub forward_blocked: bool,
    /// Created.
    pub created_unix_ms: i64,
    /// Last state change.
    pub updated_unix_ms: i64,
}

/// A journal entry to append.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEntry {
    /// The step concerned ("" for run-level notes).
    pub step_id: String,
    /// Intent, outcome or note.
    pub phase: Phase,
    /// Structured detail (JSON object).
    pub detail: serde_json::Value,
    /// Captured command output (bounded by the engine), "" if none.
    pub output: String,
}

impl NewEntry {
    /// An entry without output.
    pub fn new(step_id: &str, phase: Phase, detail: serde_json::Value) -> Self {
        Self {
            step_id: step_id.to_string(),
            phase,
            detail,
            output: String::new(),
        }
    }
}

/// A stored journal entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The run.
    pub run_id: u64,
    /// 1, 2, … within the run.
    pub seq: u64,
    /// When it was committed.
    pub unix_ms: i64,
    /// The step concerned ("" for run-level notes).
    pub step_id: String,
    /// Intent, outcome or note.
    pub phase: Phase,
    /// Structured detail.
    pub detail: serde_json::Value,
    /// Captured output.
    pub output: String,
}

impl Entry {
    /// `detail[key]` as a string ("" if absent).
    pub fn str(&self, key: &str) -> &str {
        self.detail.get(key).and_then(|v| v.as_str()).unwrap_or("")
    }
}

/// A change to a run committed together with an entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunUpdate {
    /// New state.
    pub state: Option<RunState>,
    /// New direction.
    pub direction: Option<Direction>,
    /// New forward-blocked flag.
    pub forward_blocked: Option<bool>,
}

impl RunUpdate {
    /// Only the state changes.
    pub fn state(s: RunState) -> Self {
        Self {
            state: Some(s),
            ..Self::default()
        }
    }
}

/// Journal failures, naming what was being done.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// SQLite failed.
    #[error("journal: {what}: {source}")]
    Sqlite {
        /// What was being done.
        what: &'static str,
        /// Why.
        source: rusqlite::Error,
    },
    /// A row holds a value this version does not understand.
    #[error("journal: run {run}: unreadable {what} {value:?}")]
    Corrupt {
        /// The run.
        run: u64,
        /// Which column.
        what: &'static str,
        /// The value.
        value: String,
    },
    /// No such run.
    #[error("journal: no plan run with id {0}")]
    NoRun(u64),
    /// The lock was poisoned by a panic elsewhere.
    #[error("journal: connection lock poisoned")]
    Poisoned,
}

fn sql(what: &'static str) -> impl FnOnce(rusqlite::Error) -> JournalError {
    move |source| JournalError::Sqlite { what, source }
}

/// Durable record of plan runs. Methods are blocking; async callers use `spawn_blocking`.
pub trait Journal: Send + Sync {
    /// Creates a run in state `running`, direction forward, with a first note.
    fn create_run(
        &self,
        plan_path: &Path,
        plan_text: &str,
        now_ms: i64,
        note: serde_json::Value,
    ) -> Result<RunRecord, JournalError>;
    /// One run.
    fn run(&self, id: u64) -> Result<Option<RunRecord>, JournalError>;
    /// Every run, oldest first.
    fn runs(&self) -> Result<Vec<RunRecord>, JournalError>;
    /// The newest run, if any.
    fn latest(&self) -> Result<Option<RunRecord>, JournalError>;
    /// Appends an entry (seq assigned here) and applies `update` to the run, atomically.
    fn append(
        &self,
        run: u64,
        entry: NewEntry,
        update: RunUpdate,
        now_ms: i64,
    ) -> Result<Entry, JournalError>;
    /// Every entry of a run, in seq order.
    fn entries(&self, run: u64) -> Result<Vec<Entry>, JournalError> {
        self.entries_after(run, 0)
    }
    /// The entries of a run with a seq above `after`, in seq order (the guard
    /// watcher reads only what is new each tick).
    fn entries_after(&self, run: u64, after: u64) -> Result<Vec<Entry>, JournalError>;
}

/// Hex SHA-256 of a plan text.
pub fn sha256_hex(text: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The SQLite journal: its own connection to `data_dir/cutover.db`.
pub struct SqliteJournal {
    conn: Mutex<Connection>,
}

/// The database file shared with [`crate::store`].
pub const DB_FILE: &str = "cutover.db";

impl SqliteJournal {
    /// Opens (and creates the tables in) `data_dir/cutover.db`.
    pub fn open(data_dir: &Path) -> Result<Self, JournalError> {
        let conn = Connection::open(data_dir.join(DB_FILE)).map_err(sql("open"))?;
        Self::init(conn)
    }

    /// An in-memory journal, for tests.
    pub fn in_memory() -> Result<Self, JournalError> {
        Self::init(Connection::open_in_memory().map_err(sql("open"))?)
    }

    fn init(conn: Connection) -> Result<Self, JournalError> {
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(sql("set busy timeout"))?;
        // WAL: the ingest writer and the journal write the same file concurrently.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql("enable WAL"))?;
        // Every transition must survive power loss, not just a process kill.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sql("set synchronous"))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS plan_runs (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 plan_path TEXT NOT NULL,
                 plan_sha256 TEXT NOT NULL,
                 plan_text TEXT NOT NULL,
                 direction TEXT NOT NULL,
                 state TEXT NOT NULL,
                 forward_blocked INTEGER NOT NULL DEFAULT 0,
                 created_unix_ms INTEGER NOT NULL,
                 updated_unix_ms INTEGER NOT NULL
             );
             CREATE TABLE IF NOT EXISTS journal (
                 run_id INTEGER NOT NULL REFERENCES plan_runs(id),
                 seq INTEGER NOT NULL,
                 unix_ms INTEGER NOT NULL,
                 step_id TEXT NOT NULL,
                 phase TEXT NOT NULL,
                 detail TEXT NOT NULL,
                 output TEXT NOT NULL,
                 PRIMARY KEY (run_id, seq)
             );",
        )
        .map_err(sql("create tables"))?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> Result<std::sync::MutexGuard<'_, Connection>, JournalError> {
        self.conn.lock().map_err(|_| JournalError::Poisoned)
    }
}

fn run_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawRun> {
    Ok(RawRun {
        id: row.get(0)?,
        plan_path: row.get(1)?,
        plan_sha256: row.get(2)?,
        plan_text: row.get(3)?,
        direction: row.get(4)?,
        state: row.get(5)?,
        forward_blocked: row.get(6)?,
        created_unix_ms: row.get(7)?,
        updated_unix_ms: row.get(8)?,
    })
}

struct RawRun {
    id: i64,
    plan_path: String,
    plan_sha256: String,
    plan_text: String,
    direction: String,
    state: String,
    forward_blocked: bool,
    created_unix_ms: i64,
    updated_unix_ms: i64,
}

impl RawRun {
    fn cook(self) -> Result<RunRecord, JournalError> {
        let run = self.id as u64;
        let direction = Direction::parse(&self.direction).ok_or(JournalError::Corrupt {
            run,
            what: "direction",
            value: self.direction.clone(),
        })?;
        let state = RunState::parse(&self.state).ok_or(JournalError::Corrupt {
            run,
            what: "state",
            value: self.state.clone(),
        })?;
        Ok(RunRecord {
            id: run,
            plan_path: PathBuf::from(self.plan_path),
            plan_sha256: self.plan_sha256,
            plan_text: self.plan_text,
            direction,
            state,
            forward_blocked: self.forward_blocked,
            created_unix_ms: self.created_unix_ms,
            updated_unix_ms: self.updated_unix_ms,
        })
    }
}

const RUN_COLUMNS: &str = "id, plan_path, plan_sha256, plan_text, direction, state, \
                           forward_blocked, created_unix_ms, updated_unix_ms";

fn insert_entry(
    tx: &rusqlite::Transaction<'_>,
    run: u64,
    entry: NewEntry,
    now_ms: i64,
) -> Result<Entry, JournalError> {
    // Assigned inside the transaction: another writer (a standby coordinator, a
    // second process) can never take the same seq.
    let seq: i64 = tx
        .query_row(
            "SELECT COALESCE(MAX(seq), 0) + 1 FROM journal WHERE run_id = ?1",
            [run as i64],
            |r| r.get(0),
        )
        .map_err(sql("number a journal entry"))?;
    tx.execute(
        "INSERT INTO journal (run_id, seq, unix_ms, step_id, phase, detail, output)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            run as i64,
            seq,
            now_ms,
            entry.step_id,
            entry.phase.label(),
            entry.detail.to_string(),
            entry.output
        ],
    )
    .map_err(sql("append a journal entry"))?;
    Ok(Entry {
        run_id: run,
        seq: seq as u64,
        unix_ms: now_ms,
        step_id: entry.step_id,
        phase: entry.phase,
        detail: entry.detail,
        output: entry.output,
    })
}

impl Journal for SqliteJournal {
    fn create_run(
        &self,
        plan_path: &Path,
        plan_text: &str,
        now_ms: i64,
        note: serde_json::Value,
    ) -> Result<RunRecord, JournalError> {
        let mut conn = self.conn()?;
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(sql("begin"))?;
        tx.execute(
            "INSERT INTO plan_runs (plan_path, plan_sha256, plan_text, direction, state,
                 forward_blocked, created_unix_ms, updated_unix_ms)
             VALUES (?1, ?2, ?3, 'forward', 'running', 0, ?4, ?4)",
            params![
                plan_path.to_string_lossy(),
                sha256_hex(plan_text),
                plan_text,
                now_ms
            ],
        )
        .map_err(sql("create a plan run"))?;
        let id = tx.last_insert_rowid() as u64;
        insert_entry(&tx, id, NewEntry::new("", Phase::Note, note), now_ms)?;
        let raw = tx
            .query_row(
                &format!("SELECT {RUN_COLUMNS} FROM plan_runs WHERE id = ?1"),
                [id as i64],
                run_from_row,
            )
            .map_err(sql("read the new run"))?;
        tx.commit().map_err(sql("commit a new run"))?;
        raw.cook()
    }

    fn run(&self, id: u64) -> Result<Option<RunRecord>, JournalError> {
        let conn = self.conn()?;
        conn.query_row(
            &format!("SELECT {RUN_COLUMNS} FROM plan_runs WHERE id = ?1"),
            [id as i64],
            run_from_row,
        )
        .optional()
        .map_err(sql("read a run"))?
        .map(RawRun::cook)
        .transpose()
    }

    fn runs(&self) -> Result<Vec<RunRecord>, JournalError> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare(&format!("SELECT {RUN_COLUMNS} FROM plan_runs ORDER BY id"))
            .map_err(sql("list runs"))?;
        let rows = stmt
            .query_map([], run_from_row)
            .map_err(sql("list runs"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql("list runs"))?;
        rows.into_iter().map(RawRun::cook).collect()
    }

    fn latest(&self) -> Result<Option<RunRecord>, JournalError> {
        let conn = self.conn()?;
        conn.query_row(
            &format!("SELECT {RUN_COLUMNS} FROM plan_runs ORDER BY id DESC LIMIT 1"),
            [],
            run_from_row,
        )
        .optional()
        .map_err(sql("read the latest run"))?
        .map(RawRun::cook)
        .transpose()
    }

    fn append(
        &self,
        run: u64,
        entry: NewEntry,
        update: RunUpdate,
        now_ms: i64,
    ) -> Result<Entry, JournalError> {
        let mut conn = self.conn()?;
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(sql("begin"))?;
        let changed = tx
            .execute(
                "UPDATE plan_runs SET
                     state = COALESCE(?2, state),
                     direction = COALESCE(?3, direction),
                     forward_blocked = COALESCE(?4, forward_blocked),
                     updated_unix_ms = ?5
                 WHERE id = ?1",
                params![
                    run as i64,
                    update.state.map(RunState::label),
                    update.direction.map(Direction::label),
                    update.forward_blocked,
                    now_ms
                ],
            )
            .map_err(sql("update a run"))?;
        if changed == 0 {
            return Err(JournalError::NoRun(run));
        }
        let e = insert_entry(&tx, run, entry, now_ms)?;
        tx.commit().map_err(sql("commit a journal entry"))?;
        Ok(e)
    }

    fn entries_after(&self, run: u64, after: u64) -> Result<Vec<Entry>, JournalError> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare_cached(
                "SELECT seq, unix_ms, step_id, phase, detail, output FROM journal
                 WHERE run_id = ?1 AND seq > ?2 ORDER BY seq",
            )
            .map_err(sql("read the journal"))?;
        let rows = stmt
            .query_map([run as i64, after as i64], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                ))
            })
            .map_err(sql("read the journal"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql("read the journal"))?;
        rows.into_iter()
            .map(|(seq, unix_ms, step_id, phase, detail, output)| {
                Ok(Entry {
                    run_id: run,
                    seq: seq as u64,
                    unix_ms,
                    step_id,
                    phase: Phase::parse(&phase).ok_or(JournalError::Corrupt {
                        run,
                        what: "phase",
                        value: phase.clone(),
                    })?,
                    detail: serde_json::from_str(&detail).map_err(|_| JournalError::Corrupt {
                        run,
                        what: "detail",
                        value: detail.clone(),
                    })?,
                    output,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn runs_and_entries_survive_reopening_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let id = {
            let j = SqliteJournal::open(dir.path()).unwrap();
            let r = j
                .create_run(
                    Path::new("plan.toml"),
                    "x = 1",
                    10,
                    json!({"event": "start"}),
                )
                .unwrap();
            assert_eq!(r.state, RunState::Running);
            assert_eq!(r.plan_sha256, sha256_hex("x = 1"));
            j.append(
                r.id,
                NewEntry::new("lower-ttl", Phase::Intent, json!({"attempt": 1})),
                RunUpdate::default(),
                20,
            )
            .unwrap();
            j.append(
                r.id,
                NewEntry::new("lower-ttl", Phase::Outcome, json!({"result": "ok"})),
                RunUpdate {
                    state: Some(RunState::FellBack),
                    direction: Some(Direction::Fallback),
                    forward_blocked: Some(true),
                },
                30,
            )
            .unwrap();
            r.id
        };
        let j = SqliteJournal::open(dir.path()).unwrap();
        assert_eq!(j.latest().unwrap().unwrap().id, id);
        let r = j.run(id).unwrap().unwrap();
        assert_eq!(r.state, RunState::FellBack);
        assert_eq!(r.direction, Direction::Fallback);
        assert!(r.forward_blocked);
        assert_eq!(r.plan_text, "x = 1");
        let e = j.entries(id).unwrap();
        assert_eq!(e.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(e[1].phase, Phase::Intent);
        assert_eq!(e[2].str("result"), "ok");
        assert_eq!(e[2].unix_ms, 30);
    }

    #[test]
    fn two_connections_number_entries_without_clashing() {
        let dir = tempfile::tempdir().unwrap();
        let a = SqliteJournal::open(dir.path()).unwrap();
        let b = SqliteJournal::open(dir.path()).unwrap();
        let r = a.create_run(Path::new("p"), "", 0, json!({})).unwrap();
        for i in 0..5 {
            let j: &dyn Journal = if i % 2 == 0 { &a } else { &b };
            j.append(
                r.id,
                NewEntry::new("s", Phase::Note, json!({})),
                RunUpdate::default(),
                i,
            )
            .unwrap();
        }
        let seqs: Vec<u64> = a.entries(r.id).unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);
        let newer: Vec<u64> = b
            .entries_after(r.id, 4)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(newer, [5, 6]);
        assert!(matches!(
            a.append(
                99,
                NewEntry::new("", Phase::Note, json!({})),
                RunUpdate::default(),
                0
            ),
            Err(JournalError::NoRun(99))
        ));
    }
}
