//! The coordinator's configuration file (`cutover serve --config FILE`).
//!
//! Parsing happens in two stages. [`raw`] mirrors the TOML exactly (serde,
//! `deny_unknown_fields`, every value we check later wrapped in
//! [`toml::Spanned`] so its position is known); [`parse`] turns it into a
//! [`Config`] the rest of the program trusts, collecting *every* problem with
//! its line and column instead of stopping at the first. The format is the
//! contract in `ARCHITECTURE.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

/// A problem found in the config file, with its position (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line of the offending value.
    pub line: usize,
    /// 1-based column (in characters) of the offending value.
    pub column: usize,
    /// What is wrong and what is expected instead.
    pub message: String,
}

/// Why a config file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file we tried to read.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The file was read but is not a valid configuration.
    #[error("{}", render_problems(path, problems))]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// Every problem found, in file order.
        problems: Vec<Problem>,
    },
}

fn render_problems(path: &Path, problems: &[Problem]) -> String {
    let mut out = format!(
        "invalid config file {} ({} problem{}):",
        path.display(),
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    for p in problems {
        out.push_str(&format!(
            "\n  {}:{}:{}: {}",
            path.display(),
            p.line,
            p.column,
            p.message
        ));
    }
    out
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from (relative paths inside are resolved against its folder).
    pub path: PathBuf,
    /// Listeners, storage, TLS, windows.
    pub server: ServerConfig,
    /// The old site's addresses.
    pub old: SiteConfig,
    /// The new site's addresses.
    pub new: SiteConfig,
    /// The checks probes run, in file order; ids are unique.
    pub checks: Vec<CheckConfig>,
}

/// `[server]`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where probes connect (ProbeService).
    pub listen: SocketAddr,
    /// Where the operator CLI connects (AdminService).
    pub admin_listen: SocketAddr,
    /// Where Prometheus scrapes `/metrics`; `None` = no metrics listener.
    pub metrics_listen: Option<SocketAddr>,
    /// Holds `cutover.db` and `admin.token`.
    pub data_dir: PathBuf,
    /// Certificate and key; `None` only when `plaintext = true` was written.
    pub tls: Option<TlsFiles>,
    /// Length of the aggregation window (whole seconds).
    pub window: Duration,
    /// How often probes should send a heartbeat.
    pub heartbeat_interval: Duration,
    /// Largest `ResultBatch` accepted, in results.
    pub max_batch_results: u32,
    /// URL volunteers' probes use to reach `listen`, printed by `cutover probe enrol`.
    pub public_url: Option<String>,
    /// Stored result batches older than this are deleted.
    pub retention: Duration,
}

/// PEM files for the listeners' TLS.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
}

/// `[sites.old]` / `[sites.new]`.
#[derive(Debug, Clone, Hash)]
pub struct SiteConfig {
    /// Addresses requests for this target are pinned to.
    pub addresses: Vec<IpAddr>,
}

/// Which site a check result is about (configs use `old`, `new`, `dns`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TargetName {
    /// Pinned to the old site.
    Old,
    /// Pinned to the new site.
    New,
    /// Whatever the resolver answers.
    Dns,
}

impl TargetName {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "old" => Some(Self::Old),
            "new" => Some(Self::New),
            "dns" => Some(Self::Dns),
            _ => None,
        }
    }

    /// The config/metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Old => "old",
            Self::New => "new",
            Self::Dns => "dns",
        }
    }
}

/// One `[[checks]]` entry.
#[derive(Debug, Clone, Hash)]
pub struct CheckConfig {
    /// Unique id, used as the `check` metric label.
    pub id: String,
    /// Targets run back-to-back on each tick.
    pub targets: Vec<TargetName>,
    /// Time between runs.
    pub interval: Duration,
    /// Random delay added to each run, at most this.
    pub jitter: Duration,
    /// Per-run timeout.
    pub timeout: Duration,
    /// Kind and kind-specific parameters.
    pub params: CheckParams,
}

/// Kind-specific parameters of a check.
#[derive(Debug, Clone, Hash)]
pub enum CheckParams {
    /// `kind = "dns"`.
    Dns {
        /// Name to resolve.
        name: String,
        /// `A` or `AAAA`.
        record_type: String,
        /// Query the probe's own resolver.
        system_resolver: bool,
        /// Extra resolvers, `ip` or `ip:port`.
        resolvers: Vec<String>,
        /// Zone whose authoritative servers are queried; empty = none.
        authoritative_zone: String,
    },
    /// `kind = "http"`.
    Http {
        /// URL to request.
        url: String,
        /// HTTP method.
        method: String,
        /// Acceptable status codes.
        expect_status: Vec<u32>,
        /// Body must contain this; empty = not checked.
        body_contains: String,
        /// Body must match this regex; empty = not checked.
        body_regex: String,
        /// Response headers that must equal these values.
        expect_headers: BTreeMap<String, String>,
        /// Extra request headers.
        headers: BTreeMap<String, String>,
    },
    /// `kind = "tls"`.
    Tls {
        /// Host name the certificate must be valid for.
        host: String,
        /// Port.
        port: u16,
        /// Fail when the certificate expires within this many days.
        min_days_valid: u32,
    },
    /// `kind = "elm_package"`.
    ElmPackage {
        /// Registry base URL.
        registry_url: String,
        /// `author/name`.
        package: String,
        /// A version or `latest`.
        version: String,
    },
    /// `kind = "download"`.
    Download {
        /// URL to download.
        url: String,
        /// Expected SHA-256, lowercase hex; empty = not checked.
        sha256: String,
        /// Expected size; 0 = not checked.
        size: u64,
    },
    /// `kind = "registry_consistency"`.
    RegistryConsistency {
        /// Registry base URL (requested from old and new).
        registry_url: String,
    },
}

