//! Probe benchmark: the acceptance figures of `cutover-probe`, its stripped
//! release binary size and its memory while running ~20 checks per second.
//!
//! Builds a small real world with the e2e harness (an address block on `lo`,
//! BIND, one region's Unbound, the old and new stand-in registries over HTTPS,
//! the release coordinator and one release probe), assigns a realistic mix of
//! checks whose intervals add up to ~20 runs per second, lets the probe warm
//! up, then samples the probe's `VmRSS`, `VmHWM` and CPU time from `/proc`
//! every second. The achieved rate is read from the coordinator
//! (`cutover_results_ingested_total` in `/metrics`), not assumed.
//!
//! ```sh
//! cargo build --release -p cutover-probe -p cutover-coordinator -p cutover-e2e --bins
//! target/release/cutover-probe-bench            # needs root, bind9, unbound
//! ```
//!
//! Binaries are taken from next to this executable (`target/release/`), or
//! from `CUTOVER_BIN` / `CUTOVER_PROBE_BIN`. Exits non-zero if the probe or
//! coordinator dies, or if fewer than `--min-ratio` of the intended results
//! arrive.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use cutover_e2e::addr::AddrBlock;
use cutover_e2e::bind::{Bind, ZoneSpec};
use cutover_e2e::cluster::{Coordinator, Infra, Options, Probe, SITE_HOST, ZONE, probe_command};
use cutover_e2e::procs::{Proc, probe_bin};
use cutover_e2e::registry::{Registry, archive_bytes, sha256_hex};
use cutover_e2e::tls::TestCa;
use cutover_e2e::unbound::Unbound;

/// The probe's region (one Unbound for it).
const REGION: &str = "asia";

#[derive(Parser, Debug)]
#[command(about = "Size and memory benchmark for cutover-probe at ~20 checks/s")]
struct Args {
    /// Measured seconds (after warm-up).
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Warm-up seconds, not measured.
    #[arg(long, default_value_t = 10)]
    warmup: u64,
    /// Fail if fewer than this share of the intended results/s is ingested.
    #[arg(long, default_value_t = 0.8)]
    min_ratio: f64,
    /// Extra environment for the probe, `KEY=VALUE` (repeatable; for experiments).
    #[arg(long = "probe-env", value_name = "KEY=VALUE")]
    probe_env: Vec<String>,
    /// Print every one-second sample.
    #[arg(long)]
    verbose: bool,
}

/// One check of the mix: (id, kind, targets, interval ms, jitter ms, kind-specific TOML).
struct MixCheck {
    id: &'static str,
    kind: &'static str,
    targets: &'static [&'static str],
    interval_ms: u64,
    jitter_ms: u64,
    params: String,
}

impl MixCheck {
    /// Runs per second: each tick runs every target once, and the next tick is
    /// `interval + U(0, jitter)` after the previous one started.
    fn runs_per_sec(&self) -> f64 {
        self.targets.len() as f64 / ((self.interval_ms as f64 + self.jitter_ms as f64 / 2.0) / 1e3)
    }

    fn toml(&self) -> String {
        let targets: Vec<String> = self.targets.iter().map(|t| format!("{t:?}")).collect();
        format!(
            "[[checks]]\nid = \"{}\"\nkind = \"{}\"\ntargets = [{}]\ninterval = \"{}ms\"\n\
             jitter = \"{}ms\"\ntimeout = \"5s\"\n{}\n",
            self.id,
            self.kind,
            targets.join(", "),
            self.interval_ms,
            self.jitter_ms,
            self.params
        )
    }
}

