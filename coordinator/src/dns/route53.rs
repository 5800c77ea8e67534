//! Amazon Route 53: `ChangeResourceRecordSets` with one `UPSERT` (atomic: the
//! whole RRset is replaced at once), then `GetChange` until `INSYNC`;
//! `ListResourceRecordSets` to read. Requests are signed with AWS Signature
//! Version 4 (service `route53`, region `us-east-1` unless configured).

use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ring::{digest, hmac};

use super::http::{Api, encode_component, origin};
use super::retry::RetryPolicy;
use super::{
    BoxFuture, DnsProvider, ProviderError, RecordSet, RecordType, Route53Spec, check_in_zone, fqdn,
};

const PROVIDER: &str = "route53";
const DEFAULT_ORIGIN: &str = "https://route53.amazonaws.com";
const SERVICE: &str = "route53";
const XMLNS: &str = "https://route53.amazonaws.com/doc/2013-04-01/";

pub struct Route53 {
    api: Api,
    origin: String,
    zone_id: String,
    zone: String,
    creds: Credentials,
    /// First wait between `GetChange` polls (doubles, capped at 5 s).
    poll: Duration,
    /// Give up waiting for `INSYNC` after this long.
    sync_deadline: Duration,
}

impl fmt::Debug for Route53 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Route53")
            .field("origin", &self.origin)
            .field("zone_id", &self.zone_id)
            .field("zone", &self.zone)
            .field("region", &self.creds.region)
            .finish_non_exhaustive()
    }
}

/// What signs a request.
#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub region: String,
}

impl Route53 {
    pub fn from_spec(spec: &Route53Spec, zone: &str, base: &Path) -> Result<Self, String> {
        let creds = Credentials {
            access_key_id: spec.access_key_id.read("dns.route53.access_key_id", base)?,
            secret_access_key: spec
                .secret_access_key
                .read("dns.route53.secret_access_key", base)?,
            region: spec.region.clone().unwrap_or_else(|| "us-east-1".into()),
        };
        Self::new(
            &origin(spec.api_url.as_deref(), DEFAULT_ORIGIN),
            &spec.hosted_zone_id,
            zone,
            creds,
        )
    }

    pub fn new(
        origin: &str,
        hosted_zone_id: &str,
        zone: &str,
        creds: Credentials,
    ) -> Result<Self, String> {
        let zone_id = hosted_zone_id
            .trim()
            .trim_start_matches("/hostedzone/")
            .to_string();
        if zone_id.is_empty() || zone_id.contains('/') {
            return Err(format!(
                "dns.route53.hosted_zone_id `{hosted_zone_id}` is not a hosted zone id (Z…)"
            ));
        }
        Ok(Route53 {
            api: Api::new(PROVIDER, error_message)?.with_transient(is_throttled),
            origin: origin.trim_end_matches('/').to_string(),
            zone_id,
            zone: fqdn(zone),
            creds,
            poll: Duration::from_millis(500),
            sync_deadline: Duration::from_secs(600),
        })
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.api = self.api.with_retry(retry);
        self
    }

    /// Changes how `GetChange` is polled.
    pub fn with_polling(mut self, first_wait: Duration, deadline: Duration) -> Self {
        self.poll = first_wait;
        self.sync_deadline = deadline;
        self
    }

