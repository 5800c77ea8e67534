//! The plan engine end to end: `cutover start` runs an example-shaped plan
//! (short TTLs) against real BIND (RFC 2136 + TSIG), real per-region Unbound
//! caches, the stand-in registries and real probes; the coordinator is
//! SIGKILLed at step boundaries and in the middle of `exec` and `dns` steps.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use cutover_e2e::bind::query;
use cutover_e2e::cluster::{Options, REGIONS, SITE_HOST, World, checks};
use cutover_e2e::journal::{self, Row, has};
use cutover_e2e::plan::{self, PlanEnv};

/// TTL of `package.elm.test` before the plan (the plan's `normal_ttl`).
const NORMAL_TTL: u32 = 12;
/// The plan's `lowered_ttl`.
const LOWERED_TTL: u32 = 4;

/// The plan's own `dns` check (the coordinator config does not have it).
const PLAN_DNS_CHECK: &str = "plan-dns";

const FORWARD: [&str; 7] = [
    "healthy",
    "lower-ttl",
    "ttl-drained",
    "stop-old",
    "switch",
    "propagation",
    "test",
];

/// An example-shaped plan for the test world. `stop-old` (exec once) appends
/// to `counter` and then sleeps `exec_secs`; `final-sync` (exec once) appends
/// to `counter2`.
fn write_plan(
    world: &World,
    counter: &Path,
    counter2: &Path,
    exec_secs: u32,
    extra_steps: &str,
) -> anyhow::Result<PathBuf> {
    let env = PlanEnv::of(world);
    let text = format!(
        r#"[plan]
name = "e2e-package"

{sites}
# Not in the coordinator config: the engine assigns it to the probes.
[[checks]]
id = "{dns}"
kind = "dns"
name = "{SITE_HOST}"
authoritative_zone = "elm.test"
interval = "1s"

{install_check}
{dns_setup}
[[steps]]
id = "healthy"
kind = "gate"
checks_passing = ["{install}"]
same_code = {{ url_path = "/", compare = "body_sha256", host = "{SITE_HOST}:{port}" }}
min_regions = 3
timeout = "60s"
on_failure = "abort"

[[steps]]
id = "lower-ttl"
kind = "dns"
ttl = "lowered"
on_failure = "abort"

[[steps]]
id = "ttl-drained"
kind = "wait"
until = {{ ttl_drained = true }}
max = "90s"
on_failure = "abort"

[[steps]]
id = "stop-old"
kind = "exec"
command = ["sh", "-c", "echo ran >> {counter}; sleep {exec_secs}"]
once = true
timeout = "60s"

[[steps]]
id = "switch"
kind = "dns"
set = "new"
on_failure = "fallback"

[[steps]]
id = "propagation"
kind = "wait"
until = {{ propagation = 1.0, site = "new" }}
max = "90s"
on_failure = "fallback"

[[steps]]
id = "test"
kind = "verify"
checks = ["{dns}", "{install}"]
min_regions = 3
timeout = "60s"
on_failure = "fallback"

[[steps]]
id = "final-sync"
kind = "exec"
command = ["sh", "-c", "echo ran >> {counter2}"]
once = true
{extra_steps}

{fallback}"#,
        sites = env.sites_toml(),
        install_check = env.install_check_toml(),
        dns = PLAN_DNS_CHECK,
        install = checks::ELM_PACKAGE,
        counter = counter.display(),
        counter2 = counter2.display(),
        port = world.infra.site_port,
        dns_setup = env.dns_toml(Some(LOWERED_TTL), NORMAL_TTL),
        fallback = plan::fallback_toml(true),
    );
    env.write("plan.toml", &text)
}

/// A connected test world and the example-shaped plan written for it.
struct Setup {
    world: World,
    /// Lines appended by the `stop-old` exec once step.
    counter: PathBuf,
    /// Lines appended by the `final-sync` exec once step.
    counter2: PathBuf,
    plan: PathBuf,
    db: PathBuf,
}

/// Builds the world (record TTL `NORMAL_TTL`), waits for every probe, writes the plan.
async fn setup(exec_secs: u32, extra_steps: &str) -> Setup {
    let mut world = World::build(Options {
        ttl: NORMAL_TTL,
        ..Options::default()
    })
    .await
    .unwrap();
    world.wait_connected(Duration::from_secs(60)).await.unwrap();
    let counter = world.dir().join("stop-old.count");
    let counter2 = world.dir().join("final-sync.count");
    let plan = write_plan(&world, &counter, &counter2, exec_secs, extra_steps).unwrap();
    let db = world.coordinator.db_path();
    Setup {
        world,
        counter,
        counter2,
        plan,
        db,
    }
}

