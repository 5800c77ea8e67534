//! The four HTTP DNS providers against local stand-ins of their APIs (hyper
//! on 127.0.0.1, port 0). Each stand-in implements the documented request
//! and response shapes, keeps the zone's records, and records every request,
//! so the tests assert method, path, auth, body and order; that errors carry
//! the provider's own message; that a 500 (or 429, or Route 53's throttling)
//! is retried and a 400 is not; and that DreamHost never passes through zero
//! records. Providers are built with `dns::build` from a spec whose secrets
//! live in files, exactly as a plan would give them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cutover_coordinator::dns::{
    self, CloudflareSpec, DnsProvider, ProviderSpec, RecordSet, RecordType, Route53Spec, SecretRef,
    TokenApiSpec,
};
use serde_json::{Value, json};

mod mock {
    use super::*;
    use http_body_util::{BodyExt as _, Full};
    use hyper::body::Bytes;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;

    /// One request as the stand-in received it.
    #[derive(Debug, Clone)]
    pub struct Req {
        pub method: String,
        pub path: String,
        pub raw_query: String,
        pub query: Vec<(String, String)>,
        pub headers: Vec<(String, String)>,
        pub body: String,
    }

    impl Req {
        pub fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }

        pub fn q(&self, key: &str) -> Option<&str> {
            self.query
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        }

        pub fn json(&self) -> Value {
            serde_json::from_str(&self.body).unwrap_or(Value::Null)
        }

        /// `GET /path?query`, for asserting the order of requests.
        pub fn line(&self) -> String {
            if self.raw_query.is_empty() {
                format!("{} {}", self.method, self.path)
            } else {
                format!("{} {}?{}", self.method, self.path, self.raw_query)
            }
        }
    }

    #[derive(Debug, Clone)]
    pub struct Resp {
        pub status: u16,
        pub headers: Vec<(&'static str, String)>,
        pub body: String,
    }

    pub fn json(status: u16, v: Value) -> Resp {
        Resp {
            status,
            headers: vec![("content-type", "application/json".into())],
            body: v.to_string(),
        }
    }

    pub fn xml(status: u16, body: &str) -> Resp {
        Resp {
            status,
            headers: vec![("content-type", "text/xml".into())],
            body: body.to_string(),
        }
    }

    pub fn empty(status: u16) -> Resp {
        Resp {
            status,
            headers: vec![],
            body: String::new(),
        }
    }

    pub type Handler<S> = fn(&mut S, &Req) -> Resp;

    struct Shared<S> {
        state: S,
        log: Vec<Req>,
        /// (method, path prefix, response): answered instead of the handler, once.
        faults: Vec<(String, String, Resp)>,
    }

    pub struct Server<S> {
        pub addr: SocketAddr,
        shared: Arc<Mutex<Shared<S>>>,
    }

    pub fn percent_decode(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%'
                && i + 2 < b.len()
                && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
            {
                out.push(v);
                i += 3;
                continue;
            }
            out.push(if b[i] == b'+' { b' ' } else { b[i] });
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    impl<S: Send + 'static> Server<S> {
        pub async fn start(state: S, handler: Handler<S>) -> Self {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let shared = Arc::new(Mutex::new(Shared {
                state,
                log: Vec::new(),
                faults: Vec::new(),
            }));
            let sh = shared.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    let sh = sh.clone();
                    tokio::spawn(async move {
                        let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                            let sh = sh.clone();
                            async move {
                                let (parts, body) = req.into_parts();
                                let body = body.collect().await?.to_bytes();
                                let raw_query = parts.uri.query().unwrap_or("").to_string();
                                let query = raw_query
                                    .split('&')
                                    .filter(|p| !p.is_empty())
                                    .map(|p| {
                                        let (k, v) = p.split_once('=').unwrap_or((p, ""));
                                        (percent_decode(k), percent_decode(v))
                                    })
                                    .collect();
                                let r = Req {
                                    method: parts.method.to_string(),
                                    path: parts.uri.path().to_string(),
                                    raw_query,
                                    query,
                                    headers: parts
                                        .headers
                                        .iter()
                                        .map(|(k, v)| {
                                            (k.to_string(), v.to_str().unwrap_or("").to_string())
                                        })
                                        .collect(),
                                    body: String::from_utf8_lossy(&body).into_owned(),
                                };
                                let resp = {
                                    let mut g = sh.lock().unwrap();
                                    g.log.push(r.clone());
                                    let fault = g.faults.iter().position(|(m, p, _)| {
                                        *m == r.method && r.path.starts_with(p.as_str())
                                    });
                                    match fault {
                                        Some(i) => g.faults.remove(i).2,
                                        None => handler(&mut g.state, &r),
                                    }
                                };
                                let mut b = hyper::Response::builder().status(resp.status);
                                for (k, v) in &resp.headers {
                                    b = b.header(*k, v);
                                }
                                Ok::<_, hyper::Error>(
                                    b.body(Full::new(Bytes::from(resp.body))).unwrap(),
                                )
                            }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
            });
            Server { addr, shared }
        }

        pub fn url(&self) -> String {
            format!("http://{}", self.addr)
        }

        /// Answers the next `method` request under `path_prefix` with `resp`.
        pub fn fail_next(&self, method: &str, path_prefix: &str, resp: Resp) {
            self.shared
                .lock()
                .unwrap()
                .faults
                .push((method.into(), path_prefix.into(), resp));
        }

        pub fn requests(&self) -> Vec<Req> {
            self.shared.lock().unwrap().log.clone()
        }

        pub fn lines(&self) -> Vec<String> {
            self.requests().iter().map(Req::line).collect()
        }

        pub fn clear_log(&self) {
            self.shared.lock().unwrap().log.clear();
        }

        pub fn with_state<T>(&self, f: impl FnOnce(&mut S) -> T) -> T {
            f(&mut self.shared.lock().unwrap().state)
        }
    }
}

use mock::{Req, Resp, Server};

