//! Plan files: the operator's runbook as TOML (`docs/plan.md`), validated into
//! a [`Plan`] that the engine executes step by step.
//!
//! Parsing follows the coordinator config ([`crate::config`]): raw TOML with
//! `deny_unknown_fields` and [`toml::Spanned`] values ([`raw`]), then a
//! validator that collects *every* problem with its line and column
//! ([`parse`]). Sites and checks use the config's own parser. On top of that,
//! [`risk`] warns about plans that are valid but dangerous (the seed's 10×
//! rule, a switch nobody verifies, a fallback that never restores DNS, inline
//! secrets — [`secrets`]), and [`dry_run`] prints what a plan would do.
//!
//! The types in this file are the contract with the engine: everything is
//! resolved at check time (durations, TTLs, record values, the DNS state each
//! `dns` step sets), so the engine never re-interprets the TOML and can apply
//! every step idempotently.

pub mod dry_run;
mod parse;
pub mod raw;
pub mod risk;
pub mod secrets;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{CheckConfig, SiteConfig};
use crate::dns::{ProviderSpec, RecordSet, RecordType};

pub use parse::parse;

/// How bad a [`Diagnostic`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The plan cannot run.
    Error,
    /// The plan can run, but something in it is risky.
    Warning,
}

impl Severity {
    /// `error` or `warning`, as printed.
    pub fn label(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warning => "warning",
        }
    }
}

/// One problem in a plan file, with its 1-based position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// 1-based line of the offending value (or table).
    pub line: usize,
    /// 1-based column in characters.
    pub column: usize,
    /// What is wrong and what is expected instead.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}",
            self.line,
            self.column,
            self.severity.label(),
            self.message
        )
    }
}

/// What `cutover plan check` found: the plan (when there were no errors) and
/// every diagnostic in file order.
#[derive(Debug)]
pub struct Report {
    /// The file checked.
    pub path: PathBuf,
    /// `Some` exactly when there are no errors.
    pub plan: Option<Plan>,
    /// Errors and warnings, sorted by position.
    pub diagnostics: Vec<Diagnostic>,
}

impl Report {
    /// Number of errors.
    pub fn errors(&self) -> usize {
        self.count(Severity::Error)
    }

    /// Number of warnings.
    pub fn warnings(&self) -> usize {
        self.count(Severity::Warning)
    }

    fn count(&self, s: Severity) -> usize {
        self.diagnostics.iter().filter(|d| d.severity == s).count()
    }

    /// Every diagnostic as `FILE:LINE:COL: error|warning: message`, one per line.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for d in &self.diagnostics {
            out.push_str(&format!("{}:{d}\n", self.path.display()));
        }
        out
    }

    /// One line: `FILE: 0 errors, 2 warnings`.
    pub fn summary(&self) -> String {
        let (e, w) = (self.errors(), self.warnings());
        format!(
            "{}: {e} error{}, {w} warning{}",
            self.path.display(),
            if e == 1 { "" } else { "s" },
            if w == 1 { "" } else { "s" }
        )
    }
}

/// Why a plan could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The file could not be read.
    #[error("cannot read plan file {}: {source}", path.display())]
    Read {
        /// The file we tried to read.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The file has errors (warnings are listed too).
    #[error("invalid plan file {}:\n{}", report.path.display(), report.render().trim_end())]
    Invalid {
        /// Everything found.
        report: Box<Report>,
    },
}

