//! A deliberately small HTTP/1.1 client whose phases are timed one by one:
//! resolve, TCP connect, TLS handshake, time to the response head, body transfer.
//! One connection per request, because a reused connection would hide the
//! connect and handshake costs the checks are meant to measure.
//!
//! Requests for targets `old`/`new` are pinned ([`Route::Pinned`]) to a site's
//! addresses; SNI and `Host` still carry the real hostname, so the new server
//! is tested exactly as users will reach it once DNS points at it.

use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cutover_proto::v1;
use http::{HeaderMap, HeaderValue, Method, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use url::Url;

use super::resolve::{ResolveError, SystemResolver};
use crate::USER_AGENT;
use crate::policy::{Policy, Refusal};
use v1::FailureKind;

/// Redirects followed before giving up (the Elm client follows GitHub's one or two).
pub const MAX_REDIRECTS: usize = 5;
/// Connect timeout per address when more addresses remain to be tried.
pub const CONNECT_TIMEOUT_PER_ADDRESS: Duration = Duration::from_secs(5);
/// Largest decoded body accepted; an archive or package list is far smaller.
pub const MAX_BODY_BYTES: usize = 256 * 1024 * 1024;

/// Where a request's connection goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// To these addresses (a site's), whatever DNS says.
    Pinned(Vec<IpAddr>),
    /// To whatever the probe's resolver answers.
    Resolve,
}

/// Time spent in each phase. Across redirects the phases add up, because that
/// is what a client following them pays.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timings {
    pub resolve: Duration,
    pub connect: Duration,
    pub tls: Duration,
    pub first_byte: Duration,
    pub transfer: Duration,
}

impl Timings {
    fn add(&mut self, o: &Timings) {
        self.resolve += o.resolve;
        self.connect += o.connect;
        self.tls += o.tls;
        self.first_byte += o.first_byte;
        self.transfer += o.transfer;
    }

    /// Total of all phases.
    pub fn total(&self) -> Duration {
        self.resolve + self.connect + self.tls + self.first_byte + self.transfer
    }

    /// The wire form.
    pub fn to_proto(&self) -> v1::HttpTimings {
        v1::HttpTimings {
            resolve_us: super::micros(self.resolve),
            connect_us: super::micros(self.connect),
            tls_us: super::micros(self.tls),
            first_byte_us: super::micros(self.first_byte),
            transfer_us: super::micros(self.transfer),
        }
    }
}

/// A request to send.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    pub method: Method,
    pub url: Url,
    /// Extra headers (name, value); they override the defaults.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub route: Route,
}

impl HttpRequest {
    /// `GET url` along `route`.
    pub fn get(url: Url, route: Route) -> Self {
        Self {
            method: Method::GET,
            url,
            headers: Vec::new(),
            body: Bytes::new(),
            route,
        }
    }

    /// `POST url` with an empty body, as Elm 0.19.1 asks for `/all-packages`.
    pub fn post_empty(url: Url, route: Route) -> Self {
        Self {
            method: Method::POST,
            ..Self::get(url, route)
        }
    }
}

/// A complete response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: HeaderMap,
    /// Body after content decoding (gzip).
    pub body: Bytes,
    /// Peer of the final request.
    pub remote_addr: SocketAddr,
    pub timings: Timings,
    /// URL of the final request, after redirects.
    pub url: Url,
}

/// What went wrong, phase by phase.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("invalid URL {url}: {reason}")]
    Url { url: String, reason: String },
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error("refused by this probe's safety rules: {0}")]
    Refused(Refusal),
    #[error("no address to connect to for {host} (the assignment lists none for this site)")]
    NoAddress { host: String },
    #[error("connecting to {host} at {addrs}: {source}")]
    Connect {
        host: String,
        addrs: String,
        source: std::io::Error,
    },
    #[error("TLS handshake with {host} at {addr}: {source}")]
    Tls {
        host: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("HTTP exchange with {url} at {addr}: {source}")]
    Http {
        url: String,
        addr: SocketAddr,
        source: hyper::Error,
    },
    #[error("reading the body of {url}: {message}")]
    Body { url: String, message: String },
    #[error("decoding the {encoding} body of {url}: {source}")]
    Decode {
        url: String,
        encoding: String,
        source: std::io::Error,
    },
    #[error("{url} answered with content encoding {encoding:?}, which the probe did not ask for")]
    UnsupportedEncoding { url: String, encoding: String },
    #[error("{url}: more than {MAX_REDIRECTS} redirects")]
    TooManyRedirects { url: String },
    #[error("{url} redirected to an invalid location {location:?}")]
    BadRedirect { url: String, location: String },
}

