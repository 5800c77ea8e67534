//! The probe protects the volunteer's host (issue 5, "Probe safety"): the real
//! `cutover-probe`, started the way a volunteer starts it, against a real
//! coordinator whose checks all name `package.elm.test` on loopback addresses.
//!
//! - with an allowlist that does not cover `elm.test`, every check is refused
//!   when the assignment arrives: a warn line names the check, the host and the
//!   allowlist, the coordinator gets one failed result per target, and the
//!   sites never see a request;
//! - with `elm.test` allowed but without `--allow-private-addresses`, the
//!   loopback site and name-server addresses are refused the same way;
//! - the command `cutover probe enrol` prints, pasted into a shell, stores the
//!   token owner-only and starts a probe that reports.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cutover_e2e::cluster::{Options, World, check_status, checks};
use cutover_e2e::procs::{Proc, probe_bin};

/// Every `CUTOVER_*` setting a developer's shell might carry into the probe.
const PROBE_ENV: [&str; 12] = [
    "CUTOVER_TOKEN",
    "CUTOVER_TOKEN_FILE",
    "CUTOVER_COORDINATOR",
    "CUTOVER_REGION",
    "CUTOVER_RESOLVER",
    "CUTOVER_CA_FILE",
    "CUTOVER_PROBE_CONFIG",
    "CUTOVER_ALLOW_DOMAINS",
    "CUTOVER_ALLOW_ANY_DOMAIN",
    "CUTOVER_ALLOW_PRIVATE_ADDRESSES",
    "CUTOVER_STATE_DIR",
    "STATE_DIRECTORY",
];

/// A world with DNS, the two sites and a running coordinator, but no probes.
async fn coordinator_only() -> World {
    let mut world = World::build(Options {
        start_probes: false,
        check_interval: "500ms".into(),
        dns_interval: "500ms".into(),
        jitter: "100ms".into(),
        ..Options::default()
    })
    .await
    .unwrap();
    world.coordinator.start(&world.block).await.unwrap();
    world
}

/// A probe for region asia started by hand, with `safety` as its allowlist
/// and private-address flags, recording what it produces.
fn volunteer_probe(world: &World, token: &str, safety: &[&str], dir: &Path) -> Command {
    let mut cmd = Command::new(probe_bin().unwrap());
    cmd.args(["--coordinator", &world.coordinator.url()])
        .args(["--token", token])
        .args(["--region", "asia"])
        .args([
            "--resolver",
            &format!("{}:53", world.infra.resolvers["asia"].addr()),
        ])
        .arg("--ca-file")
        .arg(&world.infra.ca_file)
        .arg("--record-produced")
        .arg(dir.join("produced.tsv"))
        .args(safety)
        .env("SSL_CERT_FILE", &world.infra.ca_file)
        .env("RUST_LOG", "info");
    for var in PROBE_ENV {
        cmd.env_remove(var);
    }
    cmd
}

/// `(check, target) → outcomes` from a `--record-produced` file.
fn produced(dir: &Path) -> BTreeMap<(String, String), Vec<String>> {
    let text = std::fs::read_to_string(dir.join("produced.tsv")).unwrap_or_default();
    let mut out: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() >= 4 {
            out.entry((f[1].to_owned(), f[2].to_owned()))
                .or_default()
                .push(f[3].to_owned());
        }
    }
    out
}

