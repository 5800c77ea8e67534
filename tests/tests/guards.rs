//! Guards end to end (issue 4): real BIND, real per-region Unbound caches, the
//! stand-in registries, the real coordinator and probes (three regions, two or
//! three probes each, every probe with its own 127.x address), plus an alert
//! receiver, a Statuspage stand-in and a real Prometheus.
//!
//! Each plan switches DNS to new and soaks; the guards are armed from the
//! switch. Short windows and a 250 ms tick keep each test well under a
//! minute; every wait is a poll with a generous deadline, never a timing
//! assertion (the detection time is a benchmark figure, BENCHMARKS.md).

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use cutover_e2e::alert_receiver::{ALERTMANAGER_PATH, AlertReceiver};
use cutover_e2e::bind::query;
use cutover_e2e::cluster::{Options, REGIONS, SITE_HOST, World, checks, probe_source};
use cutover_e2e::journal::{self, Row, has, notes};
use cutover_e2e::plan::{self, PlanEnv};
use cutover_e2e::prom::Sample;
use cutover_e2e::prometheus::{MetricsTarget, Prometheus};
use cutover_e2e::statuspage::StatusPage;
use serde_json::Value;

/// TTL of `package.elm.test` before the plan and the plan's `normal_ttl`.
const NORMAL_TTL: u32 = 12;
/// Hosts in the test's block (see `cluster` for the others).
const ALERT_HOST: u8 = 40;
const STATUS_HOST: u8 = 41;
const TARGET_HOST: u8 = 42;
const PROMETHEUS_HOST: u8 = 43;

/// Webhook paths at the alert receiver.
const SLACK_PATH: &str = "/slack";
const JSON_PATH: &str = "/json";

/// The probe guard of tests a and b: install failures on new, from two of
/// three regions, for two 250 ms ticks over a 4 s window.
const INSTALL_GUARD: &str = "install-new";
fn install_guard() -> String {
    format!(
        r#"[[guards]]
id = "{INSTALL_GUARD}"
source = "probe"
check = "{check}"
target = "new"
condition = "error_ratio > 0.5"
window = "4s"
min_samples = 2
min_probes = 2
quorum = 2
for = 2
action = "fallback"
armed_from = "switch"
"#,
        check = checks::ELM_PACKAGE
    )
}

/// A world with `per_region` probes per region, connected.
async fn world(per_region: u8) -> World {
    world_with(per_region, |_| {}).await
}

/// Like [`world`], with fault knobs set before any probe starts.
async fn world_with(per_region: u8, faults: impl FnOnce(&World)) -> World {
    let mut world = World::build(Options {
        ttl: NORMAL_TTL,
        probes_per_region: per_region,
        start_probes: false,
        ..Options::default()
    })
    .await
    .unwrap();
    faults(&world);
    world.start().await.unwrap();
    world.wait_connected(Duration::from_secs(60)).await.unwrap();
    world
}

/// Writes `NAME.toml` in the world's `plan/` folder: switch DNS to new, soak
/// for `soak`, with `guards` (TOML) armed from the switch; the fallback points
/// DNS back at old and verifies old. With `alerts`, alerts go to the
/// receiver's Slack and JSON webhooks and its Alertmanager API.
fn write_plan(
    world: &World,
    name: &str,
    soak: &str,
    guards: &str,
    alerts: Option<&AlertReceiver>,
) -> PathBuf {
    plan_file(
        &PlanEnv::of(world),
        name,
        soak,
        guards,
        alerts.map(|rx| rx.base_url()).as_deref(),
    )
}

