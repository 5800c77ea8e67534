//! Plan files for the test world: the parts every test plan spells the same
//! way (its sites, the `install` check, the DNS set-up with the TSIG secret
//! file beside the plan, the switch-and-soak steps and the fallback to old),
//! so a test's own plan text shows only what it is about: its name, guards,
//! alerts and steps.

use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;

use anyhow::Context as _;

use crate::cluster::{World, checks};

/// What a test plan needs to know about its world.
#[derive(Debug, Clone)]
pub struct PlanEnv {
    /// Folder the plan and its secrets are written to.
    pub dir: PathBuf,
    /// BIND.
    pub ns: Ipv4Addr,
    /// TSIG secret for BIND.
    pub tsig: String,
    /// The old site's address.
    pub old: Ipv4Addr,
    /// The new site's address.
    pub new: Ipv4Addr,
    /// The registry URL.
    pub base: String,
}

impl PlanEnv {
    /// `world`'s BIND, sites and registry; plans go to its `plan/` folder.
    pub fn of(world: &World) -> Self {
        PlanEnv {
            dir: world.dir().join("plan"),
            ns: world.infra.bind.addr(),
            tsig: world.infra.bind.tsig_secret().to_owned(),
            old: world.block.ip(10),
            new: world.block.ip(11),
            base: world.infra.registry_url(),
        }
    }

    /// `[sites.old]` and `[sites.new]`.
    pub fn sites_toml(&self) -> String {
        let PlanEnv { old, new, .. } = self;
        format!("[sites.old]\naddresses = [\"{old}\"]\n[sites.new]\naddresses = [\"{new}\"]\n")
    }

    /// The [`checks::ELM_PACKAGE`] check (install `elm/core` from old and
    /// new every second).
    pub fn install_check_toml(&self) -> String {
        format!(
            r#"[[checks]]
id = "{install}"
kind = "elm_package"
targets = ["old", "new"]
registry_url = "{base}"
package = "elm/core"
version = "1.0.5"
interval = "1s"
"#,
            install = checks::ELM_PACKAGE,
            base = self.base,
        )
    }

    /// `[dns]` over RFC 2136 to BIND with the TSIG secret file [`Self::write`]
    /// puts beside the plan, and the site's `package` record; TTLs in seconds.
    pub fn dns_toml(&self, lowered_ttl: Option<u32>, normal_ttl: u32) -> String {
        let ns = self.ns;
        let lowered = lowered_ttl
            .map(|s| format!("lowered_ttl = \"{s}s\"\n"))
            .unwrap_or_default();
        format!(
            r#"[dns]
zone = "elm.test"
provider = "rfc2136"
nameservers = ["{ns}:53"]
{lowered}normal_ttl = "{normal_ttl}s"

[dns.rfc2136]
server = "{ns}:53"
tsig_key_name = "cutover-test"
tsig_secret = {{ file = "tsig.secret" }}

[[dns.records]]
name = "package"
type = "A"
"#
        )
    }

    /// Writes `text` as `file_name` in [`Self::dir`], with the TSIG secret
    /// (mode 0600) beside it; returns the plan's path.
    pub fn write(&self, file_name: &str, text: &str) -> anyhow::Result<PathBuf> {
        let dir = &self.dir;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let secret = dir.join("tsig.secret");
        std::fs::write(&secret, &self.tsig)
            .with_context(|| format!("writing {}", secret.display()))?;
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600))?;
        let path = dir.join(file_name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }
}

/// Steps `switch` (DNS to new, abort if it fails) then `soak` for `soak`.
pub fn switch_and_soak_toml(soak: &str) -> String {
    format!(
        r#"[[steps]]
id = "switch"
kind = "dns"
set = "new"
on_failure = "abort"

[[steps]]
id = "soak"
kind = "soak"
duration = "{soak}"
"#
    )
}

/// The fallback: `back-to-old` points DNS at old; with `verify_old`,
/// `old-works` then verifies the install check on old.
pub fn fallback_toml(verify_old: bool) -> String {
    let mut text = String::from(
        r#"[[fallback]]
id = "back-to-old"
kind = "dns"
set = "old"
"#,
    );
    if verify_old {
        text.push_str(&format!(
            r#"
[[fallback]]
id = "old-works"
kind = "verify"
checks = ["{install}"]
site = "old"
"#,
            install = checks::ELM_PACKAGE,
        ));
    }
    text
}