fn secret_file(dir: &Path, name: &str, value: &str) -> SecretRef {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join(name);
    std::fs::write(&path, format!("{value}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    SecretRef {
        file: Some(name.into()),
        env: None,
    }
}

fn empty_spec(provider: &str) -> ProviderSpec {
    ProviderSpec {
        provider: provider.into(),
        rfc2136: None,
        digitalocean: None,
        cloudflare: None,
        route53: None,
        dreamhost: None,
    }
}

fn a_set(ttl: u32, values: &[&str]) -> RecordSet {
    RecordSet::new("package.elm-lang.org", RecordType::A, ttl, values).unwrap()
}

const ZONE: &str = "elm-lang.org";

// ===================================================================== DigitalOcean

#[derive(Debug, Clone)]
struct DoRecord {
    id: u64,
    rtype: String,
    /// Relative to the domain, `@` for the apex.
    name: String,
    data: String,
    ttl: u64,
}

#[derive(Debug, Default)]
struct DoState {
    records: Vec<DoRecord>,
    next_id: u64,
    /// Number of package A records after each request.
    counts: Vec<usize>,
}

const DO_TOKEN: &str = "do-token-123";
const DO_RECORDS: &str = "/v2/domains/elm-lang.org/records";

impl DoState {
    fn with(records: &[(&str, &str, &str, u64)]) -> Self {
        let mut s = DoState {
            next_id: 1,
            ..Default::default()
        };
        for (t, n, d, ttl) in records {
            s.records.push(DoRecord {
                id: s.next_id,
                rtype: t.to_string(),
                name: n.to_string(),
                data: d.to_string(),
                ttl: *ttl,
            });
            s.next_id += 1;
        }
        s
    }

    fn package_a(&self) -> Vec<(u64, String, u64)> {
        self.records
            .iter()
            .filter(|r| r.rtype == "A" && r.name == "package")
            .map(|r| (r.id, r.data.clone(), r.ttl))
            .collect()
    }

    fn to_json(r: &DoRecord) -> Value {
        json!({"id": r.id, "type": r.rtype, "name": r.name, "data": r.data, "ttl": r.ttl,
               "priority": null, "port": null, "weight": null, "flags": null, "tag": null})
    }
}

fn do_handler(s: &mut DoState, r: &Req) -> Resp {
    let resp = do_inner(s, r);
    s.counts.push(s.package_a().len());
    resp
}

fn do_inner(s: &mut DoState, r: &Req) -> Resp {
    if r.header("authorization") != Some(&format!("Bearer {DO_TOKEN}")) {
        return mock::json(
            401,
            json!({"id": "Unauthorized", "message": "Unable to authenticate you"}),
        );
    }
    let Some(rest) = r.path.strip_prefix(DO_RECORDS) else {
        return mock::json(
            404,
            json!({"id": "not_found", "message": "The resource you were accessing could not be found."}),
        );
    };
    let ttl_error = || {
        mock::json(
            422,
            json!({"id": "unprocessable_entity", "message": "Ttl must be greater than or equal to 30."}),
        )
    };
    match (r.method.as_str(), rest) {
        ("GET", "") => {
            let fqdn = |n: &str| {
                if n == "@" {
                    ZONE.to_string()
                } else {
                    format!("{n}.{ZONE}")
                }
            };
            let all: Vec<&DoRecord> = s
                .records
                .iter()
                .filter(|rec| r.q("type").is_none_or(|t| t == rec.rtype))
                .filter(|rec| r.q("name").is_none_or(|n| n == fqdn(&rec.name)))
                .collect();
            // The stand-in pages by 2 whatever the client asks, to exercise paging.
            let per_page = r
                .q("per_page")
                .and_then(|p| p.parse::<usize>().ok())
                .unwrap_or(20)
                .min(2);
            let page = r
                .q("page")
                .and_then(|p| p.parse::<usize>().ok())
                .unwrap_or(1);
            let chunk: Vec<Value> = all
                .iter()
                .skip((page - 1) * per_page)
                .take(per_page)
                .map(|rec| DoState::to_json(rec))
                .collect();
            let mut links = json!({});
            if page * per_page < all.len() {
                links = json!({"pages": {
                    "next": format!("https://api.digitalocean.com{DO_RECORDS}?page={}&per_page={per_page}", page + 1),
                    "last": "https://api.digitalocean.com/v2/…"}});
            }
            mock::json(
                200,
                json!({"domain_records": chunk, "links": links, "meta": {"total": all.len()}}),
            )
        }
        ("POST", "") => {
            let b = r.json();
            let ttl = b["ttl"].as_u64().unwrap_or(1800);
            if ttl < 30 {
                return ttl_error();
            }
            let rec = DoRecord {
                id: s.next_id,
                rtype: b["type"].as_str().unwrap_or_default().into(),
                name: b["name"].as_str().unwrap_or_default().into(),
                data: b["data"].as_str().unwrap_or_default().into(),
                ttl,
            };
            s.next_id += 1;
            let v = DoState::to_json(&rec);
            s.records.push(rec);
            mock::json(201, json!({ "domain_record": v }))
        }
        (m @ ("PATCH" | "DELETE"), id) => {
            let id: u64 = id.trim_start_matches('/').parse().unwrap_or(0);
            let Some(i) = s.records.iter().position(|rec| rec.id == id) else {
                return mock::json(
                    404,
                    json!({"id": "not_found", "message": "The resource you were accessing could not be found."}),
                );
            };
            if m == "DELETE" {
                s.records.remove(i);
                return mock::empty(204);
            }
            let b = r.json();
            if let Some(ttl) = b["ttl"].as_u64() {
                if ttl < 30 {
                    return ttl_error();
                }
                s.records[i].ttl = ttl;
            }
            if let Some(d) = b["data"].as_str() {
                s.records[i].data = d.into();
            }
            mock::json(
                200,
                json!({ "domain_record": DoState::to_json(&s.records[i]) }),
            )
        }
        _ => mock::json(405, json!({"id": "method_not_allowed", "message": "nope"})),
    }
}

async fn digitalocean(
    records: &[(&str, &str, &str, u64)],
    token: &str,
) -> (Server<DoState>, Box<dyn DnsProvider>, tempfile::TempDir) {
    let server = Server::start(DoState::with(records), do_handler).await;
    let dir = tempfile::tempdir().unwrap();
    let spec = ProviderSpec {
        digitalocean: Some(TokenApiSpec {
            token: secret_file(dir.path(), "do.token", token),
            api_url: Some(server.url()),
        }),
        ..empty_spec("digitalocean")
    };
    let provider = dns::build(&spec, ZONE, dir.path()).unwrap();
    (server, provider, dir)
}

const DO_LIST_1: &str =
    "GET /v2/domains/elm-lang.org/records?type=A&name=package.elm-lang.org&page=1&per_page=200";
const DO_LIST_2: &str =
    "GET /v2/domains/elm-lang.org/records?type=A&name=package.elm-lang.org&page=2&per_page=200";

#[tokio::test]
async fn digitalocean_switch_patches_in_place_pages_and_deletes_last() {
    let (server, p, _dir) = digitalocean(
        &[
            ("A", "package", "10.0.0.1", 300),
            ("A", "package", "10.0.0.2", 300),
            ("A", "www", "10.0.0.9", 300),
            ("AAAA", "package", "2001:db8::1", 300),
            ("A", "package", "10.0.0.3", 300),
        ],
        DO_TOKEN,
    )
    .await;
    assert_eq!(p.name(), "digitalocean");
    assert_eq!(
        p.read("package.elm-lang.org", RecordType::A).await.unwrap(),
        Some(a_set(300, &["10.0.0.1", "10.0.0.2", "10.0.0.3"]))
    );
    server.clear_log();

    let desired = a_set(60, &["10.0.0.20"]);
    p.apply(&desired).await.unwrap();
    assert_eq!(
        server.lines(),
        [
            DO_LIST_1.to_string(),
            DO_LIST_2.to_string(),
            format!("PATCH {DO_RECORDS}/1"),
            format!("DELETE {DO_RECORDS}/2"),
            format!("DELETE {DO_RECORDS}/5"),
        ]
    );
    let reqs = server.requests();
    for r in &reqs {
        assert_eq!(
            r.header("authorization"),
            Some("Bearer do-token-123"),
            "{}",
            r.line()
        );
    }
    assert_eq!(reqs[2].json(), json!({"data": "10.0.0.20", "ttl": 60}));
    assert_eq!(reqs[2].header("content-type"), Some("application/json"));
    assert_eq!(reqs[3].body, "");
    server.with_state(|s| {
        assert_eq!(s.package_a(), [(1, "10.0.0.20".to_string(), 60)]);
        assert_eq!(s.records.len(), 3, "www and the AAAA record are untouched");
        assert!(
            s.counts.iter().all(|c| *c > 0),
            "never zero records: {:?}",
            s.counts
        );
    });
    assert_eq!(
        p.read("package.elm-lang.org.", RecordType::A)
            .await
            .unwrap(),
        Some(desired.clone())
    );

    // Idempotent: a second apply only reads.
    server.clear_log();
    p.apply(&desired).await.unwrap();
    assert_eq!(server.lines(), [DO_LIST_1]);
}

#[tokio::test]
async fn digitalocean_creates_missing_values_with_relative_names() {
    let (server, p, _dir) = digitalocean(&[("A", "package", "10.0.0.1", 60)], DO_TOKEN).await;
    p.apply(&a_set(60, &["10.0.0.1", "10.0.0.2"]))
        .await
        .unwrap();
    assert_eq!(
        server.lines(),
        [DO_LIST_1.to_string(), format!("POST {DO_RECORDS}")]
    );
    assert_eq!(
        server.requests()[1].json(),
        json!({"type": "A", "name": "package", "data": "10.0.0.2", "ttl": 60})
    );
    server.with_state(|s| assert_eq!(s.package_a().len(), 2));
}

#[tokio::test]
async fn digitalocean_retries_500_and_429_but_not_422_and_reports_its_message() {
    let (server, p, _dir) = digitalocean(&[("A", "package", "10.0.0.1", 300)], DO_TOKEN).await;
    let want = a_set(60, &["10.0.0.20"]);

    // 500 then 200: retried.
    server.fail_next(
        "PATCH",
        DO_RECORDS,
        mock::json(
            500,
            json!({"id": "server_error", "message": "Server was unable to give you a response."}),
        ),
    );
    p.apply(&want).await.unwrap();
    assert_eq!(
        server.lines(),
        [
            DO_LIST_1.to_string(),
            format!("PATCH {DO_RECORDS}/1"),
            format!("PATCH {DO_RECORDS}/1"),
        ]
    );
    server.with_state(|s| assert_eq!(s.package_a(), [(1, "10.0.0.20".to_string(), 60)]));

    // 429 with Retry-After: waits that long, then goes on.
    server.clear_log();
    server.fail_next(
        "GET",
        DO_RECORDS,
        Resp {
            status: 429,
            headers: vec![("retry-after", "1".into())],
            body: json!({"id": "too_many_requests", "message": "API Rate limit exceeded."})
                .to_string(),
        },
    );
    let started = Instant::now();
    p.apply(&a_set(60, &["10.0.0.21"])).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After is honoured"
    );
    assert_eq!(server.lines()[..2], [DO_LIST_1, DO_LIST_1]);

    // 422: not retried; the provider's message comes through.
    server.clear_log();
    server.fail_next(
        "PATCH",
        DO_RECORDS,
        mock::json(422, json!({"id": "unprocessable_entity", "message": "Data needs to be a valid IP address."})),
    );
    let err = p.apply(&a_set(60, &["10.0.0.22"])).await.unwrap_err();
    assert!(!err.retryable);
    let msg = err.to_string();
    assert!(
        msg.contains("Data needs to be a valid IP address."),
        "{msg}"
    );
    assert!(msg.contains("422"), "{msg}");
    assert_eq!(
        server
            .lines()
            .iter()
            .filter(|l| l.starts_with("PATCH"))
            .count(),
        1
    );

    // A TTL below DigitalOcean's minimum is refused before any request.
    server.clear_log();
    let err = p.apply(&a_set(10, &["10.0.0.22"])).await.unwrap_err();
    assert!(err.to_string().contains("minimum TTL is 30"), "{err}");
    assert!(server.lines().is_empty());
}

