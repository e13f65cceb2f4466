//! What the bucket holds, exactly as the native S3 backend writes it
//! (`host/src/objects/s3/mod.rs`), so either side serves a bucket the
//! other wrote:
//!
//! - an object at key `k` is the S3 object `<prefix>/k`, its ETag the
//!   version;
//! - an object written by appends is a *session record* at `<prefix>/k`
//!   (JSON [`Session`], user metadata `skiff-session: 1` and `skiff-size`)
//!   with its bytes under `<prefix>/.skiff-staging/k/`: full parts
//!   `part-00001`, ... of the recorded part size, then a tail object whose
//!   full key the record names;
//! - a published blob carries `skiff-digest`, the digest it was checked
//!   against;
//! - a *reference* (native dedupe) is an empty object with `skiff-ref` (the
//!   digest), `skiff-size` and `skiff-digest`, whose bytes are in another
//!   blob of that digest.

use crate::http::Head;
pub use skiff_core::s3_layout::{
    Session, DIGEST_META, MAX_PARTS, REF_MARK, SESSION_MARK, SIZE_META, STAGING,
};

/// What an S3 object at an object's key is.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// The bytes themselves.
    Plain,
    /// A session record; the bytes are staged beside it.
    Session,
    /// A dedupe reference to the blob `digest` of `size` bytes.
    Reference { digest: String, size: u64 },
}

pub fn kind(h: &Head) -> Kind {
    if let (Some(digest), Some(size)) = (h.meta(REF_MARK), h.meta(SIZE_META)) {
        if let Ok(size) = size.trim().parse() {
            return Kind::Reference {
                digest: digest.to_string(),
                size,
            };
        }
    }
    if h.meta(SESSION_MARK).is_some() {
        Kind::Session
    } else {
        Kind::Plain
    }
}

/// The size of what an object stands for: a session's or a reference's
/// recorded size, else the object's own length.
pub fn size_of(h: &Head) -> u64 {
    match kind(h) {
        Kind::Plain => h.content_length(),
        Kind::Reference { size, .. } => size,
        Kind::Session => h
            .meta(SIZE_META)
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0),
    }
}
