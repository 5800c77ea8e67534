//! The probe session and admin API over a real 127.0.0.1 socket, with the
//! generated clients: enrolment, Welcome/Assignment/Ack, dedupe, refusals,
//! session replacement, and a restart on the same data dir.

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
use tonic::{Code, Request, Streaming};

const TIMEOUT: Duration = Duration::from_secs(10);

struct Running {
    probe: SocketAddr,
    admin: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), server::ServeError>>,
}

impl Running {
    async fn stop(self) {
        self.stop.cancel();
        let r = tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("server stops within the grace period")
            .expect("server task");
        r.expect("server ran without error");
    }
}

async fn start(dir: &Path) -> Running {
    let text = r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
plaintext = true
data_dir = "data"
window = "60s"
max_batch_results = 50

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
    let bound = server::bind_all(cfg, false).await.unwrap();
    let (probe, admin) = (bound.probe_addr, bound.admin_addr);
    let stop = CancellationToken::new();
    let task = tokio::spawn(bound.run(stop.clone()));
    Running {
        probe,
        admin,
        stop,
        task,
    }
}

type Intercept = Box<dyn FnMut(Request<()>) -> Result<Request<()>, tonic::Status> + Send>;

fn bearer(token: &str) -> Intercept {
    let v: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
    Box::new(move |mut r: Request<()>| {
        r.metadata_mut().insert("authorization", v.clone());
        Ok(r)
    })
}

async fn channel(addr: SocketAddr) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

async fn admin(
    addr: SocketAddr,
    token: &str,
) -> AdminServiceClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Intercept>,
> {
    AdminServiceClient::with_interceptor(channel(addr).await, bearer(token))
}

fn admin_token(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("data/admin.token"))
        .unwrap()
        .trim()
        .to_string()
}

struct Session {
    tx: mpsc::Sender<v1::ProbeMessage>,
    rx: Streaming<v1::CoordinatorMessage>,
}

