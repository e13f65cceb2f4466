//! The record of an object: what the key-value store holds at `o/<key>`.
//!
//! A record is one line of JSON, a newline, then the object's bytes when
//! they are inline (small objects); chunked objects have nothing after the
//! newline. JSON escapes newlines in strings, so the first `\n` always ends
//! the header:
//!
//! ```text
//! {"state":"live","version":"9f3c…","size":2,"modified_ms":…,"body":"inline"}\n{}
//! {"state":"live","version":…,"size":5242880,"modified_ms":…,
//!  "body":{"chunks":{"chunk_size":4194304,"extents":[{"id":"<32 hex>","size":5242880}]}},
//!  "sha256":{…},"lease":{"until_ms":…,"op":"append"}}\n
//! {"state":"gone","version":"…","at_ms":…}\n
//! ```
//!
//! `extents` are the writes the bytes came from, in order; extent `id`'s
//! chunk `n` is the key `c/<id>/<n>` and holds bytes `[n·chunk_size,
//! (n+1)·chunk_size)` of the extent (the last chunk may be shorter).
//! `sha256` is the resumable hash state of all `size` bytes, kept by
//! appends. `lease` says an append or a publish is under way until then.
//! A `gone` record is a tombstone: the object was just removed.

use crate::bindings::exports::skiff::registry::objects::{Meta, ObjectError};
use crate::keys;
use serde::{Deserialize, Serialize};
use skiff_core::resumable::Sha256State;

/// Objects up to this size are stored in their record; larger ones in
/// chunks. Manifests and the layouts' small documents fit.
pub const INLINE_MAX: usize = 64 << 10;
/// The size of the chunks new objects are written in: far below Spin's
/// 128 MiB cap on a value, and the most a guest holds of a blob at once.
pub const CHUNK_SIZE: u64 = 4 << 20;
/// The largest chunk size a record may name; anything larger is corrupt.
const MAX_CHUNK_SIZE: u64 = 128 << 20;
/// A tombstone younger than this is being removed by its writer: other
/// writers wait for it to go rather than write over it (see `lib.rs`).
pub const TOMBSTONE_GRACE_MS: u64 = 30_000;

#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(tag = "state", rename_all = "kebab-case")]
enum Header {
    Live(Head),
    Gone { version: String, at_ms: u64 },
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Head {
    pub version: String,
    pub size: u64,
    pub modified_ms: u64,
    pub body: Body,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<Sha256State>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(rename_all = "kebab-case")]
pub enum Body {
    /// The bytes follow the header in the record.
    Inline,
    Chunks {
        chunk_size: u64,
        extents: Vec<Extent>,
    },
}

/// The bytes one write stored, under its own id.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Extent {
    pub id: String,
    pub size: u64,
}

