//! Unit tests for plan parsing, validation and warnings. Positions are asserted
//! exactly: each test finds the offending text in its input and expects the
//! diagnostic at that line and column.

use std::path::Path;
use std::time::Duration;

use super::*;

/// A small plan with no errors and no warnings; tests append or replace parts.
const HEAD: &str = r#"[plan]
name = "t"

[sites.old]
addresses = ["203.0.113.10"]
[sites.new]
addresses = ["203.0.113.20"]

[[checks]]
id = "www-dns"
kind = "dns"
name = "www.example.org"

[[checks]]
id = "home"
kind = "http"
url = "https://www.example.org/"

[[checks]]
id = "sync"
kind = "registry_consistency"
registry_url = "https://www.example.org"

[dns]
zone = "example.org"
provider = "manual"
lowered_ttl = "5m"
normal_ttl = "1h"

[[dns.records]]
name = "www"
type = "A"

[[notifications.webhooks]]
name = "ops"
kind = "slack"
url_env = "OPS_WEBHOOK"
"#;

const STEPS: &str = r#"
[[steps]]
id = "lower"
kind = "dns"
ttl = "lowered"

[[steps]]
id = "drain"
kind = "wait"
until = { ttl_drained = true }
max = "2h"

[[steps]]
id = "switch"
kind = "dns"
set = "new"

[[steps]]
id = "check-new"
kind = "verify"
checks = ["home"]
"#;

const FALLBACK: &str = r#"
[[fallback]]
id = "back"
kind = "dns"
set = "old"

[[fallback]]
id = "check-old"
kind = "verify"
checks = ["home"]
"#;

fn good() -> String {
    format!("{HEAD}{STEPS}{FALLBACK}")
}

/// The base plan with another provider and its table (placed before the records).
fn with_provider(name: &str, table: &str) -> String {
    let text = good().replace("provider = \"manual\"", &format!("provider = \"{name}\""));
    if table.is_empty() {
        text
    } else {
        text.replace(
            "[[dns.records]]",
            &format!("[dns.{name}]\n{table}\n\n[[dns.records]]"),
        )
    }
}

fn check(text: &str) -> Report {
    parse(Path::new("/plans/t.toml"), text)
}

fn of(text: &str, severity: Severity) -> Vec<Diagnostic> {
    check(text)
        .diagnostics
        .into_iter()
        .filter(|d| d.severity == severity)
        .collect()
}

fn errors(text: &str) -> Vec<Diagnostic> {
    of(text, Severity::Error)
}

fn warnings(text: &str) -> Vec<Diagnostic> {
    of(text, Severity::Warning)
}

/// 1-based line and column where `needle` first occurs after `after` (which must occur).
fn at_after(text: &str, after: &str, needle: &str) -> (usize, usize) {
    let start = text
        .find(after)
        .unwrap_or_else(|| panic!("{after:?} not in text"));
    let off = start
        + text[start..]
            .find(needle)
            .unwrap_or_else(|| panic!("{needle:?} not after {after:?}"));
    crate::config::line_col(text, off)
}

fn at(text: &str, needle: &str) -> (usize, usize) {
    at_after(text, needle, needle)
}

fn one_error(text: &str) -> Diagnostic {
    let e = errors(text);
    assert_eq!(e.len(), 1, "expected one error, got {e:#?}");
    e.into_iter().next().unwrap()
}

fn one_warning(text: &str) -> Diagnostic {
    let w = warnings(text);
    assert_eq!(w.len(), 1, "expected one warning, got {w:#?}");
    w.into_iter().next().unwrap()
}

fn pos(d: &Diagnostic) -> (usize, usize) {
    (d.line, d.column)
}

// ---------------------------------------------------------------------------
// A valid plan and what it resolves to
// ---------------------------------------------------------------------------

#[test]
fn the_base_plan_is_clean_and_resolved() {
    let r = check(&good());
    assert!(r.diagnostics.is_empty(), "{}", r.render());
    let plan = r.plan.expect("valid");
    assert_eq!(plan.dns.zone, "example.org.");
    assert_eq!(plan.dns.lowered_ttl, Some(300));
    assert_eq!(plan.dns.normal_ttl, 3600);
    let rec = &plan.dns.records[0];
    assert_eq!(rec.name, "www.example.org.");
    assert_eq!(rec.old, vec!["203.0.113.10"]);
    assert_eq!(rec.new, vec!["203.0.113.20"]);
    // Every dns step carries the full desired state, so the engine applies it idempotently.
    let Action::Dns(lower) = &plan.steps[0].action else {
        panic!("dns")
    };
    assert_eq!(
        lower.from,
        DnsState {
            site: Site::Old,
            ttl: 3600
        }
    );
    assert_eq!(
        lower.to,
        DnsState {
            site: Site::Old,
            ttl: 300
        }
    );
    let Action::Dns(switch) = &plan.steps[2].action else {
        panic!("dns")
    };
    assert_eq!(
        switch.to,
        DnsState {
            site: Site::New,
            ttl: 300
        }
    );
    let desired = rec.desired(switch.to);
    assert_eq!(
        (desired.ttl, desired.values.clone()),
        (300, vec!["203.0.113.20".to_string()])
    );
    let Action::Wait(w) = &plan.steps[1].action else {
        panic!("wait")
    };
    assert_eq!(
        w.until,
        WaitFor::TtlDrained {
            ttl: 300,
            checks: vec!["www-dns".into()]
        }
    );
    assert_eq!(plan.steps[1].timeout, Some(Duration::from_secs(7200)));
    // Verify defaults to the site DNS points at: new forward, old in the fallback.
    let Action::Verify(v) = &plan.steps[3].action else {
        panic!("verify")
    };
    assert_eq!((v.site, v.min_regions), (Site::New, 1));
    let Action::Verify(v) = &plan.fallback[1].action else {
        panic!("verify")
    };
    assert_eq!(v.site, Site::Old);
    assert_eq!(plan.steps[0].timeout, Some(Duration::from_secs(600)));
    assert_eq!(plan.steps[0].on_failure, OnFailure::Pause);
}

