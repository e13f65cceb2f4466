//! Making blobs out of other objects server-side: `publish` (an upload's
//! bytes become a blob once they hash to its digest) and `copy` (a
//! cross-repository mount), checking content-addressed destinations
//! first, as the native backend does.

use crate::bucket::{Bucket, Piece};
use crate::format::{size_of, Session, DIGEST_META};
use crate::keys::content_digest;
use crate::reads::Opened;
use crate::settings::MAX_PART;
use crate::{Condition, Content, HashAlgorithm, ObjectError, Published};

/// `expected` as a digest string (`sha256:<hex>`).
fn digest_text(expected: &Content) -> String {
    format!("{}:{}", algorithm_name(expected.algorithm), expected.hex)
}

fn algorithm_name(a: HashAlgorithm) -> &'static str {
    match a {
        HashAlgorithm::Sha256 => "sha256",
        HashAlgorithm::Sha512 => "sha512",
    }
}

impl Bucket {
    pub fn publish(
        &self,
        src: &str,
        dst: &str,
        expected: &Content,
    ) -> Result<Published, ObjectError> {
        let digest = digest_text(expected);
        let dst_full = self.full(dst);
        // A session is claimed, so no append slips in between the check
        // of the digest and the publish.
        let mut claimed: Option<(Session, String)> = None;
        let found = match self.open(src)? {
            Opened::Session(s, head) => {
                let (s, claim) = self.claim(&s, &head.etag(), src)?;
                let pieces = self.session_pieces(src, &s);
                let actual = match expected.algorithm {
                    HashAlgorithm::Sha256 => Ok(s.sha256.hex()),
                    a => self.hash_pieces(&pieces, a),
                };
                claimed = Some((s, claim));
                actual.map(|a| (pieces, a))
            }
            // Written whole (an empty upload): hashed as it is read.
            Opened::Plain(head, mut body) => {
                let size = head.content_length();
                Self::hash_body(&mut body, size, expected.algorithm).map(|a| {
                    let piece = Piece {
                        key: self.full(src),
                        size,
                    };
                    (vec![piece], a)
                })
            }
            Opened::Reference { digest, size, .. } => self
                .reference_pieces(&digest, size, &self.full(src))
                .and_then(|p| Ok((p.clone(), self.hash_pieces(&p, expected.algorithm)?))),
        };
        let give_back = |claimed: Option<(Session, String)>| {
            if let Some((s, claim)) = claimed {
                self.release(src, s, claim);
            }
        };
        let (pieces, actual) = match found {
            Ok(f) => f,
            Err(e) => {
                give_back(claimed);
                return Err(e);
            }
        };
        if actual != expected.hex {
            give_back(claimed);
            return Err(ObjectError::DigestMismatch(actual));
        }
        let size: u64 = pieces.iter().map(|p| p.size).sum();
        match self.place(&pieces, dst, &dst_full, &digest, size) {
            Ok(existed) => {
                if let Err(e) = self.delete(&self.full(src), None) {
                    // The blob is made; the session is left as it was, not
                    // leased, so a retry finds `dst` there and finishes.
                    give_back(claimed);
                    return Err(e);
                }
                self.drop_staging(src)?;
                Ok(Published { size, existed })
            }
            Err(e) => {
                give_back(claimed);
                Err(e)
            }
        }
    }

    /// Make `dst` hold `pieces` (checked to hash to `digest`) unless it
    /// holds them already; whether it did.
    fn place(
        &self,
        pieces: &[Piece],
        dst: &str,
        dst_full: &str,
        digest: &str,
        size: u64,
    ) -> Result<bool, ObjectError> {
        // Already there, checked: the size, and the digest it was
        // published under (S3 keeps the bytes' integrity itself).
        let existing = self.head(dst_full);
        let existed = match &existing {
            Ok(h) => size_of(h) == size && h.meta(DIGEST_META).is_none_or(|d| d == digest),
            Err(ObjectError::NotFound) => false,
            Err(e) => return Err(e.clone()),
        };
        if existed {
            // In use again from now: gc's delay protects it.
            match self.touch(dst) {
                Ok(_) => return Ok(true),
                // Removed meanwhile: published anew below.
                Err(ObjectError::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        // A blob that is there but damaged is replaced; otherwise a
        // concurrent publish of the same content may win, which is as good.
        let replace = existing.is_ok() && !existed;
        match self.assemble(pieces, dst_full, digest, replace) {
            Ok(()) | Err(ObjectError::PreconditionFailed) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub fn copy(&self, src: &str, dst: &str, when: &Condition) -> Result<(), ObjectError> {
        if !matches!(when, Condition::IfAbsent) {
            return Err(ObjectError::Io("copy only creates new objects".into()));
        }
        let dst_full = self.full(dst);
        match self.head(&dst_full) {
            Ok(_) => return Err(ObjectError::PreconditionFailed),
            Err(ObjectError::NotFound) => {}
            Err(e) => return Err(e),
        }
        let (pieces, h, _) = self.resolve(src)?;
        // A copy never makes a blob that does not hash to its name: the
        // bytes are hashed unless the source was published under it.
        let digest = match content_digest(dst) {
            None => String::new(),
            Some(d) => {
                let parsed: skiff_core::Digest = d
                    .parse()
                    .map_err(|_| ObjectError::InvalidKey(dst.to_string()))?;
                if h.meta(DIGEST_META) != Some(d.as_str()) {
                    let algorithm = match parsed.algorithm() {
                        skiff_core::Algorithm::Sha256 => HashAlgorithm::Sha256,
                        skiff_core::Algorithm::Sha512 => HashAlgorithm::Sha512,
                    };
                    let actual = self.hash_pieces(&pieces, algorithm)?;
                    if actual != parsed.hex() {
                        return Err(ObjectError::DigestMismatch(actual));
                    }
                }
                d
            }
        };
        match pieces.as_slice() {
            // One object: one CopyObject.
            [one] if one.size <= MAX_PART => {
                let meta = [(DIGEST_META, digest.as_str())];
                self.copy_object(&one.key, &dst_full, &meta, true)?;
                Ok(())
            }
            _ => self.assemble(&pieces, &dst_full, &digest, false),
        }
    }
}
