//! Documents kept parsed in the instance's memory, each under the version
//! of the object it was parsed from.
//!
//! A host may keep an instance between requests (the native host does:
//! `host/src/warm.rs`). The next request checks the stored version with one
//! `stat` and, when it is unchanged, reads and parses nothing. Nothing is
//! trusted without that check, so a change made by another instance,
//! another host on the same bucket, or a tool writing the layout directly is
//! seen by the next request. Under hosts that build an instance per request
//! (Spin) a cache starts empty every time and costs nothing: with no entry
//! for a key there is no `stat` either.

use crate::objects::{self, ObjectError};
use crate::LayoutError;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

struct Entry<V> {
    version: String,
    value: Rc<V>,
    cost: usize,
    used: u64,
}

/// Parsed documents by key, within a budget of their text's bytes; the
/// least recently used go first.
pub struct Cache<V> {
    entries: HashMap<String, Entry<V>>,
    budget: usize,
    cost: usize,
    clock: u64,
}

impl<V> Cache<V> {
    pub fn new(budget: usize) -> Cache<V> {
        Cache {
            entries: HashMap::new(),
            budget,
            cost: 0,
            clock: 0,
        }
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn get(&mut self, key: &str) -> Option<(String, Rc<V>)> {
        let now = self.tick();
        let e = self.entries.get_mut(key)?;
        e.used = now;
        Some((e.version.clone(), e.value.clone()))
    }

    pub fn forget(&mut self, key: &str) {
        if let Some(e) = self.entries.remove(key) {
            self.cost -= e.cost;
        }
    }

    /// Keep `value`, parsed from `cost` bytes, as `key` at `version`.
    pub fn insert(&mut self, key: &str, version: &str, value: Rc<V>, cost: usize) {
        self.forget(key);
        if cost > self.budget {
            return;
        }
        while self.cost + cost > self.budget {
            let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.forget(&oldest);
        }
        let used = self.tick();
        self.cost += cost;
        self.entries.insert(
            key.to_string(),
            Entry {
                version: version.to_string(),
                value,
                cost,
                used,
            },
        );
    }
}

/// The document at `key` (at most `max` bytes) with its version, parsed by
/// `parse` unless `cache` holds it at the stored version; `None` if there is
/// no such object.
pub fn load<V>(
    cache: &RefCell<Cache<V>>,
    key: &str,
    max: u64,
    parse: impl FnOnce(&[u8]) -> Result<V, LayoutError>,
) -> Result<Option<(Rc<V>, String)>, LayoutError> {
    // With nothing cached there is nothing to check: read at once.
    if !cache.borrow().entries.contains_key(key) {
        return fetch(cache, key, max, parse);
    }
    match objects::stat(key) {
        Ok(m) => load_at(cache, key, &m.version, max, parse),
        Err(ObjectError::NotFound) => {
            cache.borrow_mut().forget(key);
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// `load` for a caller that has just learned the stored `version`.
pub fn load_at<V>(
    cache: &RefCell<Cache<V>>,
    key: &str,
    version: &str,
    max: u64,
    parse: impl FnOnce(&[u8]) -> Result<V, LayoutError>,
) -> Result<Option<(Rc<V>, String)>, LayoutError> {
    let cached = cache.borrow_mut().get(key);
    if let Some((v, value)) = cached {
        if v == version {
            return Ok(Some((value, v)));
        }
    }
    fetch(cache, key, max, parse)
}

/// Read and parse the document, keeping it in `cache`.
fn fetch<V>(
    cache: &RefCell<Cache<V>>,
    key: &str,
    max: u64,
    parse: impl FnOnce(&[u8]) -> Result<V, LayoutError>,
) -> Result<Option<(Rc<V>, String)>, LayoutError> {
    let (bytes, meta) = match objects::get(key, max) {
        Ok(got) => got,
        Err(ObjectError::NotFound) => {
            cache.borrow_mut().forget(key);
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    };
    let value = Rc::new(parse(&bytes)?);
    cache
        .borrow_mut()
        .insert(key, &meta.version, value.clone(), bytes.len());
    Ok(Some((value, meta.version)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cache_stays_within_its_budget_dropping_the_least_used() {
        let budget = 300;
        let mut c = Cache::new(budget);
        c.insert("a", "1", Rc::new(()), 100);
        c.insert("b", "1", Rc::new(()), 100);
        c.insert("c", "1", Rc::new(()), 100);
        // Using "a" makes "b" the least recently used.
        assert!(c.get("a").is_some());
        c.insert("d", "1", Rc::new(()), 100);
        assert!(c.entries.contains_key("a") && !c.entries.contains_key("b"));
        assert_eq!(c.cost, 300);
        // Replacing an entry does not count it twice.
        c.insert("d", "2", Rc::new(()), 100);
        assert_eq!(c.cost, 300);
        assert_eq!(c.get("d").map(|(v, _)| v).as_deref(), Some("2"));
        // Over the budget on its own: not kept, and nothing is dropped for it.
        c.insert("huge", "1", Rc::new(()), budget + 1);
        assert!(c.get("huge").is_none());
        assert_eq!(c.entries.len(), 3);
        c.forget("a");
        assert_eq!(c.cost, 200);
    }
}
