//! `write-from`: appends, which S3 objects cannot take, as the native
//! backend makes them (same record, same staged objects, same steps), so
//! an upload begun by either side can be continued by the other.
//!
//! The object is a session record at its key that knows its size and
//! SHA-256 state; the bytes are staged beside it in full parts of exactly
//! the recorded part size, then a tail. An append first claims the record
//! by compare-and-swap, setting a lease (`busy` for others while it
//! lasts), stages the bytes, and only then replaces the record, releasing
//! the claim. Parts are named by their offset, so an interrupted append's
//! parts are written over by its retry; the tail gets a new name each
//! time, so the record always names a tail that matches its size.

use crate::bucket::Bucket;
use crate::clock::now_ms;
use crate::format::{Session, MAX_PARTS, SESSION_MARK, SIZE_META};
use crate::http::READ_PIECE;
use crate::{Condition, ObjectError, Written};
use wasip2::io::streams::{InputStream, StreamError};

fn lease_end() -> u64 {
    now_ms() + skiff_core::s3_layout::LEASE_MS
}

/// A request body being read, at most `limit` bytes of it.
struct Source<'a> {
    src: &'a InputStream,
    limit: Option<u64>,
    /// Bytes read so far.
    total: u64,
}

impl Source<'_> {
    /// The next piece, or `None` at the end of the body or of the limit.
    fn next(&mut self) -> Result<Option<Vec<u8>>, ObjectError> {
        let want = match self.limit {
            Some(l) if self.total >= l => return Ok(None),
            Some(l) => (l - self.total).min(READ_PIECE),
            None => READ_PIECE,
        };
        let piece = match self.src.blocking_read(want) {
            Ok(p) => p,
            Err(StreamError::Closed) => return Ok(None),
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(ObjectError::Io(format!(
                    "reading the request body: {}",
                    e.to_debug_string()
                )))
            }
        };
        self.total = self
            .total
            .checked_add(piece.len() as u64)
            .ok_or_else(|| ObjectError::Io("upload size overflows".into()))?;
        Ok(Some(piece))
    }
}

impl Bucket {
    /// Write a session record, subject to `when`; its new version.
    fn put_session(&self, key: &str, s: &Session, when: &Condition) -> Result<String, ObjectError> {
        let body = serde_json::to_vec(s).map_err(|e| ObjectError::Io(e.to_string()))?;
        let meta = [
            (SESSION_MARK, "1".to_string()),
            (SIZE_META, s.size.to_string()),
        ];
        Ok(self.put(&self.full(key), &body, when, &meta)?.etag())
    }

    /// Claim the session at `key` for one append or publish: the record
    /// as it is now leased, with the version that holds the claim.
    pub fn claim(
        &self,
        s: &Session,
        version: &str,
        key: &str,
    ) -> Result<(Session, String), ObjectError> {
        if s.lease_until_ms > now_ms() {
            return Err(ObjectError::Busy);
        }
        let mut leased = s.clone();
        leased.lease_until_ms = lease_end();
        match self.put_session(key, &leased, &Condition::IfVersion(version.to_string())) {
            Ok(v) => Ok((leased, v)),
            Err(ObjectError::PreconditionFailed) => Err(ObjectError::Busy),
            Err(e) => Err(e),
        }
    }

    /// Give up a claim, leaving the session as `s` was (with no lease).
    pub fn release(&self, key: &str, mut s: Session, claim: String) {
        s.lease_until_ms = 0;
        let _ = self.put_session(key, &s, &Condition::IfVersion(claim));
    }

    /// Remove a session's staged bytes (its record is the caller's).
    pub fn drop_staging(&self, key: &str) -> Result<(), ObjectError> {
        let keys = self.keys_under(&format!("{}/", self.staging(key)))?;
        self.delete_many(&keys)
    }

