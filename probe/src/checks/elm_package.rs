//! `elm_package`: the Elm 0.19 client's install flow, step by step:
//! `releases.json` (resolving `latest`), `endpoint.json` → `{url, hash}`, the
//! archive (redirects allowed), SHA-1 of the archive bytes as downloaded, and
//! `POST /all-packages`. A hash mismatch is a hard failure: a corrupt or moved
//! archive breaks every user's build, it is never noise.

use std::collections::BTreeMap;

use cutover_proto::v1::{
    ElmPackageDetail, ElmPackageParams, FailureKind, Target, check_result::Detail,
};
use futures_util::future::BoxFuture;
use serde::Deserialize;
use url::Url;

use super::{
    Check, CheckContext, CheckOutcome, Failed, fetch_ok, hex, parse_json, parse_url, route_for,
};
use crate::net::{HttpRequest, Route};

/// A validated `elm_package` check.
#[derive(Debug)]
pub struct ElmPackageCheck {
    registry: Url,
    package: String,
    version: String,
}

#[derive(Debug, Deserialize)]
struct Endpoint {
    url: String,
    hash: String,
}

impl ElmPackageCheck {
    pub fn new(p: &ElmPackageParams) -> Result<Self, String> {
        let registry = parse_url("registry_url", p.registry_url.trim_end_matches('/'))?;
        let package = p.package.trim();
        let valid = package
            .split_once('/')
            .is_some_and(|(a, n)| !a.is_empty() && !n.is_empty() && !n.contains('/'));
        if !valid {
            return Err(format!("package {:?}: expected author/name", p.package));
        }
        let version = match p.version.trim() {
            "" => "latest".to_owned(),
            v if v == "latest" || parse_version(v).is_some() => v.to_owned(),
            v => {
                return Err(format!(
                    "version {v:?}: expected MAJOR.MINOR.PATCH or latest"
                ));
            }
        };
        Ok(Self {
            registry,
            package: package.to_owned(),
            version,
        })
    }

    fn url(&self, path: &str) -> Result<Url, Failed> {
        let base = self.registry.as_str().trim_end_matches('/');
        Url::parse(&format!("{base}{path}"))
            .map_err(|e| Failed::new(FailureKind::Internal, format!("building URL {path}: {e}")))
    }

    async fn run_inner(&self, ctx: &CheckContext, target: Target) -> CheckOutcome {
        let route = match ctx.route(target) {
            Ok(r) => r,
            Err(f) => return f.into(),
        };
        let mut detail = ElmPackageDetail {
            package: self.package.clone(),
            version: self.version.clone(),
            ..Default::default()
        };
        match self.flow(ctx, &route, &mut detail).await {
            Ok(()) => CheckOutcome::success(Some(Detail::ElmPackage(detail))),
            Err(f) => f.with_detail(Some(Detail::ElmPackage(detail))),
        }
    }

    async fn flow(
        &self,
        ctx: &CheckContext,
        route: &Route,
        d: &mut ElmPackageDetail,
    ) -> Result<(), Failed> {
        let pkg = &self.package;

        // 1. releases.json: the version must be published (and `latest` resolved).
        let url = self.url(&format!("/packages/{pkg}/releases.json"))?;
        let what = format!("releases.json of {pkg}");
        let resp = fetch_ok(ctx, HttpRequest::get(url, route.clone()), &what).await?;
        let releases: BTreeMap<String, serde_json::Value> = parse_json(&resp.body, &what)?;
        let version = if self.version == "latest" {
            releases
                .keys()
                .filter_map(|v| parse_version(v).map(|p| (p, v)))
                .max()
                .map(|(_, v)| v.clone())
                .ok_or_else(|| {
                    Failed::new(FailureKind::Missing, format!("{what}: no releases listed"))
                })?
        } else {
            self.version.clone()
        };
        d.version = version.clone();
        if !releases.contains_key(&version) {
            return Err(Failed::new(
                FailureKind::Missing,
                format!("{what}: version {version} is not listed"),
            ));
        }

        // 2. endpoint.json → archive URL and expected hash.
        let url = self.url(&format!("/packages/{pkg}/{version}/endpoint.json"))?;
        let what = format!("endpoint.json of {pkg}@{version}");
        let endpoint_url = url.clone();
        let resp = fetch_ok(ctx, HttpRequest::get(url, route.clone()), &what).await?;
        d.endpoint_timings = Some(resp.timings.to_proto());
        let endpoint: Endpoint = parse_json(&resp.body, &what)?;
        let expected = endpoint.hash.trim().to_ascii_lowercase();
        d.expected_sha1 = expected.clone();
        let archive_url = endpoint_url.join(&endpoint.url).map_err(|e| {
            Failed::new(
                FailureKind::Protocol,
                format!("{what}: archive url {:?} is invalid: {e}", endpoint.url),
            )
        })?;

        d.archive_url = archive_url.to_string();

        // 3. The archive; an archive on the registry's own host stays pinned.
        let archive_route = route_for(&endpoint_url, route, &archive_url);
        let what = format!("archive of {pkg}@{version}");
        let resp = fetch_ok(
            ctx,
            HttpRequest::get(archive_url.clone(), archive_route),
            &what,
        )
        .await?;
        d.archive_timings = Some(resp.timings.to_proto());
        d.archive_bytes = resp.body.len() as u64;
        // SHA-1 is what elm's client checks; we must compute the same thing.
        let actual =
            hex(ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &resp.body).as_ref());
        d.actual_sha1 = actual.clone();
        if actual != expected {
            return Err(Failed::hard(
                FailureKind::HashMismatch,
                format!(
                    "{what}: SHA-1 of {} ({} bytes) is {actual}, endpoint.json says {expected}",
                    resp.url,
                    resp.body.len()
                ),
            ));
        }