/// [`write_plan`] for `env`; `alerts` is the alert receiver's base URL.
fn plan_file(env: &PlanEnv, name: &str, soak: &str, guards: &str, alerts: Option<&str>) -> PathBuf {
    let dir = &env.dir;
    std::fs::create_dir_all(dir).unwrap();
    let alerts = match alerts {
        None => String::new(),
        Some(receiver) => {
            let slack = dir.join("slack.url");
            let json = dir.join("json.url");
            std::fs::write(&slack, format!("{receiver}{SLACK_PATH}")).unwrap();
            std::fs::write(&json, format!("{receiver}{JSON_PATH}")).unwrap();
            format!(
                r#"
[[notifications.webhooks]]
name = "chat"
kind = "slack"
url_file = "{slack}"

[[notifications.webhooks]]
name = "pager"
kind = "json"
url_file = "{json}"

[alerts]
channels = ["chat", "pager"]
alertmanager = {{ url = "{am}" }}
"#,
                slack = slack.display(),
                json = json.display(),
                am = receiver,
            )
        }
    };
    let text = format!(
        r#"[plan]
name = "{name}"
tick = "250ms"

{sites}
{install}
{dns}{alerts}
{guards}
{steps}
{fallback}"#,
        sites = env.sites_toml(),
        install = env.install_check_toml(),
        dns = env.dns_toml(Some(4), NORMAL_TTL),
        steps = plan::switch_and_soak_toml(soak),
        fallback = plan::fallback_toml(true),
    );
    env.write(&format!("{name}.toml"), &text).unwrap()
}

async fn cli_ok(world: &World, args: &[&str]) -> anyhow::Result<String> {
    let out = world.coordinator.cli(args).await?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "cutover {args:?} failed ({}): {stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(stdout)
}

async fn start(world: &World, plan: &std::path::Path) {
    let out = cli_ok(world, &["start", plan.to_str().unwrap()])
        .await
        .unwrap();
    assert!(out.contains("started run"), "{out}");
}

/// What BIND answers for the site now.
async fn bind_answers(world: &World) -> Vec<Ipv4Addr> {
    query(world.infra.bind.addr(), SITE_HOST, "A")
        .await
        .unwrap()
        .addresses
}

/// Waits until the soak runs (the switch is done, the guards are armed).
async fn until_soaking(world: &World) -> Vec<Row> {
    journal::until(
        &world.coordinator.db_path(),
        "the soak to start",
        Duration::from_secs(60),
        |_, r| has(r, "switch", "outcome", Some("ok")) && has(r, "soak", "intent", None),
    )
    .await
    .unwrap()
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The value of the guard gauge `name` for `guard` (and `region`).
fn gauge(samples: &[Sample], name: &str, guard: &str, region: Option<&str>) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && s.label("guard") == Some(guard)
                && region.is_none_or(|r| s.label("region") == Some(r))
        })
        .map(|s| s.value)
}

/// The single `trip` note of the run, checked to be `guard`'s with `outcome`.
fn the_trip<'a>(rows: &'a [Row], guard: &str, outcome: &str) -> &'a Row {
    let trips = notes(rows, "trip");
    assert_eq!(trips.len(), 1, "exactly one trip note: {rows:#?}");
    let trip = trips[0];
    assert_eq!(trip.detail["guard"], guard, "{trip:#?}");
    assert_eq!(trip.detail["outcome"], outcome, "{trip:#?}");
    trip
}

/// True if `v` holds, at any depth, an object for `region` whose new verdict
/// (`to`, `to.verdict` or `verdict`) is `verdict`.
fn mentions_verdict(v: &Value, region: &str, verdict: &str) -> bool {
    match v {
        Value::Object(m) => {
            let here = m.get("region").and_then(Value::as_str) == Some(region)
                && [
                    m.get("to"),
                    m.get("to").and_then(|t| t.get("verdict")),
                    m.get("verdict"),
                ]
                .into_iter()
                .flatten()
                .any(|x| x.as_str() == Some(verdict));
            here || m.values().any(|x| mentions_verdict(x, region, verdict))
        }
        Value::Array(a) => a.iter().any(|x| mentions_verdict(x, region, verdict)),
        _ => false,
    }
}

