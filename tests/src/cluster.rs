//! The whole world of one test: DNS, regions, sites, coordinator and probes.
//!
//! Layout of the test's `127.N.0.0/24`:
//!
//! | host | what |
//! |---|---|
//! | `.1` | BIND, authoritative for `elm.test.` |
//! | `.2` | the coordinator (probe, admin and metrics listeners) |
//! | `.10` / `.11` | the old / new stand-in registry, same port |
//! | `.21`… | one Unbound per region, in [`REGIONS`] order |
//! | `.100`… | probes: `.100 + 10 × region index + n` ([`probe_source`]) |
//!
//! `package.elm.test` starts pointing at the old site. Probes resolve through
//! their region's Unbound (`--resolver`), connect to the sites from an address
//! of their own (`--source-address`, so a site's fault knobs can single one
//! out), trust the test CA (`--ca-file`, `SSL_CERT_FILE`) and record what they
//! produce (`--record-produced`).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail};
use cutover_proto::v1::{CheckStatus, StatusReply};

use crate::addr::AddrBlock;
use crate::admin::AdminTarget;
use crate::bind::{Bind, ZoneSpec};
use crate::procs::{Proc, cutover_bin, probe_bin, run};
use crate::prom::Sample;
use crate::registry::{Registry, archive_bytes, sha256_hex};
use crate::tls::TestCa;
use crate::unbound::Unbound;

/// The test zone.
pub const ZONE: &str = "elm.test";
/// The registry's host name, as probes and users name it.
pub const SITE_HOST: &str = "package.elm.test";
/// The simulated regions.
pub const REGIONS: [&str; 3] = ["asia", "australia", "us"];

/// Check ids in the generated coordinator config, one per kind.
pub mod checks {
    /// kind `dns`, target `dns`.
    pub const DNS: &str = "dns-package";
    /// kind `http`.
    pub const HTTP: &str = "home-page";
    /// kind `tls`.
    pub const TLS: &str = "certificate";
    /// kind `elm_package` (elm/core 1.0.5).
    pub const ELM_PACKAGE: &str = "install-core";
    /// kind `download` (elm/http 2.0.0 archive).
    pub const DOWNLOAD: &str = "download-http";
    /// kind `registry_consistency`.
    pub const CONSISTENCY: &str = "consistency";
    /// (id, kind, targets) of every check.
    pub const ALL: [(&str, &str, &[&str]); 6] = [
        (DNS, "dns", &["dns"]),
        (HTTP, "http", &["old", "new"]),
        (TLS, "tls", &["old", "new"]),
        (ELM_PACKAGE, "elm_package", &["old", "new"]),
        (DOWNLOAD, "download", &["old", "new"]),
        // Compares old with new in one run; the result's target is `new`.
        (CONSISTENCY, "registry_consistency", &["new"]),
    ];
}

/// How to build a world.
#[derive(Debug, Clone)]
pub struct Options {
    /// TTL of `package.elm.test`.
    pub ttl: u32,
    /// Interval of the `dns` check.
    pub dns_interval: String,
    /// Interval of the other checks.
    pub check_interval: String,
    /// Jitter of the other checks.
    pub jitter: String,
    /// Aggregation window of the coordinator.
    pub window: String,
    /// Serve ProbeService over TLS (else `plaintext = true`).
    pub coordinator_tls: bool,
    /// Start the coordinator and enrol and start the probes in `build`.
    pub start_probes: bool,
    /// Probes started per region (1..=10). The first of a region is keyed by
    /// the region's name in [`World::probes`], the others `REGION-2`, `REGION-3`, ….
    pub probes_per_region: u8,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            ttl: 60,
            dns_interval: "1s".into(),
            check_interval: "1s".into(),
            jitter: "300ms".into(),
            window: "30s".into(),
            coordinator_tls: true,
            start_probes: true,
            probes_per_region: 1,
        }
    }
}

/// DNS and sites only: what exists before any cutover process runs.
#[derive(Debug)]
pub struct Infra {
    /// One Unbound per region.
    pub resolvers: BTreeMap<String, Unbound>,
    /// Authoritative DNS.
    pub bind: Bind,
    /// The old site.
    pub old: Registry,
    /// The new site.
    pub new: Registry,
    /// Port both sites listen on.
    pub site_port: u16,
    /// The test CA and its PEM file.
    pub ca: TestCa,
    /// Path of the CA PEM.
    pub ca_file: PathBuf,
}

