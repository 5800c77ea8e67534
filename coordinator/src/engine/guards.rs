//! The guard watcher: one task inside `cutover serve`, next to the run task.
//!
//! Every `[plan] tick`, while the latest run is on its forward runbook and not
//! finished (running, paused or waiting for approval), it evaluates the armed
//! guards — those whose `armed_from` step has an intent in the journal, until
//! the plan ends or the first `soak` step from there on finishes — with the
//! pure [`GuardEvaluator`] of [`crate::verdict`]:
//!
//! - probe guards over the live aggregator and the regions with connected probes;
//! - status page and Prometheus guards over the latest reading of their source,
//!   which a task per guard polls every `interval` (a slow source never delays a tick).
//!
//! What it decides goes to the journal as the **decision log**, written only
//! when something changed: one `verdict` note per guard per tick with the
//! regions whose verdict changed (each with its evidence), a `trip` note
//! (through [`Engine::trip`], which acts on it in the same transaction), a
//! `no_evidence` note when a region stays `NO_EVIDENCE` longer than
//! `[alerts] no_evidence_after`, and an `alert` note with the deliveries of
//! each alert. The guard gauges are refreshed every tick.
//!
//! Restart-safe: everything it needs is in the journal. After a restart the
//! guards re-arm from the intents; hysteresis starts again from zero, and a
//! guard with a trip note stays tripped (it never acts twice in one run).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{Engine, EngineError, EngineEvent, GuardTrip};
use crate::alerts::{self, Alert, AlertSeverity, Alerter};
use crate::dns::BoxFuture;
use crate::evidence::now_ms;
use crate::journal::{Direction, Entry, NewEntry, Phase, RunUpdate};
use crate::metrics as m;
use crate::plan::{self, Action, Guard, GuardSource, Metric, Plan};
use crate::verdict::{GuardEvaluator, RegionVerdict, Tick, Trip, Verdict};

/// How often the watcher looks for a run to watch while there is none (one
/// cheap journal read; a run just started is picked up within this).
const IDLE: Duration = Duration::from_millis(250);

/// Reads the value of a non-probe guard source (the real status page and
/// Prometheus readers, or a fake in tests).
pub trait SourceReader: Send + Sync {
    /// The source's value now: a Statuspage indicator's rank (none 0 …
    /// critical 4) or a PromQL query's single value; `Err` says why not.
    fn read<'a>(
        &'a self,
        plan: &'a Plan,
        source: &'a GuardSource,
    ) -> BoxFuture<'a, Result<f64, String>>;
}

/// One region's latest verdict for a guard, for `cutover status`.
#[derive(Debug, Clone, PartialEq)]
pub struct RegionView {
    /// Region (`global` for non-probe sources).
    pub region: String,
    /// `PASS`, `FAIL`, `NO_EVIDENCE`.
    pub verdict: &'static str,
    /// The compared value, if any.
    pub value: Option<f64>,
}

/// A guard's state now, for `cutover status`.
#[derive(Debug, Clone, PartialEq)]
pub struct GuardStatus {
    /// Guard id.
    pub guard: String,
    /// Tripped in this run.
    pub tripped: bool,
    /// Per region.
    pub regions: Vec<RegionView>,
}

/// Every armed guard of a run.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GuardView {
    /// The run.
    pub run_id: u64,
    /// Armed guards.
    pub guards: Vec<GuardStatus>,
}

/// The latest reading of a non-probe source: (read at, value or why not).
type Reading = Arc<Mutex<Option<(i64, Result<f64, String>)>>>;

/// An armed guard.
struct Armed {
    eval: GuardEvaluator,
    /// Non-probe sources: what the poller last read.
    reading: Option<Reading>,
    /// Stops the poller when the guard is disarmed.
    _poller: Option<DropGuard>,
    /// Regions in NO_EVIDENCE: since when, and whether that was reported.
    silent: BTreeMap<String, (i64, bool)>,
    /// The latest tick's regions.
    regions: Vec<RegionVerdict>,
    /// A trip whose journal write failed: tried again next tick (the
    /// evaluator reports a trip once, then stays latched).
    pending_trip: Option<Trip>,
}

