//! Garbage collection end to end, against the real binary: the online
//! mark-and-sweep under a push/pull/delete load (as zot's gc stress test runs
//! it), the gc delay, untagged manifests, referrers, tag retention, empty
//! repositories, a layout made by skopeo, and what gc and scrub cost.

mod common;
use common::*;
use rand::{Rng, RngCore};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------- helpers

/// The load test and the measurements run alone; the other tests may share
/// the machine with each other.
static MACHINE: RwLock<()> = RwLock::new(());

fn shared() -> RwLockReadGuard<'static, ()> {
    MACHINE.read().unwrap_or_else(|e| e.into_inner())
}

fn exclusive() -> RwLockWriteGuard<'static, ()> {
    MACHINE.write().unwrap_or_else(|e| e.into_inner())
}

/// Config edit: gc with this delay and interval (Go durations).
fn gc_every(delay: &'static str, interval: &'static str) -> impl FnOnce(&mut Value) {
    move |cfg| {
        cfg["storage"]["gcDelay"] = json!(delay);
        cfg["storage"]["gcInterval"] = json!(interval);
        // Retention's own delay (24 hours unless set) follows the gc delay here.
        cfg["storage"]["retention"]["delay"] = json!(delay);
    }
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand::rng().fill_bytes(&mut v);
    v
}

/// A config blob that skopeo and umoci accept.
fn image_config(nonce: &str, diff_ids: &[String]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Labels": {"nonce": nonce}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap()
}

/// `index.json` of a repository on disk: (digest, tag) per entry.
fn index_entries(reg: &Registry, repo: &str) -> Vec<(String, Option<String>)> {
    read_json(&reg.root().join(repo).join("index.json"))["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["digest"].as_str().unwrap().to_string(),
                d["annotations"]["org.opencontainers.image.ref.name"]
                    .as_str()
                    .map(String::from),
            )
        })
        .collect()
}

/// Every manifest `index.json` lists is stored, and so is everything it reaches.
fn assert_layout_complete(reg: &Registry, repo: &str) {
    let mut pending: Vec<String> = index_entries(reg, repo)
        .into_iter()
        .map(|(d, _)| d)
        .collect();
    let mut seen = BTreeSet::new();
    while let Some(d) = pending.pop() {
        if !seen.insert(d.clone()) {
            continue;
        }
        let p = reg.blob_path(repo, &d);
        let bytes = std::fs::read(&p)
            .unwrap_or_else(|e| panic!("{repo}: {d} is listed or referenced but missing: {e}"));
        assert_eq!(
            sha256(&bytes),
            d,
            "{repo}: {} holds other bytes",
            p.display()
        );
        let Ok(m) = serde_json::from_slice::<Value>(&bytes) else {
            continue;
        };
        if let Some(c) = m["config"]["digest"].as_str() {
            pending.push(c.to_string());
        }
        for list in ["layers", "manifests"] {
            for x in m[list].as_array().into_iter().flatten() {
                pending.push(x["digest"].as_str().unwrap().to_string());
            }
        }
    }
}

fn tags(reg: &Registry, repo: &str) -> Vec<String> {
    let r = reg.get(&format!("/v2/{repo}/tags/list"));
    assert_eq!(r.status, 200, "tags of {repo}: {}", r.text());
    let mut t: Vec<String> = r.json()["tags"]
        .as_array()
        .map(|a| a.iter().map(|x| x.as_str().unwrap().to_string()).collect())
        .unwrap_or_default();
    t.sort();
    t
}

fn catalog(reg: &Registry) -> Vec<String> {
    let r = reg.get("/v2/_catalog");
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

fn referrer_digests(reg: &Registry, repo: &str, subject: &str) -> Vec<String> {
    let r = reg.get(&format!("/v2/{repo}/referrers/{subject}"));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["digest"].as_str().unwrap().to_string())
        .collect()
}

/// Wait until every image is [`gone`]; fail naming those that are not.
fn wait_gone(reg: &Registry, what: &str, timeout: Duration, imgs: &[&Image]) {
    wait_gone_but(reg, what, timeout, imgs, &BTreeSet::new())
}

fn wait_gone_but(
    reg: &Registry,
    what: &str,
    timeout: Duration,
    imgs: &[&Image],
    shared: &BTreeSet<(String, String)>,
) {
    let mut left = Vec::new();
    let done = eventually(timeout, || {
        left = imgs
            .iter()
            .filter(|i| !gone_but(reg, i, shared))
            .map(|i| format!("{} {} {:?}", i.repo, i.digest, i.tags))
            .collect();
        left.is_empty()
    });
    assert!(
        done,
        "timed out waiting until {what}; still there: {left:#?}"
    );
}

/// An image as pushed: the manifest, its tags, and every blob it needs.
#[derive(Clone, Debug)]
struct Image {
    repo: String,
    tags: Vec<String>,
    digest: String,
    manifest: Vec<u8>,
    /// Config and layers: (digest, size).
    blobs: Vec<(String, usize)>,
}

/// Push config + layers (monolithically) and a manifest by `reference`
/// (a tag, or [`BY_DIGEST`]).
const BY_DIGEST: &str = "";

fn push_image_with(
    reg: &Registry,
    repo: &str,
    reference: &str,
    layers: &[Vec<u8>],
    subject: Option<(&str, usize)>,
) -> Image {
    let nonce = hex::encode(random_bytes(8));
    let diff_ids: Vec<String> = layers.iter().map(|l| sha256(l)).collect();
    let config = image_config(&nonce, &diff_ids);
    let cd = reg.push_blob(repo, &config);
    let lds: Vec<String> = layers.iter().map(|l| reg.push_blob(repo, l)).collect();
    let layer_refs: Vec<(&str, usize)> = lds
        .iter()
        .zip(layers)
        .map(|(d, l)| (d.as_str(), l.len()))
        .collect();
    let m = image_manifest(&cd, config.len(), &layer_refs, subject, None);
    let digest = sha256(&m);
    let tags = match reference {
        BY_DIGEST => vec![],
        t => vec![t.to_string()],
    };
    let reference = tags.first().unwrap_or(&digest);
    let r = reg.put_manifest(repo, reference, OCI_MANIFEST, &m);
    assert_eq!(r.status, 201, "push {repo}:{reference}: {}", r.text());
    assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
    let mut blobs = vec![(cd, config.len())];
    blobs.extend(lds.into_iter().zip(layers.iter().map(Vec::len)));
    Image {
        repo: repo.to_string(),
        tags,
        digest,
        manifest: m,
        blobs,
    }
}

fn small_image(reg: &Registry, repo: &str, reference: &str) -> Image {
    push_image_with(reg, repo, reference, &[random_bytes(300)], None)
}

/// The manifest by `reference` and every blob, byte-exact.
fn assert_pulls(reg: &Registry, img: &Image, reference: &str) {
    let r = reg.get_manifest(&img.repo, reference);
    assert_eq!(r.status, 200, "{}:{reference}: {}", img.repo, r.text());
    assert_eq!(r.body, img.manifest, "{}:{reference}", img.repo);
    assert_eq!(r.header("docker-content-digest"), Some(img.digest.as_str()));
    for (d, size) in &img.blobs {
        assert_eq!(
            reg.pull_blob(&img.repo, d).len(),
            *size,
            "{}: blob {d}",
            img.repo
        );
    }
}

/// The manifest and every blob of `img` are gone: over the API and on disk.
fn gone(reg: &Registry, img: &Image) -> bool {
    gone_but(reg, img, &BTreeSet::new())
}