impl Infra {
    /// `https://package.elm.test:PORT`
    pub fn registry_url(&self) -> String {
        format!("https://{SITE_HOST}:{}", self.site_port)
    }
}

/// A complete world. Drop order: probes, coordinator, DNS, sites, then the
/// temp dir (kept when the test panicked) and the address block.
#[derive(Debug)]
pub struct World {
    /// Probes by region.
    pub probes: BTreeMap<String, Probe>,
    /// The coordinator.
    pub coordinator: Coordinator,
    /// DNS and sites.
    pub infra: Infra,
    /// Options it was built with.
    pub opts: Options,
    dir: Option<tempfile::TempDir>,
    /// The test's addresses.
    pub block: AddrBlock,
}

impl World {
    /// Builds everything per `opts`.
    pub async fn build(opts: Options) -> anyhow::Result<Self> {
        crate::init();
        let block = AddrBlock::acquire()?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("cutover-e2e-{}-", block.octet()))
            .tempdir()?;
        let infra = build_infra(&block, dir.path(), opts.ttl).await?;
        let coordinator = Coordinator::new(&block, dir.path(), &infra, &opts)?;
        let mut world = World {
            probes: BTreeMap::new(),
            coordinator,
            infra,
            opts,
            dir: Some(dir),
            block,
        };
        if world.opts.start_probes {
            world.start().await?;
        }
        Ok(world)
    }

    /// Starts the coordinator, then enrols and starts the probes (for worlds
    /// built with `start_probes: false`, e.g. to set fault knobs first).
    pub async fn start(&mut self) -> anyhow::Result<()> {
        self.coordinator.start(&self.block).await?;
        self.start_probes().await
    }

    /// The test's temp dir.
    pub fn dir(&self) -> &Path {
        self.dir
            .as_ref()
            .map(|d| d.path())
            .expect("the temp dir lives as long as the world")
    }

    /// Enrols `probes_per_region` probes per region and starts them, each
    /// connecting to the sites from its own address ([`probe_source`]).
    pub async fn start_probes(&mut self) -> anyhow::Result<()> {
        let per_region = self.opts.probes_per_region;
        if !(1..=10).contains(&per_region) {
            bail!("probes_per_region is {per_region}; 1..=10 fit the address layout");
        }
        for (r, region) in REGIONS.iter().enumerate() {
            for n in 0..per_region {
                let key = probe_key(region, n);
                let source = self.block.add(probe_source_host(r, n))?;
                let (id, token) = self.coordinator.enrol(region).await?;
                let produced = self.dir().join(format!("probe-{key}/produced.tsv"));
                std::fs::create_dir_all(self.dir().join(format!("probe-{key}")))?;
                let probe = Probe::start_with(
                    &key,
                    region,
                    id,
                    token,
                    &self.coordinator,
                    &self.infra,
                    &produced,
                    Some(source),
                    &self.block,
                )?;
                self.probes.insert(key, probe);
            }
        }
        Ok(())
    }

    /// The probes of `region`, in start order.
    pub fn probes_in<'a>(&'a self, region: &'a str) -> impl Iterator<Item = &'a Probe> + 'a {
        self.probes.values().filter(move |p| p.region == region)
    }

    /// Waits until every region reports `probes_per_region` connected probes.
    pub async fn wait_connected(&mut self, deadline: Duration) -> anyhow::Result<()> {
        let admin = self.coordinator.admin_target()?;
        let want = u32::from(self.opts.probes_per_region.max(1));
        crate::poll::until("every region's probes to connect", deadline, || {
            let alive = self.ensure_running();
            let admin = admin.clone();
            async move {
                alive?;
                let st = crate::admin::status(&admin).await?;
                let missing: Vec<&str> = REGIONS
                    .iter()
                    .copied()
                    .filter(|r| {
                        !st.regions
                            .iter()
                            .any(|rs| rs.region == *r && rs.probes_connected >= want)
                    })
                    .collect();
                if missing.is_empty() {
                    Ok(Some(()))
                } else {
                    bail!("not connected yet: {missing:?}")
                }
            }
        })
        .await
    }

    /// Fails if the coordinator or a probe has exited.
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        self.coordinator.ensure_running()?;
        for p in self.probes.values_mut() {
            p.proc.ensure_running()?;
        }
        Ok(())
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(dir) = self.dir.take()
        {
            let kept = dir.keep();
            eprintln!("test failed; its files are kept in {}", kept.display());
        }
    }
}

