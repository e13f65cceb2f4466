//! Objects in an S3 bucket (AWS, or any S3-compatible store: MinIO, R2,
//! Ceph, moto), under a key prefix.
//!
//! Small objects map one to one onto S3 objects; the ETag is the version,
//! and compare-and-swap is a conditional PUT (`If-Match`, `If-None-Match:
//! *`). Only `write-from` needs more, since S3 objects cannot be appended
//! to: an object written by appends (an upload session's data) is a small
//! *session record* at its key, which knows its size and SHA-256 state, and
//! the bytes live beside it under `.skiff-staging/<key>/`: full parts of
//! exactly `part_size` bytes (`part-00001`, ...), and the bytes after the
//! last full part in a tail object named by the record. Everything a
//! session needs is in the bucket, so any process can continue it. An
//! append holds a lease in the record while it runs (`busy` for others);
//! parts are named by their offset, so an interrupted append that wrote
//! some is simply written over by its retry, and the record is replaced
//! (by compare-and-swap) only after the bytes are in place.
//!
//! `publish` makes the blob out of the staged parts with server-side part
//! copies into one multipart upload completed with `If-None-Match: *`:
//! the bytes never pass through the host again, every part but the last
//! has the same size (R2 insists), and no single PUT exceeds one part.
//!
//! Dedupe (`refs`): a blob already stored in another repository becomes a
//! *reference*, an empty object naming the digest, resolved through the
//! holders index (`super::holders`).

mod refs;
mod sweep;

use super::aws;
use super::backend::Backend;
use super::holders::Holders;
use super::keys::{algorithm_of, content_digest, digest_text, valid_key, valid_prefix};
use super::streams::{finish, write_all, BodyReader};
pub use crate::config::S3Settings;
use crate::runtime::skiff::registry::objects::{
    Child, Condition, Content, HashAlgorithm, Meta, ObjectError, Published, Written,
};
use crate::runtime::Priority;
use async_trait::async_trait;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use bytes::Bytes;
use sha2::{Digest as _, Sha512};
use skiff_core::s3_layout::{
    Session, DIGEST_META, LEASE_MS, REF_MARK, SESSION_MARK, SIZE_META, STAGING,
};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream};

pub struct S3 {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    part_size: u64,
    /// The dedupe index, which resolves references. Present whenever the
    /// store may hold references, even with dedupe turned off since.
    holders: Option<std::sync::Arc<dyn Holders>>,
    /// New blobs already stored elsewhere become references.
    dedupe: bool,
    /// The largest object S3 copies in one request (5 GiB); larger ones
    /// are copied part by part.
    max_copy: u64,
    /// With `redirect`: the client that signs the URLs blob GETs are sent
    /// to (naming `redirectendpoint` if there is one).
    presigner: Option<aws_sdk_s3::Client>,
    /// Digests computed in this scrub pass, by the S3 object hashed and
    /// the algorithm: the bytes behind many references are read once.
    pass_hashes: std::sync::Mutex<std::collections::HashMap<(String, u8), String>>,
}

/// How long a presigned URL of a redirect stays good: long enough for a
/// client to start the download, short enough not to be worth leaking.
const PRESIGNED_FOR: Duration = Duration::from_secs(20 * 60);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// An SDK error as the `objects` interface sees it.
fn sdk_err<E, R>(e: SdkError<E, R>) -> ObjectError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    let status = match &e {
        SdkError::ServiceError(s) => {
            // The raw status, as some errors (a HEAD's 404) have no code.
            let raw = format!("{:?}", s.raw());
            status_of(&raw)
        }
        _ => None,
    };
    let code = e.code().map(str::to_string);
    match (status, code.as_deref()) {
        (_, Some("NoSuchKey" | "NotFound" | "NoSuchUpload")) | (Some(404), _) => {
            ObjectError::NotFound
        }
        // 409 ConditionalRequestConflict: another conditional write to the
        // key is in flight; one of the two loses, as with a 412.
        (_, Some("PreconditionFailed" | "ConditionalRequestConflict")) | (Some(412 | 409), _) => {
            ObjectError::PreconditionFailed
        }
        // Still throttled after every retry: the client is told to come
        // back later (429), never that the registry failed (500).
        (_, Some("SlowDown" | "Throttling" | "ThrottlingException" | "RequestLimitExceeded"))
        | (Some(503), _) => ObjectError::Busy,
        _ => ObjectError::Io(format!(
            "S3: {}",
            aws_sdk_s3::error::DisplayErrorContext(&e)
        )),
    }
}

/// The HTTP status in a raw response's debug text.
fn status_of(raw: &str) -> Option<u16> {
    let at = raw.find("status: StatusCode(")? + "status: StatusCode(".len();
    raw[at..].split(')').next()?.trim().parse().ok()
}

fn meta_of(
    size: Option<i64>,
    etag: Option<&str>,
    modified: Option<&aws_sdk_s3::primitives::DateTime>,
) -> Meta {
    Meta {
        size: size.and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
        modified_ms: modified
            .and_then(|t| t.to_millis().ok())
            .and_then(|t| u64::try_from(t).ok())
            .unwrap_or(0),
        version: etag.unwrap_or_default().to_string(),
    }
}

