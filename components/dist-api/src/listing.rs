//! Content discovery: tag lists, the catalog, referrers.

use crate::bindings::skiff::registry::{access, store};
use crate::guard::{unauthorized, Guard};
use crate::request::Request;
use crate::response::Response;
use serde_json::{json, Map, Value};
use skiff_core::manifest::OCI_INDEX;
use skiff_core::{Digest, ErrorCode, RegistryError, RepoName};

/// The token scope that lists the catalog.
const CATALOG_SCOPE: &str = "registry:catalog:*";

/// One page of a sorted list: entries after `last`, at most `n`, and the
/// `Link` header to the next page when there is one.
fn page(
    req: &Request,
    all: Vec<String>,
    path: &str,
) -> Result<(Vec<String>, Option<String>), RegistryError> {
    let n = match req.query("n") {
        None => None,
        Some(v) => Some(v.parse::<usize>().map_err(|_| {
            RegistryError::new(
                ErrorCode::PaginationInvalid,
                format!("n={v:?} is not a count"),
            )
        })?),
    };
    let last = req.query("last");
    let mut rest: Vec<String> = match last {
        Some(l) => all.into_iter().filter(|x| x.as_str() > l).collect(),
        None => all,
    };
    let mut link = None;
    if let Some(n) = n {
        if rest.len() > n {
            rest.truncate(n);
            if let Some(end) = rest.last() {
                let q: String = form_urlencoded::Serializer::new(String::new())
                    .append_pair("n", &n.to_string())
                    .append_pair("last", end)
                    .finish();
                link = Some(format!("<{path}?{q}>; rel=\"next\""));
            }
        }
    }
    Ok((rest, link))
}

fn paged_json(body: Value, link: Option<String>) -> Response {
    let r = Response::json(200, body.to_string().into_bytes());
    match link {
        Some(l) => r.header("Link", l),
        None => r,
    }
}

pub fn tags(req: &Request, repo: &RepoName) -> Result<Response, RegistryError> {
    let all = store::tags(repo.as_str())?;
    let (tags, link) = page(req, all, &format!("/v2/{repo}/tags/list"))?;
    Ok(paged_json(
        json!({ "name": repo.as_str(), "tags": tags }),
        link,
    ))
}

/// Only what the caller may read is listed, and pages are cut after that,
/// so a page never comes back short for repositories the caller cannot see.
pub fn catalog(req: &Request, guard: &Guard) -> Result<Response, RegistryError> {
    let all = store::repositories()?;
    let any = !all.is_empty();
    let shown = guard.caller.visible(&all);
    // Ask for credentials when they could show more: nothing is visible
    // to an anonymous caller or a token without the catalog scope; and
    // with tokens in use, a request without one gets the challenge first,
    // so a signed-in client fetches its token and sees its own view rather
    // than the anonymous one (CNCF distribution does the same).
    if let Some(c) = access::challenge(Some(CATALOG_SCOPE), None) {
        let tokens_in_use = c.starts_with("Bearer ");
        let blind = shown.is_empty() && any && (guard.anonymous() || guard.came_with_token());
        if blind || (tokens_in_use && guard.anonymous() && !guard.came_with_token()) {
            return Ok(unauthorized("listing the catalog".into(), Some(c), None).0);
        }
    }
    let (repos, link) = page(req, shown, "/v2/_catalog")?;
    Ok(paged_json(json!({ "repositories": repos }), link))
}

pub fn referrers(
    req: &Request,
    repo: &RepoName,
    subject: &Digest,
) -> Result<Response, RegistryError> {
    let filter = req.query("artifactType");
    let list = store::referrers(repo.as_str(), &subject.to_string())?;
    let manifests: Vec<Value> = list
        .into_iter()
        .filter(|d| filter.is_none() || d.artifact_type.as_deref() == filter)
        .map(|d| {
            let mut o = Map::new();
            o.insert("mediaType".into(), d.media_type.into());
            o.insert("digest".into(), d.digest.into());
            o.insert("size".into(), d.size.into());
            if let Some(t) = d.artifact_type {
                o.insert("artifactType".into(), t.into());
            }
            if !d.annotations.is_empty() {
                let a: Map<String, Value> = d
                    .annotations
                    .into_iter()
                    .map(|(k, v)| (k, Value::String(v)))
                    .collect();
                o.insert("annotations".into(), a.into());
            }
            Value::Object(o)
        })
        .collect();
    let body = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests });
    let mut r = Response::new(200)
        .header("Content-Type", OCI_INDEX)
        .bytes(body.to_string().into_bytes());
    if filter.is_some() {
        r = r.header("OCI-Filters-Applied", "artifactType");
    }
    Ok(r)
}
