//! Counters of background work, served at `/metrics` in Prometheus' text format.

use crate::runtime::gc_api;
use crate::scheduler::ScrubOutcome;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

#[derive(Default)]
pub struct Metrics {
    gc_runs: AtomicU64,
    gc_failures: AtomicU64,
    gc_blobs_removed: AtomicU64,
    gc_bytes_freed: AtomicU64,
    gc_manifests_removed: AtomicU64,
    gc_bytes_scanned: AtomicU64,
    gc_millis: AtomicU64,
    scrub_runs: AtomicU64,
    scrub_repos_ok: AtomicU64,
    scrub_repos_affected: AtomicU64,
    scrub_blobs_damaged: AtomicU64,
    scrub_bytes_checked: AtomicU64,
}

impl Metrics {
    pub fn record_gc(&self, result: &anyhow::Result<gc_api::Report>, took: Duration) {
        self.gc_runs.fetch_add(1, Relaxed);
        self.gc_millis.fetch_add(took.as_millis() as u64, Relaxed);
        match result {
            Ok(r) => {
                self.gc_blobs_removed
                    .fetch_add(r.blobs_removed.into(), Relaxed);
                self.gc_bytes_freed.fetch_add(r.bytes_freed, Relaxed);
                self.gc_manifests_removed
                    .fetch_add(r.manifests_removed.into(), Relaxed);
                self.gc_bytes_scanned.fetch_add(r.bytes_scanned, Relaxed);
            }
            Err(_) => {
                self.gc_failures.fetch_add(1, Relaxed);
            }
        }
    }

    /// The latest scrub pass replaces the repository gauges.
    pub fn record_scrub(&self, pass: &[ScrubOutcome]) {
        self.scrub_runs.fetch_add(1, Relaxed);
        let (mut ok, mut affected, mut damaged, mut bytes) = (0, 0, 0, 0);
        for o in pass {
            match &o.result {
                Ok(r) if r.damaged.is_empty() => ok += 1,
                Ok(r) => {
                    affected += 1;
                    damaged += r.damaged.len() as u64;
                }
                Err(_) => affected += 1,
            }
            if let Ok(r) = &o.result {
                bytes += r.bytes_checked;
            }
        }
        self.scrub_repos_ok.store(ok, Relaxed);
        self.scrub_repos_affected.store(affected, Relaxed);
        self.scrub_blobs_damaged.store(damaged, Relaxed);
        self.scrub_bytes_checked.fetch_add(bytes, Relaxed);
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        let mut line = |name: &str, kind: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(
                s,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                v.load(Relaxed)
            );
        };
        line(
            "skiff_gc_runs_total",
            "counter",
            "Repositories garbage-collected.",
            &self.gc_runs,
        );
        line(
            "skiff_gc_failures_total",
            "counter",
            "Repository gc runs that failed.",
            &self.gc_failures,
        );
        line(
            "skiff_gc_blobs_removed_total",
            "counter",
            "Blobs removed by gc.",
            &self.gc_blobs_removed,
        );
        line(
            "skiff_gc_bytes_freed_total",
            "counter",
            "Bytes freed by gc.",
            &self.gc_bytes_freed,
        );
        line(
            "skiff_gc_manifests_removed_total",
            "counter",
            "Manifests removed by gc.",
            &self.gc_manifests_removed,
        );
        line(
            "skiff_gc_bytes_scanned_total",
            "counter",
            "Bytes of blobs gc looked at.",
            &self.gc_bytes_scanned,
        );
        line(
            "skiff_gc_milliseconds_total",
            "counter",
            "Time spent in gc.",
            &self.gc_millis,
        );
        line(
            "skiff_scrub_runs_total",
            "counter",
            "Scrub passes over all repositories.",
            &self.scrub_runs,
        );
        line(
            "skiff_scrub_repositories_ok",
            "gauge",
            "Repositories the last scrub found intact.",
            &self.scrub_repos_ok,
        );
        line(
            "skiff_scrub_repositories_affected",
            "gauge",
            "Repositories the last scrub found damaged.",
            &self.scrub_repos_affected,
        );
        line(
            "skiff_scrub_blobs_damaged",
            "gauge",
            "Damaged or missing blobs the last scrub found.",
            &self.scrub_blobs_damaged,
        );
        line(
            "skiff_scrub_bytes_checked_total",
            "counter",
            "Bytes re-hashed by scrub.",
            &self.scrub_bytes_checked,
        );
        crate::objects::aws::render(&mut s);
        s
    }
}
