//! Engine behaviour with a fake DNS backend, fake evidence and a real
//! (temporary) SQLite journal: what an operator would notice.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::aggregate::{DnsStats, Snapshot};
use crate::journal::SqliteJournal;

#[derive(Default)]
struct FakeDns {
    zone: Mutex<BTreeMap<String, RecordSet>>,
    applies: AtomicUsize,
    fail: Mutex<bool>,
    manual: bool,
    /// Holds every apply this long (to kill the engine mid-step).
    slow: Mutex<Duration>,
}

impl DnsBackend for FakeDns {
    fn manual_instructions(
        &self,
        _: &Plan,
        desired: &[RecordSet],
    ) -> Result<Option<String>, String> {
        Ok(self
            .manual
            .then(|| format!("set {}", desired[0].describe())))
    }

    fn apply_and_verify<'a>(
        &'a self,
        _: &'a Plan,
        desired: &'a [RecordSet],
        _: Duration,
    ) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move {
            let slow = *self.slow.lock().unwrap();
            tokio::time::sleep(slow).await;
            if *self.fail.lock().unwrap() {
                return Err("provider: refused".into());
            }
            for d in desired {
                self.applies.fetch_add(1, Ordering::SeqCst);
                self.zone.lock().unwrap().insert(d.name.clone(), d.clone());
            }
            Ok("verified".into())
        })
    }
}

struct FakeEvidence {
    snap: Mutex<Snapshot>,
    /// What probe guards read.
    agg: Mutex<crate::aggregate::Aggregator>,
}

impl Default for FakeEvidence {
    fn default() -> Self {
        Self {
            snap: Mutex::default(),
            agg: Mutex::new(crate::aggregate::Aggregator::new(60)),
        }
    }
}

/// Status page / Prometheus readings for non-probe guards, set by the test.
#[derive(Default)]
struct FakeSources {
    value: Mutex<Option<Result<f64, String>>>,
    reads: AtomicUsize,
}

impl guards::SourceReader for FakeSources {
    fn read<'a>(
        &'a self,
        _: &'a Plan,
        _: &'a plan::GuardSource,
    ) -> BoxFuture<'a, Result<f64, String>> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        let v = self
            .value
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_else(|| Err("nothing set".into()));
        Box::pin(async move { v })
    }
}

impl FakeEvidence {
    fn set(&self, share_new: f64, ttl: u32) {
        let dns = ["asia", "us"]
            .iter()
            .map(|r| DnsStats {
                check: "www-dns".into(),
                region: r.to_string(),
                probes: 2,
                share_old: 1.0 - share_new,
                share_new,
                share_mixed: 0.0,
                share_other: 0.0,
                max_ttl: ttl,
            })
            .collect();
        self.snap.lock().unwrap().dns = dns;
    }
}

impl EvidenceSource for FakeEvidence {
    fn snapshot(&self) -> Snapshot {
        self.snap.lock().unwrap().clone()
    }
    fn connected_regions(&self) -> BTreeSet<String> {
        ["asia".to_string(), "us".to_string()].into()
    }
    fn with_aggregator(&self, f: &mut dyn FnMut(&crate::aggregate::Aggregator)) {
        f(&self.agg.lock().unwrap());
    }
}

struct Rig {
    dir: tempfile::TempDir,
    dns: Arc<FakeDns>,
    ev: Arc<FakeEvidence>,
    sources: Arc<FakeSources>,
}

impl Rig {
    fn new(manual: bool) -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            dns: Arc::new(FakeDns {
                manual,
                ..FakeDns::default()
            }),
            ev: Arc::new(FakeEvidence::default()),
            sources: Arc::new(FakeSources::default()),
        }
    }

    fn engine(&self) -> (Engine, CancellationToken) {
        let stop = CancellationToken::new();
        let e = Engine::new(
            Deps {
                journal: Arc::new(SqliteJournal::open(self.dir.path()).unwrap()),
                evidence: self.ev.clone(),
                dns: self.dns.clone(),
                poll: Duration::from_millis(10),
                assigner: None,
                sources: self.sources.clone(),
            },
            stop.clone(),
        );
        (e, stop)
    }

    fn counter(&self) -> std::path::PathBuf {
        self.dir.path().join("ran.txt")
    }

    fn runs(&self) -> usize {
        std::fs::read_to_string(self.counter())
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    fn plan(&self, extra_steps: &str, fallback: &str) -> (std::path::PathBuf, String) {
        let text = format!(
            r#"
[plan]
name = "test"

[sites.old]
addresses = ["192.0.2.1"]
[sites.new]
addresses = ["192.0.2.2"]

[[checks]]
id = "www-dns"
kind = "dns"
name = "www.example.org"
interval = "5s"

[dns]
zone = "example.org"
provider = "manual"
nameservers = ["127.0.0.1:53"]
lowered_ttl = "30s"
normal_ttl = "1h"

[[dns.records]]
name = "www"
type = "A"

[[steps]]
id = "lower-ttl"
kind = "dns"
ttl = "lowered"

[[steps]]
id = "drained"
kind = "wait"
until = {{ ttl_drained = true }}

[[steps]]
id = "stop-old"
kind = "exec"
command = ["sh", "-c", "echo ran >> {counter}; echo hello"]
once = true

[[steps]]
id = "switch"
kind = "dns"
set = "new"
on_failure = "fallback"

[[steps]]
id = "propagated"
kind = "wait"
until = {{ propagation = 0.9, site = "new" }}
on_failure = "fallback"
{extra_steps}

[[fallback]]
id = "back"
kind = "dns"
set = "old"
{fallback}
"#,
            counter = self.counter().display()
        );
        (self.dir.path().join("plan.toml"), text)
    }
}

