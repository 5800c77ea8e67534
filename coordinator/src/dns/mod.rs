//! DNS providers: one trait for every way of changing a zone, and the
//! read-after-write check that proves a change at the zone's authoritative
//! servers.
//!
//! The engine never trusts a provider's "OK": after [`DnsProvider::apply`] it
//! calls [`verify`](fn@verify), which queries every authoritative nameserver directly
//! (RD=0) until each one serves exactly the desired record set. Operations are
//! idempotent — `apply` sets a desired state, it does not toggle — so the
//! engine may repeat a step after a crash without harm.
//!
//! How the engine drives a `dns` step:
//!
//! ```ignore
//! let provider = dns::build(&plan.dns.provider_spec, &plan.dns.zone, plan_dir)?;
//! let desired = RecordSet::new("package.elm-lang.org", RecordType::A, 60, &["203.0.113.20"])?;
//! if let Some(text) = provider.manual_instructions(&desired) {
//!     show(text); wait_for_approve().await;       // `manual`: the operator does it
//! } else {
//!     provider.apply(&desired).await?;            // idempotent: safe to repeat after a crash
//! }
//! let nameservers = match &plan.dns.nameservers {  // or the zone's NS, found via a resolver
//!     Some(ns) => ns.clone(),
//!     None => dns::discover_nameservers(&plan.dns.zone, dns::system_resolver()?).await?,
//! };
//! let opts = VerifyOptions { check_ttl: provider.sets_ttl(), ..VerifyOptions::default() };
//! let v = dns::verify_with(&nameservers, &desired, Duration::from_secs(120), opts).await;
//! if !v.agrees_with(&desired) { /* v.disagreements(&desired, opts.check_ttl) says who serves what */ }
//! ```
//!
//! (`agrees_on_values` instead of `agrees_with` when `sets_ttl()` is false.)
//!
//! One file per provider; adding one touches that file and [`build`]. Shared
//! pieces: [`wire`] (DNS over UDP/TCP), [`tsig`] (RFC 8945 signatures),
//! [`http`] (the HTTP client and error mapping of the API providers),
//! [`retry`] (capped exponential backoff), [`secret`] and [`verify`](mod@verify).

use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use serde::Deserialize;

pub mod cloudflare;
pub mod digitalocean;
pub mod dreamhost;
pub mod http;
pub mod manual;
pub mod reconcile;
pub mod retry;
pub mod rfc2136;
pub mod route53;
pub mod secret;
pub mod tsig;
pub mod verify;
pub mod wire;

pub use verify::{
    Verification, VerifyOptions, discover_nameservers, system_resolver, verify, verify_with,
};

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
        f.write_str(self.as_str())
    }
}

impl RecordType {
    /// The mnemonic, as every provider's API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordType::A => "A",
            RecordType::AAAA => "AAAA",
            RecordType::CNAME => "CNAME",
        }
    }

    /// Puts one value into canonical text form: an IP address as `IpAddr`
    /// prints it, a CNAME target lowercase with a trailing dot.
    pub fn canonical_value(self, value: &str) -> Result<String, String> {
        let v = value.trim();
        match self {
            RecordType::A => match v.parse::<IpAddr>() {
                Ok(IpAddr::V4(ip)) => Ok(ip.to_string()),
                _ => Err(format!("`{v}` is not an IPv4 address (A record)")),
            },
            RecordType::AAAA => match v.parse::<IpAddr>() {
                Ok(IpAddr::V6(ip)) => Ok(ip.to_string()),
                _ => Err(format!("`{v}` is not an IPv6 address (AAAA record)")),
            },
            RecordType::CNAME => {
                if v.is_empty() {
                    Err("empty CNAME target".to_string())
                } else {
                    Ok(fqdn(v))
                }
            }
        }
    }
}