    /// A signed request. `query` pairs are unencoded.
    async fn call(
        &self,
        what: &str,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<String>,
    ) -> Result<String, ProviderError> {
        let qs = canonical_query(query);
        let url = if qs.is_empty() {
            format!("{}{path}", self.origin)
        } else {
            format!("{}{path}?{qs}", self.origin)
        };
        let parsed = reqwest::Url::parse(&url)
            .map_err(|e| ProviderError::fatal(PROVIDER, format!("bad API URL {url}: {e}")))?;
        let host = match (parsed.host_str(), parsed.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => return Err(ProviderError::fatal(PROVIDER, format!("no host in {url}"))),
        };
        let payload = body.clone().unwrap_or_default();
        let reply = self
            .api
            .send(what, |c| {
                let amz_date = amz_date(SystemTime::now());
                let headers = [
                    ("host".to_string(), host.clone()),
                    ("x-amz-date".to_string(), amz_date.clone()),
                ];
                let auth = authorization(
                    &self.creds,
                    SERVICE,
                    &amz_date,
                    method.as_str(),
                    path,
                    query,
                    &headers,
                    payload.as_bytes(),
                );
                let mut rb = c
                    .request(method.clone(), &url)
                    .header("x-amz-date", amz_date)
                    .header(reqwest::header::AUTHORIZATION, auth);
                if let Some(b) = &body {
                    rb = rb
                        .header(reqwest::header::CONTENT_TYPE, "text/xml")
                        .body(b.clone());
                }
                rb
            })
            .await?;
        Ok(reply.body)
    }

    async fn list(
        &self,
        name: &str,
        rtype: RecordType,
    ) -> Result<Option<RecordSet>, ProviderError> {
        let name = fqdn(name);
        let path = format!(
            "/2013-04-01/hostedzone/{}/rrset",
            encode_component(&self.zone_id)
        );
        let xml = self
            .call(
                &format!("listing {rtype} records of {name}"),
                reqwest::Method::GET,
                &path,
                &[("name", &name), ("type", rtype.as_str()), ("maxitems", "1")],
                None,
            )
            .await?;
        // The list starts at (name, type); the first set may be a later one.
        for set in blocks(&xml, "ResourceRecordSet") {
            let set_name = fqdn(&unescape_name(&text(set, "Name").unwrap_or_default()));
            if set_name != name || text(set, "Type").as_deref() != Some(rtype.as_str()) {
                continue;
            }
            if !blocks(set, "AliasTarget").is_empty() || text(set, "SetIdentifier").is_some() {
                return Err(ProviderError::fatal(
                    PROVIDER,
                    format!(
                        "{name} {rtype} is an alias or has a routing policy; cutover only manages simple record sets"
                    ),
                ));
            }
            let ttl = text(set, "TTL")
                .and_then(|t| t.parse().ok())
                .ok_or_else(|| {
                    ProviderError::fatal(PROVIDER, format!("{name}: no TTL in the listing"))
                })?;
            let mut values = Vec::new();
            for rr in blocks(set, "ResourceRecord") {
                let v = text(rr, "Value").unwrap_or_default();
                values.push(
                    rtype
                        .canonical_value(&v)
                        .map_err(|e| ProviderError::fatal(PROVIDER, format!("{name}: {e}")))?,
                );
            }
            values.sort();
            values.dedup();
            return Ok(Some(RecordSet {
                name,
                rtype,
                ttl,
                values,
            }));
        }
        Ok(None)
    }

    async fn do_apply(&self, desired: &RecordSet) -> Result<(), ProviderError> {
        check_in_zone(PROVIDER, &self.zone, &desired.name)?;
        if self.list(&desired.name, desired.rtype).await?.as_ref() == Some(desired) {
            tracing::info!(set = %desired.describe(), "route53: already as desired");
            return Ok(());
        }
        let path = format!(
            "/2013-04-01/hostedzone/{}/rrset/",
            encode_component(&self.zone_id)
        );
        let xml = self
            .call(
                &format!("UPSERT {}", desired.describe()),
                reqwest::Method::POST,
                &path,
                &[],
                Some(change_batch(desired)),
            )
            .await?;
        let mut change = change_info(&xml)?;
        let started = Instant::now();
        let mut wait = self.poll;
        while change.1 != "INSYNC" {
            if started.elapsed() > self.sync_deadline {
                return Err(ProviderError::transient(
                    PROVIDER,
                    format!(
                        "change {} still {} after {:?}",
                        change.0, change.1, self.sync_deadline
                    ),
                ));
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(5));
            let path = format!("/2013-04-01/change/{}", encode_component(&change.0));
            let xml = self
                .call(
                    &format!("GetChange {}", change.0),
                    reqwest::Method::GET,
                    &path,
                    &[],
                    None,
                )
                .await?;
            change = change_info(&xml)?;
        }
        Ok(())
    }
}