impl CheckParams {
    /// The kind name as written in the config and sent to probes.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Dns { .. } => "dns",
            Self::Http { .. } => "http",
            Self::Tls { .. } => "tls",
            Self::ElmPackage { .. } => "elm_package",
            Self::Download { .. } => "download",
            Self::RegistryConsistency { .. } => "registry_consistency",
        }
    }
}

/// The TOML as written. Nothing here is trusted yet.
pub mod raw {
    use super::*;
    use serde::Deserialize;

    /// The whole file.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct RawConfig {
        /// `[server]`.
        pub server: Spanned<RawServer>,
        /// `[sites]`.
        pub sites: RawSites,
        /// `[[checks]]`.
        #[serde(default)]
        pub checks: Vec<Spanned<RawCheck>>,
    }

    /// `[server]`.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct RawServer {
        pub listen: Option<Spanned<String>>,
        pub admin_listen: Option<Spanned<String>>,
        pub metrics_listen: Option<Spanned<String>>,
        pub data_dir: Option<Spanned<String>>,
        pub tls_cert: Option<Spanned<String>>,
        pub tls_key: Option<Spanned<String>>,
        pub plaintext: Option<Spanned<bool>>,
        pub window: Option<Spanned<String>>,
        pub heartbeat_interval: Option<Spanned<String>>,
        pub max_batch_results: Option<Spanned<i64>>,
        pub public_url: Option<Spanned<String>>,
        pub retention: Option<Spanned<String>>,
    }

    /// `[sites]`.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct RawSites {
        pub old: RawSite,
        pub new: RawSite,
    }

    /// `[sites.old]`, `[sites.new]`.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct RawSite {
        pub addresses: Spanned<Vec<Spanned<String>>>,
    }

    /// One `[[checks]]` table: common keys plus the union of every kind's keys;
    /// validation rejects keys that do not belong to the check's kind.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct RawCheck {
        pub id: Option<Spanned<String>>,
        pub kind: Option<Spanned<String>>,
        pub targets: Option<Spanned<Vec<Spanned<String>>>>,
        pub interval: Option<Spanned<String>>,
        pub jitter: Option<Spanned<String>>,
        pub timeout: Option<Spanned<String>>,
        // dns
        pub name: Option<Spanned<String>>,
        pub record_type: Option<Spanned<String>>,
        pub system_resolver: Option<Spanned<bool>>,
        pub resolvers: Option<Spanned<Vec<Spanned<String>>>>,
        pub authoritative_zone: Option<Spanned<String>>,
        // http
        pub url: Option<Spanned<String>>,
        pub method: Option<Spanned<String>>,
        pub expect_status: Option<Spanned<Vec<Spanned<i64>>>>,
        pub body_contains: Option<Spanned<String>>,
        pub body_regex: Option<Spanned<String>>,
        pub expect_headers: Option<Spanned<BTreeMap<String, String>>>,
        pub headers: Option<Spanned<BTreeMap<String, String>>>,
        // tls
        pub host: Option<Spanned<String>>,
        pub port: Option<Spanned<i64>>,
        pub min_days_valid: Option<Spanned<i64>>,
        // elm_package, registry_consistency
        pub registry_url: Option<Spanned<String>>,
        pub package: Option<Spanned<String>>,
        pub version: Option<Spanned<String>>,
        // download
        pub sha256: Option<Spanned<String>>,
        pub size: Option<Spanned<i64>>,
    }
}

use raw::{RawCheck, RawConfig};

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &text)
}

/// Parses and validates config text; `path` names the file in errors and anchors relative paths.
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
        ConfigError::Invalid {
            path: path.to_path_buf(),
            problems: vec![Problem {
                line,
                column,
                message: e.message().trim().to_string(),
            }],
        }
    })?;
    let mut v = Validator {
        text,
        problems: Vec::new(),
    };
    let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let config = v.config(path, &base, raw);
    if v.problems.is_empty() {
        // The validator only returns None after recording a problem.
        config.ok_or_else(|| ConfigError::Invalid {
            path: path.to_path_buf(),
            problems: vec![],
        })
    } else {
        v.problems.sort_by_key(|p| (p.line, p.column));
        Err(ConfigError::Invalid {
            path: path.to_path_buf(),
            problems: v.problems,
        })
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Parses a duration such as `10s`, `500ms`, `2m`, `1h`, `7d` or `1m30s`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let d = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.checked_mul(60)?),
            "h" => Duration::from_secs(n.checked_mul(3600)?),
            "d" => Duration::from_secs(n.checked_mul(86_400)?),
            _ => return None,
        };
        total = total.checked_add(d)?;
    }
    Some(total)
}

const DURATION_HINT: &str =
    "expected a number followed by ms, s, m or h, e.g. \"10s\" or \"1m30s\"";

const COMMON_KEYS: &[&str] = &["id", "kind", "targets", "interval", "jitter", "timeout"];

