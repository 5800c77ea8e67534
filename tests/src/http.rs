//! A minimal HTTP/1.1 client for the harness itself: scraping `/metrics` and
//! talking to the stand-in registries (pinned to an address, real hostname in
//! SNI and `Host`, like the probe does).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// What came back.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Response headers, names lowercase.
    pub headers: Vec<(String, String)>,
    /// Body exactly as received (not decoded).
    pub body: Bytes,
}

impl Reply {
    /// First header named `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body after undoing `Content-Encoding: gzip`, if present.
    pub fn decoded(&self) -> anyhow::Result<Vec<u8>> {
        if self.header("content-encoding") == Some("gzip") {
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&self.body[..]), &mut out)
                .context("gunzipping body")?;
            Ok(out)
        } else {
            Ok(self.body.to_vec())
        }
    }

    /// The decoded body as text.
    pub fn text(&self) -> anyhow::Result<String> {
        Ok(String::from_utf8(self.decoded()?)?)
    }
}

/// A request to send.
#[derive(Debug, Clone)]
pub struct Req<'a> {
    /// `GET`, `POST`, …
    pub method: &'a str,
    /// Host name for `Host` (and SNI with TLS).
    pub host: &'a str,
    /// Path and query.
    pub path: &'a str,
    /// Extra headers.
    pub headers: Vec<(&'a str, &'a str)>,
    /// Request body (empty for most).
    pub body: &'a [u8],
}

impl<'a> Req<'a> {
    /// A GET with no extra headers.
    pub fn get(host: &'a str, path: &'a str) -> Self {
        Req {
            method: "GET",
            host,
            path,
            headers: Vec::new(),
            body: &[],
        }
    }

    /// Adds a header.
    pub fn header(mut self, k: &'a str, v: &'a str) -> Self {
        self.headers.push((k, v));
        self
    }

    /// Sets the method.
    pub fn method(mut self, m: &'a str) -> Self {
        self.method = m;
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: &'a [u8]) -> Self {
        self.body = body;
        self
    }
}

/// Sends `req` to `addr` over plain HTTP.
pub async fn send(addr: SocketAddr, req: &Req<'_>) -> anyhow::Result<Reply> {
    let tcp = connect(addr).await?;
    exchange(TokioIo::new(tcp), req).await
}

/// Sends `req` to `addr` over TLS with `req.host` as SNI.
pub async fn send_tls(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    req: &Req<'_>,
) -> anyhow::Result<Reply> {
    send_tls_over(connect(addr).await?, addr, tls, req).await
}

/// Like [`send_tls`], from the local address `from` (any 127.x works on
/// Linux without adding it to `lo`): how a test looks like a given probe.
pub async fn send_tls_from(
    from: std::net::IpAddr,
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    req: &Req<'_>,
) -> anyhow::Result<Reply> {
    let socket = tokio::net::TcpSocket::new_v4().context("creating a TCP socket")?;
    socket
        .bind(SocketAddr::new(from, 0))
        .with_context(|| format!("binding the client side to {from}"))?;
    let tcp = tokio::time::timeout(Duration::from_secs(5), socket.connect(addr))
        .await
        .with_context(|| format!("connecting to {addr} from {from}: timed out"))?
        .with_context(|| format!("connecting to {addr} from {from}"))?;
    send_tls_over(tcp, addr, tls, req).await
}

async fn send_tls_over(
    tcp: TcpStream,
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    req: &Req<'_>,
) -> anyhow::Result<Reply> {
    let name = rustls_pki_types::ServerName::try_from(req.host.to_owned())
        .with_context(|| format!("bad server name {}", req.host))?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .with_context(|| format!("TLS handshake with {addr}"))?;
    exchange(TokioIo::new(stream), req).await
}

/// GETs `http://addr/path` and returns the body as text; non-200 is an error.
pub async fn get_text(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let reply = send(addr, &Req::get(&addr.ip().to_string(), path)).await?;
    if reply.status != 200 {
        bail!("GET http://{addr}{path}: status {}", reply.status);
    }
    reply.text()
}

/// POSTs `body` as `application/json` to `http://addr/path`.
pub async fn post_json(addr: SocketAddr, path: &str, body: &[u8]) -> anyhow::Result<Reply> {
    let host = addr.ip().to_string();
    let req = Req::get(&host, path)
        .method("POST")
        .header("content-type", "application/json")
        .body(body);
    send(addr, &req).await
}

async fn connect(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .with_context(|| format!("connecting to {addr}: timed out"))?
        .with_context(|| format!("connecting to {addr}"))
}

async fn exchange<S>(io: TokioIo<S>, req: &Req<'_>) -> anyhow::Result<Reply>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let fut = async {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut builder = http::Request::builder()
            .method(req.method)
            .uri(req.path)
            .header("host", req.host);
        for (k, v) in &req.headers {
            builder = builder.header(*k, *v);
        }
        let resp = sender
            .send_request(builder.body(Full::new(Bytes::copy_from_slice(req.body)))?)
            .await?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    v.to_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        let body = resp.into_body().collect().await?.to_bytes();
        anyhow::Ok(Reply {
            status,
            headers,
            body,
        })
    };
    tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .context("HTTP exchange timed out")?
}

/// One request as a [`serve`] handler sees it.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// Client address.
    pub peer: SocketAddr,
    /// `GET`, `POST`, …
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Request headers, names lowercase.
    pub headers: Vec<(String, String)>,
    /// The whole body.
    pub body: Bytes,
}

impl Incoming {
    /// First header named `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_slice(&self.body).with_context(|| {
            format!(
                "{} {}: body is not JSON: {:?}",
                self.method,
                self.path,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// What a [`serve`] handler answers: status, content type, body.
pub type Answer = (u16, &'static str, Vec<u8>);

/// A plain-HTTP/1.1 server on an already bound listener, answering every
/// request with `handler` until `stop` is cancelled. For small stand-ins
/// (alert receivers, status pages, scrape targets).
pub fn serve<F>(
    listener: tokio::net::TcpListener,
    stop: tokio_util::sync::CancellationToken,
    handler: F,
) where
    F: Fn(Incoming) -> Answer + Send + Sync + 'static,
{
    let handler = Arc::new(handler);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                _ = stop.cancelled() => return,
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(_) => continue,
                },
            };
            let handler = handler.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let handler = handler.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await?.to_bytes();
                            let incoming = Incoming {
                                peer,
                                method: parts.method.to_string(),
                                path: parts
                                    .uri
                                    .path_and_query()
                                    .map(|p| p.to_string())
                                    .unwrap_or_default(),
                                headers: parts
                                    .headers
                                    .iter()
                                    .map(|(k, v)| {
                                        (
                                            k.as_str().to_owned(),
                                            v.to_str().unwrap_or_default().to_owned(),
                                        )
                                    })
                                    .collect(),
                                body,
                            };
                            let (status, ctype, body) = handler(incoming);
                            let mut resp = http::Response::new(Full::new(Bytes::from(body)));
                            *resp.status_mut() = http::StatusCode::from_u16(status)
                                .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
                            resp.headers_mut().insert(
                                http::header::CONTENT_TYPE,
                                http::HeaderValue::from_static(ctype),
                            );
                            Ok::<_, hyper::Error>(resp)
                        }
                    });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc);
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = conn => {}
                }
            });
        }
    });
}