impl DnsProvider for Route53 {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    fn read<'a>(
        &'a self,
        name: &'a str,
        rtype: RecordType,
    ) -> BoxFuture<'a, Result<Option<RecordSet>, ProviderError>> {
        Box::pin(self.list(name, rtype))
    }

    fn apply<'a>(&'a self, desired: &'a RecordSet) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(self.do_apply(desired))
    }
}

/// The `ChangeResourceRecordSetsRequest` document for one UPSERT.
pub fn change_batch(desired: &RecordSet) -> String {
    let records: String = desired
        .values
        .iter()
        .map(|v| {
            format!(
                "<ResourceRecord><Value>{}</Value></ResourceRecord>",
                escape(v)
            )
        })
        .collect();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <ChangeResourceRecordSetsRequest xmlns=\"{XMLNS}\">\
         <ChangeBatch><Comment>cutover</Comment><Changes><Change>\
         <Action>UPSERT</Action>\
         <ResourceRecordSet><Name>{name}</Name><Type>{rtype}</Type><TTL>{ttl}</TTL>\
         <ResourceRecords>{records}</ResourceRecords></ResourceRecordSet>\
         </Change></Changes></ChangeBatch></ChangeResourceRecordSetsRequest>",
        name = escape(&desired.name),
        rtype = desired.rtype,
        ttl = desired.ttl,
    )
}

/// (`C2682N5HXP0BZ4`, `PENDING`) from a `ChangeInfo`.
fn change_info(xml: &str) -> Result<(String, String), ProviderError> {
    let info = blocks(xml, "ChangeInfo")
        .into_iter()
        .next()
        .ok_or_else(|| ProviderError::fatal(PROVIDER, "response has no ChangeInfo"))?;
    let id =
        text(info, "Id").ok_or_else(|| ProviderError::fatal(PROVIDER, "ChangeInfo has no Id"))?;
    let status = text(info, "Status")
        .ok_or_else(|| ProviderError::fatal(PROVIDER, "ChangeInfo has no Status"))?;
    Ok((id.trim_start_matches("/change/").to_string(), status))
}

/// `<Code>` and every `<Message>` of an `ErrorResponse` or `InvalidChangeBatch`.
fn error_message(body: &str) -> Option<String> {
    let mut messages: Vec<String> = Vec::new();
    let mut rest = body;
    while let Some(t) = text(rest, "Message") {
        messages.push(t);
        let end = rest.find("</Message>")? + "</Message>".len();
        rest = &rest[end..];
    }
    let code = text(body, "Code").or_else(|| {
        body.contains("<InvalidChangeBatch")
            .then(|| "InvalidChangeBatch".to_string())
    });
    match (code, messages.is_empty()) {
        (Some(c), false) => Some(format!("{c}: {}", messages.join("; "))),
        (Some(c), true) => Some(c),
        (None, false) => Some(messages.join("; ")),
        (None, true) => None,
    }
}

/// Route 53 reports throttling as HTTP 400.
fn is_throttled(status: u16, body: &str) -> bool {
    status == 400
        && matches!(
            text(body, "Code").as_deref(),
            Some("Throttling" | "PriorRequestNotComplete")
        )
}

// --- a little XML: Route 53's documents are flat and predictable ---------

/// Inner text of each `<tag>…</tag>` (opening tag with or without attributes).
fn blocks<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = xml;
    loop {
        let Some(start) = find_open(rest, tag) else {
            return out;
        };
        let inner = &rest[start..];
        let Some(end) = inner.find(&close) else {
            return out;
        };
        out.push(&inner[..end]);
        rest = &inner[end + close.len()..];
    }
}

