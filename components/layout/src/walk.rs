//! What a repository's manifests reach: the mark phase of gc and the
//! work list of scrub.

use crate::objects::{self, ObjectError};
use crate::{keys, meta, LayoutError};
use skiff_core::manifest::{self, MAX_MANIFEST_BYTES};
use skiff_core::Digest;
use std::collections::BTreeSet;

/// Everything reachable from some root manifests.
#[derive(Default, Debug)]
pub struct Reached {
    /// Manifests (their blobs included).
    pub manifests: BTreeSet<Digest>,
    /// Every blob: configs, layers and the manifests themselves.
    pub blobs: BTreeSet<Digest>,
}

/// Follow `roots` through indexes to their manifests and through image
/// manifests to their config and layers. With `with_referrers`, a reached
/// manifest's referrers are reached too (and theirs, and so on).
pub fn reach(
    repo: &str,
    roots: impl IntoIterator<Item = Digest>,
    with_referrers: bool,
) -> Result<Reached, LayoutError> {
    let mut r = Reached::default();
    let mut pending: Vec<Digest> = roots.into_iter().collect();
    while let Some(d) = pending.pop() {
        if !r.manifests.insert(d.clone()) {
            continue;
        }
        r.blobs.insert(d.clone());
        if let Some(bytes) = read_manifest(repo, &d)? {
            if let Ok(m) = manifest::parse(&bytes, None) {
                r.blobs.extend(m.blobs);
                pending.extend(m.children);
            }
        }
        if with_referrers {
            for referrer in meta::referrers(repo, &d)? {
                if let Ok(rd) = referrer.digest.parse::<Digest>() {
                    pending.push(rd);
                }
            }
        }
    }
    Ok(r)
}

/// A manifest's bytes, or `None` if the blob is missing or too large to be
/// one. The bound is the host's to enforce (`get` refuses larger objects
/// before reading them), so a blob of any size costs nothing here.
pub fn read_manifest(repo: &str, d: &Digest) -> Result<Option<Vec<u8>>, LayoutError> {
    match objects::get(&keys::blob(repo, d), MAX_MANIFEST_BYTES as u64) {
        Ok((bytes, _)) => Ok(Some(bytes)),
        Err(ObjectError::NotFound) | Err(ObjectError::TooLarge(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The digests of one kind of object listed under `prefix` (blobs or
/// referrer lists of one algorithm), with names that are not digests skipped.
pub fn list_digests(prefix: &str, algorithm: &str) -> Result<Vec<Digest>, LayoutError> {
    let children = match objects::list_children(prefix) {
        Ok(c) => c,
        Err(ObjectError::NotFound) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    Ok(children
        .into_iter()
        .filter(|c| !c.is_prefix)
        .filter_map(|c| format!("{algorithm}:{}", c.name).parse().ok())
        .collect())
}
