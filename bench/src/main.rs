//! `skiff-bench`: load for any OCI registry, after zot's `zb`.
//!
//! - `run URL`: the workloads against one registry.
//! - `compare`: starts skiff and CNCF distribution itself and runs every
//!   workload against both in one run, interleaved, printing skiff ÷
//!   distribution per figure (the machine is shared; only ratios from one
//!   run mean much).
//! - `scale`: latency of the requests that must not grow with the number
//!   of tags or repositories, against N, with an SVG plot.
//!
//! Timings live in BENCHMARKS.md; no test asserts one.

mod client;
mod scale;
mod servers;
mod stats;
mod workload;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use servers::Server;
use stats::{fmt, Summary, FIGURES};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use workload::Workload;

#[derive(Parser)]
#[command(about = "Load for OCI registries: zb's workloads, skiff against CNCF distribution")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(clap::Args, Clone)]
struct Load {
    /// Seconds each workload runs (per registry).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Workers per workload (default: 32 for the small requests, 8 for
    /// pushes and pulls of small blobs, 1 for 100 MiB and more).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Blob sizes for the push and pull workloads.
    #[arg(long, value_delimiter = ',', default_value = "1MiB,10MiB,100MiB,1GiB")]
    sizes: Vec<String>,
    /// Only the workloads whose name contains one of these.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Blob size of `pull-many` (64 clients, a blob each).
    #[arg(long, default_value = "64MiB")]
    pull_many_size: String,
}

#[derive(Subcommand)]
enum Mode {
    /// Run the workloads against the registry at URL (http://HOST:PORT).
    Run {
        url: String,
        #[command(flatten)]
        load: Load,
    },
    /// Start skiff and distribution, run every workload against both.
    Compare {
        #[command(flatten)]
        load: Load,
        #[command(flatten)]
        servers: Servers,
        /// Also write the report, with the machine and command, here.
        #[arg(long)]
        markdown: Option<PathBuf>,
    },
    /// Latency against N tags in a repository and N repositories.
    Scale {
        /// The N to measure at, ascending.
        #[arg(long, value_delimiter = ',', default_value = "100,1000,4000")]
        sizes: Vec<usize>,
        #[command(flatten)]
        servers: Servers,
        /// Where to draw the plot.
        #[arg(long, default_value = "scale.svg")]
        plot: PathBuf,
        /// Grow the registries past this N by writing their storage
        /// directly, in each one's own format, rather than through the API
        /// (at 100k tags, pushing every tag through the API takes hours).
        #[arg(long, default_value_t = usize::MAX)]
        direct_above: usize,
        #[arg(long)]
        markdown: Option<PathBuf>,
    },
}

#[derive(clap::Args, Clone)]
struct Servers {
    /// The skiff binary.
    #[arg(long, default_value = "skiff")]
    skiff: PathBuf,
    /// CNCF distribution's binary (Debian's `docker-registry`).
    #[arg(long, default_value = "/usr/bin/docker-registry")]
    distribution: PathBuf,
    /// nginx, when installed: `pull-many` also runs against it serving
    /// skiff's own blob files, the yardstick for reads.
    #[arg(long, default_value = "/usr/sbin/nginx")]
    nginx: PathBuf,
}

impl Servers {
    async fn start(&self) -> Result<[Server; 2]> {
        Ok([
            Server::skiff(&self.skiff).await?,
            Server::distribution(&self.distribution).await?,
        ])
    }
}

impl Load {
    fn workloads(&self) -> Result<Vec<Workload>> {
        let sizes = self
            .sizes
            .iter()
            .map(|s| workload::parse_size(s))
            .collect::<Result<Vec<_>>>()?;
        let many = workload::parse_size(&self.pull_many_size)?;
        let all = Workload::all(&sizes, many, self.concurrency);
        Ok(all
            .into_iter()
            .filter(|w| {
                self.only.is_empty() || self.only.iter().any(|o| w.name().contains(o.as_str()))
            })
            .collect())
    }

