//! `cutover demo` as a process: the real binary with the real `cutover-probe`
//! next to it, both runs, the summary and exit status 0.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_cutover");

/// `CUTOVER_PROBE_BIN`, else `cutover-probe` next to `cutover` (built by
/// `cargo build --workspace`, as the README's test command does first).
fn probe_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CUTOVER_PROBE_BIN") {
        return PathBuf::from(p);
    }
    let p = PathBuf::from(BIN).with_file_name("cutover-probe");
    assert!(
        p.exists(),
        "{} not found: run `cargo build --workspace` first or set CUTOVER_PROBE_BIN",
        p.display()
    );
    p
}

#[test]
fn the_demo_runs_the_plan_then_falls_back_on_its_own_from_a_faulty_switch_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let child = std::process::Command::new(BIN)
        .arg("demo")
        .arg("--probe-bin")
        .arg(probe_bin())
        .arg("--dir")
        .arg(dir.path())
        .env_remove("CUTOVER_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The demo bounds its own waits (startup 30 s, each run 180 s).
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let logs = ["coordinator", "probe-asia"]
        .iter()
        .map(|n| {
            let p = dir.path().join(format!("{n}.log"));
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(20).collect();
            format!(
                "--- {n}.log (tail)\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    let all = format!("stdout:\n{stdout}\nstderr:\n{stderr}\n{logs}");
    assert!(out.status.success(), "exit {}\n{all}", out.status);

    // Not a terminal: plain lines, no screen clearing.
    assert!(!stdout.contains('\x1b'), "{all}");
    let summary = stdout.split("== summary ==").nth(1).expect("a summary");
    let line = |prefix: &str| {
        summary
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line {prefix:?}\n{all}"))
            .to_owned()
    };
    assert!(line("run 1").contains(": DONE in"), "{all}");
    assert!(line("run 2").contains(": FELL_BACK in"), "{all}");
    // Run 2: the soak was cut short by a guard trip and the fallback ran on its own.
    let has = |runbook: &str, step: &str, result: &str| {
        summary.lines().any(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.len() >= 3 && w[0] == runbook && w[1] == step && w[2] == result
        })
    };
    assert!(has("forward", "test-install", "ok"), "{all}");
    assert!(has("fallback", "back-to-old", "ok"), "{all}");
    assert!(has("fallback", "old-works", "ok"), "{all}");
    assert!(
        stdout.contains("FAULT: the new site now serves corrupt archives"),
        "{all}"
    );
    assert!(!stdout.contains("cutover rollback"), "{all}");
    // The decision log line, during the run and in `cutover why` afterwards.
    assert!(
        stdout.contains("the engine switched to the fallback runbook by itself"),
        "{all}"
    );
    let why = stdout
        .split("$ cutover why\n")
        .nth(1)
        .expect("cutover why output");
    let first = why.lines().next().unwrap_or("");
    assert!(
        first.contains(" fell back at ") && first.contains("install-core"),
        "{first}\n{all}"
    );
    // The plan's webhook got the trip and the fallback's start and end.
    for alert in [
        "CutoverGuardTripped",
        "CutoverFallbackStarted",
        "CutoverFallbackDone",
    ] {
        assert!(
            stdout.lines().any(|l| l.trim_start().starts_with(alert)),
            "no {alert} alert\n{all}"
        );
    }
    // DNS answers old at the authoritative server and at every region's cache.
    for who in [
        "authoritative",
        "asia resolver",
        "australia resolver",
        "us resolver",
    ] {
        let l = line(&format!("    {who}"));
        assert!(l.trim_end().ends_with(" old"), "{l}\n{all}");
    }
    assert!(
        stdout.contains(
            "demo finished: run 1 done; in run 2 a guard tripped and the fallback ran on its own"
        ),
        "{all}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "took {:?}",
        started.elapsed()
    );
}
