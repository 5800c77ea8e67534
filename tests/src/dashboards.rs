//! The Grafana dashboards in `dashboards/` as a test reads them: every
//! PromQL query of every panel (panels inside collapsed rows included), of
//! every annotation and of every variable, and Grafana's substitution of
//! template variables, so a test can run each query against a real
//! Prometheus the way Grafana would.
//!
//! Only what the shipped dashboards use is understood: `query` variables of
//! the form `label_values(SELECTOR, LABEL)` or `label_values(LABEL)`,
//! `custom`, `constant`, `textbox` and `interval` variables, and the
//! `datasource` variable (which only appears in `datasource` fields, never in
//! a query). Anything else is reported, so a new kind of variable shows up as
//! a clear failure rather than an unchecked query.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde_json::Value;

/// Where a query sits in its dashboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A panel's target.
    Panel,
    /// An annotation (drawn on every panel).
    Annotation,
}

/// One PromQL query of a dashboard, as written (variables not substituted).
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// Panel or annotation.
    pub source: Source,
    /// The panel's title, after its row's (`Row › Panel`), or the annotation's name.
    pub title: String,
    /// The target's `refId` (empty for annotations).
    pub ref_id: String,
    /// The PromQL.
    pub expr: String,
    /// The panel shows the value at the dashboard's "now" (`instant: true`).
    pub instant: bool,
}

/// How a variable gets its values.
#[derive(Debug, Clone, PartialEq)]
pub enum VariableKind {
    /// The datasource picker: never substituted into a query.
    Datasource,
    /// A Prometheus query for its values.
    Query(String),
    /// A fixed list (`custom`, `interval`).
    Custom(Vec<String>),
    /// One fixed value (`constant`, `textbox`).
    Constant(String),
    /// A type this module does not understand (its Grafana `type`).
    Other(String),
}

/// A template variable.
#[derive(Debug, Clone, PartialEq)]
pub struct Variable {
    /// Its name (`$name` in queries).
    pub name: String,
    /// Where its values come from.
    pub kind: VariableKind,
    /// Offers "All".
    pub include_all: bool,
    /// What "All" stands for (`allValue`), if set; else every value.
    pub all_value: Option<String>,
    /// The value saved as selected, if any.
    pub current: Option<String>,
}

/// A dashboard file.
#[derive(Debug, Clone)]
pub struct Dashboard {
    /// The file.
    pub path: PathBuf,
    /// Its `uid`.
    pub uid: String,
    /// Its `title`.
    pub title: String,
    /// Its template variables, in definition order (later ones may use earlier ones).
    pub variables: Vec<Variable>,
    /// Every panel and annotation query.
    pub queries: Vec<Query>,
}

impl Dashboard {
    /// Reads and parses a dashboard JSON file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let json: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        Self::parse(path, &json).with_context(|| format!("reading {}", path.display()))
    }

    /// Parses a dashboard's JSON.
    pub fn parse(path: &Path, json: &Value) -> anyhow::Result<Self> {
        let mut queries = Vec::new();
        for a in json["annotations"]["list"].as_array().into_iter().flatten() {
            let Some(expr) = a["expr"].as_str().filter(|e| !e.trim().is_empty()) else {
                continue; // Grafana's built-in annotation has no query.
            };
            queries.push(Query {
                source: Source::Annotation,
                title: a["name"]
                    .as_str()
                    .unwrap_or("(unnamed annotation)")
                    .to_owned(),
                ref_id: String::new(),
                expr: expr.to_owned(),
                instant: false,
            });
        }
        collect_panels(
            json["panels"].as_array().map_or(&[][..], Vec::as_slice),
            None,
            &mut queries,
        );
        let mut variables = Vec::new();
        for v in json["templating"]["list"].as_array().into_iter().flatten() {
            variables.push(variable(v)?);
        }
        Ok(Dashboard {
            path: path.to_owned(),
            uid: json["uid"].as_str().unwrap_or_default().to_owned(),
            title: json["title"].as_str().unwrap_or_default().to_owned(),
            variables,
            queries,
        })
    }

    /// The file's name (`cutover.json`), for messages.
    pub fn file_name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// Every `*.json` dashboard directly in `dir`, sorted by file name.
