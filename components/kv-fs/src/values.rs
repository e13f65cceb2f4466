//! Reading and replacing one key's file.

use crate::bindings::exports::wasi::keyvalue::store::Error;
use crate::paths;
use std::io::ErrorKind;
use std::path::Path;

fn failed(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::Other(format!("{what} {}: {e}", path.display()))
}

/// The value in `file`, or `None` if the key is not set.
pub fn read(file: &Path) -> Result<Option<Vec<u8>>, Error> {
    match std::fs::read(file) {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(failed("reading", file, e)),
    }
}

/// Replace the value in `file` atomically: a reader sees the old value or
/// the new one. The caller holds the key's lock.
pub fn write(file: &Path, value: &[u8]) -> Result<(), Error> {
    let tmp = paths::beside(
        file,
        &format!(".{:016x}.tmp", wasip2::random::random::get_random_u64()),
    );
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).map_err(|e| failed("creating", dir, e))?;
    }
    let written = std::fs::write(&tmp, value).and_then(|()| std::fs::rename(&tmp, file));
    if let Err(e) = written {
        // A full disk, say: leave no temporary file behind.
        let _ = std::fs::remove_file(&tmp);
        return Err(failed("writing", file, e));
    }
    Ok(())
}

/// Remove the value in `file`; a key already unset is fine. The caller
/// holds the key's lock.
pub fn remove(file: &Path) -> Result<(), Error> {
    match std::fs::remove_file(file) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(failed("removing", file, e)),
    }
}

/// A counter's value as `increment` stores it: eight bytes, little-endian
/// (as Spin's stores do).
pub fn counter(key: &str, value: &[u8]) -> Result<i64, Error> {
    let bytes: [u8; 8] = value
        .try_into()
        .map_err(|_| Error::Other(format!("{key} does not hold a counter")))?;
    Ok(i64::from_le_bytes(bytes))
}
