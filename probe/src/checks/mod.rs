//! Check kinds. Each kind is one file implementing [`Check`]; [`build`] maps a
//! `CheckSpec`'s `params` to an implementation. Adding a kind touches its file,
//! one line in [`build`] and one in [`KINDS`].
//!
//! A check never returns an error: every way it can go wrong is an outcome with
//! a [`FailureKind`], because "the new server failed" is the data the
//! coordinator needs, not an exceptional condition of the probe.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use cutover_proto::v1::{
    self, CheckSpec, FailureKind, Outcome, Target, check_result::Detail, check_spec::Params,
};
use futures_util::future::BoxFuture;
use url::Url;

use crate::net::{HttpClient, NetError, Route};

pub mod dns;
pub mod download;
pub mod elm_package;
pub mod http;
pub mod registry_consistency;
pub mod tls;

/// Kind names this probe can run (reported in `Hello.capabilities`).
pub const KINDS: &[&str] = &[
    "dns",
    "http",
    "tls",
    "elm_package",
    "download",
    "registry_consistency",
];

/// What one run of a check against one target found.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckOutcome {
    pub outcome: Outcome,
    pub failure: FailureKind,
    /// Empty on success.
    pub error: String,
    pub detail: Option<Detail>,
}

impl CheckOutcome {
    pub fn success(detail: Option<Detail>) -> Self {
        Self {
            outcome: Outcome::Success,
            failure: FailureKind::Unspecified,
            error: String::new(),
            detail,
        }
    }

    pub fn failure(failure: FailureKind, error: impl Into<String>, detail: Option<Detail>) -> Self {
        Self {
            outcome: Outcome::Failure,
            failure,
            error: error.into(),
            detail,
        }
    }

    /// Corruption (e.g. a wrong archive hash): never noise.
    pub fn hard_failure(
        failure: FailureKind,
        error: impl Into<String>,
        detail: Option<Detail>,
    ) -> Self {
        Self {
            outcome: Outcome::HardFailure,
            failure,
            error: error.into(),
            detail,
        }
    }

    /// A network failure, classified by phase.
    pub fn net(e: &NetError, detail: Option<Detail>) -> Self {
        Self::failure(e.failure_kind(), e.to_string(), detail)
    }
}

/// A failed step before there is a detail to attach: small, so it can travel
/// in `Result::Err` through `?`; [`Failed::with_detail`] makes the outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    pub outcome: Outcome,
    pub failure: FailureKind,
    pub error: String,
}

impl Failed {
    pub fn new(failure: FailureKind, error: impl Into<String>) -> Self {
        Self {
            outcome: Outcome::Failure,
            failure,
            error: error.into(),
        }
    }

    /// Corruption: never noise.
    pub fn hard(failure: FailureKind, error: impl Into<String>) -> Self {
        Self {
            outcome: Outcome::HardFailure,
            ..Self::new(failure, error)
        }
    }

    /// A network failure, classified by phase.
    pub fn net(e: &NetError) -> Self {
        Self::new(e.failure_kind(), e.to_string())
    }

    pub fn with_detail(self, detail: Option<Detail>) -> CheckOutcome {
        CheckOutcome {
            outcome: self.outcome,
            failure: self.failure,
            error: self.error,
            detail,
        }
    }
}

impl From<Failed> for CheckOutcome {
    fn from(f: Failed) -> Self {
        f.with_detail(None)
    }
}

/// Site addresses from the assignment, parsed once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sites {
    pub old: Vec<IpAddr>,
    pub new: Vec<IpAddr>,
}

impl Sites {
    /// Parses the assignment's sites; an unparsable address is logged and skipped.
    pub fn from_assignment(a: &v1::Assignment) -> Self {
        fn parse(site: Option<&v1::Site>, which: &str) -> Vec<IpAddr> {
            let Some(site) = site else { return Vec::new() };
            site.addresses
                .iter()
                .filter_map(|s| match s.trim().parse() {
                    Ok(ip) => Some(ip),
                    Err(_) => {
                        tracing::warn!(site = which, address = %s, "ignoring unparsable site address");
                        None
                    }
                })
                .collect()
        }
        Self {
            old: parse(a.old.as_ref(), "old"),
            new: parse(a.new.as_ref(), "new"),
        }
    }
}

