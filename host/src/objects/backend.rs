//! One interface over every place objects can live: the methods of the WIT
//! `objects` interface, plus what a store needs at start, at stop and for
//! background passes. Each backend (local disk today) implements it; the
//! rest of the host holds `Arc<dyn Backend>` and never knows which it has.
//! CNCF distribution's storage driver is the model: one small interface,
//! every backend behind it, one test suite run against each
//! (`objects::suite`).

use crate::runtime::skiff::registry::objects::{
    Child, Condition, Content, HashAlgorithm, Meta, ObjectError, Published, Written,
};
use crate::runtime::Priority;
use async_trait::async_trait;
use std::path::PathBuf;
use std::sync::Arc;
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream};

/// The key `ready` looks up (outside every repository: names cannot start
/// with a dot).
const READY_PROBE: &str = ".skiff-ready-probe";

#[async_trait]
pub trait Backend: Send + Sync {
    /// Where the store is, for messages (a directory, a bucket and prefix).
    fn describe(&self) -> String;

    /// Read a small object whole; `too-large` before reading one over `max`.
    async fn get(&self, key: &str, max: u64) -> Result<(Vec<u8>, Meta), ObjectError>;
    async fn put(&self, key: &str, data: Vec<u8>, when: Condition) -> Result<Meta, ObjectError>;
    async fn stat(&self, key: &str) -> Result<Meta, ObjectError>;
    async fn delete(&self, key: &str, when: Condition) -> Result<(), ObjectError>;
    async fn list_children(&self, prefix: &str) -> Result<Vec<Child>, ObjectError>;
    async fn write_from(
        &self,
        key: &str,
        offset: u64,
        src: &mut DynInputStream,
        limit: Option<u64>,
    ) -> Result<Written, ObjectError>;
    async fn read_to(
        &self,
        key: &str,
        start: u64,
        len: u64,
        dst: &mut DynOutputStream,
    ) -> Result<(), ObjectError>;
    async fn touch(&self, key: &str) -> Result<Meta, ObjectError>;
    /// `Background` work yields to requests (scrub hashing a whole store).
    async fn digest(
        &self,
        key: &str,
        algorithm: HashAlgorithm,
        priority: Priority,
    ) -> Result<String, ObjectError>;
    async fn publish(
        &self,
        src: &str,
        dst: &str,
        expected: Content,
    ) -> Result<Published, ObjectError>;
    /// Give `dst` (in this store) the bytes of `src_key` in `src`, which is
    /// this store or another one (a mount across subpaths).
    async fn copy_in(
        &self,
        src: &dyn Backend,
        src_key: &str,
        dst: &str,
        when: Condition,
    ) -> Result<(), ObjectError>;

    /// A presigned URL serving `key`'s bytes, for a backend set to hand
    /// them out (S3 with `redirect`).
    async fn locate(&self, _key: &str) -> Option<String> {
        None
    }

    /// Remove what the backend itself left behind older than `older_than`
    /// (abandoned multipart uploads, staged parts no session names); the
    /// number of things removed. Run by gc, with its delay.
    async fn sweep(&self, _older_than: std::time::Duration) -> Result<u64, ObjectError> {
        Ok(0)
    }

    /// Whether the store answers (`/readyz`): a look-up of a key no one
    /// writes, where "not found" is an answer and anything else is not.
    async fn ready(&self) -> Result<(), ObjectError> {
        match self.stat(READY_PROBE).await {
            Ok(_) | Err(ObjectError::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The file holding `key`, for a backend that has files.
    fn local_path(&self, _key: &str) -> Option<PathBuf> {
        None
    }

    /// The server starts using the store: claim it and start what must
    /// run in the background at start (checks after an unclean stop).
    fn start(self: Arc<Self>) -> anyhow::Result<()> {
        Ok(())
    }

    /// The server stopped cleanly.
    fn stop(&self) {}

    /// A scrub pass begins: hash everything afresh (once each in the pass).
    fn begin_scrub_pass(&self) {}

    /// Bytes hashed by background work since start.
    fn bytes_hashed(&self) -> u64 {
        0
    }
}
