//! Repository metadata: the layout's `index.json`, the per-subject referrer
//! lists, and the catalog. Every change is a compare-and-swap on the object's
//! version, retried on conflict, so no lock is ever held.

use crate::indexes::{self, Indexed};
use crate::journal;
use crate::objects::{self, Condition, ObjectError};
use crate::{keys, LayoutError};
use serde::de::DeserializeOwned;
use serde::Serialize;
use skiff_core::layout::{Descriptor, ImageIndex, OCI_LAYOUT_FILE};
use skiff_core::{Digest, RepoName};
use std::cell::RefCell;
use std::rc::Rc;
use wasip2::clocks::monotonic_clock;

/// How long a compare-and-swap keeps trying before the caller gets an error
/// (a 503 the client may retry) rather than a hang. Each lost round costs
/// one read and one write, and the backoff between rounds spreads writers
/// out, so even hundreds of writers on one object land well within this.
const CAS_DEADLINE_NS: u64 = 30_000_000_000;
/// Backoff between rounds: a random wait of up to 1 ms, doubling per lost
/// round up to this.
const CAS_MAX_BACKOFF_NS: u64 = 50_000_000;

/// The largest `index.json` read: about 200k tags.
pub const MAX_INDEX_BYTES: u64 = 64 << 20;
/// A referrer entry: a descriptor whose annotations are capped at
/// `MAX_REFERRER_ANNOTATION_BYTES`.
const MAX_REFERRER_ENTRY_BYTES: u64 = 64 << 10;
/// What a referrer entry keeps of its manifest's annotations. A referrer's
/// own manifest may carry up to 4 MiB of them; the referrers API lists
/// every referrer of a subject in one response, so each entry stays small.
pub const MAX_REFERRER_ANNOTATION_BYTES: usize = 16 << 10;

/// Read a JSON object of at most `max` bytes, with the version to swap
/// against (`None`: absent).
pub fn load<T: DeserializeOwned + Default>(
    key: &str,
    max: u64,
) -> Result<(T, Option<String>), LayoutError> {
    match objects::get(key, max) {
        Ok((bytes, meta)) => {
            let value = serde_json::from_slice(&bytes)
                .map_err(|e| LayoutError::Corrupt(format!("{key} is not valid: {e}")))?;
            Ok((value, Some(meta.version)))
        }
        Err(ObjectError::NotFound) => Ok((T::default(), None)),
        Err(e) => Err(e.into()),
    }
}

/// Apply `change` to the JSON object at `key` until the write lands on the
/// version it read. `change` returns whether it changed anything.
pub fn update<T, E, F>(key: &str, max: u64, change: F) -> Result<T, E>
where
    T: DeserializeOwned + Serialize + Default,
    E: From<LayoutError>,
    F: FnMut(&mut T) -> Result<bool, E>,
{
    update_with(
        key,
        || load::<T>(key, max),
        |_: &mut T, _: &str, _| {},
        change,
    )
}

/// `update`, reading the current value with `read` and handing `stored`
/// what was written (its value, which it may take, new version and size),
/// for a cache.
fn update_with<T, E, F>(
    key: &str,
    mut read: impl FnMut() -> Result<(T, Option<String>), LayoutError>,
    mut stored: impl FnMut(&mut T, &str, usize),
    mut change: F,
) -> Result<T, E>
where
    T: Serialize,
    E: From<LayoutError>,
    F: FnMut(&mut T) -> Result<bool, E>,
{
    let started = monotonic_clock::now();
    let mut backoff: u64 = 1_000_000;
    loop {
        let (mut value, version) = read()?;
        if !change(&mut value)? {
            return Ok(value);
        }
        let bytes =
            serde_json::to_vec(&value).map_err(|e| LayoutError::Corrupt(format!("{key}: {e}")))?;
        let when = match version {
            Some(v) => Condition::IfVersion(v),
            None => Condition::IfAbsent,
        };
        match objects::put(key, &bytes, &when) {
            Ok(meta) => {
                stored(&mut value, &meta.version, bytes.len());
                return Ok(value);
            }
            Err(ObjectError::PreconditionFailed) => {}
            Err(e) => return Err(LayoutError::from(e).into()),
        }
        if monotonic_clock::now().saturating_sub(started) > CAS_DEADLINE_NS {
            return Err(
                LayoutError::Contended(format!("{key}: too many concurrent updates")).into(),
            );
        }
        // Random, growing waits: writers that collided come back at
        // different times instead of colliding again.
        monotonic_clock::subscribe_duration(jitter(backoff)).block();
        backoff = (backoff * 2).min(CAS_MAX_BACKOFF_NS);
    }
}

