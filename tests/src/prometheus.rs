//! A real Prometheus (Debian package `prometheus`) for PromQL guards, and a
//! scrape target whose figures the test sets.
//!
//! [`MetricsTarget`] serves `/metrics` in the text exposition format with
//! gauges the test changes at will ("the new server's 5xx rate").
//! [`Prometheus`] runs `/usr/bin/prometheus` (or `$PROMETHEUS_BIN`) with a
//! temporary config that scrapes that target every second
//! ([`Prometheus::start`]) or with a config the test wrote
//! ([`Prometheus::start_with_config`], e.g. the shipped `deploy/prometheus/`
//! one), its storage in the test's directory and its HTTP API on the test's
//! own 127.x address (a free port: a system Prometheus on `*:9090` does not
//! get in the way); it is killed on drop. Besides instant queries it answers
//! range queries, label values and the alerts it holds, as JSON.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio_util::sync::CancellationToken;

use crate::addr::AddrBlock;
use crate::procs::Proc;

/// Spawns `cmd` (a Prometheus-family server told to listen on `addr`) as
/// `name`, logging under `dir`, and waits up to 30 s until `/-/ready` answers
/// 200. If it exits first (a config it refuses), this fails with its log.
pub(crate) async fn spawn_ready(
    name: &str,
    cmd: Command,
    addr: SocketAddr,
    dir: &Path,
    block: &AddrBlock,
) -> anyhow::Result<Proc> {
    let mut proc = Proc::spawn(name, cmd, dir, block)?.quiet();
    let what = format!("{name} to be ready");
    crate::poll::until(&what, Duration::from_secs(30), || {
        let alive = proc.ensure_running();
        async move {
            alive?;
            let r = crate::http::send(addr, &crate::http::Req::get(name, "/-/ready")).await?;
            Ok((r.status == 200).then_some(()))
        }
    })
    .await?;
    tracing::info!(%addr, "{name} ready");
    Ok(proc)
}

/// The Prometheus binary: `$PROMETHEUS_BIN`, else `/usr/bin/prometheus`, else
/// `prometheus` on `PATH`; `None` if there is none.
pub fn binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PROMETHEUS_BIN") {
        return Some(PathBuf::from(p));
    }
    let fixed = PathBuf::from("/usr/bin/prometheus");
    if fixed.is_file() {
        return Some(fixed);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("prometheus"))
            .find(|p| p.is_file())
    })
}

/// The Prometheus binary, or `None` with a message when it is missing and
/// the test may be skipped. In CI (`CI` set) a missing binary is an error:
/// `.ci/run` installs it, so nothing is skipped there.
pub fn binary_or_skip(test: &str) -> Option<PathBuf> {
    match binary() {
        Some(p) => Some(p),
        None if std::env::var_os("CI").is_some() => panic!(
            "{test}: prometheus is not installed (Debian package `prometheus`; `.ci/run` installs it) \
             and CI is set, so this test may not be skipped"
        ),
        None => {
            eprintln!(
                "SKIPPED {test}: no prometheus binary (install the Debian package `prometheus` \
                 or set PROMETHEUS_BIN)"
            );
            None
        }
    }
}

/// A scrape target serving gauges the test sets.
#[derive(Debug)]
pub struct MetricsTarget {
    addr: SocketAddr,
    gauges: Arc<Mutex<BTreeMap<String, f64>>>,
    stop: CancellationToken,
}

impl MetricsTarget {
    /// Listens on `ip` (which must be on `lo`), port 0, serving nothing yet.
    pub async fn start(ip: Ipv4Addr) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind((ip, 0))
            .await
            .with_context(|| format!("binding the scrape target on {ip}"))?;
        let addr = listener.local_addr()?;
        let gauges: Arc<Mutex<BTreeMap<String, f64>>> = Arc::default();
        let stop = CancellationToken::new();
        let g = gauges.clone();
        crate::http::serve(listener, stop.clone(), move |req| {
            if req.path != "/metrics" {
                return (404, "text/plain", b"not found\n".to_vec());
            }
            let g = g.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            (
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                exposition(&g).into_bytes(),
            )
        });
        Ok(MetricsTarget { addr, gauges, stop })
    }

    /// Its address (`host:port`, as Prometheus's `targets` want it).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets a gauge; `series` is a name with optional labels,
    /// e.g. `elm_http_5xx_ratio{site="new"}`.
    pub fn set(&self, series: &str, value: f64) {
        self.gauges
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(series.to_owned(), value);
    }
}

