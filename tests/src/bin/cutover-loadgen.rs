//! Ingest benchmark: starts a real coordinator (release build, plaintext on
//! loopback), enrols N probes, opens N concurrent `ProbeService.Session`
//! streams over real gRPC and streams result batches as fast as the
//! coordinator acknowledges them. Prints accepted results/s, p50/p99 ack
//! latency and the coordinator's RSS.
//!
//! `ulimit -n 200000; cargo build --release -p cutover-coordinator -p cutover-e2e --bin cutover --bin cutover-loadgen;`
//! `target/release/cutover-loadgen --sessions 1000`
//!
//! Acknowledged results are counted when their Ack arrives inside the measured
//! interval (after warm-up); ack latency is send → Ack of each such batch.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use cutover_proto::v1::{
    self, CheckResult, EnrolProbeRequest, Hello, HttpDetail, HttpTimings, ProbeMessage,
    ResultBatch, admin_service_client::AdminServiceClient, coordinator_message, probe_message,
};
use prost::Message as _;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

#[derive(Parser, Debug)]
#[command(about = "Ingest benchmark for the cutover coordinator")]
struct Args {
    /// Concurrent probe sessions.
    #[arg(long, default_value_t = 1000)]
    sessions: usize,
    /// Results per batch.
    #[arg(long, default_value_t = 200)]
    batch: usize,
    /// Unacknowledged batches each session keeps in flight.
    #[arg(long, default_value_t = 2)]
    inflight: usize,
    /// Measured seconds (after warm-up).
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Warm-up seconds, not counted.
    #[arg(long, default_value_t = 5)]
    warmup: u64,
    /// Sessions sharing one HTTP/2 connection (1 = a connection per probe, as in production).
    #[arg(long, default_value_t = 1)]
    per_connection: usize,
    /// The coordinator binary; default: `cutover` next to this executable.
    #[arg(long)]
    coordinator_bin: Option<PathBuf>,
}

struct Coordinator {
    child: tokio::process::Child,
    probe_addr: String,
    admin_addr: String,
    admin_token: String,
    _dir: tempfile::TempDir,
}

async fn start_coordinator(bin: &Path) -> Result<Coordinator> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("cutover.toml");
    std::fs::write(
        &config,
        r#"[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
metrics_listen = "127.0.0.1:0"
data_dir = "data"
plaintext = true
window = "60s"

[sites.old]
addresses = ["127.0.0.1"]
[sites.new]
addresses = ["127.0.0.2"]

[[checks]]
id = "front-page"
kind = "http"
targets = ["old", "new"]
interval = "1h"
timeout = "10s"
url = "https://bench.invalid/"

[[checks]]
id = "search"
kind = "http"
targets = ["old", "new"]
interval = "1h"
timeout = "10s"
url = "https://bench.invalid/search?q=core"

[[checks]]
id = "docs"
kind = "http"
targets = ["old", "new"]
interval = "1h"
timeout = "10s"
url = "https://bench.invalid/docs"
"#,
    )?;
    let mut child = tokio::process::Command::new(bin)
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn,cutover=info,cutover_coordinator=info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    for out in [
        child
            .stdout
            .take()
            .map(|o| Box::new(o) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        child
            .stderr
            .take()
            .map(|o| Box::new(o) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(out).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = tx.send(line);
            }
        });
    }
    let (mut probe_addr, mut admin_addr) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(30);
    while probe_addr.is_none() || admin_addr.is_none() {
        let line = tokio::time::timeout_at(deadline.into(), rx.recv())
            .await
            .context("coordinator did not report its listening addresses within 30 s")?
            .context("coordinator exited before listening")?;
        if let Some(addr) = address_after(&line, "probe service listening on ") {
            probe_addr = Some(addr);
        } else if let Some(addr) = address_after(&line, "admin service listening on ") {
            admin_addr = Some(addr);
        }
    }
    // Keep draining output so the coordinator never blocks on a full pipe.
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let admin_token = std::fs::read_to_string(dir.path().join("data/admin.token"))
        .context("reading the coordinator's admin token")?
        .trim()
        .to_string();
    Ok(Coordinator {
        child,
        probe_addr: probe_addr.unwrap_or_default(),
        admin_addr: admin_addr.unwrap_or_default(),
        admin_token,
        _dir: dir,
    })
}

