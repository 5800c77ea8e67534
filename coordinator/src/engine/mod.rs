//! The plan engine: executes a validated [`Plan`] step by step in one tokio
//! task inside `cutover serve`, writing every transition to the [`Journal`]
//! first, and resumes any unfinished run from the journal at start-up.
//!
//! Where a run stands is never kept only in memory: the next step is the first
//! one of the current runbook without an `ok` outcome in the journal, a step's
//! clock starts at its first `intent` since its last outcome, and operator
//! actions (approve, pause, resume, abort, rollback) are journal notes committed
//! together with the run's new state. So a coordinator killed at any moment
//! starts again where it was:
//!
//! - `dns` steps set a desired state and verify it, so they are simply repeated;
//!   all records of one switch are applied in one step and verified together.
//! - `exec` steps without `once` are repeated; an `exec once` step with an
//!   intent but no outcome is **not** rerun: the run waits for the operator to
//!   say whether it ran (`cutover approve --ran|--not-ran`).
//! - waits keep their start time, so a 10-minute wait killed after 8 waits 2 more.
//!
//! `dns` and `exec` steps are never interrupted by pause, abort or rollback:
//! those take effect when the step ends, so records are never left half-applied.
//!
//! Guards ([`guards`]) watch the run from their `armed_from` step on; a trip
//! reaches the engine through [`Engine::trip`], which acts on it (fallback,
//! pause, alert, or nothing in shadow mode) in the same journal transaction
//! as the trip note.

pub mod assign;
mod dns_backend;
pub mod evidence;
pub mod guards;
mod steps;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::dns::{BoxFuture, RecordSet};
use crate::evidence::now_ms;
use crate::journal::{
    Direction, Entry, Journal, JournalError, NewEntry, Phase, RunRecord, RunState, RunUpdate,
};
use crate::metrics as m;
use crate::plan::{self, Action, GuardAction, GuardMode, OnFailure, Plan, Step};

pub use dns_backend::RealDns;
pub use evidence::{EvidenceSource, LiveEvidence, RegionProgress};

/// Why an operator request was refused.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The journal failed.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The plan has errors.
    #[error("{0}")]
    InvalidPlan(String),
    /// The request does not fit the run's state.
    #[error("{0}")]
    Refused(String),
    /// No run to act on.
    #[error("no plan run: start one with `cutover start FILE`")]
    NoRun,
}

/// How the engine changes and proves DNS (the real providers, or a fake in tests).
pub trait DnsBackend: Send + Sync {
    /// For a provider driven by hand: what the operator must change (shown, then
    /// `cutover approve` is awaited before verifying). `None` otherwise.
    fn manual_instructions(
        &self,
        plan: &Plan,
        desired: &[RecordSet],
    ) -> Result<Option<String>, String>;
    /// Applies every desired set, then verifies all of them at the authoritative
    /// servers within `deadline`. Ok = a summary for the journal.
    fn apply_and_verify<'a>(
        &'a self,
        plan: &'a Plan,
        desired: &'a [RecordSet],
        deadline: Duration,
    ) -> BoxFuture<'a, Result<String, String>>;
}

/// Everything the engine talks to.
pub struct Deps {
    /// Durable record of runs.
    pub journal: Arc<dyn Journal>,
    /// Probe evidence.
    pub evidence: Arc<dyn EvidenceSource>,
    /// DNS changes.
    pub dns: Arc<dyn DnsBackend>,
    /// How often waits re-evaluate evidence.
    pub poll: Duration,
    /// Sends the current plan's checks to the probes (`None` in tests).
    pub assigner: Option<Arc<assign::Assigner>>,
    /// Reads status pages and Prometheus for non-probe guards.
    pub sources: Arc<dyn guards::SourceReader>,
}

/// What the running step reports for `cutover status`.
#[derive(Debug, Clone, Default)]
pub struct Live {
    /// The run.
    pub run_id: u64,
    /// Current step ("" between steps).
    pub step_id: String,
    /// What it waits for.
    pub waiting_for: String,
    /// Per region progress.
    pub regions: Vec<RegionProgress>,
    /// When the step's wait or timeout ends.
    pub deadline_ms: Option<i64>,
    /// When the step started.
    pub started_ms: i64,
}

/// A run's status as `cutover status` shows it.
#[derive(Debug, Clone)]
pub struct RunStatus {
    /// The run.
    pub run: RunRecord,
    /// `[plan] name` ("" if the text no longer parses).
    pub plan_name: String,
    /// Current step (None when finished or between runbooks).
    pub step: Option<(String, &'static str)>,
    /// 1-based index and runbook length.
    pub step_index: u32,
    /// Steps in the current runbook.
    pub step_count: u32,
    /// Live figures, when this process runs the step.
    pub live: Option<Live>,
    /// The open question or latest failure.
    pub message: String,
    /// The armed guards' verdicts per region, when this process watches the run.
    pub guards: Vec<guards::GuardStatus>,
}

/// How a guard's trip was acted on: the `outcome` label of
/// `cutover_guard_trips_total` and the trip note's `outcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TripOutcome {
    /// The run switched to the fallback runbook (or was already on it).
    Fallback,
    /// The run was paused (or was already paused).
    Pause,
    /// Only an alert.
    Alert,
    /// A shadow guard: logged what it would have done, nothing else.
    Shadow,
}

impl TripOutcome {
    /// `fallback`, `pause`, `alert`, `shadow`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Fallback => "fallback",
            Self::Pause => "pause",
            Self::Alert => "alert",
            Self::Shadow => "shadow",
        }
    }
}

