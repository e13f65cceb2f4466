//! The S3 operations the store is built from, on full S3 keys: HEAD, GET
//! (ranged), conditional PUT and DELETE, DeleteObjects, ListObjectsV2,
//! CopyObject, and server-side assembly of a multipart upload out of
//! other objects (UploadPartCopy), which is how bytes that are in several
//! objects (a session's parts) become one without passing through here.

use crate::format::{DIGEST_META, MAX_PARTS, STAGING};
use crate::http::{Client, Head, Method, Request, Response};
use crate::keys::encode_path;
use crate::settings::{Settings, MAX_PART};
use crate::xml::{self, ListPage};
use crate::{Condition, ObjectError};
use sha2::{Digest as _, Sha256};

/// The most an XML answer (a listing page, a copy's result) is read of.
const XML_MAX: u64 = 16 << 20;
/// DeleteObjects takes at most this many keys a request.
const DELETE_BATCH: usize = 1000;

/// One S3 object (full key) that holds `size` bytes of an object, in order
/// with the others.
#[derive(Clone, Debug, PartialEq)]
pub struct Piece {
    pub key: String,
    pub size: u64,
}

pub struct Bucket {
    pub client: Client,
    prefix: String,
    /// Size of the parts new sessions are stored in, and of the parts a
    /// single object is copied in.
    pub part_size: u64,
}

fn io(what: &str, e: String) -> ObjectError {
    ObjectError::Io(format!("{what}: {e}"))
}

/// A request made conditional on `when`: create-if-absent is
/// `If-None-Match: *`, compare-and-swap is `If-Match` on the ETag.
pub fn on_condition<'a>(req: Request<'a>, when: &Condition) -> Request<'a> {
    match when {
        Condition::Always => req,
        Condition::IfAbsent => req.header("if-none-match", "*"),
        Condition::IfVersion(v) => req.header("if-match", v.clone()),
    }
}

impl Bucket {
    pub fn new(settings: Settings) -> Bucket {
        Bucket {
            prefix: settings.prefix.clone(),
            part_size: settings.part_size,
            client: Client::new(settings),
        }
    }

    /// The S3 key of an object's key.
    pub fn full(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    /// The store's prefix as a key prefix: `prefix/`, or empty for a
    /// store on the whole bucket.
    pub fn root(&self) -> String {
        if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        }
    }

    /// Where the session at `key` stages its bytes.
    pub fn staging(&self, key: &str) -> String {
        self.full(&format!("{STAGING}/{key}"))
    }

    pub fn part_key(&self, key: &str, n: u64) -> String {
        format!("{}/part-{n:05}", self.staging(key))
    }

    fn copy_source(&self, full: &str) -> String {
        format!("{}/{}", self.client.settings().bucket, encode_path(full))
    }

    pub fn head(&self, full: &str) -> Result<Head, ObjectError> {
        let req = Request::new("HeadObject", Method::Head, Some(full));
        Ok(self.client.send(&req)?.head)
    }

    /// A GET of the object, or of bytes `first..=last` of it.
    pub fn get(&self, full: &str, range: Option<(u64, u64)>) -> Result<Response, ObjectError> {
        let mut req = Request::new("GetObject", Method::Get, Some(full));
        if let Some((first, last)) = range {
            req = req.header("range", format!("bytes={first}-{last}"));
        }
        self.client.send(&req)
    }

    /// Write an object whole, subject to `when`, with user metadata.
    pub fn put<K: AsRef<str>, V: AsRef<str>>(
        &self,
        full: &str,
        body: &[u8],
        when: &Condition,
        meta: &[(K, V)],
    ) -> Result<Head, ObjectError> {
        let mut req = Request::new("PutObject", Method::Put, Some(full)).body(body);
        for (k, v) in meta {
            req = req.meta(k.as_ref(), v.as_ref());
        }
        let req = on_condition(req, when);
        Ok(self.client.send(&req)?.head)
    }

    /// Delete an object; with `if_match`, only that version of it. S3
    /// answers 204 whether it was there or not.
    pub fn delete(&self, full: &str, if_match: Option<&str>) -> Result<(), ObjectError> {
        let mut req = Request::new("DeleteObject", Method::Delete, Some(full));
        if let Some(v) = if_match {
            req = req.header("if-match", v);
        }
        self.client.send(&req)?;
        Ok(())
    }

    /// Delete many objects, a thousand a request. Keys that fail are left
    /// for gc's sweep of orphaned staging, as the native backend does.
    pub fn delete_many(&self, keys: &[String]) -> Result<(), ObjectError> {
        for batch in keys.chunks(DELETE_BATCH) {
            let body = xml::delete_body(batch);
            // S3 insists on a checksum of a DeleteObjects body.
            let sum = base64(&Sha256::digest(body.as_bytes()));
            let req = Request::new("DeleteObjects", Method::Post, None)
                .query("delete", "")
                .header("x-amz-sdk-checksum-algorithm", "SHA256")
                .header("x-amz-checksum-sha256", sum)
                .body(body.as_bytes());
            self.client.send_xml(&req, XML_MAX)?;
        }
        Ok(())
    }

    /// Walk a listing of `prefix` (a full key prefix), split at `/` if
    /// `delimited`, a page at a time, while `each` returns true.
    pub fn list(
        &self,
        prefix: &str,
        delimited: bool,
        mut each: impl FnMut(ListPage) -> bool,
    ) -> Result<(), ObjectError> {
        let mut token: Option<String> = None;
        loop {
            let mut req = Request::new("ListObjectsV2", Method::Get, None)
                .query("list-type", "2")
                .query("prefix", prefix);
            if delimited {
                req = req.query("delimiter", "/");
            }
            if let Some(t) = &token {
                req = req.query("continuation-token", t.clone());
            }
            let (_, body) = self.client.send(&req)?.bytes(XML_MAX)?;
            let page =
                xml::list_page(&body).map_err(|e| io(&format!("ListObjectsV2 {prefix}"), e))?;
            token = page.next.clone();
            if !each(page) || token.is_none() {
                return Ok(());
            }
        }
    }

