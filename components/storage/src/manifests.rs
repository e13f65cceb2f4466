//! Manifests: stored byte-exact as blobs of their repository, listed (with
//! their tags) in the layout's `index.json`.

use crate::bindings::exports::skiff::registry::store::{Manifest, PutManifestResult};
use crate::{blobs, keys, meta, Error};
use skiff_core::layout::{Descriptor, ImageIndex, PUSHED_AT};
use skiff_core::manifest::{self, Kind};
use skiff_core::{Digest, Reference};
use skiff_layout::indexes::Indexed;
use skiff_layout::objects::{self, ObjectError};
use skiff_layout::walk;
use std::rc::Rc;

fn reference(s: &str) -> Result<Reference, Error> {
    s.parse()
        .map_err(|e| Error::ManifestInvalid(format!("{e}")))
}

/// A manifest's bytes; `None` if the repository has no such blob.
fn read_blob(repo: &str, d: &Digest) -> Result<Option<Vec<u8>>, Error> {
    Ok(skiff_layout::walk::read_manifest(repo, d)?)
}

fn now_ms() -> u64 {
    let t = wasip2::clocks::wall_clock::now();
    t.seconds
        .saturating_mul(1000)
        .saturating_add(u64::from(t.nanoseconds) / 1_000_000)
}

/// How long a pull marker's time may lag: pulls within this of the last
/// recorded one write nothing, so a popular image costs a stat per pull.
const PULL_RESOLUTION_MS: u64 = 60_000;

