//! The operations kit against real Prometheus and Alertmanager (issue 5).
//!
//! A real Prometheus runs with the shipped `deploy/prometheus/prometheus.yml`
//! and its rules, scraping the test's coordinator and a stand-in for the
//! user's service; a real Alertmanager runs with the shipped
//! `deploy/alertmanager/alertmanager.yml`, its receivers pointed at the
//! test's alert receiver. A cutover with a fault falls back automatically
//! (new starts serving corrupt archives after the switch), and on the way the
//! rarely seen series are made to exist: a hash mismatch on old, a probe with
//! a wrong token, a duplicate result, a probe that stops. Then:
//!
//! - every query of every panel, annotation and variable of every dashboard in
//!   `dashboards/` (template variables substituted as Grafana would) returns
//!   data over the test's time span;
//! - `CutoverFallbackTriggered` fires in Prometheus, and Alertmanager delivers
//!   it to the webhook receiver and, being critical, to Slack; the coordinator's
//!   own `CutoverGuardTripped` reaches the webhook through the same
//!   Alertmanager; the warning `CutoverRunFellBack` reaches the webhook only.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use cutover_e2e::alert_receiver::AlertReceiver;
use cutover_e2e::alertmanager::{self, Alertmanager};
use cutover_e2e::cluster::{Options, REGIONS, World, checks, probe_command};
use cutover_e2e::dashboards::{self, Dashboard, LabelValues, Source, VariableKind};
use cutover_e2e::journal;
use cutover_e2e::ops::repo_root;
use cutover_e2e::plan::{self, PlanEnv};
use cutover_e2e::procs::Proc;
use cutover_e2e::production::ServiceTarget;
use cutover_e2e::prometheus::{self, Prometheus, free_addr};
use cutover_proto::v1;
use serde_json::Value;

/// Hosts in the test's block (see `cluster` for the others).
const ALERT_HOST: u8 = 40;
const PROMETHEUS_HOST: u8 = 43;
const ALERTMANAGER_HOST: u8 = 44;
const SERVICE_OLD_HOST: u8 = 45;
const SERVICE_NEW_HOST: u8 = 46;

/// TTL of `package.elm.test` before the plan and the plan's `normal_ttl`.
const NORMAL_TTL: u32 = 12;
/// The guard that trips.
const GUARD: &str = "install-new";
/// The Prometheus alert for a fallback (deploy/prometheus/rules/cutover.yml).
const FALLBACK_ALERT: &str = "CutoverFallbackTriggered";
/// The Prometheus alert (a warning) once the run has fallen back.
const FELL_BACK_ALERT: &str = "CutoverRunFellBack";
/// The alert the coordinator sends Alertmanager itself when a guard trips.
const COORDINATOR_ALERT: &str = "CutoverGuardTripped";
/// The scrape job of the user's service, as in prometheus.yml's commented example.
const SERVICE_JOB: &str = "elm-package";
/// Paths at the alert receiver.
const AM_WEBHOOK_PATH: &str = "/alertmanager";
const AM_SLACK_PATH: &str = "/slack";
const PLAN_WEBHOOK_PATH: &str = "/json";

/// `$__rate_interval` as Grafana computes it with the provisioned datasource's
/// 15 s `timeInterval`: four scrapes.
const RATE_INTERVAL: &str = "1m";
/// Seconds between the points of every range query (`$__interval`).
const STEP_SECS: u64 = 1;

/// Panels allowed to stay empty in this test, as (dashboard file, panel or
/// annotation title, why). Keep it empty: every entry is a panel nobody has
/// seen work.
const MAY_BE_EMPTY: &[(&str, &str, &str)] = &[];

/// How long the dashboards' queries get to catch up with the last scrapes.
const SETTLE: Duration = Duration::from_secs(20);

fn replace_once(text: &str, from: &str, to: &str, file: &str) -> String {
    let n = text.matches(from).count();
    assert_eq!(
        n, 1,
        "{file}: expected `{from}` exactly once (found {n}); the test rewrites it — \
         update tests/tests/dashboards.rs with the shipped file"
    );
    text.replacen(from, to, 1)
}

