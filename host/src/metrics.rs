//! What operators watch, served at `/metrics` in Prometheus' text format:
//! requests by method, route and status with their latency, bytes in and
//! out, background work (gc, scrub), and storage per repository.

use crate::runtime::gc_api;
use crate::scheduler::ScrubOutcome;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the latency histogram's buckets.
const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];

/// Which part of the API a request path asks for (the route label, never
/// the repository: one series per repository would grow without bound), and
/// the repository and reference it names, if any. The API part is the
/// path's tail, so the rightmost marker decides (names may hold "blobs").
pub fn classify(path: &str) -> (&'static str, Option<&str>, Option<&str>) {
    match path {
        "/v2" | "/v2/" => return ("base", None, None),
        "/v2/_catalog" => return ("catalog", None, None),
        _ => {}
    }
    if path.starts_with("/auth/") {
        return ("token", None, None);
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return ("other", None, None);
    };
    if let Some(repo) = rest.strip_suffix("/tags/list") {
        return ("tags", Some(repo), None);
    }
    let markers = [
        ("/blobs/uploads", "upload"),
        ("/blobs/", "blob"),
        ("/manifests/", "manifest"),
        ("/referrers/", "referrers"),
    ];
    let found = markers
        .iter()
        .filter_map(|(m, name)| rest.rfind(m).map(|at| (at, *m, *name)))
        // The rightmost marker; at one position, the first listed (uploads).
        .fold(
            None,
            |best: Option<(usize, &str, &'static str)>, found| match best {
                Some((b, _, _)) if b >= found.0 => best,
                _ => Some(found),
            },
        );
    match found {
        Some((at, marker, name)) => {
            let tail = rest[at + marker.len()..].trim_start_matches('/');
            (
                name,
                Some(&rest[..at]),
                Some(tail).filter(|t| !t.is_empty()),
            )
        }
        None => ("other", None, None),
    }
}

/// One metric without labels, with its help and type lines.
pub fn single(s: &mut String, name: &str, kind: &str, help: &str, v: u64) {
    let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
}

/// The method label: the ones the API uses, everything else as "other".
pub fn method_label(m: &http::Method) -> &'static str {
    match *m {
        http::Method::GET => "GET",
        http::Method::HEAD => "HEAD",
        http::Method::PUT => "PUT",
        http::Method::POST => "POST",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        http::Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

#[derive(Default)]
struct Histogram {
    /// Observations at or below each of `LATENCY_BUCKETS`.
    buckets: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
pub struct Requests {
    /// (method, route, status) → requests answered.
    counts: Mutex<HashMap<(&'static str, &'static str, u16), u64>>,
    /// route → time to the response head.
    latency: Mutex<HashMap<&'static str, Histogram>>,
    /// Request body bytes received.
    pub bytes_in: std::sync::Arc<AtomicU64>,
    /// Response body bytes sent.
    pub bytes_out: std::sync::Arc<AtomicU64>,
}

impl Requests {
    pub fn record(&self, method: &'static str, route: &'static str, status: u16, took: Duration) {
        if let Ok(mut c) = self.counts.lock() {
            *c.entry((method, route, status)).or_default() += 1;
        }
        if let Ok(mut l) = self.latency.lock() {
            let h = l.entry(route).or_default();
            let secs = took.as_secs_f64();
            for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
                if secs <= *le {
                    h.buckets[i] += 1;
                }
            }
            h.count += 1;
            h.sum += secs;
        }
    }

    fn render(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "# HELP skiff_http_requests_total Requests answered, by method, route and status.\n\
             # TYPE skiff_http_requests_total counter"
        );
        if let Ok(c) = self.counts.lock() {
            let sorted: BTreeMap<_, _> = c.iter().collect();
            for ((method, route, status), n) in sorted {
                let _ = writeln!(
                    s,
                    "skiff_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {n}"
                );
            }
        }
        let name = "skiff_http_request_duration_seconds";
        let _ = writeln!(
            s,
            "# HELP {name} Time from a request's head to its response's head, by route.\n\
             # TYPE {name} histogram"
        );
        if let Ok(l) = self.latency.lock() {
            let sorted: BTreeMap<_, _> = l.iter().collect();
            for (route, h) in sorted {
                for (le, n) in LATENCY_BUCKETS.iter().zip(h.buckets) {
                    let _ = writeln!(s, "{name}_bucket{{route=\"{route}\",le=\"{le}\"}} {n}");
                }
                let _ = writeln!(
                    s,
                    "{name}_bucket{{route=\"{route}\",le=\"+Inf\"}} {c}\n\
                     {name}_sum{{route=\"{route}\"}} {sum}\n\
                     {name}_count{{route=\"{route}\"}} {c}",
                    c = h.count,
                    sum = h.sum
                );
            }
        }
        counter(
            s,
            "skiff_http_request_bytes_total",
            "Request body bytes received.",
            self.bytes_in.load(Relaxed),
        );
        counter(
            s,
            "skiff_http_response_bytes_total",
            "Response body bytes sent.",
            self.bytes_out.load(Relaxed),
        );
    }
}

