//! Guard alerts and their delivery: Slack-style and generic JSON webhooks (the
//! plan's `[notifications]` channels named in `[alerts] channels`) and the
//! Alertmanager v2 API (`POST {url}/api/v2/alerts`), so existing routing,
//! silences and inhibitions apply.
//!
//! The engine decides *when* to alert (a trip, the fallback starting and
//! finishing, a region without evidence for `[alerts] no_evidence_after`);
//! this module only builds the payloads and sends them. [`Alerter::send`]
//! never panics and never fails as a whole: every destination comes back as a
//! [`Delivery`] for the journal. Each request has a 5 s limit and is retried
//! with backoff on connection errors, timeouts, 429 and 5xx. URLs are read
//! from their secret when sending and never logged or returned: messages name
//! the channel.

use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use crate::plan::{ChannelKind, Plan, UrlSource};
use crate::sources::{describe_error, http_client, snippet};

/// Alert names (Alertmanager's `alertname`).
pub const GUARD_TRIPPED: &str = "CutoverGuardTripped";
/// The fallback runbook started (after a trip or `cutover rollback`).
pub const FALLBACK_STARTED: &str = "CutoverFallbackStarted";
/// The fallback runbook finished.
pub const FALLBACK_DONE: &str = "CutoverFallbackDone";
/// A guard's region has had no evidence for `[alerts] no_evidence_after`.
pub const GUARD_NO_EVIDENCE: &str = "CutoverGuardNoEvidence";

/// The destination name of the Alertmanager in [`Delivery::destination`]
/// (webhook channel names are lowercase ids, so they cannot collide with it).
pub const ALERTMANAGER: &str = "Alertmanager";

/// Per-request time limit.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// How urgent an alert is (Alertmanager's `severity` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertSeverity {
    /// Someone should look now: a guard tripped, a fallback is running.
    Critical,
    /// Someone should look soon: missing evidence, a finished fallback.
    Warning,
}

impl AlertSeverity {
    /// `critical` or `warning`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Critical => "critical",
            Self::Warning => "warning",
        }
    }
}

/// One alert, as every destination receives it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    /// One of [`GUARD_TRIPPED`], [`FALLBACK_STARTED`], [`FALLBACK_DONE`], [`GUARD_NO_EVIDENCE`].
    pub name: String,
    /// How urgent.
    pub severity: AlertSeverity,
    /// `[plan] name`.
    pub plan: String,
    /// The guard it is about, if any.
    pub guard: Option<String>,
    /// One line in plain words (a trip's summary).
    pub summary: String,
    /// More detail (may be empty).
    pub description: String,
    /// When it happened, Unix milliseconds.
    pub at_ms: i64,
    /// Structured evidence for JSON receivers (regions, values, …); `null` when none.
    pub details: serde_json::Value,
}

impl Alert {
    /// An alert with no description and no details.
    pub fn new(
        name: &str,
        severity: AlertSeverity,
        plan: &str,
        guard: Option<&str>,
        summary: impl Into<String>,
        at_ms: i64,
    ) -> Self {
        Self {
            name: name.to_string(),
            severity,
            plan: plan.to_string(),
            guard: guard.map(str::to_string),
            summary: summary.into(),
            description: String::new(),
            at_ms,
            details: serde_json::Value::Null,
        }
    }

