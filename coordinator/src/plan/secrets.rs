//! Finds secrets written into a plan. Plans are shared, reviewed and committed;
//! TSIG keys, API tokens and webhook URLs belong in files or the environment
//! (`*_file`, `*_env`, `{ file = … }`, `{ env = … }`, `env:NAME`).
//!
//! Heuristics, so warnings rather than errors: every string in the document is
//! looked at, with the key it sits under.

use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::{Diagnostic, Severity};
use crate::config::line_col;

/// Key fragments that name a secret when their value is a literal string.
const SECRET_KEY_PARTS: &[&str] = &[
    "token",
    "secret",
    "password",
    "passwd",
    "api_key",
    "apikey",
    "private_key",
    "access_key",
];

/// Prefixes of well-known credential formats.
const TOKEN_PREFIXES: &[&str] = &[
    "xoxb-",
    "xoxp-",
    "xoxa-",
    "xapp-",
    "ghp_",
    "gho_",
    "github_pat_",
    "dop_v1_",
    "glpat-",
];

/// Webhook hosts whose URLs are bearer credentials by themselves.
const WEBHOOK_HOSTS: &[&str] = &[
    "hooks.slack.com",
    "discord.com/api/webhooks",
    "discordapp.com/api/webhooks",
    "outlook.office.com/webhook",
    "hooks.zapier.com",
];

/// Scans a parsed document; returns one warning per suspicious value.
pub fn scan(text: &str, root: &Spanned<DeTable<'_>>) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let mut path = Vec::new();
    walk_table(text, root.get_ref(), &mut path, &mut out);
    out
}

fn walk_table(text: &str, t: &DeTable<'_>, path: &mut Vec<String>, out: &mut Vec<Diagnostic>) {
    for (k, v) in t.iter() {
        path.push(k.get_ref().to_string());
        walk_value(text, v, path, out);
        path.pop();
    }
}

fn walk_value(
    text: &str,
    v: &Spanned<DeValue<'_>>,
    path: &mut Vec<String>,
    out: &mut Vec<Diagnostic>,
) {
    match v.get_ref() {
        DeValue::String(s) => {
            if let Some(why) = suspicious(path, s) {
                out.push(warning(text, v.span(), path, why));
            }
        }
        DeValue::Array(a) => {
            for e in a.iter() {
                walk_value(text, e, path, out);
            }
        }
        DeValue::Table(t) => walk_table(text, t, path, out),
        _ => {}
    }
}

fn warning(text: &str, span: Range<usize>, path: &[String], why: String) -> Diagnostic {
    let (line, column) = line_col(text, span.start);
    Diagnostic {
        severity: Severity::Warning,
        line,
        column,
        message: format!(
            "`{}` looks like a secret written inline ({why}); read it from a file or the environment instead (`{{ file = \"…\" }}`, `{{ env = \"…\" }}`, `url_env`, `env:NAME`)",
            path.join(".")
        ),
    }
}

/// Why a string at `path` looks like a secret, if it does.
fn suspicious(path: &[String], value: &str) -> Option<String> {
    let v = value.trim();
    if v.is_empty() || v.starts_with("env:") {
        return None;
    }
    let lower = v.to_ascii_lowercase();
    if let Some(host) = WEBHOOK_HOSTS.iter().find(|h| lower.contains(*h)) {
        return Some(format!("a {host} webhook URL is a credential by itself"));
    }
    if let Some(p) = TOKEN_PREFIXES.iter().find(|p| v.starts_with(*p)) {
        return Some(format!("it has the `{p}` prefix of an API token"));
    }
    if is_aws_key_id(v) {
        return Some("it has the shape of an AWS access key id".into());
    }
    if lower.starts_with("http://") || lower.starts_with("https://") {
        let after_scheme = &v[v.find("://").map_or(0, |i| i + 3)..];
        let authority = after_scheme.split('/').next().unwrap_or("");
        if authority.contains('@') && authority.split('@').next().is_some_and(|u| u.contains(':')) {
            return Some("the URL carries a user name and password".into());
        }
        if let Some(query) = v.split_once('?').map(|(_, q)| q.to_ascii_lowercase()) {
            let names = [
                "token",
                "key",
                "secret",
                "sig",
                "signature",
                "password",
                "access_token",
                "api_key",
            ];
            if query
                .split('&')
                .filter_map(|kv| kv.split_once('=').map(|(k, _)| k))
                .any(|k| names.contains(&k))
            {
                return Some("the URL's query carries a credential".into());
            }
        }
    }
    // Command-line flags with a value: `--token=…`, `--password=…` (not `--token-file=…`).
    if let Some((flag, val)) = v.strip_prefix("--").and_then(|f| f.split_once('=')) {
        let flag = flag.to_ascii_lowercase().replace('-', "_");
        let reference = ["_file", "_env", "_path"].iter().any(|s| flag.ends_with(s));
        if !val.is_empty() && !reference && SECRET_KEY_PARTS.iter().any(|p| flag.contains(p)) {
            return Some(format!("the flag `--{flag}` carries its value inline"));
        }
    }
    if lower.contains("bearer ") && v.len() > "bearer ".len() + 8 {
        return Some("it holds a bearer token".into());
    }
    let key = path
        .last()
        .map(|k| k.to_ascii_lowercase())
        .unwrap_or_default();
    if SECRET_KEY_PARTS.iter().any(|p| key.contains(p))
        && !key.ends_with("_env")
        && !key.ends_with("_file")
    {
        // `file`/`env` sub-keys are references, not secrets.
        if key != "file" && key != "env" {
            return Some(format!(
                "`{key}` names a secret and its value is written here"
            ));
        }
    }
    // Base64 blobs in DNS provider tables: TSIG secrets and API keys.
    let in_provider = path.first().is_some_and(|p| p == "dns")
        && path.len() >= 3
        && !super::raw::DNS_KEYS.contains(&path[1].as_str());
    if in_provider && looks_like_base64_secret(v) {
        return Some("a base64 value in a DNS provider table looks like a key".into());
    }
    None
}

