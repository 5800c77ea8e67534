//! The probe's configuration: command line and environment ([`Cli`]), an optional
//! TOML file with the same keys ([`FileConfig`]), merged and validated into
//! [`Config`], which the rest of the probe trusts.
//!
//! Precedence: command line / environment first, then the file. Validation
//! collects every problem before failing, so a volunteer fixes them in one go.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use clap::Parser;
use serde::Deserialize;

/// Command line of `cutover-probe` (see ARCHITECTURE.md, "Probe command line").
#[derive(Debug, Clone, Default, Parser)]
#[command(
    name = "cutover-probe",
    version,
    about = "Cutover probe: measures the old and the new site and reports to the coordinator"
)]
pub struct Cli {
    /// Coordinator URL, `https://host:port` (or `http://` for a plaintext coordinator).
    #[arg(long, env = "CUTOVER_COORDINATOR")]
    pub coordinator: Option<String>,
    /// The token printed by `cutover probe enrol`.
    #[arg(long, env = "CUTOVER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Region this probe runs in, e.g. `asia`, `australia`, `us`.
    #[arg(long, env = "CUTOVER_REGION")]
    pub region: Option<String>,
    /// Optional TOML file with the keys coordinator, token, region, resolver, ca_file.
    #[arg(long, env = "CUTOVER_PROBE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Use this resolver (`IP` or `IP:PORT`) instead of the system's /etc/resolv.conf.
    #[arg(long, env = "CUTOVER_RESOLVER")]
    pub resolver: Option<String>,
    /// Extra trusted root certificates (PEM) for the coordinator and the checked sites.
    #[arg(long, env = "CUTOVER_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Testing aid: append `seq<TAB>check<TAB>target<TAB>outcome` for every result produced.
    #[arg(long)]
    pub record_produced: Option<PathBuf>,
    /// Open the checks' connections to the sites from this local address (a
    /// machine with several; tests give every probe its own 127.x).
    #[arg(long, value_name = "IP")]
    pub source_address: Option<IpAddr>,
}

/// The optional TOML file. Unknown keys are errors: a typo must not silently
/// fall back to a default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub coordinator: Option<String>,
    pub token: Option<String>,
    pub region: Option<String>,
    pub resolver: Option<String>,
    pub ca_file: Option<PathBuf>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Coordinator URL (`http` or `https`).
    pub coordinator: String,
    pub token: String,
    pub region: String,
    /// Resolver override; `None` = system configuration.
    pub resolver: Option<SocketAddr>,
    pub ca_file: Option<PathBuf>,
    pub record_produced: Option<PathBuf>,
    /// Local address for the checks' connections; `None` = the system's choice.
    pub source_address: Option<IpAddr>,
}

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

impl FileConfig {
    /// Reads and parses `path`; errors name the file, line and column.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses TOML text that came from `path` (used in error messages only).
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let mut cfg: FileConfig = toml::from_str(text).map_err(|e| {
            let (line, column) = e
                .span()
                .map(|s| line_column(text, s.start))
                .unwrap_or((1, 1));
            ConfigError::Parse {
                path: path.to_owned(),
                line,
                column,
                message: e.message().trim().to_owned(),
            }
        })?;
        // A relative ca_file in a config file means "next to the config file",
        // not "next to wherever the probe happened to be started".
        if let (Some(ca), Some(dir)) = (&cfg.ca_file, path.parent())
            && ca.is_relative()
        {
            cfg.ca_file = Some(dir.join(ca));
        }
        Ok(cfg)
    }
}

/// 1-based line and column of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Parses `IP` or `IP:PORT` (IPv6 with port as `[::1]:53`); the port defaults to 53.
pub fn parse_resolver(s: &str) -> Option<SocketAddr> {
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa);
    }
    s.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, 53))
}

impl Config {
    /// Merges the command line with the config file it names (if any) and validates.
    pub fn load(cli: Cli) -> Result<Self, ConfigError> {
        let file = match &cli.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        Self::merge(cli, file)
    }

