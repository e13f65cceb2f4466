//! One connection and its requests: each request gets a fresh instance of
//! the registry component from the pre-linked `InstancePre` once admission
//! gives it a slot; the component answers through `wasi:http`. A trap fails
//! only its own request. Slow clients are bounded at every step: request
//! heads by `http.headerTimeout`, bodies by `http.bodyTimeout`, and what they
//! hold by the slots (`admission`). Once the server drains (`shutdown`),
//! each connection closes after the request it is serving.

use crate::admission::{Admission, Slot, QUEUE_WAIT, RETRY_AFTER_SECS};
use crate::audit::{self, Audit};
use crate::body::{self, BodyFailure, GuestBody};
use crate::config::Http;
use crate::metrics::{self, Metrics};
use crate::ratelimit::Limiter;
use crate::runtime::Runtime;
use crate::shutdown::{self, Phase};
use anyhow::Result;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{watch, Notify};
use tracing::Instrument;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::WasiHttpView;

type Response = hyper::Response<HyperOutgoingBody>;

pub struct Serving {
    rt: Arc<Runtime>,
    metrics: Arc<Metrics>,
    admission: Admission,
    header_timeout: Duration,
    body_timeout: Duration,
    limiter: Option<Limiter>,
    audit: Option<Audit>,
    phase: watch::Receiver<Phase>,
}

/// How long `/readyz` waits for the stores to answer.
const READY_WAIT: Duration = Duration::from_secs(5);

impl Serving {
    pub fn new(
        rt: Arc<Runtime>,
        metrics: Arc<Metrics>,
        http: &Http,
        audit: Option<Audit>,
        phase: watch::Receiver<Phase>,
    ) -> Serving {
        Serving {
            rt,
            metrics,
            admission: Admission::new(http.max_requests_in_flight, QUEUE_WAIT),
            header_timeout: http.header_timeout,
            body_timeout: http.body_timeout,
            limiter: http.rate_limit.clone().map(Limiter::new),
            audit,
            phase,
        }
    }