/// Like [`gone`], except for the blobs in `shared` ((repo, digest) pairs),
/// which other images still need.
fn gone_but(reg: &Registry, img: &Image, shared: &BTreeSet<(String, String)>) -> bool {
    let manifest_gone = reg
        .get(&format!("/v2/{}/manifests/{}", img.repo, img.digest))
        .status
        == 404
        && !reg.blob_path(&img.repo, &img.digest).exists();
    manifest_gone
        && img.blobs.iter().all(|(d, _)| {
            shared.contains(&(img.repo.clone(), d.clone()))
                || !reg.blob_path(&img.repo, d).exists()
                    && reg.get(&format!("/v2/{}/blobs/{d}", img.repo)).status == 404
        })
}

fn assert_present(reg: &Registry, img: &Image) {
    let r = reg.get(&format!("/v2/{}/manifests/{}", img.repo, img.digest));
    assert_eq!(r.status, 200, "{} {}: {}", img.repo, img.digest, r.text());
    assert_eq!(r.body, img.manifest);
    assert_pulls(reg, img, &img.digest.clone());
}

/// Run `skiff <cmd> CONFIG` in the foreground; (success, stdout).
fn skiff(cmd: &str, config: &Path) -> (bool, String) {
    let out = skiff_command(cmd, config).output().expect("running skiff");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        eprintln!(
            "skiff {cmd} failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    (out.status.success(), stdout)
}

/// The server's gc counters at `/metrics`, each of which must be there.
#[derive(Clone, Copy, Debug, PartialEq)]
struct GcCounters {
    /// One per repository a pass collected.
    runs: u64,
    failures: u64,
    blobs_removed: u64,
    manifests_removed: u64,
}

fn gc_counters(reg: &Registry) -> GcCounters {
    let r = reg.get("/metrics");
    assert_eq!(r.status, 200, "/metrics: {}", r.text());
    let text = r.text();
    let get = |name: &str| metric(&text, name).unwrap_or_else(|| panic!("no {name} in {text}"));
    GcCounters {
        runs: get("skiff_gc_runs_total"),
        failures: get("skiff_gc_failures_total"),
        blobs_removed: get("skiff_gc_blobs_removed_total"),
        manifests_removed: get("skiff_gc_manifests_removed_total"),
    }
}

/// Wait until the server's gc has run at least one whole pass that began
/// after this call, over a store of `repos` repositories (passes take the
/// repositories one at a time and count each, so a pass under way when this
/// is called is done after `repos` more counts, and the next after `2 * repos`).
/// No run may fail. Returns the counters then.
fn wait_gc_pass(reg: &Registry, repos: u64) -> GcCounters {
    let before = gc_counters(reg);
    let mut now = before;
    let ran = eventually(Duration::from_secs(60), || {
        now = gc_counters(reg);
        now.runs >= before.runs + 2 * repos
    });
    assert!(ran, "gc did not run a whole pass: {before:?}, then {now:?}");
    assert_eq!(now.failures, before.failures, "gc runs failed: {now:?}");
    now
}

/// What one `skiff gc` pass removed in one repository, as its table says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
struct GcRow {
    tags: u64,
    manifests: u64,
    blobs: u64,
    bytes_freed: u64,
    uploads: u64,
}

/// Run one `skiff gc` pass beside the registry with its config but gc on
/// (the server's own may be off, so the pass is the only one); it must
/// succeed. Its table, by repository.
fn gc_pass(reg: &Registry) -> BTreeMap<String, GcRow> {
    let cfg_path = reg.data.path().join("gc-pass.json");
    let mut cfg = read_json(&reg.config_path());
    cfg["storage"]["gc"] = json!(true);
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let (ok, out) = skiff("gc", &cfg_path);
    assert!(ok, "skiff gc failed: {out}");
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    assert_eq!(
        header,
        [
            "REPOSITORY",
            "TAGS",
            "MANIFESTS",
            "BLOBS",
            "BYTES",
            "FREED",
            "UPLOADS"
        ],
        "{out}"
    );
    let mut rows = BTreeMap::new();
    let mut summary = None;
    for line in lines {
        if line.contains(" repositories, ") {
            summary = Some(line);
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        let n = |i: usize| -> u64 {
            f.get(i)
                .and_then(|x| x.parse().ok())
                .unwrap_or_else(|| panic!("gc table row {line:?} in {out}"))
        };
        let row = GcRow {
            tags: n(1),
            manifests: n(2),
            blobs: n(3),
            bytes_freed: n(4),
            uploads: n(5),
        };
        assert!(rows.insert(f[0].to_string(), row).is_none(), "{out}");
    }
    let summary = summary.unwrap_or_else(|| panic!("no summary line: {out}"));
    assert!(
        summary.starts_with(&format!("{} repositories, ", rows.len())),
        "{out}"
    );
    rows
}

/// The row of `repo` in a gc table, which must have one.
fn row(table: &BTreeMap<String, GcRow>, repo: &str) -> GcRow {
    *table
        .get(repo)
        .unwrap_or_else(|| panic!("gc passed {repo} by: {table:?}"))
}

// ---------------------------------------------------------------- 1. stress

/// Request counts of the load test, and everything that went wrong.
#[derive(Default)]
struct Stats {
    requests: AtomicU64,
    by_kind: Mutex<BTreeMap<&'static str, u64>>,
    failures: Mutex<Vec<String>>,
    /// From a push's first blob to its manifest.
    slowest_push_us: AtomicU64,
}

impl Stats {
    /// Count a request; a status other than `want` is a failure.
    fn check(&self, kind: &'static str, r: &Resp, want: u16, what: &str) -> bool {
        self.requests.fetch_add(1, Relaxed);
        *self.by_kind.lock().unwrap().entry(kind).or_default() += 1;
        if r.status == want {
            return true;
        }
        let body: String = r.text().chars().take(300).collect();
        self.fail(format!(
            "{kind} {what}: {} (wanted {want}) {body}",
            r.status
        ));
        false
    }

    fn fail(&self, msg: String) {
        eprintln!("FAILED: {msg}");
        self.failures.lock().unwrap().push(msg);
    }
}

/// Upload a blob one of three ways; its digest, or `None` (counted) on failure.
fn stress_upload(reg: &Registry, st: &Stats, repo: &str, bytes: &[u8]) -> Option<String> {
    let d = sha256(bytes);
    let what = format!("{repo} {d}");
    let done = |r: &Resp| {
        if r.header("docker-content-digest") != Some(d.as_str()) {
            st.fail(format!("upload {what}: digest header {:?}", r.headers));
            return false;
        }
        true
    };
    // The Location of a session's answer; a missing one is a failure.
    let location = |kind: &str, r: &Resp| -> Option<String> {
        let loc = r.header("location").map(str::to_string);
        if loc.is_none() {
            st.fail(format!("{kind} {what}: {} without a Location", r.status));
        }
        loc
    };
    // A new session's Location.
    let start = || -> Option<String> {
        let r = reg
            .req("POST", &format!("/v2/{repo}/blobs/uploads/"))
            .send();
        if !st.check("upload-start", &r, 202, &what) {
            return None;
        }
        location("upload-start", &r)
    };
    let mut rng = rand::rng();
    match rng.random_range(0..3) {
        // Monolithic POST.
        0 => {
            let r = reg
                .req("POST", &format!("/v2/{repo}/blobs/uploads/?digest={d}"))
                .header("Content-Type", "application/octet-stream")
                .body(bytes)
                .send();
            (st.check("upload-post", &r, 201, &what) && done(&r)).then_some(d)
        }
        // POST, then one PUT with the body.
        1 => {
            let loc = start()?;
            let r = reg
                .close_upload(&loc, &d)
                .header("Content-Type", "application/octet-stream")
                .body(bytes)
                .send();
            (st.check("upload-put", &r, 201, &what) && done(&r)).then_some(d)
        }
        // Chunked: PATCHes with Content-Range, then a PUT without a body.
        _ => {
            let mut loc = start()?;
            // Two to eight chunks: a push stays well within the gc delay.
            let chunk = rng
                .random_range(bytes.len().div_ceil(8)..=bytes.len().div_ceil(2))
                .max(1);
            let mut at = 0;
            for part in bytes.chunks(chunk) {
                let r = reg.patch_chunk(&loc, at, part).send();
                if !st.check("upload-patch", &r, 202, &what) {
                    return None;
                }
                at += part.len();
                loc = location("upload-patch", &r)?;
            }
            let r = reg.close_upload(&loc, &d).send();
            (st.check("upload-put", &r, 201, &what) && done(&r)).then_some(d)
        }
    }
}

fn stress_push(
    reg: &Registry,
    st: &Stats,
    repo: &str,
    tag: &str,
    bases: &[Vec<u8>],
) -> Option<Image> {
    let mut rng = rand::rng();
    let mut layers: Vec<Vec<u8>> = (0..rng.random_range(1..=3))
        .map(|_| random_bytes(rng.random_range(1..200_000)))
        .collect();
    // Half the images share a base layer with others (uploaded again each
    // time, as a client that does not ask first would).
    if rng.random_bool(0.5) {
        layers.insert(0, bases[rng.random_range(0..bases.len())].clone());
    }
    let config = image_config(&hex::encode(random_bytes(8)), &[]);
    let t0 = Instant::now();
    let cd = stress_upload(reg, st, repo, &config)?;
    let mut blobs = vec![(cd.clone(), config.len())];
    for l in &layers {
        blobs.push((stress_upload(reg, st, repo, l)?, l.len()));
    }
    let refs: Vec<(&str, usize)> = blobs[1..].iter().map(|(d, s)| (d.as_str(), *s)).collect();
    let m = image_manifest(&cd, config.len(), &refs, None, None);
    let digest = sha256(&m);
    // How long the first blob has been waiting for this manifest.
    let took = t0.elapsed();
    st.slowest_push_us
        .fetch_max(took.as_micros() as u64, Relaxed);
    let r = reg.put_manifest(repo, tag, OCI_MANIFEST, &m);
    let what = format!("{repo}:{tag} (blobs pushed over {took:.2?})");
    if !st.check("manifest-put", &r, 201, &what) {
        return None;
    }
    if r.header("docker-content-digest") != Some(digest.as_str()) {
        st.fail(format!("push {repo}:{tag}: digest header {:?}", r.headers));
    }
    Some(Image {
        repo: repo.to_string(),
        tags: vec![tag.to_string()],
        digest,
        manifest: m,
        blobs,
    })
}

fn stress_pull(reg: &Registry, st: &Stats, img: &Image) {
    let tag = &img.tags[rand::rng().random_range(0..img.tags.len())];
    let what = format!("{}:{tag}", img.repo);
    let r = reg.get_manifest(&img.repo, tag);
    if !st.check("manifest-get", &r, 200, &what) {
        return;
    }
    if r.body != img.manifest || r.header("docker-content-digest") != Some(img.digest.as_str()) {
        st.fail(format!("pull {what}: other manifest {}", r.text()));
    }
    for (d, size) in &img.blobs {
        let r = reg.get(&format!("/v2/{}/blobs/{d}", img.repo));
        if st.check("blob-get", &r, 200, &format!("{what} {d}"))
            && (r.body.len() != *size || &sha256(&r.body) != d)
        {
            st.fail(format!("pull {what}: blob {d} has other bytes"));
        }
    }
}

/// One client: push, pull and delete its own images until `until`.
/// Returns (still tagged, deleted by digest, left untagged by tag deletes).
fn stress_client(
    reg: &Registry,
    st: &Stats,
    id: usize,
    until: Instant,
    bases: &[Vec<u8>],
) -> (Vec<Image>, Vec<Image>, Vec<Image>) {
    let repos = ["stress/a", "stress/b", "stress/deep/c"];
    let mut rng = rand::rng();
    let (mut live, mut deleted, mut untagged) = (Vec::<Image>::new(), Vec::new(), Vec::new());
    let mut n = 0;
    while Instant::now() < until {
        let roll = rng.random_range(0..100);
        if live.len() < 3 || (roll < 45 && live.len() < 16) {
            n += 1;
            let repo = repos[rng.random_range(0..repos.len())];
            if let Some(mut img) = stress_push(reg, st, repo, &format!("c{id}-{n}"), bases) {
                // Some images get a second tag on the same manifest.
                if rng.random_bool(0.25) {
                    let tag = format!("c{id}-{n}-also");
                    let r = reg.put_manifest(repo, &tag, OCI_MANIFEST, &img.manifest);
                    if st.check("manifest-put", &r, 201, &format!("{repo}:{tag}")) {
                        img.tags.push(tag);
                    }
                }
                live.push(img);
            }
        } else if roll < 80 {
            let img = &live[rng.random_range(0..live.len())];
            stress_pull(reg, st, img);
        } else {
            let mut img = live.swap_remove(rng.random_range(0..live.len()));
            let repo = img.repo.clone();
            if rng.random_bool(0.7) {
                // By digest: the manifest and all its tags go at once.
                let r = reg.delete(&format!("/v2/{repo}/manifests/{}", img.digest));
                if st.check(
                    "manifest-delete",
                    &r,
                    202,
                    &format!("{repo} {}", img.digest),
                ) {
                    for t in &img.tags {
                        let r = reg.get(&format!("/v2/{repo}/manifests/{t}"));
                        st.check("manifest-get-deleted", &r, 404, &format!("{repo}:{t}"));
                    }
                    let r = reg.get(&format!("/v2/{repo}/manifests/{}", img.digest));
                    st.check("manifest-get-deleted", &r, 404, &img.digest);
                }
                deleted.push(img);
            } else {
                // By tag: only that tag goes.
                let t = img.tags.pop().unwrap();
                let r = reg.delete(&format!("/v2/{repo}/manifests/{t}"));
                st.check("tag-delete", &r, 202, &format!("{repo}:{t}"));
                let r = reg.get(&format!("/v2/{repo}/manifests/{t}"));
                st.check("manifest-get-deleted", &r, 404, &format!("{repo}:{t}"));
                if img.tags.is_empty() {
                    untagged.push(img);
                } else {
                    live.push(img);
                }
            }
        }
    }
    (live, deleted, untagged)
}

#[test]
fn gc_stress_push_pull_delete() {
    let _machine = exclusive();
    let reg = Registry::start_with(gc_every("2s", "1s"));
    let clients = 4;
    let secs: u64 = std::env::var("SKIFF_GC_STRESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let st = Stats::default();
    let bases: Vec<Vec<u8>> = (0..3).map(|_| random_bytes(50_000)).collect();
    let started = Instant::now();
    let until = started + Duration::from_secs(secs);
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|id| {
                let (reg, st, bases) = (&reg, &st, &bases);
                s.spawn(move || stress_client(reg, st, id, until, bases))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let elapsed = started.elapsed();
    let live: Vec<Image> = results.iter().flat_map(|r| r.0.clone()).collect();
    let deleted: Vec<Image> = results.iter().flat_map(|r| r.1.clone()).collect();
    let untagged: Vec<Image> = results.iter().flat_map(|r| r.2.clone()).collect();
    let metrics = reg.get("/metrics").text();
    let counter = |name: &str| metric(&metrics, name).unwrap_or(0);
    println!(
        "gc stress: {clients} clients for {elapsed:.1?}: {} requests, {} failed; by kind {:?}",
        st.requests.load(Relaxed),
        st.failures.lock().unwrap().len(),
        st.by_kind.lock().unwrap()
    );
    println!(
        "gc stress: {} images still tagged, {} deleted by digest, {} left untagged; \
         slowest push {:.2}s; during the load gc ran {} times, removed {} manifests and {} blobs",
        live.len(),
        deleted.len(),
        untagged.len(),
        st.slowest_push_us.load(Relaxed) as f64 / 1e6,
        counter("skiff_gc_runs_total"),
        counter("skiff_gc_manifests_removed_total"),
        counter("skiff_gc_blobs_removed_total"),
    );
    let failures = st.failures.lock().unwrap().clone();
    assert!(failures.is_empty(), "failed requests: {failures:#?}");
    assert!(
        !deleted.is_empty() && !untagged.is_empty() && !live.is_empty(),
        "the load exercised too little"
    );
    assert_eq!(counter("skiff_gc_failures_total"), 0, "{metrics}");

    // After the delay and a few passes: what was deleted is gone, on disk and
    // over the API; what is tagged pulls whole.
    let collectable: Vec<&Image> = deleted.iter().chain(&untagged).collect();
    let needed: BTreeSet<(String, String)> = live
        .iter()
        .flat_map(|i| i.blobs.iter().map(|(d, _)| (i.repo.clone(), d.clone())))
        .collect();
    wait_gone_but(
        &reg,
        "gc has collected every deleted and untagged image",
        Duration::from_secs(30),
        &collectable,
        &needed,
    );
    let shared_kept = collectable
        .iter()
        .flat_map(|i| i.blobs.iter().map(|(d, _)| (i.repo.clone(), d.clone())))
        .filter(|b| needed.contains(b))
        .collect::<BTreeSet<_>>()
        .len();
    println!("gc stress: {shared_kept} blobs of deleted images stay, still needed by tagged ones");
    for img in &live {
        for t in &img.tags {
            assert_pulls(&reg, img, t);
        }
    }
    for repo in ["stress/a", "stress/b", "stress/deep/c"] {
        let want: BTreeSet<(String, Option<String>)> = live
            .iter()
            .filter(|i| i.repo == repo)
            .flat_map(|i| i.tags.iter().map(|t| (i.digest.clone(), Some(t.clone()))))
            .collect();
        if want.is_empty() {
            continue;
        }
        let have: BTreeSet<_> = index_entries(&reg, repo).into_iter().collect();
        assert_eq!(
            have, want,
            "{repo}: index.json holds exactly the tagged images"
        );
        let mut want_tags: Vec<String> = want.iter().filter_map(|(_, t)| t.clone()).collect();
        want_tags.sort();
        assert_eq!(tags(&reg, repo), want_tags);
        assert_layout_complete(&reg, repo);
        // No upload session was left behind.
        let left = names_in(&reg.root().join(repo).join(".uploads"));
        assert!(left.is_empty(), "{repo}: uploads left: {left:?}");
        // Nothing is stored that no tagged image needs.
        let needed: BTreeSet<String> = live
            .iter()
            .filter(|i| i.repo == repo)
            .flat_map(|i| {
                i.blobs
                    .iter()
                    .map(|(d, _)| hex_of(d).to_string())
                    .chain([hex_of(&i.digest).to_string()])
            })
            .collect();
        let stored = names_in(&reg.root().join(repo).join("blobs/sha256"));
        assert_eq!(stored, needed, "{repo}: blobs on disk");
    }
}

// ---------------------------------------------------------------- 2. gc delay

#[test]
fn nothing_younger_than_the_delay_is_collected() {
    let _machine = shared();
    // A delay no test run comes near: what is pushed here is young until it
    // is aged by hand, however slow the machine.
    let reg = Registry::start_with(gc_every("1h", "1s"));
    let repo = "young/app";
    let a = random_bytes(1000);
    let b = random_bytes(70_000);
    let c = random_bytes(2000);
    let (da, db, dc) = (
        reg.push_blob(repo, &a),
        reg.push_blob(repo, &b),
        reg.push_blob(repo, &c),
    );
    // An upload started, given one chunk, and abandoned.
    let loc = reg.open_upload(repo).location();
    let r = reg
        .req("PATCH", &loc)
        .header("Content-Range", "0-9")
        .body(b"0123456789")
        .send();
    assert_eq!(r.status, 202, "{}", r.text());
    let loc = r.location();
    let uploads = reg.root().join(repo).join(".uploads");

    let alive = |d: &str, bytes: &[u8]| {
        let r = reg.get(&format!("/v2/{repo}/blobs/{d}"));
        match r.status {
            200 => {
                assert_eq!(r.body, bytes, "blob {d}");
                true
            }
            404 => {
                assert!(!reg.blob_path(repo, d).exists(), "{d} is on disk");
                false
            }
            x => panic!("GET blob {d}: {x}"),
        }
    };
    let upload_alive = || {
        let s = reg.get(&loc);
        match s.status {
            204 => {
                assert_eq!(s.header("range"), Some("0-9"));
                true
            }
            404 => {
                assert_eq!(s.error_code(), "BLOB_UPLOAD_UNKNOWN");
                false
            }
            x => panic!("upload status: {x} {}", s.text()),
        }
    };

    // Whole gc passes run (by the server, and one by `skiff gc`), and spare
    // everything: none of it is as old as the delay.
    let before = gc_counters(&reg);
    let after = wait_gc_pass(&reg, 1);
    assert_eq!(
        row(&gc_pass(&reg), repo),
        GcRow::default(),
        "skiff gc removed something young"
    );
    assert_eq!(
        (after.blobs_removed, after.manifests_removed),
        (before.blobs_removed, before.manifests_removed),
        "the server's gc removed something young"
    );
    for (d, bytes) in [(&da, &a), (&db, &b), (&dc, &c)] {
        assert!(alive(d, bytes), "{d} was collected inside the delay");
    }
    assert!(upload_alive(), "the upload was collected inside the delay");

    // Once a, b and the upload are older than the delay they go; c, still
    // young, stays through passes that began after they went.
    age_file(&reg.blob_path(repo, &da), LONG_AGO);
    age_file(&reg.blob_path(repo, &db), LONG_AGO);
    age_files_under(&uploads, LONG_AGO);
    // Polled with HEAD: a GET that races the removal may have its 200 cut
    // short (the file goes between the stat that set Content-Length and
    // the read), which is what this test waits for, not what it checks.
    let gone = |d: &str| match reg.head(&format!("/v2/{repo}/blobs/{d}")).status {
        200 => false,
        404 => true,
        x => panic!("HEAD blob {d}: {x}"),
    };
    let collected = eventually(Duration::from_secs(60), || {
        gone(&da) && gone(&db) && !upload_alive()
    });
    assert!(!alive(&da, &a) && !alive(&db, &b), "collected, then back");
    assert!(collected, "what is older than the delay was not collected");
    let after_aged = wait_gc_pass(&reg, 1);
    assert_eq!(after_aged.blobs_removed, after.blobs_removed + 2);
    assert!(alive(&dc, &c), "the young blob went with the old ones");
    assert!(!reg.blob_path(repo, &da).exists());
    assert!(!reg.blob_path(repo, &db).exists());
    assert!(reg.blob_path(repo, &dc).exists());
    assert!(
        names_in(&uploads).is_empty(),
        "upload files left in {}",
        uploads.display()
    );
}

/// A client pushes `layer` (already stored somewhere, and old) and a new
/// config; a whole gc pass (`pass`) runs before it pushes the manifest that
/// needs them. The blobs must have survived it, the manifest push must
/// succeed, and the image must stay whole.
fn push_old_bytes_again(reg: &Registry, repo: &str, layer: &[u8], pass: impl FnOnce()) -> Image {
    let config = image_config(&hex::encode(random_bytes(8)), &[]);
    let cd = reg.push_blob(repo, &config);
    let ld = reg.push_blob(repo, layer);
    pass();
    for (d, size) in [(&cd, config.len()), (&ld, layer.len())] {
        let r = reg.head(&format!("/v2/{repo}/blobs/{d}"));
        assert_eq!(
            r.status, 200,
            "{repo}: {d}, pushed just before the gc pass, was collected"
        );
        assert_eq!(r.header("content-length"), Some(size.to_string().as_str()));
    }
    let m = image_manifest(&cd, config.len(), &[(&ld, layer.len())], None, None);
    let r = reg.put_manifest(repo, "new", OCI_MANIFEST, &m);
    assert_eq!(
        r.status,
        201,
        "{repo}: a manifest pushed within the delay after its blobs: {}",
        r.text()
    );
    Image {
        repo: repo.into(),
        tags: vec!["new".into()],
        digest: sha256(&m),
        manifest: m,
        blobs: vec![(cd, config.len()), (ld, layer.len())],
    }
}

/// A registry whose only gc passes are the `skiff gc` runs of [`gc_pass`],
/// with a delay nothing here comes near unless aged by hand.
fn registry_for_gc_passes() -> Registry {
    Registry::start_with(|cfg| {
        cfg["storage"]["gc"] = json!(false);
        cfg["storage"]["gcDelay"] = json!("1h");
        cfg["storage"]["retention"]["delay"] = json!("1h");
    })
}

/// Bytes stored long ago in another repository (dedupe links the new copy
/// to the old one) are as young as the push that brings them here.
#[test]
fn a_blob_linked_from_another_repository_is_young() {
    let _machine = shared();
    let reg = registry_for_gc_passes();
    let (src_repo, repo) = ("again/src", "again/linked");
    let layer = random_bytes(5000);
    let src = push_image_with(&reg, src_repo, "v1", std::slice::from_ref(&layer), None);
    age_files_under(&reg.root().join(src_repo).join("blobs"), LONG_AGO);
    // Old garbage in the repository the layer goes to: the pass must take
    // it, so it is seen to sweep there.
    let stray = random_bytes(300);
    let stray_d = reg.push_blob(repo, &stray);
    age_file(&reg.blob_path(repo, &stray_d), LONG_AGO);

    let img = push_old_bytes_again(&reg, repo, &layer, || {
        let table = gc_pass(&reg);
        assert_eq!(row(&table, src_repo), GcRow::default(), "{table:?}");
        assert_eq!(
            row(&table, repo),
            GcRow {
                blobs: 1,
                bytes_freed: stray.len() as u64,
                ..GcRow::default()
            },
            "{table:?}"
        );
    });
    assert!(!reg.blob_path(repo, &stray_d).exists());
    assert_pulls(&reg, &img, "new");
    assert_pulls(&reg, &src, "v1");
    assert_layout_complete(&reg, repo);

    // Now that the manifest holds them, a pass has nothing to take.
    let table = gc_pass(&reg);
    assert_eq!(row(&table, src_repo), GcRow::default(), "{table:?}");
    assert_eq!(row(&table, repo), GcRow::default(), "{table:?}");
    assert_pulls(&reg, &img, "new");
    assert_pulls(&reg, &src, "v1");
}

/// Bytes left behind in this repository by a deleted image (old, and no
/// longer referenced) are as young as the push that uploads them again.
#[test]
fn a_blob_uploaded_again_is_young() {
    let _machine = shared();
    let reg = registry_for_gc_passes();
    let repo = "again/same";
    let layer = random_bytes(6000);
    let old = push_image_with(&reg, repo, "old", std::slice::from_ref(&layer), None);
    let keep = small_image(&reg, repo, "keep");
    let r = reg.delete(&format!("/v2/{repo}/manifests/{}", old.digest));
    assert_eq!(r.status, 202);
    // What the deleted image left on disk, made old: its layer, which the
    // client uploads again, and the rest, which the pass must take.
    let (layer_d, _) = old.blobs[1].clone();
    let left: Vec<(String, u64)> = std::iter::once(old.digest.clone())
        .chain(old.blobs.iter().map(|(d, _)| d.clone()))
        .map(|d| (reg.blob_path(repo, &d), d))
        .filter(|(p, _)| p.exists())
        .map(|(p, d)| {
            age_file(&p, LONG_AGO);
            (d, std::fs::metadata(&p).unwrap().len())
        })
        .collect();
    assert!(left.iter().any(|(d, _)| *d == layer_d), "{left:?}");
    let doomed: Vec<&(String, u64)> = left.iter().filter(|(d, _)| *d != layer_d).collect();
    assert!(!doomed.is_empty(), "{left:?}");

    let img = push_old_bytes_again(&reg, repo, &layer, || {
        let table = gc_pass(&reg);
        assert_eq!(
            row(&table, repo),
            GcRow {
                blobs: doomed.len() as u64,
                bytes_freed: doomed.iter().map(|(_, n)| n).sum(),
                ..GcRow::default()
            },
            "{table:?}"
        );
    });
    for (d, _) in &doomed {
        assert!(!reg.blob_path(repo, d).exists(), "{d} was not collected");
    }
    assert_pulls(&reg, &img, "new");
    assert_pulls(&reg, &keep, "keep");
    assert_layout_complete(&reg, repo);

    let table = gc_pass(&reg);
    assert_eq!(row(&table, repo), GcRow::default(), "{table:?}");
    assert_pulls(&reg, &img, "new");
    assert_pulls(&reg, &keep, "keep");
}

// ---------------------------------------------------------------- 3. untagged

#[test]
fn untagged_manifests_go_after_the_delay() {
    let _machine = shared();
    // Nothing here is as old as the delay until it is aged by hand.
    let reg = Registry::start_with(|cfg| {
        gc_every("1h", "1s")(cfg);
        cfg["storage"]["retention"]["policies"] = json!([
            {"repositories": ["keep/**"], "deleteUntagged": false},
        ]);
    });
    let repo = "untag/app";
    // Pushed by digest, never tagged.
    let by_digest = small_image(&reg, repo, BY_DIGEST);
    // Tagged, then its only tag deleted.
    let untagged_later = small_image(&reg, repo, "tmp");
    assert_eq!(reg.delete(&format!("/v2/{repo}/manifests/tmp")).status, 202);
    // Left behind when its tag moved.
    let moved_from = small_image(&reg, repo, "moving");
    let moved_to = small_image(&reg, repo, "moving");
    // Two image manifests by digest, held by a tagged index.
    let c1 = small_image(&reg, repo, BY_DIGEST);
    let c2 = small_image(&reg, repo, BY_DIGEST);
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": c1.digest, "size": c1.manifest.len(),
             "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": OCI_MANIFEST, "digest": c2.digest, "size": c2.manifest.len(),
             "platform": {"architecture": "arm64", "os": "linux"}},
        ],
    }))
    .unwrap();
    let r = reg.put_manifest(repo, "multi", OCI_INDEX, &index);
    assert_eq!(r.status, 201, "{}", r.text());
    // The same kinds of untagged manifests where the policy keeps them.
    let kept_lone = small_image(&reg, "keep/app", BY_DIGEST);
    let kept_moved = small_image(&reg, "keep/app", "moving");
    let kept_now = small_image(&reg, "keep/app", "moving");

    // Still there after whole gc passes, inside the delay.
    let before = gc_counters(&reg);
    let after = wait_gc_pass(&reg, 2);
    assert_eq!(
        (after.manifests_removed, after.blobs_removed),
        (before.manifests_removed, before.blobs_removed),
        "gc removed something inside the delay"
    );
    for img in [&by_digest, &untagged_later, &moved_from, &c1, &c2] {
        assert_present(&reg, img);
    }
    let untagged_in_index = |repo: &str| -> Vec<String> {
        index_entries(&reg, repo)
            .into_iter()
            .filter(|(_, t)| t.is_none())
            .map(|(d, _)| d)
            .collect()
    };
    assert!(untagged_in_index(repo).contains(&moved_from.digest));

    // Everything older than the delay: the untagged manifests go.
    for r in [repo, "keep/app"] {
        age_files_under(&reg.root().join(r).join("blobs"), LONG_AGO);
    }
    wait_gone(
        &reg,
        "the untagged manifests are collected",
        Duration::from_secs(60),
        &[&by_digest, &untagged_later, &moved_from],
    );
    // One more pass over everything.
    wait_gc_pass(&reg, 2);
    let mut left = untagged_in_index(repo);
    left.sort();
    let mut want = vec![c1.digest.clone(), c2.digest.clone()];
    want.sort();
    assert_eq!(left, want, "only the index's children stay untagged");
    for img in [&c1, &c2, &moved_to] {
        assert_present(&reg, img);
    }
    assert_pulls(&reg, &moved_to, "moving");
    let r = reg
        .req("GET", &format!("/v2/{repo}/manifests/multi"))
        .header("Accept", OCI_INDEX)
        .send();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, index);
    assert_eq!(tags(&reg, repo), ["moving", "multi"]);
    assert_layout_complete(&reg, repo);

    // deleteUntagged: false keeps them all.
    for img in [&kept_lone, &kept_moved, &kept_now] {
        assert_present(&reg, img);
    }
    assert_eq!(untagged_in_index("keep/app").len(), 2);
    assert_layout_complete(&reg, "keep/app");
}

