//! The key-value store (`wasi:keyvalue`, the bucket `default`): plain reads
//! and writes, and the compare-and-swap every record change goes through.

use crate::bindings::exports::skiff::registry::objects::ObjectError;
use crate::bindings::wasi::keyvalue::atomics::{self, CasError};
use crate::bindings::wasi::keyvalue::batch;
use crate::bindings::wasi::keyvalue::store::{self, Bucket};
use crate::keys;
use crate::record::{self, Seen};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::Duration;

const BUCKET: &str = "default";
/// Compare-and-swaps lost in a row before a change gives up (`busy`).
const MAX_CONFLICTS: u32 = 16;
/// How long a writer waits for a fresh tombstone to go (see `lib.rs`), in
/// naps of [`NAP`]; its remover deletes it right after writing it.
const MAX_NAPS: u32 = 400;
const NAP: Duration = Duration::from_millis(5);

thread_local! {
    /// Opened once per instance (a request, under `wasmtime serve`).
    static OPEN: RefCell<Option<Rc<Bucket>>> = const { RefCell::new(None) };
}

fn failed(what: &str, e: store::Error) -> ObjectError {
    let why = match e {
        store::Error::NoSuchStore => "no such store".to_string(),
        store::Error::AccessDenied => "access denied".to_string(),
        store::Error::Other(m) => m,
    };
    ObjectError::Io(format!("key-value store: {what}: {why}"))
}

fn bucket() -> Result<Rc<Bucket>, ObjectError> {
    OPEN.with(|open| {
        if let Some(b) = open.borrow().as_ref() {
            return Ok(b.clone());
        }
        let b = Rc::new(store::open(BUCKET).map_err(|e| failed("opening `default`", e))?);
        *open.borrow_mut() = Some(b.clone());
        Ok(b)
    })
}

pub fn get(key: &str) -> Result<Option<Vec<u8>>, ObjectError> {
    bucket()?
        .get(key)
        .map_err(|e| failed(&format!("reading {key}"), e))
}

pub fn set(key: &str, value: &[u8]) -> Result<(), ObjectError> {
    bucket()?
        .set(key, value)
        .map_err(|e| failed(&format!("writing {key}"), e))
}

pub fn delete(key: &str) -> Result<(), ObjectError> {
    bucket()?
        .delete(key)
        .map_err(|e| failed(&format!("deleting {key}"), e))
}

/// The values of those of `keys` that are set. (Stores differ: some
/// answer `none` for a missing key, Spin's SQLite leaves it out.)
pub fn get_many(keys: &[String]) -> Result<HashMap<String, Vec<u8>>, ObjectError> {
    let pairs = batch::get_many(&*bucket()?, keys).map_err(|e| failed("reading many keys", e))?;
    Ok(pairs
        .into_iter()
        .filter_map(|(k, v)| Some((k, v?)))
        .collect())
}

pub fn delete_many(keys: &[String]) -> Result<(), ObjectError> {
    batch::delete_many(&*bucket()?, keys).map_err(|e| failed("deleting many keys", e))
}

/// Every key in the store, following cursors until there are none (Spin
/// answers all keys at once and ignores cursors).
pub fn all_keys() -> Result<Vec<String>, ObjectError> {
    let b = bucket()?;
    let mut keys = Vec::new();
    let mut cursor: Option<String> = None;
    let mut seen = HashSet::new();
    loop {
        let page = b
            .list_keys(cursor.as_deref())
            .map_err(|e| failed("listing keys", e))?;
        keys.extend(page.keys);
        match page.cursor {
            // A store handing out a cursor it gave before would loop forever.
            Some(c) if seen.insert(c.clone()) => cursor = Some(c),
            _ => return Ok(keys),
        }
    }
}

/// A record key read for a compare-and-swap: the swap succeeds only if the
/// key still holds what was read.
pub struct Slot {
    key: String,
    cas: atomics::Cas,
    pub raw: Option<Vec<u8>>,
}

impl Slot {
    pub fn read(store_key: &str) -> Result<Slot, ObjectError> {
        let b = bucket()?;
        let cas = atomics::Cas::new(&b, store_key)
            .map_err(|e| failed(&format!("reading {store_key}"), e))?;
        // Spin takes the value a swap compares against here, not in `new`.
        let raw = cas
            .current()
            .map_err(|e| failed(&format!("reading {store_key}"), e))?;
        Ok(Slot {
            key: store_key.to_string(),
            cas,
            raw,
        })
    }

    /// Write `value` if the key still holds what was read; false if it
    /// changed meanwhile (nothing was written).
    pub fn swap(self, value: &[u8]) -> Result<bool, ObjectError> {
        match atomics::swap(self.cas, value) {
            Ok(()) => Ok(true),
            Err(CasError::CasFailed(_)) => Ok(false),
            Err(CasError::StoreError(e)) => Err(failed(&format!("writing {}", self.key), e)),
        }
    }
}

/// What a change of a record does, given what is there now.
pub enum Step<T> {
    /// Swap this in, then answer `T`.
    Write(Vec<u8>, T),
    /// The record is being removed: look again in a moment.
    Wait,
}

/// Change the record of object `key` by compare-and-swap: `decide` sees
/// what is there now and says what to do; it is asked again whenever
/// another writer changed the record between its read and the swap.
pub fn change<T>(
    key: &str,
    mut decide: impl FnMut(Seen) -> Result<Step<T>, ObjectError>,
) -> Result<T, ObjectError> {
    let store_key = keys::record_key(key);
    let (mut conflicts, mut naps) = (0, 0);
    loop {
        let mut slot = Slot::read(&store_key)?;
        let seen = record::decode(key, slot.raw.take());
        match decide(seen)? {
            Step::Write(value, t) => {
                if slot.swap(&value)? {
                    return Ok(t);
                }
                conflicts += 1;
                if conflicts >= MAX_CONFLICTS {
                    return Err(ObjectError::Busy);
                }
            }
            Step::Wait => {
                naps += 1;
                if naps > MAX_NAPS {
                    return Err(ObjectError::Busy);
                }
                std::thread::sleep(NAP);
            }
        }
    }
}

/// Replace the record of `key` with `value` if it still holds exactly
/// `expected` (bytes this caller wrote or read); false otherwise.
pub fn swap_from(key: &str, expected: &[u8], value: &[u8]) -> Result<bool, ObjectError> {
    let slot = Slot::read(&keys::record_key(key))?;
    if slot.raw.as_deref() != Some(expected) {
        return Ok(false);
    }
    slot.swap(value)
}

/// What the record of `key` says now.
pub fn read(key: &str) -> Result<Seen, ObjectError> {
    Ok(record::decode(key, get(&keys::record_key(key))?))
}
