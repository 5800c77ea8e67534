//! Cloudflare's DNS API (v4): list the name's records, `PATCH` records in
//! place with `content`/`ttl`, `POST` missing ones and `DELETE` extras last.
//! Bearer token. A body with `success: false` is an error whatever the HTTP
//! status, reported with `errors[].message`. TTL 1 means "automatic", any
//! other must be 60–86400. Proxied records are refused: the authoritative
//! servers would answer Cloudflare's addresses, not ours.

use std::fmt;
use std::path::Path;

use serde_json::{Value, json};

use super::http::{Api, Reply, encode_component, origin, snippet};
use super::reconcile::{Change, Existing, plan, to_set};
use super::retry::RetryPolicy;
use super::{
    BoxFuture, CloudflareSpec, DnsProvider, ProviderError, RecordSet, RecordType, check_in_zone,
    fqdn,
};

const PROVIDER: &str = "cloudflare";
const DEFAULT_ORIGIN: &str = "https://api.cloudflare.com";
const PER_PAGE: u32 = 100;
const MAX_PAGES: u32 = 100;

pub struct Cloudflare {
    api: Api,
    origin: String,
    token: String,
    zone_id: String,
    zone: String,
}

impl fmt::Debug for Cloudflare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cloudflare")
            .field("origin", &self.origin)
            .field("zone_id", &self.zone_id)
            .field("zone", &self.zone)
            .finish_non_exhaustive()
    }
}

impl Cloudflare {
    pub fn from_spec(spec: &CloudflareSpec, zone: &str, base: &Path) -> Result<Self, String> {
        let token = spec.token.read("dns.cloudflare.token", base)?;
        if spec.zone_id.trim().is_empty() {
            return Err("dns.cloudflare.zone_id is empty".to_string());
        }
        Self::new(
            &origin(spec.api_url.as_deref(), DEFAULT_ORIGIN),
            &token,
            &spec.zone_id,
            zone,
        )
    }

    /// `origin` is e.g. `https://api.cloudflare.com`; `/client/v4` is appended.
    pub fn new(origin: &str, token: &str, zone_id: &str, zone: &str) -> Result<Self, String> {
        Ok(Cloudflare {
            api: Api::new(PROVIDER, error_message)?,
            origin: origin.trim_end_matches('/').to_string(),
            token: token.to_string(),
            zone_id: zone_id.trim().to_string(),
            zone: fqdn(zone),
        })
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.api = self.api.with_retry(retry);
        self
    }

    fn records_url(&self) -> String {
        format!(
            "{}/client/v4/zones/{}/dns_records",
            self.origin,
            encode_component(&self.zone_id)
        )
    }

    /// Sends and insists on `success: true`.
    async fn call<F>(&self, what: &str, make: F) -> Result<Value, ProviderError>
    where
        F: Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    {
        let Reply { body, .. } = self.api.send(what, make).await?;
        let v: Value = serde_json::from_str(&body).map_err(|e| {
            ProviderError::fatal(
                PROVIDER,
                format!("{what}: response is not JSON ({e}): {}", snippet(&body)),
            )
        })?;
        if v["success"].as_bool() != Some(true) {
            let detail = error_message(&body).unwrap_or_else(|| snippet(&body));
            return Err(ProviderError::fatal(PROVIDER, format!("{what}: {detail}")));
        }
        Ok(v)
    }

    async fn list(
        &self,
        name: &str,
        rtype: RecordType,
    ) -> Result<Vec<(Existing, bool)>, ProviderError> {
        let name = fqdn(name);
        let mut out = Vec::new();
        for page in 1..=MAX_PAGES {
            let url = format!(
                "{}?type={}&name={}&page={page}&per_page={PER_PAGE}",
                self.records_url(),
                rtype,
                encode_component(name.trim_end_matches('.'))
            );
            let v = self
                .call(&format!("listing {rtype} records of {name}"), |c| {
                    c.get(&url).bearer_auth(&self.token)
                })
                .await?;
            let records = v["result"].as_array().ok_or_else(|| {
                ProviderError::fatal(PROVIDER, "list response has no `result` array")
            })?;
            for r in records {
                if r["type"].as_str() != Some(rtype.as_str())
                    || fqdn(r["name"].as_str().unwrap_or_default()) != name
                {
                    continue;
                }
                let id = r["id"]
                    .as_str()
                    .ok_or_else(|| ProviderError::fatal(PROVIDER, "a record has no id"))?
                    .to_string();
                let value = rtype
                    .canonical_value(r["content"].as_str().unwrap_or_default())
                    .map_err(|e| ProviderError::fatal(PROVIDER, format!("record {id}: {e}")))?;
                let ttl = r["ttl"].as_u64().unwrap_or(0) as u32;
                let proxied = r["proxied"].as_bool().unwrap_or(false);
                out.push((Existing { id, value, ttl }, proxied));
            }
            let info = &v["result_info"];
            let total_pages = info["total_pages"].as_u64().unwrap_or(1);
            if u64::from(page) >= total_pages {
                return Ok(out);
            }
        }
        Err(ProviderError::fatal(
            PROVIDER,
            format!("more than {MAX_PAGES} pages of records for {name}"),
        ))
    }

