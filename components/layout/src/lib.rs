//! OCI image layouts over the `objects` interface, for guest components.
//!
//! The storage, gc and scrub components all work on the same layout; this
//! library is the one place that knows where each part of a repository lives
//! and how its metadata changes without locks:
//!
//! ```text
//! <repo>/oci-layout
//! <repo>/index.json                 manifests and tags (ref.name annotations)
//! <repo>/blobs/<alg>/<hex>          blobs and manifests, content-addressed
//! <repo>/.uploads/<id>              bytes of an upload in progress
//! <repo>/.uploads/<id>.json         its state
//! <repo>/.referrers/<alg>/<hex>     descriptors of manifests whose subject is <alg>:<hex>
//! <repo>/.tags/<tag>                a tag pushed into a large index, not yet folded in
//! .skiff/catalog.json               every repository's name (the catalog's index)
//! ```

pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "objects-client",
        with: {
            "wasi:io/streams@0.2.12": wasip2::io::streams,
            "wasi:io/error@0.2.12": wasip2::io::error,
            "wasi:io/poll@0.2.12": wasip2::io::poll,
        },
    });
}

pub mod cache;
pub mod catalog;
pub mod indexes;
pub mod journal;
pub mod keys;
pub mod meta;
pub mod walk;

pub use bindings::skiff::registry::objects;
pub use objects::{Condition, ObjectError};

/// What can go wrong working on a layout.
#[derive(Debug)]
pub enum LayoutError {
    Object(ObjectError),
    /// A stored document (index.json, a referrer list) does not parse.
    Corrupt(String),
    /// Compare-and-swap kept losing to concurrent writers.
    Contended(String),
}

impl From<ObjectError> for LayoutError {
    fn from(e: ObjectError) -> Self {
        LayoutError::Object(e)
    }
}

impl std::fmt::Display for LayoutError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LayoutError::Object(ObjectError::NotFound) => f.write_str("object not found"),
            LayoutError::Object(ObjectError::PreconditionFailed) => {
                f.write_str("conflicting write")
            }
            LayoutError::Object(ObjectError::InvalidKey(k)) => write!(f, "invalid object key {k}"),
            LayoutError::Object(ObjectError::Busy) => f.write_str("object busy"),
            LayoutError::Object(ObjectError::TooLarge(n)) => {
                write!(f, "object too large ({n} bytes)")
            }
            LayoutError::Object(ObjectError::DigestMismatch(d)) => {
                write!(f, "content has digest {d}")
            }
            LayoutError::Object(ObjectError::Io(m)) => f.write_str(m),
            LayoutError::Corrupt(m) | LayoutError::Contended(m) => f.write_str(m),
        }
    }
}

/// Remove an object unconditionally; an object already gone is fine.
pub fn remove(key: &str) -> Result<(), ObjectError> {
    ignore_missing(objects::delete(key, &Condition::Always))
}

/// Remove an object only if it is still at `version` (what a sweep saw);
/// true if it went. One changed or gone since is left alone.
pub fn remove_if(key: &str, version: &str) -> Result<bool, ObjectError> {
    match objects::delete(key, &Condition::IfVersion(version.to_string())) {
        Ok(()) => Ok(true),
        Err(ObjectError::NotFound) | Err(ObjectError::PreconditionFailed) => Ok(false),
        Err(e) => Err(e),
    }
}

/// `Ok(())` for success or an object that is already gone.
pub fn ignore_missing(r: Result<(), ObjectError>) -> Result<(), ObjectError> {
    match r {
        Ok(()) | Err(ObjectError::NotFound) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The `objects` name of a digest's algorithm.
pub fn algorithm(d: &skiff_core::Digest) -> objects::HashAlgorithm {
    match d.algorithm() {
        skiff_core::Algorithm::Sha256 => objects::HashAlgorithm::Sha256,
        skiff_core::Algorithm::Sha512 => objects::HashAlgorithm::Sha512,
    }
}

/// What `objects.publish` checks an upload against.
pub fn content(d: &skiff_core::Digest) -> objects::Content {
    objects::Content {
        algorithm: algorithm(d),
        hex: d.hex().to_string(),
    }
}

/// Hex digest of a whole object under `d`'s algorithm: compare with `d.hex()`.
pub fn rehash(key: &str, d: &skiff_core::Digest) -> Result<String, ObjectError> {
    objects::digest(key, algorithm(d))
}

/// The children of `prefix`; none if nothing is stored under it.
pub fn children(prefix: &str) -> Result<Vec<objects::Child>, ObjectError> {
    match objects::list_children(prefix) {
        Ok(c) => Ok(c),
        Err(ObjectError::NotFound) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Meta of an object, or `None` if there is none.
pub fn stat(key: &str) -> Result<Option<objects::Meta>, ObjectError> {
    match objects::stat(key) {
        Ok(m) => Ok(Some(m)),
        Err(ObjectError::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}
