//! `http`: one request, checked for status, body (substring / regex) and
//! headers, with phase timings and the SHA-256 of the decoded body.

use std::collections::BTreeMap;

use cutover_proto::v1::{FailureKind, HttpDetail, HttpParams, Target, check_result::Detail};
use futures_util::future::BoxFuture;
use http::Method;
use url::Url;

use super::{Check, CheckContext, CheckOutcome, parse_url, sha256_hex};
use crate::net::HttpRequest;

/// A validated `http` check.
#[derive(Debug)]
pub struct HttpCheck {
    url: Url,
    method: Method,
    expect_status: Vec<u16>,
    body_contains: String,
    body_regex: Option<regex_lite::Regex>,
    expect_headers: BTreeMap<String, String>,
    headers: Vec<(String, String)>,
}

impl HttpCheck {
    pub fn new(p: &HttpParams) -> Result<Self, String> {
        let url = parse_url("http url", &p.url)?;
        let method = if p.method.is_empty() {
            Method::GET
        } else {
            Method::from_bytes(p.method.to_ascii_uppercase().as_bytes())
                .map_err(|_| format!("http method {:?} is invalid", p.method))?
        };
        let mut expect_status = Vec::new();
        for s in &p.expect_status {
            expect_status.push(
                u16::try_from(*s)
                    .ok()
                    .filter(|s| (100..600).contains(s))
                    .ok_or_else(|| format!("expect_status {s} is not an HTTP status"))?,
            );
        }
        if expect_status.is_empty() {
            expect_status.push(200);
        }
        let body_regex = if p.body_regex.is_empty() {
            None
        } else {
            Some(
                regex_lite::Regex::new(&p.body_regex)
                    .map_err(|e| format!("body_regex {:?} is invalid: {e}", p.body_regex))?,
            )
        };
        Ok(Self {
            url,
            method,
            expect_status,
            body_contains: p.body_contains.clone(),
            body_regex,
            expect_headers: p
                .expect_headers
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                .collect(),
            headers: p
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        })
    }

    async fn run_inner(&self, ctx: &CheckContext, target: Target) -> CheckOutcome {
        let route = match ctx.route(target) {
            Ok(r) => r,
            Err(f) => return f.into(),
        };
        let req = HttpRequest {
            method: self.method.clone(),
            headers: self.headers.clone(),
            ..HttpRequest::get(self.url.clone(), route)
        };
        let resp = match ctx.http.send(req).await {
            Ok(r) => r,
            Err(e) => return CheckOutcome::net(&e, None),
        };
        let detail = Some(Detail::Http(HttpDetail {
            status: u32::from(resp.status),
            timings: Some(resp.timings.to_proto()),
            body_bytes: resp.body.len() as u64,
            remote_addr: resp.remote_addr.to_string(),
            content_sha256: sha256_hex(&resp.body),
        }));
        let what = format!("{} {} ({})", self.method, self.url, target.label());
        if !self.expect_status.contains(&resp.status) {
            return CheckOutcome::failure(
                FailureKind::HttpStatus,
                format!(
                    "{what}: status {}, expected {:?}",
                    resp.status, self.expect_status
                ),
                detail,
            );
        }
        if !self.body_contains.is_empty() || self.body_regex.is_some() {
            let text = String::from_utf8_lossy(&resp.body);
            if !self.body_contains.is_empty() && !text.contains(&self.body_contains) {
                return CheckOutcome::failure(
                    FailureKind::Body,
                    format!("{what}: body does not contain {:?}", self.body_contains),
                    detail,
                );
            }
            if let Some(re) = &self.body_regex
                && !re.is_match(&text)
            {
                return CheckOutcome::failure(
                    FailureKind::Body,
                    format!("{what}: body does not match /{}/", re.as_str()),
                    detail,
                );
            }
        }
        for (name, want) in &self.expect_headers {
            let got = resp
                .headers
                .get(name.as_str())
                .and_then(|v| v.to_str().ok());
            if got != Some(want.as_str()) {
                return CheckOutcome::failure(
                    FailureKind::Header,
                    format!("{what}: header {name} is {got:?}, expected {want:?}"),
                    detail,
                );
            }
        }
        CheckOutcome::success(detail)
    }
}