#[test]
fn every_step_kind_parses() {
    let text = format!(
        r#"{HEAD}
[[guards]]
id = "install"
source = "probe"
check = "home"
condition = "error_ratio >= 0.25"
window = "2m"
quorum = 3
for = 2
action = "fallback"
armed_from = "switch"

[[guards]]
id = "do"
source = "status_page"
url = "https://status.digitalocean.com/api/v2/status.json"
condition = "indicator >= major"
action = "pause"
armed_from = "gate"
mode = "shadow"

[[steps]]
id = "gate"
kind = "gate"
status_pages = [{{ name = "DO", url = "https://status.digitalocean.com/api/v2/status.json", max_indicator = "minor" }}]
same_code = {{ url_path = "/version", compare = "header:X-Version" }}
registry_consistent = true
checks_passing = ["home"]
min_regions = 2
on_failure = "abort"

[[steps]]
id = "ok"
kind = "approve"
prompt = "go?"

[[steps]]
id = "tell"
kind = "announce"
message = "maintenance"
channels = ["ops"]
maintenance_window = {{ starts_in = "10m", duration = "1h" }}

[[steps]]
id = "stop"
kind = "exec"
command = ["ssh", "old", "systemctl", "stop", "x"]
env = {{ A = "1", B = "env:HOME" }}
once = true
capture_output = false
timeout = "1m"
{STEPS}
[[steps]]
id = "prop"
kind = "wait"
until = {{ propagation = 0.9 }}
max = "30m"
on_failure = "fallback"

[[steps]]
id = "sit"
kind = "soak"
duration = "2d"

[[steps]]
id = "nap"
kind = "wait"
duration = "90s"
{FALLBACK}"#
    );
    let r = check(&text);
    assert!(r.diagnostics.is_empty(), "{}", r.render());
    let plan = r.plan.unwrap();
    assert_eq!(plan.steps.len(), 11);
    let Action::Gate(g) = &plan.steps[0].action else {
        panic!()
    };
    assert_eq!(g.status_pages[0].max_indicator, Indicator::Minor);
    assert_eq!(
        g.same_code,
        Some(SameCode {
            url: "https://www.example.org/version".into(),
            compare: Compare::Header("x-version".into())
        })
    );
    assert_eq!(g.consistency_checks, vec!["sync"]);
    assert_eq!(g.min_regions, 2);
    assert_eq!(plan.steps[0].on_failure, OnFailure::Abort);
    let Action::Exec(e) = &plan.steps[3].action else {
        panic!()
    };
    assert!(e.once && !e.capture_output);
    assert_eq!(e.env["B"], EnvValue::FromEnv("HOME".into()));
    assert_eq!(e.env["A"], EnvValue::Literal("1".into()));
    assert!(plan.steps[3].is_once());
    let Action::Wait(w) = &plan.steps[8].action else {
        panic!()
    };
    assert_eq!(
        w.until,
        WaitFor::Propagation {
            share: 0.9,
            site: Site::New,
            checks: vec!["www-dns".into()]
        }
    );
    let Action::Soak { duration } = plan.steps[9].action else {
        panic!()
    };
    assert_eq!(duration, Duration::from_secs(2 * 86_400));
    assert_eq!(plan.guards.len(), 2);
    let g = &plan.guards[0];
    assert_eq!(
        (g.quorum, g.for_ticks, g.action, g.mode),
        (3, 2, GuardAction::Fallback, GuardMode::Enforce)
    );
    assert_eq!(
        g.condition,
        Condition {
            metric: Metric::ErrorRatio,
            op: CompareOp::Ge,
            threshold: 0.25
        }
    );
    assert_eq!(
        plan.guards[1].condition.threshold,
        Indicator::Major as u8 as f64
    );
    assert_eq!(plan.guards[1].quorum, 1);
    assert_eq!(plan.guards[1].mode, GuardMode::Shadow);
    assert_eq!(plan.guards_armed_at("switch").count(), 1);
}

// ---------------------------------------------------------------------------
// Errors, each with its position
// ---------------------------------------------------------------------------

#[test]
fn unknown_step_kind() {
    let text = format!("{}\n[[steps]]\nid = \"x\"\nkind = \"teleport\"\n", good());
    let e = one_error(&text);
    assert_eq!(pos(&e), at(&text, "\"teleport\""), "{e}");
    assert!(e.message.contains("unknown kind \"teleport\""), "{e}");
    assert!(e.message.contains("gate, dns, wait"), "{e}");
}

#[test]
fn unknown_keys_are_all_reported_at_once() {
    let text = format!(
        "{}\n[[steps]]\nid = \"x\"\nkind = \"wait\"\nduraton = \"5m\"\n\n[[steps]]\nid = \"y\"\nkind = \"approve\"\nprompt = \"?\"\npromt2 = \"?\"\n",
        good()
    );
    let e = errors(&text);
    assert_eq!(e.len(), 3, "{e:#?}");
    // The wait without its (misspelt) duration is reported too, at its table.
    assert_eq!(
        pos(&e[0]),
        at_after(&text, "check-new", "[[steps]]"),
        "{}",
        e[0]
    );
    assert!(e[0].message.contains("needs `duration"), "{}", e[0]);
    assert_eq!(pos(&e[1]), at(&text, "duraton"), "{}", e[1]);
    assert!(e[1].message.contains("unknown key `duraton`"), "{}", e[1]);
    assert!(e[1].message.contains("duration, until, max"), "{}", e[1]);
    assert_eq!(pos(&e[2]), at(&text, "promt2"), "{}", e[2]);
}

#[test]
fn key_of_another_step_kind() {
    let text = format!(
        "{}\n[[steps]]\nid = \"x\"\nkind = \"approve\"\nprompt = \"?\"\ncommand = [\"true\"]\n",
        good()
    );
    let e = one_error(&text);
    assert_eq!(pos(&e), at(&text, "[\"true\"]"), "{e}");
    assert!(
        e.message
            .contains("`command` is not a key of a `approve` step"),
        "{e}"
    );
}

#[test]
fn once_without_exec() {
    let text = format!(
        "{}\n[[steps]]\nid = \"x\"\nkind = \"wait\"\nduration = \"1m\"\nonce = true\n",
        good()
    );
    let e = one_error(&text);
    assert_eq!(pos(&e), at_after(&text, "id = \"x\"", "true"), "{e}");
    assert!(e.message.contains("`once` is only for `exec` steps"), "{e}");
}

/// A plan whose first step is a status-page gate with `extra` lines.
fn status_gate(extra: &str) -> String {
    format!(
        "{}\n[[steps]]\nid = \"st\"\nkind = \"gate\"\nstatus_pages = [{{ name = \"DreamHost\", url = \"https://www.dreamhoststatus.com/\" }}]\n{extra}",
        good()
    )
}

fn gate_of<'a>(plan: &'a Plan, id: &str) -> &'a Gate {
    match &plan.steps.iter().find(|s| s.id == id).unwrap().action {
        Action::Gate(g) => g,
        other => panic!("{id} is a {} step", other.kind()),
    }
}

#[test]
fn gate_on_unknown_defaults_to_fail_and_takes_approve() {
    let r = check(&status_gate(""));
    assert!(r.diagnostics.is_empty(), "{}", r.render());
    assert_eq!(
        gate_of(r.plan.as_ref().unwrap(), "st").on_unknown,
        OnUnknown::Fail
    );
    for (written, want) in [("fail", OnUnknown::Fail), ("approve", OnUnknown::Approve)] {
        let r = check(&status_gate(&format!("on_unknown = \"{written}\"\n")));
        assert!(r.diagnostics.is_empty(), "{}", r.render());
        assert_eq!(gate_of(r.plan.as_ref().unwrap(), "st").on_unknown, want);
    }
    let plan = check(&status_gate("on_unknown = \"approve\"\n"))
        .plan
        .unwrap();
    let text = dry_run::render(&plan);
    assert!(
        text.contains("unreadable = unknown: asks for `cutover approve`"),
        "{text}"
    );
}

