//! DreamHost's API: `dns-list_records`, `dns-add_record` and
//! `dns-remove_record` (`record`, `type`, `value`). It has no update verb and
//! no TTL, so a switch adds the new records first and only then removes the
//! old ones: the name never has zero records. DreamHost chooses the TTL;
//! [`DnsProvider::sets_ttl`] is false and the set `read` returns has TTL 0
//! (unknown) — verify values only.

use std::fmt;
use std::path::Path;

use serde_json::Value;

use super::http::{Api, encode_component, origin, snippet};
use super::retry::RetryPolicy;
use super::{
    BoxFuture, DnsProvider, ProviderError, RecordSet, RecordType, TokenApiSpec, check_in_zone, fqdn,
};

const PROVIDER: &str = "dreamhost";
const DEFAULT_ORIGIN: &str = "https://api.dreamhost.com";

pub struct DreamHost {
    api: Api,
    origin: String,
    key: String,
    zone: String,
}

impl fmt::Debug for DreamHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DreamHost")
            .field("origin", &self.origin)
            .field("zone", &self.zone)
            .finish_non_exhaustive()
    }
}

impl DreamHost {
    pub fn from_spec(spec: &TokenApiSpec, zone: &str, base: &Path) -> Result<Self, String> {
        let key = spec.token.read("dns.dreamhost.token", base)?;
        Self::new(&origin(spec.api_url.as_deref(), DEFAULT_ORIGIN), &key, zone)
    }

    /// `origin` is e.g. `https://api.dreamhost.com`; requests go to `{origin}/?key=…`.
    pub fn new(origin: &str, key: &str, zone: &str) -> Result<Self, String> {
        Ok(DreamHost {
            api: Api::new(PROVIDER, error_message)?,
            origin: origin.trim_end_matches('/').to_string(),
            key: key.to_string(),
            zone: fqdn(zone),
        })
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.api = self.api.with_retry(retry);
        self
    }

    /// One command; `result` must be `success`.
    async fn cmd(
        &self,
        what: &str,
        cmd: &str,
        args: &[(&str, &str)],
    ) -> Result<Value, ProviderError> {
        let mut url = format!(
            "{}/?key={}&cmd={cmd}&format=json",
            self.origin,
            encode_component(&self.key)
        );
        for (k, v) in args {
            url.push_str(&format!("&{k}={}", encode_component(v)));
        }
        let reply = self.api.send(what, |c| c.get(&url)).await?;
        let v: Value = serde_json::from_str(&reply.body).map_err(|e| {
            ProviderError::fatal(
                PROVIDER,
                format!(
                    "{what}: response is not JSON ({e}): {}",
                    snippet(&reply.body)
                ),
            )
        })?;
        if v["result"].as_str() != Some("success") {
            let detail = error_message(&reply.body).unwrap_or_else(|| snippet(&reply.body));
            return Err(ProviderError::fatal(PROVIDER, format!("{what}: {detail}")));
        }
        Ok(v)
    }

    /// Current values of `name`/`rtype` (canonical, sorted).
    async fn values(&self, name: &str, rtype: RecordType) -> Result<Vec<String>, ProviderError> {
        let name = fqdn(name);
        let v = self.cmd("listing records", "dns-list_records", &[]).await?;
        let records = v["data"].as_array().ok_or_else(|| {
            ProviderError::fatal(PROVIDER, "dns-list_records: `data` is not a list")
        })?;
        let mut values = Vec::new();
        for r in records {
            if r["type"].as_str() == Some(rtype.as_str())
                && fqdn(r["record"].as_str().unwrap_or_default()) == name
            {
                let value = rtype
                    .canonical_value(r["value"].as_str().unwrap_or_default())
                    .map_err(|e| ProviderError::fatal(PROVIDER, format!("{name}: {e}")))?;
                values.push(value);
            }
        }
        values.sort();
        values.dedup();
        Ok(values)
    }

    async fn do_apply(&self, desired: &RecordSet) -> Result<(), ProviderError> {
        check_in_zone(PROVIDER, &self.zone, &desired.name)?;
        let current = self.values(&desired.name, desired.rtype).await?;
        let record = desired.name_no_dot();
        let rtype = desired.rtype.as_str();
        // Add first, remove after: `desired` is never empty, so at every
        // moment the name has at least one record.
        for value in desired.values.iter().filter(|v| !current.contains(v)) {
            let value = api_value(desired.rtype, value);
            self.cmd(
                &format!("adding {record} {rtype} {value}"),
                "dns-add_record",
                &[("record", record), ("type", rtype), ("value", &value)],
            )
            .await?;
        }
        for value in current.iter().filter(|v| !desired.values.contains(v)) {
            let value = api_value(desired.rtype, value);
            self.cmd(
                &format!("removing {record} {rtype} {value}"),
                "dns-remove_record",
                &[("record", record), ("type", rtype), ("value", &value)],
            )
            .await?;
        }
        Ok(())
    }
}

/// DreamHost writes CNAME targets without the trailing dot.
fn api_value(rtype: RecordType, value: &str) -> String {
    match rtype {
        RecordType::CNAME => value.trim_end_matches('.').to_string(),
        _ => value.to_string(),
    }
}

impl DnsProvider for DreamHost {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    fn read<'a>(
        &'a self,
        name: &'a str,
        rtype: RecordType,
    ) -> BoxFuture<'a, Result<Option<RecordSet>, ProviderError>> {
        Box::pin(async move {
            let values = self.values(name, rtype).await?;
            Ok((!values.is_empty()).then(|| RecordSet {
                name: fqdn(name),
                rtype,
                ttl: 0,
                values,
            }))
        })
    }

    fn apply<'a>(&'a self, desired: &'a RecordSet) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(self.do_apply(desired))
    }

    fn sets_ttl(&self) -> bool {
        false
    }
}

/// `{"result": "error", "data": "no_such_zone", "reason": "…"}`
fn error_message(body: &str) -> Option<String> {
    let v: Value = serde_json::from_str(body).ok()?;
    let data = v["data"].as_str();
    let reason = v["reason"].as_str();
    match (data, reason) {
        (Some(d), Some(r)) => Some(format!("{d}: {r}")),
        (Some(d), None) => Some(d.to_string()),
        (None, Some(r)) => Some(r.to_string()),
        (None, None) => None,
    }
}
