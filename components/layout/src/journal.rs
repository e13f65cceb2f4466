//! Tags pushed into a large repository wait here, one small object each,
//! until they are folded into `index.json`.
//!
//! Rewriting `index.json` costs its size: at 100k tags, about 30 MB per
//! push. So once an index is past `JOURNAL_ABOVE_BYTES`, a tag push writes
//! only `<repo>/.tags/<tag>` (the descriptor the tag names), and every
//! `FOLD_AT` entries one push folds them all into the index with one
//! compare-and-swap. Every other change of the index (a delete, gc's
//! sweep) folds first, in the same swap, and so does a gc pass.
//!
//! What the registry serves is `index.json` overlaid with these entries:
//! an entry wins over the index for its tag, unless the index records that
//! it absorbed that very entry (`ImageIndex::folded`; a change made after
//! the fold, a delete say, is then newer). Readers look at the entry first
//! and the index second; writers the other way round (`apply` says why). A
//! fold removes an entry only after the index holding it is stored, and
//! only if it is still the version folded, so every read sees a state that
//! existed and no acknowledged tag is ever missing from both. A tool editing `index.json` by hand sees a large
//! repository's newest tag pushes only once they are folded, and its edit
//! of a tag that has an entry waiting is overridden by the entry.

use crate::objects::{self, Condition, ObjectError};
use crate::{keys, LayoutError};
use skiff_core::layout::{Descriptor, ImageIndex};
use skiff_core::Tag;

/// Past this, a tag push writes an entry rather than the index: about a
/// thousand tags, where a rewrite starts to cost more than a few writes.
pub const JOURNAL_ABOVE_BYTES: u64 = 256 << 10;

/// Entries that make the push writing the last of them fold them all. The
/// fold costs one rewrite of the index, so each push pays 1/FOLD_AT of
/// one; every request listing tags reads this many names at most.
pub const FOLD_AT: usize = 256;

/// An entry holds one descriptor: a digest, a media type and two
/// annotations.
const MAX_ENTRY_BYTES: u64 = 64 << 10;

/// A tag entry as read, with the version a fold removes it at.
#[derive(Debug, Clone)]
pub struct Entry {
    pub tag: String,
    pub desc: Descriptor,
    version: String,
}

/// Point `tag` at `desc` with an entry.
pub fn write(repo: &str, tag: &str, desc: &Descriptor) -> Result<(), LayoutError> {
    let bytes = serde_json::to_vec(desc).map_err(|e| LayoutError::Corrupt(e.to_string()))?;
    objects::put(&keys::tag_entry(repo, tag), &bytes, &Condition::Always)?;
    Ok(())
}

/// `tag`'s entry, if it has one.
pub fn get(repo: &str, tag: &str) -> Result<Option<Entry>, LayoutError> {
    read(&keys::tag_entry(repo, tag), tag)
}

impl Entry {
    /// The version of the entry object, which an index that absorbed it
    /// records (`ImageIndex::folded`).
    pub fn version(&self) -> &str {
        &self.version
    }
}