impl Check for HttpCheck {
    fn kind(&self) -> &'static str {
        "http"
    }

    /// The URL's host, and a `Host` header's if the spec sets one (it would
    /// otherwise send the request to an allowed address for another host).
    fn hosts(&self) -> Vec<String> {
        let mut h = vec![super::url_host(&self.url)];
        for (name, value) in &self.headers {
            if name.eq_ignore_ascii_case("host") {
                let v = value.trim();
                let host = match v.strip_prefix('[') {
                    Some(rest) => rest.split(']').next().unwrap_or(""),
                    None => v.split(':').next().unwrap_or(""),
                };
                h.push(host.to_owned());
            }
        }
        h
    }

    fn run<'a>(&'a self, ctx: &'a CheckContext, target: Target) -> BoxFuture<'a, CheckOutcome> {
        Box::pin(self.run_inner(ctx, target))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::Sites;
    use crate::testutil::{Reply, TestCa, TestServer, context, sites};
    use cutover_proto::v1::Outcome;

    #[test]
    fn a_host_header_is_screened_like_the_url_host() {
        let mut p = params("https://package.elm.test:8443/x".into());
        p.headers.insert("HOST".into(), "evil.example:8443".into());
        let check = HttpCheck::new(&p).unwrap();
        assert_eq!(check.hosts(), vec!["package.elm.test", "evil.example"]);
    }

    fn params(url: String) -> HttpParams {
        HttpParams {
            url,
            ..Default::default()
        }
    }

    fn http_detail(o: &CheckOutcome) -> HttpDetail {
        match &o.detail {
            Some(Detail::Http(d)) => d.clone(),
            other => panic!("no http detail: {other:?}"),
        }
    }

    #[tokio::test]
    async fn pinned_https_keeps_sni_times_phases_and_decodes_gzip() {
        let ca = TestCa::new();
        let page = b"<html>Browse Elm packages</html>".repeat(50);
        let page2 = page.clone();
        let server = TestServer::start(
            Some(ca.server_config(&["package.elm.test"], 90)),
            move |_| Reply::gzip(&page2).header("x-served-by", "new"),
        )
        .await;
        // The hostname does not resolve at all: only the pin can reach it.
        let url = format!("https://package.elm.test:{}/", server.addr.port());
        let mut p = params(url);
        p.body_regex = "Browse Elm".into();
        p.expect_headers.insert("X-Served-By".into(), "new".into());
        let check = HttpCheck::new(&p).unwrap();
        let ctx = context(ca.roots(), sites("127.0.0.1", "127.0.0.1"), None);
        let out = check.run(&ctx, Target::New).await;
        assert_eq!(out.outcome, Outcome::Success, "{out:?}");
        let d = http_detail(&out);
        assert_eq!(d.status, 200);
        assert_eq!(d.body_bytes, page.len() as u64, "body must be decoded");
        assert_eq!(d.content_sha256, sha256_hex(&page));
        assert_eq!(d.remote_addr, server.addr.to_string());
        let t = d.timings.unwrap();
        assert!(
            t.connect_us > 0 && t.tls_us > 0 && t.first_byte_us > 0,
            "{t:?}"
        );
        let seen = server.requests();
        assert_eq!(seen[0].sni.as_deref(), Some("package.elm.test"));
        assert_eq!(
            seen[0].headers["host"],
            format!("package.elm.test:{}", server.addr.port())
        );
        assert_eq!(seen[0].headers["accept-encoding"], "gzip");
        assert!(seen[0].headers["user-agent"].starts_with("cutover-probe/"));
    }

    #[tokio::test]
    async fn status_body_and_header_mismatches_fail_with_their_kind() {
        let server = TestServer::start(None, |s| match s.path.as_str() {
            "/down" => Reply::status(503),
            _ => Reply::ok("hello").header("x-v", "1"),
        })
        .await;
        let base = format!("http://site.test:{}", server.addr.port());
        let ctx = context(TestCa::new().roots(), sites("127.0.0.1", "127.0.0.1"), None);

        let out = HttpCheck::new(&params(format!("{base}/down")))
            .unwrap()
            .run(&ctx, Target::Old)
            .await;
        assert_eq!(
            (out.outcome, out.failure),
            (Outcome::Failure, FailureKind::HttpStatus)
        );
        assert!(out.error.contains("503"), "{}", out.error);

        let mut p = params(format!("{base}/"));
        p.body_contains = "goodbye".into();
        let out = HttpCheck::new(&p).unwrap().run(&ctx, Target::Old).await;
        assert_eq!(out.failure, FailureKind::Body);

        let mut p = params(format!("{base}/"));
        p.expect_headers.insert("x-v".into(), "2".into());
        let out = HttpCheck::new(&p).unwrap().run(&ctx, Target::Old).await;
        assert_eq!(out.failure, FailureKind::Header);
    }

    #[tokio::test]
    async fn untrusted_certificate_is_a_tls_failure() {
        let server_ca = TestCa::new();
        let server = TestServer::start(Some(server_ca.server_config(&["site.test"], 90)), |_| {
            Reply::ok("x")
        })
        .await;
        let ctx = context(TestCa::new().roots(), sites("127.0.0.1", "127.0.0.1"), None);
        let p = params(format!("https://site.test:{}/", server.addr.port()));
        let out = HttpCheck::new(&p).unwrap().run(&ctx, Target::New).await;
        assert_eq!(out.failure, FailureKind::Tls, "{out:?}");
    }

    #[tokio::test]
    async fn follows_redirects_on_the_same_pinned_host() {
        let server = TestServer::start(None, |s| match s.path.as_str() {
            "/a" => Reply::status(302).header("location", "/b"),
            "/b" => Reply::status(301).header("location", "/c?x=1"),
            "/c?x=1" => Reply::ok("landed"),
            _ => Reply::status(404),
        })
        .await;
        let ctx = context(TestCa::new().roots(), sites("127.0.0.1", "127.0.0.1"), None);
        let mut p = params(format!("http://site.test:{}/a", server.addr.port()));
        p.body_contains = "landed".into();
        let out = HttpCheck::new(&p).unwrap().run(&ctx, Target::Old).await;
        assert_eq!(out.outcome, Outcome::Success, "{out:?}");
        assert_eq!(server.requests().len(), 3);
    }

    #[tokio::test]
    async fn endless_redirects_fail() {
        let server =
            TestServer::start(None, |_| Reply::status(302).header("location", "/again")).await;
        let ctx = context(TestCa::new().roots(), sites("127.0.0.1", "127.0.0.1"), None);
        let p = params(format!("http://site.test:{}/", server.addr.port()));
        let out = HttpCheck::new(&p).unwrap().run(&ctx, Target::Old).await;
        assert_eq!(out.failure, FailureKind::Protocol);
        assert!(out.error.contains("redirects"), "{}", out.error);
    }

    #[tokio::test]
    async fn target_dns_resolves_and_cross_host_redirect_drops_the_pin() {
        let dns = crate::testutil::dns_responder().await;
        let server = TestServer::start(None, |s| match s.path.as_str() {
            "/start" => Reply::status(307).header(
                "location",
                &format!(
                    "http://other.test:{}/end",
                    s.headers["host"].rsplit(':').next().unwrap()
                ),
            ),
            "/end" => Reply::ok("arrived"),
            _ => Reply::status(404),
        })
        .await;
        // Target dns: site.test resolves (via the test resolver) to 127.0.0.1.
        let ctx = context(TestCa::new().roots(), Sites::default(), Some(dns.addr));
        let p = params(format!("http://site.test:{}/end", server.addr.port()));
        let out = HttpCheck::new(&p).unwrap().run(&ctx, Target::Dns).await;
        assert_eq!(out.outcome, Outcome::Success, "{out:?}");
        assert!(http_detail(&out).timings.unwrap().resolve_us > 0);

        // Pinned for site.test; the redirect to other.test must be resolved
        // through DNS rather than follow the pin.
        let ctx = context(
            TestCa::new().roots(),
            sites("127.0.0.1", "127.0.0.1"),
            Some(dns.addr),
        );
        let p = params(format!("http://site.test:{}/start", server.addr.port()));
        let out = HttpCheck::new(&p).unwrap().run(&ctx, Target::New).await;
        assert_eq!(out.outcome, Outcome::Success, "{out:?}");
        let seen = server.requests();
        assert_eq!(
            seen.last().unwrap().headers["host"],
            format!("other.test:{}", server.addr.port())
        );
        assert!(
            dns.rd_seen
                .lock()
                .unwrap()
                .iter()
                .any(|(n, _)| n == "other.test.")
        );
    }

    #[tokio::test]
    async fn a_dead_pinned_address_falls_through_to_the_next() {
        let server = TestServer::start(None, |_| Reply::ok("up")).await;
        let sites = Sites {
            old: vec![],
            // Nothing listens on 127.0.0.3 at this port: refused, then the next.
            new: vec!["127.0.0.3".parse().unwrap(), "127.0.0.1".parse().unwrap()],
        };
        let ctx = context(TestCa::new().roots(), sites, None);
        let p = params(format!("http://site.test:{}/", server.addr.port()));
        let check = HttpCheck::new(&p).unwrap();
        let out = check.run(&ctx, Target::New).await;
        assert_eq!(out.outcome, Outcome::Success, "{out:?}");
        assert_eq!(http_detail(&out).remote_addr, server.addr.to_string());
        // Old has no address in this assignment: a clear failure, not a panic.
        let out = check.run(&ctx, Target::Old).await;
        assert!(
            out.error.contains("no address for site old"),
            "{}",
            out.error
        );
    }

    #[test]
    fn invalid_params_are_rejected_with_a_reason() {
        let mut p = params("https://x.test/".into());
        p.body_regex = "(".into();
        assert!(HttpCheck::new(&p).unwrap_err().contains("body_regex"));
        assert!(HttpCheck::new(&params("nope".into())).is_err());
    }
}