    /// Every key under `prefix` (a full key prefix).
    pub fn keys_under(&self, prefix: &str) -> Result<Vec<String>, ObjectError> {
        let mut keys = Vec::new();
        self.list(prefix, false, |page| {
            keys.extend(page.objects.into_iter().map(|(k, _)| k));
            true
        })?;
        Ok(keys)
    }

    /// CopyObject (at most 5 GiB) with new user metadata: its new ETag and
    /// modification time. `if_absent`: only if `dst` is not there (stores
    /// that do not know the condition on a copy ignore it, so callers
    /// check first too).
    pub fn copy_object<K: AsRef<str>, V: AsRef<str>>(
        &self,
        src: &str,
        dst: &str,
        meta: &[(K, V)],
        if_absent: bool,
    ) -> Result<(String, Option<u64>), ObjectError> {
        let mut req = Request::new("CopyObject", Method::Put, Some(dst))
            .header("x-amz-copy-source", self.copy_source(src))
            .header("x-amz-metadata-directive", "REPLACE");
        for (k, v) in meta {
            req = req.meta(k.as_ref(), v.as_ref());
        }
        if if_absent {
            req = req.header("if-none-match", "*");
        }
        let (_, body) = self.client.send_xml(&req, XML_MAX)?;
        xml::copy_result(&body).map_err(|e| io(&format!("CopyObject {dst}"), e))
    }

    /// The size of the parts `pieces` are copied in. A session's pieces
    /// are copied whole: they are all one part size but the last, which
    /// is what S3 (and R2, stricter) want of a multipart upload's parts,
    /// whatever the part size of this instance. A single object is cut
    /// into parts of `part_size`, larger if it would take more than S3's
    /// 10,000 parts.
    fn copy_part_size(&self, pieces: &[Piece]) -> u64 {
        match pieces {
            [one] => {
                let needed = one.size.div_ceil(MAX_PARTS).next_multiple_of(1 << 20);
                self.part_size.max(needed).min(MAX_PART)
            }
            _ => pieces
                .iter()
                .map(|p| p.size)
                .max()
                .unwrap_or(1)
                .clamp(1, MAX_PART),
        }
    }

    /// Make `dst` out of `pieces` by server-side copies into one multipart
    /// upload, recording `digest`; `If-None-Match: *` unless `replace`.
    pub fn assemble(
        &self,
        pieces: &[Piece],
        dst: &str,
        digest: &str,
        replace: bool,
    ) -> Result<(), ObjectError> {
        let meta = [(DIGEST_META, digest)];
        let when = if replace {
            Condition::Always
        } else {
            Condition::IfAbsent
        };
        let total: u64 = pieces.iter().map(|p| p.size).sum();
        if total == 0 {
            // No part to copy: an empty object is an ordinary PUT.
            self.put(dst, &[], &when, &meta)?;
            return Ok(());
        }
        let create = Request::new("CreateMultipartUpload", Method::Post, Some(dst))
            .query("uploads", "")
            .meta(DIGEST_META, digest);
        let (_, body) = self.client.send_xml(&create, XML_MAX)?;
        let upload_id =
            xml::upload_id(&body).map_err(|e| io(&format!("CreateMultipartUpload {dst}"), e))?;
        let result = self.copy_parts(pieces, dst, &upload_id).and_then(|parts| {
            let body = xml::complete_body(&parts);
            let complete = Request::new("CompleteMultipartUpload", Method::Post, Some(dst))
                .query("uploadId", upload_id.as_str())
                .body(body.as_bytes());
            // A 200 may still carry an <Error>: `send_xml` reads it.
            self.client
                .send_xml(&on_condition(complete, &when), XML_MAX)
                .map(|_| ())
        });
        if result.is_err() {
            let abort = Request::new("AbortMultipartUpload", Method::Delete, Some(dst))
                .query("uploadId", upload_id.as_str());
            let _ = self.client.send(&abort);
        }
        result
    }

    /// UploadPartCopy of every part: their numbers and ETags.
    fn copy_parts(
        &self,
        pieces: &[Piece],
        dst: &str,
        upload_id: &str,
    ) -> Result<Vec<(u32, String)>, ObjectError> {
        let chunk = self.copy_part_size(pieces);
        let mut parts = Vec::new();
        for p in pieces {
            let mut off = 0;
            while off < p.size {
                let len = (p.size - off).min(chunk);
                let n = parts.len() as u64 + 1;
                if n > MAX_PARTS {
                    return Err(ObjectError::Io(format!(
                        "{dst}: more than S3's {MAX_PARTS} parts"
                    )));
                }
                let req = Request::new("UploadPartCopy", Method::Put, Some(dst))
                    .query("partNumber", n.to_string())
                    .query("uploadId", upload_id)
                    .header("x-amz-copy-source", self.copy_source(&p.key))
                    .header(
                        "x-amz-copy-source-range",
                        format!("bytes={off}-{}", off + len - 1),
                    );
                let (_, body) = self.client.send_xml(&req, XML_MAX)?;
                let (etag, _) =
                    xml::copy_result(&body).map_err(|e| io(&format!("UploadPartCopy {dst}"), e))?;
                parts.push((n as u32, etag));
                off += len;
            }
        }
        Ok(parts)
    }
}

/// Standard base64, with padding (a checksum header's encoding).
fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_of_a_checksum() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(
            base64(&Sha256::digest(b"")),
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
    }
}
