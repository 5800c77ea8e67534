//! Ingest throughput benchmark: many simulated probes stream result batches
//! over real 127.0.0.1 sockets to an in-process coordinator; prints results
//! per second and Ack latency (send → Ack, which includes the SQLite commit).
//!
//! `cargo run --release -p cutover-coordinator --example ingest_bench -- [PROBES] [BATCHES] [RESULTS_PER_BATCH]`

use std::time::{Duration, Instant};

use cutover_coordinator::{config, server};
use cutover_proto::v1::{
    self, admin_service_client::AdminServiceClient, coordinator_message::Msg as Out,
    probe_message::Msg as In, probe_service_client::ProbeServiceClient,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Request;

type Intercept = Box<dyn FnMut(Request<()>) -> Result<Request<()>, tonic::Status> + Send>;

fn bearer(token: &str) -> Intercept {
    let v: tonic::metadata::MetadataValue<_> =
        format!("Bearer {token}").parse().expect("ascii token");
    Box::new(move |mut r: Request<()>| {
        r.metadata_mut().insert("authorization", v.clone());
        Ok(r)
    })
}

fn arg(i: usize, default: u64) -> u64 {
    std::env::args()
        .nth(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (probes, batches, per_batch) = (arg(1, 200), arg(2, 50), arg(3, 20));
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("cutover.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nplaintext = true\n\
         [sites.old]\naddresses = [\"127.0.0.10\"]\n[sites.new]\naddresses = [\"127.0.0.20\"]\n\
         [[checks]]\nid = \"home\"\nkind = \"http\"\nurl = \"https://elm-lang.org/\"\n",
    )?;
    let bound = server::bind_all(config::load(&path)?, false).await?;
    let (probe_addr, admin_addr) = (bound.probe_addr, bound.admin_addr);
    let stop = CancellationToken::new();
    let task = tokio::spawn(bound.run(stop.clone()));
    let token = std::fs::read_to_string(dir.path().join("data/admin.token"))?;
    let admin_channel = tonic::transport::Endpoint::from_shared(format!("http://{admin_addr}"))?
        .connect()
        .await?;
    let mut admin = AdminServiceClient::with_interceptor(admin_channel, bearer(token.trim()));

    let mut tokens = Vec::new();
    for i in 0..probes {
        let e = admin
            .enrol_probe(v1::EnrolProbeRequest {
                region: ["asia", "australia", "us", "eu"][i as usize % 4].into(),
                note: String::new(),
            })
            .await?
            .into_inner();
        tokens.push(e.token);
    }

    let started = Instant::now();
    let mut handles = Vec::new();
    for token in tokens {
        handles.push(tokio::spawn(async move {
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{probe_addr}"))?
                .connect()
                .await?;
            let mut client = ProbeServiceClient::with_interceptor(channel, bearer(&token));
            let (tx, rx) = mpsc::channel(4);
            tx.send(v1::ProbeMessage {
                msg: Some(In::Hello(v1::Hello::default())),
            })
            .await?;
            let mut inbound = client.session(ReceiverStream::new(rx)).await?.into_inner();
            let mut latencies = Vec::new();
            let mut seq = 0;
            for _ in 0..batches {
                let results = (0..per_batch)
                    .map(|_| {
                        seq += 1;
                        v1::CheckResult {
                            seq,
                            check_id: "home".into(),
                            target: v1::Target::New as i32,
                            outcome: v1::Outcome::Success as i32,
                            duration_us: 20_000,
                            ..Default::default()
                        }
                    })
                    .collect();
                let sent = Instant::now();
                tx.send(v1::ProbeMessage {
                    msg: Some(In::Results(v1::ResultBatch { results })),
                })
                .await?;
                loop {
                    match inbound.message().await?.and_then(|m| m.msg) {
                        Some(Out::Ack(a)) if a.seq == seq => break,
                        Some(_) => {}
                        None => anyhow::bail!("stream ended"),
                    }
                }
                latencies.push(sent.elapsed());
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let mut latencies: Vec<Duration> = Vec::new();
    for h in handles {
        latencies.extend(h.await??);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let q = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    let total = probes * batches * per_batch;
    println!(
        "{probes} probes x {batches} batches x {per_batch} results = {total} results in {:.2}s: {:.0} results/s, {:.0} batches/s",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        (probes * batches) as f64 / elapsed.as_secs_f64()
    );
    println!(
        "ack latency (send → committed → Ack): p50 {:?}, p95 {:?}, p99 {:?}, max {:?}",
        q(0.5),
        q(0.95),
        q(0.99),
        latencies.last().copied().unwrap_or_default()
    );
    stop.cancel();
    task.await??;
    Ok(())
}
