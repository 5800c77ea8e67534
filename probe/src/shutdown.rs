//! SIGTERM/SIGINT → one [`CancellationToken`] that the whole probe watches.

use tokio_util::sync::CancellationToken;

/// Cancels the returned token on the first SIGTERM or SIGINT.
pub fn on_signal() -> std::io::Result<CancellationToken> {
    let token = CancellationToken::new();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let t = token.clone();
        tokio::spawn(async move {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            tracing::info!(signal = name, "shutdown requested");
            t.cancel();
        });
    }
    #[cfg(not(unix))]
    {
        let t = token.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                tracing::info!("shutdown requested");
                t.cancel();
            }
        });
    }
    Ok(token)
}
