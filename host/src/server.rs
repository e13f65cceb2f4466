//! The commands: `serve` (the accept loop; each connection is served by
//! `http`), and the foreground `gc` and `scrub` passes.

use crate::auth::Auth;
use crate::config::Config;
use crate::config::Driver;
use crate::http::{Peer, Serving};
use crate::metrics::Metrics;
use crate::objects::{Backend, Disk, DynamoHolders, Holders, Objects, RedbHolders, S3};
use crate::runtime::{Limits, Runtime};
use crate::scheduler;
use crate::shutdown::{Phase, Signals, Stopped, CUT_OFF_GRACE};
use crate::tls::Tls;
use anyhow::{Context, Result};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Serve until a signal stops the server (see `shutdown`); how it stopped
/// decides the exit code.
pub async fn serve(cfg: Config) -> Result<Stopped> {
    let mut signals = Signals::install()?;
    let objects = Arc::new(open_stores(&cfg, Use::Serve).await?);
    let limits = Limits {
        // config.rs keeps it far below u32::MAX.
        request_slots: u32::try_from(cfg.http.max_requests_in_flight)
            .context("http.maxRequestsInFlight: too large")?,
        request_budget: cfg.http.request_cpu_budget,
    };
    let auth = Arc::new(Auth::new(&cfg.auth)?);
    let runtime = Arc::new(Runtime::new(objects.clone(), limits)?.with_settings(&cfg, auth));
    for store in objects.stores() {
        store.clone().start()?;
    }
    let metrics = Arc::new(Metrics::default());
    trim_idle_instances(runtime.clone());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let background = tokio::spawn(scheduler::run(
        runtime.clone(),
        Arc::new(cfg.clone()),
        metrics.clone(),
        stopped,
    ));
    let addr = std::net::SocketAddr::new(cfg.http.address, cfg.http.port);
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("http: cannot listen on {addr}"))?;
    let bound = listener.local_addr()?;
    let tls = match &cfg.http.tls {
        Some(t) => Some(Arc::new(Tls::load(t)?)),
        None => None,
    };
    if let Some(tls) = &tls {
        reload_on_hangup(tls.clone())?;
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    // Printed, not logged, so scripts and tests can read the port whatever the log level.
    println!("skiff listening on {scheme}://{bound}");
    tracing::info!(root = %cfg.storage.root_directory.display(), subpaths = cfg.sub_paths.len(), "serving");

    let (phase, watching) = tokio::sync::watch::channel(Phase::Serving);
    let audit = match &cfg.log_audit {
        Some(path) => Some(crate::audit::Audit::open(path)?),
        None => None,
    };
    let serving = Arc::new(Serving::new(
        runtime.clone(),
        metrics.clone(),
        &cfg.http,
        audit,
        watching,
    ));
    // config.rs keeps it at most 2^20.
    let max_connections =
        u32::try_from(cfg.http.max_connections).context("http.maxConnections: too large")?;
    let connections = Arc::new(Semaphore::new(cfg.http.max_connections));
    // For the log: how many the drain left open.
    let counted = Arc::new(AtomicUsize::new(0));
    let signal = loop {
        let accepted = tokio::select! {
            r = accept_within(&listener, &connections) => r?,
            signal = signals.next() => break signal,
        };
        let Some((stream, permit)) = accepted else {
            continue;
        };
        let (serving, counted) = (serving.clone(), counted.clone());
        let acceptor = tls.as_ref().map(|t| t.acceptor());
        let handshake_timeout = cfg.http.header_timeout;
        counted.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let ip = stream
                .peer_addr()
                .map(|a| a.ip())
                .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
            match acceptor {
                None => {
                    let peer = Peer {
                        ip,
                        tls: false,
                        certified: None,
                    };
                    serving.connection(stream, peer).await;
                }
                Some(acceptor) => {
                    // A handshake is bounded like a request head.
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let certified = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|c| c.first())
                                .and_then(|leaf| crate::tls::certificate_user(leaf));
                            let peer = Peer {
                                ip,
                                tls: true,
                                certified,
                            };
                            serving.connection(stream, peer).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%ip, error = %e, "TLS handshake failed"),
                        Err(_) => {
                            tracing::debug!(%ip, "TLS handshake took longer than http.headerTimeout")
                        }
                    }
                }
            }
            counted.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    };

    tracing::info!(signal, timeout = ?cfg.http.shutdown_timeout, "draining: waiting for requests in flight");
    // New connections are refused from here on.
    drop(listener);
    phase.send_replace(Phase::Draining);
    // Background jobs are dropped between two object operations.
    let _ = stop.send(true);
    let open = Open {
        connections,
        all: max_connections,
        counted,
        background,
    };
    let stopped = drain(open, &phase, &mut signals, cfg.http.shutdown_timeout).await;
    // Whatever the drain cut off, what was stored is as it was written:
    // only a crash (or a power cut) needs the check at the next start.
    for store in objects.stores() {
        store.stop();
    }
    Ok(stopped)
}

