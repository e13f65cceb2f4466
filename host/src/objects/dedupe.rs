//! The dedupe cache: which keys hold each content-addressed blob, so a blob
//! pushed into another repository becomes a hard link to a copy already on
//! disk. An embedded redb database (`<rootDirectory>/.skiff-cache.db`).
//!
//! The cache is advisory: a key it names is checked on disk before use, and a
//! stale entry is dropped. Losing the file loses only dedupe opportunities.

use redb::{Database, MultimapTableDefinition, ReadableDatabase, TableDefinition};
use std::path::Path;

/// digest → keys holding it.
const COPIES: MultimapTableDefinition<&str, &str> = MultimapTableDefinition::new("copies");
/// key → digest, to forget a key when it is deleted.
const DIGEST_OF: TableDefinition<&str, &str> = TableDefinition::new("digest_of");

pub struct DedupeCache {
    db: Database,
}

pub type CacheResult<T> = Result<T, redb::Error>;

impl DedupeCache {
    pub fn open(path: &Path) -> CacheResult<DedupeCache> {
        let db = Database::create(path)?;
        let tx = db.begin_write()?;
        tx.open_multimap_table(COPIES)?;
        tx.open_table(DIGEST_OF)?;
        tx.commit()?;
        Ok(DedupeCache { db })
    }

    pub fn copies(&self, digest: &str) -> CacheResult<Vec<String>> {
        let tx = self.db.begin_read()?;
        let table = tx.open_multimap_table(COPIES)?;
        let mut out = Vec::new();
        for v in table.get(digest)? {
            out.push(v?.value().to_string());
        }
        Ok(out)
    }

    pub fn record(&self, digest: &str, key: &str) -> CacheResult<()> {
        self.record_all([(digest, key)])
    }

    /// Record many (digest, key) pairs in one transaction.
    pub fn record_all<'a>(
        &self,
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> CacheResult<()> {
        let tx = self.db.begin_write()?;
        {
            let mut copies = tx.open_multimap_table(COPIES)?;
            let mut digest_of = tx.open_table(DIGEST_OF)?;
            for (digest, key) in pairs {
                copies.insert(digest, key)?;
                digest_of.insert(key, digest)?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub fn forget(&self, key: &str) -> CacheResult<()> {
        let tx = self.db.begin_write()?;
        {
            let mut by_key = tx.open_table(DIGEST_OF)?;
            let digest = by_key.remove(key)?.map(|d| d.value().to_string());
            if let Some(d) = digest {
                tx.open_multimap_table(COPIES)?.remove(d.as_str(), key)?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Drop every entry (dedupe was turned off).
    pub fn clear(&self) -> CacheResult<()> {
        let tx = self.db.begin_write()?;
        tx.delete_multimap_table(COPIES)?;
        tx.delete_table(DIGEST_OF)?;
        tx.open_multimap_table(COPIES)?;
        tx.open_table(DIGEST_OF)?;
        tx.commit()?;
        Ok(())
    }

    #[cfg(test)]
    fn len(&self) -> CacheResult<u64> {
        use redb::ReadableTableMetadata;
        Ok(self.db.begin_read()?.open_table(DIGEST_OF)?.len()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_forgets() {
        let dir = tempfile::tempdir().unwrap();
        let c = DedupeCache::open(&dir.path().join("cache.db")).unwrap();
        c.record("sha256:aa", "r1/blobs/sha256/aa").unwrap();
        c.record("sha256:aa", "r2/blobs/sha256/aa").unwrap();
        let mut copies = c.copies("sha256:aa").unwrap();
        copies.sort();
        assert_eq!(copies, ["r1/blobs/sha256/aa", "r2/blobs/sha256/aa"]);
        c.forget("r1/blobs/sha256/aa").unwrap();
        assert_eq!(c.copies("sha256:aa").unwrap(), ["r2/blobs/sha256/aa"]);
        c.forget("unknown").unwrap();
        c.clear().unwrap();
        assert!(c.copies("sha256:aa").unwrap().is_empty());
        assert_eq!(c.len().unwrap(), 0);
    }
}
