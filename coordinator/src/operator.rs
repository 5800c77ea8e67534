//! The operator's plan commands, talking to the running coordinator:
//! `cutover start FILE`, `approve`, `pause`, `resume`, `abort`, `rollback`,
//! `history`, and the plan section `cutover status` shows above the evidence.
//!
//! CLI glue: errors are `anyhow`; the rendering functions are pure so tests
//! can pin what an operator reads.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use cutover_proto::v1;

use crate::cli::utc;

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
}

type Admin = crate::cli::Admin;

fn rpc(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("the coordinator refused: {}", s.message())
}

/// Runs one plan subcommand against the coordinator.
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
        RunCommand::Pause => {
            let r = client
                .pause(v1::PauseRequest {})
                .await
                .map_err(rpc)?
                .into_inner();
            println!("run {} is {}", r.run_id, r.state);
            Ok(())
        }
        RunCommand::Resume => {
            let r = client
                .resume(v1::ResumeRequest {})
                .await
                .map_err(rpc)?
                .into_inner();
            println!("run {} is {}", r.run_id, r.state);
            Ok(())
        }
        RunCommand::Abort { reason } => {
            let r = client
                .abort(v1::AbortRequest {
                    reason: reason.clone(),
                })
                .await
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
            print!("{}", render_history(&r, *output));
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
    if !r.message.is_empty() {
        out.push_str(&format!("  {}\n", r.message.replace('\n', "\n  ")));
    }
    out.push('\n');
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
}