#[tokio::test]
async fn digitalocean_wrong_token_is_reported() {
    let (server, p, _dir) = digitalocean(&[("A", "package", "10.0.0.1", 300)], "wrong").await;
    let err = p.apply(&a_set(60, &["10.0.0.20"])).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("Unable to authenticate you") && msg.contains("401"),
        "{msg}"
    );
    assert!(
        !msg.contains("wrong"),
        "the token never appears in errors: {msg}"
    );
    assert_eq!(server.lines(), [DO_LIST_1]);
}

// ======================================================================= Cloudflare

const CF_TOKEN: &str = "cf-token-456";
const CF_RECORDS: &str = "/client/v4/zones/023e105f4ecef8ad9ca31a8372d0c353/dns_records";

#[derive(Debug, Clone)]
struct CfRecord {
    id: String,
    rtype: String,
    name: String,
    content: String,
    ttl: u64,
    proxied: bool,
}

#[derive(Debug, Default)]
struct CfState {
    records: Vec<CfRecord>,
    next_id: u64,
}

impl CfState {
    fn with(records: &[(&str, &str, &str, u64, bool)]) -> Self {
        let mut s = CfState::default();
        for (t, n, c, ttl, proxied) in records {
            s.next_id += 1;
            s.records.push(CfRecord {
                id: format!("rec{}", s.next_id),
                rtype: t.to_string(),
                name: n.to_string(),
                content: c.to_string(),
                ttl: *ttl,
                proxied: *proxied,
            });
        }
        s
    }

