//! What each step kind does. Every function here returns a [`StepResult`];
//! the caller ([`super::Engine::run_step`]) writes it to the journal.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

use super::evidence::{self, RegionProgress};
use super::{Engine, plan_dir};
use crate::dns::RecordSet;
use crate::evidence::now_ms;
use crate::journal::RunRecord;
use crate::plan::{
    Action, Announce, ChannelKind, Compare, EnvValue, Exec, Gate, Indicator, OnUnknown, Plan,
    SecretSource, Site, Step, WaitFor, human_duration,
};

/// Bytes of stdout and of stderr kept in the journal per exec step.
pub const OUTPUT_LIMIT: usize = 64 * 1024;

/// How a step attempt ended.
#[derive(Debug)]
pub enum StepResult {
    /// Done; detail for the journal.
    Ok {
        detail: serde_json::Value,
        output: String,
    },
    /// Failed; the step's `on_failure` decides what follows.
    Failed { message: String, output: String },
    /// Needs the operator (`cutover approve`).
    Ask {
        kind: &'static str,
        question: String,
    },
    /// Stopped by pause/abort/rollback/shutdown; nothing recorded.
    Interrupted,
}

fn ok(detail: serde_json::Value) -> StepResult {
    StepResult::Ok {
        detail,
        output: String::new(),
    }
}

fn failed(message: impl Into<String>) -> StepResult {
    StepResult::Failed {
        message: message.into(),
        output: String::new(),
    }
}

/// Everything a step needs.
pub struct Ctx<'a> {
    pub engine: &'a Engine,
    pub plan: &'a Arc<Plan>,
    pub run: &'a RunRecord,
    pub step: &'a Step,
    /// First intent since the last outcome.
    pub started_ms: i64,
    /// `started_ms + timeout`.
    pub deadline_ms: Option<i64>,
    /// The operator approved this step (approve, manual DNS).
    pub approved: bool,
    pub cancel: CancellationToken,
}

