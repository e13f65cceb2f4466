//! Dedupe on S3: a blob pushed into a repository when the bucket already
//! holds it is stored as a reference (an empty object naming the digest and
//! size), resolved through the holders index. The protocol, so no reader
//! ever finds a reference without bytes behind it:
//!
//! - **link** (a publish or a mount): record the key as a reference of the
//!   current holder *first*, then write the reference object. A holder
//!   being deleted meanwhile gives its bytes to every recorded reference,
//!   written yet or not.
//! - **delete a reference**: forget it in the index, then delete it.
//! - **delete the holder**: copy its bytes onto one reference
//!   (server-side), make that the holder (conditional on the index not
//!   having changed), and only then delete the old holder; with no
//!   references left, forget the digest first.
//!
//! A reader that resolved the old holder just before it went finds it gone
//! and resolves again (`read_to`, `digest`).

use super::{sdk_err, DIGEST_META, REF_MARK, S3, SIZE_META};
use crate::objects::holders::Holders;
use crate::runtime::skiff::registry::objects::ObjectError;
use aws_sdk_s3::primitives::ByteStream;

/// Rounds of a protocol step lost to concurrent changes before it gives up
/// deduplicating (a link stores a copy instead; a delete reports busy).
const ROUNDS: usize = 8;

fn index_err(e: String) -> ObjectError {
    ObjectError::Io(e)
}

impl S3 {
    fn index(&self) -> Result<&dyn Holders, ObjectError> {
        self.holders
            .as_deref()
            .ok_or_else(|| ObjectError::Io("a dedupe reference, but no dedupe cache".into()))
    }

    /// The full key of the object holding `digest`'s bytes, for the
    /// reference at `key`.
    pub(super) async fn holder_of(&self, digest: &str, key: &str) -> Result<String, ObjectError> {
        match self.index()?.entry(digest).await.map_err(index_err)? {
            Some(e) => Ok(e.holder),
            None => {
                tracing::error!(
                    key,
                    digest,
                    "a dedupe reference with no holder in the cache"
                );
                Err(ObjectError::NotFound)
            }
        }
    }

    /// Whether a new blob at `dst` can be a reference.
    pub(super) fn dedupes(&self) -> bool {
        self.dedupe && self.holders.is_some()
    }

    /// Give `dst` the blob `digest` of `size` bytes: a reference to the
    /// stored copy if there is one, else a copy of `pieces` (which becomes
    /// the holder). `source` is a stored copy to register as the holder
    /// when the index knows none (a mount's source). `replace`: `dst` is
    /// there but damaged, and is written over.
    pub(super) async fn link(
        &self,
        digest: &str,
        dst: &str,
        size: u64,
        pieces: &[(String, u64)],
        replace: bool,
        mut source: Option<String>,
    ) -> Result<(), ObjectError> {
        let index = self.index()?;
        let dst_full = self.full(dst);
        for _ in 0..ROUNDS {
            match index.entry(digest).await.map_err(index_err)? {
                None => {
                    if let Some(src) = source.take() {
                        index.create(digest, &src).await.map_err(index_err)?;
                        continue;
                    }
                    match self.assemble(pieces, dst, digest, replace).await {
                        Ok(()) => {}
                        // Published there meanwhile, by a concurrent push.
                        Err(ObjectError::PreconditionFailed) => return Ok(()),
                        Err(e) => return Err(e),
                    }
                    // Lost to a concurrent first copy: this one stays a
                    // copy of its own, readable, just not shared.
                    index.create(digest, &dst_full).await.map_err(index_err)?;
                    return Ok(());
                }
                // The index names `dst`, which is absent or damaged: the
                // bytes are restored in place.
                Some(e) if e.holder == dst_full => {
                    return self.assemble(pieces, dst, digest, true).await;
                }
                Some(e) => {
                    if !index
                        .add_ref(digest, &dst_full, &e.holder)
                        .await
                        .map_err(index_err)?
                    {
                        continue;
                    }
                    return match self.put_ref(dst, digest, size, replace).await {
                        // A holder being deleted gave `dst` its bytes already.
                        Ok(()) | Err(ObjectError::PreconditionFailed) => Ok(()),
                        Err(e) => Err(e),
                    };
                }
            }
        }
        tracing::warn!(
            dst,
            digest,
            "dedupe: the cache kept changing; storing a copy"
        );
        match self.assemble(pieces, dst, digest, replace).await {
            Ok(()) | Err(ObjectError::PreconditionFailed) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn put_ref(
        &self,
        key: &str,
        digest: &str,
        size: u64,
        replace: bool,
    ) -> Result<(), ObjectError> {
        let req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .metadata(REF_MARK, digest)
            .metadata(SIZE_META, size.to_string())
            .metadata(DIGEST_META, digest)
            .body(ByteStream::from_static(b""));
        let req = if replace { req } else { req.if_none_match("*") };
        req.send().await.map_err(sdk_err)?;
        Ok(())
    }

    /// Forget the reference `key` of `digest` before it is deleted.
    pub(super) async fn forget_ref(&self, digest: &str, key: &str) -> Result<(), ObjectError> {
        self.index()?
            .remove_ref(digest, &self.full(key))
            .await
            .map_err(index_err)
    }

    /// Before `key`, a stored copy of `digest` of `size` bytes, is deleted:
    /// if it holds the bytes for references, move them to one of those.
    pub(super) async fn release_holder(
        &self,
        digest: &str,
        key: &str,
        size: u64,
    ) -> Result<(), ObjectError> {
        let index = self.index()?;
        let full = self.full(key);
        for _ in 0..ROUNDS {
            let Some(e) = index.entry(digest).await.map_err(index_err)? else {
                return Ok(());
            };
            if e.holder != full {
                return Ok(());
            }
            let Some(next) = e.refs.iter().next().cloned() else {
                if index.remove(digest, &full).await.map_err(index_err)? {
                    return Ok(());
                }
                continue;
            };
            // `next` gets the bytes before it becomes the holder, so a
            // reader resolving it at any moment finds them.
            let Some(next_key) = self.key_of(&next) else {
                index.remove_ref(digest, &next).await.map_err(index_err)?;
                continue;
            };
            self.assemble(&[(full.clone(), size)], &next_key, digest, true)
                .await?;
            if index
                .promote(digest, &full, &next)
                .await
                .map_err(index_err)?
            {
                return Ok(());
            }
        }
        Err(ObjectError::Busy)
    }

    /// The key (inside the prefix) of a full key of this store.
    fn key_of(&self, full: &str) -> Option<String> {
        full.strip_prefix(&self.root()).map(String::from)
    }
}
