//! Objects on a local filesystem.
//!
//! Publishing is atomic: small objects are written to a temporary file and
//! renamed (or hard-linked, for create-if-absent) into place. A version is
//! the file's inode, mtime and size, which every replace changes, and
//! compare-and-swap holds a striped in-process lock only around the check and
//! the rename of one key, never around I/O of other keys.
//!
//! With dedupe on, a blob published under a content-addressed key
//! (`…/blobs/<alg>/<hex>`) that is already on disk elsewhere becomes a hard
//! link to that copy; the dedupe cache says where copies are. Hard links make
//! every copy equal: deleting any of them leaves the others readable.

use super::backend::Backend;
use super::dedupe::DedupeCache;
use super::keys::{algorithm_of, content_digest, digest_text, key_path, prefix_path};
use super::streams::{finish, write_all, BodyReader};
use crate::runtime::skiff::registry::objects::{
    Child, Condition, Content, HashAlgorithm, Meta, ObjectError, Published, Written,
};
use crate::runtime::Priority;
use bytes::Bytes;
use sha2::{Digest as _, Sha256, Sha512};
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, ErrorKind, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream};

/// Size of the reads and writes that move blob bytes.
const CHUNK: usize = 1 << 20;
/// Objects up to this size are read on the calling task (a manifest, a
/// small index.json): from the page cache that is quicker than a hand-off.
const QUICK_READ: u64 = 64 << 10;
const LOCK_STRIPES: usize = 64;

pub struct Disk {
    root: PathBuf,
    /// fsync a file and its directory before it is published.
    commit: bool,
    /// Present when dedupe is on.
    dedupe: Option<Arc<DedupeCache>>,
    /// Hash states of objects being appended to (upload sessions), by key,
    /// with the size they cover: a chunked upload then finishes without its
    /// bytes being read again. Only a cache: after a restart, on another
    /// host, or on any mismatch, the object is hashed whole instead.
    partial: std::sync::Mutex<HashMap<String, (u64, Sha256)>>,
    locks: Vec<tokio::sync::Mutex<()>>,
    /// Digests of files hashed in the background during the current scrub
    /// pass, by inode and version: a deduped blob linked into many
    /// repositories is hashed once per pass, not once per repository.
    pass_digests: std::sync::Mutex<HashMap<FileVersion, String>>,
    /// Bytes hashed by background work since start.
    bytes_hashed: std::sync::atomic::AtomicU64,
    /// This server's marker on the store, locked while it runs.
    running: std::sync::Mutex<Option<(PathBuf, File)>>,
}

/// A file's identity and version: the same inode, size and mtime mean the
/// same bytes for as long as one scrub pass lasts.
#[derive(Hash, PartialEq, Eq, Clone, Copy)]
struct FileVersion {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    sha512: bool,
}

/// The dedupe cache's file under a store's root. Hidden, so no repository
/// name can collide with it (`cache.db` is a valid repository name).
pub const CACHE_FILE: &str = ".skiff-cache.db";
/// Where earlier versions kept it.
const LEGACY_CACHE_FILE: &str = "cache.db";
/// Markers of servers using the store: `.skiff-running.<random>`, each
/// locked (`flock`) by its server for as long as it runs, so a marker whose
/// lock can be taken was left by a run that did not stop cleanly (a crash
/// releases the lock; pids are no help, a container's server is always 1).
/// A marker's mtime is when its run started.
const RUNNING_PREFIX: &str = ".skiff-running.";
/// How far before the crashed run's start a blob is still checked: clocks
/// and mtimes are coarse, and a check too many costs only a hash.
const RECENT_SLACK: std::time::Duration = std::time::Duration::from_secs(60);

fn io_err(e: io::Error) -> ObjectError {
    match e.kind() {
        ErrorKind::NotFound => ObjectError::NotFound,
        _ => ObjectError::Io(e.to_string()),
    }
}

fn meta_of(md: &fs::Metadata) -> Meta {
    let mtime_ns = md.mtime() as i128 * 1_000_000_000 + md.mtime_nsec() as i128;
    Meta {
        size: md.len(),
        modified_ms: (mtime_ns / 1_000_000).max(0) as u64,
        version: format!("{:x}-{:x}-{:x}", md.ino(), mtime_ns, md.len()),
    }
}

/// Run blocking filesystem work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ObjectError> + Send + 'static,
) -> Result<T, ObjectError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ObjectError::Io(format!("blocking task failed: {e}")))?
}

fn temp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("object");
    path.with_file_name(format!(".tmp-{:016x}-{name}", rand::random::<u64>()))
}

fn sync_dir(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// Whether `path` still names the file `f` has open. A publish or a
/// compare-and-swap replaces or unlinks the name, never the open file, so a
/// writer that waited for a lock checks this before it trusts what it opened.
fn still_named(f: &File, path: &Path) -> io::Result<bool> {
    let open = f.metadata()?;
    match fs::metadata(path) {
        Ok(named) => Ok(named.ino() == open.ino() && named.dev() == open.dev()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Take `f`'s exclusive lock (`flock`, so it holds across processes sharing
/// the filesystem) without waiting: `busy` if another writer has it.
fn try_lock(f: &File) -> Result<(), ObjectError> {
    match f.try_lock() {
        Ok(()) => Ok(()),
        Err(TryLockError::WouldBlock) => Err(ObjectError::Busy),
        Err(TryLockError::Error(e)) => Err(io_err(e)),
    }
}

/// Open the object at `path` and lock it for a compare-and-swap: every
/// replace or conditional delete of a key holds the lock of the file it
/// replaces from its version check to its rename, so two processes cannot
/// both swap against one version. `precondition-failed` if the object is
/// gone or no longer at `version`.
fn lock_version(path: &Path, version: &str) -> Result<File, ObjectError> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Err(ObjectError::PreconditionFailed),
        Err(e) => return Err(io_err(e)),
    };
    // A writer holding it is about to change the object (or, for an upload,
    // is appending to it): the version is not the one the caller saw.
    match f.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Err(ObjectError::PreconditionFailed),
        Err(TryLockError::Error(e)) => return Err(io_err(e)),
    }
    let current = meta_of(&f.metadata().map_err(io_err)?).version;
    if current != version || !still_named(&f, path).map_err(io_err)? {
        return Err(ObjectError::PreconditionFailed);
    }
    Ok(f)
}

/// Put `tmp` in place of the file at `path`, but only if `path` still names
/// the file `ino` that the caller looked at: under that file's lock, which
/// deletes of blobs take too, so a blob deleted meanwhile is never brought
/// back. False if nothing was replaced.
fn replace_if_same(path: &Path, ino: u64, tmp: &Path, commit: bool) -> io::Result<bool> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    f.lock()?;
    if f.metadata()?.ino() != ino || !still_named(&f, path)? {
        return Ok(false);
    }
    if commit {
        File::open(tmp)?.sync_all()?;
    }
    fs::rename(tmp, path)?;
    if commit {
        sync_dir(path)?;
    }
    Ok(true)
}

