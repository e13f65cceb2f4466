//! The storage model, end to end against the real binary: what dedupe costs
//! on disk (measured with the filesystem, not trusted from the registry),
//! convergence of stored blobs when the dedupe setting changes across a
//! restart, subpaths as separate stores behind one API, and the scrub and gc
//! commands beside a running server.

mod common;
use common::*;
use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

// ---------------------------------------------------------------- helpers

/// Deterministic pseudo-random bytes (splitmix64): incompressible, and the
/// same on every run.
fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The ways a client uploads a blob (never a mount).
#[derive(Clone, Copy, Debug)]
enum Upload {
    /// `POST …/uploads/?digest=` with the whole body.
    Monolithic,
    /// `POST`, then `PATCH`es with `Content-Range`, then an empty `PUT ?digest=`.
    Chunks(usize),
    /// `POST`, one `PATCH` sent with `Transfer-Encoding: chunked`, then `PUT`.
    Streamed,
}

fn upload(reg: &Registry, repo: &str, bytes: &[u8], how: Upload) -> String {
    let d = sha256(bytes);
    if let Upload::Monolithic = how {
        assert_eq!(reg.push_blob(repo, bytes), d);
        return d;
    }
    let mut loc = reg.open_upload(repo).location();
    match how {
        Upload::Chunks(size) => {
            let mut at = 0;
            for part in bytes.chunks(size) {
                let r = reg.patch_chunk(&loc, at, part).send();
                assert_eq!(r.status, 202, "PATCH at {at} in {repo}: {}", r.text());
                at += part.len();
                loc = r.location();
            }
        }
        Upload::Streamed => {
            let r = reg.patch_upload(&loc, bytes).chunked().send();
            assert_eq!(r.status, 202, "streamed PATCH in {repo}: {}", r.text());
            loc = r.location();
        }
        Upload::Monolithic => unreachable!(),
    }
    let r = reg.close_upload(&loc, &d).send();
    assert_eq!(r.status, 201, "finish upload in {repo}: {}", r.text());
    d
}

/// Push an image whose one layer is `layer` (uploaded `how`), with a config
/// of its own, tagged `tag`; returns (layer digest, manifest digest).
fn push_layer_image(
    reg: &Registry,
    repo: &str,
    tag: &str,
    layer: &[u8],
    how: Upload,
) -> (String, String) {
    let config = format!("{{\"repo\":\"{repo}\"}}");
    let cd = reg.push_blob(repo, config.as_bytes());
    let ld = upload(reg, repo, layer, how);
    let m = image_manifest(&cd, config.len(), &[(&ld, layer.len())], None, None);
    let r = reg.put_manifest(repo, tag, OCI_MANIFEST, &m);
    assert_eq!(r.status, 201, "manifest in {repo}: {}", r.text());
    (ld, sha256(&m))
}

/// Pull `repo:tag` the way a client does (manifest, then its layer) and
/// check the layer arrives whole.
fn pull_layer(reg: &Registry, repo: &str, tag: &str, layer_digest: &str, size: usize) {
    let m = reg.get_manifest(repo, tag);
    assert_eq!(m.status, 200, "manifest {repo}:{tag}: {}", m.text());
    let layers = m.json()["layers"].clone();
    assert_eq!(layers[0]["digest"], layer_digest, "{repo}:{tag}");
    let layer = reg.pull_blob(repo, layer_digest);
    assert_eq!(layer.len(), size, "layer of {repo} has the wrong length");
}

fn inode(path: &Path) -> u64 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .ino()
}

/// Bytes allocated under `dir`, each inode counted once (what `du` reports).
fn allocated(dir: &Path) -> u64 {
    fn walk(dir: &Path, seen: &mut HashSet<(u64, u64)>, total: &mut u64) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let md = std::fs::symlink_metadata(&path).unwrap();
            if seen.insert((md.dev(), md.ino())) {
                *total += md.blocks() * 512;
            }
            if md.is_dir() {
                walk(&path, seen, total);
            }
        }
    }
    let mut total = 0;
    walk(dir, &mut HashSet::new(), &mut total);
    total
}

/// `du -sk DIR`, in bytes.
fn du(dir: &Path) -> u64 {
    let out = Command::new("du").arg("-sk").arg(dir).output().expect("du");
    assert!(out.status.success(), "du: {:?}", out);
    let text = String::from_utf8_lossy(&out.stdout);
    let kib: u64 = text
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("du printed {text:?}"));
    kib * 1024
}