impl S3 {
    /// Connect and check that the bucket is there and answers, so a wrong
    /// endpoint, bucket or credential stops the server at start, naming it.
    pub async fn connect(s: &S3Settings) -> anyhow::Result<S3> {
        let shared = aws::shared_config(&s.region, s.credentials.as_ref()).await;
        let mut conf = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(s.force_path_style)
            .interceptor(aws::CountRequests);
        if let Some(e) = &s.endpoint {
            conf = conf.endpoint_url(e);
        }
        let presigner = s.redirect.then(|| {
            let mut c = conf.clone();
            if let Some(e) = &s.redirect_endpoint {
                c = c.endpoint_url(e);
            }
            aws_sdk_s3::Client::from_conf(c.build())
        });
        let store = S3 {
            client: aws_sdk_s3::Client::from_conf(conf.build()),
            presigner,
            bucket: s.bucket.clone(),
            prefix: s.prefix.clone(),
            part_size: s.part_size,
            holders: None,
            pass_hashes: Default::default(),
            dedupe: false,
            max_copy: S3Settings::MAX_PART,
        };
        let where_ = aws::describe_endpoint(s.endpoint.as_deref(), &s.region);
        store
            .client
            .head_bucket()
            .bucket(&s.bucket)
            .send()
            .await
            .map_err(|e| {
                let detail = aws_sdk_s3::error::DisplayErrorContext(&e).to_string();
                let why = match e.raw_response().map(|r| r.status().as_u16()) {
                    Some(404) => "the bucket does not exist".to_string(),
                    Some(403) => "access denied: check accesskey/secretkey (or the AWS credential chain) and the bucket policy".to_string(),
                    Some(301 | 400) => "the bucket is in another region, or the endpoint is not S3".to_string(),
                    _ => format!("the endpoint did not answer as S3 does ({detail})"),
                };
                anyhow::anyhow!("bucket {:?} {where_}: {why}", s.bucket)
            })?;
        store
            .check_conditional_writes()
            .await
            .map_err(|e| anyhow::anyhow!("bucket {:?} {where_}: {e}", s.bucket))?;
        Ok(store)
    }

    /// Refuse a store that ignores conditional writes: with it, two
    /// writers of one `index.json` would silently lose each other's tags.
    /// A probe object under the staging prefix (swept by gc if a crash
    /// leaves it) is created, then written again under conditions that
    /// must fail.
    async fn check_conditional_writes(&self) -> Result<(), String> {
        let probe = self.full(&format!("{STAGING}/probe/{:016x}", rand::random::<u64>()));
        let put = |when: Condition| {
            let req = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(&probe)
                .body(ByteStream::from_static(b"probe"));
            async move {
                let req = on_condition(req, &when);
                req.send().await.map(|_| ()).map_err(sdk_err)
            }
        };
        let result = async {
            put(Condition::IfAbsent)
                .await
                .map_err(|e| format!("cannot write a probe object: {e:?}"))?;
            for (when, header) in [
                (Condition::IfAbsent, "If-None-Match: *"),
                (Condition::IfVersion("\"not-its-etag\"".into()), "If-Match"),
            ] {
                match put(when).await {
                    Err(ObjectError::PreconditionFailed) => {}
                    Ok(()) => {
                        return Err(format!(
                            "the store ignores {header} on PutObject; several writers \
                             would silently lose each other's tags, so skiff will not use it"
                        ))
                    }
                    Err(e) => return Err(format!("probing conditional writes: {e:?}")),
                }
            }
            Ok(())
        }
        .await;
        let _ = self.delete_keys(vec![probe.clone()]).await;
        result
    }

    /// Resolve references through `holders`; with `dedupe`, store a blob
    /// that is already in the bucket as a reference to it.
    pub fn with_holders(mut self, holders: std::sync::Arc<dyn Holders>, dedupe: bool) -> S3 {
        self.holders = Some(holders);
        self.dedupe = dedupe;
        self
    }

    fn hashed_in_pass(&self, what: &(String, u8)) -> Option<String> {
        self.pass_hashes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(what)
            .cloned()
    }

    fn full(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    fn staging(&self, key: &str) -> String {
        self.full(&format!("{STAGING}/{key}"))
    }

    fn part_key(&self, key: &str, n: u64) -> String {
        format!("{}/part-{n:05}", self.staging(key))
    }

    async fn head(
        &self,
        key: &str,
    ) -> Result<aws_sdk_s3::operation::head_object::HeadObjectOutput, ObjectError> {
        self.client
            .head_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .send()
            .await
            .map_err(sdk_err)
    }

    /// The session record at `key` and its version; `None` for a plain
    /// object (written whole, e.g. an empty upload).
    async fn session(&self, key: &str) -> Result<Option<(Session, String)>, ObjectError> {
        let out = self.get_object(&self.full(key), None).await?;
        let is_session = out.metadata().is_some_and(|m| m.contains_key(SESSION_MARK));
        if !is_session {
            return Ok(None);
        }
        let etag = out.e_tag().unwrap_or_default().to_string();
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| ObjectError::Io(format!("S3: reading {key}: {e}")))?
            .into_bytes();
        let s: Session = serde_json::from_slice(&body)
            .map_err(|e| ObjectError::Io(format!("{key}: a corrupt upload record: {e}")))?;
        Ok(Some((s, etag)))
    }

    /// Write a session record, subject to `when`; its new version.
    async fn put_session(
        &self,
        key: &str,
        s: &Session,
        when: &Condition,
    ) -> Result<String, ObjectError> {
        let body = serde_json::to_vec(s).map_err(|e| ObjectError::Io(e.to_string()))?;
        let req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .metadata(SESSION_MARK, "1")
            .metadata(SIZE_META, s.size.to_string())
            .body(ByteStream::from(body));
        let req = on_condition(req, when);
        let out = req.send().await.map_err(sdk_err)?;
        Ok(out.e_tag().unwrap_or_default().to_string())
    }