/// The `IP:PORT` that follows `marker` in a log line, with any ANSI colouring removed.
fn address_after(line: &str, marker: &str) -> Option<String> {
    let rest = &line[line.find(marker)? + marker.len()..];
    let addr: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']'))
        .collect();
    (!addr.is_empty()).then_some(addr)
}

fn bearer(token: &str) -> Result<MetadataValue<tonic::metadata::Ascii>> {
    Ok(format!("Bearer {token}").parse()?)
}

async fn enrol_all(coord: &Coordinator, n: usize) -> Result<Vec<String>> {
    let channel = Endpoint::from_shared(format!("http://{}", coord.admin_addr))?
        .connect()
        .await?;
    let auth = bearer(&coord.admin_token)?;
    let mut tokens = Vec::with_capacity(n);
    let mut pending = tokio::task::JoinSet::new();
    for i in 0..n {
        let mut client = AdminServiceClient::new(channel.clone());
        let auth = auth.clone();
        pending.spawn(async move {
            let mut req = tonic::Request::new(EnrolProbeRequest {
                region: ["asia", "australia", "us"][i % 3].to_string(),
                note: format!("loadgen {i}"),
            });
            req.metadata_mut().insert("authorization", auth);
            client.enrol_probe(req).await.map(|r| r.into_inner().token)
        });
        if pending.len() >= 64
            && let Some(res) = pending.join_next().await
        {
            tokens.push(res??);
        }
    }
    while let Some(res) = pending.join_next().await {
        tokens.push(res??);
    }
    Ok(tokens)
}

struct Stats {
    /// Results acknowledged while `measuring` (whenever they were sent).
    acked_results: AtomicU64,
    /// Sessions that got Welcome and Assignment.
    ready: AtomicU64,
    measuring: AtomicBool,
    stop: AtomicBool,
}

/// An already encoded `ProbeMessage`: the load generator encodes each batch
/// once, straight from a per-session template, so its own CPU use stays small
/// next to the coordinator's (they share the machine).
#[derive(Clone, Debug, Default)]
struct Encoded(bytes::Bytes);

impl prost::Message for Encoded {
    fn encode_raw(&self, buf: &mut impl bytes::BufMut) {
        buf.put_slice(&self.0);
    }
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> std::result::Result<(), prost::DecodeError> {
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }
    fn encoded_len(&self) -> usize {
        self.0.len()
    }
    fn clear(&mut self) {
        self.0 = bytes::Bytes::new();
    }
}

fn encode(msg: probe_message::Msg) -> Encoded {
    Encoded(ProbeMessage { msg: Some(msg) }.encode_to_vec().into())
}

/// A realistic HTTP result (2 % failures), varied over the assigned checks and both targets.
fn template(check_ids: &[String], n: usize) -> ResultBatch {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default();
    let results = (0..n)
        .map(|i| {
            let fail = fastrand::u8(..100) < 2;
            CheckResult {
                seq: 0,
                check_id: check_ids[(i / 2) % check_ids.len()].clone(),
                target: if i % 2 == 0 {
                    v1::Target::Old
                } else {
                    v1::Target::New
                } as i32,
                started_unix_ms: now_ms,
                duration_us: 20_000 + fastrand::u64(..30_000),
                outcome: if fail {
                    v1::Outcome::Failure
                } else {
                    v1::Outcome::Success
                } as i32,
                failure: if fail {
                    v1::FailureKind::HttpStatus
                } else {
                    v1::FailureKind::Unspecified
                } as i32,
                error: if fail {
                    "status 502".to_string()
                } else {
                    String::new()
                },
                config_version: 0,
                detail: Some(v1::check_result::Detail::Http(HttpDetail {
                    status: if fail { 502 } else { 200 },
                    timings: Some(HttpTimings {
                        resolve_us: 900,
                        connect_us: 4_000,
                        tls_us: 9_000,
                        first_byte_us: 15_000,
                        transfer_us: 1_000,
                    }),
                    body_bytes: 5_120,
                    remote_addr: String::new(),
                    content_sha256: String::new(),
                })),
            }
        })
        .collect();
    ResultBatch { results }
}

/// Numbers the template's results after `next_seq`, refreshes their start time, encodes it.
fn next_batch(template: &mut ResultBatch, next_seq: &mut u64) -> Encoded {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default();
    for r in &mut template.results {
        *next_seq += 1;
        r.seq = *next_seq;
        r.started_unix_ms = now_ms - 50;
    }
    let batch = std::mem::take(template);
    let msg = ProbeMessage {
        msg: Some(probe_message::Msg::Results(batch)),
    };
    let bytes = msg.encode_to_vec();
    if let Some(probe_message::Msg::Results(batch)) = msg.msg {
        *template = batch;
    }
    Encoded(bytes.into())
}