#[test]
fn gate_on_unknown_errors_have_positions() {
    let text = status_gate("on_unknown = \"ignore\"\n");
    let e = one_error(&text);
    assert_eq!(pos(&e), at(&text, "\"ignore\""), "{e}");
    assert!(e.message.contains("`on_unknown` \"ignore\""), "{e}");
    assert!(e.message.contains("\"fail\""), "{e}");
    assert!(e.message.contains("\"approve\""), "{e}");
    // Nothing to be unknown about: a gate without status pages.
    let text = format!(
        "{}\n[[steps]]\nid = \"same\"\nkind = \"gate\"\nsame_code = {{ url_path = \"/\" }}\non_unknown = \"approve\"\n",
        good()
    );
    let e = one_error(&text);
    assert_eq!(pos(&e), at_after(&text, "on_unknown", "\"approve\""), "{e}");
    assert!(e.message.contains("no `status_pages`"), "{e}");
    // Only gates have it.
    let text = format!(
        "{}\n[[steps]]\nid = \"x\"\nkind = \"approve\"\nprompt = \"?\"\non_unknown = \"fail\"\n",
        good()
    );
    let e = one_error(&text);
    assert_eq!(pos(&e), at_after(&text, "on_unknown", "\"fail\""), "{e}");
    assert!(
        e.message
            .contains("`on_unknown` is not a key of a `approve` step"),
        "{e}"
    );
}

#[test]
fn same_code_host_may_carry_a_port() {
    let gate = |host: &str| {
        format!(
            "{}\n[[steps]]\nid = \"same\"\nkind = \"gate\"\nsame_code = {{ url_path = \"/v\", host = \"{host}\" }}\n",
            good()
        )
    };
    for (host, url) in [
        ("www.example.org:8443", "https://www.example.org:8443/v"),
        ("www.example.org", "https://www.example.org/v"),
        ("[2001:db8::1]:8443", "https://[2001:db8::1]:8443/v"),
    ] {
        let r = check(&gate(host));
        assert!(r.diagnostics.is_empty(), "{}", r.render());
        let sc = gate_of(r.plan.as_ref().unwrap(), "same")
            .same_code
            .clone()
            .unwrap();
        assert_eq!(sc.url, url);
    }
    for bad in [
        "https://www.example.org",
        "www.example.org/x",
        "user@www.example.org",
        "www.example.org:http",
        "",
    ] {
        let text = gate(bad);
        let e = one_error(&text);
        assert_eq!(
            pos(&e),
            at_after(&text, "host = ", &format!("\"{bad}\"")),
            "{e}"
        );
        assert!(e.message.contains("optionally with a port"), "{e}");
    }
}

#[test]
fn duplicate_step_ids_across_runbooks() {
    let text = format!(
        "{}\n[[fallback]]\nid = \"switch\"\nkind = \"approve\"\nprompt = \"?\"\n",
        good()
    );
    let e = one_error(&text);
    assert_eq!(
        pos(&e),
        at_after(&text, "[[fallback]]\nid = \"switch\"", "\"switch\""),
        "{e}"
    );
    let first_line = at(&text, "id = \"switch\"").0;
    assert!(
        e.message.contains(&format!(
            "duplicate step id \"switch\" (first defined on line {first_line})"
        )),
        "{e}"
    );
}

#[test]
fn unknown_check_reference() {
    let text = good().replace(
        "checks = [\"home\"]\n\n[[fallback]]",
        "checks = [\"home\", \"hmoe\"]\n\n[[fallback]]",
    );
    let e = one_error(&text);
    assert_eq!(pos(&e), at(&text, "\"hmoe\""), "{e}");
    assert!(e.message.contains("unknown check \"hmoe\""), "{e}");
    assert!(
        e.message.contains("www-dns, home, sync") || e.message.contains("home, sync, www-dns"),
        "{e}"
    );
}

#[test]
fn wait_for_dns_evidence_needs_dns_checks() {
    let text = good().replace(
        "until = { ttl_drained = true }",
        "until = { ttl_drained = true, checks = [\"home\"] }",
    );
    let e = one_error(&text);
    assert_eq!(
        pos(&e),
        at_after(&text, "ttl_drained = true, checks", "\"home\""),
        "{e}"
    );
    assert!(e.message.contains("is a `http` check"), "{e}");
}

#[test]
fn unknown_notification_channel() {
    let text = format!(
        "{}\n[[steps]]\nid = \"tell\"\nkind = \"announce\"\nmessage = \"m\"\nchannels = [\"ops\", \"pager\"]\n",
        good()
    );
    let e = one_error(&text);
    assert_eq!(pos(&e), at(&text, "\"pager\""), "{e}");
    assert!(e.message.contains("unknown channel \"pager\""), "{e}");
}

#[test]
fn guard_armed_from_unknown_or_fallback_step() {
    let guard = |from: &str| {
        format!(
            "{}\n[[guards]]\nid = \"g\"\nsource = \"probe\"\ncheck = \"home\"\ncondition = \"error_ratio > 0.5\"\naction = \"fallback\"\narmed_from = \"{from}\"\n",
            good()
        )
    };
    let text = guard("swtich");
    let e = one_error(&text);
    assert_eq!(pos(&e), at(&text, "\"swtich\""), "{e}");
    assert!(e.message.contains("unknown step \"swtich\""), "{e}");

    let text = guard("back");
    let e = one_error(&text);
    assert_eq!(pos(&e), at_after(&text, "armed_from", "\"back\""), "{e}");
    assert!(e.message.contains("is a [[fallback]] step"), "{e}");
}

#[test]
fn guard_shape_errors() {
    let text = format!(
        "{}\n[[guards]]\nid = \"g\"\nsource = \"status_page\"\nurl = \"https://s.example/api/v2/status.json\"\ncondition = \"error_ratio > 0.5\"\nquorum = 2\naction = \"explode\"\narmed_from = \"switch\"\n",
        good()
    );
    let e = errors(&text);
    assert_eq!(e.len(), 3, "{e:#?}");
    assert_eq!(pos(&e[0]), at(&text, "\"error_ratio > 0.5\""), "{}", e[0]);
    assert!(
        e[0].message
            .contains("a status_page guard measures indicator"),
        "{}",
        e[0]
    );
    assert_eq!(pos(&e[1]), at_after(&text, "quorum = ", "2"), "{}", e[1]);
    assert_eq!(pos(&e[2]), at(&text, "\"explode\""), "{}", e[2]);
}

#[test]
fn bad_durations() {
    let text = good().replace("max = \"2h\"", "max = \"2 hours\"");
    let e = one_error(&text);
    assert_eq!(pos(&e), at(&text, "\"2 hours\""), "{e}");
    assert!(e.message.contains("invalid duration \"2 hours\""), "{e}");

    let text = good().replace("lowered_ttl = \"5m\"", "lowered_ttl = \"5mins\"");
    let e = one_error(&text);
    assert_eq!(pos(&e), at(&text, "\"5mins\""), "{e}");
}