// ---------------------------------------------------------------- 4. referrers

#[test]
fn referrers_of_missing_subjects_are_collected() {
    let _machine = shared();
    let reg = Registry::start_with(|cfg| {
        gc_every("2s", "1s")(cfg);
        cfg["storage"]["retention"]["policies"] = json!([
            // Untagged manifests stay, but referrers of lost subjects still go.
            {"repositories": ["refs/keepuntagged"], "deleteUntagged": false},
            // Referrers stay whatever became of their subject.
            {"repositories": ["refs/keepreferrers"], "deleteReferrers": false},
        ]);
    });
    let mut survivors = Vec::new();
    let mut doomed = Vec::new();
    for repo in ["refs/app", "refs/keepuntagged", "refs/keepreferrers"] {
        let live = small_image(&reg, repo, "live");
        let dead = small_image(&reg, repo, "dead");
        let refer = |subject: &Image| {
            let sig = random_bytes(200);
            push_image_with(
                &reg,
                repo,
                BY_DIGEST,
                &[sig],
                Some((subject.digest.as_str(), subject.manifest.len())),
            )
        };
        let live_ref = refer(&live);
        let dead_ref = refer(&dead);
        assert_eq!(
            referrer_digests(&reg, repo, &live.digest),
            [live_ref.digest.as_str()]
        );
        assert_eq!(
            referrer_digests(&reg, repo, &dead.digest),
            [dead_ref.digest.as_str()]
        );
        let r = reg.delete(&format!("/v2/{repo}/manifests/{}", dead.digest));
        assert_eq!(r.status, 202);
        survivors.push((live, live_ref));
        if repo == "refs/keepreferrers" {
            survivors.push((dead.clone(), dead_ref));
        } else {
            doomed.push((dead, dead_ref));
        }
    }
    let doomed_refs: Vec<&Image> = doomed.iter().map(|(_, r)| r).collect();
    wait_gone(
        &reg,
        "referrers of deleted subjects are collected",
        Duration::from_secs(20),
        &doomed_refs,
    );
    // One more pass over everything.
    wait_gc_pass(&reg, 3);
    for (subject, r) in &doomed {
        assert!(
            referrer_digests(&reg, &r.repo, &subject.digest).is_empty(),
            "{}: the referrers API still lists {}",
            r.repo,
            r.digest
        );
        assert!(
            !index_entries(&reg, &r.repo)
                .iter()
                .any(|(d, _)| d == &r.digest),
            "{}: index.json still lists {}",
            r.repo,
            r.digest
        );
        assert!(gone(&reg, subject));
        let list = reg
            .root()
            .join(&r.repo)
            .join(".referrers/sha256")
            .join(hex_of(&subject.digest));
        assert!(!list.exists(), "{} left behind", list.display());
    }
    for (subject, r) in &survivors {
        assert_present(&reg, r);
        assert_eq!(
            referrer_digests(&reg, &r.repo, &subject.digest),
            [r.digest.as_str()],
            "{}",
            r.repo
        );
        if subject.tags.iter().any(|t| t == "live") {
            assert_pulls(&reg, subject, "live");
        }
        assert_layout_complete(&reg, &r.repo);
    }
}