    /// Claim the session at `key` for one append or publish: the record
    /// as it was, with the version that holds the claim.
    async fn claim(
        &self,
        s: &Session,
        version: &str,
        key: &str,
    ) -> Result<(Session, String), ObjectError> {
        if s.lease_until_ms > now_ms() {
            return Err(ObjectError::Busy);
        }
        let mut leased = s.clone();
        leased.lease_until_ms = now_ms() + LEASE_MS;
        match self
            .put_session(key, &leased, &Condition::IfVersion(version.to_string()))
            .await
        {
            Ok(v) => Ok((leased, v)),
            Err(ObjectError::PreconditionFailed) => Err(ObjectError::Busy),
            Err(e) => Err(e),
        }
    }

    /// A GET of the S3 object `full_key` (of `range` of it), its body unread.
    async fn get_object(
        &self,
        full_key: &str,
        range: Option<String>,
    ) -> Result<aws_sdk_s3::operation::get_object::GetObjectOutput, ObjectError> {
        self.client
            .get_object()
            .bucket(&self.bucket)
            .key(full_key)
            .set_range(range)
            .send()
            .await
            .map_err(sdk_err)
    }

    async fn put_bytes(&self, full_key: &str, bytes: Bytes) -> Result<(), ObjectError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(full_key)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(sdk_err)?;
        Ok(())
    }

    /// A whole object read into memory: only for objects known to be at
    /// most one part.
    async fn get_bytes(&self, full_key: &str) -> Result<Bytes, ObjectError> {
        let out = self.get_object(full_key, None).await?;
        Ok(out
            .body
            .collect()
            .await
            .map_err(|e| ObjectError::Io(format!("S3: reading {full_key}: {e}")))?
            .into_bytes())
    }

    /// Every S3 key under `prefix` (a full key prefix).
    async fn keys_under(&self, prefix: &str) -> Result<Vec<String>, ObjectError> {
        Ok(self
            .list_under(prefix)
            .await?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }

    /// Every S3 key under `prefix`, with its modification time (ms).
    async fn list_under(&self, prefix: &str) -> Result<Vec<(String, u64)>, ObjectError> {
        let mut out = Vec::new();
        for page in self.list_pages(prefix, None).await? {
            out.extend(page.contents().iter().filter_map(|o| {
                let modified = meta_of(None, None, o.last_modified()).modified_ms;
                Some((o.key()?.to_string(), modified))
            }));
        }
        Ok(out)
    }

    /// Every page of a listing of `prefix` (a full key prefix), split at
    /// `delimiter` if given.
    async fn list_pages(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
    ) -> Result<Vec<ListObjectsV2Output>, ObjectError> {
        let mut pages = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_delimiter(delimiter.map(String::from))
                .set_continuation_token(token)
                .send()
                .await
                .map_err(sdk_err)?;
            token = page
                .next_continuation_token()
                .filter(|_| page.is_truncated() == Some(true))
                .map(String::from);
            pages.push(page);
            if token.is_none() {
                return Ok(pages);
            }
        }
    }

    /// The store's own prefix as a key prefix: `prefix/`, or empty for a
    /// store on the whole bucket.
    fn root(&self) -> String {
        if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        }
    }

    async fn delete_keys(&self, keys: Vec<String>) -> Result<(), ObjectError> {
        // DeleteObjects takes at most 1000 keys a request.
        for batch in keys.chunks(1000) {
            let ids = batch
                .iter()
                .map(|k| ObjectIdentifier::builder().key(k).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ObjectError::Io(e.to_string()))?;
            let delete = Delete::builder()
                .set_objects(Some(ids))
                .quiet(true)
                .build()
                .map_err(|e| ObjectError::Io(e.to_string()))?;
            self.client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(sdk_err)?;
        }
        Ok(())
    }

    /// The pieces an object's bytes are in, in order, with their sizes: the
    /// object itself, a session's parts and tail, or a reference's holder.
    async fn pieces(&self, key: &str) -> Result<Vec<(String, u64)>, ObjectError> {
        Ok(self.resolve(key).await?.0)
    }

    /// `pieces`, and whether they were found through a reference (whose
    /// holder may move: a read that finds it gone resolves it again).
    async fn resolve(&self, key: &str) -> Result<(Vec<(String, u64)>, bool), ObjectError> {
        // A HEAD first: a blob is read by ranges, never by a GET of it all.
        let h = self.head(key).await?;
        if let Some((digest, size)) = reference(&h) {
            let holder = self.holder_of(&digest, key).await?;
            return Ok((vec![(holder, size)], true));
        }
        if !is_session(&h) {
            let size = u64::try_from(h.content_length().unwrap_or(0)).unwrap_or(0);
            return Ok((vec![(self.full(key), size)], false));
        }
        match self.session(key).await? {
            Some((s, _)) => Ok((session_pieces(self, key, &s), false)),
            // Replaced by a plain object between the two requests.
            None => Box::pin(self.resolve(key)).await,
        }
    }

    /// Copy `[start, start+len)` of the pieces to `dst`, piece by piece and
    /// range by range: never more than one read chunk in memory.
    async fn stream_pieces(
        &self,
        pieces: &[(String, u64)],
        start: u64,
        len: u64,
        mut sink: impl FnMut(Bytes) -> Result<(), ObjectError> + Send,
        dst: Option<&mut DynOutputStream>,
    ) -> Result<(), ObjectError> {
        let mut dst = dst;
        let mut at = 0u64;
        let end = start
            .checked_add(len)
            .ok_or(ObjectError::Io("range overflows".into()))?;
        for (key, size) in pieces {
            let (p0, p1) = (at, at + size);
            at = p1;
            let (from, to) = (start.max(p0), end.min(p1));
            if from >= to {
                continue;
            }
            // One ranged GET per piece, streamed: memory stays at the
            // body's chunk size whatever the range.
            let (off, n) = (from - p0, to - from);
            let range = format!("bytes={off}-{}", off + n - 1);
            let out = self.get_object(key, Some(range)).await?;
            drain(key, out.body, n, &mut sink, dst.as_deref_mut()).await?;
        }
        if end > at {
            return Err(ObjectError::Io(format!(
                "range ends past the object ({at} bytes)"
            )));
        }
        if let Some(d) = dst {
            finish(d).await?;
        }
        Ok(())
    }

    /// `read-to` in one request when `key` is a plain object (a blob): a
    /// ranged GET of it. `false` (nothing written) for a reference or a
    /// session, whose bytes are elsewhere.
    async fn read_plain(
        &self,
        key: &str,
        start: u64,
        len: u64,
        dst: &mut DynOutputStream,
    ) -> Result<bool, ObjectError> {
        let last = start
            .checked_add(len - 1)
            .ok_or(ObjectError::Io("range overflows".into()))?;
        let full = self.full(key);
        let out = match self
            .get_object(&full, Some(format!("bytes={start}-{last}")))
            .await
        {
            Ok(out) => out,
            Err(ObjectError::NotFound) => return Err(ObjectError::NotFound),
            // A reference is empty, so any range of it is unsatisfiable.
            Err(_) => return Ok(false),
        };
        let marked = out
            .metadata()
            .is_some_and(|m| m.contains_key(REF_MARK) || m.contains_key(SESSION_MARK));
        if marked {
            return Ok(false);
        }
        drain(&full, out.body, len, &mut |_| Ok(()), Some(&mut *dst)).await?;
        finish(dst).await?;
        Ok(true)
    }

    /// Remove a session's staged bytes (its record stays to the caller).
    async fn drop_staging(&self, key: &str) -> Result<(), ObjectError> {
        let keys = self.keys_under(&format!("{}/", self.staging(key))).await?;
        self.delete_keys(keys).await
    }

    /// Make `dst` out of `pieces` by server-side copies, in parts of
    /// `part_size` bytes but the last; `If-None-Match: *` unless `replace`.
    async fn assemble(
        &self,
        pieces: &[(String, u64)],
        dst: &str,
        digest: &str,
        replace: bool,
    ) -> Result<(), ObjectError> {
        let dst_full = self.full(dst);
        let total: u64 = pieces.iter().map(|(_, n)| n).sum();
        if total == 0 {
            // No part to copy: an empty object is an ordinary PUT.
            let req = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(&dst_full)
                .metadata(DIGEST_META, digest)
                .body(ByteStream::from_static(b""));
            let req = if replace { req } else { req.if_none_match("*") };
            req.send().await.map_err(sdk_err)?;
            return Ok(());
        }
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&dst_full)
            .metadata(DIGEST_META, digest)
            .send()
            .await
            .map_err(sdk_err)?;
        let upload_id = created.upload_id().unwrap_or_default().to_string();
        let result = async {
            let mut parts = Vec::new();
            for (key, size) in pieces {
                let mut off = 0;
                while off < *size {
                    let len = (size - off).min(self.part_size);
                    let n = i32::try_from(parts.len() + 1)
                        .ok()
                        .filter(|n| (*n as u64) <= S3Settings::MAX_PARTS)
                        .ok_or_else(|| ObjectError::Io("more parts than S3 allows".into()))?;
                    let copied = self
                        .client
                        .upload_part_copy()
                        .bucket(&self.bucket)
                        .key(&dst_full)
                        .upload_id(&upload_id)
                        .part_number(n)
                        .copy_source(format!("{}/{}", self.bucket, urlencoding_path(key)))
                        .copy_source_range(format!("bytes={off}-{}", off + len - 1))
                        .send()
                        .await
                        .map_err(sdk_err)?;
                    let etag = copied
                        .copy_part_result()
                        .and_then(|r| r.e_tag())
                        .unwrap_or_default()
                        .to_string();
                    parts.push(CompletedPart::builder().part_number(n).e_tag(etag).build());
                    off += len;
                }
            }
            let req = self
                .client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(&dst_full)
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                );
            let req = if replace { req } else { req.if_none_match("*") };
            req.send().await.map_err(sdk_err)?;
            Ok(())
        }
        .await;
        if result.is_err() {
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(&dst_full)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        result
    }

    /// One append to a claimed session: stage the bytes, then replace the
    /// record (releasing the claim).
    async fn append(
        &self,
        key: &str,
        offset: u64,
        mut s: Session,
        claim: &str,
        src: &mut DynInputStream,
        limit: Option<u64>,
    ) -> Result<Written, ObjectError> {
        let part = usize::try_from(s.part_size).map_err(|_| ObjectError::Io("part size".into()))?;
        // The bytes after the last full part, continued by this append.
        let mut buf: Vec<u8> = match &s.tail {
            Some(t) => self.get_bytes(t).await?.to_vec(),
            None => Vec::new(),
        };
        buf.reserve(part.saturating_sub(buf.len()));
        // The largest object one multipart upload can make.
        let cap = s.part_size.saturating_mul(S3Settings::MAX_PARTS);
        let mut body = BodyReader::new(src, limit);
        while let Some(chunk) = body.next().await? {
            if offset.saturating_add(body.total) > cap {
                return Err(ObjectError::TooLarge(cap));
            }
            s.sha256.update(&chunk);
            let mut rest = &chunk[..];
            while !rest.is_empty() {
                let take = (part - buf.len()).min(rest.len());
                buf.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                if buf.len() == part {
                    s.parts += 1;
                    let full = std::mem::replace(&mut buf, Vec::with_capacity(part));
                    self.put_bytes(&self.part_key(key, s.parts), Bytes::from(full))
                        .await?;
                }
            }
        }
        let old_tail = s.tail.take();
        s.size = offset + body.total;
        if !buf.is_empty() {
            // A new name each time: the record names the tail that goes
            // with its size, so a crash between the two writes loses nothing.
            let name = format!(
                "{}/tail-{}-{:016x}",
                self.staging(key),
                s.size,
                rand::random::<u64>()
            );
            self.put_bytes(&name, Bytes::from(buf)).await?;
            s.tail = Some(name);
        }
        s.lease_until_ms = 0;
        match self
            .put_session(key, &s, &Condition::IfVersion(claim.to_string()))
            .await
        {
            Ok(_) => {}
            // The lease ran out and another writer took the session.
            Err(ObjectError::PreconditionFailed) => return Err(ObjectError::Busy),
            Err(e) => return Err(e),
        }
        if let Some(t) = old_tail.filter(|t| Some(t) != s.tail.as_ref()) {
            let _ = self.delete_keys(vec![t]).await;
        }
        Ok(Written {
            size: s.size,
            sha256: Some(s.sha256.hex()),
        })
    }

    /// Hash an object's pieces with `algorithm`.
    async fn hash_pieces(
        &self,
        pieces: &[(String, u64)],
        algorithm: HashAlgorithm,
    ) -> Result<String, ObjectError> {
        match algorithm {
            HashAlgorithm::Sha256 => self.hash_with(pieces, sha2::Sha256::new()).await,
            HashAlgorithm::Sha512 => self.hash_with(pieces, Sha512::new()).await,
        }
    }

    async fn hash_with<H: sha2::Digest + Send>(
        &self,
        pieces: &[(String, u64)],
        mut hasher: H,
    ) -> Result<String, ObjectError> {
        let total: u64 = pieces.iter().map(|(_, s)| s).sum();
        let feed = |b: Bytes| {
            hasher.update(&b);
            Ok(())
        };
        self.stream_pieces(pieces, 0, total, feed, None).await?;
        Ok(hex::encode(hasher.finalize()))
    }
}