    fn package_a(&self) -> Vec<(String, String, u64)> {
        self.records
            .iter()
            .filter(|r| r.rtype == "A" && r.name == "package.elm-lang.org")
            .map(|r| (r.id.clone(), r.content.clone(), r.ttl))
            .collect()
    }

    fn to_json(r: &CfRecord) -> Value {
        json!({"id": r.id, "zone_id": "023e105f4ecef8ad9ca31a8372d0c353", "zone_name": ZONE,
               "name": r.name, "type": r.rtype, "content": r.content, "proxiable": true,
               "proxied": r.proxied, "ttl": r.ttl, "locked": false, "meta": {}})
    }
}

fn cf_error(status: u16, code: u64, message: &str) -> Resp {
    mock::json(
        status,
        json!({"success": false, "errors": [{"code": code, "message": message}], "messages": [], "result": null}),
    )
}

fn cf_ok(result: Value) -> Resp {
    mock::json(
        200,
        json!({"success": true, "errors": [], "messages": [], "result": result}),
    )
}

fn cf_handler(s: &mut CfState, r: &Req) -> Resp {
    if r.header("authorization") != Some(&format!("Bearer {CF_TOKEN}")) {
        return cf_error(403, 9109, "Invalid access token");
    }
    let Some(rest) = r.path.strip_prefix(CF_RECORDS) else {
        return cf_error(
            404,
            7003,
            "Could not route to /client/v4/zones/…, perhaps your object identifier is invalid?",
        );
    };
    let ttl_ok = |ttl: u64| ttl == 1 || (60..=86400).contains(&ttl);
    match (r.method.as_str(), rest) {
        ("GET", "") => {
            let all: Vec<&CfRecord> = s
                .records
                .iter()
                .filter(|rec| r.q("type").is_none_or(|t| t == rec.rtype))
                .filter(|rec| r.q("name").is_none_or(|n| n == rec.name))
                .collect();
            let per_page = 2;
            let page = r
                .q("page")
                .and_then(|p| p.parse::<usize>().ok())
                .unwrap_or(1);
            let chunk: Vec<Value> = all
                .iter()
                .skip((page - 1) * per_page)
                .take(per_page)
                .map(|rec| CfState::to_json(rec))
                .collect();
            let total_pages = all.len().div_ceil(per_page).max(1);
            mock::json(
                200,
                json!({"success": true, "errors": [], "messages": [], "result": chunk,
                       "result_info": {"page": page, "per_page": per_page, "count": chunk.len(),
                                       "total_count": all.len(), "total_pages": total_pages}}),
            )
        }
        ("POST", "") => {
            let b = r.json();
            let ttl = b["ttl"].as_u64().unwrap_or(1);
            if !ttl_ok(ttl) {
                return cf_error(
                    400,
                    9021,
                    "Invalid TTL. Must be between 60 and 86400 seconds, or 1 for Automatic.",
                );
            }
            s.next_id += 1;
            let rec = CfRecord {
                id: format!("rec{}", s.next_id),
                rtype: b["type"].as_str().unwrap_or_default().into(),
                name: b["name"].as_str().unwrap_or_default().into(),
                content: b["content"].as_str().unwrap_or_default().into(),
                ttl,
                proxied: b["proxied"].as_bool().unwrap_or(false),
            };
            let v = CfState::to_json(&rec);
            s.records.push(rec);
            cf_ok(v)
        }
        (m @ ("PATCH" | "DELETE"), id) => {
            let id = id.trim_start_matches('/');
            let Some(i) = s.records.iter().position(|rec| rec.id == id) else {
                return cf_error(404, 81044, "Record does not exist.");
            };
            if m == "DELETE" {
                s.records.remove(i);
                return cf_ok(json!({ "id": id }));
            }
            let b = r.json();
            if let Some(ttl) = b["ttl"].as_u64() {
                if !ttl_ok(ttl) {
                    return cf_error(
                        400,
                        9021,
                        "Invalid TTL. Must be between 60 and 86400 seconds, or 1 for Automatic.",
                    );
                }
                s.records[i].ttl = ttl;
            }
            if let Some(c) = b["content"].as_str() {
                s.records[i].content = c.into();
            }
            cf_ok(CfState::to_json(&s.records[i]))
        }
        _ => cf_error(405, 10000, "Method not allowed"),
    }
}

async fn cloudflare(
    records: &[(&str, &str, &str, u64, bool)],
) -> (Server<CfState>, Box<dyn DnsProvider>, tempfile::TempDir) {
    let server = Server::start(CfState::with(records), cf_handler).await;
    let dir = tempfile::tempdir().unwrap();
    let spec = ProviderSpec {
        cloudflare: Some(CloudflareSpec {
            token: secret_file(dir.path(), "cf.token", CF_TOKEN),
            zone_id: "023e105f4ecef8ad9ca31a8372d0c353".into(),
            api_url: Some(server.url()),
        }),
        ..empty_spec("cloudflare")
    };
    let provider = dns::build(&spec, ZONE, dir.path()).unwrap();
    (server, provider, dir)
}

const CF_LIST_1: &str = "GET /client/v4/zones/023e105f4ecef8ad9ca31a8372d0c353/dns_records?type=A&name=package.elm-lang.org&page=1&per_page=100";