// ---------------------------------------------------------------- 5. keepTags

#[test]
fn keep_tags_retention_keeps_the_most_recent() {
    let _machine = shared();
    let reg = Registry::start_with(|cfg| {
        cfg["storage"]["gcDelay"] = json!("0s");
        cfg["storage"]["retention"]["delay"] = json!("0s");
        cfg["storage"]["retention"]["policies"] = json!([
            {"repositories": ["ret/**"],
             "keepTags": [{"patterns": ["^v"], "mostRecentlyPushedCount": 2}]},
        ]);
    });
    let repo = "ret/app";
    let mut pushed = BTreeMap::new();
    for t in ["v1", "v2", "v3", "dev"] {
        pushed.insert(t, small_image(&reg, repo, t));
        std::thread::sleep(Duration::from_millis(300));
    }
    // Another repository, which no policy names, keeps every tag.
    let other = small_image(&reg, "elsewhere/app", "dev");
    assert_eq!(tags(&reg, repo), ["dev", "v1", "v2", "v3"]);

    let (ok, out) = skiff("gc", &reg.config_path());
    println!("{out}");
    assert!(ok);
    assert_eq!(tags(&reg, repo), ["v2", "v3"]);
    for t in ["v2", "v3"] {
        assert_pulls(&reg, &pushed[t], t);
    }
    for t in ["v1", "dev"] {
        assert_eq!(reg.get(&format!("/v2/{repo}/manifests/{t}")).status, 404);
        assert!(gone(&reg, &pushed[t]), "{t} and its blobs are gone");
    }
    let entries = index_entries(&reg, repo);
    assert_eq!(
        entries.len(),
        2,
        "index.json holds only v2 and v3: {entries:?}"
    );
    assert_layout_complete(&reg, repo);
    assert_pulls(&reg, &other, "dev");

    // A second pass changes nothing.
    let (ok, _) = skiff("gc", &reg.config_path());
    assert!(ok);
    assert_eq!(tags(&reg, repo), ["v2", "v3"]);
    assert_eq!(index_entries(&reg, repo).len(), 2);
    assert_layout_complete(&reg, repo);
}