/// The name under which an object replaced by compare-and-swap keeps its
/// previous version (`index.json` → `.index.json.prev`): the last-but-one
/// state of a repository's tags stays recoverable if the current one is
/// ever damaged. Hidden, so no listing of repositories or blobs sees it.
pub fn previous_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("object");
    path.with_file_name(format!(".{name}.prev"))
}

/// Keep the file at `path` (about to be replaced) as its previous version:
/// a hard link, so it costs no data write. Best effort: it only helps a
/// repair, and a failure must not fail the write.
fn keep_previous(path: &Path) {
    let prev = previous_name(path);
    let staged = temp_name(&prev);
    if fs::hard_link(path, &staged).is_ok() && fs::rename(&staged, &prev).is_err() {
        let _ = fs::remove_file(&staged);
    }
}

/// Create `dst` as a new name for `src`'s file; `AlreadyExists` if taken.
/// Where the filesystem has no hard links, a copy published the same way.
fn link_or_copy(src: &Path, dst: &Path, commit: bool) -> io::Result<()> {
    match fs::hard_link(src, dst) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists || e.kind() == ErrorKind::NotFound => Err(e),
        Err(e) => {
            tracing::warn!(error = %e, "hard link refused; copying instead");
            let tmp = temp_name(dst);
            fs::copy(src, &tmp)?;
            if commit {
                File::open(&tmp)?.sync_all()?;
            }
            let r = fs::hard_link(&tmp, dst);
            let _ = fs::remove_file(&tmp);
            r
        }
    }
}

/// Give the calling thread the lowest scheduling priority (nice 19). On
/// Linux a nice value belongs to a thread, so this leaves the rest of the
/// process alone. Failure only costs priority, so it is ignored.
fn lower_this_threads_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: gettid and setpriority take no pointers; they only read their
    // integer arguments and affect the calling thread.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 19);
    }
}

/// Mark a file as just written. A hard link shares its inode's mtime, so a
/// blob linked into a repository would otherwise look as old as the first
/// copy, and garbage collection (which spares only what is younger than its
/// delay) could take it before the manifest of the push that linked it lands.
fn touch(path: &Path) {
    let now = std::time::SystemTime::now();
    if let Err(e) = File::open(path).and_then(|f| f.set_modified(now)) {
        tracing::warn!(path = %path.display(), error = %e, "cannot refresh mtime");
    }
}

/// Create `to` as a new name for `from`'s file (a copy where the filesystem
/// has no hard links); `precondition-failed` if `to` exists.
fn create_from(from: &Path, to: &Path, commit: bool) -> Result<(), ObjectError> {
    match in_dir(to, commit, || link_or_copy(from, to, commit)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Err(ObjectError::PreconditionFailed),
        Err(e) => Err(io_err(e)),
    }
}

/// After a new object `key` appeared at `path`: with dedupe, remember it as
/// a copy of its digest; with `commit`, make its name durable.
fn published(
    cache: Option<&DedupeCache>,
    key: &str,
    path: &Path,
    commit: bool,
) -> Result<(), ObjectError> {
    if let (Some(cache), Some(d)) = (cache, content_digest(key)) {
        if let Err(e) = cache.record(&d, key) {
            tracing::warn!(error = %e, "dedupe cache write failed");
        }
    }
    if commit {
        sync_dir(path).map_err(io_err)?;
    }
    Ok(())
}

/// Run `f`, which creates something in `path`'s directory, creating the
/// directory first. Garbage collection prunes empty directories, so one may
/// vanish between the two steps: then create it again and retry (a few
/// rounds at most).
fn in_dir<T>(path: &Path, commit: bool, mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    let dir = path.parent().unwrap_or(path);
    let mut rounds = 0;
    loop {
        rounds += 1;
        let r = match create_dirs(dir, commit) {
            // create_dir_all says AlreadyExists when the directory it found
            // was pruned before it could check it is one.
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Err(e),
            Err(e) => return Err(e),
            Ok(()) => match f() {
                Err(e) if e.kind() == ErrorKind::NotFound => Err(e),
                r => return r,
            },
        };
        if rounds == 4 {
            return r;
        }
    }
}

/// Create `dir` and its missing parents. With `commit`, each new
/// directory's entry is synced into its parent, so a file published in it
/// cannot vanish with the directory after a power cut.
fn create_dirs(dir: &Path, commit: bool) -> io::Result<()> {
    if !commit {
        return fs::create_dir_all(dir);
    }
    let mut missing = Vec::new();
    let mut at = dir;
    while !at.exists() {
        missing.push(at.to_path_buf());
        match at.parent() {
            Some(p) => at = p,
            None => break,
        }
    }
    fs::create_dir_all(dir)?;
    // Outermost first: each parent exists, durably, before its child's entry.
    for d in missing.iter().rev() {
        sync_dir(d)?;
    }
    Ok(())
}

