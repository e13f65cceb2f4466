//! `list-children`: a filter over the store's keys.
//!
//! Records are the keys under `o/`, so the children of a prefix are read
//! off the key list alone; only tombstones need a look at the records
//! themselves: a leaf is listed if its record is not one, a prefix if some
//! key below it is not one (usually the first looked at).

use crate::bindings::exports::skiff::registry::objects::{Child, ObjectError};
use crate::keys::{self, RECORD_PREFIX};
use crate::record;
use crate::store;
use std::collections::BTreeMap;

/// Records read per request when checking leaves: bounded, as inline
/// records carry their bytes.
const LEAF_BATCH: usize = 32;
const BELOW_BATCH: usize = 4;

pub fn list_children(prefix: &str) -> Result<Vec<Child>, ObjectError> {
    if !keys::valid_prefix(prefix) {
        return Err(ObjectError::InvalidKey(prefix.to_string()));
    }
    let want = format!("{RECORD_PREFIX}{prefix}");
    let mut leaves: Vec<(String, String)> = Vec::new();
    let mut below: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for k in store::all_keys()? {
        let Some(rest) = k.strip_prefix(&want) else {
            continue;
        };
        match rest.split_once('/') {
            Some((name, _)) if !name.is_empty() => {
                below.entry(name.to_string()).or_default().push(k.clone())
            }
            None if !rest.is_empty() => leaves.push((rest.to_string(), k.clone())),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for batch in leaves.chunks(LEAF_BATCH) {
        let keys: Vec<String> = batch.iter().map(|(_, k)| k.clone()).collect();
        let values = store::get_many(&keys)?;
        for (name, k) in batch {
            if values.get(k).is_some_and(|v| record::stands_for_object(v)) {
                out.push(Child {
                    name: name.clone(),
                    is_prefix: false,
                });
            }
        }
    }
    for (name, mut keys) in below {
        keys.sort();
        if any_object(&keys)? {
            out.push(Child {
                name,
                is_prefix: true,
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name).then(a.is_prefix.cmp(&b.is_prefix)));
    Ok(out)
}

/// Whether any of the record keys `keys` stands for an object.
fn any_object(keys: &[String]) -> Result<bool, ObjectError> {
    for batch in keys.chunks(BELOW_BATCH) {
        let values = store::get_many(batch)?;
        if batch
            .iter()
            .any(|k| values.get(k).is_some_and(|v| record::stands_for_object(v)))
        {
            return Ok(true);
        }
    }
    Ok(false)
}
