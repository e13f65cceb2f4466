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

#[test]
fn denied_credentials_stop_the_server_naming_them() {
    let moto = StrictMoto::start(0);
    let bucket = Bucket::create();
    let mut driver = bucket.driver();
    driver["regionendpoint"] = moto.endpoint.clone().into();
    driver["accesskey"] = "AKIANOTAKEYATALL".into();
    let err = refused_start(driver);
    assert!(err.contains("storage.storageDriver"), "{err}");
    assert!(
        err.contains("access denied") && err.contains("accesskey"),
        "{err}"
    );
    assert!(err.contains(&moto.endpoint), "{err}");
}

/// A subpath on S3 beside a default store on disk: one API serves both,
/// each repository's objects where its store is.
#[test]
fn subpaths_mix_disk_and_s3() {
    let bucket = Arc::new(Bucket::create());
    let driver = bucket.driver();
    let reg = Registry::start_with(|cfg| {
        let root = cfg["storage"]["rootDirectory"]
            .as_str()
            .unwrap()
            .to_string();
        cfg["storage"]["subPaths"] = serde_json::json!({
            "/cloud": {
                "rootDirectory": format!("{root}-cloud"),
                "dedupe": false,
                "storageDriver": driver,
            }
        });
    });
    let (lm, _) = reg.push_image("local/app", "v1", "on disk");
    let (cm, cd) = reg.push_image("cloud/app", "v1", "in the bucket");
    assert_eq!(reg.get_manifest("local/app", "v1").body, lm);
    assert_eq!(reg.get_manifest("cloud/app", "v1").body, cm);
    let catalog = reg.get("/v2/_catalog").json();
    assert_eq!(
        catalog["repositories"],
        serde_json::json!(["cloud/app", "local/app"])
    );

    // Each where its store is, and nowhere else.
    let on_s3 = Backing::S3(bucket.clone());
    assert!(on_s3
        .read(&format!("cloud/app/blobs/sha256/{}", hex_of(&cd)))
        .is_some());
    assert!(on_s3.files("local").is_empty());
    assert!(reg.root().join("local/app/index.json").is_file());
    assert!(!reg.root().join("cloud").exists());

    // A mount from the bucket into the disk store cannot be made there:
    // the client is asked to upload instead (202), and the upload works.
    let layer = reg.get_manifest("cloud/app", "v1").json()["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let r = reg.mount("local/other", &layer, "cloud/app");
    assert_eq!(r.status, 202, "{}", r.text());
    let bytes = reg.pull_blob("cloud/app", &layer);
    assert_eq!(reg.push_blob("local/other", &bytes), layer);
    assert_eq!(reg.pull_blob("local/other", &layer), bytes);
}

/// The peak resident memory of process `pid` since the last reset, in
/// bytes; resetting it (`clear_refs` 5) starts a new measurement.
fn peak_rss(pid: u32, reset: bool) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status");
    if reset {
        std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("resetting the peak RSS");
    }
    kib * 1024
}

/// A 1 GiB blob pushed (one streamed PATCH) and pulled on S3, digests
/// checked end to end; the server's peak RSS during each stays flat.
#[test]
fn one_gib_blob_on_s3_with_flat_memory() {
    const GIB: u64 = 1 << 30;
    const LIMIT: u64 = 100 << 20;
    let bucket = Arc::new(Bucket::create());
    let reg = Registry::start_on_bucket(&bucket, |_| {});
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("blob");
    {
        use rand::{RngCore, SeedableRng};
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
        let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
        let mut buf = vec![0u8; 1 << 20];
        for _ in 0..(GIB >> 20) {
            rng.fill_bytes(&mut buf);
            f.write_all(&buf).unwrap();
        }
    }
    let digest = file_sha256(&file);
    let pid = reg.pid();
    // A first request warms the instance pool; then the measurement starts.
    assert_eq!(reg.get("/v2/").status, 200);
    peak_rss(pid, true);

    let t = Instant::now();
    let loc = reg.open_upload("big/one").location();
    let out = output(
        std::process::Command::new("curl")
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %header{location}",
                "-X",
                "PATCH",
            ])
            .args(["-H", "Content-Type: application/octet-stream", "-T"])
            .arg(&file)
            .arg(reg.url(&loc)),
    );
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        said.starts_with("202 "),
        "PATCH: {said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let next = said[4..].trim().to_string();
    let r = reg.close_upload(&next, &digest).send();
    assert_eq!(r.status, 201, "{}", r.text());
    let up = t.elapsed();
    let push_peak = peak_rss(pid, true);

    let t = Instant::now();
    let back = dir.path().join("back");
    let out = output(
        std::process::Command::new("curl")
            .args(["-sS", "-f", "-o"])
            .arg(&back)
            .arg(reg.url(&format!("/v2/big/one/blobs/{digest}"))),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let down = t.elapsed();
    let pull_peak = peak_rss(pid, false);
    assert_eq!(std::fs::metadata(&back).unwrap().len(), GIB);
    assert_eq!(file_sha256(&back), digest);
    report(&format!(
        "S3 (moto): 1 GiB blob pushed in {up:.1?} (server peak RSS {} MiB), pulled in {down:.1?} (peak {} MiB)",
        push_peak >> 20,
        pull_peak >> 20
    ));
    assert!(
        push_peak < LIMIT,
        "pushing 1 GiB took {} MiB",
        push_peak >> 20
    );
    assert!(
        pull_peak < LIMIT,
        "pulling 1 GiB took {} MiB",
        pull_peak >> 20
    );
}