#[tokio::test]
async fn cloudflare_switch_patches_then_deletes_and_is_idempotent() {
    let (server, p, _dir) = cloudflare(&[
        ("A", "package.elm-lang.org", "10.0.0.1", 300, false),
        ("A", "www.elm-lang.org", "10.0.0.9", 300, false),
        ("A", "package.elm-lang.org", "10.0.0.2", 300, false),
    ])
    .await;
    let desired = a_set(60, &["10.0.0.20"]);
    p.apply(&desired).await.unwrap();
    assert_eq!(
        server.lines(),
        [
            CF_LIST_1.to_string(),
            format!("PATCH {CF_RECORDS}/rec1"),
            format!("DELETE {CF_RECORDS}/rec3"),
        ]
    );
    let reqs = server.requests();
    for r in &reqs {
        assert_eq!(r.header("authorization"), Some("Bearer cf-token-456"));
    }
    assert_eq!(reqs[1].json(), json!({"content": "10.0.0.20", "ttl": 60}));
    server.with_state(|s| {
        assert_eq!(
            s.package_a(),
            [("rec1".to_string(), "10.0.0.20".to_string(), 60)]
        );
        assert_eq!(s.records.len(), 2);
    });
    assert_eq!(
        p.read("package.elm-lang.org", RecordType::A).await.unwrap(),
        Some(desired.clone())
    );
    server.clear_log();
    p.apply(&desired).await.unwrap();
    assert_eq!(server.lines(), [CF_LIST_1]);

    // Growing the set creates, with proxying off.
    server.clear_log();
    p.apply(&a_set(60, &["10.0.0.20", "10.0.0.21"]))
        .await
        .unwrap();
    assert_eq!(
        server.lines(),
        [CF_LIST_1.to_string(), format!("POST {CF_RECORDS}")]
    );
    assert_eq!(
        server.requests()[1].json(),
        json!({"type": "A", "name": "package.elm-lang.org", "content": "10.0.0.21", "ttl": 60, "proxied": false})
    );
}

#[tokio::test]
async fn cloudflare_success_false_and_400_are_not_retried_500_is() {
    let (server, p, _dir) =
        cloudflare(&[("A", "package.elm-lang.org", "10.0.0.1", 300, false)]).await;

    // success:false with HTTP 200 is an error, with Cloudflare's message.
    server.fail_next(
        "POST",
        CF_RECORDS,
        cf_error(200, 81057, "Record already exists."),
    );
    let err = p
        .apply(&a_set(300, &["10.0.0.1", "10.0.0.2"]))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("Record already exists. (code 81057)"),
        "{err}"
    );
    assert!(!err.retryable);
    assert_eq!(
        server
            .lines()
            .iter()
            .filter(|l| l.starts_with("POST"))
            .count(),
        1
    );

    // 400: not retried.
    server.clear_log();
    server.fail_next(
        "PATCH",
        CF_RECORDS,
        cf_error(400, 1004, "DNS Validation Error"),
    );
    let err = p.apply(&a_set(60, &["10.0.0.1"])).await.unwrap_err();
    assert!(
        err.to_string().contains("DNS Validation Error (code 1004)"),
        "{err}"
    );
    assert!(err.to_string().contains("HTTP 400"), "{err}");
    assert_eq!(
        server
            .lines()
            .iter()
            .filter(|l| l.starts_with("PATCH"))
            .count(),
        1
    );

    // 500 then 200: retried.
    server.clear_log();
    server.fail_next("PATCH", CF_RECORDS, cf_error(500, 10000, "Internal error"));
    p.apply(&a_set(60, &["10.0.0.1"])).await.unwrap();
    assert_eq!(
        server.lines(),
        [
            CF_LIST_1.to_string(),
            format!("PATCH {CF_RECORDS}/rec1"),
            format!("PATCH {CF_RECORDS}/rec1"),
        ]
    );
    server.with_state(|s| assert_eq!(s.package_a()[0].2, 60));

    // TTLs Cloudflare refuses are refused before any request; 1 (auto) is fine.
    server.clear_log();
    assert!(
        p.apply(&a_set(30, &["10.0.0.1"]))
            .await
            .unwrap_err()
            .to_string()
            .contains("60–86400")
    );
    assert!(server.lines().is_empty());
    p.apply(&a_set(1, &["10.0.0.1"])).await.unwrap();
    server.with_state(|s| assert_eq!(s.package_a()[0].2, 1));
}

#[tokio::test]
async fn cloudflare_refuses_proxied_records() {
    let (server, p, _dir) = cloudflare(&[("A", "package.elm-lang.org", "10.0.0.1", 1, true)]).await;
    let err = p.apply(&a_set(60, &["10.0.0.20"])).await.unwrap_err();
    assert!(err.to_string().contains("proxied"), "{err}");
    assert_eq!(server.lines(), [CF_LIST_1]);
    server.with_state(|s| assert_eq!(s.package_a()[0].1, "10.0.0.1"));
}

// ========================================================================= Route 53

const R53_KEY_ID: &str = "AKIDEXAMPLE";
const R53_SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const R53_ZONE_ID: &str = "Z1D633PJN98FT9";
const R53_RRSET: &str = "/2013-04-01/hostedzone/Z1D633PJN98FT9/rrset";
const R53_XMLNS: &str = "https://route53.amazonaws.com/doc/2013-04-01/";

#[derive(Debug, Default)]
struct R53State {
    /// (name, type) → (ttl, values)
    sets: BTreeMap<(String, String), (u32, Vec<String>)>,
    /// change id → GetChange polls still answered PENDING
    changes: BTreeMap<String, u32>,
    next_change: u32,
    /// Authorization problems seen (must stay empty).
    auth_problems: Vec<String>,
}

/// Checks the Authorization header's shape, its signed headers and the
/// signature itself over what actually arrived.
fn r53_check_auth(r: &Req) -> Result<(), String> {
    let auth = r.header("authorization").ok_or("no Authorization header")?;
    let amz_date = r.header("x-amz-date").ok_or("no X-Amz-Date header")?;
    if amz_date.len() != 16 || !amz_date.ends_with('Z') || amz_date.as_bytes()[8] != b'T' {
        return Err(format!("X-Amz-Date `{amz_date}` is not YYYYMMDDTHHMMSSZ"));
    }
    let rest = auth
        .strip_prefix("AWS4-HMAC-SHA256 Credential=")
        .ok_or(format!("not a SigV4 header: {auth}"))?;
    let (cred, rest) = rest
        .split_once(", SignedHeaders=")
        .ok_or("no SignedHeaders")?;
    let (signed, sig) = rest.split_once(", Signature=").ok_or("no Signature")?;
    let expect_cred = format!(
        "{R53_KEY_ID}/{}/us-east-1/route53/aws4_request",
        &amz_date[..8]
    );
    if cred != expect_cred {
        return Err(format!("credential scope {cred}, want {expect_cred}"));
    }
    if signed != "host;x-amz-date" {
        return Err(format!("signed headers {signed}"));
    }
    if sig.len() != 64
        || !sig
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        return Err(format!("signature {sig} is not 64 lowercase hex digits"));
    }
    let host = r.header("host").ok_or("no Host header")?;
    let query: Vec<(&str, &str)> = r
        .query
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let headers = [
        ("host".to_string(), host.to_string()),
        ("x-amz-date".to_string(), amz_date.to_string()),
    ];
    let creds = dns::route53::Credentials {
        access_key_id: R53_KEY_ID.into(),
        secret_access_key: R53_SECRET.into(),
        region: "us-east-1".into(),
    };
    let want = dns::route53::authorization(
        &creds,
        "route53",
        amz_date,
        &r.method,
        &r.path,
        &query,
        &headers,
        r.body.as_bytes(),
    );
    if want != auth {
        return Err("SignatureDoesNotMatch".into());
    }
    Ok(())
}