impl Ctx<'_> {
    fn past(&self, deadline: Option<i64>) -> bool {
        deadline.is_some_and(|d| now_ms() >= d)
    }

    fn remaining(&self, deadline: Option<i64>) -> Option<Duration> {
        deadline.map(|d| Duration::from_millis((d - now_ms()).max(0) as u64))
    }

    fn live(&self, waiting_for: String, regions: Vec<RegionProgress>, deadline: Option<i64>) {
        self.engine.update_live(|l| {
            l.waiting_for = waiting_for;
            l.regions = regions;
            if deadline.is_some() {
                l.deadline_ms = deadline;
            }
        });
    }

    async fn tick(&self) {
        tokio::time::sleep(self.engine.inner.deps.poll).await;
    }

    /// The earlier of the step timeout and `other`.
    fn earliest(&self, other: Option<i64>) -> Option<i64> {
        match (self.deadline_ms, other) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// One line saying what a step will do, for the intent entry.
pub fn describe(plan: &Plan, step: &Step) -> String {
    match &step.action {
        Action::Dns(c) => plan
            .dns
            .records
            .iter()
            .map(|r| r.desired(c.to).describe())
            .collect::<Vec<_>>()
            .join("; "),
        Action::Exec(e) => e.command.join(" "),
        Action::Wait(w) => match &w.until {
            WaitFor::Duration(d) => format!("wait {}", human_duration(*d)),
            WaitFor::Propagation { share, site, .. } => {
                format!(
                    "until {:.0}% of resolvers answer {} in every region",
                    share * 100.0,
                    site.label()
                )
            }
            WaitFor::TtlDrained { ttl, .. } => {
                format!("until remaining TTLs ≤ {ttl}s in every region")
            }
        },
        Action::Announce(a) => a.message.clone(),
        Action::Approve { prompt } => prompt.clone(),
        Action::Soak { duration } => format!("soak {}", human_duration(*duration)),
        Action::Verify(v) => format!(
            "{} on {} from ≥ {} regions",
            v.checks.join(", "),
            v.site.label(),
            v.min_regions
        ),
        Action::Gate(_) => "gate".to_string(),
    }
}

/// Runs one attempt of a step.
pub async fn execute(ctx: &Ctx<'_>) -> StepResult {
    match &ctx.step.action {
        Action::Gate(g) => gate(ctx, g).await,
        Action::Dns(change) => {
            let desired: Vec<RecordSet> = ctx
                .plan
                .dns
                .records
                .iter()
                .map(|r| r.desired(change.to))
                .collect();
            dns(ctx, &desired).await
        }
        Action::Wait(w) => wait(ctx, &w.until, w.max).await,
        Action::Announce(a) => announce(ctx, a).await,
        Action::Exec(e) => exec(ctx, e).await,
        Action::Verify(v) => {
            let deadline = ctx.deadline_ms;
            loop {
                let snap = ctx.engine.inner.deps.evidence.snapshot();
                let (pass, regions) = evidence::checks_pass(
                    ctx.plan,
                    &snap,
                    &v.checks,
                    v.site,
                    v.max_error_ratio,
                    v.min_regions,
                );
                if pass {
                    return ok(json!({"regions": progress_json(&regions)}));
                }
                let waiting = format!(
                    "checks {} to pass on {} from ≥ {} region(s)",
                    v.checks.join(", "),
                    v.site.label(),
                    v.min_regions
                );
                if ctx.past(deadline) {
                    return failed(format!(
                        "{waiting}: not within the timeout; {}",
                        summary(&regions)
                    ));
                }
                ctx.live(waiting, regions, deadline);
                ctx.tick().await;
            }
        }
        Action::Approve { prompt } => {
            if ctx.approved {
                ok(json!({"approved": true}))
            } else {
                StepResult::Ask {
                    kind: "approve",
                    question: format!("{prompt} — `cutover approve --step {}`", ctx.step.id),
                }
            }
        }
        Action::Soak { duration } => {
            let until = ctx.started_ms + duration.as_millis() as i64;
            ctx.live(
                format!("soak for {}", human_duration(*duration)),
                vec![],
                Some(until),
            );
            sleep_until(until).await;
            ok(json!({"soaked_ms": duration.as_millis() as u64}))
        }
    }
}

async fn sleep_until(ms: i64) {
    let left = (ms - now_ms()).max(0) as u64;
    tokio::time::sleep(Duration::from_millis(left)).await;
}

fn progress_json(p: &[RegionProgress]) -> serde_json::Value {
    p.iter()
        .map(|r| {
            (
                r.region.clone(),
                json!({"value": r.value, "done": r.done, "detail": r.detail}),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn summary(p: &[RegionProgress]) -> String {
    if p.is_empty() {
        return "no evidence from any region".to_string();
    }
    p.iter()
        .map(|r| format!("{}: {}", r.region, r.detail))
        .collect::<Vec<_>>()
        .join("; ")
}

async fn wait(ctx: &Ctx<'_>, until: &WaitFor, max: Option<Duration>) -> StepResult {
    let max_deadline = ctx.earliest(max.map(|m| ctx.started_ms + m.as_millis() as i64));
    match until {
        WaitFor::Duration(d) => {
            let end = ctx.started_ms + d.as_millis() as i64;
            ctx.live(format!("wait {}", human_duration(*d)), vec![], Some(end));
            sleep_until(end).await;
            ok(json!({"waited_ms": d.as_millis() as u64}))
        }
        WaitFor::Propagation {
            share,
            site,
            checks,
        } => {
            let checks = evidence::dns_checks(ctx.plan, checks);
            loop {
                let ev = &ctx.engine.inner.deps.evidence;
                let p = evidence::propagation(
                    &ev.snapshot(),
                    &ev.connected_regions(),
                    &checks,
                    *site,
                    *share,
                );
                if evidence::all_done(&p) {
                    return ok(json!({"regions": progress_json(&p)}));
                }
                let waiting = format!(
                    "propagation: ≥ {:.0}% of resolvers answer {} in every region with probes",
                    share * 100.0,
                    site.label()
                );
                if ctx.past(max_deadline) {
                    return failed(format!("{waiting}: not reached in time; {}", summary(&p)));
                }
                ctx.live(waiting, p, max_deadline);
                ctx.tick().await;
            }
        }
        WaitFor::TtlDrained { ttl, checks } => {
            let checks = evidence::dns_checks(ctx.plan, checks);
            loop {
                let ev = &ctx.engine.inner.deps.evidence;
                let p =
                    evidence::ttl_drained(&ev.snapshot(), &ev.connected_regions(), &checks, *ttl);
                if evidence::all_done(&p) {
                    return ok(json!({"regions": progress_json(&p)}));
                }
                let waiting =
                    format!("TTL drained: remaining TTL ≤ {ttl}s at every region's resolvers");
                if ctx.past(max_deadline) {
                    return failed(format!("{waiting}: not reached in time; {}", summary(&p)));
                }
                ctx.live(waiting, p, max_deadline);
                ctx.tick().await;
            }
        }
    }
}

async fn dns(ctx: &Ctx<'_>, desired: &[RecordSet]) -> StepResult {
    let backend = &ctx.engine.inner.deps.dns;
    match backend.manual_instructions(ctx.plan, desired) {
        Err(e) => return failed(e),
        Ok(Some(text)) if !ctx.approved => {
            return StepResult::Ask {
                kind: "manual_dns",
                question: text,
            };
        }
        Ok(_) => {}
    }
    ctx.live(
        format!(
            "DNS: apply and verify {} record set(s) at the authoritative servers",
            desired.len()
        ),
        vec![],
        None,
    );
    let budget = ctx
        .remaining(ctx.deadline_ms)
        .unwrap_or(Duration::from_secs(300))
        .max(Duration::from_secs(1));
    match backend.apply_and_verify(ctx.plan, desired, budget).await {
        Ok(summary) => ok(json!({
            "records": desired.iter().map(RecordSet::describe).collect::<Vec<_>>(),
            "verified": summary,
        })),
        Err(e) => failed(e),
    }
}

/// Reads a pipe, keeping at most `limit` bytes (the rest is drained and counted).
async fn bounded<R: tokio::io::AsyncRead + Unpin>(mut r: R, limit: usize) -> (Vec<u8>, usize) {
    let mut kept = Vec::new();
    let mut dropped = 0;
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return (kept, dropped),
            Ok(n) => {
                let room = limit.saturating_sub(kept.len()).min(n);
                kept.extend_from_slice(&buf[..room]);
                dropped += n - room;
            }
        }
    }
}

fn render_output(name: &str, (bytes, dropped): (Vec<u8>, usize)) -> String {
    if bytes.is_empty() && dropped == 0 {
        return String::new();
    }
    let mut s = format!("--- {name} ---\n{}", String::from_utf8_lossy(&bytes));
    if dropped > 0 {
        s.push_str(&format!("\n[… {dropped} more bytes not kept]"));
    }
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

async fn exec(ctx: &Ctx<'_>, e: &Exec) -> StepResult {
    let Some((program, args)) = e.command.split_first() else {
        return failed("empty command");
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .current_dir(plan_dir(ctx.plan))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in &e.env {
        let value = match v {
            EnvValue::Literal(s) => s.clone(),
            EnvValue::FromEnv(name) => match std::env::var(name) {
                Ok(v) => v,
                Err(_) => {
                    return failed(format!(
                        "env {k}: the coordinator has no environment variable {name}"
                    ));
                }
            },
        };
        cmd.env(k, value);
    }
    cmd.env("CUTOVER_RUN_ID", ctx.run.id.to_string())
        .env("CUTOVER_STEP_ID", &ctx.step.id);
    ctx.live(
        format!("running `{}`", e.command.join(" ")),
        vec![],
        ctx.deadline_ms,
    );
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(err) => return failed(format!("cannot start `{program}`: {err}")),
    };
    let out = child
        .stdout
        .take()
        .map(|o| tokio::spawn(bounded(o, OUTPUT_LIMIT)));
    let errp = child
        .stderr
        .take()
        .map(|o| tokio::spawn(bounded(o, OUTPUT_LIMIT)));
    let status = match ctx.remaining(ctx.deadline_ms) {
        Some(left) => match tokio::time::timeout(left, child.wait()).await {
            Ok(s) => Some(s),
            Err(_) => {
                let _ = child.kill().await;
                None
            }
        },
        None => Some(child.wait().await),
    };
    let mut output = String::new();
    if e.capture_output {
        if let Some(h) = out
            && let Ok(o) = h.await
        {
            output.push_str(&render_output("stdout", o));
        }
        if let Some(h) = errp
            && let Ok(o) = h.await
        {
            output.push_str(&render_output("stderr", o));
        }
    }
    match status {
        None => StepResult::Failed {
            message: format!(
                "`{}` did not finish within {}; killed",
                e.command.join(" "),
                ctx.step.timeout.map(human_duration).unwrap_or_default()
            ),
            output,
        },
        Some(Err(err)) => StepResult::Failed {
            message: format!("waiting for `{program}`: {err}"),
            output,
        },
        Some(Ok(s)) if s.success() => StepResult::Ok {
            detail: json!({"exit_code": 0}),
            output,
        },
        Some(Ok(s)) => StepResult::Failed {
            message: format!("`{}` exited with {s}", e.command.join(" ")),
            output,
        },
    }
}

fn read_secret(plan: &Plan, s: &SecretSource) -> Result<String, String> {
    match s {
        SecretSource::Env(name) => {
            std::env::var(name).map_err(|_| format!("environment variable {name} is not set"))
        }
        SecretSource::File(p) => {
            let path = if p.is_absolute() {
                p.clone()
            } else {
                plan_dir(plan).join(p)
            };
            std::fs::read_to_string(&path)
                .map(|s| s.trim().to_string())
                .map_err(|e| format!("cannot read {}: {e}", path.display()))
        }
    }
}

fn http_client(resolve: Option<(&str, SocketAddr)>) -> Result<reqwest::Client, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut b = reqwest::Client::builder()
        .user_agent(concat!("cutover/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(20));
    if let Ok(file) = std::env::var("SSL_CERT_FILE")
        && let Ok(pem) = std::fs::read(&file)
        && let Ok(certs) = reqwest::Certificate::from_pem_bundle(&pem)
    {
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    if let Some((host, addr)) = resolve {
        b = b.resolve(host, addr);
    }
    b.build()
        .map_err(|e| format!("building the HTTP client: {e}"))
}

async fn announce(ctx: &Ctx<'_>, a: &Announce) -> StepResult {
    let sent_ms = now_ms();
    let window = a.maintenance_window.map(|w| {
        let start = sent_ms + w.starts_in.as_millis() as i64;
        json!({"starts_unix_ms": start, "ends_unix_ms": start + w.duration.as_millis() as i64})
    });
    let client = match http_client(None) {
        Ok(c) => c,
        Err(e) => return failed(e),
    };
    let mut delivered = Vec::new();
    for name in &a.channels {
        let Some(ch) = ctx.plan.channels.get(name) else {
            return failed(format!("no notification channel `{name}`"));
        };
        let url = match read_secret(ctx.plan, &ch.url) {
            Ok(u) => u,
            Err(e) => return failed(format!("channel `{name}`: webhook URL: {e}")),
        };
        let body = match ch.kind {
            ChannelKind::Slack => json!({"text": a.message}),
            ChannelKind::Json => json!({
                "plan": ctx.plan.name,
                "run_id": ctx.run.id,
                "step": ctx.step.id,
                "message": a.message,
                "sent_unix_ms": sent_ms,
                "maintenance_window": window,
            }),
        };
        let mut last = String::new();
        let mut sent = false;
        for attempt in 0..3u32 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
            }
            match client.post(&url).json(&body).send().await {
                Ok(r) if r.status().is_success() => {
                    sent = true;
                    break;
                }
                Ok(r) => last = format!("HTTP {}", r.status()),
                Err(e) => last = e.to_string(),
            }
        }
        if !sent {
            return failed(format!("channel `{name}`: webhook failed: {last}"));
        }
        delivered.push(name.clone());
    }
    // The announcement itself is kept in the outcome, for the status page.
    ok(json!({
        "announcement": {"message": a.message, "sent_unix_ms": sent_ms, "maintenance_window": window},
        "channels": delivered,
    }))
}

/// Statuspage `status.indicator`, or why it is unknown.
async fn status_indicator(client: &reqwest::Client, url: &str) -> Result<Indicator, String> {
    let r = client.get(url).send().await.map_err(|e| e.to_string())?;
    if !r.status().is_success() {
        return Err(format!("HTTP {}", r.status()));
    }
    let v: serde_json::Value = r.json().await.map_err(|e| format!("not JSON: {e}"))?;
    let s = v
        .pointer("/status/indicator")
        .and_then(|i| i.as_str())
        .ok_or("no status.indicator")?;
    Indicator::parse(s).ok_or_else(|| format!("unknown indicator {s:?}"))
}

async fn fingerprint(
    plan: &Plan,
    site: Site,
    url: &str,
    compare: &Compare,
) -> Result<String, String> {
    let u = reqwest::Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
    let host = u
        .host_str()
        .ok_or_else(|| format!("{url}: no host"))?
        .to_string();
    let port = u.port_or_known_default().unwrap_or(443);
    let addr = plan
        .site(site)
        .addresses
        .first()
        .ok_or_else(|| format!("site {} has no address", site.label()))?;
    let client = http_client(Some((&host, SocketAddr::new(*addr, port))))?;
    let r = client
        .get(u)
        .send()
        .await
        .map_err(|e| format!("{}: {e}", site.label()))?;
    if !r.status().is_success() {
        return Err(format!("{}: HTTP {}", site.label(), r.status()));
    }
    match compare {
        Compare::Header(h) => r
            .headers()
            .get(h.as_str())
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| format!("{}: no header {h}", site.label())),
        Compare::BodySha256 => {
            let body = r
                .bytes()
                .await
                .map_err(|e| format!("{}: {e}", site.label()))?;
            let d = ring::digest::digest(&ring::digest::SHA256, &body);
            Ok(d.as_ref().iter().map(|b| format!("{b:02x}")).collect())
        }
    }
}

async fn gate(ctx: &Ctx<'_>, g: &Gate) -> StepResult {
    let client = match http_client(None) {
        Ok(c) => c,
        Err(e) => return failed(e),
    };
    loop {
        let mut problems: Vec<String> = Vec::new();
        // Pages that could not be read: (name, url, why).
        let mut unknown: Vec<(&str, &str, String)> = Vec::new();
        let mut facts = BTreeMap::new();
        for p in &g.status_pages {
            match status_indicator(&client, &p.url).await {
                Ok(i) if i <= p.max_indicator => {
                    facts.insert(format!("status:{}", p.name), json!(i.label()));
                }
                Ok(i) => problems.push(format!(
                    "{} status is {} (allowed ≤ {})",
                    p.name,
                    i.label(),
                    p.max_indicator.label()
                )),
                // Unreadable is unknown, and unknown is never healthy: only a
                // person who read the page (`on_unknown = "approve"`) lets it pass.
                Err(e) if g.on_unknown == OnUnknown::Approve && ctx.approved => {
                    facts.insert(
                        format!("status:{}", p.name),
                        json!(format!("unknown ({e}); approved by the operator")),
                    );
                }
                Err(e) => unknown.push((&p.name, &p.url, e)),
            }
        }
        problems.extend(
            unknown
                .iter()
                .map(|(name, _, e)| format!("{name} status unknown: {e}")),
        );
        if let Some(sc) = &g.same_code {
            let old = fingerprint(ctx.plan, Site::Old, &sc.url, &sc.compare).await;
            let new = fingerprint(ctx.plan, Site::New, &sc.url, &sc.compare).await;
            match (old, new) {
                (Ok(o), Ok(n)) if o == n => {
                    facts.insert("same_code".into(), json!(o));
                }
                (Ok(o), Ok(n)) => problems.push(format!("old and new differ: {o} vs {n}")),
                (Err(e), _) | (_, Err(e)) => problems.push(format!("same code unknown: {e}")),
            }
        }
        let snap = ctx.engine.inner.deps.evidence.snapshot();
        let mut regions = Vec::new();
        let mut named: Vec<String> = g.checks_passing.clone();
        if g.registry_consistent {
            named.extend(g.consistency_checks.iter().cloned());
        }
        if !named.is_empty() {
            // Each check passes on each of its targets (old, new, dns).
            let (failing, r) = evidence::gate_checks(ctx.plan, &snap, &named, g.min_regions);
            if !failing.is_empty() {
                problems.push(format!(
                    "not passing from ≥ {} region(s): {}",
                    g.min_regions,
                    failing.join(", ")
                ));
            }
            regions = r;
        }
        if problems.is_empty() {
            return ok(json!({"facts": facts, "regions": progress_json(&regions)}));
        }
        // Everything known holds and only unreadable pages stand in the way:
        // with `on_unknown = "approve"` a person reads them and decides.
        if g.on_unknown == OnUnknown::Approve && problems.len() == unknown.len() {
            return StepResult::Ask {
                kind: "gate_unknown",
                question: unknown_question(&ctx.step.id, &unknown),
            };
        }
        if ctx.past(ctx.deadline_ms) {
            return failed(format!("gate did not hold: {}", problems.join("; ")));
        }
        ctx.live(
            format!("gate: {}", problems.join("; ")),
            regions,
            ctx.deadline_ms,
        );
        tokio::select! {
            () = ctx.tick() => {}
            () = ctx.cancel.cancelled() => return StepResult::Interrupted,
        }
    }
}

/// The question a gate with `on_unknown = "approve"` asks when only unreadable
/// status pages stop it.
fn unknown_question(step: &str, unknown: &[(&str, &str, String)]) -> String {
    let pages = unknown
        .iter()
        .map(|(name, url, e)| format!("{name} ({url}: {e})"))
        .collect::<Vec<_>>()
        .join(", ");
    let one = unknown.len() == 1;
    format!(
        "gate `{step}`: the status page{} of {pages} cannot be read, so {} state is unknown (never taken as healthy); \
         everything else the gate checks holds. Read {} yourself: if there is no incident, `cutover approve --step {step}` continues",
        if one { "" } else { "s" },
        if one { "its" } else { "their" },
        if one { "it" } else { "them" },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Serves `body` (and an `x-version` header) at `ip:port` over plain HTTP.
    async fn site(ip: &str, port: u16, body: &'static str) -> u16 {
        let l = tokio::net::TcpListener::bind((ip, port)).await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nx-version: {body}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            }
        });
        port
    }

    fn plan() -> Plan {
        crate::plan::testing::plan(
            "same-code",
            "[[steps]]\nid = \"ok\"\nkind = \"approve\"\nprompt = \"?\"\n",
        )
    }

    #[tokio::test]
    async fn same_code_fetches_each_site_pinned_by_address_and_compares() {
        let port = site("127.0.0.1", 0, "build-1").await;
        site("127.0.0.2", port, "build-2").await;
        let p = plan();
        // The name does not resolve: only the pinned address can answer.
        let url = format!("http://www.example.invalid:{port}/");
        let old = fingerprint(&p, Site::Old, &url, &Compare::BodySha256)
            .await
            .unwrap();
        let new = fingerprint(&p, Site::New, &url, &Compare::BodySha256)
            .await
            .unwrap();
        assert_ne!(old, new);
        let h = Compare::Header("x-version".into());
        assert_eq!(
            fingerprint(&p, Site::Old, &url, &h).await.unwrap(),
            "build-1"
        );
        assert_eq!(
            fingerprint(&p, Site::New, &url, &h).await.unwrap(),
            "build-2"
        );
        let missing = Compare::Header("x-nothing".into());
        assert!(fingerprint(&p, Site::New, &url, &missing).await.is_err());
    }

    #[tokio::test]
    async fn a_port_in_same_code_host_is_where_both_sites_are_asked() {
        let port = site("127.0.0.1", 0, "build-7").await;
        site("127.0.0.2", port, "build-7").await;
        let p = crate::plan::testing::plan(
            "same-code-port",
            &r#"[[steps]]
id = "same"
kind = "gate"
same_code = { url_path = "/v", host = "www.example.invalid:PORT", compare = "header:X-Version" }
"#
            .replace("PORT", &port.to_string()),
        );
        let Action::Gate(g) = &p.steps[0].action else {
            panic!("not a gate")
        };
        let sc = g.same_code.as_ref().unwrap();
        assert_eq!(sc.url, format!("https://www.example.invalid:{port}/v"));
        // The test sites speak plain HTTP; the port is what matters here.
        let url = sc.url.replacen("https://", "http://", 1);
        for site in [Site::Old, Site::New] {
            assert_eq!(
                fingerprint(&p, site, &url, &sc.compare).await.unwrap(),
                "build-7"
            );
        }
    }
}