/// Waits until the probe has logged `needles` (all of them).
async fn wait_logged(probe: &mut Proc, needles: &[String]) {
    cutover_e2e::poll::until("the refusal lines", Duration::from_secs(60), || {
        let alive = probe.ensure_running();
        let stderr = probe.stderr();
        async move {
            alive?;
            let missing: Vec<&String> = needles.iter().filter(|n| !stderr.contains(*n)).collect();
            if missing.is_empty() {
                Ok(Some(()))
            } else {
                anyhow::bail!("not yet logged: {missing:?}")
            }
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", probe.tail()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_outside_the_allowlist_are_refused_reported_and_never_run() {
    let world = coordinator_only().await;
    let (_, token) = world.coordinator.enrol("asia").await.unwrap();
    let dir = world.dir().join("probe-allowlist");
    let cmd = volunteer_probe(
        &world,
        &token,
        // Private addresses allowed: only the allowlist stands in the way.
        &[
            "--allow-domain",
            "elm-lang.org",
            "--allow-private-addresses",
        ],
        &dir,
    );
    let mut probe = Proc::spawn("probe-allowlist", cmd, &dir, &world.block).unwrap();

    let mut lines: Vec<String> = checks::ALL
        .iter()
        .map(|(check, _, _)| {
            format!(
                "refusing check {check}: host package.elm.test is not under the allowed domains elm-lang.org"
            )
        })
        .collect();
    lines.sort();
    wait_logged(&mut probe, &lines).await;
    // Several check intervals: a refused check must not have run meanwhile.
    tokio::time::sleep(Duration::from_secs(3)).await;
    probe.ensure_running().unwrap();
    let stderr = probe.stderr();
    for line in &lines {
        assert!(
            stderr
                .lines()
                .any(|l| l.contains(" WARN ") && l.ends_with(line.as_str())),
            "no warn line {line:?}:\n{stderr}"
        );
    }

    // One failed result per target, reported to the coordinator, and nothing else.
    let got = produced(&dir);
    for (check, _, targets) in checks::ALL {
        for target in targets {
            let outcomes = got.get(&(check.to_string(), target.to_string()));
            assert_eq!(
                outcomes,
                Some(&vec!["failure".to_owned()]),
                "{check}/{target}: {got:?}"
            );
        }
    }
    let targets: usize = checks::ALL.iter().map(|(_, _, t)| t.len()).sum();
    assert_eq!(
        got.values().map(Vec::len).sum::<usize>(),
        targets,
        "{got:?}"
    );
    let st = world.coordinator.status().await.unwrap();
    let home = check_status(&st, "asia", checks::HTTP, "new").expect("reported");
    assert_eq!((home.samples, home.failures), (1, 1), "{home:?}");
    assert!(
        home.last_error
            .starts_with("refused by this probe's safety rules: host package.elm.test"),
        "{home:?}"
    );

    // The sites never saw a request from it.
    assert!(
        world.infra.old.seen().is_empty(),
        "{:?}",
        world.infra.old.seen()
    );
    assert!(
        world.infra.new.seen().is_empty(),
        "{:?}",
        world.infra.new.seen()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_addresses_are_refused_without_the_flag() {
    let world = coordinator_only().await;
    let (_, token) = world.coordinator.enrol("asia").await.unwrap();
    let dir = world.dir().join("probe-private");
    let cmd = volunteer_probe(&world, &token, &["--allow-domain", "elm.test"], &dir);
    let mut probe = Proc::spawn("probe-private", cmd, &dir, &world.block).unwrap();

    let old_ip = world.infra.old.addr().ip();
    let new_ip = world.infra.new.addr().ip();
    let mut lines = Vec::new();
    for (check, _, targets) in checks::ALL {
        if check == checks::DNS {
            continue;
        }
        for target in targets {
            // The consistency check compares both sites in one run under
            // `new`, and the old site is screened first.
            let (site, ip) = if *target == "old" || check == checks::CONSISTENCY {
                ("old", old_ip)
            } else {
                ("new", new_ip)
            };
            lines.push(format!(
                "refusing check {check} (target {target}): site {site} address {ip} is a loopback address, \
                 refused without --allow-private-addresses"
            ));
        }
    }
    // The dns check asks the volunteer's own resolver (allowed: it is their
    // --resolver) and the zone's name server, which is on loopback.
    lines.push(format!(
        "refusing check {} (target dns): name server ",
        checks::DNS
    ));
    wait_logged(&mut probe, &lines).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    probe.ensure_running().unwrap();
    let stderr = probe.stderr();
    let ns_line = stderr
        .lines()
        .find(|l| l.contains("(target dns): name server "))
        .unwrap();
    assert!(
        ns_line.contains(" WARN ")
            && ns_line
                .ends_with("is a loopback address, refused without --allow-private-addresses"),
        "{ns_line}"
    );
    assert_eq!(
        stderr.matches("(target dns): name server ").count(),
        1,
        "a refusal met on every run is logged once:\n{stderr}"
    );

    let got = produced(&dir);
    for (check, _, targets) in checks::ALL {
        for target in targets {
            let outcomes = got
                .get(&(check.to_string(), target.to_string()))
                .cloned()
                .unwrap_or_default();
            if check == checks::DNS {
                // Runs on every tick (the resolver part is allowed) and fails.
                assert!(outcomes.len() >= 2, "{check}: {outcomes:?}");
                assert!(outcomes.iter().all(|o| o == "failure"), "{outcomes:?}");
            } else {
                assert_eq!(outcomes, vec!["failure"], "{check}/{target}");
            }
        }
    }
    assert!(
        world.infra.old.seen().is_empty(),
        "{:?}",
        world.infra.old.seen()
    );
    assert!(
        world.infra.new.seen().is_empty(),
        "{:?}",
        world.infra.new.seen()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pasted_enrol_command_stores_the_token_owner_only_and_starts_a_reporting_probe() {
    let world = coordinator_only().await;
    let out = world
        .coordinator
        .cli(&["probe", "enrol", "--region", "asia"])
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}");
    let token = stdout
        .lines()
        .find_map(|l| l.strip_prefix("token: "))
        .expect("token line")
        .to_owned();
    let pasted = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("printf "))
        .unwrap_or_else(|| panic!("no command in:\n{stdout}"))
        .trim()
        .to_owned();
    // The coordinator's checks name package.elm.test and the zone elm.test;
    // the elm_package check adds github.com for the real registry's archives.
    assert!(
        pasted.contains(" --allow-domain elm.test --allow-domain github.com && cutover-probe"),
        "{pasted}"
    );

    // The volunteer's shell: cutover-probe on PATH, a fresh home. The test
    // world's loopback resolver, CA and sites need three settings a volunteer
    // would not; they go in as environment variables, so the pasted line is
    // used exactly as printed. The line ends in `&& cutover-probe`: the setup
    // part runs in sh here, the probe is started as its own process (so the
    // test can stop it by its pid).
    let setup_part = pasted
        .strip_suffix(" && cutover-probe")
        .unwrap_or_else(|| panic!("{pasted}"));
    let home = world.dir().join("volunteer-home");
    std::fs::create_dir_all(&home).unwrap();
    let bin_dir = probe_bin().unwrap().parent().unwrap().to_owned();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let volunteer_env = |cmd: &mut Command| {
        cmd.env("PATH", &path)
            .env("HOME", &home)
            .env_remove("XDG_STATE_HOME")
            .env("RUST_LOG", "info")
            .env("SSL_CERT_FILE", &world.infra.ca_file);
        for var in PROBE_ENV {
            cmd.env_remove(var);
        }
        cmd.env(
            "CUTOVER_RESOLVER",
            format!("{}:53", world.infra.resolvers["asia"].addr()),
        )
        .env("CUTOVER_CA_FILE", &world.infra.ca_file)
        .env("CUTOVER_ALLOW_PRIVATE_ADDRESSES", "true");
    };
    let mut sh = Command::new("sh");
    sh.args(["-c", setup_part]);
    volunteer_env(&mut sh);
    let out = cutover_e2e::procs::run(sh.into(), Duration::from_secs(30))
        .await
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("only hosts under: elm.test, github.com"),
        "{said}"
    );

    let mut bare = Command::new(probe_bin().unwrap());
    volunteer_env(&mut bare);
    let dir = world.dir().join("probe-pasted");
    let mut probe = Proc::spawn("probe-pasted", bare, &dir, &world.block).unwrap();

    let state = home.join(".local/state/cutover-probe");
    let admin = world.coordinator.admin_target().unwrap();
    cutover_e2e::poll::until(
        "the pasted probe to report",
        Duration::from_secs(60),
        || {
            let alive = probe.ensure_running();
            let admin = admin.clone();
            async move {
                alive?;
                let st = cutover_e2e::admin::status(&admin).await?;
                let home = check_status(&st, "asia", checks::HTTP, "new")
                    .ok_or_else(|| anyhow::anyhow!("no results yet"))?;
                Ok((home.samples > home.failures).then_some(()))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", probe.tail()));

    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&state.join("token")), 0o600);
    assert_eq!(mode(&state.join("probe.toml")), 0o600);
    assert_eq!(
        std::fs::read_to_string(state.join("token")).unwrap().trim(),
        token
    );
    let settings = std::fs::read_to_string(state.join("probe.toml")).unwrap();
    assert!(!settings.contains(&token), "{settings}");
    assert!(
        settings.contains("allow_domains = [\"elm.test\", \"github.com\"]"),
        "{settings}"
    );

    // While it works it listens on no TCP port and has started no process.
    let pid = probe.pid();
    assert_eq!(
        tcp_listeners_of(pid),
        Vec::<String>::new(),
        "the probe listens"
    );
    let children: String = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("children")).ok())
        .collect();
    assert_eq!(children.trim(), "", "the probe started processes");
    probe.kill();
}

/// Local addresses of the TCP sockets in LISTEN state that process `pid` holds.
fn tcp_listeners_of(pid: u32) -> Vec<String> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|fd| {
            let link = std::fs::read_link(fd.ok()?.path()).ok()?;
            let link = link.to_string_lossy();
            Some(link.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    assert!(!inodes.is_empty(), "the probe holds no socket at all?");
    let mut listening = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            if f.len() > 9 && f[3] == "0A" && inodes.iter().any(|i| i == f[9]) {
                listening.push(f[1].to_owned());
            }
        }
    }
    listening
}
