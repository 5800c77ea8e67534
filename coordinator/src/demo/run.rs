//! `cutover demo`: the whole system on loopback, twice through a short Elm plan.
//!
//! In this process: the authoritative server for `elm.test` ([`super::auth`],
//! changed only through the engine's `rfc2136` provider), one caching resolver
//! per region ([`super::resolver`]), the old and the new stand-in registries
//! ([`super::registry`]) behind a CA made at start ([`super::tls`]). As child
//! processes: the coordinator (`cutover serve`, this binary) and one real
//! `cutover-probe` per region, each resolving through its region's cache.
//!
//! Run 1 takes the plan to `done`. Run 2 starts again from old; during the
//! soak after the switch a fault is injected into the new site (corrupt
//! archives, hashes unchanged). Nobody touches anything: the plan's guards see
//! hash mismatches from the probes, trip, and the engine runs the fallback
//! runbook on its own: DNS answers old again, verified. The decision log line
//! that explains the fallback (`cutover why`) and the alerts the plan's webhook
//! received are shown. A summary follows; exit 0 when both runs ended as
//! expected, the fallback was automatic and DNS answers old everywhere.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cutover_proto::v1;
use cutover_proto::v1::admin_service_client::AdminServiceClient;
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::process::{Child, Command};
use tonic::transport::Endpoint;

use super::auth::{AuthServer, Zone};
use super::receiver::AlertReceiver;
use super::registry::Registry;
use super::resolver::CachingResolver;
use super::tls::TestCa;
use crate::cli::{Admin, Intercept};
use crate::dns::tsig::{Algorithm, Key};

/// The demo zone and the registry's name in it.
pub const ZONE: &str = "elm.test";
pub const SITE_HOST: &str = "package.elm.test";
/// The demo's regions, one probe and one resolver cache each.
pub const REGIONS: [&str; 3] = ["asia", "australia", "us"];
/// TTL of `package.elm.test` before the plan, and the plan's lowered TTL.
pub const NORMAL_TTL: u32 = 6;
pub const LOWERED_TTL: u32 = 2;
const TSIG_KEY: &str = "cutover-demo";
const INSTALL: &str = "install-core";
const PLAN_DNS: &str = "package-dns";
/// The forward runbook's step ids, in order.
const FORWARD: [&str; 9] = [
    "healthy",
    "lower-ttl",
    "announce",
    "ttl-drained",
    "switch",
    "propagation",
    "test-install",
    "soak",
    "restore-ttl",
];
/// The run-2 fault goes in while this step runs (guards armed, nothing else judging).
const FAULT_STEP: &str = "soak";

/// `cutover demo`'s options.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Afterwards keep everything running (coordinator, probes, DNS, registries) for exploring
    /// with the CLI and /metrics, until Ctrl-C.
    #[arg(long)]
    pub keep_running: bool,
    /// The `cutover-probe` binary (default: next to this `cutover`).
    #[arg(long, env = "CUTOVER_PROBE_BIN", value_name = "PATH")]
    pub probe_bin: Option<PathBuf>,
    /// Folder for the demo's files: config, plan, logs, database (default: a new one under the
    /// system's temp dir, removed at the end unless the demo fails or --keep-running).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// The embedded plan, with placeholders the demo fills in.
pub const PLAN_TEMPLATE: &str = include_str!("demo-plan.toml");

/// Values that complete [`PLAN_TEMPLATE`].
#[derive(Debug, Clone)]
pub struct PlanValues {
    pub old: Ipv4Addr,
    pub new: Ipv4Addr,
    pub site_port: u16,
    pub nameserver: SocketAddr,
}

/// The plan text for these addresses (the TSIG secret is read from
/// `tsig.secret` next to the plan).
pub fn plan_text(v: &PlanValues) -> String {
    PLAN_TEMPLATE
        .replace("{OLD}", &v.old.to_string())
        .replace("{NEW}", &v.new.to_string())
        .replace("{PORT}", &v.site_port.to_string())
        .replace("{NS}", &v.nameserver.to_string())
        .replace("{LOWERED_TTL}", &LOWERED_TTL.to_string())
        .replace("{NORMAL_TTL}", &NORMAL_TTL.to_string())
}