/// What every check run may use: the probe's HTTP client and resolver, and the
/// assignment's sites.
#[derive(Debug, Clone)]
pub struct CheckContext {
    pub http: HttpClient,
    pub sites: Sites,
    /// Port of authoritative name servers (53; tests use a port-0 server).
    pub authoritative_port: u16,
    /// Timeout of one DNS query.
    pub dns_timeout: Duration,
}

impl CheckContext {
    /// The route for `target`: pinned to the site's addresses, or resolved.
    pub fn route(&self, target: Target) -> Result<Route, Failed> {
        let (addrs, name) = match target {
            Target::Old => (&self.sites.old, "old"),
            Target::New => (&self.sites.new, "new"),
            Target::Dns => return Ok(Route::Resolve),
            Target::Unspecified => {
                return Err(Failed::new(
                    FailureKind::Unsupported,
                    "check has target unspecified",
                ));
            }
        };
        if addrs.is_empty() {
            return Err(Failed::new(
                FailureKind::Internal,
                format!("target {name}: the assignment lists no address for site {name}"),
            ));
        }
        Ok(Route::Pinned(addrs.clone()))
    }
}

/// The route for a URL found while checking `base` (e.g. an archive URL in
/// `endpoint.json`): same host and port keep the pin, anything else resolves.
pub fn route_for(base: &Url, base_route: &Route, url: &Url) -> Route {
    if url.host() == base.host() && url.port_or_known_default() == base.port_or_known_default() {
        base_route.clone()
    } else {
        Route::Resolve
    }
}

/// Parses a URL from the assignment, as an `Unsupported` outcome when invalid.
pub fn parse_url(what: &str, s: &str) -> Result<Url, String> {
    let url = Url::parse(s).map_err(|e| format!("{what} {s:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(format!("{what} {s:?}: expected an http(s) URL with a host"));
    }
    Ok(url)
}

/// One kind of check.
pub trait Check: Send + Sync + std::fmt::Debug {
    /// The kind name, as in [`KINDS`].
    fn kind(&self) -> &'static str;

    /// The targets one tick runs, given the spec's. Most kinds run each listed
    /// target; some are defined on a fixed target (dns, registry_consistency).
    fn targets(&self, spec: &[Target]) -> Vec<Target> {
        if spec.is_empty() {
            vec![Target::Dns]
        } else {
            spec.to_vec()
        }
    }

    /// Host names (or IP literals) the spec makes the probe contact: URL
    /// hosts, the TLS host, DNS names queried, a `Host` header. Each must be
    /// in the volunteer's allowlist or the check is refused.
    fn hosts(&self) -> Vec<String> {
        Vec::new()
    }

    /// Resolvers the spec lists (not the probe's own); each must be public
    /// unless private addresses are allowed.
    fn listed_resolvers(&self) -> Vec<SocketAddr> {
        Vec::new()
    }

    /// The sites whose (pinned) addresses a run against `target` connects to.
    fn sites(&self, target: Target) -> Vec<Target> {
        match target {
            Target::Old | Target::New => vec![target],
            Target::Dns | Target::Unspecified => Vec::new(),
        }
    }

    /// Runs once against `target`.
    fn run<'a>(&'a self, ctx: &'a CheckContext, target: Target) -> BoxFuture<'a, CheckOutcome>;
}

/// The host of a URL from the assignment, as the allowlist sees it.
pub fn url_host(url: &Url) -> String {
    crate::net::http::host_port(url).map_or_else(|_| String::new(), |(h, _)| h)
}

/// A spec the probe cannot run: every run reports `Unsupported`, so the
/// operator sees the problem in the results instead of silence.
#[derive(Debug)]
pub struct Unsupported {
    reason: String,
}

impl Check for Unsupported {
    fn kind(&self) -> &'static str {
        "unsupported"
    }

    fn run<'a>(&'a self, _ctx: &'a CheckContext, _target: Target) -> BoxFuture<'a, CheckOutcome> {
        Box::pin(async move {
            CheckOutcome::failure(FailureKind::Unsupported, self.reason.clone(), None)
        })
    }
}

