//! A real Alertmanager (Debian package `prometheus-alertmanager`) with a
//! config the test wrote, e.g. the shipped `deploy/alertmanager/` one with
//! its receivers pointed at an [`AlertReceiver`](crate::alert_receiver).
//!
//! It listens on the test's own 127.x address (a free port), keeps its state
//! in the test's directory and runs without clustering (no gossip port on
//! `*:9094`, no peers); it is killed on drop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::addr::AddrBlock;
use crate::procs::Proc;

/// The Alertmanager binary: `$ALERTMANAGER_BIN`, else
/// `/usr/bin/prometheus-alertmanager` (Debian's name), else
/// `prometheus-alertmanager` or `alertmanager` on `PATH`; `None` if there is none.
pub fn binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ALERTMANAGER_BIN") {
        return Some(PathBuf::from(p));
    }
    let fixed = PathBuf::from("/usr/bin/prometheus-alertmanager");
    if fixed.is_file() {
        return Some(fixed);
    }
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .flat_map(|d| [d.join("prometheus-alertmanager"), d.join("alertmanager")])
        .find(|p| p.is_file())
}

/// The Alertmanager binary, or `None` with a message when it is missing and
/// the test may be skipped. In CI (`CI` set) a missing binary is an error:
/// `.ci/run` installs it, so nothing is skipped there.
pub fn binary_or_skip(test: &str) -> Option<PathBuf> {
    match binary() {
        Some(p) => Some(p),
        None if std::env::var_os("CI").is_some() => panic!(
            "{test}: Alertmanager is not installed (Debian package `prometheus-alertmanager`; \
             `.ci/run` installs it) and CI is set, so this test may not be skipped"
        ),
        None => {
            eprintln!(
                "SKIPPED {test}: no Alertmanager binary (install the Debian package \
                 `prometheus-alertmanager` or set ALERTMANAGER_BIN)"
            );
            None
        }
    }
}

/// A running Alertmanager.
#[derive(Debug)]
pub struct Alertmanager {
    addr: SocketAddr,
    proc: Proc,
}

impl Alertmanager {
    /// Starts `bin` listening on `addr` (see
    /// [`free_addr`](crate::prometheus::free_addr)) with `config`, its data
    /// under `dir`; waits until `/-/ready` answers 200. A config it refuses
    /// ends the process, and this fails with its log.
    pub async fn start(
        bin: &Path,
        addr: SocketAddr,
        config: &Path,
        dir: &Path,
        block: &AddrBlock,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut cmd = Command::new(bin);
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            // No cluster: it would listen for peers on *:9094.
            .arg("--cluster.listen-address=")
            .arg("--log.level=warn");
        let proc = crate::prometheus::spawn_ready("alertmanager", cmd, addr, dir, block)
            .await
            .with_context(|| format!("starting Alertmanager with {}", config.display()))?;
        Ok(Alertmanager { addr, proc })
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://IP:PORT`: what Prometheus and the coordinator's `[alerts]
    /// alertmanager` are pointed at.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The process (for its logs).
    pub fn proc(&mut self) -> &mut Proc {
        &mut self.proc
    }

    /// The alerts it holds now (`GET /api/v2/alerts`), as JSON: each with
    /// `labels`, `annotations` and `status.state`.
    pub async fn alerts(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        let text = crate::http::get_text(self.addr, "/api/v2/alerts").await?;
        let v: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("alerts answer {text:?}"))?;
        match v {
            serde_json::Value::Array(a) => Ok(a),
            other => bail!("GET /api/v2/alerts: not a list: {other}"),
        }
    }
}
