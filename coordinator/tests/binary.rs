//! The real `cutover` binary as a process: bound addresses read from its
//! stdout, the operator CLI's output, acked results surviving SIGKILL, and TLS.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::*;
use cutover_proto::v1::{self, probe_message::Msg as In, probe_service_client::ProbeServiceClient};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const BIN: &str = env!("CARGO_BIN_EXE_cutover");

struct Proc {
    child: Child,
    probe: SocketAddr,
    admin: SocketAddr,
}

fn write_config(dir: &Path, tls: bool) -> PathBuf {
    let security = if tls {
        "tls_cert = \"cert.pem\"\ntls_key = \"key.pem\""
    } else {
        "plaintext = true"
    };
    let text = format!(
        r#"[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
{security}

[sites.old]
addresses = ["127.0.0.10"]
[sites.new]
addresses = ["127.0.0.20"]

[[checks]]
id = "home"
kind = "http"
url = "https://elm-lang.org/"
"#
    );
    let path = dir.join("cutover.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Starts `cutover serve` and reads the bound addresses from its stdout.
async fn serve(config: &Path) -> Proc {
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(config)
        .arg("serve")
        .stdout(Stdio::piped())
        // Logs go next to the config, where a failing test's temp dir keeps them.
        .stderr(Stdio::from(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(config.with_file_name("serve.log"))
                .unwrap(),
        ))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut probe, mut admin) = (None, None);
    while probe.is_none() || admin.is_none() {
        let line = tokio::time::timeout(TIMEOUT, lines.next_line())
            .await
            .expect("listening lines in time")
            .unwrap()
            .expect("stdout open");
        let addr = |prefix: &str| {
            line.strip_prefix(prefix)
                .and_then(|rest| rest.split_whitespace().next())
                .map(|a| a.parse::<SocketAddr>().unwrap())
        };
        probe = probe.or(addr("probe service listening on "));
        admin = admin.or(addr("admin service listening on "));
    }
    // Keep draining stdout so the process never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Proc {
        child,
        probe: probe.unwrap(),
        admin: admin.unwrap(),
    }
}

