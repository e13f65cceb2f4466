//! What gc removes from a bucket besides repositories' objects: multipart
//! uploads a crashed publish never completed nor aborted (S3 keeps, and
//! bills, their parts until then), and staged parts whose session record
//! is gone (a crash between a publish and its clean-up).

use super::{now_ms, sdk_err, S3, STAGING};
use crate::runtime::skiff::registry::objects::ObjectError;
use std::collections::BTreeMap;
use std::time::Duration;

impl S3 {
    /// Remove both kinds when older than `older_than`; how many went.
    pub(super) async fn sweep_abandoned(&self, older_than: Duration) -> Result<u64, ObjectError> {
        let cutoff = now_ms().saturating_sub(older_than.as_millis() as u64);
        Ok(self.abort_multipart_uploads(cutoff).await? + self.drop_orphan_staging(cutoff).await?)
    }

    async fn abort_multipart_uploads(&self, cutoff_ms: u64) -> Result<u64, ObjectError> {
        let prefix = self.root();
        let (mut key_marker, mut id_marker) = (None, None);
        let mut aborted = 0;
        loop {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(&prefix)
                .set_key_marker(key_marker)
                .set_upload_id_marker(id_marker)
                .send()
                .await
                .map_err(sdk_err)?;
            for u in page.uploads() {
                let started = u
                    .initiated()
                    .and_then(|t| t.to_millis().ok())
                    .and_then(|t| u64::try_from(t).ok())
                    .unwrap_or(u64::MAX);
                if let (Some(key), Some(id), true) = (u.key(), u.upload_id(), started < cutoff_ms) {
                    self.client
                        .abort_multipart_upload()
                        .bucket(&self.bucket)
                        .key(key)
                        .upload_id(id)
                        .send()
                        .await
                        .map_err(sdk_err)?;
                    aborted += 1;
                }
            }
            if page.is_truncated() != Some(true) {
                return Ok(aborted);
            }
            key_marker = page.next_key_marker().map(String::from);
            id_marker = page.next_upload_id_marker().map(String::from);
        }
    }

    async fn drop_orphan_staging(&self, cutoff_ms: u64) -> Result<u64, ObjectError> {
        let root = format!("{}/", self.full(STAGING));
        // Staged objects by the session key they belong to.
        let mut sessions: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
        for (full, modified) in self.list_under(&root).await? {
            let Some((session, _piece)) = full
                .strip_prefix(&root)
                .and_then(|rest| rest.rsplit_once('/'))
            else {
                continue;
            };
            sessions
                .entry(session.to_string())
                .or_default()
                .push((full, modified));
        }
        let mut removed = 0;
        for (session, staged) in sessions {
            if staged.iter().any(|(_, m)| *m >= cutoff_ms) {
                continue;
            }
            match self.head(&session).await {
                Err(ObjectError::NotFound) => {}
                // The session is alive (gc's upload expiry is its business).
                Ok(_) => continue,
                Err(e) => return Err(e),
            }
            removed += staged.len() as u64;
            self.delete_keys(staged.into_iter().map(|(k, _)| k).collect())
                .await?;
        }
        Ok(removed)
    }
}
