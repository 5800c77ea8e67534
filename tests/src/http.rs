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
}

impl<'a> Req<'a> {
    /// A GET with no extra headers.
    pub fn get(host: &'a str, path: &'a str) -> Self {
        Req {
            method: "GET",
            host,
            path,
            headers: Vec::new(),
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
            .send_request(builder.body(Full::new(Bytes::new()))?)
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
