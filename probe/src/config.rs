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
///
/// Without a subcommand the probe runs. `setup` stores the settings and the
/// token (read from stdin) in the state directory, so that later runs need no
/// flags and the token never sits on a command line.
#[derive(Debug, Clone, Default, Parser)]
#[command(
    name = "cutover-probe",
    version,
    about = "Cutover probe: measures the old and the new site and reports to the coordinator"
)]
pub struct Cli {
    /// `setup`: store the settings and the token; none: run the probe.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Coordinator URL, `https://host:port` (or `http://` for a plaintext coordinator).
    #[arg(long, global = true, env = "CUTOVER_COORDINATOR")]
    pub coordinator: Option<String>,
    /// The token printed by `cutover probe enrol` (prefer `setup`, which keeps it in a file).
    #[arg(long, global = true, env = "CUTOVER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding the token (default: `token` in the state directory).
    #[arg(long, global = true, env = "CUTOVER_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Region this probe runs in, e.g. `asia`, `australia`, `us`.
    #[arg(long, global = true, env = "CUTOVER_REGION")]
    pub region: Option<String>,
    /// Check only hosts equal to or under this domain (repeatable; the
    /// environment variable takes a comma-separated list). The coordinator
    /// cannot widen this list.
    #[arg(
        long = "allow-domain",
        global = true,
        env = "CUTOVER_ALLOW_DOMAINS",
        value_name = "DOMAIN",
        value_delimiter = ','
    )]
    pub allow_domains: Vec<String>,
    /// Labs only: check whatever host the coordinator assigns (no allowlist).
    #[arg(
        long,
        global = true,
        env = "CUTOVER_ALLOW_ANY_DOMAIN",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub allow_any_domain: bool,
    /// Allow connections to loopback, private (RFC 1918), link-local, CGNAT and
    /// unique local addresses named by assignments or DNS answers (test setups).
    #[arg(
        long,
        global = true,
        env = "CUTOVER_ALLOW_PRIVATE_ADDRESSES",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub allow_private_addresses: bool,
    /// Where `setup` stores `probe.toml` and `token` and the probe reads them
    /// (default: $STATE_DIRECTORY, else $XDG_STATE_HOME/cutover-probe, else
    /// ~/.local/state/cutover-probe).
    #[arg(long, global = true, env = "CUTOVER_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Optional TOML file with the keys of `probe.toml` (default: the state directory's).
    #[arg(long, global = true, env = "CUTOVER_PROBE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Use this resolver (`IP` or `IP:PORT`) instead of the system's /etc/resolv.conf.
    #[arg(long, global = true, env = "CUTOVER_RESOLVER")]
    pub resolver: Option<String>,
    /// Extra trusted root certificates (PEM) for the coordinator and the checked sites.
    #[arg(long, global = true, env = "CUTOVER_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Testing aid: append `seq<TAB>check<TAB>target<TAB>outcome` for every result produced.
    #[arg(long)]
    pub record_produced: Option<PathBuf>,
    /// Open the checks' connections to the sites from this local address (a
    /// machine with several; tests give every probe its own 127.x).
    #[arg(long, value_name = "IP")]
    pub source_address: Option<IpAddr>,
}

/// Subcommands of `cutover-probe`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Store the settings given as flags in STATE_DIR/probe.toml and the token,
    /// read from stdin, in STATE_DIR/token (both mode 0600, the directory
    /// 0700); then start the probe with plain `cutover-probe`.
    Setup,
}

/// The optional TOML file (and the state directory's `probe.toml`, which
/// `setup` writes). Unknown keys are errors: a typo must not silently fall
/// back to a default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub coordinator: Option<String>,
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    pub region: Option<String>,
    pub allow_domains: Option<Vec<String>>,
    pub allow_any_domain: Option<bool>,
    pub allow_private_addresses: Option<bool>,
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
    /// Allowed domains, normalised; `None` only with `--allow-any-domain`.
    pub allow_domains: Option<Vec<String>>,
    /// `--allow-private-addresses`.
    pub allow_private_addresses: bool,
    /// Resolver override; `None` = system configuration.
    pub resolver: Option<SocketAddr>,
    pub ca_file: Option<PathBuf>,
    pub record_produced: Option<PathBuf>,
    /// Local address for the checks' connections; `None` = the system's choice.
    pub source_address: Option<IpAddr>,
}

impl Config {
    /// The connection rules this configuration asks for.
    pub fn policy(&self) -> crate::policy::Policy {
        match &self.allow_domains {
            Some(d) => crate::policy::Policy::new(d.clone(), self.allow_private_addresses),
            None => crate::policy::Policy::any_domain(self.allow_private_addresses),
        }
    }
}

/// Name of the settings file in the state directory.
pub const STATE_CONFIG: &str = "probe.toml";
/// Name of the token file in the state directory.
pub const STATE_TOKEN: &str = "token";

