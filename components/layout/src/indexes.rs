//! Each repository's `index.json`, parsed once per version, with lookup
//! tables by tag and by digest and the sorted tag list, so a lookup or a
//! page of tags on an unchanged index costs one `stat`.
//!
//! A small index is kept parsed in the instance (`cache`). A large one
//! (past `REMEMBERED_ABOVE_BYTES`: thousands of tags) would not fit there
//! and would cost every instance a copy, so its lookup tables go to the
//! host (`objects.remember`), which keeps one copy for all instances and
//! answers for exactly the version the request just `stat`ed. A host that
//! keeps nothing (an instance per request) gets the index parsed per
//! request, as small ones are there.

use crate::cache::{self, Cache};
use crate::objects::{self, ObjectError};
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

/// An index larger than this is looked up through the host's tables. Below
/// it, a lookup in the instance's own cache is a little cheaper than a call
/// to the host.
pub const REMEMBERED_ABOVE_BYTES: u64 = 1 << 20;

/// The host's table of an index's tags (valid tags only: what the API can
/// ask for), each with what `Listed` holds.
const TAGS: &str = "tags";
/// The host's table of an index's digests, each with its media type.
const DIGESTS: &str = "digests";
/// The host's table of the tag entries an index has absorbed, each with
/// the entry's version (`journal`).
const FOLDED: &str = "folded";

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

/// What an index says of a manifest: what a pull needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub digest: String,
    pub media_type: String,
}

impl Listed {
    pub fn of(d: &Descriptor) -> Listed {
        Listed {
            digest: d.digest.clone(),
            media_type: d.media_type.clone(),
        }
    }

    /// As the host's tag table holds it: a digest has no spaces.
    fn encode(&self) -> String {
        format!("{} {}", self.digest, self.media_type)
    }

    fn decode(s: &str) -> Option<Listed> {
        let (digest, media_type) = s.split_once(' ')?;
        Some(Listed {
            digest: digest.to_string(),
            media_type: media_type.to_string(),
        })
    }
}

/// An index to look things up in: parsed here, or remembered by the host.
pub enum Lookup {
    Parsed(Rc<Indexed>),
    Remembered {
        key: String,
        version: String,
        /// The largest index to read when the host has forgotten it.
        max: u64,
    },
}

impl Lookup {
    pub fn by_tag(&self, tag: &str) -> Result<Option<Listed>, LayoutError> {
        match self {
            Lookup::Parsed(x) => Ok(x.by_tag(tag).map(Listed::of)),
            Lookup::Remembered { key, version, max } => {
                match objects::recall(key, version, TAGS, tag) {
                    Some(found) => Ok(found.as_deref().and_then(Listed::decode)),
                    None => Ok(derive(key, *max)?.and_then(|x| x.by_tag(tag).map(Listed::of))),
                }
            }
        }
    }

    /// The media type the index lists `digest` with, if it lists it.
    pub fn media_type_of(&self, digest: &str) -> Result<Option<String>, LayoutError> {
        let of = |x: &Indexed| x.by_digest(digest).map(|d| d.media_type.clone());
        match self {
            Lookup::Parsed(x) => Ok(of(x)),
            Lookup::Remembered { key, version, max } => {
                match objects::recall(key, version, DIGESTS, digest) {
                    Some(found) => Ok(found),
                    None => Ok(derive(key, *max)?.and_then(|x| of(&x))),
                }
            }
        }
    }

    /// Whether the index has absorbed `tag`'s entry at `version`
    /// (`journal`): its own value for the tag is then the newer one.
    pub fn absorbed(&self, tag: &str, version: &str) -> Result<bool, LayoutError> {
        let of = |x: &Indexed| x.index.folded(tag) == Some(version);
        match self {
            Lookup::Parsed(x) => Ok(of(x)),
            Lookup::Remembered {
                key,
                version: at,
                max,
            } => match objects::recall(key, at, FOLDED, tag) {
                Some(found) => Ok(found.as_deref() == Some(version)),
                None => Ok(derive(key, *max)?.is_some_and(|x| of(&x))),
            },
        }
    }

