//! Plan text → [`Plan`]: every error with its position, all at once.
//!
//! The document is parsed once into toml's spanned document tree; each
//! section, and each step, guard, check and record, is then deserialized on
//! its own, so a type error in one step does not hide the problems in the
//! next. Sites and checks go through the coordinator config's validator.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::raw::{self, RawStep};
use super::*;
use crate::config::{self, TargetName, Validator, line_col};
use crate::dns::ProviderSpec;

/// Top-level sections, in the order the docs list them.
const SECTIONS: &[&str] = &[
    "plan",
    "sites",
    "checks",
    "dns",
    "guards",
    "notifications",
    "alerts",
    "steps",
    "fallback",
];

/// Providers `[dns] provider` may name; all but `manual` need their sub-table.
const PROVIDERS: &[&str] = &[
    "rfc2136",
    "digitalocean",
    "cloudflare",
    "route53",
    "dreamhost",
    "manual",
];

const ON_FAILURE_HINT: &str = "expected \"fallback\", \"pause\" or \"abort\"";

/// Default limits per step kind (`None` = no limit): see docs/plan.md.
fn default_timeout(kind: &str) -> Option<Duration> {
    let m = |n: u64| Some(Duration::from_secs(n * 60));
    match kind {
        "gate" => m(10),
        "dns" => m(10),
        "announce" => m(2),
        "exec" => m(10),
        "verify" => m(15),
        _ => None,
    }
}

/// Parses and checks plan text; `path` names the file and anchors relative paths.
pub fn parse(path: &Path, text: &str) -> Report {
    let mut p = Parser {
        v: Validator {
            text,
            problems: Vec::new(),
        },
        warnings: Vec::new(),
        base: path.parent().unwrap_or(Path::new(".")).to_path_buf(),
        lowered_ttl: None,
        normal_ttl: None,
    };
    let plan = p.document(path, text);
    let mut diagnostics: Vec<Diagnostic> =
        p.v.problems
            .into_iter()
            .map(|pr| Diagnostic {
                severity: Severity::Error,
                line: pr.line,
                column: pr.column,
                message: pr.message,
            })
            .collect();
    let has_errors = !diagnostics.is_empty();
    diagnostics.extend(p.warnings);
    let plan = match (has_errors, plan) {
        (false, Some((plan, positions))) => {
            diagnostics.extend(risk::assess(&plan, &positions));
            Some(plan)
        }
        _ => None,
    };
    diagnostics.sort_by(|a, b| {
        (a.line, a.column, a.severity, &a.message).cmp(&(b.line, b.column, b.severity, &b.message))
    });
    diagnostics.dedup();
    Report {
        path: path.to_path_buf(),
        plan,
        diagnostics,
    }
}

/// Deserializes one spanned value; type errors come back with their span.
fn de<T: DeserializeOwned>(v: &Spanned<DeValue<'_>>) -> Result<T, toml::de::Error> {
    T::deserialize(ValueDeserializer::from(v.clone()))
}

struct Parser<'a> {
    /// Errors (the coordinator config's validator: sites and checks are checked by it).
    v: Validator<'a>,
    warnings: Vec<Diagnostic>,
    base: std::path::PathBuf,
    /// `[dns]` TTLs, known even when another part of `[dns]` is broken, so steps
    /// are still checked against them (`None` inside: written but invalid).
    lowered_ttl: Option<Option<u32>>,
    normal_ttl: Option<u32>,
}

/// What the step validators need to know about the rest of the plan.
struct Context {
    /// Check id → kind, from the raw tables (so a broken check does not cascade).
    checks: BTreeMap<String, String>,
    /// Validated checks by id (targets).
    valid_checks: BTreeMap<String, CheckConfig>,
    channels: BTreeSet<String>,
    /// `None`: not written; `Some(None)`: written but invalid (already reported).
    lowered_ttl: Option<Option<u32>>,
    normal_ttl: u32,
    /// Host for `same_code` when none is given: the first record's name.
    default_host: Option<String>,
    /// `[dns] provider`, for provider limits on TTLs.
    provider: String,
}

impl Context {
    fn checks_of_kind(&self, kind: &str) -> Vec<String> {
        self.checks
            .iter()
            .filter(|(_, k)| k.as_str() == kind)
            .map(|(id, _)| id.clone())
            .collect()
    }
}