async fn until_state(e: &Engine, want: RunState) -> RunStatus {
    for _ in 0..500 {
        if let Some(s) = e.status(0).await.unwrap()
            && s.run.state == want
        {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let s = e.status(0).await.unwrap().unwrap();
    panic!(
        "run never reached {want}: it is {} at {:?} ({})",
        s.run.state, s.step, s.message
    );
}

fn outcomes(entries: &[Entry]) -> Vec<(String, String)> {
    entries
        .iter()
        .filter(|e| e.phase == Phase::Outcome)
        .map(|e| (e.step_id.clone(), e.str("result").to_string()))
        .collect()
}

#[tokio::test]
async fn a_plan_runs_to_done_waiting_on_evidence_and_journals_every_step() {
    let rig = Rig::new(false);
    let (e, _stop) = rig.engine();
    rig.ev.set(0.0, 3600);
    let (path, text) = rig.plan("", "");
    let (run, _) = e.start(path, text, false).await.unwrap();
    // The TTL is lowered, but resolvers still hold the long TTL: the run waits.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let s = e.status(0).await.unwrap().unwrap();
    assert_eq!(s.step.as_ref().unwrap().0, "drained");
    let live = s.live.unwrap();
    assert!(live.waiting_for.contains("TTL"), "{}", live.waiting_for);
    assert_eq!(live.regions.len(), 2);
    assert_eq!(rig.dns.zone.lock().unwrap()["www.example.org."].ttl, 30);
    assert_eq!(
        rig.runs(),
        0,
        "the switch side of the plan must not run before the drain"
    );
    rig.ev.set(0.0, 25);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Switched, waiting for propagation.
    assert_eq!(
        rig.dns.zone.lock().unwrap()["www.example.org."].values,
        ["192.0.2.2"]
    );
    assert_eq!(
        e.status(0).await.unwrap().unwrap().run.state,
        RunState::Running
    );
    rig.ev.set(1.0, 25);
    until_state(&e, RunState::Done).await;
    assert_eq!(rig.runs(), 1);
    let (_, entries) = e.history(run.id).await.unwrap();
    assert_eq!(
        outcomes(&entries),
        [
            ("lower-ttl".into(), "ok".into()),
            ("drained".into(), "ok".into()),
            ("stop-old".into(), "ok".into()),
            ("switch".into(), "ok".into()),
            ("propagated".into(), "ok".into()),
        ]
    );
    // Each intent precedes its outcome, and exec output is kept.
    let exec = entries
        .iter()
        .find(|e| e.step_id == "stop-old" && e.phase == Phase::Outcome)
        .unwrap();
    assert!(exec.output.contains("hello"), "{}", exec.output);
    for (step, _) in outcomes(&entries) {
        let i = entries
            .iter()
            .position(|e| e.step_id == step && e.phase == Phase::Intent);
        let o = entries
            .iter()
            .position(|e| e.step_id == step && e.phase == Phase::Outcome);
        assert!(i < o, "{step}");
    }
}

/// Writes what a coordinator killed right after committing `stop-old`'s intent leaves behind.
fn crashed_at_exec_once(rig: &Rig) -> u64 {
    let j = SqliteJournal::open(rig.dir.path()).unwrap();
    let (path, text) = rig.plan("", "");
    let run = j
        .create_run(&path, &text, now_ms(), json!({"event": "started"}))
        .unwrap();
    for step in ["lower-ttl", "drained"] {
        for (phase, d) in [
            (Phase::Intent, json!({"attempt": 1})),
            (Phase::Outcome, json!({"result": "ok"})),
        ] {
            j.append(
                run.id,
                NewEntry::new(step, phase, d),
                RunUpdate::default(),
                now_ms(),
            )
            .unwrap();
        }
    }
    j.append(
        run.id,
        NewEntry::new("stop-old", Phase::Intent, json!({"attempt": 1})),
        RunUpdate::default(),
        now_ms(),
    )
    .unwrap();
    run.id
}

#[tokio::test]
async fn an_exec_once_step_interrupted_by_a_crash_is_never_rerun_without_the_operator() {
    let rig = Rig::new(false);
    rig.ev.set(1.0, 25);
    crashed_at_exec_once(&rig);
    let (e, _stop) = rig.engine();
    assert!(e.resume_unfinished().await.unwrap().is_some());
    let s = until_state(&e, RunState::WaitingApproval).await;
    assert!(s.message.contains("--ran"), "{}", s.message);
    assert_eq!(rig.runs(), 0);
    // A plain approval is not an answer.
    assert!(e.approve("", "").await.is_err());
    assert!(e.approve("switch", "ran").await.is_err());
    e.approve("stop-old", "ran").await.unwrap();
    until_state(&e, RunState::Done).await;
    assert_eq!(
        rig.runs(),
        0,
        "the operator said it ran: it must not run again"
    );
}

#[tokio::test]
async fn not_ran_runs_the_exec_once_step_exactly_once() {
    let rig = Rig::new(false);
    rig.ev.set(1.0, 25);
    crashed_at_exec_once(&rig);
    let (e, _stop) = rig.engine();
    e.resume_unfinished().await.unwrap();
    until_state(&e, RunState::WaitingApproval).await;
    e.approve("stop-old", "not-ran").await.unwrap();
    until_state(&e, RunState::Done).await;
    assert_eq!(rig.runs(), 1);
}

#[tokio::test]
async fn a_dns_step_interrupted_by_a_crash_is_applied_again_and_the_plan_finishes() {
    let rig = Rig::new(false);
    rig.ev.set(1.0, 25);
    *rig.dns.slow.lock().unwrap() = Duration::from_secs(30);
    let (e, stop) = rig.engine();
    let (path, text) = rig.plan("", "");
    e.start(path, text, false).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        e.status(0).await.unwrap().unwrap().step.unwrap().0,
        "lower-ttl"
    );
    // "Kill" the coordinator mid-apply: the task is dropped with the intent committed.
    stop.cancel();
    if let Some(h) = e.inner.task.lock().unwrap().take() {
        h.abort();
    }
    drop(e);
    *rig.dns.slow.lock().unwrap() = Duration::ZERO;
    let (e, _stop) = rig.engine();
    e.resume_unfinished().await.unwrap();
    until_state(&e, RunState::Done).await;
    let (_, entries) = e.history(0).await.unwrap();
    let intents = entries
        .iter()
        .filter(|x| x.step_id == "lower-ttl" && x.phase == Phase::Intent)
        .count();
    assert_eq!(intents, 2, "the interrupted step is journaled and repeated");
    assert_eq!(rig.runs(), 1);
    assert_eq!(
        rig.dns.zone.lock().unwrap()["www.example.org."].values,
        ["192.0.2.2"]
    );
}

#[tokio::test]
async fn a_failing_switch_falls_back_and_blocks_a_forward_restart_until_forced() {
    let rig = Rig::new(false);
    rig.ev.set(0.0, 25);
    let (e, _stop) = rig.engine();
    let (path, text) = rig.plan(
        r#"
[[steps]]
id = "check"
kind = "verify"
checks = ["www-dns"]
timeout = "200ms"
on_failure = "fallback"
"#,
        "",
    );
    e.start(path.clone(), text.clone(), false).await.unwrap();
    // Propagation never comes: max is unset, so make it fail another way: the
    // verify step after it. Let propagation pass but the dns series stay empty.
    tokio::time::sleep(Duration::from_millis(100)).await;
    rig.ev.set(1.0, 25);
    let s = until_state(&e, RunState::FellBack).await;
    assert!(s.run.forward_blocked);
    assert_eq!(
        rig.dns.zone.lock().unwrap()["www.example.org."].values,
        ["192.0.2.1"],
        "fallback points DNS back at old"
    );
    let err = e
        .start(path.clone(), text.clone(), false)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("--force"), "{err}");
    e.start(path, text, true).await.unwrap();
}

#[tokio::test]
async fn approve_pause_resume_abort_and_rollback_behave_as_documented() {
    let rig = Rig::new(false);
    rig.ev.set(0.0, 3600);
    let (e, _stop) = rig.engine();
    let (path, text) = rig.plan(
        r#"
[[steps]]
id = "ok-to-go"
kind = "approve"
prompt = "go?"
"#,
        "",
    );
    e.start(path.clone(), text.clone(), false).await.unwrap();
    until_step(&e, "drained").await;
    // Pause during an evidence wait: nothing moves even when the evidence arrives.
    e.pause().await.unwrap();
    rig.ev.set(1.0, 25);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let s = e.status(0).await.unwrap().unwrap();
    assert_eq!(s.run.state, RunState::Paused);
    assert_eq!(s.step.unwrap().0, "drained");
    assert_eq!(rig.runs(), 0);
    assert!(e.pause().await.is_err(), "pausing twice is refused");
    e.resume().await.unwrap();
    let s = until_state(&e, RunState::WaitingApproval).await;
    assert_eq!(s.step.unwrap().0, "ok-to-go");
    assert!(s.message.contains("go?"), "{}", s.message);
    assert!(e.approve("other", "").await.is_err());
    e.approve("ok-to-go", "").await.unwrap();
    until_state(&e, RunState::Done).await;
    // Rollback after done runs the fallback.
    e.rollback("users report errors").await.unwrap();
    until_state(&e, RunState::FellBack).await;
    assert_eq!(
        rig.dns.zone.lock().unwrap()["www.example.org."].values,
        ["192.0.2.1"]
    );
    // Abort: nothing more runs.
    rig.ev.set(0.0, 3600);
    e.start(path, text, true).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    e.abort("wrong night").await.unwrap();
    rig.ev.set(1.0, 25);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let s = e.status(0).await.unwrap().unwrap();
    assert_eq!(s.run.state, RunState::Aborted);
    assert_eq!(rig.runs(), 1, "only the first run reached stop-old");
    assert!(e.resume().await.is_err());
}

#[tokio::test]
async fn a_manual_provider_waits_for_approval_before_verifying() {
    let rig = Rig::new(true);
    rig.ev.set(1.0, 25);
    let (e, _stop) = rig.engine();
    let (path, text) = rig.plan("", "");
    e.start(path, text, false).await.unwrap();
    let s = until_state(&e, RunState::WaitingApproval).await;
    assert!(s.message.contains("www.example.org."), "{}", s.message);
    assert_eq!(rig.dns.applies.load(Ordering::SeqCst), 0);
    e.approve("lower-ttl", "").await.unwrap();
    let s = until_state(&e, RunState::WaitingApproval).await;
    assert_eq!(s.step.unwrap().0, "switch");
    e.approve("", "").await.unwrap();
    until_state(&e, RunState::Done).await;
}