    async fn do_apply(&self, desired: &RecordSet) -> Result<(), ProviderError> {
        check_in_zone(PROVIDER, &self.zone, &desired.name)?;
        if desired.ttl != 1 && !(60..=86400).contains(&desired.ttl) {
            return Err(ProviderError::fatal(
                PROVIDER,
                format!(
                    "Cloudflare takes a TTL of 1 (automatic) or 60–86400 s; {} asks for {}",
                    desired.name, desired.ttl
                ),
            ));
        }
        let listed = self.list(&desired.name, desired.rtype).await?;
        if let Some((e, _)) = listed.iter().find(|(_, proxied)| *proxied) {
            return Err(ProviderError::fatal(
                PROVIDER,
                format!(
                    "record {} ({} {}) is proxied by Cloudflare, so its public answers are Cloudflare's \
                     addresses and cannot be verified; turn proxying off for {} first",
                    e.id, desired.name, e.value, desired.name
                ),
            ));
        }
        let existing: Vec<Existing> = listed.into_iter().map(|(e, _)| e).collect();
        let changes = plan(&existing, &desired.values, desired.ttl);
        if changes.is_empty() {
            tracing::info!(set = %desired.describe(), "cloudflare: already as desired");
        }
        for change in changes {
            match change {
                Change::Update { id, value } => {
                    let url = format!("{}/{}", self.records_url(), encode_component(&id));
                    let body = json!({ "content": value, "ttl": desired.ttl });
                    self.call(&format!("updating record {id} to {value}"), |c| {
                        c.patch(&url).bearer_auth(&self.token).json(&body)
                    })
                    .await?;
                }
                Change::Create { value } => {
                    let url = self.records_url();
                    let body = json!({
                        "type": desired.rtype.as_str(),
                        "name": desired.name_no_dot(),
                        "content": value,
                        "ttl": desired.ttl,
                        "proxied": false,
                    });
                    self.call(&format!("creating a record for {value}"), |c| {
                        c.post(&url).bearer_auth(&self.token).json(&body)
                    })
                    .await?;
                }
                Change::Delete { id } => {
                    let url = format!("{}/{}", self.records_url(), encode_component(&id));
                    self.call(&format!("deleting record {id}"), |c| {
                        c.delete(&url).bearer_auth(&self.token)
                    })
                    .await?;
                }
            }
        }
        Ok(())
    }
}

impl DnsProvider for Cloudflare {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    fn read<'a>(
        &'a self,
        name: &'a str,
        rtype: RecordType,
    ) -> BoxFuture<'a, Result<Option<RecordSet>, ProviderError>> {
        Box::pin(async move {
            let existing: Vec<Existing> = self
                .list(name, rtype)
                .await?
                .into_iter()
                .map(|(e, _)| e)
                .collect();
            Ok(to_set(name, rtype, &existing))
        })
    }

    fn apply<'a>(&'a self, desired: &'a RecordSet) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(self.do_apply(desired))
    }
}

/// `{"success": false, "errors": [{"code": 81057, "message": "…"}]}`
fn error_message(body: &str) -> Option<String> {
    let v: Value = serde_json::from_str(body).ok()?;
    let msgs: Vec<String> = v["errors"]
        .as_array()?
        .iter()
        .filter_map(|e| {
            let m = e["message"].as_str()?;
            Some(match e["code"].as_u64() {
                Some(code) => format!("{m} (code {code})"),
                None => m.to_string(),
            })
        })
        .collect();
    (!msgs.is_empty()).then(|| msgs.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_are_joined_with_codes() {
        let body = r#"{"success":false,"errors":[{"code":9109,"message":"Invalid access token"},{"code":1,"message":"second"}],"messages":[],"result":null}"#;
        assert_eq!(
            error_message(body).unwrap(),
            "Invalid access token (code 9109); second (code 1)"
        );
        assert_eq!(error_message(r#"{"success":false,"errors":[]}"#), None);
    }
}