    /// Serve one connection until the client closes it, it times out, or
    /// the server drains and its request in flight (if any) is answered.
    pub async fn connection<S>(self: Arc<Self>, stream: S, peer: Peer)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let first = Arc::new(Notify::new());
        let (this, seen) = (self.clone(), first.clone());
        let peer = Arc::new(peer);
        let service = service_fn(move |req| {
            seen.notify_one();
            this.clone().handle(req, peer.clone())
        });
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_timeout);
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        tokio::pin!(conn);
        // hyper times out request heads once it knows the connection speaks
        // HTTP/1; before the first request (while the protocol is sniffed,
        // for one) nothing would, so this does.
        let first_request = tokio::time::timeout(self.header_timeout, first.notified());
        tokio::pin!(first_request);
        let draining = shutdown::reached(self.phase.clone(), Phase::Draining);
        tokio::pin!(draining);
        let (mut before_first, mut closing) = (true, false);
        loop {
            tokio::select! {
                r = conn.as_mut() => return log_end(r),
                waited = &mut first_request, if before_first => {
                    if waited.is_err() {
                        tracing::debug!("no request within http.headerTimeout; closing the connection");
                        return;
                    }
                    before_first = false;
                }
                // hyper closes an idle connection now, a busy one once its
                // response is sent (HTTP/2: GOAWAY, open streams finish).
                () = &mut draining, if !closing => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }

    /// Answer one request: the operators' endpoints here, the API through
    /// the registry component; counted, audited, and tagged with its id.
    async fn handle(
        self: Arc<Self>,
        req: hyper::Request<Incoming>,
        peer: Arc<Peer>,
    ) -> Result<Response, std::convert::Infallible> {
        // Alive while the process serves at all, draining included.
        if req.uri().path() == "/livez" {
            return Ok(text_response(200, "text/plain", "ok\n".into()));
        }
        // A request that got in while its connection was told to close.
        if *self.phase.borrow() != Phase::Serving {
            return Ok(shutting_down());
        }
        match req.uri().path() {
            "/metrics" => {
                let text =
                    self.metrics.render() + &self.admission.render() + &self.rt.warm.render();
                return Ok(text_response(200, "text/plain; version=0.0.4", text));
            }
            "/readyz" => return Ok(self.readiness().await),
            _ => {}
        }
        let started = Instant::now();
        let id = request_id(req.headers());
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let user = Arc::new(OnceLock::new());
        let span = tracing::info_span!("request", id = %id);
        let resp = self
            .clone()
            .answer(req, &peer, &user)
            .instrument(span)
            .await;
        let status = resp.status().as_u16();
        let (route, repo, reference) = metrics::classify(&path);
        let requests = &self.metrics.requests;
        requests.record(
            metrics::method_label(&method),
            route,
            status,
            started.elapsed(),
        );
        if let Some(a) = self.audit.as_ref().filter(|_| Audit::records(&method)) {
            let digest = resp
                .headers()
                .get("Docker-Content-Digest")
                .and_then(|v| v.to_str().ok());
            a.write(&audit::Entry {
                time: skiff_core::caller::rfc3339(unix_now()),
                request_id: &id,
                user: user.get().map(String::as_str),
                client: peer.ip.to_string(),
                method: method.as_str(),
                route,
                repository: repo,
                reference,
                digest,
                status,
                outcome: audit::outcome(status),
            });
        }
        let resp = with_header(resp, "X-Request-Id", &id);
        if method == hyper::Method::HEAD {
            // The head says the length a GET would send; the body is
            // dropped here, not polled. HTTP/1 never reads a HEAD's body,
            // but HTTP/2 would, and the component's body, shorter than its
            // Content-Length, ends in an error that resets the stream.
            return Ok(resp.map(|_| HyperOutgoingBody::default()));
        }
        Ok(count_body(resp, requests.bytes_out.clone()))
    }

    /// 200 once every store answers, 503 saying which does not.
    async fn readiness(&self) -> Response {
        match tokio::time::timeout(READY_WAIT, self.rt.objects().ready()).await {
            Ok(Ok(())) => text_response(200, "text/plain", "ok\n".into()),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "not ready: a store does not answer");
                text_response(503, "text/plain", format!("storage does not answer: {e}\n"))
            }
            Err(_) => text_response(
                503,
                "text/plain",
                format!("storage did not answer within {READY_WAIT:?}\n"),
            ),
        }
    }

    async fn answer(
        self: Arc<Self>,
        req: hyper::Request<Incoming>,
        peer: &Peer,
        user: &Arc<OnceLock<String>>,
    ) -> Response {
        let client = peer.ip;
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        if let Some(Err(wait)) = self
            .limiter
            .as_ref()
            .map(|l| l.check(client, method.as_str()))
        {
            tracing::debug!(%method, %path, %client, "over http.ratelimit; answering 429");
            return rate_limited(wait);
        }
        let prepared = match body::prepare(
            req,
            self.body_timeout,
            self.phase.clone(),
            self.metrics.requests.bytes_in.clone(),
        )
        .await
        {
            Ok(p) => p,
            Err(BodyFailure::TimedOut) => return self.body_timed_out(&method, &path),
            Err(BodyFailure::CutOff) => return self.cut_off(&method, &path),
            Err(BodyFailure::Failed(e)) => {
                tracing::debug!(%method, %path, error = %e, "request body failed");
                return oci_error(
                    400,
                    "SIZE_INVALID",
                    "the request body ended before its Content-Length",
                );
            }
        };
        let Some(slot) = self.admission.admit(prepared.streams).await else {
            tracing::debug!(%method, %path, "no request slot came free; answering 503");
            return too_many_requests();
        };
        let result = run_guest(self.rt.clone(), prepared.req, slot, peer, user.clone()).await;
        // The guest's answer to a body that stalled or was cut off is about
        // the failed write, so the client is told why instead.
        if prepared.cut_off.load(Ordering::SeqCst) {
            return self.cut_off(&method, &path);
        }
        if prepared.timed_out.load(Ordering::SeqCst) {
            return self.body_timed_out(&method, &path);
        }
        match result {
            Ok(resp) => {
                tracing::debug!(%method, %path, status = resp.status().as_u16(), "request");
                let unread = prepared.unread;
                resp.map(|b| body::Holding::new(b, unread).boxed_unsync())
            }
            Err(e) => {
                tracing::error!(%method, %path, error = format!("{e:#}"), "request failed in the registry component");
                oci_error(
                    500,
                    "INTERNAL_ERROR",
                    "the registry component failed on this request",
                )
            }
        }
    }

    fn cut_off(&self, method: &hyper::Method, path: &str) -> Response {
        tracing::info!(%method, %path, "request body cut off at http.shutdownTimeout; answering 503");
        shutting_down()
    }

    fn body_timed_out(&self, method: &hyper::Method, path: &str) -> Response {
        self.admission.record_body_timeout();
        tracing::info!(%method, %path, "request body stalled past http.bodyTimeout; answering 408");
        let msg = format!(
            "the request body sent nothing for {:?} (http.bodyTimeout)",
            self.body_timeout
        );
        with_header(
            oci_error(408, "BLOB_UPLOAD_INVALID", &msg),
            "Connection",
            "close",
        )
    }
}