/// A PutObject made conditional on `when`: create-if-absent is
/// `If-None-Match: *`, compare-and-swap is `If-Match` on the ETag.
fn on_condition(
    req: aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder,
    when: &Condition,
) -> aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder {
    match when {
        Condition::Always => req,
        Condition::IfAbsent => req.if_none_match("*"),
        Condition::IfVersion(v) => req.if_match(v),
    }
}

/// Copy a GET's body of `n` bytes (of `key`) to `sink` and `dst`, chunk by
/// chunk; an error if it ends early.
async fn drain(
    key: &str,
    mut body: ByteStream,
    n: u64,
    sink: &mut (impl FnMut(Bytes) -> Result<(), ObjectError> + Send),
    mut dst: Option<&mut DynOutputStream>,
) -> Result<(), ObjectError> {
    let mut got = 0u64;
    while let Some(chunk) = body
        .try_next()
        .await
        .map_err(|e| ObjectError::Io(format!("S3: reading {key}: {e}")))?
    {
        got += chunk.len() as u64;
        sink(chunk.clone())?;
        if let Some(d) = dst.as_deref_mut() {
            write_all(d, chunk).await?;
        }
    }
    if got != n {
        return Err(ObjectError::Io(format!(
            "{key} ended {} bytes early",
            n.saturating_sub(got)
        )));
    }
    Ok(())
}

