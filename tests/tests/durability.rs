//! At-least-once delivery with dedupe, across a coordinator crash.
//!
//! The coordinator is SIGKILLed while probes stream results, and restarted on
//! the same data dir. Probes reconnect by themselves; afterwards every result a
//! probe produced (per its `--record-produced` file) is stored exactly once,
//! including everything produced before the kill and while it was down.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use cutover_e2e::cluster::{Options, Produced, World};
use cutover_e2e::poll;
use cutover_e2e::store;
use cutover_proto::v1::Outcome;

fn max_produced(world: &World) -> BTreeMap<String, u64> {
    world
        .probes
        .iter()
        .map(|(region, p)| {
            let max = p
                .produced()
                .unwrap()
                .iter()
                .map(|r| r.seq)
                .max()
                .unwrap_or(0);
            (region.clone(), max)
        })
        .collect()
}

/// Region → probe id, from the store.
fn ids_by_region(world: &World) -> BTreeMap<String, String> {
    store::probes(&world.coordinator.db_path())
        .unwrap()
        .into_iter()
        .map(|(id, (region, _))| (region, id))
        .collect()
}

/// Waits until the store holds every seq up to `want[region]` for each probe.
async fn wait_stored(world: &World, want: &BTreeMap<String, u64>, deadline: Duration) {
    let db = world.coordinator.db_path();
    let ids = ids_by_region(world);
    poll::until("the store to hold every produced result", deadline, || {
        let db = db.clone();
        let ids = ids.clone();
        async move {
            let stored = store::probes(&db)?;
            let mut behind = Vec::new();
            for (region, want) in want {
                let id = &ids[region];
                let have = stored.get(id).map_or(0, |(_, s)| *s);
                if have < *want {
                    behind.push(format!("{region}: stored_seq {have} < {want}"));
                }
            }
            if behind.is_empty() {
                Ok(Some(()))
            } else {
                anyhow::bail!("{}", behind.join(", "))
            }
        }
    })
    .await
    .unwrap();
}