    /// With a description.
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// With structured details.
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }

    /// The text a chat channel shows:
    /// `CutoverGuardTripped (critical) — plan P, guard G: SUMMARY`, then the description.
    pub fn text(&self) -> String {
        let mut t = format!(
            "{} ({}) — plan {}",
            self.name,
            self.severity.label(),
            self.plan
        );
        if let Some(g) = &self.guard {
            t.push_str(&format!(", guard {g}"));
        }
        t.push_str(&format!(": {}", self.summary));
        if !self.description.is_empty() {
            t.push('\n');
            t.push_str(&self.description);
        }
        t
    }

    /// The generic JSON webhook body.
    pub fn json_payload(&self) -> serde_json::Value {
        json!({
            "alert": self.name,
            "severity": self.severity.label(),
            "plan": self.plan,
            "guard": self.guard,
            "summary": self.summary,
            "description": self.description,
            "at": rfc3339(self.at_ms),
            "details": self.details,
        })
    }

    /// The Slack incoming-webhook body.
    pub fn slack_payload(&self) -> serde_json::Value {
        json!({ "text": self.text() })
    }

    /// The Alertmanager v2 `postableAlerts` body: a list of one alert whose labels
    /// (`alertname`, `plan`, `guard` when there is one, `severity`) identify it.
    pub fn alertmanager_payload(&self) -> serde_json::Value {
        let mut labels = serde_json::Map::new();
        labels.insert("alertname".into(), json!(self.name));
        labels.insert("plan".into(), json!(self.plan));
        if let Some(g) = &self.guard {
            labels.insert("guard".into(), json!(g));
        }
        labels.insert("severity".into(), json!(self.severity.label()));
        json!([{
            "labels": labels,
            "annotations": {"summary": self.summary, "description": self.description},
            "startsAt": rfc3339(self.at_ms),
        }])
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for Unix milliseconds (RFC 3339, UTC).
pub fn rfc3339(unix_ms: i64) -> String {
    let secs = crate::cli::utc(unix_ms);
    format!(
        "{}.{:03}Z",
        secs.trim_end_matches('Z'),
        unix_ms.rem_euclid(1000)
    )
}

/// What happened to one alert at one destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Delivery {
    /// The channel name, or [`ALERTMANAGER`].
    pub destination: String,
    /// Accepted (HTTP 2xx).
    pub ok: bool,
    /// `HTTP 200`, or what went wrong (never the URL).
    pub detail: String,
}

#[derive(Debug, Clone)]
enum Format {
    Slack,
    Json,
    Alertmanager,
}

#[derive(Debug, Clone)]
struct Destination {
    name: String,
    format: Format,
    url: UrlSource,
}

/// Sends alerts to the destinations a plan's `[alerts]` names.
#[derive(Debug, Clone)]
pub struct Alerter {
    client: reqwest::Client,
    destinations: Vec<Destination>,
    attempts: u32,
    backoff: Duration,
}

impl Alerter {
    /// The plan's `[alerts]` channels and Alertmanager; secrets are read at each send.
    /// Fails only if the HTTP client cannot be built.
    pub fn new(plan: &Plan) -> Result<Self, String> {
        let mut destinations = Vec::new();
        for name in &plan.alerts.channels {
            // Validation guarantees every listed channel exists.
            if let Some(ch) = plan.channels.get(name) {
                destinations.push(Destination {
                    name: name.clone(),
                    format: match ch.kind {
                        ChannelKind::Slack => Format::Slack,
                        ChannelKind::Json => Format::Json,
                    },
                    url: UrlSource::Secret(ch.url.clone()),
                });
            }
        }
        if let Some(url) = &plan.alerts.alertmanager {
            destinations.push(Destination {
                name: ALERTMANAGER.into(),
                format: Format::Alertmanager,
                url: url.clone(),
            });
        }
        Ok(Self {
            client: http_client(TIMEOUT)?,
            destinations,
            attempts: 3,
            backoff: Duration::from_millis(500),
        })
    }

    /// Tries each request `attempts` times (at least once), waiting `backoff`,
    /// then twice that, … between tries. The default is 3 tries from 500 ms.
    pub fn with_retries(mut self, attempts: u32, backoff: Duration) -> Self {
        self.attempts = attempts.max(1);
        self.backoff = backoff;
        self
    }

    /// Destination names in order: channels, then [`ALERTMANAGER`].
    pub fn destinations(&self) -> Vec<String> {
        self.destinations.iter().map(|d| d.name.clone()).collect()
    }

    /// True when the plan names nowhere to send alerts.
    pub fn is_empty(&self) -> bool {
        self.destinations.is_empty()
    }