#[tokio::test]
async fn an_invalid_plan_is_refused_with_its_diagnostics() {
    let rig = Rig::new(false);
    let (e, _stop) = rig.engine();
    let err = e
        .start(
            Path::new("bad.toml").into(),
            "[plan]\nnme = 1\n".into(),
            false,
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("bad.toml:2"), "{err}");
    assert!(e.status(0).await.unwrap().is_none());
}

/// A one-purpose HTTP/1.1 server: answers every request with `status` and
/// `body`, and records each request as `METHOD PATH\nBODY`.
async fn http_stub(status: u16, body: &'static str) -> (String, Arc<Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let (head, body_start) = loop {
                    let n = s.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break (String::from_utf8_lossy(&buf[..i]).to_string(), i + 4);
                    }
                };
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                while buf.len() < body_start + len {
                    let n = s.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let line = head.lines().next().unwrap_or("").to_string();
                let mut parts = line.split(' ');
                let req = format!(
                    "{} {}\n{}",
                    parts.next().unwrap_or(""),
                    parts.next().unwrap_or(""),
                    String::from_utf8_lossy(&buf[body_start..])
                );
                log.lock().unwrap().push(req);
                let resp = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    (format!("http://{addr}"), seen)
}

/// A plan with no DNS steps: the header of [`Rig::plan`] and `steps`.
fn bare_plan(dir: &Path, steps: &str) -> (std::path::PathBuf, String) {
    let text = format!(
        r#"
[plan]
name = "bare"

[sites.old]
addresses = ["192.0.2.1"]
[sites.new]
addresses = ["192.0.2.2"]

[dns]
zone = "example.org"
provider = "manual"
nameservers = ["127.0.0.1:53"]

[[dns.records]]
name = "www"
type = "A"

{steps}
"#
    );
    (dir.join("plan.toml"), text)
}

