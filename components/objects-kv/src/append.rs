//! `write-from`: appending a stream to an object (an upload's bytes).
//!
//! An append claims the object (a lease in its record: the offset check and
//! the append are one step, and no publish can take the bytes meanwhile),
//! stores what it reads as new chunks under a fresh id, and ends the claim
//! with the record of the longer object. The bytes after the last full
//! chunk are carried into the append's first chunk, so every chunk but the
//! object's last is full however small the appends; the chunk they were in
//! is deleted once the new record is in place. An object of at most 64 KiB
//! stays inline in its record (a config blob's upload). The SHA-256 state
//! of all the bytes travels in the record, so any instance can continue the
//! upload and `publish` needs no second read.

use crate::bindings::exports::skiff::registry::objects::{ObjectError, Written};
use crate::chunks::{self, ChunkWriter};
use crate::claim::Claim;
use crate::keys;
use crate::record::{self, Body, Head, LeaseOp, Object, Seen, CHUNK_SIZE, INLINE_MAX};
use crate::store::{self, Step};
use crate::streams;
use skiff_core::resumable::Sha256State;
use wasip2::io::streams::InputStream;

pub fn write_from(
    key: &str,
    offset: u64,
    src: &InputStream,
    limit: Option<u64>,
) -> Result<Written, ObjectError> {
    keys::check(key)?;
    let (claim, before) = take(key, offset)?;
    let mut claim = claim;
    let grown = match grow(&mut claim, offset, src, limit) {
        Ok(g) => g,
        Err(e) => {
            claim.give_back(before.as_ref());
            return Err(e);
        }
    };
    let written = Written {
        size: grown.head.size,
        sha256: grown.head.sha256.as_ref().map(Sha256State::hex),
    };
    if let Err(e) = claim.replace(&grown.head, &grown.inline) {
        chunks::drop_extents(grown.chunk_size, &grown.new);
        return Err(e);
    }
    // The chunk the carried tail came from: no record names it now.
    if let Some(c) = grown.superseded {
        let _ = store::delete(&keys::chunk_key(&c.id, c.n));
    }
    Ok(written)
}

/// Claim the object at `key` for an append at `offset`, creating it when
/// `offset` is 0 and there is none; the claim and the object before it.
fn take(key: &str, offset: u64) -> Result<(Claim, Option<Object>), ObjectError> {
    store::change(key, |seen| {
        let now = record::now_ms();
        let before = match seen {
            Seen::Absent if offset == 0 => None,
            Seen::Removing if offset == 0 => return Ok(Step::Wait),
            Seen::Absent | Seen::Removing => return Err(ObjectError::NotFound),
            Seen::Corrupt(m) => return Err(ObjectError::Io(m)),
            Seen::Live(obj) => {
                if obj.head.held(now).is_some() {
                    return Err(ObjectError::Busy);
                }
                // A publish that stopped after its blob took these chunks:
                // they are the blob's now, and nothing may be appended.
                if let Some(record::Lease {
                    op: LeaseOp::Publish { to },
                    ..
                }) = &obj.head.lease
                {
                    if chunks::landed(&obj.head, to)? {
                        return Err(ObjectError::NotFound);
                    }
                }
                if obj.head.size != offset {
                    return Err(ObjectError::PreconditionFailed);
                }
                Some(obj)
            }
        };
        let base = before.clone().unwrap_or_else(empty);
        let claim = Claim::of(key, &base, LeaseOp::Append);
        Ok(Step::Write(claim.obj.raw.clone(), (claim, before)))
    })
}

/// A new, empty object for appends.
fn empty() -> Object {
    let head = Head {
        sha256: Some(Sha256State::default()),
        ..Head::fresh(
            0,
            Body::Chunks {
                chunk_size: CHUNK_SIZE,
                extents: Vec::new(),
            },
        )
    };
    Object {
        raw: record::encode(&head, &[]),
        head,
        inline: Vec::new(),
    }
}

