//! gc, retention, dedupe and scrub never lose what is in use: regression
//! tests against the real binary and the real `skiff gc` / `skiff scrub`
//! commands. Files are aged with `utime` (set_modified), never by sleeping.

mod common;

use common::*;
use serde_json::json;

/// A registry whose own gc never runs: the tests run `skiff gc` themselves.
fn registry(edit: impl FnOnce(&mut serde_json::Value)) -> Registry {
    Registry::start_with(|cfg| {
        // The server's own passes wait a day; `skiff gc` runs them here.
        cfg["storage"]["gcInterval"] = "24h".into();
        cfg["storage"]["gcDelay"] = "1h".into();
        edit(cfg);
    })
}

/// Run `skiff <command>` on the registry's config; (success, stdout).
fn run(reg: &Registry, command: &str) -> (bool, String) {
    let out = skiff_command(command, &reg.config_path()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    (out.status.success(), format!("{text}{err}"))
}

fn gc(reg: &Registry) -> String {
    let (ok, text) = run(reg, "gc");
    assert!(ok, "skiff gc failed: {text}");
    text
}

/// Push config and one layer; returns their (digest, size) pairs.
fn push_parts(reg: &Registry, repo: &str, seed: &str) -> ((String, usize), (String, usize)) {
    let config = format!("{{\"seed\":\"{seed}\"}}");
    let layer = format!("layer {seed}");
    let cd = reg.push_blob(repo, config.as_bytes());
    let ld = reg.push_blob(repo, layer.as_bytes());
    ((cd, config.len()), (ld, layer.len()))
}

#[test]
fn gc_walks_a_manifest_as_the_type_it_was_pushed_as() {
    let reg = registry(|_| {});
    let ((cd, cs), (ld, ls)) = push_parts(&reg, "kind/app", "ambiguous");
    // An image manifest without mediaType, with a stray `manifests` field:
    // only the Content-Type it was pushed with says it is an image.
    let mut m: serde_json::Value =
        serde_json::from_slice(&image_manifest(&cd, cs, &[(&ld, ls)], None, None)).unwrap();
    m.as_object_mut().unwrap().remove("mediaType");
    m["manifests"] = json!([]);
    let bytes = serde_json::to_vec(&m).unwrap();
    let r = reg.put_manifest("kind/app", "v1", OCI_MANIFEST, &bytes);
    assert_eq!(r.status, 201, "{}", r.text());
    age_files_under(&reg.root().join("kind/app/blobs"), LONG_AGO);

    gc(&reg);
    reg.pull_blob("kind/app", &cd);
    reg.pull_blob("kind/app", &ld);
    let (ok, text) = run(&reg, "scrub");
    assert!(ok, "{text}");

    // And scrub, walking it the same way, reports a layer that goes missing.
    std::fs::remove_file(reg.blob_path("kind/app", &ld)).unwrap();
    let (ok, text) = run(&reg, "scrub");
    assert!(!ok, "scrub missed a missing layer: {text}");
    assert!(text.contains(&ld) && text.contains("missing"), "{text}");
}

#[test]
fn an_index_child_cannot_be_deleted_alone() {
    let reg = registry(|_| {});
    let (child, cd) = reg.push_image("multi/app", "amd64", "child");
    let index = json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": cd, "size": child.len()}],
    });
    let ib = serde_json::to_vec(&index).unwrap();
    assert_eq!(
        reg.put_manifest("multi/app", "latest", OCI_INDEX, &ib)
            .status,
        201
    );
    let r = reg.delete(&format!("/v2/multi/app/manifests/{cd}"));
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(r.error_code(), "DENIED");
    assert!(
        r.text().contains(&sha256(&ib)) && r.text().contains("latest"),
        "{}",
        r.text()
    );
    assert_eq!(reg.get_manifest("multi/app", &cd).status, 200);
    // With the index gone, the child can go.
    let id = sha256(&ib);
    assert_eq!(
        reg.delete(&format!("/v2/multi/app/manifests/{id}")).status,
        202
    );
    assert_eq!(
        reg.delete(&format!("/v2/multi/app/manifests/{cd}")).status,
        202
    );
}

