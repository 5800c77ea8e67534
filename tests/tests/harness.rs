//! The harness proven on its own, without any cutover binary: BIND answers and
//! takes TSIG updates, each region's Unbound caches until the TTL runs out, the
//! stand-in sites answer over HTTPS with the test CA under the real host name,
//! and everything is cleaned up afterwards.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cutover_e2e::addr::{AddrBlock, addresses_on_lo};
use cutover_e2e::cluster::{REGIONS, SITE_HOST, build_infra};
use cutover_e2e::http::{Req, send_tls};
use cutover_e2e::poll;
use cutover_e2e::registry::sha1_hex;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_caching_sites_and_cleanup() {
    cutover_e2e::init();
    let block = AddrBlock::acquire().unwrap();
    // The prefix lets a later owner of the block recognise leftovers.
    let dir = tempfile::Builder::new()
        .prefix("cutover-e2e-harness-")
        .tempdir()
        .unwrap();
    let ttl = 4;
    let infra = build_infra(&block, dir.path(), ttl).await.unwrap();
    let old_ip = block.ip(10);
    let new_ip = block.ip(11);

    // BIND serves the zone.
    let a = cutover_e2e::bind::query(infra.bind.addr(), SITE_HOST, "A")
        .await
        .unwrap();
    assert_eq!(a.addresses, [old_ip]);
    assert_eq!(a.ttl, Some(ttl));

    // Every region resolves through its own cache.
    for region in REGIONS {
        let ans = infra.resolvers[region].resolve(SITE_HOST).await.unwrap();
        assert_eq!(ans.addresses, [old_ip], "{region}");
    }

    // Flush and re-prime asia last, so its cache is the freshest.
    infra.resolvers["asia"].flush(SITE_HOST).await.unwrap();
    let primed = infra.resolvers["asia"].resolve(SITE_HOST).await.unwrap();
    let primed_at = Instant::now();
    assert_eq!(primed.addresses, [old_ip]);

    // Switch at the authority: BIND answers new at once, caches still old.
    infra.bind.set_a(SITE_HOST, new_ip, ttl).await.unwrap();
    let direct = cutover_e2e::bind::query(infra.bind.addr(), SITE_HOST, "A")
        .await
        .unwrap();
    assert_eq!(direct.addresses, [new_ip]);
    let cached = infra.resolvers["asia"].resolve(SITE_HOST).await.unwrap();
    if primed_at.elapsed() < Duration::from_secs(u64::from(ttl) - 1) {
        assert_eq!(
            cached.addresses,
            [old_ip],
            "cache must hold until the TTL runs out"
        );
    }
    assert!(cached.ttl.unwrap() <= ttl);

    // Until its TTL runs out; then every region answers new.
    for region in REGIONS {
        let ub = &infra.resolvers[region];
        poll::until(
            &format!("{region} to answer new"),
            Duration::from_secs(20),
            || async {
                let ans = ub.resolve(SITE_HOST).await?;
                Ok((ans.addresses == [new_ip]).then_some(()))
            },
        )
        .await
        .unwrap();
    }
    assert!(primed_at.elapsed() >= Duration::from_secs(u64::from(ttl) - 1));

    // Both sites answer under the real name, pinned to their own address.
    let client = infra.ca.client_config(&[b"http/1.1"]).unwrap();
    for site in [&infra.old, &infra.new] {
        let addr = site.addr();
        assert_eq!(addr.port(), infra.site_port);
        let req = Req::get(SITE_HOST, "/packages/elm/core/1.0.5/endpoint.json")
            .header("user-agent", "cutover-e2e")
            .header("accept-encoding", "gzip");
        let ep = send_tls(addr, client.clone(), &req).await.unwrap();
        assert_eq!(ep.status, 200);
        let ep: serde_json::Value = serde_json::from_slice(&ep.decoded().unwrap()).unwrap();
        let url = ep["url"].as_str().unwrap();
        let path = url.strip_prefix(&infra.registry_url()).unwrap();
        let archive = send_tls(
            SocketAddr::new(addr.ip(), addr.port()),
            client.clone(),
            &Req::get(SITE_HOST, path).header("user-agent", "cutover-e2e"),
        )
        .await
        .unwrap();
        assert_eq!(
            ep["hash"].as_str().unwrap(),
            sha1_hex(&archive.decoded().unwrap())
        );
    }
    // The CA file on disk is what probes get.
    assert!(
        std::fs::read_to_string(&infra.ca_file)
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );

    // Cleanup: processes gone, addresses gone.
    let octet = block.octet();
    drop(infra);
    drop(block);
    assert!(
        addresses_on_lo()
            .unwrap()
            .iter()
            .all(|ip| ip.octets()[1] != octet)
    );
}
