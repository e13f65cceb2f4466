//! Test-only: `wasi:keyvalue` (store, atomics, batch @0.2.0-draft2) over a
//! directory preopened at `/data`, so `objects-kv` keeps a registry across
//! requests under `wasmtime serve`, whose own key-value store is empty for
//! every request.
//!
//! Every request runs in a fresh instance, concurrently with others, so no
//! state lives in memory: a bucket is the directory `/data/<identifier>/`
//! and each key is one file in it (see [`paths`] for the names). Values are
//! replaced by writing a temporary file and renaming it over the old one,
//! so a reader sees the old bytes or the new ones, never a mix. Every change
//! of a key (`set`, `delete`, `increment`, a compare-and-swap's `swap`)
//! holds that key's lock file (see [`lock`]) from its read to its rename,
//! so changes of one key never interleave, across instances too.

mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "kv-fs",
    });
}

mod lock;
mod paths;
mod values;

use bindings::exports::wasi::keyvalue::atomics::{self, CasError, GuestCas};
use bindings::exports::wasi::keyvalue::batch;
use bindings::exports::wasi::keyvalue::store::{self, Error, GuestBucket, KeyResponse};
use std::path::PathBuf;

/// Where the runtime preopens the host directory (`--dir HOST::/data`).
const ROOT: &str = "/data";

struct KvFs;

bindings::export!(KvFs with_types_in bindings);

/// A bucket: its directory.
pub struct Bucket {
    dir: PathBuf,
}

/// A compare-and-swap under way: the key and the bytes it held (or their
/// absence) when the operation began.
pub struct Cas {
    dir: PathBuf,
    key: String,
    seen: Option<Vec<u8>>,
}

impl store::Guest for KvFs {
    type Bucket = Bucket;

    fn open(identifier: String) -> Result<store::Bucket, Error> {
        let dir = paths::bucket_dir(ROOT, &identifier).ok_or(Error::NoSuchStore)?;
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::Other(format!("creating {}: {e}", dir.display())))?;
        Ok(store::Bucket::new(Bucket { dir }))
    }
}

impl GuestBucket for Bucket {
    fn get(&self, key: String) -> Result<Option<Vec<u8>>, Error> {
        values::read(&paths::key_file(&self.dir, &key)?)
    }

    fn set(&self, key: String, value: Vec<u8>) -> Result<(), Error> {
        let file = paths::key_file(&self.dir, &key)?;
        let _held = lock::Held::take(&file)?;
        values::write(&file, &value)
    }

    fn delete(&self, key: String) -> Result<(), Error> {
        let file = paths::key_file(&self.dir, &key)?;
        // No directory, no key: nothing to lock or remove.
        if !file.parent().is_some_and(|d| d.exists()) {
            return Ok(());
        }
        let _held = lock::Held::take(&file)?;
        values::remove(&file)
    }

    fn exists(&self, key: String) -> Result<bool, Error> {
        Ok(self.get(key)?.is_some())
    }

    fn list_keys(&self, _cursor: Option<String>) -> Result<KeyResponse, Error> {
        // One page: the test stores are small, and a cursor over a
        // directory that changes between pages would skip or repeat keys.
        Ok(KeyResponse {
            keys: paths::list(&self.dir)?,
            cursor: None,
        })
    }
}

impl atomics::Guest for KvFs {
    type Cas = Cas;

    fn increment(bucket: store::BucketBorrow<'_>, key: String, delta: i64) -> Result<i64, Error> {
        let b = bucket.get::<Bucket>();
        let file = paths::key_file(&b.dir, &key)?;
        let _held = lock::Held::take(&file)?;
        let now = match values::read(&file)? {
            None => 0,
            Some(v) => values::counter(&key, &v)?,
        };
        let next = now
            .checked_add(delta)
            .ok_or_else(|| Error::Other(format!("{key}: the counter overflows")))?;
        values::write(&file, &next.to_le_bytes())?;
        Ok(next)
    }

    fn swap(cas: atomics::Cas, value: Vec<u8>) -> Result<(), CasError> {
        let cas: Cas = cas.into_inner();
        let file = paths::key_file(&cas.dir, &cas.key).map_err(CasError::StoreError)?;
        let _held = lock::Held::take(&file).map_err(CasError::StoreError)?;
        let now = values::read(&file).map_err(CasError::StoreError)?;
        if now != cas.seen {
            // The handle for a retry starts from what is there now.
            return Err(CasError::CasFailed(atomics::Cas::new(Cas {
                seen: now,
                ..cas
            })));
        }
        values::write(&file, &value).map_err(CasError::StoreError)
    }
}

impl GuestCas for Cas {
    fn new(bucket: store::BucketBorrow<'_>, key: String) -> Result<atomics::Cas, Error> {
        let b = bucket.get::<Bucket>();
        let seen = values::read(&paths::key_file(&b.dir, &key)?)?;
        Ok(atomics::Cas::new(Cas {
            dir: b.dir.clone(),
            key,
            seen,
        }))
    }

    fn current(&self) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.seen.clone())
    }
}

impl batch::Guest for KvFs {
    fn get_many(
        bucket: store::BucketBorrow<'_>,
        keys: Vec<String>,
    ) -> Result<Vec<(String, Option<Vec<u8>>)>, Error> {
        let b = bucket.get::<Bucket>();
        keys.into_iter()
            .map(|k| {
                let v = b.get(k.clone())?;
                Ok((k, v))
            })
            .collect()
    }

    fn set_many(
        bucket: store::BucketBorrow<'_>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> Result<(), Error> {
        let b = bucket.get::<Bucket>();
        key_values.into_iter().try_for_each(|(k, v)| b.set(k, v))
    }

    fn delete_many(bucket: store::BucketBorrow<'_>, keys: Vec<String>) -> Result<(), Error> {
        let b = bucket.get::<Bucket>();
        keys.into_iter().try_for_each(|k| b.delete(k))
    }
}
