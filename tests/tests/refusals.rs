//! What is refused, and how clearly: a probe with a wrong or revoked token,
//! and a malformed coordinator config.

use std::time::Duration;

use cutover_e2e::cluster::{Options, World, probe_command};
use cutover_e2e::procs::{Proc, cutover_bin, run};

/// A world with DNS, sites and a running coordinator, but no probes.
async fn coordinator_only() -> World {
    let mut world = World::build(Options {
        start_probes: false,
        ..Options::default()
    })
    .await
    .unwrap();
    world.coordinator.start(&world.block).await.unwrap();
    world
}

/// Starts a probe with `token` and expects it to give up with status 2 and
/// a message about the token.
async fn expect_refused(world: &World, name: &str, token: &str) {
    let cmd = probe_command(
        "asia",
        token,
        &world.coordinator.url(),
        Some(world.infra.resolvers["asia"].addr()),
        &world.infra.ca_file,
        None,
    )
    .unwrap();
    let dir = world.dir().join(name);
    let mut probe = Proc::spawn(name, cmd, &dir, &world.block).unwrap();
    let status = probe
        .wait_exit(Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", probe.tail()));
    assert_eq!(
        status.code(),
        Some(2),
        "a refused token must exit with status 2\n{}",
        probe.tail()
    );
    let said = format!("{}{}", probe.stdout(), probe.stderr()).to_ascii_lowercase();
    assert!(
        said.contains("token"),
        "the probe's message does not mention the token:\n{}",
        probe.tail()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_and_revoked_tokens_are_refused() {
    let mut world = coordinator_only().await;
    expect_refused(&world, "probe-wrong-token", "not-a-real-token-0123456789").await;

    let (id, token) = world.coordinator.enrol("asia").await.unwrap();
    let id = match id {
        Some(id) => id,
        None => {
            let probes = cutover_e2e::store::probes(&world.coordinator.db_path()).unwrap();
            probes
                .keys()
                .next()
                .cloned()
                .expect("the enrolled probe is stored")
        }
    };
    let out = world
        .coordinator
        .cli(&["probe", "revoke", &id])
        .await
        .unwrap();
    assert!(out.status.success(), "cutover probe revoke: {out:?}");
    expect_refused(&world, "probe-revoked-token", &token).await;

    // The coordinator is unaffected.
    world.coordinator.ensure_running().unwrap();
}

/// True if `text` points at `line`:`col`, in any of the usual spellings.
fn points_at(text: &str, line: u32, col: u32) -> bool {
    text.contains(&format!("line {line}, column {col}"))
        || text.contains(&format!("line {line} column {col}"))
        || text.contains(&format!(":{line}:{col}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_config_is_refused_with_line_and_column() {
    cutover_e2e::init();
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        // An unknown key (typo) on line 4.
        (
            "typo.toml",
            "[server]\nlisten = \"127.0.0.1:7443\"\nadmin_listen = \"127.0.0.1:7444\"\n\
             metrics_listn = \"127.0.0.1:9464\"\nplaintext = true\n",
            4,
            1,
        ),
        // A syntax error: an unquoted duration on line 3, column 10.
        (
            "syntax.toml",
            "[server]\nlisten = \"127.0.0.1:7443\"\nwindow = 60s\n",
            3,
            10,
        ),
    ];
    for (name, text, line, col) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let mut cmd = tokio::process::Command::new(cutover_bin().unwrap());
        cmd.arg("--config")
            .arg(&path)
            .arg("serve")
            .current_dir(dir.path());
        let out = run(cmd, Duration::from_secs(30)).await.unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "{name} was accepted:\n{said}");
        assert!(
            said.contains(name),
            "{name}: the error does not name the file:\n{said}"
        );
        assert!(
            points_at(&said, line, col),
            "{name}: the error does not point at line {line}, column {col}:\n{said}"
        );
    }
}
