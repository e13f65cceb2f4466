//! `log.audit`: one JSON line per write or delete (every PUT, POST, PATCH
//! and DELETE of the API), whatever came of it: who (the signed-in user,
//! or none), from where, what (repository, reference, digest) and the
//! outcome. Appended and flushed per line, so a crash loses at most the
//! line being written; the file is never read back.

use anyhow::{Context, Result};
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

pub struct Audit {
    file: Mutex<File>,
}

/// One audited request.
#[derive(Serialize)]
pub struct Entry<'a> {
    /// RFC 3339, UTC.
    pub time: String,
    pub request_id: &'a str,
    pub user: Option<&'a str>,
    pub client: String,
    pub method: &'a str,
    pub route: &'static str,
    pub repository: Option<&'a str>,
    /// The tag, digest or upload session the path names.
    pub reference: Option<&'a str>,
    /// What the registry stored or removed (`Docker-Content-Digest`).
    pub digest: Option<&'a str>,
    pub status: u16,
    /// `ok`, `denied` (401/403), `refused` (other 4xx) or `failed` (5xx).
    pub outcome: &'static str,
}

impl Audit {
    pub fn open(path: &Path) -> Result<Audit> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("log.audit: cannot open {}", path.display()))?;
        Ok(Audit {
            file: Mutex::new(file),
        })
    }

    /// Whether a request is one the audit log records.
    pub fn records(method: &http::Method) -> bool {
        matches!(
            *method,
            http::Method::PUT | http::Method::POST | http::Method::PATCH | http::Method::DELETE
        )
    }

    pub fn write(&self, entry: &Entry<'_>) {
        let Ok(mut line) = serde_json::to_vec(entry) else {
            return;
        };
        line.push(b'\n');
        let Ok(mut f) = self.file.lock() else {
            return;
        };
        // One write per line: lines of concurrent requests never interleave.
        if let Err(e) = f.write_all(&line) {
            tracing::error!(error = %e, "log.audit: writing failed");
        }
    }
}

pub fn outcome(status: u16) -> &'static str {
    match status {
        401 | 403 => "denied",
        400..=499 => "refused",
        500.. => "failed",
        _ => "ok",
    }
}
