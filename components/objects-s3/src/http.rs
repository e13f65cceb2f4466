//! S3 requests: built, signed with SigV4, sent through
//! `wasi:http/outgoing-handler`, retried while S3 throttles or the
//! connection fails, and their failures mapped onto `object-error`.
//!
//! Bodies sent are always in guest memory (a small object, one part of an
//! upload, an XML document), so a retry can send them again and their
//! length is always known: S3 wants a `Content-Length`, never a chunked
//! body. Bodies received are read as streams ([`Body`]): into a bounded
//! buffer, piece by piece, or spliced into the caller's output stream so
//! a blob's bytes stay in the host.

use crate::clock;
use crate::keys::{encode_path, encode_query};
use crate::settings::Settings;
use crate::xml::{self, S3Error};
use crate::ObjectError;
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use std::time::{Duration, SystemTime};
use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, IncomingBody, IncomingResponse, Method as WasiMethod, OutgoingBody,
    OutgoingRequest, Scheme,
};
use wasip2::io::streams::{InputStream, OutputStream, StreamError};

/// Attempts of one request while S3 throttles or fails transiently;
/// with the backoff below, about three seconds of waiting at most.
const ATTEMPTS: u32 = 7;
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Bodies up to this size are signed by their SHA-256; larger ones (the
/// parts of an upload) are sent as `UNSIGNED-PAYLOAD`, which S3 accepts,
/// rather than hashed once more only for the signature.
const SIGNED_BODY_MAX: usize = 1 << 20;
/// The most an error answer is read of.
const ERROR_BODY_MAX: usize = 64 << 10;
/// The most one read of a response body asks for.
pub const READ_PIECE: u64 = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Method {
    Get,
    Head,
    Put,
    Post,
    Delete,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Put => "PUT",
            Method::Post => "POST",
            Method::Delete => "DELETE",
        }
    }

    fn wasi(self) -> WasiMethod {
        match self {
            Method::Get => WasiMethod::Get,
            Method::Head => WasiMethod::Head,
            Method::Put => WasiMethod::Put,
            Method::Post => WasiMethod::Post,
            Method::Delete => WasiMethod::Delete,
        }
    }
}

/// One S3 request, before it is signed.
pub struct Request<'a> {
    /// The S3 operation, for messages (`PutObject`).
    op: &'static str,
    method: Method,
    /// The full S3 key; `None` for a request on the bucket.
    key: Option<&'a str>,
    query: Vec<(&'static str, String)>,
    headers: Vec<(String, String)>,
    /// PUT and POST always have one, if empty: S3 wants their length.
    body: Option<&'a [u8]>,
}

impl<'a> Request<'a> {
    pub fn new(op: &'static str, method: Method, key: Option<&'a str>) -> Self {
        let body = matches!(method, Method::Put | Method::Post).then_some(&[][..]);
        Request {
            op,
            method,
            key,
            query: Vec::new(),
            headers: Vec::new(),
            body,
        }
    }

    pub fn query(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.query.push((name, value.into()));
        self
    }

    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// User metadata (`x-amz-meta-<name>`).
    pub fn meta(self, name: &str, value: impl Into<String>) -> Self {
        self.header(format!("x-amz-meta-{name}"), value)
    }

    pub fn body(mut self, body: &'a [u8]) -> Self {
        self.body = Some(body);
        self
    }

    /// What the request is about, for messages.
    fn what(&self) -> &str {
        self.key.unwrap_or("(the bucket)")
    }
}

/// The status line and headers of an answer.
#[derive(Debug)]
pub struct Head {
    pub status: u16,
    headers: Vec<(String, String)>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// User metadata (`x-amz-meta-<name>`).
    pub fn meta(&self, name: &str) -> Option<&str> {
        self.header(&format!("x-amz-meta-{name}"))
    }

    /// Every piece of user metadata, by name (without `x-amz-meta-`).
    pub fn user_metadata(&self) -> Vec<(String, String)> {
        self.headers
            .iter()
            .filter_map(|(k, v)| {
                let name = k
                    .to_ascii_lowercase()
                    .strip_prefix("x-amz-meta-")?
                    .to_string();
                Some((name, v.clone()))
            })
            .collect()
    }

    /// The ETag as S3 sends it, quotes included: the version, and what
    /// `If-Match` takes back.
    pub fn etag(&self) -> String {
        self.header("etag").unwrap_or_default().to_string()
    }

