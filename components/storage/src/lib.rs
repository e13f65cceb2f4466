//! The storage adapter: OCI image-layout semantics over a flat object store.
//!
//! Every repository is an OCI image layout under its name; `skiff-layout`
//! (shared with the gc and scrub components) says where each part lives.
//!
//! There is no lock: blobs are written once (create-if-absent) and
//! `index.json` and referrer lists change by compare-and-swap on the object
//! version, retried on conflict, so any number of instances (or hosts sharing a
//! bucket) can work on one repository at once.

mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "storage",
        with: {
            "wasi:io/streams@0.2.12": wasip2::io::streams,
            "wasi:io/error@0.2.12": wasip2::io::error,
            "wasi:io/poll@0.2.12": wasip2::io::poll,
            "skiff:registry/objects@0.1.0": skiff_layout::objects,
        },
    });
}

mod blobs;
mod keys;
mod manifests;
mod meta;
mod uploads;

use bindings::exports::skiff::registry::store::{
    Descriptor, Error, Guest, Manifest, PutManifestResult,
};
use skiff_layout::{LayoutError, ObjectError};
use wasip2::io::streams::{InputStream, OutputStream};

struct Storage;

bindings::export!(Storage with_types_in bindings);

impl From<LayoutError> for Error {
    fn from(e: LayoutError) -> Self {
        match e {
            LayoutError::Object(o) => o.into(),
            LayoutError::Contended(m) => Error::Busy(m),
            other => Error::Internal(other.to_string()),
        }
    }
}

impl From<ObjectError> for Error {
    fn from(e: ObjectError) -> Self {
        match e {
            ObjectError::NotFound => Error::Internal("object vanished".into()),
            ObjectError::PreconditionFailed => Error::Internal("conflicting write".into()),
            ObjectError::InvalidKey(k) => Error::Internal(format!("invalid object key {k}")),
            ObjectError::Busy => Error::Busy(
                "another request is writing the same object, or the store asks to slow down".into(),
            ),
            ObjectError::TooLarge(n) => {
                Error::Internal(format!("stored object too large ({n} bytes)"))
            }
            ObjectError::DigestMismatch(d) => {
                Error::Internal(format!("stored content has digest {d}"))
            }
            ObjectError::Io(m) => Error::Internal(m),
        }
    }
}

impl Guest for Storage {
    fn blob_size(repo: String, digest: String) -> Result<u64, Error> {
        blobs::size(&repo, &digest)
    }

    fn blob_read(
        repo: String,
        digest: String,
        start: u64,
        len: u64,
        dst: &OutputStream,
    ) -> Result<(), Error> {
        blobs::read(&repo, &digest, start, len, dst)
    }

    fn blob_delete(repo: String, digest: String) -> Result<(), Error> {
        blobs::delete(&repo, &digest)
    }

    fn blob_locate(repo: String, digest: String) -> Option<String> {
        blobs::locate(&repo, &digest)
    }

    fn blob_mount(repo: String, digest: String, source: String) -> Result<u64, Error> {
        blobs::mount(&repo, &digest, &source)
    }

    fn upload_start(repo: String) -> Result<String, Error> {
        uploads::start(&repo)
    }

    fn upload_offset(repo: String, id: String) -> Result<u64, Error> {
        uploads::offset(&repo, &id)
    }

    fn upload_append(
        repo: String,
        id: String,
        start: Option<u64>,
        len: Option<u64>,
        src: &InputStream,
    ) -> Result<u64, Error> {
        uploads::append(&repo, &id, start, len, src)
    }

    fn upload_finish(repo: String, id: String, digest: String) -> Result<u64, Error> {
        uploads::finish(&repo, &id, &digest)
    }

    fn upload_cancel(repo: String, id: String) -> Result<(), Error> {
        uploads::cancel(&repo, &id)
    }

    fn manifest_get(repo: String, reference: String) -> Result<Manifest, Error> {
        manifests::get(&repo, &reference)
    }

    fn manifest_put(
        repo: String,
        reference: String,
        media_type: String,
        bytes: Vec<u8>,
        tags: Vec<String>,
    ) -> Result<PutManifestResult, Error> {
        manifests::put(&repo, &reference, &media_type, bytes, &tags)
    }

    fn manifest_delete(repo: String, reference: String) -> Result<(), Error> {
        manifests::delete(&repo, &reference)
    }

    fn record_pull(repo: String, digest: String) -> Result<(), Error> {
        manifests::record_pull(&repo, &digest)
    }

    fn tags_page(repo: String, last: Option<String>, n: u32) -> Result<(Vec<String>, bool), Error> {
        meta::tags_page(&repo, last.as_deref(), n)
    }

    fn repositories_page(last: Option<String>, n: u32) -> Result<(Vec<String>, bool), Error> {
        meta::repositories_page(last.as_deref(), n)
    }

    fn referrers(repo: String, digest: String) -> Result<Vec<Descriptor>, Error> {
        meta::referrers(&repo, &digest)
    }
}
