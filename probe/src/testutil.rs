//! Test helpers: a private CA (rcgen), a tiny HTTP(S) server on 127.0.0.1 port 0
//! that records what it was asked (including SNI), and a check context whose
//! trust store holds only that CA. Tests never leave 127.0.0.0/8.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::RootCertStore;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;

use crate::checks::{CheckContext, Sites};
use crate::net::{HttpClient, SystemResolver};

/// A private CA that signs server certificates for test hostnames.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "cutover test CA");
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    pub fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        roots
    }

    /// A certificate for `names` signed by this CA: (certificate PEM, key PEM).
    pub fn issue_pem(&self, names: &[&str]) -> (String, String) {
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, names[0]);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A server configuration for `names`, valid for `days` from now (negative = expired).
    pub fn server_config(&self, names: &[&str], days: i64) -> Arc<rustls::ServerConfig> {
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, names[0]);
        let now = unix_now();
        // rcgen takes `time` dates; build them from a fixed epoch so the tests
        // need no direct dependency on the `time` crate.
        let epoch_1975 = rcgen::date_time_ymd(1975, 1, 1);
        let at = |secs: i64| epoch_1975 + Duration::from_secs((secs - 157_766_400) as u64);
        params.not_before = at(now - 2 * 86_400);
        params.not_after = at(now + days * 86_400);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let chain = vec![cert.der().clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(cfg)
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// What the server saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
    pub sni: Option<String>,
}

/// A canned answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// How long the server waits before answering.
    pub delay: Duration,
}

impl Reply {
    pub fn delay(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }

    pub fn ok(body: impl Into<Bytes>) -> Self {
        Self {
            status: 200,
            headers: Vec::new(),
            body: body.into(),
            delay: Duration::ZERO,
        }
    }

    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Bytes::new(),
            delay: Duration::ZERO,
        }
    }

    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }

    /// The body gzip-compressed, with `Content-Encoding: gzip`.
    pub fn gzip(body: &[u8]) -> Self {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(body).unwrap();
        Self::ok(enc.finish().unwrap()).header("content-encoding", "gzip")
    }
}

type Handler = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

/// A running test server.
pub struct TestServer {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl TestServer {
    /// Serves `handler` on 127.0.0.1:0, over TLS when `tls` is given.
    pub async fn start(
        tls: Option<Arc<rustls::ServerConfig>>,
        handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
    ) -> Self {
        Self::start_on("127.0.0.1:0", tls, handler).await
    }

    pub async fn start_on(
        bind: &str,
        tls: Option<Arc<rustls::ServerConfig>>,
        handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind(bind).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handler: Handler = Arc::new(handler);
        let seen2 = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let handler = handler.clone();
                let seen = seen2.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        Some(cfg) => {
                            let Ok(stream) = tokio_rustls::TlsAcceptor::from(cfg).accept(tcp).await
                            else {
                                return;
                            };
                            let sni = stream.get_ref().1.server_name().map(str::to_owned);
                            serve(TokioIo::new(stream), sni, handler, seen).await;
                        }
                        None => serve(TokioIo::new(tcp), None, handler, seen).await,
                    }
                });
            }
        });
        Self { addr, seen }
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn serve<IO>(io: IO, sni: Option<String>, handler: Handler, seen: Arc<Mutex<Vec<Seen>>>)
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let handler = handler.clone();
        let seen = seen.clone();
        let sni = sni.clone();
        async move {
            let info = Seen {
                method: req.method().to_string(),
                path: req
                    .uri()
                    .path_and_query()
                    .map(|p| p.to_string())
                    .unwrap_or_default(),
                headers: req
                    .headers()
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
                    .collect(),
                sni,
            };
            let _ = req.into_body().collect().await;
            // A little latency so every phase is measurably > 0.
            tokio::time::sleep(Duration::from_millis(2)).await;
            let reply = handler(&info);
            seen.lock().unwrap().push(info);
            tokio::time::sleep(reply.delay).await;
            let mut resp = hyper::Response::builder().status(reply.status);
            for (k, v) in &reply.headers {
                resp = resp.header(k, v);
            }
            Ok::<_, std::convert::Infallible>(resp.body(Full::new(reply.body)).unwrap())
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, svc)
        .await;
}