/// Reads and checks a plan file; the report carries the plan when it has no errors.
pub fn check_file(path: &Path) -> Result<Report, PlanError> {
    let text = std::fs::read_to_string(path).map_err(|source| PlanError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(parse(path, &text))
}

/// Reads a plan the engine can run: errors fail, warnings come back with it.
pub fn load(path: &Path) -> Result<(Plan, Vec<Diagnostic>), PlanError> {
    let mut report = check_file(path)?;
    match report.plan.take() {
        Some(plan) => Ok((plan, report.diagnostics)),
        None => Err(PlanError::Invalid {
            report: Box::new(report),
        }),
    }
}

// ---------------------------------------------------------------------------
// The validated plan: the engine's contract.
// ---------------------------------------------------------------------------

/// A validated plan. Step ids are unique across `steps` and `fallback`, every
/// reference (checks, channels, `armed_from`) resolves, every duration is parsed.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The file it was read from; relative secret files resolve against its folder.
    pub path: PathBuf,
    /// `[plan] name`: short, used in logs, the journal and notifications.
    pub name: String,
    /// `[plan] description` (may be empty).
    pub description: String,
    /// `[plan] tick` (default 1s, 100ms..1m): how often armed guards are evaluated.
    pub tick: Duration,
    /// `[sites.old]`.
    pub old: SiteConfig,
    /// `[sites.new]`.
    pub new: SiteConfig,
    /// `[[checks]]`, exactly as in the coordinator config; the engine assigns them to probes.
    pub checks: Vec<CheckConfig>,
    /// `[dns]`.
    pub dns: DnsPlan,
    /// `[[guards]]`.
    pub guards: Vec<Guard>,
    /// `[notifications]`: webhook channels by name.
    pub channels: BTreeMap<String, Channel>,
    /// `[alerts]`: where guard alerts go (empty when the section is absent).
    pub alerts: Alerts,
    /// `[[steps]]`: the forward runbook, in order.
    pub steps: Vec<Step>,
    /// `[[fallback]]`: the reverse runbook, run on a guard trip or `cutover rollback`.
    pub fallback: Vec<Step>,
}

impl Plan {
    /// The check with this id (validation guarantees referenced ids exist).
    pub fn check(&self, id: &str) -> Option<&CheckConfig> {
        self.checks.iter().find(|c| c.id == id)
    }

    /// The addresses of a site.
    pub fn site(&self, site: Site) -> &SiteConfig {
        match site {
            Site::Old => &self.old,
            Site::New => &self.new,
        }
    }

    /// Guards armed when the forward step `step_id` starts.
    pub fn guards_armed_at<'a>(&'a self, step_id: &'a str) -> impl Iterator<Item = &'a Guard> {
        self.guards.iter().filter(move |g| g.armed_from == step_id)
    }

    /// Forward steps and fallback steps, each with the runbook it belongs to.
    pub fn all_steps(&self) -> impl Iterator<Item = (Runbook, &Step)> {
        self.steps
            .iter()
            .map(|s| (Runbook::Forward, s))
            .chain(self.fallback.iter().map(|s| (Runbook::Fallback, s)))
    }
}

/// Which runbook a step belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Runbook {
    /// `[[steps]]`.
    Forward,
    /// `[[fallback]]`.
    Fallback,
}

/// One of the two sites DNS can point at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Site {
    /// `[sites.old]`.
    Old,
    /// `[sites.new]`.
    New,
}

impl Site {
    /// `old` or `new`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Old => "old",
            Self::New => "new",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "old" => Some(Self::Old),
            "new" => Some(Self::New),
            _ => None,
        }
    }
}

/// `[dns]`: the zone, how to change it, and the records a switch moves.
#[derive(Debug, Clone)]
pub struct DnsPlan {
    /// Fully qualified, lowercase, trailing dot: `elm-lang.org.`
    pub zone: String,
    /// Provider settings (`provider = "…"` plus its sub-table), for [`crate::dns::build`].
    pub provider: ProviderSpec,
    /// Authoritative servers queried for read-after-write; empty = the zone's NS records.
    pub nameservers: Vec<SocketAddr>,
    /// The RRsets a switch moves, in file order.
    pub records: Vec<RecordPlan>,
    /// `lowered_ttl` in seconds, if the plan names one (`ttl = "lowered"` in steps).
    pub lowered_ttl: Option<u32>,
    /// `normal_ttl` in seconds (default 3600): the TTL in effect before the plan starts.
    pub normal_ttl: u32,
}

/// One `[[dns.records]]` entry with the values it takes for each site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordPlan {
    /// Fully qualified, lowercase, trailing dot: `package.elm-lang.org.`
    pub name: String,
    /// A, AAAA or CNAME.
    pub rtype: RecordType,
    /// Values when pointing at the old site (canonical text, sorted, never empty).
    pub old: Vec<String>,
    /// Values when pointing at the new site (canonical text, sorted, never empty).
    pub new: Vec<String>,
}