/// Run `skiff <command> CONFIG`; returns (exit code, stdout, stderr).
fn skiff_cli(command: &str, config: &Path) -> (i32, String, String) {
    let out = skiff_command(command, config)
        .output()
        .expect("running skiff");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// Flip every bit of one byte in the middle of a file, in place (same inode).
fn flip_byte(path: &Path) {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let at = f.metadata().unwrap().len() / 2;
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(at)).unwrap();
    f.read_exact(&mut b).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&[!b[0]]).unwrap();
    f.sync_all().unwrap();
}

/// The line of a CLI report that is about `repo` (its first column).
fn row<'a>(out: &'a str, repo: &str) -> Option<&'a str> {
    out.lines()
        .find(|l| l.split_whitespace().next() == Some(repo))
}

/// A root directory that outlives the registries started on it.
fn with_root(root: &Path, dedupe: bool) -> Registry {
    let root = root.to_path_buf();
    Registry::start_with(move |cfg| {
        cfg["storage"]["rootDirectory"] = serde_json::json!(root);
        cfg["storage"]["dedupe"] = serde_json::json!(dedupe);
    })
}

const UPLOADS: [Upload; 3] = [
    Upload::Monolithic,
    Upload::Chunks(5 * MIB as usize),
    Upload::Streamed,
];

// ---------------------------------------------------------------- dedupe