    /// Sends `alert` to every destination at once; one [`Delivery`] per destination,
    /// in [`Alerter::destinations`] order. Takes at most about
    /// `attempts × (5 s + backoff)`; run it off the engine's path.
    pub async fn send(&self, alert: &Alert) -> Vec<Delivery> {
        let sends = self.destinations.iter().map(|d| self.deliver(d, alert));
        futures_util::future::join_all(sends).await
    }

    async fn deliver(&self, d: &Destination, alert: &Alert) -> Delivery {
        let result = self.try_deliver(d, alert).await;
        let (ok, detail) = match result {
            Ok(detail) => (true, detail),
            Err(detail) => {
                tracing::warn!(
                    destination = %d.name,
                    alert = %alert.name,
                    "alert not delivered: {detail}"
                );
                (false, detail)
            }
        };
        Delivery {
            destination: d.name.clone(),
            ok,
            detail,
        }
    }

    async fn try_deliver(&self, d: &Destination, alert: &Alert) -> Result<String, String> {
        let base = d.url.read().map_err(|e| format!("URL: {e}"))?;
        let (url, body) = match d.format {
            Format::Slack => (base.clone(), alert.slack_payload()),
            Format::Json => (base.clone(), alert.json_payload()),
            Format::Alertmanager => (
                format!("{}/api/v2/alerts", base.trim_end_matches('/')),
                alert.alertmanager_payload(),
            ),
        };
        // A secret URL must not reach the journal, even through an error message.
        let hide = |s: String| s.replace(&url, "<url>").replace(&base, "<url>");
        let mut last = String::new();
        for attempt in 0..self.attempts {
            if attempt > 0 {
                tokio::time::sleep(self.backoff * (1 << (attempt - 1).min(6))).await;
            }
            let tries = if attempt == 0 {
                String::new()
            } else {
                format!(" (attempt {})", attempt + 1)
            };
            match self.client.post(&url).json(&body).send().await {
                Ok(r) if r.status().is_success() => {
                    return Ok(format!("HTTP {}{tries}", r.status().as_u16()));
                }
                Ok(r) => {
                    let status = r.status();
                    let text = r.text().await.unwrap_or_default();
                    last = hide(format!("HTTP {status}: {}", snippet(&text)));
                    let retry = status.is_server_error() || status.as_u16() == 429;
                    if !retry {
                        return Err(last);
                    }
                }
                Err(e) => last = hide(describe_error(&e)),
            }
        }
        Err(format!(
            "{last} (after {} attempt{})",
            self.attempts,
            if self.attempts == 1 { "" } else { "s" }
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::json;

    use super::*;
    use crate::sources::testing::{closed_port, serve};

    /// A plan whose `[alerts]` names the channels and Alertmanager given; webhook
    /// URLs are written to files next to it (as `url_file` would have them).
    fn plan(dir: &Path, hooks: &[(&str, &str, String)], am: Option<String>) -> Plan {
        let mut text = format!(
            "[plan]\nname = \"elm\"\n{}",
            crate::plan::testing::SITES_AND_DNS
        ) + r#"[[steps]]
id = "ok"
kind = "approve"
prompt = "?"
"#;
        let mut names = Vec::new();
        for (name, kind, url) in hooks {
            std::fs::write(dir.join(format!("{name}.url")), format!("{url}\n")).unwrap();
            text.push_str(&format!(
                "[[notifications.webhooks]]\nname = \"{name}\"\nkind = \"{kind}\"\nurl_file = \"{name}.url\"\n"
            ));
            names.push(format!("\"{name}\""));
        }
        text.push_str(&format!("[alerts]\nchannels = [{}]\n", names.join(", ")));
        if let Some(am) = am {
            text.push_str(&format!("alertmanager = {{ url = \"{am}\" }}\n"));
        }
        let report = crate::plan::parse(&dir.join("plan.toml"), &text);
        let diags = report.render();
        report.plan.unwrap_or_else(|| panic!("test plan: {diags}"))
    }

    fn tripped() -> Alert {
        // 2026-11-27T03:12:07.250Z
        Alert::new(
            GUARD_TRIPPED,
            AlertSeverity::Critical,
            "elm",
            Some("install-new"),
            "3 of 3 regions saw install-core failures on new",
            1_795_749_127_250,
        )
        .with_description("asia 1.00 (3/3 probes, 9 samples)")
        .with_details(json!({"regions": [{"region": "asia", "value": 1.0}]}))
    }

    #[test]
    fn rfc3339_has_milliseconds_and_z() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_749_127_250), "2026-11-27T03:12:07.250Z");
    }