/// The state directory: `--state-dir`, else systemd's `$STATE_DIRECTORY`, else
/// `$XDG_STATE_HOME/cutover-probe`, else `~/.local/state/cutover-probe`.
pub fn state_dir(explicit: Option<&Path>) -> Option<PathBuf> {
    state_dir_from(explicit, |k| std::env::var_os(k))
}

fn state_dir_from(
    explicit: Option<&Path>,
    env: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_owned());
    }
    let set = |k: &str| env(k).filter(|v| !v.is_empty());
    if let Some(v) = set("STATE_DIRECTORY") {
        // systemd passes a colon-separated list when several are configured.
        let first = v
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or("")
            .to_owned();
        if !first.is_empty() {
            return Some(PathBuf::from(first));
        }
    }
    if let Some(v) = set("XDG_STATE_HOME") {
        return Some(PathBuf::from(v).join("cutover-probe"));
    }
    set("HOME").map(|h| PathBuf::from(h).join(".local/state/cutover-probe"))
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
        if let Some(dir) = path.parent() {
            for p in [&mut cfg.ca_file, &mut cfg.token_file]
                .into_iter()
                .flatten()
            {
                if p.is_relative() {
                    *p = dir.join(&*p);
                }
            }
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
    /// Merges the command line with the config file it names, else with the
    /// state directory's `probe.toml` if there is one, and validates. The
    /// token comes from `--token`, `--token-file`, the file, or the state
    /// directory's `token`, in that order.
    pub fn load(cli: Cli) -> Result<Self, ConfigError> {
        let dir = state_dir(cli.state_dir.as_deref());
        let mut file = match (&cli.config, &dir) {
            (Some(path), _) => FileConfig::load(path)?,
            (None, Some(dir)) if dir.join(STATE_CONFIG).is_file() => {
                FileConfig::load(&dir.join(STATE_CONFIG))?
            }
            _ => FileConfig::default(),
        };
        let token_file = cli
            .token_file
            .clone()
            .or(file.token_file.clone())
            .or_else(|| {
                dir.as_ref()
                    .map(|d| d.join(STATE_TOKEN))
                    .filter(|p| p.is_file())
            });
        if cli.token.is_none()
            && (cli.token_file.is_some() || file.token.is_none())
            && let Some(path) = token_file
        {
            file.token = Some(read_token_file(&path)?);
        }
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
        // A list on the command line replaces the file's; it never adds to it.
        let domains_raw = if cli.allow_domains.is_empty() {
            file.allow_domains.unwrap_or_default()
        } else {
            cli.allow_domains
        };
        let allow_any = cli.allow_any_domain || file.allow_any_domain.unwrap_or(false);
        let allow_private =
            cli.allow_private_addresses || file.allow_private_addresses.unwrap_or(false);

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
                "no token: run the command printed by `cutover probe enrol` (it stores the token), \
                 or pass --token-file FILE"
                    .to_owned(),
            );
        } else if token.chars().any(|c| c.is_control() || c == ' ') {
            problems.push("token contains spaces or control characters".to_owned());
        }
        if region.trim().is_empty() {
            problems.push("no region: pass --region NAME or set CUTOVER_REGION".to_owned());
        }
        let mut allow_domains = Vec::new();
        for d in domains_raw.iter().flat_map(|d| d.split(',')) {
            if d.trim().is_empty() {
                continue;
            }
            match crate::policy::normalize_domain(d) {
                Ok(d) if !allow_domains.contains(&d) => allow_domains.push(d),
                Ok(_) => {}
                Err(e) => problems.push(e),
            }
        }
        let allow_domains = match (allow_any, allow_domains.is_empty()) {
            (true, true) => None,
            (true, false) => {
                problems.push(
                    "--allow-any-domain and --allow-domain together: give one or the other"
                        .to_owned(),
                );
                None
            }
            (false, false) => Some(allow_domains),
            (false, true) => {
                problems.push(
                    "no allowed domains: the probe only checks hosts under domains you allow. \
                     Use the command printed by `cutover probe enrol` (it stores them), \
                     or pass --allow-domain DOMAIN for each (e.g. --allow-domain elm-lang.org)"
                        .to_owned(),
                );
                None
            }
        };
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
            allow_domains,
            allow_private_addresses: allow_private,
            resolver,
            ca_file,
            record_produced: cli.record_produced,
            source_address: cli.source_address,
        })
    }
}