    /// Merges (command line wins) and validates, reporting every problem.
    pub fn merge(cli: Cli, file: FileConfig) -> Result<Self, ConfigError> {
        let mut problems = Vec::new();
        let coordinator = cli.coordinator.or(file.coordinator).unwrap_or_default();
        let token = cli.token.or(file.token).unwrap_or_default();
        let region = cli.region.or(file.region).unwrap_or_default();
        let resolver_text = cli.resolver.or(file.resolver);
        let ca_file = cli.ca_file.or(file.ca_file);

        if coordinator.is_empty() {
            problems.push(
                "no coordinator: pass --coordinator URL or set CUTOVER_COORDINATOR".to_owned(),
            );
        } else {
            match url::Url::parse(&coordinator) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                Ok(u) => problems.push(format!(
                    "coordinator {coordinator:?}: expected http:// or https:// with a host, got scheme {:?}",
                    u.scheme()
                )),
                Err(e) => problems.push(format!("coordinator {coordinator:?} is not a URL: {e}")),
            }
        }
        if token.trim().is_empty() {
            problems.push(
                "no token: pass --token TOKEN or set CUTOVER_TOKEN (from `cutover probe enrol`)"
                    .to_owned(),
            );
        } else if token.chars().any(|c| c.is_control() || c == ' ') {
            problems.push("token contains spaces or control characters".to_owned());
        }
        if region.trim().is_empty() {
            problems.push("no region: pass --region NAME or set CUTOVER_REGION".to_owned());
        }
        let resolver = match resolver_text.as_deref() {
            None | Some("") => None,
            Some(s) => {
                let parsed = parse_resolver(s);
                if parsed.is_none() {
                    problems.push(format!("resolver {s:?}: expected IP or IP:PORT"));
                }
                parsed
            }
        };
        if let Some(ca) = &ca_file
            && !ca.is_file()
        {
            problems.push(format!("ca_file {}: no such file", ca.display()));
        }
        if !problems.is_empty() {
            return Err(ConfigError::Invalid(problems));
        }
        Ok(Config {
            coordinator,
            token: token.trim().to_owned(),
            region: region.trim().to_owned(),
            resolver,
            ca_file,
            record_produced: cli.record_produced,
            source_address: cli.source_address,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_names_file_line_and_column() {
        let text = "coordinator = \"https://c:7443\"\nregoin = \"asia\"\n";
        let err = FileConfig::parse(Path::new("/etc/probe.toml"), text).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("/etc/probe.toml:2:1:"), "{msg}");
        assert!(msg.contains("regoin"), "{msg}");
    }

    #[test]
    fn file_values_fill_in_and_cli_wins() {
        let file = FileConfig::parse(
            Path::new("p.toml"),
            "coordinator = \"https://file:1\"\ntoken = \"t-file\"\nregion = \"asia\"\nresolver = \"127.0.0.53\"\n",
        )
        .unwrap();
        let cli = Cli {
            coordinator: Some("http://cli:2".into()),
            ..Cli::default()
        };
        let cfg = Config::merge(cli, file).unwrap();
        assert_eq!(cfg.coordinator, "http://cli:2");
        assert_eq!(cfg.token, "t-file");
        assert_eq!(cfg.region, "asia");
        assert_eq!(cfg.resolver, Some("127.0.0.53:53".parse().unwrap()));
    }

    #[test]
    fn validation_reports_every_problem() {
        let cli = Cli {
            coordinator: Some("ftp://x".into()),
            resolver: Some("not-an-ip".into()),
            ..Cli::default()
        };
        let msg = Config::merge(cli, FileConfig::default())
            .unwrap_err()
            .to_string();
        for needle in ["ftp", "no token", "no region", "not-an-ip"] {
            assert!(msg.contains(needle), "missing {needle:?} in {msg}");
        }
    }

    #[test]
    fn resolver_forms() {
        assert_eq!(
            parse_resolver("127.0.0.1:5353"),
            Some("127.0.0.1:5353".parse().unwrap())
        );
        assert_eq!(parse_resolver("::1"), Some("[::1]:53".parse().unwrap()));
        assert_eq!(
            parse_resolver("[::1]:54"),
            Some("[::1]:54".parse().unwrap())
        );
        assert_eq!(parse_resolver("x"), None);
    }

    #[test]
    fn cli_reads_env_names_from_contract() {
        let cli = Cli::try_parse_from([
            "cutover-probe",
            "--coordinator",
            "https://c:7443",
            "--token",
            "t",
            "--region",
            "us",
            "--resolver",
            "127.0.0.2:53",
            "--record-produced",
            "/tmp/x",
            "--source-address",
            "127.0.0.9",
        ])
        .unwrap();
        assert_eq!(cli.region.as_deref(), Some("us"));
        assert_eq!(cli.record_produced, Some(PathBuf::from("/tmp/x")));
        assert_eq!(cli.source_address, Some([127, 0, 0, 9].into()));
    }
}
