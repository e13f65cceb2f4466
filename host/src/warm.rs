//! Registry instances kept between requests. Building an instance costs more
//! than most requests do (fresh linear memories fault their pages back in,
//! the guest's runtime starts again), and the registry components keep no
//! request state of their own, so an instance that served a request cleanly
//! serves the next one.
//!
//! An instance goes back only if its request ended without a trap, it holds
//! no resources of that request, its memories stayed small, and it has
//! served fewer than `MAX_SERVED` requests; otherwise it is dropped and its
//! pool slot freed. The newest idle instance is taken first (its pages are
//! the warmest), and instances idle for `IDLE_FOR` are dropped by `trim`, so
//! a burst does not keep its memory once it is over.

use crate::runtime::Ctx;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use wasmtime::Store;
use wasmtime_wasi_http::p2::bindings::Proxy;

/// Requests one instance serves before it is replaced: a bound on whatever
/// a guest's allocator fragments or leaks over time.
const MAX_SERVED: u32 = 10_000;
/// An instance whose memories grew past this (a large manifest, a large
/// `index.json`) is dropped after its request, giving the memory back.
pub const KEEP_MEMORY_BYTES: usize = 32 << 20;
/// How long an idle instance is kept.
pub const IDLE_FOR: Duration = Duration::from_secs(30);

/// A registry instance with its store.
pub struct Instance {
    pub store: Store<Ctx>,
    pub proxy: Proxy,
    served: u32,
}

impl Instance {
    pub fn new(store: Store<Ctx>, proxy: Proxy) -> Instance {
        Instance {
            store,
            proxy,
            served: 0,
        }
    }
}

/// Why an instance was not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discard {
    Failed,
    Leftovers,
    Memory,
    Served,
}

pub struct Warm {
    idle: Mutex<Vec<(Instance, Instant)>>,
    /// At most this many idle instances are kept.
    keep: usize,
    created: AtomicU64,
    reused: AtomicU64,
    discarded: AtomicU64,
}

impl Warm {
    pub fn new(keep: usize) -> Warm {
        Warm {
            idle: Mutex::new(Vec::new()),
            keep,
            created: AtomicU64::new(0),
            reused: AtomicU64::new(0),
            discarded: AtomicU64::new(0),
        }
    }

    /// The warmest idle instance, if any.
    pub fn take(&self) -> Option<Instance> {
        let taken = self.idle.lock().ok()?.pop().map(|(i, _)| i);
        if taken.is_some() {
            self.reused.fetch_add(1, Relaxed);
        }
        taken
    }

    /// Count an instance built because none was idle.
    pub fn created(&self) {
        self.created.fetch_add(1, Relaxed);
    }

    /// Keep `inst` for the next request if it may serve one; `ok` says its
    /// request ended without a trap or an error.
    pub fn give_back(&self, mut inst: Instance, ok: bool) -> Result<(), Discard> {
        inst.served = inst.served.saturating_add(1);
        let verdict = Self::verdict(&inst, ok);
        if verdict.is_err() {
            self.discarded.fetch_add(1, Relaxed);
            return verdict;
        }
        let dropped = match self.idle.lock() {
            Ok(mut idle) => {
                idle.push((inst, Instant::now()));
                (idle.len() > self.keep).then(|| idle.remove(0))
            }
            Err(_) => None,
        };
        // Dropped outside the lock: freeing an instance returns its pages.
        drop(dropped);
        Ok(())
    }

    fn verdict(inst: &Instance, ok: bool) -> Result<(), Discard> {
        let ctx = inst.store.data();
        if !ok {
            Err(Discard::Failed)
        } else if !ctx.table.is_empty() {
            Err(Discard::Leftovers)
        } else if ctx.memory_bytes() > KEEP_MEMORY_BYTES {
            Err(Discard::Memory)
        } else if inst.served >= MAX_SERVED {
            Err(Discard::Served)
        } else {
            Ok(())
        }
    }

    /// Drop the instances idle for longer than `idle_for`.
    pub fn trim(&self, idle_for: Duration) {
        let stale: Vec<_> = match self.idle.lock() {
            Ok(mut idle) => {
                let fresh_from = idle
                    .iter()
                    .position(|(_, since)| since.elapsed() < idle_for)
                    .unwrap_or(idle.len());
                idle.drain(..fresh_from).collect()
            }
            Err(_) => Vec::new(),
        };
        drop(stale);
    }

    pub fn idle(&self) -> usize {
        self.idle.lock().map_or(0, |i| i.len())
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        let mut line = |name: &str, kind: &str, help: &str, v: u64| {
            crate::metrics::single(&mut s, name, kind, help, v)
        };
        line(
            "skiff_instances_created_total",
            "counter",
            "Registry instances built because none was idle.",
            self.created.load(Relaxed),
        );
        line(
            "skiff_instances_reused_total",
            "counter",
            "Requests served by an instance kept from an earlier request.",
            self.reused.load(Relaxed),
        );
        line(
            "skiff_instances_discarded_total",
            "counter",
            "Instances dropped after a request (a trap, leftovers, memory grown, or age).",
            self.discarded.load(Relaxed),
        );
        line(
            "skiff_instances_idle",
            "gauge",
            "Registry instances kept for the next request.",
            self.idle() as u64,
        );
        s
    }
}