/// Reads a token file (first line, trimmed). Warns when other users could
/// read it: `setup` writes it with mode 0600.
pub fn read_token_file(path: &Path) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                file = %path.display(),
                mode = format!("{:o}", meta.permissions().mode() & 0o777),
                "the token file is readable by other users; `chmod 600` it"
            );
        }
    }
    Ok(text.lines().next().unwrap_or("").trim().to_owned())
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
            "coordinator = \"https://file:1\"\ntoken = \"t-file\"\nregion = \"asia\"\nresolver = \"127.0.0.53\"\n\
             allow_domains = [\"elm-lang.org\", \"github.com\"]\n",
        )
        .unwrap();
        let cli = Cli {
            coordinator: Some("http://cli:2".into()),
            ..Cli::default()
        };
        let cfg = Config::merge(cli.clone(), file.clone()).unwrap();
        assert_eq!(cfg.coordinator, "http://cli:2");
        assert_eq!(cfg.token, "t-file");
        assert_eq!(cfg.region, "asia");
        assert_eq!(cfg.resolver, Some("127.0.0.53:53".parse().unwrap()));
        assert_eq!(
            cfg.allow_domains,
            Some(vec!["elm-lang.org".to_owned(), "github.com".to_owned()])
        );
        assert!(!cfg.allow_private_addresses);
        // A list on the command line replaces the file's.
        let cfg = Config::merge(
            Cli {
                allow_domains: vec!["Elm.Test".into()],
                ..cli
            },
            file,
        )
        .unwrap();
        assert_eq!(cfg.allow_domains, Some(vec!["elm.test".to_owned()]));
    }

    fn runnable() -> Cli {
        Cli {
            coordinator: Some("https://c:7443".into()),
            token: Some("t".into()),
            region: Some("asia".into()),
            ..Cli::default()
        }
    }

    #[test]
    fn without_an_allowed_domain_the_probe_refuses_to_start() {
        let msg = Config::merge(runnable(), FileConfig::default())
            .unwrap_err()
            .to_string();
        assert!(msg.contains("no allowed domains"), "{msg}");
        assert!(msg.contains("cutover probe enrol"), "{msg}");
        assert!(msg.contains("--allow-domain DOMAIN"), "{msg}");

        let lab = Config::merge(
            Cli {
                allow_any_domain: true,
                ..runnable()
            },
            FileConfig::default(),
        )
        .unwrap();
        assert_eq!(lab.allow_domains, None);

        let both = Config::merge(
            Cli {
                allow_any_domain: true,
                allow_domains: vec!["elm.test".into()],
                ..runnable()
            },
            FileConfig::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(both.contains("together"), "{both}");

        let bad = Config::merge(
            Cli {
                allow_domains: vec!["https://elm-lang.org/".into(), "*.elm.test".into()],
                ..runnable()
            },
            FileConfig::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            bad.contains("not a URL") && bad.contains("wildcard"),
            "{bad}"
        );
    }

    #[test]
    fn allow_domains_from_the_environment_are_comma_separated() {
        // clap reads the variable; the parsed value is what matters here.
        let cli = Cli::try_parse_from([
            "cutover-probe",
            "--allow-domain",
            "elm-lang.org,github.com",
            "--allow-domain",
            "elm.test",
            "--allow-private-addresses",
        ])
        .unwrap();
        assert_eq!(
            cli.allow_domains,
            vec!["elm-lang.org", "github.com", "elm.test"]
        );
        assert!(cli.allow_private_addresses);
        let cli = Cli::try_parse_from(["cutover-probe", "setup", "--region", "us"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Setup)));
        assert_eq!(cli.region.as_deref(), Some("us"));
    }

    #[test]
    fn state_dir_defaults() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            }
        };
        assert_eq!(
            state_dir_from(Some(Path::new("/x")), env(&[("HOME", "/h")])),
            Some(PathBuf::from("/x"))
        );
        assert_eq!(
            state_dir_from(
                None,
                env(&[
                    ("STATE_DIRECTORY", "/var/lib/cutover-probe:/other"),
                    ("HOME", "/h")
                ])
            ),
            Some(PathBuf::from("/var/lib/cutover-probe"))
        );
        assert_eq!(
            state_dir_from(None, env(&[("XDG_STATE_HOME", "/s"), ("HOME", "/h")])),
            Some(PathBuf::from("/s/cutover-probe"))
        );
        assert_eq!(
            state_dir_from(None, env(&[("HOME", "/h")])),
            Some(PathBuf::from("/h/.local/state/cutover-probe"))
        );
        assert_eq!(state_dir_from(None, env(&[])), None);
    }

    #[test]
    fn token_comes_from_the_state_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(STATE_CONFIG),
            "coordinator = \"https://c:7443\"\nregion = \"eu\"\nallow_domains = [\"elm.test\"]\n",
        )
        .unwrap();
        std::fs::write(dir.path().join(STATE_TOKEN), "cutover_tok\n").unwrap();
        let cfg = Config::load(Cli {
            state_dir: Some(dir.path().to_owned()),
            ..Cli::default()
        })
        .unwrap();
        assert_eq!(cfg.token, "cutover_tok");
        assert_eq!(cfg.region, "eu");
        assert_eq!(cfg.allow_domains, Some(vec!["elm.test".to_owned()]));
        // --token on the command line still wins.
        let cfg = Config::load(Cli {
            state_dir: Some(dir.path().to_owned()),
            token: Some("other".into()),
            ..Cli::default()
        })
        .unwrap();
        assert_eq!(cfg.token, "other");
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
        for needle in [
            "ftp",
            "no token",
            "no region",
            "not-an-ip",
            "no allowed domains",
        ] {
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