pub fn load_dir(dir: &Path) -> anyhow::Result<Vec<Dashboard>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    paths.iter().map(|p| Dashboard::load(p)).collect()
}

/// Adds the queries of `panels` (and of panels nested in collapsed rows).
/// A row's title prefixes the panels that follow it (Grafana puts expanded
/// rows' panels after the row, collapsed rows' panels inside it).
fn collect_panels(panels: &[Value], row: Option<&str>, out: &mut Vec<Query>) {
    let mut current_row = row.map(str::to_owned);
    for p in panels {
        let title = p["title"].as_str().unwrap_or("(untitled)");
        if p["type"] == "row" {
            if row.is_none() {
                current_row = Some(title.to_owned());
            }
            if let Some(inner) = p["panels"].as_array() {
                collect_panels(inner, Some(title), out);
            }
            continue;
        }
        let full = match &current_row {
            Some(r) => format!("{r} › {title}"),
            None => title.to_owned(),
        };
        for t in p["targets"].as_array().into_iter().flatten() {
            let Some(expr) = t["expr"].as_str().filter(|e| !e.trim().is_empty()) else {
                continue;
            };
            // A target of another datasource type (Loki, TestData) is not ours to run.
            let ds_type = t["datasource"]["type"]
                .as_str()
                .or(p["datasource"]["type"].as_str());
            if ds_type.is_some_and(|ty| ty != "prometheus") {
                continue;
            }
            out.push(Query {
                source: Source::Panel,
                title: full.clone(),
                ref_id: t["refId"].as_str().unwrap_or_default().to_owned(),
                expr: expr.to_owned(),
                instant: t["instant"].as_bool() == Some(true),
            });
        }
        if let Some(inner) = p["panels"].as_array() {
            collect_panels(inner, Some(&full), out);
        }
    }
}

fn variable(v: &Value) -> anyhow::Result<Variable> {
    let name = v["name"]
        .as_str()
        .context("a template variable has no name")?
        .to_owned();
    let ty = v["type"].as_str().unwrap_or_default();
    // `query` is a string in old dashboards, an object in newer ones.
    let query = v["query"]
        .as_str()
        .or(v["query"]["query"].as_str())
        .or(v["definition"].as_str())
        .unwrap_or_default()
        .to_owned();
    let kind = match ty {
        "datasource" => VariableKind::Datasource,
        "query" => VariableKind::Query(query),
        "custom" | "interval" => VariableKind::Custom(
            query
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
        ),
        "constant" | "textbox" => VariableKind::Constant(query),
        other => VariableKind::Other(other.to_owned()),
    };
    let current = match &v["current"]["value"] {
        Value::String(s) => Some(s.clone()),
        Value::Array(a) => a.first().and_then(Value::as_str).map(str::to_owned),
        _ => None,
    };
    Ok(Variable {
        name,
        kind,
        include_all: v["includeAll"].as_bool() == Some(true),
        all_value: v["allValue"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
        current,
    })
}

/// A `label_values(…)` variable query: the values of `label` among the
/// series matching `selector` (all series when `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelValues {
    /// The series selector, if any.
    pub selector: Option<String>,
    /// The label.
    pub label: String,
}

/// Parses `label_values(SELECTOR, LABEL)` or `label_values(LABEL)`; `None`
/// for any other variable query.
pub fn parse_label_values(query: &str) -> Option<LabelValues> {
    let inner = query
        .trim()
        .strip_prefix("label_values")?
        .trim_start()
        .strip_prefix('(')?
        .strip_suffix(')')?;
    // The label is after the last comma outside braces and quotes.
    let (mut depth, mut quoted, mut split) = (0i32, false, None);
    let bytes = inner.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'"' if i == 0 || bytes[i - 1] != b'\\' => quoted = !quoted,
            b'{' | b'(' | b'[' if !quoted => depth += 1,
            b'}' | b')' | b']' if !quoted => depth -= 1,
            b',' if !quoted && depth == 0 => split = Some(i),
            _ => {}
        }
    }
    let (selector, label) = match split {
        Some(i) => (Some(inner[..i].trim().to_owned()), inner[i + 1..].trim()),
        None => (None, inner.trim()),
    };
    let ok = !label.is_empty()
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    ok.then(|| LabelValues {
        selector,
        label: label.to_owned(),
    })
}