#[test]
fn layer_sizes_must_match_the_stored_blobs() {
    let reg = registry(|_| {});
    let ((cd, cs), (ld, ls)) = push_parts(&reg, "size/app", "sized");
    let wrong = image_manifest(&cd, cs, &[(&ld, 999_999)], None, None);
    let r = reg.put_manifest("size/app", "v1", OCI_MANIFEST, &wrong);
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.error_code(), "MANIFEST_INVALID");
    assert!(r.text().contains("999999"), "{}", r.text());
    let right = image_manifest(&cd, cs, &[(&ld, ls)], None, None);
    assert_eq!(
        reg.put_manifest("size/app", "v1", OCI_MANIFEST, &right)
            .status,
        201
    );
}

#[test]
fn non_distributable_layers_may_live_elsewhere() {
    let reg = registry(|_| {});
    let ((cd, cs), (ld, ls)) = push_parts(&reg, "win/app", "foreign");
    let foreign = "sha256:".to_string() + &"ab".repeat(32);
    let mut m: serde_json::Value = serde_json::from_slice(&image_manifest(
        &cd,
        cs,
        &[(&foreign, 1234), (&ld, ls)],
        None,
        None,
    ))
    .unwrap();
    m["layers"][0]["mediaType"] =
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip".into();
    m["layers"][0]["urls"] = json!(["https://mcr.example/blob"]);
    let bytes = serde_json::to_vec(&m).unwrap();
    let r = reg.put_manifest("win/app", "ltsc", OCI_MANIFEST, &bytes);
    assert_eq!(r.status, 201, "{}", r.text());
    // Without urls the same missing layer is refused.
    m["layers"][0].as_object_mut().unwrap().remove("urls");
    let bytes = serde_json::to_vec(&m).unwrap();
    let r = reg.put_manifest("win/app", "bad", OCI_MANIFEST, &bytes);
    assert_eq!(r.status, 400);
    assert_eq!(r.error_code(), "MANIFEST_BLOB_UNKNOWN");
    // scrub does not count the external layer as missing.
    let (ok, text) = run(&reg, "scrub");
    assert!(ok, "{text}");
}

#[test]
fn scrub_reports_an_invalid_digest_in_index_json() {
    let reg = registry(|_| {});
    reg.push_image("hand/app", "v1", "handmade");
    let path = reg.root().join("hand/app/index.json");
    let mut idx = read_json(&path);
    idx["manifests"][0]["digest"] = "sha256:not-a-digest".into();
    std::fs::write(&path, idx.to_string()).unwrap();
    let (ok, text) = run(&reg, "scrub");
    assert!(!ok, "scrub missed the bad digest: {text}");
    assert!(text.contains("sha256:not-a-digest"), "{text}");
}

/// Write a copy of the registry's config with `edit` applied; its path.
fn config_variant(
    reg: &Registry,
    name: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) -> std::path::PathBuf {
    let mut cfg = read_json(&reg.config_path());
    edit(&mut cfg);
    let path = reg.data.path().join(name);
    std::fs::write(&path, cfg.to_string()).unwrap();
    path
}

/// Set the push time skiff recorded for `tag` in `repo`'s index.json.
fn set_pushed_at(reg: &Registry, repo: &str, tag: &str, ago: std::time::Duration) {
    let path = reg.root().join(repo).join("index.json");
    let mut idx = read_json(&path);
    let at = std::time::SystemTime::now() - ago;
    let ms = at
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        .to_string();
    let entry = idx["manifests"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("no tag {tag}"));
    assert!(
        entry["annotations"]["dev.skiff.pushed-at"].is_string(),
        "push time recorded"
    );
    entry["annotations"]["dev.skiff.pushed-at"] = ms.into();
    std::fs::write(&path, idx.to_string()).unwrap();
}

