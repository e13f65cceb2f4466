//! The `objects` interface, implemented natively. Blob bytes are copied here,
//! between host streams and files, so they never enter guest memory.

mod disk;
mod keys;

pub use disk::Disk;

use crate::runtime::skiff::registry::objects::{
    Child, Condition, Host, Meta, ObjectError, Written,
};
use crate::runtime::Ctx;
use wasmtime::component::Resource;
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream};

impl Host for Ctx {
    async fn get(&mut self, key: String) -> Result<(Vec<u8>, Meta), ObjectError> {
        self.disk.get(&key).await
    }

    async fn put(
        &mut self,
        key: String,
        data: Vec<u8>,
        when: Condition,
    ) -> Result<Meta, ObjectError> {
        self.disk.put(&key, data, when).await
    }

    async fn stat(&mut self, key: String) -> Result<Meta, ObjectError> {
        self.disk.stat(&key).await
    }

    async fn delete(&mut self, key: String) -> Result<(), ObjectError> {
        self.disk.delete(&key).await
    }

    async fn list_children(&mut self, prefix: String) -> Result<Vec<Child>, ObjectError> {
        self.disk.list_children(&prefix).await
    }

    async fn write_from(
        &mut self,
        key: String,
        offset: u64,
        src: Resource<DynInputStream>,
        limit: Option<u64>,
    ) -> Result<Written, ObjectError> {
        let stream = self
            .table
            .get_mut(&src)
            .map_err(|e| ObjectError::Io(format!("bad stream handle: {e}")))?;
        self.disk.write_from(&key, offset, stream, limit).await
    }

    async fn read_to(
        &mut self,
        key: String,
        start: u64,
        len: u64,
        dst: Resource<DynOutputStream>,
    ) -> Result<(), ObjectError> {
        let stream = self
            .table
            .get_mut(&dst)
            .map_err(|e| ObjectError::Io(format!("bad stream handle: {e}")))?;
        self.disk.read_to(&key, start, len, stream).await
    }

    async fn sha256(&mut self, key: String) -> Result<String, ObjectError> {
        self.disk.sha256(&key).await
    }

    async fn rename(
        &mut self,
        src: String,
        dst: String,
        when: Condition,
    ) -> Result<(), ObjectError> {
        self.disk.rename(&src, &dst, when).await
    }

    async fn copy(&mut self, src: String, dst: String, when: Condition) -> Result<(), ObjectError> {
        self.disk.copy(&src, &dst, when).await
    }
}