#[test]
fn fallback_cannot_fall_back() {
    let text = good().replace(
        "id = \"back\"\nkind = \"dns\"\nset = \"old\"",
        "id = \"back\"\nkind = \"dns\"\nset = \"old\"\non_failure = \"fallback\"",
    );
    let e = one_error(&text);
    assert_eq!(
        pos(&e),
        at_after(&text, "on_failure", "\"fallback\""),
        "{e}"
    );
    assert!(e.message.contains("inside [[fallback]]"), "{e}");
}

#[test]
fn missing_required_keys_point_at_the_table() {
    let text = format!("{}\n[[steps]]\nid = \"x\"\nkind = \"exec\"\n", good());
    let e = one_error(&text);
    assert_eq!(
        pos(&e),
        at_after(&text, "check-new", "[[steps]]\nid = \"x\""),
        "{e}"
    );
    assert!(e.message.contains("needs `command"), "{e}");

    let text = format!("{}\n[[steps]]\nid = \"x\"\nkind = \"dns\"\n", good());
    let e = one_error(&text);
    assert!(
        e.message
            .contains("needs `set = \"new\"|\"old\"`, `ttl`, or both"),
        "{e}"
    );

    let text = format!(
        "{}\n[[steps]]\nid = \"x\"\nkind = \"wait\"\nduration = \"1m\"\nuntil = {{ ttl_drained = true }}\n",
        good()
    );
    let e = one_error(&text);
    assert_eq!(pos(&e), at(&text, "\"1m\""), "{e}");
    assert!(e.message.contains("not both"), "{e}");
}

#[test]
fn exec_command_is_argv() {
    let text = format!(
        "{}\n[[steps]]\nid = \"x\"\nkind = \"exec\"\ncommand = [\"ssh old systemctl stop x\"]\nenv = {{ T = \"env:1BAD\" }}\n",
        good()
    );
    let e = errors(&text);
    assert_eq!(e.len(), 2, "{e:#?}");
    assert_eq!(pos(&e[0]), at(&text, "\"ssh old"), "{}", e[0]);
    assert!(
        e[0].message.contains("argv list, not a shell string"),
        "{}",
        e[0]
    );
    assert_eq!(pos(&e[1]), at(&text, "\"env:1BAD\""), "{}", e[1]);
}

#[test]
fn unknown_section_and_type_errors() {
    let text = format!("{}\n[stpes]\nx = 1\n", good());
    let e = one_error(&text);
    assert_eq!(pos(&e), at(&text, "stpes"), "{e}");
    assert!(e.message.contains("unknown section `stpes`"), "{e}");

    let text = good().replace(
        "checks = [\"home\"]\n\n[[fallback]]",
        "checks = \"home\"\n\n[[fallback]]",
    );
    let e = one_error(&text);
    assert_eq!(pos(&e), at(&text, "\"home\"\n\n[[fallback]]"), "{e}");
    assert!(e.message.contains("invalid type"), "{e}");
}

#[test]
fn record_names_are_relative_and_values_come_from_sites() {
    let text = good().replace("name = \"www\"", "name = \"www.example.org\"");
    let e = one_error(&text);
    assert_eq!(pos(&e), at(&text, "\"www.example.org\"\ntype"), "{e}");
    assert!(e.message.contains("must be relative to the zone"), "{e}");

    let text = good().replace("type = \"A\"", "type = \"AAAA\"");
    let e = errors(&text);
    assert_eq!(e.len(), 2, "one per site: {e:#?}");
    for site in ["old", "new"] {
        assert!(
            e.iter().any(|e| pos(e) == at(&text, "[[dns.records]]")
                && e.message
                    .contains(&format!("[sites.{site}] has no IPv6 address"))),
            "{e:#?}"
        );
    }

    let text = good().replace(
        "type = \"A\"",
        "type = \"CNAME\"\nold = [\"old.example.net\"]\nnew = [\"new.example.net.\"]",
    );
    let plan = check(&text).plan.expect("valid");
    assert_eq!(plan.dns.records[0].new, vec!["new.example.net."]);
    assert_eq!(plan.dns.records[0].old, vec!["old.example.net."]);
}

#[test]
fn provider_problems_have_positions() {
    let text = with_provider("digitalocean", "tokn = { env = \"DO\" }");
    let e = errors(&text);
    assert!(!e.is_empty());
    assert_eq!(pos(&e[0]), at(&text, "tokn"), "{}", e[0]);
    assert!(e[0].message.contains("unknown field `tokn`"), "{}", e[0]);

    // A plan key written below the provider's table header lands in that table.
    let text = good().replace(
        "provider = \"manual\"",
        "provider = \"digitalocean\"\n\n[dns.digitalocean]\ntoken = { env = \"DO\" }",
    );
    let e = one_error(&text);
    assert_eq!(pos(&e), at(&text, "lowered_ttl"), "{e}");
    assert!(
        e.message.contains("move `lowered_ttl` above that header"),
        "{e}"
    );

    let text = with_provider("bind", "");
    let e = one_error(&text);
    assert_eq!(pos(&e), at(&text, "\"bind\""), "{e}");
    assert!(e.message.contains("unknown DNS provider \"bind\""), "{e}");

    let text = with_provider("rfc2136", "");
    let e = one_error(&text);
    assert!(
        e.message.contains("needs its settings in [dns.rfc2136]"),
        "{e}"
    );
}

#[test]
fn dreamhost_cannot_set_ttls() {
    let text = with_provider("dreamhost", "token = { env = \"DH\" }");
    let e = one_error(&text);
    assert_eq!(pos(&e), at(&text, "\"lowered\""), "{e}");
    assert!(e.message.contains("no TTL parameter"), "{e}");
}

#[test]
fn webhook_url_is_never_inline() {
    let text = good().replace(
        "url_env = \"OPS_WEBHOOK\"",
        "url = \"https://hooks.slack.com/services/T000/B000/XXXX\"",
    );
    let r = check(&text);
    let e: Vec<_> = r
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .collect();
    let w: Vec<_> = r
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Warning)
        .collect();
    assert_eq!(e.len(), 1, "{}", r.render());
    assert_eq!(pos(e[0]), at(&text, "\"https://hooks"), "{}", e[0]);
    assert!(e[0].message.contains("use `url_env"), "{}", e[0]);
    assert_eq!(w.len(), 1, "{}", r.render());
    assert!(
        w[0].message.contains("hooks.slack.com webhook URL"),
        "{}",
        w[0]
    );
}

#[test]
fn syntax_errors_have_positions() {
    let text = "[plan]\nname = \"t\"\n[sites.old\n";
    let e = errors(text);
    assert!(!e.is_empty());
    assert_eq!(e[0].line, 3, "{}", e[0]);
}

#[test]
fn check_problems_come_from_the_config_parser() {
    let text = good().replace(
        "url = \"https://www.example.org/\"",
        "url = \"https://www.example.org/\"\ninterval = \"10x\"",
    );
    let e = one_error(&text);
    assert_eq!(pos(&e), at(&text, "\"10x\""), "{e}");
    assert!(e.message.contains("ms, s, m or h"), "{e}");
}