/// A check context trusting only `roots`, with the given sites. The resolver
/// points at `resolver` (a port-0 test server), or at a closed loopback port.
pub fn context(roots: RootCertStore, sites: Sites, resolver: Option<SocketAddr>) -> CheckContext {
    let resolver =
        SystemResolver::with_server(resolver.unwrap_or_else(|| "127.0.0.1:9".parse().unwrap()))
            .unwrap();
    CheckContext {
        http: HttpClient::new(roots, resolver, crate::policy::Policy::unrestricted()).unwrap(),
        sites,
        authoritative_port: 53,
        dns_timeout: Duration::from_secs(2),
    }
}

/// Sites pinned to loopback addresses.
pub fn sites(old: &str, new: &str) -> Sites {
    Sites {
        old: vec![old.parse().unwrap()],
        new: vec![new.parse().unwrap()],
    }
}

/// A tiny DNS server on 127.0.0.1 (UDP and TCP on the same port 0 port) with a
/// fixed zone `elm.test.`; records the RD flag of each query so tests can tell
/// recursive from iterative queries. `big.elm.test.` is truncated over UDP.
pub struct DnsResponder {
    pub addr: SocketAddr,
    pub rd_seen: Arc<Mutex<Vec<(String, bool)>>>,
    tcp: Arc<std::sync::atomic::AtomicUsize>,
}

impl DnsResponder {
    pub fn tcp_queries(&self) -> usize {
        self.tcp.load(std::sync::atomic::Ordering::SeqCst)
    }
}

fn dns_name(s: &str) -> hickory_proto::rr::Name {
    hickory_proto::rr::Name::from_ascii(s).unwrap()
}

fn dns_answer(req: &hickory_proto::op::Message, tcp: bool) -> hickory_proto::op::Message {
    use hickory_proto::op::{Message, ResponseCode};
    use hickory_proto::rr::rdata::{A, NS, SOA};
    use hickory_proto::rr::{RData, Record, RecordType};

    let q = req.queries[0].clone();
    let qname = q.name.to_string().to_ascii_lowercase();
    let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
    resp.metadata.recursion_desired = req.metadata.recursion_desired;
    resp.add_query(q.clone());
    let a_records: &[(&str, &[&str], u32)] = &[
        ("www.elm.test.", &["127.0.0.20"], 287),
        ("mixed.elm.test.", &["127.0.0.10", "127.0.0.20"], 60),
        ("stray.elm.test.", &["127.0.0.99"], 60),
        ("ns1.elm.test.", &["127.0.0.1"], 3600),
        ("big.elm.test.", &["127.0.0.20"], 99),
        ("site.test.", &["127.0.0.1"], 30),
        ("other.test.", &["127.0.0.1"], 30),
    ];
    match (qname.as_str(), q.query_type) {
        ("big.elm.test.", _) if !tcp => resp.metadata.truncation = true,
        ("elm.test.", RecordType::NS) => {
            resp.add_answer(Record::from_rdata(
                dns_name("elm.test."),
                3600,
                RData::NS(NS(dns_name("ns1.elm.test."))),
            ));
        }
        ("elm.test.", RecordType::SOA) => {
            let soa = SOA::new(
                dns_name("ns1.elm.test."),
                dns_name("admin.elm.test."),
                2026112701,
                3600,
                600,
                86400,
                60,
            );
            resp.add_answer(Record::from_rdata(
                dns_name("elm.test."),
                3600,
                RData::SOA(soa),
            ));
        }
        ("servfail.elm.test.", _) => resp.metadata.response_code = ResponseCode::ServFail,
        (n, t) => match a_records.iter().find(|(name, _, _)| *name == n) {
            Some((_, ips, ttl)) => {
                if t == RecordType::A {
                    for ip in *ips {
                        resp.add_answer(Record::from_rdata(
                            q.name.clone(),
                            *ttl,
                            RData::A(A(ip.parse().unwrap())),
                        ));
                    }
                }
            }
            None => resp.metadata.response_code = ResponseCode::NXDomain,
        },
    }
    resp
}

