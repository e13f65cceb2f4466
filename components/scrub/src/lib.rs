//! Scrub: every blob reachable from a repository's manifests is hashed again
//! and compared with the digest it is stored under. The hashing is the
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
use skiff_core::Digest;
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
    let roots = idx
        .manifests
        .iter()
        .filter_map(|d| d.digest.parse::<Digest>().ok());
    let reached = walk::reach(repo, roots, true)?;
    for d in &reached.blobs {
        let key = keys::blob(repo, d);
        let Some(m) = stat(&key)? else {
            report.damaged.push(Damaged {
                digest: d.to_string(),
                actual: "missing".into(),
            });
            continue;
        };
        report.blobs_checked += 1;
        report.bytes_checked += m.size;
        match skiff_layout::rehash(&key, d) {
            Ok(hex) if hex == d.hex() => {}
            Ok(hex) => report.damaged.push(Damaged {
                digest: d.to_string(),
                actual: format!("{}:{hex}", d.algorithm().as_str()),
            }),
            Err(ObjectError::NotFound) => report.damaged.push(Damaged {
                digest: d.to_string(),
                actual: "missing".into(),
            }),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(report)
}