#[test]
fn every_problem_is_reported() {
    let text = format!(
        "{}\n[[steps]]\nid = \"a\"\nkind = \"teleport\"\n\n[[steps]]\nid = \"b\"\nkind = \"wait\"\nduration = \"soon\"\n\n[[steps]]\nid = \"c\"\nkind = \"verify\"\nchecks = [\"nope\"]\n",
        good().replace(
            "addresses = [\"203.0.113.20\"]",
            "addresses = [\"not-an-ip\"]"
        )
    );
    let r = check(&text);
    assert_eq!(r.errors(), 4, "{}", r.render());
    assert!(r.plan.is_none());
    let rendered = r.render();
    let (l, c) = at(&text, "\"not-an-ip\"");
    assert!(
        rendered.contains(&format!("/plans/t.toml:{l}:{c}: error: ")),
        "{rendered}"
    );
    assert_eq!(r.summary(), "/plans/t.toml: 4 errors, 0 warnings");
}

// ---------------------------------------------------------------------------
// Warnings
// ---------------------------------------------------------------------------

fn with_window(duration: &str) -> String {
    good().replace(
        "[[steps]]\nid = \"switch\"",
        &format!(
            "[[steps]]\nid = \"tell\"\nkind = \"announce\"\nmessage = \"m\"\nmaintenance_window = {{ duration = \"{duration}\" }}\n\n[[steps]]\nid = \"switch\""
        ),
    )
}

#[test]
fn maintenance_window_ten_times_the_lowered_ttl() {
    // Lowered TTL 5m → at least 50m (the seed: round to an hour).
    let text = with_window("30m");
    let w = one_warning(&text);
    assert_eq!(pos(&w), at(&text, "{ duration = \"30m\" }"), "{w}");
    assert!(
        w.message
            .contains("(30m) is shorter than 10× the lowered TTL (5m) = 50m"),
        "{w}"
    );
    assert!(w.message.contains("rounded up: 1h"), "{w}");
    assert_eq!(warnings(&with_window("49m")).len(), 1);
    assert!(warnings(&with_window("50m")).is_empty());
    assert!(warnings(&with_window("1h")).is_empty());
    // With a 10 minute TTL the hour is enough, 90 minutes is not needed but 99m is not enough.
    let text = with_window("99m").replace("lowered_ttl = \"5m\"", "lowered_ttl = \"10m\"");
    let w = one_warning(&text);
    assert!(w.message.contains("= 1h40m"), "{w}");
    assert!(w.message.contains("rounded up: 2h"), "{w}");
}

#[test]
fn switch_without_verify() {
    let text = good().replace(
        "[[steps]]\nid = \"check-new\"\nkind = \"verify\"\nchecks = [\"home\"]\n",
        "",
    );
    let w = one_warning(&text);
    assert_eq!(pos(&w), at(&text, "\"new\""), "{w}");
    assert!(
        w.message
            .contains("no `verify` step of the new site follows it"),
        "{w}"
    );

    // Verifying the wrong site does not count.
    let text = good().replace(
        "checks = [\"home\"]\n\n[[fallback]]",
        "checks = [\"home\"]\nsite = \"old\"\n\n[[fallback]]",
    );
    assert_eq!(warnings(&text).len(), 1, "{:#?}", warnings(&text));

    // In the fallback too: the old server must be proven.
    let text = good().replace(
        "[[fallback]]\nid = \"check-old\"\nkind = \"verify\"\nchecks = [\"home\"]\n",
        "",
    );
    let w = one_warning(&text);
    assert_eq!(pos(&w), at(&text, "\"old\"\n"), "{w}");
    assert!(w.message.contains("in [[fallback]]"), "{w}");
}

#[test]
fn fallback_must_restore_dns() {
    let text = good().replace(
        "id = \"back\"\nkind = \"dns\"\nset = \"old\"",
        "id = \"back\"\nkind = \"approve\"\nprompt = \"?\"",
    );
    let w = one_warning(&text);
    assert_eq!(pos(&w), at(&text, "[[fallback]]"), "{w}");
    assert!(
        w.message.contains("never points DNS back at the old site"),
        "{w}"
    );

    let text = format!("{HEAD}{STEPS}");
    let w = one_warning(&text);
    assert_eq!(pos(&w), (1, 1), "points at [plan]: {w}");
    assert!(w.message.contains("no [[fallback]] runbook"), "{w}");
}

#[test]
fn ttl_not_lowered_before_the_switch() {
    let text = good().replace(
        "[[steps]]\nid = \"lower\"\nkind = \"dns\"\nttl = \"lowered\"\n",
        "",
    );
    let w = one_warning(&text);
    assert_eq!(pos(&w), at_after(&text, "set = ", "\"new\""), "{w}");
    assert!(w.message.contains("with the TTL at 1h"), "{w}");
}

#[test]
fn no_wait_between_lowering_and_switching() {
    let no_wait = good().replace(
        "[[steps]]\nid = \"drain\"\nkind = \"wait\"\nuntil = { ttl_drained = true }\nmax = \"2h\"\n",
        "",
    );
    let w = one_warning(&no_wait);
    assert_eq!(pos(&w), at_after(&no_wait, "set = ", "\"new\""), "{w}");
    assert!(
        w.message
            .contains("no wait between lowering the TTL (step \"lower\")"),
        "{w}"
    );
    assert!(w.message.contains("at least 1h"), "{w}");

    // A fixed wait counts when it outlasts the old TTL (1h), not when shorter.
    let short = good().replace(
        "until = { ttl_drained = true }\nmax = \"2h\"",
        "duration = \"59m\"",
    );
    assert_eq!(warnings(&short).len(), 1, "{:#?}", warnings(&short));
    let long = good().replace(
        "until = { ttl_drained = true }\nmax = \"2h\"",
        "duration = \"1h\"",
    );
    assert!(warnings(&long).is_empty(), "{:#?}", warnings(&long));
}

