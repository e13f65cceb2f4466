//! Reading an object's bytes wherever they are: in the object itself (a
//! blob), in a session's staged parts and tail, or in the blob a reference
//! stands for. `read-to` streams them into the caller's output stream by
//! ranged GETs, spliced in the host; `digest` hashes them as they arrive.
//! Never more than one read piece of a blob is in guest memory.

use crate::bucket::{Bucket, Piece};
use crate::format::{kind, Kind, Session};
use crate::http::{finish, Body, Head};
use crate::{HashAlgorithm, ObjectError};
use sha2::{Digest as _, Sha256, Sha512};
use wasip2::io::streams::OutputStream;

/// The most of a session record that is read.
const RECORD_MAX: u64 = 1 << 20;
/// Rounds of resolving a key again when what it resolved to went away
/// meanwhile (a reference's holder deleted, a session published).
const RESOLVE_ROUNDS: usize = 3;

/// An object, as a GET of its key found it.
pub enum Opened {
    /// The bytes themselves, being read.
    Plain(Head, Body),
    /// A session record, read.
    Session(Session, Head),
    /// A reference to the blob `digest` of `size` bytes.
    Reference {
        head: Head,
        digest: String,
        size: u64,
    },
}

/// SHA-256 or SHA-512, fed piece by piece.
enum Hasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Hasher {
    fn new(algorithm: HashAlgorithm) -> Hasher {
        match algorithm {
            HashAlgorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            HashAlgorithm::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    fn hex(self) -> String {
        match self {
            Hasher::Sha256(h) => hex::encode(h.finalize()),
            Hasher::Sha512(h) => hex::encode(h.finalize()),
        }
    }
}

fn corrupt(key: &str, e: impl std::fmt::Display) -> ObjectError {
    ObjectError::Io(format!("{key}: a corrupt upload record: {e}"))
}

impl Bucket {
    /// GET the object at `key` and see what it is: one request for a blob
    /// or a session record, whose body is all there is to it.
    pub fn open(&self, key: &str) -> Result<Opened, ObjectError> {
        let (head, mut body) = self.get(&self.full(key), None)?.split()?;
        match kind(&head) {
            Kind::Plain => Ok(Opened::Plain(head, body)),
            Kind::Reference { digest, size } => Ok(Opened::Reference { head, digest, size }),
            Kind::Session => {
                let bytes = body
                    .read_all(RECORD_MAX)?
                    .ok_or_else(|| corrupt(key, "larger than a record can be"))?;
                let s = serde_json::from_slice(&bytes).map_err(|e| corrupt(key, e))?;
                Ok(Opened::Session(s, head))
            }
        }
    }

    /// The session record at `key` and its version; `None` for an object
    /// that is not a session (written whole, e.g. an empty upload).
    pub fn session(&self, key: &str) -> Result<Option<(Session, String)>, ObjectError> {
        Ok(match self.open(key)? {
            Opened::Session(s, head) => Some((s, head.etag())),
            _ => None,
        })
    }

    /// Where a session's bytes are, in order: its full parts, then its tail.
    pub fn session_pieces(&self, key: &str, s: &Session) -> Vec<Piece> {
        let mut out: Vec<Piece> = (1..=s.parts)
            .map(|n| Piece {
                key: self.part_key(key, n),
                size: s.part_size,
            })
            .collect();
        if let Some(t) = &s.tail {
            out.push(Piece {
                key: t.clone(),
                size: s.size.saturating_sub(s.parts.saturating_mul(s.part_size)),
            });
        }
        out
    }

    /// The pieces of the object at `key`, found by a HEAD first (a blob is
    /// read by ranges, never by a GET of all of it), its HEAD, and whether
    /// they were found through a reference.
    pub fn resolve(&self, key: &str) -> Result<(Vec<Piece>, Head, bool), ObjectError> {
        let full = self.full(key);
        for _ in 0..RESOLVE_ROUNDS {
            let h = self.head(&full)?;
            match kind(&h) {
                Kind::Plain => {
                    let size = h.content_length();
                    return Ok((vec![Piece { key: full, size }], h, false));
                }
                Kind::Reference { digest, size } => {
                    let pieces = self.reference_pieces(&digest, size, &full)?;
                    return Ok((pieces, h, true));
                }
                Kind::Session => {
                    // Replaced by a plain object between the two requests
                    // if it is no longer a session: looked at again.
                    if let Some((s, _)) = self.session(key)? {
                        return Ok((self.session_pieces(key, &s), h, false));
                    }
                }
            }
        }
        Err(ObjectError::Io(format!(
            "{key} kept changing while it was read"
        )))
    }

    /// Hand bytes `[start, start+len)` of the pieces to `sink`, or splice
    /// them into `dst`: one ranged GET per piece it overlaps.
    fn each_range(
        &self,
        pieces: &[Piece],
        start: u64,
        len: u64,
        mut take: impl FnMut(&mut Body, u64) -> Result<(), ObjectError>,
    ) -> Result<(), ObjectError> {
        let total: u64 = pieces.iter().map(|p| p.size).sum();
        let end = start
            .checked_add(len)
            .ok_or_else(|| ObjectError::Io("range overflows".into()))?;
        if end > total {
            return Err(ObjectError::Io(format!(
                "range ends past the object ({total} bytes)"
            )));
        }
        let mut at = 0u64;
        for p in pieces {
            let (p0, p1) = (at, at + p.size);
            at = p1;
            let (from, to) = (start.max(p0), end.min(p1));
            if from >= to {
                continue;
            }
            let (off, n) = (from - p0, to - from);
            let (_, mut body) = self.get(&p.key, Some((off, off + n - 1)))?.split()?;
            take(&mut body, n)?;
        }
        Ok(())
    }

    /// All the bytes of `pieces` in memory: only for objects known to be
    /// at most `max` bytes (`get`).
    pub fn read_pieces(&self, pieces: &[Piece], max: u64) -> Result<Vec<u8>, ObjectError> {
        let total: u64 = pieces.iter().map(|p| p.size).sum();
        if total > max {
            return Err(ObjectError::TooLarge(total));
        }
        let mut out = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
        self.each_range(pieces, 0, total, |body, n| {
            body.feed(n, |b| out.extend_from_slice(b))
        })?;
        Ok(out)
    }

    /// The hex digest of the pieces' bytes.
    pub fn hash_pieces(
        &self,
        pieces: &[Piece],
        algorithm: HashAlgorithm,
    ) -> Result<String, ObjectError> {
        let total: u64 = pieces.iter().map(|p| p.size).sum();
        let mut hasher = Hasher::new(algorithm);
        self.each_range(pieces, 0, total, |body, n| {
            body.feed(n, |b| hasher.update(b))
        })?;
        Ok(hasher.hex())
    }

    /// The hex digest of a body being read, all `n` bytes of it.
    pub fn hash_body(
        body: &mut Body,
        n: u64,
        algorithm: HashAlgorithm,
    ) -> Result<String, ObjectError> {
        let mut hasher = Hasher::new(algorithm);
        body.feed(n, |b| hasher.update(b))?;
        Ok(hasher.hex())
    }

    pub fn read_to(
        &self,
        key: &str,
        start: u64,
        len: u64,
        dst: &OutputStream,
    ) -> Result<(), ObjectError> {
        let last = start
            .checked_add(len)
            .and_then(|end| end.checked_sub(1))
            .filter(|_| len > 0);
        if let Some(last) = last {
            // One request when `key` is a plain object (a blob): a ranged
            // GET of it. A reference is empty, so any range of it is
            // unsatisfiable (416); that and a session record are resolved
            // below.
            match self.get(&self.full(key), Some((start, last))) {
                Ok(resp) if kind(&resp.head) == Kind::Plain => {
                    let (head, mut body) = resp.split()?;
                    // 206 with the range, short if the object is; or 200
                    // with all of it, from a store that ignores ranges.
                    let got = head.content_length();
                    let fits = match head.status {
                        200 => start == 0 && got >= len,
                        _ => head.header("content-length").is_none() || got == len,
                    };
                    if !fits {
                        return Err(ObjectError::Io(format!(
                            "{key}: range ends past the object"
                        )));
                    }
                    body.splice_to(dst, len)?;
                    return finish(dst);
                }
                Ok(_) => {}
                Err(ObjectError::NotFound) => return Err(ObjectError::NotFound),
                Err(_) => {}
            }
        }
        let mut rounds = 0;
        loop {
            let (pieces, _, via_ref) = self.resolve(key)?;
            match self.each_range(&pieces, start, len, |body, n| body.splice_to(dst, n)) {
                // The holder went between the listing and its GET; nothing
                // was written yet, as its GET failed.
                Err(ObjectError::NotFound) if via_ref && rounds < RESOLVE_ROUNDS => rounds += 1,
                Err(e) => return Err(e),
                Ok(()) => return finish(dst),
            }
        }
    }

    pub fn digest(&self, key: &str, algorithm: HashAlgorithm) -> Result<String, ObjectError> {
        let mut rounds = 0;
        loop {
            let (pieces, via_ref) = match self.open(key)? {
                // A blob: hashed as this one GET of it arrives.
                Opened::Plain(head, mut body) => {
                    return Self::hash_body(&mut body, head.content_length(), algorithm)
                }
                // A session knows its SHA-256 without reading its bytes.
                Opened::Session(s, _) if algorithm == HashAlgorithm::Sha256 => {
                    return Ok(s.sha256.hex())
                }
                Opened::Session(s, _) => (self.session_pieces(key, &s), false),
                Opened::Reference { digest, size, .. } => {
                    (self.reference_pieces(&digest, size, &self.full(key))?, true)
                }
            };
            match self.hash_pieces(&pieces, algorithm) {
                Err(ObjectError::NotFound) if via_ref && rounds < RESOLVE_ROUNDS => rounds += 1,
                r => return r,
            }
        }
    }
}