fn kind_keys(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "dns" => &[
            "name",
            "record_type",
            "system_resolver",
            "resolvers",
            "authoritative_zone",
        ],
        "http" => &[
            "url",
            "method",
            "expect_status",
            "body_contains",
            "body_regex",
            "expect_headers",
            "headers",
        ],
        "tls" => &["host", "port", "min_days_valid"],
        "elm_package" => &["registry_url", "package", "version"],
        "download" => &["url", "sha256", "size"],
        "registry_consistency" => &["registry_url"],
        _ => return None,
    })
}

const KINDS: &str = "dns, http, tls, elm_package, download, registry_consistency";

/// Collects problems while turning raw TOML into trusted values; shared with
/// the plan parser (`crate::plan`), which embeds sites and checks.
pub(crate) struct Validator<'a> {
    pub(crate) text: &'a str,
    pub(crate) problems: Vec<Problem>,
}

impl Validator<'_> {
    pub(crate) fn problem(&mut self, span: Range<usize>, message: impl Into<String>) {
        let (line, column) = line_col(self.text, span.start);
        self.problems.push(Problem {
            line,
            column,
            message: message.into(),
        });
    }

    pub(crate) fn duration(&mut self, key: &str, v: &Spanned<String>) -> Option<Duration> {
        match parse_duration(v.get_ref()) {
            Some(d) => Some(d),
            None => {
                self.problem(
                    v.span(),
                    format!(
                        "`{key}`: invalid duration {:?}: {DURATION_HINT}",
                        v.get_ref()
                    ),
                );
                None
            }
        }
    }

    fn socket_addr(&mut self, key: &str, v: &Spanned<String>) -> Option<SocketAddr> {
        match v.get_ref().parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.problem(
                    v.span(),
                    format!(
                        "`{key}`: invalid address {:?}: expected IP:PORT, e.g. \"127.0.0.1:7444\" or \"[::1]:7444\"",
                        v.get_ref()
                    ),
                );
                None
            }
        }
    }

    fn config(&mut self, path: &Path, base: &Path, raw: RawConfig) -> Option<Config> {
        let server_span = raw.server.span();
        let server = self.server(base, server_span, raw.server.into_inner());
        let old = self.site("old", raw.sites.old);
        let new = self.site("new", raw.sites.new);
        let checks = self.checks(raw.checks);
        Some(Config {
            path: path.to_path_buf(),
            server: server?,
            old: old?,
            new: new?,
            checks,
        })
    }

    /// Validates `[[checks]]`: each entry, and that ids are unique.
    pub(crate) fn checks(&mut self, raw: Vec<Spanned<RawCheck>>) -> Vec<CheckConfig> {
        let mut checks = Vec::new();
        let mut seen: BTreeMap<String, Range<usize>> = BTreeMap::new();
        for check in raw {
            let span = check.span();
            if let Some(id) = check.get_ref().id.as_ref() {
                if seen.contains_key(id.get_ref()) {
                    let first = seen[id.get_ref()].clone();
                    let (line, _) = line_col(self.text, first.start);
                    self.problem(
                        id.span(),
                        format!(
                            "duplicate check id {:?} (first defined on line {line}); ids must be unique",
                            id.get_ref()
                        ),
                    );
                } else {
                    seen.insert(id.get_ref().clone(), id.span());
                }
            }
            if let Some(c) = self.check(span, check.into_inner()) {
                checks.push(c);
            }
        }
        checks
    }

    fn server(
        &mut self,
        base: &Path,
        table: Range<usize>,
        s: raw::RawServer,
    ) -> Option<ServerConfig> {
        let mut ok = true;
        let listen = match &s.listen {
            Some(v) => self.socket_addr("listen", v),
            None => Some(SocketAddr::from(([0, 0, 0, 0], 7443))),
        };
        let admin_listen = match &s.admin_listen {
            Some(v) => self.socket_addr("admin_listen", v),
            None => Some(SocketAddr::from(([127, 0, 0, 1], 7444))),
        };
        let metrics_listen = match &s.metrics_listen {
            Some(v) => self.socket_addr("metrics_listen", v).map(Some),
            None => Some(None),
        };
        let data_dir = base.join(s.data_dir.as_ref().map_or("data", |d| d.get_ref().as_str()));

        let plaintext = s.plaintext.as_ref().map(|p| *p.get_ref());
        let tls = match (&s.tls_cert, &s.tls_key) {
            (Some(c), Some(k)) => Some(TlsFiles {
                cert: base.join(c.get_ref()),
                key: base.join(k.get_ref()),
            }),
            (Some(c), None) => {
                self.problem(
                    c.span(),
                    "`tls_cert` is set but `tls_key` is not: set both (TLS) or neither (with `plaintext = true`)",
                );
                ok = false;
                None
            }
            (None, Some(k)) => {
                self.problem(
                    k.span(),
                    "`tls_key` is set but `tls_cert` is not: set both (TLS) or neither (with `plaintext = true`)",
                );
                ok = false;
                None
            }
            (None, None) => None,
        };
        match (&s.plaintext, plaintext, tls.is_some()) {
            (Some(p), Some(true), true) => {
                self.problem(
                    p.span(),
                    "`plaintext = true` contradicts `tls_cert`/`tls_key`: remove one or the other",
                );
                ok = false;
            }
            (_, Some(true), false) => {
                if let (Some(admin), Some(raw_admin)) = (admin_listen, &s.admin_listen)
                    && !admin.ip().is_loopback()
                {
                    self.problem(
                        raw_admin.span(),
                        format!(
                            "`admin_listen` {admin} is not a loopback address, so the admin service needs TLS: set `tls_cert` and `tls_key`, or listen on 127.0.0.1"
                        ),
                    );
                    ok = false;
                }
            }
            (_, _, true) => {}
            (p, _, false) if ok => {
                // Plaintext must be a decision someone wrote down, never a default.
                let span = p.as_ref().map_or(table.clone(), |p| p.span());
                self.problem(
                    span,
                    "no TLS configured: set `tls_cert` and `tls_key` in [server], or write `plaintext = true` to run without TLS (trusted networks and tests only)",
                );
                ok = false;
            }
            _ => {}
        }

        let window = match &s.window {
            Some(v) => self.duration("window", v).and_then(|d| {
                if d < Duration::from_secs(1)
                    || d > Duration::from_secs(3600)
                    || d.subsec_nanos() != 0
                {
                    self.problem(
                        v.span(),
                        format!(
                            "`window` {:?}: expected whole seconds between 1s and 1h",
                            v.get_ref()
                        ),
                    );
                    None
                } else {
                    Some(d)
                }
            }),
            None => Some(Duration::from_secs(60)),
        };
        let heartbeat_interval = match &s.heartbeat_interval {
            Some(v) => self.duration("heartbeat_interval", v).and_then(|d| {
                if d < Duration::from_millis(100) || d > Duration::from_secs(600) {
                    self.problem(
                        v.span(),
                        "`heartbeat_interval`: expected between 100ms and 10m",
                    );
                    None
                } else {
                    Some(d)
                }
            }),
            None => Some(Duration::from_secs(15)),
        };
        let max_batch_results = match &s.max_batch_results {
            Some(v) if (1..=100_000).contains(v.get_ref()) => Some(*v.get_ref() as u32),
            Some(v) => {
                self.problem(
                    v.span(),
                    format!(
                        "`max_batch_results` = {}: expected a number between 1 and 100000",
                        v.get_ref()
                    ),
                );
                None
            }
            None => Some(1000),
        };
        let public_url = match &s.public_url {
            Some(v) if is_http_url(v.get_ref()) => {
                Some(v.get_ref().trim_end_matches('/').to_string())
            }
            Some(v) => {
                self.problem(
                    v.span(),
                    format!(
                        "`public_url` {:?}: expected an https:// (or http://) URL, e.g. \"https://probes.example.org:7443\"",
                        v.get_ref()
                    ),
                );
                None
            }
            None => None,
        };
        let retention = match &s.retention {
            Some(v) => self.duration("retention", v).and_then(|d| {
                let min = window.unwrap_or(Duration::from_secs(60));
                if d < min {
                    self.problem(
                        v.span(),
                        format!(
                            "`retention` {:?} is shorter than the window ({}s): the windows are rebuilt from stored results after a restart",
                            v.get_ref(),
                            min.as_secs()
                        ),
                    );
                    None
                } else {
                    Some(d)
                }
            }),
            None => Some(Duration::from_secs(7 * 86_400)),
        };
        if !ok {
            return None;
        }
        Some(ServerConfig {
            retention: retention?,
            listen: listen?,
            admin_listen: admin_listen?,
            metrics_listen: metrics_listen?,
            data_dir,
            tls,
            window: window?,
            heartbeat_interval: heartbeat_interval?,
            max_batch_results: max_batch_results?,
            public_url: if s.public_url.is_some() {
                Some(public_url?)
            } else {
                None
            },
        })
    }

    pub(crate) fn site(&mut self, name: &str, s: raw::RawSite) -> Option<SiteConfig> {
        let mut addresses = Vec::new();
        let mut ok = true;
        if s.addresses.get_ref().is_empty() {
            self.problem(
                s.addresses.span(),
                format!("`sites.{name}.addresses` is empty: list at least one IP address"),
            );
            ok = false;
        }
        for a in s.addresses.get_ref() {
            match a.get_ref().parse::<IpAddr>() {
                Ok(ip) => addresses.push(ip),
                Err(_) => {
                    self.problem(
                        a.span(),
                        format!(
                            "`sites.{name}.addresses`: {:?} is not an IP address (expected e.g. \"203.0.113.10\" or \"2001:db8::1\")",
                            a.get_ref()
                        ),
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(SiteConfig { addresses })
    }

    fn check(&mut self, span: Range<usize>, c: RawCheck) -> Option<CheckConfig> {
        let id = match &c.id {
            Some(id) => {
                let valid = !id.get_ref().is_empty()
                    && id.get_ref().len() <= 64
                    && id.get_ref().chars().all(|ch| {
                        ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-' || ch == '_'
                    });
                if !valid {
                    self.problem(
                        id.span(),
                        format!(
                            "check id {:?}: expected 1-64 characters from a-z, 0-9, '-' and '_'",
                            id.get_ref()
                        ),
                    );
                }
                valid.then(|| id.get_ref().clone())
            }
            None => {
                self.problem(span.clone(), "check is missing `id`");
                None
            }
        };
        let label = id.clone().unwrap_or_else(|| "?".into());
        let Some(kind) = &c.kind else {
            self.problem(
                span,
                format!("check {label:?} is missing `kind` (one of {KINDS})"),
            );
            return None;
        };
        let Some(allowed) = kind_keys(kind.get_ref()) else {
            self.problem(
                kind.span(),
                format!(
                    "check {label:?}: unknown kind {:?}; expected one of {KINDS}",
                    kind.get_ref()
                ),
            );
            return None;
        };
        let kind_name = kind.get_ref().as_str();

        // Keys that belong to other kinds are a mistake, not something to ignore.
        let present = present_keys(&c);
        let mut ok = true;
        for (key, key_span) in &present {
            if !COMMON_KEYS.contains(key) && !allowed.contains(key) {
                self.problem(
                    key_span.clone(),
                    format!(
                        "check {label:?}: `{key}` is not a key of a `{kind_name}` check; its keys are: {}",
                        allowed.join(", ")
                    ),
                );
                ok = false;
            }
        }
        let require = |v: &mut Self, key: &str, present: bool| {
            if !present {
                v.problem(
                    span.clone(),
                    format!("check {label:?}: a `{kind_name}` check needs `{key}`"),
                );
            }
            present
        };

        let default_targets: &[TargetName] = if kind_name == "dns" {
            &[TargetName::Dns]
        } else {
            &[TargetName::Old, TargetName::New]
        };
        let mut targets = Vec::new();
        match &c.targets {
            None => targets.extend_from_slice(default_targets),
            Some(ts) => {
                if ts.get_ref().is_empty() {
                    self.problem(
                        ts.span(),
                        "`targets` is empty: expected some of \"old\", \"new\", \"dns\"",
                    );
                    ok = false;
                }
                for t in ts.get_ref() {
                    match TargetName::parse(t.get_ref()) {
                        Some(tn) if kind_name == "dns" && tn != TargetName::Dns => {
                            self.problem(
                                t.span(),
                                "a `dns` check queries resolvers, so its only target is \"dns\"",
                            );
                            ok = false;
                        }
                        Some(tn) if targets.contains(&tn) => {
                            self.problem(
                                t.span(),
                                format!("target {:?} is listed twice", t.get_ref()),
                            );
                            ok = false;
                        }
                        Some(tn) => targets.push(tn),
                        None => {
                            self.problem(
                                t.span(),
                                format!(
                                    "unknown target {:?}: expected \"old\", \"new\" or \"dns\"",
                                    t.get_ref()
                                ),
                            );
                            ok = false;
                        }
                    }
                }
            }
        }

        let interval = match &c.interval {
            Some(v) => self.duration("interval", v),
            None => Some(Duration::from_secs(30)),
        };
        let jitter = match &c.jitter {
            Some(v) => self.duration("jitter", v),
            None => Some(Duration::ZERO),
        };
        let timeout = match &c.timeout {
            Some(v) => self.duration("timeout", v),
            None => Some(Duration::from_secs(10)),
        };
        if let (Some(i), Some(v)) = (interval, &c.interval)
            && (i < Duration::from_millis(100) || i > Duration::from_secs(86_400))
        {
            self.problem(v.span(), "`interval`: expected between 100ms and 24h");
            ok = false;
        }
        if let (Some(i), Some(j), Some(v)) = (interval, jitter, &c.jitter)
            && j >= i
        {
            self.problem(v.span(), "`jitter` must be shorter than `interval`");
            ok = false;
        }
        if let (Some(t), Some(v)) = (timeout, &c.timeout)
            && (t.is_zero() || t > Duration::from_secs(3600))
        {
            self.problem(v.span(), "`timeout`: expected between 1ms and 1h");
            ok = false;
        }

        let s = |v: &Option<Spanned<String>>| {
            v.as_ref().map(|v| v.get_ref().clone()).unwrap_or_default()
        };
        let params = match kind_name {
            "dns" => {
                ok &= require(self, "name", c.name.is_some());
                let record_type = c
                    .record_type
                    .as_ref()
                    .map_or("A".to_string(), |r| r.get_ref().clone());
                if let Some(r) = &c.record_type
                    && r.get_ref() != "A"
                    && r.get_ref() != "AAAA"
                {
                    self.problem(
                        r.span(),
                        format!(
                            "`record_type` {:?}: expected \"A\" or \"AAAA\"",
                            r.get_ref()
                        ),
                    );
                    ok = false;
                }
                let mut resolvers = Vec::new();
                if let Some(rs) = &c.resolvers {
                    for r in rs.get_ref() {
                        let text = r.get_ref();
                        if text.parse::<IpAddr>().is_ok() || text.parse::<SocketAddr>().is_ok() {
                            resolvers.push(text.clone());
                        } else {
                            self.problem(
                                r.span(),
                                format!("resolver {text:?} is not an IP address or IP:PORT"),
                            );
                            ok = false;
                        }
                    }
                }
                CheckParams::Dns {
                    name: s(&c.name),
                    record_type,
                    system_resolver: c.system_resolver.as_ref().is_none_or(|v| *v.get_ref()),
                    resolvers,
                    authoritative_zone: s(&c.authoritative_zone),
                }
            }
            "http" => {
                ok &= require(self, "url", c.url.is_some());
                ok &= self.url("url", c.url.as_ref());
                let mut expect_status = Vec::new();
                match &c.expect_status {
                    None => expect_status.push(200),
                    Some(list) => {
                        for st in list.get_ref() {
                            if (100..=599).contains(st.get_ref()) {
                                expect_status.push(*st.get_ref() as u32);
                            } else {
                                self.problem(
                                    st.span(),
                                    format!(
                                        "`expect_status` {}: expected an HTTP status 100-599",
                                        st.get_ref()
                                    ),
                                );
                                ok = false;
                            }
                        }
                    }
                }
                CheckParams::Http {
                    url: s(&c.url),
                    method: c
                        .method
                        .as_ref()
                        .map_or("GET".into(), |m| m.get_ref().to_ascii_uppercase()),
                    expect_status,
                    body_contains: s(&c.body_contains),
                    body_regex: s(&c.body_regex),
                    expect_headers: c
                        .expect_headers
                        .as_ref()
                        .map(|h| h.get_ref().clone())
                        .unwrap_or_default(),
                    headers: c
                        .headers
                        .as_ref()
                        .map(|h| h.get_ref().clone())
                        .unwrap_or_default(),
                }
            }
            "tls" => {
                ok &= require(self, "host", c.host.is_some());
                let port = match &c.port {
                    None => 443,
                    Some(p) if (1..=65535).contains(p.get_ref()) => *p.get_ref() as u16,
                    Some(p) => {
                        self.problem(
                            p.span(),
                            format!("`port` {}: expected 1-65535", p.get_ref()),
                        );
                        ok = false;
                        0
                    }
                };
                let min_days_valid = match &c.min_days_valid {
                    None => 14,
                    Some(d) if (0..=3650).contains(d.get_ref()) => *d.get_ref() as u32,
                    Some(d) => {
                        self.problem(
                            d.span(),
                            format!("`min_days_valid` {}: expected 0-3650", d.get_ref()),
                        );
                        ok = false;
                        0
                    }
                };
                CheckParams::Tls {
                    host: s(&c.host),
                    port,
                    min_days_valid,
                }
            }
            "elm_package" => {
                ok &= require(self, "registry_url", c.registry_url.is_some());
                ok &= require(self, "package", c.package.is_some());
                ok &= require(self, "version", c.version.is_some());
                ok &= self.url("registry_url", c.registry_url.as_ref());
                if let Some(p) = &c.package {
                    let parts: Vec<&str> = p.get_ref().split('/').collect();
                    if parts.len() != 2 || parts.iter().any(|x| x.is_empty()) {
                        self.problem(
                            p.span(),
                            format!(
                                "`package` {:?}: expected \"author/name\", e.g. \"elm/core\"",
                                p.get_ref()
                            ),
                        );
                        ok = false;
                    }
                }
                if let Some(v) = &c.version {
                    let semver = v.get_ref().split('.').count() == 3
                        && v.get_ref()
                            .split('.')
                            .all(|x| !x.is_empty() && x.chars().all(|ch| ch.is_ascii_digit()));
                    if !semver && v.get_ref() != "latest" {
                        self.problem(v.span(), format!("`version` {:?}: expected MAJOR.MINOR.PATCH, e.g. \"1.0.5\", or \"latest\"", v.get_ref()));
                        ok = false;
                    }
                }
                CheckParams::ElmPackage {
                    registry_url: s(&c.registry_url),
                    package: s(&c.package),
                    version: s(&c.version),
                }
            }
            "download" => {
                ok &= require(self, "url", c.url.is_some());
                ok &= self.url("url", c.url.as_ref());
                if let Some(h) = &c.sha256
                    && (h.get_ref().len() != 64
                        || !h
                            .get_ref()
                            .chars()
                            .all(|ch| ch.is_ascii_digit() || ('a'..='f').contains(&ch)))
                {
                    self.problem(h.span(), "`sha256`: expected 64 lowercase hex digits");
                    ok = false;
                }
                let size = match &c.size {
                    None => 0,
                    Some(n) if *n.get_ref() >= 0 => *n.get_ref() as u64,
                    Some(n) => {
                        self.problem(n.span(), "`size`: expected a byte count ≥ 0");
                        ok = false;
                        0
                    }
                };
                CheckParams::Download {
                    url: s(&c.url),
                    sha256: s(&c.sha256),
                    size,
                }
            }
            "registry_consistency" => {
                ok &= require(self, "registry_url", c.registry_url.is_some());
                ok &= self.url("registry_url", c.registry_url.as_ref());
                CheckParams::RegistryConsistency {
                    registry_url: s(&c.registry_url),
                }
            }
            _ => return None,
        };
        if !ok {
            return None;
        }
        Some(CheckConfig {
            id: id?,
            targets,
            interval: interval?,
            jitter: jitter?,
            timeout: timeout?,
            params,
        })
    }

    fn url(&mut self, key: &str, v: Option<&Spanned<String>>) -> bool {
        match v {
            Some(u) if !is_http_url(u.get_ref()) => {
                self.problem(
                    u.span(),
                    format!(
                        "`{key}` {:?}: expected an http:// or https:// URL",
                        u.get_ref()
                    ),
                );
                false
            }
            _ => true,
        }
    }
}

fn is_http_url(s: &str) -> bool {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"));
    rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/'))
}

/// Keys present in a raw check, with the span of their values.
fn present_keys(c: &RawCheck) -> Vec<(&'static str, Range<usize>)> {
    let mut out = Vec::new();
    macro_rules! key {
        ($($field:ident),*) => {$(
            if let Some(v) = &c.$field {
                out.push((stringify!($field), v.span()));
            }
        )*};
    }
    key!(
        id,
        kind,
        targets,
        interval,
        jitter,
        timeout,
        name,
        record_type,
        system_resolver,
        resolvers,
        authoritative_zone,
        url,
        method,
        expect_status,
        body_contains,
        body_regex,
        expect_headers,
        headers,
        host,
        port,
        min_days_valid,
        registry_url,
        package,
        version,
        sha256,
        size
    );
    out
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.column, self.message)
    }
}

/// Distinct regions can only be known from enrolment, but check ids are fixed by the config;
/// this is the set the ingest path uses to reject results for unknown checks.
pub fn check_ids(cfg: &Config) -> BTreeSet<String> {
    cfg.checks.iter().map(|c| c.id.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = r#"[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
plaintext = true

[sites.old]
addresses = ["203.0.113.10"]
[sites.new]
addresses = ["203.0.113.20"]
"#;

    fn problems(text: &str) -> Vec<Problem> {
        match parse(Path::new("/etc/cutover/cutover.toml"), text) {
            Ok(_) => panic!("expected an error for:\n{text}"),
            Err(ConfigError::Invalid { problems, .. }) => problems,
            Err(e) => panic!("unexpected error {e}"),
        }
    }

    fn one(text: &str) -> Problem {
        let p = problems(text);
        assert_eq!(p.len(), 1, "expected one problem, got {p:#?}");
        p.into_iter().next().unwrap()
    }

    #[test]
    fn valid_config_with_every_kind() {
        let text = format!(
            r#"{HEAD}
[[checks]]
id = "install-core"
kind = "elm_package"
targets = ["old", "new"]
interval = "10s"
jitter = "2s"
timeout = "15s"
registry_url = "https://package.elm-lang.org"
package = "elm/core"
version = "1.0.5"

[[checks]]
id = "www-dns"
kind = "dns"
name = "elm-lang.org"
resolvers = ["8.8.8.8", "127.0.0.1:5353"]

[[checks]]
id = "home"
kind = "http"
url = "https://elm-lang.org/"
expect_status = [200, 301]
expect_headers = {{ "content-type" = "text/html" }}

[[checks]]
id = "cert"
kind = "tls"
host = "elm-lang.org"

[[checks]]
id = "blob"
kind = "download"
url = "https://example.org/x.zip"
size = 10

[[checks]]
id = "consistency"
kind = "registry_consistency"
registry_url = "https://package.elm-lang.org"
"#
        );
        let cfg = parse(Path::new("/etc/cutover/cutover.toml"), &text).expect("valid");
        assert_eq!(cfg.checks.len(), 6);
        assert_eq!(cfg.server.data_dir, Path::new("/etc/cutover/data"));
        assert_eq!(cfg.server.window, Duration::from_secs(60));
        assert!(cfg.server.tls.is_none());
        assert_eq!(cfg.checks[0].jitter, Duration::from_secs(2));
        assert_eq!(cfg.checks[1].targets, vec![TargetName::Dns]);
        assert_eq!(
            cfg.checks[2].targets,
            vec![TargetName::Old, TargetName::New]
        );
    }

    #[test]
    fn example_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/coordinator.toml");
        let cfg = load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.checks.len(), 6);
        assert!(cfg.server.tls.is_some());
        assert_eq!(
            cfg.server.metrics_listen,
            Some("127.0.0.1:9464".parse().unwrap())
        );
        assert_eq!(cfg.server.data_dir, path.parent().unwrap().join("data"));
    }

    /// Every coordinator config shipped in `examples/` must load: a broken example is a broken promise.
    #[test]
    fn every_example_config_is_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let mut loaded = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with("coordinator") && name.ends_with(".toml") {
                load(&path).unwrap_or_else(|e| panic!("{e}"));
                loaded += 1;
            }
        }
        assert!(
            loaded >= 2,
            "expected the example coordinator configs in {}",
            dir.display()
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_duration("7d"), Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("10x"), None);
        assert_eq!(parse_duration("s"), None);
        assert_eq!(parse_duration(""), None);
        assert_eq!(parse_duration("10"), None);
    }

    #[test]
    fn bad_duration_names_line_and_column() {
        let p = one(&format!(
            "{HEAD}\n[[checks]]\nid = \"a\"\nkind = \"tls\"\nhost = \"x\"\ninterval = \"10x\"\n"
        ));
        assert_eq!((p.line, p.column), (15, 12), "{p}");
        assert!(
            p.message.contains("10x") && p.message.contains("ms, s, m or h"),
            "{p}"
        );
    }

    #[test]
    fn unknown_kind() {
        let p = one(&format!(
            "{HEAD}\n[[checks]]\nid = \"a\"\nkind = \"ping\"\n"
        ));
        assert_eq!((p.line, p.column), (13, 8), "{p}");
        assert!(p.message.contains("unknown kind \"ping\""), "{p}");
        assert!(p.message.contains("elm_package"), "{p}");
    }

    #[test]
    fn malformed_ip_address() {
        let text = HEAD.replace("\"203.0.113.20\"", "\"203.0.113.20\", \"203.0.113\"");
        let p = one(&text);
        assert_eq!((p.line, p.column), (9, 30), "{p}");
        assert!(
            p.message.contains("\"203.0.113\" is not an IP address"),
            "{p}"
        );
    }

    #[test]
    fn key_of_another_kind() {
        let p = one(&format!(
            "{HEAD}\n[[checks]]\nid = \"d\"\nkind = \"dns\"\nname = \"elm-lang.org\"\npackage = \"elm/core\"\n"
        ));
        assert_eq!((p.line, p.column), (15, 11), "{p}");
        assert!(
            p.message
                .contains("`package` is not a key of a `dns` check"),
            "{p}"
        );
    }

    #[test]
    fn missing_kind_specific_key() {
        let p = one(&format!(
            "{HEAD}\n[[checks]]\nid = \"h\"\nkind = \"http\"\n"
        ));
        assert_eq!(
            (p.line, p.column),
            (11, 1),
            "points at the [[checks]] table: {p}"
        );
        assert!(p.message.contains("needs `url`"), "{p}");
    }

    #[test]
    fn unknown_key_is_a_parse_error_with_position() {
        let p = one(&format!(
            "{HEAD}\n[[checks]]\nid = \"h\"\nkind = \"tls\"\nhots = \"x\"\n"
        ));
        assert_eq!((p.line, p.column), (14, 1), "{p}");
        assert!(p.message.contains("unknown field `hots`"), "{p}");
    }

    #[test]
    fn dns_checks_only_target_dns() {
        let p = one(&format!(
            "{HEAD}\n[[checks]]\nid = \"d\"\nkind = \"dns\"\nname = \"x\"\ntargets = [\"dns\", \"new\"]\n"
        ));
        assert_eq!((p.line, p.column), (15, 19), "{p}");
        assert!(p.message.contains("only target is \"dns\""), "{p}");
    }

    #[test]
    fn bad_listen_address() {
        let text = HEAD.replace(
            "listen = \"127.0.0.1:0\"\nadmin",
            "listen = \"localhost:7443\"\nadmin",
        );
        let p = one(&text);
        assert_eq!((p.line, p.column), (2, 10), "{p}");
        assert!(p.message.contains("expected IP:PORT"), "{p}");
    }

    #[test]
    fn duplicate_check_ids() {
        let p = one(&format!(
            "{HEAD}\n[[checks]]\nid = \"c\"\nkind = \"tls\"\nhost = \"x\"\n\n[[checks]]\nid = \"c\"\nkind = \"tls\"\nhost = \"y\"\n"
        ));
        assert_eq!((p.line, p.column), (17, 6), "{p}");
        assert!(
            p.message
                .contains("duplicate check id \"c\" (first defined on line 12)"),
            "{p}"
        );
    }

    #[test]
    fn tls_cert_without_key() {
        let text = HEAD.replace("plaintext = true", "tls_cert = \"cert.pem\"");
        let p = one(&text);
        assert_eq!((p.line, p.column), (4, 12), "{p}");
        assert!(p.message.contains("`tls_key` is not"), "{p}");
    }

    #[test]
    fn tls_key_without_cert() {
        let text = HEAD.replace("plaintext = true", "tls_key = \"key.pem\"");
        let p = one(&text);
        assert_eq!((p.line, p.column), (4, 11), "{p}");
    }

    #[test]
    fn plaintext_must_be_explicit() {
        let text = HEAD.replace("plaintext = true\n", "");
        let p = one(&text);
        assert!(p.message.contains("write `plaintext = true`"), "{p}");
        let p = one(&format!("\n\n{text}"));
        assert_eq!((p.line, p.column), (3, 1), "points at [server]: {p}");
        let text = HEAD.replace("plaintext = true", "plaintext = false");
        let p = one(&text);
        assert_eq!((p.line, p.column), (4, 13), "{p}");
    }

    #[test]
    fn tls_paths_are_relative_to_the_config_file() {
        let text = HEAD.replace(
            "plaintext = true",
            "tls_cert = \"cert.pem\"\ntls_key = \"/abs/key.pem\"\nadmin_listen = \"0.0.0.0:7444\"",
        ).replace("admin_listen = \"127.0.0.1:0\"\n", "");
        let cfg = parse(Path::new("/etc/cutover/cutover.toml"), &text).expect("valid");
        let tls = cfg.server.tls.expect("tls");
        assert_eq!(tls.cert, Path::new("/etc/cutover/cert.pem"));
        assert_eq!(tls.key, Path::new("/abs/key.pem"));
    }

    #[test]
    fn non_loopback_admin_needs_tls() {
        let text = HEAD.replace(
            "admin_listen = \"127.0.0.1:0\"",
            "admin_listen = \"0.0.0.0:7444\"",
        );
        let p = one(&text);
        assert_eq!((p.line, p.column), (3, 16), "{p}");
        assert!(p.message.contains("needs TLS"), "{p}");
    }

    #[test]
    fn syntax_error_has_position() {
        let p = one("[server]\nlisten = \n");
        assert_eq!(p.line, 2, "{p}");
    }

    #[test]
    fn every_problem_is_reported() {
        let text = format!(
            "{HEAD}\n[[checks]]\nid = \"a\"\nkind = \"tls\"\nhost = \"x\"\ninterval = \"1y\"\ntimeout = \"zz\"\n\n[[checks]]\nid = \"b\"\nkind = \"nope\"\n"
        )
        .replace("\"203.0.113.10\"", "\"not-an-ip\"");
        let p = problems(&text);
        assert_eq!(p.len(), 4, "{p:#?}");
        let lines: Vec<usize> = p.iter().map(|p| p.line).collect();
        assert_eq!(lines, vec![7, 15, 16, 20]);
        let rendered = ConfigError::Invalid {
            path: "/etc/cutover/cutover.toml".into(),
            problems: p,
        }
        .to_string();
        assert!(
            rendered.contains("/etc/cutover/cutover.toml:7:14:"),
            "{rendered}"
        );
    }
}