#[test]
fn inline_secrets_are_warned_about() {
    // A Slack webhook pasted into a message.
    let text = good().replace(
        "checks = [\"home\"]\n\n[[fallback]]",
        "checks = [\"home\"]\n\n[[steps]]\nid = \"tell\"\nkind = \"announce\"\nmessage = \"post to https://hooks.slack.com/services/T0/B0/abc\"\n\n[[fallback]]",
    );
    let w = one_warning(&text);
    assert_eq!(pos(&w), at(&text, "\"post to"), "{w}");
    assert!(
        w.message.contains("`steps.message` looks like a secret"),
        "{w}"
    );

    // A literal token in an exec step's environment.
    let text = format!(
        "{}\n[[steps]]\nid = \"x\"\nkind = \"exec\"\ncommand = [\"true\"]\nenv = {{ API_TOKEN = \"s3cr3t-value\" }}\n",
        good()
    );
    let w = warnings(&text);
    assert!(
        w.iter().any(|w| pos(w) == at(&text, "\"s3cr3t-value\"")
            && w.message.contains("`api_token` names a secret")),
        "{w:#?}"
    );

    // A TSIG secret pasted into the provider table: an error (not a { file | env } reference)
    // and a warning that says why.
    let text = with_provider(
        "rfc2136",
        "server = \"192.0.2.53\"\ntsig_key_name = \"cutover\"\ntsig_secret = \"c2VjcmV0LXRzaWcta2V5LWJ5dGVzMTIzNA==\"",
    );
    let r = check(&text);
    let w: Vec<_> = r
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Warning)
        .collect();
    assert_eq!(w.len(), 1, "{}", r.render());
    assert_eq!(pos(w[0]), at(&text, "\"c2Vj"), "{}", w[0]);
    assert!(r.errors() >= 1, "{}", r.render());

    // References are fine.
    let text = with_provider(
        "rfc2136",
        "server = \"192.0.2.53\"\ntsig_key_name = \"cutover\"\ntsig_secret = { file = \"tsig.key\" }",
    );
    let r = check(&text);
    assert!(r.diagnostics.is_empty(), "{}", r.render());
}

// ---------------------------------------------------------------------------
// The examples
// ---------------------------------------------------------------------------

fn examples_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// Every plan shipped in `examples/` must pass `plan check` without errors (the
/// coordinator configs, `coordinator*.toml`, are loaded by config.rs's test).
#[test]
fn every_example_plan_is_valid() {
    let mut plans = 0;
    for entry in std::fs::read_dir(examples_dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.ends_with(".toml") {
            continue;
        }
        if name.starts_with("coordinator") {
            crate::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
            continue;
        }
        let r = check_file(&path).unwrap();
        assert_eq!(r.errors(), 0, "{}", r.render());
        plans += 1;
    }
    assert!(
        plans >= 1,
        "expected example plans in {}",
        examples_dir().display()
    );
}

#[test]
fn the_elm_plan_is_clean_and_covers_the_seed() {
    let path = examples_dir().join("elm-package-site.toml");
    let r = check_file(&path).unwrap();
    assert!(r.diagnostics.is_empty(), "{}", r.render());
    let plan = r.plan.unwrap();
    let kinds: Vec<&str> = plan.steps.iter().map(|s| s.kind()).collect();
    for k in [
        "gate", "dns", "wait", "announce", "exec", "verify", "approve", "soak",
    ] {
        assert!(kinds.contains(&k), "no {k} step in the forward runbook");
    }
    // The seed's order: stop writes, switch, sync, restart, test.
    let idx = |id: &str| {
        plan.steps
            .iter()
            .position(|s| s.id == id)
            .unwrap_or_else(|| panic!("{id}"))
    };
    assert!(idx("lower-ttl") < idx("announce-maintenance"));
    assert!(idx("stop-old") < idx("switch-dns"));
    assert!(idx("switch-dns") < idx("final-sync"));
    assert!(idx("final-sync") < idx("restart-new"));
    assert!(idx("restart-new") < idx("test-browse"));
    assert!(plan.steps[idx("stop-old")].is_once());
    // The fallback verifies the old server before it restores DNS (the seed's 0.18 question).
    let fidx = |id: &str| plan.fallback.iter().position(|s| s.id == id).unwrap();
    assert!(fidx("verify-old") < fidx("restore-dns"));
    // The announced window is at least 10× the lowered TTL.
    let window = plan
        .steps
        .iter()
        .find_map(|s| match &s.action {
            Action::Announce(a) => a.maintenance_window,
            _ => None,
        })
        .unwrap();
    assert!(window.duration.as_secs() >= 10 * u64::from(plan.dns.lowered_ttl.unwrap()));
}

#[test]
fn dry_run_of_the_elm_plan() {
    let (plan, _) = load(&examples_dir().join("elm-package-site.toml")).unwrap();
    let text = dry_run::render(&plan);
    for needle in [
        "package.elm-lang.org. A 300 → 203.0.113.20 (was 203.0.113.10)",
        "package.elm-lang.org. A TTL 14400 → 300 (values stay 203.0.113.10)",
        "package.elm-lang.org. A 300 → 203.0.113.10 (was 203.0.113.20)",
        "stop-old [exec, once]",
        "runs [\"ssh\", \"package-old\", \"sudo\", \"systemctl\", \"stop\", \"elm-package-server\"]",
        "guards armed from here: install-new (fallback)",
        "waits until ≥95% of the resolvers in every region with probes answer new",
        "waits until the remaining TTL at every region's resolvers is ≤ 300s",
        "maintenance window: starts 30m after the announcement, lasts 1h",
        "waits for `cutover approve`",
        "soaks 2d with guards watching",
        "fallback: 8 steps",
    ] {
        assert!(text.contains(needle), "dry run lacks {needle:?}:\n{text}");
    }
    let forward = text.find("\nforward:").unwrap();
    let fallback = text.find("\nfallback:").unwrap();
    assert!(forward < fallback, "forward first, then fallback");
}

#[test]
fn human_durations() {
    assert_eq!(human_duration(Duration::from_secs(300)), "5m");
    assert_eq!(human_duration(Duration::from_secs(5400)), "1h30m");
    assert_eq!(human_duration(Duration::from_secs(7 * 86_400)), "7d");
    assert_eq!(human_duration(Duration::from_millis(250)), "250ms");
    assert_eq!(human_duration(Duration::from_millis(1500)), "1s500ms");
}

#[test]
fn dry_run_with_the_manual_provider() {
    let plan = check(&good()).plan.expect("valid");
    let text = dry_run::render(&plan);
    assert!(
        text.contains("prints this change for a person to make, waits for `cutover approve`"),
        "{text}"
    );
    assert!(
        text.contains("www.example.org. A TTL 3600 → 300 (values stay 203.0.113.10)"),
        "{text}"
    );
    assert!(
        text.contains("www.example.org. A 300 → 203.0.113.20 (was 203.0.113.10)"),
        "{text}"
    );
    assert!(
        text.contains("fallback: 2 steps (on a guard trip or `cutover rollback`; assumes DNS points at new with TTL 5m)"),
        "{text}"
    );
}

#[test]
fn webhook_and_ttl_and_record_errors() {
    let text = good().replace(
        "url_env = \"OPS_WEBHOOK\"",
        "url_env = \"OPS_WEBHOOK\"\nurl_file = \"hook.url\"",
    );
    let e = one_error(&text);
    assert_eq!(pos(&e), at(&text, "\"hook.url\""), "{e}");
    assert!(e.message.contains("not both"), "{e}");

    let text = good().replace("url_env = \"OPS_WEBHOOK\"\n", "");
    let e = one_error(&text);
    assert_eq!(pos(&e), at(&text, "[[notifications.webhooks]]"), "{e}");
    assert!(e.message.contains("needs `url_env"), "{e}");

    let text = good().replace("lowered_ttl = \"5m\"", "lowered_ttl = \"2h\"");
    let e = one_error(&text);
    assert_eq!(pos(&e), at(&text, "\"2h\""), "{e}");
    assert!(
        e.message
            .contains("`lowered_ttl` (7200s) must be lower than `normal_ttl` (3600s)"),
        "{e}"
    );

    let text = good().replace(
        "[[dns.records]]\nname = \"www\"\ntype = \"A\"\n",
        "[[dns.records]]\nname = \"www\"\ntype = \"A\"\n\n[[dns.records]]\nname = \"WWW\"\ntype = \"a\"\n",
    );
    let e = one_error(&text);
    assert_eq!(
        pos(&e),
        at_after(&text, "type = \"A\"", "[[dns.records]]"),
        "{e}"
    );
    assert!(
        e.message.contains("www.example.org. A is listed twice"),
        "{e}"
    );
}