/// Every stored (probe, seq) exactly once; every seq up to `upto` present and
/// matching what the probe says it produced.
fn assert_exactly_once(world: &World, upto: &BTreeMap<String, u64>) {
    let ids = ids_by_region(world);
    let batches = store::batches(&world.coordinator.db_path()).unwrap();
    let mut seen: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
    let mut dupes = Vec::new();
    for b in &batches {
        let seqs: Vec<u64> = b.results.iter().map(|r| r.seq).collect();
        assert!(!seqs.is_empty(), "empty batch stored for {}", b.probe_id);
        assert_eq!(
            (b.first_seq, b.last_seq),
            (*seqs.iter().min().unwrap(), *seqs.iter().max().unwrap()),
            "first_seq/last_seq of a batch of {} disagree with its payload",
            b.probe_id
        );
        for s in seqs {
            if !seen.entry(b.probe_id.as_str()).or_default().insert(s) {
                dupes.push(format!("{}#{s}", b.probe_id));
            }
        }
    }
    assert!(dupes.is_empty(), "stored more than once: {dupes:?}");
    for (region, probe) in &world.probes {
        let id = ids[region].as_str();
        let produced: BTreeMap<u64, Produced> = probe
            .produced()
            .unwrap()
            .into_iter()
            .map(|p| (p.seq, p))
            .collect();
        // A probe numbers its results 1, 2, 3, … without gaps.
        let seqs: Vec<u64> = produced.keys().copied().collect();
        assert_eq!(
            seqs,
            (1..=seqs.len() as u64).collect::<Vec<_>>(),
            "{region}: produced seqs are not 1..=n"
        );
        let have = seen.get(id).cloned().unwrap_or_default();
        let lost: Vec<u64> = produced
            .keys()
            .copied()
            .filter(|s| *s <= upto[region] && !have.contains(s))
            .collect();
        assert!(
            lost.is_empty(),
            "{region}: produced but never stored: {lost:?}"
        );
        // What is stored is what was produced.
        for b in batches.iter().filter(|b| b.probe_id == id) {
            for r in &b.results {
                if let Some(p) = produced.get(&r.seq) {
                    assert_eq!(p.check, r.check_id, "{region}#{}", r.seq);
                    assert_eq!(p.target, r.target().label(), "{region}#{}", r.seq);
                    let outcome = match r.outcome() {
                        Outcome::Success => "success",
                        Outcome::Failure => "failure",
                        Outcome::HardFailure => "hard_failure",
                        Outcome::Unspecified => "unspecified",
                    };
                    assert_eq!(p.outcome, outcome, "{region}#{}", r.seq);
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_crash_loses_nothing_and_counts_nothing_twice() {
    // Plaintext here (the other tests use TLS), so both coordinator modes run.
    let mut world = World::build(Options {
        coordinator_tls: false,
        ..Options::default()
    })
    .await
    .unwrap();
    world.wait_connected(Duration::from_secs(60)).await.unwrap();

    // Some results stored before the crash.
    let early: BTreeMap<String, u64> = max_produced(&world).into_keys().map(|r| (r, 5)).collect();
    poll::until(
        "each probe to produce 5 results",
        Duration::from_secs(60),
        || {
            let m = max_produced(&world);
            async move { Ok(m.values().all(|n| *n >= 5).then_some(())) }
        },
    )
    .await
    .unwrap();
    wait_stored(&world, &early, Duration::from_secs(60)).await;

    // Crash. Results keep being produced while the coordinator is gone.
    world.coordinator.kill();
    let at_kill = max_produced(&world);
    poll::until(
        "probes to keep producing while the coordinator is down",
        Duration::from_secs(60),
        || {
            let m = max_produced(&world);
            let at_kill = at_kill.clone();
            async move { Ok(m.iter().all(|(r, n)| *n >= at_kill[r] + 20).then_some(())) }
        },
    )
    .await
    .unwrap();
    for p in world.probes.values_mut() {
        p.proc
            .ensure_running()
            .expect("a probe must survive the coordinator's death");
    }

    // Restart on the same data dir; probes reconnect by themselves.
    world.coordinator.start(&world.block).await.unwrap();
    world.wait_connected(Duration::from_secs(90)).await.unwrap();
    let after_restart = max_produced(&world);
    let target: BTreeMap<String, u64> = after_restart
        .iter()
        .map(|(r, n)| (r.clone(), n + 3))
        .collect();
    poll::until(
        "probes to produce after the restart",
        Duration::from_secs(60),
        || {
            let m = max_produced(&world);
            let target = target.clone();
            async move { Ok(m.iter().all(|(r, n)| *n >= target[r]).then_some(())) }
        },
    )
    .await
    .unwrap();
    wait_stored(&world, &target, Duration::from_secs(90)).await;
    assert_exactly_once(&world, &target);

    // A probe stopped with SIGTERM flushes what is unacked and exits 0.
    for p in world.probes.values() {
        p.proc.signal("TERM").unwrap();
    }
    for (region, p) in world.probes.iter_mut() {
        let status = p.proc.wait_exit(Duration::from_secs(30)).await.unwrap();
        assert!(
            status.success(),
            "{region}: probe exited with {status} after SIGTERM"
        );
    }
    let all = max_produced(&world);
    wait_stored(&world, &all, Duration::from_secs(15)).await;
    assert_exactly_once(&world, &all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_killed_and_restarted_keeps_reporting_without_reusing_seqs() {
    let mut world = World::build(Options::default()).await.unwrap();
    world.wait_connected(Duration::from_secs(60)).await.unwrap();
    let db = world.coordinator.db_path();
    let asia_id = ids_by_region(&world)["asia"].clone();
    poll::until(
        "asia to have 10 results stored",
        Duration::from_secs(60),
        || {
            let stored = store::probes(&db);
            let id = asia_id.clone();
            async move { Ok((stored?.get(&id).map_or(0, |(_, s)| *s) >= 10).then_some(())) }
        },
    )
    .await
    .unwrap();

    // SIGKILL: whatever was not acked yet is gone with it (no spool asked for).
    let old = world.probes.remove("asia").unwrap();
    let token = old.token.clone();
    let first_life: Vec<u64> = old.produced().unwrap().iter().map(|p| p.seq).collect();
    drop(old); // kills it
    let stored_before = store::probes(&db).unwrap()[&asia_id].1;

    let second_file = world.dir().join("probe-asia-2/produced.tsv");
    std::fs::create_dir_all(second_file.parent().unwrap()).unwrap();
    let probe = cutover_e2e::cluster::Probe::start_recording_to(
        "asia",
        Some(asia_id.clone()),
        token,
        &world.coordinator,
        &world.infra,
        &second_file,
        &world.block,
    )
    .unwrap();
    world.probes.insert("asia".into(), probe);
    world.wait_connected(Duration::from_secs(60)).await.unwrap();
    poll::until(
        "the restarted probe to produce 10 results",
        Duration::from_secs(60),
        || {
            let n = world.probes["asia"]
                .produced()
                .map(|p| p.len())
                .unwrap_or(0);
            async move { Ok((n >= 10).then_some(())) }
        },
    )
    .await
    .unwrap();
    let second_life: Vec<u64> = world.probes["asia"]
        .produced()
        .unwrap()
        .iter()
        .map(|p| p.seq)
        .collect();
    // Numbering continues after what the coordinator stored, so nothing new
    // is mistaken for a duplicate and dropped.
    assert!(
        second_life[0] > stored_before,
        "restarted probe began at seq {} but {stored_before} were already stored",
        second_life[0]
    );
    let want: BTreeMap<String, u64> = [("asia".to_owned(), *second_life.last().unwrap())].into();
    wait_stored(&world, &want, Duration::from_secs(60)).await;

    let batches = store::batches(&db).unwrap();
    let mut stored = BTreeSet::new();
    for r in batches
        .iter()
        .filter(|b| b.probe_id == asia_id)
        .flat_map(|b| &b.results)
    {
        assert!(stored.insert(r.seq), "asia#{} stored twice", r.seq);
    }
    let lost: Vec<_> = second_life.iter().filter(|s| !stored.contains(s)).collect();
    assert!(
        lost.is_empty(),
        "results of the restarted probe never stored: {lost:?}"
    );
    let kept_from_first: Vec<_> = first_life
        .iter()
        .filter(|s| **s <= stored_before && !stored.contains(s))
        .collect();
    assert!(
        kept_from_first.is_empty(),
        "acked results lost: {kept_from_first:?}"
    );
}
