//! `publish`: an upload's bytes become a blob, checked against its digest.
//!
//! 1. Claim `src` with a publish lease naming `dst`: appends and other
//!    publishes answer `busy` from now on, so the bytes checked are the
//!    bytes published.
//! 2. Check the digest: from the SHA-256 state the appends kept, or by
//!    hashing the chunks (renewing the lease as it goes). A mismatch gives
//!    the claim back and changes nothing.
//! 3. Renew the lease, then put the blob in place by compare-and-swap on
//!    `dst`: a record naming `src`'s chunks (they are moved, not copied).
//!    A `dst` already there is hashed: if it holds the content it is
//!    touched and `src`'s chunks are dropped (`existed`); if not, it was
//!    damaged and is replaced.
//! 4. Remove `src`'s record (and, unless `dst` took them, its chunks).
//!
//! A publisher that stops between 3 and 4 leaves `src` claimed, naming a
//! `dst` that holds its chunks: whoever next deals with `src` (a delete, an
//! append, a retried publish) sees that the publish landed
//! ([`chunks::landed`]) and leaves those chunks to `dst`.

use crate::bindings::exports::skiff::registry::objects::{
    Content, HashAlgorithm, ObjectError, Published,
};
use crate::chunks;
use crate::claim::Claim;
use crate::hashing::Hasher;
use crate::keys;
use crate::record::{self, Head, Lease, LeaseOp, Object, Seen};
use crate::store::{self, Slot, Step};
use std::time::Duration;

/// Attempts at putting the blob in place against concurrent writers of it.
const PLACE_TRIES: u32 = 16;
/// Naps while a tombstone at `dst` is being removed (as `store::change`).
const MAX_NAPS: u32 = 400;
const NAP: Duration = Duration::from_millis(5);

/// What claiming `src` found.
enum Taken {
    /// The claim, and the object before it (to give back).
    Claimed(Box<(Claim, Object)>),
    /// An earlier publish of `src` to this `dst` landed and stopped before
    /// removing `src`; now it has been removed.
    Finished(Published),
}

pub fn publish(src: &str, dst: &str, expected: Content) -> Result<Published, ObjectError> {
    keys::check(src)?;
    keys::check(dst)?;
    let (mut claim, before) = match take(src, dst)? {
        Taken::Claimed(c) => *c,
        Taken::Finished(p) => return Ok(p),
    };
    let actual = match digest_of(&mut claim, expected.algorithm) {
        Ok(hex) => hex,
        Err(e) => {
            claim.give_back(Some(&before));
            return Err(e);
        }
    };
    if actual != expected.hex {
        claim.give_back(Some(&before));
        return Err(ObjectError::DigestMismatch(actual));
    }
    let existed = match place(&mut claim, dst, &expected) {
        Ok(existed) => existed,
        Err(e) => {
            claim.give_back(Some(&before));
            return Err(e);
        }
    };
    let size = claim.obj.head.size;
    let head = claim.obj.head.clone();
    // Its lease names `dst`, so the chunks `dst` took stay.
    if claim.remove() {
        chunks::release(&head);
    }
    Ok(Published { size, existed })
}

fn take(src: &str, dst: &str) -> Result<Taken, ObjectError> {
    let now = record::now_ms();
    store::change(src, |seen| {
        let obj = seen.live()?;
        if obj.head.held(now).is_some() {
            return Err(ObjectError::Busy);
        }
        if let Some(Lease {
            op: LeaseOp::Publish { to },
            ..
        }) = &obj.head.lease
        {
            if chunks::landed(&obj.head, to)? {
                // Finish that publish: the bytes are `to`'s now.
                let published = Published {
                    size: obj.head.size,
                    existed: true,
                };
                let done = if to == dst {
                    Ok(Taken::Finished(published))
                } else {
                    Err(ObjectError::NotFound)
                };
                return Ok(Step::Write(record::tombstone(), (done, Some(obj.head))));
            }
        }
        let claim = Claim::of(
            src,
            &obj,
            LeaseOp::Publish {
                to: dst.to_string(),
            },
        );
        let raw = claim.obj.raw.clone();
        Ok(Step::Write(
            raw,
            (Ok(Taken::Claimed(Box::new((claim, obj)))), None),
        ))
    })
    .and_then(|(taken, finished)| {
        if let Some(head) = finished {
            let _ = store::delete(&keys::record_key(src));
            chunks::release(&head);
        }
        taken
    })
}