fn tags_of(reg: &Registry, repo: &str) -> Vec<String> {
    let r = reg.get(&format!("/v2/{repo}/tags/list"));
    if r.status == 404 {
        return Vec::new();
    }
    r.json()["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_dry_run_changes_nothing_on_disk() {
    let reg = registry(|cfg| {
        cfg["storage"]["gcDelay"] = "0s".into();
        cfg["storage"]["retention"] = json!({"dryRun": true, "delay": "0s", "policies": [
            {"repositories": ["**"], "keepTags": [{"patterns": ["^v"], "mostRecentlyPushedCount": 1}]},
        ]});
    });
    reg.push_image("dry/app", "v1", "one");
    reg.push_image("dry/app", "v2", "two");
    reg.push_image("dry/app", "latest", "three");
    set_pushed_at(
        &reg,
        "dry/app",
        "v1",
        std::time::Duration::from_secs(3 * 3600),
    );
    set_pushed_at(
        &reg,
        "dry/app",
        "v2",
        std::time::Duration::from_secs(2 * 3600),
    );
    reg.push_blob("dry/app", b"an orphan");
    let loc = reg.open_upload("dry/app").location();
    assert_eq!(reg.patch_upload(&loc, b"abandoned").send().status, 202);
    age_files_under(&reg.root().join("dry/app"), LONG_AGO);
    let before = listing(&reg.root());
    let out = gc(&reg);
    assert_eq!(
        listing(&reg.root()),
        before,
        "a dry run changed the disk: {out}"
    );
    // It reports what a real pass would remove: v1 and latest with their
    // blobs, the orphan and the upload.
    let row = out.lines().find(|l| l.starts_with("dry/app")).expect(&out);
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cols[1..3], ["2", "2"], "{out}");
    assert!(out.contains("dry run"), "{out}");
    assert_eq!(tags_of(&reg, "dry/app"), ["latest", "v1", "v2"]);

    // The same pass for real removes exactly that.
    let real = config_variant(&reg, "real.json", |c| {
        c["storage"]["retention"]["dryRun"] = false.into()
    });
    let out = skiff_command("gc", &real).output().unwrap();
    assert!(out.status.success());
    assert_eq!(tags_of(&reg, "dry/app"), ["v2"]);
}

#[test]
fn retention_delay_protects_recent_manifests() {
    // zot's default retention delay is 24 hours, whatever gcDelay says.
    let reg = registry(|_| {});
    let (_, old) = reg.push_image("late/app", "v1", "first");
    reg.push_image("late/app", "v1", "second");
    let blobs = reg.root().join("late/app/blobs");
    age_files_under(&blobs, std::time::Duration::from_secs(2 * 3600));
    gc(&reg);
    assert_eq!(
        reg.get_manifest("late/app", &old).status,
        200,
        "a 2-hour-old untagged manifest went"
    );
    age_files_under(&blobs, std::time::Duration::from_secs(24 * 3600));
    gc(&reg);
    assert_eq!(reg.get_manifest("late/app", &old).status, 404);
    assert_eq!(reg.get_manifest("late/app", "v1").status, 200);
}

#[test]
fn keep_tags_by_pull_and_push_time() {
    let reg = registry(|cfg| {
        cfg["storage"]["gcDelay"] = "0s".into();
        cfg["storage"]["retention"] = json!({"delay": "0s", "policies": [
            {"repositories": ["pulls/**"], "keepTags": [{"pulledWithin": "1h"}]},
            {"repositories": ["pushes/**"], "keepTags": [{"pushedWithin": "1h"}]},
        ]});
    });
    reg.push_image("pulls/app", "a", "pulled");
    reg.push_image("pulls/app", "b", "never pulled");
    reg.push_image("pushes/app", "c", "new");
    reg.push_image("pushes/app", "d", "old");
    set_pushed_at(&reg, "pushes/app", "d", LONG_AGO);
    for repo in ["pulls/app", "pushes/app"] {
        age_files_under(&reg.root().join(repo).join("blobs"), LONG_AGO);
    }
    // A pull (GET, not HEAD) records its time.
    assert_eq!(reg.head("/v2/pulls/app/manifests/b").status, 200);
    assert_eq!(reg.get_manifest("pulls/app", "a").status, 200);
    gc(&reg);
    assert_eq!(tags_of(&reg, "pulls/app"), ["a"]);
    assert_eq!(tags_of(&reg, "pushes/app"), ["c"]);
}