/// The hex digest of everything `f` reads, with hash `D`.
fn hash_file<D: sha2::Digest>(f: &mut File) -> io::Result<String> {
    let mut h = D::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Whether the file at `path` still holds the content `digest` names. A copy
/// may have rotted since it was stored, and a link to it would hand the rot
/// to every repository sharing it: dedupe links only to a copy that checks out.
fn holds(path: &Path, digest: &str) -> io::Result<bool> {
    let d: skiff_core::Digest = digest
        .parse()
        .map_err(|e| io::Error::new(ErrorKind::InvalidInput, format!("{digest}: {e}")))?;
    Ok(digest_file(path, algorithm_of(&d))? == d.hex())
}

/// The hex digest of a whole file.
fn digest_file(path: &Path, algorithm: HashAlgorithm) -> io::Result<String> {
    hash_open(&mut File::open(path)?, algorithm)
}

/// The hex digest of everything in an open file, from its start.
fn hash_open(f: &mut File, algorithm: HashAlgorithm) -> io::Result<String> {
    f.seek(SeekFrom::Start(0))?;
    match algorithm {
        HashAlgorithm::Sha256 => hash_file::<Sha256>(f),
        HashAlgorithm::Sha512 => hash_file::<Sha512>(f),
    }
}

impl Disk {
    pub fn new(root: PathBuf, commit: bool, dedupe: bool) -> anyhow::Result<Disk> {
        create_dirs(&root, commit)?;
        let dedupe = if dedupe {
            let path = root.join(CACHE_FILE);
            let legacy = root.join(LEGACY_CACHE_FILE);
            // A regular file there is an old cache (a repository would be a
            // directory); it is only advisory, so a failed move costs nothing.
            if !path.exists() && fs::metadata(&legacy).is_ok_and(|m| m.is_file()) {
                let _ = fs::rename(&legacy, &path);
            }
            let cache = DedupeCache::open(&path)
                .map_err(|e| anyhow::anyhow!("opening the dedupe cache {}: {e}", path.display()))?;
            Some(Arc::new(cache))
        } else {
            None
        };
        Ok(Disk {
            root,
            commit,
            dedupe,
            partial: Default::default(),
            pass_digests: Default::default(),
            bytes_hashed: Default::default(),
            running: Default::default(),
            locks: (0..LOCK_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        })
    }

    pub fn dedupe(&self) -> bool {
        self.dedupe.is_some()
    }

    pub fn path(&self, key: &str) -> Result<PathBuf, ObjectError> {
        key_path(&self.root, key)
    }

    fn lock_for(&self, key: &str) -> &tokio::sync::Mutex<()> {
        let h = key
            .bytes()
            .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
        &self.locks[h % LOCK_STRIPES]
    }

    /// Read a small object whole, refusing one over `max` bytes before
    /// anything is allocated for it. The open, the stat and the read of an
    /// object up to `QUICK_READ` bytes run on the calling task (see
    /// `stat`); a larger read goes to the blocking pool.
    pub async fn get(&self, key: &str, max: u64) -> Result<(Vec<u8>, Meta), ObjectError> {
        let path = self.path(key)?;
        // Read and stat through one handle, so bytes and version agree.
        let f = File::open(&path).map_err(io_err)?;
        let md = f.metadata().map_err(io_err)?;
        // A directory is a prefix of keys, not an object.
        if md.is_dir() {
            return Err(ObjectError::NotFound);
        }
        if md.len() > max {
            return Err(ObjectError::TooLarge(md.len()));
        }
        let quick = md.len() <= QUICK_READ;
        let read = move || {
            let mut buf = Vec::with_capacity(usize::try_from(md.len()).unwrap_or(0));
            // Bounded even if the file grows under us.
            f.take(max.saturating_add(1))
                .read_to_end(&mut buf)
                .map_err(io_err)?;
            if buf.len() as u64 > max {
                return Err(ObjectError::TooLarge(buf.len() as u64));
            }
            Ok((buf, meta_of(&md)))
        };
        if quick {
            read()
        } else {
            blocking(read).await
        }
    }

    /// On the calling task, not the blocking pool: a stat of a local file
    /// takes a few microseconds, less than the two thread wake-ups a hand-off
    /// costs, and every request makes some (a tag lookup checks its cached
    /// index with one).
    pub async fn stat(&self, key: &str) -> Result<Meta, ObjectError> {
        let path = self.path(key)?;
        let md = fs::metadata(&path).map_err(io_err)?;
        if md.is_dir() {
            return Err(ObjectError::NotFound);
        }
        Ok(meta_of(&md))
    }

    pub async fn put(
        &self,
        key: &str,
        data: Vec<u8>,
        when: Condition,
    ) -> Result<Meta, ObjectError> {
        let path = self.path(key)?;
        let commit = self.commit;
        let tmp = temp_name(&path);
        let staged = tmp.clone();
        // What the object is once in place: renaming the file keeps its
        // inode, size and mtime. Taken from the file written, not
        // by looking the key up afterwards, when another request may have
        // replaced or removed it already.
        let meta = blocking(move || {
            let written = (|| {
                let mut f = in_dir(&staged, commit, || File::create(&staged))?;
                f.write_all(&data)?;
                // The version is inode, mtime and size, and a freed inode
                // is soon reused (a tag entry removed by a fold, then
                // pushed again with a digest of the same length). The
                // kernel may stamp files written within one tick with the
                // same coarse time, so two versions of a key could look
                // alike; a time taken from the fine-grained clock keeps
                // them apart.
                f.set_modified(std::time::SystemTime::now())?;
                // Small objects (index.json above all) are synced before
                // they replace or join anything, even without `commit`: a
                // power cut may lose a recent update, but never leave an
                // empty index.json where a valid one was.
                if commit {
                    f.sync_all()?;
                } else {
                    f.sync_data()?;
                }
                f.metadata()
            })();
            // A failed write (a full disk, say) leaves no temporary file.
            if written.is_err() {
                let _ = fs::remove_file(&staged);
            }
            written.map(|md| meta_of(&md)).map_err(io_err)
        })
        .await?;
        let when_linked = matches!(when, Condition::IfAbsent);
        let result = match when {
            Condition::Always => self.publish_replace(&tmp, &path).await,
            Condition::IfAbsent => self.publish_new(&tmp, key).await,
            Condition::IfVersion(v) => {
                // The in-process stripe keeps this process's writers of one
                // key off the blocking pool; the file lock orders processes.
                let _guard = self.lock_for(key).lock().await;
                let (tmp, path, commit) = (tmp.clone(), path.clone(), commit);
                blocking(move || {
                    let _locked = lock_version(&path, &v)?;
                    keep_previous(&path);
                    fs::rename(&tmp, &path).map_err(io_err)?;
                    if commit {
                        sync_dir(&path).map_err(io_err)?;
                    }
                    Ok(())
                })
                .await
            }
        };
        let _ = fs::remove_file(&tmp);
        result?;
        match when_linked {
            // Dedupe may have linked another copy in instead of this file.
            true => self.stat(key).await,
            false => Ok(meta),
        }
    }

    async fn publish_replace(&self, tmp: &Path, path: &Path) -> Result<(), ObjectError> {
        let (tmp, path, commit) = (tmp.to_path_buf(), path.to_path_buf(), self.commit);
        blocking(move || {
            // Under the lock of the file replaced, which conditional deletes
            // and swaps take too (`lock_version`): a delete that found the
            // old version would otherwise remove this new file by its name.
            let replaced = match File::open(&path) {
                Ok(f) => {
                    f.lock().map_err(io_err)?;
                    Some(f)
                }
                Err(e) if e.kind() == ErrorKind::NotFound => None,
                Err(e) => return Err(io_err(e)),
            };
            fs::rename(&tmp, &path).map_err(io_err)?;
            drop(replaced);
            if commit {
                sync_dir(&path).map_err(io_err)?;
            }
            Ok(())
        })
        .await
    }

    /// Publish the file at `tmp` as the new object `key`; `precondition-failed`
    /// if it exists. A content-addressed key already stored elsewhere becomes
    /// a link to that copy (dedupe) and `tmp` is dropped.
    async fn publish_new(&self, tmp: &Path, key: &str) -> Result<(), ObjectError> {
        let path = self.path(key)?;
        let (tmp, commit, root) = (tmp.to_path_buf(), self.commit, self.root.clone());
        let cache = self.dedupe.clone();
        let key = key.to_string();
        blocking(move || {
            let digest = cache.as_ref().and_then(|_| content_digest(&key));
            let mut linked = false;
            if let (Some(cache), Some(d)) = (&cache, &digest) {
                for other in cache.copies(d).unwrap_or_default() {
                    if other == key {
                        continue;
                    }
                    let src = root.join(&other);
                    match holds(&src, d) {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::warn!(key = other, "dedupe: a stored copy is damaged; not linking to it");
                            let _ = cache.forget(&other);
                            continue;
                        }
                        Err(e) if e.kind() == ErrorKind::NotFound => {
                            let _ = cache.forget(&other);
                            continue;
                        }
                        Err(e) => {
                            tracing::warn!(key = other, error = %e, "dedupe: cannot check a stored copy");
                            continue;
                        }
                    }
                    match in_dir(&path, commit, || fs::hard_link(&src, &path)) {
                        Ok(()) => {
                            touch(&path);
                            linked = true;
                            break;
                        }
                        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                            return Err(ObjectError::PreconditionFailed)
                        }
                        // The cached copy is gone: forget it and try the next.
                        Err(e) if e.kind() == ErrorKind::NotFound => {
                            let _ = cache.forget(&other);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "dedupe link refused; storing a copy");
                            break;
                        }
                    }
                }
            }
            if !linked {
                create_from(&tmp, &path, commit)?;
            }
            let _ = fs::remove_file(&tmp);
            published(cache.as_deref(), &key, &path, commit)
        })
        .await
    }

    /// Remove an object, then the directories it leaves empty (up to the
    /// root), so a repository emptied by deletes or gc leaves no trace.
    pub async fn delete(&self, key: &str, when: Condition) -> Result<(), ObjectError> {
        let path = self.path(key)?;
        self.forget_partial(key);
        let _guard = match &when {
            Condition::IfVersion(_) => Some(self.lock_for(key).lock().await),
            Condition::Always => None,
            Condition::IfAbsent => {
                return Err(ObjectError::Io(
                    "delete takes no if-absent condition".into(),
                ))
            }
        };
        let (root, cache, key) = (self.root.clone(), self.dedupe.clone(), key.to_string());
        let commit = self.commit;
        blocking(move || {
            let _locked = match &when {
                Condition::IfVersion(v) => Some(lock_version(&path, v)?),
                // A blob's lock orders this delete with dedupe convergence
                // replacing the same file (held briefly, so waiting is fine).
                _ if content_digest(&key).is_some() => {
                    let f = File::open(&path).map_err(io_err)?;
                    f.lock().map_err(io_err)?;
                    Some(f)
                }
                _ => None,
            };
            fs::remove_file(&path).map_err(io_err)?;
            // The version a compare-and-swap kept beside it goes with it:
            // nothing is left of a deleted object.
            let _ = fs::remove_file(previous_name(&path));
            if commit {
                sync_dir(&path).map_err(io_err)?;
            }
            if let Some(cache) = cache {
                if content_digest(&key).is_some() {
                    let _ = cache.forget(&key);
                }
            }
            let mut dir = path.parent();
            while let Some(d) = dir {
                if d == root || fs::remove_dir(d).is_err() {
                    break;
                }
                dir = d.parent();
            }
            Ok(())
        })
        .await
    }

    pub async fn list_children(&self, prefix: &str) -> Result<Vec<Child>, ObjectError> {
        let dir = prefix_path(&self.root, prefix)?;
        blocking(move || {
            let mut out = Vec::new();
            for entry in fs::read_dir(&dir).map_err(io_err)? {
                let entry = entry.map_err(io_err)?;
                let Ok(name) = entry.file_name().into_string() else {
                    continue;
                };
                let is_prefix = entry.file_type().map_err(io_err)?.is_dir();
                out.push(Child { name, is_prefix });
            }
            out.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(out)
        })
        .await
    }

    pub async fn write_from(
        &self,
        key: &str,
        offset: u64,
        src: &mut DynInputStream,
        limit: Option<u64>,
    ) -> Result<Written, ObjectError> {
        let path = self.path(key)?;
        let commit = self.commit;
        // The file stays locked until this write is done: the offset check
        // and the append are one step, and `publish` (which takes the same
        // lock) can never make these bytes a blob while more are coming.
        let file = blocking(move || {
            let open = || {
                OpenOptions::new()
                    .create(offset == 0)
                    .append(true)
                    .open(&path)
            };
            let f = if offset == 0 {
                in_dir(&path, commit, open)
            } else {
                open()
            }
            .map_err(io_err)?;
            try_lock(&f)?;
            // Published or cancelled between our open and our lock.
            if !still_named(&f, &path).map_err(io_err)? {
                return Err(ObjectError::NotFound);
            }
            let len = f.metadata().map_err(io_err)?.len();
            if len != offset {
                return Err(ObjectError::PreconditionFailed);
            }
            Ok(f)
        })
        .await?;

        // A hash of the whole object needs every byte before `offset` hashed:
        // this write is all of it, or earlier appends left their state.
        let hasher = if offset == 0 {
            Some(Sha256::new())
        } else {
            self.take_partial(key, offset)
        };
        let mut body = BodyReader::new(src, limit);
        // Receiving overlaps hashing and writing: the body is read here while
        // a blocking thread hashes and writes what came before, through a
        // short queue (so a slow disk slows the client rather than filling
        // memory).
        let (pieces, queued) = tokio::sync::mpsc::channel::<Bytes>(PIPELINE_PIECES);
        let sink = tokio::task::spawn_blocking(move || sink(file, hasher, queued));
        let mut received = Ok(());
        loop {
            match body.next().await {
                Ok(Some(piece)) => {
                    if pieces.send(piece).await.is_err() {
                        // The sink stopped on an error, which it returns.
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    received = Err(e);
                    break;
                }
            }
        }
        drop(pieces);
        // Joined before anything returns: the sink holds the file's lock,
        // and no byte may land after this call has answered.
        let sunk = sink
            .await
            .map_err(|e| ObjectError::Io(format!("blocking task failed: {e}")))?;
        received?;
        let (mut file, hasher) = sunk?;
        if commit {
            file = blocking(move || file.sync_all().map(|_| file).map_err(io_err)).await?;
        }
        let size = offset
            .checked_add(body.total)
            .ok_or_else(|| ObjectError::Io("upload size overflows".into()))?;
        let sha256 = hasher.map(|h| {
            let whole = hex::encode(h.clone().finalize());
            self.keep_partial(key, size, h);
            whole
        });
        // Unlocked only now, with the hash state in place for `publish`.
        drop(file);
        Ok(Written { size, sha256 })
    }

    /// The hash state of `key`'s first `size` bytes, if one was kept.
    fn take_partial(&self, key: &str, size: u64) -> Option<Sha256> {
        let mut partial = self.partial.lock().unwrap_or_else(|e| e.into_inner());
        match partial.remove(key) {
            Some((hashed, state)) if hashed == size => Some(state),
            _ => None,
        }
    }

    /// Whatever hash state `key` has, with the size it covers.
    fn take_partial_any(&self, key: &str) -> Option<(u64, Sha256)> {
        self.partial
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key)
    }

    fn keep_partial(&self, key: &str, size: u64, state: Sha256) {
        let mut partial = self.partial.lock().unwrap_or_else(|e| e.into_inner());
        // Abandoned sessions would otherwise pile up; losing states only
        // costs a re-read at the end of those uploads.
        if partial.len() >= 4096 {
            partial.clear();
        }
        partial.insert(key.to_string(), (size, state));
    }

    fn forget_partial(&self, key: &str) {
        self.partial
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    pub async fn read_to(
        &self,
        key: &str,
        start: u64,
        len: u64,
        dst: &mut DynOutputStream,
    ) -> Result<(), ObjectError> {
        let path = self.path(key)?;
        let mut file = blocking(move || {
            let mut f = File::open(&path).map_err(io_err)?;
            f.seek(SeekFrom::Start(start)).map_err(io_err)?;
            Ok(f)
        })
        .await?;
        let mut remaining = len;
        while remaining > 0 {
            let want = remaining.min(CHUNK as u64) as usize;
            let (f, chunk) = blocking(move || {
                // Read into spare capacity: the buffer is not zeroed first.
                let mut buf = Vec::with_capacity(want);
                (&mut file)
                    .take(want as u64)
                    .read_to_end(&mut buf)
                    .map_err(io_err)?;
                Ok((file, buf))
            })
            .await?;
            file = f;
            if chunk.is_empty() {
                return Err(ObjectError::Io(format!(
                    "{key} ended {remaining} bytes early"
                )));
            }
            remaining -= chunk.len() as u64;
            write_all(dst, Bytes::from(chunk)).await?;
        }
        finish(dst).await
    }

    /// On the calling task, as `stat`: a push touches every blob its
    /// manifest names.
    pub async fn touch(&self, key: &str) -> Result<Meta, ObjectError> {
        let path = self.path(key)?;
        let f = File::open(&path).map_err(io_err)?;
        f.set_modified(std::time::SystemTime::now())
            .map_err(io_err)?;
        Ok(meta_of(&f.metadata().map_err(io_err)?))
    }

    pub async fn digest(&self, key: &str, algorithm: HashAlgorithm) -> Result<String, ObjectError> {
        let path = self.path(key)?;
        blocking(move || digest_file(&path, algorithm).map_err(io_err)).await
    }

    /// `digest` for background work (scrub): on a thread of its own at the
    /// lowest CPU priority, so hashing a large store yields to requests;
    /// each file (inode) at most once per pass.
    pub async fn digest_low_priority(
        &self,
        key: &str,
        algorithm: HashAlgorithm,
    ) -> Result<String, ObjectError> {
        let path = self.path(key)?;
        let md = fs::metadata(&path).map_err(io_err)?;
        let version = FileVersion {
            dev: md.dev(),
            ino: md.ino(),
            size: md.len(),
            mtime_ns: md.mtime() as i128 * 1_000_000_000 + md.mtime_nsec() as i128,
            sha512: matches!(algorithm, HashAlgorithm::Sha512),
        };
        if let Some(hex) = self.pass_memo().get(&version) {
            return Ok(hex.clone());
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("skiff-background".into())
            .spawn(move || {
                lower_this_threads_priority();
                let _ = tx.send(digest_file(&path, algorithm).map_err(io_err));
            })
            .map_err(io_err)?;
        let hex = rx
            .await
            .map_err(|_| ObjectError::Io("background hashing thread failed".into()))??;
        self.bytes_hashed
            .fetch_add(version.size, std::sync::atomic::Ordering::Relaxed);
        let mut memo = self.pass_memo();
        // Bounded: past this, files are hashed again rather than remembered.
        if memo.len() < 1 << 20 {
            memo.insert(version, hex.clone());
        }
        Ok(hex)
    }

    fn pass_memo(&self) -> std::sync::MutexGuard<'_, HashMap<FileVersion, String>> {
        self.pass_digests.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A scrub pass starts: every file is hashed afresh.
    pub fn begin_scrub_pass(&self) {
        self.pass_memo().clear();
    }

    /// Bytes hashed by background work (scrub) since start.
    pub fn bytes_hashed(&self) -> u64 {
        self.bytes_hashed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The publish step of an upload (the WIT `publish`): check that `src`
    /// hashes to `expected` and make it the blob `dst`, all under `src`'s
    /// lock, so no append can land in between or afterwards.
    pub async fn publish(
        &self,
        src: &str,
        dst: &str,
        expected: Content,
    ) -> Result<Published, ObjectError> {
        let (from, to) = (self.path(src)?, self.path(dst)?);
        let kept = self.take_partial_any(src);
        let commit = self.commit;
        let want = expected.hex.clone();
        let staged = from.clone();
        let (locked, size) = blocking(move || {
            let mut f = File::open(&staged).map_err(io_err)?;
            try_lock(&f)?;
            if !still_named(&f, &staged).map_err(io_err)? {
                return Err(ObjectError::NotFound);
            }
            let size = f.metadata().map_err(io_err)?.len();
            let actual = match (expected.algorithm, kept) {
                (HashAlgorithm::Sha256, Some((hashed, h))) if hashed == size => {
                    hex::encode(h.finalize())
                }
                (algorithm, _) => hash_open(&mut f, algorithm).map_err(io_err)?,
            };
            if actual != want {
                return Err(ObjectError::DigestMismatch(actual));
            }
            if commit {
                f.sync_all().map_err(io_err)?;
            }
            Ok((f, size))
        })
        .await?;
        let digest = digest_text(&expected);
        let result = match self.publish_new(&from, dst).await {
            Ok(()) => Ok(Published {
                size,
                existed: false,
            }),
            Err(ObjectError::PreconditionFailed) => {
                self.keep_or_repair(from, to, dst, digest, size).await
            }
            Err(e) => Err(e),
        };
        // `src` is unlinked by now (or left for the caller on an error), so
        // an append that waited for the lock finds its name gone.
        drop(locked);
        result
    }

    /// `dst` exists while an upload of the same content finishes: keep it if
    /// it holds that content (touched, as the push reuses it), otherwise it
    /// was damaged on disk and the verified upload replaces it atomically.
    async fn keep_or_repair(
        &self,
        from: PathBuf,
        to: PathBuf,
        dst: &str,
        digest: String,
        size: u64,
    ) -> Result<Published, ObjectError> {
        let (commit, cache, key) = (self.commit, self.dedupe.clone(), dst.to_string());
        blocking(move || {
            let intact = match fs::metadata(&to) {
                Ok(md) if md.len() == size => holds(&to, &digest).map_err(io_err)?,
                Ok(_) => false,
                Err(e) if e.kind() == ErrorKind::NotFound => false,
                Err(e) => return Err(io_err(e)),
            };
            if intact {
                touch(&to);
                let _ = fs::remove_file(&from);
                return Ok(Published {
                    size,
                    existed: true,
                });
            }
            tracing::warn!(
                key,
                "replacing a damaged stored copy with a verified upload"
            );
            in_dir(&to, commit, || fs::rename(&from, &to)).map_err(io_err)?;
            published(cache.as_deref(), &key, &to, commit)?;
            Ok(Published {
                size,
                existed: false,
            })
        })
        .await
    }

    /// Give `dst` the bytes of `src`, which may live in another store (a
    /// mount across subpaths). With dedupe on, a hard link where the
    /// filesystem allows; otherwise a copy, published atomically.
    pub async fn copy_from(
        &self,
        src: PathBuf,
        dst: &str,
        when: Condition,
    ) -> Result<(), ObjectError> {
        if !matches!(when, Condition::IfAbsent) {
            return Err(ObjectError::Io("copy only creates new objects".into()));
        }
        let to = self.path(dst)?;
        // A blob key promises its content: check what is copied against it,
        // so a copy can never spread bytes that rotted (or were never right).
        let digest: Option<skiff_core::Digest> = content_digest(dst).and_then(|d| d.parse().ok());
        if !self.dedupe() {
            let staged = temp_name(&to);
            let (from, tmp, commit) = (src.clone(), staged.clone(), self.commit);
            let check = digest.clone();
            let copied = blocking(move || {
                let hex = in_dir(&tmp, commit, || copy_hashing(&from, &tmp, check.as_ref()))
                    .map_err(io_err)?;
                if let (Some(d), Some(hex)) = (&check, hex) {
                    if hex != d.hex() {
                        return Err(ObjectError::DigestMismatch(hex));
                    }
                }
                if commit {
                    File::open(&tmp)
                        .and_then(|f| f.sync_all())
                        .map_err(io_err)?;
                }
                Ok(())
            })
            .await;
            let r = match copied {
                Ok(()) => self.publish_new(&staged, dst).await,
                Err(e) => Err(e),
            };
            let _ = fs::remove_file(&staged);
            return r;
        }
        let (commit, cache, key) = (self.commit, self.dedupe.clone(), dst.to_string());
        blocking(move || {
            if let Some(d) = &digest {
                let actual = digest_file(&src, algorithm_of(d)).map_err(io_err)?;
                if actual != d.hex() {
                    return Err(ObjectError::DigestMismatch(actual));
                }
            }
            create_from(&src, &to, commit)?;
            touch(&to);
            if commit {
                // The linked file may come from a store that never synced it.
                File::open(&to).and_then(|f| f.sync_all()).map_err(io_err)?;
            }
            published(cache.as_deref(), &key, &to, commit)
        })
        .await
    }

    /// A server starts on this store. When the previous run did not stop
    /// cleanly, when it started.
    pub fn mark_running(&self) -> io::Result<Option<std::time::SystemTime>> {
        let mut unclean: Option<std::time::SystemTime> = None;
        for entry in fs::read_dir(&self.root)? {
            let entry = entry?;
            if !entry
                .file_name()
                .to_string_lossy()
                .starts_with(RUNNING_PREFIX)
            {
                continue;
            }
            let Ok(f) = File::open(entry.path()) else {
                continue;
            };
            // Locked: its server is running (another process on this store).
            if f.try_lock().is_err() {
                continue;
            }
            let started = f.metadata()?.modified()?;
            unclean = Some(unclean.map_or(started, |u| u.min(started)));
            let _ = fs::remove_file(entry.path());
        }
        let path = self
            .root
            .join(format!("{RUNNING_PREFIX}{:016x}", rand::random::<u64>()));
        let f = File::create(&path)?;
        f.lock()?;
        *self.running.lock().unwrap_or_else(|e| e.into_inner()) = Some((path, f));
        Ok(unclean)
    }

    /// The server stopped in order: nothing needs checking at the next start.
    pub fn mark_stopped(&self) {
        if let Some((path, _f)) = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = fs::remove_file(path);
        }
    }

    /// After an unclean stop of a store without `commit`: blobs published
    /// since `since` may name data that a power cut lost (it was never
    /// synced). Hash each; remove any whose bytes do not match their name,
    /// under the blob's lock, so it answers 404 and the next push of it
    /// stores it again. (checked, removed).
    pub fn check_recent_blobs(&self, since: std::time::SystemTime) -> io::Result<(u64, u64)> {
        let since = since
            .checked_sub(RECENT_SLACK)
            .unwrap_or(std::time::UNIX_EPOCH);
        let mut blobs = Vec::new();
        collect_blobs(&self.root, &self.root, &mut blobs)?;
        let (mut checked, mut removed) = (0, 0);
        for (key, digest) in &blobs {
            let path = self.root.join(key);
            let Ok(md) = fs::metadata(&path) else {
                continue;
            };
            if md.modified().is_ok_and(|m| m < since) {
                continue;
            }
            checked += 1;
            if holds(&path, digest).unwrap_or(true) {
                continue;
            }
            let f = File::open(&path)?;
            f.lock()?;
            if f.metadata()?.ino() == md.ino() && still_named(&f, &path)? {
                fs::remove_file(&path)?;
                if let Some(cache) = &self.dedupe {
                    let _ = cache.forget(key);
                }
                tracing::warn!(key, "removed a blob whose bytes an unclean stop lost");
                removed += 1;
            }
        }
        Ok((checked, removed))
    }

    /// Bring the store in line with its dedupe setting, in the background at
    /// start: with dedupe on, record every blob and turn separate copies of
    /// one digest into links to one that checks out; with it off, give every
    /// linked blob its own copy again and empty the cache. Each file is
    /// replaced atomically, so requests go on reading throughout.
    pub fn reconcile(&self) -> io::Result<(u64, u64)> {
        let mut blobs = Vec::new();
        collect_blobs(&self.root, &self.root, &mut blobs)?;
        let mut changed = 0;
        match &self.dedupe {
            Some(cache) => {
                // The files holding each digest.
                let mut copies: std::collections::HashMap<&str, Vec<(PathBuf, u64)>> =
                    Default::default();
                for (key, digest) in &blobs {
                    let path = self.root.join(key);
                    let Ok(md) = fs::metadata(&path) else {
                        continue;
                    };
                    copies.entry(digest).or_default().push((path, md.ino()));
                }
                // One transaction for the lot: a commit per blob would make a
                // large store's first start with dedupe take minutes.
                if blobs.is_empty() {
                    // Nothing to record: leave the cache file untouched.
                } else if let Err(e) =
                    cache.record_all(blobs.iter().map(|(k, d)| (d.as_str(), k.as_str())))
                {
                    tracing::warn!(error = %e, "dedupe cache write failed");
                }
                for (digest, files) in &copies {
                    if files.iter().all(|(_, ino)| *ino == files[0].1) {
                        continue;
                    }
                    // Link to the first copy that checks out (each file is
                    // hashed at most once); the others, rotten ones included,
                    // become links to it.
                    let mut tried = std::collections::HashSet::new();
                    let good = files
                        .iter()
                        .find(|(p, ino)| tried.insert(*ino) && holds(p, digest).unwrap_or(false));
                    let Some((orig, orig_ino)) = good else {
                        tracing::warn!(
                            digest,
                            "dedupe: no stored copy checks out; left as they are"
                        );
                        continue;
                    };
                    for (path, ino) in files {
                        if ino == orig_ino {
                            continue;
                        }
                        let tmp = temp_name(path);
                        if fs::hard_link(orig, &tmp).is_ok()
                            && replace_if_same(path, *ino, &tmp, self.commit).unwrap_or(false)
                        {
                            changed += 1;
                        }
                        let _ = fs::remove_file(&tmp);
                    }
                }
            }
            None => {
                for (key, _) in &blobs {
                    let path = self.root.join(key);
                    let Ok(md) = fs::metadata(&path) else {
                        continue;
                    };
                    if md.nlink() > 1 {
                        let tmp = temp_name(&path);
                        if fs::copy(&path, &tmp).is_ok()
                            && replace_if_same(&path, md.ino(), &tmp, self.commit).unwrap_or(false)
                        {
                            changed += 1;
                        }
                        let _ = fs::remove_file(&tmp);
                    }
                }
                let cache_path = self.root.join(CACHE_FILE);
                if cache_path.exists() {
                    if let Ok(c) = DedupeCache::open(&cache_path) {
                        let _ = c.clear();
                    }
                }
            }
        }
        Ok((blobs.len() as u64, changed))
    }
}

/// Every content-addressed blob under `dir`, as (key, digest), not entering
/// hidden directories.
fn collect_blobs(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let ft = entry.file_type()?;
        if ft.is_dir() {
            collect_blobs(root, &path, out)?;
        } else if ft.is_file() {
            let Ok(rel) = path.strip_prefix(root) else {
                continue;
            };
            let Some(key) = rel.to_str() else { continue };
            if let Some(d) = content_digest(key) {
                out.push((key.to_string(), d));
            }
        }
    }
    Ok(())
}

