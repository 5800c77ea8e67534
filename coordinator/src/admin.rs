//! `AdminService`: the operator's API behind `cutover status`, `cutover probes`,
//! `cutover probe enrol` and `cutover probe revoke`.
//!
//! Guarded by the admin token (`data_dir/admin.token`); a probe token is
//! refused because only the admin token's hash is accepted here.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use cutover_proto::v1;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::admin_plan as plan;
use crate::auth::{self, TokenHash};
use crate::evidence::{Windows, lock, now_ms};
use crate::metrics::{self as m, reject};
use crate::registry::Registry;
use crate::rpc::store_status;
use crate::store::Store;

/// The `AdminService` implementation.
#[derive(Clone)]
pub struct AdminApi {
    /// Registry and batches.
    pub store: Arc<dyn Store>,
    /// Live probes.
    pub registry: Arc<Registry>,
    /// The evidence windows.
    pub windows: Windows,
    /// Current assignment (for check kinds and the config version).
    pub assignment: watch::Receiver<Arc<v1::Assignment>>,
    /// The plan engine (`None`: plan RPCs answer `unavailable`).
    pub engine: Option<crate::engine::Engine>,
}

/// Builds the interceptor that admits only calls bearing the admin token.
pub fn interceptor(
    admin_token: &str,
) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone + Send + Sync + 'static {
    let expected: TokenHash = auth::hash_token(admin_token);
    move |req: Request<()>| {
        let presented = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(auth::bearer)
            .map(auth::hash_token);
        match presented {
            // Comparing SHA-256 digests, not the token: an early-exit compare leaks
            // nothing useful, since the attacker cannot steer the digest's bytes.
            Some(h) if h == expected => Ok(req),
            Some(_) => {
                m::rejected(reject::BAD_ADMIN_TOKEN);
                Err(Status::unauthenticated(
                    "wrong admin token: use the token in data_dir/admin.token (probe tokens do not open the admin service)",
                ))
            }
            None => {
                m::rejected(reject::BAD_ADMIN_TOKEN);
                Err(Status::unauthenticated(
                    "missing `authorization: Bearer <admin token>` metadata: pass --admin-token-file or --config",
                ))
            }
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("storage task failed: {e}")))?
        .map_err(store_status)
}

#[tonic::async_trait]
impl v1::admin_service_server::AdminService for AdminApi {
    async fn status(
        &self,
        _request: Request<v1::StatusRequest>,
    ) -> Result<Response<v1::StatusReply>, Status> {
        let assignment = self.assignment.borrow().clone();
        let kinds: HashMap<&str, &str> = assignment
            .checks
            .iter()
            .map(|c| (c.id.as_str(), c.kind.as_str()))
            .collect();
        let (snapshot, window_secs) = {
            let mut agg = lock(&self.windows);
            (agg.snapshot(now_ms()), agg.window_secs())
        };
        let store = self.store.clone();
        let probes = blocking(move || store.list_probes()).await?;
        let connected = self.registry.connected_per_region();

        let mut regions: BTreeSet<String> = probes
            .iter()
            .filter(|p| p.revoked_unix_ms.is_none())
            .map(|p| p.region.clone())
            .collect();
        regions.extend(connected.keys().cloned());
        let mut checks: BTreeMap<String, Vec<v1::CheckStatus>> = BTreeMap::new();
        let dns: HashMap<(&str, &str), &crate::aggregate::DnsStats> = snapshot
            .dns
            .iter()
            .map(|d| ((d.check.as_str(), d.region.as_str()), d))
            .collect();
        for s in &snapshot.series {
            regions.insert(s.key.region.clone());
            let mut cs = v1::CheckStatus {
                check_id: s.key.check.clone(),
                kind: kinds
                    .get(s.key.check.as_str())
                    .copied()
                    .unwrap_or("")
                    .to_string(),
                target: s.key.target.to_string(),
                samples: s.samples,
                failures: s.failures,
                hard_failures: s.hard_failures,
                distinct_probes: s.probes,
                p50_ms: s.p50_ms.unwrap_or(0.0),
                p95_ms: s.p95_ms.unwrap_or(0.0),
                last_error: s.last_error.clone(),
                ..Default::default()
            };
            if let Some(d) = dns.get(&(s.key.check.as_str(), s.key.region.as_str())) {
                cs.share_old = d.share_old;
                cs.share_new = d.share_new;
                cs.share_mixed = d.share_mixed;
                cs.share_other = d.share_other;
            }
            checks.entry(s.key.region.clone()).or_default().push(cs);
        }
        let regions = regions
            .into_iter()
            .map(|region| v1::RegionStatus {
                probes_connected: connected.get(&region).copied().unwrap_or(0),
                checks: checks.remove(&region).unwrap_or_default(),
                region,
            })
            .collect();
        Ok(Response::new(v1::StatusReply {
            window_seconds: window_secs,
            regions,
            config_version: assignment.config_version,
        }))
    }