/// Key of the `n`th (from 0) probe of `region` in [`World::probes`].
pub fn probe_key(region: &str, n: u8) -> String {
    if n == 0 {
        region.to_owned()
    } else {
        format!("{region}-{}", n + 1)
    }
}

fn probe_source_host(region_index: usize, n: u8) -> u8 {
    100 + 10 * u8::try_from(region_index).expect("few regions") + n
}

/// The address the `n`th (from 0) probe of the region at `region_index` in
/// [`REGIONS`] connects to the sites from.
pub fn probe_source(block: &AddrBlock, region_index: usize, n: u8) -> Ipv4Addr {
    block.ip(probe_source_host(region_index, n))
}

/// BIND, one Unbound per region, old and new registries.
pub async fn build_infra(block: &AddrBlock, dir: &Path, ttl: u32) -> anyhow::Result<Infra> {
    let ns = block.add(1)?;
    let old_ip = block.add(10)?;
    let new_ip = block.add(11)?;
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
                Err(e) if attempt >= 5 => {
                    bail!("could not bind both sites on port {port}: {e}")
                }
                Err(_) => continue,
            }
        }
    };
    let bind = Bind::start(
        ns,
        &ZoneSpec {
            zone: ZONE.into(),
            records: vec![("package".into(), old_ip, ttl)],
        },
        &dir.join("bind"),
        block,
    )
    .await?;
    let mut resolvers = BTreeMap::new();
    for (i, region) in REGIONS.iter().enumerate() {
        let ip = block.add(21 + u8::try_from(i).expect("few regions"))?;
        let ub = Unbound::start(
            region,
            ip,
            ZONE,
            ns,
            &dir.join(format!("unbound-{region}")),
            block,
        )
        .await?;
        resolvers.insert((*region).to_owned(), ub);
    }
    Ok(Infra {
        resolvers,
        bind,
        old,
        new,
        site_port,
        ca,
        ca_file,
    })
}

/// The coordinator process and how to reach it.
#[derive(Debug)]
pub struct Coordinator {
    /// Directory holding the config (and `data/`).
    pub dir: PathBuf,
    /// The config file.
    pub config: PathBuf,
    /// ProbeService address.
    pub listen: SocketAddr,
    /// AdminService address.
    pub admin: SocketAddr,
    /// `/metrics` address.
    pub metrics: SocketAddr,
    /// ProbeService over TLS.
    pub tls: bool,
    /// The test CA's PEM file.
    pub ca_file: PathBuf,
    proc: Option<Proc>,
}

impl Coordinator {
    /// Writes the config (see ARCHITECTURE.md) for `infra`; does not start.
    pub fn new(
        block: &AddrBlock,
        dir: &Path,
        infra: &Infra,
        opts: &Options,
    ) -> anyhow::Result<Self> {
        let ip = block.add(2)?;
        let cdir = dir.join("coordinator");
        std::fs::create_dir_all(&cdir)?;
        let listen = SocketAddr::new(ip.into(), 7443);
        let admin = SocketAddr::new(ip.into(), 7444);
        let metrics = SocketAddr::new(ip.into(), 9464);
        let tls_lines = if opts.coordinator_tls {
            let leaf = infra.ca.issue(&["localhost"], &[IpAddr::V4(ip)])?;
            leaf.write(&cdir, "coordinator")?;
            "tls_cert = \"coordinator.crt.pem\"\ntls_key = \"coordinator.key.pem\"\n".to_owned()
        } else {
            "plaintext = true\n".to_owned()
        };
        let config = cdir.join("cutover.toml");
        std::fs::write(
            &config,
            config_toml(
                listen,
                admin,
                metrics,
                &tls_lines,
                infra,
                block.ip(10),
                block.ip(11),
                opts,
            ),
        )?;
        Ok(Coordinator {
            dir: cdir,
            config,
            listen,
            admin,
            metrics,
            tls: opts.coordinator_tls,
            ca_file: infra.ca_file.clone(),
            proc: None,
        })
    }

