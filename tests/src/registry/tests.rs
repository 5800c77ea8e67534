//! The stand-in registry against REGISTRY.md, over real HTTPS.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::http::{Reply, Req, send_tls, send_tls_from};
use crate::tls::TestCa;

const HOST: &str = "package.elm.test";
const UA: &str = "cutover-e2e/0.1";

struct Fixture {
    reg: Registry,
    client: Arc<rustls::ClientConfig>,
}

async fn fixture() -> Fixture {
    crate::init();
    let ca = TestCa::new().unwrap();
    let leaf = ca.issue(&[HOST], &[]).unwrap();
    let tls = leaf.server_config(&[b"h2", b"http/1.1"]).unwrap();
    let reg = Registry::start(
        "127.0.0.1:0".parse().unwrap(),
        "https://package.elm.test:1",
        tls,
    )
    .await
    .unwrap();
    Fixture {
        reg,
        client: ca.client_config(&[b"http/1.1"]).unwrap(),
    }
}

impl Fixture {
    /// A polite request, like a probe or the Elm client.
    async fn get(&self, path: &str) -> Reply {
        let req = Req::get(HOST, path)
            .header("user-agent", UA)
            .header("accept-encoding", "gzip");
        send_tls(self.reg.addr(), self.client.clone(), &req)
            .await
            .unwrap()
    }

    async fn json(&self, path: &str) -> serde_json::Value {
        let r = self.get(path).await;
        assert_eq!(r.status, 200, "{path}");
        serde_json::from_slice(&r.decoded().unwrap()).unwrap()
    }
}

#[test]
fn rule_406_matches_the_real_server() {
    assert!(refuses_406(None, None));
    assert!(refuses_406(Some("curl/8.5.0"), None));
    assert!(refuses_406(Some("Wget/1.21"), Some("identity")));
    assert!(refuses_406(Some("node.js"), None));
    assert!(!refuses_406(None, Some("gzip")));
    assert!(!refuses_406(Some("curl/8.5.0"), Some("gzip, deflate")));
    assert!(!refuses_406(Some("elm/0.19.1"), None));
}

#[tokio::test]
async fn answers_406_over_the_wire_and_gzips_when_asked() {
    let f = fixture().await;
    let bare = Req::get(HOST, "/all-packages");
    let r = send_tls(f.reg.addr(), f.client.clone(), &bare)
        .await
        .unwrap();
    assert_eq!(r.status, 406);
    let curl = Req::get(HOST, "/all-packages").header("user-agent", "curl/8");
    let r = send_tls(f.reg.addr(), f.client.clone(), &curl)
        .await
        .unwrap();
    assert_eq!(r.status, 406);
    let curl_gzip = curl.clone().header("accept-encoding", "gzip");
    let r = send_tls(f.reg.addr(), f.client.clone(), &curl_gzip)
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    let ua_only = Req::get(HOST, "/all-packages").header("user-agent", UA);
    let r = send_tls(f.reg.addr(), f.client.clone(), &ua_only)
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-encoding"), None);
    assert!(r.text().unwrap().contains("elm/core"));
}

#[tokio::test]
async fn endpoints_follow_registry_md() {
    let f = fixture().await;
    let all = f.json("/all-packages").await;
    assert_eq!(all["elm/core"].as_array().unwrap().len(), 6);
    assert_eq!(all["elm/core"][5], "1.0.5");
    assert_eq!(all["elm/http"][0], "2.0.0");
    // 0.19.1 clients POST with an empty body.
    let post = Req::get(HOST, "/all-packages")
        .method("POST")
        .header("user-agent", UA)
        .header("accept-encoding", "gzip");
    let r = send_tls(f.reg.addr(), f.client.clone(), &post)
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&r.decoded().unwrap()).unwrap(),
        all
    );
    let total = RELEASES.len();
    let since = f.json(&format!("/all-packages/since/{}", total - 2)).await;
    assert_eq!(
        since,
        serde_json::json!(["elm/core@1.0.5", "elm/core@1.0.4"])
    );
    assert_eq!(
        f.json(&format!("/all-packages/since/{total}")).await,
        serde_json::json!([])
    );
    let rel = f.json("/packages/elm/json/releases.json").await;
    assert_eq!(rel["1.1.3"], 1_553_000_000);
    assert_eq!(
        f.json("/packages/elm/core/latest/elm.json").await["version"],
        "1.0.5"
    );
    assert!(f.json("/search.json").await.as_array().unwrap().len() == 3);
    assert!(f.get("/").await.text().unwrap().contains("Elm packages"));
    assert_eq!(f.get("/packages/elm/nope/releases.json").await.status, 404);
}

#[tokio::test]
async fn endpoint_hash_is_sha1_of_the_archive_as_downloaded() {
    let f = fixture().await;
    for (pkg, ver, _) in RELEASES {
        let ep = f
            .json(&format!("/packages/{pkg}/{ver}/endpoint.json"))
            .await;
        let url = ep["url"].as_str().unwrap();
        let path = url.strip_prefix("https://package.elm.test:1").unwrap();
        let archive = f.get(path).await;
        assert_eq!(archive.status, 200);
        // Served gzipped because we asked; the hash is over the decoded bytes.
        assert_eq!(archive.header("content-encoding"), Some("gzip"));
        let bytes = archive.decoded().unwrap();
        assert_eq!(
            ep["hash"].as_str().unwrap(),
            sha1_hex(&bytes),
            "{pkg}@{ver}"
        );
        assert_eq!(ep["hash"].as_str().unwrap().len(), 40);
    }
}

