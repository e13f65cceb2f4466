//! Upload sessions. A session is two objects: its bytes so far and a small
//! state record, so any instance (or host) can continue it; nothing about an
//! upload lives in instance memory. The bytes become a blob only by an atomic
//! rename after their digest checks out, so a partial blob is never visible.

use crate::{blobs, keys, meta, Error};
use serde::{Deserialize, Serialize};
use skiff_core::{Algorithm, Digest};
use skiff_layout::objects::{self, Condition, ObjectError};
use wasip2::io::streams::InputStream;

#[derive(Serialize, Deserialize, Default)]
struct State {
    /// The sha256 of the first `hashed_size` bytes, when one write covered
    /// them all (the common monolithic and single-PATCH cases), so finishing
    /// need not read the upload again.
    sha256: Option<String>,
    hashed_size: u64,
}

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

fn load_state(repo: &str, id: &str) -> Result<State, Error> {
    check_id(id)?;
    match objects::get(&keys::upload_state(repo, id)) {
        Ok((bytes, _)) => Ok(serde_json::from_slice(&bytes).unwrap_or_default()),
        Err(ObjectError::NotFound) => Err(Error::BlobUploadUnknown),
        Err(e) => Err(e.into()),
    }
}

fn save_state(repo: &str, id: &str, state: &State) -> Result<(), Error> {
    let bytes = serde_json::to_vec(state).map_err(|e| Error::Internal(e.to_string()))?;
    objects::put(&keys::upload_state(repo, id), &bytes, &Condition::Always)?;
    Ok(())
}

fn data_size(repo: &str, id: &str) -> Result<u64, Error> {
    match objects::stat(&keys::upload_data(repo, id)) {
        Ok(m) => Ok(m.size),
        Err(ObjectError::NotFound) => Ok(0),
        Err(e) => Err(e.into()),
    }
}

pub fn start(repo: &str) -> Result<String, Error> {
    let id = hex::encode(wasip2::random::random::get_random_bytes(16));
    save_state(repo, &id, &State::default())?;
    Ok(id)
}

pub fn offset(repo: &str, id: &str) -> Result<u64, Error> {
    load_state(repo, id)?;
    data_size(repo, id)
}

pub fn append(
    repo: &str,
    id: &str,
    start: Option<u64>,
    len: Option<u64>,
    src: &InputStream,
) -> Result<u64, Error> {
    let mut state = load_state(repo, id)?;
    let current = data_size(repo, id)?;
    if let Some(s) = start {
        if s != current {
            return Err(Error::UploadOffset(current));
        }
    }
    let written = match objects::write_from(&keys::upload_data(repo, id), current, src, len) {
        Ok(w) => w,
        // Another request appended first.
        Err(ObjectError::PreconditionFailed) => {
            return Err(Error::UploadOffset(data_size(repo, id)?))
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(expected) = len {
        let got = written.size - current;
        if got != expected {
            return Err(Error::SizeInvalid(format!(
                "Content-Length was {expected} but the body had {got} bytes"
            )));
        }
    }
    // An empty write (a body of unknown length that had nothing in it)
    // leaves the session as it was, remembered hash included.
    if written.size != current && (written.sha256.is_some() || state.sha256.is_some()) {
        state.sha256 = written.sha256;
        state.hashed_size = written.size;
        save_state(repo, id, &state)?;
    }
    Ok(written.size)
}

pub fn finish(repo: &str, id: &str, digest: &str) -> Result<u64, Error> {
    let state = load_state(repo, id)?;
    let want: Digest = keys::digest(digest)?;
    let data = keys::upload_data(repo, id);
    let size = match objects::stat(&data) {
        Ok(m) => m.size,
        Err(ObjectError::NotFound) => {
            // An empty blob: nothing was ever appended.
            objects::put(&data, &[], &Condition::IfAbsent)?;
            0
        }
        Err(e) => return Err(e.into()),
    };
    // The hash taken while writing serves when one write covered it all.
    let actual = match state.sha256 {
        Some(h) if state.hashed_size == size && want.algorithm() == Algorithm::Sha256 => h,
        _ => skiff_layout::rehash(&data, &want)?,
    };
    if actual != want.hex() {
        // The session is spent either way: a client retries with a new one.
        cancel(repo, id)?;
        return Err(Error::DigestInvalid(format!(
            "content has digest {}:{actual}, not {want}",
            want.algorithm().as_str()
        )));
    }
    meta::ensure_layout(repo)?;
    let published = blobs::store_once(repo, &want, |key| {
        objects::rename(&data, key, &Condition::IfAbsent)
    })?;
    if let blobs::Stored::AlreadyThere = published {
        ignore_missing(objects::delete(&data))?;
    }
    ignore_missing(objects::delete(&keys::upload_state(repo, id)))?;
    Ok(size)
}

pub fn cancel(repo: &str, id: &str) -> Result<(), Error> {
    load_state(repo, id)?;
    ignore_missing(objects::delete(&keys::upload_data(repo, id)))?;
    ignore_missing(objects::delete(&keys::upload_state(repo, id)))?;
    Ok(())
}

fn ignore_missing(r: Result<(), ObjectError>) -> Result<(), Error> {
    Ok(skiff_layout::ignore_missing(r)?)
}