    pub fn content_length(&self) -> u64 {
        self.header("content-length")
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }

    pub fn modified_ms(&self) -> u64 {
        self.header("last-modified")
            .and_then(clock::http_date_ms)
            .unwrap_or(0)
    }
}

/// A successful answer whose body has not been read yet.
pub struct Response {
    pub head: Head,
    incoming: IncomingResponse,
    what: String,
}

impl Response {
    /// The head, and the body to read.
    pub fn split(self) -> Result<(Head, Body), ObjectError> {
        let Response {
            head,
            incoming,
            what,
        } = self;
        let failed = || ObjectError::Io(format!("reading the answer for {what}"));
        let body = incoming.consume().map_err(|()| failed())?;
        let stream = body.stream().map_err(|()| failed())?;
        let body = Body {
            stream,
            _body: body,
            _response: incoming,
            what,
        };
        Ok((head, body))
    }

    /// The whole body, which must be at most `max` bytes.
    pub fn bytes(self, max: u64) -> Result<(Head, Vec<u8>), ObjectError> {
        let (head, mut body) = self.split()?;
        let bytes = body.read_all(max)?.ok_or_else(|| {
            ObjectError::Io(format!(
                "the answer for {} is larger than {max} bytes",
                body.what
            ))
        })?;
        Ok((head, bytes))
    }
}

/// A response body being read. Fields drop in order: the stream before
/// the body it belongs to.
pub struct Body {
    stream: InputStream,
    _body: IncomingBody,
    _response: IncomingResponse,
    what: String,
}

impl Body {
    /// The next piece (at most `READ_PIECE` bytes), `None` at the end.
    pub fn next(&mut self) -> Result<Option<Vec<u8>>, ObjectError> {
        match self.stream.blocking_read(READ_PIECE) {
            Ok(piece) => Ok(Some(piece)),
            Err(StreamError::Closed) => Ok(None),
            Err(StreamError::LastOperationFailed(e)) => Err(ObjectError::Io(format!(
                "reading {}: {}",
                self.what,
                e.to_debug_string()
            ))),
        }
    }

    /// Everything left, or `None` if that is more than `max` bytes.
    pub fn read_all(&mut self, max: u64) -> Result<Option<Vec<u8>>, ObjectError> {
        let mut out = Vec::new();
        while let Some(piece) = self.next()? {
            if (out.len() + piece.len()) as u64 > max {
                return Ok(None);
            }
            out.extend_from_slice(&piece);
        }
        Ok(Some(out))
    }

    /// Hand exactly `n` bytes of the body to `sink`, piece by piece.
    pub fn feed(&mut self, n: u64, mut sink: impl FnMut(&[u8])) -> Result<(), ObjectError> {
        let mut left = n;
        while left > 0 {
            match self.next()? {
                Some(piece) => {
                    let take = piece.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    sink(&piece[..take]);
                    left -= take as u64;
                }
                None => return Err(self.ended_early(left)),
            }
        }
        Ok(())
    }

    /// Copy exactly `n` bytes of the body to `dst` by splicing: the bytes
    /// move from stream to stream in the host, never through the guest.
    pub fn splice_to(&mut self, dst: &OutputStream, n: u64) -> Result<(), ObjectError> {
        let mut left = n;
        while left > 0 {
            match dst.blocking_splice(&self.stream, left) {
                // Nothing moved: the client is not taking bytes yet.
                Ok(0) => dst.subscribe().block(),
                Ok(k) => left -= k.min(left),
                // Either end may be closed: the body if it ended early,
                // the client's stream if it went away.
                Err(StreamError::Closed) => {
                    return Err(match dst.check_write() {
                        Err(StreamError::Closed) => client_gone(),
                        _ => self.ended_early(left),
                    })
                }
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(ObjectError::Io(format!(
                        "copying {} to the response: {}",
                        self.what,
                        e.to_debug_string()
                    )))
                }
            }
        }
        Ok(())
    }

    fn ended_early(&self, left: u64) -> ObjectError {
        ObjectError::Io(format!("{} ended {left} bytes early", self.what))
    }
}

fn client_gone() -> ObjectError {
    ObjectError::Io("writing the response: the client went away".into())
}

