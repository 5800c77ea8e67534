//! A caching resolver for one demo region: forwards queries to the zone's
//! authoritative server and caches each answer for its TTL, counting the TTL
//! down in the answers it serves from the cache — the behaviour the plan's
//! "TTL drained" and "propagation" waits depend on, as with a real resolver.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RecordType};

use super::serve::{BoxFuture, Handler, Listener};
use crate::dns::wire;

/// Longest a negative answer without an SOA is kept.
const NEGATIVE_TTL: u32 = 5;

type CacheKey = (Name, RecordType, DNSClass);

struct Entry {
    reply: Message,
    stored: Instant,
    ttl: u32,
}

struct Cache {
    upstream: SocketAddr,
    entries: Mutex<HashMap<CacheKey, Entry>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// A running caching resolver; stops when dropped.
#[derive(Debug)]
pub struct CachingResolver {
    cache: Arc<Cache>,
    listener: Listener,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("upstream", &self.upstream)
            .finish_non_exhaustive()
    }
}

impl CachingResolver {
    /// Listens on `bind` (e.g. `127.0.0.1:0`), forwarding misses to `upstream`.
    pub async fn start(bind: SocketAddr, upstream: SocketAddr) -> io::Result<Self> {
        let cache = Arc::new(Cache {
            upstream,
            entries: Mutex::new(HashMap::new()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        });
        let listener = Listener::bind(bind, cache.clone()).await?;
        Ok(CachingResolver { cache, listener })
    }

    pub fn addr(&self) -> SocketAddr {
        self.listener.addr()
    }

    /// (answers from the cache, answers fetched upstream).
    pub fn stats(&self) -> (u64, u64) {
        (
            self.cache.hits.load(Ordering::Relaxed),
            self.cache.misses.load(Ordering::Relaxed),
        )
    }

    /// Forgets every cached answer.
    pub fn flush(&self) {
        self.cache.lock().clear();
    }
}

impl Cache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<CacheKey, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached reply with its TTLs counted down, if still fresh.
    fn lookup(&self, key: &CacheKey) -> Option<Message> {
        let mut entries = self.lock();
        let entry = entries.get(key)?;
        let age = u32::try_from(entry.stored.elapsed().as_secs()).unwrap_or(u32::MAX);
        if age >= entry.ttl {
            entries.remove(key);
            return None;
        }
        let mut reply = entry.reply.clone();
        for r in reply.answers.iter_mut().chain(reply.authorities.iter_mut()) {
            r.ttl = r.ttl.saturating_sub(age);
        }
        Some(reply)
    }

    async fn resolve(&self, request: &[u8], over_udp: bool) -> Option<Vec<u8>> {
        let query = Message::from_vec(request).ok()?;
        let id = query.metadata.id;
        let [q] = query.queries.as_slice() else {
            return None;
        };
        let key = (q.name.to_lowercase(), q.query_type, q.query_class);
        let mut reply = match self.lookup(&key) {
            Some(r) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                r
            }
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                match self.fetch(&query).await {
                    Some((reply, ttl)) => {
                        if ttl > 0 {
                            self.lock().insert(
                                key,
                                Entry {
                                    reply: reply.clone(),
                                    stored: Instant::now(),
                                    ttl,
                                },
                            );
                        }
                        reply
                    }
                    None => {
                        let mut m =
                            Message::error_msg(id, query.metadata.op_code, ResponseCode::ServFail);
                        m.add_query(q.clone());
                        m
                    }
                }
            }
        };
        reply.metadata.id = id;
        reply.metadata.authoritative = false;
        reply.metadata.recursion_desired = query.metadata.recursion_desired;
        reply.metadata.recursion_available = true;
        reply.edns = None;
        if let Some(edns) = &query.edns {
            let mut e = hickory_proto::op::Edns::new();
            e.set_max_payload(edns.max_payload().max(512));
            reply.set_edns(e);
        }
        let limit = if over_udp {
            query
                .edns
                .as_ref()
                .map_or(512, |e| usize::from(e.max_payload().max(512)))
        } else {
            65_535
        };
        let bytes = reply.to_vec().ok()?;
        if bytes.len() > limit {
            return reply.truncate().to_vec().ok();
        }
        Some(bytes)
    }

    /// Asks upstream; returns the reply and how long it may be cached
    /// (the least TTL in the answer; for a negative answer the SOA's).
    async fn fetch(&self, query: &Message) -> Option<(Message, u32)> {
        let mut upstream_query = query.clone();
        upstream_query.metadata.recursion_desired = false;
        let bytes = upstream_query.to_vec().ok()?;
        let reply = wire::exchange(self.upstream, &bytes, Duration::from_secs(2))
            .await
            .ok()?;
        let reply = Message::from_vec(&reply).ok()?;
        let ttl = match reply.metadata.response_code {
            ResponseCode::NoError if !reply.answers.is_empty() => {
                reply.answers.iter().map(|r| r.ttl).min().unwrap_or(0)
            }
            ResponseCode::NoError | ResponseCode::NXDomain => reply
                .authorities
                .iter()
                .find(|r| r.record_type() == RecordType::SOA)
                .map_or(NEGATIVE_TTL, |r| r.ttl),
            _ => 0,
        };
        Some((reply, ttl))
    }
}