impl RecordPlan {
    /// The values for a site.
    pub fn values(&self, site: Site) -> &[String] {
        match site {
            Site::Old => &self.old,
            Site::New => &self.new,
        }
    }

    /// The desired RRset for a DNS state (what a provider's `apply` takes).
    pub fn desired(&self, state: DnsState) -> RecordSet {
        RecordSet {
            name: self.name.clone(),
            rtype: self.rtype,
            ttl: state.ttl,
            values: self.values(state.site).to_vec(),
        }
    }
}

/// What every planned record looks like at a point in a runbook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DnsState {
    /// The site the records point at.
    pub site: Site,
    /// Their TTL in seconds.
    pub ttl: u32,
}

/// `[[notifications.webhooks]]`: where announcements (and later alerts) go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    /// Name used by `announce` steps' `channels`.
    pub name: String,
    /// Payload format.
    pub kind: ChannelKind,
    /// Where the webhook URL is read from when sending (never inline: it is a secret).
    pub url: SecretSource,
}

/// `[alerts]`: destinations for guard alerts (trips, fallback start and end,
/// lasting `NO_EVIDENCE`); [`crate::alerts`] delivers them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alerts {
    /// Webhook channel names from `[notifications]` (validated), in file order.
    pub channels: Vec<String>,
    /// Alertmanager base URL; alerts are POSTed to `{url}/api/v2/alerts`.
    pub alertmanager: Option<UrlSource>,
    /// Alert when a guard's region stays `NO_EVIDENCE` this long (default 5m).
    pub no_evidence_after: Duration,
}

impl Default for Alerts {
    fn default() -> Self {
        Self {
            channels: Vec::new(),
            alertmanager: None,
            no_evidence_after: DEFAULT_NO_EVIDENCE_AFTER,
        }
    }
}

impl Alerts {
    /// True when there is nowhere to send an alert.
    pub fn is_empty(&self) -> bool {
        self.channels.is_empty() && self.alertmanager.is_none()
    }
}

/// A URL that may be written in the plan or, when it carries credentials, read at run time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlSource {
    /// `url = "…"`: written in the plan (validated as an http(s) URL).
    Inline(String),
    /// `url_env` / `url_file`.
    Secret(SecretSource),
}

/// Webhook payload formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelKind {
    /// Slack-compatible incoming webhook: `{"text": "…"}`.
    Slack,
    /// Generic JSON: the announcement as an object.
    Json,
}

/// A secret read at run time, never written in the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// An environment variable of the coordinator.
    Env(String),
    /// A file; relative paths are resolved against the plan's folder at check time.
    File(PathBuf),
}

impl SecretSource {
    /// Reads the secret now: the variable's value, or the file's content without
    /// surrounding whitespace. The error names the variable or file, never the value.
    /// File paths were resolved against the plan's folder when the plan was checked.
    pub fn read(&self) -> Result<String, String> {
        match self {
            Self::Env(name) => {
                std::env::var(name).map_err(|_| format!("environment variable {name} is not set"))
            }
            Self::File(path) => std::fs::read_to_string(path)
                .map(|s| s.trim().to_string())
                .map_err(|e| format!("cannot read {}: {e}", path.display())),
        }
    }

    /// Where it is read from, for messages: `$NAME` or the file's path.
    pub fn describe(&self) -> String {
        match self {
            Self::Env(name) => format!("${name}"),
            Self::File(path) => path.display().to_string(),
        }
    }
}

impl UrlSource {
    /// The URL: as written, or read from its secret now.
    pub fn read(&self) -> Result<String, String> {
        match self {
            Self::Inline(url) => Ok(url.clone()),
            Self::Secret(s) => s.read(),
        }
    }
}

/// What a step does on failure (a gate that never holds, a command that exits non-zero, a timeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Run the fallback runbook (forward steps only).
    Fallback,
    /// Stop and wait for the operator (`resume`, `rollback`, `abort`). The default.
    Pause,
    /// End the plan as failed; nothing more runs.
    Abort,
}

