//! The operator's view through `AdminService`, the same API `cutover status`
//! uses, for assertions on exact figures; the CLI itself is exercised too.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use cutover_proto::v1::admin_service_client::AdminServiceClient;
use cutover_proto::v1::{ListProbesRequest, ProbeInfo, StatusReply, StatusRequest};

/// Calls `AdminService.Status` over plaintext gRPC (admin listens on loopback).
pub async fn status(addr: SocketAddr, token: &str) -> anyhow::Result<StatusReply> {
    let mut client = connect(addr).await?;
    let reply = client
        .status(authorized(StatusRequest {}, token)?)
        .await
        .context("AdminService.Status")?;
    Ok(reply.into_inner())
}

/// Calls `AdminService.ListProbes`.
pub async fn probes(addr: SocketAddr, token: &str) -> anyhow::Result<Vec<ProbeInfo>> {
    let mut client = connect(addr).await?;
    let reply = client
        .list_probes(authorized(ListProbesRequest {}, token)?)
        .await
        .context("AdminService.ListProbes")?;
    Ok(reply.into_inner().probes)
}

async fn connect(
    addr: SocketAddr,
) -> anyhow::Result<AdminServiceClient<tonic::transport::Channel>> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10));
    let channel = endpoint
        .connect()
        .await
        .with_context(|| format!("connecting to AdminService at {addr}"))?;
    Ok(AdminServiceClient::new(channel))
}

fn authorized<T>(msg: T, token: &str) -> anyhow::Result<tonic::Request<T>> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", token.trim())
            .parse()
            .context("admin token is not valid metadata")?,
    );
    Ok(req)
}