fn r53_error(status: u16, code: &str, message: &str) -> Resp {
    mock::xml(
        status,
        &format!(
            "<?xml version=\"1.0\"?>\n<ErrorResponse xmlns=\"{R53_XMLNS}\"><Error><Type>Sender</Type>\
             <Code>{code}</Code><Message>{message}</Message></Error><RequestId>b25f48e8-84fd-11e6-80d9-574e0c4664cb</RequestId></ErrorResponse>"
        ),
    )
}

fn between<'a>(s: &'a str, open: &str, close: &str) -> Vec<&'a str> {
    s.split(open)
        .skip(1)
        .filter_map(|p| p.split_once(close).map(|(a, _)| a))
        .collect()
}

fn change_info(id: &str, status: &str) -> String {
    format!(
        "<ChangeInfo><Id>/change/{id}</Id><Status>{status}</Status><SubmittedAt>2026-11-27T08:00:00.000Z</SubmittedAt></ChangeInfo>"
    )
}

fn r53_handler(s: &mut R53State, r: &Req) -> Resp {
    if let Err(e) = r53_check_auth(r) {
        s.auth_problems.push(format!("{}: {e}", r.line()));
        return r53_error(
            403,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided.",
        );
    }
    match (r.method.as_str(), r.path.as_str()) {
        ("GET", R53_RRSET) => {
            let name = r.q("name").unwrap_or_default().to_string();
            let rtype = r.q("type").unwrap_or_default().to_string();
            // The listing starts at (name, type): the exact set, or the next one.
            let start = (name, rtype);
            let sets: String = s
                .sets
                .range(start..)
                .take(1)
                .map(|((n, t), (ttl, vals))| {
                    let rrs: String = vals
                        .iter()
                        .map(|v| format!("<ResourceRecord><Value>{v}</Value></ResourceRecord>"))
                        .collect();
                    format!(
                        "<ResourceRecordSet><Name>{n}</Name><Type>{t}</Type><TTL>{ttl}</TTL><ResourceRecords>{rrs}</ResourceRecords></ResourceRecordSet>"
                    )
                })
                .collect();
            mock::xml(
                200,
                &format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListResourceRecordSetsResponse xmlns=\"{R53_XMLNS}\">\
                     <ResourceRecordSets>{sets}</ResourceRecordSets><IsTruncated>false</IsTruncated><MaxItems>1</MaxItems>\
                     </ListResourceRecordSetsResponse>"
                ),
            )
        }
        ("POST", p) if p == format!("{R53_RRSET}/") => {
            let b = &r.body;
            if !b.contains(&format!(
                "<ChangeResourceRecordSetsRequest xmlns=\"{R53_XMLNS}\">"
            )) {
                return r53_error(
                    400,
                    "InvalidInput",
                    "Invalid XML ; cvc-elt.1: Cannot find the declaration of element",
                );
            }
            for change in between(b, "<Change>", "</Change>") {
                let action = between(change, "<Action>", "</Action>");
                if action != ["UPSERT"] {
                    return r53_error(400, "InvalidInput", "only UPSERT in this stand-in");
                }
                let name = between(change, "<Name>", "</Name>")[0].to_string();
                let rtype = between(change, "<Type>", "</Type>")[0].to_string();
                let ttl: u32 = between(change, "<TTL>", "</TTL>")[0].parse().unwrap();
                let values = between(change, "<Value>", "</Value>")
                    .iter()
                    .map(|v| v.to_string())
                    .collect();
                s.sets.insert((name, rtype), (ttl, values));
            }
            s.next_change += 1;
            let id = format!("C2682N5HXP0BZ{}", s.next_change);
            s.changes.insert(id.clone(), 1);
            mock::xml(
                200,
                &format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ChangeResourceRecordSetsResponse xmlns=\"{R53_XMLNS}\">{}</ChangeResourceRecordSetsResponse>",
                    change_info(&id, "PENDING")
                ),
            )
        }
        ("GET", p) if p.starts_with("/2013-04-01/change/") => {
            let id = p.trim_start_matches("/2013-04-01/change/").to_string();
            let Some(left) = s.changes.get_mut(&id) else {
                return r53_error(
                    404,
                    "NoSuchChange",
                    &format!("A change with the specified change ID does not exist: {id}"),
                );
            };
            let status = if *left > 0 {
                *left -= 1;
                "PENDING"
            } else {
                "INSYNC"
            };
            mock::xml(
                200,
                &format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<GetChangeResponse xmlns=\"{R53_XMLNS}\">{}</GetChangeResponse>",
                    change_info(&id, status)
                ),
            )
        }
        _ => r53_error(
            404,
            "NoSuchHostedZone",
            "No hosted zone found with ID: unknown",
        ),
    }
}

async fn route53(secret: &str) -> (Server<R53State>, Box<dyn DnsProvider>, tempfile::TempDir) {
    let mut state = R53State::default();
    state.sets.insert(
        ("package.elm-lang.org.".into(), "A".into()),
        (300, vec!["10.0.0.1".into()]),
    );
    state.sets.insert(
        ("www.elm-lang.org.".into(), "A".into()),
        (300, vec!["10.0.0.9".into()]),
    );
    let server = Server::start(state, r53_handler).await;
    let dir = tempfile::tempdir().unwrap();
    let spec = ProviderSpec {
        route53: Some(Route53Spec {
            hosted_zone_id: format!("/hostedzone/{R53_ZONE_ID}"),
            access_key_id: secret_file(dir.path(), "aws.id", R53_KEY_ID),
            secret_access_key: secret_file(dir.path(), "aws.secret", secret),
            region: None,
            api_url: Some(server.url()),
        }),
        ..empty_spec("route53")
    };
    let provider = dns::build(&spec, ZONE, dir.path()).unwrap();
    (server, provider, dir)
}