impl NetError {
    /// The failure label this error belongs under.
    pub fn failure_kind(&self) -> FailureKind {
        match self {
            NetError::Resolve(_) => FailureKind::Dns,
            NetError::NoAddress { .. } | NetError::Connect { .. } | NetError::Refused(_) => {
                FailureKind::Connect
            }
            NetError::Tls { .. } => FailureKind::Tls,
            NetError::Url { .. } => FailureKind::Internal,
            NetError::Http { .. }
            | NetError::Body { .. }
            | NetError::Decode { .. }
            | NetError::UnsupportedEncoding { .. }
            | NetError::TooManyRedirects { .. }
            | NetError::BadRedirect { .. } => FailureKind::Protocol,
        }
    }
}

/// Host and port of `url`, the host without IPv6 brackets.
pub fn host_port(url: &Url) -> Result<(String, u16), NetError> {
    let host = match url.host() {
        Some(url::Host::Domain(d)) => d.to_owned(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        None => {
            return Err(NetError::Url {
                url: url.to_string(),
                reason: "no host".into(),
            });
        }
    };
    let port = url.port_or_known_default().ok_or_else(|| NetError::Url {
        url: url.to_string(),
        reason: "no port and unknown scheme".into(),
    })?;
    Ok((host, port))
}

/// The check HTTP client: a trust configuration, a resolver, and the
/// volunteer's [`Policy`], applied before every connection.
#[derive(Clone, Debug)]
pub struct HttpClient {
    tls: Arc<rustls::ClientConfig>,
    roots: Arc<rustls::RootCertStore>,
    resolver: SystemResolver,
    source: Option<std::net::IpAddr>,
    policy: Policy,
}

impl HttpClient {
    /// A client trusting `roots`, resolving through `resolver`, connecting
    /// only where `policy` allows.
    pub fn new(
        roots: rustls::RootCertStore,
        resolver: SystemResolver,
        policy: Policy,
    ) -> Result<Self, crate::trust::TrustError> {
        Ok(Self {
            tls: crate::trust::client_config(roots.clone())?,
            roots: Arc::new(roots),
            resolver,
            source: None,
            policy,
        })
    }

    /// What this client may connect to.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Opens connections from `source` (`None`: the system picks).
    pub fn with_source_address(mut self, source: Option<std::net::IpAddr>) -> Self {
        self.source = source;
        self
    }

    /// The trusted roots (the `tls` check builds its own verifier from them).
    pub fn roots(&self) -> &Arc<rustls::RootCertStore> {
        &self.roots
    }

    /// The TLS configuration used for checked sites.
    pub fn tls_config(&self) -> &Arc<rustls::ClientConfig> {
        &self.tls
    }

    /// The probe's resolver.
    pub fn resolver(&self) -> &SystemResolver {
        &self.resolver
    }

    /// Connects to `addr`, from the source address if one is set.
    async fn connect_from(&self, addr: SocketAddr) -> std::io::Result<TcpStream> {
        let Some(source) = self.source else {
            return TcpStream::connect(addr).await;
        };
        let socket = match addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.bind(SocketAddr::new(source, 0)).map_err(|e| {
            std::io::Error::new(e.kind(), format!("binding source address {source}: {e}"))
        })?;
        socket.connect(addr).await
    }

    /// Resolves (or takes the pinned addresses) and opens a TCP connection to
    /// the first address that accepts, recording resolve and connect times.
    /// A host outside the allowlist is refused before it is even resolved, and
    /// a private address among the candidates refuses the whole connection.
    pub async fn connect_tcp(
        &self,
        host: &str,
        port: u16,
        route: &Route,
        timings: &mut Timings,
    ) -> Result<(TcpStream, SocketAddr), NetError> {
        let refuse = |r: Refusal| {
            self.policy.warn_once(&r);
            NetError::Refused(r)
        };
        self.policy.check_host(host).map_err(refuse)?;
        let t = Instant::now();
        let addrs = match route {
            Route::Pinned(addrs) => addrs.clone(),
            Route::Resolve => self.resolver.lookup_ip(host).await?,
        };
        timings.resolve = t.elapsed();
        if addrs.is_empty() {
            return Err(NetError::NoAddress {
                host: host.to_owned(),
            });
        }
        let what = match route {
            Route::Pinned(_) => format!("{host} pinned address"),
            Route::Resolve => format!("{host} address"),
        };
        for ip in &addrs {
            self.policy.check_address(*ip, &what).map_err(refuse)?;
        }
        let t = Instant::now();
        let mut last_err = None;
        for (i, ip) in addrs.iter().enumerate() {
            let addr = SocketAddr::new(*ip, port);
            // With more addresses to try, a black-holed one must not eat the
            // whole run; the last one is bounded by the check's own timeout.
            let attempt = if i + 1 < addrs.len() {
                tokio::time::timeout(CONNECT_TIMEOUT_PER_ADDRESS, self.connect_from(addr))
                    .await
                    .unwrap_or_else(|_| {
                        Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!("no answer from {addr} within {CONNECT_TIMEOUT_PER_ADDRESS:?}"),
                        ))
                    })
            } else {
                self.connect_from(addr).await
            };
            match attempt {
                Ok(stream) => {
                    timings.connect = t.elapsed();
                    // Small requests: don't let Nagle delay the request head.
                    let _ = stream.set_nodelay(true);
                    return Ok((stream, addr));
                }
                Err(e) => last_err = Some(e),
            }
        }
        let list: Vec<String> = addrs
            .iter()
            .map(|ip| SocketAddr::new(*ip, port).to_string())
            .collect();
        Err(NetError::Connect {
            host: host.to_owned(),
            addrs: list.join(", "),
            source: last_err.unwrap_or_else(|| std::io::Error::other("no address tried")),
        })
    }

    /// A TLS handshake over `tcp` with SNI and verification for `host`.
    pub async fn handshake(
        config: Arc<rustls::ClientConfig>,
        host: &str,
        addr: SocketAddr,
        tcp: TcpStream,
    ) -> Result<TlsStream<TcpStream>, NetError> {
        let name = ServerName::try_from(host.to_owned()).map_err(|e| NetError::Tls {
            host: host.to_owned(),
            addr,
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
        })?;
        TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|source| NetError::Tls {
                host: host.to_owned(),
                addr,
                source,
            })
    }

    /// Sends `req`, following up to [`MAX_REDIRECTS`] redirects. A redirect to
    /// the same host and port keeps the route (so a pinned archive download stays
    /// on the site under test); another host is resolved normally.
    pub async fn send(&self, req: HttpRequest) -> Result<HttpResponse, NetError> {
        let mut req = req;
        let mut total = Timings::default();
        for _ in 0..=MAX_REDIRECTS {
            let mut resp = self.send_once(&req).await?;
            total.add(&resp.timings);
            let location = resp
                .headers
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let redirect = matches!(resp.status, 301 | 302 | 303 | 307 | 308);
            let Some(location) = location.filter(|_| redirect) else {
                resp.timings = total;
                return Ok(resp);
            };
            let next = req.url.join(&location).map_err(|_| NetError::BadRedirect {
                url: req.url.to_string(),
                location: location.clone(),
            })?;
            if !matches!(next.scheme(), "http" | "https") {
                return Err(NetError::BadRedirect {
                    url: req.url.to_string(),
                    location,
                });
            }
            let same_origin = next.host() == req.url.host()
                && next.port_or_known_default() == req.url.port_or_known_default();
            if !same_origin {
                req.route = Route::Resolve;
            }
            // 303, and 301/302 after POST, turn into GET without a body (what
            // browsers and the Elm client's HTTP library do).
            if resp.status == 303
                || (matches!(resp.status, 301 | 302) && req.method == Method::POST)
            {
                req.method = Method::GET;
                req.body = Bytes::new();
            }
            tracing::debug!(from = %req.url, to = %next, status = resp.status, "following redirect");
            req.url = next;
        }
        Err(NetError::TooManyRedirects {
            url: req.url.to_string(),
        })
    }

    async fn send_once(&self, req: &HttpRequest) -> Result<HttpResponse, NetError> {
        let (host, port) = host_port(&req.url)?;
        let mut timings = Timings::default();
        let (tcp, addr) = self
            .connect_tcp(&host, port, &req.route, &mut timings)
            .await?;
        match req.url.scheme() {
            "https" => {
                let t = Instant::now();
                let tls = Self::handshake(self.tls.clone(), &host, addr, tcp).await?;
                timings.tls = t.elapsed();
                exchange(tls, req, addr, timings).await
            }
            "http" => exchange(tcp, req, addr, timings).await,
            other => Err(NetError::Url {
                url: req.url.to_string(),
                reason: format!("unsupported scheme {other:?}"),
            }),
        }
    }
}

