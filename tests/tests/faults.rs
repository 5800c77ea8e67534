//! Faults on the new site show up where an operator looks, for target new only.

use std::time::Duration;

use cutover_e2e::cluster::{
    Options, REGIONS, World, check_status, checks, probe_source, samples_for, wait_all_reported,
};

async fn world_with(new_faults: impl FnOnce(&World)) -> World {
    let mut world = World::build(Options {
        start_probes: false,
        ..Options::default()
    })
    .await
    .unwrap();
    new_faults(&world);
    world.start().await.unwrap();
    world.wait_connected(Duration::from_secs(60)).await.unwrap();
    world
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_archives_on_new_are_hard_failures_for_new_only() {
    let mut world = world_with(|w| w.infra.new.set_corrupt_archives(true)).await;
    let st = wait_all_reported(&mut world, 3, Duration::from_secs(90))
        .await
        .unwrap();
    for region in REGIONS {
        let new = check_status(&st, region, checks::ELM_PACKAGE, "new").unwrap();
        assert!(
            new.hard_failures >= 1,
            "{region}: no hard failure on new: {new:?}"
        );
        let err = new.last_error.to_ascii_lowercase();
        assert!(
            err.contains("hash") || err.contains("sha"),
            "{region}: the error does not say the hash is wrong: {:?}",
            new.last_error
        );
        let old = check_status(&st, region, checks::ELM_PACKAGE, "old").unwrap();
        assert_eq!(
            (old.failures, old.hard_failures),
            (0, 0),
            "{region}: old is healthy but reported {old:?}"
        );
    }

    let samples = world.coordinator.metrics().await.unwrap();
    let is_hard = |s: &&cutover_e2e::prom::Sample| {
        s.value > 0.0
            && (s.name.contains("hash_mismatch")
                || s.label("outcome").is_some_and(|o| o.contains("hard"))
                || s.labels.values().any(|v| v == "hash_mismatch"))
    };
    for region in REGIONS {
        let new = samples_for(&samples, checks::ELM_PACKAGE, "new", region);
        assert!(
            new.iter().any(is_hard),
            "{region}: no hard-failure / hash_mismatch sample for target new in /metrics: {new:?}"
        );
        let old = samples_for(&samples, checks::ELM_PACKAGE, "old", region);
        assert!(
            !old.iter().any(is_hard),
            "{region}: hard failures counted for target old: {old:?}"
        );
    }

    let out = world.coordinator.cli(&["status"]).await.unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(
        text.contains("hash") || text.contains("hard") || text.contains("sha-1"),
        "`cutover status` does not show the hash failures:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_releases_on_new_fail_consistency_and_are_named() {
    let mut world = world_with(|w| w.infra.new.set_missing(["elm/json@1.1.3"])).await;
    let st = wait_all_reported(&mut world, 3, Duration::from_secs(90))
        .await
        .unwrap();
    for region in REGIONS {
        let failing: Vec<_> = check_status(&st, region, checks::CONSISTENCY, "new")
            .into_iter()
            .filter(|c| c.failures + c.hard_failures > 0)
            .collect();
        assert!(
            !failing.is_empty(),
            "{region}: registry_consistency does not fail with a release missing on new"
        );
        for c in &failing {
            assert!(
                c.last_error.contains("elm/json@1.1.3"),
                "{region}/{}: the error does not name the missing release: {:?}",
                c.target,
                c.last_error
            );
        }
        // The release that is present still installs from new.
        let install = check_status(&st, region, checks::ELM_PACKAGE, "new").unwrap();
        assert_eq!(
            (install.failures, install.hard_failures),
            (0, 0),
            "{install:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_site_down_fails_new_only_and_recovers() {
    let mut world = world_with(|_| {}).await;
    wait_all_reported(&mut world, 2, Duration::from_secs(90))
        .await
        .unwrap();
    world.infra.new.set_down(true);
    let admin = world.coordinator.admin_target().unwrap();
    let st = cutover_e2e::poll::until(
        "every region to see the new site fail",
        Duration::from_secs(60),
        || {
            let admin = admin.clone();
            async move {
                let st = cutover_e2e::admin::status(&admin).await?;
                let all = REGIONS.iter().all(|r| {
                    check_status(&st, r, checks::HTTP, "new").is_some_and(|c| c.failures >= 2)
                });
                Ok(all.then_some(st))
            }
        },
    )
    .await
    .unwrap();
    for region in REGIONS {
        for check in [checks::HTTP, checks::ELM_PACKAGE, checks::TLS] {
            let old = check_status(&st, region, check, "old").unwrap();
            assert_eq!(
                (old.failures, old.hard_failures),
                (0, 0),
                "{region}/{check}: the old site is up but reported {old:?}"
            );
        }
        let new = check_status(&st, region, checks::HTTP, "new").unwrap();
        assert!(
            !new.last_error.is_empty(),
            "{region}: failure without a reason"
        );
        // A server that is down is not corruption.
        let install = check_status(&st, region, checks::ELM_PACKAGE, "new").unwrap();
        assert_eq!(install.hard_failures, 0, "{region}: {install:?}");
    }

    // Back up: new checks succeed again (the latest run of each is a success).
    world.infra.new.set_down(false);
    let requests_before = world.infra.new.seen().len();
    cutover_e2e::poll::until(
        "probes to reach the new site again",
        Duration::from_secs(60),
        || {
            let n = world.infra.new.seen().len();
            async move { Ok((n > requests_before + 10).then_some(())) }
        },
    )
    .await
    .unwrap();
    for p in world.probes.values_mut() {
        p.proc.ensure_running().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_latency_on_new_shows_in_its_latency_only() {
    let mut world = world_with(|w| w.infra.new.set_latency(Duration::from_millis(300))).await;
    let st = wait_all_reported(&mut world, 3, Duration::from_secs(90))
        .await
        .unwrap();
    for region in REGIONS {
        let new = check_status(&st, region, checks::HTTP, "new").unwrap();
        let old = check_status(&st, region, checks::HTTP, "old").unwrap();
        // Every answer took ≥ 300 ms; the coordinator's quantiles are estimates
        // (a few % relative error), so allow 10 %.
        assert!(
            new.p50_ms >= 270.0,
            "{region}: new p50 {} ms with 300 ms added",
            new.p50_ms
        );
        assert!(
            new.p50_ms > old.p50_ms + 200.0,
            "{region}: new p50 {} ms is not clearly above old p50 {} ms",
            new.p50_ms,
            old.p50_ms
        );
        assert_eq!(
            new.failures, 0,
            "{region}: 300 ms is slow, not failed: {new:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_rate_for_one_probes_address_fails_that_probe_only() {
    let mut world = World::build(Options {
        start_probes: false,
        probes_per_region: 2,
        ..Options::default()
    })
    .await
    .unwrap();
    // The second probe of the first region (asia).
    let liar_ip = probe_source(&world.block, 0, 1);
    world
        .infra
        .new
        .set_error_rate_for_client(liar_ip.into(), 1.0);
    world.start().await.unwrap();
    world.wait_connected(Duration::from_secs(60)).await.unwrap();
    assert_eq!(world.probes["asia-2"].source, Some(liar_ip));
    let new_results = |key: &str| {
        world.probes[key]
            .produced()
            .unwrap()
            .into_iter()
            .filter(|p| p.check == checks::ELM_PACKAGE && p.target == "new")
            .map(|p| p.outcome)
            .collect::<Vec<_>>()
    };
    cutover_e2e::poll::until(
        "the lying probe to report 3 results on new",
        Duration::from_secs(60),
        || {
            let n = new_results("asia-2").len();
            async move { Ok((n >= 3).then_some(())) }
        },
    )
    .await
    .unwrap();
    let lied = new_results("asia-2");
    assert!(
        lied.iter().all(|o| o != "success"),
        "asia-2 on new: {lied:?}"
    );
    for key in ["asia", "australia", "australia-2", "us", "us-2"] {
        let got = new_results(key);
        assert!(
            !got.is_empty() && got.iter().all(|o| o == "success"),
            "{key} on new: {got:?}"
        );
    }
    let seen = world.infra.new.seen();
    assert!(
        seen.iter()
            .filter(|s| s.peer.ip() == std::net::IpAddr::from(liar_ip))
            .all(|s| s.status == 500)
    );
    assert!(
        seen.iter()
            .any(|s| s.peer.ip() != std::net::IpAddr::from(liar_ip) && s.status == 200)
    );
}
