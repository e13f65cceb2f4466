//! `skiff`: the native host. It is the only part of skiff that touches the
//! OS: it serves HTTP, runs the registry component (one fresh instance per
//! request) and implements the component's `objects` import on local disk.

mod admission;
mod body;
mod cache;
mod config;
mod http;
mod metrics;
mod objects;
mod runtime;
mod scheduler;
mod server;
mod shutdown;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "skiff",
    version,
    about = "An OCI registry whose logic runs as WebAssembly components"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the registry. Without a config file: 127.0.0.1:5000, data in ./skiff-data.
    Serve {
        /// A JSON config file with zot's key names.
        config: Option<PathBuf>,
    },
    /// Check a config file and print what it means, then exit.
    Verify { config: PathBuf },
    /// Collect garbage in every repository once, in the foreground, and print what went.
    Gc { config: Option<PathBuf> },
    /// Re-hash every stored blob and check what manifests reach is there; exit
    /// non-zero if anything is damaged or missing.
    Scrub {
        config: Option<PathBuf>,
        /// Remove blobs whose bytes do not match their digest, so the next
        /// push of that content restores them.
        #[arg(long)]
        repair: bool,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => {
            let cfg = config::Config::load(config.as_deref())?;
            init_logging(&cfg.log_level);
            for k in &cfg.unknown_keys {
                tracing::warn!(key = %k, "unknown configuration key ignored");
            }
            let runtime = tokio_runtime()?;
            let stopped = runtime.block_on(server::serve(cfg));
            if let Ok(forced @ shutdown::Stopped::Forced(_)) = stopped {
                std::process::exit(forced.exit_code());
            }
            // Not the runtime's drop, which waits for every blocking task:
            // start-up dedupe convergence may run for minutes, and may end
            // between any two of its steps (see `server::converge_dedupe`).
            // Every other task is dropped here, which closes the stores.
            runtime.shutdown_timeout(EXIT_WAIT);
            stopped.map(|_| ())
        }
        Command::Gc { config } => {
            let cfg = config::Config::load(config.as_deref())?;
            init_logging("warn");
            tokio_runtime()?.block_on(server::gc_once(cfg))
        }
        Command::Scrub { config, repair } => {
            let cfg = config::Config::load(config.as_deref())?;
            init_logging("warn");
            let affected = tokio_runtime()?.block_on(server::scrub_once(cfg, repair))?;
            if affected {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Verify { config } => {
            let cfg = config::Config::load(Some(&config))?;
            for k in &cfg.unknown_keys {
                println!("warning: unknown key {k}");
            }
            println!("{cfg:#?}");
            Ok(())
        }
    }
}

/// How long blocking work (a file operation in flight) may take to finish
/// once the server has stopped.
const EXIT_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

fn tokio_runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("skiff={level},warn")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