    fn duration(&self) -> Result<Duration> {
        Duration::try_from_secs_f64(self.duration).context("--duration: seconds, not negative")
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let block = client::Blob::block();
    match cli.mode {
        Mode::Run { url, load } => {
            let addr = parse_url(&url)?;
            let mut out = String::new();
            header(&mut out, &["workload", "c"], &[]);
            print!("{out}");
            for w in load.workloads()? {
                let s = measure(addr, &w, &block, load.duration()?).await?;
                let before = out.len();
                row(&mut out, &w, &s, None);
                print!("{}", &out[before..]);
            }
            Ok(())
        }
        Mode::Compare {
            load,
            servers,
            markdown,
        } => {
            let [skiff, dist] = servers.start().await?;
            let mut out = String::new();
            header(
                &mut out,
                &["workload", "c"],
                &["skiff", "distribution", "skiff ÷ distribution"],
            );
            print!("{out}");
            for (i, w) in load.workloads()?.iter().enumerate() {
                // Interleaved: who goes first alternates, so neither always
                // gets the cooler machine.
                let order: [&Server; 2] = if i % 2 == 0 {
                    [&skiff, &dist]
                } else {
                    [&dist, &skiff]
                };
                let mut got = Vec::new();
                for server in order {
                    got.push((
                        server.name,
                        measure(server.addr, w, &block, load.duration()?).await?,
                    ));
                }
                if order[0].name != "skiff" {
                    got.reverse();
                }
                let before = out.len();
                row(&mut out, w, &got[0].1, Some(&got[1].1));
                print!("{}", &out[before..]);
            }
            let many: Vec<Workload> = load
                .workloads()?
                .into_iter()
                .filter(|w| w.kind == workload::Kind::PullMany)
                .collect();
            if !many.is_empty() && servers.nginx.exists() {
                let nginx = Server::nginx(&servers.nginx, &skiff.data).await?;
                let _ = writeln!(
                    out,
                    "\nThe same blob files, read from skiff and from nginx serving skiff's storage directory:\n"
                );
                header(
                    &mut out,
                    &["workload", "c"],
                    &["skiff", "nginx", "skiff ÷ nginx"],
                );
                for w in &many {
                    let seeded = workload::seed(skiff.addr, w, &block).await?;
                    let d = load.duration()?;
                    let files = seeded.read_as(workload::Paths::Files);
                    let ours = workload::run(skiff.addr, *w, seeded, d).await.summary();
                    let theirs = workload::run(nginx.addr, *w, files, d).await.summary();
                    row(&mut out, w, &ours, Some(&theirs));
                }
                print!(
                    "{}",
                    &out[out.rfind("\nThe same blob files").unwrap_or(0)..]
                );
            }
            let rss: Vec<String> = [&skiff, &dist]
                .iter()
                .map(|s| {
                    format!(
                        "{} {} MB",
                        s.name,
                        s.rss().map_or("-".into(), |b| fmt(b as f64 / 1e6))
                    )
                })
                .collect();
            let _ = writeln!(out, "\nResident memory after the run: {}.", rss.join(", "));
            println!("{}", out.lines().last().unwrap_or_default());
            if let Some(path) = markdown {
                write_markdown(&path, &out)?;
            }
            Ok(())
        }
        Mode::Scale {
            sizes,
            servers,
            plot,
            direct_above,
            markdown,
        } => {
            if sizes.windows(2).any(|w| w[0] >= w[1]) || sizes.first() == Some(&0) {
                bail!("--sizes: ascending numbers above 0");
            }
            let started = servers.start().await?;
            let mut runs = Vec::new();
            for server in &started {
                runs.push((
                    server.name,
                    scale::run(server, &sizes, direct_above, &block).await?,
                ));
            }
            let mut out = String::new();
            let _ = write!(out, "| registry | N |");
            for m in scale::MEASURES {
                let _ = write!(out, " {m} p50 ms |");
            }
            let _ = write!(out, " tag push mean ms |");
            let _ = writeln!(
                out,
                "\n|---|---|{}",
                "---|".repeat(scale::MEASURES.len() + 1)
            );
            for (name, points) in &runs {
                for p in points {
                    let _ = write!(out, "| {name} | {} |", p.n);
                    for v in p.p50_ms {
                        let _ = write!(out, " {} |", fmt(v));
                    }
                    let _ = write!(out, " {} |", fmt(p.push_mean_ms));
                    out.push('\n');
                }
            }
            scale::plot(&plot, &runs)?;
            let _ = writeln!(out, "\nPlot: {}", plot.display());
            print!("{out}");
            if let Some(path) = markdown {
                write_markdown(&path, &out)?;
            }
            Ok(())
        }
    }
}

/// Seed the registry for `w`, then run it.
async fn measure(
    addr: SocketAddr,
    w: &Workload,
    block: &Bytes,
    duration: Duration,
) -> Result<Summary> {
    let seeded = workload::seed(addr, w, block)
        .await
        .with_context(|| format!("setting up {} at {addr}", w.name()))?;
    Ok(workload::run(addr, *w, seeded, duration).await.summary())
}

fn parse_url(url: &str) -> Result<SocketAddr> {
    let rest = url
        .strip_prefix("http://")
        .context("URL: http://HOST:PORT (plain HTTP)")?;
    let hostport = rest.trim_end_matches('/');
    use std::net::ToSocketAddrs;
    hostport
        .to_socket_addrs()?
        .next()
        .with_context(|| format!("{url}: no address"))
}

/// A markdown table's head: `first` columns, then per figure one column
/// per name in `each` (or one value column when `each` is empty).
fn header(out: &mut String, first: &[&str], each: &[&str]) {
    let mut cols: Vec<String> = first.iter().map(|s| s.to_string()).collect();
    cols.push("figure".into());
    if each.is_empty() {
        cols.push("value".into());
    } else {
        cols.extend(each.iter().map(|s| s.to_string()));
    }
    cols.push("errors".into());
    let _ = writeln!(out, "| {} |", cols.join(" | "));
    let _ = writeln!(out, "|{}", "---|".repeat(cols.len()));
}

/// One line per figure of workload `w`; with `other`, both and the ratio.
fn row(out: &mut String, w: &Workload, s: &Summary, other: Option<&Summary>) {
    let sf = s.figures();
    let of = other.map(Summary::figures);
    for (i, (name, _more_is_better)) in FIGURES.iter().enumerate() {
        // MB/s means nothing for the requests that move no blob.
        if *name == "MB/s" && w.size == 0 {
            continue;
        }
        let errors = match other {
            Some(o) => format!("{} / {}", s.errors, o.errors),
            None => s.errors.to_string(),
        };
        let mut cells = vec![
            w.name(),
            w.concurrency.to_string(),
            name.to_string(),
            fmt(sf[i]),
        ];
        if let Some(of) = of {
            cells.push(fmt(of[i]));
            cells.push(format!("{}×", fmt(sf[i] / of[i])));
        }
        cells.push(errors);
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    for (who, e) in [
        ("", s.first_error.as_ref()),
        (" (other)", other.and_then(|o| o.first_error.as_ref())),
    ] {
        if let Some(e) = e {
            let _ = writeln!(
                out,
                "| {} | | first error{who}: {} | | | | |",
                w.name(),
                e.replace('|', "/")
            );
        }
    }
}

/// The report with what it ran on and how: date, CPU, memory, the command
/// line, and sha256's speed here (what a push can at best reach).
fn write_markdown(path: &std::path::Path, report: &str) -> Result<()> {
    let mut out = String::new();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown", |(_, m)| m.trim());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_string())
        })
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or("-".into(), |kb| format!("{:.1} GiB", kb as f64 / 1048576.0));
    let args: Vec<String> = std::env::args().collect();
    let _ = writeln!(out, "Machine: {cores} cores ({model}), {mem} memory.");
    if let Some(mbs) = sha256_speed() {
        let _ = writeln!(
            out,
            "`openssl speed -evp sha256` (16 KiB blocks): {} MB/s.",
            fmt(mbs)
        );
    }
    let _ = writeln!(out, "Command: `{}`\n", args.join(" "));
    out.push_str(report);
    std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))
}

/// sha256's speed on this machine in MB/s, as openssl measures it.
fn sha256_speed() -> Option<f64> {
    let out = std::process::Command::new("openssl")
        .args([
            "speed", "-evp", "sha256", "-bytes", "16384", "-seconds", "2",
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().rev().find(|l| l.starts_with("sha256"))?;
    let k = last.split_whitespace().last()?.strip_suffix('k')?;
    Some(k.parse::<f64>().ok()? * 1000.0 / 1e6)
}