#[test]
fn guard_references() {
    let text = format!(
        "{}\n[[guards]]\nid = \"g\"\nsource = \"probe\"\ncheck = \"hmoe\"\ncondition = \"error_ratio > 0.5\"\naction = \"fallback\"\narmed_from = \"switch\"\n\n[[guards]]\nid = \"g\"\nsource = \"probe\"\ncheck = \"www-dns\"\ntarget = \"new\"\ncondition = \"latency_p95_ms >> 10\"\naction = \"alert\"\narmed_from = \"switch\"\n",
        good()
    );
    let e = errors(&text);
    assert_eq!(e.len(), 4, "{e:#?}");
    assert_eq!(pos(&e[0]), at(&text, "\"hmoe\""), "{}", e[0]);
    assert!(e[0].message.contains("unknown check \"hmoe\""), "{}", e[0]);
    assert_eq!(
        pos(&e[1]),
        at_after(&text, "check = \"hmoe\"", "\"g\""),
        "{}",
        e[1]
    );
    assert!(
        e[1].message.contains("duplicate guard id \"g\""),
        "{}",
        e[1]
    );
    // A dns check runs only on the `dns` target.
    assert_eq!(
        pos(&e[2]),
        at_after(&text, "target = ", "\"new\""),
        "{}",
        e[2]
    );
    assert!(
        e[2].message.contains("does not run on target \"new\""),
        "{}",
        e[2]
    );
    assert_eq!(
        pos(&e[3]),
        at(&text, "\"latency_p95_ms >> 10\""),
        "{}",
        e[3]
    );
    assert!(e[3].message.contains("operator \">>\""), "{}", e[3]);
}

// ---------------------------------------------------------------------------
// Guard evaluation keys, `[plan] tick` and `[alerts]`
// ---------------------------------------------------------------------------

/// A `[[guards]]` table armed at "switch"; `body` holds its other keys.
fn guard(id: &str, body: &str) -> String {
    format!("\n[[guards]]\nid = \"{id}\"\n{body}\naction = \"fallback\"\narmed_from = \"switch\"\n")
}

const PROBE: &str =
    "source = \"probe\"\ncheck = \"home\"\ncondition = \"error_ratio > 0.5\"\nwindow = \"2m\"";
const STATUS: &str = "source = \"status_page\"\nurl = \"https://s.example/api/v2/status.json\"\ncondition = \"indicator >= major\"";
const PROM: &str = "source = \"prometheus\"\nurl = \"http://127.0.0.1:9090\"\nquery = \"sum(up)\"\ncondition = \"value < 1\"";

#[test]
fn tick_guard_and_alert_defaults() {
    let text = format!(
        "{}{}{}{}",
        good(),
        guard("p", PROBE),
        guard("s", STATUS),
        guard(
            "d",
            "source = \"probe\"\ncheck = \"www-dns\"\ntarget = \"dns\"\ncondition = \"dns_mismatch_ratio > 0.5\"\nwindow = \"2m\""
        ),
    );
    let r = check(&text);
    assert!(r.diagnostics.is_empty(), "{}", r.render());
    let plan = r.plan.unwrap();
    assert_eq!(plan.tick, Duration::from_secs(1));
    assert_eq!(plan.alerts, Alerts::default());
    assert!(plan.alerts.is_empty());
    assert_eq!(plan.alerts.no_evidence_after, Duration::from_secs(300));
    let [p, s, d] = &plan.guards[..] else {
        panic!("three guards")
    };
    assert_eq!(
        (p.min_samples, p.min_probes, p.paired, p.is_probe()),
        (3, 2, true, true)
    );
    assert_eq!(p.interval, Duration::from_secs(10));
    // Pairing needs the check on old and new: not for status pages, not for the dns target.
    assert_eq!(
        (s.paired, s.is_probe(), s.interval),
        (false, false, Duration::from_secs(10))
    );
    assert!(!d.paired);
}

#[test]
fn tick_guard_and_alert_keys_parse() {
    let text = format!(
        "{}{}{}\n[alerts]\nchannels = [\"ops\"]\nalertmanager = {{ url = \"http://127.0.0.1:9093/\" }}\nno_evidence_after = \"2m\"\n",
        good().replace("name = \"t\"", "name = \"t\"\ntick = \"250ms\""),
        guard(
            "p",
            &format!("{PROBE}\nmin_samples = 4\nmin_probes = 1\npaired = false")
        ),
        guard("q", &format!("{PROM}\ninterval = \"30s\"")),
    );
    let r = check(&text);
    assert!(r.diagnostics.is_empty(), "{}", r.render());
    let plan = r.plan.unwrap();
    assert_eq!(plan.tick, Duration::from_millis(250));
    let p = &plan.guards[0];
    assert_eq!((p.min_samples, p.min_probes, p.paired), (4, 1, false));
    assert_eq!(plan.guards[1].interval, Duration::from_secs(30));
    assert_eq!(
        plan.alerts,
        Alerts {
            channels: vec!["ops".into()],
            // The trailing slash goes: the path /api/v2/alerts is appended.
            alertmanager: Some(UrlSource::Inline("http://127.0.0.1:9093".into())),
            no_evidence_after: Duration::from_secs(120),
        }
    );

    // A URL with credentials comes from the environment or a file, like webhook URLs.
    for (written, source) in [
        (
            "{ url_env = \"AM_URL\" }",
            SecretSource::Env("AM_URL".into()),
        ),
        (
            "{ url_file = \"am.url\" }",
            SecretSource::File("/plans/am.url".into()),
        ),
    ] {
        let text = format!("{}\n[alerts]\nalertmanager = {written}\n", good());
        let r = check(&text);
        assert!(r.diagnostics.is_empty(), "{}", r.render());
        assert_eq!(
            r.plan.unwrap().alerts.alertmanager,
            Some(UrlSource::Secret(source))
        );
    }
}

#[test]
fn tick_must_be_between_100ms_and_1m() {
    for bad in ["50ms", "2m"] {
        let text = good().replace("name = \"t\"", &format!("name = \"t\"\ntick = \"{bad}\""));
        let e = one_error(&text);
        assert_eq!(pos(&e), at(&text, &format!("\"{bad}\"")), "{e}");
        assert!(e.message.contains("between 100ms and 1m"), "{e}");
    }
    let text = good().replace("name = \"t\"", "name = \"t\"\ntick = \"fast\"");
    let e = one_error(&text);
    assert_eq!(pos(&e), at(&text, "\"fast\""), "{e}");
    assert!(e.message.contains("invalid duration \"fast\""), "{e}");
}

