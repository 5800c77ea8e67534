//! Durable storage: the probe registry and the stored result batches.
//!
//! Everything goes through the [`Store`] trait so a PostgreSQL backend (with a
//! leader lease for a standby coordinator, DESIGN §9) can replace the embedded
//! SQLite one. Methods are blocking; async callers use `spawn_blocking`.
//!
//! Schema (`ARCHITECTURE.md`, "Storage"):
//! `probes(id, region, note, token_sha256, enrolled_unix_ms, revoked_unix_ms, version,
//! last_seen_unix_ms, stored_seq)` and `result_batches(probe_id, first_seq, last_seq,
//! received_unix_ms, payload)`, where `payload` is an encoded `cutover.v1.ResultBatch`
//! of only the new results.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

use crate::auth::{self, TokenHash};

/// A probe as the registry knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeRecord {
    /// Probe id, e.g. `asia-3f9a1c2b`.
    pub id: String,
    /// Enrolled region (wins over what the probe says).
    pub region: String,
    /// Operator's note.
    pub note: String,
    /// When it was enrolled.
    pub enrolled_unix_ms: i64,
    /// When it was revoked, if it was.
    pub revoked_unix_ms: Option<i64>,
    /// Software version from its last Hello.
    pub version: String,
    /// Last time it was heard from (as persisted).
    pub last_seen_unix_ms: Option<i64>,
    /// Highest seq stored for it.
    pub stored_seq: u64,
}

/// A new probe and its token (shown once).
#[derive(Debug, Clone)]
pub struct Enrolment {
    /// The registry entry.
    pub probe: ProbeRecord,
    /// The clear-text token; only its hash is stored.
    pub token: String,
}

/// One probe's accepted results, ready to commit.
#[derive(Debug, Clone)]
pub struct BatchWrite {
    /// The probe.
    pub probe_id: String,
    /// Lowest seq in `payload` (0 when `payload` is empty).
    pub first_seq: u64,
    /// Highest seq in `payload` (0 when `payload` is empty).
    pub last_seq: u64,
    /// New stored seq for the probe: the highest seq processed, including rejected results.
    pub seq_through: u64,
    /// Server time the batch arrived.
    pub received_unix_ms: i64,
    /// Encoded `ResultBatch`; empty when every result was rejected (then only the seq advances).
    pub payload: Vec<u8>,
}

/// A batch read back, e.g. to rebuild the windows after a restart.
#[derive(Debug, Clone)]
pub struct StoredBatch {
    /// The probe.
    pub probe_id: String,
    /// Region the probe is enrolled in.
    pub region: String,
    /// Server time the batch arrived.
    pub received_unix_ms: i64,
    /// Encoded `ResultBatch`.
    pub payload: Vec<u8>,
}

/// Storage failures, naming what was being done.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Opening or migrating the database failed.
    #[error("cannot open database {}: {source}", path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// Why.
        source: rusqlite::Error,
    },
    /// A query failed.
    #[error("database error while {action}: {source}")]
    Sql {
        /// What we were doing.
        action: &'static str,
        /// Why.
        source: rusqlite::Error,
    },
    /// A credential could not be created.
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
    /// Region name not usable.
    #[error("invalid region {0:?}: expected 1-32 characters from a-z, 0-9, '-' and '_'")]
    InvalidRegion(String),
    /// The internal lock was poisoned by a panic elsewhere.
    #[error("database handle unusable after an earlier panic")]
    Poisoned,
}

fn sql(action: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::Sql { action, source }
}

