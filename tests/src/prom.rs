//! Reading Prometheus text exposition, as scraped from the coordinator.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name (with `_total`, `_bucket`, … suffixes as exposed).
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Value.
    pub value: f64,
}

impl Sample {
    /// The value of label `k`, if present.
    pub fn label(&self, k: &str) -> Option<&str> {
        self.labels.get(k).map(String::as_str)
    }

    /// True if every `(k, v)` in `want` is a label of this sample.
    pub fn has(&self, want: &[(&str, &str)]) -> bool {
        want.iter().all(|(k, v)| self.label(k) == Some(*v))
    }
}

/// Parses the text format, skipping comments and lines it cannot read.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let Some(open) = line.find('{') else {
        let mut it = line.split_whitespace();
        let name = it.next()?;
        let value = parse_value(it.next()?)?;
        return Some(Sample {
            name: name.to_owned(),
            labels: BTreeMap::new(),
            value,
        });
    };
    let chars: Vec<char> = line[open + 1..].chars().collect();
    let mut labels = BTreeMap::new();
    let mut i = 0;
    loop {
        while matches!(chars.get(i)?, ',' | ' ') {
            i += 1;
        }
        if *chars.get(i)? == '}' {
            i += 1;
            break;
        }
        let mut key = String::new();
        while *chars.get(i)? != '=' {
            key.push(chars[i]);
            i += 1;
        }
        i += 1;
        if *chars.get(i)? != '"' {
            return None;
        }
        i += 1;
        let mut value = String::new();
        loop {
            match *chars.get(i)? {
                '\\' => {
                    i += 1;
                    match *chars.get(i)? {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    }
                }
                '"' => break,
                other => value.push(other),
            }
            i += 1;
        }
        i += 1;
        labels.insert(key.trim().to_owned(), value);
    }
    let rest: String = chars[i..].iter().collect();
    let value = parse_value(rest.split_whitespace().next()?)?;
    Some(Sample {
        name: line[..open].to_owned(),
        labels,
        value,
    })
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// Scrapes `http://addr/metrics`.
pub async fn scrape(addr: std::net::SocketAddr) -> anyhow::Result<String> {
    crate::http::get_text(addr, "/metrics").await
}

/// Runs `promtool check metrics` on `text`; returns its complaints, if any.
pub async fn promtool_check(text: &str) -> anyhow::Result<Result<(), String>> {
    use tokio::io::AsyncWriteExt as _;
    let mut child = tokio::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("running promtool (Debian package `prometheus`)")?;
    let mut stdin = child.stdin.take().context("promtool stdin")?;
    stdin.write_all(text.as_bytes()).await?;
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .context("promtool timed out")??;
    if out.status.success() {
        Ok(Ok(()))
    } else {
        Ok(Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_labels_escapes_and_plain_samples() {
        let text = "# HELP x y\n# TYPE cutover_results_total counter\n\
                    cutover_results_total{check=\"dns\",target=\"old\",region=\"a\\\"b\"} 3\n\
                    cutover_build_info{version=\"0.1.0\"} 1\n\
                    up 1e0\n\
                    h_bucket{le=\"+Inf\"} 7\n";
        let s = parse(text);
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].name, "cutover_results_total");
        assert!(s[0].has(&[("check", "dns"), ("target", "old"), ("region", "a\"b")]));
        assert_eq!(s[0].value, 3.0);
        assert_eq!(s[1].label("version"), Some("0.1.0"));
        assert_eq!(s[2].name, "up");
        assert_eq!(s[2].value, 1.0);
        assert_eq!(s[3].label("le"), Some("+Inf"));
    }
}
