//! `copy`: the same bytes under another key (a cross-repository mount).
//!
//! The chunks are copied, each under the copy's own fresh id, so the two
//! objects share nothing and either may be replaced or removed alone. When
//! the destination is a blob key, the bytes are hashed as they are copied
//! and the copy is refused unless they hash to its name.

use crate::bindings::exports::skiff::registry::objects::{Condition, ObjectError};
use crate::chunks::{self, ChunkWriter};
use crate::hashing::{algorithm_of, Hasher};
use crate::keys;
use crate::record::{Body, Extent, Head, Object, Seen};
use crate::store;
use crate::whole;

pub fn copy(src: &str, dst: &str, when: Condition) -> Result<(), ObjectError> {
    keys::check(src)?;
    keys::check(dst)?;
    // Refused at the end anyway: spare copying the bytes first.
    if matches!(when, Condition::IfAbsent) && matches!(store::read(dst)?, Seen::Live(_)) {
        return Err(ObjectError::PreconditionFailed);
    }
    let digest = keys::content_digest(dst);
    let (head, inline) = whole::read_stable(src, |obj| duplicate(src, obj, digest.as_ref()))?;
    if let Err(e) = whole::install(dst, &head, &inline, &when) {
        chunks::release(&head);
        return Err(e);
    }
    Ok(())
}

/// A new version holding `obj`'s bytes in chunks of its own, checked
/// against `digest` when given.
fn duplicate(
    src: &str,
    obj: &Object,
    digest: Option<&skiff_core::Digest>,
) -> Result<(Head, Vec<u8>), ObjectError> {
    let mut hash = digest.map(|d| Hasher::new(algorithm_of(d)));
    let body = match &obj.head.body {
        Body::Inline => {
            if let Some(h) = hash.as_mut() {
                h.update(&obj.inline);
            }
            Body::Inline
        }
        Body::Chunks {
            chunk_size,
            extents,
        } => {
            let mut copied: Vec<Extent> = Vec::new();
            for e in extents {
                match copy_extent(src, e, *chunk_size, hash.as_mut()) {
                    Ok(x) => copied.push(x),
                    Err(err) => {
                        chunks::drop_extents(*chunk_size, &copied);
                        return Err(err);
                    }
                }
            }
            Body::Chunks {
                chunk_size: *chunk_size,
                extents: copied,
            }
        }
    };
    let head = Head::fresh(obj.head.size, body);
    if let (Some(h), Some(d)) = (hash, digest) {
        let actual = h.hex();
        if actual != d.hex() {
            chunks::release(&head);
            return Err(ObjectError::DigestMismatch(actual));
        }
    }
    Ok((head, obj.inline.clone()))
}

/// Copy one extent's chunks under a fresh id, hashing them on the way.
fn copy_extent(
    src: &str,
    e: &Extent,
    chunk_size: u64,
    mut hash: Option<&mut Hasher>,
) -> Result<Extent, ObjectError> {
    let mut w = ChunkWriter::new(chunk_size, Vec::new())?;
    let copied = (|| {
        for n in 0..e.chunks(chunk_size) {
            let len = chunk_size.min(e.size - n * chunk_size);
            let bytes = chunks::read_chunk(src, &e.id, n, len)?;
            if let Some(h) = hash.as_deref_mut() {
                h.update(&bytes);
            }
            w.push(&bytes)?;
        }
        Ok(())
    })();
    match copied {
        Ok(()) => w.finish(),
        Err(err) => {
            w.abandon();
            Err(err)
        }
    }
}
