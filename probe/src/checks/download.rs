//! `download`: fetch a URL and compare its SHA-256 and size with what is expected.

use cutover_proto::v1::{
    DownloadDetail, DownloadParams, FailureKind, Target, check_result::Detail,
};
use futures_util::future::BoxFuture;
use url::Url;

use super::{Check, CheckContext, CheckOutcome, parse_url, sha256_hex};
use crate::net::HttpRequest;

/// A validated `download` check.
#[derive(Debug)]
pub struct DownloadCheck {
    url: Url,
    sha256: Option<String>,
    size: Option<u64>,
}

impl DownloadCheck {
    pub fn new(p: &DownloadParams) -> Result<Self, String> {
        let url = parse_url("download url", &p.url)?;
        let sha256 = match p.sha256.trim().to_ascii_lowercase() {
            s if s.is_empty() => None,
            s if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) => Some(s),
            s => return Err(format!("sha256 {s:?}: expected 64 hex digits")),
        };
        Ok(Self {
            url,
            sha256,
            size: (p.size > 0).then_some(p.size),
        })
    }

    async fn run_inner(&self, ctx: &CheckContext, target: Target) -> CheckOutcome {
        let route = match ctx.route(target) {
            Ok(r) => r,
            Err(f) => return f.into(),
        };
        let resp = match ctx
            .http
            .send(HttpRequest::get(self.url.clone(), route))
            .await
        {
            Ok(r) => r,
            Err(e) => return CheckOutcome::net(&e, None),
        };
        let actual = sha256_hex(&resp.body);
        let size = resp.body.len() as u64;
        let detail = Some(Detail::Download(DownloadDetail {
            sha256: actual.clone(),
            size,
            timings: Some(resp.timings.to_proto()),
        }));
        if resp.status != 200 {
            return CheckOutcome::failure(
                FailureKind::HttpStatus,
                format!(
                    "download {} ({}): status {}",
                    self.url,
                    target.label(),
                    resp.status
                ),
                detail,
            );
        }
        if let Some(want) = &self.sha256
            && *want != actual
        {
            return CheckOutcome::failure(
                FailureKind::HashMismatch,
                format!(
                    "download {}: SHA-256 is {actual}, expected {want}",
                    self.url
                ),
                detail,
            );
        }
        if let Some(want) = self.size
            && want != size
        {
            return CheckOutcome::failure(
                FailureKind::SizeMismatch,
                format!("download {}: {size} bytes, expected {want}", self.url),
                detail,
            );
        }
        CheckOutcome::success(detail)
    }
}

impl Check for DownloadCheck {
    fn kind(&self) -> &'static str {
        "download"
    }

    fn hosts(&self) -> Vec<String> {
        vec![super::url_host(&self.url)]
    }

    fn run<'a>(&'a self, ctx: &'a CheckContext, target: Target) -> BoxFuture<'a, CheckOutcome> {
        Box::pin(self.run_inner(ctx, target))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{Reply, TestCa, TestServer, context, sites};
    use cutover_proto::v1::Outcome;

    #[tokio::test]
    async fn hash_and_size_are_checked() {
        let server = TestServer::start(None, |_| Reply::ok("twelve bytes")).await;
        let ctx = context(TestCa::new().roots(), sites("127.0.0.1", "127.0.0.1"), None);
        let url = format!("http://dl.test:{}/f", server.addr.port());
        let good = DownloadCheck::new(&DownloadParams {
            url: url.clone(),
            sha256: sha256_hex(b"twelve bytes").to_uppercase(),
            size: 12,
        })
        .unwrap();
        assert_eq!(good.run(&ctx, Target::Old).await.outcome, Outcome::Success);

        let bad_hash = DownloadCheck::new(&DownloadParams {
            url: url.clone(),
            sha256: sha256_hex(b"other"),
            size: 0,
        })
        .unwrap();
        assert_eq!(
            bad_hash.run(&ctx, Target::Old).await.failure,
            FailureKind::HashMismatch
        );

        let bad_size = DownloadCheck::new(&DownloadParams {
            url,
            sha256: String::new(),
            size: 13,
        })
        .unwrap();
        assert_eq!(
            bad_size.run(&ctx, Target::Old).await.failure,
            FailureKind::SizeMismatch
        );
    }
}