/// Grafana's built-in variables for a range query over `range_secs` seconds
/// with `step_secs` between points and `rate_interval` for `$__rate_interval`
/// (Grafana derives it from the datasource's scrape interval: at least four
/// scrapes).
pub fn builtins(rate_interval: &str, step_secs: u64, range_secs: u64) -> BTreeMap<String, String> {
    [
        ("__rate_interval", rate_interval.to_owned()),
        ("__interval", format!("{step_secs}s")),
        ("__interval_ms", (step_secs * 1000).to_string()),
        ("__range", format!("{range_secs}s")),
        ("__range_s", range_secs.to_string()),
        ("__range_ms", (range_secs * 1000).to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Replaces Grafana's variable references in `text` (`$name`, `${name}`,
/// `${name:format}`, `[[name]]`) with their values from `vars`. A reference
/// to a variable not in `vars` is an error naming it; a `$` not followed by
/// a name is left alone.
pub fn substitute(text: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let is_name = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut plain = 0;
    while i < bytes.len() {
        // (name, end of the reference)
        let reference = if bytes[i..].starts_with(b"${") {
            text[i + 2..].find('}').map(|close| {
                let inner = &text[i + 2..i + 2 + close];
                let name = inner.split(':').next().unwrap_or(inner);
                (name, i + 2 + close + 1)
            })
        } else if bytes[i..].starts_with(b"[[") {
            text[i + 2..].find("]]").and_then(|close| {
                let inner = &text[i + 2..i + 2 + close];
                let name = inner.split(':').next().unwrap_or(inner);
                (!name.is_empty() && name.bytes().all(is_name)).then_some((name, i + 2 + close + 2))
            })
        } else if bytes[i] == b'$' {
            let len = bytes[i + 1..].iter().take_while(|b| is_name(**b)).count();
            (len > 0).then(|| (&text[i + 1..i + 1 + len], i + 1 + len))
        } else {
            None
        };
        match reference {
            Some((name, end)) => {
                let value = vars
                    .get(name)
                    .ok_or_else(|| format!("unknown variable ${name}"))?;
                out.push_str(&text[plain..i]);
                out.push_str(value);
                i = end;
                plain = end;
            }
            None => i += 1,
        }
    }
    out.push_str(&text[plain..]);
    Ok(out)
}

/// Escapes `s` for use inside a PromQL regex matcher, as Grafana does for a
/// multi-value variable's values.
pub fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
            // Inside a PromQL string literal a backslash is itself escaped.
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The value "All" stands for: `allValue`, else every value as a regex
/// alternation (Grafana's default for a multi-value variable).
pub fn all_of(var: &Variable, values: &[String]) -> String {
    match &var.all_value {
        Some(v) => v.clone(),
        None => format!(
            "({})",
            values
                .iter()
                .map(|v| regex_escape(v))
                .collect::<Vec<_>>()
                .join("|")
        ),
    }
}

/// Fails when `dir` has no dashboards: a test over none would pass vacuously.
pub fn ensure_some(dashboards: &[Dashboard], dir: &Path) -> anyhow::Result<()> {
    if dashboards.is_empty() {
        bail!("no *.json dashboards in {}", dir.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn substitutes_every_reference_form() {
        let mut v = vars(&[("instance", "127.0.0.2:9464"), ("region", ".*")]);
        v.extend(builtins("1m", 1, 90));
        assert_eq!(
            substitute(
                r#"rate(x{instance=~"$instance", region=~"${region}", r=~"${region:regex}", s="[[region]]"}[$__rate_interval]) offset $__range"#,
                &v
            ),
            Ok(r#"rate(x{instance=~"127.0.0.2:9464", region=~".*", r=~".*", s=".*"}[1m]) offset 90s"#.to_owned())
        );
        // `$__interval` is not a prefix match of `$__interval_ms`.
        assert_eq!(
            substitute("$__interval_ms/$__interval", &v),
            Ok("1000/1s".to_owned())
        );
        assert_eq!(
            substitute(r#"x{a=~"b$"} $ 1"#, &v),
            Ok(r#"x{a=~"b$"} $ 1"#.to_owned())
        );
        assert_eq!(
            substitute("up{job=\"$job\"}", &v),
            Err("unknown variable $job".to_owned())
        );
    }

    #[test]
    fn reads_label_values_queries() {
        assert_eq!(
            parse_label_values(r#"label_values(up{job="$job", a=~"x,y"}, instance)"#),
            Some(LabelValues {
                selector: Some(r#"up{job="$job", a=~"x,y"}"#.to_owned()),
                label: "instance".to_owned()
            })
        );
        assert_eq!(
            parse_label_values("label_values(job)"),
            Some(LabelValues {
                selector: None,
                label: "job".to_owned()
            })
        );
        assert_eq!(parse_label_values("query_result(up)"), None);
        assert_eq!(parse_label_values("label_values(up, )"), None);
    }

    #[test]
    fn finds_panels_in_rows_annotations_and_variables() {
        let json = serde_json::json!({
            "uid": "u", "title": "T",
            "annotations": {"list": [
                {"name": "Annotations & Alerts", "builtIn": 1, "datasource": {"type": "grafana"}},
                {"name": "Fallback", "expr": "changes(x[2m]) > 0"}
            ]},
            "panels": [
                {"type": "row", "title": "Plan", "collapsed": false, "panels": []},
                {"type": "stat", "title": "A", "targets": [
                    {"refId": "A", "expr": "up", "instant": true},
                    {"refId": "B", "expr": ""},
                    {"refId": "C", "expr": "{job=\"x\"}", "datasource": {"type": "loki"}}
                ]},
                {"type": "row", "title": "Hidden", "collapsed": true, "panels": [
                    {"type": "timeseries", "title": "B", "targets": [{"refId": "A", "expr": "rate(y[$__rate_interval])"}]}
                ]},
                {"type": "text", "title": "Read me"}
            ],
            "templating": {"list": [
                {"name": "datasource", "type": "datasource", "query": "prometheus"},
                {"name": "instance", "type": "query", "query": {"query": "label_values(up, instance)"}, "current": {}},
                {"name": "q", "type": "custom", "query": "0.5, 0.95", "current": {"value": "0.95"}},
                {"name": "r", "type": "query", "query": "label_values(r)", "includeAll": true, "allValue": ".*"}
            ]}
        });
        let d = Dashboard::parse(Path::new("x.json"), &json).unwrap();
        let titles: Vec<(&str, &str, bool)> = d
            .queries
            .iter()
            .map(|q| (q.title.as_str(), q.expr.as_str(), q.instant))
            .collect();
        assert_eq!(
            titles,
            [
                ("Fallback", "changes(x[2m]) > 0", false),
                ("Plan › A", "up", true),
                ("Hidden › B", "rate(y[$__rate_interval])", false),
            ]
        );
        assert_eq!(d.variables[0].kind, VariableKind::Datasource);
        assert_eq!(
            d.variables[1].kind,
            VariableKind::Query("label_values(up, instance)".into())
        );
        assert_eq!(
            d.variables[2].kind,
            VariableKind::Custom(vec!["0.5".into(), "0.95".into()])
        );
        assert_eq!(d.variables[2].current.as_deref(), Some("0.95"));
        assert_eq!(all_of(&d.variables[3], &[]), ".*");
        let no_all_value = Variable {
            all_value: None,
            ..d.variables[3].clone()
        };
        assert_eq!(
            all_of(&no_all_value, &["a.b".into(), "c".into()]),
            r"(a\\.b|c)"
        );
    }
}