    /// The URL probes connect to.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.listen)
    }

    /// Starts `cutover serve` and waits until metrics and admin answer.
    pub async fn start(&mut self, block: &AddrBlock) -> anyhow::Result<()> {
        let mut cmd = Command::new(cutover_bin()?);
        cmd.arg("--config")
            .arg(&self.config)
            .arg("serve")
            .current_dir(&self.dir)
            .env("RUST_LOG", "info")
            // The plan engine's own HTTPS requests (gate `same_code`) trust the test CA.
            .env("SSL_CERT_FILE", &self.ca_file);
        self.proc = Some(Proc::spawn("coordinator", cmd, &self.dir, block)?);
        let metrics = self.metrics;
        let token_path = self.dir.join("data/admin.token");
        let admin = self.admin;
        crate::poll::until(
            "the coordinator to serve /metrics and AdminService",
            Duration::from_secs(30),
            || {
                let alive = self.ensure_running();
                let token_path = token_path.clone();
                async move {
                    alive?;
                    crate::prom::scrape(metrics).await?;
                    tokio::net::TcpStream::connect(admin)
                        .await
                        .context("admin port")?;
                    let token = std::fs::read_to_string(&token_path)
                        .with_context(|| format!("reading {}", token_path.display()))?;
                    Ok((!token.trim().is_empty()).then_some(()))
                }
            },
        )
        .await
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill(&mut self) {
        if let Some(p) = self.proc.as_mut() {
            p.kill();
        }
    }

    /// The running process.
    pub fn proc(&mut self) -> anyhow::Result<&mut Proc> {
        self.proc.as_mut().context("coordinator not started")
    }

    /// Fails if the coordinator was started and has exited.
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        match self.proc.as_mut() {
            Some(p) => p.ensure_running(),
            None => Ok(()),
        }
    }

    /// The admin token written on first start.
    pub fn admin_token(&self) -> anyhow::Result<String> {
        let p = self.dir.join("data/admin.token");
        Ok(std::fs::read_to_string(&p)
            .with_context(|| format!("reading {}", p.display()))?
            .trim()
            .to_owned())
    }

    /// `cutover --config FILE <args>`, to completion.
    pub async fn cli(&self, args: &[&str]) -> anyhow::Result<std::process::Output> {
        let mut cmd = tokio::process::Command::new(cutover_bin()?);
        cmd.arg("--config")
            .arg(&self.config)
            .arg("--ca-file")
            .arg(&self.ca_file)
            .args(args)
            .current_dir(&self.dir)
            .env_remove("CUTOVER_ADMIN")
            .env_remove("CUTOVER_ADMIN_TOKEN_FILE");
        run(cmd, Duration::from_secs(30)).await
    }

    /// `cutover probe enrol --region R`: returns (probe id if printed, token).
    pub async fn enrol(&self, region: &str) -> anyhow::Result<(Option<String>, String)> {
        let out = self
            .cli(&["probe", "enrol", "--region", region, "--note", "e2e"])
            .await?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "cutover probe enrol failed ({}): {stdout}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        parse_enrol(&stdout)
            .with_context(|| format!("no token in `cutover probe enrol` output: {stdout:?}"))
    }

    /// How to reach AdminService (TLS with the test CA when configured).
    pub fn admin_target(&self) -> anyhow::Result<AdminTarget> {
        Ok(AdminTarget {
            addr: self.admin,
            ca_pem: if self.tls {
                Some(std::fs::read_to_string(&self.ca_file)?)
            } else {
                None
            },
            token: self.admin_token()?,
        })
    }

    /// `AdminService.Status`.
    pub async fn status(&self) -> anyhow::Result<StatusReply> {
        crate::admin::status(&self.admin_target()?).await
    }

    /// Scraped and parsed `/metrics`.
    pub async fn metrics(&self) -> anyhow::Result<Vec<Sample>> {
        Ok(crate::prom::parse(
            &crate::prom::scrape(self.metrics).await?,
        ))
    }

    /// `data_dir/cutover.db`.
    pub fn db_path(&self) -> PathBuf {
        self.dir.join("data/cutover.db")
    }
}

