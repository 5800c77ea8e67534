//! Networking for checks, done by hand so each phase can be timed and so
//! requests can be pinned to a site's address while keeping the real hostname.
//!
//! - [`resolve`]: the probe's own resolver (hickory, no cache).
//! - [`http`]: a tiny HTTP/1.1 client (resolve → TCP → TLS → request → first byte → body).
//! - [`dns`]: raw DNS queries over UDP/TCP, so checks see the real TTL and rcode.

pub mod dns;
pub mod http;
pub mod resolve;

pub use http::{HttpClient, HttpRequest, HttpResponse, NetError, Route, Timings};
pub use resolve::SystemResolver;

/// Microseconds in `d`, saturating (durations on the wire are `uint64` µs).
pub fn micros(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
