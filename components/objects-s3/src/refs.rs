//! Dedupe references, read only. A native server with dedupe on may have
//! stored a blob as a *reference*: an empty object naming the digest,
//! whose bytes are in another blob of the bucket, found through an index
//! that lives with that server (not in the bucket). This component never
//! writes references; when it meets one it finds a blob holding the bytes
//! by listing the whole store for a key ending in `/blobs/<alg>/<hex>`.
//!
//! That listing is slow (a request per thousand keys of the store), which
//! is acceptable only because it is rare: buckets written by this
//! component have no references, and in a bucket shared with a deduping
//! server only blobs pushed to several repositories are references.
//!
//! Nor is that index kept up to date from here: deleting a blob that the
//! native server has made the holder of references leaves those
//! references without bytes for it (readers here still find another copy
//! by listing, if there is one). A bucket with dedupe on should be
//! garbage-collected by the native server.

use crate::bucket::{Bucket, Piece};
use crate::ObjectError;

impl Bucket {
    /// The pieces of the blob `digest` of `size` bytes, which the
    /// reference at `reference` (a full key) stands for.
    pub fn reference_pieces(
        &self,
        digest: &str,
        size: u64,
        reference: &str,
    ) -> Result<Vec<Piece>, ObjectError> {
        // No bytes to find: every empty blob holds them.
        if size == 0 {
            return Ok(Vec::new());
        }
        let (alg, hex) = digest
            .split_once(':')
            .ok_or_else(|| ObjectError::Io(format!("{reference}: a reference to {digest:?}")))?;
        let suffix = format!("/blobs/{alg}/{hex}");
        let mut holder = None;
        // References are empty, so an object of that name and the
        // recorded size is a copy of the bytes, not another reference.
        self.list(&self.root(), false, |page| {
            holder = page
                .objects
                .into_iter()
                .find(|(k, n)| *n == size && k.ends_with(&suffix) && k != reference)
                .map(|(key, size)| Piece { key, size });
            holder.is_none()
        })?;
        // Like the native backend when its index has no holder: the
        // reference's bytes are gone.
        holder.map(|p| vec![p]).ok_or(ObjectError::NotFound)
    }
}