/// Copy `from` to a new file `to`, hashing on the way with the algorithm of
/// `digest` when one is given; the hex digest of what was copied.
fn copy_hashing(
    from: &Path,
    to: &Path,
    digest: Option<&skiff_core::Digest>,
) -> io::Result<Option<String>> {
    let mut src = File::open(from)?;
    let mut dst = OpenOptions::new().write(true).create_new(true).open(to)?;
    let mut h256 = Sha256::new();
    let mut h512 = Sha512::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = src.read(&mut buf)?;
        if n == 0 {
            break;
        }
        match digest.map(|d| d.algorithm()) {
            Some(skiff_core::Algorithm::Sha256) => h256.update(&buf[..n]),
            Some(skiff_core::Algorithm::Sha512) => h512.update(&buf[..n]),
            None => {}
        }
        dst.write_all(&buf[..n])?;
    }
    Ok(digest.map(|d| match d.algorithm() {
        skiff_core::Algorithm::Sha256 => hex::encode(h256.finalize()),
        skiff_core::Algorithm::Sha512 => hex::encode(h512.finalize()),
    }))
}

/// Pieces of a request body queued between receiving and writing.
const PIPELINE_PIECES: usize = 8;

/// Hash and append every piece `queued` yields, coalesced into writes of
/// `CHUNK` bytes; the file (still locked) and the hash state when the queue
/// ends.
fn sink(
    file: File,
    mut hasher: Option<Sha256>,
    mut queued: tokio::sync::mpsc::Receiver<Bytes>,
) -> Result<(File, Option<Sha256>), ObjectError> {
    let mut out = std::io::BufWriter::with_capacity(CHUNK, file);
    while let Some(piece) = queued.blocking_recv() {
        if let Some(h) = hasher.as_mut() {
            h.update(&piece);
        }
        out.write_all(&piece).map_err(io_err)?;
    }
    let file = out.into_inner().map_err(|e| io_err(e.into_error()))?;
    Ok((file, hasher))
}

