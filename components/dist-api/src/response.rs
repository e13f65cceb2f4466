//! Responses and how they are sent. Blob bodies are streamed by the store
//! straight into the response's output stream.

use crate::bindings::skiff::registry::store;
use skiff_core::RegistryError;
use wasip2::http::types::{Fields, OutgoingBody, OutgoingResponse, ResponseOutparam};
use wasip2::io::streams::OutputStream;

pub enum Body {
    Empty,
    Bytes(Vec<u8>),
    /// `len` bytes of a blob from `start`.
    Blob {
        repo: String,
        digest: String,
        start: u64,
        len: u64,
    },
    /// Made while it is sent, a piece at a time (`None` after the last), so
    /// a long listing is never whole in memory. Its length is not known up
    /// front: it goes out chunked.
    Pieces(Pieces),
}

/// The source of a `Body::Pieces`.
pub type Pieces = Box<dyn FnMut() -> Result<Option<Vec<u8>>, RegistryError>>;

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Body,
}

impl Response {
    pub fn new(status: u16) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Body::Empty,
        }
    }

    pub fn json(status: u16, bytes: Vec<u8>) -> Self {
        Response::new(status)
            .header("Content-Type", "application/json")
            .bytes(bytes)
    }

    pub fn error(e: RegistryError) -> Self {
        let r = Response::json(e.status(), e.to_json().into_bytes());
        match e.code {
            // Contention passes quickly: tell clients when to come back.
            skiff_core::ErrorCode::TooManyRequests => r.header("Retry-After", "1"),
            _ => r,
        }
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    pub fn bytes(mut self, bytes: Vec<u8>) -> Self {
        self.body = Body::Bytes(bytes);
        self
    }

    fn content_length(&self) -> Option<u64> {
        match &self.body {
            Body::Empty => Some(0),
            Body::Bytes(b) => Some(b.len() as u64),
            Body::Blob { len, .. } => Some(*len),
            Body::Pieces(_) => None,
        }
    }

    /// Send the response. For HEAD the headers (with the length the body
    /// would have) go out alone.
    pub fn send(self, out: ResponseOutparam, head: bool) {
        let fields = Fields::new();
        let length = self.content_length();
        let mut headers = self.headers;
        if let Some(length) = length {
            if !headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            {
                headers.push(("Content-Length".into(), length.to_string()));
            }
        }
        headers.push((
            "Docker-Distribution-API-Version".into(),
            "registry/2.0".into(),
        ));
        for (k, v) in &headers {
            let _ = fields.append(k, v.as_bytes());
        }
        let response = OutgoingResponse::new(fields);
        let _ = response.set_status_code(self.status);
        let Ok(body) = response.body() else {
            return;
        };
        ResponseOutparam::set(out, Ok(response));
        if head {
            // Dropping an unfinished body aborts it; hyper sends no body for HEAD.
            return;
        }
        let Ok(stream) = body.write() else {
            return;
        };
        let sent = match self.body {
            Body::Empty => true,
            Body::Bytes(b) => write_all(&stream, &b),
            Body::Blob {
                repo,
                digest,
                start,
                len,
            } => store::blob_read(&repo, &digest, start, len, &stream).is_ok(),
            Body::Pieces(mut next) => loop {
                match next() {
                    Ok(Some(piece)) if write(&stream, &piece) => {}
                    Ok(None) => break stream.blocking_flush().is_ok(),
                    // Cut short: the client sees a truncated body.
                    Ok(Some(_)) | Err(_) => break false,
                }
            },
        };
        drop(stream);
        if sent {
            let _ = OutgoingBody::finish(body, None);
        }
        // Otherwise the body is dropped unfinished: the client sees a
        // truncated response, never a complete-looking wrong one.
    }
}

fn write_all(stream: &OutputStream, bytes: &[u8]) -> bool {
    write(stream, bytes) && stream.blocking_flush().is_ok()
}

/// Hand `bytes` to the stream as fast as it takes them, without waiting
/// for them to go out.
fn write(stream: &OutputStream, mut bytes: &[u8]) -> bool {
    while !bytes.is_empty() {
        let Ok(permit) = stream.check_write() else {
            return false;
        };
        if permit == 0 {
            stream.subscribe().block();
            continue;
        }
        let n = (permit as usize).min(bytes.len());
        if stream.write(&bytes[..n]).is_err() {
            return false;
        }
        bytes = &bytes[n..];
    }
    true
}
