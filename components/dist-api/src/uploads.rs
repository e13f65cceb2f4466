//! Blob uploads: monolithic (POST with digest, or POST then PUT), chunked
//! (PATCH with Content-Range), streamed (PATCH without), and cross-repository
//! mounts.

use crate::bindings::skiff::registry::access::Action;
use crate::bindings::skiff::registry::store;
use crate::guard::Guard;
use crate::request::Request;
use crate::response::Response;
use crate::route;
use skiff_core::range::{parse_chunk_range, upload_range_header};
use skiff_core::{ErrorCode, RegistryError, RepoName};

fn location(repo: &RepoName, id: &str) -> String {
    format!("/v2/{repo}/blobs/uploads/{id}")
}

fn session(repo: &RepoName, id: &str, offset: u64, status: u16) -> Response {
    Response::new(status)
        .header("Location", location(repo, id))
        .header("Range", upload_range_header(offset))
        .header("Docker-Upload-UUID", id)
}

fn created(repo: &RepoName, digest: &str) -> Response {
    Response::new(201)
        .header("Location", format!("/v2/{repo}/blobs/{digest}"))
        .header("Docker-Content-Digest", digest)
}

/// Stream the request body into the upload.
fn append(
    req: &mut Request,
    repo: &RepoName,
    id: &str,
    start: Option<u64>,
) -> Result<u64, RegistryError> {
    let len = req.content_length()?;
    req.with_body(|src| {
        store::upload_append(repo.as_str(), id, start, len, src).map_err(RegistryError::from)
    })
}

pub fn start(req: &mut Request, repo: &RepoName, guard: &Guard) -> Result<Response, RegistryError> {
    if let Some(mount) = req.query("mount") {
        let digest = route::digest(mount)?.to_string();
        if let Some(from) = req.query("from") {
            let from: RepoName = from
                .parse()
                .map_err(|e| RegistryError::new(ErrorCode::NameInvalid, format!("from: {e}")))?;
            // Mounting from a repository the caller may not read would
            // copy what it may not see: the upload goes on unmounted,
            // which tells it nothing about the source.
            let readable = guard.may(&from, Action::Read);
            match readable.then(|| store::blob_mount(repo.as_str(), &digest, from.as_str())) {
                Some(Ok(_)) => return Ok(created(repo, &digest)),
                // Not mountable: fall back to an ordinary upload, as the spec asks.
                None | Some(Err(store::Error::BlobUnknown)) => {}
                Some(Err(e)) => return Err(e.into()),
            }
        }
    }
    // Checked before a session exists, so a bad digest leaves none behind.
    let monolithic = req
        .query("digest")
        .map(|d| route::digest(d).map(|d| d.to_string()))
        .transpose()?;
    let id = store::upload_start(repo.as_str())?;
    if let Some(digest) = monolithic {
        // Monolithic: the whole blob is this request's body.
        let result = append(req, repo, &id, Some(0))
            .and_then(|_| store::upload_finish(repo.as_str(), &id, &digest).map_err(Into::into));
        if result.is_err() {
            let _ = store::upload_cancel(repo.as_str(), &id);
        }
        result?;
        return Ok(created(repo, &digest));
    }
    Ok(session(repo, &id, 0, 202).header("OCI-Chunk-Min-Length", "0"))
}

pub fn status(repo: &RepoName, id: &str) -> Result<Response, RegistryError> {
    let offset = store::upload_offset(repo.as_str(), id)?;
    Ok(session(repo, id, offset, 204))
}

pub fn patch(req: &mut Request, repo: &RepoName, id: &str) -> Result<Response, RegistryError> {
    let start = match req.header("content-range") {
        None => None,
        Some(h) => {
            let span = parse_chunk_range(&h).ok_or_else(|| {
                RegistryError::new(
                    ErrorCode::BlobUploadInvalid,
                    format!("bad Content-Range {h:?}"),
                )
            })?;
            if let Some(n) = req.content_length()? {
                if n != span.len {
                    return Err(RegistryError::new(
                        ErrorCode::SizeInvalid,
                        format!(
                            "Content-Range covers {} bytes, Content-Length says {n}",
                            span.len
                        ),
                    ));
                }
            }
            Some(span.start)
        }
    };
    match append(req, repo, id, start) {
        Ok(offset) => Ok(session(repo, id, offset, 202)),
        Err(e) if e.code == ErrorCode::RangeInvalid => {
            // Tell the client where the session stands so it can resume.
            let offset = store::upload_offset(repo.as_str(), id)?;
            Ok(Response::error(e)
                .header("Location", location(repo, id))
                .header("Range", upload_range_header(offset)))
        }
        Err(e) => Err(e),
    }
}

pub fn finish(req: &mut Request, repo: &RepoName, id: &str) -> Result<Response, RegistryError> {
    let digest = req
        .query("digest")
        .ok_or_else(|| RegistryError::new(ErrorCode::DigestInvalid, "digest parameter missing"))
        .and_then(route::digest)?
        .to_string();
    // The session must exist before a body is read into it.
    store::upload_offset(repo.as_str(), id)?;
    if req.has_body()? {
        let start = match req.header("content-range") {
            Some(h) => Some(
                parse_chunk_range(&h)
                    .ok_or_else(|| {
                        RegistryError::new(
                            ErrorCode::BlobUploadInvalid,
                            format!("bad Content-Range {h:?}"),
                        )
                    })?
                    .start,
            ),
            None => None,
        };
        append(req, repo, id, start)?;
    }
    store::upload_finish(repo.as_str(), id, &digest)?;
    Ok(created(repo, &digest))
}

pub fn cancel(repo: &RepoName, id: &str) -> Result<Response, RegistryError> {
    store::upload_cancel(repo.as_str(), id)?;
    Ok(Response::new(204))
}
