//! Repository metadata for the store interface: tags, the catalog and
//! referrers, over `skiff-layout`'s compare-and-swap updates.

use crate::bindings::exports::skiff::registry::store::Descriptor as WitDescriptor;
use crate::{keys, Error};
use skiff_core::layout::ImageIndex;
use skiff_layout::indexes::{Indexed, Lookup};
pub use skiff_layout::meta::{ensure_layout, record_referrer, remove_referrer, Record};
use std::rc::Rc;

/// The repository's index (parsed once per version: `skiff_layout::indexes`),
/// or `None` if there is no such repository.
pub fn index(repo: &str) -> Result<Option<Rc<Indexed>>, Error> {
    Ok(skiff_layout::meta::indexed(repo)?)
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
    let idx = lookup(repo)?.ok_or(Error::NameUnknown)?;
    Ok(idx.tags_page(last, n)?)
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