/// The object after an append, not yet in place.
struct Grown {
    head: Head,
    /// Its bytes, when it is small enough to stay inline.
    inline: Vec<u8>,
    chunk_size: u64,
    /// The extent this append stored (to delete if it cannot be put in place).
    new: Vec<record::Extent>,
    /// The chunk whose bytes were carried into the new extent.
    superseded: Option<ChunkAt>,
}

/// One chunk of an extent: `c/<id>/<n>`.
struct ChunkAt {
    id: String,
    n: u64,
}

/// The bytes after an object's last full chunk, and the chunk they are in.
struct Tail {
    bytes: Vec<u8>,
    chunk: Option<ChunkAt>,
}

fn grow(
    claim: &mut Claim,
    offset: u64,
    src: &InputStream,
    limit: Option<u64>,
) -> Result<Grown, ObjectError> {
    let key = claim.key.clone();
    let obj = claim.obj.clone();
    let (chunk_size, mut extents, carry, superseded) = match &obj.head.body {
        Body::Inline => (CHUNK_SIZE, Vec::new(), obj.inline.clone(), None),
        Body::Chunks {
            chunk_size,
            extents,
        } => {
            let mut extents = extents.clone();
            let tail = carry_tail(&key, &mut extents, *chunk_size)?;
            (*chunk_size, extents, tail.bytes, tail.chunk)
        }
    };
    // The hash of the whole object needs every byte before `offset`: this
    // append is all of them, or earlier appends kept their state.
    let mut hash = if offset == 0 {
        Some(Sha256State::default())
    } else {
        obj.head.sha256.clone()
    };
    let mut writer = ChunkWriter::new(chunk_size, carry)?;
    let mut total = 0u64;
    let copied = (|| loop {
        let want = match limit {
            Some(l) if total >= l => return Ok(()),
            Some(l) => l - total,
            None => streams::READ_PIECE,
        };
        let Some(piece) = streams::read(src, want)? else {
            return Ok(());
        };
        if let Some(h) = hash.as_mut() {
            h.update(&piece);
        }
        writer.push(&piece)?;
        total += piece.len() as u64;
        claim.renew_if_due()?;
    })();
    if let Err(e) = copied {
        writer.abandon();
        return Err(e);
    }
    let size = offset
        .checked_add(total)
        .ok_or_else(|| ObjectError::Io(format!("{key}: the size overflows")))?;
    if extents.is_empty() {
        if let Some(inline) = writer.take_small(INLINE_MAX) {
            return Ok(Grown {
                head: Head {
                    sha256: hash,
                    ..Head::fresh(size, Body::Inline)
                },
                inline,
                chunk_size,
                new: Vec::new(),
                superseded,
            });
        }
    }
    let extent = writer.finish()?;
    let new: Vec<record::Extent> = Some(extent).filter(|e| e.size > 0).into_iter().collect();
    extents.extend(new.iter().cloned());
    let head = Head {
        sha256: hash,
        ..Head::fresh(
            size,
            Body::Chunks {
                chunk_size,
                extents,
            },
        )
    };
    Ok(Grown {
        head,
        inline: Vec::new(),
        chunk_size,
        new,
        superseded,
    })
}

/// Take the bytes after the last full chunk out of `extents` (they go into
/// the append's first chunk); the bytes and the chunk they were in.
fn carry_tail(
    key: &str,
    extents: &mut Vec<record::Extent>,
    chunk_size: u64,
) -> Result<Tail, ObjectError> {
    let none = Tail {
        bytes: Vec::new(),
        chunk: None,
    };
    let Some(last) = extents.last_mut() else {
        return Ok(none);
    };
    let tail = last.size % chunk_size;
    if tail == 0 {
        return Ok(none);
    }
    let n = last.size / chunk_size;
    let bytes = chunks::read_chunk(key, &last.id, n, tail)?;
    let id = last.id.clone();
    last.size -= tail;
    if last.size == 0 {
        extents.pop();
    }
    Ok(Tail {
        bytes,
        chunk: Some(ChunkAt { id, n }),
    })
}
