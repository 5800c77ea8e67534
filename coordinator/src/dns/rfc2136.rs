//! RFC 2136 dynamic updates (BIND, Knot, PowerDNS): one UPDATE message that
//! deletes the RRset and adds the desired one — no prerequisites, so sending
//! it twice gives the same zone — signed with TSIG, and the server's signed
//! reply checked. `read` is a plain query to the same server.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hickory_proto::op::{Message, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType as WireType};

use super::retry::{RetryPolicy, retry};
use super::secret::base64_decode;
use super::tsig::{Algorithm, Key, TsigFailure};
use super::wire::{self, WireError, answer_set, rcode_words, wire_type};
use super::{
    BoxFuture, DnsProvider, ProviderError, RecordSet, RecordType, Rfc2136Spec, check_in_zone, fqdn,
};

const PROVIDER: &str = "rfc2136";

pub struct Rfc2136 {
    server: SocketAddr,
    zone: String,
    key: Key,
    timeout: Duration,
    retry: RetryPolicy,
}

impl fmt::Debug for Rfc2136 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rfc2136")
            .field("server", &self.server)
            .field("zone", &self.zone)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// `ip`, `ip:port` or `[v6]:port`; port 53 when left out.
pub fn parse_server(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Ok(sa);
    }
    s.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| format!("dns.rfc2136.server `{s}` is not an IP address with an optional port"))
}

impl Rfc2136 {
    pub fn from_spec(spec: &Rfc2136Spec, zone: &str, base: &Path) -> Result<Self, String> {
        let server = parse_server(&spec.server)?;
        let algorithm =
            Algorithm::from_name(spec.tsig_algorithm.as_deref().unwrap_or("hmac-sha256"))
                .map_err(|e| format!("dns.rfc2136.tsig_algorithm: {e}"))?;
        let secret = spec.tsig_secret.read("dns.rfc2136.tsig_secret", base)?;
        let secret = base64_decode(&secret).map_err(|e| {
            format!("dns.rfc2136.tsig_secret: {e} (expected the key's base64 secret)")
        })?;
        let key = Key::new(&spec.tsig_key_name, algorithm, &secret)
            .map_err(|e| format!("dns.rfc2136: {e}"))?;
        Ok(Self::new(server, zone, key))
    }

    pub fn new(server: SocketAddr, zone: &str, key: Key) -> Self {
        Rfc2136 {
            server,
            zone: fqdn(zone),
            key,
            timeout: wire::TIMEOUT,
            retry: RetryPolicy::default(),
        }
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The UPDATE message (unsigned): zone section, then in the update
    /// section "delete the RRset" followed by one "add" per value.
    pub fn update_message(&self, desired: &RecordSet) -> Result<Message, String> {
        let zone = Name::from_ascii(&self.zone).map_err(|e| format!("zone {}: {e}", self.zone))?;
        let name =
            Name::from_ascii(&desired.name).map_err(|e| format!("name {}: {e}", desired.name))?;
        let rtype = wire_type(desired.rtype);
        let mut msg = Message::query();
        msg.metadata.op_code = OpCode::Update;
        msg.metadata.recursion_desired = false;
        let mut zq = Query::query(zone, WireType::SOA);
        zq.set_query_class(DNSClass::IN);
        msg.add_query(zq);
        // Delete the RRset: class ANY, TTL 0, empty RDATA (RFC 2136 §2.5.2).
        let mut delete = Record::update0(name.clone(), 0, rtype);
        delete.dns_class = DNSClass::ANY;
        msg.add_authority(delete);
        for v in &desired.values {
            let data = match desired.rtype {
                RecordType::A => RData::A(A(v.parse().map_err(|e| format!("{v}: {e}"))?)),
                RecordType::AAAA => RData::AAAA(AAAA(v.parse().map_err(|e| format!("{v}: {e}"))?)),
                RecordType::CNAME => {
                    RData::CNAME(CNAME(Name::from_ascii(v).map_err(|e| format!("{v}: {e}"))?))
                }
            };
            msg.add_authority(Record::from_rdata(name.clone(), desired.ttl, data));
        }
        Ok(msg)
    }

    async fn send_update(&self, desired: &RecordSet) -> Result<(), ProviderError> {
        let msg = self
            .update_message(desired)
            .map_err(|e| ProviderError::fatal(PROVIDER, e))?;
        let bytes = msg
            .to_vec()
            .map_err(|e| ProviderError::fatal(PROVIDER, format!("encoding the UPDATE: {e}")))?;
        let (signed, request_mac) = self
            .key
            .sign(&bytes, unix_now())
            .map_err(|e| ProviderError::fatal(PROVIDER, e))?;
        let reply = wire::exchange(self.server, &signed, self.timeout)
            .await
            .map_err(|e| wire_error(&e, "UPDATE"))?;
        let parsed = Message::from_vec(&reply).map_err(|e| {
            ProviderError::fatal(
                PROVIDER,
                format!("{} sent a malformed reply: {e}", self.server),
            )
        })?;
        let rcode = parsed.metadata.response_code;
        let tsig = self.key.verify_response(&reply, &request_mac, unix_now());
        let key = format!("{} ({})", self.key.name(), self.key.algorithm().name());
        match (rcode, tsig) {
            (ResponseCode::NoError, Ok(())) => Ok(()),
            (ResponseCode::NoError, Err(e)) => Err(ProviderError::fatal(
                PROVIDER,
                format!(
                    "{} accepted the UPDATE for {} but its reply failed the TSIG check with key {key}: {e}",
                    self.server, desired.name
                ),
            )),
            (rc, Err(TsigFailure::Rejected(code))) => Err(ProviderError::fatal(
                PROVIDER,
                format!(
                    "{} refused the UPDATE for {}: {}; TSIG error {} — check the key name and secret of {key}",
                    self.server,
                    desired.name,
                    rcode_words(rc),
                    super::tsig::tsig_error_words(code)
                ),
            )),
            (rc, _) => {
                let e = format!(
                    "{} refused the UPDATE for {} (zone {}, key {key}): {}",
                    self.server,
                    desired.name,
                    self.zone,
                    rcode_words(rc)
                );
                Err(if rc == ResponseCode::ServFail {
                    ProviderError::transient(PROVIDER, e)
                } else {
                    ProviderError::fatal(PROVIDER, e)
                })
            }
        }
    }
}

fn wire_error(e: &WireError, what: &str) -> ProviderError {
    // Resending the same UPDATE is harmless: it is idempotent.
    ProviderError::transient(PROVIDER, format!("{what}: {e}"))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl DnsProvider for Rfc2136 {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    fn read<'a>(
        &'a self,
        name: &'a str,
        rtype: RecordType,
    ) -> BoxFuture<'a, Result<Option<RecordSet>, ProviderError>> {
        Box::pin(async move {
            retry(self.retry, "query", || async {
                let msg = wire::query(self.server, name, wire_type(rtype), false, self.timeout)
                    .await
                    .map_err(|e| wire_error(&e, "query"))?;
                answer_set(&msg, name, rtype).map_err(|e| {
                    ProviderError::transient(
                        PROVIDER,
                        format!("{} {e} for {name} {rtype}", self.server),
                    )
                })
            })
            .await
        })
    }

