//! What the bucket holds, both S3 implementations (the host's and
//! the objects-s3 component) keep it: one definition, so either serves a
//! bucket the other wrote:
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

use crate::resumable::Sha256State;
use serde::{Deserialize, Serialize};

/// Marks a session record (its S3 user metadata).
pub const SESSION_MARK: &str = "skiff-session";
/// The digest a published blob was checked against (its user metadata).
pub const DIGEST_META: &str = "skiff-digest";
/// Where sessions' bytes are staged, under the prefix.
pub const STAGING: &str = ".skiff-staging";
/// Marks a reference (dedupe): its value is the digest it stands for.
pub const REF_MARK: &str = "skiff-ref";
/// The size of what a session record or a reference stands for.
pub const SIZE_META: &str = "skiff-size";
/// Parts one multipart upload may have.
pub const MAX_PARTS: u64 = 10_000;

/// An upload session's record: all it takes to continue or publish it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Session {
    pub size: u64,
    pub part_size: u64,
    /// Full parts stored (`part-00001` ..).
    pub parts: u64,
    /// The object (full S3 key) holding the bytes after the last full
    /// part, if any.
    pub tail: Option<String>,
    pub sha256: Sha256State,
    /// An append or a publish is under way until then (ms since the epoch).
    pub lease_until_ms: u64,
}

/// How long an append's or a publish's lease on a session lasts, in ms:
/// longer than any one request body may stall, renewed by nothing; an
/// append that takes longer loses its claim and fails rather than race
/// another writer. Both implementations honour the other's leases, so
/// they share this.
pub const LEASE_MS: u64 = 15 * 60 * 1000;

impl Session {
    /// A session with nothing in it yet, its parts `part_size` bytes.
    pub fn new(part_size: u64) -> Session {
        Session {
            size: 0,
            part_size,
            parts: 0,
            tail: None,
            sha256: Sha256State::default(),
            lease_until_ms: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_record_is_the_native_json() {
        let mut s = Session {
            size: 3,
            part_size: 10 << 20,
            parts: 0,
            tail: Some("p/.skiff-staging/r/.uploads/u/tail-3-00000000000000ff".into()),
            sha256: Sha256State::default(),
            lease_until_ms: 0,
        };
        s.sha256.update(b"abc");
        let json = serde_json::to_string(&s).unwrap();
        assert!(
            json.starts_with(
                r#"{"size":3,"part_size":10485760,"parts":0,"tail":"p/.skiff-staging/"#
            ),
            "{json}"
        );
        assert!(json.contains(r#""sha256":{"h":["#) && json.ends_with(r#","lease_until_ms":0}"#));
        let back: Session = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        assert_eq!(
            back.sha256.hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
