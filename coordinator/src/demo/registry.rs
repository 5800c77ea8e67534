//! A stand-in Elm package registry (old or new site), following REGISTRY.md.
//!
//! Served in-process over HTTPS (HTTP/1.1 and HTTP/2) with a certificate from the
//! test CA. It holds a small fixed package set with deterministic archive bytes
//! and has fault knobs a test flips at runtime through [`Registry`]: an error
//! rate and added latency (each overall or per client address), corrupted
//! archives (bytes changed, published hash unchanged), missing releases, and
//! down.
//!
//! Endpoints: `/all-packages` (GET and POST), `/all-packages/since/N`,
//! `/packages/A/P/releases.json`, `/packages/A/P/V/{endpoint.json, elm.json,
//! docs.json, README.md}` (V may be `latest`), `/packages/A/P/V/` (HTML),
//! `/search.json`, `/` (HTML) and the archives themselves under
//! `/archives/A/P/V.zip` (on the real server the url is a GitHub zipball).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The published package set: (package, version, publish time in POSIX seconds).
pub const RELEASES: &[(&str, &str, u64)] = &[
    ("elm/core", "1.0.0", 1_534_000_000),
    ("elm/json", "1.0.0", 1_534_000_100),
    ("elm/core", "1.0.1", 1_540_000_000),
    ("elm/core", "1.0.2", 1_543_000_000),
    ("elm/http", "2.0.0", 1_543_500_000),
    ("elm/json", "1.1.0", 1_545_000_000),
    ("elm/json", "1.1.1", 1_545_500_000),
    ("elm/json", "1.1.2", 1_546_000_000),
    ("elm/core", "1.0.3", 1_576_000_000),
    ("elm/core", "1.0.4", 1_577_000_000),
    ("elm/json", "1.1.3", 1_553_000_000),
    ("elm/core", "1.0.5", 1_583_000_000),
];

/// Releases ordered by publish time, oldest first, as `author/name@version`.
pub fn releases_by_time() -> Vec<(String, u64)> {
    let mut all: Vec<(String, u64)> = RELEASES
        .iter()
        .map(|(p, v, t)| (format!("{p}@{v}"), *t))
        .collect();
    all.sort_by_key(|(_, t)| *t);
    all
}

/// The deterministic bytes of a package archive (a small, valid-looking zip
/// header followed by per-release content). Large enough to span several TLS
/// records.
pub fn archive_bytes(package: &str, version: &str) -> Vec<u8> {
    let mut out = b"PK\x03\x04".to_vec();
    let seed = format!("{package}@{version}");
    let mut state = ring::digest::digest(&ring::digest::SHA256, seed.as_bytes());
    while out.len() < 48 * 1024 {
        out.extend_from_slice(format!("-- {seed} --\n").as_bytes());
        out.extend_from_slice(state.as_ref());
        state = ring::digest::digest(&ring::digest::SHA256, state.as_ref());
    }
    out
}

/// Lowercase hex SHA-1 of `bytes`, as in `endpoint.json`.
pub fn sha1_hex(bytes: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, bytes).as_ref())
}

/// Lowercase hex SHA-256 of `bytes`, as the `download` check expects.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The fault knobs.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Fraction of requests (0..=1) answered 500.
    pub error_rate: f64,
    /// Fraction of requests from these client addresses answered 500
    /// (instead of `error_rate`): one probe sees failures nobody else sees.
    pub error_rate_by_client: HashMap<IpAddr, f64>,
    /// Added before answering every request.
    pub latency: Duration,
    /// Added for requests from these client addresses (instead of `latency`).
    pub latency_by_client: HashMap<IpAddr, Duration>,
    /// Archives served with changed bytes while `endpoint.json` keeps the hash.
    pub corrupt_archives: bool,
    /// Releases (`author/name@version`) absent from every listing and endpoint.
    pub missing: BTreeSet<String>,
    /// Connections are closed at once, without TLS or an answer.
    pub down: bool,
}

/// One request as the stand-in saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Client address.
    pub peer: SocketAddr,
    /// Method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// `User-Agent`, if any.
    pub user_agent: Option<String>,
    /// `Accept-Encoding`, if any.
    pub accept_encoding: Option<String>,
    /// Status answered.
    pub status: u16,
}

#[derive(Debug)]
struct Shared {
    /// Base URL of this registry as clients name it, e.g. `https://package.elm.test:8443`.
    base_url: String,
    faults: Mutex<Faults>,
    seen: Mutex<Vec<Seen>>,
}