/// A tripped guard, as the guard watcher hands it to the engine.
#[derive(Debug, Clone)]
pub struct GuardTrip {
    /// The run the guard watched.
    pub run_id: u64,
    /// Guard id.
    pub guard: String,
    /// What the plan says a trip does.
    pub action: GuardAction,
    /// Enforce or shadow.
    pub mode: GuardMode,
    /// The trip in plain words (`verdict::Trip::summary`).
    pub summary: String,
    /// The whole trip with its per-region evidence (a `verdict::Trip` as JSON
    /// object); kept in the trip note.
    pub detail: serde_json::Value,
}

/// What the engine did that deserves an alert (the guard watcher sends them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineEvent {
    /// The run switched to the fallback runbook: a guard trip, a failing step
    /// with `on_failure = "fallback"`, or `cutover rollback`.
    FallbackStarted {
        /// The run.
        run_id: u64,
        /// The guard that tripped ("" when the fallback has another cause).
        guard: String,
        /// Why, in words.
        why: String,
    },
    /// The fallback runbook ran to its end (the run is `fell_back`).
    FallbackDone {
        /// The run.
        run_id: u64,
    },
}

struct Current {
    run_id: u64,
    cancel: CancellationToken,
    interruptible: bool,
}

struct Inner {
    deps: Deps,
    /// Serialises state transitions (operator requests and the run task).
    ops: tokio::sync::Mutex<()>,
    /// Bumped after every operator request; the run task waits on it.
    wake: watch::Sender<u64>,
    live: Mutex<Option<Live>>,
    current: Mutex<Option<Current>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    shutdown: CancellationToken,
    /// Fallback started / done, for alerts.
    events: tokio::sync::broadcast::Sender<EngineEvent>,
    /// Per-guard, per-region verdicts of the current run, for `cutover status`.
    guard_view: Mutex<Option<guards::GuardView>>,
}

/// The engine handle (cheap to clone).
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

fn blocking_err(e: tokio::task::JoinError) -> EngineError {
    EngineError::Refused(format!("journal task failed: {e}"))
}

impl Engine {
    /// An engine; call [`Engine::resume_unfinished`] to pick up a run from the journal.
    pub fn new(deps: Deps, shutdown: CancellationToken) -> Self {
        Self {
            inner: Arc::new(Inner {
                deps,
                ops: tokio::sync::Mutex::new(()),
                wake: watch::channel(0).0,
                live: Mutex::new(None),
                current: Mutex::new(None),
                task: Mutex::new(None),
                shutdown,
                events: tokio::sync::broadcast::channel(64).0,
                guard_view: Mutex::new(None),
            }),
        }
    }