/// Who is at the other end of a connection.
pub struct Peer {
    pub ip: std::net::IpAddr,
    /// The connection is TLS.
    pub tls: bool,
    /// The user its verified client certificate names.
    pub certified: Option<String>,
}

fn log_end(r: Result<(), Box<dyn std::error::Error + Send + Sync>>) {
    if let Err(e) = r {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Run the request on an instance (a kept one, or a new one: `warm`). The
/// instance runs in its own task so it can keep streaming the body after the
/// response head is handed to hyper; the slot goes with it and is freed only
/// once the instance is given back or dropped, so the pool never holds more
/// request instances than there are slots.
async fn run_guest(
    rt: Arc<Runtime>,
    req: hyper::Request<GuestBody>,
    slot: Slot,
    peer: &Peer,
    user: Arc<OnceLock<String>>,
) -> Result<Response> {
    let mut inst = rt.request_instance().await?;
    inst.store
        .data_mut()
        .begin_request(peer.certified.clone(), user);
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let scheme = if peer.tls {
        Scheme::Https
    } else {
        Scheme::Http
    };
    let incoming = inst
        .store
        .data_mut()
        .http()
        .new_incoming_request(scheme, req)?;
    let out = inst.store.data_mut().http().new_response_outparam(sender)?;
    let task = tokio::spawn(async move {
        let result = inst
            .proxy
            .wasi_http_incoming_handler()
            .call_handle(&mut inst.store, incoming, out)
            .await;
        if let Err(why) = rt.warm.give_back(inst, result.is_ok()) {
            tracing::trace!(?why, "registry instance not kept");
        }
        drop(slot);
        result
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

/// The client's `X-Request-Id` if it is a sane one (a proxy in front may
/// have set it), else a new one.
fn request_id(headers: &hyper::HeaderMap) -> String {
    let sane = |v: &&str| {
        (1..=128).contains(&v.len())
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
    };
    headers
        .get("X-Request-Id")
        .and_then(|v| v.to_str().ok())
        .filter(sane)
        .map(str::to_string)
        .unwrap_or_else(|| format!("{:016x}", rand::random::<u64>()))
}

/// The response, its body's bytes added to `sent` as they go out.
fn count_body(resp: Response, sent: Arc<AtomicU64>) -> Response {
    resp.map(|body| body::Counted::new(body, sent).boxed_unsync())
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// 503 with when to come back, as the distribution spec's TOOMANYREQUESTS.
fn too_many_requests() -> Response {
    with_header(
        oci_error(
            503,
            "TOOMANYREQUESTS",
            "too many requests in flight; retry later",
        ),
        "Retry-After",
        &RETRY_AFTER_SECS.to_string(),
    )
}

/// 429 for a client over `http.ratelimit`, with when a request would pass.
fn rate_limited(wait: Duration) -> Response {
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    with_header(
        oci_error(
            429,
            "TOOMANYREQUESTS",
            "too many requests from this client (http.ratelimit)",
        ),
        "Retry-After",
        &secs.to_string(),
    )
}

/// 503 while the server stops: retry later (against the next server), on
/// another connection. Nothing of the request was published; an upload
/// session keeps what was stored of its body, says where it stands (GET),
/// and can be resumed from there.
fn shutting_down() -> Response {
    let resp = with_header(
        oci_error(
            503,
            "TOOMANYREQUESTS",
            "the registry is shutting down; retry later",
        ),
        "Retry-After",
        &RETRY_AFTER_SECS.to_string(),
    );
    with_header(resp, "Connection", "close")
}

fn oci_error(status: u16, code: &str, message: &str) -> Response {
    let body = serde_json::json!({"errors": [{"code": code, "message": message, "detail": ""}]});
    text_response(status, "application/json", body.to_string())
}

fn with_header(mut resp: Response, name: &'static str, value: &str) -> Response {
    if let Ok(v) = hyper::header::HeaderValue::from_str(value) {
        resp.headers_mut().insert(name, v);
    }
    resp
}

pub fn text_response(status: u16, content_type: &str, body: String) -> Response {
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
