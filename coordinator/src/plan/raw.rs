//! The plan TOML as written. Nothing here is trusted yet: every value the
//! validator checks is [`Spanned`] so problems can name its line and column.
//!
//! Each section (and each element of an array of tables) is deserialized on its
//! own, so one broken step does not hide the problems in the next one.
//! `[sites]` and `[[checks]]` use the coordinator config's raw types.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// `[plan]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeader {
    pub name: Option<Spanned<String>>,
    pub description: Option<Spanned<String>>,
    pub tick: Option<Spanned<String>>,
}

/// `[dns]` without the provider keys (`provider` and its sub-tables are
/// deserialized into [`crate::dns::ProviderSpec`] separately).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDns {
    pub zone: Option<Spanned<String>>,
    pub nameservers: Option<Spanned<Vec<Spanned<String>>>>,
    pub records: Option<Vec<Spanned<RawRecord>>>,
    pub lowered_ttl: Option<Spanned<String>>,
    pub normal_ttl: Option<Spanned<String>>,
}

/// Keys of `[dns]` that [`RawDns`] owns; every other key goes to the provider spec.
pub const DNS_KEYS: &[&str] = &[
    "zone",
    "nameservers",
    "records",
    "lowered_ttl",
    "normal_ttl",
];

/// `[[dns.records]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRecord {
    pub name: Option<Spanned<String>>,
    #[serde(rename = "type")]
    pub rtype: Option<Spanned<String>>,
    /// Values when pointing at old (default: the site's addresses of the record's family).
    pub old: Option<Spanned<Vec<Spanned<String>>>>,
    /// Values when pointing at new.
    pub new: Option<Spanned<Vec<Spanned<String>>>>,
}

/// `[[guards]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGuard {
    pub id: Option<Spanned<String>>,
    pub source: Option<Spanned<String>>,
    // source = "probe"
    pub check: Option<Spanned<String>>,
    pub target: Option<Spanned<String>>,
    // source = "status_page" / "prometheus"
    pub url: Option<Spanned<String>>,
    pub query: Option<Spanned<String>>,
    pub condition: Option<Spanned<String>>,
    pub window: Option<Spanned<String>>,
    pub quorum: Option<Spanned<i64>>,
    #[serde(rename = "for")]
    pub for_ticks: Option<Spanned<i64>>,
    pub action: Option<Spanned<String>>,
    pub armed_from: Option<Spanned<String>>,
    pub mode: Option<Spanned<String>>,
    // source = "probe"
    pub min_samples: Option<Spanned<i64>>,
    pub min_probes: Option<Spanned<i64>>,
    pub paired: Option<Spanned<bool>>,
    // source = "status_page" / "prometheus"
    pub interval: Option<Spanned<String>>,
}

/// `[alerts]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlerts {
    pub channels: Option<Spanned<Vec<Spanned<String>>>>,
    pub alertmanager: Option<Spanned<RawAlertmanager>>,
    pub no_evidence_after: Option<Spanned<String>>,
}

/// `alertmanager = { url }`, `{ url_env }` or `{ url_file }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlertmanager {
    pub url: Option<Spanned<String>>,
    pub url_env: Option<Spanned<String>>,
    pub url_file: Option<Spanned<String>>,
}

/// `[notifications]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotifications {
    #[serde(default)]
    pub webhooks: Vec<Spanned<RawWebhook>>,
}

/// `[[notifications.webhooks]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    pub name: Option<Spanned<String>>,
    pub kind: Option<Spanned<String>>,
    pub url_env: Option<Spanned<String>>,
    pub url_file: Option<Spanned<String>>,
    /// Accepted only to say why it is refused: a webhook URL is a secret.
    pub url: Option<Spanned<String>>,
}

