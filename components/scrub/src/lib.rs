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
use skiff_layout::{keys, meta, stat, walk, LayoutError, ObjectError};

struct Scrub;

bindings::export!(Scrub with_types_in bindings);

impl Guest for Scrub {
    fn repositories() -> Result<Vec<String>, String> {
        meta::repositories().map_err(|e| e.to_string())
    }

    fn run(repo: String) -> Result<Report, String> {
        check(&repo).map_err(|e| format!("{repo}: {e}"))
    }
}

fn check(repo: &str) -> Result<Report, LayoutError> {
    let mut report = Report {
        blobs_checked: 0,
        bytes_checked: 0,
        damaged: Vec::new(),
    };
    let Some((idx, _)) = meta::index(repo)? else {
        return Ok(report);
    };
    // An entry that names no valid digest leaves its tag unservable.
    for d in &idx.manifests {
        if d.digest.parse::<Digest>().is_err() {
            report.damaged.push(Damaged {
                digest: d.digest.clone(),
                actual: format!(
                    "index.json lists an invalid digest (tag {})",
                    d.tag().unwrap_or("none")
                ),
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
                Ok(hex) => report.damaged.push(Damaged {
                    digest: d.to_string(),
                    actual: format!("{}:{hex}", d.algorithm().as_str()),
                }),
                // Deleted since the listing: nothing to check.
                Err(ObjectError::NotFound) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(report)
}