/// Starts a [`DnsResponder`].
pub async fn dns_responder() -> DnsResponder {
    use hickory_proto::op::Message;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    // UDP and TCP must share the port; retry if TCP finds it taken.
    let (udp, tcp) = loop {
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        if let Ok(tcp) = TcpListener::bind(udp.local_addr().unwrap()).await {
            break (udp, tcp);
        }
    };
    let addr = udp.local_addr().unwrap();
    let rd_seen = Arc::new(Mutex::new(Vec::new()));
    let tcp_count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = rd_seen.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, peer)) = udp.recv_from(&mut buf).await else {
                return;
            };
            let req = Message::from_vec(&buf[..n]).unwrap();
            seen.lock().unwrap().push((
                req.queries[0].name.to_string().to_ascii_lowercase(),
                req.metadata.recursion_desired,
            ));
            let _ = udp
                .send_to(&dns_answer(&req, false).to_vec().unwrap(), peer)
                .await;
        }
    });
    let count = tcp_count.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = tcp.accept().await else {
                return;
            };
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let Ok(len) = s.read_u16().await else { return };
                let mut buf = vec![0u8; usize::from(len)];
                if s.read_exact(&mut buf).await.is_err() {
                    return;
                }
                let req = Message::from_vec(&buf).unwrap();
                let out = dns_answer(&req, true).to_vec().unwrap();
                let mut framed = (out.len() as u16).to_be_bytes().to_vec();
                framed.extend_from_slice(&out);
                let _ = s.write_all(&framed).await;
            });
        }
    });
    DnsResponder {
        addr,
        rd_seen,
        tcp: tcp_count,
    }
}

// ---- a stand-in coordinator ----

use std::collections::BTreeMap;