/// One `[[steps]]` / `[[fallback]]` table: common keys plus the union of every
/// kind's keys; validation rejects keys that do not belong to the step's kind.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStep {
    pub id: Option<Spanned<String>>,
    pub kind: Option<Spanned<String>>,
    pub description: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub on_failure: Option<Spanned<String>>,
    // gate
    pub status_pages: Option<Spanned<Vec<Spanned<RawStatusPage>>>>,
    pub same_code: Option<Spanned<RawSameCode>>,
    pub registry_consistent: Option<Spanned<bool>>,
    pub checks_passing: Option<Spanned<Vec<Spanned<String>>>>,
    pub on_unknown: Option<Spanned<String>>,
    // gate, verify
    pub min_regions: Option<Spanned<i64>>,
    // dns
    pub set: Option<Spanned<String>>,
    pub ttl: Option<Spanned<String>>,
    // wait, soak
    pub duration: Option<Spanned<String>>,
    // wait
    pub until: Option<Spanned<RawUntil>>,
    pub max: Option<Spanned<String>>,
    // announce
    pub message: Option<Spanned<String>>,
    pub channels: Option<Spanned<Vec<Spanned<String>>>>,
    pub maintenance_window: Option<Spanned<RawWindow>>,
    // exec
    pub command: Option<Spanned<Vec<Spanned<String>>>>,
    pub env: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    pub once: Option<Spanned<bool>>,
    pub capture_output: Option<Spanned<bool>>,
    // verify
    pub checks: Option<Spanned<Vec<Spanned<String>>>>,
    pub site: Option<Spanned<String>>,
    pub window: Option<Spanned<String>>,
    pub max_error_ratio: Option<Spanned<f64>>,
    // approve
    pub prompt: Option<Spanned<String>>,
}

/// Every key a step may have (any kind); anything else is reported as unknown.
pub const STEP_KEYS: &[&str] = &[
    "id",
    "kind",
    "description",
    "timeout",
    "on_failure",
    "status_pages",
    "same_code",
    "registry_consistent",
    "checks_passing",
    "on_unknown",
    "min_regions",
    "set",
    "ttl",
    "duration",
    "until",
    "max",
    "message",
    "channels",
    "maintenance_window",
    "command",
    "env",
    "once",
    "capture_output",
    "checks",
    "site",
    "window",
    "max_error_ratio",
    "prompt",
];

/// Keys every step kind accepts.
pub const COMMON_STEP_KEYS: &[&str] = &["id", "kind", "description", "timeout", "on_failure"];

/// The step kinds, in the order the docs list them.
pub const STEP_KINDS: &[&str] = &[
    "gate", "dns", "wait", "announce", "exec", "verify", "approve", "soak",
];

/// The kind-specific keys of a step kind.
pub fn step_kind_keys(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "gate" => &[
            "status_pages",
            "same_code",
            "registry_consistent",
            "checks_passing",
            "min_regions",
            "on_unknown",
        ],
        "dns" => &["set", "ttl"],
        "wait" => &["duration", "until", "max"],
        "announce" => &["message", "channels", "maintenance_window"],
        "exec" => &["command", "env", "once", "capture_output"],
        "verify" => &["checks", "site", "min_regions", "window", "max_error_ratio"],
        "approve" => &["prompt"],
        "soak" => &["duration"],
        _ => return None,
    })
}

/// `status_pages = [{ name, url, max_indicator }]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStatusPage {
    pub name: Option<Spanned<String>>,
    pub url: Option<Spanned<String>>,
    pub max_indicator: Option<Spanned<String>>,
}

/// `same_code = { url_path, compare, host }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSameCode {
    pub url_path: Option<Spanned<String>>,
    pub compare: Option<Spanned<String>>,
    pub host: Option<Spanned<String>>,
}

/// `until = { propagation, site, checks }` or `until = { ttl_drained = true, checks }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUntil {
    pub propagation: Option<Spanned<f64>>,
    pub site: Option<Spanned<String>>,
    pub ttl_drained: Option<Spanned<bool>>,
    pub checks: Option<Spanned<Vec<Spanned<String>>>>,
}

/// `maintenance_window = { starts_in, duration }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWindow {
    pub starts_in: Option<Spanned<String>>,
    pub duration: Option<Spanned<String>>,
}
