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

pub fn delete(repo: &str, digest: &str) -> Result<(), Error> {
    let d = keys::digest(digest)?;
    match objects::delete(&keys::blob(repo, &d)) {
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
            true => Ok(size),
            false => Err(Error::BlobUnknown),
        };
    }
    meta::ensure_layout(repo)?;
    // Twice at most: a copy already here may be collected between the steps.
    for _ in 0..2 {
        match objects::copy(&src, &keys::blob(repo, &d), &Condition::IfAbsent) {
            Ok(()) => return Ok(size),
            // Already here, maybe old and unreferenced: in use from now on.
            Err(ObjectError::PreconditionFailed) if touch(repo, &d)? => return Ok(size),
            Err(ObjectError::PreconditionFailed) => continue,
            Err(ObjectError::NotFound) => return Err(Error::BlobUnknown),
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Internal(format!("{digest}: conflicting writes")))
}

/// Publish a small blob (a manifest) from memory, create-if-absent. One
/// already stored is touched: pushed again, it is in use from now on.
pub fn put_small(repo: &str, digest: &skiff_core::Digest, bytes: &[u8]) -> Result<(), Error> {
    for _ in 0..2 {
        match objects::put(&keys::blob(repo, digest), bytes, &Condition::IfAbsent) {
            Ok(_) => return Ok(()),
            Err(ObjectError::PreconditionFailed) if touch(repo, digest)? => return Ok(()),
            // Collected between the two steps: store it again.
            Err(ObjectError::PreconditionFailed) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Internal(format!("{digest}: conflicting writes")))
}

/// Mark a blob as in use now; false if the repository lacks it.
pub fn touch(repo: &str, digest: &skiff_core::Digest) -> Result<bool, Error> {
    match objects::touch(&keys::blob(repo, digest)) {
        Ok(_) => Ok(true),
        Err(ObjectError::NotFound) => Ok(false),
        Err(e) => Err(e.into()),
    }
}
