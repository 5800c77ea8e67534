//! One caching Unbound per simulated region.
//!
//! Stub-zoned to the test BIND, with root hints pointing at it too, so it never
//! talks to anything outside the test's address block. Caching is real: an
//! answer stays until its TTL runs out (no prefetch, no serve-expired), which
//! is what makes a cutover slow and what the propagation test measures.
//! `remote-control` is enabled on the resolver's own address so a test can
//! flush a name to choose the moment a region's cache starts counting down.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;

use crate::addr::AddrBlock;
use crate::bind::{DigAnswer, query};
use crate::procs::{Proc, run_ok};

/// A running `unbound`.
#[derive(Debug)]
pub struct Unbound {
    addr: Ipv4Addr,
    conf: PathBuf,
    proc: Proc,
}

impl Unbound {
    /// Starts Unbound on `addr:53` (already on `lo`) resolving `zone` via the
    /// authoritative server `auth`.
    pub async fn start(
        name: &str,
        addr: Ipv4Addr,
        zone: &str,
        auth: Ipv4Addr,
        dir: &Path,
        block: &AddrBlock,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let d = dir.display();
        let hints = dir.join("root.hints");
        std::fs::write(
            &hints,
            format!(". 3600000 NS ns.{zone}.\nns.{zone}. 3600000 A {auth}\n"),
        )?;
        // The TLD of the zone (e.g. `test.`) is a locally served zone in Unbound's
        // defaults (RFC 6761); turn that off so the stub zone is used.
        let tld = zone.rsplit('.').next().unwrap_or(zone);
        let conf = format!(
            r#"server:
    interface: {addr}
    port: 53
    outgoing-interface: {addr}
    do-ip6: no
    chroot: ""
    username: ""
    directory: "{d}"
    pidfile: "{d}/unbound.pid"
    use-syslog: no
    logfile: ""
    verbosity: 1
    num-threads: 1
    access-control: 127.0.0.0/8 allow
    do-not-query-localhost: no
    module-config: "iterator"
    root-hints: "{hints}"
    prefetch: no
    serve-expired: no
    qname-minimisation: no
    domain-insecure: "{zone}"
    local-zone: "{tld}." nodefault
stub-zone:
    name: "{zone}"
    stub-addr: {auth}
remote-control:
    control-enable: yes
    control-interface: {addr}
    control-port: 8953
    control-use-cert: no
"#,
            hints = hints.display()
        );
        let conf_path = dir.join("unbound.conf");
        std::fs::write(&conf_path, conf)?;
        let mut cmd = Command::new("unbound");
        cmd.arg("-d").arg("-c").arg(&conf_path);
        let proc = Proc::spawn(&format!("unbound-{name}"), cmd, dir, block)?.quiet();
        let mut ub = Unbound {
            addr,
            conf: conf_path,
            proc,
        };
        // The SOA of the zone proves the stub path to BIND works.
        let zone = zone.to_owned();
        crate::poll::until(
            &format!("Unbound {name} on {addr} to resolve {zone}"),
            Duration::from_secs(20),
            || {
                let running = ub.proc.ensure_running();
                let q = query(addr, &zone, "SOA");
                async move {
                    running?;
                    Ok(q.await?.status_noerror.then_some(()))
                }
            },
        )
        .await?;
        Ok(ub)
    }

    /// Its address (port 53).
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// Resolves `name` A through this resolver (and thereby caches it).
    pub async fn resolve(&self, name: &str) -> anyhow::Result<DigAnswer> {
        query(self.addr, name, "A").await
    }

    /// Drops `name` from the cache (`unbound-control flush`).
    pub async fn flush(&self, name: &str) -> anyhow::Result<()> {
        let mut cmd = tokio::process::Command::new("unbound-control");
        cmd.arg("-c").arg(&self.conf).args(["flush", name]);
        run_ok(cmd, Duration::from_secs(10))
            .await
            .with_context(|| format!("flushing {name} on {}", self.addr))?;
        Ok(())
    }
}
