//! The shipped operations files are valid for the real tools and use only
//! metrics the coordinator defines: `promtool check config`, `check rules` and
//! `test rules` on `deploy/prometheus/`, `amtool check-config` and the routing
//! of `deploy/alertmanager/alertmanager.yml`, `systemd-analyze verify` on the
//! units in `deploy/systemd/`, the compose stack's coordinator config, and
//! every `cutover_*` name in `deploy/` and `dashboards/` against
//! `coordinator/src/metrics.rs`.
//!
//! Without `promtool` / `amtool` these tests skip with a message, except in CI
//! (`CI` set), where they fail. Without `systemd-analyze` (containers) the unit
//! check is skipped everywhere.

use std::collections::{BTreeMap, BTreeSet};

use cutover_e2e::ops::{self, Catalog};
use cutover_e2e::procs;

const PROMETHEUS_CONFIG: &str = "deploy/prometheus/prometheus.yml";
const RULES: &str = "deploy/prometheus/rules/cutover.yml";
const RULE_TESTS: &str = "deploy/prometheus/rules/cutover.test.yml";
const ALERTMANAGER_CONFIG: &str = "deploy/alertmanager/alertmanager.yml";

/// Metrics the shipped rules or dashboards use that the coordinator does not
/// export yet (none today). A name listed here may be used before it exists;
/// once `coordinator/src/metrics.rs` defines it, it must leave this list, and
/// the test below fails until it does.
const PROPOSED: &[&str] = &[];

