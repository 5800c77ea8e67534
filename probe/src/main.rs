//! `cutover-probe`: parse the command line, set up TLS and logging, run the
//! probe, and turn the outcome into an exit status a person can act on.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use cutover_probe::{Cli, Config, RunError};

fn main() -> ExitCode {
    // Usage errors exit 1, not clap's 2: status 2 means "token rejected" and
    // nothing else, so scripts and tests can rely on it.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            let _ = e.print();
            return ExitCode::from(1);
        }
        Err(e) => e.exit(),
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in journald or files.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    // One TLS stack for everything (tonic, checks): rustls with ring. Installing
    // fails only if a provider is already installed, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let config = match Config::load(cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cutover-probe: {e}");
            return ExitCode::from(1);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cutover-probe: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let outcome: anyhow::Result<()> = runtime.block_on(async {
        let shutdown =
            cutover_probe::shutdown::on_signal().context("installing signal handlers")?;
        cutover_probe::run(config, shutdown).await?;
        Ok(())
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cutover-probe: {e:#}");
            let code = e.downcast_ref::<RunError>().map_or(1, RunError::exit_code);
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
    }
}
