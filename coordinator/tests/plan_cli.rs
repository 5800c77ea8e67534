//! Process-level tests of `cutover plan check` and `cutover plan dry-run`: the
//! real binary, its exit status and what it prints, with no coordinator and no
//! config (even with a bogus `CUTOVER_CONFIG` in the environment).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn cutover(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args(args)
        .env("CUTOVER_CONFIG", "/nonexistent/cutover.toml")
        .env_remove("CUTOVER_ADMIN")
        .output()
        .expect("run the cutover binary")
}

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/elm-package-site.toml")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn check_passes_the_example() {
    let path = example();
    let out = cutover(&["plan", "check", path.to_str().unwrap(), "--deny-warnings"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.ends_with("0 errors, 0 warnings: ok\n"),
        "one-line summary: {stdout}"
    );
}

#[test]
fn dry_run_prints_the_example_without_touching_anything() {
    let path = example();
    let out = cutover(&["plan", "dry-run", path.to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    for needle in [
        "plan elm-package-site",
        "package.elm-lang.org. A 300 → 203.0.113.20",
        "stop-old [exec, once]",
        "guards armed from here",
        "\nfallback: ",
    ] {
        assert!(stdout.contains(needle), "lacks {needle:?}:\n{stdout}");
    }
}

const BROKEN: &str = r#"[plan]
name = "broken"

[sites.old]
addresses = ["203.0.113.10"]
[sites.new]
addresses = ["203.0.113.20"]

[[checks]]
id = "home"
kind = "http"
url = "https://www.example.org/"

[dns]
zone = "example.org"
provider = "manual"

[[dns.records]]
name = "www"
type = "A"

[[steps]]
id = "switch"
kind = "dns"
set = "new"
once = true

[[steps]]
id = "nap"
kind = "wait"
duration = "forever"
"#;

fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

#[test]
fn check_reports_errors_with_positions_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "broken.toml", BROKEN);
    let file = path.to_str().unwrap();
    let out = cutover(&["plan", "check", file]);
    let (stdout, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.contains(&format!(
            "{file}:26:8: error: step \"switch\": `once` is only for `exec` steps"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "{file}:31:12: error: `duration`: invalid duration \"forever\""
        )),
        "{stdout}"
    );
    assert!(stderr.contains(&format!("{file}: 2 errors")), "{stderr}");

    // dry-run refuses a plan with errors, and says why.
    let out = cutover(&["plan", "dry-run", file]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains(&format!("{file}:26:8: error:")), "{stderr}");
}

#[test]
fn warnings_pass_unless_denied() {
    let dir = tempfile::tempdir().unwrap();
    // Valid, but the switch is neither prepared (no TTL lowering) nor verified, and nothing falls back.
    let risky = BROKEN
        .replace("once = true\n", "")
        .replace("duration = \"forever\"", "duration = \"5m\"");
    let path = write(dir.path(), "risky.toml", &risky);
    let file = path.to_str().unwrap();

    let out = cutover(&["plan", "check", file]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.contains(&format!(
            "{file}:1:1: warning: the plan has no [[fallback]]"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "{file}:25:7: warning: step \"switch\" points DNS at the new site"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "{file}:25:7: warning: step \"switch\" switches DNS with the TTL at 1h"
        )),
        "{stdout}"
    );
    assert!(stdout.contains("0 errors, 3 warnings: ok"), "{stdout}");

    let out = cutover(&["plan", "check", "--deny-warnings", file]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("0 errors, 3 warnings (--deny-warnings)"),
        "{stderr}"
    );

    // dry-run still runs and lists the warnings after the steps.
    let out = cutover(&["plan", "dry-run", file]);
    let (stdout, _) = text(&out);
    assert!(out.status.success());
    assert!(
        stdout.contains("www.example.org. A 3600 → 203.0.113.20"),
        "{stdout}"
    );
    assert!(
        stdout.contains("warning: the plan has no [[fallback]]"),
        "{stdout}"
    );
}

#[test]
fn unreadable_file_is_an_error() {
    let out = cutover(&["plan", "check", "/nonexistent/plan.toml"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("cannot read plan file /nonexistent/plan.toml"),
        "{stderr}"
    );
}