impl<'a> Parser<'a> {
    fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.v.problem(span, message);
    }

    fn toml_error(&mut self, fallback: Range<usize>, e: toml::de::Error) {
        let span = e.span().unwrap_or(fallback);
        self.error(span, e.message().trim().to_string());
    }

    fn pos(&self, span: &Range<usize>) -> (usize, usize) {
        line_col(self.v.text, span.start)
    }

    fn document(&mut self, path: &Path, text: &'a str) -> Option<(Plan, risk::Positions)> {
        let (root, errors) = DeTable::parse_recoverable(text);
        if !errors.is_empty() {
            for e in errors {
                self.toml_error(0..0, e);
            }
            return None;
        }
        self.warnings.extend(secrets::scan(text, &root));
        let root_span = root.span();
        let root = root.into_inner();
        for (k, _) in root.iter() {
            if !SECTIONS.contains(&k.get_ref().as_ref()) {
                self.error(
                    k.span(),
                    format!(
                        "unknown section `{}`; a plan has: {}",
                        k.get_ref(),
                        SECTIONS.join(", ")
                    ),
                );
            }
        }
        let mut positions = risk::Positions {
            plan: (1, 1),
            ..Default::default()
        };
        let start = root_span.start..root_span.start;

        // [plan]
        let (name, description, tick) = match root.get("plan") {
            None => {
                self.error(
                    start.clone(),
                    "missing [plan] table: write [plan] with `name = \"…\"` at the top",
                );
                (None, String::new(), Some(DEFAULT_TICK))
            }
            Some(v) => {
                positions.plan = self.pos(&v.span());
                match de::<raw::RawHeader>(v) {
                    Err(e) => {
                        self.toml_error(v.span(), e);
                        (None, String::new(), Some(DEFAULT_TICK))
                    }
                    Ok(h) => {
                        let name = match &h.name {
                            Some(n) if !n.get_ref().trim().is_empty() => Some(n.get_ref().clone()),
                            Some(n) => {
                                self.error(n.span(), "`name` is empty");
                                None
                            }
                            None => {
                                self.error(v.span(), "[plan] needs `name`");
                                None
                            }
                        };
                        let description = h.description.map(|d| d.into_inner()).unwrap_or_default();
                        let tick = match &h.tick {
                            None => Some(DEFAULT_TICK),
                            Some(t) => self.tick(t),
                        };
                        (name, description, tick)
                    }
                }
            }
        };

        // [sites]
        let (old, new) = match root.get("sites") {
            None => {
                self.error(
                    start.clone(),
                    "missing [sites.old] and [sites.new] (each with `addresses = [\"IP\", …]`)",
                );
                (None, None)
            }
            Some(v) => match de::<config::raw::RawSites>(v) {
                Err(e) => {
                    self.toml_error(v.span(), e);
                    (None, None)
                }
                Ok(s) => (self.v.site("old", s.old), self.v.site("new", s.new)),
            },
        };

        // [[checks]]
        let mut raw_checks = Vec::new();
        let mut check_kinds = BTreeMap::new();
        for elem in self.array(&root, "checks") {
            if let Some(t) = elem.get_ref().as_table()
                && let Some(id) = t.get("id").and_then(|i| i.get_ref().as_str())
            {
                let kind = t
                    .get("kind")
                    .and_then(|k| k.get_ref().as_str())
                    .unwrap_or("")
                    .to_string();
                check_kinds.insert(id.to_string(), kind);
            }
            match de::<Spanned<config::raw::RawCheck>>(&elem) {
                Ok(c) => raw_checks.push(c),
                Err(e) => self.toml_error(elem.span(), e),
            }
        }
        let checks = self.v.checks(raw_checks);

        // [notifications]
        let channels = match root.get("notifications") {
            None => BTreeMap::new(),
            Some(v) => match de::<raw::RawNotifications>(v) {
                Err(e) => {
                    self.toml_error(v.span(), e);
                    BTreeMap::new()
                }
                Ok(n) => self.channels(n),
            },
        };
        // Names with errors still count as defined, so they do not cascade.
        let mut channel_names: BTreeSet<String> = channels.keys().cloned().collect();
        if let Some(n) = root
            .get("notifications")
            .and_then(|n| n.get_ref().as_table())
            && let Some(w) = n.get("webhooks").and_then(|w| w.get_ref().as_array())
        {
            for hook in w.iter() {
                if let Some(name) = hook
                    .get_ref()
                    .get("name")
                    .and_then(|x| x.get_ref().as_str())
                {
                    channel_names.insert(name.to_string());
                }
            }
        }

        // [alerts]
        let alerts = match root.get("alerts") {
            None => Some(Alerts::default()),
            Some(v) => match de::<raw::RawAlerts>(v) {
                Err(e) => {
                    self.toml_error(v.span(), e);
                    None
                }
                Ok(a) => self.alerts(a, &channel_names),
            },
        };

        // [dns]
        let dns = match root.get("dns") {
            None => {
                self.error(
                    start.clone(),
                    "missing [dns]: the zone, the provider and the records the plan switches",
                );
                None
            }
            Some(v) => self.dns(v, old.as_ref(), new.as_ref()),
        };

        let ctx = Context {
            valid_checks: checks.iter().map(|c| (c.id.clone(), c.clone())).collect(),
            checks: check_kinds,
            channels: channel_names,
            lowered_ttl: self.lowered_ttl,
            normal_ttl: self.normal_ttl.unwrap_or(3600),
            default_host: dns
                .as_ref()
                .and_then(|d| d.records.first())
                .map(|r| r.name.trim_end_matches('.').to_string()),
            provider: dns
                .as_ref()
                .map(|d| d.provider.provider.clone())
                .unwrap_or_default(),
        };

        // Step ids across both runbooks: unique, and known before guards refer to them.
        let forward_elems = self.array(&root, "steps");
        let fallback_elems = self.array(&root, "fallback");
        let mut step_ids: BTreeMap<String, Range<usize>> = BTreeMap::new();
        let mut forward_ids = BTreeSet::new();
        for (runbook, elems) in [
            (Runbook::Forward, &forward_elems),
            (Runbook::Fallback, &fallback_elems),
        ] {
            for elem in elems.iter() {
                let Some(id) = elem.get_ref().get("id") else {
                    continue;
                };
                let Some(s) = id.get_ref().as_str() else {
                    continue;
                };
                if let Some(first) = step_ids.get(s) {
                    let (line, _) = self.pos(first);
                    self.error(
                        id.span(),
                        format!(
                            "duplicate step id {s:?} (first defined on line {line}); ids must be unique across [[steps]] and [[fallback]]"
                        ),
                    );
                } else {
                    step_ids.insert(s.to_string(), id.span());
                    if runbook == Runbook::Forward {
                        forward_ids.insert(s.to_string());
                    }
                }
            }
        }
        if forward_elems.is_empty() {
            self.error(
                start.clone(),
                "the plan has no [[steps]]: write the forward runbook as [[steps]] tables",
            );
        }

        // [[steps]], then [[fallback]], each tracking the DNS state it leaves.
        let mut state = DnsState {
            site: Site::Old,
            ttl: ctx.normal_ttl,
        };
        let mut after_switch = None;
        let mut steps = Vec::new();
        for elem in &forward_elems {
            if let Some(s) = self.step(Runbook::Forward, elem, &ctx, &mut state, &mut positions) {
                if matches!(&s.action, Action::Dns(d) if d.sets_site && d.to.site == Site::New)
                    && after_switch.is_none()
                {
                    after_switch = Some(state);
                }
                steps.push(s);
            }
        }
        let mut state = after_switch.unwrap_or(DnsState {
            site: Site::New,
            ttl: ctx.lowered_ttl.flatten().unwrap_or(ctx.normal_ttl),
        });
        let mut fallback = Vec::new();
        for elem in &fallback_elems {
            if let Some(s) = self.step(Runbook::Fallback, elem, &ctx, &mut state, &mut positions) {
                fallback.push(s);
            }
        }

        // [[guards]]
        let mut guards = Vec::new();
        let mut guard_ids: BTreeMap<String, Range<usize>> = BTreeMap::new();
        for elem in self.array(&root, "guards") {
            match de::<raw::RawGuard>(&elem) {
                Err(e) => self.toml_error(elem.span(), e),
                Ok(g) => {
                    if let Some(id) = &g.id {
                        if let Some(first) = guard_ids.get(id.get_ref()) {
                            let (line, _) = self.pos(first);
                            self.error(
                                id.span(),
                                format!(
                                    "duplicate guard id {:?} (first defined on line {line})",
                                    id.get_ref()
                                ),
                            );
                        } else {
                            guard_ids.insert(id.get_ref().clone(), id.span());
                        }
                    }
                    let mut pos = risk::StepPos {
                        table: self.pos(&elem.span()),
                        keys: BTreeMap::new(),
                    };
                    for (key, span) in [
                        ("window", g.window.as_ref().map(|v| v.span())),
                        ("action", g.action.as_ref().map(|v| v.span())),
                        ("min_samples", g.min_samples.as_ref().map(|v| v.span())),
                    ] {
                        if let Some(span) = span {
                            pos.keys.insert(key, self.pos(&span));
                        }
                    }
                    if let Some(g) = self.guard(elem.span(), g, &ctx, &forward_ids, &step_ids) {
                        positions.guards.insert(g.id.clone(), pos);
                        guards.push(g);
                    }
                }
            }
        }

        let plan = Plan {
            path: path.to_path_buf(),
            name: name?,
            description,
            tick: tick?,
            old: old?,
            new: new?,
            checks,
            dns: dns?,
            guards,
            channels,
            alerts: alerts?,
            steps,
            fallback,
        };
        Some((plan, positions))
    }

    /// The elements of an array of tables (`[[key]]`); anything else is an error.
    fn array<'d>(&mut self, root: &DeTable<'d>, key: &str) -> Vec<Spanned<DeValue<'d>>> {
        match root.get(key) {
            None => Vec::new(),
            Some(v) => match v.get_ref() {
                DeValue::Array(a) if a.iter().all(|e| e.get_ref().is_table()) => {
                    a.iter().cloned().collect()
                }
                _ => {
                    self.error(
                        v.span(),
                        format!("`{key}` must be a list of tables, written [[{key}]]"),
                    );
                    Vec::new()
                }
            },
        }
    }

    fn ttl(&mut self, key: &str, v: &Spanned<String>) -> Option<u32> {
        let d = self.v.duration(key, v)?;
        if d.subsec_nanos() != 0 || d < Duration::from_secs(1) || d > Duration::from_secs(604_800) {
            self.error(
                v.span(),
                format!(
                    "`{key}` {:?}: a TTL is whole seconds between 1s and 7d",
                    v.get_ref()
                ),
            );
            return None;
        }
        Some(d.as_secs() as u32)
    }

    /// `[plan] tick`: 100ms to 1m.
    fn tick(&mut self, t: &Spanned<String>) -> Option<Duration> {
        let d = self.v.duration("tick", t)?;
        if !(Duration::from_millis(100)..=Duration::from_secs(60)).contains(&d) {
            self.error(
                t.span(),
                format!(
                    "`tick` {:?}: expected between 100ms and 1m (how often guards are evaluated)",
                    t.get_ref()
                ),
            );
            return None;
        }
        Some(d)
    }

    /// `[alerts]`; `channels` are the webhook names known so far (valid or not).
    fn alerts(&mut self, a: raw::RawAlerts, channels: &BTreeSet<String>) -> Option<Alerts> {
        let mut ok = true;
        let mut names = Vec::new();
        if let Some(list) = &a.channels {
            for c in list.get_ref() {
                let name = c.get_ref();
                if !channels.contains(name) {
                    let known: Vec<&str> = channels.iter().map(String::as_str).collect();
                    self.error(
                        c.span(),
                        format!(
                            "[alerts]: unknown channel {name:?}; channels are the `name`s of [[notifications.webhooks]]: {}",
                            if known.is_empty() { "(none)".to_string() } else { known.join(", ") }
                        ),
                    );
                    ok = false;
                } else if names.contains(name) {
                    self.error(
                        c.span(),
                        format!("[alerts]: channel {name:?} is listed twice"),
                    );
                    ok = false;
                } else {
                    names.push(name.clone());
                }
            }
        }
        let alertmanager = match &a.alertmanager {
            None => None,
            Some(am) => {
                let r = am.get_ref();
                match (&r.url, &r.url_env, &r.url_file) {
                    (Some(u), None, None) if is_http_url(u.get_ref()) => Some(UrlSource::Inline(
                        u.get_ref().trim_end_matches('/').to_string(),
                    )),
                    (Some(u), None, None) => {
                        self.error(
                            u.span(),
                            format!(
                                "`alertmanager.url` {:?}: expected an http(s) URL, e.g. \"http://alertmanager:9093\"",
                                u.get_ref()
                            ),
                        );
                        ok = false;
                        None
                    }
                    (None, Some(e), None) if valid_env_name(e.get_ref()) => {
                        Some(UrlSource::Secret(SecretSource::Env(e.get_ref().clone())))
                    }
                    (None, Some(e), None) => {
                        self.error(
                            e.span(),
                            format!(
                                "`url_env` {:?} is not an environment variable name",
                                e.get_ref()
                            ),
                        );
                        ok = false;
                        None
                    }
                    (None, None, Some(f)) if !f.get_ref().is_empty() => Some(UrlSource::Secret(
                        SecretSource::File(self.base.join(f.get_ref())),
                    )),
                    (None, None, Some(f)) => {
                        self.error(f.span(), "`url_file` is empty");
                        ok = false;
                        None
                    }
                    (None, None, None) => {
                        self.error(
                            am.span(),
                            "`alertmanager` needs `url = \"http://…:9093\"`, or `url_env`/`url_file` when the URL carries credentials",
                        );
                        ok = false;
                        None
                    }
                    _ => {
                        self.error(
                            am.span(),
                            "`alertmanager`: write one of `url`, `url_env` and `url_file`",
                        );
                        ok = false;
                        None
                    }
                }
            }
        };
        let no_evidence_after = match &a.no_evidence_after {
            None => Some(DEFAULT_NO_EVIDENCE_AFTER),
            Some(d) => match self.v.duration("no_evidence_after", d) {
                Some(v) if v >= Duration::from_secs(1) => Some(v),
                Some(_) => {
                    self.error(
                        d.span(),
                        format!("`no_evidence_after` {:?}: expected 1s or more", d.get_ref()),
                    );
                    None
                }
                None => None,
            },
        };
        if !ok {
            return None;
        }
        Some(Alerts {
            channels: names,
            alertmanager,
            no_evidence_after: no_evidence_after?,
        })
    }

    fn channels(&mut self, n: raw::RawNotifications) -> BTreeMap<String, Channel> {
        let mut out = BTreeMap::new();
        for hook in n.webhooks {
            let span = hook.span();
            let h = hook.into_inner();
            let mut ok = true;
            if let Some(u) = &h.url {
                self.error(
                    u.span(),
                    "a webhook URL is a secret and is never written in the plan: use `url_env = \"NAME\"` or `url_file = \"PATH\"`",
                );
                ok = false;
            }
            let name = match &h.name {
                Some(n) if valid_id(n.get_ref()) => Some(n.get_ref().clone()),
                Some(n) => {
                    self.error(
                        n.span(),
                        format!(
                            "webhook name {:?}: expected 1-64 characters from a-z, 0-9, '-' and '_'",
                            n.get_ref()
                        ),
                    );
                    None
                }
                None => {
                    self.error(span.clone(), "webhook is missing `name`");
                    None
                }
            };
            let kind = match &h.kind {
                Some(k) if k.get_ref() == "slack" => Some(ChannelKind::Slack),
                Some(k) if k.get_ref() == "json" => Some(ChannelKind::Json),
                Some(k) => {
                    self.error(
                        k.span(),
                        format!(
                            "webhook kind {:?}: expected \"slack\" or \"json\"",
                            k.get_ref()
                        ),
                    );
                    None
                }
                None => {
                    self.error(
                        span.clone(),
                        "webhook is missing `kind` (\"slack\" or \"json\")",
                    );
                    None
                }
            };
            let url = match (&h.url_env, &h.url_file) {
                (Some(e), None) if valid_env_name(e.get_ref()) => {
                    Some(SecretSource::Env(e.get_ref().clone()))
                }
                (Some(e), None) => {
                    self.error(
                        e.span(),
                        format!(
                            "`url_env` {:?} is not an environment variable name",
                            e.get_ref()
                        ),
                    );
                    None
                }
                (None, Some(f)) if !f.get_ref().is_empty() => {
                    Some(SecretSource::File(self.base.join(f.get_ref())))
                }
                (None, Some(f)) => {
                    self.error(f.span(), "`url_file` is empty");
                    None
                }
                (Some(_), Some(f)) => {
                    self.error(f.span(), "write one of `url_env` and `url_file`, not both");
                    None
                }
                (None, None) => {
                    if ok {
                        self.error(
                            span.clone(),
                            "webhook needs `url_env = \"NAME\"` or `url_file = \"PATH\"`",
                        );
                    }
                    None
                }
            };
            if let (Some(name), Some(kind), Some(url), true) = (name, kind, url, ok) {
                if out.contains_key(&name) {
                    if let Some(n) = &h.name {
                        self.error(n.span(), format!("duplicate webhook name {name:?}"));
                    }
                } else {
                    out.insert(name.clone(), Channel { name, kind, url });
                }
            }
        }
        out
    }

    fn dns(
        &mut self,
        v: &Spanned<DeValue<'_>>,
        old: Option<&SiteConfig>,
        new: Option<&SiteConfig>,
    ) -> Option<DnsPlan> {
        let Some(table) = v.get_ref().as_table() else {
            self.error(v.span(), "`dns` must be a table, written [dns]");
            return None;
        };
        // Split the provider's keys (its spec belongs to the dns module) from ours.
        let mut own = DeTable::new();
        let mut provider_keys = DeTable::new();
        for (k, val) in table.iter() {
            if raw::DNS_KEYS.contains(&k.get_ref().as_ref()) {
                own.insert(k.clone(), val.clone());
            } else {
                provider_keys.insert(k.clone(), val.clone());
            }
        }
        let provider_value = Spanned::new(v.span(), DeValue::Table(provider_keys.clone()));
        let provider = match de::<ProviderSpec>(&provider_value) {
            Ok(p) => Some(p),
            Err(e) => {
                let msg = e.message().trim().to_string();
                let misplaced = raw::DNS_KEYS
                    .iter()
                    .find(|k| msg.starts_with(&format!("unknown field `{k}`")));
                let msg = if let Some(k) = misplaced {
                    format!(
                        "[dns]: `{k}` is inside a provider sub-table: keys written after a [dns.PROVIDER] header belong to it; move `{k}` above that header"
                    )
                } else if msg.starts_with("unknown field") {
                    format!(
                        "[dns]: {msg}; the plan's own keys are {}",
                        raw::DNS_KEYS.join(", ")
                    )
                } else {
                    format!("[dns]: {msg}")
                };
                self.error(e.span().unwrap_or(v.span()), msg);
                None
            }
        };
        if let (Some(p), Some(pv)) = (&provider, provider_keys.get("provider")) {
            if !PROVIDERS.contains(&p.provider.as_str()) {
                self.error(
                    pv.span(),
                    format!(
                        "unknown DNS provider {:?}; expected one of {}",
                        p.provider,
                        PROVIDERS.join(", ")
                    ),
                );
            } else if p.provider != "manual" && provider_keys.get(p.provider.as_str()).is_none() {
                self.error(
                    pv.span(),
                    format!(
                        "provider {:?} needs its settings in [dns.{}]",
                        p.provider, p.provider
                    ),
                );
            }
            for (k, val) in provider_keys.iter() {
                let k = k.get_ref().as_ref();
                if k != "provider" && k != p.provider {
                    self.error(
                        val.span(),
                        format!(
                            "[dns.{k}] is given but the provider is {:?}: remove it or change `provider`",
                            p.provider
                        ),
                    );
                }
            }
        }
        let own = match de::<raw::RawDns>(&Spanned::new(v.span(), DeValue::Table(own))) {
            Ok(r) => r,
            Err(e) => {
                self.toml_error(v.span(), e);
                if table.get("lowered_ttl").is_some() {
                    self.lowered_ttl = Some(None);
                }
                return None;
            }
        };
        let mut ok = provider.is_some();
        let zone = match &own.zone {
            None => {
                self.error(v.span(), "[dns] needs `zone`, e.g. \"elm-lang.org\"");
                None
            }
            Some(z) => match normalize_name(z.get_ref()) {
                Some(n) => Some(n),
                None => {
                    self.error(
                        z.span(),
                        format!(
                            "`zone` {:?} is not a domain name, e.g. \"elm-lang.org\"",
                            z.get_ref()
                        ),
                    );
                    None
                }
            },
        };
        let mut nameservers = Vec::new();
        if let Some(ns) = &own.nameservers {
            for n in ns.get_ref() {
                let t = n.get_ref();
                match t
                    .parse::<SocketAddr>()
                    .ok()
                    .or_else(|| t.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53)))
                {
                    Some(a) => nameservers.push(a),
                    None => {
                        self.error(
                            n.span(),
                            format!(
                                "nameserver {t:?}: expected an IP address or IP:PORT (the zone's authoritative servers, queried directly)"
                            ),
                        );
                        ok = false;
                    }
                }
            }
        }
        let normal_ttl = match &own.normal_ttl {
            Some(t) => self.ttl("normal_ttl", t),
            None => Some(3600),
        };
        let lowered_ttl = match &own.lowered_ttl {
            Some(t) => self.ttl("lowered_ttl", t).map(Some),
            None => Some(None),
        };
        // A `lowered_ttl` misplaced into a provider table was reported there; do not
        // report the steps that use it as well.
        let misplaced = provider_keys.iter().any(|(_, v)| {
            v.get_ref()
                .as_table()
                .is_some_and(|t| t.get("lowered_ttl").is_some())
        });
        self.lowered_ttl = match &own.lowered_ttl {
            Some(_) => Some(lowered_ttl.flatten()),
            None if misplaced => Some(None),
            None => None,
        };
        self.normal_ttl = normal_ttl;
        if let (Some(Some(l)), Some(n), Some(raw_l)) = (lowered_ttl, normal_ttl, &own.lowered_ttl)
            && l >= n
        {
            self.error(
                raw_l.span(),
                format!("`lowered_ttl` ({l}s) must be lower than `normal_ttl` ({n}s)"),
            );
            ok = false;
        }
        let mut records: Vec<RecordPlan> = Vec::new();
        match &own.records {
            None => {
                self.error(
                    v.span(),
                    "[dns] has no records: add [[dns.records]] with `name` and `type`",
                );
                ok = false;
            }
            Some(rs) => {
                for r in rs {
                    let span = r.span();
                    let Some(zone) = &zone else { continue };
                    match self.record(span.clone(), r.get_ref(), zone, old, new) {
                        Some(rec) => {
                            if records
                                .iter()
                                .any(|x| x.name == rec.name && x.rtype == rec.rtype)
                            {
                                self.error(
                                    span,
                                    format!("record {} {} is listed twice", rec.name, rec.rtype),
                                );
                                ok = false;
                            } else {
                                records.push(rec);
                            }
                        }
                        None => ok = false,
                    }
                }
            }
        }
        if !ok {
            return None;
        }
        Some(DnsPlan {
            zone: zone?,
            provider: provider?,
            nameservers,
            records,
            lowered_ttl: lowered_ttl?,
            normal_ttl: normal_ttl?,
        })
    }

    fn record(
        &mut self,
        span: Range<usize>,
        r: &raw::RawRecord,
        zone: &str,
        old: Option<&SiteConfig>,
        new: Option<&SiteConfig>,
    ) -> Option<RecordPlan> {
        let name = match &r.name {
            None => {
                self.error(
                    span.clone(),
                    "record needs `name` (relative to the zone; \"@\" is the apex)",
                );
                None
            }
            Some(n) => {
                let t = n.get_ref().to_ascii_lowercase();
                let bare_zone = zone.trim_end_matches('.');
                if t == "@" {
                    Some(zone.to_string())
                } else if t.ends_with('.')
                    || t == bare_zone
                    || t.ends_with(&format!(".{bare_zone}"))
                {
                    self.error(
                        n.span(),
                        format!(
                            "record name {:?} must be relative to the zone {bare_zone}: write e.g. \"package\", or \"@\" for the apex",
                            n.get_ref()
                        ),
                    );
                    None
                } else {
                    match normalize_name(&format!("{t}.{zone}")) {
                        Some(fq) => Some(fq),
                        None => {
                            self.error(
                                n.span(),
                                format!("record name {:?} is not a valid DNS name", n.get_ref()),
                            );
                            None
                        }
                    }
                }
            }
        };
        let rtype = match &r.rtype {
            None => {
                self.error(
                    span.clone(),
                    "record needs `type` (\"A\", \"AAAA\" or \"CNAME\")",
                );
                None
            }
            Some(t) => match t.get_ref().to_ascii_uppercase().as_str() {
                "A" => Some(RecordType::A),
                "AAAA" => Some(RecordType::AAAA),
                "CNAME" => Some(RecordType::CNAME),
                _ => {
                    self.error(
                        t.span(),
                        format!(
                            "record type {:?}: expected \"A\", \"AAAA\" or \"CNAME\"",
                            t.get_ref()
                        ),
                    );
                    None
                }
            },
        };
        let rtype = rtype?;
        let mut values = |site: Site, given: &Option<Spanned<Vec<Spanned<String>>>>| {
            let site_cfg = match site {
                Site::Old => old,
                Site::New => new,
            };
            match given {
                Some(list) => {
                    let mut out = Vec::new();
                    if list.get_ref().is_empty() {
                        self.error(list.span(), format!("`{}` is empty", site.label()));
                        return None;
                    }
                    for val in list.get_ref() {
                        match canonical_value(rtype, val.get_ref()) {
                            Some(c) => out.push(c),
                            None => {
                                self.error(
                                    val.span(),
                                    format!("{:?} is not a valid {rtype} value", val.get_ref()),
                                );
                                return None;
                            }
                        }
                    }
                    out.sort();
                    out.dedup();
                    Some(out)
                }
                None => {
                    let site_cfg = site_cfg?;
                    let mut out: Vec<String> = site_cfg
                        .addresses
                        .iter()
                        .filter(|a| match rtype {
                            RecordType::A => a.is_ipv4(),
                            RecordType::AAAA => a.is_ipv6(),
                            RecordType::CNAME => false,
                        })
                        .map(|a| a.to_string())
                        .collect();
                    out.sort();
                    if out.is_empty() {
                        let what = match rtype {
                            RecordType::CNAME => "a CNAME takes no addresses".to_string(),
                            _ => format!(
                                "[sites.{}] has no {} address",
                                site.label(),
                                if rtype == RecordType::A {
                                    "IPv4"
                                } else {
                                    "IPv6"
                                }
                            ),
                        };
                        self.error(
                            span.clone(),
                            format!(
                                "{what}: write the record's values for that site as `{} = [\"…\"]`",
                                site.label()
                            ),
                        );
                        return None;
                    }
                    Some(out)
                }
            }
        };
        let old_values = values(Site::Old, &r.old);
        let new_values = values(Site::New, &r.new);
        Some(RecordPlan {
            name: name?,
            rtype,
            old: old_values?,
            new: new_values?,
        })
    }

    fn step(
        &mut self,
        runbook: Runbook,
        elem: &Spanned<DeValue<'_>>,
        ctx: &Context,
        state: &mut DnsState,
        positions: &mut risk::Positions,
    ) -> Option<Step> {
        let span = elem.span();
        let table = elem.get_ref().as_table()?;
        let label = table
            .get("id")
            .and_then(|i| i.get_ref().as_str())
            .unwrap_or("?")
            .to_string();
        let kind_name = table
            .get("kind")
            .and_then(|k| k.get_ref().as_str())
            .map(str::to_string);
        let allowed = kind_name.as_deref().and_then(raw::step_kind_keys);
        // Unknown keys: every one reported, then dropped so the rest can still be read.
        let mut known = DeTable::new();
        let mut ok = true;
        for (k, v) in table.iter() {
            if raw::STEP_KEYS.contains(&k.get_ref().as_ref()) {
                known.insert(k.clone(), v.clone());
            } else {
                let keys = match (&kind_name, allowed) {
                    (Some(kind), Some(a)) => format!(
                        "a `{kind}` step's keys are {} (and {})",
                        a.join(", "),
                        raw::COMMON_STEP_KEYS.join(", ")
                    ),
                    _ => format!("step keys are {}", raw::STEP_KEYS.join(", ")),
                };
                self.error(
                    k.span(),
                    format!("step {label:?}: unknown key `{}`; {keys}", k.get_ref()),
                );
                ok = false;
            }
        }
        let raw: RawStep = match de(&Spanned::new(span.clone(), DeValue::Table(known))) {
            Ok(r) => r,
            Err(e) => {
                self.toml_error(span, e);
                return None;
            }
        };
        let present = present_step_keys(&raw);
        let mut pos = risk::StepPos {
            table: self.pos(&span),
            keys: BTreeMap::new(),
        };
        for (k, s) in &present {
            pos.keys.insert(k, self.pos(s));
        }

        let id = match &raw.id {
            Some(id) if valid_id(id.get_ref()) => Some(id.get_ref().clone()),
            Some(id) => {
                self.error(
                    id.span(),
                    format!(
                        "step id {:?}: expected 1-64 characters from a-z, 0-9, '-' and '_'",
                        id.get_ref()
                    ),
                );
                None
            }
            None => {
                self.error(span.clone(), "step is missing `id`");
                None
            }
        };
        let Some(kind) = &raw.kind else {
            self.error(
                span,
                format!(
                    "step {label:?} is missing `kind` (one of {})",
                    raw::STEP_KINDS.join(", ")
                ),
            );
            return None;
        };
        let Some(allowed) = raw::step_kind_keys(kind.get_ref()) else {
            self.error(
                kind.span(),
                format!(
                    "step {label:?}: unknown kind {:?}; expected one of {}",
                    kind.get_ref(),
                    raw::STEP_KINDS.join(", ")
                ),
            );
            return None;
        };
        let kind_name = kind.get_ref().as_str();
        for (key, key_span) in &present {
            if raw::COMMON_STEP_KEYS.contains(key) || allowed.contains(key) {
                continue;
            }
            let msg = if *key == "once" {
                format!(
                    "step {label:?}: `once` is only for `exec` steps (a `{kind_name}` step has no side effect to guard)"
                )
            } else {
                format!(
                    "step {label:?}: `{key}` is not a key of a `{kind_name}` step; its keys are: {}",
                    allowed.join(", ")
                )
            };
            self.error(key_span.clone(), msg);
            ok = false;
        }

        let timeout = match &raw.timeout {
            Some(t) => match self.v.duration("timeout", t) {
                Some(d) if d.is_zero() => {
                    self.error(t.span(), "`timeout` must be longer than 0s");
                    ok = false;
                    None
                }
                Some(d) => Some(d),
                None => {
                    ok = false;
                    None
                }
            },
            None => default_timeout(kind_name),
        };
        let on_failure = match &raw.on_failure {
            None => OnFailure::Pause,
            Some(f) => match f.get_ref().as_str() {
                "fallback" if runbook == Runbook::Fallback => {
                    self.error(
                        f.span(),
                        "`on_failure = \"fallback\"` inside [[fallback]]: the fallback is already running; use \"pause\" or \"abort\"",
                    );
                    ok = false;
                    OnFailure::Pause
                }
                "fallback" => OnFailure::Fallback,
                "pause" => OnFailure::Pause,
                "abort" => OnFailure::Abort,
                other => {
                    self.error(
                        f.span(),
                        format!("`on_failure` {other:?}: {ON_FAILURE_HINT}"),
                    );
                    ok = false;
                    OnFailure::Pause
                }
            },
        };

        let action = match kind_name {
            "gate" => self.gate(span.clone(), &label, &raw, ctx).map(Action::Gate),
            "dns" => self
                .dns_step(span.clone(), &label, &raw, ctx, state)
                .map(Action::Dns),
            "wait" => self
                .wait(span.clone(), &label, &raw, ctx, *state)
                .map(Action::Wait),
            "announce" => self
                .announce(span.clone(), &label, &raw, ctx)
                .map(Action::Announce),
            "exec" => self.exec(span.clone(), &label, &raw).map(Action::Exec),
            "verify" => self
                .verify(span.clone(), &label, &raw, ctx, *state)
                .map(Action::Verify),
            "approve" => match &raw.prompt {
                Some(p) if !p.get_ref().trim().is_empty() => Some(Action::Approve {
                    prompt: p.get_ref().clone(),
                }),
                Some(p) => {
                    self.error(p.span(), "`prompt` is empty");
                    None
                }
                None => {
                    self.error(
                        span.clone(),
                        format!("step {label:?}: an `approve` step needs `prompt`"),
                    );
                    None
                }
            },
            "soak" => match &raw.duration {
                Some(d) => self
                    .v
                    .duration("duration", d)
                    .map(|duration| Action::Soak { duration }),
                None => {
                    self.error(
                        span.clone(),
                        format!("step {label:?}: a `soak` step needs `duration`, e.g. \"2d\""),
                    );
                    None
                }
            },
            _ => None,
        };
        if let Some(id) = &id {
            positions.steps.insert(id.clone(), pos);
            if runbook == Runbook::Fallback && positions.fallback_first.is_none() {
                positions.fallback_first = Some(self.pos(&span));
            }
        }
        if !ok {
            return None;
        }
        // A wait for evidence is limited by its `max`: one limit for the engine to honour.
        let timeout = match &action {
            Some(Action::Wait(w)) if w.max.is_some() => w.max,
            _ => timeout,
        };
        let (line, _) = self.pos(&span);
        Some(Step {
            id: id?,
            description: raw.description.map(|d| d.into_inner()).unwrap_or_default(),
            timeout,
            on_failure,
            line,
            action: action?,
        })
    }

    /// Check ids that must exist (with the kind they must have, if any).
    fn check_refs(
        &mut self,
        label: &str,
        key: &str,
        list: &Spanned<Vec<Spanned<String>>>,
        ctx: &Context,
        kind: Option<&str>,
    ) -> Option<Vec<String>> {
        let mut ok = true;
        let mut out = Vec::new();
        if list.get_ref().is_empty() {
            self.error(list.span(), format!("step {label:?}: `{key}` is empty"));
            return None;
        }
        for c in list.get_ref() {
            match ctx.checks.get(c.get_ref()) {
                None => {
                    let known: Vec<&str> = ctx.checks.keys().map(String::as_str).collect();
                    self.error(
                        c.span(),
                        format!(
                            "step {label:?}: `{key}` names unknown check {:?}; the plan's checks are: {}",
                            c.get_ref(),
                            if known.is_empty() { "(none)".to_string() } else { known.join(", ") }
                        ),
                    );
                    ok = false;
                }
                Some(k) if kind.is_some_and(|want| want != k) => {
                    self.error(
                        c.span(),
                        format!(
                            "step {label:?}: check {:?} is a `{k}` check; `{key}` needs `{}` checks",
                            c.get_ref(),
                            kind.unwrap_or_default()
                        ),
                    );
                    ok = false;
                }
                Some(_) => out.push(c.get_ref().clone()),
            }
        }
        ok.then_some(out)
    }

    fn min_regions(&mut self, raw: &RawStep) -> Option<u32> {
        match &raw.min_regions {
            None => Some(1),
            Some(n) if (1..=1000).contains(n.get_ref()) => Some(*n.get_ref() as u32),
            Some(n) => {
                self.error(
                    n.span(),
                    format!("`min_regions` {}: expected 1 or more", n.get_ref()),
                );
                None
            }
        }
    }

    fn gate(
        &mut self,
        span: Range<usize>,
        label: &str,
        raw: &RawStep,
        ctx: &Context,
    ) -> Option<Gate> {
        let mut ok = true;
        let mut status_pages = Vec::new();
        if let Some(pages) = &raw.status_pages {
            for page in pages.get_ref() {
                let p = page.get_ref();
                let name = p.name.as_ref().map(|n| n.get_ref().clone());
                if name.is_none() {
                    self.error(page.span(), "status page needs `name`");
                    ok = false;
                }
                let url = match &p.url {
                    Some(u) if is_http_url(u.get_ref()) => Some(u.get_ref().clone()),
                    Some(u) => {
                        self.error(
                            u.span(),
                            format!(
                                "status page `url` {:?}: expected an http(s) URL of a Statuspage JSON document, e.g. \"https://status.digitalocean.com/api/v2/status.json\"",
                                u.get_ref()
                            ),
                        );
                        None
                    }
                    None => {
                        self.error(page.span(), "status page needs `url`");
                        None
                    }
                };
                let max_indicator = match &p.max_indicator {
                    None => Some(Indicator::None),
                    Some(m) => {
                        let i = Indicator::parse(m.get_ref());
                        if i.is_none() {
                            self.error(
                                m.span(),
                                format!(
                                    "`max_indicator` {:?}: expected \"none\", \"minor\", \"maintenance\", \"major\" or \"critical\"",
                                    m.get_ref()
                                ),
                            );
                        }
                        i
                    }
                };
                match (name, url, max_indicator) {
                    (Some(name), Some(url), Some(max_indicator)) => status_pages.push(StatusPage {
                        name,
                        url,
                        max_indicator,
                    }),
                    _ => ok = false,
                }
            }
        }
        let same_code = match &raw.same_code {
            None => None,
            Some(sc) => {
                let s = sc.get_ref();
                let path = match &s.url_path {
                    Some(p) if p.get_ref().starts_with('/') => Some(p.get_ref().clone()),
                    Some(p) => {
                        self.error(
                            p.span(),
                            format!(
                                "`url_path` {:?}: expected a path starting with '/'",
                                p.get_ref()
                            ),
                        );
                        None
                    }
                    None => {
                        self.error(sc.span(), "`same_code` needs `url_path`, e.g. \"/\"");
                        None
                    }
                };
                let compare = match &s.compare {
                    None => Some(Compare::BodySha256),
                    Some(c) if c.get_ref() == "body_sha256" => Some(Compare::BodySha256),
                    Some(c) => match c.get_ref().strip_prefix("header:") {
                        Some(h) if !h.trim().is_empty() => {
                            Some(Compare::Header(h.trim().to_ascii_lowercase()))
                        }
                        _ => {
                            self.error(
                                c.span(),
                                format!(
                                    "`compare` {:?}: expected \"body_sha256\" or \"header:NAME\", e.g. \"header:X-Version\"",
                                    c.get_ref()
                                ),
                            );
                            None
                        }
                    },
                };
                let host = match (&s.host, &ctx.default_host) {
                    (Some(h), _) if valid_host_port(h.get_ref()) => Some(h.get_ref().clone()),
                    (Some(h), _) => {
                        self.error(
                            h.span(),
                            format!(
                                "`host` {:?}: expected a host name, optionally with a port, e.g. \"package.elm-lang.org\" or \"package.elm-lang.org:8443\"",
                                h.get_ref()
                            ),
                        );
                        None
                    }
                    (None, Some(h)) => Some(h.clone()),
                    (None, None) => {
                        self.error(sc.span(), "`same_code` needs `host` (there are no [[dns.records]] to take it from)");
                        None
                    }
                };
                match (path, compare, host) {
                    (Some(path), Some(compare), Some(host)) => Some(SameCode {
                        url: format!("https://{host}{path}"),
                        compare,
                    }),
                    _ => {
                        ok = false;
                        None
                    }
                }
            }
        };
        let registry_consistent = raw
            .registry_consistent
            .as_ref()
            .is_some_and(|r| *r.get_ref());
        let consistency_checks = ctx.checks_of_kind("registry_consistency");
        if let Some(r) = &raw.registry_consistent
            && *r.get_ref()
            && consistency_checks.is_empty()
        {
            self.error(
                r.span(),
                "`registry_consistent = true` needs a `registry_consistency` check in [[checks]]: the gate passes when it does",
            );
            ok = false;
        }
        let checks_passing = match &raw.checks_passing {
            None => Vec::new(),
            Some(list) => match self.check_refs(label, "checks_passing", list, ctx, None) {
                Some(l) => l,
                None => {
                    ok = false;
                    Vec::new()
                }
            },
        };
        let min_regions = self.min_regions(raw);
        let on_unknown = match &raw.on_unknown {
            None => OnUnknown::Fail,
            Some(u) => match u.get_ref().as_str() {
                "fail" => OnUnknown::Fail,
                "approve" => OnUnknown::Approve,
                other => {
                    self.error(
                        u.span(),
                        format!(
                            "`on_unknown` {other:?}: expected \"fail\" (an unreadable status page fails the gate at its timeout) or \"approve\" (the run waits for `cutover approve`)"
                        ),
                    );
                    ok = false;
                    OnUnknown::Fail
                }
            },
        };
        if let Some(u) = &raw.on_unknown
            && raw.status_pages.is_none()
        {
            self.error(
                u.span(),
                format!(
                    "step {label:?}: `on_unknown` says what an unreadable status page does, but the gate has no `status_pages`"
                ),
            );
            ok = false;
        }
        if status_pages.is_empty()
            && same_code.is_none()
            && !registry_consistent
            && checks_passing.is_empty()
            && ok
        {
            self.error(
                span,
                format!(
                    "step {label:?}: a `gate` needs at least one condition: status_pages, same_code, registry_consistent or checks_passing"
                ),
            );
            ok = false;
        }
        if !ok {
            return None;
        }
        Some(Gate {
            status_pages,
            same_code,
            registry_consistent,
            consistency_checks: if registry_consistent {
                consistency_checks
            } else {
                Vec::new()
            },
            checks_passing,
            min_regions: min_regions?,
            on_unknown,
        })
    }

    fn dns_step(
        &mut self,
        span: Range<usize>,
        label: &str,
        raw: &RawStep,
        ctx: &Context,
        state: &mut DnsState,
    ) -> Option<DnsChange> {
        if raw.set.is_none() && raw.ttl.is_none() {
            self.error(
                span,
                format!(
                    "step {label:?}: a `dns` step needs `set = \"new\"|\"old\"`, `ttl`, or both"
                ),
            );
            return None;
        }
        let from = *state;
        let mut to = from;
        let mut ok = true;
        if let Some(s) = &raw.set {
            match Site::parse(s.get_ref()) {
                Some(site) => to.site = site,
                None => {
                    self.error(
                        s.span(),
                        format!("`set` {:?}: expected \"new\" or \"old\"", s.get_ref()),
                    );
                    ok = false;
                }
            }
        }
        if let Some(t) = &raw.ttl {
            match t.get_ref().as_str() {
                "lowered" => match ctx.lowered_ttl {
                    Some(Some(l)) => to.ttl = l,
                    // Written but invalid: reported at [dns] already.
                    Some(None) => ok = false,
                    None => {
                        self.error(
                            t.span(),
                            "`ttl = \"lowered\"` but [dns] has no `lowered_ttl`",
                        );
                        ok = false;
                    }
                },
                "normal" => to.ttl = ctx.normal_ttl,
                _ => match self.ttl("ttl", t) {
                    Some(secs) => to.ttl = secs,
                    None => ok = false,
                },
            }
        }
        if let (Some(t), true) = (&raw.ttl, ok) {
            // Limits of the providers' APIs (REGISTRY.md): better said now than mid-cutover.
            let limit = match ctx.provider.as_str() {
                "dreamhost" => Some("DreamHost's API has no TTL parameter (DreamHost chooses the TTL): this step cannot take effect; use a provider that sets TTLs, or remove `ttl`".to_string()),
                "digitalocean" if to.ttl < 30 => Some(format!("DigitalOcean's minimum TTL is 30s, not {}s", to.ttl)),
                "cloudflare" if !(60..=86_400).contains(&to.ttl) => Some(format!("Cloudflare takes TTLs from 60s to 1d, not {}s", to.ttl)),
                _ => None,
            };
            if let Some(msg) = limit {
                self.error(t.span(), format!("step {label:?}: {msg}"));
                ok = false;
            }
        }
        if !ok {
            return None;
        }
        *state = to;
        Some(DnsChange {
            to,
            from,
            sets_site: raw.set.is_some(),
            sets_ttl: raw.ttl.is_some(),
        })
    }

    fn wait(
        &mut self,
        span: Range<usize>,
        label: &str,
        raw: &RawStep,
        ctx: &Context,
        state: DnsState,
    ) -> Option<Wait> {
        let max = match &raw.max {
            None => None,
            Some(m) => {
                if raw.until.is_none() {
                    self.error(
                        m.span(),
                        "`max` limits a wait for evidence (`until`); a `duration` wait ends by itself",
                    );
                    return None;
                }
                Some(self.v.duration("max", m)?)
            }
        };
        let dns_checks = |this: &mut Self, until: &raw::RawUntil, what: &str, at: Range<usize>| {
            match &until.checks {
                Some(list) => this.check_refs(label, "checks", list, ctx, Some("dns")),
                None => {
                    let all = ctx.checks_of_kind("dns");
                    if all.is_empty() {
                        this.error(
                            at,
                            format!(
                                "step {label:?}: waiting for {what} needs evidence from a `dns` check in [[checks]]"
                            ),
                        );
                        None
                    } else {
                        Some(all)
                    }
                }
            }
        };
        let until = match (&raw.duration, &raw.until) {
            (Some(d), None) => WaitFor::Duration(self.v.duration("duration", d)?),
            (None, Some(u)) => {
                let un = u.get_ref();
                match (&un.propagation, &un.ttl_drained) {
                    (Some(p), None) => {
                        let share = *p.get_ref();
                        if !(share > 0.0 && share <= 1.0) {
                            self.error(
                                p.span(),
                                format!("`propagation` {share}: expected a share of resolvers, 0 < x ≤ 1 (e.g. 0.95)"),
                            );
                            return None;
                        }
                        let site = match &un.site {
                            None => state.site,
                            Some(s) => match Site::parse(s.get_ref()) {
                                Some(site) => site,
                                None => {
                                    self.error(
                                        s.span(),
                                        format!(
                                            "`site` {:?}: expected \"new\" or \"old\"",
                                            s.get_ref()
                                        ),
                                    );
                                    return None;
                                }
                            },
                        };
                        let checks = dns_checks(self, un, "propagation", u.span())?;
                        WaitFor::Propagation {
                            share,
                            site,
                            checks,
                        }
                    }
                    (None, Some(t)) => {
                        if !*t.get_ref() {
                            self.error(t.span(), "`ttl_drained = false` waits for nothing: write `ttl_drained = true` or remove the step");
                            return None;
                        }
                        if let Some(s) = &un.site {
                            self.error(
                                s.span(),
                                "`site` goes with `propagation`, not `ttl_drained`",
                            );
                            return None;
                        }
                        let checks = dns_checks(self, un, "drained TTLs", u.span())?;
                        WaitFor::TtlDrained {
                            ttl: state.ttl,
                            checks,
                        }
                    }
                    _ => {
                        self.error(
                            u.span(),
                            "`until` needs exactly one of `propagation = 0.95` (with optional `site`) or `ttl_drained = true`",
                        );
                        return None;
                    }
                }
            }
            (Some(d), Some(_)) => {
                self.error(d.span(), "write `duration` or `until`, not both");
                return None;
            }
            (None, None) => {
                self.error(
                    span,
                    format!("step {label:?}: a `wait` step needs `duration = \"…\"` or `until = {{ … }}`"),
                );
                return None;
            }
        };
        let max = match &until {
            WaitFor::Duration(_) => None,
            _ => max.or_else(|| {
                raw.timeout
                    .as_ref()
                    .and_then(|t| config::parse_duration(t.get_ref()))
            }),
        };
        Some(Wait { until, max })
    }

    fn announce(
        &mut self,
        span: Range<usize>,
        label: &str,
        raw: &RawStep,
        ctx: &Context,
    ) -> Option<Announce> {
        let mut ok = true;
        let message = match &raw.message {
            Some(m) if !m.get_ref().trim().is_empty() => Some(m.get_ref().clone()),
            Some(m) => {
                self.error(m.span(), "`message` is empty");
                None
            }
            None => {
                self.error(
                    span,
                    format!("step {label:?}: an `announce` step needs `message`"),
                );
                None
            }
        };
        let mut channels = Vec::new();
        if let Some(list) = &raw.channels {
            for c in list.get_ref() {
                if ctx.channels.contains(c.get_ref()) {
                    channels.push(c.get_ref().clone());
                } else {
                    let known: Vec<&str> = ctx.channels.iter().map(String::as_str).collect();
                    self.error(
                        c.span(),
                        format!(
                            "step {label:?}: unknown channel {:?}; channels are the `name`s of [[notifications.webhooks]]: {}",
                            c.get_ref(),
                            if known.is_empty() { "(none)".to_string() } else { known.join(", ") }
                        ),
                    );
                    ok = false;
                }
            }
        }
        let maintenance_window = match &raw.maintenance_window {
            None => None,
            Some(w) => {
                let starts_in = match &w.get_ref().starts_in {
                    None => Some(Duration::ZERO),
                    Some(s) => self.v.duration("starts_in", s),
                };
                let duration = match &w.get_ref().duration {
                    None => {
                        self.error(
                            w.span(),
                            "`maintenance_window` needs `duration`, e.g. \"1h\"",
                        );
                        None
                    }
                    Some(d) => self.v.duration("duration", d),
                };
                match (starts_in, duration) {
                    (Some(starts_in), Some(duration)) => Some(MaintenanceWindow {
                        starts_in,
                        duration,
                    }),
                    _ => {
                        ok = false;
                        None
                    }
                }
            }
        };
        if !ok {
            return None;
        }
        Some(Announce {
            message: message?,
            channels,
            maintenance_window,
        })
    }

    fn exec(&mut self, span: Range<usize>, label: &str, raw: &RawStep) -> Option<Exec> {
        let mut ok = true;
        let command = match &raw.command {
            None => {
                self.error(
                    span,
                    format!(
                        "step {label:?}: an `exec` step needs `command = [\"program\", \"arg\", …]`"
                    ),
                );
                None
            }
            Some(c) if c.get_ref().is_empty() => {
                self.error(
                    c.span(),
                    "`command` is empty: expected [\"program\", \"arg\", …]",
                );
                None
            }
            Some(c) => {
                if c.get_ref()[0].get_ref().trim().is_empty() {
                    self.error(c.get_ref()[0].span(), "the program name is empty");
                    ok = false;
                }
                if c.get_ref().len() == 1 && c.get_ref()[0].get_ref().contains(' ') {
                    self.error(
                        c.get_ref()[0].span(),
                        "`command` is an argv list, not a shell string: split it, e.g. [\"ssh\", \"old\", \"systemctl\", \"stop\", \"x\"]",
                    );
                    ok = false;
                }
                Some(c.get_ref().iter().map(|a| a.get_ref().clone()).collect())
            }
        };
        let mut env = BTreeMap::new();
        if let Some(e) = &raw.env {
            for (k, v) in e.get_ref() {
                if !valid_env_name(k) {
                    self.error(
                        e.span(),
                        format!("`env` key {k:?} is not an environment variable name"),
                    );
                    ok = false;
                    continue;
                }
                let value = match v.get_ref().strip_prefix("env:") {
                    Some(name) if valid_env_name(name) => EnvValue::FromEnv(name.to_string()),
                    Some(name) => {
                        self.error(
                            v.span(),
                            format!("`env:{name}`: expected env:NAME with NAME an environment variable name"),
                        );
                        ok = false;
                        continue;
                    }
                    None => EnvValue::Literal(v.get_ref().clone()),
                };
                env.insert(k.clone(), value);
            }
        }
        if !ok {
            return None;
        }
        Some(Exec {
            command: command?,
            env,
            once: raw.once.as_ref().is_some_and(|o| *o.get_ref()),
            capture_output: raw.capture_output.as_ref().is_none_or(|c| *c.get_ref()),
        })
    }

    fn verify(
        &mut self,
        span: Range<usize>,
        label: &str,
        raw: &RawStep,
        ctx: &Context,
        state: DnsState,
    ) -> Option<Verify> {
        let mut ok = true;
        let site = match &raw.site {
            None => state.site,
            Some(s) => match Site::parse(s.get_ref()) {
                Some(site) => site,
                None => {
                    self.error(
                        s.span(),
                        format!("`site` {:?}: expected \"new\" or \"old\"", s.get_ref()),
                    );
                    return None;
                }
            },
        };
        let checks = match &raw.checks {
            None => {
                self.error(
                    span,
                    format!("step {label:?}: a `verify` step needs `checks = [\"check-id\", …]`"),
                );
                return None;
            }
            Some(list) => {
                let ids = self.check_refs(label, "checks", list, ctx, None);
                if let Some(ids) = &ids {
                    let want = match site {
                        Site::Old => TargetName::Old,
                        Site::New => TargetName::New,
                    };
                    for (id, c) in ids.iter().zip(list.get_ref()) {
                        if let Some(cfg) = ctx.valid_checks.get(id)
                            && !cfg.targets.contains(&want)
                            && !cfg.targets.contains(&TargetName::Dns)
                        {
                            self.error(
                                c.span(),
                                format!(
                                    "step {label:?}: check {id:?} runs on neither {:?} nor \"dns\", so it says nothing about the {} site",
                                    site.label(),
                                    site.label()
                                ),
                            );
                            ok = false;
                        }
                    }
                }
                ids
            }
        };
        let min_regions = self.min_regions(raw);
        let window = match &raw.window {
            None => Some(Duration::from_secs(60)),
            Some(w) => self.v.duration("window", w),
        };
        let max_error_ratio = match &raw.max_error_ratio {
            None => Some(0.0),
            Some(r) if (0.0..=1.0).contains(r.get_ref()) => Some(*r.get_ref()),
            Some(r) => {
                self.error(
                    r.span(),
                    format!("`max_error_ratio` {}: expected 0 ≤ x ≤ 1", r.get_ref()),
                );
                None
            }
        };
        if !ok {
            return None;
        }
        Some(Verify {
            checks: checks?,
            site,
            min_regions: min_regions?,
            window: window?,
            max_error_ratio: max_error_ratio?,
        })
    }

    fn guard(
        &mut self,
        span: Range<usize>,
        g: raw::RawGuard,
        ctx: &Context,
        forward_ids: &BTreeSet<String>,
        all_ids: &BTreeMap<String, Range<usize>>,
    ) -> Option<Guard> {
        let mut ok = true;
        let id = match &g.id {
            Some(id) if valid_id(id.get_ref()) => Some(id.get_ref().clone()),
            Some(id) => {
                self.error(
                    id.span(),
                    format!(
                        "guard id {:?}: expected 1-64 characters from a-z, 0-9, '-' and '_'",
                        id.get_ref()
                    ),
                );
                None
            }
            None => {
                self.error(span.clone(), "guard is missing `id`");
                None
            }
        };
        let label = id.clone().unwrap_or_else(|| "?".into());
        let Some(source_name) = &g.source else {
            self.error(span, format!("guard {label:?} is missing `source` (\"probe\", \"status_page\" or \"prometheus\")"));
            return None;
        };
        let allowed: &[&str] = match source_name.get_ref().as_str() {
            "probe" => &["check", "target", "min_samples", "min_probes", "paired"],
            "status_page" => &["url", "interval"],
            "prometheus" => &["url", "query", "interval"],
            other => {
                self.error(
                    source_name.span(),
                    format!("guard {label:?}: unknown source {other:?}; expected \"probe\", \"status_page\" or \"prometheus\""),
                );
                return None;
            }
        };
        for (key, v) in [
            ("check", g.check.as_ref().map(|v| v.span())),
            ("target", g.target.as_ref().map(|v| v.span())),
            ("url", g.url.as_ref().map(|v| v.span())),
            ("query", g.query.as_ref().map(|v| v.span())),
            ("min_samples", g.min_samples.as_ref().map(|v| v.span())),
            ("min_probes", g.min_probes.as_ref().map(|v| v.span())),
            ("paired", g.paired.as_ref().map(|v| v.span())),
            ("interval", g.interval.as_ref().map(|v| v.span())),
        ] {
            if let Some(s) = v
                && !allowed.contains(&key)
            {
                let why = match key {
                    "min_samples" | "min_probes" | "paired" => {
                        ": it is about probes, and this source has none; leave it out"
                    }
                    "interval" => {
                        ": probe guards are judged every `[plan] tick` over their `window`; `interval` is how often a status page or Prometheus is read"
                    }
                    _ => "",
                };
                self.error(
                    s,
                    format!(
                        "guard {label:?}: `{key}` does not go with source {:?}{why}",
                        source_name.get_ref()
                    ),
                );
                ok = false;
            }
        }
        let regional = source_name.get_ref() == "probe";
        let source = match source_name.get_ref().as_str() {
            "probe" => {
                let check = match &g.check {
                    None => {
                        self.error(
                            span.clone(),
                            format!("guard {label:?}: a probe guard needs `check`"),
                        );
                        None
                    }
                    Some(c) if !ctx.checks.contains_key(c.get_ref()) => {
                        self.error(
                            c.span(),
                            format!("guard {label:?}: unknown check {:?}", c.get_ref()),
                        );
                        None
                    }
                    Some(c) => Some(c.get_ref().clone()),
                };
                let target = match &g.target {
                    None => Some(TargetName::New),
                    Some(t) => match t.get_ref().as_str() {
                        "old" => Some(TargetName::Old),
                        "new" => Some(TargetName::New),
                        "dns" => Some(TargetName::Dns),
                        other => {
                            self.error(
                                t.span(),
                                format!("`target` {other:?}: expected \"old\", \"new\" or \"dns\""),
                            );
                            None
                        }
                    },
                };
                if let (Some(c), Some(t), Some(raw_t)) = (&check, target, &g.check)
                    && let Some(cfg) = ctx.valid_checks.get(c)
                    && !cfg.targets.contains(&t)
                {
                    self.error(
                        g.target.as_ref().map_or(raw_t.span(), |x| x.span()),
                        format!(
                            "guard {label:?}: check {c:?} does not run on target {:?}",
                            t.label()
                        ),
                    );
                    ok = false;
                }
                match (check, target) {
                    (Some(check), Some(target)) => Some(GuardSource::Probe { check, target }),
                    _ => None,
                }
            }
            kind => {
                let url = match &g.url {
                    Some(u) if is_http_url(u.get_ref()) => Some(u.get_ref().clone()),
                    Some(u) => {
                        self.error(
                            u.span(),
                            format!("`url` {:?}: expected an http(s) URL", u.get_ref()),
                        );
                        None
                    }
                    None => {
                        self.error(
                            span.clone(),
                            format!("guard {label:?}: a {kind} guard needs `url`"),
                        );
                        None
                    }
                };
                if kind == "prometheus" {
                    let query = match &g.query {
                        Some(q) if !q.get_ref().trim().is_empty() => Some(q.get_ref().clone()),
                        _ => {
                            self.error(
                                span.clone(),
                                format!(
                                    "guard {label:?}: a prometheus guard needs `query` (PromQL)"
                                ),
                            );
                            None
                        }
                    };
                    match (url, query) {
                        (Some(url), Some(query)) => Some(GuardSource::Prometheus { url, query }),
                        _ => None,
                    }
                } else {
                    url.map(|url| GuardSource::StatusPage { url })
                }
            }
        };
        let condition = match &g.condition {
            None => {
                self.error(
                    span.clone(),
                    format!("guard {label:?} needs `condition`, e.g. \"error_ratio > 0.2\""),
                );
                None
            }
            Some(c) => match parse_condition(c.get_ref(), source_name.get_ref()) {
                Ok(cond) => Some(cond),
                Err(msg) => {
                    self.error(
                        c.span(),
                        format!("guard {label:?}: condition {:?}: {msg}", c.get_ref()),
                    );
                    None
                }
            },
        };
        let window = match &g.window {
            None => Some(Duration::from_secs(60)),
            Some(w) => self.v.duration("window", w),
        };
        let quorum = match &g.quorum {
            None => Some(if regional { 2 } else { 1 }),
            Some(q) if !regional && *q.get_ref() != 1 => {
                self.error(q.span(), format!("guard {label:?}: `quorum` counts regions, and a {} source is not regional: leave it out", source_name.get_ref()));
                None
            }
            Some(q) if (1..=1000).contains(q.get_ref()) => Some(*q.get_ref() as u32),
            Some(q) => {
                self.error(
                    q.span(),
                    format!("`quorum` {}: expected 1 or more regions", q.get_ref()),
                );
                None
            }
        };
        let for_ticks = match &g.for_ticks {
            None => Some(3),
            Some(n) if (1..=10_000).contains(n.get_ref()) => Some(*n.get_ref() as u32),
            Some(n) => {
                self.error(
                    n.span(),
                    format!(
                        "`for` {}: expected 1 or more consecutive ticks",
                        n.get_ref()
                    ),
                );
                None
            }
        };
        let action = match &g.action {
            None => {
                self.error(
                    span.clone(),
                    format!(
                        "guard {label:?} needs `action` (\"fallback\", \"pause\" or \"alert\")"
                    ),
                );
                None
            }
            Some(a) => match a.get_ref().as_str() {
                "fallback" => Some(GuardAction::Fallback),
                "pause" => Some(GuardAction::Pause),
                "alert" => Some(GuardAction::Alert),
                other => {
                    self.error(
                        a.span(),
                        format!(
                            "`action` {other:?}: expected \"fallback\", \"pause\" or \"alert\""
                        ),
                    );
                    None
                }
            },
        };
        let armed_from = match &g.armed_from {
            None => {
                self.error(span.clone(), format!("guard {label:?} needs `armed_from` (the forward step id from which it watches)"));
                None
            }
            Some(s) if forward_ids.contains(s.get_ref()) => Some(s.get_ref().clone()),
            Some(s) if all_ids.contains_key(s.get_ref()) => {
                self.error(s.span(), format!("guard {label:?}: `armed_from` {:?} is a [[fallback]] step; guards arm on forward [[steps]]", s.get_ref()));
                None
            }
            Some(s) => {
                self.error(
                    s.span(),
                    format!(
                        "guard {label:?}: `armed_from` names unknown step {:?}",
                        s.get_ref()
                    ),
                );
                None
            }
        };
        let mode = match &g.mode {
            None => Some(GuardMode::Enforce),
            Some(m) => match m.get_ref().as_str() {
                "enforce" => Some(GuardMode::Enforce),
                "shadow" => Some(GuardMode::Shadow),
                other => {
                    self.error(
                        m.span(),
                        format!("`mode` {other:?}: expected \"enforce\" or \"shadow\""),
                    );
                    None
                }
            },
        };
        let min_samples = match &g.min_samples {
            None => Some(DEFAULT_MIN_SAMPLES),
            Some(n) if (1..=100_000).contains(n.get_ref()) => Some(*n.get_ref() as u32),
            Some(n) => {
                self.error(
                    n.span(),
                    format!(
                        "`min_samples` {}: expected 1 or more results per probe in the window",
                        n.get_ref()
                    ),
                );
                None
            }
        };
        let min_probes = match &g.min_probes {
            None => Some(DEFAULT_MIN_PROBES),
            Some(n) if (1..=10_000).contains(n.get_ref()) => Some(*n.get_ref() as u32),
            Some(n) => {
                self.error(
                    n.span(),
                    format!(
                        "`min_probes` {}: expected 1 or more probes per region",
                        n.get_ref()
                    ),
                );
                None
            }
        };
        // Pairing needs the same probes' results on the other site: a check on both old and new.
        // `None`: pairable; `Some(why)`: not (an empty reason for non-probe sources,
        // whose `paired` key is reported above).
        let unpairable = match &source {
            Some(GuardSource::Probe {
                target: TargetName::Dns,
                ..
            }) => Some("this guard watches target \"dns\"".to_string()),
            Some(GuardSource::Probe { check, .. }) => ctx.valid_checks.get(check).and_then(|cfg| {
                let both = cfg.targets.contains(&TargetName::Old)
                    && cfg.targets.contains(&TargetName::New);
                (!both).then(|| {
                    format!("check {check:?} does not run on both (add them to its `targets`)")
                })
            }),
            _ => Some(String::new()),
        };
        let paired = match (&g.paired, unpairable) {
            (None, why) => Some(why.is_none()),
            (Some(p), _) if !*p.get_ref() => Some(false),
            (Some(_), None) => Some(true),
            (Some(p), Some(why)) => {
                if regional {
                    self.error(
                        p.span(),
                        format!("guard {label:?}: `paired = true` compares each probe's results on old and new, but {why}"),
                    );
                }
                None
            }
        };
        let interval = match &g.interval {
            None => Some(DEFAULT_INTERVAL),
            Some(i) => match self.v.duration("interval", i) {
                Some(d) if (Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&d) => {
                    Some(d)
                }
                Some(_) => {
                    self.error(
                        i.span(),
                        format!(
                            "`interval` {:?}: expected between 1s and 1h (how often the source is read)",
                            i.get_ref()
                        ),
                    );
                    None
                }
                None => None,
            },
        };
        if !ok {
            return None;
        }
        Some(Guard {
            id: id?,
            source: source?,
            condition: condition?,
            window: window?,
            quorum: quorum?,
            for_ticks: for_ticks?,
            action: action?,
            armed_from: armed_from?,
            mode: mode?,
            min_samples: min_samples?,
            min_probes: min_probes?,
            paired: paired?,
            interval: interval?,
        })
    }
}