    /// Fallback started / done events, for the alert sender.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<EngineEvent> {
        self.inner.events.subscribe()
    }

    fn emit(&self, event: EngineEvent) {
        // Nobody listening (tests, no guard watcher) is fine.
        let _ = self.inner.events.send(event);
    }

    async fn journal<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Journal) -> Result<T, JournalError> + Send + 'static,
    ) -> Result<T, EngineError> {
        let j = self.inner.deps.journal.clone();
        Ok(tokio::task::spawn_blocking(move || f(&*j))
            .await
            .map_err(blocking_err)??)
    }

    async fn append(
        &self,
        run: u64,
        entry: NewEntry,
        update: RunUpdate,
    ) -> Result<Entry, EngineError> {
        let e = self
            .journal(move |j| j.append(run, entry, update, now_ms()))
            .await?;
        if update.state.is_some() || update.direction.is_some() {
            // The gauges need the direction too, which the update may leave as it was.
            match self.journal(move |j| j.run(run)).await {
                Ok(Some(r)) => run_gauges(&r),
                _ => {
                    if let Some(s) = update.state {
                        state_gauge(s);
                    }
                }
            }
        }
        Ok(e)
    }

    async fn latest(&self) -> Result<Option<RunRecord>, EngineError> {
        self.journal(|j| j.latest()).await
    }

    async fn run_or_latest(&self, id: u64) -> Result<RunRecord, EngineError> {
        let r = if id == 0 {
            self.latest().await?
        } else {
            self.journal(move |j| j.run(id)).await?
        };
        r.ok_or(EngineError::NoRun)
    }

    fn poke(&self) {
        self.inner.wake.send_modify(|n| *n += 1);
    }

    /// Stops the running step if it may be interrupted (not `dns`, not `exec`).
    fn interrupt(&self, run_id: u64) {
        if let Ok(cur) = self.inner.current.lock()
            && let Some(c) = cur.as_ref()
            && c.run_id == run_id
            && c.interruptible
        {
            c.cancel.cancel();
        }
    }

    /// Resumes the latest unfinished run, if any (at start-up).
    pub async fn resume_unfinished(&self) -> Result<Option<u64>, EngineError> {
        let runs = self.journal(|j| j.runs()).await?;
        if let Some(latest) = runs.last() {
            run_gauges(latest);
        }
        let Some(run) = runs.iter().rev().find(|r| !r.state.is_finished()) else {
            return Ok(None);
        };
        tracing::info!(run = run.id, state = %run.state, direction = run.direction.label(), "resuming plan run from the journal");
        self.append(
            run.id,
            NewEntry::new("", Phase::Note, json!({"event": "coordinator_started"})),
            RunUpdate::default(),
        )
        .await?;
        self.spawn(run.id);
        Ok(Some(run.id))
    }

    fn spawn(&self, run_id: u64) {
        let me = self.clone();
        let handle = tokio::spawn(async move { me.drive(run_id).await });
        if let Ok(mut t) = self.inner.task.lock() {
            *t = Some(handle);
        }
    }

    fn task_running(&self) -> bool {
        self.inner
            .task
            .lock()
            .map(|t| t.as_ref().is_some_and(|h| !h.is_finished()))
            .unwrap_or(false)
    }

    /// `cutover start`: checks the plan, records a run and starts it.
    pub async fn start(
        &self,
        path: PathBuf,
        text: String,
        force: bool,
    ) -> Result<(RunRecord, Vec<String>), EngineError> {
        let report = plan::parse(&path, &text);
        if report.plan.is_none() {
            return Err(EngineError::InvalidPlan(format!(
                "{}{}",
                report.render(),
                report.summary()
            )));
        }
        let warnings: Vec<String> = report
            .diagnostics
            .iter()
            .map(|d| format!("{}:{d}", path.display()))
            .collect();
        let _g = self.inner.ops.lock().await;
        if let Some(latest) = self.latest().await? {
            if !latest.state.is_finished() {
                return Err(EngineError::Refused(format!(
                    "run {} is still {} — finish, abort or roll it back first",
                    latest.id, latest.state
                )));
            }
            if latest.forward_blocked && !force {
                return Err(EngineError::Refused(format!(
                    "run {} fell back; find out why (`cutover history`) and start again with --force",
                    latest.id
                )));
            }
        }
        let note = json!({"event": "started", "plan": report.plan.as_ref().map(|p| p.name.clone()), "force": force});
        let run = self
            .journal(move |j| j.create_run(&path, &text, now_ms(), note))
            .await?;
        run_gauges(&run);
        tracing::info!(run = run.id, plan = %run.plan_path.display(), "plan run started");
        self.spawn(run.id);
        Ok((run, warnings))
    }

    /// `cutover approve`: answers the question the run is waiting on.
    pub async fn approve(
        &self,
        step_id: &str,
        exec_answer: &str,
    ) -> Result<RunRecord, EngineError> {
        let _g = self.inner.ops.lock().await;
        let run = self.latest().await?.ok_or(EngineError::NoRun)?;
        if run.state != RunState::WaitingApproval {
            return Err(EngineError::Refused(format!(
                "run {} is {}, not waiting for approval",
                run.id, run.state
            )));
        }
        let id = run.id;
        let entries = self.journal(move |j| j.entries(id)).await?;
        let ask = entries
            .iter()
            .rev()
            .find(|e| e.phase == Phase::Note && e.str("event") == "ask")
            .ok_or_else(|| EngineError::Refused("nothing is waiting for approval".into()))?;
        if !step_id.is_empty() && step_id != ask.step_id {
            return Err(EngineError::Refused(format!(
                "the run waits for step `{}`, not `{step_id}`",
                ask.step_id
            )));
        }
        let what = ask.str("kind").to_string();
        let exec_question = matches!(what.as_str(), "exec_unknown" | "exec_failed");
        if exec_question && !matches!(exec_answer, "ran" | "not-ran") {
            return Err(EngineError::Refused(format!(
                "step `{}` is `exec once` and waits for an answer: --ran (it ran; do not run it again) or --not-ran (run it now)",
                ask.step_id
            )));
        }
        if !exec_question && !exec_answer.is_empty() {
            return Err(EngineError::Refused(format!(
                "--ran/--not-ran only answer an `exec once` step; step `{}` waits for a plain approval",
                ask.step_id
            )));
        }
        let step = ask.step_id.clone();
        self.append(
            id,
            NewEntry::new(
                &step,
                Phase::Note,
                json!({"event": "approved", "kind": what, "answer": exec_answer}),
            ),
            RunUpdate::state(RunState::Running),
        )
        .await
        .map(|_| ())?;
        self.poke();
        self.ensure_task(id);
        self.run_or_latest(id).await
    }

    fn ensure_task(&self, run_id: u64) {
        if !self.task_running() {
            self.spawn(run_id);
        }
    }

    /// `cutover pause`: the run stops at the next point it may (a wait stops now).
    pub async fn pause(&self) -> Result<RunRecord, EngineError> {
        self.control(
            "paused",
            |r| matches!(r.state, RunState::Running | RunState::WaitingApproval),
            RunUpdate::state(RunState::Paused),
            "",
        )
        .await
    }

    /// `cutover resume`.
    pub async fn resume(&self) -> Result<RunRecord, EngineError> {
        self.control(
            "resumed",
            |r| r.state == RunState::Paused,
            RunUpdate::state(RunState::Running),
            "",
        )
        .await
    }

    /// `cutover abort`: nothing more runs (an in-flight `dns`/`exec` step finishes first).
    pub async fn abort(&self, reason: &str) -> Result<RunRecord, EngineError> {
        self.control(
            "aborted",
            |r| !r.state.is_finished(),
            RunUpdate::state(RunState::Aborted),
            reason,
        )
        .await
    }

    /// `cutover rollback`: runs the fallback runbook now, also after the forward
    /// runbook finished, failed or was aborted.
    pub async fn rollback(&self, reason: &str) -> Result<RunRecord, EngineError> {
        self.control(
            "rollback",
            |r| r.direction == Direction::Forward,
            RunUpdate {
                state: Some(RunState::Running),
                direction: Some(Direction::Fallback),
                forward_blocked: Some(true),
            },
            reason,
        )
        .await
    }

    async fn control(
        &self,
        event: &'static str,
        allowed: impl Fn(&RunRecord) -> bool,
        update: RunUpdate,
        reason: &str,
    ) -> Result<RunRecord, EngineError> {
        let _g = self.inner.ops.lock().await;
        let run = self.latest().await?.ok_or(EngineError::NoRun)?;
        if !allowed(&run) {
            return Err(EngineError::Refused(format!(
                "cannot {} run {}: it is {} ({})",
                event.trim_end_matches('d'),
                run.id,
                run.state,
                run.direction.label()
            )));
        }
        self.append(
            run.id,
            NewEntry::new("", Phase::Note, json!({"event": event, "reason": reason})),
            update,
        )
        .await?;
        tracing::info!(run = run.id, event, reason, "operator request");
        if update.direction == Some(Direction::Fallback) {
            self.emit(EngineEvent::FallbackStarted {
                run_id: run.id,
                guard: String::new(),
                why: if reason.is_empty() {
                    "cutover rollback".to_string()
                } else {
                    format!("cutover rollback: {reason}")
                },
            });
        }
        self.interrupt(run.id);
        self.poke();
        if update.state == Some(RunState::Running) {
            self.ensure_task(run.id);
        }
        self.run_or_latest(run.id).await
    }

    /// A guard tripped: records the trip note and acts on it in the same
    /// journal transaction. In enforce mode `fallback` switches the run to the
    /// fallback runbook (`forward_blocked`, like `cutover rollback`), `pause`
    /// pauses it, `alert` only records; a shadow guard records what it would
    /// have done. The running step is interrupted at once if it may be (waits,
    /// soaks, verifies, gates); a `dns` or `exec` step finishes first.
    pub async fn trip(&self, t: GuardTrip) -> Result<(TripOutcome, Entry), EngineError> {
        let _g = self.inner.ops.lock().await;
        let id = t.run_id;
        let run = self
            .journal(move |j| j.run(id))
            .await?
            .ok_or(EngineError::NoRun)?;
        // Guards watch the forward runbook until the run ends.
        let live = !run.state.is_finished() && run.direction == Direction::Forward;
        let (outcome, update, effect) = match (t.mode, t.action) {
            (GuardMode::Shadow, a) => (
                TripOutcome::Shadow,
                RunUpdate::default(),
                format!("shadow guard: would have {}; nothing done", would(a)),
            ),
            (GuardMode::Enforce, GuardAction::Alert) => (
                TripOutcome::Alert,
                RunUpdate::default(),
                "alert only; the run goes on".to_string(),
            ),
            (GuardMode::Enforce, GuardAction::Pause) if live && run.state != RunState::Paused => (
                TripOutcome::Pause,
                RunUpdate::state(RunState::Paused),
                "the run is paused: `cutover resume` continues, `cutover rollback` falls back"
                    .to_string(),
            ),
            (GuardMode::Enforce, GuardAction::Pause) => (
                TripOutcome::Pause,
                RunUpdate::default(),
                format!(
                    "the run is already {} ({} runbook)",
                    run.state,
                    run.direction.label()
                ),
            ),
            (GuardMode::Enforce, GuardAction::Fallback) if live => (
                TripOutcome::Fallback,
                RunUpdate {
                    state: Some(RunState::Running),
                    direction: Some(Direction::Fallback),
                    forward_blocked: Some(true),
                },
                "the fallback runbook runs now; a forward start needs --force".to_string(),
            ),
            (GuardMode::Enforce, GuardAction::Fallback) => (
                TripOutcome::Fallback,
                RunUpdate::default(),
                format!(
                    "nothing to do: the run is {} ({} runbook)",
                    run.state,
                    run.direction.label()
                ),
            ),
        };
        let mut detail = match t.detail {
            serde_json::Value::Object(m) => serde_json::Value::Object(m),
            _ => json!({}),
        };
        for (k, v) in [
            ("event", json!("trip")),
            ("guard", json!(t.guard)),
            ("action", json!(t.action.label())),
            ("mode", json!(crate::verdict::mode_name(t.mode))),
            ("outcome", json!(outcome.label())),
            ("effect", json!(effect)),
            ("summary", json!(t.summary)),
        ] {
            detail[k] = v;
        }
        let entry = self
            .append(run.id, NewEntry::new("", Phase::Note, detail), update)
            .await?;
        metrics::counter!(m::GUARD_TRIPS, m::label::GUARD => t.guard.clone(), m::label::OUTCOME => outcome.label())
            .increment(1);
        metrics::gauge!(m::GUARD_TRIPPED, m::label::GUARD => t.guard.clone()).set(1.0);
        tracing::warn!(run = run.id, guard = %t.guard, outcome = outcome.label(), "guard tripped: {} — {effect}", t.summary);
        if update.direction == Some(Direction::Fallback) {
            self.emit(EngineEvent::FallbackStarted {
                run_id: run.id,
                guard: t.guard.clone(),
                why: t.summary.clone(),
            });
        }
        if update.state.is_some() {
            self.interrupt(run.id);
            self.poke();
            if update.state == Some(RunState::Running) {
                self.ensure_task(run.id);
            }
        }
        Ok((outcome, entry))
    }

    /// `cutover status`: the run (latest if `id` is 0).
    pub async fn status(&self, id: u64) -> Result<Option<RunStatus>, EngineError> {
        let run = match self.run_or_latest(id).await {
            Ok(r) => r,
            Err(EngineError::NoRun) => return Ok(None),
            Err(e) => return Err(e),
        };
        let rid = run.id;
        let entries = self.journal(move |j| j.entries(rid)).await?;
        let plan = plan::parse(&run.plan_path, &run.plan_text).plan;
        let live = self
            .inner
            .live
            .lock()
            .ok()
            .and_then(|l| l.clone())
            .filter(|l| l.run_id == run.id && !run.state.is_finished());
        let mut status = RunStatus {
            plan_name: plan.as_ref().map(|p| p.name.clone()).unwrap_or_default(),
            step: None,
            step_index: 0,
            step_count: 0,
            live,
            message: String::new(),
            guards: self
                .inner
                .guard_view
                .lock()
                .ok()
                .and_then(|g| g.clone())
                .filter(|g| g.run_id == run.id)
                .map(|g| g.guards)
                .unwrap_or_default(),
            run,
        };
        if let Some(p) = &plan {
            let book = runbook(p, status.run.direction);
            status.step_count = book.len() as u32;
            if !status.run.state.is_finished()
                && let Some(i) = next_step(book, &entries)
            {
                status.step = Some((book[i].id.clone(), book[i].kind()));
                status.step_index = i as u32 + 1;
            }
        }
        // The open question while one is open; otherwise the latest failure, as
        // long as it still explains where the run stands (paused, failed, or
        // on the fallback runbook).
        let state = status.run.state;
        let explains_failure = matches!(state, RunState::Paused | RunState::Failed)
            || status.run.direction == Direction::Fallback;
        status.message = entries
            .iter()
            .rev()
            .find(|e| {
                (state == RunState::WaitingApproval
                    && e.phase == Phase::Note
                    && e.str("event") == "ask")
                    || (explains_failure
                        && e.phase == Phase::Outcome
                        && e.str("result") == "failed")
                    || (explains_failure && acting_trip(e))
            })
            .map(|e| {
                if e.phase == Phase::Outcome {
                    format!("step `{}` failed: {}", e.step_id, e.str("message"))
                } else if e.str("event") == "trip" {
                    format!(
                        "guard `{}` tripped: {} — {}",
                        e.str("guard"),
                        e.str("summary"),
                        e.str("effect")
                    )
                } else {
                    e.str("question").to_string()
                }
            })
            .unwrap_or_default();
        Ok(Some(status))
    }

    /// `cutover history`: every run and the journal of one (latest if `id` is 0).
    pub async fn history(&self, id: u64) -> Result<(Vec<RunRecord>, Vec<Entry>), EngineError> {
        let runs = self.journal(|j| j.runs()).await?;
        let Some(run) = (if id == 0 {
            runs.last().cloned()
        } else {
            runs.iter().find(|r| r.id == id).cloned()
        }) else {
            return Ok((runs, vec![]));
        };
        let rid = run.id;
        let entries = self.journal(move |j| j.entries(rid)).await?;
        Ok((runs, entries))
    }

    /// Waits until the run task (if any) ends; for tests and shutdown.
    pub async fn join(&self) {
        let h = self.inner.task.lock().ok().and_then(|mut t| t.take());
        if let Some(h) = h {
            let _ = h.await;
        }
    }

    // ---------------------------------------------------------------------
    // The run task.
    // ---------------------------------------------------------------------

    async fn drive(self, run_id: u64) {
        let mut wake = self.inner.wake.subscribe();
        let run = match self.journal(move |j| j.run(run_id)).await {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(run = run_id, error = %e, "cannot read the plan run");
                return;
            }
        };
        let report = plan::parse(&run.plan_path, &run.plan_text);
        let Some(plan) = report.plan else {
            let msg = format!(
                "the stored plan text no longer checks:\n{}",
                report.render()
            );
            let _ = self
                .append(
                    run_id,
                    NewEntry::new("", Phase::Note, json!({"event": "failed", "message": msg})),
                    RunUpdate::state(RunState::Failed),
                )
                .await;
            return;
        };
        let plan = Arc::new(plan);
        if let Some(a) = &self.inner.deps.assigner {
            a.set_plan(plan.clone());
        }
        // Guards judge windows that may be longer than `[server] window`.
        self.inner
            .deps
            .evidence
            .retain_at_least(evidence::longest_guard_window_ms(&plan));
        loop {
            if self.inner.shutdown.is_cancelled() {
                return;
            }
            wake.borrow_and_update();
            let run = match self.journal(move |j| j.run(run_id)).await {
                Ok(Some(r)) => r,
                _ => return,
            };
            if run.state.is_finished() {
                // Only this run's figures: a new run may already have started.
                if let Ok(mut l) = self.inner.live.lock()
                    && l.as_ref().is_some_and(|l| l.run_id == run_id)
                {
                    *l = None;
                }
                return;
            }
            if matches!(run.state, RunState::Paused | RunState::WaitingApproval) {
                // Woken by this process's operator requests, and re-reading the
                // journal now and then for changes another process committed.
                tokio::select! {
                    _ = wake.changed() => {}
                    () = tokio::time::sleep(JOURNAL_RECHECK) => {}
                    () = self.inner.shutdown.cancelled() => return,
                }
                continue;
            }
            let entries = match self.journal(move |j| j.entries(run_id)).await {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(run = run_id, error = %e, "cannot read the journal; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let book = runbook(&plan, run.direction);
            let Some(idx) = next_step(book, &entries) else {
                self.finish(&run).await;
                continue;
            };
            if let Err(e) = self.run_step(&plan, &run, &book[idx], &entries).await {
                tracing::error!(run = run_id, step = %book[idx].id, error = %e, "journal write failed; retrying the step");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    async fn finish(&self, run: &RunRecord) {
        let _g = self.inner.ops.lock().await;
        let (event, update) = match run.direction {
            Direction::Forward => ("done", RunUpdate::state(RunState::Done)),
            Direction::Fallback => (
                "fell_back",
                RunUpdate {
                    state: Some(RunState::FellBack),
                    forward_blocked: Some(true),
                    direction: None,
                },
            ),
        };
        // Re-read under the lock: an operator may have acted meanwhile.
        let id = run.id;
        if let Ok(Some(cur)) = self.journal(move |j| j.run(id)).await
            && (cur.state != RunState::Running || cur.direction != run.direction)
        {
            return;
        }
        match self
            .append(
                run.id,
                NewEntry::new("", Phase::Note, json!({"event": event})),
                update,
            )
            .await
        {
            Ok(_) => {
                tracing::info!(run = run.id, event, "plan run finished");
                if run.direction == Direction::Fallback {
                    self.emit(EngineEvent::FallbackDone { run_id: run.id });
                }
            }
            Err(e) => tracing::error!(run = run.id, error = %e, "cannot record the end of the run"),
        }
    }

    fn set_live(&self, live: Option<Live>) {
        if let Some(l) = &live {
            deadline_gauge(&l.step_id, l.deadline_ms);
        }
        if let Ok(mut l) = self.inner.live.lock() {
            *l = live;
        }
    }

    pub(crate) fn update_live(&self, f: impl FnOnce(&mut Live)) {
        if let Ok(mut l) = self.inner.live.lock()
            && let Some(live) = l.as_mut()
        {
            let before = live.deadline_ms;
            f(live);
            if live.deadline_ms != before {
                deadline_gauge(&live.step_id, live.deadline_ms);
            }
        }
    }

    /// Runs one step (or the part of it possible now) and records what happened.
    async fn run_step(
        &self,
        plan: &Arc<Plan>,
        run: &RunRecord,
        step: &Step,
        entries: &[Entry],
    ) -> Result<(), EngineError> {
        let mine = StepHistory::of(entries, &step.id);
        let once = step.is_once();
        let repeat_side_effect = matches!(
            step.action,
            Action::Dns(_) | Action::Exec(_) | Action::Announce(_)
        );
        // `exec once` that ran and failed: running it again is the operator's call.
        if once && mine.failed_last {
            match mine.answer_after_failure.as_deref() {
                Some("ran") => {
                    return self
                        .outcome(
                            run,
                            step,
                            json!({"result": "ok", "ran": "operator marked it done after it failed"}),
                            String::new(),
                        )
                        .await;
                }
                Some("not-ran") => {} // run it again, with a new intent
                _ => {
                    return self
                        .ask(
                            run,
                            step,
                            "exec_failed",
                            format!(
                                "step `{}` (exec once: {}) ran and failed; it is not run again by itself: \
                                 `cutover approve --step {} --not-ran` runs it again, `--ran` marks it done",
                                step.id,
                                exec_line(step),
                                step.id
                            ),
                        )
                        .await;
                }
            }
        }
        // `exec once` with an open intent: it may have run. Never guess.
        if once && mine.open_intent.is_some() {
            match mine.answer_after_open.as_deref() {
                Some("ran") => {
                    return self
                        .outcome(
                            run,
                            step,
                            json!({"result": "ok", "ran": "operator says it ran"}),
                            String::new(),
                        )
                        .await;
                }
                Some("not-ran") => {} // run it now, with a new intent
                _ => {
                    return self
                        .ask(
                            run,
                            step,
                            "exec_unknown",
                            format!(
                                "step `{}` (exec once: {}) was started but the coordinator stopped before its outcome was recorded; \
                                 check whether it ran, then `cutover approve --step {} --ran` or `--not-ran`",
                                step.id,
                                exec_line(step),
                                step.id
                            ),
                        )
                        .await;
                }
            }
        }
        let started_ms = match (mine.open_intent, repeat_side_effect) {
            (Some(first), false) => first.0,
            _ => {
                let first = mine.open_intent.map(|o| o.0);
                let attempt = mine.attempts + 1;
                let e = self
                    .append(
                        run.id,
                        NewEntry::new(
                            &step.id,
                            Phase::Intent,
                            json!({
                                "kind": step.kind(),
                                "runbook": run.direction.label(),
                                "attempt": attempt,
                                "what": steps::describe(plan, step),
                            }),
                        ),
                        RunUpdate::default(),
                    )
                    .await?;
                first.unwrap_or(e.unix_ms)
            }
        };
        let deadline_ms = step.timeout.map(|t| started_ms + t.as_millis() as i64);
        self.set_live(Some(Live {
            run_id: run.id,
            step_id: step.id.clone(),
            waiting_for: String::new(),
            regions: vec![],
            deadline_ms,
            started_ms,
        }));
        let cancel = CancellationToken::new();
        let interruptible = !repeat_side_effect;
        if let Ok(mut c) = self.inner.current.lock() {
            *c = Some(Current {
                run_id: run.id,
                cancel: cancel.clone(),
                interruptible,
            });
        }
        let ctx = steps::Ctx {
            engine: self,
            plan,
            run,
            step,
            started_ms,
            deadline_ms,
            approved: mine.approved_after_open,
            cancel: cancel.clone(),
        };
        let active = metrics::gauge!(m::PLAN_STEP_ACTIVE, m::label::STEP => step.id.clone());
        active.set(1.0);
        let result = tokio::select! {
            r = steps::execute(&ctx) => r,
            () = cancel.cancelled(), if interruptible => steps::StepResult::Interrupted,
            () = self.inner.shutdown.cancelled(), if interruptible => steps::StepResult::Interrupted,
            () = self.changed_elsewhere(run), if interruptible => steps::StepResult::Interrupted,
        };
        active.set(0.0);
        deadline_gauge(&step.id, None);
        if let Ok(mut c) = self.inner.current.lock() {
            *c = None;
        }
        let ended = |outcome: &'static str| {
            metrics::counter!(m::PLAN_STEPS, m::label::STEP => step.id.clone(), m::label::OUTCOME => outcome)
                .increment(1);
        };
        match &result {
            steps::StepResult::Ok { .. } => ended("ok"),
            steps::StepResult::Failed { .. } => ended("failed"),
            _ => {}
        }
        match result {
            steps::StepResult::Ok { detail, output } => {
                let mut d = detail;
                d["result"] = json!("ok");
                self.outcome(run, step, d, output).await
            }
            steps::StepResult::Failed { message, output } => {
                self.fail(run, step, message, output).await
            }
            steps::StepResult::Ask { kind, question } => self.ask(run, step, kind, question).await,
            steps::StepResult::Interrupted => Ok(()),
        }
    }

    /// Returns once the journal says the run is no longer running this
    /// runbook: an operator request committed by another process (a standby
    /// coordinator, a second CLI path) stops a wait just like a local one.
    async fn changed_elsewhere(&self, run: &RunRecord) {
        let (id, direction) = (run.id, run.direction);
        loop {
            tokio::time::sleep(JOURNAL_RECHECK).await;
            if let Ok(Some(cur)) = self.journal(move |j| j.run(id)).await
                && (cur.state != RunState::Running || cur.direction != direction)
            {
                return;
            }
        }
    }

    async fn outcome(
        &self,
        run: &RunRecord,
        step: &Step,
        detail: serde_json::Value,
        output: String,
    ) -> Result<(), EngineError> {
        tracing::info!(run = run.id, step = %step.id, "step done");
        self.append(
            run.id,
            NewEntry {
                step_id: step.id.clone(),
                phase: Phase::Outcome,
                detail,
                output,
            },
            RunUpdate::default(),
        )
        .await?;
        Ok(())
    }

    async fn ask(
        &self,
        run: &RunRecord,
        step: &Step,
        kind: &str,
        question: String,
    ) -> Result<(), EngineError> {
        let _g = self.inner.ops.lock().await;
        let id = run.id;
        let cur = self.journal(move |j| j.run(id)).await?;
        if cur.is_some_and(|c| c.state != RunState::Running) {
            return Ok(());
        }
        tracing::warn!(run = run.id, step = %step.id, "{question}");
        self.append(
            run.id,
            NewEntry::new(
                &step.id,
                Phase::Note,
                json!({"event": "ask", "kind": kind, "question": question}),
            ),
            RunUpdate::state(RunState::WaitingApproval),
        )
        .await?;
        Ok(())
    }

    async fn fail(
        &self,
        run: &RunRecord,
        step: &Step,
        message: String,
        output: String,
    ) -> Result<(), EngineError> {
        let _g = self.inner.ops.lock().await;
        let id = run.id;
        let cur = self
            .journal(move |j| j.run(id))
            .await?
            .ok_or(EngineError::NoRun)?;
        let on_failure = step.on_failure;
        let update = if cur.state.is_finished() || cur.direction != run.direction {
            RunUpdate::default()
        } else {
            match (run.direction, on_failure) {
                (Direction::Forward, OnFailure::Fallback) => RunUpdate {
                    state: Some(RunState::Running),
                    direction: Some(Direction::Fallback),
                    forward_blocked: Some(true),
                },
                (_, OnFailure::Abort) => RunUpdate::state(RunState::Failed),
                _ => RunUpdate::state(RunState::Paused),
            }
        };
        tracing::warn!(run = run.id, step = %step.id, on_failure = on_failure.label(), "step failed: {message}");
        let why = format!("step `{}` failed: {message}", step.id);
        self.append(
            run.id,
            NewEntry {
                step_id: step.id.clone(),
                phase: Phase::Outcome,
                detail: json!({"result": "failed", "message": message, "on_failure": on_failure.label()}),
                output,
            },
            update,
        )
        .await?;
        if update.direction == Some(Direction::Fallback) {
            self.emit(EngineEvent::FallbackStarted {
                run_id: run.id,
                guard: String::new(),
                why,
            });
        }
        Ok(())
    }
}

/// How often a waiting run re-reads its state from the journal.
const JOURNAL_RECHECK: Duration = Duration::from_secs(2);

/// Every state a run can be in, for the state gauge.
const STATES: [RunState; 7] = [
    RunState::Running,
    RunState::Paused,
    RunState::WaitingApproval,
    RunState::Done,
    RunState::Failed,
    RunState::Aborted,
    RunState::FellBack,
];

fn state_gauge(state: RunState) {
    for s in STATES {
        metrics::gauge!(m::PLAN_RUN_STATE, m::label::OUTCOME => s.label()).set(if s == state {
            1.0
        } else {
            0.0
        });
    }
}

/// The run gauges of the latest run: its state, and whether it executes its
/// fallback runbook (not finished yet).
fn run_gauges(run: &RunRecord) {
    state_gauge(run.state);
    let fallback = run.direction == Direction::Fallback && !run.state.is_finished();
    metrics::gauge!(m::PLAN_FALLBACK_ACTIVE).set(if fallback { 1.0 } else { 0.0 });
}

/// When the step's limit ends, in Unix seconds; 0 without one.
fn deadline_gauge(step: &str, deadline_ms: Option<i64>) {
    if step.is_empty() {
        return;
    }
    metrics::gauge!(m::PLAN_STEP_DEADLINE, m::label::STEP => step.to_string())
        .set(deadline_ms.map_or(0.0, |d| d as f64 / 1000.0));
}

/// A trip note whose guard paused the run or switched it to the fallback runbook.
fn acting_trip(e: &Entry) -> bool {
    e.phase == Phase::Note
        && e.str("event") == "trip"
        && e.str("mode") == "enforce"
        && matches!(e.str("outcome"), "fallback" | "pause")
}

/// "fallen back", "paused", "alerted": what a shadow guard would have done.
fn would(a: GuardAction) -> &'static str {
    match a {
        GuardAction::Fallback => "fallen back",
        GuardAction::Pause => "paused the run",
        GuardAction::Alert => "alerted",
    }
}

fn exec_line(step: &Step) -> String {
    match &step.action {
        Action::Exec(e) => e.command.join(" "),
        _ => String::new(),
    }
}

/// The steps of a direction.
pub fn runbook(plan: &Plan, d: Direction) -> &[Step] {
    match d {
        Direction::Forward => &plan.steps,
        Direction::Fallback => &plan.fallback,
    }
}

/// The first step of `book` without an `ok` outcome in the journal.
pub fn next_step(book: &[Step], entries: &[Entry]) -> Option<usize> {
    book.iter().position(|s| {
        !entries
            .iter()
            .any(|e| e.phase == Phase::Outcome && e.step_id == s.id && e.str("result") == "ok")
    })
}

/// What the journal says about one step since its last outcome.
#[derive(Debug, Default)]
struct StepHistory {
    /// (time, seq) of the first intent after the last outcome.
    open_intent: Option<(i64, u64)>,
    /// Intents ever written for the step (attempts count across failures
    /// too, so the journal reads 1, 2, 3).
    attempts: u64,
    /// The operator approved after the first open intent.
    approved_after_open: bool,
    /// `exec once` answer after the latest open intent.
    answer_after_open: Option<String>,
    /// The latest outcome of the step was a failure (and nothing started since).
    failed_last: bool,
    /// `exec once` answer after that failed outcome.
    answer_after_failure: Option<String>,
}

impl StepHistory {
    fn of(entries: &[Entry], step: &str) -> Self {
        let mut h = StepHistory::default();
        for e in entries.iter().filter(|e| e.step_id == step) {
            match e.phase {
                Phase::Intent => {
                    h.attempts += 1;
                    if h.open_intent.is_none() {
                        h.open_intent = Some((e.unix_ms, e.seq));
                    }
                    h.answer_after_open = None;
                    h.failed_last = false;
                    h.answer_after_failure = None;
                }
                Phase::Outcome => {
                    h.open_intent = None;
                    h.approved_after_open = false;
                    h.answer_after_open = None;
                    h.failed_last = e.str("result") == "failed";
                    h.answer_after_failure = None;
                }
                Phase::Note if e.str("event") == "approved" && h.open_intent.is_some() => {
                    h.approved_after_open = true;
                    let a = e.str("answer");
                    if !a.is_empty() {
                        h.answer_after_open = Some(a.to_string());
                    }
                }
                Phase::Note if e.str("event") == "approved" && h.failed_last => {
                    let a = e.str("answer");
                    if !a.is_empty() {
                        h.answer_after_failure = Some(a.to_string());
                    }
                }
                Phase::Note => {}
            }
        }
        h
    }
}

/// The folder relative paths of a plan resolve against.
pub fn plan_dir(plan: &Plan) -> &Path {
    plan.path.parent().unwrap_or(Path::new("."))
}

/// Opens the journal in `data_dir` and starts the engine for `cutover serve`,
/// resuming any unfinished run.
pub async fn serve(
    config: &crate::config::Config,
    assignment: watch::Sender<Arc<cutover_proto::v1::Assignment>>,
    windows: crate::evidence::Windows,
    registry: Arc<crate::registry::Registry>,
    shutdown: CancellationToken,
) -> Result<Engine, String> {
    let journal =
        crate::journal::SqliteJournal::open(&config.server.data_dir).map_err(|e| e.to_string())?;
    let assigner = assign::Assigner::new(config.clone(), assignment);
    assigner.spawn_watch(shutdown.clone());
    let engine = Engine::new(
        Deps {
            journal: Arc::new(journal),
            evidence: Arc::new(LiveEvidence { windows, registry }),
            dns: Arc::new(RealDns),
            poll: Duration::from_secs(1),
            assigner: Some(assigner.clone()),
            sources: Arc::new(guards::RealSources::new()),
        },
        shutdown,
    );
    if engine
        .resume_unfinished()
        .await
        .map_err(|e| e.to_string())?
        .is_none()
    {
        // The latest plan's checks stay assigned after it finished (evidence
        // for the operator), also across restarts.
        if let Some(run) = engine.latest().await.map_err(|e| e.to_string())?
            && let Some(plan) = plan::parse(&run.plan_path, &run.plan_text).plan
        {
            assigner.set_plan(Arc::new(plan));
        }
    }
    engine.spawn_guard_watcher();
    Ok(engine)
}
