//! GET/HEAD/PUT/DELETE of manifests.

use crate::bindings::skiff::registry::store;
use crate::request::Request;
use crate::response::Response;
use skiff_core::manifest::MAX_MANIFEST_BYTES;
use skiff_core::{ErrorCode, Reference, RegistryError, RepoName, Tag};

pub fn get(req: &Request, repo: &RepoName, r: &Reference) -> Result<Response, RegistryError> {
    let m = store::manifest_get(repo.as_str(), &r.to_string())?;
    // A HEAD is a check, not a pull (and must write nothing).
    if !req.is_head() {
        if let Err(e) = store::record_pull(repo.as_str(), &m.digest) {
            eprintln!("recording a pull of {} in {repo}: {e:?}", m.digest);
        }
    }
    Ok(Response::new(200)
        .header("Content-Type", m.media_type)
        .header("Docker-Content-Digest", &m.digest)
        .header("ETag", format!("\"{}\"", m.digest))
        .bytes(m.bytes))
}

pub fn put(req: &mut Request, repo: &RepoName, r: &Reference) -> Result<Response, RegistryError> {
    // `?tag=` applies extra tags to a manifest pushed by digest.
    let tags = req
        .query_all("tag")
        .into_iter()
        .map(|t| {
            t.parse::<Tag>()
                .map(|t| t.to_string())
                .map_err(|e| RegistryError::new(ErrorCode::ManifestInvalid, format!("{e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let content_type = req.header("content-type").unwrap_or_default();
    let bytes = req.read_body(MAX_MANIFEST_BYTES)?;
    let put = store::manifest_put(repo.as_str(), &r.to_string(), &content_type, &bytes, &tags)?;
    let mut resp = Response::new(201)
        .header("Location", format!("/v2/{repo}/manifests/{}", put.digest))
        .header("Docker-Content-Digest", &put.digest);
    if let Some(subject) = put.subject {
        resp = resp.header("OCI-Subject", subject);
    }
    for t in &tags {
        resp = resp.header("OCI-Tag", t.as_str());
    }
    Ok(resp)
}

pub fn delete(repo: &RepoName, r: &Reference) -> Result<Response, RegistryError> {
    store::manifest_delete(repo.as_str(), &r.to_string())?;
    Ok(Response::new(202))
}