/// A realistic mix adding up to 20 runs/s: cheap checks often, downloads and
/// the consistency check less often.
fn check_mix(base: &str, port: u16) -> Vec<MixCheck> {
    let archive = archive_bytes("elm/http", "2.0.0");
    let (sha, size) = (sha256_hex(&archive), archive.len());
    vec![
        MixCheck {
            id: "dns-package",
            kind: "dns",
            targets: &["dns"],
            interval_ms: 1000,
            jitter_ms: 0,
            params: format!(
                "name = \"{SITE_HOST}\"\nrecord_type = \"A\"\nsystem_resolver = true\n\
                 authoritative_zone = \"{ZONE}\"\n"
            ),
        },
        MixCheck {
            id: "home-page",
            kind: "http",
            targets: &["old", "new", "dns"],
            interval_ms: 450,
            jitter_ms: 100,
            params: format!(
                "url = \"{base}/\"\nmethod = \"GET\"\nexpect_status = [200]\n\
                 body_contains = \"Elm packages\"\n"
            ),
        },
        MixCheck {
            id: "install-core",
            kind: "elm_package",
            targets: &["old", "new"],
            interval_ms: 450,
            jitter_ms: 100,
            params: format!(
                "registry_url = \"{base}\"\npackage = \"elm/core\"\nversion = \"1.0.5\"\n"
            ),
        },
        MixCheck {
            id: "search",
            kind: "http",
            targets: &["old", "new"],
            interval_ms: 450,
            jitter_ms: 100,
            params: format!("url = \"{base}/search.json\"\nexpect_status = [200]\n"),
        },
        MixCheck {
            id: "certificate",
            kind: "tls",
            targets: &["old", "new"],
            interval_ms: 900,
            jitter_ms: 200,
            params: format!("host = \"{SITE_HOST}\"\nport = {port}\nmin_days_valid = 7\n"),
        },
        MixCheck {
            id: "download-http",
            kind: "download",
            targets: &["old", "new"],
            interval_ms: 900,
            jitter_ms: 200,
            params: format!(
                "url = \"{base}/archives/elm/http/2.0.0.zip\"\nsha256 = \"{sha}\"\nsize = {size}\n"
            ),
        },
        MixCheck {
            id: "consistency",
            kind: "registry_consistency",
            targets: &["new"],
            interval_ms: 900,
            jitter_ms: 200,
            params: format!("registry_url = \"{base}\"\n"),
        },
    ]
}

/// BIND, one Unbound (for [`REGION`]), old and new registries on one port.
async fn build_infra(block: &AddrBlock, dir: &Path) -> anyhow::Result<Infra> {
    let ns = block.add(1)?;
    let old_ip = block.add(10)?;
    let new_ip = block.add(11)?;
    let ca = TestCa::new()?;
    let ca_file = ca.write_pem(&dir.join("ca.pem"))?;
    let leaf = ca.issue(&[SITE_HOST], &[IpAddr::V4(old_ip), IpAddr::V4(new_ip)])?;
    let tls = leaf.server_config(&[b"h2", b"http/1.1"])?;
    let (old, new, site_port) = {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let old = tokio::net::TcpListener::bind(SocketAddr::new(old_ip.into(), 0)).await?;
            let port = old.local_addr()?.port();
            match tokio::net::TcpListener::bind(SocketAddr::new(new_ip.into(), port)).await {
                Ok(new) => {
                    let base = format!("https://{SITE_HOST}:{port}");
                    let old = Registry::serve(old, &base, tls.clone())?;
                    let new = Registry::serve(new, &base, tls.clone())?;
                    break (old, new, port);
                }
                Err(e) if attempt >= 5 => bail!("could not bind both sites on port {port}: {e}"),
                Err(_) => continue,
            }
        }
    };
    let bind = Bind::start(
        ns,
        &ZoneSpec {
            zone: ZONE.into(),
            records: vec![("package".into(), old_ip, 60)],
        },
        &dir.join("bind"),
        block,
    )
    .await?;
    let ub_ip = block.add(21)?;
    let ub = Unbound::start(
        REGION,
        ub_ip,
        ZONE,
        ns,
        &dir.join(format!("unbound-{REGION}")),
        block,
    )
    .await?;
    Ok(Infra {
        resolvers: BTreeMap::from([(REGION.to_owned(), ub)]),
        bind,
        old,
        new,
        site_port,
        ca,
        ca_file,
    })
}

/// Figures of the probe process from `/proc/PID/{status,stat}`.
#[derive(Debug, Clone, Copy, Default)]
struct ProcSample {
    rss_kb: u64,
    hwm_kb: u64,
    rss_anon_kb: u64,
    rss_file_kb: u64,
    threads: u64,
    /// utime + stime, clock ticks.
    cpu_ticks: u64,
}

fn proc_sample(pid: u32) -> anyhow::Result<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let mut s = ProcSample::default();
    for line in status.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let n = || -> u64 {
            v.split_whitespace()
                .next()
                .and_then(|w| w.parse().ok())
                .unwrap_or(0)
        };
        match k {
            "VmRSS" => s.rss_kb = n(),
            "VmHWM" => s.hwm_kb = n(),
            "RssAnon" => s.rss_anon_kb = n(),
            "RssFile" => s.rss_file_kb = n(),
            "Threads" => s.threads = n(),
            _ => {}
        }
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after "(comm)": state is field 3, utime 14, stime 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed /proc/PID/stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| -> anyhow::Result<u64> {
        f.get(i - 3)
            .context("short /proc/PID/stat")?
            .parse()
            .context("bad /proc/PID/stat field")
    };
    s.cpu_ticks = field(14)? + field(15)?;
    Ok(s)
}