/// Where `cutover-probe` is: `--probe-bin`, else next to the running binary.
fn probe_bin(args: &DemoArgs) -> Result<PathBuf> {
    if let Some(p) = &args.probe_bin {
        if !p.exists() {
            bail!("the probe binary {} does not exist", p.display());
        }
        return Ok(p.clone());
    }
    let exe = std::env::current_exe().context("cannot locate the running cutover binary")?;
    let candidate = exe.with_file_name("cutover-probe");
    if !candidate.exists() {
        bail!(
            "cutover-probe is not built: expected it next to cutover at {} \
             (build both with `cargo build --release -p cutover-coordinator -p cutover-probe`, \
             or pass --probe-bin PATH)",
            candidate.display()
        );
    }
    Ok(candidate)
}

/// A `127.B.0.0/24` block of loopback addresses (Linux routes all of
/// 127.0.0.0/8 to `lo`): `.2` coordinator, `.10`/`.11` old/new site, `.21`…
/// the regions' resolvers.
#[derive(Debug, Clone, Copy)]
struct Block(u8);

impl Block {
    fn ip(self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(127, self.0, 0, host)
    }

    /// A block whose coordinator ports and site addresses are free, from
    /// `127.10.0.0` … `127.99.0.0` (the process-level tests use 100 and up).
    fn pick() -> Result<Block> {
        const FIRST: u8 = 10;
        const COUNT: u8 = 90;
        let start = fastrand::u8(0..COUNT);
        for i in 0..COUNT {
            let b = Block(FIRST + (start + i) % COUNT);
            let free = [7443, 7444, 9464]
                .iter()
                .all(|p| std::net::TcpListener::bind(SocketAddr::new(b.ip(2).into(), *p)).is_ok())
                && std::net::TcpListener::bind(SocketAddr::new(b.ip(10).into(), 0)).is_ok();
            if free {
                return Ok(b);
            }
        }
        bail!("no free loopback block 127.B.0.0/24 (is 127.0.0.0/8 routed to lo?)")
    }
}

/// One step as the journal tells it.
#[derive(Debug, Clone)]
pub struct StepReport {
    pub runbook: String,
    pub step: String,
    pub result: String,
    pub took: Duration,
}

/// How one run ended.
#[derive(Debug, Clone)]
struct RunReport {
    title: String,
    run_id: u64,
    state: String,
    took: Duration,
    steps: Vec<StepReport>,
}

struct World {
    dir: PathBuf,
    block: Block,
    ca_file: PathBuf,
    auth: AuthServer,
    resolvers: BTreeMap<&'static str, CachingResolver>,
    old: Registry,
    new: Registry,
    site_port: u16,
    config: PathBuf,
    admin: SocketAddr,
    metrics: SocketAddr,
    children: Vec<(String, Child)>,
    client: Option<Admin>,
    plan: PathBuf,
    tty: bool,
    t0: Instant,
    /// What happened during the current run (the fault, the trip), shown
    /// under every frame of the live view.
    events: Vec<String>,
    /// Where the plan's `[alerts]` webhook posts.
    alerts: AlertReceiver,
}

/// Runs the demo; `Ok` when both runs ended as expected.
pub async fn run(args: &DemoArgs) -> Result<()> {
    let probe = probe_bin(args)?;
    let cutover = std::env::current_exe().context("cannot locate the running cutover binary")?;
    let (dir, owned_dir) = match &args.dir {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("cutover-demo-{}", std::process::id())),
            true,
        ),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let dir = std::path::absolute(&dir).unwrap_or(dir);
    println!(
        "cutover demo: everything on loopback; files in {}",
        dir.display()
    );

    let mut world = World::build(&dir).await?;
    let outcome = world.demo(&cutover, &probe).await;
    match &outcome {
        Ok(()) if args.keep_running => {
            world.explore_hint();
            tokio::signal::ctrl_c()
                .await
                .context("cannot wait for Ctrl-C")?;
            println!("stopping");
        }
        Ok(()) => {}
        Err(_) => {
            println!(
                "the demo failed; logs and the journal are kept in {}",
                dir.display()
            );
        }
    }
    world.stop().await;
    if outcome.is_ok() && owned_dir && !args.keep_running {
        let _ = std::fs::remove_dir_all(&dir);
    }
    outcome
}

