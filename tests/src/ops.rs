//! The operations kit (`deploy/`, `dashboards/`) checked against the code:
//! which metrics `coordinator/src/metrics.rs` defines, which `cutover_*` names
//! a file uses, and finding the external tools (`promtool`, `amtool`) that
//! validate the files.
//!
//! A missing tool skips the test with a message on a developer's machine and
//! fails it when `CI` is set, so CI never passes by skipping.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;

/// The repository's root (the parent of the `tests/` crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives in a folder of the repository")
        .to_path_buf()
}

/// How a metric is exposed, which decides the names it appears under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Exposed under its own name.
    Gauge,
    /// Exposed under its own name (the constants already end in `_total`).
    Counter,
    /// Exposed as `NAME_bucket`, `NAME_sum` and `NAME_count`.
    Histogram,
    /// A constant without a `describe_*!` call: only its own name counts.
    Undescribed,
}

/// The metric names a crate's `metrics` module defines, read from its source
/// text: every `pub const X: &str = "cutover_…";`, with its kind from the
/// `describe_gauge!` / `describe_counter!` / `describe_histogram!` call that
/// names `X`.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// Metric name (the constant's value) → kind.
    pub metrics: BTreeMap<String, Kind>,
}

impl Catalog {
    /// Reads `coordinator/src/metrics.rs`.
    pub fn coordinator() -> anyhow::Result<Self> {
        let path = repo_root().join("coordinator/src/metrics.rs");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        Ok(Self::parse(&text))
    }

    /// Parses the text of a `metrics` module.
    pub fn parse(text: &str) -> Self {
        let mut consts = BTreeMap::new();
        for line in text.lines() {
            let Some(rest) = line.trim().strip_prefix("pub const ") else {
                continue;
            };
            let Some((ident, rest)) = rest.split_once(':') else {
                continue;
            };
            let Some(value) = rest
                .split_once('"')
                .and_then(|(_, v)| v.split_once('"'))
                .map(|(v, _)| v)
            else {
                continue;
            };
            if value.starts_with("cutover_") {
                consts.insert(ident.trim().to_string(), value.to_string());
            }
        }
        let mut kinds = BTreeMap::new();
        for (macro_name, kind) in [
            ("describe_gauge!(", Kind::Gauge),
            ("describe_counter!(", Kind::Counter),
            ("describe_histogram!(", Kind::Histogram),
        ] {
            for (at, _) in text.match_indices(macro_name) {
                let ident: String = text[at + macro_name.len()..]
                    .trim_start()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                kinds.insert(ident, kind);
            }
        }
        let metrics = consts
            .iter()
            .map(|(ident, name)| {
                let kind = kinds.get(ident).copied().unwrap_or(Kind::Undescribed);
                (name.clone(), kind)
            })
            .collect();
        Self { metrics }
    }

    /// True if `name`, as written in a query, is a series the exporter
    /// produces for one of the defined metrics.
    pub fn defines(&self, name: &str) -> bool {
        if self.metrics.contains_key(name) {
            return true;
        }
        let histogram = ["_bucket", "_sum", "_count"].iter().any(|s| {
            name.strip_suffix(s)
                .is_some_and(|base| self.metrics.get(base) == Some(&Kind::Histogram))
        });
        // A counter constant without `_total` would be exposed with it if the
        // exporter's recommended naming were switched on.
        let counter = name.strip_suffix("_total").is_some_and(|base| {
            !base.ends_with("_total") && self.metrics.get(base) == Some(&Kind::Counter)
        });
        histogram || counter
    }
}

/// Every `cutover_*` metric name in `text` (a YAML rule file, a dashboard's
/// JSON, …). A prefix followed by `*` (`cutover_guard_*` in prose) is not a name.
pub fn metric_names_in(text: &str) -> BTreeSet<String> {
    let bytes = text.as_bytes();
    let name_char = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_';
    let mut names = BTreeSet::new();
    for (at, _) in text.match_indices("cutover_") {
        if at > 0 && (name_char(bytes[at - 1]) || bytes[at - 1].is_ascii_alphabetic()) {
            continue;
        }
        let end = bytes[at..]
            .iter()
            .position(|b| !name_char(*b))
            .map_or(bytes.len(), |n| at + n);
        if bytes.get(end) == Some(&b'*') {
            continue;
        }
        let name = text[at..end].trim_end_matches('_');
        if name.len() > "cutover_".len() {
            names.insert(name.to_string());
        }
    }
    names
}