/// Flush what was written to `dst` and wait for it. Once every byte is
/// written, a closed stream only means the client went away meanwhile (or
/// the host closed a response whose length was reached): nothing is lost
/// that the caller could still do something about.
pub fn finish(dst: &OutputStream) -> Result<(), ObjectError> {
    match dst.blocking_flush() {
        Ok(()) | Err(StreamError::Closed) => Ok(()),
        Err(StreamError::LastOperationFailed(e)) => Err(ObjectError::Io(format!(
            "writing the response: {}",
            e.to_debug_string()
        ))),
    }
}

/// Why a request got no answer.
struct Transport {
    text: String,
    /// Worth another attempt (the connection failed, not the request).
    transient: bool,
}

impl Transport {
    fn fatal(text: impl Into<String>) -> Self {
        Transport {
            text: text.into(),
            transient: false,
        }
    }
}

fn transient(e: &ErrorCode) -> bool {
    matches!(
        e,
        ErrorCode::DnsTimeout
            | ErrorCode::DnsError(_)
            | ErrorCode::DestinationUnavailable
            | ErrorCode::ConnectionRefused
            | ErrorCode::ConnectionTerminated
            | ErrorCode::ConnectionTimeout
            | ErrorCode::ConnectionReadTimeout
            | ErrorCode::ConnectionWriteTimeout
            | ErrorCode::ConnectionLimitReached
            | ErrorCode::HttpResponseIncomplete
            | ErrorCode::HttpResponseTimeout
            | ErrorCode::HttpProtocolError
            | ErrorCode::InternalError(_)
    )
}

/// Whether S3 asks to be tried again (throttling, a transient fault).
fn retryable(status: u16, code: &str) -> bool {
    matches!(status, 429 | 500 | 502 | 503 | 504)
        || matches!(
            code,
            "SlowDown"
                | "InternalError"
                | "ServiceUnavailable"
                | "RequestTimeout"
                | "Throttling"
                | "ThrottlingException"
                | "RequestLimitExceeded"
        )
}

/// A failed request as the `objects` interface sees it.
fn failure(op: &str, what: &str, status: u16, e: Option<&S3Error>) -> ObjectError {
    let code = e.map(|e| e.code.as_str()).unwrap_or_default();
    match (status, code) {
        (_, "NoSuchBucket") => ObjectError::Io(format!(
            "{op} {what}: {status} NoSuchBucket: the bucket does not exist"
        )),
        (_, "NoSuchKey" | "NotFound" | "NoSuchUpload") | (404, _) => ObjectError::NotFound,
        // 409 ConditionalRequestConflict: another conditional write to the
        // key is in flight; one of the two loses, as with a 412.
        (_, "PreconditionFailed" | "ConditionalRequestConflict") | (412 | 409, _) => {
            ObjectError::PreconditionFailed
        }
        // Still throttled after every retry: the client is told to come
        // back later, not that the registry failed.
        (_, "SlowDown" | "Throttling" | "ThrottlingException" | "RequestLimitExceeded")
        | (503, _) => ObjectError::Busy,
        _ => {
            let detail = match e {
                Some(e) if !e.message.is_empty() => format!(" {}: {}", e.code, e.message),
                Some(e) => format!(" {}", e.code),
                None => String::new(),
            };
            ObjectError::Io(format!("{op} {what}: {status}{detail}"))
        }
    }
}

/// Wait before attempt `attempt + 1`: exponential, with jitter so that
/// instances throttled together do not come back together.
fn backoff(attempt: u32) {
    let full = FIRST_BACKOFF
        .saturating_mul(1 << attempt.min(16))
        .min(MAX_BACKOFF);
    let half = full / 2;
    let jitter = wasip2::random::random::get_random_u64() % (half.as_micros() as u64 + 1);
    clock::sleep(half + Duration::from_micros(jitter));
}

/// Write all of `bytes` to a request body, as fast as the host takes them.
fn write_all(stream: &OutputStream, mut bytes: &[u8]) -> Result<(), StreamError> {
    while !bytes.is_empty() {
        let permit = stream.check_write()?;
        if permit == 0 {
            stream.subscribe().block();
            continue;
        }
        let n = usize::try_from(permit)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        stream.write(&bytes[..n])?;
        bytes = &bytes[n..];
    }
    stream.blocking_flush()
}

fn stream_error(e: StreamError) -> String {
    match e {
        StreamError::Closed => "the connection closed".into(),
        StreamError::LastOperationFailed(e) => e.to_debug_string(),
    }
}

