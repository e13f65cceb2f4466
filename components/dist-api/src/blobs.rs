//! GET/HEAD/DELETE of blobs.

use crate::bindings::skiff::registry::store;
use crate::request::Request;
use crate::response::{Body, Response};
use skiff_core::range::{resolve_range, RangeAnswer};
use skiff_core::{Digest, RegistryError, RepoName};

pub fn get(req: &Request, repo: &RepoName, digest: &Digest) -> Result<Response, RegistryError> {
    let d = digest.to_string();
    let size = store::blob_size(repo.as_str(), &d)?;
    if !req.is_head() && can_follow_redirect(req) {
        if let Some(url) = store::blob_locate(repo.as_str(), &d) {
            // The bytes come straight from the bucket (`storageDriver.redirect`).
            return Ok(Response::new(307)
                .header("Location", url)
                .header("Docker-Content-Digest", &d));
        }
    }
    let range = req.header("range");
    let (status, start, len) = match resolve_range(range.as_deref(), size) {
        RangeAnswer::Whole => (200, 0, size),
        RangeAnswer::Partial(span) => (206, span.start, span.len),
        RangeAnswer::Unsatisfiable => {
            return Ok(Response::error(RegistryError::new(
                skiff_core::ErrorCode::RangeInvalid,
                format!(
                    "cannot serve {} of a {size}-byte blob",
                    range.unwrap_or_default()
                ),
            ))
            .header("Content-Range", format!("bytes */{size}")))
        }
    };
    let mut r = Response::new(status)
        .header("Content-Type", "application/octet-stream")
        .header("Docker-Content-Digest", &d)
        .header("Accept-Ranges", "bytes")
        .header("ETag", format!("\"{d}\""));
    if status == 206 {
        r = r.header(
            "Content-Range",
            format!("bytes {start}-{}/{size}", start + len - 1),
        );
    }
    r.body = Body::Blob {
        repo: repo.to_string(),
        digest: d,
        start,
        len,
    };
    Ok(r)
}

/// Whether a redirect to the bucket would serve this request. A browser's
/// fetch (it sends `Origin` or `Sec-Fetch-Mode`) would be stopped by the
/// bucket's CORS rules, and a client may ask for the bytes from the
/// registry itself with `X-Skiff-No-Redirect`.
fn can_follow_redirect(req: &Request) -> bool {
    ["origin", "sec-fetch-mode", "x-skiff-no-redirect"]
        .iter()
        .all(|h| req.header(h).is_none())
}

pub fn delete(repo: &RepoName, digest: &Digest) -> Result<Response, RegistryError> {
    store::blob_delete(repo.as_str(), &digest.to_string())?;
    Ok(Response::new(202))
}
