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
    /// Layers the manifests say live elsewhere (`urls`): the repository
    /// may lack them.
    pub external: BTreeSet<Digest>,
}

/// A manifest to walk from, with the media type it was recorded with (in
/// `index.json`, in its parent index, or in its referrer entry).
pub type Root = (Digest, Option<String>);

/// The roots `index.json` lists, each with its recorded media type.
pub fn roots_of(descriptors: &[skiff_core::layout::Descriptor]) -> Vec<Root> {
    descriptors
        .iter()
        .filter_map(|d| Some((d.digest.parse().ok()?, Some(d.media_type.clone()))))
        .collect()
}

/// A stored manifest parsed as what it was pushed as: the media type
/// recorded for it decides its kind, exactly as at push (a body without
/// `mediaType` is otherwise ambiguous). `None` if it is missing or is no
/// manifest.
pub fn parse_stored(
    repo: &str,
    d: &Digest,
    media_type: Option<&str>,
) -> Result<Option<(manifest::Manifest, u64)>, LayoutError> {
    let Some(bytes) = read_manifest(repo, d)? else {
        return Ok(None);
    };
    Ok(manifest::parse(&bytes, media_type)
        .ok()
        .map(|m| (m, bytes.len() as u64)))
}

/// Referrers known beyond the stored entries, by subject (what gc found
/// in `index.json` of a layout written by another tool).
pub type Extra = std::collections::BTreeMap<Digest, Vec<Root>>;

/// Follow `roots` through indexes to their manifests and through image
/// manifests to their config and layers. With `with_referrers`, a reached
/// manifest's referrers are reached too (and theirs, and so on).
pub fn reach(
    repo: &str,
    roots: impl IntoIterator<Item = Root>,
    with_referrers: bool,
) -> Result<Reached, LayoutError> {
    reach_with(repo, roots, with_referrers, &Extra::new())
}

/// `reach`, counting `extra` among each subject's referrers.
pub fn reach_with(
    repo: &str,
    roots: impl IntoIterator<Item = Root>,
    with_referrers: bool,
    extra: &Extra,
) -> Result<Reached, LayoutError> {
    let mut r = Reached::default();
    let mut pending: Vec<Root> = roots.into_iter().collect();
    while let Some((d, media_type)) = pending.pop() {
        if !r.manifests.insert(d.clone()) {
            continue;
        }
        r.blobs.insert(d.clone());
        if let Some((m, _)) = parse_stored(repo, &d, media_type.as_deref())? {
            for b in m.blobs {
                if b.external {
                    r.external.insert(b.digest.clone());
                }
                r.blobs.insert(b.digest);
            }
            pending.extend(m.children.into_iter().map(|c| (c.digest, c.media_type)));
        }
        if with_referrers {
            for referrer in meta::referrers(repo, &d)? {
                if let Ok(rd) = referrer.digest.parse::<Digest>() {
                    pending.push((rd, Some(referrer.media_type)));
                }
            }
            pending.extend(extra.get(&d).cloned().unwrap_or_default());
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
    Ok(crate::children(prefix)?
        .into_iter()
        .filter(|c| !c.is_prefix)
        .filter_map(|c| format!("{algorithm}:{}", c.name).parse().ok())
        .collect())
}
