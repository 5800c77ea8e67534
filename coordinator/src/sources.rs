//! Readers for the guard sources that are not probes: a provider's Statuspage
//! (`status.indicator`) and a PromQL instant query against a Prometheus HTTP
//! API. Each returns one number or the reason there is none; the verdict code
//! turns a reason into `NO_EVIDENCE` (DESIGN §5: unknown is never healthy, and
//! never a failure either).
//!
//! The `gate` step's status pages use [`status_indicator`] too, so a page is
//! read and ranked the same way everywhere. Errors never contain a URL taken
//! from a reqwest error (webhook URLs are secrets; see [`describe_error`]).

use std::time::Duration;

use crate::plan::{GuardSource, Indicator};

/// Per-request time limit for source reads.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// An HTTP client for sources and alerts: the crate's rustls provider, the
/// roots in `SSL_CERT_FILE` when set (tests, private CAs), `timeout` per request.
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut b = reqwest::Client::builder()
        .user_agent(concat!("cutover/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(timeout)
        .timeout(timeout);
    if let Ok(file) = std::env::var("SSL_CERT_FILE")
        && let Ok(pem) = std::fs::read(&file)
        && let Ok(certs) = reqwest::Certificate::from_pem_bundle(&pem)
    {
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    b.build()
        .map_err(|e| format!("building the HTTP client: {}", describe_error(&e)))
}

/// A reqwest error in words, without the request URL (it may be a secret):
/// `timed out`, `cannot connect: Connection refused (os error 111)`, or the
/// error and its causes joined by `: `.
pub fn describe_error(e: &reqwest::Error) -> String {
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        causes.push(s.to_string());
        source = s.source();
    }
    if e.is_timeout() {
        return "timed out".into();
    }
    if e.is_connect() {
        let root = causes
            .last()
            .cloned()
            .unwrap_or_else(|| "connection failed".into());
        return format!("cannot connect: {root}");
    }
    let mut parts = vec![strip_url(&e.to_string())];
    parts.extend(causes);
    parts.dedup();
    parts.join(": ")
}

/// reqwest writes `… for url (URL)`; keep what comes before.
fn strip_url(s: &str) -> String {
    match s.find(" for url (") {
        Some(i) => s[..i].to_string(),
        None => s.to_string(),
    }
}

/// The start of a response body for an error message (one line, at most 200 characters).
pub(crate) fn snippet(body: &str) -> String {
    let one: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.chars().count() > 200 {
        format!("{}…", one.chars().take(200).collect::<String>())
    } else {
        one
    }
}

/// Statuspage's `status.indicator` at `url` (`…/api/v2/status.json`), or why it
/// is unknown: unreachable, not HTTP 2xx, not JSON, no indicator, an unknown level.
pub async fn status_indicator(client: &reqwest::Client, url: &str) -> Result<Indicator, String> {
    let r = client
        .get(url)
        .send()
        .await
        .map_err(|e| describe_error(&e))?;
    let status = r.status();
    let body = r.text().await.map_err(|e| describe_error(&e))?;
    if !status.is_success() {
        return Err(format!("HTTP {status}: {}", snippet(&body)));
    }
    let v: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| format!("not Statuspage JSON: {e}"))?;
    let s = v
        .pointer("/status/indicator")
        .and_then(|i| i.as_str())
        .ok_or("no status.indicator in the JSON (is this a Statuspage `/api/v2/status.json`?)")?;
    Indicator::parse(s).ok_or_else(|| {
        format!("unknown indicator {s:?}: expected none, minor, maintenance, major or critical")
    })
}

/// A status page as a guard reads it: the indicator's rank ([`Indicator::rank`]:
/// none 0, minor 1, maintenance 2, major 3, critical 4), compared with the
/// threshold the plan wrote as a level (`indicator >= major` is `>= 3`).
pub async fn read_status_page(client: &reqwest::Client, url: &str) -> Result<f64, String> {
    status_indicator(client, url).await.map(Indicator::rank)
}

