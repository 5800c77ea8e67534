//! The operator's view through `AdminService`, the same API `cutover status`
//! uses, for assertions on exact figures; the CLI itself is exercised too.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use cutover_proto::v1::admin_service_client::AdminServiceClient;
use cutover_proto::v1::{ListProbesRequest, ProbeInfo, StatusReply, StatusRequest};

/// Where AdminService is and how to trust it.
#[derive(Debug, Clone)]
pub struct AdminTarget {
    /// Its address.
    pub addr: SocketAddr,
    /// PEM of the CA that signed its certificate; `None` = plaintext.
    pub ca_pem: Option<String>,
    /// The admin token.
    pub token: String,
}

/// Calls `AdminService.Status`.
pub async fn status(t: &AdminTarget) -> anyhow::Result<StatusReply> {
    let mut client = connect(t).await?;
    let token = t.token.as_str();
    let reply = client
        .status(authorized(StatusRequest {}, token)?)
        .await
        .context("AdminService.Status")?;
    Ok(reply.into_inner())
}

/// Calls `AdminService.ListProbes`.
pub async fn probes(t: &AdminTarget) -> anyhow::Result<Vec<ProbeInfo>> {
    let mut client = connect(t).await?;
    let token = t.token.as_str();
    let reply = client
        .list_probes(authorized(ListProbesRequest {}, token)?)
        .await
        .context("AdminService.ListProbes")?;
    Ok(reply.into_inner().probes)
}

async fn connect(t: &AdminTarget) -> anyhow::Result<AdminServiceClient<tonic::transport::Channel>> {
    let addr = t.addr;
    let scheme = if t.ca_pem.is_some() { "https" } else { "http" };
    let mut endpoint = tonic::transport::Endpoint::from_shared(format!("{scheme}://{addr}"))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10));
    if let Some(pem) = &t.ca_pem {
        endpoint = endpoint.tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(pem)),
        )?;
    }
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
