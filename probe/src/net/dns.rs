//! Raw DNS queries: one message out, one message back, over UDP with a TCP retry
//! when the answer is truncated. Unlike a stub resolver this shows the rcode,
//! the remaining TTL and the flags exactly as the server sent them.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::{Name, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// Why a query got no usable response.
#[derive(Debug, thiserror::Error)]
pub enum DnsQueryError {
    #[error("query {name} {rtype} to {server}: no response within {timeout:?}")]
    Timeout {
        name: String,
        rtype: RecordType,
        server: SocketAddr,
        timeout: Duration,
    },
    #[error("query {name} {rtype} to {server}: {source}")]
    Io {
        name: String,
        rtype: RecordType,
        server: SocketAddr,
        source: std::io::Error,
    },
    #[error("query {name} {rtype} to {server}: malformed message: {message}")]
    Malformed {
        name: String,
        rtype: RecordType,
        server: SocketAddr,
        message: String,
    },
}

/// A response and how long it took.
#[derive(Debug, Clone)]
pub struct DnsResponse {
    pub message: Message,
    pub latency: Duration,
    /// Whether the answer came over TCP after a truncated UDP answer.
    pub via_tcp: bool,
}

/// The conventional rcode mnemonic ("NOERROR", "NXDOMAIN", …) of a response.
pub fn rcode_name(message: &Message) -> String {
    let code: u16 = message.metadata.response_code.into();
    match code {
        0 => "NOERROR".into(),
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        3 => "NXDOMAIN".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        6 => "YXDOMAIN".into(),
        7 => "YXRRSET".into(),
        8 => "NXRRSET".into(),
        9 => "NOTAUTH".into(),
        10 => "NOTZONE".into(),
        n => format!("RCODE{n}"),
    }
}

/// Parses a name, making it absolute.
pub fn absolute_name(name: &str) -> Result<Name, String> {
    let mut n = Name::from_ascii(name).map_err(|e| format!("invalid DNS name {name:?}: {e}"))?;
    n.set_fqdn(true);
    Ok(n)
}

/// Sends one query for `name`/`rtype` to `server`, with RD set to `recursion`.
pub async fn query(
    server: SocketAddr,
    name: &Name,
    rtype: RecordType,
    recursion: bool,
    timeout: Duration,
) -> Result<DnsResponse, DnsQueryError> {
    let io_err = |source| DnsQueryError::Io {
        name: name.to_string(),
        rtype,
        server,
        source,
    };
    let mut msg = Message::query();
    msg.add_query(Query::query(name.clone(), rtype));
    msg.metadata.recursion_desired = recursion;
    let mut edns = Edns::new();
    // 1232 bytes: the DNS flag day 2020 size that avoids IP fragmentation.
    edns.set_max_payload(1232);
    msg.set_edns(edns);
    let id = msg.metadata.id;
    let wire = msg.to_vec().map_err(|e| DnsQueryError::Malformed {
        name: name.to_string(),
        rtype,
        server,
        message: e.to_string(),
    })?;

    let started = Instant::now();
    let deadline = started + timeout;
    let timed_out = || DnsQueryError::Timeout {
        name: name.to_string(),
        rtype,
        server,
        timeout,
    };
    let udp = tokio::time::timeout_at(deadline.into(), udp_exchange(server, &wire, id))
        .await
        .map_err(|_| timed_out())?
        .map_err(io_err)?;
    let mut response = decode(&udp, name, rtype, server)?;
    let mut via_tcp = false;
    if response.metadata.truncation {
        let tcp = tokio::time::timeout_at(deadline.into(), tcp_exchange(server, &wire))
            .await
            .map_err(|_| timed_out())?
            .map_err(io_err)?;
        response = decode(&tcp, name, rtype, server)?;
        via_tcp = true;
    }
    Ok(DnsResponse {
        message: response,
        latency: started.elapsed(),
        via_tcp,
    })
}

fn decode(
    bytes: &[u8],
    name: &Name,
    rtype: RecordType,
    server: SocketAddr,
) -> Result<Message, DnsQueryError> {
    Message::from_vec(bytes).map_err(|e| DnsQueryError::Malformed {
        name: name.to_string(),
        rtype,
        server,
        message: e.to_string(),
    })
}

async fn udp_exchange(server: SocketAddr, wire: &[u8], id: u16) -> std::io::Result<Vec<u8>> {
    let bind: SocketAddr = if server.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(bind).await?;
    sock.connect(server).await?;
    sock.send(wire).await?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = sock.recv(&mut buf).await?;
        // Ignore stray datagrams (e.g. a late answer to an earlier query):
        // only our id is our answer.
        if n >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == id {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

async fn tcp_exchange(server: SocketAddr, wire: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(server).await?;
    let len = u16::try_from(wire.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "query too long"))?;
    let mut out = Vec::with_capacity(wire.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(wire);
    stream.write_all(&out).await?;
    let len = stream.read_u16().await?;
    let mut buf = vec![0u8; usize::from(len)];
    stream.read_exact(&mut buf).await?;
    Ok(buf)
}