/// Finds the token (and id) in `cutover probe enrol` output. Accepts
/// `token: X` / `token = X` lines, else a lone word on the last line.
pub fn parse_enrol(stdout: &str) -> Option<(Option<String>, String)> {
    let mut token = None;
    let mut id = None;
    for line in stdout.lines() {
        // "enrolled probe ID in region R"
        if let Some(rest) = line.trim().strip_prefix("enrolled probe ")
            && let Some(word) = rest.split_whitespace().next()
        {
            id = Some(word.to_owned());
        }
        let Some((k, v)) = line.split_once([':', '=']) else {
            continue;
        };
        let k = k.trim().to_ascii_lowercase();
        let v = v.trim().trim_matches('"').to_owned();
        if k.ends_with("token") {
            token = Some(v);
        } else if k == "id" || k.contains("probe id") || k.contains("probe_id") {
            id = Some(v);
        }
    }
    // The paste-ready command line: `cutover-probe … --token X …`.
    let token = token.or_else(|| {
        let words: Vec<&str> = stdout.split_whitespace().collect();
        let i = words.iter().position(|w| *w == "--token")?;
        words
            .get(i + 1)
            .map(|w| w.trim_matches(['"', '\'']).to_owned())
    });
    let token = token.or_else(|| {
        let last = stdout.lines().rev().find(|l| !l.trim().is_empty())?;
        let words: Vec<&str> = last.split_whitespace().collect();
        (words.len() == 1).then(|| words[0].to_owned())
    })?;
    Some((id, token))
}

#[allow(clippy::too_many_arguments)]
fn config_toml(
    listen: SocketAddr,
    admin: SocketAddr,
    metrics: SocketAddr,
    tls_lines: &str,
    infra: &Infra,
    old_ip: Ipv4Addr,
    new_ip: Ipv4Addr,
    opts: &Options,
) -> String {
    let base = infra.registry_url();
    let port = infra.site_port;
    let archive = archive_bytes("elm/http", "2.0.0");
    let (sha, size) = (sha256_hex(&archive), archive.len());
    let Options {
        dns_interval,
        check_interval: every,
        jitter,
        window,
        ..
    } = opts;
    let c = |id: &str, kind: &str, targets: &str, interval: &str, jitter: &str| {
        format!(
            "[[checks]]\nid = \"{id}\"\nkind = \"{kind}\"\ntargets = {targets}\n\
             interval = \"{interval}\"\njitter = \"{jitter}\"\ntimeout = \"5s\"\n"
        )
    };
    let both = r#"["old", "new"]"#;
    format!(
        r#"# Generated by the cutover-e2e harness.
[server]
listen = "{listen}"
admin_listen = "{admin}"
metrics_listen = "{metrics}"
data_dir = "data"
{tls_lines}window = "{window}"

[sites.old]
addresses = ["{old_ip}"]

[sites.new]
addresses = ["{new_ip}"]

{dns}name = "{SITE_HOST}"
record_type = "A"
system_resolver = true
authoritative_zone = "{ZONE}"

{http}url = "{base}/"
method = "GET"
expect_status = [200]
body_contains = "Elm packages"

{tls}host = "{SITE_HOST}"
port = {port}
min_days_valid = 7

{elm}registry_url = "{base}"
package = "elm/core"
version = "1.0.5"

{download}url = "{base}/archives/elm/http/2.0.0.zip"
sha256 = "{sha}"
size = {size}

{consistency}registry_url = "{base}"
"#,
        dns = c(checks::DNS, "dns", r#"["dns"]"#, dns_interval, "0s"),
        http = c(checks::HTTP, "http", both, every, jitter),
        tls = c(checks::TLS, "tls", both, every, jitter),
        elm = c(checks::ELM_PACKAGE, "elm_package", both, every, jitter),
        download = c(checks::DOWNLOAD, "download", both, every, jitter),
        consistency = c(
            checks::CONSISTENCY,
            "registry_consistency",
            both,
            every,
            jitter
        ),
    )
}

/// One line of a probe's `--record-produced` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Produced {
    /// The result's seq.
    pub seq: u64,
    /// Check id.
    pub check: String,
    /// Target label.
    pub target: String,
    /// Outcome label.
    pub outcome: String,
}