/// Index just after the first opening `<tag>` / `<tag attr…>`.
fn find_open(xml: &str, tag: &str) -> Option<usize> {
    let open = format!("<{tag}");
    let mut from = 0;
    while let Some(i) = xml[from..].find(&open) {
        let at = from + i + open.len();
        match xml[at..].chars().next() {
            Some('>') => return Some(at + 1),
            Some(c) if c.is_whitespace() => return xml[at..].find('>').map(|j| at + j + 1),
            _ => from = at,
        }
    }
    None
}

/// The unescaped text of the first `<tag>`.
fn text(xml: &str, tag: &str) -> Option<String> {
    blocks(xml, tag).first().map(|t| unescape(t.trim()))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// Route 53 writes some characters of names as `\NNN` octal (`\052` = `*`).
fn unescape_name(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let n = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(char::from(n));
            i += 4;
        } else {
            out.push(char::from(b[i]));
            i += 1;
        }
    }
    out
}

// --- AWS Signature Version 4 ----------------------------------------------

/// `20150830T123600Z`
pub fn amz_date(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = crate::localtime::civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Sorted, RFC 3986-encoded `k=v&…`.
pub fn canonical_query(query: &[(&str, &str)]) -> String {
    let mut pairs: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| (encode_component(k), encode_component(v)))
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_hex(data: &[u8]) -> String {
    hex(digest::digest(&digest::SHA256, data).as_ref())
}

fn hmac256(key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data)
        .as_ref()
        .to_vec()
}

/// The canonical request and the `SignedHeaders` list. `headers` are
/// (lowercase name, value); `path` is already URI-encoded.
pub fn canonical_request(
    method: &str,
    path: &str,
    query: &[(&str, &str)],
    headers: &[(String, String)],
    payload: &[u8],
) -> (String, String) {
    let mut hs: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| {
            (
                k.to_ascii_lowercase(),
                v.split_whitespace().collect::<Vec<_>>().join(" "),
            )
        })
        .collect();
    hs.sort();
    let canonical_headers: String = hs.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let signed: Vec<&str> = hs.iter().map(|(k, _)| k.as_str()).collect();
    let signed = signed.join(";");
    let req = format!(
        "{method}\n{path}\n{}\n{canonical_headers}\n{signed}\n{}",
        canonical_query(query),
        sha256_hex(payload)
    );
    (req, signed)
}

/// `{date}/{region}/{service}/aws4_request`
fn scope(amz_date: &str, region: &str, service: &str) -> String {
    format!("{}/{region}/{service}/aws4_request", &amz_date[..8])
}

pub fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    )
}

pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let k_date = hmac256(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac256(&k_date, region.as_bytes());
    let k_service = hmac256(&k_region, service.as_bytes());
    hmac256(&k_service, b"aws4_request")
}

