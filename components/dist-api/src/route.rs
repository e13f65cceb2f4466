//! Which endpoint a request is for. Names, digests and references are parsed
//! here, once; handlers receive checked types.

use skiff_core::digest::DigestError;
use skiff_core::reference::ReferenceError;
use skiff_core::{Digest, ErrorCode, Reference, RegistryError, RepoName};

pub enum Route {
    Base,
    Catalog,
    Tags(RepoName),
    Referrers(RepoName, Digest),
    GetManifest(RepoName, Reference),
    PutManifest(RepoName, Reference),
    DeleteManifest(RepoName, Reference),
    GetBlob(RepoName, Digest),
    DeleteBlob(RepoName, Digest),
    StartUpload(RepoName),
    UploadStatus(RepoName, String),
    PatchUpload(RepoName, String),
    FinishUpload(RepoName, String),
    CancelUpload(RepoName, String),
}

fn not_allowed(method: &str) -> RegistryError {
    RegistryError::new(
        ErrorCode::MethodNotAllowed,
        format!("{method} is not allowed here"),
    )
}

fn name(segments: &[&str]) -> Result<RepoName, RegistryError> {
    let joined = segments.join("/");
    joined
        .parse()
        .map_err(|e| RegistryError::new(ErrorCode::NameInvalid, format!("{e}")))
}

pub fn digest(s: &str) -> Result<Digest, RegistryError> {
    // Both a malformed digest and an algorithm skiff lacks are DIGEST_INVALID.
    s.parse()
        .map_err(|e: DigestError| RegistryError::new(ErrorCode::DigestInvalid, e.to_string()))
}

fn reference(s: &str) -> Result<Reference, RegistryError> {
    s.parse().map_err(|e: ReferenceError| match e {
        ReferenceError::Tag(_) => RegistryError::new(ErrorCode::ManifestInvalid, format!("{e}")),
        ReferenceError::Digest(_) => RegistryError::new(ErrorCode::DigestInvalid, format!("{e}")),
    })
}

/// The methods `path` has a route for, as a 405's `Allow` lists them.
pub fn allowed(path: &str) -> String {
    ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
        .into_iter()
        .filter(|m| !matches!(parse(m, path), Err(e) if e.code == ErrorCode::MethodNotAllowed))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Map method and path to a route. The path is matched from its end: a
/// repository name may itself contain `manifests`, `tags` or `referrers`
/// components, but never `blobs` (reserved by the layout), so the endpoint
/// is always the last two or three segments.
pub fn parse(method: &str, path: &str) -> Result<Route, RegistryError> {
    let no_route = || RegistryError::new(ErrorCode::NotFound, format!("no route for {path}"));
    let rest = match path.strip_prefix("/v2") {
        Some("") | Some("/") => {
            return match method {
                "GET" | "HEAD" => Ok(Route::Base),
                m => Err(not_allowed(m)),
            }
        }
        Some(r) => r.strip_prefix('/').ok_or_else(no_route)?,
        None => return Err(no_route()),
    };
    if rest == "_catalog" {
        return match method {
            "GET" | "HEAD" => Ok(Route::Catalog),
            m => Err(not_allowed(m)),
        };
    }
    let seg: Vec<&str> = rest.split('/').collect();
    let n = seg.len();
    let at = |i: usize| -> &str {
        if i >= 1 && i <= n {
            seg[n - i]
        } else {
            ""
        }
    };
    // .../blobs/uploads/<id> or .../blobs/uploads/ (empty id) or .../blobs/uploads
    if n >= 3 && at(3) == "blobs" && at(2) == "uploads" {
        let repo = name(&seg[..n - 3])?;
        let id = at(1).to_string();
        if id.is_empty() {
            return match method {
                "POST" => Ok(Route::StartUpload(repo)),
                m => Err(not_allowed(m)),
            };
        }
        return match method {
            "GET" | "HEAD" => Ok(Route::UploadStatus(repo, id)),
            "PATCH" => Ok(Route::PatchUpload(repo, id)),
            "PUT" => Ok(Route::FinishUpload(repo, id)),
            "DELETE" => Ok(Route::CancelUpload(repo, id)),
            m => Err(not_allowed(m)),
        };
    }
    if n >= 2 && at(2) == "blobs" {
        let repo = name(&seg[..n - 2])?;
        if at(1) == "uploads" {
            return match method {
                "POST" => Ok(Route::StartUpload(repo)),
                m => Err(not_allowed(m)),
            };
        }
        return match method {
            "GET" | "HEAD" => Ok(Route::GetBlob(repo, digest(at(1))?)),
            "DELETE" => Ok(Route::DeleteBlob(repo, digest(at(1))?)),
            m => Err(not_allowed(m)),
        };
    }
    if n >= 2 && at(2) == "manifests" {
        let repo = name(&seg[..n - 2])?;
        let r = reference(at(1))?;
        return match method {
            "GET" | "HEAD" => Ok(Route::GetManifest(repo, r)),
            "PUT" => Ok(Route::PutManifest(repo, r)),
            "DELETE" => Ok(Route::DeleteManifest(repo, r)),
            m => Err(not_allowed(m)),
        };
    }
    if n >= 3 && at(2) == "tags" && at(1) == "list" {
        let repo = name(&seg[..n - 2])?;
        return match method {
            "GET" | "HEAD" => Ok(Route::Tags(repo)),
            m => Err(not_allowed(m)),
        };
    }
    if n >= 2 && at(2) == "referrers" {
        let repo = name(&seg[..n - 2])?;
        return match method {
            "GET" | "HEAD" => Ok(Route::Referrers(repo, digest(at(1))?)),
            m => Err(not_allowed(m)),
        };
    }
    Err(no_route())
}
