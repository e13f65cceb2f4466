//! Which endpoint a request is for. Names, digests and references are parsed
//! here, once; handlers receive checked types.

use skiff_core::digest::DigestError;
use skiff_core::reference::ReferenceError;
use skiff_core::{Digest, ErrorCode, Reference, RegistryError, RepoName};

pub enum Route {
    Base,
    /// The token endpoint (`token::PATH`).
    Token,
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

/// What a request does with the names in its path, which decides how an
/// invalid one is answered. A lookup (GET, HEAD, DELETE, or any request to an
/// upload session) of a name that cannot be valid finds nothing: 404 with the
/// code of what was looked for, as the conformance suite and CNCF
/// distribution answer. A write that would create something under an invalid
/// name is the client's mistake: 400 with the `*_INVALID` code. The referrers
/// API is the exception the spec makes: a malformed digest there is a 400.
#[derive(Clone, Copy)]
enum Use {
    /// Looked up; an invalid name answers 404 with this code.
    Lookup(ErrorCode),
    /// Created or written; an invalid name answers 400.
    Write,
}

impl Use {
    fn of(method: &str, missing: ErrorCode) -> Use {
        match method {
            "GET" | "HEAD" | "DELETE" => Use::Lookup(missing),
            _ => Use::Write,
        }
    }

    fn refuse(self, invalid: ErrorCode, why: impl std::fmt::Display) -> RegistryError {
        match self {
            Use::Lookup(missing) => {
                RegistryError::new(missing, format!("{why}: nothing by that name can exist"))
            }
            Use::Write => RegistryError::new(invalid, why.to_string()),
        }
    }
}

fn name(segments: &[&str], usage: Use) -> Result<RepoName, RegistryError> {
    let joined = segments.join("/");
    joined
        .parse()
        .map_err(|e| usage.refuse(ErrorCode::NameInvalid, e))
}

/// A digest in a query parameter or a referrers path: always a 400 when
/// malformed (both a bad syntax and an algorithm skiff lacks).
pub fn digest(s: &str) -> Result<Digest, RegistryError> {
    digest_for(s, Use::Write)
}

fn digest_for(s: &str, usage: Use) -> Result<Digest, RegistryError> {
    s.parse()
        .map_err(|e: DigestError| usage.refuse(ErrorCode::DigestInvalid, e))
}

fn reference(s: &str, usage: Use) -> Result<Reference, RegistryError> {
    s.parse().map_err(|e: ReferenceError| match e {
        ReferenceError::Tag(_) => usage.refuse(ErrorCode::ManifestInvalid, e),
        ReferenceError::Digest(_) => usage.refuse(ErrorCode::DigestInvalid, e),
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
    if path == crate::token::PATH {
        return match method {
            "GET" => Ok(Route::Token),
            m => Err(not_allowed(m)),
        };
    }
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
        let id = at(1).to_string();
        if id.is_empty() {
            return match method {
                "POST" => Ok(Route::StartUpload(name(&seg[..n - 3], Use::Write)?)),
                m => Err(not_allowed(m)),
            };
        }
        // A session under an invalid name cannot exist, whatever the method.
        let repo = || name(&seg[..n - 3], Use::Lookup(ErrorCode::BlobUploadUnknown));
        return match method {
            "GET" | "HEAD" => Ok(Route::UploadStatus(repo()?, id)),
            "PATCH" => Ok(Route::PatchUpload(repo()?, id)),
            "PUT" => Ok(Route::FinishUpload(repo()?, id)),
            "DELETE" => Ok(Route::CancelUpload(repo()?, id)),
            m => Err(not_allowed(m)),
        };
    }
    if n >= 2 && at(2) == "blobs" {
        if at(1) == "uploads" {
            return match method {
                "POST" => Ok(Route::StartUpload(name(&seg[..n - 2], Use::Write)?)),
                m => Err(not_allowed(m)),
            };
        }
        if !matches!(method, "GET" | "HEAD" | "DELETE") {
            return Err(not_allowed(method));
        }
        let repo = name(&seg[..n - 2], Use::Lookup(ErrorCode::NameUnknown))?;
        let digest = digest_for(at(1), Use::Lookup(ErrorCode::BlobUnknown))?;
        return Ok(match method {
            "DELETE" => Route::DeleteBlob(repo, digest),
            _ => Route::GetBlob(repo, digest),
        });
    }
    if n >= 2 && at(2) == "manifests" {
        if !matches!(method, "GET" | "HEAD" | "PUT" | "DELETE") {
            return Err(not_allowed(method));
        }
        let repo = name(&seg[..n - 2], Use::of(method, ErrorCode::NameUnknown))?;
        let r = reference(at(1), Use::of(method, ErrorCode::ManifestUnknown))?;
        return Ok(match method {
            "PUT" => Route::PutManifest(repo, r),
            "DELETE" => Route::DeleteManifest(repo, r),
            _ => Route::GetManifest(repo, r),
        });
    }
    if n >= 3 && at(2) == "tags" && at(1) == "list" {
        return match method {
            "GET" | "HEAD" => Ok(Route::Tags(name(
                &seg[..n - 2],
                Use::Lookup(ErrorCode::NameUnknown),
            )?)),
            m => Err(not_allowed(m)),
        };
    }
    if n >= 2 && at(2) == "referrers" {
        return match method {
            "GET" | "HEAD" => Ok(Route::Referrers(
                name(&seg[..n - 2], Use::Write)?,
                digest(at(1))?,
            )),
            m => Err(not_allowed(m)),
        };
    }
    Err(no_route())
}