/// A running stand-in registry. Stops when dropped.
#[derive(Debug)]
pub struct Registry {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: CancellationToken,
}

impl Registry {
    /// Binds `bind` (port 0 picks one) and serves HTTPS with `tls`. `base_url`
    /// is how clients name this registry; archive urls in `endpoint.json` use it.
    pub async fn start(
        bind: SocketAddr,
        base_url: &str,
        tls: Arc<rustls::ServerConfig>,
    ) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(bind)
            .await
            .with_context(|| format!("binding stand-in registry on {bind}"))?;
        Self::serve(listener, base_url, tls)
    }

    /// Serves on an already bound listener (so callers can choose ports
    /// without a bind race).
    pub fn serve(
        listener: TcpListener,
        base_url: &str,
        tls: Arc<rustls::ServerConfig>,
    ) -> anyhow::Result<Self> {
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            base_url: base_url.trim_end_matches('/').to_owned(),
            faults: Mutex::new(Faults::default()),
            seen: Mutex::new(Vec::new()),
        });
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(
            listener,
            tokio_rustls::TlsAcceptor::from(tls),
            shared.clone(),
            stop.clone(),
        ));
        tracing::info!(%addr, base_url, "stand-in registry listening");
        Ok(Registry { shared, addr, stop })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL clients use.
    pub fn base_url(&self) -> &str {
        &self.shared.base_url
    }

    fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        self.shared
            .faults
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Answers this fraction (0..=1) of requests with 500.
    pub fn set_error_rate(&self, rate: f64) {
        self.faults().error_rate = rate.clamp(0.0, 1.0);
    }

    /// Answers this fraction (0..=1) of the requests from `client` with 500,
    /// instead of the overall rate; other clients keep the overall rate. A
    /// rate of 0 makes `client` immune to the overall rate, so
    /// [`Registry::clear_error_rate_for_client`] is how to undo this.
    pub fn set_error_rate_for_client(&self, client: IpAddr, rate: f64) {
        self.faults()
            .error_rate_by_client
            .insert(client, rate.clamp(0.0, 1.0));
    }

    /// Puts `client` back on the overall error rate.
    pub fn clear_error_rate_for_client(&self, client: IpAddr) {
        self.faults().error_rate_by_client.remove(&client);
    }

    /// Delays every answer by `d`.
    pub fn set_latency(&self, d: Duration) {
        self.faults().latency = d;
    }

    /// Delays answers to `client` by `d` (overrides the overall latency).
    pub fn set_latency_for(&self, client: IpAddr, d: Duration) {
        self.faults().latency_by_client.insert(client, d);
    }

    /// Serves archives with changed bytes, leaving the published hashes alone.
    pub fn set_corrupt_archives(&self, on: bool) {
        self.faults().corrupt_archives = on;
    }

    /// Hides these releases (`author/name@version`) everywhere.
    pub fn set_missing<I, S>(&self, releases: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.faults().missing = releases.into_iter().map(Into::into).collect();
    }

    /// Closes every connection at once while `down`.
    pub fn set_down(&self, down: bool) {
        self.faults().down = down;
    }

    /// Every request answered so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared
            .seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(%e, "stand-in registry accept failed");
                    continue;
                }
            },
        };
        if shared.faults.lock().map(|f| f.down).unwrap_or(false) {
            drop(tcp);
            continue;
        }
        let acceptor = acceptor.clone();
        let shared = shared.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let svc = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { handle(&shared, peer, req).await }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(tls), svc);
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = conn => {}
            }
        });
    }
}

/// Error that makes hyper drop the connection (used while "down").
#[derive(Debug)]
struct Closed;

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stand-in registry is down")
    }
}

impl std::error::Error for Closed {}