fn counter(s: &mut String, name: &str, help: &str, v: u64) {
    let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
}

/// Prometheus label values escape backslash, quote and newline.
fn label_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[derive(Default)]
pub struct Metrics {
    pub requests: Requests,
    /// Repository → bytes of its blobs after its latest gc.
    repository_bytes: Mutex<BTreeMap<String, u64>>,
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
    pub fn record_gc(&self, repo: &str, result: &anyhow::Result<gc_api::Report>, took: Duration) {
        self.gc_runs.fetch_add(1, Relaxed);
        self.gc_millis.fetch_add(took.as_millis() as u64, Relaxed);
        match result {
            Ok(r) => {
                if let Ok(mut sizes) = self.repository_bytes.lock() {
                    if r.repository_removed {
                        sizes.remove(repo);
                    } else {
                        let left = r.bytes_scanned.saturating_sub(r.bytes_freed);
                        sizes.insert(repo.to_string(), left);
                    }
                }
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
            single(&mut s, name, kind, help, v.load(Relaxed))
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
        let name = "skiff_repository_bytes";
        let _ = writeln!(
            s,
            "# HELP {name} Bytes of blobs in each repository as of its latest gc \
             (a blob deduplicated into several counts in each).\n# TYPE {name} gauge"
        );
        if let Ok(sizes) = self.repository_bytes.lock() {
            for (repo, n) in sizes.iter() {
                let _ = writeln!(s, "{name}{{repository=\"{}\"}} {n}", label_value(repo));
            }
        }
        self.requests.render(&mut s);
        crate::objects::aws::render(&mut s);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::classify;

    #[test]
    fn routes_come_from_the_paths_tail_whatever_the_repository_is_called() {
        for (path, want) in [
            ("/v2/", ("base", None, None)),
            ("/v2/_catalog", ("catalog", None, None)),
            ("/auth/token", ("token", None, None)),
            ("/v2/a/b/tags/list", ("tags", Some("a/b"), None)),
            ("/v2/a/manifests/v1", ("manifest", Some("a"), Some("v1"))),
            (
                "/v2/a/blobs/sha256:ab",
                ("blob", Some("a"), Some("sha256:ab")),
            ),
            ("/v2/a/blobs/uploads/", ("upload", Some("a"), None)),
            ("/v2/a/blobs/uploads/s1", ("upload", Some("a"), Some("s1"))),
            (
                "/v2/a/referrers/sha256:ab",
                ("referrers", Some("a"), Some("sha256:ab")),
            ),
            // Repositories named like the API's markers.
            (
                "/v2/blobs/manifests/t",
                ("manifest", Some("blobs"), Some("t")),
            ),
            (
                "/v2/x/manifests/y/blobs/sha256:1",
                ("blob", Some("x/manifests/y"), Some("sha256:1")),
            ),
            (
                "/v2/x/manifests/y/tags/list",
                ("tags", Some("x/manifests/y"), None),
            ),
            ("/elsewhere", ("other", None, None)),
        ] {
            assert_eq!(classify(path), want, "{path}");
        }
    }
}