/// a. After the switch new fails every request: the guard trips, the fallback
/// runs, BIND answers old again, `cutover why` explains it, the alerts arrive
/// on every channel, and a forward start needs `--force`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_on_new_after_the_switch_trip_the_guard_and_fall_back() {
    let world = world(2).await;
    let rx = AlertReceiver::start(world.block.add(ALERT_HOST).unwrap())
        .await
        .unwrap();
    let plan = write_plan(&world, "fault", "5m", &install_guard(), Some(&rx));
    let db = world.coordinator.db_path();
    start(&world, &plan).await;
    until_soaking(&world).await;
    assert_eq!(bind_answers(&world).await, [world.block.ip(11)]);

    // New breaks as users are sent to it; old keeps working.
    let (_, state, rows) = journal::latest(&db).unwrap();
    assert_eq!(state, "running");
    assert!(
        notes(&rows, "trip").is_empty(),
        "tripped before the fault: {rows:#?}"
    );
    let fault_ms = unix_ms();
    world.infra.new.set_error_rate(1.0);
    let rows = journal::until(&db, "the fallback", Duration::from_secs(60), |s, _| {
        s == "fell_back"
    })
    .await
    .unwrap();
    assert_eq!(bind_answers(&world).await, [world.block.ip(10)]);
    assert!(
        has(&rows, "back-to-old", "outcome", Some("ok")),
        "{rows:#?}"
    );
    assert!(has(&rows, "old-works", "outcome", Some("ok")), "{rows:#?}");
    assert!(
        !has(&rows, "soak", "outcome", Some("ok")),
        "the soak must not complete: {rows:#?}"
    );

    // The decision log: the trip with its evidence, in plain words.
    let trip = the_trip(&rows, INSTALL_GUARD, "fallback");
    let at_ms = trip.detail["at_ms"].as_i64().unwrap_or_default();
    assert!(at_ms >= fault_ms, "the trip predates the fault: {trip:#?}");
    eprintln!(
        "fault → trip {} ms; `cutover why` said:\n{}",
        at_ms - fault_ms,
        cli_ok(&world, &["why"]).await.unwrap()
    );
    let summary = trip.detail["summary"].as_str().unwrap_or_default();
    assert!(summary.contains(checks::ELM_PACKAGE), "{trip:#?}");
    let named: Vec<&str> = REGIONS
        .iter()
        .copied()
        .filter(|r| summary.contains(r))
        .collect();
    assert!(named.len() >= 2, "quorum 2: regions named: {summary}");
    for region in &named {
        assert!(
            notes(&rows, "verdict")
                .iter()
                .any(|n| mentions_verdict(&n.detail, region, "FAIL")),
            "no verdict note saying {region} went FAIL: {rows:#?}"
        );
    }
    let why = cli_ok(&world, &["why"]).await.unwrap();
    assert!(why.contains(INSTALL_GUARD), "{why}");
    for region in &named {
        assert!(
            why.contains(region),
            "`cutover why` does not name {region}:\n{why}"
        );
    }
    assert!(
        why.to_ascii_lowercase().contains("fell back")
            || why.to_ascii_lowercase().contains("fallback"),
        "{why}"
    );

    // The alerts, with the reason, on every channel.
    let deadline = Duration::from_secs(30);
    let slack = rx
        .wait_for_json(SLACK_PATH, deadline, |v| {
            v["text"]
                .as_str()
                .is_some_and(|t| t.contains(INSTALL_GUARD) && t.contains(checks::ELM_PACKAGE))
        })
        .await
        .unwrap();
    assert!(slack.get("text").is_some());
    rx.wait_for_json(JSON_PATH, deadline, |v| {
        v["alert"] == "CutoverGuardTripped"
            && v["guard"] == INSTALL_GUARD
            && v["summary"]
                .as_str()
                .is_some_and(|s| s.contains(checks::ELM_PACKAGE))
            && v["at"].is_string()
    })
    .await
    .unwrap();
    let am_has = |name: &'static str| {
        move |v: &Value| {
            v.as_array().is_some_and(|alerts| {
                alerts.iter().any(|a| {
                    a["labels"]["alertname"] == name
                        && a["labels"]["plan"] == "fault"
                        && a["labels"]["severity"].is_string()
                        && a["annotations"]["summary"].is_string()
                        && a["startsAt"].is_string()
                })
            })
        }
    };
    let tripped = rx
        .wait_for_json(ALERTMANAGER_PATH, deadline, am_has("CutoverGuardTripped"))
        .await
        .unwrap();
    let alert = tripped
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["labels"]["alertname"] == "CutoverGuardTripped")
        .unwrap();
    assert_eq!(alert["labels"]["guard"], INSTALL_GUARD, "{alert}");
    let text = format!(
        "{} {}",
        alert["annotations"]["summary"], alert["annotations"]["description"]
    );
    assert!(text.contains(checks::ELM_PACKAGE), "{alert}");
    rx.wait_for_json(
        ALERTMANAGER_PATH,
        deadline,
        am_has("CutoverFallbackStarted"),
    )
    .await
    .unwrap();
    rx.wait_for_json(ALERTMANAGER_PATH, deadline, am_has("CutoverFallbackDone"))
        .await
        .unwrap();

    let samples = world.coordinator.metrics().await.unwrap();
    let trips = samples
        .iter()
        .find(|s| {
            s.name == "cutover_guard_trips_total"
                && s.has(&[("guard", INSTALL_GUARD), ("outcome", "fallback")])
        })
        .map(|s| s.value);
    assert_eq!(trips, Some(1.0), "cutover_guard_trips_total");

    // Forward again only when an operator says so.
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

