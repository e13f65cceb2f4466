//! Background work: host timers that call the gc and scrub components on
//! fresh instances, one repository and one job at a time. A job holds no lock
//! a request needs; it works through `objects` like any request does. On
//! shutdown the running job is dropped between two object operations, each
//! of which is atomic, so nothing is left half-done.

use crate::config::{Config, StoreConfig};
use crate::metrics::Metrics;
use crate::runtime::{gc_api, scrub_api, Runtime};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Mutex};

pub struct GcOutcome {
    pub repo: String,
    pub result: anyhow::Result<gc_api::Report>,
}

pub struct ScrubOutcome {
    pub repo: String,
    pub result: anyhow::Result<scrub_api::Report>,
}

fn policy(store: &StoreConfig, repo: &str) -> gc_api::Policy {
    let p = store.policy_for(repo);
    // Config durations are at most 100 years, so milliseconds fit a u64.
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    gc_api::Policy {
        delay_ms: ms(store.gc_delay),
        retention_delay_ms: ms(store.retention_delay),
        dry_run: store.retention_dry_run,
        delete_untagged: p.delete_untagged,
        delete_referrers: p.delete_referrers,
        keep_tags: p.keep_tags.map(|rules| {
            rules
                .into_iter()
                .map(|r| gc_api::KeepTags {
                    patterns: r.patterns,
                    most_recently_pushed_count: r.most_recently_pushed_count,
                    most_recently_pulled_count: r.most_recently_pulled_count,
                    pulled_within_ms: r.pulled_within.map(ms),
                    pushed_within_ms: r.pushed_within.map(ms),
                })
                .collect()
        }),
    }
}

/// The store settings that govern `repo`.
fn store_of<'a>(cfg: &'a Config, repo: &str) -> (usize, &'a StoreConfig) {
    let first = repo.split('/').next().unwrap_or_default();
    cfg.sub_paths
        .iter()
        .position(|s| s.prefix == first)
        .map(|i| (i + 1, &cfg.sub_paths[i].store))
        .unwrap_or((0, &cfg.storage))
}

/// Collect garbage in every repository of the stores `stores` selects (by
/// index: 0 the default, i+1 the i-th subpath) whose gc is on.
pub async fn gc_all(
    rt: &Runtime,
    cfg: &Config,
    stores: impl Fn(usize) -> bool,
    metrics: &Metrics,
) -> anyhow::Result<Vec<GcOutcome>> {
    let mut out = Vec::new();
    for repo in rt.repositories().await? {
        let (i, store) = store_of(cfg, &repo);
        if !store.gc || !stores(i) {
            continue;
        }
        let started = Instant::now();
        let result = rt.gc(&repo, &policy(store, &repo)).await;
        metrics.record_gc(&repo, &result, started.elapsed());
        match &result {
            Ok(r)
                if r.blobs_removed + r.manifests_removed + r.uploads_removed + r.tags_removed
                    > 0
                    || r.repository_removed =>
            {
                tracing::info!(
                    repo,
                    tags = r.tags_removed,
                    manifests = r.manifests_removed,
                    blobs = r.blobs_removed,
                    bytes = r.bytes_freed,
                    uploads = r.uploads_removed,
                    repository_removed = r.repository_removed,
                    "gc"
                )
            }
            Ok(_) => tracing::debug!(repo, "gc: nothing to collect"),
            Err(e) => tracing::warn!(repo, error = format!("{e:#}"), "gc failed"),
        }
        out.push(GcOutcome { repo, result });
    }
    // What the backends leave outside repositories: S3 multipart uploads
    // and staged parts of sessions no record names any more.
    for (i, (backend, (_, store))) in rt.objects().stores().zip(cfg.stores()).enumerate() {
        if !store.gc || !stores(i) {
            continue;
        }
        match backend.sweep(store.gc_delay).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                store = backend.describe(),
                removed = n,
                "gc: abandoned upload parts"
            ),
            Err(e) => {
                tracing::warn!(store = backend.describe(), error = ?e, "gc: sweeping abandoned upload parts failed")
            }
        }
    }
    Ok(out)
}