/// The `Host` header value: host plus the port when it is not the default.
fn host_header(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    }
}

async fn exchange<IO>(
    io: IO,
    req: &HttpRequest,
    addr: SocketAddr,
    mut timings: Timings,
) -> Result<HttpResponse, NetError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let url_s = req.url.to_string();
    let http_err = |source| NetError::Http {
        url: url_s.clone(),
        addr,
        source,
    };
    let t = Instant::now();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(http_err)?;
    // The connection is driven by its own task; the guard ends it when this
    // exchange finishes or is dropped (e.g. by the check's timeout), so a
    // stalled server cannot keep sockets open behind our back.
    let _conn = AbortOnDrop(tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "check connection ended with an error");
        }
    }));

    let path = match req.url.query() {
        Some(q) => format!("{}?{q}", req.url.path()),
        None => req.url.path().to_owned(),
    };
    let mut builder = http::Request::builder()
        .method(req.method.clone())
        .uri(path);
    let headers = builder.headers_mut().ok_or_else(|| NetError::Url {
        url: url_s.clone(),
        reason: "cannot build request".into(),
    })?;
    insert(headers, header::HOST, &host_header(&req.url));
    insert(headers, header::USER_AGENT, USER_AGENT);
    // Always offer gzip: the Elm registry answers 406 to clients that don't.
    insert(headers, header::ACCEPT_ENCODING, "gzip");
    insert(headers, header::ACCEPT, "*/*");
    insert(headers, header::CONNECTION, "close");
    if req.method == Method::POST || !req.body.is_empty() {
        insert(headers, header::CONTENT_LENGTH, &req.body.len().to_string());
    }
    for (name, value) in &req.headers {
        match (
            http::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            (Ok(n), Ok(v)) => {
                headers.insert(n, v);
            }
            _ => {
                return Err(NetError::Url {
                    url: url_s.clone(),
                    reason: format!("invalid request header {name:?}: {value:?}"),
                });
            }
        }
    }
    let request = builder
        .body(Full::new(req.body.clone()))
        .map_err(|e| NetError::Url {
            url: url_s.clone(),
            reason: e.to_string(),
        })?;
    let response = sender.send_request(request).await.map_err(http_err)?;
    timings.first_byte = t.elapsed();

    let t = Instant::now();
    let (parts, body) = response.into_parts();
    let raw = Limited::new(body, MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|e| NetError::Body {
            url: url_s.clone(),
            message: e.to_string(),
        })?
        .to_bytes();
    let body = decode_body(&parts.headers, raw, &url_s)?;
    timings.transfer = t.elapsed();

    Ok(HttpResponse {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
        remote_addr: addr,
        timings,
        url: req.url.clone(),
    })
}