async fn open(addr: SocketAddr, token: &str) -> Result<Session, tonic::Status> {
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
    async fn next(&mut self) -> Out {
        tokio::time::timeout(TIMEOUT, self.rx.message())
            .await
            .expect("coordinator answers in time")
            .expect("stream ok")
            .expect("stream open")
            .msg
            .expect("message set")
    }

    async fn welcome(&mut self) -> (v1::Welcome, v1::Assignment) {
        let Out::Welcome(w) = self.next().await else {
            panic!("expected Welcome first")
        };
        let Out::Assignment(a) = self.next().await else {
            panic!("expected Assignment second")
        };
        (w, a)
    }

    async fn send(&self, results: Vec<v1::CheckResult>) {
        self.tx
            .send(v1::ProbeMessage {
                msg: Some(In::Results(v1::ResultBatch { results })),
            })
            .await
            .unwrap();
    }

    async fn ack(&mut self) -> u64 {
        match self.next().await {
            Out::Ack(a) => a.seq,
            other => panic!("expected Ack, got {other:?}"),
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn result(seq: u64, check: &str, target: v1::Target) -> v1::CheckResult {
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
fn stored(dir: &Path, probe: &str) -> (usize, usize, u64) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_session_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path()).await;
    let token = admin_token(dir.path());

    let mut adm = admin(srv.admin, &token).await;
    let e = adm
        .enrol_probe(v1::EnrolProbeRequest {
            region: "asia".into(),
            note: "test".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(e.token.starts_with("cutover_"));
    assert_eq!(e.region, "asia");

    // A probe token never opens the admin service.
    let mut as_probe = admin(srv.admin, &e.token).await;
    let err = as_probe.status(v1::StatusRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    // A wrong token is refused with a message saying what to do.
    let err = open(srv.probe, "cutover_0000")
        .await
        .err()
        .expect("refused");
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(
        err.message().contains("cutover probe enrol"),
        "{}",
        err.message()
    );

    let mut s = open(srv.probe, &e.token).await.unwrap();
    let (w, a) = s.welcome().await;
    assert_eq!(
        (w.probe_id.as_str(), w.region.as_str(), w.stored_seq),
        (e.probe_id.as_str(), "asia", 0)
    );
    assert_eq!(w.max_batch_results, 50);
    assert_eq!(a.checks.len(), 2);
    assert_ne!(a.config_version, 0);

    let batch = vec![
        result(1, "home", v1::Target::Old),
        result(2, "home", v1::Target::New),
        result(3, "home", v1::Target::New),
    ];
    s.send(batch.clone()).await;
    assert_eq!(s.ack().await, 3);
    assert_eq!(stored(dir.path(), &e.probe_id), (1, 3, 3));

    // At-least-once delivery: the same batch again is acked but not stored twice.
    s.send(batch.clone()).await;
    assert_eq!(s.ack().await, 3);
    assert_eq!(stored(dir.path(), &e.probe_id), (1, 3, 3));

    // Unknown check ids are rejected, the rest of the batch is stored.
    s.send(vec![
        result(3, "home", v1::Target::New),
        result(4, "nope", v1::Target::New),
        result(5, "home", v1::Target::Old),
    ])
    .await;
    assert_eq!(s.ack().await, 5);
    assert_eq!(stored(dir.path(), &e.probe_id), (2, 4, 5));

    let st = adm.status(v1::StatusRequest {}).await.unwrap().into_inner();
    let asia = st
        .regions
        .iter()
        .find(|r| r.region == "asia")
        .expect("asia");
    assert_eq!(asia.probes_connected, 1);
    let new = asia
        .checks
        .iter()
        .find(|c| c.check_id == "home" && c.target == "new")
        .unwrap();
    assert_eq!((new.samples, new.failures, new.distinct_probes), (2, 0, 1));
    assert!(new.p50_ms > 15.0 && new.p50_ms < 25.0, "p50 {}", new.p50_ms);

    let probes = adm
        .list_probes(v1::ListProbesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(probes.probes.len(), 1);
    assert!(probes.probes[0].connected);
    assert_eq!(probes.probes[0].version, "0.1.0-test");
    assert_eq!(probes.probes[0].stored_seq, 5);

    // A second session of the same probe replaces the first.
    let mut s2 = open(srv.probe, &e.token).await.unwrap();
    let (w2, _) = s2.welcome().await;
    assert_eq!(w2.stored_seq, 5);
    let end = tokio::time::timeout(TIMEOUT, s.rx.message()).await.unwrap();
    assert_eq!(end.unwrap_err().code(), Code::Aborted);
    s2.send(vec![result(6, "home", v1::Target::Old)]).await;
    assert_eq!(s2.ack().await, 6);

    // Oversized batches end the session with a clear status.
    s2.send(
        (7..=60)
            .map(|i| result(i, "home", v1::Target::Old))
            .collect(),
    )
    .await;
    let end = tokio::time::timeout(TIMEOUT, s2.rx.message())
        .await
        .unwrap();
    let err = end.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(
        err.message().contains("max_batch_results"),
        "{}",
        err.message()
    );

    drop(s2);
    srv.stop().await;

    // Restart on the same data dir: the stored seq and the windows survive.
    let srv = start(dir.path()).await;
    let mut s = open(srv.probe, &e.token).await.unwrap();
    let (w, _) = s.welcome().await;
    assert_eq!(w.stored_seq, 6);
    let mut adm = admin(srv.admin, &token).await;
    let st = adm.status(v1::StatusRequest {}).await.unwrap().into_inner();
    let asia = st
        .regions
        .iter()
        .find(|r| r.region == "asia")
        .expect("asia");
    let old = asia
        .checks
        .iter()
        .find(|c| c.check_id == "home" && c.target == "old")
        .unwrap();
    assert_eq!(old.samples, 3, "windows rebuilt from stored batches");

    // Revocation takes effect at once, including on the open session.
    let r = adm
        .revoke_probe(v1::RevokeProbeRequest {
            probe_id: e.probe_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.was_active);
    let end = tokio::time::timeout(TIMEOUT, s.rx.message()).await.unwrap();
    assert!(end.is_err(), "revoked session ends");
    let err = open(srv.probe, &e.token).await.err().expect("refused");
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("revoked"), "{}", err.message());
    drop(s);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_message_must_be_hello() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path()).await;
    let mut adm = admin(srv.admin, &admin_token(dir.path())).await;
    let e = adm
        .enrol_probe(v1::EnrolProbeRequest {
            region: "us".into(),
            note: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut client =
        ProbeServiceClient::with_interceptor(channel(srv.probe).await, bearer(&e.token));
    let (tx, rx) = mpsc::channel(4);
    tx.send(v1::ProbeMessage {
        msg: Some(In::Heartbeat(v1::Heartbeat::default())),
    })
    .await
    .unwrap();
    let mut stream = client
        .session(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let err = tokio::time::timeout(TIMEOUT, stream.message())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("Hello"), "{}", err.message());
    drop(tx);
    srv.stop().await;
}