/// What the watcher knows about the run it watches (rebuilt from the journal).
struct RunWatch {
    run_id: u64,
    plan: Arc<Plan>,
    /// The highest journal seq read.
    after_seq: u64,
    /// Steps with an intent.
    started: BTreeSet<String>,
    /// Steps with an `ok` outcome.
    done: BTreeSet<String>,
    /// Guards with a trip note in this run: latched.
    tripped: BTreeSet<String>,
    armed: BTreeMap<String, Armed>,
}

impl RunWatch {
    fn new(run_id: u64, plan: Arc<Plan>) -> Self {
        Self {
            run_id,
            plan,
            after_seq: 0,
            started: BTreeSet::new(),
            done: BTreeSet::new(),
            tripped: BTreeSet::new(),
            armed: BTreeMap::new(),
        }
    }

    fn absorb(&mut self, entries: &[Entry]) {
        for e in entries {
            self.after_seq = self.after_seq.max(e.seq);
            match e.phase {
                Phase::Intent => {
                    self.started.insert(e.step_id.clone());
                }
                Phase::Outcome if e.str("result") == "ok" => {
                    self.done.insert(e.step_id.clone());
                }
                Phase::Note if e.str("event") == "trip" => {
                    self.tripped.insert(e.str("guard").to_string());
                }
                _ => {}
            }
        }
    }

    /// Armed from its step's first intent until the first soak from there on finishes.
    fn is_armed(&self, g: &Guard) -> bool {
        if !self.started.contains(&g.armed_from) {
            return false;
        }
        let from = self
            .plan
            .steps
            .iter()
            .position(|s| s.id == g.armed_from)
            .unwrap_or(0);
        let soak_done = self.plan.steps[from..]
            .iter()
            .find(|s| matches!(s.action, Action::Soak { .. }))
            .is_some_and(|s| self.done.contains(&s.id));
        !soak_done
    }

