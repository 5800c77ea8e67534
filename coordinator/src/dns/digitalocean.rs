//! DigitalOcean's DNS API (v2): list the name's records (paginated), `PATCH`
//! records in place with `data`/`ttl`, `POST` missing ones and `DELETE`
//! extras last. Bearer token. The API's minimum TTL is 30 s.

use std::fmt;
use std::path::Path;

use serde_json::{Value, json};

use super::http::{Api, encode_component, origin};
use super::reconcile::{Change, Existing, plan, to_set};
use super::retry::RetryPolicy;
use super::{
    BoxFuture, DnsProvider, ProviderError, RecordSet, RecordType, TokenApiSpec, check_in_zone, fqdn,
};

const PROVIDER: &str = "digitalocean";
const DEFAULT_ORIGIN: &str = "https://api.digitalocean.com";
/// The API refuses TTLs below this.
pub const MIN_TTL: u32 = 30;
const PER_PAGE: u32 = 200;
const MAX_PAGES: u32 = 100;

pub struct DigitalOcean {
    api: Api,
    origin: String,
    token: String,
    /// `elm-lang.org.`
    zone: String,
}

impl fmt::Debug for DigitalOcean {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DigitalOcean")
            .field("origin", &self.origin)
            .field("zone", &self.zone)
            .finish_non_exhaustive()
    }
}

impl DigitalOcean {
    pub fn from_spec(spec: &TokenApiSpec, zone: &str, base: &Path) -> Result<Self, String> {
        let token = spec.token.read("dns.digitalocean.token", base)?;
        Self::new(
            &origin(spec.api_url.as_deref(), DEFAULT_ORIGIN),
            &token,
            zone,
        )
    }

    /// `origin` is e.g. `https://api.digitalocean.com` (no path).
    pub fn new(origin: &str, token: &str, zone: &str) -> Result<Self, String> {
        Ok(DigitalOcean {
            api: Api::new(PROVIDER, error_message)?,
            origin: origin.trim_end_matches('/').to_string(),
            token: token.to_string(),
            zone: fqdn(zone),
        })
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.api = self.api.with_retry(retry);
        self
    }

    fn records_url(&self) -> String {
        format!(
            "{}/v2/domains/{}/records",
            self.origin,
            encode_component(self.zone.trim_end_matches('.'))
        )
    }

    /// Every record of `name`/`rtype`, following the pages.
    async fn list(&self, name: &str, rtype: RecordType) -> Result<Vec<Existing>, ProviderError> {
        let name = fqdn(name);
        let mut out = Vec::new();
        for page in 1..=MAX_PAGES {
            let url = format!(
                "{}?type={}&name={}&page={page}&per_page={PER_PAGE}",
                self.records_url(),
                rtype,
                encode_component(name.trim_end_matches('.'))
            );
            let reply = self
                .api
                .send(&format!("listing {rtype} records of {name}"), |c| {
                    c.get(&url).bearer_auth(&self.token)
                })
                .await?;
            let v = parse(&reply.body)?;
            let records = v["domain_records"].as_array().ok_or_else(|| {
                ProviderError::fatal(PROVIDER, "list response has no `domain_records` array")
            })?;
            for r in records {
                if r["type"].as_str() != Some(rtype.as_str()) || self.owner(r) != name {
                    continue;
                }
                let id = match &r["id"] {
                    Value::Number(n) => n.to_string(),
                    Value::String(s) => s.clone(),
                    _ => return Err(ProviderError::fatal(PROVIDER, "a record has no id")),
                };
                let data = r["data"].as_str().unwrap_or_default();
                let value = rtype
                    .canonical_value(data)
                    .map_err(|e| ProviderError::fatal(PROVIDER, format!("record {id}: {e}")))?;
                let ttl = r["ttl"].as_u64().unwrap_or(0) as u32;
                out.push(Existing { id, value, ttl });
            }
            if v["links"]["pages"]["next"].is_null() {
                return Ok(out);
            }
        }
        Err(ProviderError::fatal(
            PROVIDER,
            format!("more than {MAX_PAGES} pages of records for {name}"),
        ))
    }

    /// A record's owner as a fully qualified name (the API gives `@` or a
    /// name relative to the domain).
    fn owner(&self, r: &Value) -> String {
        match r["name"].as_str().unwrap_or_default() {
            "@" | "" => self.zone.clone(),
            n => {
                let f = fqdn(n);
                if f == self.zone || f.ends_with(&format!(".{}", self.zone)) {
                    f
                } else {
                    format!("{}{}", f, self.zone)
                }
            }
        }
    }

