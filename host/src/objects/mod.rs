//! The `objects` interface, implemented natively. Blob bytes are copied here,
//! between host streams and files, so they never enter guest memory.
//!
//! One registry may span several stores: the default root and the subpaths,
//! each a directory with its own settings. A key's first path component (its
//! repository's first component) picks the store, so the component sees one
//! key space.

pub mod aws;
mod backend;
mod dedupe;
mod disk;
mod holders;
mod keys;
mod memo;
mod s3;
mod streams;
#[cfg(test)]
mod suite;

pub use backend::Backend;
pub use disk::{Disk, CACHE_FILE};
pub use holders::{DynamoHolders, Holders, RedbHolders};
pub use s3::S3;

use crate::runtime::skiff::registry::objects::{
    Child, Condition, Content, HashAlgorithm, Host, Meta, ObjectError, Published, Written,
};
use crate::runtime::Ctx;
use std::sync::Arc;
use wasmtime::component::{Resource, ResourceTable};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream};

pub struct Objects {
    default: Arc<dyn Backend>,
    sub_paths: Vec<(String, Arc<dyn Backend>)>,
    /// Tables guests derived from objects, shared by all instances.
    memo: memo::Memo,
}

impl Objects {
    pub fn new(default: Arc<dyn Backend>, sub_paths: Vec<(String, Arc<dyn Backend>)>) -> Objects {
        Objects {
            default,
            sub_paths,
            memo: memo::Memo::new(memo::BUDGET_BYTES),
        }
    }

    /// The store holding `key`.
    pub fn store_for(&self, key: &str) -> &dyn Backend {
        let first = key.split('/').next().unwrap_or_default();
        self.sub_paths
            .iter()
            .find(|(p, _)| p == first)
            .map(|(_, d)| d.as_ref())
            .unwrap_or(self.default.as_ref())
    }

    /// A scrub pass starts: files are hashed afresh (once each in the pass).
    pub fn begin_scrub_pass(&self) {
        self.stores().for_each(|d| d.begin_scrub_pass());
    }

    /// Bytes hashed by background work since start, over every store.
    pub fn bytes_hashed(&self) -> u64 {
        self.stores().map(|d| d.bytes_hashed()).sum()
    }

    /// Every store answers; the first that does not, described.
    pub async fn ready(&self) -> Result<(), String> {
        for store in self.stores() {
            if let Err(e) = store.ready().await {
                return Err(format!("{}: {e:?}", store.describe()));
            }
        }
        Ok(())
    }

    /// Every store, default first (the order of `Config::stores`).
    pub fn stores(&self) -> impl Iterator<Item = &Arc<dyn Backend>> {
        std::iter::once(&self.default).chain(self.sub_paths.iter().map(|(_, d)| d))
    }

    async fn list_children(&self, prefix: &str) -> Result<Vec<Child>, ObjectError> {
        if !prefix.is_empty() {
            return self.store_for(prefix).list_children(prefix).await;
        }
        // The root: the default store's top level, with each subpath as a
        // prefix (it shadows a same-named directory of the default store).
        let mut out: Vec<Child> = match self.default.list_children("").await {
            Ok(c) => c,
            Err(ObjectError::NotFound) => Vec::new(),
            Err(e) => return Err(e),
        };
        out.retain(|c| !self.sub_paths.iter().any(|(p, _)| *p == c.name));
        out.extend(self.sub_paths.iter().map(|(p, _)| Child {
            name: p.clone(),
            is_prefix: true,
        }));
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

/// A stream the caller passed by handle.
fn stream<'a, T: 'static>(
    table: &'a mut ResourceTable,
    handle: &Resource<T>,
) -> Result<&'a mut T, ObjectError> {
    table
        .get_mut(handle)
        .map_err(|e| ObjectError::Io(format!("bad stream handle: {e}")))
}

impl Host for Ctx {
    async fn get(&mut self, key: String, max_size: u64) -> Result<(Vec<u8>, Meta), ObjectError> {
        self.objects.store_for(&key).get(&key, max_size).await
    }

    async fn put(
        &mut self,
        key: String,
        data: Vec<u8>,
        when: Condition,
    ) -> Result<Meta, ObjectError> {
        self.objects.store_for(&key).put(&key, data, when).await
    }

    async fn stat(&mut self, key: String) -> Result<Meta, ObjectError> {
        self.objects.store_for(&key).stat(&key).await
    }

    async fn delete(&mut self, key: String, when: Condition) -> Result<(), ObjectError> {
        self.objects.store_for(&key).delete(&key, when).await
    }

    async fn list_children(&mut self, prefix: String) -> Result<Vec<Child>, ObjectError> {
        self.objects.list_children(&prefix).await
    }

    async fn write_from(
        &mut self,
        key: String,
        offset: u64,
        src: Resource<DynInputStream>,
        limit: Option<u64>,
    ) -> Result<Written, ObjectError> {
        let stream = stream(&mut self.table, &src)?;
        self.objects
            .store_for(&key)
            .write_from(&key, offset, stream, limit)
            .await
    }

    async fn read_to(
        &mut self,
        key: String,
        start: u64,
        len: u64,
        dst: Resource<DynOutputStream>,
    ) -> Result<(), ObjectError> {
        let stream = stream(&mut self.table, &dst)?;
        self.objects
            .store_for(&key)
            .read_to(&key, start, len, stream)
            .await
    }

    async fn touch(&mut self, key: String) -> Result<Meta, ObjectError> {
        self.objects.store_for(&key).touch(&key).await
    }

    async fn digest(
        &mut self,
        key: String,
        algorithm: HashAlgorithm,
    ) -> Result<String, ObjectError> {
        self.objects
            .store_for(&key)
            .digest(&key, algorithm, self.priority)
            .await
    }

    async fn publish(
        &mut self,
        src: String,
        dst: String,
        expected: Content,
    ) -> Result<Published, ObjectError> {
        // An upload and its blob belong to one repository, so to one store.
        self.objects
            .store_for(&dst)
            .publish(&src, &dst, expected)
            .await
    }

    async fn locate(&mut self, key: String) -> Option<String> {
        self.objects.store_for(&key).locate(&key).await
    }

    async fn remember(
        &mut self,
        key: String,
        version: String,
        table: String,
        entries: Vec<(String, String)>,
    ) -> bool {
        self.objects.memo.remember(&key, &version, &table, entries)
    }

    async fn recall(
        &mut self,
        key: String,
        version: String,
        table: String,
        name: String,
    ) -> Option<Option<String>> {
        self.objects.memo.recall(&key, &version, &table, &name)
    }

    async fn recall_names(
        &mut self,
        key: String,
        version: String,
        table: String,
        after: Option<String>,
        n: u32,
    ) -> Option<(Vec<String>, bool)> {
        self.objects
            .memo
            .recall_names(&key, &version, &table, after.as_deref(), n)
    }

    async fn copy(&mut self, src: String, dst: String, when: Condition) -> Result<(), ObjectError> {
        let from = self.objects.store_for(&src);
        self.objects
            .store_for(&dst)
            .copy_in(from, &src, &dst, when)
            .await
    }
}
