//! The `objects` interface over `wasi:keyvalue` (0.2.0-draft2): Spin's
//! key-value stores at the edge, and kv-fs in the tests. It opens the store
//! named `default`.
//!
//! # Key layout
//!
//! ```text
//! o/<key>          the record of object <key>: size, modified-ms, version,
//!                  where the bytes are (record.rs has the format)
//! c/<id>/<n>       chunk n of the write <id> (128 random bits, hex)
//! ```
//!
//! Objects up to 64 KiB (manifests, index.json, upload state, small blobs)
//! are inline in their record; larger ones are chunks of 4 MiB, far below
//! Spin's 128 MiB cap on a value, and the most of a blob the guest ever
//! holds. A record lists its *extents*: the writes its bytes came from,
//! each with its own id. `list-children` filters the keys under `o/`, so
//! chunks never show; but Spin lists the whole bucket, chunks included, for
//! every listing, so a listing costs in proportion to the store.
//!
//! # Writes
//!
//! Every write stores its chunks first, under an id no other write uses,
//! and then changes the record by compare-and-swap (`atomics.cas`: read the
//! record, decide, swap if unchanged, else decide again). So an object
//! appears, changes or goes in one step, the record's; a reader of the old
//! version reads old chunks nobody writes to; and the chunks a record no
//! longer names (a replaced version, an append's carried tail) are deleted
//! only after the record moved on. Conditions (`if-absent`, `if-version`)
//! are checked on the record read for the swap, so they hold at the swap.
//! Versions are 64 random bits per write; `touch` and a lease's claim are
//! writes too (gc's `delete if-version` must miss a blob touched since).
//!
//! # Removal: tombstones
//!
//! draft2 has no conditional delete. A removal (`delete`, and `publish`
//! removing its source) therefore swaps the record for a *tombstone*, by
//! compare-and-swap: exactly the version checked goes, and its chunks are
//! the remover's to delete, even against a concurrent append or publish
//! (which would otherwise move or supersede them under it). Right after,
//! the remover deletes the tombstone with a plain `delete`. That is the one
//! unconditional removal of a record, and it cannot race: every writer that
//! finds a tombstone younger than 30 s (a fresh one) waits for it to go
//! (up to 2 s, then `busy`) instead of writing over it, so between the swap
//! and the delete nobody else writes the key. A tombstone reads as absent
//! everywhere; one older than 30 s (its remover trapped) is written over
//! like an absent key and skipped by listings.
//!
//! # Leases: appends and publishes
//!
//! `write-from` and `publish` claim their object first: a lease in its
//! record (60 s, renewed every 20 s while the work goes on), written by
//! compare-and-swap together with the offset check. Other appends and
//! publishes answer `busy` while it runs, `touch` too; `put` and `delete`
//! answer `busy` during a publish, whose chunks may be moving to the blob.
//! The holder ends the claim with a compare-and-swap from the exact bytes
//! it last wrote, so if anything changed the record meanwhile (a delete,
//! or a writer taking over an expired lease), the holder's write fails and
//! it backs out, deleting the chunks it stored. `publish` moves the
//! source's chunks to the blob's record (no copy); see publish.rs. An
//! append carries the bytes after the last full chunk into its first
//! chunk, so chunks stay full however small the appends.
//!
//! # Crash safety
//!
//! A trap can stop an instance between any two store operations.
//!
//! - While a write stores chunks: the chunks are garbage (no record names
//!   them), the object is as it was; an append's or publish's lease
//!   expires within 60 s and the object is usable again.
//! - After a record moved on, before superseded chunks are deleted (a
//!   replaced version, an append's carried tail, a removed object's
//!   chunks): those chunks are garbage.
//! - After a removal's tombstone, before its delete: the tombstone reads as
//!   absent; after 30 s writers write over it, listings skip it.
//! - A publish after the blob's record took the chunks, before the
//!   source's removal: the source stays, claimed, naming the blob. The
//!   next delete, append or publish of it sees that the blob holds its
//!   chunks and leaves them (`chunks::landed`); an append answers
//!   `not-found`, a retried publish finishes the removal.
//!
//! Nothing is ever damaged: no record names a chunk before it is stored,
//! and no chunk is deleted while a record may name it. What is lost is
//! space: garbage chunks are not collected. Collecting them would mean
//! listing every `c/` id and every record's extents (the whole store) and
//! deleting ids that no record names and that are older than any write can
//! take; that sweep is not written (a known gap).
//!
//! # Concurrency
//!
//! All coordination is compare-and-swap on single records, so it is exactly
//! as safe as the runtime's `swap`:
//!
//! - With a store whose swap compares against the value read, also when
//!   that was "absent" (kv-fs, which locks the key), every operation is
//!   atomic as the WIT says: of racing conditional writers one wins, an
//!   append and a publish of one upload never interleave, a delete and a
//!   publish of one blob are ordered.
//! - Spin's SQLite store compares a value read by `current` (which this
//!   component always calls before a swap), but a swap from an absent key
//!   is an upsert: two writers that both found a key absent both succeed,
//!   the later one's record winning. Only first creations of a key race so:
//!   a blob published twice at once (same bytes; the loser's chunks become
//!   garbage), an upload's first append (ids are random: no race), and
//!   `index.json` created twice at once, where a tag put between the two
//!   creations can be lost. Updates of existing records are safe.
//! - Timing: a lease holder must not stall longer than a lease between a
//!   renewal and its next write, and a remover not 30 s between its
//!   tombstone and the delete. Each of those gaps is one store operation;
//!   a request that stalls longer (a body that stops for a minute) loses
//!   its claim and fails with `busy` rather than race.
//! - A reader streaming a version that is replaced or removed meanwhile may
//!   find its chunks gone and fail mid-way (a truncated response, never
//!   wrong bytes); `get` and `digest` start again on the new version.

mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "objects-kv",
        with: {
            "wasi:io/streams@0.2.12": wasip2::io::streams,
            "wasi:io/error@0.2.12": wasip2::io::error,
            "wasi:io/poll@0.2.12": wasip2::io::poll,
            "wasi:keyvalue/store@0.2.0-draft2": generate,
            "wasi:keyvalue/atomics@0.2.0-draft2": generate,
            "wasi:keyvalue/batch@0.2.0-draft2": generate,
        },
    });
}

mod append;
mod chunks;
mod claim;
mod copy;
mod hashing;
mod keys;
mod listing;
mod publish;
mod reading;
mod record;
mod store;
mod streams;
mod whole;

use bindings::exports::skiff::registry::objects::{
    Child, Condition, Content, Guest, HashAlgorithm, Meta, ObjectError, Published, Written,
};
use wasip2::io::streams::{InputStream, OutputStream};

struct ObjectsKv;

bindings::export!(ObjectsKv with_types_in bindings);

impl Guest for ObjectsKv {
    fn get(key: String, max_size: u64) -> Result<(Vec<u8>, Meta), ObjectError> {
        whole::get(&key, max_size)
    }

    fn put(key: String, data: Vec<u8>, when: Condition) -> Result<Meta, ObjectError> {
        whole::put(&key, data, when)
    }

    fn stat(key: String) -> Result<Meta, ObjectError> {
        whole::stat(&key)
    }

    fn delete(key: String, when: Condition) -> Result<(), ObjectError> {
        whole::delete(&key, when)
    }

    fn list_children(prefix: String) -> Result<Vec<Child>, ObjectError> {
        listing::list_children(&prefix)
    }

    fn write_from(
        key: String,
        offset: u64,
        src: &InputStream,
        limit: Option<u64>,
    ) -> Result<Written, ObjectError> {
        append::write_from(&key, offset, src, limit)
    }

    fn read_to(key: String, start: u64, len: u64, dst: &OutputStream) -> Result<(), ObjectError> {
        reading::read_to(&key, start, len, dst)
    }

    fn digest(key: String, algorithm: HashAlgorithm) -> Result<String, ObjectError> {
        reading::digest(&key, algorithm)
    }

    fn touch(key: String) -> Result<Meta, ObjectError> {
        whole::touch(&key)
    }

    fn publish(src: String, dst: String, expected: Content) -> Result<Published, ObjectError> {
        publish::publish(&src, &dst, expected)
    }

    fn copy(src: String, dst: String, when: Condition) -> Result<(), ObjectError> {
        copy::copy(&src, &dst, when)
    }

    fn locate(_key: String) -> Option<String> {
        // No URL reaches a key-value store's bytes: they go through `read-to`.
        None
    }

    // Runtimes that run this component (Spin, `wasmtime serve`) build an
    // instance per request, so nothing remembered would outlive the request.
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