impl World {
    /// DNS, resolvers and sites (in this process).
    async fn build(dir: &Path) -> Result<World> {
        let block = Block::pick()?;
        let (old_ip, new_ip) = (block.ip(10), block.ip(11));

        let ca = TestCa::new()?;
        let ca_file = ca.write_pem(&dir.join("ca.pem"))?;
        let leaf = ca.issue(&[SITE_HOST], &[IpAddr::V4(old_ip), IpAddr::V4(new_ip)])?;
        let tls = leaf.server_config(&[b"h2", b"http/1.1"])?;
        // Both sites on one port, so one URL works pinned to either address.
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
                    Err(e) if attempt >= 10 => {
                        bail!("could not bind both sites on port {port}: {e}")
                    }
                    Err(_) => continue,
                }
            }
        };

        let mut secret = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)
            .map_err(|_| anyhow::anyhow!("no randomness for the TSIG secret"))?;
        let key = Key::new(TSIG_KEY, Algorithm::HmacSha256, &secret).map_err(anyhow::Error::msg)?;
        let mut zone = Zone::new(ZONE, 1).map_err(anyhow::Error::msg)?;
        zone.put(&site_name()?, RecordType::A, NORMAL_TTL, vec![a(old_ip)]);
        let auth = AuthServer::start(SocketAddr::new(block.ip(1).into(), 0), zone, key)
            .await
            .context("cannot start the authoritative DNS server")?;

        let mut resolvers = BTreeMap::new();
        for (i, region) in REGIONS.iter().enumerate() {
            let ip = block.ip(21 + i as u8);
            let r = CachingResolver::start(SocketAddr::new(ip.into(), 0), auth.addr())
                .await
                .with_context(|| format!("cannot start the {region} resolver"))?;
            resolvers.insert(*region, r);
        }

        let plan_dir = dir.join("plan");
        std::fs::create_dir_all(&plan_dir)?;
        let secret_file = plan_dir.join("tsig.secret");
        std::fs::write(&secret_file, crate::dns::secret::base64_encode(&secret))?;
        set_private(&secret_file)?;
        let alerts = AlertReceiver::start(SocketAddr::new(block.ip(3).into(), 0))
            .await
            .context("cannot start the alert receiver")?;
        let url_file = plan_dir.join("alert-receiver.url");
        std::fs::write(&url_file, alerts.url())?;
        set_private(&url_file)?;
        let plan = plan_dir.join("elm-package-demo.toml");
        std::fs::write(
            &plan,
            plan_text(&PlanValues {
                old: old_ip,
                new: new_ip,
                site_port,
                nameserver: auth.addr(),
            }),
        )?;

        let cdir = dir.join("coordinator");
        std::fs::create_dir_all(&cdir)?;
        let config = cdir.join("cutover.toml");
        let listen = SocketAddr::new(block.ip(2).into(), 7443);
        let admin = SocketAddr::new(block.ip(2).into(), 7444);
        let metrics = SocketAddr::new(block.ip(2).into(), 9464);
        std::fs::write(
            &config,
            config_toml(listen, admin, metrics, old_ip, new_ip, site_port),
        )?;

        let w = World {
            dir: dir.to_path_buf(),
            block,
            ca_file,
            auth,
            resolvers,
            old,
            new,
            site_port,
            config,
            admin,
            metrics,
            children: Vec::new(),
            client: None,
            plan,
            tty: std::io::stdout().is_terminal(),
            t0: Instant::now(),
            events: Vec::new(),
            alerts,
        };
        println!(
            "  authoritative DNS for {ZONE}. on {} (RFC 2136 UPDATE with TSIG key {TSIG_KEY})",
            w.auth.addr()
        );
        for (region, r) in &w.resolvers {
            println!("  {region:<9} caching resolver on {}", r.addr());
        }
        println!(
            "  old site https://{SITE_HOST}:{site_port} at {old_ip}, new site at {new_ip} (demo CA {})",
            w.ca_file.display()
        );
        println!(
            "  alert receiver (the plan's JSON webhook) at {}",
            w.alerts.url()
        );
        Ok(w)
    }

    fn client(&mut self) -> Result<&mut Admin> {
        self.client
            .as_mut()
            .context("the coordinator is not started")
    }

    async fn demo(&mut self, cutover: &Path, probe: &Path) -> Result<()> {
        self.start_coordinator(cutover).await?;
        self.start_probes(probe).await?;
        self.wait_connected(Duration::from_secs(30)).await?;

        println!("\n== run 1: the short Elm plan, start to finish ==");
        let run1 = self
            .follow("run 1 (clean)", false)
            .await
            .context("run 1 did not finish")?;

        println!("\n== resetting: {SITE_HOST} back on old at TTL {NORMAL_TTL}s, caches flushed ==");
        self.reset()?;
        tokio::time::sleep(Duration::from_secs(2)).await;

        println!(
            "\n== run 2: the same plan; during the soak the new site starts serving corrupt archives =="
        );
        let alerts_before = self.alerts.received().len();
        let run2 = self
            .follow(
                "run 2 (fault on new during the soak, automatic fallback)",
                true,
            )
            .await
            .context("run 2 did not finish")?;
        let why = self.why(run2.run_id).await?;
        println!("\n$ cutover why\n{why}");
        let alerts = self.alert_lines(alerts_before).await;
        println!("alerts received by the plan's webhook:\n{alerts}");

        let dns = self
            .dns_answers(Duration::from_secs(3 * u64::from(NORMAL_TTL)))
            .await;
        let status = self
            .client()?
            .status(v1::StatusRequest {})
            .await
            .map_err(rpc)?
            .into_inner();
        let automatic = why.starts_with(&format!("run {} fell back at ", run2.run_id));
        let ok = run1.state == "done"
            && run2.state == "fell_back"
            && automatic
            && dns.iter().all(|(_, ip)| *ip == Some(self.block.ip(10)));
        print!("{}", self.summary(&[&run1, &run2], &status, &dns));
        if ok {
            println!(
                "demo finished: run 1 done; in run 2 a guard tripped and the fallback ran on its own; DNS answers old everywhere"
            );
            Ok(())
        } else {
            bail!(
                "the demo did not end as expected: run 1 {}, run 2 {}{}",
                run1.state,
                run2.state,
                if automatic {
                    ""
                } else {
                    " without a guard trip in `cutover why`"
                }
            )
        }
    }

    async fn start_coordinator(&mut self, cutover: &Path) -> Result<()> {
        let log = self.dir.join("coordinator.log");
        let mut cmd = Command::new(cutover);
        cmd.arg("--config")
            .arg(&self.config)
            .arg("serve")
            .current_dir(self.config.parent().unwrap_or(&self.dir))
            // The engine's own HTTPS requests (gate `same_code`) trust the demo CA.
            .env("SSL_CERT_FILE", &self.ca_file)
            .env("CUTOVER_LOG", "info")
            .env_remove("CUTOVER_CONFIG")
            .env_remove("CUTOVER_ADMIN")
            .env_remove("CUTOVER_ADMIN_TOKEN_FILE");
        let child = spawn_logged(cmd, &log).context("cannot start the coordinator")?;
        self.children.push(("coordinator".into(), child));
        let token_file = self.dir.join("coordinator/data/admin.token");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            self.ensure_running()?;
            if let Ok(token) = crate::auth::read_token_file(&token_file)
                && let Ok(client) = connect_admin(self.admin, &token).await
            {
                self.client = Some(client);
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "the coordinator did not come up within 30s; see {}",
                    log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        println!(
            "  coordinator (cutover serve) admin {} metrics http://{}/metrics, log {}",
            self.admin,
            self.metrics,
            log.display()
        );
        Ok(())
    }

    async fn start_probes(&mut self, probe: &Path) -> Result<()> {
        let url = format!("http://{}", SocketAddr::new(self.block.ip(2).into(), 7443));
        for region in REGIONS {
            let reply = self
                .client()?
                .enrol_probe(v1::EnrolProbeRequest {
                    region: region.into(),
                    note: "cutover demo".into(),
                })
                .await
                .map_err(rpc)?
                .into_inner();
            let resolver = self.resolvers[region].addr();
            let log = self.dir.join(format!("probe-{region}.log"));
            let mut cmd = Command::new(probe);
            cmd.args(["--coordinator", &url])
                .args(["--token", &reply.token])
                .args(["--region", region])
                .args(["--resolver", &resolver.to_string()])
                // The stand-in sites are under the demo zone, on loopback.
                .args(["--allow-domain", ZONE])
                .arg("--allow-private-addresses")
                .arg("--ca-file")
                .arg(&self.ca_file)
                .env("SSL_CERT_FILE", &self.ca_file)
                .env("RUST_LOG", "info")
                .env_remove("CUTOVER_CONFIG")
                .env_remove("CUTOVER_PROBE_CONFIG")
                .env_remove("CUTOVER_RESOLVER");
            let child = spawn_logged(cmd, &log)
                .with_context(|| format!("cannot start the {region} probe"))?;
            self.children.push((format!("probe {region}"), child));
            println!(
                "  probe {} in {region} (cutover-probe, resolver {resolver}), log {}",
                reply.probe_id,
                log.display()
            );
        }
        Ok(())
    }

    fn ensure_running(&mut self) -> Result<()> {
        for (name, child) in &mut self.children {
            if let Ok(Some(status)) = child.try_wait() {
                bail!(
                    "the {name} exited ({status}); its log is in {}",
                    self.dir.display()
                );
            }
        }
        Ok(())
    }

    async fn wait_connected(&mut self, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        loop {
            self.ensure_running()?;
            let st = self
                .client()?
                .status(v1::StatusRequest {})
                .await
                .map_err(rpc)?
                .into_inner();
            let connected = |r: &str| {
                st.regions
                    .iter()
                    .any(|g| g.region == r && g.probes_connected >= 1)
            };
            if REGIONS.iter().all(|r| connected(r)) {
                println!("  all three probes connected");
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the probes did not all connect within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Starts the plan and follows it to its end, redrawing the view every
    /// second. With `fault`: during the soak the new site corrupts its
    /// archives, and the run is expected to fall back by itself (a guard trip).
    async fn follow(&mut self, title: &str, fault: bool) -> Result<RunReport> {
        let content = std::fs::read_to_string(&self.plan)?;
        let path = self.plan.display().to_string();
        let reply = self
            .client()?
            .start_plan(v1::StartPlanRequest {
                path: path.clone(),
                content,
                force: false,
            })
            .await
            .map_err(rpc)?
            .into_inner();
        let run_id = reply.run_id;
        let started = Instant::now();
        self.events.clear();
        println!("cutover start {path}  → run {run_id}");
        let mut injected = false;
        let mut fell_back = false;
        let mut last_line = String::new();
        let deadline = Duration::from_secs(180);
        loop {
            self.ensure_running()?;
            let st = self
                .client()?
                .plan_status(v1::PlanStatusRequest { run_id })
                .await
                .map_err(rpc)?
                .into_inner()
                .run
                .context("the coordinator has no such run")?;
            let evidence = self
                .client()?
                .status(v1::StatusRequest {})
                .await
                .map_err(rpc)?
                .into_inner();
            let view = crate::operator::render_plan_status(&st);
            if self.tty {
                let mut events = String::new();
                if !self.events.is_empty() {
                    events.push('\n');
                    for e in &self.events {
                        let _ = writeln!(events, "{e}");
                    }
                }
                print!(
                    "\x1b[2J\x1b[H{title}  ({:.0}s)\n\n{view}{}{events}",
                    started.elapsed().as_secs_f64(),
                    evidence_table(&evidence)
                );
            } else {
                let step = if st.step_id.is_empty() {
                    String::new()
                } else {
                    format!(" step {}/{} {}", st.step_index, st.step_count, st.step_id)
                };
                let line = format!(
                    "{} {}{step}{}",
                    st.direction,
                    st.state,
                    if st.waiting_for.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", first_words(&st.waiting_for))
                    }
                );
                if line != last_line {
                    println!("  [{:>5.1}s] {line}", self.t0.elapsed().as_secs_f64());
                    last_line = line;
                }
            }

            if fault && !injected && st.direction == "forward" && st.step_id == FAULT_STEP {
                self.new.set_corrupt_archives(true);
                injected = true;
                self.note(
                    "FAULT: the new site now serves corrupt archives (published SHA-1 unchanged); nobody touches anything",
                )
                .await;
            }
            if st.state == "paused" {
                bail!(
                    "{title} paused where it should not have: {}",
                    st.message.lines().next().unwrap_or("")
                );
            }
            if fault && injected && !fell_back && st.direction == "fallback" {
                fell_back = true;
                let why = self.why(run_id).await?;
                self.note(&format!(
                    "the engine switched to the fallback runbook by itself. The decision log says:\n  {}\n{}",
                    why.lines().next().unwrap_or("(no trip recorded)"),
                    failing_evidence(&evidence)
                ))
                .await;
            }
            if matches!(
                st.state.as_str(),
                "done" | "failed" | "aborted" | "fell_back"
            ) {
                if self.tty {
                    println!();
                }
                println!(
                    "{title} ended {} after {:.1}s",
                    st.state.to_uppercase(),
                    started.elapsed().as_secs_f64()
                );
                let steps = self.steps(run_id).await?;
                return Ok(RunReport {
                    title: title.into(),
                    run_id,
                    state: st.state,
                    took: started.elapsed(),
                    steps,
                });
            }
            if started.elapsed() > deadline {
                bail!("{title} is still {} after {deadline:?}", st.state);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// `cutover why` for a run, rendered in this machine's time zone.
    async fn why(&mut self, run_id: u64) -> Result<String> {
        let h = self
            .client()?
            .history(v1::HistoryRequest { run_id })
            .await
            .map_err(rpc)?
            .into_inner();
        Ok(crate::operator::render_why(
            &h,
            &crate::localtime::Zone::local(),
        ))
    }

    /// One line per alert the receiver got after the first `skip`; waits a
    /// moment for the last ones (they are sent without holding up the engine).
    async fn alert_lines(&self, skip: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let got = self.alerts.received();
            let names: Vec<&str> = got
                .iter()
                .skip(skip)
                .filter_map(|a| a.get("alert").and_then(|v| v.as_str()))
                .collect();
            if names.contains(&crate::alerts::FALLBACK_DONE) || Instant::now() > deadline {
                let mut out = String::new();
                for a in got.iter().skip(skip) {
                    let s = |k: &str| a.get(k).and_then(|v| v.as_str()).unwrap_or("");
                    let _ = writeln!(out, "    {:<24} {}", s("alert"), first_words(s("summary")));
                }
                if out.is_empty() {
                    out.push_str("    (none)\n");
                }
                return out;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn note(&mut self, text: &str) {
        for line in text.lines() {
            let line = format!("[{:>5.1}s] >>> {line}", self.t0.elapsed().as_secs_f64());
            if self.tty {
                println!("{line}");
            } else {
                println!("  {line}");
            }
            self.events.push(line);
        }
        if self.tty {
            // Keep it in sight for a moment before the next frame.
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
    }

    /// Steps of a run with their durations and results, from the journal.
    async fn steps(&mut self, run_id: u64) -> Result<Vec<StepReport>> {
        let h = self
            .client()?
            .history(v1::HistoryRequest { run_id })
            .await
            .map_err(rpc)?
            .into_inner();
        let mut out: Vec<StepReport> = Vec::new();
        let mut open: BTreeMap<String, (i64, String)> = BTreeMap::new();
        for e in &h.entries {
            let d: serde_json::Value = serde_json::from_str(&e.detail_json).unwrap_or_default();
            match e.phase.as_str() {
                "intent" => {
                    let runbook = d
                        .get("runbook")
                        .or_else(|| d.get("direction"))
                        .and_then(|v| v.as_str())
                        .unwrap_or(if FORWARD.contains(&e.step_id.as_str()) {
                            "forward"
                        } else {
                            "fallback"
                        })
                        .to_string();
                    open.insert(e.step_id.clone(), (e.unix_ms, runbook));
                }
                "outcome" => {
                    let (since, runbook) = open
                        .remove(&e.step_id)
                        .unwrap_or((e.unix_ms, String::new()));
                    out.push(StepReport {
                        runbook,
                        step: e.step_id.clone(),
                        result: d
                            .get("result")
                            .and_then(|v| v.as_str())
                            .unwrap_or("?")
                            .to_string(),
                        took: Duration::from_millis((e.unix_ms - since).max(0) as u64),
                    });
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// Between the runs: the world as before run 1.
    fn reset(&mut self) -> Result<()> {
        self.new.set_corrupt_archives(false);
        let old = self.block.ip(10);
        let name = site_name()?;
        self.auth
            .with_zone(|z| z.put(&name, RecordType::A, NORMAL_TTL, vec![a(old)]));
        for r in self.resolvers.values() {
            r.flush();
        }
        Ok(())
    }

    /// `package.elm.test` at the authoritative server and at each region's
    /// resolver, waiting up to `within` for the caches to agree with the
    /// authoritative answer.
    async fn dns_answers(&self, within: Duration) -> Vec<(String, Option<Ipv4Addr>)> {
        let deadline = Instant::now() + within;
        loop {
            let mut out = vec![(
                "authoritative".to_string(),
                resolve(self.auth.addr(), false).await,
            )];
            for (region, r) in &self.resolvers {
                out.push((format!("{region} resolver"), resolve(r.addr(), true).await));
            }
            if out.iter().all(|(_, ip)| *ip == out[0].1) || Instant::now() > deadline {
                return out;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    fn summary(
        &self,
        runs: &[&RunReport],
        status: &v1::StatusReply,
        dns: &[(String, Option<Ipv4Addr>)],
    ) -> String {
        let mut out = String::from("\n== summary ==\n");
        for r in runs {
            let _ = writeln!(
                out,
                "{} — run {}: {} in {:.1}s",
                r.title,
                r.run_id,
                r.state.to_uppercase(),
                r.took.as_secs_f64()
            );
            for s in &r.steps {
                let _ = writeln!(
                    out,
                    "    {:<8} {:<14} {:<8} {:>6.1}s",
                    s.runbook,
                    s.step,
                    s.result,
                    s.took.as_secs_f64()
                );
            }
        }
        let _ = writeln!(
            out,
            "evidence per region (last {}s window):",
            status.window_seconds
        );
        out.push_str(&evidence_table(status));
        let (old, new) = (self.block.ip(10), self.block.ip(11));
        let _ = writeln!(out, "DNS for {SITE_HOST} now:");
        for (who, ip) in dns {
            let site = match ip {
                Some(ip) if *ip == old => "old",
                Some(ip) if *ip == new => "new",
                Some(_) => "other",
                None => "no answer",
            };
            let ip = ip.map(|i| i.to_string()).unwrap_or_default();
            let _ = writeln!(out, "    {who:<20} {ip:<15} {site}");
        }
        let (hits, misses) = self.resolvers.values().fold((0, 0), |(h, m), r| {
            let (a, b) = r.stats();
            (h + a, m + b)
        });
        let _ = writeln!(
            out,
            "DNS updates applied by the rfc2136 provider: {}; resolver caches: {hits} answers from cache, {misses} fetched",
            self.auth.with_zone(|z| z.updates())
        );
        out
    }

    fn explore_hint(&self) {
        let cfg = self.config.display();
        println!(
            "\neverything keeps running until Ctrl-C. Explore:\n  \
             cutover --config {cfg} status\n  \
             cutover --config {cfg} history\n  \
             cutover --config {cfg} probes\n  \
             curl http://{}/metrics\n  \
             dig @{} -p {} {SITE_HOST}   (authoritative; each region's cache: {})\n  \
             the sites: curl --cacert {} --resolve {SITE_HOST}:{}:{} https://{SITE_HOST}:{}/",
            self.metrics,
            self.auth.addr().ip(),
            self.auth.addr().port(),
            self.resolvers
                .iter()
                .map(|(r, c)| format!("{r} {}", c.addr()))
                .collect::<Vec<_>>()
                .join(", "),
            self.ca_file.display(),
            self.site_port,
            self.old.addr().ip(),
            self.site_port,
        );
    }

    async fn stop(&mut self) {
        self.client = None;
        // Probes first (they flush to the coordinator), then the coordinator.
        for (_, child) in self.children.iter_mut().rev() {
            terminate(child).await;
        }
        self.children.clear();
    }
}

/// SIGTERM (via `kill`), then SIGKILL if it has not exited within 5 s.
async fn terminate(child: &mut Child) {
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .is_ok()
        {
            return;
        }
    }
    let _ = child.kill().await;
}

fn spawn_logged(mut cmd: Command, log: &Path) -> Result<Child> {
    let file = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let err = file.try_clone()?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(file))
        .stderr(Stdio::from(err))
        .kill_on_drop(true);
    Ok(cmd.spawn()?)
}

async fn connect_admin(addr: SocketAddr, token: &str) -> Result<Admin> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(30))
        .connect()
        .await?;
    let value: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse()?;
    let intercept: Intercept = Box::new(move |mut req: tonic::Request<()>| {
        req.metadata_mut().insert("authorization", value.clone());
        Ok(req)
    });
    let mut client = AdminServiceClient::with_interceptor(channel, intercept);
    // The token is checked on the first call.
    client.status(v1::StatusRequest {}).await.map_err(rpc)?;
    Ok(client)
}

fn rpc(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("the coordinator refused: {}", s.message())
}

fn site_name() -> Result<Name> {
    Ok(Name::from_ascii(format!("{SITE_HOST}."))?)
}

fn a(ip: Ipv4Addr) -> RData {
    RData::A(ip.into())
}

fn first_words(s: &str) -> String {
    let s = s.lines().next().unwrap_or("");
    if s.chars().count() > 90 {
        format!("{}…", s.chars().take(90).collect::<String>())
    } else {
        s.to_string()
    }
}

async fn resolve(server: SocketAddr, recursive: bool) -> Option<Ipv4Addr> {
    let m = crate::dns::wire::query(
        server,
        SITE_HOST,
        RecordType::A,
        recursive,
        Duration::from_secs(2),
    )
    .await
    .ok()?;
    m.answers.iter().find_map(|r| match &r.data {
        RData::A(a) => Some(a.0),
        _ => None,
    })
}

/// Per region: the install check on old and new, and where DNS points.
fn evidence_table(st: &v1::StatusReply) -> String {
    let mut out = String::new();
    for g in &st.regions {
        let mut line = format!(
            "    {:<9} {} probe{}",
            g.region,
            g.probes_connected,
            if g.probes_connected == 1 { " " } else { "s" }
        );
        for target in ["old", "new"] {
            if let Some(c) = g
                .checks
                .iter()
                .find(|c| c.check_id == INSTALL && c.target == target)
            {
                let _ = write!(
                    line,
                    "  install {target}: {:>3} ok {:>3} failed p50 {:>4.0}ms",
                    c.samples.saturating_sub(c.failures),
                    c.failures,
                    c.p50_ms
                );
            }
        }
        if let Some(c) = g
            .checks
            .iter()
            .find(|c| c.check_id == PLAN_DNS && c.target == "dns")
        {
            let _ = write!(
                line,
                "  dns: {:.0}% old {:.0}% new",
                c.share_old * 100.0,
                c.share_new * 100.0
            );
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// The failing figures on new, per region.
fn failing_evidence(st: &v1::StatusReply) -> String {
    let mut out = String::new();
    for g in &st.regions {
        for c in &g.checks {
            if c.target == "new" && c.failures > 0 {
                let _ = writeln!(
                    out,
                    "    {} {} on new: {} of {} failed — {}",
                    g.region,
                    c.check_id,
                    c.failures,
                    c.samples,
                    first_words(&c.last_error)
                );
            }
        }
    }
    out
}

fn set_private(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

fn config_toml(
    listen: SocketAddr,
    admin: SocketAddr,
    metrics: SocketAddr,
    old: Ipv4Addr,
    new: Ipv4Addr,
    port: u16,
) -> String {
    format!(
        r#"# Written by `cutover demo`: a coordinator on loopback, plaintext.
[server]
listen = "{listen}"
admin_listen = "{admin}"
metrics_listen = "{metrics}"
public_url = "http://{listen}"
data_dir = "data"
plaintext = true
window = "6s"
heartbeat_interval = "2s"

[sites.old]
addresses = ["{old}"]
[sites.new]
addresses = ["{new}"]

[[checks]]
id = "home-page"
kind = "http"
targets = ["old", "new"]
interval = "2s"
jitter = "200ms"
timeout = "3s"
url = "https://{SITE_HOST}:{port}/"
expect_status = [200]
"#
    )
}

/// Shared by the tests of this module.
pub fn demo_plan_for_tests() -> String {
    plan_text(&PlanValues {
        old: Ipv4Addr::new(127, 100, 0, 10),
        new: Ipv4Addr::new(127, 100, 0, 11),
        site_port: 8443,
        nameserver: "127.100.0.1:5300".parse().expect("literal address"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_plan_passes_the_plan_checker_without_warnings() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tsig.secret"), "c2VjcmV0").unwrap();
        std::fs::write(dir.path().join("alert-receiver.url"), "http://127.0.0.1:1/").unwrap();
        let path = dir.path().join("demo.toml");
        std::fs::write(&path, demo_plan_for_tests()).unwrap();
        let report = crate::plan::check_file(&path).unwrap();
        assert_eq!(report.errors(), 0, "{}", report.render());
        assert_eq!(report.warnings(), 0, "{}", report.render());
        let plan = report.plan.as_ref().unwrap();
        let forward: Vec<&str> = plan.steps.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(forward, FORWARD, "FORWARD follows the plan");
        assert!(forward.contains(&FAULT_STEP));
        // The fault goes in after the guards are armed.
        let armed = plan.guards.iter().map(|g| g.armed_from.as_str());
        let at = |id: &str| forward.iter().position(|s| *s == id);
        for step in armed {
            assert!(at(step) < at(FAULT_STEP), "{step} arms after the fault");
        }
    }
}