#[async_trait::async_trait]
impl Backend for Disk {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    async fn get(&self, key: &str, max: u64) -> Result<(Vec<u8>, Meta), ObjectError> {
        Disk::get(self, key, max).await
    }

    async fn put(&self, key: &str, data: Vec<u8>, when: Condition) -> Result<Meta, ObjectError> {
        Disk::put(self, key, data, when).await
    }

    async fn stat(&self, key: &str) -> Result<Meta, ObjectError> {
        Disk::stat(self, key).await
    }

    /// The root directory is there and lists: a store whose disk went away
    /// (or was never mounted) is not ready, though every key is "not found".
    async fn ready(&self) -> Result<(), ObjectError> {
        let root = self.root.clone();
        blocking(move || {
            fs::read_dir(&root)
                .map(drop)
                .map_err(|e| ObjectError::Io(format!("{}: {e}", root.display())))
        })
        .await
    }

    async fn delete(&self, key: &str, when: Condition) -> Result<(), ObjectError> {
        Disk::delete(self, key, when).await
    }

    async fn list_children(&self, prefix: &str) -> Result<Vec<Child>, ObjectError> {
        Disk::list_children(self, prefix).await
    }

    async fn write_from(
        &self,
        key: &str,
        offset: u64,
        src: &mut DynInputStream,
        limit: Option<u64>,
    ) -> Result<Written, ObjectError> {
        Disk::write_from(self, key, offset, src, limit).await
    }