/// Dedupe on (the default): one 64 MiB layer pushed into ten repositories by
/// ordinary uploads is stored once, and deleting it from one repository
/// leaves the others whole.
#[test]
fn dedupe_on_stores_a_shared_layer_once() {
    let reg = Registry::start();
    let layer = random_bytes(1, 64 * MIB as usize);
    let mut digest = String::new();
    let mut manifests = Vec::new();
    for i in 0..10 {
        let repo = format!("dedupe/r{i}");
        let (ld, md) = push_layer_image(&reg, &repo, "v1", &layer, UPLOADS[i % 3]);
        digest = ld;
        manifests.push(md);
    }
    let root = reg.root();
    let first = inode(&blob_path(&root, "dedupe/r0", &digest));
    for i in 1..10 {
        assert_eq!(
            inode(&blob_path(&root, &format!("dedupe/r{i}"), &digest)),
            first,
            "r{i}'s layer is a separate file"
        );
    }
    let (walked, du) = (allocated(&root), du(&root));
    report(&format!(
        "dedupe on: 10 × 64 MiB pushed, {walked} bytes allocated (du: {du})"
    ));
    let limit = 64 * MIB * 12 / 10;
    assert!(
        walked < limit,
        "{walked} bytes on disk for one 64 MiB layer"
    );
    assert!(du < limit, "du says {du} bytes for one 64 MiB layer");
    assert!(walked >= 64 * MIB, "the layer is not all on disk: {walked}");

    // Cross-repository mount with dedupe on: one more name, no more bytes.
    let r = reg.mount("dedupe/mounted", &digest, "dedupe/r3");
    assert_eq!(r.status, 201, "mount: {}", r.text());
    assert_eq!(inode(&blob_path(&root, "dedupe/mounted", &digest)), first);

    // Delete repository 0's image and its blobs: its config, then the layer.
    let r = reg.delete(&format!("/v2/dedupe/r0/manifests/{}", manifests[0]));
    assert_eq!(r.status, 202, "delete manifest: {}", r.text());
    let config = sha256(br#"{"repo":"dedupe/r0"}"#);
    let r = reg.delete(&format!("/v2/dedupe/r0/blobs/{config}"));
    assert_eq!(r.status, 202, "delete config: {}", r.text());
    let r = reg.delete(&format!("/v2/dedupe/r0/blobs/{digest}"));
    assert_eq!(r.status, 202, "delete layer: {}", r.text());
    assert_eq!(
        reg.head(&format!("/v2/dedupe/r0/blobs/{digest}")).status,
        404
    );
    assert_eq!(reg.get("/v2/dedupe/r0/manifests/v1").status, 404);
    assert!(!blob_path(&root, "dedupe/r0", &digest).exists());
    for i in 1..10 {
        pull_layer(&reg, &format!("dedupe/r{i}"), "v1", &digest, layer.len());
    }

    // Pushed again into repository 0, it links to the surviving copy.
    push_layer_image(&reg, "dedupe/r0", "v1", &layer, Upload::Monolithic);
    assert_eq!(inode(&blob_path(&root, "dedupe/r0", &digest)), first);
    pull_layer(&reg, "dedupe/r0", "v1", &digest, layer.len());
    let walked = allocated(&root);
    assert!(walked < limit, "{walked} bytes after the push again");
}

/// Dedupe off: every repository keeps its own copy, mounts included.
#[test]
fn dedupe_off_keeps_a_copy_per_repository() {
    let reg = Registry::start_with(|cfg| cfg["storage"]["dedupe"] = serde_json::json!(false));
    let layer = random_bytes(2, 64 * MIB as usize);
    let mut digest = String::new();
    for i in 0..10 {
        let (ld, _) = push_layer_image(&reg, &format!("copies/r{i}"), "v1", &layer, UPLOADS[i % 3]);
        digest = ld;
    }
    let root = reg.root();
    assert!(
        !root.join(".skiff-cache.db").exists(),
        "dedupe off made a dedupe cache"
    );
    let inodes: HashSet<u64> = (0..10)
        .map(|i| inode(&blob_path(&root, &format!("copies/r{i}"), &digest)))
        .collect();
    assert_eq!(inodes.len(), 10, "copies share files with dedupe off");
    let (walked, du) = (allocated(&root), du(&root));
    report(&format!(
        "dedupe off: 10 × 64 MiB pushed, {walked} bytes allocated (du: {du})"
    ));
    assert!(walked > 9 * 64 * MIB, "only {walked} bytes for ten copies");
    assert!(du > 9 * 64 * MIB, "du says only {du} bytes for ten copies");

    let r = reg.mount("copies/mounted", &digest, "copies/r0");
    assert_eq!(r.status, 201, "mount: {}", r.text());
    let mounted = blob_path(&root, "copies/mounted", &digest);
    let md = std::fs::metadata(&mounted).unwrap();
    assert_ne!(
        md.ino(),
        inode(&blob_path(&root, "copies/r0", &digest)),
        "a mount with dedupe off shares the source's file"
    );
    assert_eq!(md.nlink(), 1);
    assert_eq!(md.len(), layer.len() as u64);
    reg.pull_blob("copies/mounted", &digest);
}

/// Restarting on the same root with the other dedupe setting converges what
/// is stored: separate copies become one file, and back again.
#[test]
fn dedupe_converges_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let layer = random_bytes(3, 16 * MIB as usize);
    let repos = ["conv/a", "conv/b", "conv/c"];
    let mut digest = String::new();
    {
        let reg = with_root(&root, false);
        for (i, repo) in repos.iter().enumerate() {
            digest = push_layer_image(&reg, repo, "v1", &layer, UPLOADS[i]).0;
        }
    }
    let paths: Vec<PathBuf> = repos.iter().map(|r| blob_path(&root, r, &digest)).collect();
    let distinct = |paths: &[PathBuf]| paths.iter().map(|p| inode(p)).collect::<HashSet<_>>().len();
    assert_eq!(distinct(&paths), 3);

    // Everything a client can see, checked while convergence runs.
    let serve_ok = |reg: &Registry| {
        for repo in repos {
            pull_layer(reg, repo, "v1", &digest, layer.len());
        }
        let c = reg.get("/v2/_catalog").json();
        for repo in repos {
            assert!(
                c["repositories"].as_array().unwrap().contains(&repo.into()),
                "{c}"
            );
        }
    };

    // Restart with `dedupe` and wait, serving all the while, until the
    // three blobs are `files` separate files.
    let converge = |dedupe: bool, files: usize, failure: &str| {
        let reg = with_root(&root, dedupe);
        let started = Instant::now();
        let done = eventually(Duration::from_secs(20), || {
            serve_ok(&reg);
            distinct(&paths) == files
        });
        assert!(done, "{failure}");
        let setting = if dedupe { "on" } else { "off" };
        eprintln!("dedupe {setting}: converged in {:.2?}", started.elapsed());
        reg
    };

    {
        let reg = converge(true, 1, "three copies after 20 s with dedupe on");
        assert_eq!(std::fs::metadata(&paths[0]).unwrap().nlink(), 3);
        assert!(allocated(&root) < 16 * MIB * 12 / 10);
        serve_ok(&reg);
        // The cache learned of the existing copies: a new push links to them.
        push_layer_image(&reg, "conv/d", "v1", &layer, Upload::Monolithic);
        assert_eq!(
            inode(&blob_path(&root, "conv/d", &digest)),
            inode(&paths[0])
        );
        assert_eq!(std::fs::metadata(&paths[0]).unwrap().nlink(), 4);
    }

    {
        let reg = converge(false, 3, "copies still shared after 20 s with dedupe off");
        for p in &paths {
            let md = std::fs::metadata(p).unwrap();
            assert_eq!(md.nlink(), 1, "{}", p.display());
            assert_eq!(file_sha256(p), digest, "{} changed", p.display());
        }
        assert!(allocated(&root) > 3 * 16 * MIB);
        serve_ok(&reg);
    }
}