#[test]
fn guard_evaluation_key_errors_are_all_reported() {
    let text = format!(
        "{}\n[[checks]]\nid = \"only-new\"\nkind = \"http\"\ntargets = [\"new\"]\nurl = \"https://www.example.org/x\"\n{}{}{}{}{}{}",
        good(),
        guard("a", &format!("{PROBE}\nmin_samples = 0\nmin_probes = -1")),
        guard("b", &format!("{STATUS}\npaired = true\nmin_probes = 2")),
        guard("c", &format!("{PROBE}\ninterval = \"5s\"")),
        guard("d", &format!("{PROM}\ninterval = \"500ms\"")),
        guard(
            "e",
            "source = \"probe\"\ncheck = \"www-dns\"\ntarget = \"dns\"\ncondition = \"dns_mismatch_ratio > 0.5\"\nwindow = \"2m\"\npaired = true"
        ),
        guard(
            "f",
            "source = \"probe\"\ncheck = \"only-new\"\ncondition = \"error_ratio > 0.5\"\nwindow = \"2m\"\npaired = true"
        ),
    );
    let e = errors(&text);
    assert_eq!(e.len(), 8, "{e:#?}");
    let expect = [
        (
            at(&text, "min_samples = 0"),
            "`min_samples` 0: expected 1 or more",
        ),
        (
            at(&text, "min_probes = -1"),
            "`min_probes` -1: expected 1 or more",
        ),
        (
            at(&text, "paired = true"),
            "guard \"b\": `paired` does not go with source \"status_page\": it is about probes",
        ),
        (
            at(&text, "min_probes = 2"),
            "guard \"b\": `min_probes` does not go with source \"status_page\"",
        ),
        (
            at(&text, "interval = \"5s\""),
            "guard \"c\": `interval` does not go with source \"probe\": probe guards are judged every `[plan] tick`",
        ),
        (
            at(&text, "interval = \"500ms\""),
            "`interval` \"500ms\": expected between 1s and 1h",
        ),
        (
            at_after(&text, "id = \"e\"", "paired = true"),
            "guard \"e\": `paired = true` compares each probe's results on old and new, but this guard watches target \"dns\"",
        ),
        (
            at_after(&text, "id = \"f\"", "paired = true"),
            "check \"only-new\" does not run on both",
        ),
    ];
    for (d, (at, msg)) in e.iter().zip(expect) {
        // Values are reported where they are written (`key = VALUE`: the value's column).
        assert_eq!(d.line, at.0, "{d}");
        assert!(d.column > at.1, "{d}");
        assert!(d.message.contains(msg), "{d}\nexpected: {msg}");
    }
}

#[test]
fn alerts_errors_have_positions() {
    let text = format!(
        "{}\n[alerts]\nchannels = [\"ops\", \"pager\", \"ops\"]\nalertmanager = {{ url = \"ftp://am:9093\" }}\nno_evidence_after = \"0s\"\n",
        good()
    );
    let e = errors(&text);
    assert_eq!(e.len(), 4, "{e:#?}");
    assert_eq!(pos(&e[0]), at(&text, "\"pager\""), "{}", e[0]);
    assert!(
        e[0].message
            .contains("[alerts]: unknown channel \"pager\"; channels are the `name`s of [[notifications.webhooks]]: ops"),
        "{}",
        e[0]
    );
    assert_eq!(
        pos(&e[1]),
        at_after(&text, "\"pager\"", "\"ops\""),
        "{}",
        e[1]
    );
    assert!(e[1].message.contains("listed twice"), "{}", e[1]);
    assert_eq!(pos(&e[2]), at(&text, "\"ftp://am:9093\""), "{}", e[2]);
    assert!(e[2].message.contains("expected an http(s) URL"), "{}", e[2]);
    assert_eq!(pos(&e[3]), at(&text, "\"0s\""), "{}", e[3]);
    assert!(e[3].message.contains("expected 1s or more"), "{}", e[3]);

    for (written, msg) in [
        ("{}", "`alertmanager` needs `url = "),
        (
            "{ url = \"http://am:9093\", url_env = \"AM\" }",
            "write one of `url`, `url_env` and `url_file`",
        ),
        (
            "{ url_env = \"1AM\" }",
            "`url_env` \"1AM\" is not an environment variable name",
        ),
        ("{ url_file = \"\" }", "`url_file` is empty"),
    ] {
        let text = format!("{}\n[alerts]\nalertmanager = {written}\n", good());
        let e = one_error(&text);
        assert!(e.message.contains(msg), "{e}\nexpected: {msg}");
        assert_eq!(e.line, at(&text, "alertmanager = ").0, "{e}");
    }

    let text = format!("{}\n[alerts]\nchanels = [\"ops\"]\n", good());
    let e = one_error(&text);
    assert_eq!(pos(&e), at(&text, "chanels"), "{e}");
    assert!(e.message.contains("unknown field `chanels`"), "{e}");
}

#[test]
fn a_window_too_short_for_min_samples_is_warned_about() {
    // `home` runs every 30s (the default): 1m holds about 2 results, fewer than 3.
    let short = PROBE.replace("window = \"2m\"", "window = \"1m\"");
    let text = format!("{}{}", good(), guard("p", &short));
    let w = one_warning(&text);
    assert_eq!(pos(&w), at(&text, "\"1m\""), "{w}");
    assert!(
        w.message.contains("guard \"p\": check \"home\" runs every 30s, so a probe has about 2 results in the 1m window, fewer than `min_samples` = 3")
            && w.message.contains("make `window` at least 1m30s"),
        "{w}"
    );
    // Lowering min_samples, or watching hash mismatches (hard failures need no votes), is fine.
    let text = format!(
        "{}{}",
        good(),
        guard("p", &format!("{short}\nmin_samples = 2"))
    );
    assert!(warnings(&text).is_empty());
    let hash = short.replace("error_ratio > 0.5", "hash_mismatches > 0");
    assert!(warnings(&format!("{}{}", good(), guard("p", &hash))).is_empty());
}

#[test]
fn an_alert_guard_needs_somewhere_to_send() {
    let alert = guard("p", PROBE).replace("action = \"fallback\"", "action = \"alert\"");
    let text = format!("{}{alert}", good());
    let w = one_warning(&text);
    assert_eq!(pos(&w), at(&text, "\"alert\""), "{w}");
    assert!(
        w.message
            .contains("guard \"p\" only raises an alert, and [alerts] names no `channels`"),
        "{w}"
    );
    let text = format!("{}{alert}\n[alerts]\nchannels = [\"ops\"]\n", good());
    assert!(warnings(&text).is_empty());
    let shadow = alert.replace("armed_from", "mode = \"shadow\"\narmed_from");
    assert!(warnings(&format!("{}{shadow}", good())).is_empty());
}
