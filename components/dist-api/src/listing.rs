//! Content discovery: tag lists, the catalog, referrers.

use crate::bindings::skiff::registry::{access, store};
use crate::guard::{unauthorized, Guard};
use crate::request::Request;
use crate::response::{Body, Response};
use serde_json::{json, Map, Value};
use skiff_core::manifest::OCI_INDEX;
use skiff_core::{Digest, ErrorCode, RegistryError, RepoName};
use std::rc::Rc;

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

/// A sorted list as the request's `n` and `last` ask, as the JSON object
/// that `head` opens (up to the list's `[`). With `n`, one page and the
/// `Link` header to the next when there is one. Without, every entry,
/// streamed a store page at a time, so even a catalog of 100k
/// repositories is never whole in memory (a list within one store page
/// goes whole, with its length); the first page is read before the
/// response starts, so a missing repository is still a clean 404.
fn listed<F, K>(
    req: &Request,
    path: &str,
    head: String,
    mut fetch: F,
    mut keep: K,
) -> Result<Response, RegistryError>
where
    F: FnMut(Option<&str>, u32) -> Result<(Vec<String>, bool), RegistryError> + 'static,
    K: FnMut(Vec<String>) -> Vec<String> + 'static,
{
    let last = req.query("last");
    let Some(n) = req.query("n") else {
        let (batch, more) = fetch(last, STORE_PAGE)?;
        if more {
            return Ok(streamed(head, batch, fetch, keep));
        }
        // All of it in one store page (the usual case): sent whole.
        return Ok(whole(head, &keep(batch)));
    };
    let n = n.parse::<usize>().map_err(|_| {
        RegistryError::new(
            ErrorCode::PaginationInvalid,
            format!("n={n:?} is not a count"),
        )
    })?;
    let (entries, more) = gather(last, Some(n), &mut fetch, &mut keep)?;
    let r = whole(head, &entries);
    Ok(match (more, entries.last()) {
        (true, Some(end)) => {
            let q: String = form_urlencoded::Serializer::new(String::new())
                .append_pair("n", &n.to_string())
                .append_pair("last", end)
                .finish();
            r.header("Link", format!("<{path}?{q}>; rel=\"next\""))
        }
        _ => r,
    })
}

/// The listing `head` opens, with `entries`, as one body with its length.
fn whole(head: String, entries: &[String]) -> Response {
    let mut body = head.into_bytes();
    push_entries(&mut body, entries, true);
    body.extend_from_slice(b"]}");
    Response::json(200, body)
}

/// `entries` as JSON strings, comma-separated (and after a comma unless
/// they are the `first` of the list).
fn push_entries(out: &mut Vec<u8>, entries: &[String], first: bool) {
    for (i, e) in entries.iter().enumerate() {
        if i > 0 || !first {
            out.push(b',');
        }
        // Serialising a string cannot fail.
        out.extend(serde_json::to_vec(e).unwrap_or_default());
    }
}

/// The body of `listed` without `n`: `head`, the entries of `batch` (a
/// first store page that more follow) and of every later store page that
/// `keep` keeps, and the list's end.
fn streamed<F, K>(head: String, batch: Vec<String>, mut fetch: F, mut keep: K) -> Response
where
    F: FnMut(Option<&str>, u32) -> Result<(Vec<String>, bool), RegistryError> + 'static,
    K: FnMut(Vec<String>) -> Vec<String> + 'static,
{
    let mut cursor = batch.last().cloned();
    let mut first_piece = Some((head, batch));
    let mut more = true;
    let mut any = false;
    let mut ended = false;
    let next = move || -> Result<Option<Vec<u8>>, RegistryError> {
        let mut out = Vec::new();
        let batch = if let Some((head, batch)) = first_piece.take() {
            out.extend(head.into_bytes());
            batch
        } else if more {
            let (batch, m) = fetch(cursor.as_deref(), STORE_PAGE)?;
            cursor = batch.last().cloned().or(cursor.take());
            more = m;
            batch
        } else if !ended {
            ended = true;
            return Ok(Some(b"]}".to_vec()));
        } else {
            return Ok(None);
        };
        let kept = keep(batch);
        push_entries(&mut out, &kept, !any);
        any |= !kept.is_empty();
        Ok(Some(out))
    };
    let mut r = Response::new(200).header("Content-Type", "application/json");
    r.body = Body::Pieces(Box::new(next));
    r
}

pub fn tags(req: &Request, repo: RepoName) -> Result<Response, RegistryError> {
    let path = format!("/v2/{repo}/tags/list");
    let head = format!(
        "{{\"name\":{},\"tags\":[",
        serde_json::to_string(repo.as_str()).unwrap_or_default()
    );
    let fetch = move |last: Option<&str>, n: u32| -> Result<_, RegistryError> {
        Ok(store::tags_page(repo.as_str(), last, n)?)
    };
    listed(req, &path, head, fetch, |all| all)
}

/// Only what the caller may read is listed, and pages are cut after that,
/// so a page never comes back short for repositories the caller cannot see.
pub fn catalog(req: &Request, guard: &Rc<Guard>) -> Result<Response, RegistryError> {
    let mut fetch = |last: Option<&str>, n: u32| -> Result<_, RegistryError> {
        Ok(store::repositories_page(last, n)?)
    };
    let caller = guard.clone();
    let mut visible = move |batch: Vec<String>| caller.caller.visible(&batch);
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
    let head = "{\"repositories\":[".to_string();
    listed(req, "/v2/_catalog", head, fetch, visible)
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