async fn handle(
    shared: &Shared,
    peer: SocketAddr,
    req: http::Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Closed> {
    let faults = shared
        .faults
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone();
    if faults.down {
        return Err(Closed);
    }
    let delay = faults
        .latency_by_client
        .get(&peer.ip())
        .copied()
        .unwrap_or(faults.latency);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let user_agent = header("user-agent");
    let accept_encoding = header("accept-encoding");
    let gzip = accept_encoding
        .as_deref()
        .is_some_and(|ae| ae.split(',').any(|e| e.trim().starts_with("gzip")));

    let error_rate = faults
        .error_rate_by_client
        .get(&peer.ip())
        .copied()
        .unwrap_or(faults.error_rate);
    let resp = if error_rate > 0.0 && fastrand::f64() < error_rate {
        plain(StatusCode::INTERNAL_SERVER_ERROR, "injected error\n")
    } else if refuses_406(user_agent.as_deref(), accept_encoding.as_deref()) {
        plain(StatusCode::NOT_ACCEPTABLE, "Not Acceptable\n")
    } else {
        let catalogue = Catalogue::new(&faults.missing);
        route(
            &catalogue,
            &shared.base_url,
            req.method(),
            req.uri().path(),
            &faults,
        )
    };
    let resp = if gzip { gzip_response(resp) } else { resp };
    let seen = Seen {
        peer,
        method: req.method().to_string(),
        path: req
            .uri()
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        user_agent,
        accept_encoding,
        status: resp.status().as_u16(),
    };
    shared
        .seen
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .push(seen);
    Ok(resp)
}

/// The real server's rule: no User-Agent, or one naming curl, Wget or
/// node.js, and no `Accept-Encoding: gzip` → 406.
pub fn refuses_406(user_agent: Option<&str>, accept_encoding: Option<&str>) -> bool {
    let bad_agent = match user_agent {
        None => true,
        Some(ua) => ["curl", "Wget", "node.js"].iter().any(|b| ua.contains(b)),
    };
    let gzip = accept_encoding.is_some_and(|ae| ae.contains("gzip"));
    bad_agent && !gzip
}

/// The visible package set once `missing` releases are hidden.
struct Catalogue {
    /// package → version → time
    packages: BTreeMap<String, BTreeMap<Version, (String, u64)>>,
    /// `author/name@version`, oldest first
    by_time: Vec<String>,
}

/// Sortable semantic version, keeping the original text.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Version(u32, u32, u32);

impl Version {
    fn parse(s: &str) -> Option<Self> {
        let mut it = s.split('.').map(|p| p.parse::<u32>().ok());
        Some(Version(it.next()??, it.next()??, it.next()??))
    }
}

impl Catalogue {
    fn new(missing: &BTreeSet<String>) -> Self {
        let mut packages: BTreeMap<String, BTreeMap<Version, (String, u64)>> = BTreeMap::new();
        let mut by_time = Vec::new();
        for (name, time) in releases_by_time() {
            if missing.contains(&name) {
                continue;
            }
            let (pkg, ver) = name.split_once('@').expect("release names are pkg@version");
            let v = Version::parse(ver).expect("fixed package set has semantic versions");
            packages
                .entry(pkg.to_owned())
                .or_default()
                .insert(v, (ver.to_owned(), time));
            by_time.push(name);
        }
        Catalogue { packages, by_time }
    }

    /// Resolves `latest` and checks the release exists.
    fn version(&self, pkg: &str, ver: &str) -> Option<String> {
        let versions = self.packages.get(pkg)?;
        if ver == "latest" {
            return versions.values().next_back().map(|(v, _)| v.clone());
        }
        versions
            .values()
            .any(|(v, _)| v == ver)
            .then(|| ver.to_owned())
    }
}

fn route(
    cat: &Catalogue,
    base_url: &str,
    method: &Method,
    path: &str,
    faults: &Faults,
) -> Response<Full<Bytes>> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let get = method == Method::GET || method == Method::HEAD;
    match (segs.as_slice(), get, method == Method::POST) {
        ([""], true, _) => html(
            "<!DOCTYPE html><html><head><title>Elm Packages</title></head>\
             <body><h1>Elm packages</h1><p>Browse packages</p></body></html>",
        ),
        (["all-packages"], true, _) | (["all-packages"], _, true) => {
            let obj: BTreeMap<&String, Vec<&String>> = cat
                .packages
                .iter()
                .map(|(p, vs)| (p, vs.values().map(|(v, _)| v).collect()))
                .collect();
            json(&obj)
        }
        (["all-packages", "since", n], true, _) | (["all-packages", "since", n], _, true) => {
            match n.parse::<usize>() {
                Ok(n) => {
                    let newest_first: Vec<&String> =
                        cat.by_time.iter().skip(n).rev().collect::<Vec<_>>();
                    json(&newest_first)
                }
                Err(_) => plain(StatusCode::BAD_REQUEST, "bad count\n"),
            }
        }
        (["search.json"], true, _) => {
            let list: Vec<serde_json::Value> = cat
                .packages
                .iter()
                .map(|(p, vs)| {
                    serde_json::json!({
                        "name": p,
                        "summary": format!("The {p} package"),
                        "license": "BSD-3-Clause",
                        "version": vs.values().next_back().map(|(v, _)| v.clone()),
                    })
                })
                .collect();
            json(&list)
        }
        (["packages", a, p, "releases.json"], true, _) => {
            match cat.packages.get(&format!("{a}/{p}")) {
                Some(vs) => {
                    let obj: BTreeMap<&String, u64> = vs.values().map(|(v, t)| (v, *t)).collect();
                    json(&obj)
                }
                None => not_found(),
            }
        }
        (["packages", a, p, v, file], true, _) => {
            let pkg = format!("{a}/{p}");
            let Some(ver) = cat.version(&pkg, v) else {
                return not_found();
            };
            match *file {
                "endpoint.json" => json(&serde_json::json!({
                    "url": format!("{base_url}/archives/{pkg}/{ver}.zip"),
                    "hash": sha1_hex(&archive_bytes(&pkg, &ver)),
                })),
                "elm.json" => json(&serde_json::json!({
                    "type": "package",
                    "name": pkg,
                    "summary": format!("The {pkg} package"),
                    "license": "BSD-3-Clause",
                    "version": ver,
                    "exposed-modules": [],
                    "elm-version": "0.19.0 <= v < 0.20.0",
                    "dependencies": {},
                    "test-dependencies": {},
                })),
                "docs.json" => json(&serde_json::json!([])),
                "README.md" => plain(StatusCode::OK, &format!("# {pkg} {ver}\n")),
                _ => not_found(),
            }
        }
        (["packages", a, p, v], true, _) => {
            let pkg = format!("{a}/{p}");
            match cat.version(&pkg, v) {
                Some(ver) => html(&format!(
                    "<!DOCTYPE html><html><body><h1>{pkg} {ver}</h1></body></html>"
                )),
                None => not_found(),
            }
        }
        (["archives", a, p, file], true, _) => {
            let pkg = format!("{a}/{p}");
            let Some(ver) = file.strip_suffix(".zip") else {
                return not_found();
            };
            if cat.version(&pkg, ver).as_deref() != Some(ver) {
                return not_found();
            }
            let mut bytes = archive_bytes(&pkg, ver);
            if faults.corrupt_archives {
                corrupt(&mut bytes);
            }
            let mut r = Response::new(Full::new(Bytes::from(bytes)));
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/zip"),
            );
            r
        }
        _ => not_found(),
    }
}