/// `metric op threshold`, with the metrics a source offers.
fn parse_condition(text: &str, source: &str) -> Result<Condition, String> {
    let parts: Vec<&str> = text.split_whitespace().collect();
    let [metric, op, threshold] = parts[..] else {
        return Err("expected `METRIC OP VALUE`, e.g. \"error_ratio > 0.2\"".into());
    };
    let metrics: &[&str] = match source {
        "probe" => &[
            "error_ratio",
            "latency_p50_ms",
            "latency_p95_ms",
            "latency_p99_ms",
            "dns_mismatch_ratio",
            "hash_mismatches",
        ],
        "status_page" => &["indicator"],
        _ => &["value"],
    };
    let metric = match metric {
        m if !metrics.contains(&m) => {
            return Err(format!("a {source} guard measures {}", metrics.join(", ")));
        }
        "error_ratio" => Metric::ErrorRatio,
        "latency_p50_ms" => Metric::LatencyMs(50),
        "latency_p95_ms" => Metric::LatencyMs(95),
        "latency_p99_ms" => Metric::LatencyMs(99),
        "dns_mismatch_ratio" => Metric::DnsMismatchRatio,
        "hash_mismatches" => Metric::HashMismatches,
        "indicator" => Metric::Indicator,
        _ => Metric::Value,
    };
    let op = match op {
        ">" => CompareOp::Gt,
        ">=" => CompareOp::Ge,
        "<" => CompareOp::Lt,
        "<=" => CompareOp::Le,
        other => return Err(format!("operator {other:?}: expected >, >=, < or <=")),
    };
    let threshold = if metric == Metric::Indicator {
        match Indicator::parse(threshold) {
            Some(i) => i.rank(),
            None => {
                return Err("an indicator is none, minor, maintenance, major or critical".into());
            }
        }
    } else {
        match threshold.parse::<f64>() {
            Ok(t) if t.is_finite() => t,
            _ => return Err(format!("{threshold:?} is not a number")),
        }
    };
    if matches!(metric, Metric::ErrorRatio | Metric::DnsMismatchRatio)
        && !(0.0..=1.0).contains(&threshold)
    {
        return Err("a ratio is between 0 and 1".into());
    }
    Ok(Condition {
        metric,
        op,
        threshold,
    })
}

