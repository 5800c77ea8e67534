//! `cutover-probe`: parse the command line, set up TLS and logging, run the
//! probe, and turn the outcome into an exit status a person can act on.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use cutover_probe::config::Command;
use cutover_probe::{Cli, Config, RunError};
use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

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
    // `RUST_LOG` as a list of `level` and `target=level` directives. A plain
    // target filter rather than `EnvFilter`, whose regex engine would be a few
    // hundred KB of the binary and of its resident memory.
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .and_then(|v| v.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(Level::INFO));
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                // Colour codes only for a person at a terminal, not in journald or files.
                .with_ansi(std::io::stderr().is_terminal()),
        )
        .with(filter)
        .init();
    // One TLS stack for everything (tonic, checks): rustls with ring. Installing
    // fails only if a provider is already installed, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();

    if let Some(Command::Setup) = cli.command {
        return setup(cli);
    }
    let config = match Config::load(cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cutover-probe: {e}");
            return ExitCode::from(1);
        }
    };
    // One thread is plenty for a few dozen checks per second that mostly wait
    // on the network; a worker per core (and a malloc arena per worker) would
    // only add memory. Blocking calls (tonic resolving the coordinator's host
    // name) still go to tokio's on-demand blocking pool.
    let runtime = match tokio::runtime::Builder::new_current_thread()
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

/// `cutover-probe setup`: the token from stdin into the state directory.
fn setup(cli: Cli) -> ExitCode {
    let explicit_dir = cli.state_dir.clone();
    if cli.token.is_none() && std::io::stdin().is_terminal() {
        eprintln!("paste the token printed by `cutover probe enrol` and press Enter:");
    }
    match cutover_probe::setup::setup(cli, &mut std::io::stdin().lock()) {
        Ok(stored) => {
            println!(
                "stored the token in {} and the settings in {} (readable only by you)",
                stored.token_file.display(),
                stored.config_file.display()
            );
            println!(
                "this probe checks only hosts under: {}",
                stored.config.policy().describe()
            );
            let dir = explicit_dir
                .map(|d| format!(" --state-dir {}", d.display()))
                .unwrap_or_default();
            println!("start it with:\n  cutover-probe{dir}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cutover-probe setup: {e}");
            ExitCode::from(1)
        }
    }
}
