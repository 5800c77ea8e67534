//! A small authoritative DNS server for one zone, on loopback: answers
//! queries (RD ignored, AA set) and applies RFC 2136 UPDATEs signed with TSIG
//! (checked with [`crate::dns::tsig`]), so the engine's `rfc2136` provider and
//! read-after-write verification run their real code paths against it.
//!
//! Supported UPDATE operations (RFC 2136 §2.5): add an RR, delete an RRset,
//! delete all RRsets of a name, delete one RR. Prerequisites are refused
//! (NOTIMP): the provider does not send them.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{NS, SOA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use super::serve::{BoxFuture, Handler, Listener};
use crate::dns::tsig::Key;

/// One RRset: its TTL and values.
#[derive(Debug, Clone, PartialEq)]
pub struct RrSet {
    pub ttl: u32,
    pub values: Vec<RData>,
}

/// The zone's data: RRsets keyed by lowercase owner name and type.
#[derive(Debug)]
pub struct Zone {
    origin: Name,
    sets: BTreeMap<(Name, RecordType), RrSet>,
    /// Applied UPDATEs, for the demo's summary.
    updates: u64,
}

impl Zone {
    /// A zone with SOA (serial 1, negative TTL `ttl`) and one NS record
    /// `ns.<origin>`.
    pub fn new(origin: &str, ttl: u32) -> Result<Self, String> {
        let origin = parse_name(origin)?;
        let ns = Name::from_ascii("ns")
            .and_then(|n| n.append_domain(&origin))
            .map_err(|e| e.to_string())?;
        let hostmaster = Name::from_ascii("hostmaster")
            .and_then(|n| n.append_domain(&origin))
            .map_err(|e| e.to_string())?;
        let mut zone = Zone {
            origin: origin.clone(),
            sets: BTreeMap::new(),
            updates: 0,
        };
        let soa = SOA::new(ns.clone(), hostmaster, 1, 3600, 600, 86_400, ttl);
        zone.put(&origin, RecordType::SOA, ttl, vec![RData::SOA(soa)]);
        zone.put(&origin, RecordType::NS, ttl, vec![RData::NS(NS(ns))]);
        Ok(zone)
    }

    pub fn origin(&self) -> &Name {
        &self.origin
    }

    /// Replaces the RRset `name`/`rtype` (empty `values`: deletes it).
    pub fn put(&mut self, name: &Name, rtype: RecordType, ttl: u32, values: Vec<RData>) {
        let key = (name.to_lowercase(), rtype);
        if values.is_empty() {
            self.sets.remove(&key);
        } else {
            self.sets.insert(key, RrSet { ttl, values });
        }
    }

    pub fn get(&self, name: &Name, rtype: RecordType) -> Option<&RrSet> {
        self.sets.get(&(name.to_lowercase(), rtype))
    }

    /// How many UPDATEs were applied.
    pub fn updates(&self) -> u64 {
        self.updates
    }

    fn contains(&self, name: &Name) -> bool {
        self.origin.zone_of(name)
    }

    fn name_exists(&self, name: &Name) -> bool {
        let name = name.to_lowercase();
        self.sets.keys().any(|(n, _)| *n == name)
    }

    fn soa_record(&self) -> Option<Record> {
        let set = self.get(&self.origin, RecordType::SOA)?;
        let RData::SOA(soa) = set.values.first()? else {
            return None;
        };
        // The negative-caching TTL is min(SOA TTL, SOA minimum) (RFC 2308).
        let ttl = set.ttl.min(soa.minimum);
        Some(Record::from_rdata(
            self.origin.clone(),
            ttl,
            RData::SOA(soa.clone()),
        ))
    }

    fn bump_serial(&mut self) {
        let key = (self.origin.to_lowercase(), RecordType::SOA);
        if let Some(set) = self.sets.get_mut(&key)
            && let Some(RData::SOA(soa)) = set.values.first_mut()
        {
            soa.increment_serial();
        }
        self.updates += 1;
    }

    /// Applies the update section of an UPDATE, all or nothing.
    fn apply_update(&mut self, records: &[Record]) -> ResponseCode {
        for r in records {
            if !self.contains(&r.name) {
                return ResponseCode::NotZone;
            }
            let ok = match r.dns_class {
                DNSClass::IN => !matches!(r.record_type(), RecordType::ANY | RecordType::AXFR),
                DNSClass::ANY | DNSClass::NONE => r.ttl == 0,
                _ => false,
            };
            if !ok {
                return ResponseCode::FormErr;
            }
        }
        for r in records {
            let name = r.name.to_lowercase();
            let rtype = r.record_type();
            let apex_guard = |t: RecordType| {
                name == self.origin && matches!(t, RecordType::SOA | RecordType::NS)
            };
            match r.dns_class {
                DNSClass::ANY if rtype == RecordType::ANY => {
                    self.sets.retain(|(n, t), _| {
                        *n != name
                            || (*n == self.origin && matches!(t, RecordType::SOA | RecordType::NS))
                    });
                }
                DNSClass::ANY => {
                    if !apex_guard(rtype) {
                        self.sets.remove(&(name, rtype));
                    }
                }
                DNSClass::NONE => {
                    if let Some(set) = self.sets.get_mut(&(name.clone(), rtype)) {
                        set.values.retain(|v| *v != r.data);
                        if set.values.is_empty() {
                            self.sets.remove(&(name, rtype));
                        }
                    }
                }
                _ => {
                    let set = self.sets.entry((name, rtype)).or_insert(RrSet {
                        ttl: r.ttl,
                        values: Vec::new(),
                    });
                    set.ttl = r.ttl;
                    if !set.values.contains(&r.data) {
                        set.values.push(r.data.clone());
                    }
                }
            }
        }
        self.bump_serial();
        ResponseCode::NoError
    }
}

