//! Lookup tables guests derive from objects (`objects.remember`/`recall`),
//! kept once per host.
//!
//! A repository with 100k tags has a 30 MB `index.json`; parsing it takes a
//! guest a quarter of a second, and an instance cannot keep it parsed
//! within its memory cap (and each instance would need its own copy). The
//! guest parses it once per version and hands the host the tables it looks
//! things up in; every later request, in any instance, asks the host. What
//! the tables mean stays the guest's business: the host keeps sorted string
//! pairs under (key, table), stamped with the object's version, and answers
//! only for that exact version, so a table can never be staler than the
//! `stat` the guest made to learn the version.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// Memory all tables may take together, as counted by `cost`: about 1.5
/// million tags, or fifteen repositories of 100k.
pub const BUDGET_BYTES: usize = 256 << 20;

/// A fixed charge per entry for the map's own bookkeeping, on top of the
/// strings' bytes.
const ENTRY_OVERHEAD: usize = 64;

struct Table {
    version: String,
    entries: BTreeMap<String, String>,
    cost: usize,
    /// When it was last used, on `Memo::clock`: the least recent goes first.
    used: AtomicU64,
}

#[derive(Default)]
struct Tables {
    by_name: HashMap<(String, String), Arc<Table>>,
    cost: usize,
}

pub struct Memo {
    tables: RwLock<Tables>,
    budget: usize,
    clock: AtomicU64,
}

impl Memo {
    pub fn new(budget: usize) -> Memo {
        Memo {
            tables: RwLock::new(Tables::default()),
            budget,
            clock: AtomicU64::new(0),
        }
    }

    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed)
    }

    /// Keep `entries` as `table` of `key` at `version`, replacing whatever
    /// version was kept; false if it does not fit the budget at all.
    pub fn remember(
        &self,
        key: &str,
        version: &str,
        table: &str,
        entries: Vec<(String, String)>,
    ) -> bool {
        let cost = entries
            .iter()
            .map(|(k, v)| k.len() + v.len() + ENTRY_OVERHEAD)
            .sum::<usize>();
        let name = (key.to_string(), table.to_string());
        let mut tables = self.tables.write().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = tables.by_name.remove(&name) {
            tables.cost -= old.cost;
        }
        if cost > self.budget {
            return false;
        }
        while tables.cost + cost > self.budget {
            let Some(oldest) = tables
                .by_name
                .iter()
                .min_by_key(|(_, t)| t.used.load(Ordering::Relaxed))
                .map(|(n, _)| n.clone())
            else {
                break;
            };
            if let Some(t) = tables.by_name.remove(&oldest) {
                tables.cost -= t.cost;
            }
        }
        let table = Table {
            version: version.to_string(),
            entries: entries.into_iter().collect(),
            cost,
            used: AtomicU64::new(self.tick()),
        };
        tables.cost += cost;
        tables.by_name.insert(name, Arc::new(table));
        true
    }

    /// The table at exactly `version`, marked used.
    fn table(&self, key: &str, version: &str, table: &str) -> Option<Arc<Table>> {
        let tables = self.tables.read().unwrap_or_else(|e| e.into_inner());
        let t = tables
            .by_name
            .get(&(key.to_string(), table.to_string()))
            .filter(|t| t.version == version)?;
        t.used.store(self.tick(), Ordering::Relaxed);
        Some(t.clone())
    }

    pub fn recall(
        &self,
        key: &str,
        version: &str,
        table: &str,
        name: &str,
    ) -> Option<Option<String>> {
        let t = self.table(key, version, table)?;
        Some(t.entries.get(name).cloned())
    }

    pub fn recall_names(
        &self,
        key: &str,
        version: &str,
        table: &str,
        after: Option<&str>,
        n: u32,
    ) -> Option<(Vec<String>, bool)> {
        let t = self.table(key, version, table)?;
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut names = t
            .entries
            .range::<str, _>((from, Bound::Unbounded))
            .map(|(k, _)| k);
        let page: Vec<String> = names.by_ref().take(n as usize).cloned().collect();
        Some((page, names.next().is_some()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(names: &[&str]) -> Vec<(String, String)> {
        names
            .iter()
            .map(|n| (n.to_string(), format!("value of {n}")))
            .collect()
    }

    #[test]
    fn a_table_answers_only_for_its_version() {
        let m = Memo::new(BUDGET_BYTES);
        assert!(m.remember("r/index.json", "v1", "tags", entries(&["b", "a", "c"])));
        assert_eq!(
            m.recall("r/index.json", "v1", "tags", "a"),
            Some(Some("value of a".into()))
        );
        assert_eq!(m.recall("r/index.json", "v1", "tags", "zz"), Some(None));
        assert_eq!(m.recall("r/index.json", "v2", "tags", "a"), None);
        assert_eq!(m.recall("r/index.json", "v1", "digests", "a"), None);
        assert_eq!(
            m.recall_names("r/index.json", "v1", "tags", None, 2),
            Some((vec!["a".into(), "b".into()], true))
        );
        assert_eq!(
            m.recall_names("r/index.json", "v1", "tags", Some("a"), 5),
            Some((vec!["b".into(), "c".into()], false))
        );
        assert_eq!(
            m.recall_names("r/index.json", "v1", "tags", Some("c"), 5),
            Some((vec![], false))
        );
        // A newer version replaces the old one.
        assert!(m.remember("r/index.json", "v2", "tags", entries(&["x"])));
        assert_eq!(m.recall("r/index.json", "v1", "tags", "a"), None);
        assert_eq!(
            m.recall("r/index.json", "v2", "tags", "x"),
            Some(Some("value of x".into()))
        );
    }

    #[test]
    fn the_least_recently_used_table_goes_to_stay_within_the_budget() {
        let one = entries(&["a"]);
        let cost: usize = one
            .iter()
            .map(|(k, v)| k.len() + v.len() + ENTRY_OVERHEAD)
            .sum();
        let m = Memo::new(cost * 2);
        assert!(m.remember("k1", "v", "t", one.clone()));
        assert!(m.remember("k2", "v", "t", one.clone()));
        // k1 used last, so k2 makes way for k3.
        assert!(m.recall("k1", "v", "t", "a").is_some());
        assert!(m.remember("k3", "v", "t", one.clone()));
        assert!(m.recall("k2", "v", "t", "a").is_none());
        assert!(m.recall("k1", "v", "t", "a").is_some());
        assert!(m.recall("k3", "v", "t", "a").is_some());
        // Larger than the whole budget: refused, and nothing else is dropped.
        assert!(!m.remember("big", "v", "t", entries(&["a", "b", "c"])));
        assert!(m.recall("k1", "v", "t", "a").is_some());
    }
}