/// Scrub every repository.
pub async fn scrub_all(
    rt: &Runtime,
    metrics: &Metrics,
    repair: bool,
) -> anyhow::Result<Vec<ScrubOutcome>> {
    rt.objects().begin_scrub_pass();
    let mut out = Vec::new();
    for repo in rt.repositories().await? {
        let result = rt.scrub(&repo, repair).await;
        match &result {
            Ok(r) if r.damaged.is_empty() => {
                tracing::debug!(repo, blobs = r.blobs_checked, "scrub: ok")
            }
            Ok(r) => {
                for d in &r.damaged {
                    tracing::error!(repo, blob = %d.digest, actual = %d.actual, "scrub: affected");
                }
            }
            Err(e) => tracing::warn!(repo, error = format!("{e:#}"), "scrub failed"),
        }
        out.push(ScrubOutcome { repo, result });
    }
    metrics.record_scrub(&out);
    Ok(out)
}

/// A period with up to a tenth added at random, so several hosts sharing
/// storage do not collect in lockstep.
fn jittered(period: Duration) -> Duration {
    period + period.mul_f64(rand::random::<f64>() * 0.1)
}

/// Start the timers. Returns when `shutdown` turns true (and the running job,
/// if any, has been dropped).
pub async fn run(
    rt: Arc<Runtime>,
    cfg: Arc<Config>,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
) {
    // One background job at a time, whatever its kind.
    let one_at_a_time = Arc::new(Mutex::new(()));
    let mut tasks = Vec::new();
    {
        // The walk puts the catalog's index right (layouts placed by hand
        // while the server was down, a crash between creating a layout and
        // listing it).
        let (rt, lock, mut shutdown) = (rt.clone(), one_at_a_time.clone(), shutdown.clone());
        tasks.push(tokio::spawn(async move {
            let _turn = lock.lock().await;
            tokio::select! {
                r = rt.repositories() => match r {
                    Ok(all) => tracing::debug!(repositories = all.len(), "catalog index checked"),
                    Err(e) => tracing::warn!(error = format!("{e:#}"), "walking the repositories at start failed"),
                },
                _ = shutdown.changed() => {}
            }
        }));
    }
    for (i, (_, store)) in cfg.stores().enumerate() {
        if !store.gc {
            continue;
        }
        let interval = store.gc_interval;
        let (rt, cfg, metrics, lock) = (
            rt.clone(),
            cfg.clone(),
            metrics.clone(),
            one_at_a_time.clone(),
        );
        tasks.push(tokio::spawn(every(interval, shutdown.clone(), move || {
            let (rt, cfg, metrics, lock) = (rt.clone(), cfg.clone(), metrics.clone(), lock.clone());
            async move {
                let _turn = lock.lock().await;
                if let Err(e) = gc_all(&rt, &cfg, |s| s == i, &metrics).await {
                    tracing::warn!(error = format!("{e:#}"), "gc pass failed");
                }
            }
        })));
    }
    if let Some(interval) = cfg.scrub_interval {
        let (rt, metrics, lock) = (rt.clone(), metrics.clone(), one_at_a_time.clone());
        tasks.push(tokio::spawn(every(interval, shutdown.clone(), move || {
            let (rt, metrics, lock) = (rt.clone(), metrics.clone(), lock.clone());
            async move {
                let _turn = lock.lock().await;
                if let Err(e) = scrub_all(&rt, &metrics, false).await {
                    tracing::warn!(error = format!("{e:#}"), "scrub pass failed");
                }
            }
        })));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// Run `job` every `period` (jittered) until shutdown, dropping a running job
/// when shutdown comes.
async fn every<F, Fut>(period: Duration, mut shutdown: watch::Receiver<bool>, job: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    loop {
        tokio::select! {
            _ = tokio::time::sleep(jittered(period)) => {}
            _ = shutdown.changed() => return,
        }
        tokio::select! {
            _ = job() => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
    }
}