/// One PromQL instant query: `POST {base_url}/api/v1/query` with the form
/// `query=…`. The result must be a scalar or a vector of exactly one series;
/// anything else (no series, several, a range vector, NaN, an error from
/// Prometheus) comes back as the reason there is no value.
pub async fn read_prometheus(
    client: &reqwest::Client,
    base_url: &str,
    query: &str,
) -> Result<f64, String> {
    let url = format!("{}/api/v1/query", base_url.trim_end_matches('/'));
    let r = client
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(&[("query", query)]))
        .send()
        .await
        .map_err(|e| describe_error(&e))?;
    let status = r.status().as_u16();
    let body = r.text().await.map_err(|e| describe_error(&e))?;
    parse_query_response(status, &body)
}

/// `application/x-www-form-urlencoded` (reqwest is built without its `form` feature).
fn form_body(pairs: &[(&str, &str)]) -> String {
    let mut u = reqwest::Url::parse("http://form.invalid/").expect("a constant, valid URL");
    u.query_pairs_mut().extend_pairs(pairs);
    u.query().unwrap_or_default().to_string()
}

/// Reads a `/api/v1/query` response (any HTTP status: Prometheus answers
/// errors as JSON with 400, 422 or 503).
pub fn parse_query_response(status: u16, body: &str) -> Result<f64, String> {
    let v: serde_json::Value = match serde_json::from_str(body) {
        Ok(v) => v,
        Err(_) if !(200..300).contains(&status) => {
            return Err(format!("HTTP {status}: {}", snippet(body)));
        }
        Err(e) => return Err(format!("not a Prometheus API response: {e}")),
    };
    match v.get("status").and_then(|s| s.as_str()) {
        Some("success") => {}
        Some("error") => {
            let kind = v
                .get("errorType")
                .and_then(|s| s.as_str())
                .unwrap_or("error");
            let msg = v
                .get("error")
                .and_then(|s| s.as_str())
                .unwrap_or("(no message)");
            return Err(format!("Prometheus: {kind}: {msg}"));
        }
        _ => return Err(format!("HTTP {status}: no `status` in {}", snippet(body))),
    }
    let data = v.get("data").ok_or("no `data` in a success response")?;
    let result = data.get("result");
    let sample = match data.get("resultType").and_then(|t| t.as_str()) {
        Some("scalar") => result.ok_or("a scalar without `result`")?,
        Some("vector") => {
            let series = result
                .and_then(|r| r.as_array())
                .ok_or("a vector without a `result` list")?;
            match &series[..] {
                [] => {
                    return Err("query returned no series (nothing matched, or no data yet); if none means 0, append `or vector(0)`".into());
                }
                [one] => one.get("value").ok_or("a series without `value`")?,
                many => {
                    return Err(format!(
                        "query returned {} series; a guard compares one value: aggregate them, e.g. sum(…), max(…) or avg(…)",
                        many.len()
                    ));
                }
            }
        }
        Some("matrix") => {
            return Err("query returned a range vector; a guard needs an instant value: drop the `[range]` or wrap it, e.g. rate(…[1m])".into());
        }
        other => {
            return Err(format!(
                "query returned {}; a guard needs a scalar or one series",
                other.unwrap_or("no resultType")
            ));
        }
    };
    // A sample is `[unix_seconds, "value"]`; the value is a string ("NaN", "+Inf" included).
    let text = sample
        .get(1)
        .and_then(|s| s.as_str())
        .ok_or("a sample that is not [time, \"value\"]")?;
    let value: f64 = text
        .parse()
        .map_err(|_| format!("value {text:?} is not a number"))?;
    if value.is_nan() {
        return Err(
            "query value is NaN (often 0/0: no requests in the range); a guard cannot compare it"
                .into(),
        );
    }
    Ok(value)
}

/// Reads a non-probe guard source once. Probe sources have no single value: an error.
pub async fn read(client: &reqwest::Client, source: &GuardSource) -> Result<f64, String> {
    match source {
        GuardSource::StatusPage { url } => read_status_page(client, url).await,
        GuardSource::Prometheus { url, query } => read_prometheus(client, url, query).await,
        GuardSource::Probe { .. } => Err("a probe source is read from the aggregator".into()),
    }
}

/// A tiny HTTP/1.1 server on 127.0.0.1 for tests: answers from a script and
/// records every request.
#[cfg(test)]
pub(crate) mod testing {
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One request as received.
    #[derive(Debug, Clone)]
    pub struct Request {
        pub method: String,
        /// Path and query.
        pub target: String,
        pub headers: Vec<(String, String)>,
        pub body: String,
    }

    impl Request {
        pub fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }

