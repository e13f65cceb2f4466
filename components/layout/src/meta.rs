//! Repository metadata: the layout's `index.json`, the per-subject referrer
//! lists, and the catalog. Every change is a compare-and-swap on the object's
//! version, retried on conflict, so no lock is ever held.

use crate::objects::{self, Condition, ObjectError};
use crate::{keys, LayoutError};
use serde::de::DeserializeOwned;
use serde::Serialize;
use skiff_core::layout::{Descriptor, ImageIndex, OCI_LAYOUT_FILE};
use skiff_core::{Digest, RepoName};

/// Conflicts resolve in a few rounds even under heavy contention; past this
/// something is wrong, and the caller gets an error rather than a hang.
const CAS_ROUNDS: usize = 64;

/// Read a JSON object, with the version to swap against (`None`: absent).
pub fn load<T: DeserializeOwned + Default>(key: &str) -> Result<(T, Option<String>), LayoutError> {
    match objects::get(key) {
        Ok((bytes, meta)) => {
            let value = serde_json::from_slice(&bytes)
                .map_err(|e| LayoutError::Corrupt(format!("{key} is not valid: {e}")))?;
            Ok((value, Some(meta.version)))
        }
        Err(ObjectError::NotFound) => Ok((T::default(), None)),
        Err(e) => Err(e.into()),
    }
}

/// Apply `change` to the JSON object at `key` until the write lands on the
/// version it read. `change` returns whether it changed anything.
pub fn update<T, E, F>(key: &str, mut change: F) -> Result<T, E>
where
    T: DeserializeOwned + Serialize + Default,
    E: From<LayoutError>,
    F: FnMut(&mut T) -> Result<bool, E>,
{
    for _ in 0..CAS_ROUNDS {
        let (mut value, version) = load::<T>(key)?;
        if !change(&mut value)? {
            return Ok(value);
        }
        let bytes =
            serde_json::to_vec(&value).map_err(|e| LayoutError::Corrupt(format!("{key}: {e}")))?;
        let when = match version {
            Some(v) => Condition::IfVersion(v),
            None => Condition::IfAbsent,
        };
        match objects::put(key, &bytes, &when) {
            Ok(_) => return Ok(value),
            Err(ObjectError::PreconditionFailed) => continue,
            Err(e) => return Err(LayoutError::from(e).into()),
        }
    }
    Err(LayoutError::Contended(format!("{key}: too many concurrent updates")).into())
}

/// Make `repo` a valid (possibly empty) OCI layout.
pub fn ensure_layout(repo: &str) -> Result<(), LayoutError> {
    let empty_index = serde_json::to_vec(&ImageIndex::default())
        .map_err(|e| LayoutError::Corrupt(e.to_string()))?;
    for (key, bytes) in [
        (keys::oci_layout(repo), OCI_LAYOUT_FILE.to_vec()),
        (keys::index(repo), empty_index),
    ] {
        match objects::put(&key, &bytes, &Condition::IfAbsent) {
            Ok(_) | Err(ObjectError::PreconditionFailed) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The repository's index with its version, or `None` if there is no such repository.
pub fn index(repo: &str) -> Result<Option<(ImageIndex, String)>, LayoutError> {
    let (idx, version) = load::<ImageIndex>(&keys::index(repo))?;
    Ok(version.map(|v| (idx, v)))
}

/// Change the repository's index (creating the layout first).
pub fn update_index<E, F>(repo: &str, change: F) -> Result<ImageIndex, E>
where
    E: From<LayoutError>,
    F: FnMut(&mut ImageIndex) -> Result<bool, E>,
{
    ensure_layout(repo)?;
    update(&keys::index(repo), change)
}

/// Every directory that holds an `index.json` and whose path is a valid
/// repository name. The walk does not enter `blobs/` or hidden directories,
/// so its cost follows the number of repositories, not of blobs.
pub fn repositories() -> Result<Vec<String>, LayoutError> {
    let mut found = Vec::new();
    let mut pending = vec![String::new()];
    while let Some(prefix) = pending.pop() {
        let children = match objects::list_children(&prefix) {
            Ok(c) => c,
            Err(ObjectError::NotFound) => continue,
            Err(e) => return Err(e.into()),
        };
        let repo = prefix.trim_end_matches('/');
        if !repo.is_empty()
            && children
                .iter()
                .any(|c| !c.is_prefix && c.name == "index.json")
            && repo.parse::<RepoName>().is_ok()
        {
            found.push(repo.to_string());
        }
        for c in children {
            if c.is_prefix && !c.name.starts_with('.') && c.name != "blobs" {
                pending.push(format!("{prefix}{}/", c.name));
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Manifests recorded as referring to `subject`.
pub fn referrers(repo: &str, subject: &Digest) -> Result<Vec<Descriptor>, LayoutError> {
    Ok(load::<Vec<Descriptor>>(&keys::referrers(repo, subject))?.0)
}

/// List manifest `digest` (of `size` bytes) under its subject, if it has one,
/// as the referrers API reports it: with its artifact type and annotations.
pub fn record_referrer(
    repo: &str,
    digest: &Digest,
    size: u64,
    m: &skiff_core::manifest::Manifest,
) -> Result<(), LayoutError> {
    let Some(subject) = &m.subject else {
        return Ok(());
    };
    let mut desc = Descriptor::new(&m.media_type, &digest.to_string(), size);
    desc.artifact_type = m.artifact_type.clone();
    desc.annotations = m.annotations.clone();
    add_referrer(repo, subject, desc)
}

pub fn add_referrer(repo: &str, subject: &Digest, desc: Descriptor) -> Result<(), LayoutError> {
    update(
        &keys::referrers(repo, subject),
        |list: &mut Vec<Descriptor>| {
            if list.iter().any(|d| d.digest == desc.digest) {
                return Ok::<bool, LayoutError>(false);
            }
            list.push(desc.clone());
            Ok(true)
        },
    )
    .map(|_| ())
}

pub fn remove_referrer(repo: &str, subject: &Digest, digest: &str) -> Result<(), LayoutError> {
    update(
        &keys::referrers(repo, subject),
        |list: &mut Vec<Descriptor>| {
            let before = list.len();
            list.retain(|d| d.digest != digest);
            Ok::<bool, LayoutError>(list.len() != before)
        },
    )
    .map(|_| ())
}
