//! Chunks: writing one write's bytes under a fresh id, reading any range of
//! an object back a chunk at a time, and deleting chunks no record needs.

use crate::bindings::exports::skiff::registry::objects::ObjectError;
use crate::keys;
use crate::record::{Body, Extent, Head, Lease, LeaseOp, Object, Seen};
use crate::store;
use std::collections::HashSet;

/// Chunk keys deleted per request.
const DELETE_BATCH: usize = 128;

fn to_usize(n: u64) -> Result<usize, ObjectError> {
    usize::try_from(n).map_err(|_| ObjectError::Io(format!("{n} bytes do not fit in memory")))
}

/// One write's bytes on their way into chunks `c/<id>/0, 1, …`: each chunk
/// is stored as soon as it is full, so at most one is in memory.
pub struct ChunkWriter {
    id: String,
    chunk_size: u64,
    buf: Vec<u8>,
    /// Chunks stored so far.
    stored: u64,
}

impl ChunkWriter {
    /// A writer under a fresh id whose first bytes are `carry` (the tail of
    /// the object that an append continues).
    pub fn new(chunk_size: u64, carry: Vec<u8>) -> Result<ChunkWriter, ObjectError> {
        let mut w = ChunkWriter {
            id: keys::fresh_id(),
            chunk_size,
            buf: Vec::new(),
            stored: 0,
        };
        w.push(&carry)?;
        Ok(w)
    }

