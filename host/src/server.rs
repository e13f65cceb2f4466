//! HTTP serving: each request gets a fresh instance of the registry
//! component from the pre-linked `InstancePre`; the component answers through
//! `wasi:http`. A trap fails only its own request.

use crate::config::Config;
use crate::objects::Disk;
use crate::runtime::Runtime;
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
    let disk = Arc::new(
        Disk::new(cfg.storage.root_directory.clone(), cfg.storage.commit).with_context(|| {
            format!(
                "storage.rootDirectory: cannot use {}",
                cfg.storage.root_directory.display()
            )
        })?,
    );
    let runtime = Arc::new(Runtime::new(disk)?);
    let addr = std::net::SocketAddr::new(cfg.http.address, cfg.http.port);
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("http: cannot listen on {addr}"))?;
    let bound = listener.local_addr()?;
    // Printed, not logged, so scripts and tests can read the port whatever the log level.
    println!("skiff listening on http://{bound}");
    tracing::info!(root = %cfg.storage.root_directory.display(), "serving");

    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => r?,
            _ = &mut shutdown => {
                tracing::info!("shutting down");
                return Ok(());
            }
        };
        let rt = runtime.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(rt.clone(), req));
            let conn = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = conn.serve_connection(TokioIo::new(stream), service).await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
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
    hyper::Response::builder()
        .status(status)
        .header("Content-Type", "application/json")
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
    req: hyper::Request<Incoming>,
) -> Result<hyper::Response<HyperOutgoingBody>, std::convert::Infallible> {
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
    let mut store = rt.new_store();
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
