//! `/metrics` after real ingestion: the documented names are there with the
//! fixed label set, no probe id leaks into a label, and `promtool check
//! metrics` accepts the exposition (when promtool is installed).
//!
//! Its own test binary, because the Prometheus recorder is process-wide.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use cutover_coordinator::metrics as m;
use cutover_proto::v1;

fn scrape(addr: SocketAddr) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_string()
}

fn dns_result(seq: u64, class: v1::AnswerClass, ttl: u32) -> v1::CheckResult {
    let mut r = result(seq, "www", v1::Target::Dns);
    r.detail = Some(v1::check_result::Detail::Dns(v1::DnsDetail {
        name: "elm-lang.org".into(),
        answers: vec![v1::ResolverAnswer {
            resolver: "127.0.0.53".into(),
            kind: v1::ResolverKind::System as i32,
            rcode: "NOERROR".into(),
            class: class as i32,
            ttl,
            ..Default::default()
        }],
    }));
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_ingestion() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start_with(dir.path(), true).await;
    let addr = srv.metrics.expect("metrics listener");
    let mut adm = admin(srv.admin, &admin_token(dir.path())).await;
    let e = adm
        .enrol_probe(v1::EnrolProbeRequest {
            region: "asia".into(),
            note: String::new(),
        })
        .await
        .unwrap()
        .into_inner();

    let mut s = open(srv.probe, &e.token).await.unwrap();
    s.welcome().await;
    let mut http = result(1, "home", v1::Target::New);
    http.detail = Some(v1::check_result::Detail::Http(v1::HttpDetail {
        status: 200,
        timings: Some(v1::HttpTimings {
            resolve_us: 1_000,
            connect_us: 2_000,
            tls_us: 5_000,
            first_byte_us: 9_000,
            transfer_us: 3_000,
        }),
        ..Default::default()
    }));
    let mut corrupt = result(2, "home", v1::Target::New);
    corrupt.outcome = v1::Outcome::HardFailure as i32;
    corrupt.failure = v1::FailureKind::HashMismatch as i32;
    corrupt.error = "sha1 mismatch".into();
    s.send(vec![
        http,
        corrupt,
        dns_result(3, v1::AnswerClass::New, 120),
        result(4, "unknown-check", v1::Target::Old),
    ])
    .await;
    assert_eq!(s.ack().await, 4);
    let mut tls = result(5, "home", v1::Target::Old);
    tls.detail = Some(v1::check_result::Detail::Tls(v1::TlsDetail {
        valid: true,
        not_after_unix: 1_900_000_000,
        ..Default::default()
    }));
    s.send(vec![result(4, "home", v1::Target::Old), tls]).await;
    assert_eq!(s.ack().await, 5);
    let _ = open(srv.probe, "cutover_wrong").await;

    // Window gauges refresh once a second.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let text = scrape(addr);

    for name in [
        m::BUILD_INFO,
        m::PROBES_CONNECTED,
        m::PROBE_SESSIONS,
        m::RESULTS_INGESTED,
        m::RESULTS_DUPLICATE,
        m::REJECTED_MESSAGES,
        m::CHECK_DURATION,
        m::HTTP_PHASE_DURATION,
        m::HASH_MISMATCHES,
        m::WINDOW_SAMPLES,
        m::WINDOW_ERROR_RATIO,
        m::WINDOW_PROBES,
        m::WINDOW_LATENCY_P50,
        m::WINDOW_LATENCY_P95,
        m::DNS_ANSWER_SHARE,
        m::DNS_TTL_REMAINING,
        m::STORE_COMMIT_DURATION,
        m::TLS_CERT_EXPIRY,
        m::REGION_LAST_RESULT,
        m::PROBE_VERSIONS,
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "{name} missing from:\n{text}"
        );
    }
    for line in [
        "cutover_probes_connected{region=\"asia\"} 1",
        "cutover_results_duplicate_total 1",
        "cutover_rejected_messages_total{outcome=\"unknown_check\"} 1",
        "cutover_rejected_messages_total{outcome=\"bad_token\"} 1",
        "cutover_hash_mismatches_total{check=\"home\",target=\"new\",region=\"asia\"} 1",
        "cutover_window_samples{check=\"home\",target=\"new\",region=\"asia\"} 2",
        "cutover_window_error_ratio{check=\"home\",target=\"new\",region=\"asia\"} 0.5",
        "cutover_dns_answer_share{check=\"www\",region=\"asia\",outcome=\"new\"} 1",
        "cutover_dns_ttl_remaining_seconds{check=\"www\",region=\"asia\"} 120",
        "cutover_check_duration_seconds_bucket{check=\"home\",target=\"new\",region=\"asia\",le=\"0.025\"} 2",
        "cutover_http_phase_duration_seconds_count{check=\"home\",target=\"new\",region=\"asia\",phase=\"tls\"} 1",
        "cutover_tls_cert_expiry_timestamp_seconds{check=\"home\",target=\"old\",region=\"asia\"} 1900000000",
        "cutover_probe_versions{version=\"0.1.0-test\"} 1",
        "cutover_region_last_result_timestamp_seconds{region=\"asia\"} ",
    ] {
        assert!(text.contains(line), "{line:?} missing from:\n{text}");
    }
    assert!(
        !text.contains(&e.probe_id),
        "a probe id leaked into a label"
    );

    let promtool = std::path::Path::new("/usr/bin/promtool");
    if promtool.exists() {
        let mut child = std::process::Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool check metrics failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        eprintln!("promtool not installed; skipping `promtool check metrics`");
    }
    drop(s);
    srv.stop().await;
}