/// b. Noise does not trip a guard: 5 % random errors on new, one probe for
/// which new always fails (its own view), and one region's probes frozen
/// (SIGSTOP) in the middle of the soak. The run finishes, DNS stays on new,
/// and the silent region shows NO_EVIDENCE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noise_a_lying_probe_and_a_silent_region_never_trip() {
    // The second probe of asia (the first region) sees new fail, always.
    let world = world_with(3, |w| {
        w.infra.new.set_error_rate(0.05);
        let liar = probe_source(&w.block, 0, 1);
        w.infra.new.set_error_rate_for_client(liar.into(), 1.0);
    })
    .await;
    assert_eq!(
        world.probes["asia-2"].source,
        Some(probe_source(&world.block, 0, 1))
    );
    let plan = write_plan(&world, "noise", "35s", &install_guard(), None);
    let db = world.coordinator.db_path();
    start(&world, &plan).await;
    until_soaking(&world).await;

    // Every region has evidence before one goes silent.
    let verdicts = |samples: &[Sample]| {
        REGIONS
            .iter()
            .map(|r| gauge(samples, "cutover_guard_verdict", INSTALL_GUARD, Some(r)))
            .collect::<Vec<_>>()
    };
    let coordinator = &world.coordinator;
    cutover_e2e::poll::until(
        "a PASS from every region",
        Duration::from_secs(20),
        || async {
            let v = verdicts(&coordinator.metrics().await?);
            if v.iter().all(|x| *x == Some(0.0)) {
                Ok(Some(()))
            } else {
                bail!("verdicts (asia, australia, us): {v:?}")
            }
        },
    )
    .await
    .unwrap();
    let frozen: Vec<u32> = world.probes_in("us").map(|p| p.proc.pid()).collect();
    assert_eq!(frozen.len(), 3);
    for p in world.probes_in("us") {
        p.proc.signal("STOP").unwrap();
    }
    // us goes NO_EVIDENCE (-1); asia, outvoting its liar, and australia pass.
    cutover_e2e::poll::until(
        "us NO_EVIDENCE while asia and australia pass",
        Duration::from_secs(20),
        || async {
            let v = verdicts(&coordinator.metrics().await?);
            if v == [Some(0.0), Some(0.0), Some(-1.0)] {
                Ok(Some(()))
            } else {
                bail!("verdicts (asia, australia, us): {v:?}")
            }
        },
    )
    .await
    .unwrap();

    let rows = journal::until(&db, "the run to finish", Duration::from_secs(60), |s, _| {
        s == "done"
    })
    .await
    .unwrap();
    assert!(notes(&rows, "trip").is_empty(), "no trip: {rows:#?}");
    assert!(has(&rows, "soak", "outcome", Some("ok")));
    assert!(!rows.iter().any(|r| r.step == "back-to-old"), "{rows:#?}");
    assert_eq!(bind_answers(&world).await, [world.block.ip(11)]);
    assert!(
        notes(&rows, "verdict")
            .iter()
            .any(|n| mentions_verdict(&n.detail, "us", "NO_EVIDENCE")),
        "no decision note saying us went NO_EVIDENCE: {rows:#?}"
    );
    // The liar did see new fail, all along.
    let lied: Vec<String> = world.probes["asia-2"]
        .produced()
        .unwrap()
        .into_iter()
        .filter(|p| p.check == checks::ELM_PACKAGE && p.target == "new")
        .map(|p| p.outcome)
        .collect();
    assert!(
        lied.len() >= 10 && lied.iter().all(|o| o != "success"),
        "asia-2 on new: {lied:?}"
    );
    let samples = world.coordinator.metrics().await.unwrap();
    assert!(
        !samples
            .iter()
            .any(|s| s.name == "cutover_guard_trips_total" && s.value > 0.0),
        "a trip was counted"
    );
    for p in world.probes_in("us") {
        p.proc.signal("CONT").unwrap();
    }
}

