//! The workloads (after zot's `zb`): what each sets up once, and the one
//! operation its workers repeat until the time is up.

use crate::client::{Blob, Conn, Image, Push, MANIFEST};
use crate::stats::Stats;
use anyhow::{bail, Result};
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const MIB: u64 = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Push(Push),
    Pull,
    /// Three pulls to one push, as zb's mixed workloads.
    Mixed,
    ManifestGetTag,
    ManifestGetDigest,
    ManifestHeadTag,
    ManifestHeadDigest,
    TagsList,
    Catalog,
    /// Different new tags pushed into one repository at once (the manifest
    /// is the same, so only the tag index changes).
    TagPush,
    /// Every client pulling a blob of its own, all at once (as many blobs
    /// as clients): aggregate throughput from the page cache.
    PullMany,
}

#[derive(Clone, Copy, Debug)]
pub struct Workload {
    pub kind: Kind,
    /// Blob size for pushes and pulls.
    pub size: u64,
    pub concurrency: usize,
}

/// 10 MiB, the chunk size of the chunked pushes.
pub const CHUNK: u64 = 10 * MIB;

impl Workload {
    pub fn name(&self) -> String {
        let size = size_name(self.size);
        match self.kind {
            Kind::Push(Push::Monolithic) => format!("push-monolithic-{size}"),
            Kind::Push(Push::Streamed) => format!("push-streamed-{size}"),
            Kind::Push(Push::Chunked(_)) => format!("push-chunked-{size}"),
            Kind::Pull => format!("pull-{size}"),
            Kind::PullMany => format!("pull-many-{size}"),
            Kind::Mixed => format!("mixed-{size}"),
            Kind::ManifestGetTag => "manifest-get-tag".into(),
            Kind::ManifestGetDigest => "manifest-get-digest".into(),
            Kind::ManifestHeadTag => "manifest-head-tag".into(),
            Kind::ManifestHeadDigest => "manifest-head-digest".into(),
            Kind::TagsList => "tags-list".into(),
            Kind::Catalog => "catalog".into(),
            Kind::TagPush => "tag-push".into(),
        }
    }

    /// Every workload the tool knows, at its default concurrency; `sizes`
    /// are the blob sizes for the push and pull workloads.
    pub fn all(sizes: &[u64], many: u64, concurrency: Option<usize>) -> Vec<Workload> {
        let mut out = Vec::new();
        let w = |kind, size, c: usize| Workload {
            kind,
            size,
            concurrency: concurrency.unwrap_or(c),
        };
        for kind in [
            Kind::ManifestGetTag,
            Kind::ManifestGetDigest,
            Kind::ManifestHeadTag,
            Kind::ManifestHeadDigest,
            Kind::TagsList,
            Kind::Catalog,
        ] {
            out.push(w(kind, 0, 32));
        }
        out.push(w(Kind::TagPush, 0, 8));
        for &size in sizes {
            // Big blobs one at a time (throughput), small ones in parallel.
            let c = if size >= 100 * MIB { 1 } else { 8 };
            out.push(w(Kind::Push(Push::Monolithic), size, c));
            out.push(w(Kind::Push(Push::Streamed), size, c));
            if size > CHUNK {
                out.push(w(Kind::Push(Push::Chunked(CHUNK)), size, c));
            }
            out.push(w(Kind::Pull, size, c));
            out.push(w(Kind::Mixed, size, c));
        }
        out.push(w(Kind::PullMany, many, 64));
        out
    }
}

pub fn size_name(size: u64) -> String {
    match size {
        0 => String::new(),
        s if s >= 1 << 30 && s % (1 << 30) == 0 => format!("{}GiB", s >> 30),
        s if s >= MIB && s % MIB == 0 => format!("{}MiB", s >> 20),
        s if s % 1024 == 0 => format!("{}KiB", s >> 10),
        s => format!("{s}B"),
    }
}

/// Parse `1MiB`, `10MiB`, `1GiB`, `4096`.
pub fn parse_size(s: &str) -> Result<u64> {
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, ""),
    };
    let n: u64 = num.parse()?;
    let m = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => bail!("{s}: sizes are a number with B, KiB, MiB or GiB"),
    };
    n.checked_mul(m)
        .ok_or_else(|| anyhow::anyhow!("{s}: too big"))
}

