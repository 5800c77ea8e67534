//! Per-test blocks of loopback addresses.
//!
//! Each test takes a whole `127.N.0.0/24` so that its DNS servers can all use
//! port 53 and its sites one port, without clashing with tests running in
//! parallel, in this or another test binary. The block is claimed with an
//! exclusive lock on `/tmp/cutover-e2e/block-N.lock`, which the kernel releases
//! when the process dies, so a crashed test never leaks a block for good.
//!
//! Addresses a test uses are added to `lo` (BIND and Unbound only bind to
//! addresses that exist on an interface) and removed on drop. Processes started
//! in a block are recorded next to the lock, so that whoever takes the block
//! next can kill what a SIGKILLed test binary left behind.

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

use anyhow::{Context as _, bail};

/// Second octet range handed out to tests: `127.100.0.0` … `127.249.0.0`.
const FIRST: u8 = 100;
const COUNT: u8 = 150;
const LOCK_DIR: &str = "/tmp/cutover-e2e";

/// An exclusively owned `127.N.0.0/24`.
#[derive(Debug)]
pub struct AddrBlock {
    n: u8,
    // Held for the lifetime of the block; the lock goes with the descriptor.
    _lock: File,
    added: Mutex<Vec<Ipv4Addr>>,
    pids_path: PathBuf,
}

impl AddrBlock {
    /// Claims a free block, removing whatever a crashed earlier owner left behind.
    pub fn acquire() -> anyhow::Result<Self> {
        fs::create_dir_all(LOCK_DIR).with_context(|| format!("creating {LOCK_DIR}"))?;
        static SWEEP: std::sync::Once = std::sync::Once::new();
        SWEEP.call_once(sweep);
        let start = fastrand::u8(0..COUNT);
        for i in 0..COUNT {
            let n = FIRST + (start + i) % COUNT;
            let path = PathBuf::from(format!("{LOCK_DIR}/block-{n}.lock"));
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            if !try_lock(&file) {
                continue;
            }
            let block = AddrBlock {
                n,
                _lock: file,
                added: Mutex::new(Vec::new()),
                pids_path: PathBuf::from(format!("{LOCK_DIR}/block-{n}.pids")),
            };
            clear_leftovers(n)?;
            tracing::info!(block = %format!("127.{n}.0.0/24"), "claimed address block");
            return Ok(block);
        }
        bail!("all {COUNT} loopback address blocks are in use")
    }

    /// The second octet of this block.
    pub fn octet(&self) -> u8 {
        self.n
    }

    /// `127.N.0.host`, without adding it to `lo`.
    pub fn ip(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(127, self.n, 0, host)
    }

    /// Adds `127.N.0.host/32` to `lo` (idempotent) and returns it.
    pub fn add(&self, host: u8) -> anyhow::Result<Ipv4Addr> {
        let ip = self.ip(host);
        let mut added = self
            .added
            .lock()
            .expect("address list lock poisoned by a panic");
        if added.contains(&ip) {
            return Ok(ip);
        }
        let out = Command::new("ip")
            .args(["addr", "add", &format!("{ip}/32"), "dev", "lo"])
            .output()
            .context("running `ip addr add` (needs root and iproute2)")?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() && !stderr.contains("File exists") {
            bail!("ip addr add {ip}/32 dev lo failed: {}", stderr.trim());
        }
        added.push(ip);
        Ok(ip)
    }

    /// Records a child process so a later owner of the block can kill it if
    /// this test binary dies without running its destructors.
    pub fn track_pid(&self, pid: u32) {
        let res = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.pids_path)
            .and_then(|mut f| writeln!(f, "{pid}"));
        if let Err(e) = res {
            tracing::warn!(%e, "could not record pid {pid}");
        }
    }
}

/// Kills processes and removes addresses a crashed owner of block `n` left.
fn clear_leftovers(n: u8) -> anyhow::Result<()> {
    let pids_path = PathBuf::from(format!("{LOCK_DIR}/block-{n}.pids"));
    if let Ok(pids) = fs::read_to_string(&pids_path) {
        for pid in pids.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
            // Only processes this harness starts; a recycled pid of anything
            // else is left alone.
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            let block_arg = format!("127.{}.0.", n);
            let ours = ["named", "unbound", "cutover", "prometheus"]
                .iter()
                .any(|b| cmdline.contains(b))
                && (cmdline.contains(&block_arg) || cmdline.contains("cutover-e2e"));
            if ours {
                tracing::warn!(pid, "killing leftover process of a crashed test");
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
        let _ = fs::remove_file(&pids_path);
    }
    for ip in addresses_on_lo()? {
        if ip.octets()[1] == n {
            tracing::warn!(%ip, "removing leftover address of a crashed test");
            del_addr(ip);
        }
    }
    Ok(())
}

impl Drop for AddrBlock {
    fn drop(&mut self) {
        let added = std::mem::take(
            &mut *self
                .added
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        for ip in added {
            del_addr(ip);
        }
        let _ = fs::remove_file(&self.pids_path);
    }
}

fn try_lock(file: &File) -> bool {
    file.try_lock().is_ok()
}

/// Once per test binary: clean every block nobody holds, so what a SIGKILLed
/// test binary left behind does not wait for its block to be drawn again.
fn sweep() {
    let on_lo = addresses_on_lo().unwrap_or_default();
    for n in FIRST..FIRST + COUNT {
        let pids = PathBuf::from(format!("{LOCK_DIR}/block-{n}.pids"));
        if !pids.exists() && !on_lo.iter().any(|ip| ip.octets()[1] == n) {
            continue;
        }
        let path = format!("{LOCK_DIR}/block-{n}.lock");
        let Ok(file) = OpenOptions::new().write(true).open(&path) else {
            continue;
        };
        if try_lock(&file)
            && let Err(e) = clear_leftovers(n)
        {
            tracing::warn!(%e, "cleaning block {n}");
        }
    }
}

fn del_addr(ip: Ipv4Addr) {
    let _ = Command::new("ip")
        .args(["addr", "del", &format!("{ip}/32"), "dev", "lo"])
        .output();
}

/// IPv4 addresses currently on `lo`.
pub fn addresses_on_lo() -> anyhow::Result<Vec<Ipv4Addr>> {
    let out = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "dev", "lo"])
        .output()
        .context("running `ip addr show`")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            words.find(|w| *w == "inet")?;
            words.next()?.split('/').next()?.parse().ok()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_exclusive_and_addresses_are_removed() {
        let a = AddrBlock::acquire().unwrap();
        let b = AddrBlock::acquire().unwrap();
        assert_ne!(a.octet(), b.octet());
        let ip = a.add(7).unwrap();
        assert!(addresses_on_lo().unwrap().contains(&ip));
        drop(a);
        assert!(!addresses_on_lo().unwrap().contains(&ip));
    }
}