fn signal(child: &Child, sig: &str) {
    let pid = child.id().expect("running");
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

async fn cli(config: &Path, admin: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .arg("--config")
        .arg(config)
        .arg("--admin")
        .arg(admin)
        .args(args)
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_results_survive_sigkill_and_cli_output() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), false);
    let mut p = serve(&config).await;
    let admin_url = format!("http://{}", p.admin);
    let probe_url = format!("http://{}", p.probe);

    let (ok, out, err) = cli(
        &config,
        &admin_url,
        &[
            "probe",
            "enrol",
            "--region",
            "asia",
            "--note",
            "alice",
            "--coordinator-url",
            &probe_url,
        ],
    )
    .await;
    assert!(ok, "{err}");
    let token = out
        .lines()
        .find_map(|l| l.strip_prefix("token: "))
        .expect("token line")
        .to_string();
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("enrolled probe "))
        .and_then(|l| l.split_whitespace().next())
        .expect("id line")
        .to_string();
    assert!(
        out.contains(&format!(
            "  printf '%s\\n' {token} | cutover-probe setup --coordinator {probe_url} --region asia --allow-domain elm-lang.org && cutover-probe\n"
        )),
        "{out}"
    );

    let mut s = open(p.probe, &token).await.unwrap();
    s.welcome().await;
    s.send(
        (1..=20)
            .map(|i| result(i, "home", v1::Target::New))
            .collect(),
    )
    .await;
    assert_eq!(s.ack().await, 20);

    let (ok, out, err) = cli(&config, &admin_url, &["probes"]).await;
    assert!(ok, "{err}");
    let row = out.lines().find(|l| l.starts_with(&id)).expect("probe row");
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        &cols[..4],
        &[id.as_str(), "asia", "0.1.0-test", "yes"],
        "{out}"
    );

    let (ok, out, err) = cli(&config, &admin_url, &["status"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("region asia: 1 probe connected"), "{out}");
    let row = out
        .lines()
        .find(|l| l.trim_start().starts_with("home"))
        .expect("check row");
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cols[..5], &["home", "new", "20", "0.0%", "1"], "{out}");

    // SIGKILL right after the ack: nothing acked may be lost.
    p.child.start_kill().unwrap();
    p.child.wait().await.unwrap();
    drop(s);
    assert_eq!(stored(dir.path(), &id), (1, 20, 20));

    let mut p = serve(&config).await;
    let mut s = open(p.probe, &token).await.unwrap();
    let (w, _) = s.welcome().await;
    assert_eq!(w.stored_seq, 20);

    // SIGHUP reloads the checks and pushes the new assignment to open sessions.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("{text}\n[[checks]]\nid = \"www\"\nkind = \"dns\"\nname = \"elm-lang.org\"\n"),
    )
    .unwrap();
    signal(&p.child, "-HUP");
    match s.next().await {
        v1::coordinator_message::Msg::Assignment(a) => {
            let ids: Vec<&str> = a.checks.iter().map(|c| c.id.as_str()).collect();
            assert_eq!(ids, ["home", "www"]);
        }
        other => panic!("expected a new Assignment, got {other:?}"),
    }
    // Results for the new check are accepted now.
    s.send(vec![result(21, "www", v1::Target::Dns)]).await;
    assert_eq!(s.ack().await, 21);
    assert_eq!(stored(dir.path(), &id), (2, 21, 21));

    // A revoked probe is refused; the CLI says so.
    let admin_url = format!("http://{}", p.admin);
    let (ok, out, _) = cli(&config, &admin_url, &["probe", "revoke", &id]).await;
    assert!(ok);
    assert_eq!(out, format!("revoked probe {id}\n"));
    let (ok, _, err) = cli(&config, &admin_url, &["probe", "revoke", "no-such-probe"]).await;
    assert!(!ok);
    assert!(err.contains("no probe with id"), "{err}");

    // SIGTERM drains and exits 0.
    signal(&p.child, "-TERM");
    let status = tokio::time::timeout(Duration::from_secs(20), p.child.wait())
        .await
        .expect("exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listeners() {
    let dir = tempfile::tempdir().unwrap();
    // A private CA and a leaf for 127.0.0.1, as an operator with an internal CA would have.
    let script = "set -e
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\n' > leaf.ext
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.pem -days 1 -subj /CN=cutover-test-ca
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout key.pem -out leaf.csr -subj /CN=localhost
openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out cert.pem -days 1 -extfile leaf.ext";
    let made = std::process::Command::new("sh")
        .current_dir(dir.path())
        .args(["-c", script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !made.is_ok_and(|s| s.success()) {
        eprintln!("openssl not available; skipping the TLS test");
        return;
    }
    let config = write_config(dir.path(), true);
    let p = serve(&config).await;

    let admin_url = format!("https://{}", p.admin);
    let ca_file = dir.path().join("ca.pem");
    let ca_arg = ca_file.to_str().unwrap();
    let (ok, _, err) = cli(&config, &admin_url, &["status"]).await;
    assert!(!ok, "an unknown CA is not trusted");
    assert!(err.contains("cannot connect to the admin service"), "{err}");
    let (ok, out, err) = cli(
        &config,
        &admin_url,
        &["--ca-file", ca_arg, "probe", "enrol", "--region", "us"],
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("--region us"), "{out}");
    let token = out
        .lines()
        .find_map(|l| l.strip_prefix("token: "))
        .unwrap()
        .to_string();

    // A probe connects with TLS, trusting the test's own root.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = std::fs::read(&ca_file).unwrap();
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{}", p.probe))
        .unwrap()
        .tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(ca)),
        )
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = ProbeServiceClient::with_interceptor(channel, bearer(&token));
    let (tx, rx) = mpsc::channel(4);
    tx.send(v1::ProbeMessage {
        msg: Some(In::Hello(v1::Hello {
            version: "0.1.0".into(),
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    let mut stream = client
        .session(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(TIMEOUT, stream.message())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        first.and_then(|m| m.msg),
        Some(v1::coordinator_message::Msg::Welcome(w)) if w.region == "us"
    ));
}

/// The README's run command: `cutover --example serve` starts on loopback with the
/// embedded config, keeps its data in the working directory, and the operator
/// commands find it with `--example` alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_example_serves_and_answers_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["--example", "serve"])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let line = tokio::time::timeout(TIMEOUT, lines.next_line())
            .await
            .expect("listening lines in time")
            .unwrap()
            .expect("stdout open");
        if line.contains("listening on") {
            seen.push(line);
        }
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    assert!(
        seen[0].starts_with("probe service listening on 127.0.0.1:7443 (plaintext)"),
        "{seen:?}"
    );
    assert!(
        seen[1].starts_with("admin service listening on 127.0.0.1:7444"),
        "{seen:?}"
    );
    assert!(
        seen[2].starts_with("metrics listening on 127.0.0.1:9464"),
        "{seen:?}"
    );
    assert!(dir.path().join("cutover-data/admin.token").exists());

    let run = |args: &'static [&'static str]| {
        let cwd = dir.path().to_path_buf();
        async move {
            let out = Command::new(BIN)
                .arg("--example")
                .args(args)
                .current_dir(cwd)
                .output()
                .await
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success(),
                "cutover --example {args:?} failed: {text}"
            );
            text
        }
    };
    let enrol = run(&["probe", "enrol", "--region", "asia"]).await;
    assert!(
        enrol.contains("| cutover-probe setup --coordinator http://127.0.0.1:7443 --region asia --allow-domain "),
        "{enrol}"
    );
    let probes = run(&["probes"]).await;
    assert!(
        probes.contains("asia") && probes.contains("never"),
        "{probes}"
    );
    let status = run(&["status"]).await;
    assert!(status.contains("window 60s"), "{status}");
    signal(&child, "-TERM");
    let code = tokio::time::timeout(TIMEOUT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(code.success(), "SIGTERM should exit 0, got {code}");
}
