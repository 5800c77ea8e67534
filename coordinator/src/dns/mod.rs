//! DNS providers: one trait for every way of changing a zone, and the
//! read-after-write check that proves a change at the zone's authoritative
//! servers.
//!
//! The engine never trusts a provider's "OK": after [`DnsProvider::apply`] it
//! calls [`verify`], which queries every authoritative nameserver directly
//! (RD=0) until each one serves exactly the desired record set. Operations are
//! idempotent — `apply` sets a desired state, it does not toggle — so the
//! engine may repeat a step after a crash without harm.
//!
//! One file per provider; adding one touches that file and [`build`].

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use serde::Deserialize;

/// A boxed future, so providers can sit behind `dyn DnsProvider`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Record types cutover changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum RecordType {
    A,
    AAAA,
    CNAME,
}

impl fmt::Display for RecordType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RecordType::A => "A",
            RecordType::AAAA => "AAAA",
            RecordType::CNAME => "CNAME",
        })
    }
}

/// One RRset: every record of one name and type, with its TTL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordSet {
    /// Fully qualified, lowercase, with the trailing dot: `package.elm-lang.org.`
    pub name: String,
    pub rtype: RecordType,
    pub ttl: u32,
    /// Values in canonical text form (IP addresses; a CNAME target with trailing dot), sorted.
    pub values: Vec<String>,
}

/// What went wrong talking to a provider. `retryable` says whether repeating
/// the same request is safe and may succeed (timeouts, 429, 5xx).
#[derive(Debug, thiserror::Error)]
#[error("{provider}: {message}")]
pub struct ProviderError {
    pub provider: &'static str,
    /// The provider's own message where it gave one.
    pub message: String,
    pub retryable: bool,
}

/// A way of changing a zone.
pub trait DnsProvider: Send + Sync + fmt::Debug {
    /// `rfc2136`, `digitalocean`, …
    fn name(&self) -> &'static str;

    /// The provider's current view of one RRset (`None` when it has none).
    fn read<'a>(
        &'a self,
        name: &'a str,
        rtype: RecordType,
    ) -> BoxFuture<'a, Result<Option<RecordSet>, ProviderError>>;

    /// Makes the RRset equal `desired` (values and TTL). Idempotent. Must never
    /// leave the name with zero records on the way (DreamHost: add, then remove).
    fn apply<'a>(&'a self, desired: &'a RecordSet) -> BoxFuture<'a, Result<(), ProviderError>>;
}

/// Provider settings from the plan's `[dns]` table: `provider = "…"` picks one
/// of the sub-tables. Secrets are never inline: `*_file` or `*_env` only.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSpec {
    /// `rfc2136`, `digitalocean`, `cloudflare`, `route53`, `dreamhost` or `manual`.
    pub provider: String,
    pub rfc2136: Option<Rfc2136Spec>,
    pub digitalocean: Option<TokenApiSpec>,
    pub cloudflare: Option<CloudflareSpec>,
    pub route53: Option<Route53Spec>,
    pub dreamhost: Option<TokenApiSpec>,
}

/// Where a secret comes from: a file (relative to the plan) or an environment variable.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    pub file: Option<PathBuf>,
    pub env: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rfc2136Spec {
    /// Primary server that accepts UPDATE, `ip:port`.
    pub server: String,
    pub tsig_key_name: String,
    /// `hmac-sha256` (default) or `hmac-sha512`.
    pub tsig_algorithm: Option<String>,
    /// Base64 TSIG secret.
    pub tsig_secret: SecretRef,
}

/// DigitalOcean (`token` = API token) and DreamHost (`token` = API key).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenApiSpec {
    pub token: SecretRef,
    /// Override the API base URL (tests point it at a local server).
    pub api_url: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudflareSpec {
    pub token: SecretRef,
    pub zone_id: String,
    pub api_url: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route53Spec {
    pub hosted_zone_id: String,
    pub access_key_id: SecretRef,
    pub secret_access_key: SecretRef,
    /// Signing region, default `us-east-1`.
    pub region: Option<String>,
    pub api_url: Option<String>,
}

/// Builds the provider named by `spec`; `base` anchors relative secret files.
/// Errors say which key is missing or which secret could not be read.
pub fn build(spec: &ProviderSpec, zone: &str, base: &Path) -> Result<Box<dyn DnsProvider>, String> {
    let _ = (spec, zone, base);
    Err(format!("DNS provider `{}` is not built yet", spec.provider))
}

/// Outcome of a read-after-write check at the authoritative servers.
#[derive(Debug, Clone)]
pub struct Verification {
    /// Per nameserver: what it served (None = no answer / error text).
    pub servers: Vec<(SocketAddr, Result<Option<RecordSet>, String>)>,
}

impl Verification {
    /// True when every nameserver answered with exactly the desired values and TTL.
    pub fn agrees_with(&self, desired: &RecordSet) -> bool {
        !self.servers.is_empty()
            && self
                .servers
                .iter()
                .all(|(_, got)| matches!(got, Ok(Some(rs)) if rs == desired))
    }
}

/// Queries each authoritative server (RD=0) for `name`/`rtype` until all agree
/// with `desired` or `deadline` passes; returns the last observation either way.
pub async fn verify(
    nameservers: &[SocketAddr],
    desired: &RecordSet,
    deadline: Duration,
) -> Verification {
    let _ = (desired, deadline);
    Verification {
        servers: nameservers
            .iter()
            .map(|ns| (*ns, Err("not implemented yet".to_string())))
            .collect(),
    }
}