fn clock_ticks_per_sec() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100)
}

/// `cutover_results_ingested_total` by (check, target, outcome), summed over regions.
type Ingested = BTreeMap<(String, String, String), f64>;

async fn ingested(coord: &Coordinator) -> anyhow::Result<Ingested> {
    let mut out = Ingested::new();
    for s in coord.metrics().await? {
        if s.name == "cutover_results_ingested_total" {
            let key = (
                s.label("check").unwrap_or("?").to_owned(),
                s.label("target").unwrap_or("?").to_owned(),
                s.label("outcome").unwrap_or("?").to_owned(),
            );
            *out.entry(key).or_default() += s.value;
        }
    }
    Ok(out)
}

fn mb(bytes: f64) -> String {
    format!(
        "{:.2} MB ({:.2} MiB)",
        bytes / 1e6,
        bytes / (1024.0 * 1024.0)
    )
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match bench(&args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("cutover-probe-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs the benchmark; `Ok(false)` when the figures show the probe did not
/// keep up.
async fn bench(args: &Args) -> anyhow::Result<bool> {
    cutover_e2e::init();
    let probe_path = probe_bin()?;
    let size = std::fs::metadata(&probe_path)
        .with_context(|| format!("reading {}", probe_path.display()))?
        .len();

    let block = AddrBlock::acquire()?;
    let tmp = tempfile::Builder::new()
        .prefix(&format!("cutover-probe-bench-{}-", block.octet()))
        .tempdir()?;
    let dir = tmp.path();
    let infra = build_infra(&block, dir).await?;
    let mut coord = Coordinator::new(
        &block,
        dir,
        &infra,
        &Options {
            window: "60s".into(),
            ..Options::default()
        },
    )?;
    // Keep the harness's [server] and [sites.*] sections; replace the checks.
    let mix = check_mix(&infra.registry_url(), infra.site_port);
    let generated = std::fs::read_to_string(&coord.config)?;
    let head = generated
        .split("[[checks]]")
        .next()
        .context("generated config")?;
    let mut config = head.to_owned();
    for c in &mix {
        config.push_str(&c.toml());
    }
    std::fs::write(&coord.config, config)?;
    let intended: f64 = mix.iter().map(MixCheck::runs_per_sec).sum();

    coord.start(&block).await?;
    let (id, token) = coord.enrol(REGION).await?;
    let pdir = dir.join(format!("probe-{REGION}"));
    std::fs::create_dir_all(&pdir)?;
    let produced_file = pdir.join("produced.tsv");
    let resolver = infra.resolvers[REGION].addr();
    let mut cmd = probe_command(
        REGION,
        &token,
        &coord.url(),
        Some(resolver),
        &infra.ca_file,
        Some(&produced_file),
    )?;
    for kv in &args.probe_env {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--probe-env {kv:?}: expected KEY=VALUE"))?;
        cmd.env(k, v);
    }
    let proc = Proc::spawn(&format!("probe-{REGION}"), cmd, &pdir, &block)?;
    let mut probe = Probe {
        region: REGION.to_owned(),
        id,
        token,
        produced_file,
        source: None,
        proc,
    };
    let pid = probe.proc.pid();

    // Connected?
    let admin = coord.admin_target()?;
    let connect_deadline = Instant::now() + Duration::from_secs(30);
    loop {
        probe.proc.ensure_running()?;
        coord.ensure_running()?;
        if let Ok(st) = cutover_e2e::admin::status(&admin).await
            && st
                .regions
                .iter()
                .any(|r| r.region == REGION && r.probes_connected >= 1)
        {
            break;
        }
        if Instant::now() > connect_deadline {
            bail!(
                "the probe did not connect within 30 s:\n{}",
                probe.proc.tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    println!("cutover-probe benchmark");
    println!("  probe binary      {}", probe_path.display());
    println!(
        "  coordinator       {}",
        cutover_e2e::procs::cutover_bin()?.display()
    );
    println!("  check mix (intended runs/s):");
    for c in &mix {
        println!(
            "    {:<14} {:<21} {:<15} every {:>4} ms + U(0,{:>3} ms)  {:>5.2}/s",
            c.id,
            c.kind,
            c.targets.join("+"),
            c.interval_ms,
            c.jitter_ms,
            c.runs_per_sec()
        );
    }
    println!(
        "    total                                                          {intended:>5.2}/s"
    );
    if !args.probe_env.is_empty() {
        println!("  probe env         {}", args.probe_env.join(" "));
    }
    println!(
        "  warm-up {} s, measuring {} s …",
        args.warmup, args.seconds
    );

    let warm_end = Instant::now() + Duration::from_secs(args.warmup);
    while Instant::now() < warm_end {
        probe.proc.ensure_running()?;
        coord.ensure_running()?;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let tck = clock_ticks_per_sec() as f64;
    let before = ingested(&coord).await?;
    let produced_before = probe.produced()?.len();
    let first = proc_sample(pid)?;
    let t0 = Instant::now();
    let mut samples = Vec::new();
    for i in 1..=args.seconds {
        tokio::time::sleep_until((t0 + Duration::from_secs(i)).into()).await;
        probe.proc.ensure_running()?;
        coord.ensure_running()?;
        let s = proc_sample(pid)?;
        if args.verbose {
            println!(
                "    t={i:>3}s VmRSS {:>6} kB (anon {:>6}, file {:>5})  VmHWM {:>6} kB  threads {}",
                s.rss_kb, s.rss_anon_kb, s.rss_file_kb, s.hwm_kb, s.threads
            );
        }
        samples.push(s);
    }
    let last = *samples.last().context("no samples (--seconds 0?)")?;
    let elapsed = t0.elapsed().as_secs_f64();
    let after = ingested(&coord).await?;
    let produced_after = probe.produced()?.len();

    // Achieved rate, overall and per check.
    let mut per_check: BTreeMap<String, f64> = BTreeMap::new();
    let mut by_outcome: BTreeMap<String, f64> = BTreeMap::new();
    for (key, v) in &after {
        let d = v - before.get(key).copied().unwrap_or(0.0);
        *per_check.entry(key.0.clone()).or_default() += d;
        *by_outcome.entry(key.2.clone()).or_default() += d;
    }
    let total: f64 = per_check.values().sum();
    let rate = total / elapsed;
    let produced_rate = (produced_after - produced_before) as f64 / elapsed;
    let rss_avg =
        samples.iter().map(|s| s.rss_kb as f64).sum::<f64>() / samples.len() as f64 / 1024.0;
    let rss_max = samples.iter().map(|s| s.rss_kb).max().unwrap_or(0) as f64 / 1024.0;
    let anon_avg =
        samples.iter().map(|s| s.rss_anon_kb as f64).sum::<f64>() / samples.len() as f64 / 1024.0;
    let file_avg =
        samples.iter().map(|s| s.rss_file_kb as f64).sum::<f64>() / samples.len() as f64 / 1024.0;
    let cpu_pct = (last.cpu_ticks - first.cpu_ticks) as f64 / tck / elapsed * 100.0;

    println!();
    println!("results over {elapsed:.1} s:");
    println!("  per check (ingested/s vs intended):");
    for c in &mix {
        let got = per_check.get(c.id).copied().unwrap_or(0.0) / elapsed;
        println!(
            "    {:<14} {got:>6.2}/s  (intended {:>5.2}/s)",
            c.id,
            c.runs_per_sec()
        );
    }
    let outcomes: Vec<String> = by_outcome
        .iter()
        .map(|(k, v)| format!("{k} {v:.0}"))
        .collect();
    println!("  outcomes          {}", outcomes.join(", "));
    println!();
    println!(
        "  binary size       {size} bytes = {} (target <= 8 MB)",
        mb(size as f64)
    );
    println!(
        "  results/s         {rate:.2} ingested by the coordinator ({total:.0} results), \
         {produced_rate:.2} produced by the probe; intended {intended:.2}"
    );
    let mib = 1024.0 * 1024.0;
    println!(
        "  VmRSS             avg {}, max {} (target <= 10 MB)",
        mb(rss_avg * mib),
        mb(rss_max * mib)
    );
    println!("                    avg anon {anon_avg:.2} MiB + file-backed {file_avg:.2} MiB");
    println!(
        "  VmHWM             {} (peak since start)",
        mb(last.hwm_kb as f64 * 1024.0)
    );
    println!("  CPU               {cpu_pct:.1} % of one core (utime+stime)");
    println!("  threads           {}", last.threads);

    let mut ok = true;
    if rate < intended * args.min_ratio {
        eprintln!(
            "FAIL: {rate:.2} results/s ingested, below {:.0} % of the intended {intended:.2}/s",
            args.min_ratio * 100.0
        );
        ok = false;
    }
    probe.proc.ensure_running()?;
    if !ok {
        eprintln!("{}", probe.proc.tail());
    }
    Ok(ok)
}
