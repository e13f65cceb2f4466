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
    if repo != from {
        meta::ensure_layout(repo)?;
        match objects::copy(&src, &keys::blob(repo, &d), &Condition::IfAbsent) {
            Ok(()) | Err(ObjectError::PreconditionFailed) => {}
            Err(ObjectError::NotFound) => return Err(Error::BlobUnknown),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(size)
}

/// Publish a small blob (a manifest) from memory, create-if-absent.
pub fn put_small(repo: &str, digest: &skiff_core::Digest, bytes: &[u8]) -> Result<(), Error> {
    match objects::put(&keys::blob(repo, digest), bytes, &Condition::IfAbsent) {
        Ok(_) | Err(ObjectError::PreconditionFailed) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Mark a blob as in use now; false if the repository lacks it.
pub fn touch(repo: &str, digest: &skiff_core::Digest) -> Result<bool, Error> {
    match objects::touch(&keys::blob(repo, digest)) {
        Ok(_) => Ok(true),
        Err(ObjectError::NotFound) => Ok(false),
        Err(e) => Err(e.into()),
    }
}