#[tokio::test]
async fn corrupt_archives_keep_the_published_hash() {
    let f = fixture().await;
    f.reg.set_corrupt_archives(true);
    let ep = f.json("/packages/elm/core/1.0.5/endpoint.json").await;
    assert_eq!(ep["hash"], sha1_hex(&archive_bytes("elm/core", "1.0.5")));
    let bytes = f
        .get("/archives/elm/core/1.0.5.zip")
        .await
        .decoded()
        .unwrap();
    assert_eq!(bytes.len(), archive_bytes("elm/core", "1.0.5").len());
    assert_ne!(ep["hash"].as_str().unwrap(), sha1_hex(&bytes));
    f.reg.set_corrupt_archives(false);
    let bytes = f
        .get("/archives/elm/core/1.0.5.zip")
        .await
        .decoded()
        .unwrap();
    assert_eq!(ep["hash"].as_str().unwrap(), sha1_hex(&bytes));
}

#[tokio::test]
async fn missing_releases_vanish_everywhere() {
    let f = fixture().await;
    f.reg.set_missing(["elm/json@1.1.3"]);
    let all = f.json("/all-packages").await;
    assert!(
        !all["elm/json"]
            .as_array()
            .unwrap()
            .contains(&"1.1.3".into())
    );
    let rel = f.json("/packages/elm/json/releases.json").await;
    assert!(rel.get("1.1.3").is_none());
    assert_eq!(
        f.get("/packages/elm/json/1.1.3/endpoint.json").await.status,
        404
    );
    assert_eq!(f.get("/archives/elm/json/1.1.3.zip").await.status, 404);
    let since = f.json("/all-packages/since/0").await;
    assert_eq!(since.as_array().unwrap().len(), RELEASES.len() - 1);
    f.reg.set_missing(Vec::<String>::new());
    assert_eq!(
        f.get("/packages/elm/json/1.1.3/endpoint.json").await.status,
        200
    );
}

#[tokio::test]
async fn error_rate_answers_500() {
    let f = fixture().await;
    f.reg.set_error_rate(1.0);
    for _ in 0..5 {
        assert_eq!(f.get("/all-packages").await.status, 500);
    }
    f.reg.set_error_rate(0.5);
    let mut errors = 0;
    for _ in 0..60 {
        if f.get("/search.json").await.status == 500 {
            errors += 1;
        }
    }
    // Binomial(60, 0.5): outside 10..=50 has probability ~1e-7.
    assert!((10..=50).contains(&errors), "{errors} of 60");
    f.reg.set_error_rate(0.0);
    assert_eq!(f.get("/all-packages").await.status, 200);
}

#[tokio::test]
async fn error_rate_for_one_client_leaves_the_others_alone() {
    let f = fixture().await;
    let liar: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    let req = Req::get(HOST, "/search.json")
        .header("user-agent", UA)
        .header("accept-encoding", "gzip");
    let from = |ip: std::net::IpAddr| {
        let (addr, client, req) = (f.reg.addr(), f.client.clone(), req.clone());
        async move { send_tls_from(ip, addr, client, &req).await.unwrap().status }
    };
    let other: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    f.reg.set_error_rate_for_client(liar, 1.0);
    for _ in 0..5 {
        assert_eq!(from(liar).await, 500);
        assert_eq!(from(other).await, 200);
    }
    // The per-client rate wins over the overall one, both ways.
    f.reg.set_error_rate(1.0);
    f.reg.set_error_rate_for_client(liar, 0.0);
    for _ in 0..5 {
        assert_eq!(from(liar).await, 200);
        assert_eq!(from(other).await, 500);
    }
    f.reg.clear_error_rate_for_client(liar);
    assert_eq!(from(liar).await, 500);
    f.reg.set_error_rate(0.0);
    assert_eq!(from(liar).await, 200);
    let seen = f.reg.seen();
    assert!(seen.iter().any(|s| s.peer.ip() == liar && s.status == 500));
    assert!(seen.iter().any(|s| s.peer.ip() == other && s.status == 200));
}

#[tokio::test]
async fn latency_delays_answers_overall_and_per_client() {
    let f = fixture().await;
    f.reg.set_latency(Duration::from_millis(400));
    let t = Instant::now();
    assert_eq!(f.get("/").await.status, 200);
    assert!(t.elapsed() >= Duration::from_millis(400));
    f.reg.set_latency(Duration::ZERO);
    f.reg
        .set_latency_for("127.0.0.1".parse().unwrap(), Duration::from_millis(300));
    let t = Instant::now();
    assert_eq!(f.get("/").await.status, 200);
    assert!(t.elapsed() >= Duration::from_millis(300));
    f.reg
        .set_latency_for("127.0.0.1".parse().unwrap(), Duration::ZERO);
    let t = Instant::now();
    assert_eq!(f.get("/").await.status, 200);
    assert!(t.elapsed() < Duration::from_millis(300));
}

#[tokio::test]
async fn down_closes_connections_until_up_again() {
    let f = fixture().await;
    f.reg.set_down(true);
    let req = Req::get(HOST, "/")
        .header("user-agent", UA)
        .header("accept-encoding", "gzip");
    assert!(
        send_tls(f.reg.addr(), f.client.clone(), &req)
            .await
            .is_err()
    );
    f.reg.set_down(false);
    assert_eq!(f.get("/").await.status, 200);
    let seen = f.reg.seen();
    assert!(seen.iter().all(|s| s.user_agent.as_deref() == Some(UA)));
}
