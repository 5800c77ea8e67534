//! A Statuspage stand-in: serves `/api/v2/status.json` the way
//! `status.<provider>.com` does (Atlassian Statuspage's public API), with an
//! indicator the test sets (`none`, `minor`, `major`, `critical`,
//! `maintenance`) or an HTTP error instead.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

/// The document's path.
pub const STATUS_PATH: &str = "/api/v2/status.json";

#[derive(Debug)]
struct State {
    indicator: String,
    /// Answer with this status instead of the document.
    error: Option<u16>,
}

/// A running stand-in. Stops when dropped.
#[derive(Debug)]
pub struct StatusPage {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    requests: Arc<AtomicUsize>,
    stop: CancellationToken,
}

impl StatusPage {
    /// Listens on `ip` (which must be on `lo`), port 0, indicator `none`.
    pub async fn start(ip: Ipv4Addr) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind((ip, 0))
            .await
            .with_context(|| format!("binding the status page on {ip}"))?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State {
            indicator: "none".into(),
            error: None,
        }));
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let (st, n) = (state.clone(), requests.clone());
        crate::http::serve(listener, stop.clone(), move |req| {
            n.fetch_add(1, Ordering::Relaxed);
            if req.path != STATUS_PATH {
                return (404, "text/plain", b"not found\n".to_vec());
            }
            let st = st.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some(code) = st.error {
                return (code, "text/plain", b"injected error\n".to_vec());
            }
            (
                200,
                "application/json",
                document(&st.indicator).into_bytes(),
            )
        });
        tracing::info!(%addr, "status page stand-in listening");
        Ok(StatusPage {
            addr,
            state,
            requests,
            stop,
        })
    }

    /// `http://IP:PORT/api/v2/status.json`, the URL a guard names.
    pub fn url(&self) -> String {
        format!("http://{}{STATUS_PATH}", self.addr)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Serves `indicator` from now on (and clears an injected error).
    pub fn set_indicator(&self, indicator: &str) {
        let mut st = self.state();
        st.indicator = indicator.to_owned();
        st.error = None;
    }

    /// Answers with HTTP `status` instead of the document (`None`: stop).
    pub fn set_error(&self, status: Option<u16>) {
        self.state().error = status;
    }

    /// Requests answered so far (the guard's polls).
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }
}

impl Drop for StatusPage {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The status document for `indicator`, shaped like Statuspage's.
pub fn document(indicator: &str) -> String {
    let description = match indicator {
        "none" => "All Systems Operational",
        "minor" => "Minor Service Outage",
        "major" => "Partial System Outage",
        "critical" => "Major System Outage",
        "maintenance" => "Service Under Maintenance",
        _ => "Unknown",
    };
    serde_json::json!({
        "page": {
            "id": "cutovertest",
            "name": "Stand-in Provider",
            "url": "https://status.provider.test",
            "time_zone": "Etc/UTC",
            "updated_at": "2026-11-27T10:00:00.000Z",
        },
        "status": { "indicator": indicator, "description": description },
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_the_indicator_it_is_given() {
        crate::init();
        let page = StatusPage::start(Ipv4Addr::LOCALHOST).await.unwrap();
        let get = || async {
            let r = crate::http::send(
                page.addr,
                &crate::http::Req::get("status.provider.test", STATUS_PATH),
            )
            .await
            .unwrap();
            let v: Option<serde_json::Value> = serde_json::from_slice(&r.body).ok();
            (r.status, v.map(|v| v["status"]["indicator"].clone()))
        };
        assert_eq!(get().await, (200, Some("none".into())));
        page.set_indicator("major");
        assert_eq!(get().await, (200, Some("major".into())));
        page.set_error(Some(503));
        assert_eq!(get().await.0, 503);
        page.set_indicator("minor");
        assert_eq!(get().await, (200, Some("minor".into())));
        assert_eq!(page.requests(), 4);
        assert!(page.url().ends_with("/api/v2/status.json"));
    }
}