/// Copies the shipped Prometheus config and rules to `dir`; returns the
/// config's path. Changes, all for the test's loopback world and pace:
/// - the global scrape and evaluation intervals, 15 s → 1 s (so a run of
///   seconds shows up and `for`-less alerts fire within a second or two);
/// - Prometheus's own scrape target → its real address (not `localhost:9090`);
/// - a job for the user's service (`elm-package`: the commented example in
///   the shipped file, uncommented with the stand-ins' addresses);
/// - the `targets/*.yml` files: the coordinator's metrics listener and the
///   test's Alertmanager.
///
/// The rules are copied unchanged.
fn shipped_prometheus_config(
    dir: &Path,
    prometheus: SocketAddr,
    coordinator: SocketAddr,
    alertmanager: SocketAddr,
    service: [(SocketAddr, &str); 2],
) -> PathBuf {
    let shipped = repo_root().join("deploy/prometheus");
    let file = "deploy/prometheus/prometheus.yml";
    let text = std::fs::read_to_string(shipped.join("prometheus.yml")).unwrap();
    let text = replace_once(&text, "scrape_interval: 15s", "scrape_interval: 1s", file);
    let text = replace_once(
        &text,
        "evaluation_interval: 15s",
        "evaluation_interval: 1s",
        file,
    );
    let text = replace_once(
        &text,
        r#"targets: ["localhost:9090"]"#,
        &format!(r#"targets: ["{prometheus}"]"#),
        file,
    );
    let job = format!(
        "scrape_configs:\n  # Added by tests/tests/dashboards.rs: the user's service.\n  \
         - job_name: {SERVICE_JOB}\n    static_configs:\n{}",
        service
            .iter()
            .map(|(addr, site)| {
                format!("      - targets: [\"{addr}\"]\n        labels: {{ site: {site} }}\n")
            })
            .collect::<String>()
    );
    let text = replace_once(&text, "scrape_configs:\n", &job, file);
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    std::fs::create_dir_all(dir.join("targets")).unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, text).unwrap();
    for entry in std::fs::read_dir(shipped.join("rules")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.join("rules").join(path.file_name().unwrap())).unwrap();
    }
    std::fs::write(
        dir.join("targets/cutover-coordinator.yml"),
        format!("- targets: [\"{coordinator}\"]\n"),
    )
    .unwrap();
    std::fs::write(
        dir.join("targets/alertmanager.yml"),
        format!("- targets: [\"{alertmanager}\"]\n"),
    )
    .unwrap();
    config
}

/// Copies the shipped Alertmanager config to `dir`; returns its path. Changes:
/// the webhook receivers' URL → the alert receiver's `/alertmanager`; the
/// Slack URL file → a file holding the alert receiver's `/slack`; `group_wait`
/// 10 s → 1 s and `group_interval` 1 m → 2 s (the test's pace).
fn shipped_alertmanager_config(dir: &Path, rx: &AlertReceiver) -> PathBuf {
    let file = "deploy/alertmanager/alertmanager.yml";
    let text = std::fs::read_to_string(repo_root().join(file)).unwrap();
    let webhook = "url: http://127.0.0.1:9099/alertmanager";
    assert!(
        text.contains(webhook),
        "{file}: no `{webhook}`; update tests/tests/dashboards.rs with the shipped file"
    );
    let text = text.replace(webhook, &format!("url: {}", rx.url(AM_WEBHOOK_PATH)));
    std::fs::create_dir_all(dir).unwrap();
    let slack_url = dir.join("slack-webhook-url");
    std::fs::write(&slack_url, rx.url(AM_SLACK_PATH)).unwrap();
    let text = replace_once(
        &text,
        "api_url_file: /etc/alertmanager/secrets/slack-webhook-url",
        &format!("api_url_file: {}", slack_url.display()),
        file,
    );
    let text = replace_once(&text, "group_wait: 10s", "group_wait: 1s", file);
    let text = replace_once(&text, "group_interval: 1m", "group_interval: 2s", file);
    let config = dir.join("alertmanager.yml");
    std::fs::write(&config, text).unwrap();
    config
}

