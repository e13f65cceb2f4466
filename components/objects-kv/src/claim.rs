//! Leases: an append or a publish claims its object for a while by writing
//! a lease into its record, so no other append or publish slips in between
//! its checks and its last write.
//!
//! The holder knows the exact bytes it left in the record, and every later
//! write of its own is a compare-and-swap from those bytes: if anyone else
//! changed the record meanwhile (a delete, or a writer that took over an
//! expired lease), the holder's write fails and it backs out. A lease runs
//! for [`LEASE_MS`] and is renewed while the work goes on, so a trapped
//! instance holds an object for at most that long.

use crate::bindings::exports::skiff::registry::objects::ObjectError;
use crate::keys;
use crate::record::{self, Head, Lease, LeaseOp, Object, Seen};
use crate::store;

/// How long a claim lasts unless renewed.
pub const LEASE_MS: u64 = 60_000;
/// Renewed once this much of it has passed.
const RENEW_AFTER_MS: u64 = LEASE_MS / 3;

/// An object claimed for an append or a publish.
pub struct Claim {
    pub key: String,
    /// The object as claimed; `obj.raw` is what its record holds now.
    pub obj: Object,
    renewed_ms: u64,
}

impl Claim {
    /// The claim of `obj` at `key` for `op`, to be written by the caller's
    /// compare-and-swap (`claim.obj.raw`). A claim starts a write, so the
    /// version and the modification time change: a conditional delete by
    /// someone who read the object before is refused.
    pub fn of(key: &str, obj: &Object, op: LeaseOp) -> Claim {
        let now = record::now_ms();
        let head = Head {
            version: keys::fresh_version(),
            modified_ms: now,
            lease: Some(Lease {
                until_ms: now + LEASE_MS,
                op,
            }),
            ..obj.head.clone()
        };
        let raw = record::encode(&head, &obj.inline);
        Claim {
            key: key.to_string(),
            obj: Object {
                head,
                inline: obj.inline.clone(),
                raw,
            },
            renewed_ms: now,
        }
    }

    /// Renew the lease if a third of it has passed.
    pub fn renew_if_due(&mut self) -> Result<(), ObjectError> {
        if record::now_ms().saturating_sub(self.renewed_ms) >= RENEW_AFTER_MS {
            self.renew()?;
        }
        Ok(())
    }

    /// Renew the lease now; the claim's error if it was lost.
    pub fn renew(&mut self) -> Result<(), ObjectError> {
        let now = record::now_ms();
        let mut head = self.obj.head.clone();
        if let Some(l) = head.lease.as_mut() {
            l.until_ms = now + LEASE_MS;
        }
        let raw = record::encode(&head, &self.obj.inline);
        if !store::swap_from(&self.key, &self.obj.raw, &raw)? {
            return Err(lost(&self.key));
        }
        self.obj.head = head;
        self.obj.raw = raw;
        self.renewed_ms = now;
        Ok(())
    }

    /// End the claim by writing the object's next version; the claim's
    /// error if it was lost (nothing was written).
    pub fn replace(self, head: &Head, inline: &[u8]) -> Result<(), ObjectError> {
        if store::swap_from(&self.key, &self.obj.raw, &record::encode(head, inline))? {
            Ok(())
        } else {
            Err(lost(&self.key))
        }
    }

    /// End the claim leaving the object as it was before it (`before`), or
    /// empty and unclaimed if the claim created it. Best effort: a claim
    /// not given back expires.
    pub fn give_back(self, before: Option<&Object>) {
        let raw = match before {
            Some(o) => o.raw.clone(),
            None => {
                let head = Head {
                    lease: None,
                    ..self.obj.head.clone()
                };
                record::encode(&head, &self.obj.inline)
            }
        };
        let _ = store::swap_from(&self.key, &self.obj.raw, &raw);
    }

    /// End the claim by removing the object: a tombstone in place of the
    /// claimed record, then the tombstone itself. False if the claim was
    /// lost meanwhile (someone else now decides what becomes of the record
    /// and its chunks).
    pub fn remove(self) -> bool {
        match store::swap_from(&self.key, &self.obj.raw, &record::tombstone()) {
            Ok(true) => {
                let _ = store::delete(&keys::record_key(&self.key));
                true
            }
            _ => false,
        }
    }
}

/// What a holder that lost its claim answers: `not-found` if the object
/// was removed, `busy` if another writer holds it now.
fn lost(key: &str) -> ObjectError {
    match store::read(key) {
        Ok(Seen::Live(_)) => ObjectError::Busy,
        Ok(Seen::Corrupt(m)) => ObjectError::Io(m),
        Ok(_) => ObjectError::NotFound,
        Err(e) => e,
    }
}