    fn view(&self) -> GuardView {
        GuardView {
            run_id: self.run_id,
            guards: self
                .armed
                .iter()
                .map(|(id, a)| GuardStatus {
                    guard: id.clone(),
                    tripped: self.tripped.contains(id),
                    regions: a
                        .regions
                        .iter()
                        .map(|r| RegionView {
                            region: r.region.clone(),
                            verdict: r.verdict.label(),
                            value: r.value,
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

/// The watcher task's state.
pub(super) struct Watcher {
    engine: Engine,
    watch: Option<RunWatch>,
    /// The latest run's plan name and alert destinations (None: nowhere to send).
    alerting: Option<(u64, String, Option<Arc<Alerter>>)>,
}

impl Watcher {
    pub(super) fn new(engine: Engine) -> Self {
        Self {
            engine,
            watch: None,
            alerting: None,
        }
    }

    /// Ticks until shutdown; sends the engine's fallback alerts as they happen.
    pub(super) async fn run(mut self) {
        use tokio::sync::broadcast::error::RecvError;
        let shutdown = self.engine.inner.shutdown.clone();
        let mut events = self.engine.subscribe();
        let mut next = tokio::time::Instant::now();
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(next) => {}
                ev = events.recv() => {
                    match ev {
                        Ok(ev) => self.on_event(ev).await,
                        Err(RecvError::Lagged(n)) => {
                            tracing::warn!(missed = n, "guard watcher: engine events lost; their alerts are not sent");
                        }
                        Err(RecvError::Closed) => return,
                    }
                    continue;
                }
                () = shutdown.cancelled() => return,
            }
            if let Err(e) = self.tick().await {
                tracing::warn!(error = %e, "guard watcher: {e}; trying again next tick");
            }
            let tick = self.watch.as_ref().map_or(IDLE, |w| w.plan.tick);
            // A slow tick (journal, evaluation) skips the ticks it missed.
            next = (next + tick).max(tokio::time::Instant::now());
        }
    }

    /// Fallback started / done: alerts.
    async fn on_event(&mut self, ev: EngineEvent) {
        let (run_id, name, severity, guard, summary) = match ev {
            EngineEvent::FallbackStarted { run_id, guard, why } => (
                run_id,
                alerts::FALLBACK_STARTED,
                AlertSeverity::Critical,
                (!guard.is_empty()).then_some(guard),
                format!("run {run_id} is falling back (the fallback runbook runs now): {why}"),
            ),
            EngineEvent::FallbackDone { run_id } => (
                run_id,
                alerts::FALLBACK_DONE,
                AlertSeverity::Warning,
                None,
                format!(
                    "run {run_id} fell back: the fallback runbook ran to its end; a forward start needs --force"
                ),
            ),
        };
        self.alert(run_id, |plan| {
            Alert::new(name, severity, plan, guard.as_deref(), summary, now_ms())
        })
        .await;
    }

    /// Sends an alert about `run_id` in its own task (delivery never delays a
    /// tick) and journals the deliveries as an `alert` note.
    async fn alert(&mut self, run_id: u64, make: impl FnOnce(&str) -> Alert) {
        if self
            .alerting
            .as_ref()
            .is_none_or(|(id, _, _)| *id != run_id)
        {
            let plan = match self.watch.as_ref().filter(|w| w.run_id == run_id) {
                Some(w) => Some(w.plan.clone()),
                None => match self.engine.journal(move |j| j.run(run_id)).await {
                    Ok(Some(run)) => plan::parse(&run.plan_path, &run.plan_text)
                        .plan
                        .map(Arc::new),
                    _ => None,
                },
            };
            let Some(plan) = plan else {
                return;
            };
            let alerter = match Alerter::new(&plan) {
                Ok(a) if !a.is_empty() => Some(Arc::new(a)),
                Ok(_) => None,
                Err(e) => {
                    tracing::error!(run = run_id, "alerts cannot be sent: {e}");
                    None
                }
            };
            self.alerting = Some((run_id, plan.name.clone(), alerter));
        }
        let Some((_, plan_name, Some(alerter))) = &self.alerting else {
            return;
        };
        let alert = make(plan_name);
        let alerter = alerter.clone();
        let engine = self.engine.clone();
        tokio::spawn(async move {
            let delivered = alerter.send(&alert).await;
            for d in &delivered {
                let outcome = if d.ok { "sent" } else { "failed" };
                metrics::counter!(m::ALERTS, m::label::OUTCOME => outcome).increment(1);
            }
            let note = json!({
                "event": "alert",
                "name": alert.name,
                "guard": alert.guard,
                "summary": alert.summary,
                "delivered": delivered,
            });
            if let Err(e) = engine
                .append(
                    run_id,
                    NewEntry::new("", Phase::Note, note),
                    RunUpdate::default(),
                )
                .await
            {
                tracing::error!(run = run_id, error = %e, "cannot journal the alert's deliveries");
            }
        });
    }

    fn set_view(&self, view: Option<GuardView>) {
        if let Ok(mut v) = self.engine.inner.guard_view.lock() {
            *v = view;
        }
    }

    /// One evaluation of every armed guard of the latest run.
    pub(super) async fn tick(&mut self) -> Result<(), EngineError> {
        let engine = self.engine.clone();
        let Some(run) = engine.latest().await? else {
            self.watch = None;
            return Ok(());
        };
        if self.watch.as_ref().is_none_or(|w| w.run_id != run.id) {
            self.watch = None;
            self.set_view(None);
            if run.state.is_finished() {
                return Ok(());
            }
            let Some(plan) = plan::parse(&run.plan_path, &run.plan_text).plan else {
                // The run task records why; nothing to watch.
                return Ok(());
            };
            for g in &plan.guards {
                metrics::gauge!(m::GUARD_TRIPPED, m::label::GUARD => g.id.clone()).set(0.0);
            }
            engine
                .inner
                .deps
                .evidence
                .retain_at_least(super::evidence::longest_guard_window_ms(&plan));
            self.watch = Some(RunWatch::new(run.id, Arc::new(plan)));
        }
        let Some(w) = self.watch.as_mut() else {
            return Ok(());
        };
        let (id, after) = (run.id, w.after_seq);
        let new = engine.journal(move |j| j.entries_after(id, after)).await?;
        w.absorb(&new);
        for t in &w.tripped {
            metrics::gauge!(m::GUARD_TRIPPED, m::label::GUARD => t.clone()).set(1.0);
        }
        if run.direction != Direction::Forward || run.state.is_finished() {
            // Disarmed: the pollers stop with their guards.
            w.armed.clear();
            self.set_view(None);
            return Ok(());
        }
        self.arm();
        let Some(w) = self.watch.as_mut() else {
            return Ok(());
        };
        if w.armed.is_empty() {
            self.set_view(None);
            return Ok(());
        }
        let now = now_ms();
        let ticks = evaluate(&engine, w, now);
        for (guard, t) in ticks {
            self.record(&guard, t, now).await?;
        }
        let view = self.watch.as_ref().map(RunWatch::view);
        self.set_view(view);
        Ok(())
    }

    /// Arms the guards whose step started, disarms those whose soak ended.
    fn arm(&mut self) {
        let Some(w) = self.watch.as_mut() else {
            return;
        };
        let plan = w.plan.clone();
        for g in &plan.guards {
            let should = w.is_armed(g);
            if should && !w.armed.contains_key(&g.id) {
                tracing::info!(run = w.run_id, guard = %g.id, from = %g.armed_from, "guard armed");
                metrics::gauge!(m::GUARD_THRESHOLD, m::label::GUARD => g.id.clone())
                    .set(g.condition.threshold);
                let (reading, poller) = if g.is_probe() {
                    (None, None)
                } else {
                    let reading: Reading = Arc::new(Mutex::new(None));
                    let stop = self.engine.inner.shutdown.child_token();
                    spawn_poller(
                        self.engine.inner.deps.sources.clone(),
                        plan.clone(),
                        g.clone(),
                        reading.clone(),
                        stop.clone(),
                    );
                    (Some(reading), Some(stop.drop_guard()))
                };
                w.armed.insert(
                    g.id.clone(),
                    Armed {
                        eval: GuardEvaluator::new(g.clone()),
                        reading,
                        _poller: poller,
                        silent: BTreeMap::new(),
                        regions: Vec::new(),
                        pending_trip: None,
                    },
                );
            } else if !should && w.armed.remove(&g.id).is_some() {
                tracing::info!(run = w.run_id, guard = %g.id, "guard disarmed: its soak finished");
            }
        }
    }

    /// Metrics, the decision log and the trip of one guard's tick.
    async fn record(&mut self, guard: &str, t: Tick, now: i64) -> Result<(), EngineError> {
        let engine = self.engine.clone();
        let Some(w) = self.watch.as_mut() else {
            return Ok(());
        };
        let run_id = w.run_id;
        let no_evidence_after = w.plan.alerts.no_evidence_after.as_millis() as i64;
        let tripped_before = w.tripped.contains(guard);
        let Some(a) = w.armed.get_mut(guard) else {
            return Ok(());
        };
        let condition = condition_text(a.eval.guard());
        publish(guard, &t, tripped_before || t.trip.is_some());
        // NO_EVIDENCE that lasts: reported once per stretch.
        let mut silent_notes = Vec::new();
        for r in &t.regions {
            if r.verdict == Verdict::NoEvidence {
                let (since, reported) = a.silent.entry(r.region.clone()).or_insert((now, false));
                if !*reported && now - *since >= no_evidence_after {
                    *reported = true;
                    silent_notes.push(json!({
                        "event": "no_evidence",
                        "guard": guard,
                        "region": r.region,
                        "since_ms": *since,
                        "reason": r.reason,
                    }));
                }
            } else {
                a.silent.remove(&r.region);
            }
        }
        a.regions = t.regions.clone();
        // Latched guards (a trip note in the journal) never act twice.
        let trip = match t.trip {
            Some(trip) if !tripped_before => Some(trip),
            _ => a.pending_trip.take(),
        };
        // A journal write that fails loses that note (logged), never the trip after it.
        if !t.changes.is_empty() {
            let changes: Vec<serde_json::Value> = t
                .changes
                .iter()
                .map(|c| {
                    let mut v = serde_json::to_value(&c.to).unwrap_or_else(|_| json!({}));
                    v["from"] = json!(c.from.map(Verdict::label));
                    v
                })
                .collect();
            engine
                .append(
                    run_id,
                    NewEntry::new(
                        "",
                        Phase::Note,
                        json!({
                            "event": "verdict",
                            "guard": guard,
                            "condition": condition,
                            "at_ms": t.at_ms,
                            "failing": t.failing,
                            "consecutive": t.consecutive,
                            "changes": changes,
                        }),
                    ),
                    RunUpdate::default(),
                )
                .await
                .map_err(|e| tracing::error!(run = run_id, guard, error = %e, "cannot journal verdict changes"))
                .ok();
        }
        let after = plan::human_duration(Duration::from_millis(no_evidence_after as u64));
        for note in silent_notes {
            let region = note["region"].as_str().unwrap_or("").to_string();
            let reason = note["reason"].as_str().unwrap_or("").to_string();
            tracing::warn!(
                run = run_id,
                guard,
                region,
                "guard region without evidence for {after}: {reason}"
            );
            engine
                .append(
                    run_id,
                    NewEntry::new("", Phase::Note, note),
                    RunUpdate::default(),
                )
                .await
                .map_err(|e| tracing::error!(run = run_id, guard, error = %e, "cannot journal a lasting NO_EVIDENCE"))
                .ok();
            let summary = format!("no evidence from {region} for {after}: {reason}");
            self.alert(run_id, |plan| {
                Alert::new(
                    alerts::GUARD_NO_EVIDENCE,
                    AlertSeverity::Warning,
                    plan,
                    Some(guard),
                    summary,
                    now,
                )
                .with_description(
                    "NO_EVIDENCE never trips a guard: while it lasts, this guard cannot see a fault in that region",
                )
            })
            .await;
        }
        if let Some(trip) = trip {
            let mut detail = serde_json::to_value(&trip).unwrap_or_else(|_| json!({}));
            detail["condition"] = json!(condition);
            let acted = engine
                .trip(GuardTrip {
                    run_id,
                    guard: guard.to_string(),
                    action: trip.action,
                    mode: trip.mode,
                    summary: trip.summary.clone(),
                    detail,
                })
                .await;
            let (outcome, note) = match acted {
                Ok(done) => {
                    if let Some(w) = self.watch.as_mut() {
                        w.tripped.insert(guard.to_string());
                    }
                    done
                }
                Err(e) => {
                    if let Some(a) = self.watch.as_mut().and_then(|w| w.armed.get_mut(guard)) {
                        a.pending_trip = Some(trip);
                    }
                    return Err(e);
                }
            };
            // A shadow guard is on trial: it logs, it pages nobody.
            if outcome != super::TripOutcome::Shadow {
                let description = format!("action {}: {}", trip.action.label(), note.str("effect"));
                let details = json!({
                    "kind": trip.kind.label(),
                    "action": trip.action.label(),
                    "condition": condition,
                    "regions": trip.regions,
                });
                self.alert(run_id, |plan| {
                    Alert::new(
                        alerts::GUARD_TRIPPED,
                        AlertSeverity::Critical,
                        plan,
                        Some(guard),
                        trip.summary.clone(),
                        trip.at_ms,
                    )
                    .with_description(description)
                    .with_details(details)
                })
                .await;
            }
        }
        Ok(())
    }
}

/// `error_ratio > 0.5`, `indicator >= major`: the condition as written.
pub fn condition_text(g: &Guard) -> String {
    let c = &g.condition;
    let threshold = match c.metric {
        Metric::Indicator => ["none", "minor", "maintenance", "major", "critical"]
            .get(c.threshold as usize)
            .map_or_else(|| c.threshold.to_string(), |s| s.to_string()),
        _ => c.threshold.to_string(),
    };
    format!("{} {} {threshold}", c.metric.label(), c.op.symbol())
}

/// Evaluates every armed guard once: probe guards under one lock of the windows.
fn evaluate(engine: &Engine, w: &mut RunWatch, now: i64) -> Vec<(String, Tick)> {
    let evidence = &engine.inner.deps.evidence;
    let mut ticks = Vec::with_capacity(w.armed.len());
    if w.armed.values().any(|a| a.eval.guard().is_probe()) {
        let connected = evidence.connected_regions();
        evidence.with_aggregator(&mut |agg| {
            for (id, a) in w
                .armed
                .iter_mut()
                .filter(|(_, a)| a.eval.guard().is_probe())
            {
                ticks.push((id.clone(), a.eval.tick_probes(agg, now, &connected)));
            }
        });
    }
    for (id, a) in w.armed.iter_mut() {
        if let Some(r) = &a.reading {
            let latest = r.lock().ok().and_then(|l| l.clone());
            ticks.push((id.clone(), a.eval.tick_reading(now, latest.as_ref())));
        }
    }
    ticks
}

/// The guard gauges for one tick.
fn publish(guard: &str, t: &Tick, tripped: bool) {
    for r in &t.regions {
        metrics::gauge!(m::GUARD_VERDICT, m::label::GUARD => guard.to_string(), m::label::REGION => r.region.clone())
            .set(r.verdict.gauge());
        metrics::gauge!(m::GUARD_VALUE, m::label::GUARD => guard.to_string(), m::label::REGION => r.region.clone())
            .set(r.value.unwrap_or(f64::NAN));
    }
    metrics::gauge!(m::GUARD_FAILING_REGIONS, m::label::GUARD => guard.to_string())
        .set(f64::from(t.failing));
    metrics::gauge!(m::GUARD_TRIPPED, m::label::GUARD => guard.to_string()).set(if tripped {
        1.0
    } else {
        0.0
    });
}

/// `cutover_status_page_indicator{guard}` for a status page guard's reading:
/// the rank, or NaN when unknown (unreadable, or nobody reads it any more).
fn indicator_gauge(guard: &Guard, read: Option<&Result<f64, String>>) {
    if matches!(guard.source, GuardSource::StatusPage { .. }) {
        let rank = match read {
            Some(Ok(v)) => *v,
            _ => f64::NAN,
        };
        metrics::gauge!(m::STATUS_PAGE_INDICATOR, m::label::GUARD => guard.id.clone()).set(rank);
    }
}

/// Reads a non-probe source every `guard.interval` until `stop`.
fn spawn_poller(
    sources: Arc<dyn SourceReader>,
    plan: Arc<Plan>,
    guard: Guard,
    reading: Reading,
    stop: CancellationToken,
) {
    tokio::spawn(async move {
        loop {
            let read = tokio::select! {
                r = tokio::time::timeout(guard.interval.max(Duration::from_secs(1)), sources.read(&plan, &guard.source)) => {
                    r.unwrap_or_else(|_| Err(format!("no answer within {}", plan::human_duration(guard.interval.max(Duration::from_secs(1))))))
                }
                () = stop.cancelled() => break,
            };
            if let Err(e) = &read {
                tracing::debug!(guard = %guard.id, error = %e, "guard source unreadable");
            }
            indicator_gauge(&guard, Some(&read));
            if let Ok(mut r) = reading.lock() {
                *r = Some((now_ms(), read));
            }
            tokio::select! {
                () = tokio::time::sleep(guard.interval) => {}
                () = stop.cancelled() => break,
            }
        }
        // Disarmed: a page nobody watches has no known state (and a stale
        // "major" must not keep CutoverProviderDegraded firing).
        indicator_gauge(&guard, None);
    });
}

/// The real readers ([`crate::sources`]): Statuspage JSON and the Prometheus HTTP API.
pub struct RealSources {
    client: Result<reqwest::Client, String>,
}

impl RealSources {
    /// One HTTP client for every guard (10 s limit per read).
    pub fn new() -> Self {
        Self {
            client: crate::sources::http_client(Duration::from_secs(10)),
        }
    }
}

impl Default for RealSources {
    fn default() -> Self {
        Self::new()
    }
}

impl SourceReader for RealSources {
    fn read<'a>(
        &'a self,
        _plan: &'a Plan,
        source: &'a GuardSource,
    ) -> BoxFuture<'a, Result<f64, String>> {
        Box::pin(async move {
            match &self.client {
                Ok(c) => crate::sources::read(c, source).await,
                Err(e) => Err(e.clone()),
            }
        })
    }
}

impl Engine {
    /// Starts the guard watcher (once per coordinator, next to the run task).
    pub fn spawn_guard_watcher(&self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(Watcher::new(self.clone()).run())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(name: &str, verdict: Verdict, value: Option<f64>) -> RegionVerdict {
        RegionVerdict {
            region: name.into(),
            verdict,
            value,
            threshold: 0.5,
            voters: 3,
            probes_seen: 3,
            failing_probes: 0,
            samples: 9,
            excluded: vec![],
            reason: String::new(),
        }
    }

    #[test]
    fn the_guard_metrics_read_as_documented_and_pass_promtool() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let tick = Tick {
            at_ms: 0,
            regions: vec![
                region("asia", Verdict::Fail, Some(1.0)),
                region("eu", Verdict::Pass, Some(0.0)),
                region("us", Verdict::NoEvidence, None),
            ],
            failing: 1,
            consecutive: 1,
            changes: vec![],
            trip: None,
        };
        metrics::with_local_recorder(&recorder, || {
            m::describe();
            publish("install-new", &tick, true);
            metrics::counter!(m::GUARD_TRIPS, m::label::GUARD => "install-new", m::label::OUTCOME => "fallback").increment(1);
            metrics::counter!(m::ALERTS, m::label::OUTCOME => "sent").increment(2);
            // Set by the watcher (arm, pollers) and the run task; here for the exposition.
            metrics::gauge!(m::GUARD_THRESHOLD, m::label::GUARD => "install-new").set(0.5);
            metrics::gauge!(m::STATUS_PAGE_INDICATOR, m::label::GUARD => "provider").set(3.0);
            metrics::gauge!(m::STATUS_PAGE_INDICATOR, m::label::GUARD => "cdn").set(f64::NAN);
            metrics::gauge!(m::PLAN_FALLBACK_ACTIVE).set(1.0);
            metrics::gauge!(m::PLAN_STEP_DEADLINE, m::label::STEP => "soak").set(1.8e9);
        });
        let text = handle.render();
        for line in [
            "cutover_guard_verdict{guard=\"install-new\",region=\"asia\"} 1",
            "cutover_guard_verdict{guard=\"install-new\",region=\"eu\"} 0",
            "cutover_guard_verdict{guard=\"install-new\",region=\"us\"} -1",
            "cutover_guard_value{guard=\"install-new\",region=\"asia\"} 1",
            "cutover_guard_value{guard=\"install-new\",region=\"us\"} NaN",
            "cutover_guard_failing_regions{guard=\"install-new\"} 1",
            "cutover_guard_tripped{guard=\"install-new\"} 1",
            "cutover_guard_trips_total{guard=\"install-new\",outcome=\"fallback\"} 1",
            "cutover_alerts_total{outcome=\"sent\"} 2",
            "cutover_guard_threshold{guard=\"install-new\"} 0.5",
            "cutover_status_page_indicator{guard=\"provider\"} 3",
            "cutover_status_page_indicator{guard=\"cdn\"} NaN",
            "cutover_plan_fallback_active 1",
            "cutover_plan_step_deadline_timestamp_seconds{step=\"soak\"} 1800000000",
        ] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
        let promtool = std::path::Path::new("/usr/bin/promtool");
        if !promtool.exists() {
            eprintln!("promtool not installed; skipping `promtool check metrics`");
            return;
        }
        use std::io::Write;
        let mut child = std::process::Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool check metrics:\n{}{}\n{text}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