/// The entry at `key`; `None` if there is none, or if it is damaged: an
/// entry is written whole (synced and renamed into place), so only a
/// failing disk leaves one unreadable, and the tag then serves what the
/// index says until scrub (`damaged`) reports and removes it.
fn read(key: &str, tag: &str) -> Result<Option<Entry>, LayoutError> {
    match objects::get(key, MAX_ENTRY_BYTES) {
        Ok((bytes, meta)) => Ok(parse(&bytes).map(|desc| Entry {
            tag: tag.to_string(),
            desc,
            version: meta.version,
        })),
        Err(ObjectError::NotFound) | Err(ObjectError::TooLarge(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn parse(bytes: &[u8]) -> Option<Descriptor> {
    let desc: Descriptor = serde_json::from_slice(bytes).ok()?;
    desc.digest.parse::<skiff_core::Digest>().ok()?;
    Some(desc)
}

/// The tags whose entries cannot be read as a descriptor, each with its
/// entry's key and version.
pub fn damaged(repo: &str) -> Result<Vec<(String, String, String)>, LayoutError> {
    let mut out = Vec::new();
    for tag in tags(repo)? {
        let key = keys::tag_entry(repo, &tag);
        match objects::get(&key, MAX_ENTRY_BYTES) {
            Ok((bytes, meta)) if parse(&bytes).is_none() => out.push((tag, key, meta.version)),
            Ok(_) | Err(ObjectError::NotFound) => {}
            Err(ObjectError::TooLarge(_)) => {
                if let Some(m) = crate::stat(&key)? {
                    out.push((tag, key, m.version));
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

/// The tags that have entries, sorted. Anything else under the prefix (a
/// store's temporary file) is not a tag and is left out.
pub fn tags(repo: &str) -> Result<Vec<String>, LayoutError> {
    let mut tags: Vec<String> = crate::children(&keys::tag_entries_prefix(repo))?
        .into_iter()
        .filter(|c| !c.is_prefix && c.name.parse::<Tag>().is_ok())
        .map(|c| c.name)
        .collect();
    tags.sort();
    Ok(tags)
}

/// Every entry, read.
pub fn entries(repo: &str) -> Result<Vec<Entry>, LayoutError> {
    let mut out = Vec::new();
    for tag in tags(repo)? {
        // One removed by a fold since the listing is in the index now.
        if let Some(e) = read(&keys::tag_entry(repo, &tag), &tag)? {
            out.push(e);
        }
    }
    Ok(out)
}

/// Apply `entries` to `idx`, except those it has absorbed already, and
/// record them as absorbed; whether that changed it.
///
/// A writer reads the index first and the entries after it. Then an entry
/// it reads was either not yet folded into any index (it wins), or folded
/// into this one or an earlier one, which recorded it, or into a later one,
/// and then the write loses its compare-and-swap and reads again. A record
/// whose entry is gone is dropped: nobody can hold that entry unread any
/// more who could still write against this index.
pub fn apply(idx: &mut ImageIndex, entries: &[Entry]) -> bool {
    let fresh: Vec<&Entry> = entries
        .iter()
        .filter(|e| idx.folded(&e.tag) != Some(e.version.as_str()))
        .collect();
    let stale: Vec<String> = idx
        .folded_entries()
        .into_iter()
        .filter(|(t, v)| !entries.iter().any(|e| &e.tag == t && &e.version == v))
        .map(|(t, _)| t)
        .collect();
    let tags: Vec<(String, Descriptor)> = fresh
        .iter()
        .map(|e| (e.tag.clone(), e.desc.clone()))
        .collect();
    let mut changed = idx.set_tags(&tags);
    for e in &fresh {
        idx.set_folded(&e.tag, Some(&e.version));
        changed = true;
    }
    for t in &stale {
        if !fresh.iter().any(|e| &e.tag == t) {
            idx.set_folded(t, None);
            changed = true;
        }
    }
    changed
}

/// `entries` over `idx`, for a reader: entries read first and the index
/// after, so an entry folded in between is in the index; those the index
/// has absorbed are skipped, as its own changes since are newer.
pub fn overlay(idx: &mut ImageIndex, entries: &[Entry]) {
    let fresh: Vec<(String, Descriptor)> = entries
        .iter()
        .filter(|e| idx.folded(&e.tag) != Some(e.version.as_str()))
        .map(|e| (e.tag.clone(), e.desc.clone()))
        .collect();
    idx.set_tags(&fresh);
}

/// Remove entries an index now stored has absorbed; an entry rewritten
/// since it was read is newer than that index and stays.
pub fn clear(repo: &str, entries: &[Entry]) -> Result<(), LayoutError> {
    for e in entries {
        crate::remove_if(&keys::tag_entry(repo, &e.tag), &e.version)?;
    }
    Ok(())
}

/// Merge the entries' tags into a page of the index's: up to `n` tags after
/// `last`, and whether more follow. `journaled` must be read before the
/// index page, so a tag folded in between is in one or the other.
pub fn merge_page(
    journaled: &[String],
    (mut page, more): (Vec<String>, bool),
    last: Option<&str>,
    n: usize,
) -> (Vec<String>, bool) {
    if journaled.is_empty() {
        return (page, more);
    }
    let (extra, extra_more) = crate::indexes::page(journaled, last, n);
    page.extend(extra);
    page.sort();
    page.dedup();
    let more = more || extra_more || page.len() > n;
    page.truncate(n);
    (page, more)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn pages_merge_entries_with_the_index() {
        let index_page = (names(&["b", "d", "f"]), true);
        let (page, more) = merge_page(&names(&["a", "c", "d", "z"]), index_page, None, 3);
        assert_eq!(page, names(&["a", "b", "c"]));
        assert!(more);
        let (page, more) = merge_page(&names(&["c", "z"]), (names(&["d"]), false), Some("b"), 5);
        assert_eq!(page, names(&["c", "d", "z"]));
        assert!(!more);
        let (page, more) = merge_page(&names(&["a"]), (names(&[]), false), Some("a"), 5);
        assert!(page.is_empty() && !more);
        let (page, more) = merge_page(&names(&["b"]), (names(&["a"]), false), None, 1);
        assert_eq!(page, names(&["a"]));
        assert!(more);
    }
}