/// Note that `digest` was pulled now (for `keepTags` rules on pulls). Best
/// effort: a pull never fails because its time could not be recorded.
pub fn record_pull(repo: &str, digest: &str) -> Result<(), Error> {
    let d = keys::digest(digest)?;
    let key = keys::pulled(repo, &d);
    let result = match objects::stat(&key) {
        Ok(m) if now_ms().saturating_sub(m.modified_ms) < PULL_RESOLUTION_MS => Ok(()),
        Ok(_) => objects::touch(&key).map(|_| ()),
        Err(ObjectError::NotFound) => {
            match objects::put(&key, &[], &skiff_layout::Condition::IfAbsent) {
                Ok(_) | Err(ObjectError::PreconditionFailed) => Ok(()),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    };
    Ok(result?)
}

pub fn get(repo: &str, reference_str: &str) -> Result<Manifest, Error> {
    let (digest, listed_type) = match reference(reference_str)? {
        Reference::Tag(t) => {
            let listed = meta::tagged(repo, t.as_str())?.ok_or(Error::ManifestUnknown)?;
            (keys::digest(&listed.digest)?, Some(listed.media_type))
        }
        Reference::Digest(d) => {
            let idx = meta::lookup(repo)?.ok_or(Error::ManifestUnknown)?;
            let listed = idx.media_type_of(&d.to_string())?;
            (d, listed)
        }
    };
    let bytes = read_blob(repo, &digest)?.ok_or(Error::ManifestUnknown)?;
    let media_type = match listed_type {
        Some(t) => t,
        // Not in index.json: a manifest an index refers to (layouts written by
        // other tools list only the top one), or not a manifest at all.
        None => {
            manifest::parse(&bytes, None)
                .map_err(|_| Error::ManifestUnknown)?
                .media_type
        }
    };
    Ok(Manifest {
        media_type,
        digest: digest.to_string(),
        bytes,
    })
}

pub fn put(
    repo: &str,
    reference_str: &str,
    media_type: &str,
    bytes: Vec<u8>,
    tags: &[String],
) -> Result<PutManifestResult, Error> {
    let target = reference(reference_str)?;
    let digest = match &target {
        Reference::Digest(d) => {
            let actual = d.recompute(&bytes);
            if &actual != d {
                return Err(Error::DigestInvalid(format!(
                    "manifest has digest {actual}, not {d}"
                )));
            }
            actual
        }
        Reference::Tag(_) => Digest::sha256_of(&bytes),
    };
    let content_type = (!media_type.is_empty()).then_some(media_type);
    let m = manifest::parse(&bytes, content_type).map_err(|e| Error::ManifestInvalid(e.0))?;
    // The blobs must exist, with the sizes the manifest gives them (a client
    // that checks sizes would fail the pull); touching them also tells
    // garbage collection they are in use from now on, even if they were
    // unreferenced until this push. A layer with `urls` lives elsewhere.
    if m.kind == Kind::Image {
        for b in &m.blobs {
            match blobs::touch(repo, &b.digest)? {
                Some(size) if size == b.size => {}
                Some(size) => {
                    return Err(Error::ManifestInvalid(format!(
                        "{} is {size} bytes, but the manifest says {}",
                        b.digest, b.size
                    )))
                }
                None if b.external => {}
                None => return Err(Error::ManifestBlobUnknown(b.digest.to_string())),
            }
        }
    }
    for child in &m.children {
        blobs::touch(repo, &child.digest)?;
    }

    // Order matters for crash safety: the bytes first, then the referrer
    // entry, then the index that makes the manifest reachable by tag.
    meta::ensure_layout(repo)?;
    let size = bytes.len() as u64;
    let blob_version = blobs::put_small(repo, &digest, &bytes)?;
    let entry_version = meta::record_referrer(repo, &digest, size, &m, meta::Record::Refresh)?;
    let mut desc = Descriptor::new(&m.media_type, &digest.to_string(), size);
    desc.annotations
        .insert(PUSHED_AT.to_string(), now_ms().to_string());
    let mut all_tags: Vec<&str> = tags.iter().map(String::as_str).collect();
    if let Reference::Tag(t) = &target {
        all_tags.push(t.as_str());
    }
    // Only a push by digest of a manifest already listed leaves the index
    // as it is.
    let indexed = if all_tags.is_empty() {
        meta::update_index(repo, |idx| Ok(idx.add_untagged(&desc)))
    } else {
        meta::set_tags(repo, &all_tags, &desc)
    };
    if let Err(e) = indexed {
        // A push of several tags into a large repository may have written
        // some of their entries (`journal`) before failing: those name the
        // manifest now, so it stays.
        let named = all_tags.iter().any(|t| {
            skiff_layout::journal::get(repo, t)
                .is_ok_and(|e| e.is_some_and(|e| e.desc.digest == desc.digest))
        });
        if named {
            return Err(e);
        }
        // Take back what this push wrote, and only that: a version that
        // changed means a concurrent push of the same manifest wrote or
        // touched it, and it is theirs now.
        if let (Some(subject), Some(v)) = (&m.subject, entry_version) {
            let _ = meta::remove_referrer(repo, subject, &digest, Some(v));
        }
        if let Some(v) = blob_version {
            let _ = skiff_layout::remove_if(&keys::blob(repo, &digest), &v);
        }
        return Err(e);
    }
    Ok(PutManifestResult {
        digest: digest.to_string(),
        subject: m.subject.map(|s| s.to_string()),
    })
}

/// A manifest that an index of the repository lists cannot be deleted on
/// its own: the index (and every tag on it) would break. The index goes
/// first. (A subject of referrers can be: its referrers are orphaned and
/// gc removes them as `deleteReferrers` says.)
fn refuse_if_a_child(repo: &str, idx: &ImageIndex, d: &Digest) -> Result<(), Error> {
    let others: Vec<walk::Root> = walk::roots_of(&idx.manifests)
        .into_iter()
        .filter(|(r, _)| r != d)
        .collect();
    if !walk::reach(repo, others.iter().cloned(), false)?
        .manifests
        .contains(d)
    {
        return Ok(());
    }
    // Name a top-level index that lists it directly, when one does.
    let parent = others.iter().find_map(|(r, media_type)| {
        let (m, _) = walk::parse_stored(repo, r, media_type.as_deref()).ok()??;
        m.children.iter().any(|c| &c.digest == d).then_some(r)
    });
    let tags: Vec<&str> = parent
        .map(|p| {
            idx.manifests
                .iter()
                .filter(|m| m.digest == p.to_string())
                .filter_map(|m| m.tag())
                .collect()
        })
        .unwrap_or_default();
    Err(Error::InUse(match parent {
        Some(p) => format!(
            "{d} is listed by the index {p} (tags: {}); delete that index first",
            if tags.is_empty() {
                "none".to_string()
            } else {
                tags.join(", ")
            }
        ),
        None => format!("{d} is listed by an index in {repo}; delete that index first"),
    }))
}

pub fn delete(repo: &str, reference_str: &str) -> Result<(), Error> {
    match reference(reference_str)? {
        Reference::Tag(t) => {
            let mut found = false;
            meta::update_index(repo, |idx| {
                found = idx.remove_tag(t.as_str());
                Ok(found)
            })?;
            if found {
                Ok(())
            } else {
                Err(Error::ManifestUnknown)
            }
        }
        Reference::Digest(d) => {
            let bytes = read_blob(repo, &d)?.ok_or(Error::ManifestUnknown)?;
            let idx =
                meta::index(repo)?.unwrap_or_else(|| Rc::new(Indexed::new(ImageIndex::default())));
            let listed = idx.by_digest(&d.to_string()).map(|x| x.media_type.clone());
            let parsed = manifest::parse(&bytes, listed.as_deref());
            // A layer or config is no manifest: it is not deleted from here.
            if listed.is_none() && parsed.is_err() {
                return Err(Error::ManifestUnknown);
            }
            refuse_if_a_child(repo, &idx.index, &d)?;
            // The referrer entry goes first so the referrers API never lists a
            // manifest that is gone.
            if let Ok(m) = parsed {
                if let Some(subject) = &m.subject {
                    meta::remove_referrer(repo, subject, &d, None)?;
                }
            }
            meta::update_index(repo, |idx| Ok(idx.remove_digest(&d.to_string())))?;
            Ok(skiff_layout::remove(&keys::blob(repo, &d))?)
        }
    }
}
