//! `skiff:registry/objects` over an S3 bucket, in the guest: for the edge,
//! where there is no native host to implement it. Requests go out through
//! `wasi:http/outgoing-handler`, signed with SigV4; the bucket, endpoint
//! and credentials come from `wasi:config/store` (`settings`).
//!
//! The bucket is laid out exactly as the native S3 backend lays it out
//! (`format`), so a registry can move between `skiff serve` and the edge,
//! or run on both at once, over the same bucket. Blob bytes are streamed:
//! reads are ranged GETs spliced into the caller's stream, appends are
//! staged a part at a time, and publishing is a server-side multipart copy.

mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "objects-s3",
        with: {
            "wasi:io/streams@0.2.12": wasip2::io::streams,
            "wasi:io/error@0.2.12": wasip2::io::error,
            "wasi:io/poll@0.2.12": wasip2::io::poll,
            "wasi:clocks/monotonic-clock@0.2.12": wasip2::clocks::monotonic_clock,
            "wasi:http/types@0.2.12": wasip2::http::types,
            "wasi:http/outgoing-handler@0.2.12": wasip2::http::outgoing_handler,
            "wasi:config/store@0.2.0-draft-2024-09-27": generate,
        },
        additional_derives: [PartialEq],
    });
}

mod bucket;
mod clock;
mod format;
mod http;
mod keys;
mod objects;
mod publish;
mod reads;
mod refs;
mod sessions;
mod settings;
mod xml;

use bindings::exports::skiff::registry::objects::Guest;
pub(crate) use bindings::exports::skiff::registry::objects::{
    Child, Condition, Content, HashAlgorithm, Meta, ObjectError, Published, Written,
};
use bucket::Bucket;
use std::cell::OnceCell;
use wasip2::io::streams::{InputStream, OutputStream};

struct ObjectsS3;

bindings::export!(ObjectsS3 with_types_in bindings);

thread_local! {
    /// The store, set up on first use from the settings, once per instance;
    /// or why it cannot be, which every call then answers.
    static STORE: OnceCell<Result<Bucket, String>> = const { OnceCell::new() };
}

fn setting(name: &str) -> Result<Option<String>, String> {
    // The module's name carries the version: wit/deps also holds
    // wasi:config at 0.2.0-rc.1 (for the config bridge).
    use bindings::wasi::config0_2_0_draft_2024_09_27::store::{get, Error};
    get(name).map_err(|e| match e {
        Error::Upstream(m) | Error::Io(m) => m,
    })
}

/// Run `f` on the store, after checking `keys`.
fn with_store<T>(
    keys: &[&str],
    f: impl FnOnce(&Bucket) -> Result<T, ObjectError>,
) -> Result<T, ObjectError> {
    if let Some(bad) = keys.iter().find(|k| !keys::valid_key(k)) {
        return Err(ObjectError::InvalidKey(bad.to_string()));
    }
    STORE.with(|cell| {
        let store = cell.get_or_init(|| settings::parse(setting).map(Bucket::new));
        match store {
            Ok(b) => f(b),
            Err(why) => Err(ObjectError::Io(why.clone())),
        }
    })
}

impl Guest for ObjectsS3 {
    fn get(key: String, max_size: u64) -> Result<(Vec<u8>, Meta), ObjectError> {
        with_store(&[&key], |b| b.get_object(&key, max_size))
    }

    fn put(key: String, data: Vec<u8>, when: Condition) -> Result<Meta, ObjectError> {
        with_store(&[&key], |b| b.put_object(&key, &data, &when))
    }

    fn stat(key: String) -> Result<Meta, ObjectError> {
        with_store(&[&key], |b| b.stat(&key))
    }

    fn delete(key: String, when: Condition) -> Result<(), ObjectError> {
        with_store(&[&key], |b| b.delete_object(&key, &when))
    }

    fn list_children(prefix: String) -> Result<Vec<Child>, ObjectError> {
        // The prefix is checked by `list_children` itself (it may be empty).
        with_store(&[], |b| b.list_children(&prefix))
    }

    fn write_from(
        key: String,
        offset: u64,
        src: &InputStream,
        limit: Option<u64>,
    ) -> Result<Written, ObjectError> {
        with_store(&[&key], |b| b.write_from(&key, offset, src, limit))
    }

    fn read_to(key: String, start: u64, len: u64, dst: &OutputStream) -> Result<(), ObjectError> {
        with_store(&[&key], |b| b.read_to(&key, start, len, dst))
    }

    fn digest(key: String, algorithm: HashAlgorithm) -> Result<String, ObjectError> {
        with_store(&[&key], |b| b.digest(&key, algorithm))
    }

    fn touch(key: String) -> Result<Meta, ObjectError> {
        with_store(&[&key], |b| b.touch(&key))
    }

    fn publish(src: String, dst: String, expected: Content) -> Result<Published, ObjectError> {
        with_store(&[&src, &dst], |b| b.publish(&src, &dst, &expected))
    }

    fn copy(src: String, dst: String, when: Condition) -> Result<(), ObjectError> {
        with_store(&[&src, &dst], |b| b.copy(&src, &dst, &when))
    }

    /// Presigned URLs are the native server's (`storageDriver.redirect`);
    /// here blobs are always read through `read-to`.
    fn locate(_key: String) -> Option<String> {
        None
    }

    // An instance lives for one request under the runtimes that run this
    // component, so a table remembered here would outlive nothing.
    fn remember(
        _key: String,
        _version: String,
        _table: String,
        _entries: Vec<(String, String)>,
    ) -> bool {
        false
    }

    fn recall(
        _key: String,
        _version: String,
        _table: String,
        _name: String,
    ) -> Option<Option<String>> {
        None
    }

    fn recall_names(
        _key: String,
        _version: String,
        _table: String,
        _after: Option<String>,
        _n: u32,
    ) -> Option<(Vec<String>, bool)> {
        None
    }
}