#[test]
fn promotion_does_not_reorder_pushes() {
    // mostRecentlyPushedCount ranks by the push recorded in the repository,
    // not by a blob's mtime, which a promotion elsewhere refreshes through
    // the shared (deduped) file.
    let reg = registry(|cfg| {
        cfg["storage"]["gcDelay"] = "0s".into();
        cfg["storage"]["retention"] = json!({"delay": "0s", "policies": [
            {"repositories": ["ci/**"], "keepTags": [{"mostRecentlyPushedCount": 1}]},
        ]});
    });
    let (v1, d1) = reg.push_image("ci/app", "v1", "first build");
    reg.push_image("ci/app", "v2", "second build");
    set_pushed_at(
        &reg,
        "ci/app",
        "v1",
        std::time::Duration::from_secs(3 * 3600),
    );
    set_pushed_at(
        &reg,
        "ci/app",
        "v2",
        std::time::Duration::from_secs(2 * 3600),
    );
    age_files_under(
        &reg.root().join("ci/app/blobs"),
        std::time::Duration::from_secs(2 * 3600),
    );
    // Promote v1: its blobs and manifest into prod/app.
    let m: serde_json::Value = serde_json::from_slice(&v1).unwrap();
    for d in [&m["config"]["digest"], &m["layers"][0]["digest"]] {
        assert_eq!(
            reg.mount("prod/app", d.as_str().unwrap(), "ci/app").status,
            201
        );
    }
    assert_eq!(
        reg.put_manifest("prod/app", "v1", OCI_MANIFEST, &v1).status,
        201
    );
    gc(&reg);
    assert_eq!(tags_of(&reg, "ci/app"), ["v2"]);
    assert_eq!(reg.get_manifest("prod/app", &d1).status, 200);
}

#[test]
fn retention_keys_skiff_does_not_know_stop_start_up() {
    let data = tempfile::tempdir().unwrap();
    for (retention, key) in [
        (json!({"policies": [{"repoNames": ["a/**"]}]}), "repoNames"),
        (json!({"policies": [{"KeepTags": []}]}), "KeepTags"),
        (
            json!({"policies": [{"keepTags": [{"pulledWithin": "1h", "newest": 2}]}]}),
            "newest",
        ),
    ] {
        let cfg =
            json!({"storage": {"rootDirectory": data.path().join("root"), "retention": retention}});
        let path = data.path().join("cfg.json");
        std::fs::write(&path, cfg.to_string()).unwrap();
        for command in ["verify", "serve"] {
            let out = skiff_command(command, &path).output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{command} {retention}: {err}");
            assert!(err.contains(key), "{command}: {err}");
        }
    }
}

#[test]
fn overlapping_store_roots_and_absurd_durations_are_refused() {
    let data = tempfile::tempdir().unwrap();
    let root = data.path().join("root");
    for storage in [
        json!({"rootDirectory": root, "subPaths": {"/team": {"rootDirectory": root.join("teamstore")}}}),
        json!({"rootDirectory": root.join("inner"), "subPaths": {"/team": {"rootDirectory": root}}}),
        json!({"rootDirectory": root, "gcDelay": "99999999999999999999h"}),
        json!({"rootDirectory": root, "gcInterval": "5124095576031h"}),
    ] {
        let path = data.path().join("cfg.json");
        std::fs::write(&path, json!({"storage": storage}).to_string()).unwrap();
        let out = skiff_command("verify", &path).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{storage}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(err.contains("storage."), "{storage}: {err}");
    }
}