    fn apply<'a>(&'a self, desired: &'a RecordSet) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            check_in_zone(PROVIDER, &self.zone, &desired.name)?;
            retry(self.retry, "UPDATE", || self.send_update(desired)).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_parse_with_a_default_port() {
        assert_eq!(
            parse_server("127.0.0.1").unwrap(),
            "127.0.0.1:53".parse().unwrap()
        );
        assert_eq!(
            parse_server("127.0.0.1:5353").unwrap(),
            "127.0.0.1:5353".parse().unwrap()
        );
        assert_eq!(
            parse_server("[::1]:53").unwrap(),
            "[::1]:53".parse().unwrap()
        );
        assert_eq!(parse_server("::1").unwrap(), "[::1]:53".parse().unwrap());
        assert!(parse_server("ns.example").is_err());
    }

    #[test]
    fn the_update_deletes_the_rrset_then_adds_each_value() {
        let key = Key::new("k", Algorithm::HmacSha256, b"x").unwrap();
        let p = Rfc2136::new("127.0.0.1:53".parse().unwrap(), "elm.test", key);
        let rs = RecordSet::new(
            "package.elm.test",
            RecordType::A,
            30,
            &["10.0.0.2", "10.0.0.1"],
        )
        .unwrap();
        let msg = p.update_message(&rs).unwrap();
        assert_eq!(msg.metadata.op_code, OpCode::Update);
        assert_eq!(msg.queries.len(), 1);
        assert_eq!(msg.queries[0].name().to_ascii(), "elm.test.");
        assert_eq!(msg.queries[0].query_type(), WireType::SOA);
        assert!(msg.answers.is_empty(), "no prerequisites");
        let up = &msg.authorities;
        assert_eq!(up.len(), 3);
        assert_eq!(up[0].dns_class, DNSClass::ANY);
        assert_eq!(up[0].ttl, 0);
        assert_eq!(up[0].record_type(), WireType::A);
        assert!(matches!(up[0].data, RData::Update0(WireType::A)));
        for (r, ip) in up[1..].iter().zip(["10.0.0.1", "10.0.0.2"]) {
            assert_eq!(r.dns_class, DNSClass::IN);
            assert_eq!(r.ttl, 30);
            assert_eq!(r.data, RData::A(A(ip.parse().unwrap())));
        }
        // It survives the wire.
        let back = Message::from_vec(&msg.to_vec().unwrap()).unwrap();
        assert_eq!(back.authorities.len(), 3);
    }
}
