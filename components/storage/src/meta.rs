//! Repository metadata: the layout's `index.json` (manifests and tags), the
//! per-subject referrer lists, and the catalog. Every change is a
//! compare-and-swap on the object's version, retried on conflict.

use crate::bindings::exports::skiff::registry::store::Descriptor as WitDescriptor;
use crate::bindings::skiff::registry::objects::{self, Condition, ObjectError};
use crate::{keys, Error};
use serde::de::DeserializeOwned;
use serde::Serialize;
use skiff_core::layout::{Descriptor, ImageIndex, OCI_LAYOUT_FILE};
use skiff_core::{Digest, RepoName, Tag};

/// Conflicts resolve in a few rounds even under heavy contention; past this
/// something is wrong and the client gets a 500 rather than a hang.
const CAS_ROUNDS: usize = 64;

/// Read a JSON object, with the version to swap against (`None`: absent).
fn load<T: DeserializeOwned + Default>(key: &str) -> Result<(T, Option<String>), Error> {
    match objects::get(key) {
        Ok((bytes, meta)) => {
            let value = serde_json::from_slice(&bytes)
                .map_err(|e| Error::Internal(format!("{key} is not valid: {e}")))?;
            Ok((value, Some(meta.version)))
        }
        Err(ObjectError::NotFound) => Ok((T::default(), None)),
        Err(e) => Err(e.into()),
    }
}

/// Apply `change` to the JSON object at `key` until the write lands on the
/// version it read. `change` returns whether it changed anything.
fn update<T, F>(key: &str, mut change: F) -> Result<T, Error>
where
    T: DeserializeOwned + Serialize + Default,
    F: FnMut(&mut T) -> Result<bool, Error>,
{
    for _ in 0..CAS_ROUNDS {
        let (mut value, version) = load::<T>(key)?;
        if !change(&mut value)? {
            return Ok(value);
        }
        let bytes = serde_json::to_vec(&value).map_err(|e| Error::Internal(e.to_string()))?;
        let when = match version {
            Some(v) => Condition::IfVersion(v),
            None => Condition::IfAbsent,
        };
        match objects::put(key, &bytes, &when) {
            Ok(_) => return Ok(value),
            Err(ObjectError::PreconditionFailed) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Internal(format!(
        "{key}: too many concurrent updates"
    )))
}

/// Make `repo` a valid (possibly empty) OCI layout.
pub fn ensure_layout(repo: &str) -> Result<(), Error> {
    for (key, bytes) in [
        (keys::oci_layout(repo), OCI_LAYOUT_FILE.to_vec()),
        (
            keys::index(repo),
            serde_json::to_vec(&ImageIndex::default())
                .map_err(|e| Error::Internal(e.to_string()))?,
        ),
    ] {
        match objects::put(&key, &bytes, &Condition::IfAbsent) {
            Ok(_) | Err(ObjectError::PreconditionFailed) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The repository's index, or `None` if there is no such repository.
pub fn index(repo: &str) -> Result<Option<ImageIndex>, Error> {
    let (idx, version) = load::<ImageIndex>(&keys::index(repo))?;
    Ok(version.map(|_| idx))
}

pub fn update_index<F>(repo: &str, change: F) -> Result<ImageIndex, Error>
where
    F: FnMut(&mut ImageIndex) -> Result<bool, Error>,
{
    ensure_layout(repo)?;
    update(&keys::index(repo), change)
}

pub fn tags(repo: &str) -> Result<Vec<String>, Error> {
    let idx = index(repo)?.ok_or(Error::NameUnknown)?;
    // Layouts made elsewhere may carry ref.names that are not tags (full
    // references, say); those are not listed.
    let mut tags: Vec<String> = idx
        .tags()
        .filter(|t| t.parse::<Tag>().is_ok())
        .map(str::to_string)
        .collect();
    tags.sort();
    tags.dedup();
    Ok(tags)
}

/// Every directory that holds an `index.json` and whose path is a valid
/// repository name. The walk does not enter `blobs/` or hidden directories,
/// so its cost follows the number of repositories, not of blobs.
pub fn repositories() -> Result<Vec<String>, Error> {
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

fn to_wit(d: Descriptor) -> WitDescriptor {
    WitDescriptor {
        media_type: d.media_type,
        digest: d.digest,
        size: d.size,
        artifact_type: d.artifact_type,
        annotations: d.annotations.into_iter().collect(),
    }
}

pub fn referrers(repo: &str, subject: &str) -> Result<Vec<WitDescriptor>, Error> {
    let subject = keys::digest(subject)?;
    let (list, _) = load::<Vec<Descriptor>>(&keys::referrers(repo, &subject))?;
    Ok(list.into_iter().map(to_wit).collect())
}

pub fn add_referrer(repo: &str, subject: &Digest, desc: Descriptor) -> Result<(), Error> {
    update(
        &keys::referrers(repo, subject),
        |list: &mut Vec<Descriptor>| {
            if list.iter().any(|d| d.digest == desc.digest) {
                return Ok(false);
            }
            list.push(desc.clone());
            Ok(true)
        },
    )
    .map(|_| ())
}

pub fn remove_referrer(repo: &str, subject: &Digest, digest: &str) -> Result<(), Error> {
    update(
        &keys::referrers(repo, subject),
        |list: &mut Vec<Descriptor>| {
            let before = list.len();
            list.retain(|d| d.digest != digest);
            Ok(list.len() != before)
        },
    )
    .map(|_| ())
}
