//! Streaming an object out: `read-to` and `digest`, a chunk at a time, so a
//! blob never sits whole in guest memory.

use crate::bindings::exports::skiff::registry::objects::{HashAlgorithm, ObjectError};
use crate::chunks;
use crate::hashing::Hasher;
use crate::keys;
use crate::streams;
use crate::whole;
use wasip2::io::streams::OutputStream;

/// Reads started again when the object was replaced before any byte went out.
const TRIES: usize = 3;

pub fn read_to(key: &str, start: u64, len: u64, dst: &OutputStream) -> Result<(), ObjectError> {
    keys::check(key)?;
    let mut tries = 0;
    loop {
        let obj = whole::live(key)?;
        let mut sent = false;
        let copied = chunks::for_each_piece(key, &obj, start, len, |piece| {
            sent = true;
            streams::write_all(dst, piece)
        });
        match copied {
            Ok(()) => return streams::finish(dst),
            // Its chunks went with the version they belonged to; once bytes
            // went out, a retry would send them twice.
            Err(ObjectError::Io(_))
                if !sent && tries + 1 < TRIES && whole::changed(key, &obj.head.version) =>
            {
                tries += 1
            }
            Err(e) => return Err(e),
        }
    }
}

/// The hex digest of the whole object, always from its bytes (scrub relies
/// on this to find damage; a hash state kept in the record would hide it).
pub fn digest(key: &str, algorithm: HashAlgorithm) -> Result<String, ObjectError> {
    keys::check(key)?;
    whole::read_stable(key, |obj| {
        let mut h = Hasher::new(algorithm);
        chunks::for_each_piece(key, obj, 0, obj.head.size, |piece| {
            h.update(piece);
            Ok(())
        })?;
        Ok(h.hex())
    })
}
