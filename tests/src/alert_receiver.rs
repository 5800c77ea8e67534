//! A local alert receiver: a plain-HTTP server that records every request
//! (method, path, body) and answers 200, standing in for a Slack incoming
//! webhook, a generic JSON webhook and Alertmanager's v2 API
//! (`POST /api/v2/alerts`) at once. Each destination gets its own path, so a
//! test tells them apart: `url("/slack")`, `url("/json")`, and `base_url()` as
//! the Alertmanager URL.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::http::Incoming;

/// Alertmanager v2's alert path under its base URL.
pub const ALERTMANAGER_PATH: &str = "/api/v2/alerts";

/// A running receiver. Stops when dropped.
#[derive(Debug)]
pub struct AlertReceiver {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Incoming>>>,
    status: Arc<AtomicU16>,
    stop: CancellationToken,
}

impl AlertReceiver {
    /// Listens on `ip` (which must be on `lo`), port 0.
    pub async fn start(ip: Ipv4Addr) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind((ip, 0))
            .await
            .with_context(|| format!("binding the alert receiver on {ip}"))?;
        let addr = listener.local_addr()?;
        let received = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(AtomicU16::new(200));
        let stop = CancellationToken::new();
        let (rec, st) = (received.clone(), status.clone());
        crate::http::serve(listener, stop.clone(), move |req| {
            let code = st.load(Ordering::Relaxed);
            tracing::info!(
                path = %req.path,
                body = %String::from_utf8_lossy(&req.body),
                "alert receiver got a request"
            );
            rec.lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push(req);
            (code, "application/json", b"{}".to_vec())
        });
        tracing::info!(%addr, "alert receiver listening");
        Ok(AlertReceiver {
            addr,
            received,
            status,
            stop,
        })
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://IP:PORT` — the Alertmanager base URL.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://IP:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    /// Answer every later request with `status` (e.g. 500, to see retries
    /// and failed deliveries); requests are recorded either way.
    pub fn set_status(&self, status: u16) {
        self.status.store(status, Ordering::Relaxed);
    }

    /// Every request so far, oldest first.
    pub fn received(&self) -> Vec<Incoming> {
        self.received
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The POSTs to `path` so far, oldest first.
    pub fn posts_to(&self, path: &str) -> Vec<Incoming> {
        self.received()
            .into_iter()
            .filter(|r| r.method == "POST" && r.path == path)
            .collect()
    }

    /// The JSON bodies POSTed to `path` so far (bodies that are not JSON are
    /// an error: every destination here takes JSON).
    pub fn json_posts_to(&self, path: &str) -> anyhow::Result<Vec<serde_json::Value>> {
        self.posts_to(path).iter().map(Incoming::json).collect()
    }

    /// Waits until a JSON body POSTed to `path` satisfies `pred`; returns it.
    pub async fn wait_for_json(
        &self,
        path: &str,
        deadline: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> anyhow::Result<serde_json::Value> {
        crate::poll::until(
            &format!("a matching POST to {path} at the alert receiver"),
            deadline,
            || {
                let found = self
                    .json_posts_to(path)
                    .map(|all| all.into_iter().find(|v| pred(v)));
                let everything: Vec<String> = self
                    .received()
                    .iter()
                    .map(|r| {
                        format!(
                            "{} {} {}",
                            r.method,
                            r.path,
                            String::from_utf8_lossy(&r.body)
                        )
                    })
                    .collect();
                async move {
                    match found? {
                        Some(v) => Ok(Some(v)),
                        None => anyhow::bail!("received so far: {everything:#?}"),
                    }
                }
            },
        )
        .await
    }
}

impl Drop for AlertReceiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{Req, send};

    #[tokio::test]
    async fn records_every_post_with_path_and_body() {
        crate::init();
        let rx = AlertReceiver::start(Ipv4Addr::LOCALHOST).await.unwrap();
        assert!(rx.url("/slack").starts_with("http://127.0.0.1:"));
        let post = |path: &'static str, body: &'static str| {
            let addr = rx.addr();
            async move {
                crate::http::post_json(addr, path, body.as_bytes())
                    .await
                    .unwrap()
                    .status
            }
        };
        assert_eq!(post("/slack", r#"{"text":"tripped"}"#).await, 200);
        assert_eq!(post(ALERTMANAGER_PATH, r#"[{"labels":{}}]"#).await, 200);
        rx.set_status(500);
        assert_eq!(post("/json", "{}").await, 500);
        assert_eq!(
            send(rx.addr(), &Req::get("x", "/")).await.unwrap().status,
            500
        );
        assert_eq!(rx.received().len(), 4);
        assert_eq!(
            rx.json_posts_to("/slack").unwrap(),
            [serde_json::json!({"text": "tripped"})]
        );
        let am = rx
            .wait_for_json(ALERTMANAGER_PATH, Duration::from_secs(1), |v| v.is_array())
            .await
            .unwrap();
        assert_eq!(am[0]["labels"], serde_json::json!({}));
        assert!(
            rx.wait_for_json("/nowhere", Duration::from_millis(300), |_| true)
                .await
                .is_err()
        );
    }
}