/// What a workload's setup left in the registry for its workers.
pub struct Seeded {
    repo: String,
    image: Image,
    /// A blob of the workload's size, for pulls.
    blob: Option<Blob>,
    /// One blob per client, for `PullMany`.
    many: Vec<Blob>,
    /// Where a blob is read: from the registry API, or (a plain web
    /// server over the registry's files) from its path on disk.
    pub paths: Paths,
    block: Bytes,
    /// Numbers blobs pushed by the workers, so each is new.
    next: AtomicU64,
    salt: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Paths {
    Registry,
    /// skiff's layout, `<repo>/blobs/sha256/<hex>`, served as files.
    Files,
}

impl Seeded {
    fn blob_path(&self, b: &Blob) -> String {
        match self.paths {
            Paths::Registry => format!("/v2/{}/blobs/{}", self.repo, b.digest),
            Paths::Files => format!(
                "/{}/blobs/sha256/{}",
                self.repo,
                b.digest.trim_start_matches("sha256:")
            ),
        }
    }

    /// The same blobs, read the other way.
    pub fn read_as(&self, paths: Paths) -> Arc<Seeded> {
        Arc::new(Seeded {
            repo: self.repo.clone(),
            image: self.image.clone(),
            blob: self.blob.clone(),
            many: self.many.clone(),
            paths,
            block: self.block.clone(),
            next: AtomicU64::new(1),
            salt: self.salt,
        })
    }
}

pub const SEED_TAGS: usize = 100;
pub const SEED_REPOS: usize = 100;

/// Set up `w` in the registry at `addr`: an image tagged `latest` with
/// [`SEED_TAGS`] tags in its repository, [`SEED_REPOS`] repositories for
/// the catalog, and a blob to pull.
pub async fn seed(addr: SocketAddr, w: &Workload, block: &Bytes) -> Result<Arc<Seeded>> {
    let salt: u64 = rand::random();
    // Repository names are lower case; workload names say MiB.
    let repo = format!("bench/{}", w.name().to_lowercase());
    let mut conn = Conn::new(addr);
    let image = Image::push(&mut conn, &repo, block, salt as u128).await?;
    conn.put_manifest(&repo, "latest", &image.manifest).await?;
    if w.kind == Kind::TagsList {
        for i in 0..SEED_TAGS {
            conn.put_manifest(&repo, &format!("t{i:04}"), &image.manifest)
                .await?;
        }
    }
    if w.kind == Kind::Catalog {
        for i in 0..SEED_REPOS {
            let r = format!("bench/catalog/r{i:04}");
            conn.mount(&r, &image.config.digest, &repo).await?;
            conn.mount(&r, &image.layer.digest, &repo).await?;
            conn.put_manifest(&r, "latest", &image.manifest).await?;
        }
    }
    let blob = if matches!(w.kind, Kind::Pull | Kind::Mixed) {
        let b = Blob::new(w.size, block, (salt as u128) << 64);
        conn.push_blob(&repo, &b, Push::Monolithic).await?;
        Some(b)
    } else {
        None
    };
    let mut many = Vec::new();
    if w.kind == Kind::PullMany {
        for k in 0..w.concurrency.max(1) {
            let b = Blob::new(w.size, block, ((salt as u128) << 64) | (k as u128 + 1));
            conn.push_blob(&repo, &b, Push::Monolithic).await?;
            many.push(b);
        }
    }
    Ok(Arc::new(Seeded {
        repo,
        image,
        blob,
        many,
        paths: Paths::Registry,
        block: block.clone(),
        next: AtomicU64::new(1),
        salt,
    }))
}

/// Run `w` against `addr` for `duration` (each worker does at least one
/// operation). Only the operations are timed: making a new blob (and
/// hashing it) happens between them, off the clock.
pub async fn run(addr: SocketAddr, w: Workload, seeded: Arc<Seeded>, duration: Duration) -> Stats {
    let deadline = Instant::now() + duration;
    let mut workers = Vec::new();
    for worker in 0..w.concurrency.max(1) {
        let seeded = seeded.clone();
        workers.push(tokio::spawn(async move {
            let mut conn = Conn::new(addr);
            let mut stats = Stats::default();
            let mut busy = Duration::ZERO;
            let mut n = 0u64;
            loop {
                let push = match w.kind {
                    Kind::Push(p) => Some(p),
                    Kind::Mixed if n % 4 == 3 => Some(Push::Monolithic),
                    _ => None,
                };
                let fresh = push.map(|_| {
                    let k = seeded.next.fetch_add(1, Ordering::Relaxed);
                    Blob::new(
                        w.size,
                        &seeded.block,
                        ((seeded.salt as u128) << 64) | k as u128,
                    )
                });
                let started = Instant::now();
                let outcome = match (&fresh, push) {
                    (Some(b), Some(p)) => conn.push_blob(&seeded.repo, b, p).await.map(|_| b.size),
                    _ => once(&mut conn, w.kind, &seeded, worker).await,
                };
                let took = started.elapsed();
                busy += took;
                match outcome {
                    Ok(bytes) => stats.record(took, bytes),
                    Err(e) => stats.error(&e),
                }
                n += 1;
                if Instant::now() >= deadline {
                    break;
                }
            }
            stats.elapsed = busy;
            stats
        }));
    }
    let mut total = Stats::default();
    let mut busy = Duration::ZERO;
    let count = workers.len() as u32;
    for w in workers {
        match w.await {
            Ok(s) => {
                busy += s.elapsed;
                total.merge(s);
            }
            Err(e) => total.error(&anyhow::anyhow!("a worker failed: {e}")),
        }
    }
    // The workers ran side by side: the run took their mean busy time.
    total.elapsed = busy / count;
    total
}

/// One read operation of client `worker`; the bytes it moved.
async fn once(conn: &mut Conn, kind: Kind, s: &Seeded, worker: usize) -> Result<u64> {
    let repo = &s.repo;
    let a = match kind {
        Kind::Pull | Kind::Mixed => {
            let b = s.blob.as_ref().expect("seeded for pulls");
            conn.get(&s.blob_path(b), None).await?
        }
        Kind::PullMany => {
            let b = &s.many[worker % s.many.len().max(1)];
            let a = conn.get(&s.blob_path(b), None).await?;
            if a.status.is_success() && a.bytes != b.size {
                bail!("{} bytes of a {}-byte blob", a.bytes, b.size);
            }
            a
        }
        Kind::ManifestGetTag => {
            conn.get(&format!("/v2/{repo}/manifests/latest"), Some(MANIFEST))
                .await?
        }
        Kind::ManifestGetDigest => {
            conn.get(
                &format!("/v2/{repo}/manifests/{}", s.image.digest),
                Some(MANIFEST),
            )
            .await?
        }
        Kind::ManifestHeadTag => {
            conn.head(&format!("/v2/{repo}/manifests/latest"), MANIFEST)
                .await?
        }
        Kind::ManifestHeadDigest => {
            conn.head(
                &format!("/v2/{repo}/manifests/{}", s.image.digest),
                MANIFEST,
            )
            .await?
        }
        Kind::TagsList => conn.get(&format!("/v2/{repo}/tags/list"), None).await?,
        Kind::Catalog => conn.get("/v2/_catalog?n=100", None).await?,
        Kind::TagPush => {
            let k = s.next.fetch_add(1, Ordering::Relaxed);
            let tag = format!("p{:x}-{k}", s.salt);
            conn.put_manifest(repo, &tag, &s.image.manifest).await?;
            return Ok(0);
        }
        Kind::Push(_) => unreachable!("pushes are sent by run"),
    };
    if !a.status.is_success() {
        bail!("{}", a.status);
    }
    Ok(a.bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_print_back() {
        for s in ["1MiB", "10MiB", "100MiB", "1GiB", "4KiB", "10B"] {
            assert_eq!(size_name(parse_size(s).unwrap()), s);
        }
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("1TB").is_err());
        assert!(parse_size("99999999999999GiB").is_err());
    }
}
