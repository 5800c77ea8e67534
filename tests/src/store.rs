//! Reading the coordinator's SQLite store (`data_dir/cutover.db`) the way an
//! auditor would: which results are stored, for which probe, how often.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use cutover_proto::v1::{CheckResult, ResultBatch};
use prost::Message as _;

/// One stored batch.
#[derive(Debug, Clone)]
pub struct StoredBatch {
    /// Probe id.
    pub probe_id: String,
    /// `first_seq` column.
    pub first_seq: u64,
    /// `last_seq` column.
    pub last_seq: u64,
    /// Decoded payload.
    pub results: Vec<CheckResult>,
}

fn open(db: &Path) -> anyhow::Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open_with_flags(
        db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("opening {}", db.display()))?;
    conn.busy_timeout(Duration::from_secs(10))?;
    Ok(conn)
}

/// Every row of `result_batches`, payloads decoded.
pub fn batches(db: &Path) -> anyhow::Result<Vec<StoredBatch>> {
    let conn = open(db)?;
    let mut stmt = conn.prepare(
        "SELECT probe_id, first_seq, last_seq, payload FROM result_batches ORDER BY rowid",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, Vec<u8>>(3)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (probe_id, first, last, payload) = row?;
        let batch = ResultBatch::decode(&payload[..]).with_context(|| {
            format!("payload of batch {probe_id}/{first}..{last} is not a ResultBatch")
        })?;
        out.push(StoredBatch {
            probe_id,
            first_seq: u64::try_from(first)?,
            last_seq: u64::try_from(last)?,
            results: batch.results,
        });
    }
    Ok(out)
}

/// `probes`: id → (region, stored_seq).
pub fn probes(db: &Path) -> anyhow::Result<BTreeMap<String, (String, u64)>> {
    let conn = open(db)?;
    let mut stmt = conn.prepare("SELECT id, region, COALESCE(stored_seq, 0) FROM probes")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    let mut out = BTreeMap::new();
    for row in rows {
        let (id, region, seq) = row?;
        out.insert(id, (region, u64::try_from(seq)?));
    }
    Ok(out)
}
