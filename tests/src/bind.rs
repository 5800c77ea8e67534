//! An authoritative BIND 9 for the test zone, updatable with TSIG (RFC 2136).
//!
//! The zone (`elm.test.` by default) has an SOA, an NS pointing at BIND's own
//! address and `package.elm.test` pointing at the old site. Tests switch the
//! record with [`Bind::set_a`], which runs `nsupdate` exactly as an operator
//! would.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::addr::AddrBlock;
use crate::procs::{Proc, run, run_ok};

/// Name of the TSIG key allowed to update the zone.
pub const TSIG_KEY_NAME: &str = "cutover-test";

/// What to serve.
#[derive(Debug, Clone)]
pub struct ZoneSpec {
    /// Zone apex without trailing dot, e.g. `elm.test`.
    pub zone: String,
    /// Initial A records: (relative or absolute name, address, TTL).
    pub records: Vec<(String, Ipv4Addr, u32)>,
}

/// A running `named`.
#[derive(Debug)]
pub struct Bind {
    addr: Ipv4Addr,
    zone: String,
    secret: String,
    dir: PathBuf,
    proc: Proc,
}

impl Bind {
    /// Writes config and zone under `dir` and starts `named` on `addr:53`
    /// (which must already be on `lo`), waiting until it answers.
    pub async fn start(
        addr: Ipv4Addr,
        spec: &ZoneSpec,
        dir: &Path,
        block: &AddrBlock,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let secret = random_secret();
        let zone = spec.zone.trim_end_matches('.').to_owned();
        let zone_file = dir.join(format!("{zone}.zone"));
        let mut z = format!(
            "$TTL 60\n\
             @ IN SOA ns.{zone}. hostmaster.{zone}. 1 60 30 600 5\n\
             @ IN NS ns.{zone}.\n\
             ns 60 IN A {addr}\n"
        );
        for (name, ip, ttl) in &spec.records {
            z.push_str(&format!("{name} {ttl} IN A {ip}\n"));
        }
        std::fs::write(&zone_file, z)?;
        let d = dir.display();
        let conf = format!(
            r#"options {{
    directory "{d}";
    listen-on port 53 {{ {addr}; }};
    listen-on-v6 {{ none; }};
    recursion no;
    allow-query {{ any; }};
    pid-file "{d}/named.pid";
    session-keyfile "{d}/session.key";
    managed-keys-directory "{d}";
    dnssec-validation no;
    notify no;
}};
controls {{ }};
logging {{ category default {{ default_stderr; }}; category update {{ default_stderr; }}; }};
key "{TSIG_KEY_NAME}" {{ algorithm hmac-sha256; secret "{secret}"; }};
zone "{zone}" {{
    type primary;
    file "{zf}";
    allow-update {{ key "{TSIG_KEY_NAME}"; }};
}};
"#,
            zf = zone_file.display()
        );
        let conf_path = dir.join("named.conf");
        std::fs::write(&conf_path, conf)?;
        let mut cmd = Command::new("named");
        cmd.args(["-f", "-g", "-4", "-c"]).arg(&conf_path);
        let proc = Proc::spawn(&format!("named-{addr}"), cmd, dir, block)?.quiet();
        let mut bind = Bind {
            addr,
            zone,
            secret,
            dir: dir.to_path_buf(),
            proc,
        };
        let soa_name = bind.zone.clone();
        crate::poll::until(
            &format!("BIND on {addr} to answer"),
            Duration::from_secs(20),
            || {
                let running = bind.proc.ensure_running();
                let q = query(addr, &soa_name, "SOA");
                async move {
                    running?;
                    Ok(q.await?.status_noerror.then_some(()))
                }
            },
        )
        .await?;
        Ok(bind)
    }

    /// Its address (port 53).
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The zone apex.
    pub fn zone(&self) -> &str {
        &self.zone
    }

    /// TSIG key as `hmac-sha256:NAME:SECRET`, the form `nsupdate -y` takes.
    pub fn tsig(&self) -> String {
        format!("hmac-sha256:{TSIG_KEY_NAME}:{}", self.secret)
    }

    /// The TSIG secret (base64).
    pub fn tsig_secret(&self) -> &str {
        &self.secret
    }

    /// Replaces the A RRset of `name` (fully qualified, no trailing dot) with
    /// one record, via a TSIG-signed dynamic update, and waits until BIND serves it.
    pub async fn set_a(&self, name: &str, ip: Ipv4Addr, ttl: u32) -> anyhow::Result<()> {
        let script = format!(
            "server {addr} 53\nzone {zone}.\nupdate delete {name}. A\nupdate add {name}. {ttl} A {ip}\nsend\n",
            addr = self.addr,
            zone = self.zone
        );
        let script_path = self.dir.join("nsupdate.txt");
        std::fs::write(&script_path, script)?;
        let mut cmd = tokio::process::Command::new("nsupdate");
        cmd.arg("-y").arg(self.tsig()).arg(&script_path);
        run_ok(cmd, Duration::from_secs(20))
            .await
            .context("nsupdate")?;
        let answer = query(self.addr, name, "A").await?;
        if answer.addresses != [ip] {
            bail!(
                "after the update BIND serves {:?} for {name}, not {ip}",
                answer.addresses
            );
        }
        Ok(())
    }
}

/// An answer as `dig` saw it.
#[derive(Debug, Clone)]
pub struct DigAnswer {
    /// rcode was NOERROR.
    pub status_noerror: bool,
    /// A records in the answer section.
    pub addresses: Vec<Ipv4Addr>,
    /// TTL of the first answer record (remaining TTL when asked of a cache).
    pub ttl: Option<u32>,
}

/// Asks `server:53` for `name`/`rtype` with `dig` (recursion desired).
pub async fn query(server: Ipv4Addr, name: &str, rtype: &str) -> anyhow::Result<DigAnswer> {
    let mut cmd = tokio::process::Command::new("dig");
    cmd.arg(format!("@{server}")).args([
        name,
        rtype,
        "+tries=1",
        "+time=2",
        "+noall",
        "+answer",
        "+comments",
    ]);
    let out = run(cmd, Duration::from_secs(10)).await?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("dig @{server} {name} {rtype} failed: {text}");
    }
    let status_noerror = text.contains("status: NOERROR");
    let mut addresses = Vec::new();
    let mut ttl = None;
    for line in text.lines().filter(|l| !l.starts_with(';')) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() >= 5 {
            if ttl.is_none() {
                ttl = f[1].parse().ok();
            }
            if f[3] == "A"
                && let Ok(ip) = f[4].parse()
            {
                addresses.push(ip);
            }
        }
    }
    Ok(DigAnswer {
        status_noerror,
        addresses,
        ttl,
    })
}

/// 32 random bytes, base64 — an hmac-sha256 secret.
fn random_secret() -> String {
    let bytes: Vec<u8> = (0..32).map(|_| fastrand::u8(..)).collect();
    base64(&bytes)
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_rfc4648_vectors() {
        assert_eq!(super::base64(b""), "");
        assert_eq!(super::base64(b"f"), "Zg==");
        assert_eq!(super::base64(b"fo"), "Zm8=");
        assert_eq!(super::base64(b"foo"), "Zm9v");
        assert_eq!(super::base64(b"foobar"), "Zm9vYmFy");
    }
}
