//! SIGTERM/SIGINT handling: the first signal cancels the one shutdown token
//! (sessions drain within the grace period); a second one exits at once.

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Spawns the signal watcher; returns the token it cancels.
pub fn on_signals() -> std::io::Result<CancellationToken> {
    let token = CancellationToken::new();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let t = token.clone();
    tokio::spawn(async move {
        for round in 0..2 {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            if round == 0 {
                tracing::info!(signal = name, "shutdown requested");
                t.cancel();
            } else {
                // Acked results are already committed, so exiting now loses nothing acked.
                tracing::warn!(signal = name, "second signal: exiting without draining");
                std::process::exit(130);
            }
        }
    });
    Ok(token)
}
