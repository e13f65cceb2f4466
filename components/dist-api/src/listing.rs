//! Content discovery: tag lists, the catalog, referrers.

use crate::bindings::skiff::registry::store;
use crate::request::Request;
use crate::response::Response;
use serde_json::{json, Map, Value};
use skiff_core::manifest::OCI_INDEX;
use skiff_core::{Digest, ErrorCode, RegistryError, RepoName};

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

pub fn catalog(req: &Request) -> Result<Response, RegistryError> {
    let all = store::repositories()?;
    let (repos, link) = page(req, all, "/v2/_catalog")?;
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
