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

/// Entries asked of the store at once while a page is gathered.
const STORE_PAGE: u32 = 1000;

/// A reader of one sorted list, a page at a time: up to `n` entries after
/// `last`, and whether more follow.
type Fetch<'a> = dyn FnMut(Option<&str>, u32) -> Result<(Vec<String>, bool), RegistryError> + 'a;

/// Up to `n` (all when `None`) entries after `last` that `keep` keeps, read
/// from `fetch` page by page, and whether more kept ones follow. The store
/// is read only as far as the page needs.
fn gather(
    last: Option<&str>,
    n: Option<usize>,
    fetch: &mut Fetch<'_>,
    keep: &mut dyn FnMut(Vec<String>) -> Vec<String>,
) -> Result<(Vec<String>, bool), RegistryError> {
    let mut out: Vec<String> = Vec::new();
    let mut cursor = last.map(str::to_string);
    loop {
        // One past the page, to learn whether another follows.
        let wanted = n.map_or(usize::MAX, |n| n.saturating_add(1) - out.len().min(n));
        let size = u32::try_from(wanted).unwrap_or(u32::MAX).min(STORE_PAGE);
        let (batch, more) = fetch(cursor.as_deref(), size)?;
        if let Some(end) = batch.last() {
            cursor = Some(end.clone());
        }
        out.extend(keep(batch));
        if let Some(n) = n {
            if out.len() > n {
                out.truncate(n);
                return Ok((out, true));
            }
        }
        if !more {
            return Ok((out, false));
        }
    }
}

/// One page of a sorted list as the request's `n` and `last` ask, and the
/// `Link` header to the next page when there is one.
fn page(
    req: &Request,
    path: &str,
    fetch: &mut Fetch<'_>,
    keep: &mut dyn FnMut(Vec<String>) -> Vec<String>,
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
    let (entries, more) = gather(req.query("last"), n, fetch, keep)?;
    let link = match (n, more, entries.last()) {
        (Some(n), true, Some(end)) => {
            let q: String = form_urlencoded::Serializer::new(String::new())
                .append_pair("n", &n.to_string())
                .append_pair("last", end)
                .finish();
            Some(format!("<{path}?{q}>; rel=\"next\""))
        }
        _ => None,
    };
    Ok((entries, link))
}

fn paged_json(body: Value, link: Option<String>) -> Response {
    let r = Response::json(200, body.to_string().into_bytes());
    match link {
        Some(l) => r.header("Link", l),
        None => r,
    }
}

pub fn tags(req: &Request, repo: &RepoName) -> Result<Response, RegistryError> {
    let mut fetch = |last: Option<&str>, n: u32| -> Result<_, RegistryError> {
        Ok(store::tags_page(repo.as_str(), last, n)?)
    };
    let (tags, link) = page(
        req,
        &format!("/v2/{repo}/tags/list"),
        &mut fetch,
        &mut |all| all,
    )?;
    Ok(paged_json(
        json!({ "name": repo.as_str(), "tags": tags }),
        link,
    ))
}

/// Only what the caller may read is listed, and pages are cut after that,
/// so a page never comes back short for repositories the caller cannot see.
pub fn catalog(req: &Request, guard: &Guard) -> Result<Response, RegistryError> {
    let mut fetch = |last: Option<&str>, n: u32| -> Result<_, RegistryError> {
        Ok(store::repositories_page(last, n)?)
    };
    let mut visible = |batch: Vec<String>| guard.caller.visible(&batch);
    // Ask for credentials when they could show more: nothing is visible
    // to an anonymous caller or a token without the catalog scope; and
    // with tokens in use, a request without one gets the challenge first,
    // so a signed-in client fetches its token and sees its own view rather
    // than the anonymous one (CNCF distribution does the same).
    if let Some(c) = access::challenge(Some(CATALOG_SCOPE), None) {
        let tokens_in_use = c.starts_with("Bearer ");
        let may_see_more = guard.anonymous() || guard.came_with_token();
        let blind = may_see_more && {
            let any = !fetch(None, 1)?.0.is_empty();
            any && !gather(None, Some(0), &mut fetch, &mut visible)?.1
        };
        if blind || (tokens_in_use && guard.anonymous() && !guard.came_with_token()) {
            return Ok(unauthorized("listing the catalog".into(), Some(c), None).0);
        }
    }
    let (repos, link) = page(req, "/v2/_catalog", &mut fetch, &mut visible)?;
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
