//! A key's lock, across instances: the file `<name>.lock`, created with
//! `create_new` (O_EXCL), so exactly one creator succeeds; removed when the
//! change is done.
//!
//! An instance that traps while it holds a lock never removes it, so a lock
//! older than [`STALE`] is taken for abandoned and removed (no change of
//! one key takes that long). Two waiters that both find the same stale
//! lock may both remove it, the second removing the first's fresh lock:
//! only after a trapped instance, and acceptable for a test-only store.

use crate::bindings::exports::wasi::keyvalue::store::Error;
use crate::paths;
use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// A lock this old was left by an instance that died holding it.
const STALE: Duration = Duration::from_secs(30);
/// How long to wait for a lock before giving up: longer than any change of
/// one key takes, shorter than a request's patience.
const PATIENCE: Duration = Duration::from_secs(20);
const LONGEST_NAP: Duration = Duration::from_millis(10);

/// A held lock; released on drop.
pub struct Held {
    path: PathBuf,
}

impl Held {
    /// Wait for and take the lock of the key stored in `file`.
    pub fn take(file: &Path) -> Result<Held, Error> {
        let path = paths::beside(file, ".lock");
        let started = Instant::now();
        let mut nap = Duration::from_millis(1);
        loop {
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(_) => return Ok(Held { path }),
                // Abandoned: remove it, and try again after the nap.
                Err(e) if e.kind() == ErrorKind::AlreadyExists && is_stale(&path) => {
                    let _ = std::fs::remove_file(&path);
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                // The directory of a long key's file is not there yet.
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    if let Some(dir) = path.parent() {
                        std::fs::create_dir_all(dir).map_err(|e| {
                            Error::Other(format!("creating {}: {e}", dir.display()))
                        })?;
                    }
                }
                Err(e) => return Err(Error::Other(format!("locking {}: {e}", path.display()))),
            }
            if started.elapsed() > PATIENCE {
                return Err(Error::Other(format!(
                    "{} stayed locked for {PATIENCE:?}",
                    file.display()
                )));
            }
            std::thread::sleep(nap);
            nap = (nap * 2).min(LONGEST_NAP);
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn is_stale(lock: &Path) -> bool {
    let Ok(modified) = std::fs::metadata(lock).and_then(|m| m.modified()) else {
        // Gone meanwhile: the next attempt may take it.
        return false;
    };
    SystemTime::now()
        .duration_since(modified)
        .is_ok_and(|age| age > STALE)
}
