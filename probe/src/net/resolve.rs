//! The probe's own resolver: what users in this region get. Built from
//! `/etc/resolv.conf` or from `--resolver`, with caching off so every check
//! hits the wire and sees the resolver's current answer.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;

/// Failure to set up or use the resolver.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("cannot read the system resolver configuration (/etc/resolv.conf): {0}")]
    SystemConfig(String),
    #[error("cannot build the resolver: {0}")]
    Build(String),
    #[error("resolving {host}: {message}")]
    Lookup { host: String, message: String },
    #[error("resolving {host}: no addresses")]
    NoAddress { host: String },
}

/// A hickory resolver plus the server addresses it uses (the DNS check queries
/// those servers directly to read rcode and TTL).
#[derive(Clone)]
pub struct SystemResolver {
    inner: TokioResolver,
    servers: Vec<SocketAddr>,
}

impl std::fmt::Debug for SystemResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SystemResolver")
            .field("servers", &self.servers)
            .finish_non_exhaustive()
    }
}

impl SystemResolver {
    /// `/etc/resolv.conf`, or the single server `over` when given.
    pub fn new(over: Option<SocketAddr>) -> Result<Self, ResolveError> {
        match over {
            Some(addr) => Self::with_server(addr),
            None => Self::from_system(),
        }
    }

    /// The system configuration.
    pub fn from_system() -> Result<Self, ResolveError> {
        let (config, opts) = hickory_resolver::system_conf::read_system_conf()
            .map_err(|e| ResolveError::SystemConfig(e.to_string()))?;
        let servers = config
            .name_servers()
            .iter()
            .map(|ns| {
                let port = ns.connections.first().map_or(53, |c| c.port);
                SocketAddr::new(ns.ip, port)
            })
            .collect();
        Self::build(config, opts, servers)
    }

    /// One server, UDP with TCP fallback, on its own port (tests use port 0 servers).
    pub fn with_server(addr: SocketAddr) -> Result<Self, ResolveError> {
        let mut udp = ConnectionConfig::udp();
        udp.port = addr.port();
        let mut tcp = ConnectionConfig::tcp();
        tcp.port = addr.port();
        let ns = NameServerConfig::new(addr.ip(), true, vec![udp, tcp]);
        let config = ResolverConfig::from_name_servers(vec![ns]);
        Self::build(config, ResolverOpts::default(), vec![addr])
    }

    fn build(
        config: ResolverConfig,
        mut opts: ResolverOpts,
        servers: Vec<SocketAddr>,
    ) -> Result<Self, ResolveError> {
        // No cache: a check must see what the resolver says now, not what we
        // remembered. A before AAAA, because the sites are usually IPv4-first.
        opts.cache_size = 0;
        opts.ip_strategy = LookupIpStrategy::Ipv4thenIpv6;
        opts.timeout = opts.timeout.min(Duration::from_secs(5));
        let mut builder = hickory_resolver::Resolver::builder_with_config(
            config,
            TokioRuntimeProvider::default(),
        );
        *builder.options_mut() = opts;
        let inner = builder
            .build()
            .map_err(|e| ResolveError::Build(e.to_string()))?;
        Ok(Self { inner, servers })
    }

    /// The resolver's servers, in configuration order.
    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    /// Addresses of `host` (an IP literal is returned as is).
    pub async fn lookup_ip(&self, host: &str) -> Result<Vec<IpAddr>, ResolveError> {
        if let Ok(ip) = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            return Ok(vec![ip]);
        }
        // A trailing dot makes the name absolute, so no search domain is tried.
        let fqdn = if host.ends_with('.') {
            host.to_owned()
        } else {
            format!("{host}.")
        };
        let lookup =
            self.inner
                .lookup_ip(fqdn.as_str())
                .await
                .map_err(|e| ResolveError::Lookup {
                    host: host.to_owned(),
                    message: e.to_string(),
                })?;
        let ips: Vec<IpAddr> = lookup.iter().collect();
        if ips.is_empty() {
            return Err(ResolveError::NoAddress {
                host: host.to_owned(),
            });
        }
        Ok(ips)
    }
}
