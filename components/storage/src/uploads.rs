//! Upload sessions. A session is two objects: its bytes so far and a small
//! state record, so any instance (or host) can continue it; nothing about an
//! upload lives in instance memory. The bytes become a blob only through
//! `objects.publish`, which checks their digest and publishes them in one
//! step that no concurrent append can slip into, so a blob never holds bytes
//! that do not hash to its name and a partial blob is never visible.

use crate::{keys, meta, Error};
use skiff_core::Digest;
use skiff_layout::objects::{self, Condition, ObjectError};
use wasip2::io::streams::InputStream;

/// The state record is a marker (`{}`): the session exists while it does.
const STATE: &[u8] = b"{}";
const MAX_STATE_BYTES: u64 = 4096;

/// Upload ids are 32 lowercase hex characters; anything else names no upload
/// (and so can never reach the key space as a path).
fn check_id(id: &str) -> Result<(), Error> {
    let ok = id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::BlobUploadUnknown)
    }
}

fn check_session(repo: &str, id: &str) -> Result<(), Error> {
    check_id(id)?;
    match objects::stat(&keys::upload_state(repo, id)) {
        Ok(_) => Ok(()),
        Err(ObjectError::NotFound) => Err(Error::BlobUploadUnknown),
        Err(e) => Err(e.into()),
    }
}

fn data_size(repo: &str, id: &str) -> Result<u64, Error> {
    match objects::stat(&keys::upload_data(repo, id)) {
        Ok(m) => Ok(m.size),
        Err(ObjectError::NotFound) => Ok(0),
        Err(e) => Err(e.into()),
    }
}

/// `storage.maxBlobSize`, which the host passes in the environment.
fn max_blob_size() -> Option<u64> {
    std::env::var("SKIFF_MAX_BLOB_SIZE").ok()?.parse().ok()
}

pub fn start(repo: &str) -> Result<String, Error> {
    let id = hex::encode(wasip2::random::random::get_random_bytes(16));
    let key = keys::upload_state(repo, &id);
    // The state record is read only to check it exists; keep it tiny.
    debug_assert!(STATE.len() as u64 <= MAX_STATE_BYTES);
    objects::put(&key, STATE, &Condition::IfAbsent)?;
    Ok(id)
}

pub fn offset(repo: &str, id: &str) -> Result<u64, Error> {
    check_session(repo, id)?;
    data_size(repo, id)
}

pub fn append(
    repo: &str,
    id: &str,
    start: Option<u64>,
    len: Option<u64>,
    src: &InputStream,
) -> Result<u64, Error> {
    check_session(repo, id)?;
    let current = data_size(repo, id)?;
    if let Some(s) = start {
        if s != current {
            return Err(Error::UploadOffset(current));
        }
    }
    // Read at most one byte past the limit, so an oversized body of
    // unknown length is caught without storing more than that.
    let mut limit = len;
    let max = max_blob_size();
    if let Some(max) = max {
        let room = max.saturating_sub(current);
        match len {
            Some(n) if n > room => return Err(Error::BlobTooLarge(max)),
            Some(_) => {}
            None => limit = Some(room.saturating_add(1)),
        }
    }
    let written = match objects::write_from(&keys::upload_data(repo, id), current, src, limit) {
        Ok(w) => w,
        // Another request appended first, or is appending now.
        Err(ObjectError::PreconditionFailed) | Err(ObjectError::Busy) => {
            return Err(Error::UploadOffset(data_size(repo, id)?))
        }
        // Finished or cancelled while this request waited.
        Err(ObjectError::NotFound) => return Err(Error::BlobUploadUnknown),
        // More than the store can hold in one object (S3's 10,000 parts).
        Err(ObjectError::TooLarge(cap)) => {
            cancel(repo, id)?;
            return Err(Error::BlobTooLarge(cap));
        }
        Err(e) => return Err(e.into()),
    };
    let got = written.size.saturating_sub(current);
    if let Some(max) = max {
        if written.size > max {
            // The session can never be finished; drop it rather than keep
            // bytes over the limit.
            cancel(repo, id)?;
            return Err(Error::BlobTooLarge(max));
        }
    }
    if let Some(expected) = len {
        if got != expected {
            return Err(Error::SizeInvalid(format!(
                "Content-Length was {expected} but the body had {got} bytes"
            )));
        }
    }
    Ok(written.size)
}

pub fn finish(repo: &str, id: &str, digest: &str) -> Result<u64, Error> {
    check_session(repo, id)?;
    let want: Digest = keys::digest(digest)?;
    let data = keys::upload_data(repo, id);
    let publish = || {
        objects::publish(
            &data,
            &keys::blob(repo, &want),
            &skiff_layout::content(&want),
        )
    };
    let published = match publish() {
        Err(ObjectError::NotFound) => match objects::stat(&keys::blob(repo, &want)) {
            // A retried finish: an earlier one published the bytes and
            // stopped (crashed, say) before it dropped the session.
            Ok(m) => Ok(objects::Published {
                size: m.size,
                existed: true,
            }),
            // Nothing was ever appended: an empty blob.
            Err(ObjectError::NotFound) => {
                match objects::put(&data, &[], &Condition::IfAbsent) {
                    Ok(_) | Err(ObjectError::PreconditionFailed) => {}
                    Err(e) => return Err(e.into()),
                }
                publish()
            }
            Err(e) => Err(e),
        },
        r => r,
    };
    match published {
        Ok(p) => {
            // A repository that so far had only uploads becomes a layout
            // once it holds a blob (not before: a refused upload leaves none).
            meta::ensure_layout(repo)?;
            skiff_layout::remove(&keys::upload_state(repo, id))?;
            Ok(p.size)
        }
        Err(ObjectError::DigestMismatch(actual)) => {
            // The session is spent either way: a client retries with a new one.
            cancel(repo, id)?;
            Err(Error::DigestInvalid(format!(
                "content has digest {}:{actual}, not {want}",
                want.algorithm().as_str()
            )))
        }
        Err(ObjectError::Busy) => Err(Error::Busy(
            "another request is still writing to this upload".into(),
        )),
        Err(ObjectError::NotFound) => Err(Error::BlobUploadUnknown),
        Err(e) => Err(e.into()),
    }
}

pub fn cancel(repo: &str, id: &str) -> Result<(), Error> {
    check_session(repo, id)?;
    skiff_layout::remove(&keys::upload_data(repo, id))?;
    skiff_layout::remove(&keys::upload_state(repo, id))?;
    Ok(())
}