#[test]
fn the_server_starts_while_a_cli_pass_runs() {
    let mut first = registry(|_| {});
    first.push_image("cli/app", "v1", "beside");
    // A sparse 8 GiB blob keeps a scrub busy for seconds.
    let f = std::fs::File::create(first.blob_path("cli/app", &sha256(b"sparse"))).unwrap();
    f.set_len(8 << 30).unwrap();
    drop(f);
    first.stop();
    let mut scrub = skiff_command("scrub", &first.config_path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let root = first.root();
    let second = registry(|cfg| cfg["storage"]["rootDirectory"] = root.to_str().unwrap().into());
    assert!(
        scrub.try_wait().unwrap().is_none(),
        "scrub ended too soon to prove anything"
    );
    assert_eq!(second.get("/v2/").status, 200);
    assert_eq!(second.get_manifest("cli/app", "v1").status, 200);
    let _ = scrub.kill();
    let _ = scrub.wait();
}

#[test]
fn a_repository_named_like_the_cache_is_a_repository() {
    let mut first = registry(|_| {});
    first.push_image("cache.db", "v1", "cache named");
    first.push_image("other", "v1", "cache named");
    first.stop();
    let root = first.root();
    let second = registry(|cfg| cfg["storage"]["rootDirectory"] = root.to_str().unwrap().into());
    assert_eq!(second.get_manifest("cache.db", "v1").status, 200);
    // Dedupe works: the same layer in both repositories is one file.
    let d = sha256(b"layer of cache named");
    let ino = |repo: &str| {
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(blob_path(&root, repo, &d)).unwrap())
    };
    assert_eq!(ino("cache.db"), ino("other"));
    let catalog = second.get("/v2/_catalog").json();
    assert_eq!(catalog["repositories"], json!(["cache.db", "other"]));
}

#[test]
fn scrub_hashes_a_deduped_file_once_per_pass() {
    let reg = registry(|_| {});
    let blob = vec![9u8; 4 << 20];
    for repo in ["d/a", "d/b", "d/c", "d/e"] {
        reg.push_blob(repo, &blob);
    }
    let (ok, text) = run(&reg, "scrub");
    assert!(ok, "{text}");
    assert!(
        text.contains(&format!(
            "{} bytes of blobs checked, {} bytes hashed",
            4 * blob.len(),
            blob.len()
        )),
        "{text}"
    );
}

#[test]
fn convergence_never_brings_deleted_blobs_back() {
    use sha2::Digest as _;
    let mut first = registry(|cfg| cfg["storage"]["dedupe"] = false.into());
    // Another blob keeps conv/c's blob directory in place after the deletes
    // (as a real repository's other blobs would).
    first.push_image("conv/c", "v1", "stays");
    first.stop();
    let root = first.root();
    // Ten blobs of 1 GiB in three repositories each, as separate copies:
    // sparse files (zeros and a last byte that tells them apart), so
    // convergence takes seconds of hashing but the disk holds almost nothing.
    const SIZE: u64 = 1 << 30;
    let mut zeros = sha2::Sha256::new();
    let block = vec![0u8; 1 << 20];
    for _ in 0..(SIZE >> 20) - 1 {
        zeros.update(&block);
    }
    zeros.update(&block[..block.len() - 1]);
    let repos = ["conv/a", "conv/b", "conv/c"];
    let mut digests = Vec::new();
    for i in 0..10u8 {
        let mut h = zeros.clone();
        h.update([i + 1]);
        let d = format!("sha256:{}", hex::encode(h.finalize()));
        for repo in repos {
            let path = blob_path(&root, repo, &d);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let mut f = std::fs::File::create(&path).unwrap();
            f.set_len(SIZE - 1).unwrap();
            use std::io::{Seek, Write};
            f.seek(std::io::SeekFrom::End(0)).unwrap();
            f.write_all(&[i + 1]).unwrap();
        }
        digests.push(d);
    }
    // Dedupe on: at start the copies become links in the background, while
    // the copies in conv/c are deleted.
    let reg = registry(|cfg| {
        cfg["storage"]["rootDirectory"] = root.to_str().unwrap().into();
        cfg["storage"]["dedupe"] = true.into();
    });
    for d in &digests {
        assert_eq!(reg.delete(&format!("/v2/conv/c/blobs/{d}")).status, 202);
    }
    let ino = |repo: &str, d: &str| {
        std::fs::metadata(blob_path(&root, repo, d))
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
    };
    let converged = eventually(std::time::Duration::from_secs(300), || {
        digests
            .iter()
            .all(|d| ino("conv/a", d).is_ok() && ino("conv/a", d).ok() == ino("conv/b", d).ok())
    });
    assert!(converged, "convergence did not link conv/a and conv/b");
    for d in &digests {
        assert_eq!(
            reg.get(&format!("/v2/conv/c/blobs/{d}")).status,
            404,
            "{d} came back"
        );
        assert!(ino("conv/c", d).is_err(), "{d} is on disk again");
    }
}
