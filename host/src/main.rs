//! `skiff`: the native host. It is the only part of skiff that touches the
//! OS: it serves HTTP, runs the registry component (one fresh instance per
//! request) and implements the component's `objects` import on local disk.

mod admission;
mod audit;
mod auth;
mod body;
mod cache;
mod config;
mod http;
mod metrics;
mod objects;
mod ratelimit;
mod runtime;
mod scheduler;
mod server;
mod shutdown;
mod tls;
mod warm;

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
    /// Check a config file: print every error and warning in it (stderr) and,
    /// when it has no errors, the settings in effect as JSON (stdout). Exits
    /// 1 on errors.
    Verify { config: PathBuf },
    /// Ask a running skiff whether it serves (GET /v2/ answers 200); exit 0 if
    /// so, 1 if not. For container health checks: a scratch image has no curl.
    Healthcheck {
        /// Where skiff listens.
        #[arg(default_value = "127.0.0.1:5000")]
        address: String,
    },
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
            init_logging(&cfg.log_level, cfg.log_output.as_deref(), cfg.log_json)?;
            for w in cfg.warnings() {
                tracing::warn!("{w}");
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
            init_logging("warn", None, false)?;
            tokio_runtime()?.block_on(server::gc_once(cfg))
        }
        Command::Scrub { config, repair } => {
            let cfg = config::Config::load(config.as_deref())?;
            init_logging("warn", None, false)?;
            let affected = tokio_runtime()?.block_on(server::scrub_once(cfg, repair))?;
            if affected {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Verify { config } => verify(&config),
        Command::Healthcheck { address } => {
            if let Err(e) = healthcheck(&address) {
                eprintln!("skiff at {address} is not healthy: {e:#}");
                std::process::exit(1);
            }
            Ok(())
        }
    }
}

/// `skiff verify`: all errors and warnings at once, then the effective
/// settings, so what an operator reads is what skiff will do.
fn verify(path: &std::path::Path) -> Result<()> {
    use anyhow::Context;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let checked = match config::Config::check(&text) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            eprintln!("{}: not a configuration", path.display());
            std::process::exit(1);
        }
    };
    let warnings = checked.config.warnings();
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    for e in &checked.errors {
        eprintln!("error: {e:#}");
    }
    let count = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    let summary = format!(
        "{}: {}, {}",
        path.display(),
        count(checked.errors.len(), "error"),
        count(warnings.len(), "warning")
    );
    if !checked.errors.is_empty() {
        eprintln!("{summary}");
        std::process::exit(1);
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&checked.config.effective())?
    );
    eprintln!("{summary}");
    Ok(())
}

/// One `GET /v2/` over plain HTTP/1.1 with a short deadline.
fn healthcheck(address: &str) -> Result<()> {
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;
    const DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);
    let addr = address
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| anyhow::anyhow!("{address} resolves to no address"))?;
    let mut conn = std::net::TcpStream::connect_timeout(&addr, DEADLINE)?;
    conn.set_read_timeout(Some(DEADLINE))?;
    conn.set_write_timeout(Some(DEADLINE))?;
    write!(
        conn,
        "GET /v2/ HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )?;
    // The status line is all that is needed; read at most a little.
    let mut head = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        match conn.read(&mut head[n..])? {
            0 => break,
            k => n += k,
        }
    }
    let line = String::from_utf8_lossy(&head[..n]);
    match line.split(' ').nth(1) {
        Some("200") => Ok(()),
        Some(code) => anyhow::bail!("GET /v2/ answered {code}"),
        None => anyhow::bail!("not an HTTP answer: {line:?}"),
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

/// Logs to stderr or `log.output`, as text or JSON lines (`log.format`);
/// each request's lines carry its id (the `request` span).
fn init_logging(level: &str, output: Option<&std::path::Path>, json: bool) -> anyhow::Result<()> {
    use anyhow::Context;
    use tracing_subscriber::fmt::writer::BoxMakeWriter;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("skiff={level},warn")));
    let writer = match output {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("log.output: cannot open {}", path.display()))?;
            BoxMakeWriter::new(std::sync::Mutex::new(file))
        }
        None => BoxMakeWriter::new(std::io::stderr),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    if json {
        builder.json().with_current_span(true).init();
    } else {
        builder.init();
    }
    Ok(())
}
