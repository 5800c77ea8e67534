//! Process-level checks of the `cutover-probe` binary's contract with the
//! volunteer: exit status 2 and an actionable message for a rejected token,
//! exit status 0 on SIGTERM, config errors that name file, line and column,
//! no start without an allowlist, and `setup` storing the token owner-only.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cutover_proto::v1::probe_service_server::{ProbeService, ProbeServiceServer};
use cutover_proto::v1::{CoordinatorMessage, ProbeMessage};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};

const BIN: &str = env!("CARGO_BIN_EXE_cutover-probe");

/// A coordinator that rejects every token.
struct Rejecting;

#[tonic::codegen::async_trait]
impl ProbeService for Rejecting {
    type SessionStream = ReceiverStream<Result<CoordinatorMessage, tonic::Status>>;

    async fn session(
        &self,
        _req: tonic::Request<tonic::Streaming<ProbeMessage>>,
    ) -> Result<tonic::Response<Self::SessionStream>, tonic::Status> {
        Err(tonic::Status::unauthenticated("unknown probe token"))
    }
}

fn probe(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("CUTOVER_COORDINATOR")
        .env_remove("CUTOVER_TOKEN")
        .env_remove("CUTOVER_REGION")
        .env_remove("CUTOVER_PROBE_CONFIG")
        .env_remove("CUTOVER_RESOLVER")
        .env_remove("CUTOVER_CA_FILE")
        .env_remove("CUTOVER_TOKEN_FILE")
        .env_remove("CUTOVER_ALLOW_DOMAINS")
        .env_remove("CUTOVER_ALLOW_ANY_DOMAIN")
        .env_remove("CUTOVER_ALLOW_PRIVATE_ADDRESSES")
        .env_remove("STATE_DIRECTORY")
        // Never the developer's own ~/.local/state/cutover-probe.
        .env("CUTOVER_STATE_DIR", "/nonexistent/cutover-probe-test-state")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

#[tokio::test(flavor = "multi_thread")]
async fn rejected_token_exits_2_with_an_actionable_message() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ProbeServiceServer::new(Rejecting))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let url = format!("http://{addr}");
    let out = tokio::task::spawn_blocking(move || {
        probe(&[
            "--coordinator",
            &url,
            "--token",
            "nope",
            "--region",
            "us",
            "--allow-domain",
            "elm.test",
        ])
        .output()
        .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&addr.to_string()), "{stderr}");
    assert!(stderr.contains("cutover probe enrol"), "{stderr}");
}

#[test]
fn sigterm_exits_0_promptly() {
    // Nothing listens on port 9 of 127.0.0.1: the probe keeps retrying.
    let mut child = probe(&[
        "--coordinator",
        "http://127.0.0.1:9",
        "--token",
        "t",
        "--region",
        "us",
        "--allow-domain",
        "elm.test",
    ])
    .spawn()
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert_eq!(status.code(), Some(0));
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "probe ignored SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn config_file_errors_name_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("probe.toml");
    std::fs::write(
        &path,
        "coordinator = \"https://c.test:7443\"\ntoken = \"t\"\nregoin = \"us\"\n",
    )
    .unwrap();
    let out = probe(&["--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("{}:3:1", path.display())),
        "{stderr}"
    );
    assert!(stderr.contains("regoin"), "{stderr}");
}

#[test]
fn usage_errors_exit_1_because_2_means_rejected_token() {
    let out = probe(&["--no-such-flag"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let out = probe(&["--version"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn missing_settings_are_all_reported() {
    let out = probe(&[]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for needle in ["coordinator", "token", "region", "--allow-domain DOMAIN"] {
        assert!(stderr.contains(needle), "{needle} missing in {stderr}");
    }
}

/// A coordinator on 127.0.0.1 that rejects every token; returns its URL.
async fn rejecting_coordinator() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ProbeServiceServer::new(Rejecting))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread")]
async fn setup_stores_the_pasted_token_owner_only_and_a_bare_run_uses_it() {
    use std::io::Write as _;
    use std::os::unix::fs::PermissionsExt as _;

    let url = rejecting_coordinator().await;
    let root = tempfile::tempdir().unwrap();
    let state = root.path().join("state");
    let state_arg = state.to_str().unwrap().to_owned();
    let setup_url = url.clone();
    let out = tokio::task::spawn_blocking(move || {
        let mut child = probe(&[
            "setup",
            "--coordinator",
            &setup_url,
            "--region",
            "us",
            "--allow-domain",
            "elm.test",
            "--state-dir",
            &state_arg,
        ])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"cutover_pasted\n")
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("only hosts under: elm.test"), "{stdout}");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&state.join("token")), 0o600);
    assert_eq!(mode(&state.join("probe.toml")), 0o600);
    assert_eq!(
        std::fs::read_to_string(state.join("token")).unwrap(),
        "cutover_pasted\n"
    );

    // `cutover-probe --state-dir DIR` alone: coordinator, region, allowlist
    // and token all come from the state directory (the coordinator here
    // rejects the token, which proves it was sent).
    let state_arg = state.to_str().unwrap().to_owned();
    let out =
        tokio::task::spawn_blocking(move || probe(&["--state-dir", &state_arg]).output().unwrap())
            .await
            .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(url.trim_start_matches("http://")),
        "{stderr}"
    );
}

#[test]
fn setup_without_a_token_on_stdin_stores_nothing() {
    let root = tempfile::tempdir().unwrap();
    let state = root.path().join("state");
    let out = probe(&[
        "setup",
        "--coordinator",
        "https://c.test:7443",
        "--region",
        "us",
        "--allow-domain",
        "elm.test",
        "--state-dir",
        state.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no token on stdin"), "{stderr}");
    assert!(!state.exists());
}
