//! Each repository's `index.json`, parsed once per version (`cache`), with
//! lookup tables by tag and by digest and the sorted tag list, so a lookup
//! or a page of tags on an unchanged index costs one `stat`.

use crate::cache::{self, Cache};
use crate::LayoutError;
use skiff_core::layout::{Descriptor, ImageIndex};
use skiff_core::Tag;
use std::cell::{OnceCell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

/// `index.json` bytes kept parsed, over all repositories. The parsed form
/// takes about three times its text, and the host drops an instance whose
/// memory grew past 32 MiB (`warm::KEEP_MEMORY_BYTES`), so this stays well
/// under it. A larger index is parsed per request and not kept.
const BUDGET_BYTES: usize = 6 << 20;

/// A parsed `index.json` with its lookup tables, made on first use: an
/// index a push just wrote is kept without them, and only a lookup pays.
#[derive(Debug)]
pub struct Indexed {
    pub index: ImageIndex,
    tables: OnceCell<Tables>,
    /// The tags the API lists, sorted; made on first use.
    listed: OnceCell<Vec<String>>,
}

#[derive(Debug)]
struct Tables {
    /// Position of the first entry naming each tag (what a scan finds).
    tags: HashMap<String, usize>,
    /// Position of the first entry of each digest.
    digests: HashMap<String, usize>,
}

impl Indexed {
    pub fn new(index: ImageIndex) -> Indexed {
        Indexed {
            index,
            tables: OnceCell::new(),
            listed: OnceCell::new(),
        }
    }

    fn tables(&self) -> &Tables {
        self.tables.get_or_init(|| {
            let mut tags = HashMap::new();
            let mut digests = HashMap::new();
            for (i, d) in self.index.manifests.iter().enumerate() {
                if let Some(t) = d.tag() {
                    tags.entry(t.to_string()).or_insert(i);
                }
                digests.entry(d.digest.clone()).or_insert(i);
            }
            Tables { tags, digests }
        })
    }

    pub fn by_tag(&self, tag: &str) -> Option<&Descriptor> {
        let i = *self.tables().tags.get(tag)?;
        Some(&self.index.manifests[i])
    }

    pub fn by_digest(&self, digest: &str) -> Option<&Descriptor> {
        let i = *self.tables().digests.get(digest)?;
        Some(&self.index.manifests[i])
    }

    /// Up to `n` tags after `last` in order, and whether more follow.
    pub fn tags_page(&self, last: Option<&str>, n: usize) -> (Vec<String>, bool) {
        page(self.sorted_tags(), last, n)
    }

    /// The tags, sorted and without duplicates. Layouts made elsewhere may
    /// carry ref.names that are not tags (full references, say); those are
    /// left out.
    pub fn sorted_tags(&self) -> &[String] {
        self.listed.get_or_init(|| {
            let mut tags: Vec<String> = self
                .tables()
                .tags
                .keys()
                .filter(|t| t.parse::<Tag>().is_ok())
                .cloned()
                .collect();
            tags.sort();
            tags
        })
    }
}

thread_local! {
    static CACHE: RefCell<Cache<Indexed>> = RefCell::new(Cache::new(BUDGET_BYTES));
}

/// The index at `key` (at most `max` bytes) with its version, or `None` if
/// there is none.
pub fn load(key: &str, max: u64) -> Result<Option<(Rc<Indexed>, String)>, LayoutError> {
    CACHE.with(|c| {
        cache::load(c, key, max, |bytes| {
            let index: ImageIndex = serde_json::from_slice(bytes)
                .map_err(|e| LayoutError::Corrupt(format!("{key} is not valid: {e}")))?;
            Ok(Indexed::new(index))
        })
    })
}

/// The index at `key` to be changed, with its version: taken out of the
/// cache (the write stores a new version), and copied only when a reader
/// still holds it.
pub fn take(key: &str, max: u64) -> Result<Option<(ImageIndex, String)>, LayoutError> {
    let Some((x, version)) = load(key, max)? else {
        return Ok(None);
    };
    CACHE.with(|c| c.borrow_mut().forget(key));
    let index = Rc::try_unwrap(x).map_or_else(|x| x.index.clone(), |i| i.index);
    Ok(Some((index, version)))
}

/// Keep `indexed`, `cost` bytes as text, as the index at `key` in `version`
/// (what a write just stored).
pub fn remember(key: &str, version: &str, indexed: Indexed, cost: usize) {
    CACHE.with(|c| c.borrow_mut().insert(key, version, Rc::new(indexed), cost));
}

/// Up to `n` entries of `sorted` after `last`, and whether more follow.
pub fn page(sorted: &[String], last: Option<&str>, n: usize) -> (Vec<String>, bool) {
    let from = last.map_or(0, |l| sorted.partition_point(|x| x.as_str() <= l));
    let rest = &sorted[from..];
    let end = n.min(rest.len());
    (rest[..end].to_vec(), rest.len() > end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_agree_with_scans() {
        let mut idx = ImageIndex::default();
        let a = Descriptor::new("m", "sha256:a", 1);
        let b = Descriptor::new("m", "sha256:b", 1);
        idx.set_tag("v1", &a);
        idx.set_tag("latest", &a);
        idx.add_untagged(&b);
        idx.set_tag("not/a tag", &b);
        let x = Indexed::new(idx.clone());
        for t in ["v1", "latest", "not/a tag", "missing"] {
            assert_eq!(x.by_tag(t), idx.by_tag(t), "{t}");
        }
        for d in ["sha256:a", "sha256:b", "sha256:c"] {
            assert_eq!(x.by_digest(d), idx.by_digest(d), "{d}");
        }
        assert_eq!(x.sorted_tags(), ["latest", "v1"]);
        assert_eq!(x.tags_page(None, 1), (vec!["latest".to_string()], true));
        assert_eq!(
            x.tags_page(Some("latest"), 5),
            (vec!["v1".to_string()], false)
        );
        assert_eq!(x.tags_page(Some("a"), 0), (vec![], true));
        assert_eq!(x.tags_page(Some("v1"), 5), (vec![], false));
    }
}