async fn run_session(
    channel: Channel,
    token: String,
    args: Arc<Args>,
    stats: Arc<Stats>,
) -> Result<Vec<u32>> {
    let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(16 << 20);
    let (tx, rx) = mpsc::channel::<Encoded>(args.inflight + 2);
    tx.send(encode(probe_message::Msg::Hello(Hello {
        region: String::new(),
        version: "loadgen".into(),
        capabilities: vec!["http".into()],
        clock_unix_ms: 0,
        last_produced_seq: 0,
    })))
    .await?;
    let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    req.metadata_mut().insert("authorization", bearer(&token)?);
    grpc.ready()
        .await
        .map_err(|e| anyhow::anyhow!("channel not ready: {e}"))?;
    let codec = tonic_prost::ProstCodec::<Encoded, v1::CoordinatorMessage>::default();
    let path = http::uri::PathAndQuery::from_static("/cutover.v1.ProbeService/Session");
    let mut inbound = grpc.streaming(req, path, codec).await?.into_inner();
    let mut next_seq = 0u64;
    let mut checks: Option<Vec<String>> = None;
    let mut max_batch = args.batch;
    while checks.is_none() {
        match inbound.message().await?.and_then(|m| m.msg) {
            Some(coordinator_message::Msg::Welcome(w)) => {
                next_seq = w.stored_seq;
                if w.max_batch_results > 0 {
                    max_batch = max_batch.min(w.max_batch_results as usize);
                }
            }
            Some(coordinator_message::Msg::Assignment(a)) => {
                if a.checks.is_empty() {
                    bail!("assignment has no checks");
                }
                checks = Some(a.checks.iter().map(|c| c.id.clone()).collect());
            }
            Some(_) => {}
            None => bail!("session closed before the assignment"),
        }
    }
    stats.ready.fetch_add(1, Ordering::Relaxed);
    let mut template = template(&checks.unwrap_or_default(), max_batch);
    // (last seq of the batch, when it was sent)
    let mut in_flight: VecDeque<(u64, Instant)> = VecDeque::new();
    let mut latencies_us = Vec::new();
    loop {
        while in_flight.len() < args.inflight && !stats.stop.load(Ordering::Relaxed) {
            let batch = next_batch(&mut template, &mut next_seq);
            in_flight.push_back((next_seq, Instant::now()));
            tx.send(batch).await?;
        }
        if in_flight.is_empty() {
            return Ok(latencies_us);
        }
        let Some(msg) = inbound.message().await? else {
            bail!("session closed by the coordinator")
        };
        if let Some(coordinator_message::Msg::Ack(ack)) = msg.msg {
            let measuring = stats.measuring.load(Ordering::Relaxed);
            while let Some(&(last, sent)) = in_flight.front() {
                if last > ack.seq {
                    break;
                }
                in_flight.pop_front();
                // Every result of this batch is now stored: it counts if the Ack
                // arrived inside the measured interval.
                if measuring {
                    latencies_us.push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    stats
                        .acked_results
                        .fetch_add(max_batch as u64, Ordering::Relaxed);
                }
            }
        }
    }
}

/// utime + stime of a process, in clock ticks (`/proc/PID/stat` fields 14 and 15).
fn cpu_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After "pid (comm) ", field 3 (state) is f[0], so field 14 is f[11].
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Busy and total ticks of the whole machine (`/proc/stat`, first line).
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4)?;
    Some((total - idle, total))
}

fn rss_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn quantile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[idx] as f64 / 1000.0
}

/// Linux reports process CPU time in USER_HZ ticks, 100 per second on every
/// architecture the coordinator targets.
const TICKS_PER_S: f64 = 100.0;

