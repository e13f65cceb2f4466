//! Small JSON responses for the admin routes, errors in the OCI shape.

use wasip2::http::types::{Fields, OutgoingBody, OutgoingResponse, ResponseOutparam};

/// Send `body` as JSON with `status` and extra `headers`.
pub fn json(
    out: ResponseOutparam,
    status: u16,
    headers: &[(&str, &str)],
    body: &serde_json::Value,
) {
    let bytes = body.to_string().into_bytes();
    let fields = Fields::new();
    let mut all = vec![
        ("Content-Type", "application/json".to_string()),
        ("Content-Length", bytes.len().to_string()),
    ];
    all.extend(headers.iter().map(|(k, v)| (*k, v.to_string())));
    for (k, v) in all {
        // Our own constant names and values: they are valid header fields.
        let _ = fields.append(k, v.as_bytes());
    }
    let response = OutgoingResponse::new(fields);
    let _ = response.set_status_code(status);
    let Ok(body) = response.body() else { return };
    ResponseOutparam::set(out, Ok(response));
    if let Ok(stream) = body.write() {
        // At most 4096 bytes per blocking write (wasi:io's limit).
        for piece in bytes.chunks(4096) {
            if stream.blocking_write_and_flush(piece).is_err() {
                break;
            }
        }
        drop(stream);
    }
    let _ = OutgoingBody::finish(body, None);
}

/// An OCI error body: `{"errors":[{"code":..,"message":..}]}`.
pub fn error(
    out: ResponseOutparam,
    status: u16,
    code: &str,
    message: &str,
    headers: &[(&str, &str)],
) {
    let body = serde_json::json!({"errors": [{"code": code, "message": message}]});
    json(out, status, headers, &body);
}