/// Keys present in a raw step, with the span of their values.
fn present_step_keys(s: &RawStep) -> Vec<(&'static str, Range<usize>)> {
    let mut out = Vec::new();
    macro_rules! key {
        ($($field:ident),*) => {$(
            if let Some(v) = &s.$field {
                out.push((stringify!($field), v.span()));
            }
        )*};
    }
    key!(
        id,
        kind,
        description,
        timeout,
        on_failure,
        status_pages,
        same_code,
        registry_consistent,
        checks_passing,
        on_unknown,
        min_regions,
        set,
        ttl,
        duration,
        until,
        max,
        message,
        channels,
        maintenance_window,
        command,
        env,
        once,
        capture_output,
        checks,
        site,
        window,
        max_error_ratio,
        prompt
    );
    out
}

/// `same_code.host`: `NAME` or `NAME:PORT` (`[V6]:PORT`), nothing else of a URL.
fn valid_host_port(s: &str) -> bool {
    match reqwest::Url::parse(&format!("https://{s}/")) {
        Ok(u) => {
            u.host_str().is_some_and(|h| !h.is_empty())
                && u.path() == "/"
                && u.username().is_empty()
                && u.password().is_none()
                && u.query().is_none()
                && u.fragment().is_none()
        }
        Err(_) => false,
    }
}

fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

fn valid_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_http_url(s: &str) -> bool {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"));
    rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/'))
}

/// Lowercase, fully qualified with the trailing dot; `None` if not a DNS name.
fn normalize_name(s: &str) -> Option<String> {
    let t = s.trim().trim_end_matches('.').to_ascii_lowercase();
    let valid = !t.is_empty()
        && t.len() <= 253
        && t.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '*')
        });
    valid.then(|| format!("{t}."))
}

/// A record value in canonical text form.
fn canonical_value(rtype: RecordType, s: &str) -> Option<String> {
    match rtype {
        RecordType::A => s.parse::<Ipv4Addr>().ok().map(|a| a.to_string()),
        RecordType::AAAA => s.parse::<Ipv6Addr>().ok().map(|a| a.to_string()),
        RecordType::CNAME => normalize_name(s),
    }
}
