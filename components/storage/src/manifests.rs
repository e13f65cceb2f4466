//! Manifests: stored byte-exact as blobs of their repository, listed (with
//! their tags) in the layout's `index.json`.

use crate::bindings::exports::skiff::registry::store::{Manifest, PutManifestResult};
use crate::{blobs, keys, meta, Error};
use skiff_core::layout::Descriptor;
use skiff_core::manifest::{self, Kind};
use skiff_core::{Digest, Reference};

fn reference(s: &str) -> Result<Reference, Error> {
    s.parse()
        .map_err(|e| Error::ManifestInvalid(format!("{e}")))
}

/// A manifest's bytes; `None` if the repository has no such blob.
fn read_blob(repo: &str, d: &Digest) -> Result<Option<Vec<u8>>, Error> {
    Ok(skiff_layout::walk::read_manifest(repo, d)?)
}

pub fn get(repo: &str, reference_str: &str) -> Result<Manifest, Error> {
    let idx = meta::index(repo)?.ok_or(Error::ManifestUnknown)?;
    let (digest, listed_type) = match reference(reference_str)? {
        Reference::Tag(t) => {
            let desc = idx.by_tag(t.as_str()).ok_or(Error::ManifestUnknown)?;
            (keys::digest(&desc.digest)?, Some(desc.media_type.clone()))
        }
        Reference::Digest(d) => {
            let listed = idx.by_digest(&d.to_string()).map(|x| x.media_type.clone());
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
    // The blobs must exist; touching them also tells garbage collection they
    // are in use from now on, even if they were unreferenced until this push.
    if m.kind == Kind::Image {
        for b in &m.blobs {
            if !blobs::touch(repo, b)? {
                return Err(Error::ManifestBlobUnknown(b.to_string()));
            }
        }
    }
    for child in &m.children {
        blobs::touch(repo, child)?;
    }

    // Order matters for crash safety: the bytes first, then the referrer
    // entry, then the index that makes the manifest reachable by tag.
    meta::ensure_layout(repo)?;
    let size = bytes.len() as u64;
    let blob_version = blobs::put_small(repo, &digest, &bytes)?;
    let entry_version = meta::record_referrer(repo, &digest, size, &m, meta::Record::Refresh)?;
    let desc = Descriptor::new(&m.media_type, &digest.to_string(), size);
    let mut all_tags: Vec<&str> = tags.iter().map(String::as_str).collect();
    if let Reference::Tag(t) = &target {
        all_tags.push(t.as_str());
    }
    let indexed = meta::update_index(repo, |idx| {
        let before = idx.clone();
        if all_tags.is_empty() {
            idx.add_untagged(&desc);
        }
        for t in &all_tags {
            idx.set_tag(t, &desc);
        }
        Ok(*idx != before)
    });
    if let Err(e) = indexed {
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
            let parsed = manifest::parse(&bytes, None);
            // A layer or config is no manifest: it is not deleted from here.
            let listed = meta::index(repo)?.is_some_and(|i| i.by_digest(&d.to_string()).is_some());
            if !listed && parsed.is_err() {
                return Err(Error::ManifestUnknown);
            }
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
