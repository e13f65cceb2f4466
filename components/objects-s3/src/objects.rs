//! The operations on small objects, which map one to one onto S3 objects:
//! `get`, `put`, `stat`, `delete`, `list-children`, `touch`.

use crate::bucket::{Bucket, Piece};
use crate::clock::now_ms;
use crate::format::{kind, size_of, Kind, DIGEST_META, STAGING};
use crate::http::Head;
use crate::keys::valid_prefix;
use crate::reads::Opened;
use crate::settings::MAX_PART;
use crate::{Child, Condition, Meta, ObjectError};

/// What the interface knows of an object, from its HEAD or GET: a session
/// or a reference stands for the size it records.
pub fn meta_of(h: &Head) -> Meta {
    Meta {
        size: size_of(h),
        modified_ms: h.modified_ms(),
        version: h.etag(),
    }
}

impl Bucket {
    pub fn get_object(&self, key: &str, max: u64) -> Result<(Vec<u8>, Meta), ObjectError> {
        match self.open(key)? {
            Opened::Plain(head, mut body) => {
                let meta = meta_of(&head);
                if meta.size > max {
                    return Err(ObjectError::TooLarge(meta.size));
                }
                let bytes = body
                    .read_all(max)?
                    .ok_or(ObjectError::TooLarge(meta.size.max(max + 1)))?;
                Ok((bytes, meta))
            }
            // The bytes are elsewhere (the holder's, or staged); the rest is
            // the object's own.
            Opened::Reference { head, digest, size } => {
                let meta = meta_of(&head);
                if size > max {
                    return Err(ObjectError::TooLarge(size));
                }
                let pieces = self.reference_pieces(&digest, size, &self.full(key))?;
                Ok((self.read_pieces(&pieces, max)?, meta))
            }
            Opened::Session(s, head) => {
                let mut meta = meta_of(&head);
                meta.size = s.size;
                if s.size > max {
                    return Err(ObjectError::TooLarge(s.size));
                }
                let pieces = self.session_pieces(key, &s);
                Ok((self.read_pieces(&pieces, max)?, meta))
            }
        }
    }

    pub fn put_object(
        &self,
        key: &str,
        data: &[u8],
        when: &Condition,
    ) -> Result<Meta, ObjectError> {
        let head = self.put(&self.full(key), data, when, &[] as &[(&str, &str)])?;
        // S3 answers a PUT without its Last-Modified; this clock's time is
        // close enough, and spares a HEAD.
        Ok(Meta {
            size: data.len() as u64,
            modified_ms: now_ms(),
            version: head.etag(),
        })
    }

    pub fn stat(&self, key: &str) -> Result<Meta, ObjectError> {
        Ok(meta_of(&self.head(&self.full(key))?))
    }

    pub fn delete_object(&self, key: &str, when: &Condition) -> Result<(), ObjectError> {
        if matches!(when, Condition::IfAbsent) {
            return Err(ObjectError::Io(
                "delete takes no if-absent condition".into(),
            ));
        }
        let full = self.full(key);
        // S3 answers 204 for a key that is not there: the interface wants
        // to know (a DELETE of an unknown blob is a 404), and whether it is
        // a session, whose staged bytes go with it.
        let h = self.head(&full)?;
        let guard = match when {
            Condition::IfVersion(v) if h.etag() != *v => {
                return Err(ObjectError::PreconditionFailed)
            }
            // Checked above, and again by S3 where it knows `If-Match` on a
            // DELETE (a store that ignores it leaves only a short race).
            Condition::IfVersion(v) => Some(v.as_str()),
            _ => None,
        };
        self.delete(&full, guard)?;
        if kind(&h) == Kind::Session {
            self.drop_staging(key)?;
        }
        Ok(())
    }

    pub fn list_children(&self, prefix: &str) -> Result<Vec<Child>, ObjectError> {
        if !valid_prefix(prefix) {
            return Err(ObjectError::InvalidKey(prefix.to_string()));
        }
        let full = if prefix.is_empty() {
            self.root()
        } else {
            self.full(prefix)
        };
        let mut out = Vec::new();
        self.list(&full, true, |page| {
            for p in page.prefixes {
                if let Some(name) = p.strip_prefix(&full) {
                    let name = name.trim_end_matches('/');
                    // Staging is the backend's own, not an object.
                    if !(prefix.is_empty() && name == STAGING) {
                        out.push(Child {
                            name: name.to_string(),
                            is_prefix: true,
                        });
                    }
                }
            }
            for (k, _) in page.objects {
                if let Some(name) = k.strip_prefix(&full) {
                    out.push(Child {
                        name: name.to_string(),
                        is_prefix: false,
                    });
                }
            }
            true
        })?;
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    pub fn touch(&self, key: &str) -> Result<Meta, ObjectError> {
        let full = self.full(key);
        let h = self.head(&full)?;
        let size = h.content_length();
        if size > MAX_PART {
            // CopyObject stops at 5 GiB: larger objects are copied onto
            // themselves part by part (blobs, whose only metadata is this).
            let digest = h.meta(DIGEST_META).unwrap_or_default();
            let whole = [Piece {
                key: full.clone(),
                size,
            }];
            self.assemble(&whole, &full, digest, true)?;
            return self.stat(key);
        }
        // S3 has no way to set a modification time but to write the
        // object: a copy onto itself (server-side, its metadata kept, which
        // S3 wants replaced for a copy onto itself to be allowed).
        let (version, modified) = self.copy_object(&full, &full, &h.user_metadata(), false)?;
        Ok(Meta {
            size: size_of(&h),
            modified_ms: modified.unwrap_or_else(now_ms),
            version,
        })
    }
}