fn signal(sig: &str, pid: &str) {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{sig}"), pid])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{sig} {pid}");
}

fn lines(p: &Path) -> usize {
    std::fs::read_to_string(p)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

async fn cli_ok(world: &World, args: &[&str]) -> anyhow::Result<String> {
    let out = world.coordinator.cli(args).await?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "cutover {args:?} failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(stdout)
}

/// BIND answers the new address at the lowered TTL; every region's resolver reaches it.
async fn assert_switched(world: &World, new: Ipv4Addr) -> anyhow::Result<()> {
    let at_bind = query(world.infra.bind.addr(), SITE_HOST, "A").await?;
    anyhow::ensure!(at_bind.addresses == [new], "BIND serves {at_bind:?}");
    anyhow::ensure!(at_bind.ttl == Some(LOWERED_TTL), "BIND serves {at_bind:?}");
    for region in REGIONS {
        let got = world.infra.resolvers[region].resolve(SITE_HOST).await?;
        anyhow::ensure!(got.addresses == [new], "{region} resolver answers {got:?}");
    }
    Ok(())
}

fn assert_every_step_ok_once(rows: &[Row]) {
    for step in FORWARD.iter().chain(&["final-sync"]) {
        let oks = rows
            .iter()
            .filter(|r| r.step == *step && r.phase == "outcome" && r.detail["result"] == "ok")
            .count();
        assert_eq!(oks, 1, "{step}: {rows:#?}");
        let intent = rows
            .iter()
            .find(|r| r.step == *step && r.phase == "intent")
            .map(|r| r.seq);
        let outcome = rows
            .iter()
            .find(|r| r.step == *step && r.phase == "outcome")
            .map(|r| r.seq);
        assert!(intent < outcome, "{step}: intent after outcome");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_example_shaped_plan_runs_to_completion_with_evidence() {
    let Setup {
        world,
        counter,
        counter2,
        plan,
        db,
    } = setup(0, "").await;

    let out = cli_ok(&world, &["start", plan.to_str().unwrap()])
        .await
        .unwrap();
    assert!(out.contains("started run 1"), "{out}");
    // A second start while it runs is refused.
    let again = world
        .coordinator
        .cli(&["start", plan.to_str().unwrap()])
        .await
        .unwrap();
    assert!(!again.status.success());

    // While the TTL drains, `cutover status` shows the plan above the evidence.
    journal::until(
        &db,
        "the TTL to be lowered",
        Duration::from_secs(60),
        |_, r| has(r, "lower-ttl", "outcome", Some("ok")),
    )
    .await
    .unwrap();
    let status = cli_ok(&world, &["status"]).await.unwrap();
    assert!(status.contains("plan e2e-package (run 1"), "{status}");
    assert!(
        status.contains("step 3/8: ttl-drained") || status.contains("step 4/8"),
        "{status}"
    );

    let rows = journal::until(
        &db,
        "the run to finish",
        Duration::from_secs(150),
        |s, _| s == "done",
    )
    .await
    .unwrap();
    assert_every_step_ok_once(&rows);

    // The gate fetched the front page pinned to each site (TLS with the real
    // name) and found the same bytes.
    let gate = rows
        .iter()
        .find(|r| r.step == "healthy" && r.phase == "outcome")
        .unwrap();
    let same = gate.detail["facts"]["same_code"].as_str().unwrap_or("");
    assert_eq!(same.len(), 64, "{gate:?}");

    // TTL lowering was observed by the probes in every region before the switch.
    let drained = rows
        .iter()
        .find(|r| r.step == "ttl-drained" && r.phase == "outcome")
        .unwrap();
    let switch = rows
        .iter()
        .find(|r| r.step == "switch" && r.phase == "intent")
        .unwrap();
    assert!(drained.seq < switch.seq);
    let regions = drained.detail["regions"].as_object().unwrap();
    assert_eq!(regions.len(), REGIONS.len(), "{drained:?}");
    for (region, v) in regions {
        let ttl = v["value"].as_f64().unwrap();
        assert!(
            ttl <= f64::from(LOWERED_TTL),
            "{region} remaining TTL {ttl}"
        );
    }

    assert_switched(&world, world.block.ip(11)).await.unwrap();
    assert_eq!(lines(&counter), 1);
    assert_eq!(lines(&counter2), 1);

    // The plan's progress is on /metrics, under names promtool accepts.
    let text = cutover_e2e::prom::scrape(world.coordinator.metrics)
        .await
        .unwrap();
    cutover_e2e::prom::promtool_check(&text)
        .await
        .unwrap()
        .unwrap();
    let samples = cutover_e2e::prom::parse(&text);
    let value = |name: &str, labels: &[(&str, &str)]| {
        samples
            .iter()
            .find(|s| s.name == name && s.has(labels))
            .map(|s| s.value)
    };
    assert_eq!(
        value("cutover_plan_run_state", &[("outcome", "done")]),
        Some(1.0)
    );
    assert_eq!(
        value("cutover_plan_run_state", &[("outcome", "running")]),
        Some(0.0)
    );
    assert_eq!(
        value(
            "cutover_plan_steps_total",
            &[("step", "switch"), ("outcome", "ok")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value("cutover_plan_step_active", &[("step", "switch")]),
        Some(0.0)
    );

    let history = cli_ok(&world, &["history"]).await.unwrap();
    for step in FORWARD {
        assert!(
            history
                .lines()
                .any(|l| l.contains(step) && l.contains("outcome") && l.contains("OK")),
            "{step} missing from history:\n{history}"
        );
    }
    assert!(history.contains("Z  "), "timestamps: {history}");
    assert!(history.contains("done"), "{history}");

    // Manual rollback by hand: the fallback points DNS back at old and verifies old.
    cli_ok(&world, &["rollback", "--reason", "e2e"])
        .await
        .unwrap();
    journal::until(&db, "the fallback", Duration::from_secs(60), |s, _| {
        s == "fell_back"
    })
    .await
    .unwrap();
    let at_bind = query(world.infra.bind.addr(), SITE_HOST, "A")
        .await
        .unwrap();
    assert_eq!(at_bind.addresses, [world.block.ip(10)]);
    let refused = world
        .coordinator
        .cli(&["start", plan.to_str().unwrap()])
        .await
        .unwrap();
    assert!(
        !refused.status.success(),
        "a forward start after a fallback needs --force"
    );
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--force"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_boundaries_and_mid_step_resumes_and_once_steps_run_once() {
    let Setup {
        mut world,
        counter,
        counter2,
        plan,
        db,
    } = setup(5, "").await;
    cli_ok(&world, &["start", plan.to_str().unwrap()])
        .await
        .unwrap();

    async fn restart(world: &mut World) {
        world.coordinator.kill();
        world.coordinator.start(&world.block).await.unwrap();
    }

    // 1. At a step boundary: right after the TTL change is recorded.
    journal::until(
        &db,
        "lower-ttl's outcome",
        Duration::from_secs(60),
        |_, r| has(r, "lower-ttl", "outcome", None),
    )
    .await
    .unwrap();
    restart(&mut world).await;

    // 2. In the middle of `exec once`: it started (the side effect is visible), no outcome.
    journal::until(
        &db,
        "stop-old to start",
        Duration::from_secs(120),
        |_, r| has(r, "stop-old", "intent", None),
    )
    .await
    .unwrap();
    let t = Instant::now();
    while lines(&counter) == 0 && t.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    restart(&mut world).await;
    let rows = journal::until(
        &db,
        "the question about stop-old",
        Duration::from_secs(30),
        |s, _| s == "waiting_approval",
    )
    .await
    .unwrap();
    assert!(!has(&rows, "stop-old", "outcome", None));
    let status = cli_ok(&world, &["status"]).await.unwrap();
    assert!(status.contains("--ran"), "{status}");
    // A plain approval does not answer it.
    assert!(
        !world
            .coordinator
            .cli(&["approve"])
            .await
            .unwrap()
            .status
            .success()
    );
    // 3. In the middle of the DNS switch: BIND is stopped (SIGSTOP) so the
    // update hangs; the coordinator is killed while the switch is in flight.
    let named_pid = std::fs::read_to_string(world.dir().join("bind/named.pid"))
        .unwrap()
        .trim()
        .to_owned();
    signal("STOP", &named_pid);
    cli_ok(&world, &["approve", "--step", "stop-old", "--ran"])
        .await
        .unwrap();
    journal::until(
        &db,
        "the switch to start",
        Duration::from_secs(60),
        |_, r| has(r, "switch", "intent", None),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, _, rows) = journal::latest(&db).unwrap();
    assert!(
        !has(&rows, "switch", "outcome", None),
        "the switch must still be in flight"
    );
    world.coordinator.kill();
    signal("CONT", &named_pid);
    world.coordinator.start(&world.block).await.unwrap();

    // 4. At the boundary after the last `exec once`.
    journal::until(
        &db,
        "final-sync's outcome",
        Duration::from_secs(150),
        |_, r| has(r, "final-sync", "outcome", None),
    )
    .await
    .unwrap();
    restart(&mut world).await;

    let rows = journal::until(&db, "the run to finish", Duration::from_secs(60), |s, _| {
        s == "done"
    })
    .await
    .unwrap();
    assert_every_step_ok_once(&rows);
    assert_eq!(lines(&counter), 1, "stop-old ran exactly once");
    assert_eq!(lines(&counter2), 1, "final-sync ran exactly once");
    assert_switched(&world, world.block.ip(11)).await.unwrap();
    let history = cli_ok(&world, &["history"]).await.unwrap();
    assert!(history.contains("coordinator started"), "{history}");
    assert!(history.contains("operator says it ran"), "{history}");
    let switch_intents = rows
        .iter()
        .filter(|r| r.step == "switch" && r.phase == "intent")
        .count();
    assert_eq!(switch_intents, 2, "the interrupted switch is repeated once");
    let _ = world
        .coordinator
        .proc()
        .context("coordinator")
        .map(|p| p.tail());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_approve_and_abort_behave_as_documented() {
    let extra = r#"
[[steps]]
id = "go-live"
kind = "approve"
prompt = "Open publishing again?"
"#;
    let Setup {
        world,
        counter,
        counter2: _,
        plan,
        db,
    } = setup(0, extra).await;
    let plan = plan.to_str().unwrap();
    let old = world.block.ip(10);
    cli_ok(&world, &["start", plan]).await.unwrap();

    // Paused while the TTL drains: nothing moves, even after the TTL ran out.
    journal::until(
        &db,
        "the TTL to be lowered",
        Duration::from_secs(60),
        |_, r| has(r, "lower-ttl", "outcome", Some("ok")),
    )
    .await
    .unwrap();
    let out = cli_ok(&world, &["pause"]).await.unwrap();
    assert!(out.contains("paused"), "{out}");
    let status = cli_ok(&world, &["status"]).await.unwrap();
    assert!(status.contains("PAUSED"), "{status}");
    // Longer than the old TTL: unpaused, the drain would be over and the switch made.
    tokio::time::sleep(Duration::from_secs(u64::from(NORMAL_TTL) + 4)).await;
    let (_, state, rows) = journal::latest(&db).unwrap();
    assert_eq!(state, "paused");
    assert!(!has(&rows, "stop-old", "intent", None), "{rows:#?}");
    assert_eq!(lines(&counter), 0);
    let at_bind = query(world.infra.bind.addr(), SITE_HOST, "A")
        .await
        .unwrap();
    assert_eq!(at_bind.addresses, [old]);
    assert!(
        !world
            .coordinator
            .cli(&["pause"])
            .await
            .unwrap()
            .status
            .success()
    );

    // Resumed: it runs on to the approval and waits there.
    cli_ok(&world, &["resume"]).await.unwrap();
    journal::until(
        &db,
        "the approval question",
        Duration::from_secs(120),
        |s, r| s == "waiting_approval" && has(r, "final-sync", "outcome", Some("ok")),
    )
    .await
    .unwrap();
    let status = cli_ok(&world, &["status"]).await.unwrap();
    assert!(status.contains("Open publishing again?"), "{status}");
    assert!(status.contains("go-live (approve)"), "{status}");
    // A wrong step id is refused; the right one continues.
    let wrong = world
        .coordinator
        .cli(&["approve", "--step", "switch"])
        .await
        .unwrap();
    assert!(!wrong.status.success());
    cli_ok(&world, &["approve", "--step", "go-live"])
        .await
        .unwrap();
    journal::until(&db, "the run to finish", Duration::from_secs(30), |s, _| {
        s == "done"
    })
    .await
    .unwrap();

    // A second run that starts with a long wait, aborted during it: it ends
    // and nothing more of it runs.
    let text = std::fs::read_to_string(plan).unwrap().replacen(
        "[[steps]]",
        "[[steps]]\nid = \"window-opens\"\nkind = \"wait\"\nduration = \"10m\"\n\n[[steps]]",
        1,
    );
    let plan2 = Path::new(plan).with_file_name("plan2.toml");
    std::fs::write(&plan2, text).unwrap();
    let out = cli_ok(&world, &["start", plan2.to_str().unwrap()])
        .await
        .unwrap();
    assert!(out.contains("started run 2"), "{out}");
    journal::until(&db, "the wait to start", Duration::from_secs(10), |_, r| {
        has(r, "window-opens", "intent", None)
    })
    .await
    .unwrap();
    let status = cli_ok(&world, &["status"]).await.unwrap();
    assert!(
        status.contains("step 1/10: window-opens (wait), 10m00s left")
            || status.contains("9m59s left"),
        "{status}"
    );
    let out = cli_ok(&world, &["abort", "--reason", "wrong night"])
        .await
        .unwrap();
    assert!(out.contains("aborted"), "{out}");
    let (_, _, at_abort) = journal::latest(&db).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, state, rows) = journal::latest(&db).unwrap();
    assert_eq!(state, "aborted");
    let intents = |rows: &[Row]| rows.iter().filter(|r| r.phase == "intent").count();
    assert_eq!(
        intents(&rows),
        intents(&at_abort),
        "a step started after abort: {rows:#?}"
    );
    assert!(
        !world
            .coordinator
            .cli(&["resume"])
            .await
            .unwrap()
            .status
            .success()
    );
    let history = cli_ok(&world, &["history"]).await.unwrap();
    assert!(history.contains("aborted: wrong night"), "{history}");
    assert_eq!(lines(&counter), 1, "run 2 never reached stop-old");
    assert!(!has(&rows, "window-opens", "outcome", None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_after_every_step_boundary_still_finishes_once() {
    let Setup {
        mut world,
        counter,
        counter2,
        plan,
        db,
    } = setup(0, "").await;
    cli_ok(&world, &["start", plan.to_str().unwrap()])
        .await
        .unwrap();
    let mut restarts = 0;
    for step in FORWARD.iter().chain(&["final-sync"]) {
        loop {
            let rows = journal::until(
                &db,
                &format!("{step}'s outcome"),
                Duration::from_secs(120),
                |s, r| s == "waiting_approval" || has(r, step, "outcome", Some("ok")),
            )
            .await
            .unwrap();
            if has(&rows, step, "outcome", Some("ok")) {
                break;
            }
            // Killed right after the next `exec once` step's intent: the journal
            // cannot tell whether it ran, so the operator answers from its side effect.
            let ask = rows
                .iter()
                .rev()
                .find(|r| r.detail["event"] == "ask")
                .unwrap();
            let ran = lines(if ask.step == "stop-old" {
                &counter
            } else {
                &counter2
            }) > 0;
            let answer = if ran { "--ran" } else { "--not-ran" };
            cli_ok(&world, &["approve", "--step", &ask.step, answer])
                .await
                .unwrap();
        }
        world.coordinator.kill();
        world.coordinator.start(&world.block).await.unwrap();
        restarts += 1;
    }
    let rows = journal::until(&db, "the run to finish", Duration::from_secs(60), |s, _| {
        s == "done"
    })
    .await
    .unwrap();
    assert_eq!(restarts, 8);
    assert_every_step_ok_once(&rows);
    assert_eq!(lines(&counter), 1);
    assert_eq!(lines(&counter2), 1);
    assert_switched(&world, world.block.ip(11)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_failing_after_the_switch_runs_the_fallback_back_to_old() {
    let Setup { world, plan, .. } = setup(0, "").await;
    // The `test` verify gives up after 10 s instead of 60 s.
    let text = std::fs::read_to_string(&plan).unwrap();
    let marker = "min_regions = 3\ntimeout = \"60s\"\non_failure = \"fallback\"";
    assert!(text.contains(marker));
    std::fs::write(
        &plan,
        text.replace(
            marker,
            "min_regions = 3\ntimeout = \"10s\"\non_failure = \"fallback\"",
        ),
    )
    .unwrap();
    let db = world.coordinator.db_path();
    cli_ok(&world, &["start", plan.to_str().unwrap()])
        .await
        .unwrap();
    journal::until(&db, "the switch", Duration::from_secs(120), |_, r| {
        has(r, "switch", "intent", None)
    })
    .await
    .unwrap();
    // New breaks as users are sent to it.
    world.infra.new.set_down(true);
    let rows = journal::until(&db, "the fallback", Duration::from_secs(90), |s, _| {
        s == "fell_back"
    })
    .await
    .unwrap();
    assert!(has(&rows, "test", "outcome", Some("failed")), "{rows:#?}");
    assert!(has(&rows, "back-to-old", "outcome", Some("ok")));
    assert!(has(&rows, "old-works", "outcome", Some("ok")));
    assert!(
        !has(&rows, "final-sync", "intent", None),
        "no forward step after the failure"
    );
    let at_bind = query(world.infra.bind.addr(), SITE_HOST, "A")
        .await
        .unwrap();
    assert_eq!(at_bind.addresses, [world.block.ip(10)]);
    let history = cli_ok(&world, &["history"]).await.unwrap();
    assert!(history.contains("FAILED (fallback follows)"), "{history}");
    let status = cli_ok(&world, &["status"]).await.unwrap();
    assert!(status.contains("fallback runbook: FELL_BACK"), "{status}");
    assert!(status.contains("--force"), "{status}");
}
