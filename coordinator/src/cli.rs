//! The `cutover` command line: `serve` plus the operator commands that talk to
//! the admin service (`status`, `probes`, `probe enrol`, `probe revoke`), and
//! `plan check` / `plan dry-run`, which only read a plan file.
//!
//! CLI glue, so errors are `anyhow` with context a person can act on.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use cutover_proto::v1;
use cutover_proto::v1::admin_service_client::AdminServiceClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::{auth, config, plan, server, shutdown};

/// Command line of `cutover`.
#[derive(Debug, Parser)]
#[command(
    name = "cutover",
    version,
    about = "Move a public service to a new server by DNS, with evidence from probes"
)]
pub struct Cli {
    /// Coordinator config file (TOML).
    #[arg(long, global = true, env = "CUTOVER_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Use the embedded example config (plaintext, loopback only, data in ./cutover-data).
    #[arg(long, global = true, conflicts_with = "config")]
    pub example: bool,
    /// Admin service URL, e.g. http://127.0.0.1:7444 (default: from the config's admin_listen).
    #[arg(long, global = true, env = "CUTOVER_ADMIN", value_name = "URL")]
    pub admin: Option<String>,
    /// File holding the admin token (default: data_dir/admin.token from the config).
    #[arg(
        long,
        global = true,
        env = "CUTOVER_ADMIN_TOKEN_FILE",
        value_name = "FILE"
    )]
    pub admin_token_file: Option<PathBuf>,
    /// Extra trusted root (PEM) for an https admin URL, e.g. a private CA (default: the system roots).
    #[arg(long, global = true, env = "CUTOVER_CA_FILE", value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the coordinator (probe service, admin service, /metrics).
    Serve,
    /// The plan's progress, then evidence per region: errors, latency, DNS propagation.
    ///
    /// The plan run (step, what it waits for, per-region progress, time left, the open
    /// question), then per region: probes connected and, per check and target, samples,
    /// errors, latency and DNS propagation.
    Status {
        /// Redraw every second until interrupted (Ctrl-C): a live view of the plan and evidence.
        #[arg(long)]
        watch: bool,
    },
    /// Enrolled probes: id, region, version, connected, last seen.
    Probes,
    /// Enrol or revoke a probe.
    Probe {
        /// What to do with a probe.
        #[command(subcommand)]
        command: ProbeCommand,
    },
    /// Plan runs in the coordinator: start, approve, pause, resume, abort, rollback, history.
    #[command(flatten)]
    Run(crate::operator::RunCommand),
    /// Run everything on loopback and migrate a stand-in Elm registry twice: once to the end,
    /// once with a fault on the new site that the guards answer with the automatic fallback.
    ///
    /// Starts an authoritative DNS server (changed by the engine through its rfc2136 provider),
    /// a caching resolver per region, old and new stand-in registries, the coordinator and three
    /// probes (the `cutover-probe` binary next to this one); shows the plan live, then a summary.
    Demo(crate::demo::run::DemoArgs),
    /// Check a plan file or show what it would do (no coordinator needed).
    Plan {
        /// What to do with the plan.
        #[command(subcommand)]
        command: PlanCommand,
    },
}

/// `cutover plan …`: work on a plan file alone, touching nothing.
#[derive(Debug, Subcommand)]
pub enum PlanCommand {
    /// Report every error and risky-plan warning as FILE:LINE:COL; exit 1 on errors.
    Check {
        /// The plan file (TOML).
        file: PathBuf,
        /// Exit 1 on warnings too.
        #[arg(long)]
        deny_warnings: bool,
    },
    /// Print what the plan would do, step by step, forward then fallback; changes nothing.
    DryRun {
        /// The plan file (TOML).
        file: PathBuf,
    },
}