// ---------------------------------------------------------------- subpaths

/// Subpaths are stores of their own, each in its directory with its own
/// settings, behind one API.
#[test]
fn subpaths_are_separate_stores_behind_one_api() {
    let mut roots = None;
    let reg = Registry::start_with(|cfg| {
        let default: PathBuf = cfg["storage"]["rootDirectory"].as_str().unwrap().into();
        let base = default.parent().unwrap().to_path_buf();
        let (team, infra) = (base.join("team-store"), base.join("infra-store"));
        cfg["storage"]["gcDelay"] = serde_json::json!("0s");
        cfg["storage"]["subPaths"] = serde_json::json!({
            "/team": {"rootDirectory": team, "dedupe": true, "gc": false},
            "/infra": {"rootDirectory": infra, "dedupe": false, "commit": true},
        });
        roots = Some((team, infra));
    });
    let (team, infra) = roots.unwrap();
    let root = reg.root();

    let layer = random_bytes(4, MIB as usize);
    let mut pushed = Vec::new();
    for (i, repo) in ["team/app", "infra/db", "plain/x"].iter().enumerate() {
        let (ld, _) = push_layer_image(&reg, repo, "v1", &layer, UPLOADS[i]);
        pushed.push((repo.to_string(), ld));
    }
    for (repo, ld) in &pushed {
        pull_layer(&reg, repo, "v1", ld, layer.len());
    }
    let c = reg.get("/v2/_catalog");
    assert_eq!(c.status, 200);
    assert_eq!(
        c.json()["repositories"],
        serde_json::json!(["infra/db", "plain/x", "team/app"])
    );

    let digest = &pushed[0].1;
    for (store, repo) in [
        (&team, "team/app"),
        (&infra, "infra/db"),
        (&root, "plain/x"),
    ] {
        let dir = store.join(repo);
        assert!(dir.join("index.json").is_file(), "{}", dir.display());
        assert!(dir.join("oci-layout").is_file(), "{}", dir.display());
        assert!(blob_path(store, repo, digest).is_file());
        // Nothing of it in the other stores.
        for other in [&team, &infra, &root] {
            if other != store {
                assert!(
                    !other.join(repo).exists()
                        && !other.join(repo.split('/').next().unwrap()).exists(),
                    "{repo} left something in {}",
                    other.display()
                );
            }
        }
    }
    // The same layer in three stores is three files: links stop at a store.
    let inodes: HashSet<u64> = pushed
        .iter()
        .zip([&team, &infra, &root])
        .map(|((repo, ld), store)| inode(&blob_path(store, repo, ld)))
        .collect();
    assert_eq!(inodes.len(), 3);

    // Each store keeps its own dedupe setting.
    push_layer_image(&reg, "team/web", "v1", &layer, Upload::Monolithic);
    push_layer_image(&reg, "infra/cache", "v1", &layer, Upload::Monolithic);
    assert_eq!(
        inode(&blob_path(&team, "team/web", digest)),
        inode(&blob_path(&team, "team/app", digest)),
        "/team has dedupe on"
    );
    assert_ne!(
        inode(&blob_path(&infra, "infra/cache", digest)),
        inode(&blob_path(&infra, "infra/db", digest)),
        "/infra has dedupe off"
    );
    assert!(team.join(".skiff-cache.db").is_file());
    assert!(!infra.join(".skiff-cache.db").exists());

    // A mount across stores copies the bytes into the destination's store.
    let r = reg.mount("plain/y", digest, "team/app");
    assert_eq!(r.status, 201, "mount across stores: {}", r.text());
    reg.pull_blob("plain/y", digest);
    assert!(blob_path(&root, "plain/y", digest).is_file());
    assert!(!team.join("plain").exists());

    // gc follows each store's setting: /team has it off; the others inherit
    // the default store's (on, with no delay).
    let orphans: Vec<(&str, &Path, String)> = [
        ("team/app", &team),
        ("infra/db", &infra),
        ("plain/x", &root),
    ]
    .into_iter()
    .map(|(repo, store)| {
        let od = reg.push_blob(repo, format!("orphan in {repo}").as_bytes());
        (repo, store.as_path(), od)
    })
    .collect();
    let (code, out, err) = skiff_cli("gc", &reg.config_path());
    assert_eq!(code, 0, "skiff gc: {out}{err}");
    let listed = |repo: &str| row(&out, repo).is_some();
    assert!(
        !listed("team/app") && !listed("team/web"),
        "gc ran where it is off:\n{out}"
    );
    assert!(listed("infra/db") && listed("plain/x"), "{out}");
    for (repo, store, od) in &orphans {
        let kept = blob_path(store, repo, od).exists();
        assert_eq!(kept, repo.starts_with("team/"), "orphan in {repo}:\n{out}");
    }
    for (repo, ld) in &pushed {
        pull_layer(&reg, repo, "v1", ld, layer.len());
    }
}