/// The storage interface (probe registry + result batches).
pub trait Store: Send + Sync + 'static {
    /// Enrols a new probe in `region`, returning it with its clear-text token.
    fn enrol(&self, region: &str, note: &str, now_ms: i64) -> Result<Enrolment, StoreError>;
    /// Revokes a probe; returns whether it existed and was active.
    fn revoke(&self, probe_id: &str, now_ms: i64) -> Result<bool, StoreError>;
    /// Finds the probe holding a token (revoked ones too; the caller decides).
    fn probe_by_token(&self, hash: &TokenHash) -> Result<Option<ProbeRecord>, StoreError>;
    /// Reads one probe.
    fn probe(&self, probe_id: &str) -> Result<Option<ProbeRecord>, StoreError>;
    /// Every probe, ordered by region then id.
    fn list_probes(&self) -> Result<Vec<ProbeRecord>, StoreError>;
    /// Records a probe's version and last-seen time.
    fn touch(&self, probe_id: &str, version: Option<&str>, now_ms: i64) -> Result<(), StoreError>;
    /// Commits many batches in one transaction, advancing each probe's stored seq.
    fn commit(&self, batches: &[BatchWrite]) -> Result<(), StoreError>;
    /// Batches received at or after `since_ms`, oldest first.
    fn batches_since(&self, since_ms: i64) -> Result<Vec<StoredBatch>, StoreError>;
    /// Deletes batches received before `before_ms`; returns how many.
    fn prune(&self, before_ms: i64) -> Result<usize, StoreError>;
}

/// The embedded SQLite store (WAL, `synchronous=NORMAL`).
///
/// One connection behind a mutex: the only frequent user is the single writer
/// task (group commits); enrolment and session starts are rare.
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

/// Database file name inside `data_dir`.
pub const DB_FILE: &str = "cutover.db";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS probes (
    id TEXT PRIMARY KEY,
    region TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT '',
    token_sha256 BLOB NOT NULL UNIQUE,
    enrolled_unix_ms INTEGER NOT NULL,
    revoked_unix_ms INTEGER,
    version TEXT NOT NULL DEFAULT '',
    last_seen_unix_ms INTEGER,
    stored_seq INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS result_batches (
    probe_id TEXT NOT NULL REFERENCES probes(id),
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    received_unix_ms INTEGER NOT NULL,
    payload BLOB NOT NULL,
    PRIMARY KEY (probe_id, first_seq)
);
CREATE INDEX IF NOT EXISTS result_batches_received ON result_batches(received_unix_ms);
";

impl SqliteStore {
    /// Opens (creating if needed) `data_dir/cutover.db`.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        Self::open_file(&data_dir.join(DB_FILE))
    }

    /// Opens (creating if needed) the database at `path`.
    pub fn open_file(path: &Path) -> Result<Self, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_err)?;
        // WAL + NORMAL: a commit is durable against a process crash (SIGKILL),
        // which is the guarantee an Ack makes; fsync per commit is not needed for that.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_err)?;
        // 32 MiB of page cache (default 2 MiB): the probes table and the
        // result_batches indexes stay in memory under a write-heavy load.
        conn.pragma_update(None, "cache_size", -32_768)
            .map_err(open_err)?;
        conn.execute_batch(SCHEMA).map_err(open_err)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> Result<std::sync::MutexGuard<'_, Connection>, StoreError> {
        self.conn.lock().map_err(|_| StoreError::Poisoned)
    }
}

const PROBE_COLUMNS: &str =
    "id, region, note, enrolled_unix_ms, revoked_unix_ms, version, last_seen_unix_ms, stored_seq";

fn probe_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ProbeRecord> {
    Ok(ProbeRecord {
        id: row.get(0)?,
        region: row.get(1)?,
        note: row.get(2)?,
        enrolled_unix_ms: row.get(3)?,
        revoked_unix_ms: row.get(4)?,
        version: row.get(5)?,
        last_seen_unix_ms: row.get(6)?,
        stored_seq: row.get::<_, i64>(7)?.max(0) as u64,
    })
}