    async fn read_to(
        &self,
        key: &str,
        start: u64,
        len: u64,
        dst: &mut DynOutputStream,
    ) -> Result<(), ObjectError> {
        Disk::read_to(self, key, start, len, dst).await
    }

    async fn touch(&self, key: &str) -> Result<Meta, ObjectError> {
        Disk::touch(self, key).await
    }

    async fn digest(
        &self,
        key: &str,
        algorithm: HashAlgorithm,
        priority: Priority,
    ) -> Result<String, ObjectError> {
        match priority {
            Priority::Request => Disk::digest(self, key, algorithm).await,
            Priority::Background => self.digest_low_priority(key, algorithm).await,
        }
    }

    async fn publish(
        &self,
        src: &str,
        dst: &str,
        expected: Content,
    ) -> Result<Published, ObjectError> {
        Disk::publish(self, src, dst, expected).await
    }

    async fn copy_in(
        &self,
        src: &dyn Backend,
        src_key: &str,
        dst: &str,
        when: Condition,
    ) -> Result<(), ObjectError> {
        // Only another directory can be linked or copied from; a mount from
        // a backend without files is not one this store can make (the
        // client then uploads the blob).
        let from = src.local_path(src_key).ok_or(ObjectError::NotFound)?;
        self.copy_from(from, dst, when).await
    }