fn is_session(h: &aws_sdk_s3::operation::head_object::HeadObjectOutput) -> bool {
    h.metadata().is_some_and(|m| m.contains_key(SESSION_MARK))
}

/// The digest and size a reference stands for, if the object is one.
fn reference(h: &aws_sdk_s3::operation::head_object::HeadObjectOutput) -> Option<(String, u64)> {
    let m = h.metadata()?;
    let digest = m.get(REF_MARK)?.clone();
    let size = m.get(SIZE_META)?.parse().ok()?;
    Some((digest, size))
}

fn session_pieces(s3: &S3, key: &str, s: &Session) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = (1..=s.parts)
        .map(|n| (s3.part_key(key, n), s.part_size))
        .collect();
    if let Some(t) = &s.tail {
        out.push((t.clone(), s.size - s.parts * s.part_size));
    }
    out
}

/// A key as `x-amz-copy-source` wants it: each segment percent-encoded.
fn urlencoding_path(key: &str) -> String {
    key.split('/')
        .map(|seg| {
            seg.bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn check(key: &str) -> Result<(), ObjectError> {
    if valid_key(key) {
        Ok(())
    } else {
        Err(ObjectError::InvalidKey(key.to_string()))
    }
}

#[async_trait]
impl Backend for S3 {
    fn describe(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    async fn get(&self, key: &str, max: u64) -> Result<(Vec<u8>, Meta), ObjectError> {
        check(key)?;
        let mut out = self.get_object(&self.full(key), None).await?;
        let mut meta = meta_of(out.content_length(), out.e_tag(), out.last_modified());
        if let Some(digest) = out.metadata().and_then(|m| m.get(REF_MARK)).cloned() {
            // A reference: the bytes are the holder's; the rest is its own.
            let holder = self.holder_of(&digest, key).await?;
            out = self.get_object(&holder, None).await?;
            meta.size = u64::try_from(out.content_length().unwrap_or(0)).unwrap_or(0);
        }
        if meta.size > max {
            return Err(ObjectError::TooLarge(meta.size));
        }
        let mut body = out.body;
        let mut bytes = Vec::with_capacity(meta.size as usize);
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|e| ObjectError::Io(format!("S3: reading {key}: {e}")))?
        {
            if (bytes.len() + chunk.len()) as u64 > max {
                return Err(ObjectError::TooLarge(meta.size.max(max + 1)));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok((bytes, meta))
    }

    async fn put(&self, key: &str, data: Vec<u8>, when: Condition) -> Result<Meta, ObjectError> {
        check(key)?;
        let size = data.len() as u64;
        let req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .body(ByteStream::from(data));
        let req = on_condition(req, &when);
        let out = req.send().await.map_err(sdk_err)?;
        // S3 answers a PUT without its Last-Modified; this clock's time is
        // close enough, and spares a HEAD.
        Ok(Meta {
            size,
            modified_ms: now_ms(),
            version: out.e_tag().unwrap_or_default().to_string(),
        })
    }

    async fn stat(&self, key: &str) -> Result<Meta, ObjectError> {
        check(key)?;
        let h = self.head(key).await?;
        let mut m = meta_of(h.content_length(), h.e_tag(), h.last_modified());
        if let Some(size) = h
            .metadata()
            .filter(|m| m.contains_key(SESSION_MARK) || m.contains_key(REF_MARK))
            .and_then(|m| m.get(SIZE_META))
        {
            m.size = size.parse().unwrap_or(0);
        }
        Ok(m)
    }

    async fn delete(&self, key: &str, when: Condition) -> Result<(), ObjectError> {
        check(key)?;
        if matches!(when, Condition::IfAbsent) {
            return Err(ObjectError::Io(
                "delete takes no if-absent condition".into(),
            ));
        }
        for _ in 0..4 {
            // S3 answers 204 for a key that is not there: the interface
            // wants to know (a DELETE of an unknown blob is a 404).
            let h = self.head(key).await?;
            let etag = h.e_tag().unwrap_or_default().to_string();
            if let Condition::IfVersion(v) = &when {
                if etag != *v {
                    return Err(ObjectError::PreconditionFailed);
                }
            }
            let mut guarded = matches!(when, Condition::IfVersion(_));
            if let Some((digest, _)) = reference(&h) {
                self.forget_ref(&digest, key).await?;
                guarded = true;
            } else if let (Some(_), Some(digest)) = (&self.holders, content_digest(key)) {
                let size = u64::try_from(h.content_length().unwrap_or(0)).unwrap_or(0);
                self.release_holder(&digest, key, size).await?;
                guarded = true;
            }
            let req = self
                .client
                .delete_object()
                .bucket(&self.bucket)
                .key(self.full(key));
            // With dedupe, only what was looked at goes: a reference may
            // have just been given the bytes of a holder being deleted.
            let req = if guarded { req.if_match(&etag) } else { req };
            match req.send().await.map_err(sdk_err) {
                Ok(_) => {}
                Err(ObjectError::PreconditionFailed) if matches!(when, Condition::Always) => {
                    continue
                }
                Err(e) => return Err(e),
            }
            if is_session(&h) {
                self.drop_staging(key).await?;
            }
            return Ok(());
        }
        Err(ObjectError::Busy)
    }

    async fn list_children(&self, prefix: &str) -> Result<Vec<Child>, ObjectError> {
        if !valid_prefix(prefix) {
            return Err(ObjectError::InvalidKey(prefix.to_string()));
        }
        let full = if prefix.is_empty() {
            self.root()
        } else {
            self.full(prefix)
        };
        let mut out = Vec::new();
        for page in self.list_pages(&full, Some("/")).await? {
            for p in page.common_prefixes() {
                if let Some(name) = p.prefix().and_then(|p| p.strip_prefix(&full)) {
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
            for o in page.contents() {
                if let Some(name) = o.key().and_then(|k| k.strip_prefix(&full)) {
                    out.push(Child {
                        name: name.to_string(),
                        is_prefix: false,
                    });
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn write_from(
        &self,
        key: &str,
        offset: u64,
        src: &mut DynInputStream,
        limit: Option<u64>,
    ) -> Result<Written, ObjectError> {
        check(key)?;
        let fresh = Session::new(self.part_size);
        // A new session is created already claimed by this append (one
        // request fewer); an existing one is claimed by compare-and-swap.
        let mut claimed = fresh.clone();
        claimed.lease_until_ms = now_ms() + LEASE_MS;
        let created = if offset == 0 {
            match self.put_session(key, &claimed, &Condition::IfAbsent).await {
                Ok(v) => Some(v),
                Err(ObjectError::PreconditionFailed) => None,
                Err(e) => return Err(e),
            }
        } else {
            None
        };
        let (current, s, claim) = match created {
            Some(v) => (fresh, claimed, v),
            None => {
                let (current, version) = self
                    .session(key)
                    .await?
                    .ok_or(ObjectError::PreconditionFailed)?;
                if current.size != offset {
                    return Err(ObjectError::PreconditionFailed);
                }
                let (s, claim) = self.claim(&current, &version, key).await?;
                (current, s, claim)
            }
        };
        match self.append(key, offset, s, &claim, src, limit).await {
            Ok(w) => Ok(w),
            Err(e) => {
                // Give the session back as it was: its bytes are where they
                // were, and what this append staged is written over later.
                let _ = self
                    .put_session(key, &current, &Condition::IfVersion(claim))
                    .await;
                Err(e)
            }
        }
    }

    async fn sweep(&self, older_than: Duration) -> Result<u64, ObjectError> {
        self.sweep_abandoned(older_than).await
    }

    async fn locate(&self, key: &str) -> Option<String> {
        let presigner = self.presigner.as_ref()?;
        check(key).ok()?;
        // Only an object whose bytes are one S3 object (a blob, or the
        // holder of a reference); an upload's pieces have no one URL.
        let (pieces, _) = self.resolve(key).await.ok()?;
        let [(full, _)] = pieces.as_slice() else {
            return None;
        };
        let config = aws_sdk_s3::presigning::PresigningConfig::expires_in(PRESIGNED_FOR).ok()?;
        match presigner
            .get_object()
            .bucket(&self.bucket)
            .key(full)
            .presigned(config)
            .await
        {
            Ok(req) => Some(req.uri().to_string()),
            Err(e) => {
                tracing::warn!(key, error = %e, "cannot presign a redirect; serving the bytes");
                None
            }
        }
    }

    async fn read_to(
        &self,
        key: &str,
        start: u64,
        len: u64,
        dst: &mut DynOutputStream,
    ) -> Result<(), ObjectError> {
        check(key)?;
        if len > 0 && self.read_plain(key, start, len, dst).await? {
            return Ok(());
        }
        let mut tries = 0;
        loop {
            let (pieces, via_ref) = self.resolve(key).await?;
            match self
                .stream_pieces(&pieces, start, len, |_| Ok(()), Some(&mut *dst))
                .await
            {
                // The holder moved (it was deleted, a reference holds the
                // bytes now); nothing was written yet, as its GET failed.
                Err(ObjectError::NotFound) if via_ref && tries < 3 => tries += 1,
                r => return r,
            }
        }
    }

    async fn touch(&self, key: &str) -> Result<Meta, ObjectError> {
        check(key)?;
        // S3 has no way to set a modification time but to write the object:
        // a copy onto itself (server-side, metadata kept).
        let h = self.head(key).await?;
        let full = self.full(key);
        let size = u64::try_from(h.content_length().unwrap_or(0)).unwrap_or(0);
        if size > self.max_copy {
            // CopyObject stops at 5 GiB: larger objects are copied onto
            // themselves part by part (blobs, whose only metadata is this).
            let digest = h
                .metadata()
                .and_then(|m| m.get(DIGEST_META))
                .cloned()
                .unwrap_or_default();
            self.assemble(&[(full, size)], key, &digest, true).await?;
            return self.stat(key).await;
        }
        self.client
            .copy_object()
            .bucket(&self.bucket)
            .key(&full)
            .copy_source(format!("{}/{}", self.bucket, urlencoding_path(&full)))
            .set_metadata(h.metadata().cloned())
            .metadata_directive(aws_sdk_s3::types::MetadataDirective::Replace)
            .send()
            .await
            .map_err(sdk_err)?;
        self.stat(key).await
    }

    async fn digest(
        &self,
        key: &str,
        algorithm: HashAlgorithm,
        priority: Priority,
    ) -> Result<String, ObjectError> {
        check(key)?;
        if matches!(algorithm, HashAlgorithm::Sha256) && is_session(&self.head(key).await?) {
            if let Some((s, _)) = self.session(key).await? {
                return Ok(s.sha256.hex());
            }
        }
        let mut tries = 0;
        loop {
            let (pieces, via_ref) = self.resolve(key).await?;
            // A scrub pass hashes the bytes behind many references once.
            let remembered = match (priority, pieces.as_slice()) {
                (Priority::Background, [(full, _)]) => Some((full.clone(), algorithm as u8)),
                _ => None,
            };
            if let Some(hex) = remembered.as_ref().and_then(|r| self.hashed_in_pass(r)) {
                return Ok(hex);
            }
            match self.hash_pieces(&pieces, algorithm).await {
                Err(ObjectError::NotFound) if via_ref && tries < 3 => tries += 1,
                Ok(hex) => {
                    if let Some(r) = remembered {
                        self.pass_hashes
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(r, hex.clone());
                    }
                    return Ok(hex);
                }
                r => return r,
            }
        }
    }

    fn begin_scrub_pass(&self) {
        self.pass_hashes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    async fn publish(
        &self,
        src: &str,
        dst: &str,
        expected: Content,
    ) -> Result<Published, ObjectError> {
        check(src)?;
        check(dst)?;
        let digest = digest_text(&expected);
        // Claim the session, so no append slips in between the check of
        // the digest and the publish.
        let (session, claim) = match self.session(src).await? {
            Some((s, v)) => {
                let (s, claim) = self.claim(&s, &v, src).await?;
                (Some(s), Some(claim))
            }
            None => (None, None),
        };
        let release = |s: Session, claim: String| async move {
            let mut s = s;
            s.lease_until_ms = 0;
            let _ = self
                .put_session(src, &s, &Condition::IfVersion(claim))
                .await;
        };
        let pieces = match &session {
            Some(s) => session_pieces(self, src, s),
            None => self.pieces(src).await?,
        };
        let size: u64 = pieces.iter().map(|(_, n)| n).sum();
        let actual = match (&session, expected.algorithm) {
            (Some(s), HashAlgorithm::Sha256) => s.sha256.hex(),
            _ => self.hash_pieces(&pieces, expected.algorithm).await?,
        };
        if actual != expected.hex {
            if let (Some(s), Some(c)) = (session, claim) {
                release(s, c).await;
            }
            return Err(ObjectError::DigestMismatch(actual));
        }
        // Already there, checked: the size, and the digest it was
        // published under (S3 keeps the bytes' integrity itself).
        let existing = self.head(dst).await;
        let existed = match &existing {
            Ok(h) => {
                let stored = h
                    .metadata()
                    .and_then(|m| m.get(DIGEST_META))
                    .map(String::as_str);
                let stored_size = match reference(h) {
                    Some((_, n)) => Some(n),
                    None => h.content_length().and_then(|n| u64::try_from(n).ok()),
                };
                stored_size == Some(size) && stored.is_none_or(|d| d == digest)
            }
            Err(ObjectError::NotFound) => false,
            Err(e) => return Err(e.clone()),
        };
        if !existed {
            // A blob that is there but damaged is replaced; otherwise a
            // concurrent publish of the same content may win, which is as good.
            let replace = existing.is_ok();
            let made = if self.dedupes() && content_digest(dst).as_deref() == Some(&digest) {
                self.link(&digest, dst, size, &pieces, replace, None).await
            } else {
                self.assemble(&pieces, dst, &digest, replace).await
            };
            match made {
                Ok(()) | Err(ObjectError::PreconditionFailed) => {}
                Err(e) => {
                    if let (Some(s), Some(c)) = (session, claim) {
                        release(s, c).await;
                    }
                    return Err(e);
                }
            }
        }
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.full(src))
            .send()
            .await
            .map_err(sdk_err)?;
        self.drop_staging(src).await?;
        Ok(Published { size, existed })
    }

    async fn copy_in(
        &self,
        src: &dyn Backend,
        src_key: &str,
        dst: &str,
        when: Condition,
    ) -> Result<(), ObjectError> {
        check(src_key)?;
        check(dst)?;
        if !matches!(when, Condition::IfAbsent) {
            return Err(ObjectError::Io("copy only creates new objects".into()));
        }
        // Only this bucket can be copied from server-side; from anywhere
        // else the client uploads the blob instead.
        if src.describe() != self.describe() {
            return Err(ObjectError::NotFound);
        }
        if self.head(dst).await.is_ok() {
            return Err(ObjectError::PreconditionFailed);
        }
        let h = self.head(src_key).await?;
        let pieces = self.pieces(src_key).await?;
        let Some(d) = content_digest(dst) else {
            return self.assemble(&pieces, dst, "", false).await;
        };
        let parsed: skiff_core::Digest =
            d.parse().map_err(|_| ObjectError::InvalidKey(dst.into()))?;
        let recorded = h.metadata().and_then(|m| m.get(DIGEST_META)).cloned();
        if recorded.as_deref() != Some(d.as_str()) {
            let actual = self.hash_pieces(&pieces, algorithm_of(&parsed)).await?;
            if actual != parsed.hex() {
                return Err(ObjectError::DigestMismatch(actual));
            }
        }
        if !self.dedupes() {
            return self.assemble(&pieces, dst, &d, false).await;
        }
        // A source that is a blob of its own can hold the bytes for both.
        let own_copy = reference(&h).is_none()
            && !is_session(&h)
            && content_digest(src_key).as_deref() == Some(d.as_str());
        let size = pieces.iter().map(|(_, n)| n).sum();
        self.link(
            &d,
            dst,
            size,
            &pieces,
            false,
            own_copy.then(|| self.full(src_key)),
        )
        .await
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A store on a new, empty bucket of the endpoint (moto, in the tests).
    pub async fn fresh_bucket(
        endpoint: &str,
        part_size: u64,
        dedupe: bool,
    ) -> crate::objects::suite::Fresh {
        let bucket = format!("skiff-test-{:016x}", rand::random::<u64>());
        let settings = S3Settings {
            bucket: bucket.clone(),
            prefix: "prefix/of/store".into(),
            region: "us-east-1".into(),
            endpoint: Some(endpoint.to_string()),
            force_path_style: true,
            credentials: Some(("testing".into(), "testing".into())),
            part_size,
            redirect: false,
            redirect_endpoint: None,
        };
        let conf = aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .endpoint_url(endpoint)
            .force_path_style(true)
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                "testing", "testing", None, None, "test",
            ))
            .build();
        aws_sdk_s3::Client::from_conf(conf)
            .create_bucket()
            .bucket(&bucket)
            .send()
            .await
            .expect("creating a test bucket");
        let mut store = S3::connect(&settings).await.expect("connecting");
        let dir = tempfile::tempdir().unwrap();
        if dedupe {
            let holders = crate::objects::RedbHolders::open(&dir.path().join("cache.db")).unwrap();
            store = store.with_holders(std::sync::Arc::new(holders), true);
            store.max_copy = 1;
        }
        crate::objects::suite::Fresh {
            store: std::sync::Arc::new(store),
            _keep: Box::new(dir),
        }
    }

    #[test]
    fn status_is_read_from_a_raw_response() {
        assert_eq!(
            status_of("Response { status: StatusCode(404), headers"),
            Some(404)
        );
        assert_eq!(status_of("nothing"), None);
    }
}