        // 4. POST /all-packages, as Elm 0.19.1 does.
        let url = self.url("/all-packages")?;
        let what = "POST /all-packages".to_owned();
        let resp = fetch_ok(ctx, HttpRequest::post_empty(url, route.clone()), &what).await?;
        let all: serde_json::Map<String, serde_json::Value> = parse_json(&resp.body, &what)?;
        d.all_packages_count = u32::try_from(all.len()).unwrap_or(u32::MAX);
        Ok(())
    }
}

/// `MAJOR.MINOR.PATCH` as numbers, so 1.0.10 sorts after 1.0.9.
pub fn parse_version(v: &str) -> Option<(u64, u64, u64)> {
    let mut it = v.split('.').map(|p| p.parse::<u64>().ok());
    let t = (it.next()??, it.next()??, it.next()??);
    it.next().is_none().then_some(t)
}

impl Check for ElmPackageCheck {
    fn kind(&self) -> &'static str {
        "elm_package"
    }

    /// The registry's host; the archive's host (from `endpoint.json`) is
    /// checked when the archive is fetched.
    fn hosts(&self) -> Vec<String> {
        vec![super::url_host(&self.registry)]
    }

    fn run<'a>(&'a self, ctx: &'a CheckContext, target: Target) -> BoxFuture<'a, CheckOutcome> {
        Box::pin(self.run_inner(ctx, target))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{Reply, Seen, TestCa, TestServer, context, sites};
    use cutover_proto::v1::Outcome;

    fn sha1_hex(b: &[u8]) -> String {
        hex(ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, b).as_ref())
    }

    /// A stand-in registry; `corrupt` serves different archive bytes than published.
    fn registry(corrupt: bool) -> impl Fn(&Seen) -> Reply + Send + Sync + 'static {
        let archive = b"PK\x03\x04 pretend zipball of elm/core 1.0.5".to_vec();
        let hash = sha1_hex(&archive);
        move |s: &Seen| match (s.method.as_str(), s.path.as_str()) {
            ("GET", "/packages/elm/core/releases.json") => {
                Reply::ok(r#"{"1.0.0":1,"1.0.5":2,"1.0.10":3}"#)
            }
            ("GET", p) if p.ends_with("/endpoint.json") => Reply::ok(format!(
                r#"{{"url":"/zipball/{}","hash":"{}"}}"#,
                p.split('/').nth(4).unwrap_or(""),
                hash.to_uppercase()
            )),
            ("GET", p) if p.starts_with("/zipball/") => {
                Reply::status(302).header("location", "/archive.zip")
            }
            ("GET", "/archive.zip") => {
                let mut body = archive.clone();
                if corrupt {
                    body[10] ^= 1;
                }
                Reply::gzip(&body)
            }
            ("POST", "/all-packages") => {
                Reply::ok(r#"{"elm/core":["1.0.5"],"elm/http":["2.0.0"]}"#)
            }
            _ => Reply::status(404),
        }
    }

    fn check(port: u16, version: &str) -> ElmPackageCheck {
        ElmPackageCheck::new(&ElmPackageParams {
            registry_url: format!("https://package.elm.test:{port}"),
            package: "elm/core".into(),
            version: version.into(),
        })
        .unwrap()
    }

    fn detail(o: &CheckOutcome) -> ElmPackageDetail {
        match &o.detail {
            Some(Detail::ElmPackage(d)) => d.clone(),
            other => panic!("no elm_package detail: {other:?}"),
        }
    }

    #[tokio::test]
    async fn install_flow_succeeds_and_resolves_latest() {
        let ca = TestCa::new();
        let server = TestServer::start(
            Some(ca.server_config(&["package.elm.test"], 90)),
            registry(false),
        )
        .await;
        let ctx = context(ca.roots(), sites("127.0.0.1", "127.0.0.1"), None);
        let out = check(server.addr.port(), "latest")
            .run(&ctx, Target::New)
            .await;
        assert_eq!(out.outcome, Outcome::Success, "{out:?}");
        let d = detail(&out);
        assert_eq!(d.version, "1.0.10", "1.0.10 is newer than 1.0.5");
        assert_eq!(d.expected_sha1, d.actual_sha1);
        assert_eq!(d.all_packages_count, 2);
        assert!(d.archive_timings.unwrap().tls_us > 0);
        let seen = server.requests();
        assert!(
            seen.iter()
                .any(|s| s.method == "POST" && s.path == "/all-packages")
        );
        assert!(
            seen.iter()
                .all(|s| s.sni.as_deref() == Some("package.elm.test"))
        );
    }

    #[tokio::test]
    async fn corrupt_archive_is_a_hard_failure_with_both_hashes() {
        let ca = TestCa::new();
        let server = TestServer::start(
            Some(ca.server_config(&["package.elm.test"], 90)),
            registry(true),
        )
        .await;
        let ctx = context(ca.roots(), sites("127.0.0.1", "127.0.0.1"), None);
        let out = check(server.addr.port(), "1.0.5")
            .run(&ctx, Target::New)
            .await;
        assert_eq!(out.outcome, Outcome::HardFailure, "{out:?}");
        assert_eq!(out.failure, FailureKind::HashMismatch);
        let d = detail(&out);
        assert_ne!(d.expected_sha1, d.actual_sha1);
        assert_eq!(d.expected_sha1.len(), 40);
        assert!(
            out.error.contains(&d.expected_sha1) && out.error.contains(&d.actual_sha1),
            "{}",
            out.error
        );
    }

    #[tokio::test]
    async fn unpublished_version_is_missing() {
        let ca = TestCa::new();
        let server = TestServer::start(
            Some(ca.server_config(&["package.elm.test"], 90)),
            registry(false),
        )
        .await;
        let ctx = context(ca.roots(), sites("127.0.0.1", "127.0.0.1"), None);
        let out = check(server.addr.port(), "9.9.9")
            .run(&ctx, Target::Old)
            .await;
        assert_eq!(
            (out.outcome, out.failure),
            (Outcome::Failure, FailureKind::Missing),
            "{out:?}"
        );
    }

    #[tokio::test]
    async fn archive_on_another_host_is_resolved_not_pinned() {
        let ca = TestCa::new();
        let dns = crate::testutil::dns_responder().await;
        let archive = b"zipball bytes".to_vec();
        let hash = sha1_hex(&archive);
        let server = TestServer::start(
            Some(ca.server_config(&["package.elm.test", "other.test"], 90)),
            move |s: &Seen| {
                let port = s.headers["host"]
                    .rsplit(':')
                    .next()
                    .unwrap_or("")
                    .to_owned();
                match s.path.as_str() {
                    "/packages/elm/core/releases.json" => Reply::ok(r#"{"1.0.5":1}"#),
                    "/packages/elm/core/1.0.5/endpoint.json" => Reply::ok(format!(
                        r#"{{"url":"https://other.test:{port}/zipball","hash":"{hash}"}}"#
                    )),
                    "/zipball" => Reply::ok(archive.clone()),
                    "/all-packages" => Reply::ok("{}"),
                    _ => Reply::status(404),
                }
            },
        )
        .await;
        let ctx = context(ca.roots(), sites("127.0.0.1", "127.0.0.1"), Some(dns.addr));
        let out = check(server.addr.port(), "1.0.5")
            .run(&ctx, Target::New)
            .await;
        assert_eq!(out.outcome, Outcome::Success, "{out:?}");
        let d = detail(&out);
        assert!(
            d.archive_url.starts_with("https://other.test:"),
            "{}",
            d.archive_url
        );
        assert!(
            d.archive_timings.unwrap().resolve_us > 0,
            "other.test was looked up"
        );
        assert!(
            dns.rd_seen
                .lock()
                .unwrap()
                .iter()
                .any(|(n, _)| n == "other.test.")
        );
        let zip = server
            .requests()
            .into_iter()
            .find(|s| s.path == "/zipball")
            .unwrap();
        assert_eq!(zip.sni.as_deref(), Some("other.test"));
    }

    #[test]
    fn versions_sort_numerically() {
        assert!(parse_version("1.0.10") > parse_version("1.0.9"));
        assert_eq!(parse_version("1.0"), None);
        assert_eq!(parse_version("1.0.0.0"), None);
    }
}
