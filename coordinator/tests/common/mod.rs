//! Helpers shared by the coordinator's socket-level tests: start a server on
//! 127.0.0.1 port 0, talk to it with the generated clients, read SQLite.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use cutover_coordinator::{config, server};
use cutover_proto::v1::{
    self, admin_service_client::AdminServiceClient, coordinator_message::Msg as Out,
    probe_message::Msg as In, probe_service_client::ProbeServiceClient,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Streaming};

pub const TIMEOUT: Duration = Duration::from_secs(10);

pub struct Running {
    pub probe: SocketAddr,
    pub admin: SocketAddr,
    pub metrics: Option<SocketAddr>,
    pub stop: CancellationToken,
    pub task: tokio::task::JoinHandle<Result<(), server::ServeError>>,
}

impl Running {
    pub async fn stop(self) {
        self.stop.cancel();
        let r = tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("server stops within the grace period")
            .expect("server task");
        r.expect("server ran without error");
    }
}

pub async fn start(dir: &Path) -> Running {
    start_with(dir, false).await
}

/// Starts a server; `metrics` installs the process-wide recorder on 127.0.0.1:0 (once per test binary).
pub async fn start_with(dir: &Path, metrics: bool) -> Running {
    let text = r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
plaintext = true
data_dir = "data"
window = "60s"
max_batch_results = 50
metrics_listen = "127.0.0.1:0"

[sites.old]
addresses = ["127.0.0.10"]
[sites.new]
addresses = ["127.0.0.20"]

[[checks]]
id = "home"
kind = "http"
url = "https://elm-lang.org/"

[[checks]]
id = "www"
kind = "dns"
name = "elm-lang.org"
"#;
    let path = dir.join("cutover.toml");
    std::fs::write(&path, text).unwrap();
    let cfg = config::load(&path).unwrap();
    let bound = server::bind_all(cfg, metrics).await.unwrap();
    let (probe, admin, metrics) = (bound.probe_addr, bound.admin_addr, bound.metrics_addr);
    let stop = CancellationToken::new();
    let task = tokio::spawn(bound.run(stop.clone()));
    Running {
        probe,
        admin,
        metrics,
        stop,
        task,
    }
}

pub type Intercept = Box<dyn FnMut(Request<()>) -> Result<Request<()>, tonic::Status> + Send>;

pub fn bearer(token: &str) -> Intercept {
    let v: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
    Box::new(move |mut r: Request<()>| {
        r.metadata_mut().insert("authorization", v.clone());
        Ok(r)
    })
}

pub async fn channel(addr: SocketAddr) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

pub async fn admin(
    addr: SocketAddr,
    token: &str,
) -> AdminServiceClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Intercept>,
> {
    AdminServiceClient::with_interceptor(channel(addr).await, bearer(token))
}

pub fn admin_token(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("data/admin.token"))
        .unwrap()
        .trim()
        .to_string()
}

pub struct Session {
    pub tx: mpsc::Sender<v1::ProbeMessage>,
    pub rx: Streaming<v1::CoordinatorMessage>,
}

pub async fn open(addr: SocketAddr, token: &str) -> Result<Session, tonic::Status> {
    let mut client = ProbeServiceClient::with_interceptor(channel(addr).await, bearer(token));
    let (tx, rx) = mpsc::channel(16);
    tx.send(v1::ProbeMessage {
        msg: Some(In::Hello(v1::Hello {
            region: "asia".into(),
            version: "0.1.0-test".into(),
            clock_unix_ms: now_ms(),
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    let rx = client.session(ReceiverStream::new(rx)).await?.into_inner();
    Ok(Session { tx, rx })
}

impl Session {
    pub async fn next(&mut self) -> Out {
        tokio::time::timeout(TIMEOUT, self.rx.message())
            .await
            .expect("coordinator answers in time")
            .expect("stream ok")
            .expect("stream open")
            .msg
            .expect("message set")
    }

    pub async fn welcome(&mut self) -> (v1::Welcome, v1::Assignment) {
        let Out::Welcome(w) = self.next().await else {
            panic!("expected Welcome first")
        };
        let Out::Assignment(a) = self.next().await else {
            panic!("expected Assignment second")
        };
        (w, a)
    }

    pub async fn send(&self, results: Vec<v1::CheckResult>) {
        self.tx
            .send(v1::ProbeMessage {
                msg: Some(In::Results(v1::ResultBatch { results })),
            })
            .await
            .unwrap();
    }

    pub async fn ack(&mut self) -> u64 {
        match self.next().await {
            Out::Ack(a) => a.seq,
            other => panic!("expected Ack, got {other:?}"),
        }
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

pub fn result(seq: u64, check: &str, target: v1::Target) -> v1::CheckResult {
    v1::CheckResult {
        seq,
        check_id: check.into(),
        target: target as i32,
        started_unix_ms: now_ms() - 100,
        duration_us: 20_000,
        outcome: v1::Outcome::Success as i32,
        ..Default::default()
    }
}

/// (rows in result_batches, results in them, stored_seq) straight from SQLite.
pub fn stored(dir: &Path, probe: &str) -> (usize, usize, u64) {
    use prost::Message;
    let db = rusqlite::Connection::open(dir.join("data/cutover.db")).unwrap();
    let mut st = db
        .prepare("SELECT payload FROM result_batches WHERE probe_id = ?1")
        .unwrap();
    let payloads: Vec<Vec<u8>> = st
        .query_map([probe], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let results = payloads
        .iter()
        .map(|p| v1::ResultBatch::decode(p.as_slice()).unwrap().results.len())
        .sum();
    let seq: i64 = db
        .query_row(
            "SELECT stored_seq FROM probes WHERE id = ?1",
            [probe],
            |r| r.get(0),
        )
        .unwrap();
    (payloads.len(), results, seq as u64)
}
