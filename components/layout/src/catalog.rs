//! The catalog's index: every repository's name, sorted, in one object
//! (`.skiff/catalog.json`, outside every repository), so a page of
//! `/v2/_catalog` is a binary search in a list kept parsed between requests
//! (`cache`) rather than a walk of the whole tree.
//!
//! The layouts stay the truth; this is derived from them. A repository is
//! added when its `index.json` is created and removed when gc removes the
//! repository. What a crash between the two steps, or a layout placed by
//! hand, leaves out of step is put right by `reconcile`, which the host
//! runs at start and every gc pass runs with the walk it makes anyway; an
//! index that is missing altogether is built by the first read.

use crate::cache::{self, Cache};
use crate::{keys, meta, LayoutError};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::rc::Rc;

const KEY: &str = ".skiff/catalog.json";
/// About a million names.
const MAX_BYTES: u64 = 64 << 20;
/// The list kept parsed: its text's bytes (100k names take about 3 MB).
const BUDGET_BYTES: usize = 8 << 20;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Catalog {
    /// Sorted, without duplicates.
    repositories: Vec<String>,
}

thread_local! {
    static CACHE: RefCell<Cache<Catalog>> = RefCell::new(Cache::new(BUDGET_BYTES));
}

fn load() -> Result<Option<Rc<Catalog>>, LayoutError> {
    CACHE
        .with(|c| {
            cache::load(c, KEY, MAX_BYTES, |bytes| {
                serde_json::from_slice(bytes)
                    .map_err(|e| LayoutError::Corrupt(format!("{KEY} is not valid: {e}")))
            })
        })
        .map(|found| found.map(|(c, _)| c))
}

/// The index, built from the layouts first if there is none (or it does
/// not parse).
fn current() -> Result<Rc<Catalog>, LayoutError> {
    match load() {
        Ok(Some(c)) => return Ok(c),
        Ok(None) | Err(LayoutError::Corrupt(_)) => {}
        Err(e) => return Err(e),
    }
    let walked = meta::repositories()?;
    reconcile(&walked)?;
    Ok(Rc::new(Catalog {
        repositories: walked,
    }))
}

/// Up to `n` repositories after `last`, in order, and whether more follow.
pub fn page(last: Option<&str>, n: usize) -> Result<(Vec<String>, bool), LayoutError> {
    Ok(crate::indexes::page(&current()?.repositories, last, n))
}

/// Write `change` into the index by compare-and-swap.
fn change(f: impl FnMut(&mut Catalog) -> Result<bool, LayoutError>) -> Result<(), LayoutError> {
    meta::update::<Catalog, LayoutError, _>(KEY, MAX_BYTES, f).map(|_| ())
}

/// Record a repository whose layout was just created.
pub fn add(repo: &str) -> Result<(), LayoutError> {
    change(
        |c| match c.repositories.binary_search_by(|x| x.as_str().cmp(repo)) {
            Ok(_) => Ok(false),
            Err(at) => {
                c.repositories.insert(at, repo.to_string());
                Ok(true)
            }
        },
    )
}

/// Forget a repository whose layout is gone, unless a push has created it
/// again meanwhile.
pub fn remove(repo: &str) -> Result<(), LayoutError> {
    change(
        |c| match c.repositories.binary_search_by(|x| x.as_str().cmp(repo)) {
            Ok(at) if crate::stat(&keys::index(repo))?.is_none() => {
                c.repositories.remove(at);
                Ok(true)
            }
            _ => Ok(false),
        },
    )
}

/// Make the index say what a walk of the layouts found (`walked`, sorted):
/// names it lacks are added, and a name the walk did not see stays if
/// anything is stored under it now: a layout created after the walk passed
/// it, or one being created (`meta::ensure_layout` writes `oci-layout`,
/// lists the name, then writes `index.json`; dropping the name in between
/// would lose a repository from the catalog until the next reconcile).
pub fn reconcile(walked: &[String]) -> Result<(), LayoutError> {
    change(|c| {
        let mut merged: Vec<String> = walked.to_vec();
        for name in &c.repositories {
            if walked.binary_search(name).is_err()
                && !crate::children(&format!("{name}/"))?.is_empty()
            {
                merged.push(name.clone());
            }
        }
        merged.sort();
        merged.dedup();
        if merged == c.repositories {
            return Ok(false);
        }
        c.repositories = merged;
        Ok(true)
    })
}
