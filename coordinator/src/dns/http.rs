//! The HTTP side shared by the API providers (DigitalOcean, Cloudflare,
//! Route 53, DreamHost): one client, status classification (429 and 5xx are
//! retried, honouring `Retry-After`; other 4xx are not), and errors that
//! carry the provider's own message but never a credential.

use std::time::Duration;

use super::ProviderError;
use super::retry::{RetryPolicy, retry};

/// A response the provider accepted at the HTTP level (2xx).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

/// Extracts the provider's own error message from a response body.
pub type MessageFn = fn(&str) -> Option<String>;

/// One provider's HTTP client.
#[derive(Debug, Clone)]
pub struct Api {
    provider: &'static str,
    client: reqwest::Client,
    retry: RetryPolicy,
    message: MessageFn,
    /// Whether a 4xx body still means "try again" (Route 53's `Throttling`).
    transient: fn(u16, &str) -> bool,
}

impl Api {
    pub fn new(provider: &'static str, message: MessageFn) -> Result<Self, String> {
        // reqwest is built without a default crypto provider; install ring's
        // (a no-op when the binary already did).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .user_agent(concat!("cutover/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("{provider}: building the HTTP client: {e}"))?;
        Ok(Api {
            provider,
            client,
            retry: RetryPolicy::default(),
            message,
            transient: |_, _| false,
        })
    }

    /// Marks some 4xx answers as retryable, e.g. throttling reported as 400.
    pub fn with_transient(mut self, transient: fn(u16, &str) -> bool) -> Self {
        self.transient = transient;
        self
    }

    /// Replaces the retry policy (tests use short waits).
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    pub fn provider(&self) -> &'static str {
        self.provider
    }

    /// Sends the request `make` builds — again on each retry, so signatures
    /// and timestamps are fresh — and returns a 2xx reply. `what` names the
    /// operation in errors and logs (`PATCH record 123`).
    pub async fn send<F>(&self, what: &str, make: F) -> Result<Reply, ProviderError>
    where
        F: Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    {
        retry(self.retry, what, || self.once(what, &make)).await
    }

    async fn once<F>(&self, what: &str, make: &F) -> Result<Reply, ProviderError>
    where
        F: Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    {
        let p = self.provider;
        // Errors drop the URL: DreamHost's API key travels in the query string.
        let resp = make(&self.client).send().await.map_err(|e| {
            let transient = e.is_timeout() || e.is_connect();
            let msg = format!("{what}: {}", e.without_url());
            if transient {
                ProviderError::transient(p, msg)
            } else {
                ProviderError::fatal(p, msg)
            }
        })?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = resp.text().await.map_err(|e| {
            ProviderError::transient(
                p,
                format!("{what}: reading the response: {}", e.without_url()),
            )
        })?;
        if (200..300).contains(&status) {
            return Ok(Reply { status, body });
        }
        let detail = (self.message)(&body).unwrap_or_else(|| snippet(&body));
        let message = format!("{what}: HTTP {status}: {detail}");
        let mut err = if status == 429 || status >= 500 || (self.transient)(status, &body) {
            ProviderError::transient(p, message)
        } else {
            ProviderError::fatal(p, message)
        };
        err.retry_after = retry_after;
        Err(err)
    }
}

/// The start of a body, on one line, for errors without a structured message.
pub fn snippet(body: &str) -> String {
    let one_line: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.is_empty() {
        return "(empty body)".to_string();
    }
    match one_line.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &one_line[..i]),
        None => one_line,
    }
}

/// Percent-encodes a query or path component (RFC 3986 unreserved kept).
pub fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The API origin without a trailing slash; `default` when none is configured.
pub fn origin(configured: Option<&str>, default: &str) -> String {
    configured
        .unwrap_or(default)
        .trim_end_matches('/')
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_are_percent_encoded() {
        assert_eq!(encode_component("a.b-c_d~e"), "a.b-c_d~e");
        assert_eq!(encode_component("a b/c=d&e"), "a%20b%2Fc%3Dd%26e");
    }

    #[test]
    fn snippets_are_short_and_on_one_line() {
        assert_eq!(snippet(""), "(empty body)");
        assert_eq!(snippet("a\n  b"), "a b");
        assert!(snippet(&"x".repeat(1000)).chars().count() <= 301);
    }
}
