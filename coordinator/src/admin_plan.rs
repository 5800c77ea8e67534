//! The plan half of `AdminService` (`StartPlan`, `PlanStatus`, `Approve`,
//! `Pause`, `Resume`, `Abort`, `Rollback`, `History`): converts between the
//! wire types and [`crate::engine`], and maps engine errors to `tonic::Status`
//! in one place.

use std::path::PathBuf;

use cutover_proto::v1;
use tonic::Status;

use crate::engine::{Engine, EngineError, RunStatus};
use crate::evidence::now_ms;
use crate::journal::{Entry, RunRecord};

fn status(e: EngineError) -> Status {
    match e {
        EngineError::InvalidPlan(m) => Status::invalid_argument(m),
        EngineError::Refused(m) => Status::failed_precondition(m),
        EngineError::NoRun => Status::not_found(e.to_string()),
        EngineError::Journal(j) => Status::internal(j.to_string()),
    }
}

fn engine(e: &Option<Engine>) -> Result<&Engine, Status> {
    e.as_ref()
        .ok_or_else(|| Status::unavailable("this coordinator runs no plan engine"))
}

fn run_wire(r: &RunRecord) -> v1::PlanRunStatus {
    v1::PlanRunStatus {
        run_id: r.id,
        plan_path: r.plan_path.display().to_string(),
        plan_sha256: r.plan_sha256.clone(),
        direction: r.direction.label().into(),
        state: r.state.label().into(),
        forward_blocked: r.forward_blocked,
        started_unix_ms: r.created_unix_ms,
        now_unix_ms: now_ms(),
        ..Default::default()
    }
}

fn status_wire(s: RunStatus) -> v1::PlanRunStatus {
    let mut w = run_wire(&s.run);
    w.plan_name = s.plan_name;
    if let Some((id, kind)) = s.step {
        w.step_id = id;
        w.step_kind = kind.into();
    }
    w.step_index = s.step_index;
    w.step_count = s.step_count;
    w.message = s.message;
    w.guards = s
        .guards
        .into_iter()
        .flat_map(|g| {
            let (guard, tripped) = (g.guard, g.tripped);
            g.regions.into_iter().map(move |r| v1::GuardVerdict {
                guard: guard.clone(),
                region: r.region,
                verdict: r.verdict.into(),
                value: r.value.unwrap_or(0.0),
                has_value: r.value.is_some(),
                tripped,
            })
        })
        .collect();
    if let Some(l) = s.live
        && l.step_id == w.step_id
    {
        w.waiting_for = l.waiting_for;
        w.step_started_unix_ms = l.started_ms;
        w.step_deadline_unix_ms = l.deadline_ms.unwrap_or(0);
        w.regions = l
            .regions
            .into_iter()
            .map(|r| v1::RegionProgress {
                region: r.region,
                value: r.value,
                target: r.target,
                unit: r.unit.into(),
                done: r.done,
                detail: r.detail,
            })
            .collect();
    }
    w
}

fn entry_wire(e: Entry) -> v1::JournalEntry {
    v1::JournalEntry {
        run_id: e.run_id,
        seq: e.seq,
        unix_ms: e.unix_ms,
        step_id: e.step_id,
        phase: e.phase.label().into(),
        detail_json: e.detail.to_string(),
        output: e.output,
    }
}

fn control(r: RunRecord) -> v1::PlanControlReply {
    v1::PlanControlReply {
        run_id: r.id,
        state: r.state.label().into(),
        message: String::new(),
    }
}

/// `StartPlan`: the content wins over the path when both are given.
pub async fn start(
    e: &Option<Engine>,
    req: v1::StartPlanRequest,
) -> Result<v1::StartPlanReply, Status> {
    let e = engine(e)?;
    let path = PathBuf::from(&req.path);
    let text = if req.content.is_empty() {
        if req.path.is_empty() {
            return Err(Status::invalid_argument("give the plan's path or content"));
        }
        std::fs::read_to_string(&path).map_err(|err| {
            Status::invalid_argument(format!("cannot read plan file {}: {err}", path.display()))
        })?
    } else {
        req.content
    };
    let (run, warnings) = e.start(path, text, req.force).await.map_err(status)?;
    Ok(v1::StartPlanReply {
        run_id: run.id,
        warnings,
    })
}

/// `PlanStatus`.
pub async fn plan_status(
    e: &Option<Engine>,
    req: v1::PlanStatusRequest,
) -> Result<v1::PlanStatusReply, Status> {
    let s = engine(e)?.status(req.run_id).await.map_err(status)?;
    Ok(v1::PlanStatusReply {
        has_run: s.is_some(),
        run: s.map(status_wire),
    })
}

/// `Approve`.
pub async fn approve(
    e: &Option<Engine>,
    req: v1::ApproveRequest,
) -> Result<v1::PlanControlReply, Status> {
    engine(e)?
        .approve(&req.step_id, &req.exec_answer)
        .await
        .map(control)
        .map_err(status)
}

/// `Pause`, `Resume`, `Abort`, `Rollback`.
pub async fn pause(e: &Option<Engine>) -> Result<v1::PlanControlReply, Status> {
    engine(e)?.pause().await.map(control).map_err(status)
}

/// `Resume`.
pub async fn resume(e: &Option<Engine>) -> Result<v1::PlanControlReply, Status> {
    engine(e)?.resume().await.map(control).map_err(status)
}

/// `Abort`.
pub async fn abort(e: &Option<Engine>, reason: &str) -> Result<v1::PlanControlReply, Status> {
    engine(e)?.abort(reason).await.map(control).map_err(status)
}

/// `Rollback`.
pub async fn rollback(e: &Option<Engine>, reason: &str) -> Result<v1::PlanControlReply, Status> {
    engine(e)?
        .rollback(reason)
        .await
        .map(control)
        .map_err(status)
}

/// `History`.
pub async fn history(
    e: &Option<Engine>,
    req: v1::HistoryRequest,
) -> Result<v1::HistoryReply, Status> {
    let (runs, entries) = engine(e)?.history(req.run_id).await.map_err(status)?;
    Ok(v1::HistoryReply {
        runs: runs.iter().map(run_wire).collect(),
        entries: entries.into_iter().map(entry_wire).collect(),
    })
}