impl OnFailure {
    /// As written in the plan.
    pub fn label(self) -> &'static str {
        match self {
            Self::Fallback => "fallback",
            Self::Pause => "pause",
            Self::Abort => "abort",
        }
    }
}

/// One `[[steps]]` / `[[fallback]]` entry.
#[derive(Debug, Clone)]
pub struct Step {
    /// Unique across both runbooks: the journal's key.
    pub id: String,
    /// Free text for people (may be empty).
    pub description: String,
    /// Longest the step may take before it fails; `None` = no limit.
    /// Defaults per kind are applied at check time (see `docs/plan.md`).
    pub timeout: Option<Duration>,
    /// What a failure leads to.
    pub on_failure: OnFailure,
    /// 1-based line of the step's table, for messages and the journal.
    pub line: usize,
    /// What the step does.
    pub action: Action,
}

impl Step {
    /// The kind name as written in the plan.
    pub fn kind(&self) -> &'static str {
        self.action.kind()
    }

    /// True for `exec` steps with `once = true`: never run twice, even across a crash.
    pub fn is_once(&self) -> bool {
        matches!(&self.action, Action::Exec(e) if e.once)
    }
}

/// The kind-specific part of a step.
#[derive(Debug, Clone)]
pub enum Action {
    /// Conditions that must all hold (re-evaluated until they do, or the timeout).
    Gate(Gate),
    /// Set the planned records to a site and/or TTL through the provider, then verify.
    Dns(DnsChange),
    /// A fixed time, or until evidence holds.
    Wait(Wait),
    /// Send a message to channels; kept for the status page.
    Announce(Announce),
    /// Run a command (argv, no shell).
    Exec(Exec),
    /// Named checks pass from enough regions.
    Verify(Verify),
    /// Wait for `cutover approve`.
    Approve {
        /// What the operator is asked.
        prompt: String,
    },
    /// A period in which the armed guards keep watching ("wait a day or two").
    Soak {
        /// How long.
        duration: Duration,
    },
}

impl Action {
    /// The kind name as written in the plan.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Gate(_) => "gate",
            Self::Dns(_) => "dns",
            Self::Wait(_) => "wait",
            Self::Announce(_) => "announce",
            Self::Exec(_) => "exec",
            Self::Verify(_) => "verify",
            Self::Approve { .. } => "approve",
            Self::Soak { .. } => "soak",
        }
    }
}

/// `kind = "gate"`. Every listed condition must hold at the same evaluation.
#[derive(Debug, Clone)]
pub struct Gate {
    /// Provider status pages; unreadable or not in Statuspage format = unknown, never
    /// healthy (see `on_unknown`).
    pub status_pages: Vec<StatusPage>,
    /// Old and new serve the same code.
    pub same_code: Option<SameCode>,
    /// Every `registry_consistency` check in the plan passes (see `consistency_checks`).
    pub registry_consistent: bool,
    /// Ids of the plan's `registry_consistency` checks, resolved when `registry_consistent`.
    pub consistency_checks: Vec<String>,
    /// Checks that must pass on each of their targets.
    pub checks_passing: Vec<String>,
    /// From at least this many regions (default 1).
    pub min_regions: u32,
    /// What an unreadable status page leads to (default [`OnUnknown::Fail`]).
    pub on_unknown: OnUnknown,
}

/// `on_unknown`: what a gate does when a status page cannot be read or parsed.
/// Unknown is never healthy: either the gate keeps failing, or a person decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnUnknown {
    /// Unknown does not hold: the gate re-reads until its timeout, then fails. The default.
    #[default]
    Fail,
    /// When unreadable pages are all that stops the gate, the run waits for
    /// `cutover approve` (the operator reads the pages); known states still count.
    Approve,
}

impl OnUnknown {
    /// As written in the plan.
    pub fn label(self) -> &'static str {
        match self {
            Self::Fail => "fail",
            Self::Approve => "approve",
        }
    }
}

