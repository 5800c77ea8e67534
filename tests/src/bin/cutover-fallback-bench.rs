//! Automatic fallback benchmark: how fast a fault on the new site sends users
//! back to the old one, and how often noise does it when nothing is wrong.
//!
//! Builds a real world with the e2e harness (an address block on `lo`, BIND
//! for `elm.test`, one Unbound per region, the old and new stand-in
//! registries over HTTPS, the release coordinator over TLS) with three
//! release probes in each of the three regions, all running the `install-core`
//! check (`elm_package`, elm/core 1.0.5) on old and new at a 1 s interval.
//! The plan switches `package.elm.test` to new with a TSIG-signed RFC 2136
//! update, then soaks with one guard armed:
//!
//! ```toml
//! [[guards]]
//! id = "install-new"
//! source = "probe"
//! check = "install-core"
//! target = "new"
//! condition = "error_ratio > 0.5"
//! action = "fallback"
//! armed_from = "soak"
//! ```
//!
//! and a fallback runbook of one `dns` step that points the record back at old.
//!
//! `fault`: per trial, a run is started (`--force` after the first, since a
//! fallback blocks forward starts), the guard is seen `PASS` in every region
//! (the run's verdict notes in the journal), then after a random 0–1 s delay a
//! fault is injected on new at t0 — every request answered 500 (`errors`), or
//! archives served with changed bytes under the published hash (`corrupt`, a
//! hard failure) — and BIND is asked for `package.elm.test` every 20 ms (UDP,
//! straight to the authoritative server, like `dig @bind`) until it answers the
//! old address: t_fallback. t_trip is the trip's time from the journal's trip
//! note, so t_fallback = detect (t_trip) + act (the fallback's DNS update).
//!
//! `soak`: 5 % of new's answers are errors, one probe lies (new answers every
//! request from its `--source-address` with 500, so it sees new failing and old
//! working while nobody else does), and one region's probes are stopped
//! (SIGSTOP) and continued (SIGCONT) in alternating periods. Counts trips and fallbacks; a false fallback is
//! recorded and the run restarted, so the soak keeps its length.
//!
//! ```sh
//! cargo build --release -p cutover-coordinator -p cutover-probe -p cutover-e2e --bin cutover-fallback-bench
//! target/release/cutover-fallback-bench fault --trials 20 --fault errors,corrupt
//! target/release/cutover-fallback-bench fault --preset production --trials 5 --fault errors
//! target/release/cutover-fallback-bench soak --minutes 30
//! ```
//!
//! Needs root (addresses on `lo`), `named`, `unbound` and `nsupdate`.
//! Binaries are taken from next to this executable, or from `CUTOVER_BIN` /
//! `CUTOVER_PROBE_BIN`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use cutover_e2e::cluster::{Options, REGIONS, SITE_HOST, World, checks};
use cutover_e2e::plan::{self, PlanEnv};
/// The guard every plan here arms.
const GUARD: &str = "install-new";
/// The check it watches (on target `new`).
const CHECK: &str = checks::ELM_PACKAGE;

#[derive(Parser, Debug)]
#[command(about = "Fault → fallback timing and false-fallback soak for cutover's guards")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Inject a fault on new during the soak and time the fallback (BIND back on old).
    Fault(FaultArgs),
    /// Noise, a lying probe and a partitioned region for a long soak: count false fallbacks.
    Soak(SoakArgs),
}

/// Guard settings.
#[derive(Args, Debug, Clone)]
struct GuardArgs {
    /// `fast`: the guard fields and `[plan] tick` from the flags below;
    /// `production`: all of them left unset (the plan defaults).
    #[arg(long, value_enum, default_value_t = Preset::Fast)]
    preset: Preset,
    /// Guard `window`.
    #[arg(long, default_value = "3s")]
    window: String,
    /// Guard `min_samples`.
    #[arg(long, default_value_t = 2)]
    min_samples: u32,
    /// Guard `min_probes`.
    #[arg(long, default_value_t = 2)]
    min_probes: u32,
    /// Guard `quorum`.
    #[arg(long, default_value_t = 2)]
    quorum: u32,
    /// Guard `for` (consecutive failing ticks).
    #[arg(long = "for", default_value_t = 1)]
    for_ticks: u32,
    /// `[plan] tick`.
    #[arg(long, default_value = "250ms")]
    tick: String,
    /// The guard's `condition` (on `install-core`, target new).
    #[arg(long, default_value = "error_ratio > 0.5")]
    condition: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Preset {
    Fast,
    Production,
}

/// The world.
#[derive(Args, Debug, Clone)]
struct WorldArgs {
    /// Probes per region.
    #[arg(long, default_value_t = 3)]
    probes_per_region: usize,
    /// `interval` of the `install-core` check.
    #[arg(long, default_value = "1s")]
    check_interval: String,
    /// `jitter` of the `install-core` check.
    #[arg(long, default_value = "300ms")]
    jitter: String,
}

#[derive(Args, Debug)]
struct FaultArgs {
    /// Trials per fault kind.
    #[arg(long, default_value_t = 20)]
    trials: usize,
    /// Fault kinds, comma-separated; trials alternate between them.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "errors,corrupt"
    )]
    fault: Vec<Fault>,
    /// Give up on one trial's fallback after this many seconds.
    #[arg(long, default_value_t = 180)]
    trial_timeout: u64,
    /// Seconds to wait after clearing a fault before the next run starts (so
    /// the guard's window holds no evidence of the last fault); default: the
    /// guard's window + 2 s.
    #[arg(long)]
    settle: Option<f64>,
    #[command(flatten)]
    guard: GuardArgs,
    #[command(flatten)]
    world: WorldArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
enum Fault {
    /// Every request to new answered 500.
    Errors,
    /// Archives on new with changed bytes, published hashes unchanged (hash mismatch: a hard failure).
    Corrupt,
}