fn read(rel: &str) -> String {
    let path = ops::repo_root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn run(tool: &std::path::Path, args: &[&str]) -> String {
    ops::run_ok(tool, args).unwrap_or_else(|e| panic!("{e:#}"))
}

#[test]
fn prometheus_config_and_rules_pass_promtool() {
    let Some(promtool) = ops::tool("promtool", "prometheus") else {
        return;
    };
    let out = run(&promtool, &["check", "config", PROMETHEUS_CONFIG]);
    assert!(out.contains("SUCCESS"), "{out}");
    let out = run(&promtool, &["check", "rules", RULES]);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn alert_rule_unit_tests_pass() {
    let Some(promtool) = ops::tool("promtool", "prometheus") else {
        return;
    };
    let out = run(&promtool, &["test", "rules", RULE_TESTS]);
    assert!(out.contains("SUCCESS"), "{out}");
}

/// `- alert: NAME` blocks of the rule file: name → the block's text.
fn alert_blocks(rules: &str) -> BTreeMap<String, String> {
    let mut blocks: BTreeMap<String, String> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in rules.lines() {
        if let Some(name) = line.trim().strip_prefix("- alert:") {
            current = Some(name.trim().to_string());
        } else if line.trim_start().starts_with("- ") && line.trim_start().contains("record:") {
            current = None;
        }
        if let Some(name) = &current {
            let block = blocks.entry(name.clone()).or_default();
            block.push_str(line);
            block.push('\n');
        }
    }
    blocks
}

#[test]
fn every_alert_has_severity_annotations_and_both_kinds_of_unit_test() {
    let blocks = alert_blocks(&read(RULES));
    assert!(blocks.len() >= 6, "too few alerts found: {blocks:?}");

    // In the test file, `alertname: X` followed by `exp_alerts: []` is a case where
    // X must stay quiet; followed by a list, one where it fires.
    let tests = read(RULE_TESTS);
    let lines: Vec<&str> = tests.lines().map(str::trim).collect();
    let mut fires = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(name) = line.strip_prefix("alertname:") else {
            continue;
        };
        match lines.get(i + 1) {
            Some(&"exp_alerts: []") => quiet.insert(name.trim().to_string()),
            Some(&"exp_alerts:") => fires.insert(name.trim().to_string()),
            other => panic!("{RULE_TESTS}: `{line}` is followed by {other:?}, not exp_alerts"),
        };
    }

    let mut problems = Vec::new();
    for (name, block) in &blocks {
        if !(block.contains("severity: critical") || block.contains("severity: warning")) {
            problems.push(format!("{name}: no severity critical|warning label"));
        }
        for annotation in ["summary:", "description:", "runbook:"] {
            if !block.contains(annotation) {
                problems.push(format!("{name}: no {annotation} annotation"));
            }
        }
        if !fires.contains(name) {
            problems.push(format!("{name}: no unit test where it fires"));
        }
        if !quiet.contains(name) {
            problems.push(format!("{name}: no unit test where it stays quiet"));
        }
    }
    for name in fires.union(&quiet) {
        if !blocks.contains_key(name) {
            problems.push(format!(
                "{RULE_TESTS} tests {name}, which {RULES} does not define"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn alertmanager_config_passes_amtool_and_routes_by_severity() {
    let Some(amtool) = ops::tool("amtool", "prometheus-alertmanager") else {
        return;
    };
    let out = run(&amtool, &["check-config", ALERTMANAGER_CONFIG]);
    assert!(out.contains("SUCCESS"), "{out}");

    // Critical alerts (from the rules and from the coordinator itself) reach the
    // webhook and Slack; warnings only the webhook.
    for (labels, receivers) in [
        (
            &[
                "alertname=CutoverFallbackTriggered",
                "severity=critical",
                "guard=install-new",
            ][..],
            "webhook-and-slack",
        ),
        (
            &[
                "alertname=CutoverFallbackStarted",
                "severity=critical",
                "guard=install-new",
            ],
            "webhook-and-slack",
        ),
        (
            &[
                "alertname=CutoverGuardWithoutEvidence",
                "severity=warning",
                "guard=install-new",
            ],
            "webhook",
        ),
        (
            &["alertname=CutoverStepStuck", "severity=warning"],
            "webhook",
        ),
    ] {
        let verify = format!("--verify.receivers={receivers}");
        let mut args = vec![
            "config",
            "routes",
            "test",
            "--config.file",
            ALERTMANAGER_CONFIG,
            &verify,
        ];
        args.extend_from_slice(labels);
        run(&amtool, &args);
    }
}

#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    let Some(analyze) = ops::optional_tool("systemd-analyze") else {
        return;
    };
    // verify insists that ExecStart's program exists: point the units at the
    // binaries cargo built instead of /usr/local/bin.
    let dir = tempfile::tempdir().unwrap();
    let mut units = Vec::new();
    for (unit, program, bin) in [
        (
            "cutover-coordinator.service",
            "/usr/local/bin/cutover ",
            procs::cutover_bin(),
        ),
        (
            "cutover-probe.service",
            "/usr/local/bin/cutover-probe ",
            procs::probe_bin(),
        ),
    ] {
        let bin = bin.unwrap();
        let text = read(&format!("deploy/systemd/{unit}"));
        assert!(text.contains(&format!("ExecStart={program}")), "{unit}");
        let text = text.replace(program, &format!("{} ", bin.display()));
        let path = dir.path().join(unit);
        std::fs::write(&path, text).unwrap();
        units.push(path.display().to_string());
    }
    let mut args = vec!["verify", "--man=no"];
    args.extend(units.iter().map(String::as_str));
    // verify exits 0 on unknown keys and bad values too, and only prints them.
    let out = run(&analyze, &args);
    let ours: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("cutover-coordinator") || l.contains("cutover-probe"))
        .collect();
    assert!(ours.is_empty(), "systemd-analyze verify:\n{out}");
}

#[test]
fn compose_coordinator_config_loads() {
    let path = ops::repo_root().join("deploy/docker/coordinator.toml");
    let cfg = cutover_coordinator::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    // Prometheus (deploy/docker/prometheus-targets/) scrapes coordinator:9464.
    assert_eq!(
        cfg.server.metrics_listen,
        Some("0.0.0.0:9464".parse().unwrap()),
        "{}",
        path.display()
    );
    let targets = read("deploy/docker/prometheus-targets/cutover-coordinator.yml");
    assert!(targets.contains("coordinator:9464"), "{targets}");
}

#[test]
fn every_metric_in_rules_and_dashboards_is_defined_by_the_coordinator() {
    let catalog = Catalog::coordinator().unwrap();
    assert!(
        catalog.defines("cutover_probes_connected"),
        "metrics.rs was not read: {catalog:?}"
    );
    let root = ops::repo_root();
    let mut files = ops::files_under(&root.join("deploy"), &["yml", "yaml"]).unwrap();
    files.extend(ops::files_under(&root.join("dashboards"), &["json", "yml", "yaml"]).unwrap());
    assert!(
        files.iter().any(|f| f.ends_with(RULES)),
        "the rules were not scanned: {files:?}"
    );

    let mut used: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let rel = file
            .strip_prefix(&root)
            .unwrap_or(file)
            .display()
            .to_string();
        for name in ops::metric_names_in(&text) {
            used.entry(name).or_default().push(rel.clone());
        }
    }

    let mut problems = Vec::new();
    for (name, files) in &used {
        if !catalog.defines(name) && !PROPOSED.contains(&name.as_str()) {
            problems.push(format!(
                "{name} (used in {}) is not defined in coordinator/src/metrics.rs",
                files.join(", ")
            ));
        }
    }
    for name in PROPOSED {
        if catalog.defines(name) {
            problems.push(format!(
                "{name} is now defined in metrics.rs: remove it from PROPOSED in tests/tests/deploy.rs \
                 and from deploy/README.md"
            ));
        }
        if !used.contains_key(*name) {
            problems.push(format!("{name} is in PROPOSED but nothing uses it"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