/// Drop the registry instances no request has used for a while, so memory
/// taken by a burst is given back once it is over.
fn trim_idle_instances(runtime: Arc<Runtime>) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(crate::warm::IDLE_FOR / 3);
        loop {
            every.tick().await;
            runtime.warm.trim(crate::warm::IDLE_FOR);
        }
    });
}

/// On SIGHUP, read the certificate and key again; connections already
/// open keep theirs. A reload that fails keeps serving what was loaded.
fn reload_on_hangup(tls: Arc<Tls>) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match tls.reload() {
                Ok(()) => tracing::info!("SIGHUP: TLS certificate and key re-read"),
                Err(e) => tracing::warn!(
                    error = format!("{e:#}"),
                    "SIGHUP: the TLS files do not load; keeping the ones in use"
                ),
            }
        }
    });
    Ok(())
}

/// What the drain waits for.
struct Open {
    /// Each open connection holds one of its `all` permits.
    connections: Arc<Semaphore>,
    all: u32,
    /// Open connections (the semaphore cannot tell: the drain's wait for
    /// all permits takes them one by one as they come back).
    counted: Arc<AtomicUsize>,
    background: tokio::task::JoinHandle<()>,
}

/// Wait for every connection to close and the scheduler to stop, up to
/// `timeout`; then cut off bodies still streaming in, and wait up to
/// [`CUT_OFF_GRACE`] for those requests to be answered. A signal ends it.
async fn drain(
    open: Open,
    phase: &tokio::sync::watch::Sender<Phase>,
    signals: &mut Signals,
    timeout: std::time::Duration,
) -> Stopped {
    let counted = open.counted.clone();
    let still_open = || counted.load(Ordering::Relaxed);
    let closed = async {
        let all = open.connections.acquire_many(open.all).await;
        let _ = open.background.await;
        drop(all);
    };
    tokio::pin!(closed);
    tokio::select! {
        () = &mut closed => {
            tracing::info!("drained; stopping");
            return Stopped::Drained;
        }
        () = tokio::time::sleep(timeout) => {}
        signal = signals.next() => return forced(signal),
    }
    tracing::warn!(
        connections = still_open(),
        "http.shutdownTimeout is up: cutting off request bodies still streaming in"
    );
    phase.send_replace(Phase::CutOff);
    tokio::select! {
        () = &mut closed => tracing::info!("drained; stopping"),
        () = tokio::time::sleep(CUT_OFF_GRACE) => tracing::warn!(
            connections = still_open(),
            "dropping the connections still open"
        ),
        signal = signals.next() => return forced(signal),
    }
    Stopped::Drained
}

fn forced(signal: i32) -> Stopped {
    tracing::warn!(
        signal,
        "a second signal: stopping without finishing the requests in flight"
    );
    Stopped::Forced(signal)
}

/// The next connection, once fewer than `http.maxConnections` are open:
/// until then new connections wait in the listen backlog. `None` if the
/// accept failed (out of file descriptors, say): the server stays up and
/// the caller tries again.
async fn accept_within(
    listener: &TcpListener,
    connections: &Arc<Semaphore>,
) -> Result<Option<(TcpStream, OwnedSemaphorePermit)>> {
    let permit = connections
        .clone()
        .acquire_owned()
        .await
        .context("the connection limit was closed")?;
    match listener.accept().await {
        Ok((stream, _)) => Ok(Some((stream, permit))),
        Err(e) => {
            tracing::warn!(error = %e, "accept failed");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            Ok(None)
        }
    }
}

/// `skiff gc`: one pass over every repository, in the foreground.
pub async fn gc_once(cfg: Config) -> Result<()> {
    let runtime = Runtime::new(
        Arc::new(open_stores(&cfg, Use::Beside).await?),
        Limits::background_only(),
    )?;
    let started = std::time::Instant::now();
    let outcomes = scheduler::gc_all(&runtime, &cfg, |_| true, &Metrics::default()).await?;
    if cfg.stores().any(|(_, s)| s.retention_dry_run) {
        println!(
            "retention.dryRun: a dry run; the counts are what would be removed, and nothing was"
        );
    }
    println!(
        "{:<40} {:>5} {:>9} {:>6} {:>12} {:>7}",
        "REPOSITORY", "TAGS", "MANIFESTS", "BLOBS", "BYTES FREED", "UPLOADS"
    );
    let (mut failed, mut scanned) = (false, 0u64);
    for o in &outcomes {
        match &o.result {
            Ok(r) => {
                scanned += r.bytes_scanned;
                println!(
                    "{:<40} {:>5} {:>9} {:>6} {:>12} {:>7}{}",
                    o.repo,
                    r.tags_removed,
                    r.manifests_removed,
                    r.blobs_removed,
                    r.bytes_freed,
                    r.uploads_removed,
                    if r.repository_removed {
                        "  (repository removed)"
                    } else {
                        ""
                    }
                );
            }
            Err(e) => {
                failed = true;
                println!("{:<40} failed: {e:#}", o.repo);
            }
        }
    }
    println!(
        "{} repositories, {scanned} bytes of blobs scanned in {:.2?}",
        outcomes.len(),
        started.elapsed()
    );
    if failed {
        anyhow::bail!("gc failed for some repositories");
    }
    Ok(())
}

