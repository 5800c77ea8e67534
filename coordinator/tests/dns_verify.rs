//! `dns::verify` against small in-process authoritative servers on
//! 127.0.0.1 (UDP and TCP on one port): it polls until every server serves
//! the desired set, gives up at the deadline with what each one served,
//! follows a truncated UDP answer over TCP, and does not take an answer
//! without the AA bit as proof. (The same code against real BIND is in the
//! e2e crate, `tests/tests/dns_providers.rs`.)

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cutover_coordinator::dns::{self, RecordSet, RecordType, VerifyOptions};
use hickory_proto::op::{Message, MessageType, OpCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// What the fake serves on its n-th query (the last entry from then on).
type Script = Vec<(u32, Vec<Ipv4Addr>)>;

struct Fake {
    addr: SocketAddr,
    udp_queries: Arc<AtomicUsize>,
    tcp_queries: Arc<AtomicUsize>,
}

fn answer(
    query: &[u8],
    step: &(u32, Vec<Ipv4Addr>),
    authoritative: bool,
    truncate: bool,
) -> Vec<u8> {
    let q = Message::from_vec(query).unwrap();
    let mut m = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
    m.metadata.authoritative = authoritative;
    m.metadata.recursion_desired = q.metadata.recursion_desired;
    m.metadata.truncation = truncate;
    let name = q.queries[0].name().clone();
    m.add_query(q.queries[0].clone());
    if !truncate {
        for ip in &step.1 {
            m.add_answer(Record::from_rdata(name.clone(), step.0, RData::A(A(*ip))));
        }
    }
    m.to_vec().unwrap()
}

async fn fake(script: Script, authoritative: bool, truncate_udp: bool) -> Fake {
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = udp.local_addr().unwrap();
    let tcp = tokio::net::TcpListener::bind(addr).await.unwrap();
    let script = Arc::new(Mutex::new((script, 0usize)));
    let next = {
        let script = script.clone();
        move || {
            let mut g = script.lock().unwrap();
            let i = g.1.min(g.0.len() - 1);
            g.1 += 1;
            g.0[i].clone()
        }
    };
    let udp_queries = Arc::new(AtomicUsize::new(0));
    let tcp_queries = Arc::new(AtomicUsize::new(0));
    {
        let next = next.clone();
        let count = udp_queries.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((n, from)) = udp.recv_from(&mut buf).await {
                count.fetch_add(1, Ordering::SeqCst);
                // A truncated answer does not consume a step: the TCP retry gets it.
                let step = if truncate_udp { (0, vec![]) } else { next() };
                let reply = answer(&buf[..n], &step, authoritative, truncate_udp);
                let _ = udp.send_to(&reply, from).await;
            }
        });
    }
    {
        let count = tcp_queries.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = tcp.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let step = next();
                tokio::spawn(async move {
                    let mut len = [0u8; 2];
                    s.read_exact(&mut len).await.unwrap();
                    let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
                    s.read_exact(&mut q).await.unwrap();
                    let reply = answer(&q, &step, authoritative, false);
                    let mut out = (reply.len() as u16).to_be_bytes().to_vec();
                    out.extend_from_slice(&reply);
                    s.write_all(&out).await.unwrap();
                });
            }
        });
    }
    Fake {
        addr,
        udp_queries,
        tcp_queries,
    }
}

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, last)
}

fn desired() -> RecordSet {
    RecordSet::new(
        "package.elm.test",
        RecordType::A,
        30,
        &["10.0.0.21", "10.0.0.20"],
    )
    .unwrap()
}

fn quick() -> VerifyOptions {
    VerifyOptions {
        interval: Duration::from_millis(50),
        query_timeout: Duration::from_millis(500),
        ..VerifyOptions::default()
    }
}

#[tokio::test]
async fn verify_polls_until_every_server_serves_the_set() {
    let old = (300, vec![ip(1)]);
    let new = (30, vec![ip(20), ip(21)]);
    // One server has it at once; the other only from its third answer on.
    let fast = fake(vec![new.clone()], true, false).await;
    let slow = fake(vec![old.clone(), old, new], true, false).await;
    let v = dns::verify_with(
        &[fast.addr, slow.addr],
        &desired(),
        Duration::from_secs(10),
        quick(),
    )
    .await;
    assert!(v.agrees_with(&desired()), "{:?}", v.servers);
    assert_eq!(v.rounds, 3);
    assert_eq!(slow.udp_queries.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn verify_gives_up_at_the_deadline_and_says_what_was_served() {
    let stale = fake(vec![(300, vec![ip(1)])], true, false).await;
    let started = Instant::now();
    let v = dns::verify_with(
        &[stale.addr],
        &desired(),
        Duration::from_millis(400),
        quick(),
    )
    .await;
    let took = started.elapsed();
    assert!(!v.agrees_with(&desired()));
    assert!(v.rounds >= 2, "it kept polling: {}", v.rounds);
    assert!(took < Duration::from_secs(3), "{took:?}");
    let d = v.disagreements(&desired(), true);
    assert_eq!(d.len(), 1);
    assert!(
        d[0].contains("10.0.0.1") && d[0].contains(&stale.addr.to_string()),
        "{d:?}"
    );

    // The right values with the wrong TTL: agreement on values only.
    let ttl = fake(vec![(300, vec![ip(20), ip(21)])], true, false).await;
    let v = dns::verify_with(&[ttl.addr], &desired(), Duration::from_millis(200), quick()).await;
    assert!(!v.agrees_with(&desired()) && v.agrees_on_values(&desired()));
    let lenient = VerifyOptions {
        check_ttl: false,
        ..quick()
    };
    let v = dns::verify_with(&[ttl.addr], &desired(), Duration::from_secs(5), lenient).await;
    assert_eq!(
        v.rounds, 1,
        "values agree, so a TTL-blind check stops at once"
    );
}

#[tokio::test]
async fn verify_follows_a_truncated_answer_over_tcp() {
    let big = fake(vec![(30, vec![ip(20), ip(21)])], true, true).await;
    let v = dns::verify_with(&[big.addr], &desired(), Duration::from_secs(5), quick()).await;
    assert!(v.agrees_with(&desired()), "{:?}", v.servers);
    assert_eq!(big.udp_queries.load(Ordering::SeqCst), 1);
    assert_eq!(big.tcp_queries.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn answers_without_authority_are_not_proof() {
    let cache = fake(vec![(30, vec![ip(20), ip(21)])], false, false).await;
    let v = dns::verify_with(
        &[cache.addr],
        &desired(),
        Duration::from_millis(100),
        quick(),
    )
    .await;
    assert!(!v.agrees_with(&desired()));
    let d = v.disagreements(&desired(), true);
    assert!(d[0].contains("not authoritative"), "{d:?}");
}

#[tokio::test]
async fn no_nameservers_never_agree() {
    let v = dns::verify_with(&[], &desired(), Duration::from_millis(100), quick()).await;
    assert!(!v.agrees_with(&desired()));
    assert_eq!(v.disagreements(&desired(), true), ["no nameservers to ask"]);
}
