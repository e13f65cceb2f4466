//! What a registry over objects-kv left in kv-fs's directory, read directly
//! for checks (the files kv-fs writes, the records objects-kv writes):
//!
//! - kv-fs keeps bucket `default` under `<dir>/default/`, one file per key,
//!   named by the hex of the key's bytes, cut into segments of 200 hex
//!   characters of which all but the last are directories `<segment>.d`;
//!   names with any other `.` are its locks and temporary files.
//! - objects-kv keeps the record of object `k` at key `o/<k>`: a line of
//!   JSON, a newline, then the bytes of an inline object. A chunked
//!   object's bytes are in keys `c/<id>/<n>`, chunk `n` of each extent of
//!   its record's `body.chunks.extents`, `chunk_size` bytes each but the
//!   last. A record with `"state":"gone"` is a tombstone: no object.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The bucket objects-kv opens.
const BUCKET: &str = "default";
const SEGMENT: usize = 200;
const DIR_MARK: &str = ".d";

pub struct KvView {
    dir: PathBuf,
}

/// A live object's record: its header and the bytes after it.
struct Record {
    head: serde_json::Value,
    inline: Vec<u8>,
}

impl KvView {
    /// The view of the directory passed to kv-fs as `--dir DIR::/data`.
    pub fn new(dir: &Path) -> KvView {
        KvView {
            dir: dir.to_path_buf(),
        }
    }

    /// Every live object under `prefix` (a repository path, or "" for
    /// all), as paths relative to it.
    pub fn files(&self, prefix: &str) -> BTreeSet<String> {
        let want = match prefix {
            "" => "o/".to_string(),
            p => format!("o/{}/", p.trim_end_matches('/')),
        };
        self.keys()
            .into_iter()
            .filter(|k| k.starts_with(&want) && self.record(k).is_some())
            .map(|k| k[want.len()..].to_string())
            .collect()
    }

    /// The whole bytes of the object at `key`, if there is one (and all of
    /// its chunks are there).
    pub fn read(&self, key: &str) -> Option<Vec<u8>> {
        let record = self.record(&format!("o/{key}"))?;
        let size = record.head["size"].as_u64()?;
        let body = &record.head["body"];
        if body.as_str() == Some("inline") {
            return Some(record.inline);
        }
        let chunks = &body["chunks"];
        let chunk_size = chunks["chunk_size"].as_u64().filter(|n| *n > 0)?;
        let mut out = Vec::new();
        for extent in chunks["extents"].as_array()? {
            let id = extent["id"].as_str()?;
            let extent_size = extent["size"].as_u64()?;
            for n in 0..extent_size.div_ceil(chunk_size) {
                out.extend(self.value(&format!("c/{id}/{n}"))?);
            }
        }
        (out.len() as u64 == size).then_some(out)
    }

    /// The record at store key `key`, unless it is missing or a tombstone.
    fn record(&self, key: &str) -> Option<Record> {
        let raw = self.value(key)?;
        let end = raw.iter().position(|&b| b == b'\n')?;
        let head: serde_json::Value = serde_json::from_slice(&raw[..end]).ok()?;
        if head["state"] != "live" {
            return None;
        }
        Some(Record {
            head,
            inline: raw[end + 1..].to_vec(),
        })
    }

    /// The value kv-fs holds for store key `key`.
    fn value(&self, key: &str) -> Option<Vec<u8>> {
        std::fs::read(self.key_file(key)).ok()
    }

    fn key_file(&self, key: &str) -> PathBuf {
        let name = hex::encode(key.as_bytes());
        let mut path = self.dir.join(BUCKET);
        let mut rest = name.as_str();
        while rest.len() > SEGMENT {
            let (head, tail) = rest.split_at(SEGMENT);
            path.push(format!("{head}{DIR_MARK}"));
            rest = tail;
        }
        path.push(rest);
        path
    }

    /// Every store key in the bucket.
    fn keys(&self) -> Vec<String> {
        let mut out = Vec::new();
        walk(&self.dir.join(BUCKET), String::new(), &mut out);
        out
    }
}

fn walk(dir: &Path, prefix: String, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if let Some(segment) = name.strip_suffix(DIR_MARK) {
            walk(&entry.path(), format!("{prefix}{segment}"), out);
        } else if !name.contains('.') {
            let key = hex::decode(format!("{prefix}{name}"))
                .ok()
                .and_then(|b| String::from_utf8(b).ok());
            out.extend(key);
        }
    }
}
