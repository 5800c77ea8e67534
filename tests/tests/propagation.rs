//! DNS propagation as users see it: after the A record is switched at the
//! authority, each region moves from old to new only when *its* resolver's
//! cache expires. Caches are real Unbound caches primed at staggered moments.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cutover_e2e::cluster::{
    Options, REGIONS, SITE_HOST, World, check_status, checks, metric_share,
};

/// TTL of the record before and after the switch.
const TTL: u32 = 10;
/// Time between priming one region's cache and the next.
const STAGGER: Duration = Duration::from_millis(2500);
/// Slack for rounding of the remaining TTL and clock reads.
const MARGIN: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_region_moves_to_new_when_its_cache_expires() {
    let mut world = World::build(Options {
        ttl: TTL,
        ..Options::default()
    })
    .await
    .unwrap();
    world.wait_connected(Duration::from_secs(60)).await.unwrap();
    let new_ip = world.block.ip(11);
    let old_ip = world.block.ip(10);

    // Before the switch: every region 100 % old.
    let admin = world.coordinator.admin_target().unwrap();
    cutover_e2e::poll::until(
        "every region to report 100 % old",
        Duration::from_secs(60),
        || {
            let admin = admin.clone();
            async move {
                let st = cutover_e2e::admin::status(&admin).await?;
                for region in REGIONS {
                    let Some(c) = check_status(&st, region, checks::DNS, "dns") else {
                        return Ok(None);
                    };
                    if c.samples == 0 {
                        return Ok(None);
                    }
                    anyhow::ensure!(
                        c.share_old == 1.0 && c.share_new == 0.0,
                        "{region} is not 100 % old before the switch: {c:?}"
                    );
                }
                Ok(Some(()))
            }
        },
    )
    .await
    .unwrap();

    // Stagger the caches: flush and re-prime asia, then australia, then us.
    let mut expires = BTreeMap::new();
    for (i, region) in REGIONS.iter().enumerate() {
        if i > 0 {
            // Deliberate spacing of the cache entries, not a wait for a condition.
            tokio::time::sleep(STAGGER).await;
        }
        let ub = &world.infra.resolvers[*region];
        ub.flush(SITE_HOST).await.unwrap();
        let ans = ub.resolve(SITE_HOST).await.unwrap();
        assert_eq!(ans.addresses, [old_ip], "{region}");
        let remaining = Duration::from_secs(u64::from(ans.ttl.unwrap()));
        expires.insert(*region, Instant::now() + remaining);
    }

    // The switch, at the authority.
    world
        .infra
        .bind
        .set_a(SITE_HOST, new_ip, TTL)
        .await
        .unwrap();
    let switched = Instant::now();
    for (region, at) in &expires {
        assert!(
            *at > switched + MARGIN,
            "{region}'s cache expired before the switch; the harness is too slow"
        );
    }

    // Watch: a region shows old while its cache holds; new after it expires.
    let mut became_new: BTreeMap<&str, Instant> = BTreeMap::new();
    let mut seen_split = false;
    let deadline = switched + Duration::from_secs(u64::from(TTL) * 3 + 40);
    while became_new.len() < REGIONS.len() {
        assert!(
            Instant::now() < deadline,
            "not every region moved to new: {became_new:?}"
        );
        world.ensure_running().unwrap();
        let st = world.coordinator.status().await.unwrap();
        let now = Instant::now();
        let mut shares = BTreeMap::new();
        for region in REGIONS {
            let c = check_status(&st, region, checks::DNS, "dns").unwrap();
            shares.insert(region, (c.share_old, c.share_new));
            if now + MARGIN < expires[region] {
                assert_eq!(
                    (c.share_old, c.share_new),
                    (1.0, 0.0),
                    "{region} left old while its resolver's cache still holds the old \
                     answer for {:?}",
                    expires[region] - now
                );
            }
            if c.share_new == 1.0 {
                became_new.entry(region).or_insert(now);
            }
        }
        if shares["asia"] == (0.0, 1.0) && shares["us"] == (1.0, 0.0) {
            seen_split = true;
        }
        tokio::time::sleep(cutover_e2e::poll::INTERVAL).await;
    }
    for region in REGIONS {
        assert!(became_new[region] + MARGIN >= expires[region], "{region}");
    }
    assert!(
        seen_split,
        "never saw asia on new while us was still on old: {became_new:?}"
    );
    assert!(became_new["asia"] <= became_new["australia"]);
    assert!(became_new["australia"] <= became_new["us"]);

    // /metrics says the same (its gauges may trail the status by a refresh).
    let coordinator = &world.coordinator;
    cutover_e2e::poll::until(
        "/metrics to show every region on new",
        Duration::from_secs(20),
        || async {
            let samples = coordinator.metrics().await?;
            let behind: Vec<_> = REGIONS
                .iter()
                .map(|r| (*r, metric_share(&samples, checks::DNS, r, "new")))
                .filter(|(_, share)| *share != Some(1.0))
                .collect();
            if behind.is_empty() {
                Ok(Some(()))
            } else {
                anyhow::bail!("share of new answers in /metrics: {behind:?}")
            }
        },
    )
    .await
    .unwrap();

    // The resolvers agree with what the coordinator shows.
    for region in REGIONS {
        let ans = world.infra.resolvers[region]
            .resolve(SITE_HOST)
            .await
            .unwrap();
        assert_eq!(ans.addresses, [new_ip], "{region}");
    }
}
