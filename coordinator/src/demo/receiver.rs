//! The demo's alert receiver: a tiny HTTP endpoint the plan's JSON webhook
//! channel points at, so `cutover demo` can show the alerts the coordinator
//! sent (trip, fallback started, fallback done). It keeps every POSTed JSON
//! body and answers `200` with an empty body; anything it cannot read is
//! answered `400` and kept out of the list.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// Request heads longer than this are refused.
const MAX_HEAD: usize = 16 * 1024;
/// Bodies longer than this are refused.
const MAX_BODY: usize = 1024 * 1024;

/// A running receiver; it stops when dropped.
pub struct AlertReceiver {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<serde_json::Value>>>,
    task: tokio::task::JoinHandle<()>,
}

impl AlertReceiver {
    /// Listens on `addr` (port 0 picks one).
    pub async fn start(addr: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let received = Arc::new(Mutex::new(Vec::new()));
        let store = received.clone();
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let store = store.clone();
                tokio::spawn(async move {
                    let _ = handle(conn, &store).await;
                });
            }
        });
        Ok(Self {
            addr,
            received,
            task,
        })
    }

    /// The URL to configure as the webhook.
    pub fn url(&self) -> String {
        format!("http://{}/cutover-alerts", self.addr)
    }

    /// Every JSON body received so far, oldest first.
    pub fn received(&self) -> Vec<serde_json::Value> {
        self.received.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl Drop for AlertReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(mut conn: TcpStream, store: &Mutex<Vec<serde_json::Value>>) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD {
            return reply(&mut conn, "400 Bad Request").await;
        }
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    if length > MAX_BODY {
        return reply(&mut conn, "413 Payload Too Large").await;
    }
    while buf.len() < head_end + length {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = &buf[head_end..buf.len().min(head_end + length)];
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v) if head.starts_with("post ") => {
            if let Ok(mut r) = store.lock() {
                r.push(v);
            }
            reply(&mut conn, "200 OK").await
        }
        _ => reply(&mut conn, "400 Bad Request").await,
    }
}

async fn reply(conn: &mut TcpStream, status: &str) -> std::io::Result<()> {
    conn.write_all(
        format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    conn.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keeps_json_posts_and_refuses_the_rest() {
        let r = AlertReceiver::start("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let client = crate::sources::http_client(std::time::Duration::from_secs(5)).unwrap();
        let ok = client
            .post(r.url())
            .json(&serde_json::json!({"alert": "CutoverGuardTripped"}))
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 200);
        let bad = client.post(r.url()).body("not json").send().await.unwrap();
        assert_eq!(bad.status(), 400);
        assert_eq!(
            r.received(),
            vec![serde_json::json!({"alert": "CutoverGuardTripped"})]
        );
    }
}