    pub fn write_from(
        &self,
        key: &str,
        offset: u64,
        src: &InputStream,
        limit: Option<u64>,
    ) -> Result<Written, ObjectError> {
        let fresh = Session::new(self.part_size);
        // A new session is created already claimed by this append (one
        // request fewer); an existing one is claimed by compare-and-swap.
        let mut claimed = fresh.clone();
        claimed.lease_until_ms = lease_end();
        let created = if offset == 0 {
            match self.put_session(key, &claimed, &Condition::IfAbsent) {
                Ok(v) => Some(v),
                Err(ObjectError::PreconditionFailed) => None,
                Err(e) => return Err(e),
            }
        } else {
            None
        };
        let (current, s, claim) = match created {
            Some(v) => (fresh, claimed, v),
            None => {
                // Gone: published or removed meanwhile (`not-found`); not a
                // session, or at another size: the offset does not hold.
                let (current, version) =
                    self.session(key)?.ok_or(ObjectError::PreconditionFailed)?;
                if current.size != offset {
                    return Err(ObjectError::PreconditionFailed);
                }
                let (s, claim) = self.claim(&current, &version, key)?;
                (current, s, claim)
            }
        };
        match self.append(key, offset, s, &claim, src, limit) {
            Ok(w) => Ok(w),
            Err(e) => {
                // Give the session back as it was: its bytes are where they
                // were, and what this append staged is written over later.
                let _ = self.put_session(key, &current, &Condition::IfVersion(claim));
                Err(e)
            }
        }
    }

    /// One append to a claimed session: stage the bytes, then replace the
    /// record (releasing the claim). At most one part is in memory.
    fn append(
        &self,
        key: &str,
        offset: u64,
        mut s: Session,
        claim: &str,
        src: &InputStream,
        limit: Option<u64>,
    ) -> Result<Written, ObjectError> {
        let part = usize::try_from(s.part_size)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| {
                ObjectError::Io(format!("{key}: part size {} is out of reach", s.part_size))
            })?;
        // The bytes after the last full part, continued by this append.
        let mut buf: Vec<u8> = match &s.tail {
            Some(t) => self.get(t, None)?.bytes(s.part_size)?.1,
            None => Vec::new(),
        };
        // Room for one part, or for what the limit lets in if less.
        let room = limit.map_or(part, |l| {
            usize::try_from(l).map_or(part, |l| l.saturating_add(buf.len()).min(part))
        });
        buf.reserve_exact(room.saturating_sub(buf.len()));
        // The largest object one multipart upload can make.
        let cap = s.part_size.saturating_mul(MAX_PARTS);
        let mut body = Source {
            src,
            limit,
            total: 0,
        };
        while let Some(piece) = body.next()? {
            if offset.saturating_add(body.total) > cap {
                return Err(ObjectError::TooLarge(cap));
            }
            s.sha256.update(&piece);
            let mut rest = &piece[..];
            while !rest.is_empty() {
                let take = (part - buf.len()).min(rest.len());
                buf.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                if buf.len() == part {
                    s.parts += 1;
                    self.put(
                        &self.part_key(key, s.parts),
                        &buf,
                        &Condition::Always,
                        &[] as &[(&str, &str)],
                    )?;
                    buf.clear();
                }
            }
        }
        let old_tail = s.tail.take();
        s.size = offset + body.total;
        if !buf.is_empty() {
            // A new name each time: the record names the tail that goes
            // with its size, so a crash between the two writes loses nothing.
            let name = format!(
                "{}/tail-{}-{:016x}",
                self.staging(key),
                s.size,
                wasip2::random::random::get_random_u64()
            );
            self.put(&name, &buf, &Condition::Always, &[] as &[(&str, &str)])?;
            s.tail = Some(name);
        }
        drop(buf);
        s.lease_until_ms = 0;
        match self.put_session(key, &s, &Condition::IfVersion(claim.to_string())) {
            Ok(_) => {}
            // The lease ran out and another writer took the session.
            Err(ObjectError::PreconditionFailed) => return Err(ObjectError::Busy),
            Err(e) => return Err(e),
        }
        if let Some(t) = old_tail.filter(|t| Some(t) != s.tail.as_ref()) {
            let _ = self.delete(&t, None);
        }
        Ok(Written {
            size: s.size,
            sha256: Some(s.sha256.hex()),
        })
    }
}