// ---------------------------------------------------------------- scrub

fn layer_digest_of(reg: &Registry, repo: &str, tag: &str) -> String {
    let m = reg.get_manifest(repo, tag);
    assert_eq!(m.status, 200);
    m.json()["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

/// `skiff scrub CONFIG`, beside the server using the same config, names the
/// damaged blob and its repository and exits non-zero.
#[test]
fn scrub_cli_reports_a_damaged_blob() {
    let reg = Registry::start();
    reg.push_image("scrub/a", "v1", "scrub image a");
    reg.push_image("scrub/b", "v1", "scrub image b");
    let config = reg.config_path();

    let (code, out, err) = skiff_cli("scrub", &config);
    assert_eq!(code, 0, "scrub of an intact store: {out}{err}");
    assert!(!out.contains("affected"), "{out}");

    let damaged = layer_digest_of(&reg, "scrub/a", "v1");
    flip_byte(&reg.blob_path("scrub/a", &damaged));
    let (code, out, err) = skiff_cli("scrub", &config);
    eprintln!("{out}");
    assert_ne!(code, 0, "scrub found nothing wrong: {out}{err}");
    let line =
        |repo: &str| row(&out, repo).unwrap_or_else(|| panic!("no line for {repo} in:\n{out}"));
    let a = line("scrub/a");
    assert!(a.contains("affected"), "{a}");
    assert!(a.contains(&damaged), "{a} does not name {damaged}");
    let b = line("scrub/b");
    assert_eq!(b.split_whitespace().nth(1), Some("ok"), "{b}");
    assert_eq!(
        out.lines().filter(|l| l.contains("affected")).count(),
        1,
        "{out}"
    );
    // The server is unaffected by the command beside it.
    assert_eq!(reg.get("/v2/scrub/b/manifests/v1").status, 200);
}

/// The background scrub publishes what it found at /metrics.
#[test]
fn background_scrub_reports_in_metrics() {
    let reg = Registry::start_with(|cfg| {
        cfg["extensions"] = serde_json::json!({"scrub": {"enable": true, "interval": "1s"}});
    });
    reg.push_image("bg/a", "v1", "background a");
    reg.push_image("bg/b", "v1", "background b");
    // A pass over the intact store first.
    let ok = eventually(Duration::from_secs(20), || {
        let m = reg.get("/metrics").text();
        metric(&m, "skiff_scrub_repositories_ok") == Some(2)
    });
    assert!(ok, "no clean scrub pass: {}", reg.get("/metrics").text());

    let damaged = layer_digest_of(&reg, "bg/b", "v1");
    flip_byte(&reg.blob_path("bg/b", &damaged));
    let mut last = String::new();
    let seen = eventually(Duration::from_secs(20), || {
        last = reg.get("/metrics").text();
        last.lines()
            .any(|l| l == "skiff_scrub_repositories_affected 1")
            && last.lines().any(|l| l == "skiff_scrub_blobs_damaged 1")
    });
    assert!(seen, "the scrub did not report the damage:\n{last}");
    assert_eq!(
        metric(&last, "skiff_scrub_repositories_ok"),
        Some(1),
        "{last}"
    );
    assert!(metric(&last, "skiff_scrub_runs_total").unwrap() >= 2);
}

// ---------------------------------------------------------------- gc

/// `skiff gc CONFIG` once, beside the server: an unreferenced blob goes, the
/// tagged image stays.
#[test]
fn gc_cli_removes_an_unreferenced_blob() {
    let reg = Registry::start_with(|cfg| cfg["storage"]["gcDelay"] = serde_json::json!("0s"));
    let (manifest, _) = reg.push_image("gc/app", "v1", "kept image");
    let orphan = b"an orphan nobody refers to";
    let od = reg.push_blob("gc/app", orphan);
    assert_eq!(reg.head(&format!("/v2/gc/app/blobs/{od}")).status, 200);
    let orphan_path = reg.blob_path("gc/app", &od);
    assert!(orphan_path.is_file());

    let (code, out, err) = skiff_cli("gc", &reg.config_path());
    eprintln!("{out}");
    assert_eq!(code, 0, "skiff gc failed: {out}{err}");
    let line = row(&out, "gc/app").unwrap_or_else(|| panic!("no line for gc/app in:\n{out}"));
    let cols: Vec<&str> = line.split_whitespace().collect();
    // REPOSITORY TAGS MANIFESTS BLOBS BYTES-FREED UPLOADS
    let freed = orphan.len().to_string();
    assert_eq!(cols[1..6], ["0", "0", "1", freed.as_str(), "0"], "{line}");

    assert!(!orphan_path.exists());
    assert_eq!(reg.head(&format!("/v2/gc/app/blobs/{od}")).status, 404);
    let m = reg.get_manifest("gc/app", "v1");
    assert_eq!(m.status, 200);
    assert_eq!(m.body, manifest);
    let v = m.json();
    for d in [&v["config"]["digest"], &v["layers"][0]["digest"]] {
        reg.pull_blob("gc/app", d.as_str().unwrap());
    }

    // The server's dedupe cache still names the removed copy; pushing the
    // same bytes elsewhere stores them whole all the same.
    assert_eq!(reg.push_blob("gc/other", orphan), od);
    assert_eq!(reg.pull_blob("gc/other", &od), orphan);
}

// ---------------------------------------------------------------- damage

/// A damaged copy must not spread: converging separate copies into links
/// must not make intact repositories serve a rotten copy, whichever copy
/// is the damaged one.
#[test]
fn convergence_does_not_spread_a_damaged_copy() {
    let layer = random_bytes(5, MIB as usize);
    let repos = ["rot/a", "rot/b", "rot/c"];
    for damaged in 0..repos.len() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let mut digest = String::new();
        {
            let reg = with_root(&root, false);
            for repo in repos {
                digest = push_layer_image(&reg, repo, "v1", &layer, Upload::Monolithic).0;
            }
        }
        flip_byte(&blob_path(&root, repos[damaged], &digest));
        let reg = with_root(&root, true);
        let paths: Vec<PathBuf> = repos.iter().map(|r| blob_path(&root, r, &digest)).collect();
        let intact: Vec<&PathBuf> = (0..repos.len())
            .filter(|&i| i != damaged)
            .map(|i| &paths[i])
            .collect();
        let merged = eventually(Duration::from_secs(20), || {
            inode(intact[0]) == inode(intact[1])
        });
        assert!(
            merged,
            "the intact copies were never linked (damaged: {damaged})"
        );
        for (i, repo) in repos.iter().enumerate() {
            if i != damaged {
                pull_layer(&reg, repo, "v1", &digest, layer.len());
            }
        }
    }
}

/// With dedupe on, a push whose bytes check out is stored intact even when
/// the copy the dedupe cache names has rotted since.
#[test]
fn dedupe_does_not_link_a_push_to_a_damaged_copy() {
    let reg = Registry::start();
    let layer = random_bytes(6, MIB as usize);
    let (digest, _) = push_layer_image(&reg, "rotpush/a", "v1", &layer, Upload::Monolithic);
    let rotten = reg.blob_path("rotpush/a", &digest);
    flip_byte(&rotten);
    for (i, how) in UPLOADS.iter().enumerate() {
        let repo = format!("rotpush/b{i}");
        push_layer_image(&reg, &repo, "v1", &layer, *how);
        pull_layer(&reg, &repo, "v1", &digest, layer.len());
        assert_ne!(inode(&reg.blob_path(&repo, &digest)), inode(&rotten));
    }
    // The intact copies are shared among themselves.
    assert_eq!(
        inode(&reg.blob_path("rotpush/b0", &digest)),
        inode(&reg.blob_path("rotpush/b2", &digest)),
    );
}