const R53_LIST: &str =
    "GET /2013-04-01/hostedzone/Z1D633PJN98FT9/rrset?maxitems=1&name=package.elm-lang.org.&type=A";

#[tokio::test]
async fn route53_upserts_signed_and_polls_until_insync() {
    let (server, p, _dir) = route53(R53_SECRET).await;
    let desired = a_set(60, &["10.0.0.20", "10.0.0.21"]);
    p.apply(&desired).await.unwrap();
    assert_eq!(
        server.lines(),
        [
            R53_LIST.to_string(),
            format!("POST {R53_RRSET}/"),
            "GET /2013-04-01/change/C2682N5HXP0BZ1".to_string(),
            "GET /2013-04-01/change/C2682N5HXP0BZ1".to_string(),
        ]
    );
    let reqs = server.requests();
    let body = &reqs[1].body;
    assert!(
        body.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>"),
        "{body}"
    );
    assert!(
        body.contains(
            "<Change><Action>UPSERT</Action><ResourceRecordSet><Name>package.elm-lang.org.</Name>\
             <Type>A</Type><TTL>60</TTL><ResourceRecords><ResourceRecord><Value>10.0.0.20</Value>\
             </ResourceRecord><ResourceRecord><Value>10.0.0.21</Value></ResourceRecord>\
             </ResourceRecords></ResourceRecordSet></Change>"
        ),
        "{body}"
    );
    assert_eq!(reqs[1].header("content-type"), Some("text/xml"));
    server.with_state(|s| {
        assert!(s.auth_problems.is_empty(), "{:?}", s.auth_problems);
        assert_eq!(
            s.sets[&("package.elm-lang.org.".to_string(), "A".to_string())],
            (60, vec!["10.0.0.20".to_string(), "10.0.0.21".to_string()])
        );
    });
    assert_eq!(
        p.read("package.elm-lang.org", RecordType::A).await.unwrap(),
        Some(desired.clone())
    );

    // Idempotent: already so, nothing is changed.
    server.clear_log();
    p.apply(&desired).await.unwrap();
    assert_eq!(server.lines(), [R53_LIST]);

    // A name without a set: the listing starts at the next set, which is not ours.
    assert_eq!(
        p.read("mail.elm-lang.org", RecordType::A).await.unwrap(),
        None
    );
}

#[tokio::test]
async fn route53_errors_carry_the_message_throttling_and_500_are_retried() {
    let (server, p, _dir) = route53(R53_SECRET).await;
    let want = a_set(60, &["10.0.0.20"]);

    let invalid = format!(
        "<?xml version=\"1.0\"?>\n<InvalidChangeBatch xmlns=\"{R53_XMLNS}\"><Messages><Message>RRSet of type CNAME with DNS name \
         package.elm-lang.org. is not permitted as it conflicts with other records</Message></Messages><RequestId>x</RequestId></InvalidChangeBatch>"
    );
    server.fail_next("POST", R53_RRSET, mock::xml(400, &invalid));
    let err = p.apply(&want).await.unwrap_err();
    assert!(!err.retryable);
    assert!(
        err.to_string().contains("InvalidChangeBatch: RRSet of type CNAME with DNS name package.elm-lang.org. is not permitted"),
        "{err}"
    );
    assert_eq!(
        server
            .lines()
            .iter()
            .filter(|l| l.starts_with("POST"))
            .count(),
        1
    );

    // Throttling comes as HTTP 400, and is retried; so is a 500.
    server.clear_log();
    server.fail_next(
        "POST",
        R53_RRSET,
        r53_error(400, "Throttling", "Rate exceeded"),
    );
    server.fail_next(
        "POST",
        R53_RRSET,
        r53_error(500, "InternalFailure", "internal error"),
    );
    p.apply(&want).await.unwrap();
    assert_eq!(
        server
            .lines()
            .iter()
            .filter(|l| l.starts_with("POST"))
            .count(),
        3
    );
    server.with_state(|s| {
        assert!(s.auth_problems.is_empty(), "{:?}", s.auth_problems);
        assert_eq!(
            s.sets[&("package.elm-lang.org.".to_string(), "A".to_string())].1,
            ["10.0.0.20"]
        );
    });
}

#[tokio::test]
async fn route53_wrong_secret_fails_the_signature_check() {
    let (server, p, _dir) = route53("not-the-secret").await;
    let err = p.apply(&a_set(60, &["10.0.0.20"])).await.unwrap_err();
    assert!(!err.retryable);
    let msg = err.to_string();
    assert!(
        msg.contains("SignatureDoesNotMatch") && msg.contains("403"),
        "{msg}"
    );
    assert!(!msg.contains("not-the-secret"));
    assert_eq!(server.lines(), [R53_LIST]);
    server.with_state(|s| assert_eq!(s.auth_problems.len(), 1));
}

// ======================================================================== DreamHost

const DH_KEY: &str = "6SHU5P2HLDAYECUM";

#[derive(Debug, Default)]
struct DhState {
    /// (zone, record, type, value)
    records: Vec<(String, String, String, String)>,
    /// Number of package A records after each request.
    counts: Vec<usize>,
}

impl DhState {
    fn package_a(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .records
            .iter()
            .filter(|(_, r, t, _)| r == "package.elm-lang.org" && t == "A")
            .map(|(_, _, _, v)| v.clone())
            .collect();
        v.sort();
        v
    }
}

fn dh_handler(s: &mut DhState, r: &Req) -> Resp {
    let resp = dh_inner(s, r);
    s.counts.push(s.package_a().len());
    resp
}