    #[tokio::test]
    async fn each_destination_gets_its_own_payload() {
        let slack = serve(vec![(200, "ok".into())]).await;
        let hook = serve(vec![(204, String::new())]).await;
        let am = serve(vec![(200, String::new())]).await;
        let dir = tempfile::tempdir().unwrap();
        let p = plan(
            dir.path(),
            &[
                (
                    "ops-slack",
                    "slack",
                    format!("{}/services/T0/B0/xyz", slack.url()),
                ),
                ("feed", "json", format!("{}/hook", hook.url())),
            ],
            Some(format!("{}/", am.url())),
        );
        let alerter = Alerter::new(&p).unwrap();
        assert_eq!(
            alerter.destinations(),
            vec!["ops-slack", "feed", "Alertmanager"]
        );
        let d = alerter.send(&tripped()).await;
        assert_eq!(
            d,
            vec![
                Delivery {
                    destination: "ops-slack".into(),
                    ok: true,
                    detail: "HTTP 200".into()
                },
                Delivery {
                    destination: "feed".into(),
                    ok: true,
                    detail: "HTTP 204".into()
                },
                Delivery {
                    destination: "Alertmanager".into(),
                    ok: true,
                    detail: "HTTP 200".into()
                },
            ]
        );

        let r = slack.requests();
        assert_eq!(
            (r[0].method.as_str(), r[0].target.as_str()),
            ("POST", "/services/T0/B0/xyz")
        );
        assert_eq!(r[0].header("content-type"), Some("application/json"));
        assert_eq!(
            r[0].json(),
            json!({"text": "CutoverGuardTripped (critical) — plan elm, guard install-new: 3 of 3 regions saw install-core failures on new\nasia 1.00 (3/3 probes, 9 samples)"})
        );

        let r = hook.requests();
        assert_eq!(r[0].target, "/hook");
        assert_eq!(
            r[0].json(),
            json!({
                "alert": "CutoverGuardTripped",
                "severity": "critical",
                "plan": "elm",
                "guard": "install-new",
                "summary": "3 of 3 regions saw install-core failures on new",
                "description": "asia 1.00 (3/3 probes, 9 samples)",
                "at": "2026-11-27T03:12:07.250Z",
                "details": {"regions": [{"region": "asia", "value": 1.0}]},
            })
        );

        let r = am.requests();
        assert_eq!(r[0].target, "/api/v2/alerts");
        assert_eq!(
            r[0].json(),
            json!([{
                "labels": {
                    "alertname": "CutoverGuardTripped",
                    "plan": "elm",
                    "guard": "install-new",
                    "severity": "critical",
                },
                "annotations": {
                    "summary": "3 of 3 regions saw install-core failures on new",
                    "description": "asia 1.00 (3/3 probes, 9 samples)",
                },
                "startsAt": "2026-11-27T03:12:07.250Z",
            }])
        );
    }