        pub fn json(&self) -> serde_json::Value {
            serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
        }
    }

    /// A running server.
    pub struct Server {
        pub addr: SocketAddr,
        pub requests: Arc<Mutex<Vec<Request>>>,
    }

    impl Server {
        pub fn url(&self) -> String {
            format!("http://{}", self.addr)
        }

        pub fn requests(&self) -> Vec<Request> {
            self.requests.lock().unwrap().clone()
        }
    }

    /// Answers the n-th request with `script[n]` (status, JSON or text body),
    /// and every request after the script with its last entry.
    pub async fn serve(script: Vec<(u16, String)>) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let Some(req) = read_request(&mut s).await else {
                    continue;
                };
                let n = {
                    let mut all = seen.lock().unwrap();
                    all.push(req);
                    all.len() - 1
                };
                let (status, body) = script
                    .get(n)
                    .or(script.last())
                    .cloned()
                    .unwrap_or((200, String::new()));
                let resp = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
                let _ = s.shutdown().await;
            }
        });
        Server { addr, requests }
    }

    async fn read_request(s: &mut tokio::net::TcpStream) -> Option<Request> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            let n = s.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let mut lines = head.split("\r\n");
        let mut first = lines.next()?.split(' ');
        let method = first.next()?.to_string();
        let target = first.next()?.to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = buf[head_end + 4..].to_vec();
        while body.len() < len {
            let n = s.read(&mut chunk).await.ok()?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        Some(Request {
            method,
            target,
            headers,
            body: String::from_utf8_lossy(&body).to_string(),
        })
    }

    /// A 127.0.0.1 port nothing listens on (bound, then released).
    pub async fn closed_port() -> u16 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{closed_port, serve};
    use super::*;
    use serde_json::json;

    fn client() -> reqwest::Client {
        http_client(Duration::from_secs(5)).unwrap()
    }

    fn form_query(body: &str) -> String {
        let u = reqwest::Url::parse(&format!("http://x/?{body}")).unwrap();
        u.query_pairs()
            .find(|(k, _)| k == "query")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn status_pages_rank_like_the_plan_thresholds() {
        let page = |indicator: &str| {
            json!({"page": {"id": "x", "name": "DigitalOcean"},
                   "status": {"indicator": indicator, "description": "…"}})
            .to_string()
        };
        let s = serve(
            ["none", "minor", "maintenance", "major", "critical"]
                .into_iter()
                .map(|i| (200, page(i)))
                .collect(),
        )
        .await;
        let url = format!("{}/api/v2/status.json", s.url());
        let mut ranks = Vec::new();
        for _ in 0..5 {
            ranks.push(read_status_page(&client(), &url).await.unwrap());
        }
        assert_eq!(ranks, vec![0.0, 1.0, 2.0, 3.0, 4.0]);
        // `indicator >= major` in a plan is `>= Indicator::Major.rank()`.
        assert_eq!(Indicator::Major.rank(), 3.0);
        let r = s.requests();
        assert_eq!(
            (r[0].method.as_str(), r[0].target.as_str()),
            ("GET", "/api/v2/status.json")
        );
    }

    #[tokio::test]
    async fn status_page_problems_are_reasons_not_values() {
        let s = serve(vec![
            (503, "down for maintenance".into()),
            (200, "<html>".into()),
            (200, json!({"status": {}}).to_string()),
            (200, json!({"status": {"indicator": "purple"}}).to_string()),
        ])
        .await;
        let url = s.url();
        let mut errs = Vec::new();
        for _ in 0..4 {
            errs.push(read_status_page(&client(), &url).await.unwrap_err());
        }
        assert!(errs[0].starts_with("HTTP 503"), "{}", errs[0]);
        assert!(errs[0].contains("down for maintenance"), "{}", errs[0]);
        assert!(errs[1].starts_with("not Statuspage JSON"), "{}", errs[1]);
        assert!(errs[2].starts_with("no status.indicator"), "{}", errs[2]);
        assert!(
            errs[3].contains("unknown indicator \"purple\""),
            "{}",
            errs[3]
        );
        let port = closed_port().await;
        let e = read_status_page(&client(), &format!("http://127.0.0.1:{port}/s.json"))
            .await
            .unwrap_err();
        assert!(e.starts_with("cannot connect:"), "{e}");
        assert!(!e.contains("127.0.0.1"), "no URL in errors: {e}");
    }

    #[tokio::test]
    async fn prometheus_vector_and_scalar() {
        let vector = json!({"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {"job": "elm-package"}, "value": [1_795_770_245.781, "0.125"]}
        ]}});
        let scalar = json!({"status": "success", "data": {"resultType": "scalar",
            "result": [1_795_770_245.781, "42"]}});
        let inf = json!({"status": "success", "data": {"resultType": "scalar",
            "result": [1_795_770_245.781, "+Inf"]}});
        let s = serve(vec![
            (200, vector.to_string()),
            (200, scalar.to_string()),
            (200, inf.to_string()),
        ])
        .await;
        let q = r#"sum(rate(http_requests_total{code=~"5.."}[1m])) / sum(rate(http_requests_total[1m]))"#;
        let base = format!("{}/", s.url()); // a trailing slash is fine
        assert_eq!(read_prometheus(&client(), &base, q).await, Ok(0.125));
        assert_eq!(
            read_prometheus(&client(), &base, "scalar(1)").await,
            Ok(42.0)
        );
        assert_eq!(
            read_prometheus(&client(), &base, "1/0").await,
            Ok(f64::INFINITY)
        );
        let r = s.requests();
        assert_eq!(r[0].method, "POST");
        assert_eq!(r[0].target, "/api/v1/query");
        assert_eq!(
            r[0].header("content-type"),
            Some("application/x-www-form-urlencoded")
        );
        assert_eq!(
            form_query(&r[0].body),
            q,
            "the query survives form encoding"
        );
    }

    #[tokio::test]
    async fn prometheus_answers_without_one_value_are_reasons() {
        let vector = |n: usize| {
            let series: Vec<_> = (0..n)
                .map(|i| json!({"metric": {"instance": format!("new-{i}")}, "value": [1.0, "1"]}))
                .collect();
            json!({"status": "success", "data": {"resultType": "vector", "result": series}})
                .to_string()
        };
        let nan = json!({"status": "success", "data": {"resultType": "vector",
            "result": [{"metric": {}, "value": [1.0, "NaN"]}]}});
        let matrix = json!({"status": "success", "data": {"resultType": "matrix",
            "result": [{"metric": {}, "values": [[1.0, "1"]]}]}});
        let error = json!({"status": "error", "errorType": "bad_data",
            "error": "invalid parameter \"query\": 1:5: parse error: unexpected end of input"});
        let s = serve(vec![
            (200, vector(0)),
            (200, vector(3)),
            (200, nan.to_string()),
            (200, matrix.to_string()),
            (400, error.to_string()),
            (502, "Bad Gateway".into()),
        ])
        .await;
        let mut errs = Vec::new();
        for _ in 0..6 {
            errs.push(
                read_prometheus(&client(), &s.url(), "up")
                    .await
                    .unwrap_err(),
            );
        }
        assert!(
            errs[0].starts_with("query returned no series"),
            "{}",
            errs[0]
        );
        assert!(
            errs[1].starts_with("query returned 3 series"),
            "{}",
            errs[1]
        );
        assert!(errs[1].contains("sum(…)"), "{}", errs[1]);
        assert!(errs[2].starts_with("query value is NaN"), "{}", errs[2]);
        assert!(errs[3].contains("range vector"), "{}", errs[3]);
        assert_eq!(
            errs[4],
            "Prometheus: bad_data: invalid parameter \"query\": 1:5: parse error: unexpected end of input"
        );
        assert_eq!(errs[5], "HTTP 502: Bad Gateway");
        let port = closed_port().await;
        let e = read_prometheus(&client(), &format!("http://127.0.0.1:{port}"), "up")
            .await
            .unwrap_err();
        assert!(e.starts_with("cannot connect:"), "{e}");
    }

    #[tokio::test]
    async fn read_dispatches_on_the_guard_source() {
        let s = serve(vec![(
            200,
            json!({"status": {"indicator": "major"}}).to_string(),
        )])
        .await;
        let src = GuardSource::StatusPage { url: s.url() };
        assert_eq!(read(&client(), &src).await, Ok(3.0));
        let probe = GuardSource::Probe {
            check: "home".into(),
            target: crate::config::TargetName::New,
        };
        assert!(read(&client(), &probe).await.is_err());
    }
}
