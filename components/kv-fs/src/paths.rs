//! Which file holds which key.
//!
//! A key's file is named by the hex of its bytes, so any key is a safe file
//! name and the names sort and decode without escaping. File names are
//! bounded (255 bytes on most filesystems), so a long key's hex is cut into
//! segments of [`SEGMENT`] characters: every segment but the last names a
//! directory, marked `<segment>.d`, and the last names the file:
//!
//! ```text
//! /data/<bucket>/<hex>                       a key of up to 100 bytes
//! /data/<bucket>/<hex[..200]>.d/<hex[200..]>  a longer one
//! /data/<bucket>/<name>.lock                  its lock while it changes
//! /data/<bucket>/<name>.<random>.tmp          its next value, being written
//! ```
//!
//! Hex has no `.`, so a name with one is never a key's: listing skips locks
//! and temporary files and descends into `.d` directories. Directories are
//! never removed (a removal could race a writer creating a file in one);
//! an empty one costs nothing.

use crate::bindings::exports::wasi::keyvalue::store::Error;
use std::path::{Path, PathBuf};

/// Hex characters per file name segment: well under any name limit, with
/// room for the `.lock` and temporary suffixes.
const SEGMENT: usize = 200;
/// Marks a directory that continues a long key's name.
const DIR_MARK: &str = ".d";

/// The directory of the bucket `identifier`, if it is a plain name.
pub fn bucket_dir(root: &str, identifier: &str) -> Option<PathBuf> {
    let plain = !identifier.is_empty()
        && identifier != "."
        && identifier != ".."
        && !identifier.contains(['/', '\\', '\0']);
    plain.then(|| Path::new(root).join(identifier))
}

/// The file holding `key` in the bucket at `dir`.
pub fn key_file(dir: &Path, key: &str) -> Result<PathBuf, Error> {
    if key.is_empty() {
        return Err(Error::Other("the empty key is not stored".into()));
    }
    let name = hex::encode(key.as_bytes());
    let mut path = dir.to_path_buf();
    let mut rest = name.as_str();
    while rest.len() > SEGMENT {
        let (head, tail) = rest.split_at(SEGMENT);
        path.push(format!("{head}{DIR_MARK}"));
        rest = tail;
    }
    path.push(rest);
    Ok(path)
}

/// A file beside `file`, named after it with `suffix`.
pub fn beside(file: &Path, suffix: &str) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    file.with_file_name(name)
}

/// Every key in the bucket at `dir`.
pub fn list(dir: &Path) -> Result<Vec<String>, Error> {
    let mut keys = Vec::new();
    walk(dir, String::new(), &mut keys)?;
    Ok(keys)
}

fn walk(dir: &Path, prefix: String, keys: &mut Vec<String>) -> Result<(), Error> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        // Nothing stored yet.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::Other(format!("listing {}: {e}", dir.display()))),
    };
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            // Removed while the directory was read (the WASI host looks
            // each entry up as it goes): not there, so not listed.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::Other(format!("listing {}: {e}", dir.display()))),
        };
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if let Some(segment) = name.strip_suffix(DIR_MARK) {
            walk(&entry.path(), format!("{prefix}{segment}"), keys)?;
        } else if !name.contains('.') {
            // Not hex or not UTF-8: not a file this component wrote.
            let Ok(bytes) = hex::decode(format!("{prefix}{name}")) else {
                continue;
            };
            if let Ok(key) = String::from_utf8(bytes) {
                keys.push(key);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_keys_are_cut_into_directories() {
        let dir = Path::new("/b");
        assert_eq!(key_file(dir, "ab").unwrap(), Path::new("/b/6162"));
        let long = "x".repeat(150);
        let path = key_file(dir, &long).unwrap();
        let hex = "78".repeat(150);
        assert_eq!(
            path,
            Path::new("/b")
                .join(format!("{}.d", &hex[..200]))
                .join(&hex[200..])
        );
        assert!(bucket_dir("/data", "../x").is_none());
        assert_eq!(
            bucket_dir("/data", "default").unwrap(),
            Path::new("/data/default")
        );
    }
}