    #[tokio::test]
    async fn an_alert_without_a_guard_has_no_guard_label() {
        let am = serve(vec![(200, String::new())]).await;
        let dir = tempfile::tempdir().unwrap();
        let p = plan(dir.path(), &[], Some(am.url()));
        let done = Alert::new(
            FALLBACK_DONE,
            AlertSeverity::Warning,
            "elm",
            None,
            "DNS points at old again",
            0,
        );
        let d = Alerter::new(&p).unwrap().send(&done).await;
        assert!(d[0].ok, "{d:?}");
        assert_eq!(
            am.requests()[0].json()[0]["labels"],
            json!({"alertname": "CutoverFallbackDone", "plan": "elm", "severity": "warning"})
        );
        assert_eq!(
            done.json_payload()["guard"],
            serde_json::Value::Null,
            "JSON receivers see an explicit null"
        );
    }

    #[tokio::test]
    async fn a_500_is_retried_and_a_400_is_not() {
        let flaky = serve(vec![
            (500, "boom".into()),
            (503, "busy".into()),
            (200, "ok".into()),
        ])
        .await;
        let broken = serve(vec![(400, "invalid_payload".into())]).await;
        let down = serve(vec![(500, "still down".into())]).await;
        let dir = tempfile::tempdir().unwrap();
        let p = plan(
            dir.path(),
            &[
                ("flaky", "slack", flaky.url()),
                ("broken", "slack", broken.url()),
                ("down", "json", down.url()),
            ],
            None,
        );
        let alerter = Alerter::new(&p)
            .unwrap()
            .with_retries(3, Duration::from_millis(10));
        let d = alerter.send(&tripped()).await;
        assert_eq!(
            d[0],
            Delivery {
                destination: "flaky".into(),
                ok: true,
                detail: "HTTP 200 (attempt 3)".into()
            }
        );
        assert_eq!(flaky.requests().len(), 3);
        assert_eq!(
            d[1],
            Delivery {
                destination: "broken".into(),
                ok: false,
                detail: "HTTP 400 Bad Request: invalid_payload".into()
            }
        );
        assert_eq!(broken.requests().len(), 1, "a 4xx is not retried");
        assert_eq!(
            d[2],
            Delivery {
                destination: "down".into(),
                ok: false,
                detail: "HTTP 500 Internal Server Error: still down (after 3 attempts)".into()
            }
        );
        assert_eq!(down.requests().len(), 3);
    }

    #[tokio::test]
    async fn refused_connections_and_missing_secrets_are_clear_and_hide_the_url() {
        let port = closed_port().await;
        let secret = format!("http://127.0.0.1:{port}/services/T0/B0/s3cr3t");
        let dir = tempfile::tempdir().unwrap();
        let mut p = plan(dir.path(), &[("ops", "slack", secret.clone())], None);
        // A second channel whose URL is in an unset environment variable.
        p.channels.insert(
            "env-hook".into(),
            crate::plan::Channel {
                name: "env-hook".into(),
                kind: ChannelKind::Json,
                url: crate::plan::SecretSource::Env("CUTOVER_TEST_UNSET_HOOK_URL".into()),
            },
        );
        p.alerts.channels.push("env-hook".into());
        let alerter = Alerter::new(&p)
            .unwrap()
            .with_retries(2, Duration::from_millis(10));
        let d = alerter.send(&tripped()).await;
        assert!(!d[0].ok);
        assert!(
            d[0].detail.starts_with("cannot connect: ")
                && d[0].detail.ends_with("(after 2 attempts)"),
            "{}",
            d[0].detail
        );
        assert!(
            d[0].detail.to_lowercase().contains("refused"),
            "{}",
            d[0].detail
        );
        assert!(!d[0].detail.contains("s3cr3t"), "{}", d[0].detail);
        assert_eq!(
            d[1],
            Delivery {
                destination: "env-hook".into(),
                ok: false,
                detail: "URL: environment variable CUTOVER_TEST_UNSET_HOOK_URL is not set".into()
            }
        );
    }

    #[tokio::test]
    async fn a_plan_without_alerts_sends_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = plan(dir.path(), &[], None);
        p.alerts = crate::plan::Alerts::default();
        let alerter = Alerter::new(&p).unwrap();
        assert!(alerter.is_empty());
        assert!(alerter.send(&tripped()).await.is_empty());
    }
}