async fn run_to_end(rig: &Rig, steps: &str) -> (RunStatus, Vec<Entry>) {
    let (e, _stop) = rig.engine();
    let (path, text) = bare_plan(rig.dir.path(), steps);
    e.start(path, text, false).await.unwrap();
    for _ in 0..500 {
        let s = e.status(0).await.unwrap().unwrap();
        if s.run.state.is_finished() {
            let (_, entries) = e.history(0).await.unwrap();
            return (s, entries);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the run did not finish");
}

fn gate_steps(url: &str, max: &str) -> String {
    format!(
        r#"
[[steps]]
id = "status"
kind = "gate"
status_pages = [{{ name = "DigitalOcean", url = "{url}/api/v2/status.json", max_indicator = "{max}" }}]
timeout = "300ms"
on_failure = "abort"
"#
    )
}

#[tokio::test]
async fn a_status_page_at_or_below_its_maximum_passes_the_gate() {
    let (url, seen) = http_stub(200, r#"{"status":{"indicator":"minor","description":"x"}}"#).await;
    let rig = Rig::new(false);
    let (s, _) = run_to_end(&rig, &gate_steps(&url, "minor")).await;
    assert_eq!(s.run.state, RunState::Done);
    assert!(seen.lock().unwrap()[0].starts_with("GET /api/v2/status.json"));
}

#[tokio::test]
async fn a_status_page_above_its_maximum_fails_the_gate() {
    let (url, _) = http_stub(200, r#"{"status":{"indicator":"major"}}"#).await;
    let rig = Rig::new(false);
    let (s, _) = run_to_end(&rig, &gate_steps(&url, "minor")).await;
    assert_eq!(s.run.state, RunState::Failed);
    assert!(
        s.message.contains("DigitalOcean status is major"),
        "{}",
        s.message
    );
}

#[tokio::test]
async fn an_unreadable_status_page_is_unknown_and_never_healthy() {
    for (status, body) in [
        (200, "<html>we moved</html>"),
        (503, "{}"),
        (200, r#"{"status":{}}"#),
    ] {
        let (url, _) = http_stub(status, body).await;
        let rig = Rig::new(false);
        let (s, _) = run_to_end(&rig, &gate_steps(&url, "critical")).await;
        assert_eq!(s.run.state, RunState::Failed, "{status} {body}");
        assert!(s.message.contains("status unknown"), "{}", s.message);
    }
    // Nobody listening at all.
    let rig = Rig::new(false);
    let (s, _) = run_to_end(&rig, &gate_steps("http://127.0.0.1:9", "critical")).await;
    assert_eq!(s.run.state, RunState::Failed);
}

/// A gate on two status pages (`DigitalOcean` at `ok_url`, `DreamHost` at
/// `other_url`) with `on_unknown` as given.
fn two_page_gate(ok_url: &str, other_url: &str, on_unknown: &str) -> String {
    format!(
        r#"
[[steps]]
id = "status"
kind = "gate"
status_pages = [
  {{ name = "DigitalOcean", url = "{ok_url}/api/v2/status.json" }},
  {{ name = "DreamHost", url = "{other_url}/" }},
]
on_unknown = "{on_unknown}"
timeout = "300ms"
on_failure = "abort"
"#
    )
}

#[tokio::test]
async fn an_unknown_status_page_with_on_unknown_fail_fails_the_gate() {
    let (ok_url, _) = http_stub(200, r#"{"status":{"indicator":"none"}}"#).await;
    let (blog, _) = http_stub(200, "<html>all good, probably</html>").await;
    let rig = Rig::new(false);
    let (s, entries) = run_to_end(&rig, &two_page_gate(&ok_url, &blog, "fail")).await;
    assert_eq!(s.run.state, RunState::Failed);
    assert!(
        s.message.contains("DreamHost status unknown"),
        "{}",
        s.message
    );
    assert!(
        !entries.iter().any(|e| e.str("event") == "ask"),
        "on_unknown = \"fail\" never asks"
    );
}

#[tokio::test]
async fn an_unknown_status_page_with_on_unknown_approve_waits_for_the_operator() {
    let (ok_url, _) = http_stub(200, r#"{"status":{"indicator":"none"}}"#).await;
    let (blog, _) = http_stub(200, "<html>all good, probably</html>").await;
    let rig = Rig::new(false);
    let (e, _stop) = rig.engine();
    let (path, text) = bare_plan(rig.dir.path(), &two_page_gate(&ok_url, &blog, "approve"));
    e.start(path, text, false).await.unwrap();
    let s = until_state(&e, RunState::WaitingApproval).await;
    assert_eq!(s.step.as_ref().unwrap().0, "status");
    // The question names the unreadable page (and its URL), not the readable one.
    assert!(s.message.contains("DreamHost"), "{}", s.message);
    assert!(s.message.contains(&blog), "{}", s.message);
    assert!(!s.message.contains("DigitalOcean"), "{}", s.message);
    assert!(
        s.message.contains("cutover approve --step status"),
        "{}",
        s.message
    );
    // Waiting for a person is not a gate timeout: still waiting well past 300ms.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        e.status(0).await.unwrap().unwrap().run.state,
        RunState::WaitingApproval
    );
    // `--ran` answers only exec once steps.
    assert!(e.approve("status", "ran").await.is_err());
    e.approve("status", "").await.unwrap();
    until_state(&e, RunState::Done).await;
    let (_, entries) = e.history(0).await.unwrap();
    let done = entries
        .iter()
        .find(|x| x.step_id == "status" && x.phase == Phase::Outcome)
        .unwrap();
    assert_eq!(done.detail["facts"]["status:DigitalOcean"], "none");
    let dh = done.detail["facts"]["status:DreamHost"].as_str().unwrap();
    assert!(dh.contains("approved by the operator"), "{dh}");
}

#[tokio::test]
async fn on_unknown_approve_never_overrides_a_page_that_reports_an_incident() {
    let (major, _) = http_stub(200, r#"{"status":{"indicator":"major"}}"#).await;
    let (blog, _) = http_stub(200, "<html>?</html>").await;
    let rig = Rig::new(false);
    let (s, entries) = run_to_end(&rig, &two_page_gate(&major, &blog, "approve")).await;
    assert_eq!(s.run.state, RunState::Failed);
    assert!(
        s.message.contains("DigitalOcean status is major"),
        "{}",
        s.message
    );
    assert!(!entries.iter().any(|e| e.str("event") == "ask"));
}

#[tokio::test]
async fn announcements_reach_slack_and_json_webhooks_and_are_kept() {
    let (slack, slack_seen) = http_stub(200, "ok").await;
    let (json_url, json_seen) = http_stub(200, "{}").await;
    let rig = Rig::new(false);
    std::fs::write(rig.dir.path().join("slack.url"), format!("{slack}/hook\n")).unwrap();
    std::fs::write(rig.dir.path().join("json.url"), format!("{json_url}/feed")).unwrap();
    let steps = r#"
[[notifications.webhooks]]
name = "chat"
kind = "slack"
url_file = "slack.url"

[[notifications.webhooks]]
name = "feed"
kind = "json"
url_file = "json.url"

[[steps]]
id = "announce"
kind = "announce"
message = "Publishing is unavailable for an hour."
channels = ["chat", "feed"]
maintenance_window = { starts_in = "30m", duration = "1h" }
"#;
    let (s, entries) = run_to_end(&rig, steps).await;
    assert_eq!(s.run.state, RunState::Done, "{}", s.message);
    let slack_req = slack_seen.lock().unwrap()[0].clone();
    assert!(slack_req.starts_with("POST /hook\n"), "{slack_req}");
    let body: serde_json::Value =
        serde_json::from_str(slack_req.split_once('\n').unwrap().1).unwrap();
    assert_eq!(
        body,
        json!({"text": "Publishing is unavailable for an hour."})
    );
    let json_req = json_seen.lock().unwrap()[0].clone();
    let body: serde_json::Value =
        serde_json::from_str(json_req.split_once('\n').unwrap().1).unwrap();
    assert_eq!(body["message"], "Publishing is unavailable for an hour.");
    assert_eq!(body["step"], "announce");
    let w = &body["maintenance_window"];
    assert_eq!(
        w["ends_unix_ms"].as_i64().unwrap() - w["starts_unix_ms"].as_i64().unwrap(),
        3_600_000
    );
    // Kept in the journal for the status page.
    let kept = entries
        .iter()
        .find(|e| e.step_id == "announce" && e.phase == Phase::Outcome)
        .unwrap();
    assert_eq!(
        kept.detail["announcement"]["message"],
        "Publishing is unavailable for an hour."
    );
}

#[tokio::test]
async fn exec_gets_the_plans_env_and_is_killed_at_its_timeout() {
    let rig = Rig::new(false);
    let steps = r#"
[[steps]]
id = "hello"
kind = "exec"
command = ["sh", "-c", "echo \"greeting=$GREETING\"; echo oops >&2"]
env = { GREETING = "hi" }

[[steps]]
id = "slow"
kind = "exec"
command = ["sleep", "30"]
timeout = "200ms"
on_failure = "abort"
"#;
    let (s, entries) = run_to_end(&rig, steps).await;
    assert_eq!(s.run.state, RunState::Failed);
    assert!(s.message.contains("did not finish within"), "{}", s.message);
    let hello = entries
        .iter()
        .find(|e| e.step_id == "hello" && e.phase == Phase::Outcome)
        .unwrap();
    assert!(hello.output.contains("greeting=hi"), "{}", hello.output);
    assert!(
        hello.output.contains("--- stderr ---\noops"),
        "{}",
        hello.output
    );
}

#[tokio::test]
async fn a_failed_exec_once_step_is_not_run_again_by_resume_alone() {
    let rig = Rig::new(false);
    let (e, _stop) = rig.engine();
    let steps = format!(
        r#"
[[steps]]
id = "publish"
kind = "exec"
command = ["sh", "-c", "echo ran >> {}; exit 3"]
once = true
on_failure = "pause"
"#,
        rig.counter().display()
    );
    let (path, text) = bare_plan(rig.dir.path(), &steps);
    e.start(path, text, false).await.unwrap();
    let s = until_state(&e, RunState::Paused).await;
    assert!(s.message.contains("exited with"), "{}", s.message);
    assert_eq!(rig.runs(), 1);
    e.resume().await.unwrap();
    let s = until_state(&e, RunState::WaitingApproval).await;
    assert!(s.message.contains("ran and failed"), "{}", s.message);
    assert_eq!(
        rig.runs(),
        1,
        "resume alone must not run an exec once step again"
    );
    assert!(e.approve("publish", "").await.is_err());
    // Run it again by explicit answer: it fails again and pauses again.
    e.approve("publish", "not-ran").await.unwrap();
    until_state(&e, RunState::Paused).await;
    assert_eq!(rig.runs(), 2);
    e.resume().await.unwrap();
    until_state(&e, RunState::WaitingApproval).await;
    e.approve("publish", "ran").await.unwrap();
    until_state(&e, RunState::Done).await;
    assert_eq!(rig.runs(), 2);
}

#[tokio::test]
async fn a_pause_committed_by_another_process_stops_a_wait() {
    let rig = Rig::new(false);
    rig.ev.set(0.0, 3600);
    let (e, _stop) = rig.engine();
    let (path, text) = rig.plan("", "");
    let (run, _) = e.start(path, text, false).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Another process (its own connection) pauses the run in the journal.
    let other = SqliteJournal::open(rig.dir.path()).unwrap();
    other
        .append(
            run.id,
            NewEntry::new("", Phase::Note, json!({"event": "paused"})),
            RunUpdate::state(RunState::Paused),
            now_ms(),
        )
        .unwrap();
    tokio::time::sleep(JOURNAL_RECHECK + Duration::from_millis(500)).await;
    rig.ev.set(1.0, 25);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rig.runs(), 0, "the paused run must not go on to stop-old");
    let live = e.status(0).await.unwrap().unwrap();
    assert_eq!(live.run.state, RunState::Paused);
    // Resumed elsewhere too: this engine notices and finishes.
    other
        .append(
            run.id,
            NewEntry::new("", Phase::Note, json!({"event": "resumed"})),
            RunUpdate::state(RunState::Running),
            now_ms(),
        )
        .unwrap();
    for _ in 0..100 {
        if e.status(0).await.unwrap().unwrap().run.state == RunState::Done {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the run did not finish after a resume committed elsewhere");
}

#[test]
fn a_gate_needs_every_target_of_each_check_passing_in_enough_regions() {
    use crate::aggregate::{SeriesKey, SeriesStats};
    let dir = tempfile::tempdir().unwrap();
    let (path, text) = bare_plan(
        dir.path(),
        r#"
[[checks]]
id = "home"
kind = "http"
targets = ["old", "new"]
url = "https://www.example.org/"

[[steps]]
id = "ok"
kind = "approve"
prompt = "?"
"#,
    );
    let plan = crate::plan::parse(&path, &text).plan.unwrap();
    let series = |target: &'static str, region: &str, failures: u64| SeriesStats {
        key: SeriesKey {
            check: "home".into(),
            target,
            region: region.into(),
        },
        samples: 10,
        failures,
        hard_failures: 0,
        probes: 1,
        p50_ms: None,
        p95_ms: None,
        last_error: String::new(),
    };
    let mut snap = Snapshot {
        series: vec![
            series("old", "asia", 0),
            series("old", "us", 0),
            series("new", "asia", 0),
            series("new", "us", 2),
        ],
        dns: vec![],
    };
    let (failing, _) = evidence::gate_checks(&plan, &snap, &["home".into()], 2);
    assert_eq!(failing, ["home/new"]);
    let (failing, _) = evidence::gate_checks(&plan, &snap, &["home".into()], 1);
    assert!(failing.is_empty(), "{failing:?}");
    // Old failing everywhere blocks the gate too: the same code must be healthy on both.
    snap.series[0].failures = 1;
    snap.series[1].failures = 1;
    let (failing, _) = evidence::gate_checks(&plan, &snap, &["home".into()], 1);
    assert_eq!(failing, ["home/old"]);
}

#[test]
fn verify_judges_the_site_and_what_users_get_through_their_resolvers() {
    use crate::aggregate::{SeriesKey, SeriesStats};
    let dir = tempfile::tempdir().unwrap();
    let (path, text) = bare_plan(
        dir.path(),
        r#"
[[checks]]
id = "home"
kind = "http"
targets = ["old", "new", "dns"]
url = "https://www.example.org/"

[[steps]]
id = "ok"
kind = "approve"
prompt = "?"
"#,
    );
    let plan = crate::plan::parse(&path, &text).plan.unwrap();
    let series = |target: &'static str, failures: u64| SeriesStats {
        key: SeriesKey {
            check: "home".into(),
            target,
            region: "asia".into(),
        },
        samples: 10,
        failures,
        hard_failures: 0,
        probes: 1,
        p50_ms: None,
        p95_ms: None,
        last_error: String::new(),
    };
    let snap = |new_failures, dns_failures| Snapshot {
        series: vec![
            series("old", 10),
            series("new", new_failures),
            series("dns", dns_failures),
        ],
        dns: vec![],
    };
    let pass = |s: &Snapshot| {
        evidence::checks_pass(&plan, s, &["home".into()], crate::plan::Site::New, 0.1, 1).0
    };
    // Old is down: irrelevant when verifying new.
    assert!(pass(&snap(0, 1)));
    assert!(!pass(&snap(5, 0)), "new failing");
    assert!(!pass(&snap(0, 5)), "users' path failing");
}

// ---------------------------------------------------------------------------
// Guard trips (what `guards` hands the engine).
// ---------------------------------------------------------------------------

/// The forward runbook of [`Rig::plan`] followed by a soak of `soak`.
fn soak_plan(rig: &Rig, soak: &str) -> (std::path::PathBuf, String) {
    rig.plan(
        &format!(
            r#"
[[steps]]
id = "soak"
kind = "soak"
duration = "{soak}"
"#
        ),
        "",
    )
}

async fn until_step(e: &Engine, step: &str) {
    for _ in 0..500 {
        if let Some(s) = e.status(0).await.unwrap()
            && s.step.as_ref().is_some_and(|(id, _)| id == step)
            && s.live.as_ref().is_some_and(|l| l.step_id == step)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the run never reached step {step}");
}

fn guard_trip(run_id: u64, action: plan::GuardAction, mode: plan::GuardMode) -> GuardTrip {
    GuardTrip {
        run_id,
        guard: "install-new".into(),
        action,
        mode,
        summary: "2 of 2 regions saw www-dns failures on new (error_ratio > 0.5 for 3 ticks)"
            .into(),
        detail: json!({"kind": "quorum", "regions": [{"region": "asia", "verdict": "FAIL"}]}),
    }
}

fn trip_notes(entries: &[Entry]) -> Vec<&Entry> {
    entries
        .iter()
        .filter(|e| e.phase == Phase::Note && e.str("event") == "trip")
        .collect()
}

#[tokio::test]
async fn a_fallback_trip_stops_the_soak_at_once_runs_the_fallback_and_blocks_a_forward_start() {
    let rig = Rig::new(false);
    rig.ev.set(1.0, 25);
    let (e, _stop) = rig.engine();
    let mut events = e.subscribe();
    let (path, text) = soak_plan(&rig, "1h");
    let (run, _) = e.start(path.clone(), text.clone(), false).await.unwrap();
    until_step(&e, "soak").await;
    let t0 = std::time::Instant::now();
    let (outcome, note) = e
        .trip(guard_trip(
            run.id,
            plan::GuardAction::Fallback,
            plan::GuardMode::Enforce,
        ))
        .await
        .unwrap();
    assert_eq!(outcome, TripOutcome::Fallback);
    // The trip and the switch to the fallback runbook are one transaction:
    // the run record already says so when the note is back.
    let r = e.status(0).await.unwrap().unwrap().run;
    assert_eq!(r.direction, Direction::Fallback);
    assert!(r.forward_blocked);
    let s = until_state(&e, RunState::FellBack).await;
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "the hour-long soak must not delay the fallback: {:?}",
        t0.elapsed()
    );
    assert!(
        s.message.contains("guard `install-new` tripped"),
        "{}",
        s.message
    );
    assert_eq!(
        rig.dns.zone.lock().unwrap()["www.example.org."].values,
        ["192.0.2.1"],
        "fallback points DNS back at old"
    );
    let (_, entries) = e.history(run.id).await.unwrap();
    let trips = trip_notes(&entries);
    assert_eq!(trips.len(), 1);
    assert_eq!(trips[0].seq, note.seq);
    assert_eq!(trips[0].str("outcome"), "fallback");
    assert_eq!(trips[0].str("kind"), "quorum", "the evidence is kept");
    assert_eq!(trips[0].detail["regions"][0]["region"], "asia");
    let back = entries
        .iter()
        .position(|x| x.step_id == "back" && x.phase == Phase::Intent)
        .unwrap();
    assert!(
        entries.iter().position(|x| x.seq == note.seq).unwrap() < back,
        "the trip is written before the fallback starts"
    );
    assert!(
        !outcomes(&entries).contains(&("soak".into(), "ok".into())),
        "the soak was interrupted, not finished"
    );
    assert_eq!(
        events.recv().await.unwrap(),
        EngineEvent::FallbackStarted {
            run_id: run.id,
            guard: "install-new".into(),
            why: guard_trip(
                run.id,
                plan::GuardAction::Fallback,
                plan::GuardMode::Enforce
            )
            .summary,
        }
    );
    assert_eq!(
        events.recv().await.unwrap(),
        EngineEvent::FallbackDone { run_id: run.id }
    );
    let err = e
        .start(path.clone(), text.clone(), false)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("--force"), "{err}");
    e.start(path, text, true).await.unwrap();
}

#[tokio::test]
async fn a_fallback_trip_during_a_dns_step_lets_the_step_finish_first() {
    let rig = Rig::new(false);
    rig.ev.set(1.0, 25);
    let (e, _stop) = rig.engine();
    let (path, text) = soak_plan(&rig, "1h");
    let (run, _) = e.start(path, text, false).await.unwrap();
    *rig.dns.slow.lock().unwrap() = Duration::from_millis(300);
    until_step(&e, "switch").await;
    e.trip(guard_trip(
        run.id,
        plan::GuardAction::Fallback,
        plan::GuardMode::Enforce,
    ))
    .await
    .unwrap();
    until_state(&e, RunState::FellBack).await;
    let (_, entries) = e.history(run.id).await.unwrap();
    let o = outcomes(&entries);
    assert!(
        o.contains(&("switch".into(), "ok".into())),
        "the switch in flight finished and was recorded: {o:?}"
    );
    assert_eq!(o.last().unwrap(), &("back".to_string(), "ok".to_string()));
    assert_eq!(
        rig.dns.zone.lock().unwrap()["www.example.org."].values,
        ["192.0.2.1"]
    );
}

#[tokio::test]
async fn a_pause_trip_pauses_with_the_trip_as_the_reason() {
    let rig = Rig::new(false);
    rig.ev.set(1.0, 25);
    let (e, _stop) = rig.engine();
    let (path, text) = soak_plan(&rig, "2s");
    let (run, _) = e.start(path, text, false).await.unwrap();
    until_step(&e, "soak").await;
    let (outcome, _) = e
        .trip(guard_trip(
            run.id,
            plan::GuardAction::Pause,
            plan::GuardMode::Enforce,
        ))
        .await
        .unwrap();
    assert_eq!(outcome, TripOutcome::Pause);
    let s = until_state(&e, RunState::Paused).await;
    assert!(
        s.message.contains("guard `install-new` tripped"),
        "{}",
        s.message
    );
    assert!(s.message.contains("2 of 2 regions"), "{}", s.message);
    assert!(!s.run.forward_blocked);
    assert_eq!(
        rig.dns.zone.lock().unwrap()["www.example.org."].values,
        ["192.0.2.2"],
        "a pause changes no DNS"
    );
    e.resume().await.unwrap();
    until_state(&e, RunState::Done).await;
}

#[tokio::test]
async fn an_alert_trip_and_a_shadow_trip_only_write_the_decision_log() {
    let rig = Rig::new(false);
    rig.ev.set(1.0, 25);
    let (e, _stop) = rig.engine();
    let (path, text) = soak_plan(&rig, "600ms");
    let (run, _) = e.start(path, text, false).await.unwrap();
    until_step(&e, "soak").await;
    let (alert, _) = e
        .trip(guard_trip(
            run.id,
            plan::GuardAction::Alert,
            plan::GuardMode::Enforce,
        ))
        .await
        .unwrap();
    let (shadow, _) = e
        .trip(guard_trip(
            run.id,
            plan::GuardAction::Fallback,
            plan::GuardMode::Shadow,
        ))
        .await
        .unwrap();
    assert_eq!((alert, shadow), (TripOutcome::Alert, TripOutcome::Shadow));
    // Neither interrupts the soak: it runs to its end and the plan is done.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let s = e.status(0).await.unwrap().unwrap();
    assert_eq!(s.run.state, RunState::Running);
    assert_eq!(s.step.unwrap().0, "soak");
    let s = until_state(&e, RunState::Done).await;
    assert!(!s.run.forward_blocked);
    assert_eq!(
        rig.dns.zone.lock().unwrap()["www.example.org."].values,
        ["192.0.2.2"]
    );
    let (_, entries) = e.history(run.id).await.unwrap();
    let trips = trip_notes(&entries);
    assert_eq!(trips.len(), 2);
    assert_eq!(trips[0].str("outcome"), "alert");
    assert_eq!(trips[1].str("outcome"), "shadow");
    assert_eq!(trips[1].str("mode"), "shadow");
    assert!(
        trips[1].str("effect").contains("would have fallen back"),
        "{}",
        trips[1].str("effect")
    );
}

#[tokio::test]
async fn a_coordinator_killed_during_an_automatic_fallback_resumes_the_fallback() {
    let rig = Rig::new(false);
    rig.ev.set(1.0, 25);
    let (e, stop) = rig.engine();
    let (path, text) = soak_plan(&rig, "1h");
    let (run, _) = e.start(path.clone(), text.clone(), false).await.unwrap();
    until_step(&e, "soak").await;
    // The fallback's DNS step hangs: the coordinator dies in the middle of it.
    *rig.dns.slow.lock().unwrap() = Duration::from_secs(30);
    e.trip(guard_trip(
        run.id,
        plan::GuardAction::Fallback,
        plan::GuardMode::Enforce,
    ))
    .await
    .unwrap();
    until_step(&e, "back").await;
    stop.cancel();
    if let Some(h) = e.inner.task.lock().unwrap().take() {
        h.abort();
    }
    drop(e);
    *rig.dns.slow.lock().unwrap() = Duration::ZERO;
    let (e, _stop) = rig.engine();
    assert_eq!(e.resume_unfinished().await.unwrap(), Some(run.id));
    let s = until_state(&e, RunState::FellBack).await;
    assert_eq!(s.run.direction, Direction::Fallback);
    assert!(s.run.forward_blocked);
    assert_eq!(
        rig.dns.zone.lock().unwrap()["www.example.org."].values,
        ["192.0.2.1"]
    );
    let (_, entries) = e.history(run.id).await.unwrap();
    let back_intents = entries
        .iter()
        .filter(|x| x.step_id == "back" && x.phase == Phase::Intent)
        .count();
    assert_eq!(back_intents, 2, "the fallback's DNS step is repeated");
    assert!(
        !outcomes(&entries).contains(&("soak".into(), "ok".into())),
        "the forward runbook never resumes"
    );
    assert!(e.start(path, text, false).await.is_err());
}

#[tokio::test]
async fn a_trip_after_the_run_ended_changes_nothing() {
    let rig = Rig::new(false);
    rig.ev.set(1.0, 25);
    let (e, _stop) = rig.engine();
    let (path, text) = rig.plan("", "");
    let (run, _) = e.start(path, text, false).await.unwrap();
    until_state(&e, RunState::Done).await;
    let (outcome, note) = e
        .trip(guard_trip(
            run.id,
            plan::GuardAction::Fallback,
            plan::GuardMode::Enforce,
        ))
        .await
        .unwrap();
    assert_eq!(outcome, TripOutcome::Fallback);
    assert!(
        note.str("effect").contains("nothing to do"),
        "{}",
        note.str("effect")
    );
    let s = e.status(0).await.unwrap().unwrap();
    assert_eq!(s.run.state, RunState::Done);
    assert!(!s.run.forward_blocked);
}

// ---------------------------------------------------------------------------
// The guard watcher.
// ---------------------------------------------------------------------------

/// [`Rig::plan`] with `[plan] tick = "100ms"`, `guards` and a 1h soak at the end.
fn guarded_plan(rig: &Rig, guards: &str) -> (std::path::PathBuf, String) {
    let (path, text) = soak_plan(rig, "1h");
    let text = text.replacen(
        "name = \"test\"\n",
        "name = \"test\"\ntick = \"100ms\"\n",
        1,
    );
    (path, format!("{text}\n{guards}"))
}

const DNS_GUARD: &str = r#"
[[guards]]
id = "resolvers"
source = "probe"
check = "www-dns"
target = "dns"
condition = "dns_mismatch_ratio > 0.5"
action = "fallback"
armed_from = "switch"
"#;

fn status_guard(action: &str, mode: &str) -> String {
    format!(
        r#"
[[guards]]
id = "provider"
source = "status_page"
url = "http://127.0.0.1:9/status.json"
condition = "indicator >= major"
for = 1
interval = "1s"
action = "{action}"
mode = "{mode}"
armed_from = "switch"
"#
    )
}

fn notes<'a>(entries: &'a [Entry], event: &str) -> Vec<&'a Entry> {
    entries
        .iter()
        .filter(|e| e.phase == Phase::Note && e.str("event") == event)
        .collect()
}

#[tokio::test]
async fn guards_arm_when_their_step_starts_and_log_only_changes() {
    let rig = Rig::new(false);
    rig.ev.set(0.0, 3600);
    let (e, _stop) = rig.engine();
    let watcher = e.spawn_guard_watcher();
    let (path, text) = guarded_plan(&rig, DNS_GUARD);
    let (run, _) = e.start(path, text, false).await.unwrap();
    // Waiting for the TTL to drain, before `switch`: nothing armed, nothing logged.
    until_step(&e, "drained").await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(e.status(0).await.unwrap().unwrap().guards.is_empty());
    let (_, entries) = e.history(run.id).await.unwrap();
    assert!(notes(&entries, "verdict").is_empty());
    // Drained: the switch starts and arms the guard.
    rig.ev.set(0.0, 25);
    until_step(&e, "propagated").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let s = e.status(0).await.unwrap().unwrap();
    assert_eq!(s.guards.len(), 1, "{:?}", s.guards);
    assert_eq!(s.guards[0].guard, "resolvers");
    let regions: Vec<&str> = s.guards[0]
        .regions
        .iter()
        .map(|r| r.region.as_str())
        .collect();
    assert_eq!(
        regions,
        ["asia", "us"],
        "regions with connected probes are listed"
    );
    // No probe results at all: NO_EVIDENCE, logged once however many ticks pass.
    let (_, entries) = e.history(run.id).await.unwrap();
    let v = notes(&entries, "verdict");
    assert_eq!(
        v.len(),
        1,
        "one note for the first verdicts, none while nothing changes"
    );
    assert_eq!(v[0].str("guard"), "resolvers");
    let changes = v[0].detail["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 2);
    assert_eq!(changes[0]["verdict"], "NO_EVIDENCE");
    assert!(changes[0]["from"].is_null());
    let armed_at = entries
        .iter()
        .position(|x| x.step_id == "switch" && x.phase == Phase::Intent)
        .unwrap();
    assert!(entries.iter().position(|x| x.seq == v[0].seq).unwrap() > armed_at);
    watcher.abort();
}

#[tokio::test]
async fn a_status_page_guard_trips_and_the_run_falls_back_on_its_own() {
    // A current-thread runtime: the watcher and its poller record on this thread's recorder.
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let scrape = recorder.handle();
    let _local = metrics::set_default_local_recorder(&recorder);
    let rig = Rig::new(false);
    rig.ev.set(1.0, 25);
    *rig.sources.value.lock().unwrap() = Some(Ok(1.0)); // minor
    let (e, _stop) = rig.engine();
    let watcher = e.spawn_guard_watcher();
    let (path, text) = guarded_plan(&rig, &status_guard("fallback", "enforce"));
    let (run, _) = e.start(path.clone(), text.clone(), false).await.unwrap();
    until_step(&e, "soak").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        e.status(0).await.unwrap().unwrap().run.state,
        RunState::Running
    );
    let t = scrape.render();
    assert_eq!(
        gauge(&t, "cutover_status_page_indicator{guard=\"provider\"}"),
        Some(1.0),
        "the page's latest reading (minor): {t}"
    );
    assert_eq!(
        gauge(&t, "cutover_guard_threshold{guard=\"provider\"}"),
        Some(3.0),
        "indicator >= major: {t}"
    );
    *rig.sources.value.lock().unwrap() = Some(Ok(3.0)); // major
    let s = until_state(&e, RunState::FellBack).await;
    assert!(s.run.forward_blocked);
    assert_eq!(
        rig.dns.zone.lock().unwrap()["www.example.org."].values,
        ["192.0.2.1"]
    );
    let (_, entries) = e.history(run.id).await.unwrap();
    let trips = notes(&entries, "trip");
    assert_eq!(trips.len(), 1);
    assert_eq!(trips[0].str("guard"), "provider");
    assert_eq!(trips[0].str("outcome"), "fallback");
    // The verdict change that led to it is in the log, before the trip.
    let fail = notes(&entries, "verdict")
        .into_iter()
        .find(|n| n.detail["changes"][0]["verdict"] == "FAIL")
        .expect("a FAIL verdict note");
    assert!(fail.seq < trips[0].seq);
    assert!(e.start(path, text, false).await.is_err());
    // Disarmed with the fallback: nobody reads the page, its state is unknown.
    let mut t = scrape.render();
    for _ in 0..100 {
        if gauge(&t, "cutover_status_page_indicator{guard=\"provider\"}").is_some_and(f64::is_nan) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        t = scrape.render();
    }
    assert!(
        gauge(&t, "cutover_status_page_indicator{guard=\"provider\"}").is_some_and(f64::is_nan),
        "{t}"
    );
    watcher.abort();
}

#[tokio::test]
async fn a_shadow_guard_logs_the_trip_and_the_plan_goes_on() {
    let rig = Rig::new(false);
    rig.ev.set(1.0, 25);
    *rig.sources.value.lock().unwrap() = Some(Ok(4.0)); // critical
    let (e, _stop) = rig.engine();
    let watcher = e.spawn_guard_watcher();
    let (path, text) = guarded_plan(&rig, &status_guard("fallback", "shadow"));
    let (run, _) = e.start(path, text, false).await.unwrap();
    until_step(&e, "soak").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let s = e.status(0).await.unwrap().unwrap();
    assert_eq!(s.run.state, RunState::Running);
    assert_eq!(
        rig.dns.zone.lock().unwrap()["www.example.org."].values,
        ["192.0.2.2"]
    );
    let (_, entries) = e.history(run.id).await.unwrap();
    let trips = notes(&entries, "trip");
    assert_eq!(
        trips.len(),
        1,
        "a tripped guard stays tripped: one trip note"
    );
    assert_eq!(trips[0].str("outcome"), "shadow");
    assert!(s.guards[0].tripped);
    watcher.abort();
}

#[tokio::test]
async fn after_a_restart_a_guard_that_tripped_stays_tripped_and_does_not_act_again() {
    let rig = Rig::new(false);
    rig.ev.set(1.0, 25);
    *rig.sources.value.lock().unwrap() = Some(Ok(3.0));
    let (path, text) = guarded_plan(&rig, &status_guard("pause", "enforce"));
    let run_id = {
        let (e, stop) = rig.engine();
        let watcher = e.spawn_guard_watcher();
        let (run, _) = e.start(path, text, false).await.unwrap();
        until_state(&e, RunState::Paused).await;
        e.resume().await.unwrap();
        stop.cancel();
        watcher.abort();
        if let Some(h) = e.inner.task.lock().unwrap().take() {
            h.abort();
        }
        run.id
    };
    let (e, _stop) = rig.engine();
    e.resume_unfinished().await.unwrap();
    let watcher = e.spawn_guard_watcher();
    until_step(&e, "soak").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let s = e.status(0).await.unwrap().unwrap();
    assert_eq!(s.run.state, RunState::Running, "{}", s.message);
    assert!(s.guards.iter().any(|g| g.guard == "provider" && g.tripped));
    let (_, entries) = e.history(run_id).await.unwrap();
    assert_eq!(notes(&entries, "trip").len(), 1);
    watcher.abort();
}

#[tokio::test]
async fn a_region_silent_longer_than_no_evidence_after_is_reported_once() {
    let (hook, seen) = http_stub(200, "ok").await;
    let rig = Rig::new(false);
    std::fs::write(rig.dir.path().join("chat.url"), format!("{hook}/chat")).unwrap();
    rig.ev.set(1.0, 25);
    let (e, _stop) = rig.engine();
    let watcher = e.spawn_guard_watcher();
    let alerts = r#"
[[notifications.webhooks]]
name = "chat"
kind = "slack"
url_file = "chat.url"

[alerts]
channels = ["chat"]
no_evidence_after = "1s"
"#;
    let (path, text) = guarded_plan(&rig, &format!("{DNS_GUARD}\n{alerts}"));
    let (run, _) = e.start(path, text, false).await.unwrap();
    until_step(&e, "soak").await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_, entries) = e.history(run.id).await.unwrap();
    let silent = notes(&entries, "no_evidence");
    let regions: BTreeSet<&str> = silent.iter().map(|n| n.str("region")).collect();
    assert_eq!(regions, ["asia", "us"].into());
    assert_eq!(silent.len(), 2, "once per region while it stays silent");
    let texts: Vec<String> = seen.lock().unwrap().clone();
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert!(
        texts
            .iter()
            .all(|t| t.contains("CutoverGuardNoEvidence (warning)")
                && t.contains("guard resolvers: no evidence from")),
        "{texts:?}"
    );
    watcher.abort();
}

#[tokio::test]
async fn a_trip_the_fallback_and_its_end_are_alerted_and_the_deliveries_journaled() {
    let (hook, seen) = http_stub(200, "{}").await;
    let rig = Rig::new(false);
    std::fs::write(rig.dir.path().join("alerts.url"), format!("{hook}/alerts")).unwrap();
    rig.ev.set(1.0, 25);
    *rig.sources.value.lock().unwrap() = Some(Ok(3.0)); // major from the start
    let (e, _stop) = rig.engine();
    let watcher = e.spawn_guard_watcher();
    let alerts = r#"
[[notifications.webhooks]]
name = "feed"
kind = "json"
url_file = "alerts.url"

[alerts]
channels = ["feed"]
"#;
    let (path, text) = guarded_plan(
        &rig,
        &format!("{}\n{alerts}", status_guard("fallback", "enforce")),
    );
    let (run, _) = e.start(path, text, false).await.unwrap();
    until_state(&e, RunState::FellBack).await;
    let mut names = Vec::new();
    for _ in 0..200 {
        names = seen
            .lock()
            .unwrap()
            .iter()
            .map(|r| {
                let body: serde_json::Value =
                    serde_json::from_str(r.split_once('\n').unwrap().1).unwrap();
                body["alert"].as_str().unwrap().to_string()
            })
            .collect::<Vec<_>>();
        if names.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    names.sort();
    assert_eq!(
        names,
        [
            "CutoverFallbackDone",
            "CutoverFallbackStarted",
            "CutoverGuardTripped"
        ]
    );
    let tripped = seen
        .lock()
        .unwrap()
        .iter()
        .find(|r| r.contains("CutoverGuardTripped"))
        .cloned()
        .unwrap();
    let body: serde_json::Value =
        serde_json::from_str(tripped.split_once('\n').unwrap().1).unwrap();
    assert_eq!(body["guard"], "provider");
    assert!(
        body["summary"].as_str().unwrap().contains("major"),
        "the alert says why: {body}"
    );
    // Each delivery is in the decision log.
    let mut journaled = Vec::new();
    for _ in 0..100 {
        let (_, entries) = e.history(run.id).await.unwrap();
        journaled = notes(&entries, "alert")
            .iter()
            .map(|n| {
                assert_eq!(n.detail["delivered"][0]["destination"], "feed");
                assert_eq!(n.detail["delivered"][0]["ok"], true);
                n.str("name").to_string()
            })
            .collect();
        if journaled.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(journaled.len(), 3, "{journaled:?}");
    watcher.abort();
}

impl FakeEvidence {
    /// `n` results of `www-dns` on `target` from each of `probes` in `region`,
    /// in the last second; `fail` of each probe's results failed.
    fn results(&self, region: &str, probes: usize, target: &str, n: usize, fail: usize) {
        use cutover_proto::v1;
        let now = now_ms();
        let mut agg = self.agg.lock().unwrap();
        for p in 0..probes {
            let probe: Arc<str> = Arc::from(format!("{region}-{p}").as_str());
            for i in 0..n {
                let failed = i < fail;
                let r = v1::CheckResult {
                    seq: i as u64 + 1,
                    check_id: "www-dns".into(),
                    target: match target {
                        "dns" => v1::Target::Dns,
                        "new" => v1::Target::New,
                        _ => v1::Target::Old,
                    } as i32,
                    started_unix_ms: now - 500,
                    duration_us: 20_000,
                    outcome: if failed {
                        v1::Outcome::Failure
                    } else {
                        v1::Outcome::Success
                    } as i32,
                    error: if failed {
                        "SERVFAIL".into()
                    } else {
                        String::new()
                    },
                    ..Default::default()
                };
                agg.add(&probe, region, now - 500 + i as i64, &r, now);
            }
        }
    }
}

const PROBE_GUARD: &str = r#"
[[guards]]
id = "dns-errors"
source = "probe"
check = "www-dns"
target = "dns"
condition = "error_ratio > 0.5"
window = "5s"
quorum = 2
for = 2
action = "fallback"
armed_from = "switch"
"#;

#[tokio::test]
async fn a_probe_guard_trips_on_failures_from_a_quorum_of_regions_and_the_run_falls_back() {
    let rig = Rig::new(false);
    rig.ev.set(1.0, 25);
    let (e, _stop) = rig.engine();
    let watcher = e.spawn_guard_watcher();
    let (path, text) = guarded_plan(&rig, PROBE_GUARD);
    let (run, _) = e.start(path, text, false).await.unwrap();
    until_step(&e, "soak").await;
    // One region failing is not a quorum.
    rig.ev.results("asia", 2, "dns", 4, 4);
    rig.ev.results("us", 2, "dns", 4, 0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s = e.status(0).await.unwrap().unwrap();
    assert_eq!(s.run.state, RunState::Running, "{}", s.message);
    let asia = &s.guards[0].regions[0];
    assert_eq!((asia.region.as_str(), asia.verdict), ("asia", "FAIL"));
    // The second region fails too (12 of its probes' 16 results): two ticks later it falls back.
    rig.ev.results("us", 2, "dns", 12, 12);
    let s = until_state(&e, RunState::FellBack).await;
    assert!(s.run.forward_blocked);
    let (_, entries) = e.history(run.id).await.unwrap();
    let trips = notes(&entries, "trip");
    assert_eq!(trips.len(), 1);
    let summary = trips[0].str("summary");
    assert!(summary.starts_with("2 of 2 regions"), "{summary}");
    assert_eq!(trips[0].str("condition"), "error_ratio > 0.5");
    let regions = trips[0].detail["regions"].as_array().unwrap();
    assert_eq!(regions.len(), 2);
    assert_eq!(regions[0]["voters"], 2);
    assert_eq!(regions[0]["samples"], 8);
    assert_eq!(regions[1]["samples"], 32);
    watcher.abort();
}

/// The value of the series `name_and_labels` (as rendered) in a scrape.
fn gauge(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn the_run_gauges_show_the_fallback_runbook_and_the_active_steps_deadline() {
    // A current-thread runtime: the engine's tasks record on this thread's recorder.
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let _local = metrics::set_default_local_recorder(&recorder);
    let rig = Rig::new(false);
    rig.ev.set(1.0, 25);
    let (e, _stop) = rig.engine();
    let (path, text) = rig.plan(
        r#"
[[steps]]
id = "soak"
kind = "soak"
duration = "1h"
"#,
        r#"
[[fallback]]
id = "hold"
kind = "soak"
duration = "2h"
"#,
    );
    let (run, _) = e.start(path, text, false).await.unwrap();
    until_step(&e, "soak").await;
    let soon = |secs: f64| now_ms() as f64 / 1000.0 + secs;
    let t = handle.render();
    assert_eq!(gauge(&t, "cutover_plan_fallback_active"), Some(0.0), "{t}");
    let soak = gauge(
        &t,
        "cutover_plan_step_deadline_timestamp_seconds{step=\"soak\"}",
    )
    .expect("the soak's deadline");
    assert!(
        (soak - soon(3600.0)).abs() < 30.0,
        "the soak ends in an hour: {soak} vs now {}\n{t}",
        soon(0.0)
    );
    // The dns step before it had a 10 minute timeout; it ended, so no deadline.
    assert_eq!(
        gauge(
            &t,
            "cutover_plan_step_deadline_timestamp_seconds{step=\"switch\"}"
        ),
        Some(0.0),
        "{t}"
    );

    e.trip(guard_trip(
        run.id,
        plan::GuardAction::Fallback,
        plan::GuardMode::Enforce,
    ))
    .await
    .unwrap();
    until_step(&e, "hold").await;
    let t = handle.render();
    assert_eq!(gauge(&t, "cutover_plan_fallback_active"), Some(1.0), "{t}");
    assert_eq!(
        gauge(&t, "cutover_plan_run_state{outcome=\"running\"}"),
        Some(1.0)
    );
    assert_eq!(
        gauge(
            &t,
            "cutover_plan_step_deadline_timestamp_seconds{step=\"soak\"}"
        ),
        Some(0.0),
        "the interrupted soak has no deadline any more: {t}"
    );
    let hold = gauge(
        &t,
        "cutover_plan_step_deadline_timestamp_seconds{step=\"hold\"}",
    )
    .expect("the fallback soak's deadline");
    assert!((hold - soon(7200.0)).abs() < 30.0, "{hold}\n{t}");

    // A paused fallback is still the fallback runbook; an aborted one is over.
    e.pause().await.unwrap();
    let t = handle.render();
    assert_eq!(gauge(&t, "cutover_plan_fallback_active"), Some(1.0), "{t}");
    e.abort("done by hand").await.unwrap();
    let t = handle.render();
    assert_eq!(gauge(&t, "cutover_plan_fallback_active"), Some(0.0), "{t}");
    assert_eq!(
        gauge(&t, "cutover_plan_run_state{outcome=\"aborted\"}"),
        Some(1.0)
    );
}