impl Fault {
    fn label(self) -> &'static str {
        match self {
            Fault::Errors => "errors",
            Fault::Corrupt => "corrupt",
        }
    }
}

#[derive(Args, Debug)]
struct SoakArgs {
    /// Length of the soak.
    #[arg(long, default_value_t = 30.0)]
    minutes: f64,
    /// Share of new's answers that are errors, for every probe.
    #[arg(long, default_value_t = 0.05)]
    error_rate: f64,
    /// Region of the lying probe (the last of that region's probes); `none` for no liar.
    #[arg(long, default_value = "asia")]
    liar_region: String,
    /// Region whose probes are stopped every other period; `none` for no partition.
    #[arg(long, default_value = "us")]
    partition_region: String,
    /// Length of one partition period (running, then stopped, then running, …), seconds.
    #[arg(long, default_value_t = 120)]
    partition_period: u64,
    /// Print a progress line this often, seconds.
    #[arg(long, default_value_t = 60)]
    report_every: u64,
    #[command(flatten)]
    guard: GuardArgs,
    #[command(flatten)]
    world: WorldArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // Before the harness's own subscriber (which would log at info to stdout):
    // warnings only, to stderr, so stdout is the report.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CUTOVER_E2E_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let res = match &cli.cmd {
        Cmd::Fault(a) => fault(a).await,
        Cmd::Soak(a) => soak(a).await,
    };
    match res {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("cutover-fallback-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let day = secs.rem_euclid(86_400);
    format!(
        "{:02}:{:02}:{:02}.{:03}Z",
        day / 3600,
        day / 60 % 60,
        day % 60,
        ms.rem_euclid(1000)
    )
}

// ---------------------------------------------------------------------------
// The world and the plan

/// A connected world, the plan and where its journal is.
struct Bench {
    world: World,
    /// The lying probe (its process name and source address), if any.
    liar: Option<(String, Ipv4Addr)>,
    plan: PathBuf,
    db: PathBuf,
    old: Ipv4Addr,
    new: Ipv4Addr,
    /// The guard as the coordinator's plan parser resolved it (defaults applied).
    resolved: Resolved,
}

/// The effective guard settings, read back through the plan parser.
#[derive(Debug, Clone)]
struct Resolved {
    tick: Duration,
    window: Duration,
    quorum: u32,
    for_ticks: u32,
    min_samples: u32,
    min_probes: u32,
    condition: String,
}

impl Resolved {
    fn describe(&self) -> String {
        format!(
            "tick {} · window {} · min_samples {} · min_probes {} · quorum {} · for {} · {}",
            human(self.tick),
            human(self.window),
            self.min_samples,
            self.min_probes,
            self.quorum,
            self.for_ticks,
            self.condition
        )
    }
}

fn human(d: Duration) -> String {
    cutover_coordinator::plan::human_duration(d)
}

impl Bench {
    /// Builds the world (3 regions × `probes_per_region` probes; in
    /// `liar_region` one of them is the lying probe), waits until every probe
    /// is connected, and writes the plan.
    async fn setup(
        world_args: &WorldArgs,
        guard: &GuardArgs,
        soak: &str,
        liar_region: Option<&str>,
    ) -> anyhow::Result<Self> {
        let per_region = u8::try_from(world_args.probes_per_region)
            .ok()
            .filter(|n| (1..=10).contains(n))
            .context("--probes-per-region must be 1..=10")?;
        let mut world = World::build(Options {
            ttl: 60,
            check_interval: world_args.check_interval.clone(),
            jitter: world_args.jitter.clone(),
            window: "60s".into(),
            start_probes: false,
            probes_per_region: per_region,
            ..Options::default()
        })
        .await?;
        // Keep the harness's [server] and [sites.*]; the probes run only the
        // check the guard watches (the plan defines it identically).
        let generated = std::fs::read_to_string(&world.coordinator.config)?;
        let head = generated
            .split("[[checks]]")
            .next()
            .context("the generated coordinator config")?
            .to_owned();
        std::fs::write(
            &world.coordinator.config,
            format!("{head}{}", check_toml(&world, world_args)),
        )?;
        world.start().await?;
        world.wait_connected(Duration::from_secs(60)).await?;
        // The lying probe: the last of its region; new answers only it with 500s.
        let liar = match liar_region {
            Some(region) => {
                let p = world
                    .probes_in(region)
                    .last()
                    .with_context(|| format!("no probe in {region}"))?;
                let source = p
                    .source
                    .context("the harness started the probe without --source-address")?;
                world
                    .infra
                    .new
                    .set_error_rate_for_client(IpAddr::V4(source), 1.0);
                Some((p.proc.name().to_owned(), source))
            }
            None => None,
        };
        let (old, new) = (world.block.ip(10), world.block.ip(11));
        let plan = write_plan(&world, world_args, guard, soak)?;
        let (parsed, diags) = cutover_coordinator::plan::load(&plan)
            .map_err(|e| anyhow::anyhow!("the generated plan does not load: {e}"))?;
        for d in &diags {
            eprintln!("plan: {d}");
        }
        let g = parsed
            .guards
            .iter()
            .find(|g| g.id == GUARD)
            .context("the plan lost its guard")?;
        let resolved = Resolved {
            tick: parsed.tick,
            window: g.window,
            quorum: g.quorum,
            for_ticks: g.for_ticks,
            min_samples: g.min_samples,
            min_probes: g.min_probes,
            condition: format!(
                "{} {} {}",
                g.condition.metric.label(),
                g.condition.op.symbol(),
                g.condition.threshold
            ),
        };
        let db = world.coordinator.db_path();
        Ok(Bench {
            world,
            liar,
            plan,
            db,
            old,
            new,
            resolved,
        })
    }

    /// Fails if a process of the world has exited.
    fn ensure_running(&mut self) -> anyhow::Result<()> {
        self.world.ensure_running()
    }

    /// The probe processes of `region`.
    fn probe_pids(&self, region: &str) -> Vec<u32> {
        self.world.probes_in(region).map(|p| p.proc.pid()).collect()
    }

    /// `cutover start PLAN [--force]`; returns the run id.
    async fn start_run(&self, force: bool) -> anyhow::Result<i64> {
        let plan = self.plan.to_str().context("plan path is not UTF-8")?;
        let mut args = vec!["start", plan];
        if force {
            args.push("--force");
        }
        let out = self.world.coordinator.cli(&args).await?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "cutover start failed ({}): {stdout}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let id = stdout
            .split_whitespace()
            .skip_while(|w| *w != "run")
            .nth(1)
            .and_then(|w| w.trim_matches(|c: char| !c.is_ascii_digit()).parse().ok());
        match id {
            Some(id) => Ok(id),
            None => Ok(journal::latest_run(&self.db)?.0),
        }
    }

    /// Waits until run `run` is in its soak and the guard is `PASS` in every
    /// region (the run's own verdict notes; `/metrics` if it writes none) —
    /// or, with `every_region` false, `FAIL` in none (a partitioned region
    /// stays `NO_EVIDENCE`); returns when the soak started (unix ms).
    async fn wait_armed_pass(
        &mut self,
        run: i64,
        every_region: bool,
        deadline: Duration,
    ) -> anyhow::Result<i64> {
        let start = Instant::now();
        loop {
            self.ensure_running()?;
            let (state, rows) = journal::run(&self.db, run)?;
            if journal::finished(&state) {
                bail!(
                    "run {run} ended {state} before the guard was PASS; last rows:\n{}",
                    journal::tail(&rows, 12)
                );
            }
            let last = if let Some(soak_ms) = rows
                .iter()
                .find(|r| r.step == "soak" && r.phase == "intent")
                .map(|r| r.unix_ms)
            {
                let verdicts = journal::verdicts(&rows);
                let from_journal = !verdicts.is_empty();
                let current: BTreeMap<String, String> = if from_journal {
                    verdicts
                        .into_iter()
                        .map(|(r, v)| (r, v.last().map(|x| x.1.clone()).unwrap_or_default()))
                        .collect()
                } else {
                    metric_verdicts(&self.world).await.unwrap_or_default()
                };
                let all_pass = if every_region {
                    REGIONS
                        .iter()
                        .all(|r| current.get(*r).map(String::as_str) == Some("PASS"))
                } else {
                    current.values().any(|v| v == "PASS") && !current.values().any(|v| v == "FAIL")
                };
                let armed_for = now_ms() - soak_ms;
                // At least a few ticks into the soak, so the guard is really armed.
                let min_armed = i64::try_from(self.resolved.tick.as_millis() * 4).unwrap_or(1000);
                if all_pass && armed_for >= min_armed.max(1000) {
                    return Ok(soak_ms);
                }
                format!("verdicts {current:?}, soaking for {armed_for} ms")
            } else {
                format!("run {run} is {state}, not soaking yet")
            };
            if start.elapsed() > deadline {
                bail!("timed out after {deadline:?} waiting for the guard to PASS: {last}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until run `run` has ended; returns its state and rows.
    async fn wait_finished(
        &self,
        run: i64,
        deadline: Duration,
    ) -> anyhow::Result<(String, Vec<journal::Row>)> {
        let start = Instant::now();
        loop {
            let (state, rows) = journal::run(&self.db, run)?;
            if journal::finished(&state) {
                return Ok((state, rows));
            }
            if start.elapsed() > deadline {
                bail!(
                    "run {run} still {state} after {deadline:?}; last rows:\n{}",
                    journal::tail(&rows, 12)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn set_fault(&self, fault: Fault, on: bool) {
        match fault {
            Fault::Errors => self
                .world
                .infra
                .new
                .set_error_rate(if on { 1.0 } else { 0.0 }),
            Fault::Corrupt => self.world.infra.new.set_corrupt_archives(on),
        }
    }
}

/// The `install-core` check, as both the coordinator config and the plan hold it.
fn check_toml(world: &World, w: &WorldArgs) -> String {
    format!(
        "[[checks]]\nid = \"{CHECK}\"\nkind = \"elm_package\"\ntargets = [\"old\", \"new\"]\n\
         interval = \"{}\"\njitter = \"{}\"\ntimeout = \"5s\"\nregistry_url = \"{}\"\n\
         package = \"elm/core\"\nversion = \"1.0.5\"\n",
        w.check_interval,
        w.jitter,
        world.infra.registry_url()
    )
}

fn write_plan(world: &World, w: &WorldArgs, g: &GuardArgs, soak: &str) -> anyhow::Result<PathBuf> {
    let env = PlanEnv::of(world);
    let (tick, guard_fields) = match g.preset {
        Preset::Fast => (
            format!("tick = \"{}\"\n", g.tick),
            format!(
                "window = \"{}\"\nmin_samples = {}\nmin_probes = {}\nquorum = {}\nfor = {}\n",
                g.window, g.min_samples, g.min_probes, g.quorum, g.for_ticks
            ),
        ),
        Preset::Production => (String::new(), String::new()),
    };
    let text = format!(
        r#"[plan]
name = "fallback-bench"
{tick}
{sites}
{check}
{dns}
[[guards]]
id = "{GUARD}"
source = "probe"
check = "{CHECK}"
target = "new"
condition = "{condition}"
action = "fallback"
armed_from = "soak"
{guard_fields}
{steps}
{fallback}"#,
        sites = env.sites_toml(),
        check = check_toml(world, w),
        dns = env.dns_toml(None, 60),
        condition = g.condition,
        steps = plan::switch_and_soak_toml(soak),
        fallback = plan::fallback_toml(false),
    );
    env.write("plan.toml", &text)
}

/// `cutover_guard_verdict{guard="install-new"}` by region, as labels.
async fn metric_verdicts(world: &World) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for s in world.coordinator.metrics().await? {
        if s.name == "cutover_guard_verdict"
            && s.label("guard") == Some(GUARD)
            && let Some(region) = s.label("region")
        {
            let v = if s.value > 0.5 {
                "FAIL"
            } else if s.value < -0.5 {
                "NO_EVIDENCE"
            } else {
                "PASS"
            };
            out.insert(region.to_owned(), v.to_owned());
        }
    }
    Ok(out)
}

/// `cutover_guard_*` and tick counters: every sample whose name starts with
/// `cutover_guard_` and carries this guard's label (for the soak's summary).
async fn guard_metrics(world: &World) -> anyhow::Result<Vec<(String, f64)>> {
    let mut out = Vec::new();
    for s in world.coordinator.metrics().await? {
        if s.name.starts_with("cutover_guard_")
            && (s.label("guard") == Some(GUARD) || s.label("guard").is_none())
        {
            let labels: Vec<String> = s
                .labels
                .iter()
                .filter(|(k, _)| k.as_str() != "guard")
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let name = if labels.is_empty() {
                s.name.clone()
            } else {
                format!("{}{{{}}}", s.name, labels.join(","))
            };
            out.push((name, s.value));
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// fault

/// One trial's figures, ms after t0.
#[derive(Debug, Clone)]
struct Trial {
    fault: Fault,
    run: i64,
    /// Trip time (the trip note's `at_ms`, else the note's commit time) − t0.
    trip_ms: f64,
    /// BIND answers old − t0.
    fallback_ms: f64,
    /// The fallback's DNS step, intent and outcome − t0.
    dns_intent_ms: Option<f64>,
    dns_outcome_ms: Option<f64>,
    /// `quorum` / `hard_fail` as the trip note says.
    kind: String,
    summary: String,
}

async fn fault(args: &FaultArgs) -> anyhow::Result<bool> {
    if args.fault.is_empty() {
        bail!("--fault: name at least one of errors, corrupt");
    }
    let mut b = Bench::setup(&args.world, &args.guard, "30m", None).await?;
    let settle = args
        .settle
        .map_or(b.resolved.window + Duration::from_secs(2), |s| {
            Duration::from_secs_f64(s)
        });
    header(&b, &args.guard, &args.world);
    println!(
        "fault: {} trial(s) of {}; settle {} between trials",
        args.trials,
        args.fault
            .iter()
            .map(|f| f.label())
            .collect::<Vec<_>>()
            .join(" and "),
        human(settle)
    );
    println!();

    // The probes have just started: let the first run's window fill with
    // results, as it will be before every later trial.
    tokio::time::sleep(settle).await;
    let mut trials: Vec<Trial> = Vec::new();
    let mut failures = 0usize;
    let mut force = false;
    let total = args.trials * args.fault.len();
    for i in 0..total {
        let fault = args.fault[i % args.fault.len()];
        match trial(
            &mut b,
            fault,
            force,
            Duration::from_secs(args.trial_timeout),
        )
        .await
        {
            Ok(t) => {
                println!(
                    "trial {:>3}/{total} {:<8} run {:>3}  trip {:>6.2} s  BIND on old {:>6.2} s  \
                     (detect {:.2} + act {:.2}; dns step {} → {})  {}",
                    i + 1,
                    fault.label(),
                    t.run,
                    t.trip_ms / 1e3,
                    t.fallback_ms / 1e3,
                    t.trip_ms / 1e3,
                    (t.fallback_ms - t.trip_ms) / 1e3,
                    t.dns_intent_ms
                        .map_or("?".into(), |v| format!("{:.2}", v / 1e3)),
                    t.dns_outcome_ms
                        .map_or("?".into(), |v| format!("{:.2}", v / 1e3)),
                    t.kind,
                );
                if i < args.fault.len() {
                    println!("      trip: {}", t.summary);
                }
                trials.push(t);
                force = true;
            }
            Err(e) => {
                failures += 1;
                println!(
                    "trial {:>3}/{total} {:<8} FAILED: {e:#}",
                    i + 1,
                    fault.label()
                );
                // A failed trial may leave a run going or a fault set.
                b.set_fault(fault, false);
                if let Ok((run, state)) = journal::latest_run(&b.db)
                    && !journal::finished(&state)
                {
                    let _ = b
                        .world
                        .coordinator
                        .cli(&["abort", "--reason", "bench trial failed"])
                        .await;
                    let _ = b.wait_finished(run, Duration::from_secs(30)).await;
                }
                force = true;
                if failures > 3 {
                    bail!("more than 3 failed trials; stopping");
                }
            }
        }
        b.set_fault(fault, false);
        tokio::time::sleep(settle).await;
    }

    println!();
    println!("summary ({}):", b.resolved.describe());
    for fault in &args.fault {
        let ts: Vec<&Trial> = trials.iter().filter(|t| t.fault == *fault).collect();
        if ts.is_empty() {
            continue;
        }
        let kinds: BTreeMap<&str, usize> = ts.iter().fold(BTreeMap::new(), |mut m, t| {
            *m.entry(t.kind.as_str()).or_default() += 1;
            m
        });
        println!("  {} (trip kinds: {kinds:?})", fault.label());
        let col = |f: &dyn Fn(&Trial) -> f64| ts.iter().map(|t| f(t) / 1e3).collect::<Vec<_>>();
        println!("    {}", dist("t_trip (detect)", &col(&|t| t.trip_ms)));
        println!(
            "    {}",
            dist(
                "act (trip → BIND old)",
                &col(&|t| t.fallback_ms - t.trip_ms)
            )
        );
        println!(
            "    {}",
            dist("t_fallback (BIND old)", &col(&|t| t.fallback_ms))
        );
        let fb = col(&|t| t.fallback_ms);
        let (median, tail) = (quantile(&fb, 0.5), quantile(&fb, 0.99));
        println!(
            "    target median ≤ 3 s: {}; p99 ≤ 5 s: {}{}",
            if median <= 3.0 { "met" } else { "NOT met" },
            if tail <= 5.0 { "met" } else { "NOT met" },
            if fb.len() < 100 {
                " (n < 100: p99 is the max)"
            } else {
                ""
            }
        );
    }
    if failures > 0 {
        println!("  {failures} trial(s) failed (see above)");
    }
    Ok(failures == 0)
}

fn header(b: &Bench, g: &GuardArgs, w: &WorldArgs) {
    println!("cutover fallback benchmark");
    println!(
        "  world: 3 regions × {} probes, {CHECK} on old+new every {} + U(0, {}), BIND {}, old {} new {}",
        w.probes_per_region,
        w.check_interval,
        w.jitter,
        b.world.infra.bind.addr(),
        b.old,
        b.new
    );
    println!(
        "  guard {GUARD} ({:?} preset): {}",
        g.preset,
        b.resolved.describe()
    );
    println!(
        "  binaries: {}",
        cutover_e2e::procs::cutover_bin()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    );
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "  started {} UTC, load average {}",
        utc(now_ms()),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
}

async fn trial(
    b: &mut Bench,
    fault: Fault,
    force: bool,
    timeout: Duration,
) -> anyhow::Result<Trial> {
    let run = b.start_run(force).await?;
    b.wait_armed_pass(run, true, Duration::from_secs(120))
        .await?;
    // Inject at a random point relative to the tick and the check schedules.
    tokio::time::sleep(Duration::from_millis(fastrand::u64(0..1000))).await;
    let bind = b.world.infra.bind.addr();
    let before = dns::query_a(bind, SITE_HOST).await?;
    if before != [b.new] {
        bail!(
            "before the fault BIND answers {before:?}, not new {}",
            b.new
        );
    }
    let t0_ms = now_ms();
    let t0 = Instant::now();
    b.set_fault(fault, true);
    let fallback = loop {
        if let Ok(got) = dns::query_a(bind, SITE_HOST).await
            && got == [b.old]
        {
            break t0.elapsed();
        }
        if t0.elapsed() > timeout {
            let (state, rows) = journal::run(&b.db, run)?;
            bail!(
                "BIND still not on old {timeout:?} after the fault; run {run} is {state}:\n{}",
                journal::tail(&rows, 12)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    b.set_fault(fault, false);
    let (state, rows) = b.wait_finished(run, Duration::from_secs(60)).await?;
    if state != "fell_back" {
        bail!("run {run} ended {state}, not fell_back");
    }
    let trip = rows
        .iter()
        .find(|r| r.phase == "note" && r.detail["event"] == "trip")
        .with_context(|| {
            format!(
                "run {run} fell back without a trip note:\n{}",
                journal::tail(&rows, 12)
            )
        })?;
    let trip_at = trip.detail["at_ms"].as_i64().unwrap_or(trip.unix_ms);
    let step_ms = |phase: &str| {
        rows.iter()
            .find(|r| r.step == "back-to-old" && r.phase == phase)
            .map(|r| (r.unix_ms - t0_ms) as f64)
    };
    Ok(Trial {
        fault,
        run,
        trip_ms: (trip_at - t0_ms) as f64,
        fallback_ms: fallback.as_secs_f64() * 1e3,
        dns_intent_ms: step_ms("intent"),
        dns_outcome_ms: step_ms("outcome"),
        kind: trip.detail["kind"]
            .as_str()
            .map_or_else(|| trip.detail["kind"].to_string(), str::to_owned),
        summary: trip.detail["summary"].as_str().unwrap_or("").to_owned(),
    })
}

/// Nearest-rank quantile of `v` (unsorted), q in 0..=1.
fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = (q * s.len() as f64).ceil().max(1.0) as usize;
    s[rank.min(s.len()) - 1]
}

/// `name: n=…, min, median, p90, p99 (or max when n < 100)`, in seconds.
fn dist(name: &str, v: &[f64]) -> String {
    let mut out = format!(
        "{name:<24} n={:<3} min {:.2}  median {:.2}  p90 {:.2}",
        v.len(),
        quantile(v, 0.0),
        quantile(v, 0.5),
        quantile(v, 0.9)
    );
    if v.len() >= 100 {
        let _ = write!(out, "  p99 {:.2}", quantile(v, 0.99));
    }
    let _ = write!(out, "  max {:.2} s", quantile(v, 1.0));
    out
}

// ---------------------------------------------------------------------------
// soak

async fn soak(args: &SoakArgs) -> anyhow::Result<bool> {
    let liar_region = (args.liar_region != "none").then_some(args.liar_region.as_str());
    let part_region = (args.partition_region != "none").then_some(args.partition_region.as_str());
    for r in liar_region.iter().chain(part_region.iter()) {
        if !REGIONS.contains(r) {
            bail!("unknown region {r:?}; the regions are {REGIONS:?} (or `none`)");
        }
    }
    let length = Duration::from_secs_f64(args.minutes * 60.0);
    // The soak step outlasts the measurement, so the run never finishes by itself.
    let soak_len = format!("{}m", (args.minutes.ceil() as u64) + 30);
    let mut b = Bench::setup(&args.world, &args.guard, &soak_len, liar_region).await?;
    header(&b, &args.guard, &args.world);
    println!(
        "soak: {} min; {:.0} % errors on new for everyone; lying probe: {}; partitioned region: {} \
         ({} s running, {} s stopped, …)",
        args.minutes,
        args.error_rate * 100.0,
        liar_region.unwrap_or("none"),
        part_region.unwrap_or("none"),
        args.partition_period,
        args.partition_period
    );
    b.world.infra.new.set_error_rate(args.error_rate);

    let first_run = b.start_run(false).await?;
    let soak_started = b
        .wait_armed_pass(first_run, true, Duration::from_secs(120))
        .await?;
    let produced_before = produced_on_new(&b.world);
    println!(
        "run {first_run} soaking since {} UTC; measuring {} min",
        utc(soak_started),
        args.minutes
    );
    let t0 = Instant::now();
    let mut run = first_run;
    let mut stopped = false;
    let mut partitions = 0u32;
    let mut false_fallbacks: Vec<(i64, String)> = Vec::new();
    // Sampled once a second from /metrics: seconds per (region, verdict).
    let mut sampled: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let mut next_report = Duration::from_secs(args.report_every);
    let pids = part_region.map(|r| b.probe_pids(r)).unwrap_or_default();
    let signal = |sig: &str| -> anyhow::Result<()> {
        for pid in &pids {
            let ok = std::process::Command::new("kill")
                .args([&format!("-{sig}"), &pid.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                bail!("kill -{sig} {pid} failed");
            }
        }
        Ok(())
    };
    let result: anyhow::Result<()> = async {
        while t0.elapsed() < length {
            let elapsed = t0.elapsed();
            if part_region.is_some() && args.partition_period > 0 {
                let want_stopped = (elapsed.as_secs() / args.partition_period) % 2 == 1;
                if want_stopped != stopped {
                    signal(if want_stopped { "STOP" } else { "CONT" })?;
                    stopped = want_stopped;
                    if stopped {
                        partitions += 1;
                    }
                    println!(
                        "  {:>6.1} min  {} {}'s {} probes",
                        elapsed.as_secs_f64() / 60.0,
                        if stopped { "stopped" } else { "continued" },
                        part_region.unwrap_or_default(),
                        pids.len()
                    );
                }
            }
            b.world.coordinator.ensure_running()?;
            if let Ok(v) = metric_verdicts(&b.world).await {
                for (region, verdict) in v {
                    *sampled
                        .entry(region)
                        .or_default()
                        .entry(verdict)
                        .or_default() += 1;
                }
            }
            let (state, rows) = journal::run(&b.db, run)?;
            if journal::finished(&state) {
                let trip = rows
                    .iter()
                    .find(|r| r.phase == "note" && r.detail["event"] == "trip")
                    .map(|r| r.detail["summary"].as_str().unwrap_or("").to_owned())
                    .unwrap_or_else(|| "(no trip note)".into());
                println!(
                    "  {:>6.1} min  FALSE FALLBACK: run {run} ended {state}: {trip}",
                    elapsed.as_secs_f64() / 60.0
                );
                false_fallbacks.push((run, trip));
                // Past the evidence of this trip, so one noise episode counts once.
                tokio::time::sleep(b.resolved.window + Duration::from_secs(2)).await;
                run = b.start_run(true).await?;
                b.wait_armed_pass(run, false, Duration::from_secs(120)).await?;
            }
            if elapsed >= next_report {
                next_report += Duration::from_secs(args.report_every);
                let all = journal::runs_since(&b.db, first_run)?;
                let trips = all.iter().filter(|r| journal::is_trip(r)).count();
                println!(
                    "  {:>6.1} min  run {run}; trips {trips}; false fallbacks {}; verdict seconds {:?}",
                    elapsed.as_secs_f64() / 60.0,
                    false_fallbacks.len(),
                    sampled
                );
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        Ok(())
    }
    .await;
    if stopped {
        let _ = signal("CONT");
    }
    result?;
    let measured = t0.elapsed();

    // The decision log over every run of the soak.
    let rows = journal::runs_since(&b.db, first_run)?;
    let trips: Vec<&journal::Row> = rows.iter().filter(|r| journal::is_trip(r)).collect();
    let (periods, ne_secs, changes) = no_evidence_periods(&rows, now_ms());
    let metrics = guard_metrics(&b.world).await.unwrap_or_default();

    println!();
    println!(
        "summary over {:.1} min ({}):",
        measured.as_secs_f64() / 60.0,
        b.resolved.describe()
    );
    println!(
        "  false fallbacks: {} (target 0); trips: {} (journal)",
        false_fallbacks.len(),
        trips.len()
    );
    for t in &trips {
        println!(
            "    trip at {}: {}",
            utc(t.unix_ms),
            t.detail["summary"].as_str().unwrap_or("")
        );
    }
    let evaluated = measured.as_secs_f64() / b.resolved.tick.as_secs_f64();
    println!(
        "  ticks: ≈{evaluated:.0} evaluations of the guard ({:.1} min at one per {})",
        measured.as_secs_f64() / 60.0,
        human(b.resolved.tick)
    );
    println!("  verdict changes in the journal: {changes}");
    for (region, (n, secs)) in periods
        .iter()
        .zip(ne_secs.iter())
        .map(|((r, n), (_, s))| (r, (n, s)))
    {
        println!("  NO_EVIDENCE periods in {region}: {n}, {secs:.0} s in total");
    }
    println!(
        "  partitions (periods with {}'s probes stopped): {partitions}",
        part_region.unwrap_or("none")
    );
    println!("  /metrics verdict, seconds sampled per region: {sampled:?}");
    for (name, v) in &metrics {
        if name.contains("trips") || name.contains("tripped") || name.contains("tick") {
            println!("  {name} = {v}");
        }
    }
    let produced_after = produced_on_new(&b.world);
    let liar_name = b.liar.as_ref().map(|(n, _)| n.trim_start_matches("probe-"));
    let (mut honest, mut honest_failed) = (0u64, 0u64);
    for (probe, (n, failed)) in &produced_after {
        let (n0, f0) = produced_before.get(probe).copied().unwrap_or_default();
        let (n, failed) = (n - n0, failed - f0);
        let share = if n > 0 { failed as f64 / n as f64 } else { 0.0 };
        if Some(probe.as_str()) == liar_name {
            println!(
                "  {CHECK} on new, the lying probe {probe}: {failed} of {n} failed ({:.1} %)",
                share * 100.0
            );
        } else {
            honest += n;
            honest_failed += failed;
        }
    }
    if honest > 0 {
        println!(
            "  {CHECK} on new, the honest probes: {honest_failed} of {honest} checks failed ({:.1} %; \
             a check makes several requests, each failing with the error rate)",
            honest_failed as f64 / honest as f64 * 100.0
        );
    }
    if let Some((name, source)) = &b.liar {
        let lies = b
            .world
            .infra
            .new
            .seen()
            .iter()
            .filter(|s| s.peer.ip() == IpAddr::V4(*source) && s.status == 500)
            .count();
        println!("  lying probe {name} ({source}): new answered it 500 {lies} times");
    }
    Ok(false_fallbacks.is_empty())
}

/// Per probe (its key in the world): `install-core` results on new produced
/// so far, and how many of them failed (from `--record-produced`).
fn produced_on_new(world: &World) -> BTreeMap<String, (u64, u64)> {
    world
        .probes
        .iter()
        .map(|(key, p)| {
            let rows = p.produced().unwrap_or_default();
            let on_new = rows
                .iter()
                .filter(|r| r.check == CHECK && r.target == "new");
            let (n, failed) = on_new.fold((0, 0), |(n, f), r| {
                (n + 1, f + u64::from(r.outcome != "success"))
            });
            (key.clone(), (n, failed))
        })
        .collect()
}

/// From the verdict notes of `rows` (several runs): per region, how many
/// periods of `NO_EVIDENCE` began, and their total seconds (an open one counts
/// until `now`); plus the number of verdict changes.
#[allow(clippy::type_complexity)]
fn no_evidence_periods(
    rows: &[journal::Row],
    now: i64,
) -> (BTreeMap<String, u32>, BTreeMap<String, f64>, usize) {
    let mut count: BTreeMap<String, u32> = REGIONS.iter().map(|r| ((*r).to_owned(), 0)).collect();
    let mut secs: BTreeMap<String, f64> = REGIONS.iter().map(|r| ((*r).to_owned(), 0.0)).collect();
    let mut open: BTreeMap<String, i64> = BTreeMap::new();
    let mut changes = 0;
    for r in rows {
        for (region, to) in journal::verdict_changes(r) {
            changes += 1;
            if let Some(since) = open.remove(&region) {
                *secs.entry(region.clone()).or_default() += (r.unix_ms - since) as f64 / 1e3;
            }
            if to == "NO_EVIDENCE" {
                *count.entry(region.clone()).or_default() += 1;
                open.insert(region, r.unix_ms);
            }
        }
    }
    for (region, since) in open {
        *secs.entry(region).or_default() += (now - since) as f64 / 1e3;
    }
    (count, secs, changes)
}

// ---------------------------------------------------------------------------

/// Reading the plan journal straight from `cutover.db` (read-only).
mod journal {
    use std::collections::BTreeMap;
    use std::path::Path;
    use std::time::Duration;

    use anyhow::Context as _;
    use serde_json::Value;

    /// One journal row.
    #[derive(Debug, Clone)]
    pub struct Row {
        pub run: i64,
        pub unix_ms: i64,
        pub step: String,
        pub phase: String,
        pub detail: Value,
    }

    fn open(db: &Path) -> anyhow::Result<rusqlite::Connection> {
        let conn = rusqlite::Connection::open_with_flags(
            db,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .with_context(|| format!("opening {}", db.display()))?;
        conn.busy_timeout(Duration::from_secs(5))?;
        Ok(conn)
    }

    /// True for a state after which nothing more runs.
    pub fn finished(state: &str) -> bool {
        matches!(state, "done" | "failed" | "aborted" | "fell_back")
    }

    /// The newest run: (id, state).
    pub fn latest_run(db: &Path) -> anyhow::Result<(i64, String)> {
        let conn = open(db)?;
        Ok(conn.query_row(
            "SELECT id, state FROM plan_runs ORDER BY id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?)
    }

    fn rows_where(conn: &rusqlite::Connection, sql: &str, arg: i64) -> anyhow::Result<Vec<Row>> {
        let mut stmt = conn.prepare(sql)?;
        let rows = stmt
            .query_map([arg], |r| {
                Ok(Row {
                    run: r.get(0)?,
                    unix_ms: r.get(1)?,
                    step: r.get(2)?,
                    phase: r.get(3)?,
                    detail: serde_json::from_str(&r.get::<_, String>(4)?).unwrap_or_default(),
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Run `run`: its state and rows in order.
    pub fn run(db: &Path, run: i64) -> anyhow::Result<(String, Vec<Row>)> {
        let conn = open(db)?;
        let state: String = conn
            .query_row("SELECT state FROM plan_runs WHERE id = ?1", [run], |r| {
                r.get(0)
            })
            .with_context(|| format!("run {run} is not in the journal"))?;
        let rows = rows_where(
            &conn,
            "SELECT run_id, unix_ms, step_id, phase, detail FROM journal WHERE run_id = ?1 ORDER BY seq",
            run,
        )?;
        Ok((state, rows))
    }

    /// Every row of runs `first` and later.
    pub fn runs_since(db: &Path, first: i64) -> anyhow::Result<Vec<Row>> {
        let conn = open(db)?;
        rows_where(
            &conn,
            "SELECT run_id, unix_ms, step_id, phase, detail FROM journal WHERE run_id >= ?1 \
             ORDER BY run_id, seq",
            first,
        )
    }

    /// A trip note of the bench's guard.
    pub fn is_trip(r: &Row) -> bool {
        r.phase == "note" && r.detail["event"] == "trip"
    }

    /// A verdict label from a note field: `"PASS"`, or an object holding one.
    fn label(v: &Value) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Object(o) => ["verdict", "label", "to"]
                .iter()
                .find_map(|k| o.get(*k).and_then(Value::as_str))
                .map(str::to_owned),
            _ => None,
        }
    }

    /// (region, new verdict) of each change in a verdict note of the bench's
    /// guard: `{"event": "verdict", "guard", "changes": [{"region",
    /// "verdict", "from", …}]}`, or one change inline (`region`, `to`).
    pub fn verdict_changes(r: &Row) -> Vec<(String, String)> {
        if r.phase != "note" || r.detail["event"] != "verdict" {
            return Vec::new();
        }
        if let Some(g) = r.detail["guard"].as_str()
            && g != super::GUARD
        {
            return Vec::new();
        }
        let one = |c: &Value| -> Option<(String, String)> {
            let to = c.get("to").unwrap_or(c);
            let region = c["region"].as_str().or_else(|| to["region"].as_str())?;
            Some((region.to_owned(), label(to)?))
        };
        match r.detail["changes"].as_array() {
            Some(changes) => changes.iter().filter_map(one).collect(),
            None => one(&r.detail).into_iter().collect(),
        }
    }

    /// Verdict changes by region: (unix ms, verdict), in order.
    pub fn verdicts(rows: &[Row]) -> BTreeMap<String, Vec<(i64, String)>> {
        let mut out: BTreeMap<String, Vec<(i64, String)>> = BTreeMap::new();
        for r in rows {
            for (region, to) in verdict_changes(r) {
                out.entry(region).or_default().push((r.unix_ms, to));
            }
        }
        out
    }

    /// The last `n` rows, one line each, for error messages.
    pub fn tail(rows: &[Row], n: usize) -> String {
        rows[rows.len().saturating_sub(n)..]
            .iter()
            .map(|r| {
                format!(
                    "  run {} {} {} {} {}",
                    r.run,
                    super::utc(r.unix_ms),
                    r.step,
                    r.phase,
                    r.detail
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A minimal DNS client: one A query over UDP, no recursion, straight to the
/// authoritative server (what `dig @server name A +norec` does).
mod dns {
    use std::net::Ipv4Addr;
    use std::time::Duration;

    use anyhow::{Context as _, bail};

    /// The A records of `name` at `server:53`.
    pub async fn query_a(server: Ipv4Addr, name: &str) -> anyhow::Result<Vec<Ipv4Addr>> {
        let sock = tokio::net::UdpSocket::bind("0.0.0.0:0").await?;
        sock.connect((server, 53)).await?;
        let id = fastrand::u16(..);
        let mut q = Vec::with_capacity(64);
        q.extend_from_slice(&id.to_be_bytes());
        // Flags 0 (a query, no recursion desired), one question.
        q.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        for label in name.trim_end_matches('.').split('.') {
            q.push(u8::try_from(label.len()).context("label longer than 255")?);
            q.extend_from_slice(label.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        sock.send(&q).await?;
        let mut buf = [0u8; 1500];
        let n = tokio::time::timeout(Duration::from_millis(500), sock.recv(&mut buf))
            .await
            .with_context(|| format!("no answer from {server} within 500 ms"))??;
        parse_a(&buf[..n], id)
    }

    fn u16_at(b: &[u8], i: usize) -> anyhow::Result<u16> {
        Ok(u16::from_be_bytes([
            *b.get(i).context("short answer")?,
            *b.get(i + 1).context("short answer")?,
        ]))
    }

    /// Index after the (possibly compressed) name starting at `i`.
    fn skip_name(b: &[u8], mut i: usize) -> anyhow::Result<usize> {
        loop {
            let len = *b.get(i).context("short answer")?;
            if len & 0xC0 == 0xC0 {
                return Ok(i + 2);
            }
            if len == 0 {
                return Ok(i + 1);
            }
            i += 1 + usize::from(len);
        }
    }

    fn parse_a(b: &[u8], id: u16) -> anyhow::Result<Vec<Ipv4Addr>> {
        if u16_at(b, 0)? != id {
            bail!("answer for another query");
        }
        let rcode = b[3] & 0x0F;
        if rcode != 0 {
            bail!("rcode {rcode}");
        }
        let (qd, an) = (u16_at(b, 4)?, u16_at(b, 6)?);
        let mut i = 12;
        for _ in 0..qd {
            i = skip_name(b, i)? + 4;
        }
        let mut out = Vec::new();
        for _ in 0..an {
            i = skip_name(b, i)?;
            let rtype = u16_at(b, i)?;
            let rdlen = usize::from(u16_at(b, i + 8)?);
            i += 10;
            let rdata = b.get(i..i + rdlen).context("short answer")?;
            if rtype == 1 && rdlen == 4 {
                out.push(Ipv4Addr::new(rdata[0], rdata[1], rdata[2], rdata[3]));
            }
            i += rdlen;
        }
        Ok(out)
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn parses_a_compressed_answer() {
            let msg: Vec<u8> = vec![
                0x12, 0x34, 0x84, 0x00, 0, 1, 0, 1, 0, 0, 0, 0, // header
                7, b'p', b'a', b'c', b'k', b'a', b'g', b'e', 3, b'e', b'l', b'm', 4, b't', b'e',
                b's', b't', 0, 0, 1, 0, 1, // question
                0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 5, 0, 10, // answer
            ];
            assert_eq!(
                super::parse_a(&msg, 0x1234).unwrap(),
                vec![std::net::Ipv4Addr::new(127, 5, 0, 10)]
            );
        }
    }
}