/// Maps a spec to its implementation; specs that cannot run become [`Unsupported`].
pub fn build(spec: &CheckSpec) -> Arc<dyn Check> {
    let built: Result<Arc<dyn Check>, String> = match &spec.params {
        Some(Params::Dns(p)) => dns::DnsCheck::new(p).map(|c| Arc::new(c) as Arc<dyn Check>),
        Some(Params::Http(p)) => http::HttpCheck::new(p).map(|c| Arc::new(c) as Arc<dyn Check>),
        Some(Params::Tls(p)) => tls::TlsCheck::new(p).map(|c| Arc::new(c) as Arc<dyn Check>),
        Some(Params::ElmPackage(p)) => {
            elm_package::ElmPackageCheck::new(p).map(|c| Arc::new(c) as Arc<dyn Check>)
        }
        Some(Params::Download(p)) => {
            download::DownloadCheck::new(p).map(|c| Arc::new(c) as Arc<dyn Check>)
        }
        Some(Params::RegistryConsistency(p)) => {
            registry_consistency::ConsistencyCheck::new(p).map(|c| Arc::new(c) as Arc<dyn Check>)
        }
        None => Err(format!(
            "check {:?} of kind {:?} has no parameters this probe (version {}) understands",
            spec.id,
            spec.kind,
            crate::VERSION
        )),
    };
    let built = built.and_then(|c| {
        if spec.kind.is_empty() || spec.kind == c.kind() {
            Ok(c)
        } else {
            Err(format!(
                "check {:?}: kind {:?} does not match its {} parameters",
                spec.id,
                spec.kind,
                c.kind()
            ))
        }
    });
    match built {
        Ok(c) => c,
        Err(reason) => {
            tracing::warn!(check = %spec.id, %reason, "check cannot run");
            Arc::new(Unsupported { reason })
        }
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// SHA-256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

/// Sends `req` and insists on status 200; `what` names the step in errors
/// (e.g. "endpoint.json of elm/core@1.0.5").
pub async fn fetch_ok(
    ctx: &CheckContext,
    req: crate::net::HttpRequest,
    what: &str,
) -> Result<crate::net::HttpResponse, Failed> {
    let url = req.url.clone();
    let resp = ctx.http.send(req).await.map_err(|e| Failed::net(&e))?;
    if resp.status != 200 {
        return Err(Failed::new(
            FailureKind::HttpStatus,
            format!("{what}: {url} answered {}", resp.status),
        ));
    }
    Ok(resp)
}

/// Parses a JSON body, as a `Protocol` failure naming the step when it is not.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, Failed> {
    serde_json::from_slice(body).map_err(|e| {
        Failed::new(
            FailureKind::Protocol,
            format!("{what}: not the expected JSON: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_params_are_unsupported() {
        let spec = CheckSpec {
            id: "x".into(),
            kind: "quantum".into(),
            ..Default::default()
        };
        let c = build(&spec);
        assert_eq!(c.kind(), "unsupported");
    }

    #[test]
    fn kind_mismatch_is_unsupported() {
        let spec = CheckSpec {
            id: "x".into(),
            kind: "tls".into(),
            params: Some(Params::Download(v1::DownloadParams {
                url: "https://example.test/x".into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        assert_eq!(build(&spec).kind(), "unsupported");
    }

    #[test]
    fn sha256_of_empty() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn redirects_to_same_host_keep_pin() {
        let base = Url::parse("https://pkg.test/packages").unwrap();
        let pin = Route::Pinned(vec!["127.0.0.9".parse().unwrap()]);
        assert_eq!(
            route_for(&base, &pin, &Url::parse("https://pkg.test/a.zip").unwrap()),
            pin
        );
        assert_eq!(
            route_for(
                &base,
                &pin,
                &Url::parse("https://github.test/a.zip").unwrap()
            ),
            Route::Resolve
        );
    }
}