// ---------------------------------------------------------------- 6. empty repositories

#[test]
fn empty_repositories_disappear() {
    let _machine = shared();
    let reg = Registry::start_with(gc_every("1s", "1s"));
    let img = small_image(&reg, "empty/one/app", "v1");
    let stay = small_image(&reg, "empty/two", "v1");
    assert!(catalog(&reg).contains(&"empty/one/app".to_string()));
    let r = reg.delete(&format!("/v2/empty/one/app/manifests/{}", img.digest));
    assert_eq!(r.status, 202);
    let emptied = eventually(Duration::from_secs(20), || {
        !reg.root().join("empty/one").exists()
    });
    assert!(
        emptied,
        "timed out waiting until the emptied repository is gone"
    );
    assert!(gone(&reg, &img));
    let cat = catalog(&reg);
    assert!(!cat.contains(&"empty/one/app".to_string()), "{cat:?}");
    assert!(cat.contains(&"empty/two".to_string()), "{cat:?}");
    assert_eq!(
        reg.get("/v2/empty/one/app/tags/list").status,
        404,
        "an unknown repository"
    );
    assert_pulls(&reg, &stay, "v1");
    // Pushing to the name again starts a fresh repository.
    let again = small_image(&reg, "empty/one/app", "v2");
    assert_pulls(&reg, &again, "v2");
    assert_eq!(tags(&reg, "empty/one/app"), ["v2"]);
}