/// The status page guard, with `action`.
fn status_guard(url: &str, action: &str) -> String {
    format!(
        r#"[[guards]]
id = "provider-status"
source = "status_page"
url = "{url}"
condition = "indicator >= major"
interval = "1s"
for = 2
action = "{action}"
armed_from = "switch"
"#
    )
}

/// c. The provider's status page turns `major` during the soak: with action
/// pause the run pauses (DNS stays on new); in a second run with action
/// fallback it falls back to old.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_page_turning_major_pauses_or_falls_back_as_configured() {
    let world = world(1).await;
    let page = StatusPage::start(world.block.add(STATUS_HOST).unwrap())
        .await
        .unwrap();
    let db = world.coordinator.db_path();

    let plan = write_plan(
        &world,
        "status-pause",
        "5m",
        &status_guard(&page.url(), "pause"),
        None,
    );
    start(&world, &plan).await;
    until_soaking(&world).await;
    let polls = page.requests();
    page.set_indicator("minor");
    cutover_e2e::poll::until(
        "the guard to read the status page",
        Duration::from_secs(10),
        || {
            let n = page.requests();
            async move { Ok((n >= polls + 2).then_some(())) }
        },
    )
    .await
    .unwrap();
    let (_, state, rows) = journal::latest(&db).unwrap();
    assert_eq!(state, "running", "minor is below the threshold: {rows:#?}");
    page.set_indicator("major");
    let rows = journal::until(&db, "the pause", Duration::from_secs(30), |s, _| {
        s == "paused"
    })
    .await
    .unwrap();
    let trip = the_trip(&rows, "provider-status", "pause");
    assert_eq!(trip.detail["action"], "pause");
    assert_eq!(bind_answers(&world).await, [world.block.ip(11)]);
    let status = cli_ok(&world, &["status"]).await.unwrap();
    assert!(status.contains("PAUSED"), "{status}");
    let why = cli_ok(&world, &["why"]).await.unwrap();
    assert!(why.contains("provider-status"), "{why}");
    cli_ok(&world, &["abort", "--reason", "provider outage"])
        .await
        .unwrap();

    // The same, with action fallback.
    page.set_indicator("none");
    let plan = write_plan(
        &world,
        "status-fallback",
        "5m",
        &status_guard(&page.url(), "fallback"),
        None,
    );
    start(&world, &plan).await;
    until_soaking(&world).await;
    page.set_indicator("critical");
    let rows = journal::until(&db, "the fallback", Duration::from_secs(60), |s, _| {
        s == "fell_back"
    })
    .await
    .unwrap();
    the_trip(&rows, "provider-status", "fallback");
    assert!(
        has(&rows, "back-to-old", "outcome", Some("ok")),
        "{rows:#?}"
    );
    assert_eq!(bind_answers(&world).await, [world.block.ip(10)]);
}

/// The PromQL guard of test d: trips above 0.2.
fn promql_guard(url: &str, promql: &str) -> String {
    format!(
        r#"[[guards]]
id = "new-5xx"
source = "prometheus"
url = "{url}"
query = '{promql}'
condition = "value > 0.2"
interval = "1s"
for = 2
action = "fallback"
armed_from = "switch"
"#
    )
}

