//! Operations on whole objects: `get`, `put`, `stat`, `touch`, `delete`.

use crate::bindings::exports::skiff::registry::objects::{Condition, Meta, ObjectError};
use crate::chunks::{self, ChunkWriter};
use crate::keys;
use crate::record::{self, Body, Head, Object, Seen, CHUNK_SIZE, INLINE_MAX};
use crate::store::{self, Step};

/// Reads retried when the object changed under them (its chunks went
/// with the version they belonged to).
const READ_TRIES: usize = 3;

/// The live object at `key`.
pub fn live(key: &str) -> Result<Object, ObjectError> {
    store::read(key)?.live()
}

/// Whether the object at `key` is no longer at `version` (replaced or gone).
pub fn changed(key: &str, version: &str) -> bool {
    !matches!(store::read(key), Ok(Seen::Live(o)) if o.head.version == version)
}

/// Run `read` on the object at `key`, again on its new version if it
/// failed because the object changed meanwhile.
pub fn read_stable<T>(
    key: &str,
    mut read: impl FnMut(&Object) -> Result<T, ObjectError>,
) -> Result<T, ObjectError> {
    let mut tries = 0;
    loop {
        let obj = live(key)?;
        match read(&obj) {
            Err(ObjectError::Io(_))
                if tries + 1 < READ_TRIES && changed(key, &obj.head.version) =>
            {
                tries += 1
            }
            r => return r,
        }
    }
}

pub fn get(key: &str, max: u64) -> Result<(Vec<u8>, Meta), ObjectError> {
    keys::check(key)?;
    read_stable(key, |obj| {
        if obj.head.size > max {
            return Err(ObjectError::TooLarge(obj.head.size));
        }
        Ok((chunks::collect(key, obj)?, obj.head.meta()))
    })
}

pub fn stat(key: &str) -> Result<Meta, ObjectError> {
    keys::check(key)?;
    Ok(live(key)?.head.meta())
}

/// What a write under a condition may do with what a record key holds.
pub enum Admit {
    /// Write, replacing this object (or nothing).
    Replace(Option<Object>),
    /// A tombstone there is being removed: look again in a moment.
    Wait,
}

/// Whether `when` lets a write replace what `seen` shows.
pub fn admits(when: &Condition, seen: Seen) -> Result<Admit, ObjectError> {
    let now = record::now_ms();
    match (when, seen) {
        (_, Seen::Removing) => Ok(Admit::Wait),
        (Condition::IfAbsent, Seen::Live(_)) => Err(ObjectError::PreconditionFailed),
        (Condition::IfVersion(v), Seen::Live(o)) if o.head.version != *v => {
            Err(ObjectError::PreconditionFailed)
        }
        (Condition::IfVersion(_), Seen::Absent) => Err(ObjectError::PreconditionFailed),
        (_, Seen::Live(o)) if o.head.publishing(now) => Err(ObjectError::Busy),
        (_, Seen::Live(o)) => Ok(Admit::Replace(Some(o))),
        (_, Seen::Absent) => Ok(Admit::Replace(None)),
        // `always` may write over a record that is not one: a way to repair.
        (Condition::Always, Seen::Corrupt(_)) => Ok(Admit::Replace(None)),
        (_, Seen::Corrupt(m)) => Err(ObjectError::Io(m)),
    }
}

/// Write the object `key` as `head` (and `inline`) where `when` allows;
/// the chunks of the version it replaced are deleted after. On failure the
/// caller still owns whatever chunks `head` names.
pub fn install(key: &str, head: &Head, inline: &[u8], when: &Condition) -> Result<(), ObjectError> {
    let value = record::encode(head, inline);
    let replaced = store::change(key, |seen| match admits(when, seen)? {
        Admit::Replace(old) => Ok(Step::Write(value.clone(), old)),
        Admit::Wait => Ok(Step::Wait),
    })?;
    if let Some(old) = replaced {
        chunks::release(&old.head);
    }
    Ok(())
}

pub fn put(key: &str, data: Vec<u8>, when: Condition) -> Result<Meta, ObjectError> {
    keys::check(key)?;
    let size = data.len() as u64;
    let (head, inline) = if data.len() <= INLINE_MAX {
        (Head::fresh(size, Body::Inline), data)
    } else {
        // Refused at the swap anyway: spare storing the chunks first.
        if matches!(when, Condition::IfAbsent) && matches!(store::read(key)?, Seen::Live(_)) {
            return Err(ObjectError::PreconditionFailed);
        }
        // Chunks first: the object appears only when its record does.
        let mut w = ChunkWriter::new(CHUNK_SIZE, Vec::new())?;
        if let Err(e) = w.push(&data) {
            w.abandon();
            return Err(e);
        }
        let extent = w.finish()?;
        let body = Body::Chunks {
            chunk_size: CHUNK_SIZE,
            extents: vec![extent],
        };
        (Head::fresh(size, body), Vec::new())
    };
    if let Err(e) = install(key, &head, &inline, &when) {
        chunks::release(&head);
        return Err(e);
    }
    Ok(head.meta())
}

pub fn touch(key: &str) -> Result<Meta, ObjectError> {
    keys::check(key)?;
    let now = record::now_ms();
    let head = store::change(key, |seen| {
        let obj = seen.live()?;
        // Its holder's next write would fail on the changed record.
        if obj.head.held(now).is_some() {
            return Err(ObjectError::Busy);
        }
        let head = Head {
            version: keys::fresh_version(),
            modified_ms: record::now_ms(),
            ..obj.head
        };
        Ok(Step::Write(record::encode(&head, &obj.inline), head))
    })?;
    Ok(head.meta())
}

/// Remove the object: its record becomes a tombstone by compare-and-swap,
/// so exactly the version checked goes and its chunks are this call's to
/// delete; then the tombstone itself is deleted (see `lib.rs`).
pub fn delete(key: &str, when: Condition) -> Result<(), ObjectError> {
    keys::check(key)?;
    if matches!(when, Condition::IfAbsent) {
        return Err(ObjectError::Io(
            "delete takes no if-absent condition".into(),
        ));
    }
    let now = record::now_ms();
    let removed = store::change(key, |seen| match seen {
        Seen::Absent | Seen::Removing => Err(ObjectError::NotFound),
        // Unreadable: removable unconditionally, its chunks unknown.
        Seen::Corrupt(m) => match &when {
            Condition::Always => Ok(Step::Write(record::tombstone(), None)),
            _ => Err(ObjectError::Io(m)),
        },
        Seen::Live(obj) => {
            if let Condition::IfVersion(v) = &when {
                if obj.head.version != *v {
                    return Err(ObjectError::PreconditionFailed);
                }
            }
            if obj.head.publishing(now) {
                return Err(ObjectError::Busy);
            }
            Ok(Step::Write(record::tombstone(), Some(obj.head)))
        }
    })?;
    // No writer writes over a fresh tombstone, so this removes only it.
    let _ = store::delete(&keys::record_key(key));
    if let Some(head) = removed {
        chunks::release(&head);
    }
    Ok(())
}