/// The hex digest of the claimed bytes under `algorithm`.
fn digest_of(claim: &mut Claim, algorithm: HashAlgorithm) -> Result<String, ObjectError> {
    if let (HashAlgorithm::Sha256, Some(state)) = (algorithm, &claim.obj.head.sha256) {
        return Ok(state.hex());
    }
    let obj = claim.obj.clone();
    let mut h = Hasher::new(algorithm);
    chunks::for_each_piece(&claim.key.clone(), &obj, 0, obj.head.size, |piece| {
        h.update(piece);
        claim.renew_if_due()
    })?;
    Ok(h.hex())
}

/// Put the claimed bytes in place at `dst`; whether `dst` already held
/// them.
fn place(claim: &mut Claim, dst: &str, expected: &Content) -> Result<bool, ObjectError> {
    let store_key = keys::record_key(dst);
    let mut naps = 0;
    for _ in 0..PLACE_TRIES {
        let mut slot = Slot::read(&store_key)?;
        let now = record::now_ms();
        let existing = match record::decode(dst, slot.raw.take()) {
            Seen::Removing => {
                naps += 1;
                if naps > MAX_NAPS {
                    return Err(ObjectError::Busy);
                }
                std::thread::sleep(NAP);
                continue;
            }
            Seen::Live(o) if o.head.held(now).is_some() => return Err(ObjectError::Busy),
            Seen::Live(o) => Some(o),
            Seen::Absent | Seen::Corrupt(_) => None,
        };
        let intact = match &existing {
            Some(o) => holds(dst, o, claim, expected)?,
            None => false,
        };
        // The last renewal is at most a third of a lease ago, so the claim
        // outlives the swap (see `lib.rs` on timing).
        claim.renew_if_due()?;
        if intact {
            let Some(o) = existing else { continue };
            let touched = Head {
                version: keys::fresh_version(),
                modified_ms: record::now_ms(),
                ..o.head.clone()
            };
            if slot.swap(&record::encode(&touched, &o.inline))? {
                return Ok(true);
            }
            continue;
        }
        let blob = Head {
            sha256: None,
            lease: None,
            ..Head::fresh(claim.obj.head.size, claim.obj.head.body.clone())
        };
        if slot.swap(&record::encode(&blob, &claim.obj.inline))? {
            // A damaged copy was replaced: its chunks are no one's now.
            if let Some(o) = existing {
                chunks::release(&o.head);
            }
            return Ok(false);
        }
    }
    Err(ObjectError::Busy)
}

/// Whether the object `o` at `dst` holds the content `expected` (of the
/// claimed bytes' size), checked by hashing it.
fn holds(
    dst: &str,
    o: &Object,
    claim: &mut Claim,
    expected: &Content,
) -> Result<bool, ObjectError> {
    if o.head.size != claim.obj.head.size {
        return Ok(false);
    }
    let mut h = Hasher::new(expected.algorithm);
    let hashed = chunks::for_each_piece(dst, o, 0, o.head.size, |piece| {
        h.update(piece);
        claim.renew_if_due()
    });
    match hashed {
        Ok(()) => Ok(h.hex() == expected.hex),
        // A chunk missing or the wrong size: damaged, or replaced under us
        // (then the swap fails and it is looked at again).
        Err(ObjectError::Io(_)) => Ok(false),
        Err(e) => Err(e),
    }
}
