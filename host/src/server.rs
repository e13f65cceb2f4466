//! HTTP serving: each request gets a fresh instance of the registry
//! component from the pre-linked `InstancePre`; the component answers through
//! `wasi:http`. A trap fails only its own request.

use crate::config::Config;
use crate::metrics::Metrics;
use crate::objects::{Disk, Objects};
use crate::runtime::{Priority, Runtime};
use crate::scheduler;
use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::Arc;
use tokio::net::TcpListener;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::WasiHttpView;

pub async fn serve(cfg: Config) -> Result<()> {
    let objects = Arc::new(open_stores(&cfg, Use::Serve)?);
    let runtime = Arc::new(Runtime::new(objects.clone())?.with_settings(&cfg));
    for disk in objects.disks() {
        converge_dedupe(disk.clone());
    }
    let metrics = Arc::new(Metrics::default());
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
    // Printed, not logged, so scripts and tests can read the port whatever the log level.
    println!("skiff listening on http://{bound}");
    tracing::info!(root = %cfg.storage.root_directory.display(), subpaths = cfg.sub_paths.len(), "serving");

    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = &mut shutdown => {
                tracing::info!("shutting down");
                let _ = stop.send(true);
                let _ = background.await;
                return Ok(());
            }
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            // Out of file descriptors, say: the server stays up and tries again.
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let (rt, metrics) = (runtime.clone(), metrics.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(rt.clone(), metrics.clone(), req));
            let conn = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = conn.serve_connection(TokioIo::new(stream), service).await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
}

/// `skiff gc`: one pass over every repository, in the foreground.
pub async fn gc_once(cfg: Config) -> Result<()> {
    let runtime = Runtime::new(Arc::new(open_stores(&cfg, Use::Beside)?))?;
    let started = std::time::Instant::now();
    let outcomes = scheduler::gc_all(&runtime, &cfg, |_| true, &Metrics::default()).await?;
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

/// `skiff scrub`: check every repository once; true if anything is affected.
pub async fn scrub_once(cfg: Config) -> Result<bool> {
    let runtime = Runtime::new(Arc::new(open_stores(&cfg, Use::Beside)?))?;
    let started = std::time::Instant::now();
    let outcomes = scheduler::scrub_all(&runtime, &Metrics::default()).await?;
    println!("{:<40} {:<9} {:<72} ACTUAL", "REPOSITORY", "STATUS", "BLOB");
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
                    println!(
                        "{:<40} {:<9} {:<72} {}",
                        o.repo, "affected", d.digest, d.actual
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
        "{} repositories, {bytes} bytes re-hashed in {:.2?}",
        outcomes.len(),
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

/// The default store and one per subpath, each in its own root directory.
pub fn open_stores(cfg: &Config, how: Use) -> Result<Objects> {
    let open = |s: &crate::config::StoreConfig, key: &str| -> Result<Arc<Disk>> {
        let disk = match Disk::new(s.root_directory.clone(), s.commit, s.dedupe) {
            Err(e) if how == Use::Beside && s.dedupe => {
                tracing::info!(error = format!("{e:#}"), "working without the dedupe cache");
                Disk::new(s.root_directory.clone(), s.commit, false)
            }
            r => r,
        }
        .with_context(|| format!("{key}: cannot use {}", s.root_directory.display()))?;
        Ok(Arc::new(disk))
    };
    let default = open(&cfg.storage, "storage.rootDirectory")?;
    let mut subs = Vec::new();
    for sp in &cfg.sub_paths {
        let key = format!("storage.subPaths./{}.rootDirectory", sp.prefix);
        subs.push((sp.prefix.clone(), open(&sp.store, &key)?));
    }
    Ok(Objects::new(default, subs))
}

/// Apply a changed dedupe setting to what is already stored, off the request path.
fn converge_dedupe(disk: Arc<Disk>) {
    tokio::task::spawn_blocking(move || match disk.reconcile() {
        Ok((blobs, 0)) => {
            tracing::debug!(root = %disk.root().display(), blobs, "dedupe state consistent")
        }
        Ok((blobs, changed)) => tracing::info!(
            root = %disk.root().display(), blobs, changed, dedupe = disk.dedupe(),
            "converged stored blobs to the dedupe setting"
        ),
        Err(e) => {
            tracing::warn!(root = %disk.root().display(), error = %e, "dedupe convergence failed")
        }
    });
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn plain(status: u16, msg: &str) -> hyper::Response<HyperOutgoingBody> {
    let body =
        format!(r#"{{"errors":[{{"code":"INTERNAL_ERROR","message":"{msg}","detail":""}}]}}"#);
    text(status, "application/json", body)
}

fn text(status: u16, content_type: &str, body: String) -> hyper::Response<HyperOutgoingBody> {
    hyper::Response::builder()
        .status(status)
        .header("Content-Type", content_type)
        .header("Docker-Distribution-API-Version", "registry/2.0")
        .body(
            Full::new(Bytes::from(body))
                .map_err(|never| match never {})
                .boxed_unsync(),
        )
        .unwrap_or_else(|_| hyper::Response::new(HyperOutgoingBody::default()))
}

async fn handle(
    rt: Arc<Runtime>,
    metrics: Arc<Metrics>,
    req: hyper::Request<Incoming>,
) -> Result<hyper::Response<HyperOutgoingBody>, std::convert::Infallible> {
    if req.uri().path() == "/metrics" {
        return Ok(text(200, "text/plain; version=0.0.4", metrics.render()));
    }
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    match run_guest(rt, req).await {
        Ok(resp) => {
            tracing::debug!(%method, %path, status = resp.status().as_u16(), "request");
            Ok(resp)
        }
        Err(e) => {
            tracing::error!(%method, %path, error = format!("{e:#}"), "request failed in the registry component");
            Ok(plain(500, "the registry component failed on this request"))
        }
    }
}

async fn run_guest(
    rt: Arc<Runtime>,
    req: hyper::Request<Incoming>,
) -> Result<hyper::Response<HyperOutgoingBody>> {
    let mut store = rt.new_store(Priority::Request);
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let incoming = store
        .data_mut()
        .http()
        .new_incoming_request(Scheme::Http, req)?;
    let out = store.data_mut().http().new_response_outparam(sender)?;
    let pre = rt.pre().clone();
    // The instance runs in its own task so it can keep streaming the body
    // after the response head is handed to hyper.
    let task = tokio::spawn(async move {
        let proxy = pre.instantiate_async(&mut store).await?;
        proxy
            .wasi_http_incoming_handler()
            .call_handle(&mut store, incoming, out)
            .await
    });
    match receiver.await {
        Ok(Ok(resp)) => {
            // Log a failure after the head was sent: the client saw a truncated body.
            tokio::spawn(async move {
                match task.await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::error!(
                        error = format!("{e:#}"),
                        "registry component failed mid-response"
                    ),
                    Err(e) => tracing::error!(error = %e, "registry task panicked mid-response"),
                }
            });
            Ok(resp)
        }
        Ok(Err(code)) => anyhow::bail!("the component answered with an error: {code:?}"),
        Err(_) => match task.await {
            Ok(Ok(())) => anyhow::bail!("the component never set a response"),
            Ok(Err(e)) => Err(anyhow::Error::from(e)),
            Err(e) => Err(e.into()),
        },
    }
}
