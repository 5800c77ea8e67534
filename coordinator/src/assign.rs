//! Turns the validated config into the `cutover.v1.Assignment` every probe runs.
//!
//! `config_version` is a hash of exactly the parts probes see (sites and
//! checks), so it changes when, and only when, the assignment does; results
//! carry it, which tells which assignment a result was produced under.

use cutover_proto::v1;

use crate::config::{CheckConfig, CheckParams, Config, TargetName};

fn ms(d: std::time::Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

fn target(t: TargetName) -> v1::Target {
    match t {
        TargetName::Old => v1::Target::Old,
        TargetName::New => v1::Target::New,
        TargetName::Dns => v1::Target::Dns,
    }
}

/// Stable 64-bit version of the assignment-relevant config.
///
/// Hashes a canonical text form (the validated structs use ordered maps, so
/// it does not depend on hash-map iteration order) with SHA-256.
pub fn config_version(cfg: &Config) -> u64 {
    let canonical = format!("{:?}|{:?}|{:?}", cfg.old, cfg.new, cfg.checks);
    let digest = ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    // Never 0: proto3 cannot tell 0 from "not set".
    u64::from_be_bytes(first).max(1)
}

fn check_spec(c: &CheckConfig) -> v1::CheckSpec {
    use v1::check_spec::Params;
    let params = match &c.params {
        CheckParams::Dns {
            name,
            record_type,
            system_resolver,
            resolvers,
            authoritative_zone,
        } => Params::Dns(v1::DnsParams {
            name: name.clone(),
            record_type: record_type.clone(),
            system_resolver: *system_resolver,
            resolvers: resolvers.clone(),
            authoritative_zone: authoritative_zone.clone(),
        }),
        CheckParams::Http {
            url,
            method,
            expect_status,
            body_contains,
            body_regex,
            expect_headers,
            headers,
        } => Params::Http(v1::HttpParams {
            url: url.clone(),
            method: method.clone(),
            expect_status: expect_status.clone(),
            body_contains: body_contains.clone(),
            body_regex: body_regex.clone(),
            expect_headers: expect_headers.clone().into_iter().collect(),
            headers: headers.clone().into_iter().collect(),
        }),
        CheckParams::Tls {
            host,
            port,
            min_days_valid,
        } => Params::Tls(v1::TlsParams {
            host: host.clone(),
            port: u32::from(*port),
            min_days_valid: *min_days_valid,
        }),
        CheckParams::ElmPackage {
            registry_url,
            package,
            version,
        } => Params::ElmPackage(v1::ElmPackageParams {
            registry_url: registry_url.clone(),
            package: package.clone(),
            version: version.clone(),
        }),
        CheckParams::Download { url, sha256, size } => Params::Download(v1::DownloadParams {
            url: url.clone(),
            sha256: sha256.clone(),
            size: *size,
        }),
        CheckParams::RegistryConsistency { registry_url } => {
            Params::RegistryConsistency(v1::ConsistencyParams {
                registry_url: registry_url.clone(),
            })
        }
    };
    v1::CheckSpec {
        id: c.id.clone(),
        kind: c.params.kind().to_string(),
        targets: c.targets.iter().map(|t| target(*t) as i32).collect(),
        interval_ms: ms(c.interval),
        jitter_ms: ms(c.jitter),
        timeout_ms: ms(c.timeout),
        params: Some(params),
    }
}

/// The assignment for every probe.
pub fn assignment(cfg: &Config) -> v1::Assignment {
    let site = |name: &str, s: &crate::config::SiteConfig| v1::Site {
        name: name.to_string(),
        addresses: s.addresses.iter().map(|a| a.to_string()).collect(),
    };
    v1::Assignment {
        config_version: config_version(cfg),
        old: Some(site("old", &cfg.old)),
        new: Some(site("new", &cfg.new)),
        checks: cfg.checks.iter().map(check_spec).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const TEXT: &str = r#"
[server]
plaintext = true
[sites.old]
addresses = ["203.0.113.10"]
[sites.new]
addresses = ["203.0.113.20", "2001:db8::20"]
[[checks]]
id = "home"
kind = "http"
url = "https://elm-lang.org/"
interval = "10s"
jitter = "1s"
expect_headers = { a = "1", b = "2", c = "3" }
[[checks]]
id = "www"
kind = "dns"
name = "elm-lang.org"
"#;

    #[test]
    fn assignment_carries_sites_and_checks() {
        let cfg = crate::config::parse(Path::new("c.toml"), TEXT).unwrap();
        let a = assignment(&cfg);
        assert_eq!(
            a.new.as_ref().unwrap().addresses,
            vec!["203.0.113.20", "2001:db8::20"]
        );
        assert_eq!(a.checks.len(), 2);
        let home = &a.checks[0];
        assert_eq!(
            (home.kind.as_str(), home.interval_ms, home.jitter_ms),
            ("http", 10_000, 1_000)
        );
        assert_eq!(
            home.targets,
            vec![v1::Target::Old as i32, v1::Target::New as i32]
        );
        assert_eq!(a.checks[1].targets, vec![v1::Target::Dns as i32]);
        assert!(
            matches!(a.checks[1].params, Some(v1::check_spec::Params::Dns(ref d)) if d.system_resolver && d.record_type == "A")
        );
    }

    #[test]
    fn version_is_stable_and_tracks_changes() {
        let a = crate::config::parse(Path::new("c.toml"), TEXT).unwrap();
        let b = crate::config::parse(Path::new("other/c.toml"), TEXT).unwrap();
        assert_eq!(
            config_version(&a),
            config_version(&b),
            "same checks, same version"
        );
        let c =
            crate::config::parse(Path::new("c.toml"), &TEXT.replace("\"10s\"", "\"11s\"")).unwrap();
        assert_ne!(config_version(&a), config_version(&c));
    }
}
