//! Waiting on conditions: poll with a generous deadline instead of sleeping.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::bail;

/// How often conditions are re-checked.
pub const INTERVAL: Duration = Duration::from_millis(250);

/// Calls `f` until it returns `Ok(Some(v))`, at most until `deadline` has
/// passed. `Ok(None)` and errors mean "not yet"; the last error is reported on
/// timeout together with `what`.
pub async fn until<T, F, Fut>(what: &str, deadline: Duration, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let start = Instant::now();
    let mut last = String::from("condition never held");
    loop {
        match f().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = format!("{e:#}"),
        }
        if start.elapsed() > deadline {
            bail!("timed out after {deadline:?} waiting for {what}: {last}");
        }
        tokio::time::sleep(INTERVAL).await;
    }
}
