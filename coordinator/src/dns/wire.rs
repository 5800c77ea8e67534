//! DNS messages on the wire, for the RFC 2136 provider and for verification:
//! one exchange over UDP, again over TCP when the answer comes back
//! truncated; a plain query; and the RRset an answer holds.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType as WireType};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpStream, UdpSocket};

use super::{RecordSet, RecordType, fqdn};

/// How long one exchange may take.
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// Why an exchange failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WireError {
    #[error("no answer from {0} within {1:?}")]
    Timeout(SocketAddr, Duration),
    #[error("{0}")]
    Other(String),
}

pub fn wire_type(rtype: RecordType) -> WireType {
    match rtype {
        RecordType::A => WireType::A,
        RecordType::AAAA => WireType::AAAA,
        RecordType::CNAME => WireType::CNAME,
    }
}

/// Sends `msg` (whose ID is bytes 0–1) to `server` and returns the reply
/// with the same ID: over UDP, then over TCP if the reply has TC set.
pub async fn exchange(
    server: SocketAddr,
    msg: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, WireError> {
    let udp = tokio::time::timeout(timeout, exchange_udp(server, msg))
        .await
        .map_err(|_| WireError::Timeout(server, timeout))??;
    if udp.len() > 2 && udp[2] & 0x02 != 0 {
        return tokio::time::timeout(timeout, exchange_tcp(server, msg))
            .await
            .map_err(|_| WireError::Timeout(server, timeout))?;
    }
    Ok(udp)
}

async fn exchange_udp(server: SocketAddr, msg: &[u8]) -> Result<Vec<u8>, WireError> {
    let local: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal address")
    } else {
        "[::]:0".parse().expect("literal address")
    };
    let sock = UdpSocket::bind(local)
        .await
        .map_err(|e| WireError::Other(format!("binding a UDP socket: {e}")))?;
    sock.connect(server)
        .await
        .map_err(|e| WireError::Other(format!("UDP to {server}: {e}")))?;
    sock.send(msg)
        .await
        .map_err(|e| WireError::Other(format!("sending to {server}: {e}")))?;
    let mut buf = vec![0u8; 65_535];
    loop {
        let n = sock
            .recv(&mut buf)
            .await
            .map_err(|e| WireError::Other(format!("receiving from {server}: {e}")))?;
        // A reply to someone else's query (or garbage) is ignored, not trusted.
        if n >= 12 && buf[..2] == msg[..2] {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

async fn exchange_tcp(server: SocketAddr, msg: &[u8]) -> Result<Vec<u8>, WireError> {
    let io = |e: std::io::Error| WireError::Other(format!("TCP to {server}: {e}"));
    let mut s = TcpStream::connect(server).await.map_err(io)?;
    let len = u16::try_from(msg.len())
        .map_err(|_| WireError::Other("message longer than 65535 bytes".into()))?;
    let mut out = Vec::with_capacity(msg.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(msg);
    s.write_all(&out).await.map_err(io)?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len).await.map_err(io)?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut buf).await.map_err(io)?;
    if buf.len() < 12 || buf[..2] != msg[..2] {
        return Err(WireError::Other(format!(
            "{server} answered over TCP with a different ID"
        )));
    }
    Ok(buf)
}

/// Asks `server` for `name`/`rtype`. `recursion_desired` is false when
/// asking an authoritative server about its own zone.
pub async fn query(
    server: SocketAddr,
    name: &str,
    rtype: WireType,
    recursion_desired: bool,
    timeout: Duration,
) -> Result<Message, WireError> {
    let qname = Name::from_ascii(fqdn(name))
        .map_err(|e| WireError::Other(format!("`{name}` is not a domain name: {e}")))?;
    let mut msg = Message::query();
    msg.metadata.recursion_desired = recursion_desired;
    msg.add_query(Query::query(qname, rtype));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    msg.set_edns(edns);
    let bytes = msg
        .to_vec()
        .map_err(|e| WireError::Other(format!("encoding the query: {e}")))?;
    let reply = exchange(server, &bytes, timeout).await?;
    Message::from_vec(&reply)
        .map_err(|e| WireError::Other(format!("{server} sent a malformed answer: {e}")))
}

/// The RRset `name`/`rtype` in the answer section of `msg`; `None` for
/// NXDOMAIN or an empty answer; an error for any other rcode.
pub fn answer_set(
    msg: &Message,
    name: &str,
    rtype: RecordType,
) -> Result<Option<RecordSet>, String> {
    match msg.metadata.response_code {
        ResponseCode::NoError | ResponseCode::NXDomain => {}
        rc => return Err(format!("answered {}", rcode_words(rc))),
    }
    let want = fqdn(name);
    let wtype = wire_type(rtype);
    let mut ttl: Option<u32> = None;
    let mut values = Vec::new();
    for r in &msg.answers {
        if r.record_type() != wtype || fqdn(&r.name.to_ascii()) != want {
            continue;
        }
        let value = match &r.data {
            RData::A(a) => a.0.to_string(),
            RData::AAAA(a) => a.0.to_string(),
            RData::CNAME(c) => fqdn(&c.0.to_ascii()),
            _ => continue,
        };
        ttl = Some(ttl.map_or(r.ttl, |t| t.min(r.ttl)));
        values.push(value);
    }
    values.sort();
    values.dedup();
    Ok(ttl.map(|ttl| RecordSet {
        name: want,
        rtype,
        ttl,
        values,
    }))
}

/// `REFUSED (the server refuses …)` — the mnemonic and what it means.
pub fn rcode_words(rc: ResponseCode) -> String {
    let (name, meaning) = match rc {
        ResponseCode::NoError => ("NOERROR", "no error"),
        ResponseCode::FormErr => ("FORMERR", "the server could not parse the message"),
        ResponseCode::ServFail => ("SERVFAIL", "the server failed internally"),
        ResponseCode::NXDomain => ("NXDOMAIN", "the name does not exist"),
        ResponseCode::NotImp => ("NOTIMP", "the server does not implement this operation"),
        ResponseCode::Refused => (
            "REFUSED",
            "the server refuses this operation (not allowed for this key or client)",
        ),
        ResponseCode::YXDomain => ("YXDOMAIN", "a name that should not exist does"),
        ResponseCode::YXRRSet => ("YXRRSET", "an RRset that should not exist does"),
        ResponseCode::NXRRSet => ("NXRRSET", "an RRset that should exist does not"),
        ResponseCode::NotAuth => (
            "NOTAUTH",
            "the server is not authoritative for the zone, or rejected the TSIG signature",
        ),
        ResponseCode::NotZone => ("NOTZONE", "a name is not within the zone"),
        other => {
            return format!("RCODE {} ({})", u16::from(other), other.to_str());
        }
    };
    format!("{name} ({meaning})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rcodes_in_words() {
        assert!(rcode_words(ResponseCode::NotAuth).starts_with("NOTAUTH ("));
        assert!(rcode_words(ResponseCode::Refused).starts_with("REFUSED ("));
        assert!(rcode_words(ResponseCode::BADCOOKIE).starts_with("RCODE 23"));
    }
}
