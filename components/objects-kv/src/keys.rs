//! Object keys (which are valid, which name blobs) and the key-value keys
//! that hold each part of an object.
//!
//! The rules for object keys are the native backends' (host
//! `objects/keys.rs`): `/`-separated plain names, bounded, so no key can
//! reach outside a prefix, and every backend accepts the same keys.

use crate::bindings::exports::skiff::registry::objects::ObjectError;

/// Records live under this prefix, chunks under [`CHUNK_PREFIX`]: listing
/// objects is a filter on the store's keys, and no object key can ever be
/// mistaken for a chunk.
pub const RECORD_PREFIX: &str = "o/";
const CHUNK_PREFIX: &str = "c/";

pub use skiff_core::object_key::{valid_key, valid_prefix};

pub fn check(key: &str) -> Result<(), ObjectError> {
    if valid_key(key) {
        Ok(())
    } else {
        Err(ObjectError::InvalidKey(key.to_string()))
    }
}

/// Where the record of object `key` is kept.
pub fn record_key(key: &str) -> String {
    format!("{RECORD_PREFIX}{key}")
}

/// Where chunk `n` of the write `id` is kept.
pub fn chunk_key(id: &str, n: u64) -> String {
    format!("{CHUNK_PREFIX}{id}/{n}")
}

/// The digest a key is named for, when it is a blob of a layout
/// (`…/blobs/<alg>/<hex>`): such a key may only ever hold that content.
pub fn content_digest(key: &str) -> Option<skiff_core::Digest> {
    skiff_core::object_key::content_digest(key).and_then(|d| d.parse().ok())
}

/// A name for one write's chunks, never used before: 128 random bits.
pub fn fresh_id() -> String {
    hex::encode(wasip2::random::random::get_random_bytes(16))
}

/// A new object version: random, so every write has its own.
pub fn fresh_version() -> String {
    format!("{:016x}", wasip2::random::random::get_random_u64())
}

/// Whether `id` looks like one [`fresh_id`] made: a record naming anything
/// else is corrupt, and its "chunks" must not be read or deleted.
pub fn is_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
}