    async fn list_probes(
        &self,
        _request: Request<v1::ListProbesRequest>,
    ) -> Result<Response<v1::ListProbesReply>, Status> {
        let store = self.store.clone();
        let records = blocking(move || store.list_probes()).await?;
        let live = self.registry.snapshot();
        let probes = records
            .into_iter()
            .map(|p| {
                let l = live.get(&p.id);
                v1::ProbeInfo {
                    connected: l.is_some_and(|l| l.connected),
                    last_seen_unix_ms: l
                        .map(|l| l.last_seen_unix_ms)
                        .into_iter()
                        .chain(p.last_seen_unix_ms)
                        .max()
                        .unwrap_or(0),
                    version: l
                        .map(|l| l.version.clone())
                        .filter(|v| !v.is_empty())
                        .unwrap_or(p.version),
                    peer: l.map(|l| l.peer.clone()).unwrap_or_default(),
                    enrolled_unix_ms: p.enrolled_unix_ms,
                    revoked: p.revoked_unix_ms.is_some(),
                    stored_seq: p.stored_seq,
                    probe_id: p.id,
                    region: p.region,
                }
            })
            .collect();
        Ok(Response::new(v1::ListProbesReply { probes }))
    }

    async fn enrol_probe(
        &self,
        request: Request<v1::EnrolProbeRequest>,
    ) -> Result<Response<v1::EnrolProbeReply>, Status> {
        let req = request.into_inner();
        let store = self.store.clone();
        let e = blocking(move || store.enrol(&req.region, &req.note, now_ms())).await?;
        // A new region appears as 0 connected until its probe dials in.
        if !self
            .registry
            .connected_per_region()
            .contains_key(&e.probe.region)
        {
            metrics::gauge!(m::PROBES_CONNECTED, m::label::REGION => e.probe.region.clone())
                .increment(0.0);
        }
        // Never log the token: it is shown to the operator once, in the reply.
        tracing::info!(probe = %e.probe.id, region = %e.probe.region, "probe enrolled");
        Ok(Response::new(v1::EnrolProbeReply {
            probe_id: e.probe.id,
            region: e.probe.region,
            token: e.token,
        }))
    }

    async fn revoke_probe(
        &self,
        request: Request<v1::RevokeProbeRequest>,
    ) -> Result<Response<v1::RevokeProbeReply>, Status> {
        let id = request.into_inner().probe_id;
        let store = self.store.clone();
        let id2 = id.clone();
        let known = blocking(move || store.probe(&id2)).await?;
        if known.is_none() {
            return Err(Status::not_found(format!(
                "no probe with id {id:?}; `cutover probes` lists them"
            )));
        }
        let store = self.store.clone();
        let id2 = id.clone();
        let was_active = blocking(move || store.revoke(&id2, now_ms())).await?;
        // A revoked probe must stop being trusted now, not at its next reconnect.
        self.registry.kick(&id);
        tracing::info!(probe = %id, was_active, "probe revoked");
        Ok(Response::new(v1::RevokeProbeReply { was_active }))
    }

    async fn start_plan(
        &self,
        request: Request<v1::StartPlanRequest>,
    ) -> Result<Response<v1::StartPlanReply>, Status> {
        plan::start(&self.engine, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn plan_status(
        &self,
        request: Request<v1::PlanStatusRequest>,
    ) -> Result<Response<v1::PlanStatusReply>, Status> {
        plan::plan_status(&self.engine, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn approve(
        &self,
        request: Request<v1::ApproveRequest>,
    ) -> Result<Response<v1::PlanControlReply>, Status> {
        plan::approve(&self.engine, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn pause(
        &self,
        _request: Request<v1::PauseRequest>,
    ) -> Result<Response<v1::PlanControlReply>, Status> {
        plan::pause(&self.engine).await.map(Response::new)
    }

    async fn resume(
        &self,
        _request: Request<v1::ResumeRequest>,
    ) -> Result<Response<v1::PlanControlReply>, Status> {
        plan::resume(&self.engine).await.map(Response::new)
    }

    async fn abort(
        &self,
        request: Request<v1::AbortRequest>,
    ) -> Result<Response<v1::PlanControlReply>, Status> {
        plan::abort(&self.engine, &request.into_inner().reason)
            .await
            .map(Response::new)
    }

    async fn rollback(
        &self,
        request: Request<v1::RollbackRequest>,
    ) -> Result<Response<v1::PlanControlReply>, Status> {
        plan::rollback(&self.engine, &request.into_inner().reason)
            .await
            .map(Response::new)
    }

    async fn history(
        &self,
        request: Request<v1::HistoryRequest>,
    ) -> Result<Response<v1::HistoryReply>, Status> {
        plan::history(&self.engine, request.into_inner())
            .await
            .map(Response::new)
    }
}