/// A running probe.
#[derive(Debug)]
pub struct Probe {
    /// Its region.
    pub region: String,
    /// Probe id, if `enrol` printed it.
    pub id: Option<String>,
    /// Its token.
    pub token: String,
    /// The `--record-produced` file.
    pub produced_file: PathBuf,
    /// The address it connects to the sites from (`--source-address`), if set.
    pub source: Option<Ipv4Addr>,
    /// The process.
    pub proc: Proc,
}

impl Probe {
    /// Starts `cutover-probe` for `region` with the region's resolver.
    pub fn start(
        region: &str,
        id: Option<String>,
        token: String,
        coordinator: &Coordinator,
        infra: &Infra,
        dir: &Path,
        block: &AddrBlock,
    ) -> anyhow::Result<Self> {
        let pdir = dir.join(format!("probe-{region}"));
        std::fs::create_dir_all(&pdir)?;
        let produced_file = pdir.join("produced.tsv");
        Self::start_recording_to(region, id, token, coordinator, infra, &produced_file, block)
    }

    /// Like [`Probe::start`], with the `--record-produced` file given (its
    /// directory also holds the output logs).
    pub fn start_recording_to(
        region: &str,
        id: Option<String>,
        token: String,
        coordinator: &Coordinator,
        infra: &Infra,
        produced_file: &Path,
        block: &AddrBlock,
    ) -> anyhow::Result<Self> {
        Self::start_with(
            region,
            region,
            id,
            token,
            coordinator,
            infra,
            produced_file,
            None,
            block,
        )
    }

    /// Starts a probe of `region`, its logs named `probe-NAME`, connecting to
    /// the sites from `source` (which must be on `lo`) when given.
    #[allow(clippy::too_many_arguments)]
    pub fn start_with(
        name: &str,
        region: &str,
        id: Option<String>,
        token: String,
        coordinator: &Coordinator,
        infra: &Infra,
        produced_file: &Path,
        source: Option<Ipv4Addr>,
        block: &AddrBlock,
    ) -> anyhow::Result<Self> {
        let pdir = produced_file
            .parent()
            .context("record file has no directory")?
            .to_path_buf();
        let produced_file = produced_file.to_path_buf();
        let resolver = infra
            .resolvers
            .get(region)
            .with_context(|| format!("no resolver for region {region}"))?
            .addr();
        let mut cmd = probe_command(
            region,
            &token,
            &coordinator.url(),
            Some(resolver),
            &infra.ca_file,
            Some(&produced_file),
        )?;
        if let Some(ip) = source {
            cmd.args(["--source-address", &ip.to_string()]);
        }
        let proc = Proc::spawn(&format!("probe-{name}"), cmd, &pdir, block)?;
        Ok(Probe {
            region: region.to_owned(),
            id,
            token,
            produced_file,
            source,
            proc,
        })
    }

    /// Every line of its `--record-produced` file so far.
    pub fn produced(&self) -> anyhow::Result<Vec<Produced>> {
        let text = std::fs::read_to_string(&self.produced_file).unwrap_or_default();
        let mut out = Vec::new();
        // The last line may be half-written while the probe runs.
        for line in text.lines().filter(|l| !l.is_empty()) {
            let f: Vec<&str> = line.split('\t').collect();
            if f.len() < 4 {
                continue;
            }
            out.push(Produced {
                seq: f[0]
                    .parse()
                    .with_context(|| format!("bad seq in {line:?}"))?,
                check: f[1].to_owned(),
                target: f[2].to_owned(),
                outcome: f[3].to_owned(),
            });
        }
        Ok(out)
    }
}