fn parse_name(s: &str) -> Result<Name, String> {
    Name::from_ascii(crate::dns::fqdn(s))
        .map(|n| n.to_lowercase())
        .map_err(|e| format!("`{s}` is not a domain name: {e}"))
}

/// The server: a zone behind a listener.
#[derive(Debug)]
pub struct AuthServer {
    zone: Arc<Mutex<Zone>>,
    listener: Listener,
}

struct Auth {
    zone: Arc<Mutex<Zone>>,
    key: Key,
}

impl AuthServer {
    /// Serves `zone` on `bind` (e.g. `127.0.0.1:0`), accepting UPDATEs signed
    /// with `key`.
    pub async fn start(bind: SocketAddr, zone: Zone, key: Key) -> io::Result<Self> {
        let zone = Arc::new(Mutex::new(zone));
        let handler = Arc::new(Auth {
            zone: zone.clone(),
            key,
        });
        let listener = Listener::bind(bind, handler).await?;
        Ok(AuthServer { zone, listener })
    }

    pub fn addr(&self) -> SocketAddr {
        self.listener.addr()
    }

    /// Runs `f` on the zone (to seed records or read them back).
    pub fn with_zone<T>(&self, f: impl FnOnce(&mut Zone) -> T) -> T {
        let mut zone = self.zone.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut zone)
    }
}

impl Handler for Auth {
    fn handle<'a>(&'a self, request: &'a [u8], over_udp: bool) -> BoxFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move { self.answer(request, over_udp) })
    }
}

impl Auth {
    fn answer(&self, request: &[u8], over_udp: bool) -> Option<Vec<u8>> {
        if request.len() < 12 || request[2] & 0x80 != 0 {
            return None; // not a query: drop it
        }
        let id = u16::from_be_bytes([request[0], request[1]]);
        let opcode = (request[2] >> 3) & 0x0F;
        if opcode == 5 {
            return Some(self.update(id, request));
        }
        let Ok(query) = Message::from_vec(request) else {
            return Message::error_msg(id, OpCode::Query, ResponseCode::FormErr)
                .to_vec()
                .ok();
        };
        if query.metadata.op_code != OpCode::Query || query.queries.len() != 1 {
            return Message::error_msg(id, query.metadata.op_code, ResponseCode::NotImp)
                .to_vec()
                .ok();
        }
        let q = &query.queries[0];
        let mut reply = Message::response(id, OpCode::Query);
        reply.metadata.recursion_desired = query.metadata.recursion_desired;
        reply.add_query(q.clone());
        {
            let zone = self.zone.lock().unwrap_or_else(|p| p.into_inner());
            if !zone.contains(&q.name) {
                reply.metadata.response_code = ResponseCode::Refused;
            } else {
                reply.metadata.authoritative = true;
                let mut name = q.name.clone();
                // Follow CNAMEs inside the zone (a short chain at most).
                for _ in 0..8 {
                    if let Some(set) = zone.get(&name, q.query_type) {
                        for v in &set.values {
                            reply.add_answer(Record::from_rdata(name.clone(), set.ttl, v.clone()));
                        }
                        break;
                    }
                    if q.query_type != RecordType::CNAME
                        && let Some(set) = zone.get(&name, RecordType::CNAME)
                        && let Some(RData::CNAME(target)) = set.values.first()
                    {
                        reply.add_answer(Record::from_rdata(
                            name.clone(),
                            set.ttl,
                            RData::CNAME(target.clone()),
                        ));
                        name = target.0.clone();
                        if zone.contains(&name) {
                            continue;
                        }
                        break;
                    }
                    if reply.answers.is_empty() {
                        if !zone.name_exists(&name) {
                            reply.metadata.response_code = ResponseCode::NXDomain;
                        }
                        if let Some(soa) = zone.soa_record() {
                            reply.add_authority(soa);
                        }
                    }
                    break;
                }
            }
        }
        let limit = if over_udp {
            query
                .edns
                .as_ref()
                .map_or(512, |e| usize::from(e.max_payload().max(512)))
        } else {
            65_535
        };
        if let Some(edns) = &query.edns {
            let mut e = hickory_proto::op::Edns::new();
            e.set_max_payload(edns.max_payload().max(512));
            reply.set_edns(e);
        }
        let bytes = reply.to_vec().ok()?;
        if bytes.len() > limit {
            return reply.truncate().to_vec().ok();
        }
        Some(bytes)
    }

