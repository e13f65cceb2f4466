//! Blobs: content-addressed, written once, readable by streaming to a
//! caller's output stream.

use crate::{keys, meta, Error};
use skiff_layout::objects::{self, Condition, ObjectError};
use wasip2::io::streams::OutputStream;

pub fn size(repo: &str, digest: &str) -> Result<u64, Error> {
    let d = keys::digest(digest)?;
    match objects::stat(&keys::blob(repo, &d)) {
        Ok(m) => Ok(m.size),
        Err(ObjectError::NotFound) => Err(Error::BlobUnknown),
        Err(e) => Err(e.into()),
    }
}

pub fn read(
    repo: &str,
    digest: &str,
    start: u64,
    len: u64,
    dst: &OutputStream,
) -> Result<(), Error> {
    let d = keys::digest(digest)?;
    match objects::read_to(&keys::blob(repo, &d), start, len, dst) {
        Ok(()) => Ok(()),
        Err(ObjectError::NotFound) => Err(Error::BlobUnknown),
        Err(e) => Err(e.into()),
    }
}

/// A URL serving the blob's bytes directly, if the store has one.
pub fn locate(repo: &str, digest: &str) -> Option<String> {
    let d = keys::digest(digest).ok()?;
    objects::locate(&keys::blob(repo, &d))
}

/// Delete a blob. A manifest that `index.json` lists is refused: deleting
/// its bytes from under a tag would leave the tag answering 404; it goes
/// through the manifests endpoint, which untags it too.
pub fn delete(repo: &str, digest: &str) -> Result<(), Error> {
    let d = keys::digest(digest)?;
    if let Some(idx) = meta::index(repo)? {
        let listed: Vec<&str> = idx
            .index
            .manifests
            .iter()
            .filter(|m| m.digest == d.to_string())
            .map(|m| m.tag().unwrap_or("(untagged)"))
            .collect();
        if !listed.is_empty() {
            return Err(Error::InUse(format!(
                "{d} is a manifest of {repo} (tags: {}); delete it with DELETE /v2/{repo}/manifests/{d}",
                listed.join(", ")
            )));
        }
    }
    match objects::delete(&keys::blob(repo, &d), &Condition::Always) {
        Ok(()) => Ok(()),
        Err(ObjectError::NotFound) => Err(Error::BlobUnknown),
        Err(e) => Err(e.into()),
    }
}

pub fn mount(repo: &str, digest: &str, from: &str) -> Result<u64, Error> {
    let d = keys::digest(digest)?;
    let src = keys::blob(from, &d);
    let size = match objects::stat(&src) {
        Ok(m) => m.size,
        Err(ObjectError::NotFound) => return Err(Error::BlobUnknown),
        Err(e) => return Err(e.into()),
    };
    if repo == from {
        // In use from now on (it may be old and unreferenced).
        return match touch(repo, &d)? {
            Some(_) => Ok(size),
            None => Err(Error::BlobUnknown),
        };
    }
    meta::ensure_layout(repo)?;
    match store_once(repo, &d, |key| {
        objects::copy(&src, key, &Condition::IfAbsent)
    }) {
        Ok(_) => Ok(size),
        // Gone meanwhile, or damaged in the source: not mountable, so the
        // client uploads it instead.
        Err(ObjectError::NotFound) | Err(ObjectError::DigestMismatch(_)) => Err(Error::BlobUnknown),
        Err(e) => Err(e.into()),
    }
}

/// How a blob came to be in a repository.
pub enum Stored {
    Written,
    /// The repository had it already; that copy was touched instead.
    AlreadyThere,
}

/// Publish a blob with `publish`, a create-if-absent write to the key it is
/// given. A copy the repository already holds (content-addressed, so the
/// same bytes) is touched instead: it may be old and unreferenced, and gc's
/// delay protects it from now on, until the manifest that needs it comes.
/// If gc takes that copy between the two steps, publish again (once).
pub fn store_once(
    repo: &str,
    digest: &skiff_core::Digest,
    mut publish: impl FnMut(&str) -> Result<(), ObjectError>,
) -> Result<Stored, ObjectError> {
    let key = keys::blob(repo, digest);
    for _ in 0..2 {
        match publish(&key) {
            Ok(()) => return Ok(Stored::Written),
            Err(ObjectError::PreconditionFailed) => match objects::touch(&key) {
                Ok(_) => return Ok(Stored::AlreadyThere),
                Err(ObjectError::NotFound) => continue,
                Err(e) => return Err(e),
            },
            Err(e) => return Err(e),
        }
    }
    Err(ObjectError::Io(format!("{digest}: conflicting writes")))
}

/// Publish a small blob (a manifest) from memory. The version written, if
/// this call wrote it (so a failed push can take back exactly that).
pub fn put_small(
    repo: &str,
    digest: &skiff_core::Digest,
    bytes: &[u8],
) -> Result<Option<String>, Error> {
    let mut version = None;
    store_once(repo, digest, |key| {
        objects::put(key, bytes, &Condition::IfAbsent).map(|m| version = Some(m.version))
    })?;
    Ok(version)
}

/// Mark a blob as in use now; its size, or `None` if the repository lacks it.
pub fn touch(repo: &str, digest: &skiff_core::Digest) -> Result<Option<u64>, Error> {
    match objects::touch(&keys::blob(repo, digest)) {
        Ok(m) => Ok(Some(m.size)),
        Err(ObjectError::NotFound) => Ok(None),
        Err(e) => Err(e.into()),
    }
}