fn dh_inner(s: &mut DhState, r: &Req) -> Resp {
    let err = |data: &str| mock::json(200, json!({"result": "error", "data": data}));
    if r.method != "GET" || r.path != "/" {
        return mock::empty(404);
    }
    if r.q("key") != Some(DH_KEY) {
        return err("invalid_api_key");
    }
    if r.q("format") != Some("json") {
        return mock::empty(400);
    }
    let rec = (
        r.q("record").unwrap_or_default().to_string(),
        r.q("type").unwrap_or_default().to_string(),
        r.q("value").unwrap_or_default().to_string(),
    );
    match r.q("cmd") {
        Some("dns-list_records") => {
            let data: Vec<Value> = s
                .records
                .iter()
                .map(|(z, rec, t, v)| {
                    json!({"account_id": "1", "zone": z, "record": rec, "type": t, "value": v,
                           "comment": "", "editable": "1"})
                })
                .collect();
            mock::json(200, json!({"result": "success", "data": data}))
        }
        Some("dns-add_record") => {
            if s.records
                .iter()
                .any(|(_, a, b, c)| (a, b, c) == (&rec.0, &rec.1, &rec.2))
            {
                return err("record_already_exists_not_editable");
            }
            s.records.push((ZONE.into(), rec.0, rec.1, rec.2));
            mock::json(200, json!({"result": "success", "data": "record_added"}))
        }
        Some("dns-remove_record") => {
            let Some(i) = s
                .records
                .iter()
                .position(|(_, a, b, c)| (a, b, c) == (&rec.0, &rec.1, &rec.2))
            else {
                return err("no_such_record");
            };
            s.records.remove(i);
            mock::json(200, json!({"result": "success", "data": "record_removed"}))
        }
        _ => err("no_such_cmd"),
    }
}

async fn dreamhost(
    values: &[&str],
    key: &str,
) -> (Server<DhState>, Box<dyn DnsProvider>, tempfile::TempDir) {
    let mut state = DhState::default();
    for v in values {
        state.records.push((
            ZONE.into(),
            "package.elm-lang.org".into(),
            "A".into(),
            v.to_string(),
        ));
    }
    state.records.push((
        ZONE.into(),
        "www.elm-lang.org".into(),
        "A".into(),
        "10.0.0.9".into(),
    ));
    state.records.push((
        "elm.org".into(),
        "package.elm.org".into(),
        "A".into(),
        "10.0.0.1".into(),
    ));
    let server = Server::start(state, dh_handler).await;
    let dir = tempfile::tempdir().unwrap();
    let spec = ProviderSpec {
        dreamhost: Some(TokenApiSpec {
            token: secret_file(dir.path(), "dh.key", key),
            api_url: Some(server.url()),
        }),
        ..empty_spec("dreamhost")
    };
    let provider = dns::build(&spec, ZONE, dir.path()).unwrap();
    (server, provider, dir)
}

/// `cmd record value` of each request, in order.
fn dh_cmds(server: &Server<DhState>) -> Vec<String> {
    server
        .requests()
        .iter()
        .map(|r| {
            assert_eq!(r.q("key"), Some(DH_KEY));
            assert_eq!(r.q("format"), Some("json"));
            match r.q("cmd").unwrap() {
                "dns-list_records" => "list".to_string(),
                cmd => {
                    assert_eq!(r.q("record"), Some("package.elm-lang.org"));
                    assert_eq!(r.q("type"), Some("A"));
                    format!(
                        "{} {}",
                        cmd.trim_start_matches("dns-"),
                        r.q("value").unwrap()
                    )
                }
            }
        })
        .collect()
}

#[tokio::test]
async fn dreamhost_adds_before_it_removes_and_never_reaches_zero() {
    // One address to another: the case where remove-first would empty the name.
    let (server, p, _dir) = dreamhost(&["10.0.0.1"], DH_KEY).await;
    assert!(!p.sets_ttl());
    p.apply(&a_set(300, &["10.0.0.20"])).await.unwrap();
    assert_eq!(
        dh_cmds(&server),
        ["list", "add_record 10.0.0.20", "remove_record 10.0.0.1"]
    );
    server.with_state(|s| {
        assert_eq!(s.package_a(), ["10.0.0.20"]);
        assert_eq!(s.counts, [1, 2, 1], "package A records after each request");
        assert_eq!(s.records.len(), 3, "other names and zones untouched");
    });

    // Two to two.
    let (server, p, _dir) = dreamhost(&["10.0.0.1", "10.0.0.2"], DH_KEY).await;
    p.apply(&a_set(300, &["10.0.0.20", "10.0.0.21"]))
        .await
        .unwrap();
    assert_eq!(
        dh_cmds(&server),
        [
            "list",
            "add_record 10.0.0.20",
            "add_record 10.0.0.21",
            "remove_record 10.0.0.1",
            "remove_record 10.0.0.2",
        ]
    );
    server.with_state(|s| {
        assert_eq!(s.package_a(), ["10.0.0.20", "10.0.0.21"]);
        assert!(s.counts.iter().all(|c| *c > 0), "{:?}", s.counts);
    });
    let read = p
        .read("package.elm-lang.org", RecordType::A)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.values, ["10.0.0.20", "10.0.0.21"]);

    // Idempotent: only the listing.
    server.clear_log();
    p.apply(&a_set(300, &["10.0.0.21", "10.0.0.20"]))
        .await
        .unwrap();
    assert_eq!(dh_cmds(&server), ["list"]);
}

#[tokio::test]
async fn dreamhost_errors_carry_the_message_not_the_key() {
    let (server, p, _dir) = dreamhost(&["10.0.0.1"], DH_KEY).await;
    // A failed remove after a successful add: the name still has records.
    server.fail_next(
        "GET",
        "/",
        mock::json(
            200,
            json!({"result": "success", "data": [
            {"zone": ZONE, "record": "package.elm-lang.org", "type": "A", "value": "10.0.0.1"},
            {"zone": ZONE, "record": "package.elm-lang.org", "type": "A", "value": "10.0.0.7"}]}),
        ),
    );
    let err = p.apply(&a_set(300, &["10.0.0.1"])).await.unwrap_err();
    assert!(err.to_string().contains("no_such_record"), "{err}");
    assert!(!err.to_string().contains(DH_KEY), "{err}");
    server.with_state(|s| assert_eq!(s.package_a(), ["10.0.0.1"]));

    // 500 then 200: retried; the key never shows in errors, even on failure.
    server.clear_log();
    server.fail_next(
        "GET",
        "/",
        mock::json(500, json!({"result": "error", "data": "internal_error"})),
    );
    p.apply(&a_set(300, &["10.0.0.20"])).await.unwrap();
    assert_eq!(
        dh_cmds(&server),
        [
            "list",
            "list",
            "add_record 10.0.0.20",
            "remove_record 10.0.0.1"
        ]
    );

    let (_server, wrong, _dir) = dreamhost(&["10.0.0.1"], "WRONGKEY").await;
    let err = wrong.apply(&a_set(300, &["10.0.0.20"])).await.unwrap_err();
    assert!(err.to_string().contains("invalid_api_key"), "{err}");
    assert!(!err.retryable);
    assert!(!err.to_string().contains("WRONGKEY"), "{err}");
}
