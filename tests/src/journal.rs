//! Reading the plan journal straight from `cutover.db` (read-only), to see
//! what the engine decided and in which order: step intents and outcomes,
//! and the notes (`trip`, `verdict`, `alert`, …) with their JSON detail.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;

/// One journal row.
#[derive(Debug, Clone)]
pub struct Row {
    /// Order within the run.
    pub seq: i64,
    /// Step id (empty for run-level notes).
    pub step: String,
    /// `intent`, `outcome`, `note`, …
    pub phase: String,
    /// The row's JSON detail.
    pub detail: serde_json::Value,
}

impl Row {
    /// `detail.event` of a note, or "".
    pub fn event(&self) -> &str {
        self.detail["event"].as_str().unwrap_or("")
    }
}

/// The latest run's id, state and rows.
pub fn latest(db: &Path) -> anyhow::Result<(i64, String, Vec<Row>)> {
    let conn = rusqlite::Connection::open_with_flags(
        db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let (run, state): (i64, String) = conn.query_row(
        "SELECT id, state FROM plan_runs ORDER BY id DESC LIMIT 1",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let mut stmt = conn.prepare(
        "SELECT seq, step_id, phase, detail FROM journal WHERE run_id = ?1 ORDER BY seq",
    )?;
    let rows = stmt
        .query_map([run], |r| {
            Ok(Row {
                seq: r.get(0)?,
                step: r.get(1)?,
                phase: r.get(2)?,
                detail: serde_json::from_str(&r.get::<_, String>(3)?).unwrap_or_default(),
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok((run, state, rows))
}

/// True if the run has a `step` row of `phase` (and `detail.result`, if given).
pub fn has(rows: &[Row], step: &str, phase: &str, result: Option<&str>) -> bool {
    rows.iter().any(|r| {
        r.step == step
            && r.phase == phase
            && result.is_none_or(|want| r.detail["result"].as_str() == Some(want))
    })
}

/// The notes of `event` (`trip`, `verdict`, `alert`, …), oldest first.
pub fn notes<'a>(rows: &'a [Row], event: &str) -> Vec<&'a Row> {
    rows.iter()
        .filter(|r| r.phase == "note" && r.event() == event)
        .collect()
}

/// Polls the latest run every 20 ms (fine enough for the plan engine test to
/// kill the coordinator at a step boundary) until `pred(state, rows)` holds; returns
/// the rows. Fails at once if the run finished (`done`, `failed`, `aborted`,
/// `fell_back`) in a state `pred` does not accept, with the rows in the message.
pub async fn until(
    db: &Path,
    what: &str,
    deadline: Duration,
    pred: impl Fn(&str, &[Row]) -> bool,
) -> anyhow::Result<Vec<Row>> {
    let start = Instant::now();
    loop {
        match latest(db) {
            Ok((_, state, rows)) => {
                if pred(&state, &rows) {
                    return Ok(rows);
                }
                if matches!(state.as_str(), "done" | "failed" | "aborted" | "fell_back") {
                    bail!("waiting for {what}: the run ended {state}: {rows:#?}");
                }
                if start.elapsed() > deadline {
                    bail!(
                        "timed out after {deadline:?} waiting for {what}; run is {state}: {rows:#?}"
                    );
                }
            }
            Err(e) if start.elapsed() > deadline => {
                bail!("timed out waiting for {what}: no run in the journal ({e:#})")
            }
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