/// `skiff scrub`: check every repository once (with `repair`, removing
/// damaged blobs); true if anything is affected.
pub async fn scrub_once(cfg: Config, repair: bool) -> Result<bool> {
    let runtime = Runtime::new(
        Arc::new(open_stores(&cfg, Use::Beside).await?),
        Limits::background_only(),
    )?;
    let started = std::time::Instant::now();
    let outcomes = scheduler::scrub_all(&runtime, &Metrics::default(), repair).await?;
    println!(
        "{:<40} {:<9} {:<72} {:<72} IMAGES",
        "REPOSITORY", "STATUS", "BLOB", "ACTUAL"
    );
    let (mut affected, mut bytes) = (false, 0u64);
    for o in &outcomes {
        match &o.result {
            Ok(r) if r.damaged.is_empty() => {
                bytes += r.bytes_checked;
                println!("{:<40} {:<9}", o.repo, "ok");
            }
            Ok(r) => {
                affected = true;
                bytes += r.bytes_checked;
                for d in &r.damaged {
                    let status = if d.removed { "removed" } else { "affected" };
                    let images = if d.images.is_empty() {
                        "-".to_string()
                    } else {
                        d.images.join(",")
                    };
                    println!(
                        "{:<40} {:<9} {:<72} {:<72} {images}",
                        o.repo, status, d.digest, d.actual
                    );
                }
            }
            Err(e) => {
                affected = true;
                println!("{:<40} {:<9} {e:#}", o.repo, "failed");
            }
        }
    }
    println!(
        "{} repositories, {bytes} bytes of blobs checked, {} bytes hashed in {:.2?}",
        outcomes.len(),
        runtime.objects().bytes_hashed(),
        started.elapsed()
    );
    Ok(affected)
}

/// How a command uses the stores.
#[derive(Clone, Copy, PartialEq)]
pub enum Use {
    /// `serve`: owns the dedupe cache.
    Serve,
    /// `gc`/`scrub` beside a running server, which holds the cache: work
    /// without it (it is advisory; entries for deleted blobs go stale and
    /// are dropped when next looked up).
    Beside,
}

/// The default store and one per subpath, each in its own root directory
/// or bucket prefix.
pub async fn open_stores(cfg: &Config, how: Use) -> Result<Objects> {
    let default = open_store(cfg, &cfg.storage, "storage", how).await?;
    let mut subs = Vec::new();
    for sp in &cfg.sub_paths {
        let key = format!("storage.subPaths./{}", sp.prefix);
        subs.push((
            sp.prefix.clone(),
            open_store(cfg, &sp.store, &key, how).await?,
        ));
    }
    Ok(Objects::new(default, subs))
}

async fn open_store(
    cfg: &Config,
    s: &crate::config::StoreConfig,
    key: &str,
    how: Use,
) -> Result<Arc<dyn Backend>> {
    match &s.driver {
        Driver::Local => {
            // Beside a server the cache is the server's: never open it, or a
            // server (re)started while a long pass runs could not take it.
            let dedupe = s.dedupe && how == Use::Serve;
            let disk =
                Disk::new(s.root_directory.clone(), s.commit, dedupe).with_context(|| {
                    format!(
                        "{key}.rootDirectory: cannot use {}",
                        s.root_directory.display()
                    )
                })?;
            Ok(Arc::new(disk))
        }
        Driver::S3(settings) => {
            let s3 = S3::connect(settings)
                .await
                .with_context(|| format!("{key}.storageDriver"))?;
            // The index is opened even with dedupe off: references made
            // while it was on are still resolved through it.
            let holders: Arc<dyn Holders> = match &cfg.remote_cache {
                Some(d) => Arc::new(
                    DynamoHolders::connect(d, s3.describe())
                        .await
                        .context("storage.cacheDriver")?,
                ),
                None => {
                    let root = &s.root_directory;
                    std::fs::create_dir_all(root).with_context(|| {
                        format!("{key}.rootDirectory: cannot create {}", root.display())
                    })?;
                    Arc::new(
                        RedbHolders::open(&root.join(crate::objects::CACHE_FILE))
                            .with_context(|| format!("{key}.rootDirectory"))?,
                    )
                }
            };
            Ok(Arc::new(s3.with_holders(holders, s.dedupe)))
        }
    }
}