/// Aborts the task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn insert(headers: &mut HeaderMap, name: http::HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

/// Undoes `Content-Encoding: gzip`; identity passes through.
fn decode_body(headers: &HeaderMap, raw: Bytes, url: &str) -> Result<Bytes, NetError> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_ascii_lowercase())
        .unwrap_or_default();
    match encoding.as_str() {
        "" | "identity" => Ok(raw),
        "gzip" | "x-gzip" => {
            let mut out = Vec::new();
            flate2::read::MultiGzDecoder::new(&raw[..])
                .take(MAX_BODY_BYTES as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|source| NetError::Decode {
                    url: url.to_owned(),
                    encoding: encoding.clone(),
                    source,
                })?;
            if out.len() > MAX_BODY_BYTES {
                return Err(NetError::Body {
                    url: url.to_owned(),
                    message: format!("decoded body larger than {MAX_BODY_BYTES} bytes"),
                });
            }
            Ok(Bytes::from(out))
        }
        _ => Err(NetError::UnsupportedEncoding {
            url: url.to_owned(),
            encoding,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_come_from_the_source_address_when_one_is_set() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let resolver = SystemResolver::with_server("127.0.0.1:9".parse().unwrap()).unwrap();
        let client = HttpClient::new(
            rustls::RootCertStore::empty(),
            resolver,
            Policy::unrestricted(),
        )
        .unwrap();
        let route = Route::Pinned(vec!["127.0.0.1".parse().unwrap()]);
        for source in [None, Some("127.0.0.7".parse().unwrap())] {
            let client = client.clone().with_source_address(source);
            let mut timings = Timings::default();
            let (_stream, _) = client
                .connect_tcp("site.test", port, &route, &mut timings)
                .await
                .unwrap();
            let (_, peer) = listener.accept().await.unwrap();
            assert_eq!(
                peer.ip(),
                source.unwrap_or_else(|| "127.0.0.1".parse().unwrap())
            );
        }
    }
}