/// The `Authorization` header value for a request.
#[allow(clippy::too_many_arguments)]
pub fn authorization(
    creds: &Credentials,
    service: &str,
    amz_date: &str,
    method: &str,
    path: &str,
    query: &[(&str, &str)],
    headers: &[(String, String)],
    payload: &[u8],
) -> String {
    let (creq, signed) = canonical_request(method, path, query, headers, payload);
    let scope = scope(amz_date, &creds.region, service);
    let sts = string_to_sign(amz_date, &scope, &creq);
    let key = signing_key(
        &creds.secret_access_key,
        &amz_date[..8],
        &creds.region,
        service,
    );
    let sig = hex(&hmac256(&key, sts.as_bytes()));
    format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={sig}",
        creds.access_key_id
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn h(k: &str, v: &str) -> (String, String) {
        (k.to_string(), v.to_string())
    }

    /// AWS's Signature Version 4 test suite, `get-vanilla`.
    #[test]
    fn sigv4_get_vanilla() {
        let creds = Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            region: "us-east-1".into(),
        };
        let headers = [
            h("Host", "example.amazonaws.com"),
            h("X-Amz-Date", "20150830T123600Z"),
        ];
        let (creq, signed) = canonical_request("GET", "/", &[], &headers, b"");
        assert_eq!(
            creq,
            format!(
                "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n{EMPTY_SHA256}"
            )
        );
        assert_eq!(signed, "host;x-amz-date");
        let sts = string_to_sign(
            "20150830T123600Z",
            "20150830/us-east-1/service/aws4_request",
            &creq,
        );
        assert_eq!(
            sts,
            "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n\
             bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63"
        );
        assert_eq!(
            authorization(
                &creds,
                "service",
                "20150830T123600Z",
                "GET",
                "/",
                &[],
                &headers,
                b""
            ),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    /// The S3 "GET Object" example of AWS's header-based SigV4 documentation
    /// (its example secret has `/` where the test suite's has `+`).
    #[test]
    fn sigv4_s3_get_object_example() {
        let creds = Credentials {
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            region: "us-east-1".into(),
        };
        let headers = [
            h("host", "examplebucket.s3.amazonaws.com"),
            h("range", "bytes=0-9"),
            h("x-amz-content-sha256", EMPTY_SHA256),
            h("x-amz-date", "20130524T000000Z"),
        ];
        let (creq, _) = canonical_request("GET", "/test.txt", &[], &headers, b"");
        let sts = string_to_sign(
            "20130524T000000Z",
            "20130524/us-east-1/s3/aws4_request",
            &creq,
        );
        assert!(sts.ends_with("7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972"));
        let auth = authorization(
            &creds,
            "s3",
            "20130524T000000Z",
            "GET",
            "/test.txt",
            &[],
            &headers,
            b"",
        );
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    /// The key derivation example of AWS's SigV4 documentation (IAM, 2012-02-15).
    #[test]
    fn sigv4_signing_key_example() {
        assert_eq!(
            hex(&signing_key(
                "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                "20120215",
                "us-east-1",
                "iam"
            )),
            "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"
        );
    }

    #[test]
    fn dates_and_queries() {
        assert_eq!(amz_date(UNIX_EPOCH), "19700101T000000Z");
        assert_eq!(
            amz_date(UNIX_EPOCH + Duration::from_secs(1_440_938_160)),
            "20150830T123600Z"
        );
        assert_eq!(
            amz_date(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "20000229T000000Z"
        );
        assert_eq!(
            canonical_query(&[("type", "A"), ("name", "a.b."), ("maxitems", "1")]),
            "maxitems=1&name=a.b.&type=A"
        );
    }

    #[test]
    fn xml_reading() {
        let xml = r#"<?xml version="1.0"?>
<ListResourceRecordSetsResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/">
<ResourceRecordSets><ResourceRecordSet><Name>\052.elm-lang.org.</Name><Type>A</Type><TTL>60</TTL>
<ResourceRecords><ResourceRecord><Value>10.0.0.1</Value></ResourceRecord><ResourceRecord><Value>10.0.0.2</Value></ResourceRecord></ResourceRecords>
</ResourceRecordSet></ResourceRecordSets><IsTruncated>false</IsTruncated></ListResourceRecordSetsResponse>"#;
        let sets = blocks(xml, "ResourceRecordSet");
        assert_eq!(sets.len(), 1);
        assert_eq!(
            unescape_name(&text(sets[0], "Name").unwrap()),
            "*.elm-lang.org."
        );
        assert_eq!(blocks(sets[0], "ResourceRecord").len(), 2);
        let err = r#"<InvalidChangeBatch xmlns="x"><Messages><Message>first &amp; worst</Message><Message>second</Message></Messages></InvalidChangeBatch>"#;
        assert_eq!(
            error_message(err).unwrap(),
            "InvalidChangeBatch: first & worst; second"
        );
        let throttled = "<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error></ErrorResponse>";
        assert!(is_throttled(400, throttled));
        assert_eq!(
            error_message(throttled).unwrap(),
            "Throttling: Rate exceeded"
        );
    }
}