/// The plans of these tests are valid (`cutover plan check`), so a syntax
/// change shows up here in a second rather than as a timeout in a process test.
#[tokio::test]
async fn the_guard_plans_pass_plan_check() {
    let dir = tempfile::tempdir().unwrap();
    let env = PlanEnv {
        dir: dir.path().to_owned(),
        ns: Ipv4Addr::new(127, 0, 0, 53),
        tsig: "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0".into(),
        old: Ipv4Addr::new(127, 0, 0, 10),
        new: Ipv4Addr::new(127, 0, 0, 11),
        base: format!("https://{SITE_HOST}:8443"),
    };
    let plans = [
        plan_file(
            &env,
            "a",
            "5m",
            &install_guard(),
            Some("http://127.0.0.40:9093"),
        ),
        plan_file(&env, "b", "35s", &install_guard(), None),
        plan_file(
            &env,
            "c",
            "5m",
            &status_guard("http://127.0.0.41:80/api/v2/status.json", "pause"),
            None,
        ),
        plan_file(
            &env,
            "d",
            "5m",
            &promql_guard(
                "http://127.0.0.43:9090",
                r#"max(elm_http_5xx_ratio{site="new"})"#,
            ),
            None,
        ),
    ];
    for plan in plans {
        let mut cmd = tokio::process::Command::new(cutover_e2e::procs::cutover_bin().unwrap());
        cmd.args(["plan", "check"]).arg(&plan);
        let out = cutover_e2e::procs::run(cmd, Duration::from_secs(30))
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}{}",
            plan.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// d. A PromQL guard on a real Prometheus scraping a target the test
/// controls: the new server's 5xx ratio crosses the threshold, the guard
/// trips and the run falls back; the decision log records the value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promql_guard_on_a_real_prometheus_trips_when_the_value_crosses() {
    let Some(bin) = cutover_e2e::prometheus::binary_or_skip(
        "a_promql_guard_on_a_real_prometheus_trips_when_the_value_crosses",
    ) else {
        return;
    };
    let world = world(1).await;
    let target = MetricsTarget::start(world.block.add(TARGET_HOST).unwrap())
        .await
        .unwrap();
    let series = r#"elm_http_5xx_ratio{site="new"}"#;
    target.set(series, 0.01);
    let prom = Prometheus::start(
        &bin,
        world.block.add(PROMETHEUS_HOST).unwrap(),
        &[target.addr()],
        &world.dir().join("prometheus"),
        &world.block,
    )
    .await
    .unwrap();
    let promql = format!("max({series})");
    prom.wait_value(&promql, Duration::from_secs(20), |v| v == 0.01)
        .await
        .unwrap();
    let guard = promql_guard(&prom.url(), &promql);
    let plan = write_plan(&world, "promql", "5m", &guard, None);
    let db = world.coordinator.db_path();
    start(&world, &plan).await;
    until_soaking(&world).await;
    // Below the threshold, the guard passes.
    let coordinator = &world.coordinator;
    cutover_e2e::poll::until(
        "the PromQL guard to PASS",
        Duration::from_secs(20),
        || async {
            let s = coordinator.metrics().await?;
            let v = gauge(&s, "cutover_guard_verdict", "new-5xx", None);
            if v == Some(0.0) {
                Ok(Some(()))
            } else {
                bail!("verdict {v:?}")
            }
        },
    )
    .await
    .unwrap();

    target.set(series, 0.62);
    prom.wait_value(&promql, Duration::from_secs(20), |v| v == 0.62)
        .await
        .unwrap();
    let rows = journal::until(&db, "the fallback", Duration::from_secs(60), |s, _| {
        s == "fell_back"
    })
    .await
    .unwrap();
    let trip = the_trip(&rows, "new-5xx", "fallback");
    assert!(
        trip.detail.to_string().contains("0.62"),
        "the trip note does not record the value 0.62: {trip:#?}"
    );
    assert!(
        notes(&rows, "verdict")
            .iter()
            .any(|n| mentions_verdict(&n.detail, "global", "FAIL")
                && n.detail.to_string().contains("0.62")),
        "no verdict note with the value: {rows:#?}"
    );
    assert_eq!(bind_answers(&world).await, [world.block.ip(10)]);
    let why = cli_ok(&world, &["why"]).await.unwrap();
    assert!(why.contains("new-5xx"), "{why}");
    assert!(
        why.contains("0.62"),
        "`cutover why` does not show the value:\n{why}"
    );
}
