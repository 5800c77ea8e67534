//! The operator's plan commands, talking to the running coordinator:
//! `cutover start FILE`, `approve`, `pause`, `resume`, `abort`, `rollback`,
//! `history`, `why`, and the plan section `cutover status` shows above the evidence.
//!
//! CLI glue: errors are `anyhow`; the rendering functions are pure so tests
//! can pin what an operator reads.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use cutover_proto::v1;

use crate::cli::utc;
use crate::localtime::Zone;

/// The plan subcommands (flattened into `cutover`'s command list).
#[derive(Debug, Subcommand)]
pub enum RunCommand {
    /// Start running a plan file in the coordinator (checked first; warnings are shown).
    Start {
        /// The plan file (TOML). Its text is sent, so the coordinator runs exactly this version.
        file: PathBuf,
        /// Start even though the latest run fell back.
        #[arg(long)]
        force: bool,
    },
    /// Answer the step the plan waits on (an `approve` step, a `manual` DNS change, an
    /// `exec once` step whose outcome is unknown).
    Approve {
        /// The step being answered (default: the one waiting).
        #[arg(long, value_name = "ID")]
        step: Option<String>,
        /// For an `exec once` step: it did run; do not run it again.
        #[arg(long, conflicts_with = "not_ran")]
        ran: bool,
        /// For an `exec once` step: it did not run; run it now.
        #[arg(long)]
        not_ran: bool,
    },
    /// Stop the plan at the next safe point (a wait stops now; a dns or exec step finishes first).
    Pause,
    /// Continue a paused plan (a failed step is tried again; a failed `exec once` step asks first).
    Resume,
    /// End the plan: nothing more runs (a dns or exec step in flight finishes first).
    Abort {
        /// Why, for the journal.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Run the fallback runbook now (also after the plan finished).
    Rollback {
        /// Why, for the journal.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// The journal of a run: every transition with its time and outcome.
    History {
        /// Run id (default: the latest).
        #[arg(long)]
        run: Option<u64>,
        /// Include captured command output.
        #[arg(long)]
        output: bool,
    },
    /// Why the plan fell back or paused: the latest guard trip in plain words, with its
    /// evidence per region, then the recent verdict changes (the decision log).
    Why {
        /// Run id (default: the latest).
        #[arg(long)]
        run: Option<u64>,
    },
}

type Admin = crate::cli::Admin;

fn rpc(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("the coordinator refused: {}", s.message())
}

/// Runs one plan subcommand against the coordinator.
/// The journal of run `run` (latest when `None`); an error when no run exists yet.
async fn history(client: &mut Admin, run: Option<u64>) -> Result<v1::HistoryReply> {
    let r = client
        .history(v1::HistoryRequest {
            run_id: run.unwrap_or(0),
        })
        .await
        .map_err(rpc)?
        .into_inner();
    if r.runs.is_empty() {
        bail!("no plan run yet: start one with `cutover start FILE`");
    }
    Ok(r)
}

pub async fn run(cmd: &RunCommand, client: &mut Admin) -> Result<()> {
    match cmd {
        RunCommand::Start { file, force } => {
            let content = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read plan file {}", file.display()))?;
            let path = std::path::absolute(file).unwrap_or_else(|_| file.clone());
            let reply = client
                .start_plan(v1::StartPlanRequest {
                    path: path.display().to_string(),
                    content,
                    force: *force,
                })
                .await
                .map_err(rpc)?
                .into_inner();
            for w in &reply.warnings {
                println!("{w}");
            }
            println!(
                "started run {} of {} — follow it with `cutover status`",
                reply.run_id,
                file.display()
            );
            Ok(())
        }
        RunCommand::Approve { step, ran, not_ran } => {
            let answer = match (ran, not_ran) {
                (true, _) => "ran",
                (_, true) => "not-ran",
                _ => "",
            };
            let r = client
                .approve(v1::ApproveRequest {
                    step_id: step.clone().unwrap_or_default(),
                    exec_answer: answer.into(),
                })
                .await
                .map_err(rpc)?
                .into_inner();
            println!("approved; run {} is {}", r.run_id, r.state);
            Ok(())
        }
        RunCommand::Pause | RunCommand::Resume | RunCommand::Abort { .. } => {
            let r = match cmd {
                RunCommand::Pause => client.pause(v1::PauseRequest {}).await,
                RunCommand::Resume => client.resume(v1::ResumeRequest {}).await,
                RunCommand::Abort { reason } => {
                    client
                        .abort(v1::AbortRequest {
                            reason: reason.clone(),
                        })
                        .await
                }
                _ => unreachable!("matched above"),
            }
            .map_err(rpc)?
            .into_inner();
            println!("run {} is {}", r.run_id, r.state);
            Ok(())
        }
        RunCommand::Rollback { reason } => {
            let r = client
                .rollback(v1::RollbackRequest {
                    reason: reason.clone(),
                })
                .await
                .map_err(rpc)?
                .into_inner();
            println!(
                "run {} is rolling back (fallback runbook), state {}",
                r.run_id, r.state
            );
            Ok(())
        }
        RunCommand::History { run, output } => {
            let r = history(client, *run).await?;
            print!("{}", render_history(&r, *output));
            Ok(())
        }
        RunCommand::Why { run } => {
            let r = history(client, *run).await?;
            if r.entries.is_empty() {
                bail!(
                    "no run {} in the journal; `cutover history` lists the runs",
                    run.unwrap_or(0)
                );
            }
            print!("{}", render_why(&r, &Zone::local()));
            Ok(())
        }
    }
}

/// The plan section of `cutover status` ("" when no run exists or the
/// coordinator has no engine).
pub async fn status_section(client: &mut Admin) -> String {
    match client
        .plan_status(v1::PlanStatusRequest { run_id: 0 })
        .await
    {
        Ok(r) => match r.into_inner().run {
            Some(run) => render_plan_status(&run),
            None => String::new(),
        },
        Err(_) => String::new(),
    }
}

fn bar(fraction: f64, width: usize) -> String {
    let f = fraction.clamp(0.0, 1.0);
    let full = (f * width as f64).round() as usize;
    format!("[{}{}]", "#".repeat(full), ".".repeat(width - full))
}

fn left(ms: i64) -> String {
    let s = (ms.max(0) + 999) / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// The plan section: run, state, step, what it waits for, per-region progress, time left.
pub fn render_plan_status(r: &v1::PlanRunStatus) -> String {
    let mut out = format!(
        "plan {} (run {}, {}), {} runbook: {}{}\n",
        if r.plan_name.is_empty() {
            &r.plan_path
        } else {
            &r.plan_name
        },
        r.run_id,
        &r.plan_sha256.get(..12).unwrap_or(""),
        r.direction,
        r.state.to_uppercase(),
        if r.forward_blocked {
            " (fell back: a forward start needs --force)"
        } else {
            ""
        }
    );
    if !r.step_id.is_empty() {
        out.push_str(&format!(
            "  step {}/{}: {} ({})",
            r.step_index, r.step_count, r.step_id, r.step_kind
        ));
        if r.step_deadline_unix_ms > 0 {
            out.push_str(&format!(
                ", {} left",
                left(r.step_deadline_unix_ms - r.now_unix_ms)
            ));
        }
        out.push('\n');
    }
    if !r.waiting_for.is_empty() {
        out.push_str(&format!("  waiting for: {}\n", r.waiting_for));
    }
    let width = r.regions.iter().map(|g| g.region.len()).max().unwrap_or(0);
    for g in &r.regions {
        let fraction = match g.unit.as_str() {
            // Lower is better: full when at or under the target.
            "ttl_seconds" if g.value > 0.0 => (g.target / g.value).min(1.0),
            "ttl_seconds" => 1.0,
            _ if g.target > 0.0 => g.value / g.target,
            _ => 1.0,
        };
        out.push_str(&format!(
            "    {:width$}  {} {}  {}\n",
            g.region,
            bar(if g.done { 1.0 } else { fraction.min(0.99) }, 20),
            if g.done { "ok     " } else { "waiting" },
            g.detail,
        ));
    }
    out.push_str(&render_guards(&r.guards));
    if !r.message.is_empty() {
        out.push_str(&format!("  {}\n", r.message.replace('\n', "\n  ")));
    }
    out.push('\n');
    out
}

/// One line per armed guard: its regions' verdicts, and whether it tripped.
fn render_guards(guards: &[v1::GuardVerdict]) -> String {
    let mut out = String::new();
    let width = guards.iter().map(|g| g.guard.len()).max().unwrap_or(0);
    let mut i = 0;
    while i < guards.len() {
        let name = &guards[i].guard;
        let n = guards[i..].iter().take_while(|g| &g.guard == name).count();
        let regions: Vec<String> = guards[i..i + n]
            .iter()
            .map(|g| {
                if g.has_value {
                    format!(
                        "{} {} {}",
                        g.region,
                        g.verdict,
                        num(&serde_json::json!(g.value))
                    )
                } else {
                    format!("{} {}", g.region, g.verdict)
                }
            })
            .collect();
        out.push_str(&format!(
            "  guard {name:width$}  {}{}\n",
            regions.join(" · "),
            if guards[i].tripped {
                "  TRIPPED (`cutover why`)"
            } else {
                ""
            }
        ));
        i += n;
    }
    out
}

fn describe(e: &v1::JournalEntry) -> String {
    let d: serde_json::Value = serde_json::from_str(&e.detail_json).unwrap_or_default();
    let s = |k: &str| d.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
    match e.phase.as_str() {
        "intent" => {
            let attempt = d.get("attempt").and_then(|v| v.as_u64()).unwrap_or(1);
            let mut t = format!("start {}", s("kind"));
            if attempt > 1 {
                t.push_str(&format!(" (attempt {attempt})"));
            }
            let what = s("what");
            if !what.is_empty() {
                t.push_str(&format!(": {what}"));
            }
            t
        }
        "outcome" => match s("result").as_str() {
            "ok" => {
                let mut t = "OK".to_string();
                if let Some(v) = d.get("verified").and_then(|v| v.as_str()) {
                    t.push_str(&format!(" — {v}"));
                }
                if let Some(v) = d.get("ran").and_then(|v| v.as_str()) {
                    t.push_str(&format!(" — {v}"));
                }
                t
            }
            "failed" => format!("FAILED ({} follows): {}", s("on_failure"), s("message")),
            other => other.to_string(),
        },
        _ => {
            let event = s("event");
            if let Some(t) = describe_guard_note(&event, &d) {
                return t;
            }
            let mut t = event.replace('_', " ");
            for k in ["reason", "question", "answer", "message"] {
                let v = s(k);
                if !v.is_empty() {
                    t.push_str(&format!(": {v}"));
                }
            }
            t
        }
    }
}

fn js<'a>(d: &'a serde_json::Value, k: &str) -> &'a str {
    d.get(k).and_then(|v| v.as_str()).unwrap_or("")
}

/// A value as guards compare it: ratios with two decimals, milliseconds whole.
fn num(v: &serde_json::Value) -> String {
    match v.as_f64() {
        Some(x) if x.abs() >= 100.0 => format!("{x:.0}"),
        Some(x) => format!("{x:.2}"),
        None => "-".to_string(),
    }
}

/// `PASS`, `FAIL`, `NO_EVIDENCE` with its value or reason, e.g. `FAIL 1.00` or
/// `NO_EVIDENCE (1 of 2 probes needed)`.
fn verdict_words(r: &serde_json::Value) -> String {
    let verdict = js(r, "verdict");
    let reason = js(r, "reason");
    match r.get("value") {
        Some(v) if !v.is_null() => format!("{verdict} {}", num(v)),
        _ if !reason.is_empty() => format!("{verdict} ({reason})"),
        _ => verdict.to_string(),
    }
}

/// The guard notes (`verdict`, `trip`, `no_evidence`, `alert`) on one line each.
fn describe_guard_note(event: &str, d: &serde_json::Value) -> Option<String> {
    let guard = js(d, "guard");
    Some(match event {
        "verdict" => {
            let changes: Vec<String> = d
                .get("changes")
                .and_then(|c| c.as_array())
                .map(|c| {
                    c.iter()
                        .map(|c| {
                            let from = c.get("from").and_then(|f| f.as_str()).unwrap_or("-");
                            format!("{} {from} → {}", js(c, "region"), verdict_words(c))
                        })
                        .collect()
                })
                .unwrap_or_default();
            format!("verdict {guard}: {}", changes.join(", "))
        }
        "trip" => {
            let mode = if js(d, "mode") == "shadow" {
                " (shadow)"
            } else {
                ""
            };
            format!(
                "TRIP {guard}{mode} [{}]: {} — {}",
                js(d, "action"),
                js(d, "summary"),
                js(d, "effect")
            )
        }
        "no_evidence" => format!(
            "no evidence: {guard} in {} since {}: {}",
            js(d, "region"),
            utc(d.get("since_ms").and_then(|v| v.as_i64()).unwrap_or(0)),
            js(d, "reason")
        ),
        "alert" => format!("alert {}: {}", js(d, "name"), deliveries(d)),
        _ => return None,
    })
}

/// `sent to chat, am; failed feed (HTTP 500)`.
fn deliveries(d: &serde_json::Value) -> String {
    let list = d
        .get("delivered")
        .and_then(|v| v.as_array())
        .cloned()
        .unwrap_or_default();
    if list.is_empty() {
        return "no destination".to_string();
    }
    let sent: Vec<&str> = list
        .iter()
        .filter(|x| x.get("ok").and_then(|v| v.as_bool()).unwrap_or(false))
        .map(|x| js(x, "destination"))
        .collect();
    let failed: Vec<String> = list
        .iter()
        .filter(|x| !x.get("ok").and_then(|v| v.as_bool()).unwrap_or(false))
        .map(|x| format!("{} ({})", js(x, "destination"), js(x, "detail")))
        .collect();
    let mut parts = Vec::new();
    if !sent.is_empty() {
        parts.push(format!("sent to {}", sent.join(", ")));
    }
    if !failed.is_empty() {
        parts.push(format!("failed {}", failed.join(", ")));
    }
    parts.join("; ")
}

/// The evidence of one region at a trip: verdict, value against the
/// threshold, voters and samples, and each excluded probe with the reason.
fn region_lines(r: &serde_json::Value, op: &str, width: usize, out: &mut String) {
    let u = |k: &str| r.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
    let verdict = js(r, "verdict");
    let mut line = format!("    {:width$}  {:<11}", js(r, "region"), verdict);
    match r.get("value") {
        Some(v) if !v.is_null() => {
            let threshold = r.get("threshold").map(num).unwrap_or_default();
            line.push_str(&format!(
                "  {} (limit {op} {threshold})  {} of {} probes voted, {} failing, {} samples",
                num(v),
                u("voters"),
                u("probes_seen"),
                u("failing_probes"),
                u("samples")
            ));
        }
        _ => {
            let reason = js(r, "reason");
            line.push_str(&format!(
                "  {}",
                if reason.is_empty() {
                    "no results"
                } else {
                    reason
                }
            ));
        }
    }
    out.push_str(line.trim_end());
    out.push('\n');
    for x in r
        .get("excluded")
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
    {
        out.push_str(&format!(
            "    {:width$}  excluded {}: {}\n",
            "",
            js(x, "probe"),
            js(x, "reason")
        ));
    }
}

/// What a trip note says happened, as the start of a sentence.
fn trip_verb(d: &serde_json::Value) -> String {
    let effect = js(d, "effect");
    match (js(d, "mode"), js(d, "outcome")) {
        ("shadow", _) => match js(d, "action") {
            "fallback" => "would have fallen back".into(),
            "pause" => "would have paused".into(),
            _ => "would have alerted".into(),
        },
        (_, "fallback") if effect.starts_with("the fallback") => "fell back".into(),
        (_, "pause") if effect.starts_with("the run is paused") => "paused".into(),
        (_, "alert") => "alerted".into(),
        _ => format!("tripped ({effect})"),
    }
}

/// Whether a trip note changed the run (the engine writes "nothing to do …"
/// or "the run is already …" as the effect of one that did not).
fn trip_acted(d: &serde_json::Value) -> bool {
    let effect = js(d, "effect");
    !(effect.starts_with("nothing to do") || effect.starts_with("the run is already"))
}

/// How many decisions `cutover why` lists after the trip.
const WHY_RECENT: usize = 20;

/// `cutover why`: the latest trip of the run in plain words with its local
/// time and per-region evidence, shadow guards' "would have" trips, then the
/// most recent decisions (verdict changes, long silences, alerts).
pub fn render_why(r: &v1::HistoryReply, zone: &Zone) -> String {
    let Some(first) = r.entries.first() else {
        return "no journal entries\n".to_string();
    };
    let run_id = first.run_id;
    let notes: Vec<(&v1::JournalEntry, serde_json::Value)> = r
        .entries
        .iter()
        .filter(|e| e.phase == "note")
        .filter_map(|e| Some((e, serde_json::from_str(&e.detail_json).ok()?)))
        .collect();
    let trips: Vec<&(&v1::JournalEntry, serde_json::Value)> = notes
        .iter()
        .filter(|(_, d)| js(d, "event") == "trip")
        .collect();
    let when = |e: &v1::JournalEntry, d: &serde_json::Value| {
        d.get("at_ms").and_then(|v| v.as_i64()).unwrap_or(e.unix_ms)
    };
    let mut out = String::new();
    // The trip that acted explains the run; a second guard tripping on the
    // same evidence finds the fallback already running and changes nothing.
    let enforced = || {
        trips
            .iter()
            .rev()
            .filter(|(_, d)| js(d, "mode") != "shadow")
    };
    let explaining = enforced()
        .find(|(_, d)| trip_acted(d))
        .or_else(|| enforced().next());
    match explaining {
        Some((e, d)) => {
            let at = when(e, d);
            out.push_str(&format!(
                "run {run_id} {} at {} because {}\n",
                trip_verb(d),
                zone.clock(at),
                js(d, "summary")
            ));
            let kind = match js(d, "kind") {
                "hard_fail" => "tripped at once: hash mismatches from 2 or more probes",
                _ => "tripped by its quorum of failing regions",
            };
            out.push_str(&format!(
                "  guard {} ({}), {kind}; action {}: {}\n",
                js(d, "guard"),
                js(d, "condition"),
                js(d, "action"),
                js(d, "effect")
            ));
            out.push_str(&format!("  at {} ({})\n", zone.datetime(at), utc(at)));
            let op = js(d, "condition").split_whitespace().nth(1).unwrap_or("vs");
            let regions = d
                .get("regions")
                .and_then(|v| v.as_array())
                .cloned()
                .unwrap_or_default();
            if !regions.is_empty() {
                let width = regions
                    .iter()
                    .map(|x| js(x, "region").len())
                    .max()
                    .unwrap_or(0);
                out.push_str("  evidence per region when it tripped:\n");
                for x in &regions {
                    region_lines(x, op, width, &mut out);
                }
            }
        }
        None => out.push_str(&format!("no guard has tripped in run {run_id}\n")),
    }
    let shadows: Vec<_> = trips
        .iter()
        .filter(|(_, d)| js(d, "mode") == "shadow")
        .collect();
    if !shadows.is_empty() {
        out.push_str("\nshadow guards (logged, never acted):\n");
        for (e, d) in shadows {
            out.push_str(&format!(
                "  {}  {} {} because {}\n",
                zone.clock(when(e, d)),
                js(d, "guard"),
                trip_verb(d),
                js(d, "summary")
            ));
        }
    }
    // (time, guard, region, what), aligned when printed.
    let mut recent: Vec<(String, String, String, String)> = Vec::new();
    for (e, d) in &notes {
        let at = zone.clock(e.unix_ms);
        let guard = js(d, "guard");
        match js(d, "event") {
            "verdict" => {
                for c in d
                    .get("changes")
                    .and_then(|v| v.as_array())
                    .into_iter()
                    .flatten()
                {
                    let from = c.get("from").and_then(|f| f.as_str()).unwrap_or("(none)");
                    let mut line = format!("{from} → {}", verdict_words(c));
                    if c.get("value").is_some_and(|v| !v.is_null()) {
                        let u = |k: &str| c.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
                        line.push_str(&format!(
                            " ({} of {} probes, {} samples)",
                            u("voters"),
                            u("probes_seen"),
                            u("samples")
                        ));
                    }
                    recent.push((at.clone(), guard.into(), js(c, "region").into(), line));
                }
            }
            "no_evidence" => recent.push((
                at,
                guard.into(),
                js(d, "region").into(),
                format!(
                    "no evidence since {}: {}",
                    zone.clock(d.get("since_ms").and_then(|v| v.as_i64()).unwrap_or(0)),
                    js(d, "reason")
                ),
            )),
            "alert" => recent.push((
                at,
                guard.into(),
                String::new(),
                format!("alert {}: {}", js(d, "name"), deliveries(d)),
            )),
            _ => {}
        }
    }
    if !recent.is_empty() {
        let skip = recent.len().saturating_sub(WHY_RECENT);
        out.push_str(&format!(
            "\nrecent decisions ({} of {}, oldest first):\n",
            recent.len() - skip,
            recent.len()
        ));
        let shown = &recent[skip..];
        let gw = shown.iter().map(|r| r.1.len()).max().unwrap_or(0);
        let rw = shown.iter().map(|r| r.2.len()).max().unwrap_or(0);
        for (at, guard, region, what) in shown {
            let line = format!("  {at}  {guard:gw$}  {region:rw$}  {what}");
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

/// `cutover history`: the runs, then the chosen run's journal.
pub fn render_history(r: &v1::HistoryReply, with_output: bool) -> String {
    let mut out = String::from("runs:\n");
    for run in &r.runs {
        out.push_str(&format!(
            "  {:>3}  {}  {:<16}  {:<8}  {}\n",
            run.run_id,
            utc(run.started_unix_ms),
            run.state,
            run.direction,
            run.plan_path
        ));
    }
    if let Some(first) = r.entries.first() {
        out.push_str(&format!("\njournal of run {}:\n", first.run_id));
    }
    for e in &r.entries {
        let step = if e.step_id.is_empty() {
            "-"
        } else {
            &e.step_id
        };
        out.push_str(&format!(
            "  {:>4}  {}  {:<20}  {:<7}  {}\n",
            e.seq,
            utc(e.unix_ms),
            step,
            e.phase,
            describe(e)
        ));
        if with_output && !e.output.is_empty() {
            for line in e.output.lines() {
                out.push_str(&format!("          | {line}\n"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_section_shows_step_progress_and_time_left() {
        let r = v1::PlanRunStatus {
            run_id: 3,
            plan_name: "elm".into(),
            plan_sha256: "abcdef0123456789".into(),
            direction: "forward".into(),
            state: "running".into(),
            step_id: "propagation".into(),
            step_kind: "wait".into(),
            step_index: 5,
            step_count: 9,
            waiting_for: "propagation".into(),
            step_deadline_unix_ms: 100_000,
            now_unix_ms: 10_000,
            regions: vec![
                v1::RegionProgress {
                    region: "asia".into(),
                    value: 0.5,
                    target: 1.0,
                    unit: "share".into(),
                    done: false,
                    detail: "50%".into(),
                },
                v1::RegionProgress {
                    region: "us".into(),
                    value: 1.0,
                    target: 1.0,
                    unit: "share".into(),
                    done: true,
                    detail: "100%".into(),
                },
            ],
            ..Default::default()
        };
        let s = render_plan_status(&r);
        assert!(
            s.contains("step 5/9: propagation (wait), 1m30s left"),
            "{s}"
        );
        assert!(s.contains("asia  [##########..........] waiting"), "{s}");
        assert!(s.contains("us    [####################] ok"), "{s}");
        let mut r = r;
        let gv = |guard: &str, region: &str, verdict: &str, value: Option<f64>, tripped| {
            v1::GuardVerdict {
                guard: guard.into(),
                region: region.into(),
                verdict: verdict.into(),
                value: value.unwrap_or(0.0),
                has_value: value.is_some(),
                tripped,
            }
        };
        r.guards = vec![
            gv("install-new", "asia", "FAIL", Some(1.0), true),
            gv("install-new", "us", "NO_EVIDENCE", None, true),
            gv("do-status", "global", "PASS", Some(0.0), false),
        ];
        let s = render_plan_status(&r);
        assert!(
            s.contains(
                "  guard install-new  asia FAIL 1.00 · us NO_EVIDENCE  TRIPPED (`cutover why`)\n"
            ),
            "{s}"
        );
        assert!(s.contains("  guard do-status    global PASS 0.00\n"), "{s}");
    }

    #[test]
    fn history_reads_as_timestamps_steps_and_outcomes() {
        let r = v1::HistoryReply {
            runs: vec![v1::PlanRunStatus {
                run_id: 1,
                state: "done".into(),
                direction: "forward".into(),
                plan_path: "/p.toml".into(),
                ..Default::default()
            }],
            entries: vec![
                v1::JournalEntry {
                    run_id: 1,
                    seq: 2,
                    unix_ms: 1_700_000_000_000,
                    step_id: "switch".into(),
                    phase: "intent".into(),
                    detail_json: r#"{"kind":"dns","attempt":2,"what":"www. 30 A 192.0.2.2"}"#
                        .into(),
                    output: String::new(),
                },
                v1::JournalEntry {
                    run_id: 1,
                    seq: 3,
                    unix_ms: 1_700_000_001_000,
                    step_id: "switch".into(),
                    phase: "outcome".into(),
                    detail_json:
                        r#"{"result":"failed","message":"refused","on_failure":"fallback"}"#.into(),
                    output: "--- stdout ---\nhi\n".into(),
                },
            ],
        };
        let s = render_history(&r, true);
        assert!(s.contains("2023-11-14T22:13:20Z  switch"), "{s}");
        assert!(
            s.contains("start dns (attempt 2): www. 30 A 192.0.2.2"),
            "{s}"
        );
        assert!(s.contains("FAILED (fallback follows): refused"), "{s}");
        assert!(s.contains("| hi"), "{s}");
    }

    fn rv(
        region: &str,
        verdict: crate::verdict::Verdict,
        value: Option<f64>,
    ) -> crate::verdict::RegionVerdict {
        crate::verdict::RegionVerdict {
            region: region.into(),
            verdict,
            value,
            threshold: 0.5,
            voters: if value.is_some() { 3 } else { 1 },
            probes_seen: 3,
            failing_probes: if value.is_some_and(|v| v > 0.5) { 3 } else { 0 },
            samples: if value.is_some() { 9 } else { 3 },
            excluded: vec![],
            reason: if value.is_none() {
                "1 of 2 probes needed".into()
            } else {
                String::new()
            },
        }
    }

    fn note(seq: u64, unix_ms: i64, detail: serde_json::Value) -> v1::JournalEntry {
        v1::JournalEntry {
            run_id: 7,
            seq,
            unix_ms,
            step_id: String::new(),
            phase: "note".into(),
            detail_json: detail.to_string(),
            output: String::new(),
        }
    }

    /// A decision log as the guard watcher and the engine write it.
    fn decision_log() -> v1::HistoryReply {
        use crate::verdict::Verdict::{Fail, NoEvidence, Pass};
        let t0 = 1_795_770_245_000; // 2026-11-27T09:04:05Z
        let mut us = rv("us", Fail, Some(0.67));
        us.voters = 2;
        us.failing_probes = 2;
        us.samples = 6;
        us.excluded = vec![crate::verdict::Excluded {
            probe: "us-2".into(),
            reason: "own network: old failed too (5/5)".into(),
        }];
        let regions = vec![
            rv("asia", Fail, Some(1.0)),
            rv("eu", Fail, Some(1.0)),
            rv("oceania", NoEvidence, None),
            us.clone(),
        ];
        let change = |r: crate::verdict::RegionVerdict, from: &str| {
            let mut v = serde_json::to_value(r).unwrap();
            v["from"] = serde_json::json!(from);
            v
        };
        let summary = "3 of 4 regions saw install-core failures on new (error_ratio > 0.5 for 3 ticks): \
                       asia 1.00 (3/3 probes, 9 samples), eu 1.00 (3/3 probes, 9 samples), \
                       us 0.67 (2/3 probes; excluded us-2: own network: old failed too)";
        v1::HistoryReply {
            runs: vec![v1::PlanRunStatus {
                run_id: 7,
                state: "fell_back".into(),
                direction: "fallback".into(),
                ..Default::default()
            }],
            entries: vec![
                note(
                    10,
                    t0,
                    serde_json::json!({
                        "event": "verdict", "guard": "install-new", "condition": "error_ratio > 0.5",
                        "changes": [change(rv("asia", Pass, Some(0.0)), "NO_EVIDENCE")],
                    }),
                ),
                note(
                    11,
                    t0 + 1_000,
                    serde_json::json!({
                        "event": "trip", "guard": "latency-new", "action": "fallback", "mode": "shadow",
                        "kind": "quorum", "outcome": "shadow", "at_ms": t0 + 1_000,
                        "effect": "shadow guard: would have fallen back; nothing done",
                        "summary": "2 of 3 regions saw slow install-core on new (latency_p95_ms > 800 for 3 ticks)",
                        "regions": [],
                    }),
                ),
                note(
                    12,
                    t0 + 60_000,
                    serde_json::json!({
                        "event": "verdict", "guard": "install-new", "condition": "error_ratio > 0.5",
                        "changes": [change(rv("asia", Fail, Some(1.0)), "PASS"), change(rv("eu", Fail, Some(1.0)), "PASS"), change(us, "PASS")],
                    }),
                ),
                note(
                    13,
                    t0 + 62_000,
                    serde_json::json!({
                        "event": "trip", "guard": "install-new", "action": "fallback", "mode": "enforce",
                        "kind": "quorum", "outcome": "fallback", "at_ms": t0 + 62_000,
                        "condition": "error_ratio > 0.5",
                        "effect": "the fallback runbook runs now; a forward start needs --force",
                        "summary": summary, "regions": regions,
                    }),
                ),
                note(
                    14,
                    t0 + 62_500,
                    serde_json::json!({
                        "event": "alert", "name": "CutoverGuardTripped", "guard": "install-new",
                        "delivered": [{"destination": "elm-slack", "ok": true, "detail": "HTTP 200"}, {"destination": "Alertmanager", "ok": false, "detail": "HTTP 503"}],
                    }),
                ),
                note(
                    15,
                    t0 + 400_000,
                    serde_json::json!({
                        "event": "no_evidence", "guard": "install-new", "region": "oceania",
                        "since_ms": t0 + 100_000, "reason": "1 of 2 probes needed",
                    }),
                ),
            ],
        }
    }

    #[test]
    fn why_says_when_and_why_it_fell_back_with_the_evidence_per_region() {
        let s = render_why(
            &decision_log(),
            &Zone::posix("CET-1CEST,M3.5.0,M10.5.0/3").unwrap(),
        );
        println!("{s}");
        assert!(
            s.starts_with("run 7 fell back at 10:05:07 CET because 3 of 4 regions saw install-core failures on new"),
            "{s}"
        );
        assert!(
            s.contains("guard install-new (error_ratio > 0.5), tripped by its quorum of failing regions; action fallback: the fallback runbook runs now"),
            "{s}"
        );
        assert!(
            s.contains("at 2026-11-27 10:05:07 CET (2026-11-27T09:05:07Z)"),
            "{s}"
        );
        assert!(
            s.contains("    asia     FAIL         1.00 (limit > 0.50)  3 of 3 probes voted, 3 failing, 9 samples"),
            "{s}"
        );
        assert!(
            s.contains("    oceania  NO_EVIDENCE  1 of 2 probes needed"),
            "{s}"
        );
        assert!(
            s.contains("             excluded us-2: own network: old failed too (5/5)"),
            "{s}"
        );
        assert!(
            s.contains("  10:04:06 CET  latency-new would have fallen back because 2 of 3 regions"),
            "{s}"
        );
        assert!(
            s.contains(
                "  10:05:05 CET  install-new  eu       PASS → FAIL 1.00 (3 of 3 probes, 9 samples)"
            ),
            "{s}"
        );
        assert!(
            s.contains(
                "alert CutoverGuardTripped: sent to elm-slack; failed Alertmanager (HTTP 503)"
            ),
            "{s}"
        );
        assert!(
            s.contains("  10:10:45 CET  install-new  oceania  no evidence since 10:05:45 CET"),
            "{s}"
        );
    }

    #[test]
    fn why_explains_with_the_trip_that_acted_not_a_later_one_that_found_the_fallback_running() {
        let mut r = decision_log();
        let last = r.entries.last().unwrap().clone();
        r.entries.push(v1::JournalEntry {
            seq: last.seq + 1,
            unix_ms: last.unix_ms + 10,
            detail_json: serde_json::json!({
                "event": "trip", "guard": "hash-new", "action": "fallback", "mode": "enforce",
                "kind": "hard_fail", "outcome": "fallback", "at_ms": last.unix_ms + 10,
                "condition": "hash_mismatches > 0",
                "effect": "nothing to do: the run is running (fallback runbook)",
                "summary": "install-core hash mismatches on new from 2 probes", "regions": [],
            })
            .to_string(),
            ..last
        });
        let s = render_why(&r, &Zone::utc());
        assert!(s.starts_with("run 7 fell back at "), "{s}");
        assert!(s.contains("guard install-new (error_ratio > 0.5)"), "{s}");
    }

    #[test]
    fn why_without_a_trip_says_so_and_still_lists_the_decisions() {
        let mut r = decision_log();
        r.entries.retain(|e| !e.detail_json.contains("\"enforce\""));
        let s = render_why(&r, &Zone::utc());
        assert!(s.starts_with("no guard has tripped in run 7\n"), "{s}");
        assert!(s.contains("latency-new would have fallen back"), "{s}");
        assert!(s.contains("recent decisions"), "{s}");
    }

    #[test]
    fn history_shows_guard_notes_on_one_line_each() {
        let s = render_history(&decision_log(), false);
        println!("{s}");
        assert!(
            s.contains("verdict install-new: asia NO_EVIDENCE → PASS 0.00"),
            "{s}"
        );
        assert!(
            s.contains("TRIP install-new [fallback]: 3 of 4 regions"),
            "{s}"
        );
        assert!(s.contains("TRIP latency-new (shadow) [fallback]"), "{s}");
        assert!(
            s.contains(
                "alert CutoverGuardTripped: sent to elm-slack; failed Alertmanager (HTTP 503)"
            ),
            "{s}"
        );
        assert!(
            s.contains("no evidence: install-new in oceania since 2026-11-27T09:05:45Z"),
            "{s}"
        );
    }
}