/// `cutover probe …`.
#[derive(Debug, Subcommand)]
pub enum ProbeCommand {
    /// Enrol a new probe and print its token (shown once) and the command to run it.
    Enrol {
        /// Region the probe reports for, e.g. asia, australia, us.
        #[arg(long)]
        region: String,
        /// Optional label, e.g. the volunteer's name.
        #[arg(long, default_value = "")]
        note: String,
        /// URL probes use to reach the coordinator (default: the config's public_url, else its listen address).
        #[arg(long, value_name = "URL")]
        coordinator_url: Option<String>,
    },
    /// Revoke a probe: its token stops working at once.
    Revoke {
        /// Probe id as shown by `cutover probes`.
        id: String,
    },
}

/// The config behind `--example`, embedded so a fresh build can run without any files.
const EXAMPLE_CONFIG: &str = include_str!("../../examples/coordinator-loopback.toml");

const EXAMPLE_HINT: &str = "\
running the embedded example config (plaintext, loopback only, data in ./cutover-data)
  enrol a probe:  cutover --example probe enrol --region asia
  evidence:       cutover --example status
  probes:         cutover --example probes
  metrics:        curl http://127.0.0.1:9464/metrics";

/// The embedded example config; relative paths resolve against the working directory.
fn example_config() -> Result<config::Config> {
    let cwd = std::env::current_dir().context("cannot read the working directory")?;
    Ok(config::parse(
        &cwd.join("cutover-example.toml"),
        EXAMPLE_CONFIG,
    )?)
}