/// A Statuspage-format page (`GET {url}` → `status.indicator`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusPage {
    /// Shown in messages: `DigitalOcean`.
    pub name: String,
    /// The JSON URL, e.g. `https://status.digitalocean.com/api/v2/status.json`.
    pub url: String,
    /// Highest acceptable indicator (default `none`).
    pub max_indicator: Indicator,
}

/// Statuspage's `status.indicator`, in increasing severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Indicator {
    /// All systems operational.
    None,
    /// Minor incident.
    Minor,
    /// Scheduled maintenance in progress (ranked between minor and major).
    Maintenance,
    /// Major incident.
    Major,
    /// Critical incident.
    Critical,
}

impl Indicator {
    /// As written in Statuspage JSON and plans.
    pub fn label(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Minor => "minor",
            Self::Maintenance => "maintenance",
            Self::Major => "major",
            Self::Critical => "critical",
        }
    }

    /// The rank guards compare (none 0, minor 1, maintenance 2, major 3, critical 4):
    /// `indicator >= major` holds when the page's rank is at least `Major.rank()`.
    pub fn rank(self) -> f64 {
        f64::from(self as u8)
    }

    /// Parses Statuspage's spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "none" => Self::None,
            "minor" => Self::Minor,
            "maintenance" => Self::Maintenance,
            "major" => Self::Major,
            "critical" => Self::Critical,
            _ => return None,
        })
    }
}

/// `same_code = { url_path, compare, host }`: one request pinned to each site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SameCode {
    /// `https://{host}{url_path}`, requested pinned to old and to new; `host` may
    /// carry a port (`host:port`), which both requests use.
    pub url: String,
    /// What must be equal.
    pub compare: Compare,
}

/// How `same_code` compares the two answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// SHA-256 of the body.
    BodySha256,
    /// The value of one response header (name lowercase), e.g. `x-version`.
    Header(String),
}

/// `kind = "dns"`: a fully resolved desired state for every planned record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsChange {
    /// The state the step sets (apply each record's [`RecordPlan::desired`], then verify).
    pub to: DnsState,
    /// The state before it, as the runbook left it (fallback assumes new at the lowered TTL).
    pub from: DnsState,
    /// `set` was written: the step moves the records to `to.site`.
    pub sets_site: bool,
    /// `ttl` was written: the step changes the TTL to `to.ttl`.
    pub sets_ttl: bool,
}

/// `kind = "wait"`.
#[derive(Debug, Clone, PartialEq)]
pub struct Wait {
    /// What ends the wait.
    pub until: WaitFor,
    /// Longest wait for evidence before the step fails (`max`, else `timeout`); `None` = no limit.
    pub max: Option<Duration>,
}

/// What ends a wait.
#[derive(Debug, Clone, PartialEq)]
pub enum WaitFor {
    /// Fixed time.
    Duration(Duration),
    /// In every region with probes, at least `share` of the probes' resolvers answer `site`
    /// for every `dns` check in `checks`.
    Propagation {
        /// 0 < share ≤ 1.
        share: f64,
        /// The site the answers must point at.
        site: Site,
        /// `dns` checks whose answers count (default: all of the plan's `dns` checks).
        checks: Vec<String>,
    },
    /// In every region with probes, the remaining TTL at the resolvers is ≤ `ttl` seconds
    /// (the TTL in effect at this point of the runbook).
    TtlDrained {
        /// Seconds.
        ttl: u32,
        /// `dns` checks whose answers count (default: all of the plan's `dns` checks).
        checks: Vec<String>,
    },
}

/// `kind = "announce"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announce {
    /// The text sent and shown.
    pub message: String,
    /// Webhook channel names (validated against `[notifications]`).
    pub channels: Vec<String>,
    /// The maintenance window this announces, kept for the status page.
    pub maintenance_window: Option<MaintenanceWindow>,
}

/// A maintenance window relative to the announcement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaintenanceWindow {
    /// Starts this long after the announcement is sent.
    pub starts_in: Duration,
    /// Lasts this long.
    pub duration: Duration,
}