fn is_aws_key_id(v: &str) -> bool {
    (v.starts_with("AKIA") || v.starts_with("ASIA"))
        && v.len() == 20
        && v.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

/// Long, base64 alphabet only, with padding or mixed case and digits.
fn looks_like_base64_secret(v: &str) -> bool {
    if v.len() < 16
        || !v
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+/=".contains(c))
    {
        return false;
    }
    let upper = v.chars().any(|c| c.is_ascii_uppercase());
    let lower = v.chars().any(|c| c.is_ascii_lowercase());
    let digit = v.chars().any(|c| c.is_ascii_digit());
    v.ends_with('=') || v.contains('+') || v.contains('/') || (upper && lower && digit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn why(path: &[&str], v: &str) -> Option<String> {
        let path: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        suspicious(&path, v)
    }

    #[test]
    fn finds_the_usual_secrets() {
        assert!(
            why(
                &["steps", "message"],
                "see https://hooks.slack.com/services/T0/B0/XX"
            )
            .is_some()
        );
        assert!(why(&["dns", "digitalocean", "token"], "dop_v1_abcdef").is_some());
        assert!(
            why(
                &["dns", "rfc2136", "tsig_secret"],
                "c2VjcmV0LXRzaWcta2V5LWJ5dGVzMTIzNA=="
            )
            .is_some()
        );
        assert!(
            why(
                &["dns", "rfc2136", "server_note"],
                "c2VjcmV0LXRzaWcta2V5LWJ5dGVzMTIzNA=="
            )
            .is_some()
        );
        assert!(why(&["steps", "env", "API_TOKEN"], "hunter2").is_some());
        assert!(why(&["guards", "url"], "https://prom:9090/?token=abc").is_some());
        assert!(why(&["guards", "url"], "https://user:pw@prom:9090/").is_some());
        assert!(
            why(
                &["dns", "route53", "access_key_id", "file"],
                "AKIAABCDEFGHIJKLMNOP"
            )
            .is_some()
        );
        assert!(why(&["steps", "command"], "--api-token=abc123").is_some());
        assert!(
            why(
                &["steps", "command"],
                "Authorization: Bearer abcdef0123456789"
            )
            .is_some()
        );
    }

    #[test]
    fn leaves_references_and_ordinary_values_alone() {
        assert!(why(&["steps", "command"], "--delete").is_none());
        assert!(why(&["steps", "command"], "--token-file=/run/secrets/t").is_none());
        assert!(why(&["steps", "env", "API_TOKEN"], "env:API_TOKEN").is_none());
        assert!(
            why(
                &["dns", "rfc2136", "tsig_secret", "file"],
                "secrets/tsig.key"
            )
            .is_none()
        );
        assert!(why(&["dns", "digitalocean", "token", "env"], "DO_TOKEN").is_none());
        assert!(
            why(
                &["notifications", "webhooks", "url_env"],
                "SLACK_WEBHOOK_URL"
            )
            .is_none()
        );
        assert!(
            why(
                &["dns", "route53", "hosted_zone_id"],
                "Z0123456789ABCDEFGHIJ"
            )
            .is_none()
        );
        assert!(
            why(
                &["dns", "cloudflare", "zone_id"],
                "023e105f4ecef8ad9ca31a8372d0c353"
            )
            .is_none()
        );
        assert!(why(&["dns", "zone"], "elm-lang.org").is_none());
        assert!(
            why(
                &["checks", "url"],
                "https://package.elm-lang.org/all-packages"
            )
            .is_none()
        );
    }
}
