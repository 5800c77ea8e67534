//! Retrying provider requests that are safe to repeat (timeouts, 429, 5xx)
//! with capped exponential backoff. The final error is the provider's own,
//! with the number of attempts added.

use std::future::Future;
use std::time::Duration;

use super::ProviderError;

/// How often and how patiently to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// Wait before the second attempt; doubled each time after.
    pub base: Duration,
    /// Upper bound on one wait, also on a provider's `Retry-After`.
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            base: Duration::from_millis(200),
            cap: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt number `attempt` (1-based): the
    /// provider's `Retry-After` if it gave one, else `base · 2^(attempt-1)`,
    /// never more than `cap`.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let backoff = self
            .base
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)));
        retry_after.unwrap_or(backoff).min(self.cap)
    }
}

/// Runs `op` until it succeeds, fails with a non-retryable error, or the
/// policy's attempts are used up.
pub async fn retry<T, F, Fut>(
    policy: RetryPolicy,
    what: &str,
    mut op: F,
) -> Result<T, ProviderError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ProviderError>>,
{
    let mut attempt = 1;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if e.retryable && attempt < policy.attempts => {
                let wait = policy.delay(attempt, e.retry_after);
                tracing::warn!(
                    provider = e.provider,
                    attempt,
                    wait_ms = wait.as_millis() as u64,
                    error = %e.message,
                    "{what} failed; retrying"
                );
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            Err(mut e) => {
                if attempt > 1 {
                    e.message = format!("{} (after {attempt} attempts)", e.message);
                }
                return Err(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = RetryPolicy {
            attempts: 10,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
        };
        assert_eq!(p.delay(1, None), Duration::from_millis(100));
        assert_eq!(p.delay(2, None), Duration::from_millis(200));
        assert_eq!(p.delay(4, None), Duration::from_millis(800));
        assert_eq!(p.delay(5, None), Duration::from_secs(1));
        assert_eq!(p.delay(40, None), Duration::from_secs(1));
        assert_eq!(
            p.delay(1, Some(Duration::from_millis(700))),
            Duration::from_millis(700)
        );
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(3600))),
            Duration::from_secs(1)
        );
    }

    #[tokio::test]
    async fn retries_transient_errors_only() {
        let p = RetryPolicy {
            attempts: 5,
            base: Duration::from_millis(1),
            cap: Duration::from_millis(5),
        };
        let calls = AtomicU32::new(0);
        let r = retry(p, "x", || async {
            if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                Err(ProviderError::transient("t", "busy"))
            } else {
                Ok(7)
            }
        })
        .await;
        assert_eq!(r.unwrap(), 7);
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        let calls = AtomicU32::new(0);
        let r: Result<(), _> = retry(p, "x", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(ProviderError::fatal("t", "bad request"))
        })
        .await;
        assert_eq!(r.unwrap_err().message, "bad request");
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let calls = AtomicU32::new(0);
        let r: Result<(), _> = retry(p, "x", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(ProviderError::transient("t", "still busy"))
        })
        .await;
        let e = r.unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), p.attempts);
        assert!(e.message.starts_with("still busy"), "{}", e.message);
        assert!(e.message.contains("5 attempts"), "{}", e.message);
    }
}