/// `kind = "exec"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exec {
    /// argv; `command[0]` is looked up in `PATH` (a relative path is relative to the
    /// plan's folder, the command's working directory). Never passed through a shell.
    pub command: Vec<String>,
    /// Extra environment for the command.
    pub env: BTreeMap<String, EnvValue>,
    /// Never run twice, even across a crash: if the journal cannot tell whether it ran,
    /// the engine stops and asks the operator.
    pub once: bool,
    /// Keep stdout/stderr in the journal (default true).
    pub capture_output: bool,
}

/// One `env` value of an exec step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvValue {
    /// Written in the plan.
    Literal(String),
    /// `env:NAME`: copied from the coordinator's environment when the step runs.
    FromEnv(String),
}

/// `kind = "verify"`.
#[derive(Debug, Clone, PartialEq)]
pub struct Verify {
    /// Check ids; each must pass.
    pub checks: Vec<String>,
    /// The site the checks are judged on: pinned checks on this target, `dns`-target
    /// results must answer this site. Default: where the records point at this step.
    pub site: Site,
    /// From at least this many regions (default 1).
    pub min_regions: u32,
    /// `window` as written (default 60s). Not honoured yet: the engine judges the
    /// coordinator's aggregation window (`[server] window`); see `docs/plan.md`.
    pub window: Duration,
    /// A region passes a check when the median of its probes' failure ratios in the
    /// window is at most this (default 0).
    pub max_error_ratio: f64,
}

/// `[plan] tick` when not written.
pub const DEFAULT_TICK: Duration = Duration::from_secs(1);
/// Guard `min_samples` when not written.
pub const DEFAULT_MIN_SAMPLES: u32 = 3;
/// Guard `min_probes` when not written.
pub const DEFAULT_MIN_PROBES: u32 = 2;
/// Guard `interval` (non-probe sources) when not written.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// `[alerts] no_evidence_after` when not written.
pub const DEFAULT_NO_EVIDENCE_AFTER: Duration = Duration::from_secs(300);

/// `[[guards]]`: a condition watched from a step onward (verdicts: DESIGN §5, issue 4).
#[derive(Debug, Clone, PartialEq)]
pub struct Guard {
    /// Unique id, used as the `guard` metric label.
    pub id: String,
    /// Where the values come from.
    pub source: GuardSource,
    /// `metric op threshold`.
    pub condition: Condition,
    /// Evidence window (default 60s).
    pub window: Duration,
    /// Regions that must FAIL together (default 2; 1 for non-regional sources).
    pub quorum: u32,
    /// Consecutive failing ticks before it trips (`for`, default 3).
    pub for_ticks: u32,
    /// What a trip does.
    pub action: GuardAction,
    /// Forward step id from which the guard is armed (until the plan ends).
    pub armed_from: String,
    /// Shadow guards log what they would have done without acting.
    pub mode: GuardMode,
    /// A probe votes only with at least this many results in the window (default 3, probe guards).
    pub min_samples: u32,
    /// A region with fewer voting probes is `NO_EVIDENCE` (default 2, probe guards).
    pub min_probes: u32,
    /// Paired attribution: a probe whose other target (old when the guard watches new,
    /// and the reverse) fails the condition too is excluded as its own network's problem.
    /// Resolved: true only for a probe guard on `old` or `new` of a check that runs on
    /// both (the default there), false otherwise.
    pub paired: bool,
    /// Non-probe sources: how often the source is read (default 10s); a reading older
    /// than three intervals is `NO_EVIDENCE`. Probe guards keep the default and ignore it.
    pub interval: Duration,
}

impl Guard {
    /// True for `source = "probe"`: regional, evaluated over the probes' results.
    pub fn is_probe(&self) -> bool {
        matches!(self.source, GuardSource::Probe { .. })
    }
}

/// A guard's data source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuardSource {
    /// Probe results of one check on one target.
    Probe {
        /// Check id.
        check: String,
        /// `old`, `new` or `dns`.
        target: crate::config::TargetName,
    },
    /// A Statuspage JSON URL.
    StatusPage {
        /// The JSON URL.
        url: String,
    },
    /// A PromQL instant query against a Prometheus HTTP API.
    Prometheus {
        /// Base URL, e.g. `http://prometheus:9090`.
        url: String,
        /// The query; its single value is compared.
        query: String,
    },
}