/// Changes bytes in the middle of an archive, keeping its length.
pub fn corrupt(bytes: &mut [u8]) {
    let mid = bytes.len() / 2;
    for b in bytes.iter_mut().skip(mid).take(16) {
        *b ^= 0x5a;
    }
}

fn plain(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    with_type(
        status,
        "text/plain; charset=utf-8",
        body.as_bytes().to_vec(),
    )
}

fn html(body: &str) -> Response<Full<Bytes>> {
    with_type(
        StatusCode::OK,
        "text/html; charset=utf-8",
        body.as_bytes().to_vec(),
    )
}

fn json<T: serde::Serialize>(v: &T) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(v).expect("serialising plain JSON values cannot fail");
    with_type(StatusCode::OK, "application/json", body)
}

fn not_found() -> Response<Full<Bytes>> {
    plain(StatusCode::NOT_FOUND, "Not Found\n")
}

fn with_type(status: StatusCode, ctype: &'static str, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(ctype),
    );
    r
}

fn gzip_response(resp: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    use http_body_util::BodyExt as _;
    let (mut parts, body) = resp.into_parts();
    // A Full body is one chunk, available at once.
    let bytes = futures_util::FutureExt::now_or_never(body.collect())
        .and_then(|r| r.ok())
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let compressed = enc.write_all(&bytes).and_then(|_| enc.finish());
    match compressed {
        Ok(gz) => {
            parts.headers.insert(
                http::header::CONTENT_ENCODING,
                http::HeaderValue::from_static("gzip"),
            );
            parts.headers.insert(
                http::header::VARY,
                http::HeaderValue::from_static("Accept-Encoding"),
            );
            Response::from_parts(parts, Full::new(Bytes::from(gz)))
        }
        Err(_) => Response::from_parts(parts, Full::new(bytes)),
    }
}