/// The plan: switch DNS to new and soak, guarded by install failures on new
/// (two of three regions, two 250 ms ticks); the fallback points DNS back at
/// old and verifies old. Alerts go to the receiver's JSON webhook and to the
/// real Alertmanager.
fn write_plan(world: &World, alertmanager: &str, rx: &AlertReceiver) -> PathBuf {
    let env = PlanEnv::of(world);
    std::fs::create_dir_all(&env.dir).unwrap();
    let pager = env.dir.join("pager.url");
    std::fs::write(&pager, rx.url(PLAN_WEBHOOK_PATH)).unwrap();
    let pager = pager.display();
    let install = checks::ELM_PACKAGE;
    let text = format!(
        r#"[plan]
name = "dashboards"
tick = "250ms"

{sites}
{install_check}
{dns}
[[notifications.webhooks]]
name = "pager"
kind = "json"
url_file = "{pager}"

[alerts]
channels = ["pager"]
alertmanager = {{ url = "{alertmanager}" }}

[[guards]]
id = "{GUARD}"
source = "probe"
check = "{install}"
target = "new"
condition = "error_ratio > 0.5"
window = "4s"
min_samples = 2
min_probes = 2
quorum = 2
for = 2
action = "fallback"
armed_from = "switch"

{steps}
{fallback}"#,
        sites = env.sites_toml(),
        install_check = env.install_check_toml(),
        dns = env.dns_toml(Some(4), NORMAL_TTL),
        steps = plan::switch_and_soak_toml("5m"),
        fallback = plan::fallback_toml(true),
    );
    env.write("dashboards.toml", &text).unwrap()
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

fn unix_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A probe with a token the coordinator never issued: refused
/// (`cutover_rejected_messages_total{outcome="bad_token"}`, a session ended
/// `rejected`); it gives up with status 2.
async fn connect_with_a_wrong_token(world: &World) {
    let region = REGIONS[0];
    let cmd = probe_command(
        region,
        "not-a-real-token-0123456789",
        &world.coordinator.url(),
        Some(world.infra.resolvers[region].addr()),
        &world.infra.ca_file,
        None,
    )
    .unwrap();
    let dir = world.dir().join("probe-wrong-token");
    let mut probe = Proc::spawn("probe-wrong-token", cmd, &dir, &world.block).unwrap();
    let status = probe
        .wait_exit(Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", probe.tail()));
    assert_eq!(status.code(), Some(2), "{}", probe.tail());
}

/// A freshly enrolled probe's session that sends one batch holding the same
/// seq twice, for a check not in its assignment: the coordinator counts a
/// duplicate (`cutover_results_duplicate_total`) and a rejected result
/// (`unknown_check`) and stores nothing, so the guards' evidence is untouched.
async fn send_a_duplicate(world: &World) -> anyhow::Result<()> {
    use v1::coordinator_message::Msg as Out;
    use v1::probe_message::Msg as In;

    let (_, token) = world.coordinator.enrol(REGIONS[0]).await?;
    let pem = std::fs::read_to_string(&world.infra.ca_file)?;
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(pem))
        .domain_name("localhost");
    let channel = tonic::transport::Endpoint::from_shared(world.coordinator.url())?
        .tls_config(tls)?
        .connect()
        .await
        .context("connecting to ProbeService")?;
    let mut client = v1::probe_service_client::ProbeServiceClient::new(channel);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let send = |msg: In| {
        let tx = tx.clone();
        async move {
            tx.send(v1::ProbeMessage { msg: Some(msg) })
                .await
                .map_err(|_| anyhow::anyhow!("the session's stream closed"))
        }
    };
    send(In::Hello(v1::Hello {
        version: "e2e-duplicate".into(),
        ..Default::default()
    }))
    .await?;
    let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let mut inbound = client.session(req).await?.into_inner();
    let mut next = async || -> anyhow::Result<Out> {
        let msg = tokio::time::timeout(Duration::from_secs(10), inbound.message())
            .await
            .context("no answer from the coordinator in 10 s")??;
        msg.and_then(|m| m.msg)
            .context("the coordinator closed the session")
    };
    let stored = loop {
        if let Out::Welcome(w) = next().await? {
            break w.stored_seq;
        }
    };
    let result = v1::CheckResult {
        seq: stored + 1,
        check_id: "not-in-the-assignment".into(),
        target: v1::Target::Old as i32,
        outcome: v1::Outcome::Success as i32,
        ..Default::default()
    };
    send(In::Results(v1::ResultBatch {
        results: vec![result.clone(), result],
    }))
    .await?;
    loop {
        if let Out::Ack(a) = next().await?
            && a.seq > stored
        {
            return Ok(());
        }
    }
}

/// The values of a variable's query, with the query as run.
async fn variable_values(
    prom: &Prometheus,
    query: &str,
    start: f64,
    end: f64,
) -> Result<Vec<String>, String> {
    let Some(LabelValues { selector, label }) = dashboards::parse_label_values(query) else {
        return Err(format!(
            "not a label_values(SELECTOR, LABEL) query: {query} (teach tests/src/dashboards.rs)"
        ));
    };
    prom.label_values(&label, selector.as_deref(), start, end)
        .await
        .map_err(|e| format!("{e:#}"))
}

/// Evaluates every query of `dash` over `[start, end]`; returns the number
/// of queries run and one message per query that returned nothing (or failed).
async fn check_dashboard(
    prom: &Prometheus,
    dash: &Dashboard,
    start: f64,
    end: f64,
) -> (usize, Vec<String>) {
    let file = dash.file_name();
    let mut failures = Vec::new();
    let mut run = 0;
    let range_secs = (end - start).ceil().max(1.0) as u64;
    let mut vars = dashboards::builtins(RATE_INTERVAL, STEP_SECS, range_secs);
    // The values a single-value variable takes here; the others are the
    // saved choice, else the first value offered.
    let preferred = BTreeMap::from([("job", SERVICE_JOB)]);
    for var in &dash.variables {
        let values = match &var.kind {
            VariableKind::Datasource => continue,
            VariableKind::Custom(values) => values.clone(),
            VariableKind::Constant(value) => vec![value.clone()],
            VariableKind::Other(ty) => {
                failures.push(format!(
                    "{file} · variable ${}: type {ty:?} is not understood by this test",
                    var.name
                ));
                continue;
            }
            VariableKind::Query(query) => {
                run += 1;
                let query = match dashboards::substitute(query, &vars) {
                    Ok(q) => q,
                    Err(e) => {
                        failures.push(format!("{file} · variable ${}: {e}", var.name));
                        continue;
                    }
                };
                match variable_values(prom, &query, start, end).await {
                    Ok(v) if !v.is_empty() => v,
                    Ok(_) => {
                        failures.push(format!(
                            "{file} · variable ${}: no values\n    {query}",
                            var.name
                        ));
                        continue;
                    }
                    Err(e) => {
                        failures.push(format!("{file} · variable ${}: {e}", var.name));
                        continue;
                    }
                }
            }
        };
        let value = if var.include_all {
            dashboards::all_of(var, &values)
        } else if let Some(want) = preferred.get(var.name.as_str()) {
            if !values.iter().any(|v| v == want) {
                failures.push(format!(
                    "{file} · variable ${}: {want:?} is not among its values {values:?}",
                    var.name
                ));
            }
            (*want).to_owned()
        } else {
            var.current
                .clone()
                .filter(|c| values.contains(c))
                .unwrap_or_else(|| values[0].clone())
        };
        vars.insert(var.name.clone(), value);
    }
    for q in &dash.queries {
        let what = match q.source {
            Source::Panel => format!("{file} · panel {:?} [{}]", q.title, q.ref_id),
            Source::Annotation => format!("{file} · annotation {:?}", q.title),
        };
        let expr = match dashboards::substitute(&q.expr, &vars) {
            Ok(e) => e,
            Err(e) => {
                failures.push(format!("{what}: {e}\n    {}", q.expr));
                continue;
            }
        };
        run += 1;
        let problem = match prom.query_range(&expr, start, end, STEP_SECS as f64).await {
            Err(e) => Some(format!("{e:#}")),
            Ok(series) if series.iter().all(|s| no_values(&s["values"])) => {
                Some(format!("no data between {start:.0} and {end:.0}"))
            }
            Ok(_) if q.instant => match prom.query_at(&expr, end).await {
                Err(e) => Some(format!("instant: {e:#}")),
                Ok(r) if r.is_empty() => Some(format!("no data now ({end:.0}; an instant panel)")),
                Ok(_) => None,
            },
            Ok(_) => None,
        };
        if let Some(problem) = problem {
            let allowed = MAY_BE_EMPTY
                .iter()
                .any(|(f, t, _)| *f == file && *t == q.title);
            if !allowed {
                failures.push(format!("{what}: {problem}\n    {expr}"));
            }
        }
    }
    (run, failures)
}

fn no_values(v: &Value) -> bool {
    v.as_array().is_none_or(Vec::is_empty)
}

/// Every query of every dashboard, retried for [`SETTLE`] while some still
/// come back empty (the last scrapes land a second or two after the event).
async fn check_all_dashboards(prom: &Prometheus, start: f64) -> (usize, Vec<String>) {
    let dir = repo_root().join("dashboards");
    let all = dashboards::load_dir(&dir).unwrap();
    dashboards::ensure_some(&all, &dir).unwrap();
    let began = Instant::now();
    loop {
        let end = unix_secs();
        let mut run = 0;
        let mut failures = Vec::new();
        for dash in &all {
            let (n, f) = check_dashboard(prom, dash, start, end).await;
            run += n;
            failures.extend(f);
        }
        if failures.is_empty() || began.elapsed() > SETTLE {
            return (run, failures);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// True if an Alertmanager webhook body (`{"alerts": [...]}`) holds a firing
/// `alertname` (for `guard`, when given).
fn webhook_fires(body: &Value, alertname: &str, guard: Option<&str>) -> bool {
    body["alerts"].as_array().is_some_and(|alerts| {
        alerts.iter().any(|a| {
            a["labels"]["alertname"] == alertname
                && guard.is_none_or(|g| a["labels"]["guard"] == g)
                && a["status"] == "firing"
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_has_data_and_the_fallback_alert_reaches_the_webhook() {
    const TEST: &str = "every_dashboard_query_has_data_and_the_fallback_alert_reaches_the_webhook";
    let Some(prometheus_bin) = prometheus::binary_or_skip(TEST) else {
        return;
    };
    let Some(alertmanager_bin) = alertmanager::binary_or_skip(TEST) else {
        return;
    };
    let began = Instant::now();

    // Old serves corrupt archives from the start (a hash mismatch on old for
    // the Regions dashboard); cleared before the plan.
    let mut world = World::build(Options {
        ttl: NORMAL_TTL,
        probes_per_region: 2,
        start_probes: false,
        ..Options::default()
    })
    .await
    .unwrap();
    world.infra.old.set_corrupt_archives(true);
    world.start().await.unwrap();

    let rx = AlertReceiver::start(world.block.add(ALERT_HOST).unwrap())
        .await
        .unwrap();
    let service_old = ServiceTarget::start(world.block.add(SERVICE_OLD_HOST).unwrap(), 40.0, 0.01)
        .await
        .unwrap();
    let service_new = ServiceTarget::start(world.block.add(SERVICE_NEW_HOST).unwrap(), 10.0, 0.2)
        .await
        .unwrap();
    let am_dir = world.dir().join("alertmanager");
    let am_config = shipped_alertmanager_config(&am_dir, &rx);
    let am = Alertmanager::start(
        &alertmanager_bin,
        free_addr(world.block.add(ALERTMANAGER_HOST).unwrap()).unwrap(),
        &am_config,
        &am_dir,
        &world.block,
    )
    .await
    .unwrap();
    let prom_dir = world.dir().join("prometheus");
    let prom_addr = free_addr(world.block.add(PROMETHEUS_HOST).unwrap()).unwrap();
    let prom_config = shipped_prometheus_config(
        &prom_dir,
        prom_addr,
        world.coordinator.metrics,
        am.addr(),
        [(service_old.addr(), "old"), (service_new.addr(), "new")],
    );
    let start = unix_secs();
    let prom = Prometheus::start_with_config(
        &prometheus_bin,
        prom_addr,
        &prom_config,
        &prom_dir,
        &world.block,
    )
    .await
    .unwrap();
    world.wait_connected(Duration::from_secs(60)).await.unwrap();

    // The hash mismatch on old reaches Prometheus; then old is healed.
    prom.wait_value(
        r#"sum(cutover_hash_mismatches_total{target="old"}) > bool 0"#,
        Duration::from_secs(30),
        |v| v == 1.0,
    )
    .await
    .unwrap();
    world.infra.old.set_corrupt_archives(false);
    let healed = Instant::now();
    connect_with_a_wrong_token(&world).await;
    send_a_duplicate(&world).await.unwrap();
    // Old's failures leave the guard's 4 s window before it arms.
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(healed.elapsed())).await;

    // The cutover, and new breaking after the switch.
    let plan = write_plan(&world, &am.url(), &rx);
    let db = world.coordinator.db_path();
    let out = cli_ok(&world, &["start", plan.to_str().unwrap()])
        .await
        .unwrap();
    assert!(out.contains("started run"), "{out}");
    journal::until(&db, "the soak to start", Duration::from_secs(60), |_, r| {
        journal::has(r, "switch", "outcome", Some("ok")) && journal::has(r, "soak", "intent", None)
    })
    .await
    .unwrap();
    world.infra.new.set_corrupt_archives(true);
    let rows = journal::until(&db, "the fallback", Duration::from_secs(60), |s, _| {
        s == "fell_back"
    })
    .await
    .unwrap();
    let trips = journal::notes(&rows, "trip");
    assert!(
        trips.iter().any(|t| t.detail["guard"] == GUARD),
        "no trip of {GUARD}: {rows:#?}"
    );

    // A volunteer stops a probe: its session ends.
    let stopped = world.probes.get_mut("us-2").unwrap();
    stopped.proc.signal("TERM").unwrap();
    stopped
        .proc
        .wait_exit(Duration::from_secs(20))
        .await
        .unwrap();

    // The fallback alert fires in Prometheus …
    let firing = cutover_e2e::poll::until(
        &format!("{FALLBACK_ALERT} to fire in Prometheus"),
        Duration::from_secs(30),
        || async {
            let alerts = prom.alerts().await?;
            let found = alerts.iter().find(|a| {
                a["labels"]["alertname"] == FALLBACK_ALERT
                    && a["labels"]["guard"] == GUARD
                    && a["state"] == "firing"
            });
            match found {
                Some(a) => Ok(Some(a.clone())),
                None => bail!("alerts so far: {alerts:#?}"),
            }
        },
    )
    .await
    .unwrap();
    assert_eq!(firing["labels"]["severity"], "critical", "{firing:#}");
    // … and Alertmanager delivers it to the webhook and, critical, to Slack.
    rx.wait_for_json(AM_WEBHOOK_PATH, Duration::from_secs(30), |b| {
        webhook_fires(b, FALLBACK_ALERT, Some(GUARD))
    })
    .await
    .unwrap();
    let slack = cutover_e2e::poll::until(
        "Alertmanager's Slack message about the fallback",
        Duration::from_secs(30),
        || {
            let posts = rx.posts_to(AM_SLACK_PATH);
            async move {
                let bodies: Vec<String> = posts
                    .iter()
                    .map(|p| String::from_utf8_lossy(&p.body).into_owned())
                    .collect();
                // The title names the alert and the guard.
                match bodies
                    .iter()
                    .find(|b| b.contains(FALLBACK_ALERT) && b.contains(GUARD))
                {
                    Some(b) => Ok(Some(b.clone())),
                    None => bail!("Slack posts so far: {bodies:#?}"),
                }
            }
        },
    )
    .await
    .unwrap();
    assert!(slack.contains("[CRITICAL]"), "{slack}");
    // The coordinator's own alert went through the same Alertmanager.
    rx.wait_for_json(AM_WEBHOOK_PATH, Duration::from_secs(30), |b| {
        webhook_fires(b, COORDINATOR_ALERT, Some(GUARD))
    })
    .await
    .unwrap();
    // The run fell back: a warning, for the webhook only.
    rx.wait_for_json(AM_WEBHOOK_PATH, Duration::from_secs(30), |b| {
        webhook_fires(b, FELL_BACK_ALERT, None)
    })
    .await
    .unwrap();

    // Every dashboard query has data.
    let (run, failures) = check_all_dashboards(&prom, start).await;
    eprintln!(
        "{run} dashboard queries evaluated over {:.0} s; {} with no data; test took {:.1} s",
        unix_secs() - start,
        failures.len(),
        began.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} dashboard queries returned no data (or failed):\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(run >= 40, "only {run} queries found in dashboards/");
    // By now Alertmanager has had many group intervals to send the warning
    // to Slack, had it routed it there.
    let to_slack: Vec<String> = rx
        .posts_to(AM_SLACK_PATH)
        .iter()
        .map(|p| String::from_utf8_lossy(&p.body).into_owned())
        .filter(|b| b.contains(FELL_BACK_ALERT))
        .collect();
    assert!(
        to_slack.is_empty(),
        "a warning reached Slack: {to_slack:#?}"
    );
}