    fn local_path(&self, key: &str) -> Option<PathBuf> {
        self.path(key).ok()
    }

    fn start(self: Arc<Self>) -> anyhow::Result<()> {
        let unclean = self
            .mark_running()
            .map_err(|e| anyhow::anyhow!("cannot write to {}: {e}", self.root.display()))?;
        let unclean = unclean.filter(|_| !self.commit);
        // Off the request path; not waited for at exit (main.rs): it may
        // take minutes on a large store, and each of its steps replaces one
        // file by a rename, so the process may end between any two; the
        // next start converges the rest.
        tokio::task::spawn_blocking(move || {
            let root = self.root.display().to_string();
            if let Some(since) = unclean {
                match self.check_recent_blobs(since) {
                    Ok((checked, removed)) => tracing::info!(
                        %root, checked, removed,
                        "checked the blobs of a run that did not stop cleanly"
                    ),
                    Err(e) => tracing::warn!(%root, error = %e, "checking recent blobs failed"),
                }
            }
            match self.reconcile() {
                Ok((blobs, 0)) => tracing::debug!(%root, blobs, "dedupe state consistent"),
                Ok((blobs, changed)) => tracing::info!(
                    %root, blobs, changed, dedupe = self.dedupe(),
                    "converged stored blobs to the dedupe setting"
                ),
                Err(e) => tracing::warn!(%root, error = %e, "dedupe convergence failed"),
            }
        });
        Ok(())
    }

    fn stop(&self) {
        self.mark_stopped();
    }

    fn begin_scrub_pass(&self) {
        Disk::begin_scrub_pass(self);
    }

    fn bytes_hashed(&self) -> u64 {
        Disk::bytes_hashed(self)
    }
}