impl Drop for MetricsTarget {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The text exposition of `gauges` (one `# TYPE` per metric name).
pub fn exposition(gauges: &BTreeMap<String, f64>) -> String {
    let mut out = String::new();
    let mut typed = std::collections::BTreeSet::new();
    for (series, value) in gauges {
        let name = series.split('{').next().unwrap_or(series);
        if typed.insert(name.to_owned()) {
            out.push_str(&format!("# TYPE {name} gauge\n"));
        }
        out.push_str(&format!("{series} {value}\n"));
    }
    out
}

/// A running Prometheus.
#[derive(Debug)]
pub struct Prometheus {
    addr: SocketAddr,
    proc: Proc,
}

impl Prometheus {
    /// Starts `bin` on `ip` (which must be on `lo`), scraping `targets`
    /// every second, with config and storage under `dir`; waits until
    /// `/-/ready` answers 200.
    pub async fn start(
        bin: &Path,
        ip: Ipv4Addr,
        targets: &[SocketAddr],
        dir: &Path,
        block: &AddrBlock,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let addr = free_addr(ip)?;
        let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "# Generated by the cutover-e2e harness.\n\
                 global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: test\n    static_configs:\n      - targets: [{}]\n",
                list.join(", ")
            ),
        )?;
        Self::start_with_config(bin, addr, &config, dir, block).await
    }

    /// Starts `bin` listening on `addr` (from [`free_addr`]; a config that
    /// scrapes Prometheus itself needs the address before it starts) with
    /// `config` as written (its relative `rule_files` and `file_sd_configs`
    /// paths resolve against the config's folder) and storage under `dir`;
    /// waits until `/-/ready` answers 200. A config Prometheus refuses ends
    /// the process, and this fails with its log.
    pub async fn start_with_config(
        bin: &Path,
        addr: SocketAddr,
        config: &Path,
        dir: &Path,
        block: &AddrBlock,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut cmd = Command::new(bin);
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn");
        let proc = spawn_ready("prometheus", cmd, addr, dir, block).await?;
        Ok(Prometheus { addr, proc })
    }

    /// Its HTTP API's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://IP:PORT`, the base URL a PromQL guard names.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The process (for its logs).
    pub fn proc(&mut self) -> &mut Proc {
        &mut self.proc
    }

    /// The `data` of a successful answer of the HTTP API at `path` (path and
    /// query string); an error answer (bad PromQL, unknown parameter) is an
    /// error with Prometheus's message.
    pub async fn api(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let reply = crate::http::send(
            self.addr,
            &crate::http::Req::get(&self.addr.ip().to_string(), path),
        )
        .await?;
        let text = reply.text()?;
        let mut v: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("GET {path}: status {}: {text:?}", reply.status))?;
        if v["status"] != "success" {
            bail!(
                "GET {path}: status {}: {}: {}",
                reply.status,
                v["errorType"].as_str().unwrap_or("error"),
                v["error"].as_str().unwrap_or(&text)
            );
        }
        Ok(v["data"].take())
    }

    /// A range query through `/api/v1/query_range` from `start` to `end`
    /// (Unix seconds) every `step_secs`: the result's series, each with its
    /// `metric` labels and `values` (an empty result is an empty list).
    pub async fn query_range(
        &self,
        promql: &str,
        start: f64,
        end: f64,
        step_secs: f64,
    ) -> anyhow::Result<Vec<serde_json::Value>> {
        let path = format!(
            "/api/v1/query_range?query={}&start={start:.3}&end={end:.3}&step={step_secs}",
            percent_encode(promql)
        );
        let data = self.api(&path).await?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    /// An instant query at `time` (Unix seconds): the result's series or
    /// samples, as JSON (an empty result is an empty list).
    pub async fn query_at(
        &self,
        promql: &str,
        time: f64,
    ) -> anyhow::Result<Vec<serde_json::Value>> {
        let path = format!(
            "/api/v1/query?query={}&time={time:.3}",
            percent_encode(promql)
        );
        let data = self.api(&path).await?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    /// The values of `label` among the series matching `selector` between
    /// `start` and `end` (Unix seconds), sorted: what a Grafana variable
    /// `label_values(selector, label)` offers.
    pub async fn label_values(
        &self,
        label: &str,
        selector: Option<&str>,
        start: f64,
        end: f64,
    ) -> anyhow::Result<Vec<String>> {
        let mut path = format!(
            "/api/v1/label/{}/values?start={start:.3}&end={end:.3}",
            percent_encode(label)
        );
        if let Some(sel) = selector {
            path.push_str(&format!("&match[]={}", percent_encode(sel)));
        }
        let data = self.api(&path).await?;
        Ok(data
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The alerts Prometheus holds now (`/api/v1/alerts`): each with its
    /// `labels`, `annotations` and `state` (`pending` or `firing`).
    pub async fn alerts(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        let data = self.api("/api/v1/alerts").await?;
        Ok(data["alerts"].as_array().cloned().unwrap_or_default())
    }

    /// An instant query through `/api/v1/query`: the value of each series in
    /// the result (an empty result is an empty list).
    pub async fn query(&self, promql: &str) -> anyhow::Result<Vec<f64>> {
        let path = format!("/api/v1/query?query={}", percent_encode(promql));
        let text = crate::http::get_text(self.addr, &path).await?;
        let v: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("query answer {text:?}"))?;
        if v["status"] != "success" {
            bail!("query {promql:?}: {text}");
        }
        let result = v["data"]["result"].as_array().cloned().unwrap_or_default();
        result
            .iter()
            .map(|r| {
                r["value"][1]
                    .as_str()
                    .and_then(|s| s.parse::<f64>().ok())
                    .with_context(|| format!("query {promql:?}: odd sample {r}"))
            })
            .collect()
    }

    /// Waits until `promql` yields exactly one value satisfying `pred` (so
    /// a test knows Prometheus has scraped what it set).
    pub async fn wait_value(
        &self,
        promql: &str,
        deadline: Duration,
        pred: impl Fn(f64) -> bool,
    ) -> anyhow::Result<f64> {
        crate::poll::until(
            &format!("Prometheus to answer {promql:?} as expected"),
            deadline,
            || {
                let q = self.query(promql);
                let pred = &pred;
                async move {
                    let vals = q.await?;
                    match vals.as_slice() {
                        [v] if pred(*v) => Ok(Some(*v)),
                        _ => bail!("answer so far: {vals:?}"),
                    }
                }
            },
        )
        .await
    }
}

/// A free port on `ip` (which must be on `lo`) for a server started next.
/// Nobody else uses the test's own address, so the port stays free between
/// this bind and the server's.
pub fn free_addr(ip: Ipv4Addr) -> anyhow::Result<SocketAddr> {
    std::net::TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .with_context(|| format!("finding a free port on {ip}"))
}

/// Percent-encodes a query-string value.
pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_types_each_name_once() {
        let mut g = BTreeMap::new();
        g.insert("up_ratio{site=\"new\"}".to_owned(), 0.5);
        g.insert("up_ratio{site=\"old\"}".to_owned(), 1.0);
        g.insert("x".to_owned(), 2.0);
        assert_eq!(
            exposition(&g),
            "# TYPE up_ratio gauge\nup_ratio{site=\"new\"} 0.5\nup_ratio{site=\"old\"} 1\n\
             # TYPE x gauge\nx 2\n"
        );
        assert_eq!(
            percent_encode("a{b=\"c\"} > 0.5"),
            "a%7Bb%3D%22c%22%7D%20%3E%200.5"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn scrapes_the_target_and_answers_queries() {
        crate::init();
        let Some(bin) = binary_or_skip("prometheus::scrapes_the_target_and_answers_queries") else {
            return;
        };
        let block = AddrBlock::acquire().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let target = MetricsTarget::start(block.add(42).unwrap()).await.unwrap();
        target.set("elm_5xx_ratio{site=\"new\"}", 0.0);
        let prom = Prometheus::start(
            &bin,
            block.add(43).unwrap(),
            &[target.addr()],
            dir.path(),
            &block,
        )
        .await
        .unwrap();
        let q = "max(elm_5xx_ratio{site=\"new\"})";
        prom.wait_value(q, Duration::from_secs(20), |v| v == 0.0)
            .await
            .unwrap();
        target.set("elm_5xx_ratio{site=\"new\"}", 0.75);
        prom.wait_value(q, Duration::from_secs(20), |v| v == 0.75)
            .await
            .unwrap();
        assert_eq!(
            prom.query("absent_metric_xyz").await.unwrap(),
            Vec::<f64>::new()
        );
        assert!(prom.url().starts_with(&format!("http://{}:", block.ip(43))));
    }
}