    fn update(&self, id: u16, request: &[u8]) -> Vec<u8> {
        let now = unix_now();
        let refuse = |rc: ResponseCode| {
            let mut m = Message::new(id, MessageType::Response, OpCode::Update);
            m.metadata.response_code = rc;
            m.to_vec().unwrap_or_default()
        };
        let (body, mac) = match self.key.verify_request(request, now) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "demo DNS: UPDATE refused: bad or missing TSIG");
                return refuse(ResponseCode::NotAuth);
            }
        };
        let rc = match Message::from_vec(&body) {
            Err(_) => ResponseCode::FormErr,
            Ok(msg) => {
                let mut zone = self.zone.lock().unwrap_or_else(|p| p.into_inner());
                match msg.queries.as_slice() {
                    [q] if q.query_type == RecordType::SOA
                        && q.name.to_lowercase() == *zone.origin() =>
                    {
                        if msg.answers.is_empty() {
                            zone.apply_update(&msg.authorities)
                        } else {
                            ResponseCode::NotImp
                        }
                    }
                    [_] => ResponseCode::NotAuth,
                    _ => ResponseCode::FormErr,
                }
            }
        };
        let mut reply = Message::new(id, MessageType::Response, OpCode::Update);
        reply.metadata.response_code = rc;
        let bytes = reply.to_vec().unwrap_or_default();
        self.key.sign_response(&bytes, &mac, now).unwrap_or(bytes)
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::dns::rfc2136::Rfc2136;
    use crate::dns::tsig::Algorithm;
    use crate::dns::{DnsProvider as _, RecordSet, RecordType as Rt, verify};

    async fn server() -> (AuthServer, Key) {
        let key = Key::new("demo-key", Algorithm::HmacSha256, b"0123456789abcdef").unwrap();
        let mut zone = Zone::new("elm.test", 2).unwrap();
        let name = Name::from_ascii("package.elm.test.").unwrap();
        zone.put(
            &name,
            RecordType::A,
            300,
            vec![RData::A(
                "127.0.0.10".parse::<std::net::Ipv4Addr>().unwrap().into(),
            )],
        );
        let s = AuthServer::start("127.0.0.1:0".parse().unwrap(), zone, key.clone())
            .await
            .unwrap();
        (s, key)
    }

    #[tokio::test]
    async fn the_rfc2136_provider_updates_it_and_verification_agrees() {
        let (s, key) = server().await;
        let provider = Rfc2136::new(s.addr(), "elm.test", key);
        let before = provider
            .read("package.elm.test", Rt::A)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(before.values, vec!["127.0.0.10".to_string()]);
        assert_eq!(before.ttl, 300);

        let desired = RecordSet::new("package.elm.test", Rt::A, 2, &["127.0.0.20"]).unwrap();
        provider.apply(&desired).await.unwrap();
        let v = verify::verify(&[s.addr()], &desired, Duration::from_secs(2)).await;
        assert!(v.agrees_with(&desired), "{v:?}");
        assert_eq!(s.with_zone(|z| z.updates()), 1);

        // A new name is added; the apex survives.
        let www = RecordSet::new("www.elm.test", Rt::A, 5, &["127.0.0.1", "127.0.0.2"]).unwrap();
        provider.apply(&www).await.unwrap();
        let got = provider.read("www.elm.test", Rt::A).await.unwrap().unwrap();
        assert_eq!(
            got.values,
            vec!["127.0.0.1".to_string(), "127.0.0.2".to_string()]
        );
        assert!(
            provider
                .read("nope.elm.test", Rt::A)
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn an_update_with_the_wrong_secret_or_outside_the_zone_is_refused() {
        let (s, _) = server().await;
        let wrong = Key::new("demo-key", Algorithm::HmacSha256, b"not the secret").unwrap();
        let provider = Rfc2136::new(s.addr(), "elm.test", wrong);
        let desired = RecordSet::new("package.elm.test", Rt::A, 2, &["127.0.0.20"]).unwrap();
        let err = provider.apply(&desired).await.unwrap_err();
        assert!(err.to_string().contains("refused"), "{err}");
        assert_eq!(s.with_zone(|z| z.updates()), 0);
    }

    #[tokio::test]
    async fn queries_get_nxdomain_nodata_and_refused_as_a_server_would_answer() {
        let (s, _) = server().await;
        let q = |name: &'static str, t: RecordType| {
            let addr = s.addr();
            async move {
                crate::dns::wire::query(addr, name, t, false, Duration::from_secs(2))
                    .await
                    .unwrap()
            }
        };
        let m = q("nope.elm.test", RecordType::A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert!(m.metadata.authoritative);
        assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
        assert_eq!(m.authorities[0].ttl, 2);
        let m = q("package.elm.test", RecordType::AAAA).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty());
        let m = q("elm.test", RecordType::NS).await;
        assert_eq!(m.answers.len(), 1);
        let m = q("example.org", RecordType::A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    }
}