/// A uniformly random duration in `0..=max_ns`.
fn jitter(max_ns: u64) -> u64 {
    wasip2::random::random::get_random_u64() % max_ns.saturating_add(1)
}

/// Make `repo` a valid (possibly empty) OCI layout, listed in the catalog.
pub fn ensure_layout(repo: &str) -> Result<(), LayoutError> {
    // `index.json` is written last, so once it is there the layout is whole.
    if crate::stat(&keys::index(repo))?.is_some() {
        return Ok(());
    }
    // Listed before index.json makes it a repository, so a crash in between
    // leaves a name the catalog lists without a layout, never a repository
    // the catalog misses; and after `oci-layout`, so a reconcile running
    // meanwhile sees something stored under the name and keeps it.
    let empty_index = serde_json::to_vec(&ImageIndex::default())
        .map_err(|e| LayoutError::Corrupt(e.to_string()))?;
    let put_if_absent =
        |key: String, bytes: &[u8]| match objects::put(&key, bytes, &Condition::IfAbsent) {
            Ok(_) | Err(ObjectError::PreconditionFailed) => Ok(()),
            Err(e) => Err(LayoutError::from(e)),
        };
    put_if_absent(keys::oci_layout(repo), OCI_LAYOUT_FILE)?;
    crate::catalog::add(repo)?;
    put_if_absent(keys::index(repo), &empty_index)?;
    Ok(())
}

/// The repository's index as the registry serves it (with the tag entries
/// not yet folded: `journal`) and the version of its `index.json`, or
/// `None` if there is no such repository.
pub fn index(repo: &str) -> Result<Option<(ImageIndex, String)>, LayoutError> {
    // Entries first: one folded in between is in the index read after.
    let entries = journal::entries(repo)?;
    let (mut idx, version) = load::<ImageIndex>(&keys::index(repo), MAX_INDEX_BYTES)?;
    journal::overlay(&mut idx, &entries);
    Ok(version.map(|v| (idx, v)))
}

/// The repository's index, parsed, through the instance's cache
/// (`indexes`); `None` if there is no such repository.
pub fn indexed(repo: &str) -> Result<Option<Rc<Indexed>>, LayoutError> {
    Ok(indexes::load(&keys::index(repo), MAX_INDEX_BYTES)?.map(|(x, _)| x))
}

/// The repository's index to look tags and digests up in (parsed here or
/// remembered by the host: `indexes`); `None` if there is no such repository.
pub fn lookup(repo: &str) -> Result<Option<indexes::Lookup>, LayoutError> {
    indexes::lookup(&keys::index(repo), MAX_INDEX_BYTES)
}

/// Change the repository's index (creating the layout first), folding in
/// the tag entries waiting (`journal`) in the same write, so `change` sees
/// the index as it is served. It is read through the cache (and taken out
/// of it, so it is not copied), and what is written is kept in it.
pub fn update_index<E, F>(repo: &str, mut change: F) -> Result<(), E>
where
    E: From<LayoutError>,
    F: FnMut(&mut ImageIndex) -> Result<bool, E>,
{
    ensure_layout(repo)?;
    let key = keys::index(repo);
    let folding = RefCell::new(Vec::new());
    // The index first, then the entries (`journal::apply` says why).
    let read = || {
        let read = match indexes::take(&key, MAX_INDEX_BYTES)? {
            Some((index, version)) => (index, Some(version)),
            None => (ImageIndex::default(), None),
        };
        *folding.borrow_mut() = journal::entries(repo)?;
        Ok(read)
    };
    let stored = |idx: &mut ImageIndex, version: &str, cost: usize| {
        indexes::remember(&key, version, Indexed::new(std::mem::take(idx)), cost)
    };
    let fold_then_change = |idx: &mut ImageIndex| {
        let folded = journal::apply(idx, &folding.borrow());
        Ok::<bool, E>(change(idx)? | folded)
    };
    update_with(&key, read, stored, fold_then_change)?;
    // Only once the index holding them is stored. One left by a failure
    // here names what the index does and is folded again by the next change.
    let _ = journal::clear(repo, &folding.borrow());
    Ok(())
}

/// Fold the repository's tag entries, if it has any, into its `index.json`.
pub fn fold(repo: &str) -> Result<(), LayoutError> {
    if journal::tags(repo)?.is_empty() {
        return Ok(());
    }
    update_index(repo, |_| Ok::<bool, LayoutError>(false))
}