    pub fn push(&mut self, mut data: &[u8]) -> Result<(), ObjectError> {
        let full = to_usize(self.chunk_size)?;
        while !data.is_empty() {
            if self.buf.capacity() == 0 {
                self.buf.reserve_exact(full);
            }
            let take = (full - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == full {
                self.store_buffer()?;
            }
        }
        Ok(())
    }

    fn store_buffer(&mut self) -> Result<(), ObjectError> {
        store::set(&keys::chunk_key(&self.id, self.stored), &self.buf)?;
        self.stored += 1;
        self.buf.clear();
        Ok(())
    }

    /// The bytes pushed, if no chunk was stored yet and they are at most
    /// `max`: a small object stays inline in its record.
    pub fn take_small(&mut self, max: usize) -> Option<Vec<u8>> {
        (self.stored == 0 && self.buf.len() <= max).then(|| std::mem::take(&mut self.buf))
    }

    /// Store what is left; the extent the chunks make (possibly empty).
    pub fn finish(mut self) -> Result<Extent, ObjectError> {
        let size = self.stored * self.chunk_size + self.buf.len() as u64;
        if !self.buf.is_empty() {
            if let Err(e) = self.store_buffer() {
                self.abandon();
                return Err(e);
            }
        }
        Ok(Extent { size, id: self.id })
    }

    /// Give up: delete the chunks stored so far.
    pub fn abandon(self) {
        let stored = Extent {
            id: self.id,
            size: self.stored * self.chunk_size,
        };
        drop_extents(self.chunk_size, &[stored]);
    }
}

/// Chunk `n` of extent `id`, which must hold `len` bytes.
pub fn read_chunk(key: &str, id: &str, n: u64, len: u64) -> Result<Vec<u8>, ObjectError> {
    let ck = keys::chunk_key(id, n);
    match store::get(&ck)? {
        Some(bytes) if bytes.len() as u64 == len => Ok(bytes),
        Some(bytes) => Err(ObjectError::Io(format!(
            "{key}: chunk {ck} holds {} bytes, not {len}",
            bytes.len()
        ))),
        None => Err(ObjectError::Io(format!("{key}: chunk {ck} is missing"))),
    }
}

/// Hand bytes `[start, start+len)` of the object `key` to `sink` in order,
/// a chunk (or less) at a time. The range must lie within the object.
pub fn for_each_piece(
    key: &str,
    obj: &Object,
    start: u64,
    len: u64,
    mut sink: impl FnMut(&[u8]) -> Result<(), ObjectError>,
) -> Result<(), ObjectError> {
    let end = start
        .checked_add(len)
        .filter(|end| *end <= obj.head.size)
        .ok_or_else(|| {
            ObjectError::Io(format!(
                "{key}: bytes {start}+{len} are not within its {} bytes",
                obj.head.size
            ))
        })?;
    if len == 0 {
        return Ok(());
    }
    match &obj.head.body {
        Body::Inline => sink(&obj.inline[to_usize(start)?..to_usize(end)?]),
        Body::Chunks {
            chunk_size,
            extents,
        } => {
            let cs = *chunk_size;
            let mut base = 0u64;
            for e in extents {
                let (e0, e1) = (base, base + e.size);
                base = e1;
                let (from, to) = (start.max(e0), end.min(e1));
                if from >= to {
                    continue;
                }
                for n in (from - e0) / cs..=(to - 1 - e0) / cs {
                    let c0 = e0 + n * cs;
                    let clen = cs.min(e.size - n * cs);
                    let bytes = read_chunk(key, &e.id, n, clen)?;
                    let a = to_usize(from.max(c0) - c0)?;
                    let b = to_usize(to.min(c0 + clen) - c0)?;
                    sink(&bytes[a..b])?;
                }
            }
            Ok(())
        }
    }
}

/// Every byte of the object `key`, in memory (for `get`, which is bounded).
pub fn collect(key: &str, obj: &Object) -> Result<Vec<u8>, ObjectError> {
    if let Body::Inline = obj.head.body {
        return Ok(obj.inline.clone());
    }
    let mut out = Vec::with_capacity(to_usize(obj.head.size.min(64 << 20))?);
    for_each_piece(key, obj, 0, obj.head.size, |b| {
        out.extend_from_slice(b);
        Ok(())
    })?;
    Ok(out)
}

/// Delete the chunks of `extents` (best effort: a chunk left behind is
/// garbage, and no record names it).
pub fn drop_extents(chunk_size: u64, extents: &[Extent]) {
    let keys: Vec<String> = extents
        .iter()
        .flat_map(|e| (0..e.chunks(chunk_size)).map(move |n| keys::chunk_key(&e.id, n)))
        .collect();
    for batch in keys.chunks(DELETE_BATCH) {
        let _ = store::delete_many(batch);
    }
}

/// The extents the record of `holder` uses; `None` when that cannot be
/// told (a read failed), so a caller keeps everything.
fn held_by(holder: &str) -> Option<HashSet<String>> {
    if !keys::valid_key(holder) {
        return Some(HashSet::new());
    }
    match store::read(holder).ok()? {
        Seen::Live(Object {
            head:
                Head {
                    body: Body::Chunks { extents, .. },
                    ..
                },
            ..
        }) => Some(extents.into_iter().map(|e| e.id).collect()),
        Seen::Corrupt(_) => None,
        _ => Some(HashSet::new()),
    }
}

/// Whether a publish of `head`'s object to `to` got as far as making `to`
/// hold its chunks (the publisher stopped before removing the object).
pub fn landed(head: &Head, to: &str) -> Result<bool, ObjectError> {
    let Body::Chunks { extents, .. } = &head.body else {
        // Inline bytes are copied, never shared.
        return Ok(false);
    };
    let held = held_by(to).ok_or_else(|| ObjectError::Io(format!("{to}: unreadable")))?;
    Ok(extents.iter().any(|e| held.contains(&e.id)))
}

/// Delete the chunks of a record that was replaced or removed (its new
/// version is in place, so no reader will be sent to them again). Chunks
/// that a publish moved to another object stay: see [`landed`].
pub fn release(head: &Head) {
    let Body::Chunks {
        chunk_size,
        extents,
    } = &head.body
    else {
        return;
    };
    let kept = match &head.lease {
        Some(Lease {
            op: LeaseOp::Publish { to },
            ..
        }) => match held_by(to) {
            Some(ids) => ids,
            // Cannot tell whether they moved: garbage rather than damage.
            None => return,
        },
        _ => HashSet::new(),
    };
    let doomed: Vec<Extent> = extents
        .iter()
        .filter(|e| !kept.contains(&e.id))
        .cloned()
        .collect();
    drop_extents(*chunk_size, &doomed);
}