/// Files under `dir` (recursively) whose names end in one of `exts`
/// (without the dot), sorted. A missing `dir` has no files.
pub fn files_under(dir: &Path, exts: &[&str]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("listing {}", d.display())),
        };
        for entry in entries {
            let path = entry
                .with_context(|| format!("listing {}", d.display()))?
                .path();
            if path.is_dir() {
                todo.push(path);
            } else if path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| exts.contains(&e))
            {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// True when running in CI (the `CI` variable is set to anything but
/// empty, `0` or `false`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// The path of `tool` on `PATH`. When it is missing: panics in CI (with the
/// Debian package that provides it), otherwise prints why the test is
/// skipped and returns `None`.
pub fn tool(tool: &str, debian_package: &str) -> Option<PathBuf> {
    let found = which(tool);
    if found.is_none() {
        let msg = format!(
            "`{tool}` is not on PATH; install it with `apt-get install -y {debian_package}` (.ci/run does)"
        );
        assert!(!in_ci(), "{msg}");
        eprintln!("skipped: {msg}");
    }
    found
}

/// The path of `tool` on `PATH`, for checks that CI images may lack (e.g.
/// `systemd-analyze` in a container without systemd): when it is missing the
/// test is skipped with a message, in CI too.
pub fn optional_tool(tool: &str) -> Option<PathBuf> {
    let found = which(tool);
    if found.is_none() {
        eprintln!("skipped: `{tool}` is not on PATH");
    }
    found
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(tool))
            .find(|p| p.is_file())
    })
}

/// Runs `program args…` in the repository root and returns its combined
/// output; fails with that output when the exit status is not zero.
pub fn run_ok(program: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .current_dir(repo_root())
        .output()
        .with_context(|| format!("running {}", program.display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    anyhow::ensure!(
        out.status.success(),
        "`{} {}` failed ({}):\n{text}",
        program.display(),
        args.join(" "),
        out.status
    );
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_reads_consts_and_kinds() {
        let c = Catalog::parse(
            r#"
pub const UP: &str = "cutover_up";
/// doc
pub const HITS: &str = "cutover_hits_total";
pub const LAT: &str = "cutover_latency_seconds";
pub const OTHER: &str = "not_ours";
pub const BYTES: &str = "cutover_bytes";
fn describe() {
    describe_gauge!(UP, "…");
    describe_counter!(
        HITS,
        "…"
    );
    describe_histogram!(LAT, Unit::Seconds, "…");
    describe_counter!(BYTES, "…");
}
"#,
        );
        assert_eq!(c.metrics.len(), 4, "{c:?}");
        assert!(c.defines("cutover_up"));
        assert!(c.defines("cutover_hits_total"));
        assert!(c.defines("cutover_latency_seconds_bucket"));
        assert!(c.defines("cutover_latency_seconds_count"));
        assert!(!c.defines("cutover_up_bucket"), "a gauge has no buckets");
        assert!(!c.defines("cutover_hits_total_total"));
        assert!(c.defines("cutover_bytes_total"));
        assert!(!c.defines("cutover_up_total"), "a gauge is not a counter");
        assert!(!c.defines("cutover_down"));
    }

    #[test]
    fn names_are_found_in_queries_and_prose() {
        let n = metric_names_in(
            "expr: sum(rate(cutover_hits_total{x=\"cutover_no\"}[5m])) / cutover_up\n\
             # the cutover_guard_* family, job cutover-coordinator, alert CutoverDown, my_cutover_x",
        );
        let want: BTreeSet<String> = ["cutover_hits_total", "cutover_no", "cutover_up"]
            .map(String::from)
            .into();
        assert_eq!(n, want);
    }
}