/// Whether a region name is usable as an id prefix and a metric label.
pub fn valid_region(region: &str) -> bool {
    !region.is_empty()
        && region.len() <= 32
        && region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

impl Store for SqliteStore {
    fn enrol(&self, region: &str, note: &str, now_ms: i64) -> Result<Enrolment, StoreError> {
        if !valid_region(region) {
            return Err(StoreError::InvalidRegion(region.to_string()));
        }
        let token = auth::new_probe_token()?;
        let id = format!("{region}-{}", auth::hex(&auth::random_bytes::<4>()?));
        let conn = self.conn()?;
        conn.execute(
            "INSERT INTO probes (id, region, note, token_sha256, enrolled_unix_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![id, region, note, auth::hash_token(&token).as_slice(), now_ms],
        )
        .map_err(sql("enrolling a probe"))?;
        Ok(Enrolment {
            probe: ProbeRecord {
                id,
                region: region.to_string(),
                note: note.to_string(),
                enrolled_unix_ms: now_ms,
                revoked_unix_ms: None,
                version: String::new(),
                last_seen_unix_ms: None,
                stored_seq: 0,
            },
            token,
        })
    }

    fn revoke(&self, probe_id: &str, now_ms: i64) -> Result<bool, StoreError> {
        let conn = self.conn()?;
        let n = conn
            .execute(
                "UPDATE probes SET revoked_unix_ms = ?2 WHERE id = ?1 AND revoked_unix_ms IS NULL",
                params![probe_id, now_ms],
            )
            .map_err(sql("revoking a probe"))?;
        Ok(n > 0)
    }

    fn probe_by_token(&self, hash: &TokenHash) -> Result<Option<ProbeRecord>, StoreError> {
        let conn = self.conn()?;
        conn.prepare_cached(&format!(
            "SELECT {PROBE_COLUMNS} FROM probes WHERE token_sha256 = ?1"
        ))
        .and_then(|mut st| st.query_row(params![hash.as_slice()], probe_row).optional())
        .map_err(sql("looking up a probe token"))
    }

    fn probe(&self, probe_id: &str) -> Result<Option<ProbeRecord>, StoreError> {
        let conn = self.conn()?;
        conn.prepare_cached(&format!("SELECT {PROBE_COLUMNS} FROM probes WHERE id = ?1"))
            .and_then(|mut st| st.query_row(params![probe_id], probe_row).optional())
            .map_err(sql("reading a probe"))
    }

    fn list_probes(&self) -> Result<Vec<ProbeRecord>, StoreError> {
        let conn = self.conn()?;
        let mut st = conn
            .prepare_cached(&format!(
                "SELECT {PROBE_COLUMNS} FROM probes ORDER BY region, id"
            ))
            .map_err(sql("listing probes"))?;
        st.query_map([], probe_row)
            .and_then(|rows| rows.collect())
            .map_err(sql("listing probes"))
    }

    fn touch(&self, probe_id: &str, version: Option<&str>, now_ms: i64) -> Result<(), StoreError> {
        let conn = self.conn()?;
        match version {
            Some(v) => conn.execute(
                "UPDATE probes SET version = ?2, last_seen_unix_ms = ?3 WHERE id = ?1",
                params![probe_id, v, now_ms],
            ),
            None => conn.execute(
                "UPDATE probes SET last_seen_unix_ms = ?2 WHERE id = ?1",
                params![probe_id, now_ms],
            ),
        }
        .map_err(sql("recording when a probe was seen"))?;
        Ok(())
    }

    fn commit(&self, batches: &[BatchWrite]) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction().map_err(sql("starting a commit"))?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO result_batches (probe_id, first_seq, last_seq, received_unix_ms, payload) VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(sql("storing result batches"))?;
            let mut advance = tx
                .prepare_cached(
                    "UPDATE probes SET stored_seq = MAX(stored_seq, ?2), last_seen_unix_ms = MAX(COALESCE(last_seen_unix_ms, 0), ?3) WHERE id = ?1",
                )
                .map_err(sql("advancing stored seq"))?;
            for b in batches {
                if !b.payload.is_empty() {
                    insert
                        .execute(params![
                            b.probe_id,
                            b.first_seq as i64,
                            b.last_seq as i64,
                            b.received_unix_ms,
                            b.payload
                        ])
                        .map_err(sql("storing result batches"))?;
                }
                advance
                    .execute(params![
                        b.probe_id,
                        b.seq_through as i64,
                        b.received_unix_ms
                    ])
                    .map_err(sql("advancing stored seq"))?;
            }
        }
        tx.commit().map_err(sql("committing result batches"))
    }

    fn prune(&self, before_ms: i64) -> Result<usize, StoreError> {
        let conn = self.conn()?;
        conn.execute(
            "DELETE FROM result_batches WHERE received_unix_ms < ?1",
            params![before_ms],
        )
        .map_err(sql("deleting old result batches"))
    }

    fn batches_since(&self, since_ms: i64) -> Result<Vec<StoredBatch>, StoreError> {
        let conn = self.conn()?;
        let mut st = conn
            .prepare_cached(
                "SELECT b.probe_id, p.region, b.received_unix_ms, b.payload FROM result_batches b JOIN probes p ON p.id = b.probe_id WHERE b.received_unix_ms >= ?1 ORDER BY b.received_unix_ms, b.probe_id, b.first_seq",
            )
            .map_err(sql("reading recent result batches"))?;
        st.query_map(params![since_ms], |row| {
            Ok(StoredBatch {
                probe_id: row.get(0)?,
                region: row.get(1)?,
                received_unix_ms: row.get(2)?,
                payload: row.get(3)?,
            })
        })
        .and_then(|rows| rows.collect())
        .map_err(sql("reading recent result batches"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(dir.path()).unwrap();
        (dir, s)
    }

    #[test]
    fn enrol_lookup_revoke() {
        let (_d, s) = store();
        let e = s.enrol("asia", "alice", 1000).unwrap();
        assert!(e.probe.id.starts_with("asia-"));
        let found = s
            .probe_by_token(&auth::hash_token(&e.token))
            .unwrap()
            .unwrap();
        assert_eq!(found, e.probe);
        assert!(
            s.probe_by_token(&auth::hash_token("cutover_nope"))
                .unwrap()
                .is_none()
        );
        assert!(s.revoke(&e.probe.id, 2000).unwrap());
        assert!(
            !s.revoke(&e.probe.id, 3000).unwrap(),
            "second revoke is a no-op"
        );
        let found = s
            .probe_by_token(&auth::hash_token(&e.token))
            .unwrap()
            .unwrap();
        assert_eq!(found.revoked_unix_ms, Some(2000));
        assert!(matches!(
            s.enrol("Asia Pacific", "", 0),
            Err(StoreError::InvalidRegion(_))
        ));
    }

    #[test]
    fn group_commit_advances_seq_and_persists() {
        let dir = tempfile::tempdir().unwrap();
        let id = {
            let s = SqliteStore::open(dir.path()).unwrap();
            let e = s.enrol("us", "", 0).unwrap();
            let id = e.probe.id.clone();
            s.commit(&[
                BatchWrite {
                    probe_id: id.clone(),
                    first_seq: 1,
                    last_seq: 5,
                    seq_through: 5,
                    received_unix_ms: 100,
                    payload: vec![1, 2, 3],
                },
                BatchWrite {
                    probe_id: id.clone(),
                    first_seq: 0,
                    last_seq: 0,
                    seq_through: 7,
                    received_unix_ms: 200,
                    payload: vec![],
                },
            ])
            .unwrap();
            id
        };
        let s = SqliteStore::open(dir.path()).unwrap();
        let p = s.probe(&id).unwrap().unwrap();
        assert_eq!(p.stored_seq, 7);
        assert_eq!(p.last_seen_unix_ms, Some(200));
        let batches = s.batches_since(0).unwrap();
        assert_eq!(batches.len(), 1, "an empty payload stores no row");
        assert_eq!(batches[0].region, "us");
        assert!(s.batches_since(101).unwrap().is_empty());
        assert_eq!(s.prune(100).unwrap(), 0, "kept: received at 100");
        assert_eq!(s.prune(101).unwrap(), 1);
        assert!(s.batches_since(0).unwrap().is_empty());
        assert_eq!(
            s.probe(&id).unwrap().unwrap().stored_seq,
            7,
            "pruning keeps the seq"
        );
    }
}
