//! Repository metadata for the store interface: tags, the catalog and
//! referrers, over `skiff-layout`'s compare-and-swap updates.

use crate::bindings::exports::skiff::registry::store::Descriptor as WitDescriptor;
use crate::{keys, Error};
use skiff_core::layout::ImageIndex;
use skiff_core::Tag;
pub use skiff_layout::meta::{ensure_layout, record_referrer, remove_referrer, Record};

/// The repository's index, or `None` if there is no such repository.
pub fn index(repo: &str) -> Result<Option<ImageIndex>, Error> {
    Ok(skiff_layout::meta::index(repo)?.map(|(idx, _)| idx))
}

/// Change the repository's index (creating the layout first).
pub fn update_index(
    repo: &str,
    change: impl FnMut(&mut ImageIndex) -> Result<bool, Error>,
) -> Result<ImageIndex, Error> {
    skiff_layout::meta::update_index(repo, change)
}

pub fn tags(repo: &str) -> Result<Vec<String>, Error> {
    let idx = index(repo)?.ok_or(Error::NameUnknown)?;
    // Layouts made elsewhere may carry ref.names that are not tags (full
    // references, say); those are not listed.
    let mut tags: Vec<String> = idx
        .tags()
        .filter(|t| t.parse::<Tag>().is_ok())
        .map(str::to_string)
        .collect();
    tags.sort();
    tags.dedup();
    Ok(tags)
}

pub fn repositories() -> Result<Vec<String>, Error> {
    Ok(skiff_layout::meta::repositories()?)
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