/// A request ready to go out.
struct Prepared {
    authority: String,
    path: String,
    headers: Vec<(String, String)>,
}

/// The bucket's endpoint and credentials: sends requests.
pub struct Client {
    settings: Settings,
    identity: Identity,
}

impl Client {
    pub fn new(settings: Settings) -> Client {
        let identity = Credentials::new(
            settings.access_key.clone(),
            settings.secret_key.clone(),
            settings.session_token.clone(),
            None,
            "skiff-objects-s3",
        )
        .into();
        Client { settings, identity }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Send `req`, trying again while S3 throttles or the connection
    /// fails; a 2xx answer, or the failure as an `object-error`.
    pub fn send(&self, req: &Request) -> Result<Response, ObjectError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let last = attempt >= ATTEMPTS;
            match self.send_once(req) {
                Ok(resp) if (200..300).contains(&resp.head.status) => return Ok(resp),
                Ok(resp) => {
                    let status = resp.head.status;
                    // A HEAD's error has no body: the status says it all.
                    let error = match req.method {
                        Method::Head => None,
                        _ => resp
                            .bytes(ERROR_BODY_MAX as u64)
                            .ok()
                            .and_then(|(_, body)| xml::error(&body)),
                    };
                    let code = error.as_ref().map(|e| e.code.as_str()).unwrap_or_default();
                    if !last && retryable(status, code) {
                        backoff(attempt);
                        continue;
                    }
                    return Err(failure(req.op, req.what(), status, error.as_ref()));
                }
                Err(t) if t.transient && !last => backoff(attempt),
                Err(t) => {
                    return Err(ObjectError::Io(format!(
                        "{} {}: {}",
                        req.op,
                        req.what(),
                        t.text
                    )))
                }
            }
        }
    }

    /// `send`, reading the answer's XML body (at most `max` bytes): for
    /// the operations that may answer 200 and still fail, with an
    /// `<Error>` body (copies, completing a multipart upload).
    pub fn send_xml(&self, req: &Request, max: u64) -> Result<(Head, Vec<u8>), ObjectError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (head, body) = self.send(req)?.bytes(max)?;
            match xml::error(&body) {
                None => return Ok((head, body)),
                Some(e) if attempt < ATTEMPTS && retryable(0, &e.code) => backoff(attempt),
                Some(e) => return Err(failure(req.op, req.what(), head.status, Some(&e))),
            }
        }
    }

    /// The URL of `req`: its authority and its path with the query.
    fn target(&self, req: &Request) -> (String, String) {
        let s = &self.settings;
        let (authority, mut path) = if s.path_style {
            (s.host.clone(), format!("/{}", encode_path(&s.bucket)))
        } else {
            (format!("{}.{}", s.bucket, s.host), String::new())
        };
        match req.key {
            Some(k) => {
                path.push('/');
                path.push_str(&encode_path(k));
            }
            None if path.is_empty() => path.push('/'),
            None => {}
        }
        let query: Vec<String> = req
            .query
            .iter()
            .map(|(k, v)| format!("{}={}", encode_query(k), encode_query(v)))
            .collect();
        if !query.is_empty() {
            path.push('?');
            path.push_str(&query.join("&"));
        }
        (authority, path)
    }

    /// The headers SigV4 adds to `req` at `time` (authorization, date,
    /// payload hash, session token). Every header the request carries but
    /// its length is signed: `host` and `x-amz-*` as S3 requires, the
    /// conditions and the range too.
    fn sign(
        &self,
        req: &Request,
        url: &str,
        time: SystemTime,
    ) -> Result<Vec<(String, String)>, String> {
        let mut settings = SigningSettings::default();
        // S3 signs the path as sent, encoded once and not normalized.
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        let params = v4::SigningParams::builder()
            .identity(&self.identity)
            .region(&self.settings.region)
            .name("s3")
            .time(time)
            .settings(settings)
            .build()
            .map_err(|e| e.to_string())?
            .into();
        let body = match req.body {
            Some(b) if b.len() > SIGNED_BODY_MAX => SignableBody::UnsignedPayload,
            Some(b) => SignableBody::Bytes(b),
            None => SignableBody::Bytes(&[]),
        };
        let headers = req.headers.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        let signable = SignableRequest::new(req.method.as_str(), url, headers, body)
            .map_err(|e| e.to_string())?;
        let (instructions, _signature) = sign(signable, &params)
            .map_err(|e| e.to_string())?
            .into_parts();
        let (headers, _query) = instructions.into_parts();
        Ok(headers
            .into_iter()
            .map(|h| (h.name().to_string(), h.value().to_string()))
            .collect())
    }

    /// `req` as it goes out at `time`: authority, path with query, and
    /// every header, signed.
    fn prepare(&self, req: &Request, time: SystemTime) -> Result<Prepared, String> {
        let (authority, path) = self.target(req);
        let scheme = if self.settings.secure {
            "https"
        } else {
            "http"
        };
        let url = format!("{scheme}://{authority}{path}");
        let signed = self
            .sign(req, &url, time)
            .map_err(|e| format!("signing the request: {e}"))?;
        let mut headers: Vec<(String, String)> =
            req.headers.iter().chain(signed.iter()).cloned().collect();
        if let Some(b) = req.body {
            headers.push(("content-length".into(), b.len().to_string()));
        }
        Ok(Prepared {
            authority,
            path,
            headers,
        })
    }

    fn send_once(&self, req: &Request) -> Result<Response, Transport> {
        let Prepared {
            authority,
            path,
            headers,
        } = self
            .prepare(req, SystemTime::now())
            .map_err(Transport::fatal)?;
        let headers: Vec<(String, Vec<u8>)> = headers
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes()))
            .collect();
        let secure = self.settings.secure;
        let fields = Fields::from_list(&headers)
            .map_err(|e| Transport::fatal(format!("a header the host refuses: {e:?}")))?;
        let out = OutgoingRequest::new(fields);
        let scheme = if secure { Scheme::Https } else { Scheme::Http };
        let refused = |what: &str| Transport::fatal(format!("the host refused the {what}"));
        out.set_method(&req.method.wasi())
            .map_err(|()| refused("method"))?;
        out.set_scheme(Some(&scheme))
            .map_err(|()| refused("scheme"))?;
        out.set_authority(Some(&authority))
            .map_err(|()| refused("authority"))?;
        out.set_path_with_query(Some(&path))
            .map_err(|()| refused("path"))?;
        let body = match req.body {
            Some(_) => Some(out.body().map_err(|()| refused("body"))?),
            None => None,
        };
        let future = outgoing_handler::handle(out, None).map_err(|e| Transport {
            transient: transient(&e),
            text: format!("{e:?}"),
        })?;
        // The body is written after `handle`, as the host sends it while
        // it is written. S3 may answer before it has all of it (a failed
        // condition): its answer then says more than the write error.
        let mut write_error = None;
        if let (Some(body), Some(bytes)) = (body, req.body) {
            let written = match body.write() {
                Ok(stream) => write_all(&stream, bytes).map_err(stream_error),
                Err(()) => Err("the request body cannot be written".to_string()),
            };
            match written {
                Ok(()) => {
                    if let Err(e) = OutgoingBody::finish(body, None) {
                        write_error = Some(format!("{e:?}"));
                    }
                }
                Err(e) => write_error = Some(e),
            }
        }
        future.subscribe().block();
        match future.get() {
            Some(Ok(Ok(incoming))) => {
                let headers = incoming
                    .headers()
                    .entries()
                    .into_iter()
                    .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
                    .collect();
                Ok(Response {
                    head: Head {
                        status: incoming.status(),
                        headers,
                    },
                    incoming,
                    what: req.what().to_string(),
                })
            }
            Some(Ok(Err(e))) => Err(Transport {
                transient: transient(&e),
                text: match write_error {
                    Some(w) => format!("{e:?} (writing the body: {w})"),
                    None => format!("{e:?}"),
                },
            }),
            Some(Err(())) | None => Err(Transport::fatal("the host lost the response")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(session_token: Option<&str>) -> Client {
        Client::new(Settings {
            bucket: "skiff-test".into(),
            region: "us-east-1".into(),
            secure: false,
            host: "127.0.0.1:5000".into(),
            path_style: true,
            prefix: "p".into(),
            access_key: "AKIDEXAMPLE".into(),
            secret_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: session_token.map(String::from),
            part_size: 10 << 20,
        })
    }

    /// 2024-01-02T03:04:05Z
    fn at() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_704_164_645)
    }

    fn header<'a>(p: &'a Prepared, name: &str) -> Option<&'a str> {
        p.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The signatures botocore's S3 signer computes for the same requests
    /// (what moto and S3 check them against).
    #[test]
    fn signatures_match_botocore() {
        let c = client(None);
        let cases = [
            (
                Request::new("PutObject", Method::Put, Some("p/a b/sha256:x+y"))
                    .header("if-none-match", "*")
                    .meta("skiff-size", "5")
                    .body(b"hello"),
                "/skiff-test/p/a%20b/sha256%3Ax%2By",
                "669615d2ee5b411662d58fac5a246ca7f2429b4f9eed87048b8d660968e604d7",
            ),
            (
                Request::new("ListObjectsV2", Method::Get, None)
                    .query("list-type", "2")
                    .query("prefix", "p/r e/")
                    .query("delimiter", "/")
                    .query("continuation-token", "1/a+b=="),
                "/skiff-test?list-type=2&prefix=p%2Fr%20e%2F&delimiter=%2F&continuation-token=1%2Fa%2Bb%3D%3D",
                "b9a2e83e1e136a3f06f997fb867d520c1a3372f5325b23761d367e7b7a334de7",
            ),
            (
                Request::new("CreateMultipartUpload", Method::Post, Some("p/k"))
                    .query("uploads", ""),
                "/skiff-test/p/k?uploads=",
                "a5ace34b74f352f6055f69d6acf36e30c9df034324dd27559afffd44c5bdce8b",
            ),
        ];
        for (req, path, signature) in &cases {
            let p = c.prepare(req, at()).unwrap();
            assert_eq!(
                (p.authority.as_str(), p.path.as_str()),
                ("127.0.0.1:5000", *path)
            );
            let auth = header(&p, "authorization").unwrap();
            assert!(auth.ends_with(&format!("Signature={signature}")), "{auth}");
            assert_eq!(header(&p, "x-amz-date"), Some("20240102T030405Z"));
        }
    }

    #[test]
    fn large_bodies_go_unsigned_and_tokens_are_sent() {
        let c = client(Some("token"));
        let part = vec![0u8; SIGNED_BODY_MAX + 1];
        let req = Request::new("PutObject", Method::Put, Some("p/part-00001")).body(&part);
        let p = c.prepare(&req, at()).unwrap();
        assert_eq!(header(&p, "x-amz-content-sha256"), Some("UNSIGNED-PAYLOAD"));
        assert_eq!(header(&p, "x-amz-security-token"), Some("token"));
        let length = (SIGNED_BODY_MAX + 1).to_string();
        assert_eq!(header(&p, "content-length"), Some(length.as_str()));
        // Virtual-host style names the bucket in the authority.
        let mut s = c.settings().clone();
        s.path_style = false;
        let c = Client::new(s);
        let head = Request::new("HeadObject", Method::Head, Some("p/k"));
        let p = c.prepare(&head, at()).unwrap();
        assert_eq!(
            (p.authority.as_str(), p.path.as_str()),
            ("skiff-test.127.0.0.1:5000", "/p/k")
        );
        assert_eq!(header(&p, "content-length"), None);
    }

    #[test]
    fn failures_map_onto_object_errors() {
        let e = |code: &str| S3Error {
            code: code.into(),
            message: String::new(),
        };
        assert_eq!(failure("GetObject", "k", 404, None), ObjectError::NotFound);
        assert_eq!(
            failure(
                "PutObject",
                "k",
                409,
                Some(&e("ConditionalRequestConflict"))
            ),
            ObjectError::PreconditionFailed
        );
        assert_eq!(
            failure("PutObject", "k", 412, None),
            ObjectError::PreconditionFailed
        );
        assert_eq!(
            failure("PutObject", "k", 503, Some(&e("SlowDown"))),
            ObjectError::Busy
        );
        assert!(matches!(
            failure("GetObject", "k", 404, Some(&e("NoSuchBucket"))),
            ObjectError::Io(m) if m.contains("bucket does not exist")
        ));
        assert_eq!(
            failure("PutObject", "p/k", 403, Some(&e("AccessDenied"))),
            ObjectError::Io("PutObject p/k: 403 AccessDenied".into())
        );
        assert!(retryable(500, "") && retryable(200, "InternalError"));
        assert!(!retryable(412, "PreconditionFailed"));
    }
}
