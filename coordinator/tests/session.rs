//! The probe session and admin API over a real 127.0.0.1 socket, with the
//! generated clients: enrolment, Welcome/Assignment/Ack, dedupe, refusals,
//! session replacement, and a restart on the same data dir.

mod common;

use common::*;
use cutover_proto::v1::{self, probe_message::Msg as In, probe_service_client::ProbeServiceClient};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_are_served() {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };

    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path()).await;
    for (addr, service) in [
        (srv.probe, cutover_proto::services::PROBE),
        (srv.admin, cutover_proto::services::ADMIN),
    ] {
        let mut health = HealthClient::new(channel(addr).await);
        let reply = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reply.status(), ServingStatus::Serving, "{service}");

        let mut reflection = ServerReflectionClient::new(channel(addr).await);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut replies = reflection
            .server_reflection_info(tokio_stream::iter(vec![request]))
            .await
            .unwrap()
            .into_inner();
        let reply = replies.message().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
            panic!("expected a service list")
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        assert!(names.iter().any(|n| n == service), "{names:?}");
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_message_ends_only_that_session() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path()).await;
    let mut adm = admin(srv.admin, &admin_token(dir.path())).await;
    let mut tokens = Vec::new();
    for _ in 0..2 {
        let e = adm
            .enrol_probe(v1::EnrolProbeRequest {
                region: "eu".into(),
                note: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        tokens.push(e.token);
    }
    let mut big = open(srv.probe, &tokens[0]).await.unwrap();
    let mut fine = open(srv.probe, &tokens[1]).await.unwrap();
    big.welcome().await;
    fine.welcome().await;

    let mut huge = result(1, "home", v1::Target::New);
    huge.error = "x".repeat(5 * 1024 * 1024);
    big.send(vec![huge]).await;
    let err = tokio::time::timeout(TIMEOUT, big.rx.message())
        .await
        .unwrap()
        .unwrap_err();
    assert!(err.message().contains("too large"), "{err:?}");

    // The other probe is unaffected.
    fine.send(vec![result(1, "home", v1::Target::New)]).await;
    assert_eq!(fine.ack().await, 1);
    drop((big, fine));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_open_sessions() {
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
    let mut s = open(srv.probe, &e.token).await.unwrap();
    s.welcome().await;
    s.send(vec![result(1, "home", v1::Target::New)]).await;
    assert_eq!(s.ack().await, 1);

    srv.stop.cancel();
    match s.next().await {
        v1::coordinator_message::Msg::Drain(d) => {
            assert!(d.retry_after_ms > 0);
            assert!(d.reason.contains("shutting down"), "{}", d.reason);
        }
        other => panic!("expected Drain, got {other:?}"),
    }
    // The probe hangs up after a Drain; the server then stops well within its grace period.
    drop(s);
    let started = std::time::Instant::now();
    srv.stop().await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}
