//! Scrub: every blob stored in a repository is hashed again and compared
//! with the digest it is stored under, and every blob its manifests reach
//! must be there. The hashing is the
//! `objects` implementation's (natively on the host), so the bytes never
//! enter this component.

mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "scrub-job",
        with: {
            "wasi:io/streams@0.2.12": wasip2::io::streams,
            "wasi:io/error@0.2.12": wasip2::io::error,
            "wasi:io/poll@0.2.12": wasip2::io::poll,
            "skiff:registry/objects@0.1.0": skiff_layout::objects,
        },
    });
}

use bindings::exports::skiff::registry::scrub::{Damaged, Guest, Report};
use skiff_core::{Algorithm, Digest};
use skiff_layout::{journal, keys, meta, stat, walk, LayoutError, ObjectError};

struct Scrub;

bindings::export!(Scrub with_types_in bindings);

impl Guest for Scrub {
    fn repositories() -> Result<Vec<String>, String> {
        meta::repositories().map_err(|e| e.to_string())
    }

    fn run(repo: String, repair: bool) -> Result<Report, String> {
        check(&repo, repair).map_err(|e| format!("{repo}: {e}"))
    }
}

fn check(repo: &str, repair: bool) -> Result<Report, LayoutError> {
    let mut report = Report {
        blobs_checked: 0,
        bytes_checked: 0,
        damaged: Vec::new(),
    };
    let idx = match meta::index(repo) {
        Ok(Some((idx, _))) => idx,
        Ok(None) => return Ok(report),
        Err(LayoutError::Corrupt(why)) => {
            let rebuilt = if repair { rebuild_index(repo)? } else { None };
            report.damaged.push(Damaged {
                digest: "index.json".into(),
                actual: why,
                images: rebuilt.unwrap_or_default(),
                removed: repair,
            });
            return Ok(report);
        }
        Err(e) => return Err(e),
    };
    // A tag entry waiting to be folded (`journal`) that does not read as a
    // descriptor is passed over, so its tag serves what index.json says.
    for (tag, key, version) in journal::damaged(repo)? {
        let removed = repair && skiff_layout::remove_if(&key, &version)?;
        report.damaged.push(Damaged {
            digest: key,
            actual: "not a tag entry".into(),
            images: vec![tag],
            removed,
        });
    }
    // An entry that names no valid digest leaves its tag unservable.
    for d in &idx.manifests {
        if d.digest.parse::<Digest>().is_err() {
            report.damaged.push(Damaged {
                digest: d.digest.clone(),
                actual: "invalid digest in index.json".into(),
                images: d.tag().map(str::to_string).into_iter().collect(),
                removed: false,
            });
        }
    }
    let reached = walk::reach(repo, walk::roots_of(&idx.manifests), true)?;
    // What the manifests need must be there...
    for d in reached.blobs.difference(&reached.external) {
        if stat(&keys::blob(repo, d))?.is_none() {
            report.damaged.push(Damaged {
                digest: d.to_string(),
                actual: "missing".into(),
                images: Vec::new(),
                removed: false,
            });
        }
    }
    // ...and every stored blob must hold what its name says, reached or
    // not: an unreferenced blob can still be pulled by digest, mounted into
    // another repository, or reused by the next push.
    for alg in [Algorithm::Sha256, Algorithm::Sha512] {
        for d in walk::list_digests(&keys::blobs_prefix(repo, alg.as_str()), alg.as_str())? {
            let key = keys::blob(repo, &d);
            let Some(m) = stat(&key)? else { continue };
            report.blobs_checked += 1;
            report.bytes_checked += m.size;
            match skiff_layout::rehash(&key, &d) {
                Ok(hex) if hex == d.hex() => {}
                Ok(hex) => {
                    // Only the version that was hashed: a push that repaired
                    // it meanwhile wrote a new one.
                    let removed = repair && skiff_layout::remove_if(&key, &m.version)?;
                    report.damaged.push(Damaged {
                        digest: d.to_string(),
                        actual: format!("{}:{hex}", d.algorithm().as_str()),
                        images: Vec::new(),
                        removed,
                    })
                }
                // Deleted since the listing: nothing to check.
                Err(ObjectError::NotFound) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    name_affected_images(repo, &idx, &mut report.damaged)?;
    Ok(report)
}

/// Fill in, for each damaged blob, the images that reach it. Walks each
/// `index.json` entry on its own, so it runs only when something is damaged.
fn name_affected_images(
    repo: &str,
    idx: &skiff_core::layout::ImageIndex,
    damaged: &mut [Damaged],
) -> Result<(), LayoutError> {
    if damaged.iter().all(|d| !d.images.is_empty()) {
        return Ok(());
    }
    for entry in &idx.manifests {
        let roots = walk::roots_of(std::slice::from_ref(entry));
        if roots.is_empty() {
            continue;
        }
        let reached = walk::reach(repo, roots, true)?;
        let name = match entry.tag() {
            Some(t) => t.to_string(),
            None => format!("@{}", entry.digest),
        };
        for d in damaged.iter_mut() {
            let hit = d
                .digest
                .parse::<Digest>()
                .is_ok_and(|dg| reached.blobs.contains(&dg));
            if hit && !d.images.contains(&name) {
                d.images.push(name.clone());
            }
        }
    }
    Ok(())
}

/// A corrupt `index.json` (a disk error, a bad hand edit) leaves every
/// manifest of the repository unreachable and at gc's mercy. Set it aside
/// (as `.index.json.corrupt-<seconds>`), start from the previous version the
/// disk kept (its tags as they were before the last change), and list every
/// stored manifest it lacks: the top ones (no index lists them, no subject)
/// tagged `recovered-<first 12 hex digits>` so gc keeps them and an operator
/// can tag them again; index children and referrers untagged, reached
/// through those. The tags, or `None` if a writer replaced the file meanwhile.
fn rebuild_index(repo: &str) -> Result<Option<Vec<String>>, LayoutError> {
    use skiff_core::layout::{Descriptor, ImageIndex};
    use skiff_layout::objects::{self, Condition};
    let key = keys::index(repo);
    let (bytes, meta) = objects::get(&key, meta::MAX_INDEX_BYTES)?;
    let now = wasip2::clocks::wall_clock::now().seconds;
    let aside = format!("{repo}/.index.json.corrupt-{now}");
    objects::put(&aside, &bytes, &Condition::Always)?;
    // The version before the last change, which the disk keeps, brings back
    // the tags as they were then.
    let previous =
        match meta::load::<ImageIndex>(&keys::index_previous(repo), meta::MAX_INDEX_BYTES) {
            Ok((idx, Some(_))) => idx,
            _ => ImageIndex::default(),
        };
    let mut found = Vec::new();
    for alg in [skiff_core::Algorithm::Sha256, skiff_core::Algorithm::Sha512] {
        for d in walk::list_digests(&keys::blobs_prefix(repo, alg.as_str()), alg.as_str())? {
            if let Some((m, size)) = walk::parse_stored(repo, &d, None)? {
                found.push((d, m, size));
            }
        }
    }
    let listed: std::collections::BTreeSet<Digest> = found
        .iter()
        .flat_map(|(_, m, _)| m.children.iter().map(|c| c.digest.clone()))
        .collect();
    let mut tags: Vec<String> = previous.tags().map(str::to_string).collect();
    let mut idx = previous;
    for (d, m, size) in &found {
        if idx.by_digest(&d.to_string()).is_some() {
            continue;
        }
        let desc = Descriptor::new(&m.media_type, &d.to_string(), *size);
        if listed.contains(d) || m.subject.is_some() {
            idx.add_untagged(&desc);
        } else {
            let tag = format!("recovered-{}", &d.hex()[..12]);
            idx.set_tag(&tag, &desc);
            tags.push(tag);
        }
    }
    let json = serde_json::to_vec(&idx).map_err(|e| LayoutError::Corrupt(e.to_string()))?;
    match objects::put(&key, &json, &Condition::IfVersion(meta.version)) {
        Ok(_) => Ok(Some(tags)),
        Err(skiff_layout::ObjectError::PreconditionFailed) => Ok(None),
        Err(e) => Err(e.into()),
    }
}
