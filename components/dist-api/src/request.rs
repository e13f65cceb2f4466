//! The parts of an incoming request handlers need, read once.

use skiff_core::{ErrorCode, RegistryError};
use wasip2::http::types::{IncomingBody, IncomingRequest, Method};
use wasip2::io::streams::{InputStream, StreamError};

pub struct Request {
    inner: IncomingRequest,
    pub method: String,
    pub path: String,
    query: Vec<(String, String)>,
}

impl Request {
    pub fn new(inner: IncomingRequest) -> Self {
        let method = match inner.method() {
            Method::Get => "GET".to_string(),
            Method::Head => "HEAD".to_string(),
            Method::Post => "POST".to_string(),
            Method::Put => "PUT".to_string(),
            Method::Delete => "DELETE".to_string(),
            Method::Patch => "PATCH".to_string(),
            Method::Options => "OPTIONS".to_string(),
            Method::Connect => "CONNECT".to_string(),
            Method::Trace => "TRACE".to_string(),
            Method::Other(m) => m,
        };
        let pq = inner.path_with_query().unwrap_or_default();
        let (path, query) = pq.split_once('?').unwrap_or((&pq, ""));
        let query = form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        Request {
            inner,
            method,
            path: path.to_string(),
            query,
        }
    }

    pub fn is_head(&self) -> bool {
        self.method == "HEAD"
    }

    /// The first value of a query parameter.
    pub fn query(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a repeatable query parameter (`tag=a&tag=b`).
    pub fn query_all(&self, key: &str) -> Vec<&str> {
        self.query
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        let values = self.inner.headers().get(name);
        values
            .first()
            .map(|v| String::from_utf8_lossy(v).trim().to_string())
    }

    /// `Content-Length`, if the client sent one. A malformed value is an error
    /// rather than "unknown", so a body is never misread.
    pub fn content_length(&self) -> Result<Option<u64>, RegistryError> {
        match self.header("content-length") {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                RegistryError::new(ErrorCode::SizeInvalid, format!("bad Content-Length {v:?}"))
            }),
        }
    }

    /// Whether the request may carry a body worth reading: a declared length
    /// above zero, or no declared length at all. The host strips
    /// `Transfer-Encoding` (a hop-by-hop header) and HTTP/2 has none, so a
    /// body of unknown length cannot be told from no body; reading finds out.
    pub fn has_body(&self) -> Result<bool, RegistryError> {
        Ok(match self.content_length()? {
            Some(n) => n > 0,
            None => true,
        })
    }

    /// Run `f` over the body stream; the body is closed afterwards.
    pub fn with_body<T>(
        &mut self,
        f: impl FnOnce(&InputStream) -> Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        let internal = || RegistryError::new(ErrorCode::Internal, "request body already consumed");
        let body = self.inner.consume().map_err(|_| internal())?;
        let stream = body.stream().map_err(|_| internal())?;
        let result = f(&stream);
        drop(stream);
        let _ = IncomingBody::finish(body);
        result
    }

    /// Read a small body (a manifest) into memory, refusing more than `max` bytes.
    pub fn read_body(&mut self, max: usize) -> Result<Vec<u8>, RegistryError> {
        if let Some(n) = self.content_length()? {
            if n > max as u64 {
                return Err(too_large(max));
            }
        }
        self.with_body(|stream| {
            let mut buf = Vec::new();
            loop {
                match stream.blocking_read(64 * 1024) {
                    Ok(chunk) => {
                        buf.extend_from_slice(&chunk);
                        if buf.len() > max {
                            return Err(too_large(max));
                        }
                    }
                    Err(StreamError::Closed) => return Ok(buf),
                    Err(StreamError::LastOperationFailed(e)) => {
                        return Err(RegistryError::new(
                            ErrorCode::BlobUploadInvalid,
                            format!("reading the body failed: {}", e.to_debug_string()),
                        ))
                    }
                }
            }
        })
    }
}

fn too_large(max: usize) -> RegistryError {
    RegistryError::new(
        ErrorCode::ManifestTooLarge,
        format!("manifests are limited to {max} bytes"),
    )
}