impl Extent {
    pub fn chunks(&self, chunk_size: u64) -> u64 {
        self.size.div_ceil(chunk_size)
    }
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Lease {
    pub until_ms: u64,
    pub op: LeaseOp,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub enum LeaseOp {
    Append,
    /// Publishing the bytes as the object `to`, which may come to share
    /// their chunks.
    Publish {
        to: String,
    },
}

/// A live object as read: its head, its inline bytes, and the record's
/// bytes exactly as stored (what a compare-and-swap compares).
#[derive(Clone, Debug)]
pub struct Object {
    pub head: Head,
    pub inline: Vec<u8>,
    pub raw: Vec<u8>,
}

/// What a record key holds.
pub enum Seen {
    /// Nothing: never written, removed, or a tombstone whose remover is
    /// long gone (which a writer may replace).
    Absent,
    /// A fresh tombstone: its remover is about to delete it.
    Removing,
    Live(Object),
    /// Not a record this component wrote; the message names the key.
    Corrupt(String),
}

impl Seen {
    /// The live object, or why there is none.
    pub fn live(self) -> Result<Object, ObjectError> {
        match self {
            Seen::Live(o) => Ok(o),
            Seen::Absent | Seen::Removing => Err(ObjectError::NotFound),
            Seen::Corrupt(m) => Err(ObjectError::Io(m)),
        }
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Head {
    /// A new version of an object of `size` bytes, written now.
    pub fn fresh(size: u64, body: Body) -> Head {
        Head {
            version: keys::fresh_version(),
            size,
            modified_ms: now_ms(),
            body,
            sha256: None,
            lease: None,
        }
    }

    pub fn meta(&self) -> Meta {
        Meta {
            size: self.size,
            modified_ms: self.modified_ms,
            version: self.version.clone(),
        }
    }

    /// The operation holding the object at `now`, if its lease runs.
    pub fn held(&self, now: u64) -> Option<&LeaseOp> {
        self.lease
            .as_ref()
            .filter(|l| l.until_ms > now)
            .map(|l| &l.op)
    }

    /// Whether a publish holds the object at `now`: its chunks may be on
    /// their way to another object, so nothing may replace or remove it.
    pub fn publishing(&self, now: u64) -> bool {
        matches!(self.held(now), Some(LeaseOp::Publish { .. }))
    }
}

/// The record of an object with head `head` and (for an inline body) the
/// bytes `inline`.
pub fn encode(head: &Head, inline: &[u8]) -> Vec<u8> {
    let mut out = header_bytes(&Header::Live(head.clone()));
    out.extend_from_slice(inline);
    out
}

/// A tombstone written now.
pub fn tombstone() -> Vec<u8> {
    header_bytes(&Header::Gone {
        version: keys::fresh_version(),
        at_ms: now_ms(),
    })
}

fn header_bytes(h: &Header) -> Vec<u8> {
    // Serializing plain structs of strings and numbers cannot fail.
    let mut out = serde_json::to_vec(h).unwrap_or_default();
    out.push(b'\n');
    out
}

/// What the record of object `key` says, given what the store holds there.
pub fn decode(key: &str, raw: Option<Vec<u8>>) -> Seen {
    let Some(raw) = raw else {
        return Seen::Absent;
    };
    match parse(&raw) {
        Ok(Header::Gone { at_ms, .. }) => {
            if now_ms() < at_ms.saturating_add(TOMBSTONE_GRACE_MS) {
                Seen::Removing
            } else {
                Seen::Absent
            }
        }
        Ok(Header::Live(head)) => match check(&head, &raw) {
            Ok(inline) => Seen::Live(Object { head, inline, raw }),
            Err(why) => Seen::Corrupt(format!("{key}: corrupt record: {why}")),
        },
        Err(why) => Seen::Corrupt(format!("{key}: corrupt record: {why}")),
    }
}

/// Whether a record (as listed) stands for an object: live, or not
/// readable as a record at all (left for `stat` to report).
pub fn stands_for_object(raw: &[u8]) -> bool {
    !matches!(parse(raw), Ok(Header::Gone { .. }))
}

fn parse(raw: &[u8]) -> Result<Header, String> {
    let end = raw
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("no header line")?;
    serde_json::from_slice(&raw[..end]).map_err(|e| e.to_string())
}

/// Check that a head describes its bytes; the inline bytes.
fn check(head: &Head, raw: &[u8]) -> Result<Vec<u8>, String> {
    let start = raw.iter().position(|&b| b == b'\n').unwrap_or(raw.len()) + 1;
    let inline = raw.get(start..).unwrap_or_default();
    match &head.body {
        Body::Inline => {
            if inline.len() as u64 != head.size {
                return Err(format!(
                    "{} inline bytes for a size of {}",
                    inline.len(),
                    head.size
                ));
            }
        }
        Body::Chunks {
            chunk_size,
            extents,
        } => {
            if !inline.is_empty() {
                return Err("inline bytes after a chunked body".into());
            }
            if *chunk_size == 0 || *chunk_size > MAX_CHUNK_SIZE {
                return Err(format!("chunk size {chunk_size}"));
            }
            if let Some(bad) = extents.iter().find(|e| !keys::is_id(&e.id)) {
                return Err(format!("extent id {:?}", bad.id));
            }
            let total = extents
                .iter()
                .try_fold(0u64, |sum, e| sum.checked_add(e.size))
                .ok_or("extent sizes overflow")?;
            if total != head.size {
                return Err(format!(
                    "extents of {total} bytes for a size of {}",
                    head.size
                ));
            }
        }
    }
    Ok(inline.to_vec())
}
