//! `registry_consistency`: every `author/name@version` the old registry lists
//! in `/all-packages` must exist on the new one. Elm clients keep a cursor into
//! the release history, so a new server with fewer releases breaks them.
//! Runs once per tick against both pinned sites; the result's target is `new`.

use std::collections::{BTreeMap, BTreeSet};

use cutover_proto::v1::{
    ConsistencyDetail, ConsistencyParams, FailureKind, Target, check_result::Detail,
};
use futures_util::future::BoxFuture;
use url::Url;

use super::{Check, CheckContext, CheckOutcome, Failed, fetch_ok, parse_json, parse_url};
use crate::net::HttpRequest;

/// How many missing releases are listed by name in the detail.
pub const MISSING_LISTED: usize = 20;

/// A validated `registry_consistency` check.
#[derive(Debug)]
pub struct ConsistencyCheck {
    all_packages: Url,
}

impl ConsistencyCheck {
    pub fn new(p: &ConsistencyParams) -> Result<Self, String> {
        let base = parse_url("registry_url", &p.registry_url)?;
        let all_packages = Url::parse(&format!(
            "{}/all-packages",
            base.as_str().trim_end_matches('/')
        ))
        .map_err(|e| format!("registry_url {:?}: {e}", p.registry_url))?;
        Ok(Self { all_packages })
    }

    async fn releases(
        &self,
        ctx: &CheckContext,
        target: Target,
    ) -> Result<BTreeSet<String>, Failed> {
        let route = ctx.route(target)?;
        let what = format!("POST /all-packages on {}", target.label());
        let resp = fetch_ok(
            ctx,
            HttpRequest::post_empty(self.all_packages.clone(), route),
            &what,
        )
        .await?;
        let all: BTreeMap<String, Vec<String>> = parse_json(&resp.body, &what)?;
        Ok(all
            .into_iter()
            .flat_map(|(pkg, versions)| versions.into_iter().map(move |v| format!("{pkg}@{v}")))
            .collect())
    }

    async fn run_inner(&self, ctx: &CheckContext) -> CheckOutcome {
        let (old, new) = futures_util::future::join(
            self.releases(ctx, Target::Old),
            self.releases(ctx, Target::New),
        )
        .await;
        let (old, new) = match (old, new) {
            (Ok(o), Ok(n)) => (o, n),
            (Err(e), _) | (_, Err(e)) => return e.into(),
        };
        let missing: Vec<&String> = old.difference(&new).collect();
        let detail = ConsistencyDetail {
            old_releases: count(old.len()),
            new_releases: count(new.len()),
            missing: missing
                .iter()
                .take(MISSING_LISTED)
                .map(|s| (*s).clone())
                .collect(),
            missing_total: count(missing.len()),
            only_on_new: count(new.difference(&old).count()),
        };
        if missing.is_empty() {
            return CheckOutcome::success(Some(Detail::RegistryConsistency(detail)));
        }
        let listed: Vec<&str> = missing.iter().take(5).map(|s| s.as_str()).collect();
        let more = if missing.len() > listed.len() {
            ", …"
        } else {
            ""
        };
        CheckOutcome::failure(
            FailureKind::Missing,
            format!(
                "new lacks {} release{}: {}{more}",
                missing.len(),
                if missing.len() == 1 { "" } else { "s" },
                listed.join(", ")
            ),
            Some(Detail::RegistryConsistency(detail)),
        )
    }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl Check for ConsistencyCheck {
    fn kind(&self) -> &'static str {
        "registry_consistency"
    }

    /// Compares old with new, so one run per tick, reported under `new`.
    fn targets(&self, _spec: &[Target]) -> Vec<Target> {
        vec![Target::New]
    }

    fn hosts(&self) -> Vec<String> {
        vec![super::url_host(&self.all_packages)]
    }

    /// One run reads `/all-packages` from both sites.
    fn sites(&self, _target: Target) -> Vec<Target> {
        vec![Target::Old, Target::New]
    }

    fn run<'a>(&'a self, ctx: &'a CheckContext, _target: Target) -> BoxFuture<'a, CheckOutcome> {
        Box::pin(self.run_inner(ctx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{Reply, TestCa, TestServer, context, sites};
    use cutover_proto::v1::Outcome;

    #[tokio::test]
    async fn missing_releases_on_new_are_named() {
        // Same port on two loopback addresses: only the pin tells them apart.
        let old = TestServer::start_on("127.0.0.1:0", None, |_| {
            Reply::ok(r#"{"elm/core":["1.0.0","1.0.5"],"elm/http":["1.0.0","2.0.0"],"elm/json":["1.1.3"]}"#)
        })
        .await;
        let port = old.addr.port();
        let new = TestServer::start_on(&format!("127.0.0.2:{port}"), None, |_| {
            Reply::ok(
                r#"{"elm/core":["1.0.0","1.0.5"],"elm/http":["1.0.0"],"elm/browser":["1.0.0"]}"#,
            )
        })
        .await;
        let ctx = context(TestCa::new().roots(), sites("127.0.0.1", "127.0.0.2"), None);
        let check = ConsistencyCheck::new(&ConsistencyParams {
            registry_url: format!("http://package.elm.test:{port}/"),
        })
        .unwrap();
        assert_eq!(
            check.targets(&[Target::Old, Target::Dns]),
            vec![Target::New]
        );
        let out = check.run(&ctx, Target::New).await;
        assert_eq!(
            (out.outcome, out.failure),
            (Outcome::Failure, FailureKind::Missing),
            "{out:?}"
        );
        assert_eq!(
            out.error,
            "new lacks 2 releases: elm/http@2.0.0, elm/json@1.1.3"
        );
        let Some(Detail::RegistryConsistency(d)) = out.detail else {
            panic!("no detail")
        };
        assert_eq!(
            (
                d.old_releases,
                d.new_releases,
                d.missing_total,
                d.only_on_new
            ),
            (5, 4, 2, 1)
        );
        assert_eq!(d.missing, vec!["elm/http@2.0.0", "elm/json@1.1.3"]);
        assert_eq!(old.requests()[0].method, "POST");
        assert_eq!(new.requests().len(), 1);
    }
}