/// gc and scrub are the same components over the S3 backend: after a
/// push/delete workload and gcDelay, what no tag reaches is gone from the
/// bucket and every tagged image pulls whole; scrub finds an object whose
/// bytes were damaged in the bucket.
///
/// The command-line passes run beside the server, sharing its DynamoDB
/// dedupe cache; beside a server with an embedded cache they refuse.
#[test]
fn gc_and_scrub_on_s3() {
    let bucket = Arc::new(Bucket::create());
    let embedded = Registry::start_on_bucket(&Arc::new(Bucket::create()), |_| {});
    let out = skiff_command("gc", &embedded.config_path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("dedupe cache") && err.contains("storage.rootDirectory"),
        "{err}"
    );
    drop(embedded);

    let table = fresh_table();
    let reg = Registry::start_on_bucket(&bucket, |cfg| {
        cfg["storage"]["gcDelay"] = "2s".into();
        // Only the foreground passes below run gc.
        cfg["storage"]["gcInterval"] = "24h".into();
        use_dynamodb(cfg, &table);
    });
    let (_, keep) = reg.push_image("gc/app", "keep", "kept image");
    let (gone_manifest, gone) = reg.push_image("gc/app", "gone", "deleted image");
    let orphan = reg.push_blob("gc/app", b"pushed, never referenced");
    let r = reg.delete(&format!("/v2/gc/app/manifests/{gone}"));
    assert_eq!(r.status, 202, "{}", r.text());
    let gone_blobs: Vec<String> = {
        let m: serde_json::Value = serde_json::from_slice(&gone_manifest).unwrap();
        vec![
            m["config"]["digest"].as_str().unwrap().to_string(),
            m["layers"][0]["digest"].as_str().unwrap().to_string(),
        ]
    };
    // Unreferenced now, but still stored until gc runs past gcDelay.
    let before = reg.stored.files("gc/app/blobs/sha256");
    for d in gone_blobs.iter().chain([&orphan]) {
        assert!(before.contains(hex_of(d)), "{d} went before gc ran");
    }
    std::thread::sleep(Duration::from_secs(3));
    let out = skiff_command("gc", &reg.config_path()).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let stored = reg.stored.files("gc/app/blobs/sha256");
    for d in gone_blobs.iter().chain([&orphan, &gone]) {
        assert!(!stored.contains(hex_of(d)), "{d} is still in the bucket");
        assert_eq!(reg.head(&format!("/v2/gc/app/blobs/{d}")).status, 404);
    }
    let m = reg.get_manifest("gc/app", "keep");
    assert_eq!(sha256(&m.body), keep);
    let m = m.json();
    let layer = m["layers"][0]["digest"].as_str().unwrap().to_string();
    for d in [m["config"]["digest"].as_str().unwrap(), &layer, &keep] {
        assert!(stored.contains(hex_of(d)), "{d} was collected");
        assert_eq!(sha256(&reg.pull_blob("gc/app", d)), d);
    }

    // Damage the kept layer in the bucket: scrub reports it and fails.
    let Backing::S3(b) = &reg.stored else {
        unreachable!()
    };
    b.overwrite(
        &format!("gc/app/blobs/sha256/{}", hex_of(&layer)),
        b"rotten bytes",
    );
    let out = skiff_command("scrub", &reg.config_path()).output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(
        report
            .lines()
            .any(|l| l.starts_with("gc/app") && l.contains(&layer)),
        "{report}"
    );
}
