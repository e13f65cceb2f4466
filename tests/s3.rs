//! Several `skiff serve` processes on one S3 bucket (moto, started by the
//! test command): any instance serves any request, an upload may move
//! between instances, concurrent tag pushes through both lose nothing; and
//! a bucket that cannot be used stops the server at start, saying why.

mod common;

use common::*;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[test]
fn two_servers_on_one_bucket_serve_each_others_pushes_and_uploads() {
    let bucket = Arc::new(Bucket::create());
    let a = Registry::start_on_bucket(&bucket, |_| {});
    let b = Registry::start_on_bucket(&bucket, |_| {});

    // Pushed through a, pulled through b.
    let (m, d) = a.push_image("shared/app", "v1", "through a");
    let got = b.get_manifest("shared/app", "v1");
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.body, m);
    let manifest = got.json();
    for blob in [&manifest["config"], &manifest["layers"][0]] {
        let digest = blob["digest"].as_str().unwrap();
        assert_eq!(sha256(&b.pull_blob("shared/app", digest)), digest);
    }

    // A chunked upload started on a, continued and finished on b: the
    // session (and its hash state) lives in the bucket. The first chunk
    // crosses the 5 MiB part size.
    let first: Vec<u8> = (0..(6 << 20) + 5).map(|i| (i % 253) as u8).collect();
    let second = b"the end of the blob".to_vec();
    let whole = [first.clone(), second.clone()].concat();
    let digest = sha256(&whole);
    let loc = a.open_upload("shared/big").location();
    let r = a.patch_chunk(&loc, 0, &first).send();
    assert_eq!(r.status, 202, "{}", r.text());
    let loc = r.location();
    // b knows where the session is.
    let status = b.get(&loc);
    assert_eq!(status.status, 204, "{}", status.text());
    assert_eq!(
        status.header("range"),
        Some(format!("0-{}", first.len() - 1).as_str())
    );
    let r = b.patch_chunk(&loc, first.len(), &second).send();
    assert_eq!(r.status, 202, "{}", r.text());
    let r = b.close_upload(&r.location(), &digest).send();
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(a.pull_blob("shared/big", &digest), whole);

    // A delete through b is seen by a.
    let r = b.delete(&format!("/v2/shared/app/manifests/{d}"));
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(a.get_manifest("shared/app", "v1").status, 404);
    assert_eq!(a.get_manifest("shared/app", &d).status, 404);
}

/// 2 × 8 clients push different tags into one repository at once, half
/// through each server: compare-and-swap on index.json in the bucket keeps
/// every tag.
#[test]
fn concurrent_tag_pushes_through_two_servers_keep_every_tag() {
    const CLIENTS: usize = 8;
    const TAGS: usize = 4;
    let bucket = Arc::new(Bucket::create());
    let servers = [
        Registry::start_on_bucket(&bucket, |_| {}),
        Registry::start_on_bucket(&bucket, |_| {}),
    ];
    let mut want = Vec::new();
    std::thread::scope(|scope| {
        for (s, reg) in servers.iter().enumerate() {
            for c in 0..CLIENTS {
                scope.spawn(move || {
                    for t in 0..TAGS {
                        let tag = format!("s{s}-c{c}-t{t}");
                        reg.push_image("busy/repo", &tag, &tag);
                    }
                });
            }
        }
    });
    for s in 0..2 {
        for c in 0..CLIENTS {
            for t in 0..TAGS {
                want.push(format!("s{s}-c{c}-t{t}"));
            }
        }
    }
    want.sort();
    for reg in &servers {
        let tags = reg.get("/v2/busy/repo/tags/list").json();
        let mut got: Vec<String> = tags["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect();
        got.sort();
        assert_eq!(got, want);
    }
}

/// Run `skiff serve` on a config until it exits (or 60 s): its stderr.
fn refused_start(driver: serde_json::Value) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    let cfg = serde_json::json!({
        "http": {"address": "127.0.0.1", "port": 0},
        "storage": {"rootDirectory": dir.path().join("root"), "dedupe": false, "storageDriver": driver},
    });
    std::fs::write(&path, cfg.to_string()).unwrap();
    let mut child = skiff_command("serve", &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("skiff kept running on a store it cannot use");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).contains("listening"));
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn a_bucket_that_cannot_be_used_stops_the_server_saying_why() {
    let bucket = Bucket::create();
    let mut missing = bucket.driver();
    missing["bucket"] = "no-such-bucket-here".into();
    let err = refused_start(missing);
    assert!(err.contains("storage.storageDriver"), "{err}");
    assert!(
        err.contains("no-such-bucket-here") && err.contains("does not exist"),
        "{err}"
    );

    // Nothing listens on port 1.
    let mut unreachable = bucket.driver();
    unreachable["regionendpoint"] = "http://127.0.0.1:1".into();
    let err = refused_start(unreachable);
    assert!(err.contains("http://127.0.0.1:1"), "{err}");
    assert!(err.contains("did not answer"), "{err}");

    // A config error is caught before any connection is tried.
    let mut odd = bucket.driver();
    odd["chunksize"] = "1MiB".into();
    let err = refused_start(odd);
    assert!(err.contains("storage.storageDriver.chunksize"), "{err}");
}