/// The probe command line for these parameters.
pub fn probe_command(
    region: &str,
    token: &str,
    coordinator_url: &str,
    resolver: Option<Ipv4Addr>,
    ca_file: &Path,
    produced: Option<&Path>,
) -> anyhow::Result<Command> {
    let mut cmd = Command::new(probe_bin()?);
    cmd.args(["--coordinator", coordinator_url])
        .args(["--token", token])
        .args(["--region", region])
        // Every test site is under the test zone, on loopback addresses.
        .args(["--allow-domain", ZONE])
        .arg("--allow-private-addresses")
        .arg("--ca-file")
        .arg(ca_file)
        .env("SSL_CERT_FILE", ca_file)
        .env("RUST_LOG", "info")
        .env("RUST_BACKTRACE", "1");
    // The probe is configured by flags alone here.
    for var in [
        "CUTOVER_TOKEN",
        "CUTOVER_TOKEN_FILE",
        "CUTOVER_COORDINATOR",
        "CUTOVER_REGION",
        "CUTOVER_RESOLVER",
        "CUTOVER_CA_FILE",
        "CUTOVER_PROBE_CONFIG",
        "CUTOVER_ALLOW_DOMAINS",
        "CUTOVER_ALLOW_ANY_DOMAIN",
        "CUTOVER_STATE_DIR",
        "STATE_DIRECTORY",
    ] {
        cmd.env_remove(var);
    }
    if let Some(r) = resolver {
        cmd.args(["--resolver", &format!("{r}:53")]);
    }
    if let Some(p) = produced {
        cmd.arg("--record-produced").arg(p);
    }
    Ok(cmd)
}

/// The figures of one (region, check, target) in a status reply.
pub fn check_status<'a>(
    st: &'a StatusReply,
    region: &str,
    check: &str,
    target: &str,
) -> Option<&'a CheckStatus> {
    st.regions
        .iter()
        .find(|r| r.region == region)?
        .checks
        .iter()
        .find(|c| c.check_id == check && c.target == target)
}

/// `cutover_*` samples carrying these exact `check`, `target` and `region` labels.
pub fn samples_for<'a>(
    samples: &'a [Sample],
    check: &str,
    target: &str,
    region: &str,
) -> Vec<&'a Sample> {
    samples
        .iter()
        .filter(|s| {
            s.name.starts_with("cutover_")
                && s.has(&[("check", check), ("target", target), ("region", region)])
        })
        .collect()
}

/// The DNS answer share of `class` (`old`, `new`, …) for `region` in
/// `/metrics`: a `cutover_*share*` sample of `check` and `region` with a label
/// whose value is `class`.
pub fn metric_share(samples: &[Sample], check: &str, region: &str, class: &str) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name.starts_with("cutover_")
                && s.name.contains("share")
                && s.has(&[("check", check), ("region", region)])
                && s.labels
                    .iter()
                    .any(|(k, v)| v == class && k != "check" && k != "region")
        })
        .map(|s| s.value)
}

/// Waits until every (region, check, target) has at least `min` samples in
/// `cutover status`; returns that reply.
pub async fn wait_all_reported(
    world: &mut World,
    min: u64,
    deadline: Duration,
) -> anyhow::Result<StatusReply> {
    let admin = world.coordinator.admin_target()?;
    crate::poll::until(
        "every check to report for every region and target",
        deadline,
        || {
            let alive = world.ensure_running();
            let admin = admin.clone();
            async move {
                alive?;
                let st = crate::admin::status(&admin).await?;
                let mut missing = Vec::new();
                for region in REGIONS {
                    for (check, _, targets) in checks::ALL {
                        for target in targets {
                            let n =
                                check_status(&st, region, check, target).map_or(0, |c| c.samples);
                            if n < min {
                                missing.push(format!("{region}/{check}/{target}={n}"));
                            }
                        }
                    }
                }
                if missing.is_empty() {
                    Ok(Some(st))
                } else {
                    bail!("too few samples: {}", missing.join(", "))
                }
            }
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::parse_enrol;

    #[test]
    fn enrol_output_forms() {
        assert_eq!(
            parse_enrol("probe id: p-1\nregion: asia\ntoken: abc123\n"),
            Some((Some("p-1".into()), "abc123".into()))
        );
        assert_eq!(parse_enrol("abc123\n"), Some((None, "abc123".into())));
        assert_eq!(
            parse_enrol("enrolled probe p-7 in region us\ntoken: cutover_ff\n(shown once)\n"),
            Some((Some("p-7".into()), "cutover_ff".into()))
        );
        assert_eq!(parse_enrol("nothing useful here\n"), None);
        assert_eq!(
            parse_enrol(
                "enrolled p-2\nrun: cutover-probe --coordinator https://c:7443 --token t0k --region us\n"
            ),
            Some((None, "t0k".into()))
        );
    }
}