/// `metric op threshold`, e.g. `error_ratio > 0.2`, `indicator >= major`.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    /// What is measured.
    pub metric: Metric,
    /// How it is compared.
    pub op: CompareOp,
    /// The threshold (for `indicator`, the level's rank: none 0 … critical 4).
    pub threshold: f64,
}

/// Measures a guard can compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Probe: failed / samples.
    ErrorRatio,
    /// Probe: latency quantile in milliseconds (50, 95 or 99).
    LatencyMs(u8),
    /// Probe (`dns` checks): share of answers outside the expected site.
    DnsMismatchRatio,
    /// Probe: archive hash mismatches (a hard failure).
    HashMismatches,
    /// Status page: `status.indicator` rank.
    Indicator,
    /// Prometheus: the query's value.
    Value,
}

impl Metric {
    /// As written in conditions.
    pub fn label(self) -> String {
        match self {
            Self::ErrorRatio => "error_ratio".into(),
            Self::LatencyMs(q) => format!("latency_p{q}_ms"),
            Self::DnsMismatchRatio => "dns_mismatch_ratio".into(),
            Self::HashMismatches => "hash_mismatches".into(),
            Self::Indicator => "indicator".into(),
            Self::Value => "value".into(),
        }
    }
}

/// Comparison operators in conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
}

impl CompareOp {
    /// As written.
    pub fn symbol(self) -> &'static str {
        match self {
            Self::Gt => ">",
            Self::Ge => ">=",
            Self::Lt => "<",
            Self::Le => "<=",
        }
    }

    /// `value op threshold`.
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Self::Gt => value > threshold,
            Self::Ge => value >= threshold,
            Self::Lt => value < threshold,
            Self::Le => value <= threshold,
        }
    }
}

/// What a tripped guard does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardAction {
    /// Run the fallback runbook at once.
    Fallback,
    /// Pause the plan for the operator.
    Pause,
    /// Only raise an alert.
    Alert,
}

impl GuardAction {
    /// As written.
    pub fn label(self) -> &'static str {
        match self {
            Self::Fallback => "fallback",
            Self::Pause => "pause",
            Self::Alert => "alert",
        }
    }
}

/// Whether a guard acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardMode {
    /// Evaluate and log only.
    Shadow,
    /// Act on a trip.
    Enforce,
}

/// Formats seconds the way plans write durations: `5m`, `1h30m`, `45s`, `7d`.
pub fn human_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    let ms = d.subsec_millis();
    if secs == 0 {
        return format!("{ms}ms");
    }
    let mut out = String::new();
    for (unit, len) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= len {
            out.push_str(&format!("{}{unit}", secs / len));
            secs %= len;
        }
    }
    if ms != 0 {
        out.push_str(&format!("{ms}ms"));
    }
    out
}

/// Plan fragments for other modules' unit tests.
#[cfg(test)]
pub(crate) mod testing {
    /// Two loopback sites and a `manual` DNS provider for `www.example.org`:
    /// everything a plan needs besides `[plan]` and its steps.
    pub(crate) const SITES_AND_DNS: &str = r#"[sites.old]
addresses = ["127.0.0.1"]
[sites.new]
addresses = ["127.0.0.2"]
[dns]
zone = "example.org"
provider = "manual"
nameservers = ["127.0.0.1:53"]
[[dns.records]]
name = "www"
type = "A"
"#;

    /// `[plan] name` + [`SITES_AND_DNS`] + `rest`, parsed; panics with the
    /// diagnostics if it does not check.
    pub(crate) fn plan(name: &str, rest: &str) -> super::Plan {
        let text = format!("[plan]\nname = \"{name}\"\n{SITES_AND_DNS}{rest}");
        let report = super::parse(std::path::Path::new("p.toml"), &text);
        let diags = report.render();
        report
            .plan
            .unwrap_or_else(|| panic!("test plan does not check:\n{diags}"))
    }
}