/// `Name.Example.` / `name.example` → `name.example.`
pub fn fqdn(name: &str) -> String {
    let n = name.trim().trim_end_matches('.').to_ascii_lowercase();
    format!("{n}.")
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

impl RecordSet {
    /// Builds a set in canonical form (name lowercased with a trailing dot,
    /// values parsed, canonicalised, sorted and deduplicated). An empty set
    /// is refused: cutover never removes a name.
    pub fn new<S: AsRef<str>>(
        name: &str,
        rtype: RecordType,
        ttl: u32,
        values: &[S],
    ) -> Result<Self, String> {
        let mut vals = values
            .iter()
            .map(|v| rtype.canonical_value(v.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        vals.sort();
        vals.dedup();
        if vals.is_empty() {
            return Err(format!(
                "the {rtype} record set of {} has no values",
                fqdn(name)
            ));
        }
        if rtype == RecordType::CNAME && vals.len() > 1 {
            return Err(format!("{} can have only one CNAME", fqdn(name)));
        }
        Ok(RecordSet {
            name: fqdn(name),
            rtype,
            ttl,
            values: vals,
        })
    }

    /// The name without its trailing dot, as the HTTP APIs want it.
    pub fn name_no_dot(&self) -> &str {
        self.name.trim_end_matches('.')
    }

    /// `package.elm-lang.org. 300 A 203.0.113.20, 203.0.113.21`
    pub fn describe(&self) -> String {
        format!(
            "{} {} {} {}",
            self.name,
            self.ttl,
            self.rtype,
            self.values.join(", ")
        )
    }
}

/// What went wrong talking to a provider. `retryable` says whether repeating
/// the same request is safe and may succeed (timeouts, 429, 5xx).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{provider}: {message}")]
pub struct ProviderError {
    pub provider: &'static str,
    /// The provider's own message where it gave one.
    pub message: String,
    pub retryable: bool,
    /// How long the provider asked us to wait before trying again (`Retry-After`).
    pub retry_after: Option<Duration>,
}

impl ProviderError {
    /// An error that repeating the request will not fix.
    pub fn fatal(provider: &'static str, message: impl Into<String>) -> Self {
        ProviderError {
            provider,
            message: message.into(),
            retryable: false,
            retry_after: None,
        }
    }

    /// An error that may go away if the same request is sent again.
    pub fn transient(provider: &'static str, message: impl Into<String>) -> Self {
        ProviderError {
            provider,
            message: message.into(),
            retryable: true,
            retry_after: None,
        }
    }
}

/// A way of changing a zone.
pub trait DnsProvider: Send + Sync + fmt::Debug {
    /// `rfc2136`, `digitalocean`, …
    fn name(&self) -> &'static str;

    /// The provider's current view of one RRset (`None` when it has none).
    /// `name` is fully qualified; a trailing dot is optional.
    fn read<'a>(
        &'a self,
        name: &'a str,
        rtype: RecordType,
    ) -> BoxFuture<'a, Result<Option<RecordSet>, ProviderError>>;

    /// Makes the RRset equal `desired` (values and TTL). Idempotent. Must never
    /// leave the name with zero records on the way (DreamHost: add, then remove).
    fn apply<'a>(&'a self, desired: &'a RecordSet) -> BoxFuture<'a, Result<(), ProviderError>>;

    /// Whether `apply` can set the TTL. DreamHost's API has no TTL, so its
    /// records keep the TTL DreamHost chooses; verify values only there
    /// ([`VerifyOptions::check_ttl`]).
    fn sets_ttl(&self) -> bool {
        true
    }

    /// For a provider an operator drives by hand (`manual`): the exact change
    /// to make, which the engine shows before waiting for `cutover approve`.
    /// `None` for providers that change the zone themselves.
    fn manual_instructions(&self, desired: &RecordSet) -> Option<String> {
        let _ = desired;
        None
    }
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

/// Where a secret comes from: a file (relative to the plan) or an environment
/// variable. Exactly one of the two. See [`secret`] for reading it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    pub file: Option<PathBuf>,
    pub env: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rfc2136Spec {
    /// Primary server that accepts UPDATE, `ip:port` (port 53 if left out).
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
    /// Override the API origin, e.g. `http://127.0.0.1:8080` (tests point it
    /// at a local server). Paths (`/v2/…`) are appended to it.
    pub api_url: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudflareSpec {
    pub token: SecretRef,
    pub zone_id: String,
    /// API origin; `/client/v4/…` is appended.
    pub api_url: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route53Spec {
    /// `Z0123…` (a leading `/hostedzone/` is accepted).
    pub hosted_zone_id: String,
    pub access_key_id: SecretRef,
    pub secret_access_key: SecretRef,
    /// Signing region, default `us-east-1`.
    pub region: Option<String>,
    /// API origin; `/2013-04-01/…` is appended.
    pub api_url: Option<String>,
}

/// Builds the provider named by `spec` for `zone` (e.g. `elm-lang.org`, a
/// trailing dot is optional); `base` anchors relative secret files (the
/// plan's directory). Errors say which key is missing or which secret could
/// not be read.
pub fn build(spec: &ProviderSpec, zone: &str, base: &Path) -> Result<Box<dyn DnsProvider>, String> {
    fn section<'a, T>(s: &'a Option<T>, provider: &str) -> Result<&'a T, String> {
        s.as_ref().ok_or_else(|| {
            format!("dns.provider is `{provider}` but there is no [dns.{provider}] table")
        })
    }
    let zone = fqdn(zone);
    if zone == "." {
        return Err("dns: the zone is empty".to_string());
    }
    let p = spec.provider.as_str();
    Ok(match p {
        "rfc2136" => Box::new(rfc2136::Rfc2136::from_spec(
            section(&spec.rfc2136, p)?,
            &zone,
            base,
        )?),
        "digitalocean" => Box::new(digitalocean::DigitalOcean::from_spec(
            section(&spec.digitalocean, p)?,
            &zone,
            base,
        )?),
        "cloudflare" => Box::new(cloudflare::Cloudflare::from_spec(
            section(&spec.cloudflare, p)?,
            &zone,
            base,
        )?),
        "route53" => Box::new(route53::Route53::from_spec(
            section(&spec.route53, p)?,
            &zone,
            base,
        )?),
        "dreamhost" => Box::new(dreamhost::DreamHost::from_spec(
            section(&spec.dreamhost, p)?,
            &zone,
            base,
        )?),
        "manual" => Box::new(manual::Manual::new(&zone)),
        other => {
            return Err(format!(
                "dns.provider `{other}` is not one of rfc2136, digitalocean, cloudflare, route53, dreamhost, manual"
            ));
        }
    })
}

/// Refuses a desired set outside `zone`; every provider calls it first.
pub(crate) fn check_in_zone(
    provider: &'static str,
    zone: &str,
    desired_name: &str,
) -> Result<(), ProviderError> {
    let name = fqdn(desired_name);
    if name == zone || name.ends_with(&format!(".{zone}")) {
        Ok(())
    } else {
        Err(ProviderError::fatal(
            provider,
            format!("{name} is not in the zone {zone}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_sets_are_canonical() {
        let rs = RecordSet::new(
            "Package.Elm-Lang.org",
            RecordType::A,
            300,
            &["203.0.113.20", " 203.0.113.10", "203.0.113.20"],
        )
        .unwrap();
        assert_eq!(rs.name, "package.elm-lang.org.");
        assert_eq!(rs.values, ["203.0.113.10", "203.0.113.20"]);
        let v6 = RecordSet::new("a.b.", RecordType::AAAA, 60, &["2001:DB8:0::1"]).unwrap();
        assert_eq!(v6.values, ["2001:db8::1"]);
        let c = RecordSet::new("www.b", RecordType::CNAME, 60, &["Host.Example"]).unwrap();
        assert_eq!(c.values, ["host.example."]);
    }

    #[test]
    fn empty_or_malformed_sets_are_refused() {
        let none: [&str; 0] = [];
        assert!(RecordSet::new("a.b", RecordType::A, 60, &none).is_err());
        assert!(RecordSet::new("a.b", RecordType::A, 60, &["2001:db8::1"]).is_err());
        assert!(RecordSet::new("a.b", RecordType::AAAA, 60, &["10.0.0.1"]).is_err());
        assert!(RecordSet::new("a.b", RecordType::CNAME, 60, &["x.", "y."]).is_err());
    }

    #[test]
    fn build_names_the_missing_table_and_unknown_providers() {
        let spec = ProviderSpec {
            provider: "cloudflare".into(),
            rfc2136: None,
            digitalocean: None,
            cloudflare: None,
            route53: None,
            dreamhost: None,
        };
        let err = build(&spec, "elm-lang.org", Path::new(".")).unwrap_err();
        assert!(err.contains("[dns.cloudflare]"), "{err}");
        let spec = ProviderSpec {
            provider: "godaddy".into(),
            ..spec
        };
        let err = build(&spec, "elm-lang.org", Path::new(".")).unwrap_err();
        assert!(err.contains("godaddy"), "{err}");
        let manual = ProviderSpec {
            provider: "manual".into(),
            ..spec
        };
        assert_eq!(
            build(&manual, "elm-lang.org", Path::new("."))
                .unwrap()
                .name(),
            "manual"
        );
    }

    #[test]
    fn names_outside_the_zone_are_refused() {
        assert!(check_in_zone("x", "elm-lang.org.", "package.elm-lang.org").is_ok());
        assert!(check_in_zone("x", "elm-lang.org.", "elm-lang.org.").is_ok());
        assert!(check_in_zone("x", "elm-lang.org.", "evil-elm-lang.org").is_err());
    }
}