/// Runs the parsed command.
pub async fn run(cli: Cli) -> Result<()> {
    if let Command::Demo(args) = &cli.command {
        return crate::demo::run::run(args).await;
    }
    if let Command::Plan { command } = &cli.command {
        // Plan commands read only the plan: no config, no coordinator.
        return run_plan(command);
    }
    let cfg = match &cli.config {
        Some(path) => Some(config::load(path)?),
        None if cli.example => Some(example_config()?),
        None => None,
    };
    match &cli.command {
        Command::Serve => {
            let cfg = cfg.context(
                "`cutover serve` needs --config FILE (or CUTOVER_CONFIG), or --example for the embedded one",
            )?;
            if cli.example {
                eprintln!("{EXAMPLE_HINT}");
            }
            let shutdown = shutdown::on_signals().context("cannot install signal handlers")?;
            let bound = server::bind_all(cfg, true).await?;
            bound.run(shutdown).await?;
            Ok(())
        }
        Command::Status { watch } => {
            let mut client = admin_client(&cli, cfg.as_ref()).await?;
            let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
            loop {
                let reply = client
                    .status(v1::StatusRequest {})
                    .await
                    .map_err(rpc_error)?
                    .into_inner();
                let plan = crate::operator::status_section(&mut client).await;
                if *watch && tty {
                    // Clear the screen and home the cursor: one frame per refresh.
                    print!("\x1b[2J\x1b[H");
                }
                print!("{plan}{}", render_status(&reply));
                if !*watch {
                    return Ok(());
                }
                if !tty {
                    println!();
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        Command::Run(command) => {
            let mut client = admin_client(&cli, cfg.as_ref()).await?;
            crate::operator::run(command, &mut client).await
        }
        Command::Probes => {
            let mut client = admin_client(&cli, cfg.as_ref()).await?;
            let reply = client
                .list_probes(v1::ListProbesRequest {})
                .await
                .map_err(rpc_error)?
                .into_inner();
            print!("{}", render_probes(&reply, now_ms()));
            Ok(())
        }
        Command::Probe {
            command:
                ProbeCommand::Enrol {
                    region,
                    note,
                    coordinator_url,
                },
        } => {
            let mut client = admin_client(&cli, cfg.as_ref()).await?;
            let reply = client
                .enrol_probe(v1::EnrolProbeRequest {
                    region: region.clone(),
                    note: note.clone(),
                })
                .await
                .map_err(rpc_error)?
                .into_inner();
            let url = coordinator_url
                .clone()
                .or_else(|| cfg.as_ref().map(probe_url))
                .unwrap_or_else(|| "https://COORDINATOR:7443".to_string());
            let domains = cfg.as_ref().map(|c| enrol_domains(&c.checks));
            print!("{}", render_enrolment(&reply, &url, domains.as_deref()));
            Ok(())
        }
        Command::Plan { command } => run_plan(command),
        Command::Demo(args) => crate::demo::run::run(args).await,
        Command::Probe {
            command: ProbeCommand::Revoke { id },
        } => {
            let mut client = admin_client(&cli, cfg.as_ref()).await?;
            let reply = client
                .revoke_probe(v1::RevokeProbeRequest {
                    probe_id: id.clone(),
                })
                .await
                .map_err(rpc_error)?
                .into_inner();
            if reply.was_active {
                println!("revoked probe {id}");
            } else {
                println!("probe {id} was already revoked");
            }
            Ok(())
        }
    }
}

/// `cutover plan check|dry-run`. Diagnostics and the summary go to stdout; a
/// failing check returns an error (exit 1) whose message is the summary.
fn run_plan(command: &PlanCommand) -> Result<()> {
    match command {
        PlanCommand::Check {
            file,
            deny_warnings,
        } => {
            let report = plan::check_file(file)?;
            print!("{}", report.render());
            let summary = report.summary();
            if report.errors() > 0 {
                bail!("{summary}");
            }
            if *deny_warnings && report.warnings() > 0 {
                bail!("{summary} (--deny-warnings)");
            }
            println!("{summary}: ok");
            Ok(())
        }
        PlanCommand::DryRun { file } => {
            let report = plan::check_file(file)?;
            let Some(p) = &report.plan else {
                eprint!("{}", report.render());
                bail!(
                    "{}: fix the errors first (`cutover plan check`)",
                    report.summary()
                );
            };
            print!("{}", plan::dry_run::render(p));
            if report.warnings() > 0 {
                println!();
                print!("{}", report.render());
                println!("{}", report.summary());
            }
            Ok(())
        }
    }
}

fn rpc_error(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("the coordinator refused: {} ({:?})", s.message(), s.code())
}

/// The URL a probe uses, from the config.
fn probe_url(cfg: &config::Config) -> String {
    if let Some(u) = &cfg.server.public_url {
        return u.clone();
    }
    let scheme = if cfg.server.tls.is_some() {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{}", connectable(cfg.server.listen))
}

/// An unspecified listen address (0.0.0.0) is reached via loopback locally.
fn connectable(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        let ip = if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        };
        SocketAddr::new(ip, addr.port())
    } else {
        addr
    }
}

/// Adds the admin bearer token to every call.
pub(crate) type Intercept =
    Box<dyn FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Send>;

pub(crate) type Admin =
    AdminServiceClient<tonic::service::interceptor::InterceptedService<Channel, Intercept>>;

async fn admin_client(cli: &Cli, cfg: Option<&config::Config>) -> Result<Admin> {
    let url = match (&cli.admin, cfg) {
        (Some(u), _) => u.clone(),
        (None, Some(c)) => {
            let scheme = if c.server.tls.is_some() {
                "https"
            } else {
                "http"
            };
            format!("{scheme}://{}", connectable(c.server.admin_listen))
        }
        (None, None) => bail!(
            "say where the coordinator is: --config FILE, or --admin URL with --admin-token-file FILE"
        ),
    };
    let token_file = match (&cli.admin_token_file, cfg) {
        (Some(f), _) => f.clone(),
        (None, Some(c)) => c.server.data_dir.join(auth::ADMIN_TOKEN_FILE),
        (None, None) => bail!("--admin-token-file FILE is needed without --config"),
    };
    let token = auth::read_token_file(&token_file).context(
        "cannot read the admin token (`cutover serve` creates it as data_dir/admin.token)",
    )?;
    let mut endpoint = Endpoint::from_shared(url.clone())
        .with_context(|| format!("invalid admin URL {url:?}"))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30));
    if url.starts_with("https://") {
        let mut tls = ClientTlsConfig::new().with_native_roots();
        if let Some(ca) = &cli.ca_file {
            let pem = read(ca)?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        endpoint = endpoint
            .tls_config(tls)
            .context("cannot set up TLS for the admin connection")?;
    }
    let channel = endpoint.connect().await.with_context(|| {
        format!("cannot connect to the admin service at {url}; is `cutover serve` running?")
    })?;
    let value: tonic::metadata::MetadataValue<_> = format!("Bearer {token}")
        .parse()
        .context("the admin token contains characters not allowed in a header")?;
    let intercept: Intercept = Box::new(move |mut req: tonic::Request<()>| {
        req.metadata_mut().insert("authorization", value.clone());
        Ok(req)
    });
    Ok(AdminServiceClient::with_interceptor(channel, intercept))
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

fn now_ms() -> i64 {
    crate::evidence::now_ms()
}

/// Pads columns to their widest cell; the last column is not padded.
fn table(rows: &[Vec<String>], indent: &str) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = indent.to_string();
        for (i, cell) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ", w = widths[i]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn ms(v: f64, samples: u64) -> String {
    if samples == 0 || v <= 0.0 {
        "-".into()
    } else if v < 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

/// `cutover status` output.
pub fn render_status(r: &v1::StatusReply) -> String {
    let mut out = format!(
        "config version {:016x}, window {}s\n",
        r.config_version, r.window_seconds
    );
    if r.regions.is_empty() {
        out.push_str("\nno regions yet: enrol probes with `cutover probe enrol --region R`\n");
    }
    for region in &r.regions {
        let _ = writeln!(
            out,
            "\nregion {}: {} probe{} connected",
            region.region,
            region.probes_connected,
            if region.probes_connected == 1 {
                ""
            } else {
                "s"
            }
        );
        if region.checks.is_empty() {
            out.push_str("  no results in the window\n");
            continue;
        }
        let mut rows = vec![
            [
                "CHECK",
                "TARGET",
                "SAMPLES",
                "ERRORS",
                "PROBES",
                "P50 MS",
                "P95 MS",
                "PROPAGATION",
                "LAST ERROR",
            ]
            .map(String::from)
            .to_vec(),
        ];
        for c in &region.checks {
            let errors = if c.samples == 0 {
                "-".into()
            } else {
                format!("{:.1}%", 100.0 * c.failures as f64 / c.samples as f64)
            };
            let propagation = if c.kind == "dns" {
                format!("{:.0}%", 100.0 * c.share_new)
            } else {
                "-".into()
            };
            let ok = c.samples - c.failures.min(c.samples);
            rows.push(vec![
                c.check_id.clone(),
                c.target.clone(),
                c.samples.to_string(),
                errors,
                c.distinct_probes.to_string(),
                ms(c.p50_ms, ok),
                ms(c.p95_ms, ok),
                propagation,
                c.last_error.replace('\n', " "),
            ]);
        }
        out.push_str(&table(&rows, "  "));
    }
    out
}

/// `cutover probes` output.
pub fn render_probes(r: &v1::ListProbesReply, now_ms: i64) -> String {
    if r.probes.is_empty() {
        return "no probes enrolled: `cutover probe enrol --region R` adds one\n".into();
    }
    let mut rows = vec![
        ["ID", "REGION", "VERSION", "CONNECTED", "LAST SEEN"]
            .map(String::from)
            .to_vec(),
    ];
    for p in &r.probes {
        let connected = if p.revoked {
            "revoked"
        } else if p.connected {
            "yes"
        } else {
            "no"
        };
        let last_seen = if p.last_seen_unix_ms > 0 {
            format!(
                "{} ({} ago)",
                utc(p.last_seen_unix_ms),
                ago((now_ms - p.last_seen_unix_ms).max(0))
            )
        } else {
            "never".into()
        };
        rows.push(vec![
            p.probe_id.clone(),
            p.region.clone(),
            if p.version.is_empty() {
                "-".into()
            } else {
                p.version.clone()
            },
            connected.into(),
            last_seen,
        ]);
    }
    table(&rows, "")
}

/// `cutover probe enrol` output: the token once, then the one command the
/// volunteer pastes. It pipes the token into `cutover-probe setup` (printf is
/// a shell builtin, so the token is in no process's arguments), which stores
/// it owner-only with the settings, then starts the probe. `allow_domains`
/// are the probe's allowlist (from [`enrol_domains`]); `None` when no
/// coordinator config was at hand, and the command says to fill them in.
pub fn render_enrolment(
    r: &v1::EnrolProbeReply,
    coordinator_url: &str,
    allow_domains: Option<&[String]>,
) -> String {
    let placeholder = ["DOMAIN".to_owned()];
    let domains = match allow_domains {
        Some(d) if !d.is_empty() => d,
        _ => &placeholder[..],
    };
    let mut command = format!(
        "printf '%s\\n' {token} | cutover-probe setup --coordinator {url} --region {region}",
        token = shell_word(&r.token),
        url = shell_word(coordinator_url),
        region = shell_word(&r.region),
    );
    for d in domains {
        command += &format!(" --allow-domain {}", shell_word(d));
    }
    command += " && cutover-probe";
    let mut out = format!(
        "enrolled probe {id} in region {region}\n\
         token: {token}\n\
         (shown once; only its hash is stored)\n\
         \n\
         the volunteer pastes this one command; it keeps the token in a file only they can read\n\
         (~/.local/state/cutover-probe/token) and starts the probe, which checks only hosts under\n\
         {list}\n\
         \n  {command}\n",
        id = r.probe_id,
        region = r.region,
        token = r.token,
        list = domains.join(", "),
    );
    if domains == placeholder {
        out += "\nreplace DOMAIN with the domains of the checked sites (one --allow-domain each); \
                pass --config to have them filled in from the coordinator's checks\n";
    }
    out += "\nlater runs need only `cutover-probe`; systemd and Docker set-ups are in docs/volunteers.md\n";
    out
}

/// The probe allowlist for these checks: every host they name (DNS names and
/// zones, URL and TLS hosts), minus those under another one listed. An
/// `elm_package` check adds github.com: the real registry's `endpoint.json`
/// points at GitHub zipballs (REGISTRY.md), and a probe fetches nothing
/// outside its allowlist.
pub fn enrol_domains(checks: &[config::CheckConfig]) -> Vec<String> {
    use config::CheckParams as P;
    // The config already insisted on http(s)://HOST[:PORT]/…; take the HOST.
    let url_host = |u: &str| {
        let rest = u.split_once("://").map_or(u, |(_, r)| r);
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let host = match host_port.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(""),
            None => host_port.split(':').next().unwrap_or(""),
        };
        Some(host.to_owned())
    };
    let mut hosts: Vec<String> = Vec::new();
    for c in checks {
        match &c.params {
            P::Dns {
                name,
                authoritative_zone,
                ..
            } => {
                hosts.push(name.clone());
                hosts.push(authoritative_zone.clone());
            }
            P::Http { url, .. } | P::Download { url, .. } => hosts.extend(url_host(url)),
            P::Tls { host, .. } => hosts.push(host.clone()),
            P::ElmPackage { registry_url, .. } => {
                hosts.extend(url_host(registry_url));
                hosts.push("github.com".into());
            }
            P::RegistryConsistency { registry_url } => hosts.extend(url_host(registry_url)),
        }
    }
    let mut hosts: Vec<String> = hosts
        .into_iter()
        .map(|h| h.trim().trim_end_matches('.').to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .collect();
    hosts.sort();
    hosts.dedup();
    let under = |h: &str, d: &str| {
        h.len() > d.len() && h.ends_with(d) && h[..h.len() - d.len()].ends_with('.')
    };
    let kept: Vec<String> = hosts
        .iter()
        .filter(|h| !hosts.iter().any(|d| under(h, d)))
        .cloned()
        .collect();
    kept
}

/// `s` as one POSIX shell word: unchanged when it is plainly safe, else in single quotes.
fn shell_word(s: &str) -> String {
    let safe = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.,:/@%+=".contains(&b));
    if safe {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

fn ago(ms: i64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a Unix time in milliseconds.
pub fn utc(unix_ms: i64) -> String {
    let secs = unix_ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formatting() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_795_770_245_000), "2026-11-27T09:04:05Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn status_table() {
        let reply = v1::StatusReply {
            window_seconds: 60,
            config_version: 0xabc,
            regions: vec![v1::RegionStatus {
                region: "asia".into(),
                probes_connected: 2,
                checks: vec![
                    v1::CheckStatus {
                        check_id: "install-core".into(),
                        kind: "elm_package".into(),
                        target: "new".into(),
                        samples: 20,
                        failures: 1,
                        distinct_probes: 2,
                        p50_ms: 45.2,
                        p95_ms: 120.0,
                        last_error: "timeout".into(),
                        ..Default::default()
                    },
                    v1::CheckStatus {
                        check_id: "www".into(),
                        kind: "dns".into(),
                        target: "dns".into(),
                        samples: 4,
                        distinct_probes: 2,
                        p50_ms: 3.0,
                        p95_ms: 5.0,
                        share_new: 0.5,
                        ..Default::default()
                    },
                ],
            }],
        };
        let text = render_status(&reply);
        let expected = "\
config version 0000000000000abc, window 60s

region asia: 2 probes connected
  CHECK         TARGET  SAMPLES  ERRORS  PROBES  P50 MS  P95 MS  PROPAGATION  LAST ERROR
  install-core  new     20       5.0%    2       45      120     -            timeout
  www           dns     4        0.0%    2       3.0     5.0     50%
";
        assert_eq!(text, expected);
    }

    #[test]
    fn enrol_output_has_the_command() {
        let reply = v1::EnrolProbeReply {
            probe_id: "asia-1234abcd".into(),
            region: "asia".into(),
            token: "cutover_ff".into(),
        };
        let domains = vec!["elm-lang.org".to_owned(), "github.com".to_owned()];
        let text = render_enrolment(&reply, "https://probes.example.org:7443", Some(&domains));
        assert!(text.contains("token: cutover_ff\n"));
        assert!(text.contains(
            "\n  printf '%s\\n' cutover_ff | cutover-probe setup --coordinator https://probes.example.org:7443 \
             --region asia --allow-domain elm-lang.org --allow-domain github.com && cutover-probe\n"
        ), "{text}");
        assert!(
            text.contains("checks only hosts under\nelm-lang.org, github.com\n"),
            "{text}"
        );
        assert!(!text.contains("DOMAIN"), "{text}");

        let text = render_enrolment(&reply, "https://probes.example.org:7443", None);
        assert!(
            text.contains("--allow-domain DOMAIN && cutover-probe\n"),
            "{text}"
        );
        assert!(text.contains("replace DOMAIN"), "{text}");
        assert_eq!(shell_word("it's"), "'it'\\''s'");
    }

    #[test]
    fn enrol_domains_come_from_the_checks() {
        let cfg = config::parse(
            std::path::Path::new("c.toml"),
            include_str!("../../examples/coordinator.toml"),
        )
        .unwrap();
        // package.elm-lang.org is under elm-lang.org; the Elm check's archives are on GitHub.
        assert_eq!(
            enrol_domains(&cfg.checks),
            vec!["elm-lang.org", "github.com"]
        );
    }

    #[test]
    fn probes_table() {
        let now = 1_795_770_245_000;
        let text = render_probes(
            &v1::ListProbesReply {
                probes: vec![v1::ProbeInfo {
                    probe_id: "asia-1".into(),
                    region: "asia".into(),
                    version: "0.1.0".into(),
                    connected: true,
                    last_seen_unix_ms: now - 12_000,
                    ..Default::default()
                }],
            },
            now,
        );
        assert_eq!(
            text,
            "ID      REGION  VERSION  CONNECTED  LAST SEEN\nasia-1  asia    0.1.0    yes        2026-11-27T09:03:53Z (12s ago)\n"
        );
    }
}