// ---------------------------------------------------------------- 7. foreign layouts

/// A tar archive holding one file, made by `tar`.
fn tar_layer(dir: &Path, content: &[u8]) -> Vec<u8> {
    let src = dir.join("tar-src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("hello.txt"), content).unwrap();
    let out = dir.join("layer.tar");
    let st = Command::new("tar")
        .args(["--sort=name", "--mtime=@0", "--owner=0", "--group=0", "-cf"])
        .arg(&out)
        .arg("-C")
        .arg(&src)
        .arg("hello.txt")
        .status()
        .expect("tar");
    assert!(st.success());
    std::fs::read(out).unwrap()
}

fn tool(name: &str, args: &[&str]) -> String {
    let out = Command::new(name)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{name} is required for this test: {e}"));
    assert!(
        out.status.success(),
        "{name} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn layout_made_by_skopeo_is_collected_correctly() {
    let _machine = shared();
    let mut reg = Registry::start_with(|cfg| {
        cfg["storage"]["gcDelay"] = json!("0s");
        cfg["storage"]["retention"]["delay"] = json!("0s");
    });
    let work = tempfile::tempdir().unwrap();
    let layer = tar_layer(work.path(), b"hello from a foreign layout\n");
    let src = push_image_with(&reg, "src/app", "1.0", &[layer], None);

    // skopeo makes the layout from what the registry serves.
    let dir = work.path().join("layout");
    let dest = format!("oci:{}:1.0", dir.display());
    tool(
        "skopeo",
        &[
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{}/src/app:1.0", reg.host()),
            &dest,
        ],
    );
    // Garbage beside it: an unreferenced blob and an untagged manifest entry
    // (with its own config and layer).
    let put = |bytes: &[u8]| -> String {
        let d = sha256(bytes);
        std::fs::write(dir.join("blobs/sha256").join(hex_of(&d)), bytes).unwrap();
        d
    };
    let stray = random_bytes(4096);
    let stray_d = put(&stray);
    let ul = random_bytes(512);
    let uc = image_config("untagged", &[sha256(&ul)]);
    let (uld, ucd) = (put(&ul), put(&uc));
    let um = image_manifest(&ucd, uc.len(), &[(&uld, ul.len())], None, None);
    let umd = put(&um);
    let index_path = dir.join("index.json");
    let mut index = read_json(&index_path);
    index["manifests"]
        .as_array_mut()
        .unwrap()
        .push(json!({"mediaType": OCI_MANIFEST, "digest": umd, "size": um.len()}));
    std::fs::write(&index_path, serde_json::to_vec_pretty(&index).unwrap()).unwrap();

    // Move it under the root (files keep their mtimes: they are old).
    let placed = reg.root().join("other/app");
    std::fs::create_dir_all(placed.parent().unwrap()).unwrap();
    let st = Command::new("cp")
        .arg("-a")
        .arg(&dir)
        .arg(&placed)
        .status()
        .unwrap();
    assert!(st.success());
    let foreign = {
        let idx = &index["manifests"][0];
        assert_eq!(
            idx["annotations"]["org.opencontainers.image.ref.name"],
            "1.0"
        );
        let digest = idx["digest"].as_str().unwrap().to_string();
        let manifest = std::fs::read(dir.join("blobs/sha256").join(hex_of(&digest))).unwrap();
        let m: Value = serde_json::from_slice(&manifest).unwrap();
        let desc = |d: &Value| {
            (
                d["digest"].as_str().unwrap().to_string(),
                d["size"].as_u64().unwrap() as usize,
            )
        };
        let mut blobs = vec![desc(&m["config"])];
        blobs.extend(m["layers"].as_array().unwrap().iter().map(desc));
        Image {
            repo: "other/app".into(),
            tags: vec!["1.0".into()],
            digest,
            manifest,
            blobs,
        }
    };
    let untagged = Image {
        repo: "other/app".into(),
        tags: vec![],
        digest: umd.clone(),
        manifest: um.clone(),
        blobs: vec![(ucd.clone(), uc.len()), (uld.clone(), ul.len())],
    };
    // Served as it is; listed once the catalog's index is reconciled with
    // the layouts, as at every start.
    assert_eq!(reg.get_manifest("other/app", "1.0").status, 200);
    reg.restart();
    assert!(eventually(Duration::from_secs(10), || catalog(&reg)
        .contains(&"other/app".to_string())));
    assert_pulls(&reg, &foreign, "1.0");
    assert_present(&reg, &untagged);
    assert_eq!(
        reg.get(&format!("/v2/other/app/blobs/{stray_d}")).status,
        200
    );

    let (ok, out) = skiff("gc", &reg.config_path());
    println!("{out}");
    assert!(ok);
    assert_pulls(&reg, &foreign, "1.0");
    assert_pulls(&reg, &src, "1.0");
    assert!(gone(&reg, &untagged), "the untagged manifest and its blobs");
    assert!(!reg.blob_path("other/app", &stray_d).exists());
    assert_eq!(
        reg.get(&format!("/v2/other/app/blobs/{stray_d}")).status,
        404
    );
    assert_eq!(
        index_entries(&reg, "other/app"),
        [(foreign.digest.clone(), Some("1.0".to_string()))]
    );
    assert_layout_complete(&reg, "other/app");

    // Other tools still read it.
    let p = placed.to_str().unwrap();
    let ls = tool("umoci", &["ls", "--layout", p]);
    assert_eq!(ls.trim(), "1.0", "umoci ls");
    let inspect = tool("skopeo", &["inspect", &format!("oci:{p}:1.0")]);
    let v: Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(v["Digest"], json!(foreign.digest), "{inspect}");
    assert_eq!(v["Layers"], json!([foreign.blobs[1].0]), "{inspect}");
    let raw = tool("skopeo", &["inspect", "--raw", &format!("oci:{p}:1.0")]);
    assert_eq!(raw.as_bytes(), foreign.manifest.as_slice());
}

// ---------------------------------------------------------------- 8. costs

/// A metric as the registry reports it now (0 if it does not).
fn metric_now(reg: &Registry, name: &str) -> u64 {
    metric(&reg.get("/metrics").text(), name).unwrap_or(0)
}

/// Small manifest GETs one after another; each must succeed. Latencies in µs.
fn manifest_gets(reg: &Registry, img: &Image, n: usize) -> Vec<u64> {
    let path = format!("/v2/{}/manifests/{}", img.repo, img.tags[0]);
    (0..n)
        .map(|_| {
            let t = Instant::now();
            let r = reg.req("GET", &path).header("Accept", OCI_MANIFEST).send();
            let us = t.elapsed().as_micros() as u64;
            assert_eq!(r.status, 200, "{}", r.text());
            assert_eq!(r.body, img.manifest);
            us
        })
        .collect()
}

fn percentiles(mut v: Vec<u64>) -> String {
    v.sort_unstable();
    let at = |p: f64| v[((v.len() as f64 * p) as usize).min(v.len() - 1)] as f64 / 1000.0;
    format!(
        "n={} p50={:.2}ms p90={:.2}ms p99={:.2}ms max={:.2}ms",
        v.len(),
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0)
    )
}

#[test]
fn measure_gc_and_scrub_costs() {
    let _machine = exclusive();
    let blobs: usize = std::env::var("SKIFF_GC_MEASURE_BLOBS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(16);
    const BLOB: usize = 64 << 20;
    // The root outlives the registries, so a second one can serve it.
    let root = tempfile::tempdir().unwrap();
    let root_dir = root.path().to_path_buf();
    let at_root = |cfg: &mut Value| cfg["storage"]["rootDirectory"] = json!(root_dir);
    let reg = Registry::start_with(at_root);

    let started = Instant::now();
    let mut images = Vec::new();
    for i in 0..blobs.div_ceil(4) {
        let layers: Vec<Vec<u8>> = (0..4.min(blobs - i * 4))
            .map(|_| random_bytes(BLOB))
            .collect();
        images.push(push_image_with(
            &reg,
            &format!("big/app{i}"),
            "v1",
            &layers,
            None,
        ));
    }
    let small = small_image(&reg, "small/app", "v1");
    let total = (blobs * BLOB) as f64;
    let gib = total / (1u64 << 30) as f64;
    println!(
        "measure: pushed {blobs} x 64 MiB ({gib:.2} GiB) in {:.1?}",
        started.elapsed()
    );

    let expected_scan = (blobs * BLOB) as u64 + {
        // configs, manifests and the small image's layer
        images
            .iter()
            .chain([&small])
            .map(|i| i.manifest.len() as u64 + i.blobs[0].1 as u64)
            .sum::<u64>()
            + small.blobs[1].1 as u64
    };
    // The time a command reports for its own pass (its last line ends "in <time>").
    let own_time = |out: &str| -> String {
        out.lines()
            .last()
            .and_then(|l| l.rsplit(" in ").next())
            .unwrap_or("?")
            .to_string()
    };
    // `skiff <cmd>`, which must succeed: its wall time and output.
    let timed = |cmd: &str| {
        let t = Instant::now();
        let (ok, out) = skiff(cmd, &reg.config_path());
        let wall = t.elapsed();
        assert!(ok, "{out}");
        (wall, out)
    };
    let (mut gc_runs, mut scrub_runs) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let (wall, out) = timed("gc");
        assert!(
            out.contains(&format!("{expected_scan} bytes of blobs scanned")),
            "gc scanned everything: {out}"
        );
        assert!(
            out.lines()
                .skip(1)
                .take(5)
                .all(|l| l.ends_with(" 0       0")),
            "gc removed nothing: {out}"
        );
        gc_runs.push((wall, own_time(&out)));

        let (wall, out) = timed("scrub");
        assert!(
            out.contains(&format!(
                "{expected_scan} bytes of blobs checked, {expected_scan} bytes hashed"
            )),
            "scrub hashed everything: {out}"
        );
        scrub_runs.push((wall, own_time(&out)));
    }
    for img in images.iter().chain([&small]) {
        assert_pulls_head(&reg, img);
    }

    let idle = manifest_gets(&reg, &small, 1000);

    // While `skiff scrub` hashes the same store (another process): only the
    // requests sent while it runs count.
    let mut during_cli = Vec::new();
    while during_cli.len() < 500 {
        let mut child = skiff_command("scrub", &reg.config_path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        while child.try_wait().unwrap().is_none() {
            during_cli.extend(manifest_gets(&reg, &small, 5));
        }
        assert!(child.wait().unwrap().success());
    }
    drop(reg);

    // The same store served with a scrub pass every second, in the server.
    let reg = Registry::start_with(|cfg| {
        at_root(cfg);
        cfg["extensions"] = json!({"scrub": {"enable": true, "interval": "1s"}});
    });
    let runs_before = metric_now(&reg, "skiff_scrub_runs_total");
    let t = Instant::now();
    let mut busy = Vec::new();
    while busy.len() < 500 || metric_now(&reg, "skiff_scrub_runs_total") < runs_before + 3 {
        busy.extend(manifest_gets(&reg, &small, 100));
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "scrub did not finish three passes"
        );
    }
    let window = t.elapsed();
    let runs = metric_now(&reg, "skiff_scrub_runs_total") - runs_before;
    let checked = metric_now(&reg, "skiff_scrub_bytes_checked_total");
    assert_eq!(metric_now(&reg, "skiff_scrub_repositories_affected"), 0);
    assert!(checked >= 3 * expected_scan);
    for img in images.iter().chain([&small]) {
        assert_pulls_head(&reg, img);
    }

    let scrub_wall = scrub_runs.iter().map(|(w, _)| *w).min().unwrap();
    println!(
        "measure: {blobs} blobs of 64 MiB ({gib:.2} GiB) + {} small ones",
        images.len() * 2 + 3
    );
    let gc_wall = gc_runs.iter().map(|(w, _)| *w).min().unwrap();
    println!(
        "measure: skiff gc, 3 runs (process wall time, pass time): {:?} \
         => {:.3} s per GiB scanned (process start included)",
        gc_runs
            .iter()
            .map(|(w, o)| format!("{w:.1?} ({o})"))
            .collect::<Vec<_>>(),
        gc_wall.as_secs_f64() / gib
    );
    println!(
        "measure: skiff scrub, 3 runs (process wall time, pass time): {:?} \
         => {:.3} s per GiB, {:.0} MiB/s (blobs in the page cache)",
        scrub_runs
            .iter()
            .map(|(w, o)| format!("{w:.1?} ({o})"))
            .collect::<Vec<_>>(),
        scrub_wall.as_secs_f64() / gib,
        total / (1 << 20) as f64 / scrub_wall.as_secs_f64()
    );
    println!(
        "measure: manifest GET, nothing in the background: {}",
        percentiles(idle)
    );
    println!(
        "measure: manifest GET, while a `skiff scrub` process hashes the store: {}",
        percentiles(during_cli)
    );
    println!(
        "measure: manifest GET, server scrubbing every 1s: {} (over {window:.1?}, \
         {runs} passes finished, scrub busy ~{:.0}% of the window)",
        percentiles(busy),
        (runs as f64 * scrub_wall.as_secs_f64() / window.as_secs_f64() * 100.0).min(100.0)
    );
}

/// Every blob of `img` exists (HEAD), and its manifest pulls.
fn assert_pulls_head(reg: &Registry, img: &Image) {
    let r = reg.get(&format!("/v2/{}/manifests/{}", img.repo, img.tags[0]));
    assert_eq!(r.status, 200);
    assert_eq!(r.body, img.manifest);
    for (d, size) in &img.blobs {
        let r = reg.head(&format!("/v2/{}/blobs/{d}", img.repo));
        assert_eq!(r.status, 200, "{} {d}", img.repo);
        assert_eq!(r.header("content-length"), Some(size.to_string().as_str()));
    }
}

/// A layout written by another tool lists its referrers in index.json (as
/// untagged manifests) but has no skiff referrer lists. gc must not take them
/// for garbage: it records them under their subjects, and the referrers API
/// lists them from then on.
#[test]
fn referrers_of_a_foreign_layout_survive_gc() {
    let _machine = shared();
    let reg = Registry::start_with(|cfg| {
        // No background passes: the one `skiff gc` below is the only one.
        cfg["storage"]["gc"] = json!(false);
        cfg["storage"]["gcDelay"] = json!("0s");
        cfg["storage"]["retention"]["delay"] = json!("0s");
    });
    let repo = "foreign/refs";
    let subject = small_image(&reg, repo, "v1");
    let sig = push_image_with(
        &reg,
        repo,
        BY_DIGEST,
        &[random_bytes(120)],
        Some((subject.digest.as_str(), subject.manifest.len())),
    );
    assert_eq!(
        referrer_digests(&reg, repo, &subject.digest),
        [sig.digest.as_str()]
    );
    // What another tool would have written: no referrer lists at all.
    std::fs::remove_dir_all(reg.root().join(repo).join(".referrers")).unwrap();
    assert!(referrer_digests(&reg, repo, &subject.digest).is_empty());

    // The pass runs with gc on; the server's own config has it off.
    let cfg_path = reg.data.path().join("gc-once.json");
    let mut cfg = read_json(&reg.config_path());
    cfg["storage"]["gc"] = json!(true);
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let out = skiff_command("gc", &cfg_path).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    assert_eq!(
        referrer_digests(&reg, repo, &subject.digest),
        [sig.digest.as_str()],
        "the referrer is listed again after gc"
    );
    assert_pulls(&reg, &sig, &sig.digest);
    assert_pulls(&reg, &subject, "v1");
}
