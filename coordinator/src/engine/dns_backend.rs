//! The real [`DnsBackend`]: the plan's provider ([`crate::dns::build`]) and
//! read-after-write at the zone's authoritative servers ([`crate::dns::verify`]).

use std::net::SocketAddr;
use std::time::Duration;

use super::{DnsBackend, plan_dir};
use crate::dns::{self, BoxFuture, RecordSet, VerifyOptions};
use crate::plan::Plan;

/// Providers and verification as configured in the plan's `[dns]`.
#[derive(Debug, Default)]
pub struct RealDns;

async fn nameservers(plan: &Plan) -> Result<Vec<SocketAddr>, String> {
    if !plan.dns.nameservers.is_empty() {
        return Ok(plan.dns.nameservers.clone());
    }
    let resolver = dns::system_resolver()?;
    dns::discover_nameservers(&plan.dns.zone, resolver).await
}

impl DnsBackend for RealDns {
    fn manual_instructions(
        &self,
        plan: &Plan,
        desired: &[RecordSet],
    ) -> Result<Option<String>, String> {
        let p = dns::build(&plan.dns.provider, &plan.dns.zone, plan_dir(plan))?;
        let parts: Vec<String> = desired
            .iter()
            .filter_map(|d| p.manual_instructions(d))
            .collect();
        Ok((!parts.is_empty()).then(|| parts.join("\n")))
    }

    fn apply_and_verify<'a>(
        &'a self,
        plan: &'a Plan,
        desired: &'a [RecordSet],
        deadline: Duration,
    ) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move {
            let p = dns::build(&plan.dns.provider, &plan.dns.zone, plan_dir(plan))?;
            // Every record of the switch first, then verify them together: a
            // crash in between leaves a desired state that repeating reaches.
            for d in desired {
                p.apply(d)
                    .await
                    .map_err(|e| format!("applying {}: {e}", d.describe()))?;
            }
            let ns = nameservers(plan).await?;
            let opts = VerifyOptions {
                check_ttl: p.sets_ttl(),
                ..VerifyOptions::default()
            };
            let checks = desired
                .iter()
                .map(|d| dns::verify_with(&ns, d, deadline, opts));
            let results = futures_util::future::join_all(checks).await;
            let mut bad = Vec::new();
            for (d, v) in desired.iter().zip(&results) {
                let agrees = if opts.check_ttl {
                    v.agrees_with(d)
                } else {
                    v.agrees_on_values(d)
                };
                if !agrees {
                    bad.push(format!(
                        "{}: {}",
                        d.describe(),
                        v.disagreements(d, opts.check_ttl).join(", ")
                    ));
                }
            }
            if !bad.is_empty() {
                return Err(format!(
                    "the authoritative servers do not all serve the change: {}",
                    bad.join("; ")
                ));
            }
            Ok(format!(
                "{} record set(s) served by {} authoritative server(s)",
                desired.len(),
                ns.len()
            ))
        })
    }
}