#[tokio::main]
async fn main() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Arc::new(Args::parse());
    let bin = match &args.coordinator_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("executable has no directory")?
            .join("cutover"),
    };
    let mut coord = start_coordinator(&bin).await?;
    let pid = coord.child.id().context("coordinator has no pid")?;
    let t = Instant::now();
    let tokens = enrol_all(&coord, args.sessions).await?;
    eprintln!(
        "enrolled {} probes in {:.1} s",
        tokens.len(),
        t.elapsed().as_secs_f64()
    );

    let stats = Arc::new(Stats {
        acked_results: AtomicU64::new(0),
        ready: AtomicU64::new(0),
        measuring: AtomicBool::new(false),
        stop: AtomicBool::new(false),
    });
    let endpoint = Endpoint::from_shared(format!("http://{}", coord.probe_addr))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(30));
    let t = Instant::now();
    let mut sessions = tokio::task::JoinSet::new();
    let mut channel = None;
    for (i, token) in tokens.into_iter().enumerate() {
        if i % args.per_connection.max(1) == 0 {
            channel = Some(
                endpoint
                    .connect()
                    .await
                    .context("connecting to the coordinator")?,
            );
        }
        let Some(ch) = channel.clone() else { continue };
        sessions.spawn(run_session(ch, token, args.clone(), stats.clone()));
    }
    // Warm-up starts once every session has its assignment (and is streaming).
    while stats.ready.load(Ordering::Relaxed) < args.sessions as u64 {
        if sessions.len() < args.sessions
            && let Some(res) = sessions.join_next().await
        {
            match res {
                Ok(Err(e)) => bail!("a session failed before streaming: {e:#}"),
                _ => bail!("a session ended before every session was streaming"),
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "{} sessions streaming after {:.1} s; warming up {} s",
        args.sessions,
        t.elapsed().as_secs_f64(),
        args.warmup
    );
    tokio::time::sleep(Duration::from_secs(args.warmup)).await;
    let pid_s = pid.to_string();
    let rss_before = rss_kib(pid, "VmRSS:").unwrap_or(0);
    let (coord_cpu0, self_cpu0, machine0) = (
        cpu_ticks(&pid_s).unwrap_or(0),
        cpu_ticks("self").unwrap_or(0),
        machine_ticks().unwrap_or((0, 0)),
    );
    stats.measuring.store(true, Ordering::Relaxed);
    let start = Instant::now();
    let mut peak_rss = rss_before;
    while start.elapsed() < Duration::from_secs(args.seconds) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        peak_rss = peak_rss.max(rss_kib(pid, "VmRSS:").unwrap_or(0));
    }
    stats.measuring.store(false, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    let acked = stats.acked_results.load(Ordering::Relaxed);
    let (coord_cpu1, self_cpu1, machine1) = (
        cpu_ticks(&pid_s).unwrap_or(0),
        cpu_ticks("self").unwrap_or(0),
        machine_ticks().unwrap_or((0, 0)),
    );
    let rss_end = rss_kib(pid, "VmRSS:").unwrap_or(0);
    stats.stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    let mut failed = 0;
    while let Some(res) = sessions.join_next().await {
        match res {
            Ok(Ok(l)) => latencies.extend(l),
            Ok(Err(e)) => {
                failed += 1;
                if failed <= 3 {
                    eprintln!("session failed: {e:#}");
                }
            }
            Err(e) => bail!("session task panicked: {e}"),
        }
    }
    latencies.sort_unstable();
    let cores = |ticks: u64| ticks as f64 / TICKS_PER_S / elapsed;
    let machine_busy = {
        let busy = machine1.0.saturating_sub(machine0.0) as f64;
        let total = machine1.1.saturating_sub(machine0.1).max(1) as f64;
        busy / total
    };
    println!(
        "sessions={} batch={} inflight={} per_connection={} seconds={:.1}",
        args.sessions, args.batch, args.inflight, args.per_connection, elapsed
    );
    println!(
        "accepted_results_per_s={:.0} ack_p50_ms={:.1} ack_p99_ms={:.1} acks={} failed_sessions={}",
        acked as f64 / elapsed,
        quantile(&latencies, 0.50),
        quantile(&latencies, 0.99),
        latencies.len(),
        failed
    );
    println!(
        "coordinator_rss_mib={:.1} coordinator_peak_rss_mib={:.1}",
        rss_end as f64 / 1024.0,
        rss_kib(pid, "VmHWM:").unwrap_or(peak_rss) as f64 / 1024.0
    );
    println!(
        "cpu_cores coordinator={:.2} loadgen={:.2} machine_busy={:.0}% (of {} cores)",
        cores(coord_cpu1.saturating_sub(coord_cpu0)),
        cores(self_cpu1.saturating_sub(self_cpu0)),
        machine_busy * 100.0,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    coord.child.kill().await.ok();
    Ok(())
}