impl Handler for Cache {
    fn handle<'a>(&'a self, request: &'a [u8], over_udp: bool) -> BoxFuture<'a, Option<Vec<u8>>> {
        Box::pin(self.resolve(request, over_udp))
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use hickory_proto::rr::RData;

    use super::*;
    use crate::demo::auth::{AuthServer, Zone};
    use crate::dns::tsig::{Algorithm, Key};

    fn a(ip: &str) -> RData {
        RData::A(ip.parse::<Ipv4Addr>().unwrap().into())
    }

    async fn ask(resolver: SocketAddr) -> Message {
        wire::query(
            resolver,
            "package.elm.test",
            RecordType::A,
            true,
            Duration::from_secs(2),
        )
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn answers_come_from_the_cache_with_the_ttl_counting_down_until_it_expires() {
        let key = Key::new("k", Algorithm::HmacSha256, b"secret").unwrap();
        let mut zone = Zone::new("elm.test", 1).unwrap();
        let name = Name::from_ascii("package.elm.test.").unwrap();
        zone.put(&name, RecordType::A, 2, vec![a("127.0.0.10")]);
        let auth = AuthServer::start("127.0.0.1:0".parse().unwrap(), zone, key)
            .await
            .unwrap();
        let resolver = CachingResolver::start("127.0.0.1:0".parse().unwrap(), auth.addr())
            .await
            .unwrap();

        let first = ask(resolver.addr()).await;
        assert_eq!(first.answers[0].data, a("127.0.0.10"));
        assert_eq!(first.answers[0].ttl, 2);
        assert!(first.metadata.recursion_available);
        assert!(!first.metadata.authoritative);

        // The zone changes; the cache keeps serving the old answer for its TTL.
        auth.with_zone(|z| z.put(&name, RecordType::A, 2, vec![a("127.0.0.20")]));
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let cached = ask(resolver.addr()).await;
        assert_eq!(cached.answers[0].data, a("127.0.0.10"));
        assert_eq!(cached.answers[0].ttl, 1, "TTL counts down");
        assert_eq!(resolver.stats(), (1, 1));

        tokio::time::sleep(Duration::from_millis(1000)).await;
        let fresh = ask(resolver.addr()).await;
        assert_eq!(fresh.answers[0].data, a("127.0.0.20"));
        assert_eq!(fresh.answers[0].ttl, 2);
        assert_eq!(resolver.stats(), (1, 2));

        resolver.flush();
        let nx = wire::query(
            resolver.addr(),
            "nope.elm.test",
            RecordType::A,
            true,
            Duration::from_secs(2),
        )
        .await
        .unwrap();
        assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    }
}