use cutover_proto::v1::coordinator_message::Msg as In;
use cutover_proto::v1::probe_message::Msg as Out;
use cutover_proto::v1::probe_service_server::{ProbeService, ProbeServiceServer};
use cutover_proto::v1::{
    Ack, Assignment, CheckResult, CoordinatorMessage, Drain, Hello, ProbeMessage, Welcome,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::Status;

/// A stand-in coordinator: checks the token, welcomes with the highest
/// stored seq, assigns, stores results deduplicated by seq and acks the
/// highest contiguous seq. `down` makes it refuse and cut sessions;
/// `drain_next` makes the next session get a Drain right after Welcome.
#[derive(Clone, Default)]
pub struct Fake {
    pub token: String,
    pub assignment: Assignment,
    pub stored: Arc<Mutex<BTreeMap<u64, CheckResult>>>,
    pub hellos: Arc<Mutex<Vec<Hello>>>,
    pub down: Arc<Mutex<CancellationToken>>,
    pub drain_next: Arc<Mutex<Option<u32>>>,
    pub sessions: Arc<Mutex<u32>>,
    /// Store nothing and never ack (a coordinator whose database hangs).
    pub no_ack: bool,
    /// Heartbeats received (a coordinator idles out a silent probe).
    pub heartbeats: Arc<Mutex<u32>>,
}

impl Fake {
    fn contiguous(stored: &BTreeMap<u64, CheckResult>) -> u64 {
        let mut n = 0;
        while stored.contains_key(&(n + 1)) {
            n += 1;
        }
        n
    }
}

type Stream = ReceiverStream<Result<CoordinatorMessage, Status>>;

#[tonic::codegen::async_trait]
impl ProbeService for Fake {
    type SessionStream = Stream;

    async fn session(
        &self,
        req: tonic::Request<tonic::Streaming<ProbeMessage>>,
    ) -> Result<tonic::Response<Stream>, Status> {
        let auth = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if auth != Some(&format!("Bearer {}", self.token)) {
            return Err(Status::unauthenticated("unknown probe token"));
        }
        let down = self.down.lock().unwrap().clone();
        if down.is_cancelled() {
            return Err(Status::unavailable("coordinator restarting"));
        }
        *self.sessions.lock().unwrap() += 1;
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(64);
        let me = self.clone();
        tokio::spawn(async move {
            let Ok(Some(ProbeMessage {
                msg: Some(Out::Hello(h)),
            })) = inbound.message().await
            else {
                return;
            };
            me.hellos.lock().unwrap().push(h);
            let stored_seq = me.stored.lock().unwrap().keys().max().copied().unwrap_or(0);
            let send = |m: In| CoordinatorMessage { msg: Some(m) };
            let _ = tx
                .send(Ok(send(In::Welcome(Welcome {
                    probe_id: "p-1".into(),
                    region: "test".into(),
                    stored_seq,
                    heartbeat_interval_ms: 100,
                    max_batch_results: 3,
                }))))
                .await;
            let drain = me.drain_next.lock().unwrap().take();
            if let Some(ms) = drain {
                let _ = tx
                    .send(Ok(send(In::Drain(Drain {
                        reason: "maintenance".into(),
                        retry_after_ms: ms,
                    }))))
                    .await;
                return;
            }
            let _ = tx
                .send(Ok(send(In::Assignment(me.assignment.clone()))))
                .await;
            loop {
                tokio::select! {
                    () = down.cancelled() => {
                        let _ = tx.send(Err(Status::unavailable("coordinator going away"))).await;
                        return;
                    }
                    m = inbound.message() => match m {
                        Ok(Some(ProbeMessage { msg: Some(Out::Results(_)) })) if me.no_ack => {}
                        Ok(Some(ProbeMessage { msg: Some(Out::Results(b)) })) => {
                            assert!(b.results.len() <= 3, "batch larger than max_batch_results");
                            let acked = {
                                let mut st = me.stored.lock().unwrap();
                                for r in b.results {
                                    st.entry(r.seq).or_insert(r);
                                }
                                Fake::contiguous(&st)
                            };
                            let _ = tx.send(Ok(send(In::Ack(Ack { seq: acked })))).await;
                        }
                        Ok(Some(ProbeMessage { msg: Some(Out::Heartbeat(_)) })) => {
                            *me.heartbeats.lock().unwrap() += 1;
                        }
                        Ok(Some(_)) => {}
                        _ => return,
                    }
                }
            }
        });
        Ok(tonic::Response::new(ReceiverStream::new(rx)))
    }
}

/// Serves `fake` on 127.0.0.1:0, over TLS with `identity` (cert PEM, key PEM) when given.
pub async fn serve_coordinator(fake: Fake, identity: Option<(String, String)>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut builder = tonic::transport::Server::builder();
    if let Some((cert, key)) = identity {
        builder = builder
            .tls_config(
                tonic::transport::ServerTlsConfig::new()
                    .identity(tonic::transport::Identity::from_pem(cert, key)),
            )
            .unwrap();
    }
    tokio::spawn(
        builder
            .add_service(ProbeServiceServer::new(fake))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    addr
}

/// A TCP listener on 127.0.0.1 that only counts the connections it accepts:
/// proof that a refused check never connected.
pub struct CountingListener {
    pub addr: SocketAddr,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
}

impl CountingListener {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((_conn, _)) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
        Self { addr, accepted }
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Log lines written while the guard lives (this thread only: use a
/// current-thread runtime), as the probe prints them, without colours.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    pub fn capture() -> (Self, tracing::subscriber::DefaultGuard) {
        let logs = Self::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// The lines at WARN.
    pub fn warnings(&self) -> Vec<String> {
        self.text()
            .lines()
            .filter(|l| l.contains(" WARN "))
            .map(str::to_owned)
            .collect()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