    /// The `name` the API wants when creating: relative, `@` for the apex.
    fn relative(&self, name: &str) -> String {
        let f = fqdn(name);
        if f == self.zone {
            "@".to_string()
        } else {
            f.strip_suffix(&format!(".{}", self.zone))
                .unwrap_or(&f)
                .to_string()
        }
    }

    async fn do_apply(&self, desired: &RecordSet) -> Result<(), ProviderError> {
        check_in_zone(PROVIDER, &self.zone, &desired.name)?;
        if desired.ttl < MIN_TTL {
            return Err(ProviderError::fatal(
                PROVIDER,
                format!(
                    "DigitalOcean's minimum TTL is {MIN_TTL} s; {} asks for {}",
                    desired.name, desired.ttl
                ),
            ));
        }
        let existing = self.list(&desired.name, desired.rtype).await?;
        let changes = plan(&existing, &desired.values, desired.ttl);
        if changes.is_empty() {
            tracing::info!(set = %desired.describe(), "digitalocean: already as desired");
        }
        for change in changes {
            match change {
                Change::Update { id, value } => {
                    let url = format!("{}/{id}", self.records_url());
                    let body = json!({ "data": value, "ttl": desired.ttl });
                    self.api
                        .send(&format!("updating record {id} to {value}"), |c| {
                            c.patch(&url).bearer_auth(&self.token).json(&body)
                        })
                        .await?;
                }
                Change::Create { value } => {
                    let url = self.records_url();
                    let body = json!({
                        "type": desired.rtype.as_str(),
                        "name": self.relative(&desired.name),
                        "data": value,
                        "ttl": desired.ttl,
                    });
                    self.api
                        .send(&format!("creating a record for {value}"), |c| {
                            c.post(&url).bearer_auth(&self.token).json(&body)
                        })
                        .await?;
                }
                Change::Delete { id } => {
                    let url = format!("{}/{id}", self.records_url());
                    self.api
                        .send(&format!("deleting record {id}"), |c| {
                            c.delete(&url).bearer_auth(&self.token)
                        })
                        .await?;
                }
            }
        }
        Ok(())
    }
}

impl DnsProvider for DigitalOcean {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    fn read<'a>(
        &'a self,
        name: &'a str,
        rtype: RecordType,
    ) -> BoxFuture<'a, Result<Option<RecordSet>, ProviderError>> {
        Box::pin(async move {
            let existing = self.list(name, rtype).await?;
            Ok(to_set(name, rtype, &existing))
        })
    }

    fn apply<'a>(&'a self, desired: &'a RecordSet) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(self.do_apply(desired))
    }
}

fn parse(body: &str) -> Result<Value, ProviderError> {
    serde_json::from_str(body).map_err(|e| {
        ProviderError::fatal(
            PROVIDER,
            format!("response is not JSON ({e}): {}", super::http::snippet(body)),
        )
    })
}

/// `{"id": "not_found", "message": "…"}`
fn error_message(body: &str) -> Option<String> {
    let v: Value = serde_json::from_str(body).ok()?;
    let msg = v["message"].as_str()?;
    Some(match v["id"].as_str() {
        Some(id) => format!("{msg} ({id})"),
        None => msg.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_relative_to_the_domain() {
        let d = DigitalOcean::new("http://127.0.0.1:9", "t", "elm-lang.org").unwrap();
        assert_eq!(d.relative("package.elm-lang.org."), "package");
        assert_eq!(d.relative("elm-lang.org"), "@");
        assert_eq!(d.owner(&json!({"name": "@"})), "elm-lang.org.");
        assert_eq!(
            d.owner(&json!({"name": "package"})),
            "package.elm-lang.org."
        );
        assert_eq!(
            error_message(r#"{"id":"unauthorized","message":"Unable to authenticate you"}"#)
                .unwrap(),
            "Unable to authenticate you (unauthorized)"
        );
    }

    #[test]
    fn debug_does_not_show_the_token() {
        let d = DigitalOcean::new("http://127.0.0.1:9", "tok-123", "elm-lang.org").unwrap();
        assert!(!format!("{d:?}").contains("tok-123"));
    }
}
