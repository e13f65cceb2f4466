//! Repository metadata for the store interface: tags, the catalog and
//! referrers, over `skiff-layout`'s compare-and-swap updates.

use crate::bindings::exports::skiff::registry::store::Descriptor as WitDescriptor;
use crate::{keys, Error};
use skiff_core::layout::{Descriptor, ImageIndex};
use skiff_layout::indexes::{Indexed, Listed, Lookup};
use skiff_layout::journal;
pub use skiff_layout::meta::{ensure_layout, record_referrer, remove_referrer, Record};
use std::rc::Rc;

/// The repository's index as it is served: `index.json` (parsed once per
/// version: `skiff_layout::indexes`) with the tag entries not yet folded
/// (`skiff_layout::journal`), or `None` if there is no such repository.
pub fn index(repo: &str) -> Result<Option<Rc<Indexed>>, Error> {
    // Entries first: one folded in between is in the index read after.
    let entries = journal::entries(repo)?;
    let Some(x) = skiff_layout::meta::indexed(repo)? else {
        return Ok(None);
    };
    if entries.is_empty() {
        return Ok(Some(x));
    }
    let mut idx = x.index.clone();
    journal::overlay(&mut idx, &entries);
    Ok(Some(Rc::new(Indexed::new(idx))))
}

/// What `tag` names, if anything: its entry waiting to be folded, unless
/// the index has absorbed it, or else the index's (read in that order, so
/// a fold in between is seen).
pub fn tagged(repo: &str, tag: &str) -> Result<Option<Listed>, Error> {
    let entry = journal::get(repo, tag)?;
    let Some(idx) = lookup(repo)? else {
        return Ok(entry.map(|e| Listed::of(&e.desc)));
    };
    match entry {
        Some(e) if !idx.absorbed(tag, e.version())? => Ok(Some(Listed::of(&e.desc))),
        _ => Ok(idx.by_tag(tag)?),
    }
}

/// Point each of `tags` at `desc`.
pub fn set_tags(repo: &str, tags: &[&str], desc: &Descriptor) -> Result<(), Error> {
    Ok(skiff_layout::meta::set_tags(repo, tags, desc)?)
}

/// The repository's index for lookups by tag or digest and pages of tags,
/// or `None` if there is no such repository.
pub fn lookup(repo: &str) -> Result<Option<Lookup>, Error> {
    Ok(skiff_layout::meta::lookup(repo)?)
}

/// Change the repository's index (creating the layout first).
pub fn update_index(
    repo: &str,
    change: impl FnMut(&mut ImageIndex) -> Result<bool, Error>,
) -> Result<(), Error> {
    skiff_layout::meta::update_index(repo, change)
}

pub fn tags_page(repo: &str, last: Option<&str>, n: u32) -> Result<(Vec<String>, bool), Error> {
    let journaled = journal::tags(repo)?;
    let idx = lookup(repo)?.ok_or(Error::NameUnknown)?;
    let page = idx.tags_page(last, n)?;
    Ok(journal::merge_page(&journaled, page, last, n as usize))
}

/// From the catalog's index (`skiff_layout::catalog`), not a walk.
pub fn repositories_page(last: Option<&str>, n: u32) -> Result<(Vec<String>, bool), Error> {
    Ok(skiff_layout::catalog::page(last, n as usize)?)
}

pub fn referrers(repo: &str, subject: &str) -> Result<Vec<WitDescriptor>, Error> {
    let subject = keys::digest(subject)?;
    Ok(skiff_layout::meta::referrers(repo, &subject)?
        .into_iter()
        .map(|d| WitDescriptor {
            media_type: d.media_type,
            digest: d.digest,
            size: d.size,
            artifact_type: d.artifact_type,
            annotations: d.annotations.into_iter().collect(),
        })
        .collect())
}