/// Point each of `tags` at `desc`: in `index.json`, or, when that is large,
/// with an entry each (`journal`), folded once enough wait.
pub fn set_tags(repo: &str, tags: &[&str], desc: &Descriptor) -> Result<(), LayoutError> {
    let large =
        crate::stat(&keys::index(repo))?.is_some_and(|m| m.size > journal::JOURNAL_ABOVE_BYTES);
    if !large {
        return update_index(repo, |idx| {
            for t in tags {
                idx.set_tag(t, desc);
            }
            Ok::<bool, LayoutError>(!tags.is_empty())
        });
    }
    for t in tags {
        journal::write(repo, t, desc)?;
    }
    if journal::tags(repo)?.len() >= journal::FOLD_AT {
        // The tags are stored already; a fold that loses to another can
        // be left to the next one.
        match update_index(repo, |_| Ok::<bool, LayoutError>(false)) {
            Ok(()) | Err(LayoutError::Contended(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Every directory that holds an `index.json` and whose path is a valid
/// repository name. The walk does not enter `blobs/` or hidden directories,
/// so its cost follows the number of repositories, not of blobs.
pub fn repositories() -> Result<Vec<String>, LayoutError> {
    Ok(walk_repositories()?
        .into_iter()
        .filter(|r| r.has_index)
        .map(|r| r.name)
        .collect())
}

/// A repository a walk found.
pub struct Found {
    pub name: String,
    /// It has an `index.json`; otherwise it holds only upload sessions (a
    /// first push into a new repository that never finished), which gc
    /// visits to collect though the catalog does not list it.
    pub has_index: bool,
}

/// Every directory holding an `index.json` or upload sessions, sorted by name.
pub fn walk_repositories() -> Result<Vec<Found>, LayoutError> {
    let mut found = Vec::new();
    let mut pending = vec![String::new()];
    while let Some(prefix) = pending.pop() {
        let children = crate::children(&prefix)?;
        let repo = prefix.trim_end_matches('/');
        let has = |name: &str, is_prefix: bool| {
            children
                .iter()
                .any(|c| c.name == name && c.is_prefix == is_prefix)
        };
        if !repo.is_empty() && repo.parse::<RepoName>().is_ok() {
            let has_index = has("index.json", false);
            if has_index || has(".uploads", true) {
                found.push(Found {
                    name: repo.to_string(),
                    has_index,
                });
            }
        }
        for c in children {
            if c.is_prefix && !c.name.starts_with('.') && c.name != "blobs" {
                pending.push(format!("{prefix}{}/", c.name));
            }
        }
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}

/// Manifests recorded as referring to `subject`, in the order of their digests.
pub fn referrers(repo: &str, subject: &Digest) -> Result<Vec<Descriptor>, LayoutError> {
    migrate_legacy_list(repo, subject)?;
    let mut out = Vec::new();
    for (_, key) in referrer_entries(repo, subject)? {
        match objects::get(&key, MAX_REFERRER_ENTRY_BYTES) {
            Ok((bytes, _)) => match serde_json::from_slice::<Descriptor>(&bytes) {
                Ok(d) => out.push(d),
                Err(e) => return Err(LayoutError::Corrupt(format!("{key} is not valid: {e}"))),
            },
            // Removed since the listing.
            Err(ObjectError::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

/// The referrers recorded under `subject`, each with its entry's key.
pub fn referrer_entries(
    repo: &str,
    subject: &Digest,
) -> Result<Vec<(Digest, String)>, LayoutError> {
    let prefix = keys::referrers(repo, subject);
    Ok(crate::children(&prefix)?
        .into_iter()
        .filter(|c| !c.is_prefix)
        .filter_map(|c| {
            let d = keys::parse_referrer_entry(&c.name)?;
            Some((d, format!("{prefix}{}", c.name)))
        })
        .collect())
}

/// Every subject in the repository that has referrer entries.
pub fn subjects(repo: &str) -> Result<Vec<Digest>, LayoutError> {
    let mut out = Vec::new();
    for alg in [skiff_core::Algorithm::Sha256, skiff_core::Algorithm::Sha512] {
        for c in crate::children(&keys::referrers_prefix(repo, alg.as_str()))? {
            let Ok(subject) = format!("{}:{}", alg.as_str(), c.name).parse::<Digest>() else {
                continue;
            };
            if !c.is_prefix {
                migrate_legacy_list(repo, &subject)?;
            }
            out.push(subject);
        }
    }
    Ok(out)
}

/// Before entries, skiff kept a subject's referrers as one JSON list at the
/// key the entries now live under. Turn such a list into entries: read it,
/// remove it (the entries' prefix cannot exist beside it), write its
/// entries. A crash in between loses only derived data: gc records every
/// referrer that `index.json` lists again on its next pass.
fn migrate_legacy_list(repo: &str, subject: &Digest) -> Result<(), LayoutError> {
    let prefix = keys::referrers(repo, subject);
    let legacy = prefix.trim_end_matches('/');
    let (list, version) = match load::<Vec<Descriptor>>(legacy, MAX_INDEX_BYTES) {
        Ok((_, None)) => return Ok(()),
        Ok((list, Some(v))) => (list, v),
        // Unreadable: drop it, gc rebuilds from index.json.
        Err(LayoutError::Corrupt(_)) => (Vec::new(), String::new()),
        Err(e) => return Err(e),
    };
    let when = if version.is_empty() {
        Condition::Always
    } else {
        Condition::IfVersion(version)
    };
    match objects::delete(legacy, &when) {
        // Another request migrated it first; its entries are being written.
        Ok(()) | Err(ObjectError::NotFound) | Err(ObjectError::PreconditionFailed) => {}
        Err(e) => return Err(e.into()),
    }
    for mut desc in list {
        let Ok(referrer) = desc.digest.parse::<Digest>() else {
            continue;
        };
        desc.annotations = capped_annotations(&desc.annotations);
        let bytes = serde_json::to_vec(&desc).map_err(|e| LayoutError::Corrupt(e.to_string()))?;
        let key = keys::referrer_entry(repo, subject, &referrer);
        match objects::put(&key, &bytes, &Condition::IfAbsent) {
            Ok(_) | Err(ObjectError::PreconditionFailed) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// How a referrer entry is written.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Record {
    /// Rewrite it (a push): its new version tells a gc pass that saw the
    /// referrer's manifest missing that it is back.
    Refresh,
    /// Only if absent (gc recording what a foreign layout lists).
    IfMissing,
}

/// List manifest `digest` (of `size` bytes) under its subject, if it has one,
/// as the referrers API reports it: with its artifact type and (capped)
/// annotations. The version written, when something was.
pub fn record_referrer(
    repo: &str,
    digest: &Digest,
    size: u64,
    m: &skiff_core::manifest::Manifest,
    how: Record,
) -> Result<Option<String>, LayoutError> {
    let Some(subject) = &m.subject else {
        return Ok(None);
    };
    migrate_legacy_list(repo, subject)?;
    let mut desc = Descriptor::new(&m.media_type, &digest.to_string(), size);
    desc.artifact_type = m.artifact_type.clone();
    desc.annotations = capped_annotations(&m.annotations);
    let bytes = serde_json::to_vec(&desc).map_err(|e| LayoutError::Corrupt(e.to_string()))?;
    let when = match how {
        Record::Refresh => Condition::Always,
        Record::IfMissing => Condition::IfAbsent,
    };
    match objects::put(&keys::referrer_entry(repo, subject, digest), &bytes, &when) {
        Ok(meta) => Ok(Some(meta.version)),
        Err(ObjectError::PreconditionFailed) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The annotations that fit in `MAX_REFERRER_ANNOTATION_BYTES`, taken in key
/// order; the rest are left out of the entry (the manifest keeps them all).
fn capped_annotations(
    all: &std::collections::BTreeMap<String, String>,
) -> std::collections::BTreeMap<String, String> {
    let mut budget = MAX_REFERRER_ANNOTATION_BYTES;
    let mut kept = std::collections::BTreeMap::new();
    for (k, v) in all {
        let cost = k.len().saturating_add(v.len());
        if cost <= budget {
            budget -= cost;
            kept.insert(k.clone(), v.clone());
        }
    }
    kept
}

/// Remove `referrer` from `subject`'s referrers; with `version`, only if the
/// entry is still the one that was seen.
pub fn remove_referrer(
    repo: &str,
    subject: &Digest,
    referrer: &Digest,
    version: Option<String>,
) -> Result<(), LayoutError> {
    let when = match version {
        Some(v) => Condition::IfVersion(v),
        None => Condition::Always,
    };
    match objects::delete(&keys::referrer_entry(repo, subject, referrer), &when) {
        Ok(()) | Err(ObjectError::NotFound) | Err(ObjectError::PreconditionFailed) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