    /// Up to `n` tags after `last` in order, and whether more follow.
    pub fn tags_page(
        &self,
        last: Option<&str>,
        n: u32,
    ) -> Result<(Vec<String>, bool), LayoutError> {
        match self {
            Lookup::Parsed(x) => Ok(x.tags_page(last, n as usize)),
            Lookup::Remembered { key, version, max } => {
                match objects::recall_names(key, version, TAGS, last, n) {
                    Some(page) => Ok(page),
                    None => Ok(derive(key, *max)?
                        .map(|x| x.tags_page(last, n as usize))
                        .unwrap_or_default()),
                }
            }
        }
    }
}

/// The index at `key` to look things up in, or `None` if there is none.
pub fn lookup(key: &str, max: u64) -> Result<Option<Lookup>, LayoutError> {
    let meta = match objects::stat(key) {
        Ok(m) => m,
        Err(ObjectError::NotFound) => {
            CACHE.with(|c| c.borrow_mut().forget(key));
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    };
    if meta.size > REMEMBERED_ABOVE_BYTES {
        return Ok(Some(Lookup::Remembered {
            key: key.to_string(),
            version: meta.version,
            max,
        }));
    }
    let loaded = CACHE.with(|c| cache::load_at(c, key, &meta.version, max, |b| parse(key, b)))?;
    Ok(loaded.map(|(x, _)| Lookup::Parsed(x)))
}

/// Parse the (large) index at `key`, of at most `max` bytes, and hand the
/// host its tables; `None` if it is gone. What the host does not keep costs
/// only this request.
fn derive(key: &str, max: u64) -> Result<Option<Rc<Indexed>>, LayoutError> {
    let (bytes, meta) = match objects::get(key, max) {
        Ok(got) => got,
        Err(ObjectError::NotFound) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let x = parse(key, &bytes)?;
    hand_to_host(key, &meta.version, &x);
    Ok(Some(Rc::new(x)))
}

/// Give the host the lookup tables of `x`, the index at `key` in `version`.
fn hand_to_host(key: &str, version: &str, x: &Indexed) {
    let t = x.tables();
    let tags: Vec<(String, String)> = x
        .sorted_tags()
        .iter()
        .filter_map(|tag| Some((tag.clone(), Listed::of(x.by_tag(tag)?).encode())))
        .collect();
    let digests: Vec<(String, String)> = t
        .digests
        .iter()
        .map(|(d, &i)| (d.clone(), x.index.manifests[i].media_type.clone()))
        .collect();
    // The tag table is the one requests most need; if the host declines
    // it, it keeps nothing and the digests need not be sent.
    if objects::remember(key, version, TAGS, &tags) {
        objects::remember(key, version, DIGESTS, &digests);
        objects::remember(key, version, FOLDED, &x.index.folded_entries());
    }
}

fn parse(key: &str, bytes: &[u8]) -> Result<Indexed, LayoutError> {
    let index: ImageIndex = serde_json::from_slice(bytes)
        .map_err(|e| LayoutError::Corrupt(format!("{key} is not valid: {e}")))?;
    Ok(Indexed::new(index))
}

thread_local! {
    static CACHE: RefCell<Cache<Indexed>> = RefCell::new(Cache::new(BUDGET_BYTES));
}

/// The index at `key` (at most `max` bytes) with its version, or `None` if
/// there is none.
pub fn load(key: &str, max: u64) -> Result<Option<(Rc<Indexed>, String)>, LayoutError> {
    CACHE.with(|c| cache::load(c, key, max, |bytes| parse(key, bytes)))
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
/// (what a write just stored): a large one's tables go to the host, so the
/// pull that often follows a push finds them there.
pub fn remember(key: &str, version: &str, indexed: Indexed, cost: usize) {
    if cost as u64 > REMEMBERED_ABOVE_BYTES {
        hand_to_host(key, version, &indexed);
        return;
    }
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
