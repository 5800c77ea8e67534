//! A healthy world: every check kind reports for old and new (and `dns` for
//! target dns) from every region, in `/metrics` and in `cutover status`, and
//! nothing fails.

use std::time::Duration;

use cutover_e2e::cluster::{
    Options, REGIONS, World, check_status, checks, metric_share, samples_for, wait_all_reported,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_check_reports_for_every_region_and_target() {
    let mut world = World::build(Options::default()).await.unwrap();
    world.wait_connected(Duration::from_secs(60)).await.unwrap();
    let st = wait_all_reported(&mut world, 3, Duration::from_secs(90))
        .await
        .unwrap();

    // Nothing fails in a healthy world, and the DNS figure says "all old".
    let mut problems = Vec::new();
    for region in REGIONS {
        let rs = st.regions.iter().find(|r| r.region == region).unwrap();
        assert_eq!(rs.probes_connected, 1, "{region}");
        for (check, kind, targets) in checks::ALL {
            for target in targets {
                let c = check_status(&st, region, check, target).unwrap();
                assert_eq!(c.kind, kind, "{region}/{check}/{target}");
                assert_eq!(c.distinct_probes, 1, "{region}/{check}/{target}");
                if c.failures > 0 || c.hard_failures > 0 {
                    problems.push(format!(
                        "{region}/{check}/{target}: {} failures, {} hard, last error {:?}",
                        c.failures, c.hard_failures, c.last_error
                    ));
                }
            }
        }
        let dns = check_status(&st, region, checks::DNS, "dns").unwrap();
        assert_eq!(dns.share_old, 1.0, "{region}: {dns:?}");
        assert_eq!(dns.share_new, 0.0, "{region}: {dns:?}");
    }
    assert!(
        problems.is_empty(),
        "failures in a healthy world:\n{}",
        problems.join("\n")
    );

    // The same evidence in /metrics, labelled by check, target and region only.
    let samples = world.coordinator.metrics().await.unwrap();
    let mut absent = Vec::new();
    for region in REGIONS {
        for (check, _, targets) in checks::ALL {
            for target in targets {
                if !samples_for(&samples, check, target, region)
                    .iter()
                    .any(|s| s.value > 0.0)
                {
                    absent.push(format!("{region}/{check}/{target}"));
                }
            }
        }
    }
    assert!(absent.is_empty(), "no cutover_* sample > 0 for: {absent:?}");
    for region in REGIONS {
        assert_eq!(
            metric_share(&samples, checks::DNS, region, "old"),
            Some(1.0),
            "{region}: /metrics does not say 100 % of answers are old"
        );
    }
    assert!(
        samples
            .iter()
            .any(|s| s.name == "cutover_build_info" && s.label("version").is_some()),
        "cutover_build_info{{version}} missing"
    );
    // Never a label per probe id or per URL (cardinality).
    for s in samples.iter().filter(|s| s.name.starts_with("cutover_")) {
        for k in s.labels.keys() {
            assert!(
                !["probe", "probe_id", "url", "peer", "instance_id"].contains(&k.as_str()),
                "high-cardinality label {k} on {}",
                s.name
            );
        }
    }
    let text = cutover_e2e::prom::scrape(world.coordinator.metrics)
        .await
        .unwrap();
    if let Err(complaints) = cutover_e2e::prom::promtool_check(&text).await.unwrap() {
        panic!("promtool check metrics: {complaints}");
    }

    // What the operator reads: `cutover status` and `cutover probes`.
    let out = world.coordinator.cli(&["status"]).await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "cutover status: {out:?}");
    for region in REGIONS {
        assert!(
            text.contains(region),
            "`cutover status` does not name {region}:\n{text}"
        );
    }
    for (check, _, _) in checks::ALL {
        assert!(
            text.contains(check),
            "`cutover status` does not name {check}:\n{text}"
        );
    }
    let out = world.coordinator.cli(&["probes"]).await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "cutover probes: {out:?}");
    for region in REGIONS {
        assert!(
            text.contains(region),
            "`cutover probes` does not name {region}:\n{text}"
        );
    }

    // The probes talked to the sites the way the Elm client must (no 406s).
    for (name, site) in [("old", &world.infra.old), ("new", &world.infra.new)] {
        let seen = site.seen();
        assert!(!seen.is_empty(), "{name} site saw no requests");
        let refused: Vec<_> = seen.iter().filter(|s| s.status == 406).collect();
        assert!(
            refused.is_empty(),
            "{name} site answered 406 to: {refused:?}"
        );
        assert!(
            seen.iter()
                .any(|s| s.method == "POST" || s.path.starts_with("/all-packages")),
            "{name} site never saw /all-packages"
        );
    }
}
