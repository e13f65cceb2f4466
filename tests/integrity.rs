//! Integrity under hostile timing and input: requests that race each other
//! on one upload or one index, objects far larger than what they claim to
//! be, and deletes of things still in use. Each test drives the real binary
//! over HTTP (raw sockets where a request must be left half-sent).

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A request whose head is sent now and whose body comes later.
struct HalfSent(TcpStream);

impl HalfSent {
    fn open(reg: &Registry, method: &str, path: &str, headers: &[(&str, String)]) -> HalfSent {
        let mut s = TcpStream::connect(("127.0.0.1", reg.port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n",
            reg.port
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes()).unwrap();
        HalfSent(s)
    }

    /// Send the body (the server may have answered and closed already) and
    /// read the answer's status.
    fn finish(mut self, body: &[u8]) -> u16 {
        let _ = self.0.write_all(body);
        let mut raw = Vec::new();
        let _ = self.0.read_to_end(&mut raw);
        let text = String::from_utf8_lossy(&raw);
        text.split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in {text:?}"))
    }
}

fn chunk_headers(at: usize, len: usize) -> Vec<(&'static str, String)> {
    vec![
        ("Content-Type", "application/octet-stream".into()),
        ("Content-Range", format!("{at}-{}", at + len - 1)),
        ("Content-Length", len.to_string()),
    ]
}

/// Time for the server to take a half-sent request in hand. Only ordering
/// depends on it: every outcome the test accepts is checked either way.
fn let_the_server_start() {
    std::thread::sleep(Duration::from_millis(300));
}

#[test]
fn a_finish_racing_an_append_never_publishes_other_bytes() {
    let reg = Registry::start();
    let a: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let b = vec![7u8; 4000];
    let loc = reg.open_upload("race/app").location();
    let r = reg.patch_chunk(&loc, 0, &a).send();
    assert_eq!(r.status, 202, "{}", r.text());
    let loc = r.location();

    // A second chunk whose body is held back while the upload is finished.
    let late = HalfSent::open(&reg, "PATCH", &loc, &chunk_headers(a.len(), b.len()));
    let_the_server_start();
    let digest_a = sha256(&a);
    let put = reg.close_upload(&loc, &digest_a).send();
    let patch = late.finish(&b);
    assert!(
        !(put.status == 201 && patch == 202),
        "both the finish (201) and the append (202) were accepted"
    );
    // Whatever was accepted, a blob is only ever served whole and right.
    let got = reg.get(&format!("/v2/race/app/blobs/{digest_a}"));
    match put.status {
        201 => assert_eq!(reg.pull_blob("race/app", &digest_a), a),
        // The append was under way: the finish was refused without harm...
        503 => {
            assert_too_many("the finish while a chunk streams in", &put);
            assert_eq!(got.status, 404, "nothing may be published");
            assert_eq!(patch, 202);
            // ...and the session holds both chunks, ready to be finished.
            let whole: Vec<u8> = a.iter().chain(&b).copied().collect();
            let d = sha256(&whole);
            let r = reg.close_upload(&loc, &d).send();
            assert_eq!(r.status, 201, "{}", r.text());
            assert_eq!(reg.pull_blob("race/app", &d), whole);
        }
        s => panic!("finish answered {s}: {}", put.text()),
    }
}

#[test]
fn two_appends_at_one_offset_cannot_both_land() {
    let reg = Registry::start();
    let x = vec![1u8; 50_000];
    let y = vec![2u8; 50_000];
    let loc = reg.open_upload("race/twice").location();
    let first = HalfSent::open(&reg, "PATCH", &loc, &chunk_headers(0, x.len()));
    let_the_server_start();
    let second = HalfSent::open(&reg, "PATCH", &loc, &chunk_headers(0, y.len()));
    let_the_server_start();
    let s2 = second.finish(&y);
    let s1 = first.finish(&x);
    let mut statuses = [s1, s2];
    statuses.sort();
    assert_eq!(statuses, [202, 416], "first {s1}, second {s2}");

    // The session holds exactly one chunk: the one that was accepted.
    let status = reg.get(&loc);
    assert_eq!(status.status, 204);
    assert_eq!(status.header("range"), Some("0-49999"));
    let kept = if s1 == 202 { &x } else { &y };
    let d = sha256(kept);
    let r = reg.close_upload(&loc, &d).send();
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(&reg.pull_blob("race/twice", &d), kept);
}

#[test]
fn a_damaged_blob_is_repaired_by_pushing_it_again() {
    let reg = Registry::start();
    let (_, _) = reg.push_image("fix/app", "v1", "repair");
    let layer = b"layer of repair".to_vec();
    let d = sha256(&layer);
    let path = reg.blob_path("fix/app", &d);
    std::fs::write(&path, b"").unwrap();
    assert_eq!(
        reg.head(&format!("/v2/fix/app/blobs/{d}"))
            .header("content-length"),
        Some("0")
    );

    // Monolithic and chunked pushes of the right bytes both repair it.
    reg.push_blob("fix/app", &layer);
    assert_eq!(reg.pull_blob("fix/app", &d), layer);
    std::fs::write(&path, b"layer of rePair").unwrap();
    let loc = reg.open_upload("fix/app").location();
    let r = reg.patch_chunk(&loc, 0, &layer).send();
    assert_eq!(r.status, 202);
    let r = reg.close_upload(&r.location(), &d).send();
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(reg.pull_blob("fix/app", &d), layer);
}

#[test]
fn a_mount_never_copies_damaged_bytes() {
    let reg = Registry::start();
    let blob = b"mount me".to_vec();
    let d = reg.push_blob("src/app", &blob);
    std::fs::write(reg.blob_path("src/app", &d), b"mount mE").unwrap();
    let r = reg.mount("dst/app", &d, "src/app");
    // Not mountable: the client is asked to upload instead.
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(reg.get(&format!("/v2/dst/app/blobs/{d}")).status, 404);
    // An intact copy mounts, and what is mounted checks out.
    reg.push_blob("src/app", &blob);
    assert_eq!(reg.mount("dst/app", &d, "src/app").status, 201);
    assert_eq!(reg.pull_blob("dst/app", &d), blob);
}

#[test]
fn scrub_checks_blobs_no_manifest_reaches() {
    let reg = Registry::start();
    reg.push_image("scrub/app", "v1", "tagged");
    let loose = reg.push_blob("scrub/app", b"no manifest needs me");
    let ok = skiff_command("scrub", &reg.config_path()).output().unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    std::fs::write(reg.blob_path("scrub/app", &loose), b"no manifest needs mE").unwrap();
    let out = skiff_command("scrub", &reg.config_path()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "scrub missed the damage: {text}");
    assert!(text.contains(&loose), "{text}");
}

/// Peak resident memory of a process, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM")
        * 1024
}

#[test]
fn a_huge_blob_is_never_read_into_memory() {
    let reg = Registry::start_with(|cfg| {
        cfg["storage"]["gcInterval"] = "1s".into();
        cfg["storage"]["gcDelay"] = "1h".into();
    });
    reg.push_image("big/app", "v1", "small");
    // 2^32 + 100 bytes: past u32, so a 32-bit size check would wrap. Sparse,
    // so the test costs no disk; its name is never checked on this path.
    let d = sha256(b"a name for a sparse file");
    let f = std::fs::File::create(reg.blob_path("big/app", &d)).unwrap();
    f.set_len((1u64 << 32) + 100).unwrap();
    drop(f);

    for method in ["GET", "HEAD"] {
        let r = reg
            .req(method, &format!("/v2/big/app/manifests/{d}"))
            .header("Accept", OCI_MANIFEST)
            .send();
        assert_eq!(r.status, 404, "{method}");
        if method == "GET" {
            assert_eq!(r.error_code(), "MANIFEST_UNKNOWN");
        }
    }
    // gc reaches it as an index child of a tagged index.
    let index = serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": d, "size": 4096}],
    });
    let r = reg.put_manifest("big/app", "multi", OCI_INDEX, index.to_string().as_bytes());
    assert_eq!(r.status, 201, "{}", r.text());
    let runs = || metric(&reg.get("/metrics").text(), "skiff_gc_runs_total").unwrap_or(0);
    let before = runs();
    assert!(eventually(Duration::from_secs(60), || runs() >= before + 2));
    assert_eq!(reg.get_manifest("big/app", "v1").status, 200);
    let peak = peak_rss(reg.pid());
    assert!(peak < 512 << 20, "peak RSS {peak} bytes");
}

#[test]
fn hundreds_of_concurrent_tag_pushes_all_land() {
    let reg = Arc::new(Registry::start());
    let config = br#"{"n":1}"#;
    let layer = b"shared layer";
    let cd = reg.push_blob("busy/app", config);
    let ld = reg.push_blob("busy/app", layer);
    let failures = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..200)
        .map(|i| {
            let (reg, failures) = (reg.clone(), failures.clone());
            let (cd, ld) = (cd.clone(), ld.clone());
            std::thread::spawn(move || {
                let mut m: serde_json::Value = serde_json::from_slice(&image_manifest(
                    &cd,
                    config.len(),
                    &[(&ld, layer.len())],
                    None,
                    None,
                ))
                .unwrap();
                m["annotations"] = serde_json::json!({"n": i.to_string()});
                let bytes = serde_json::to_vec(&m).unwrap();
                let r = reg.put_manifest("busy/app", &format!("t{i}"), OCI_MANIFEST, &bytes);
                if r.status != 201 {
                    eprintln!("push t{i}: {} {}", r.status, r.text());
                    failures.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(failures.load(Ordering::SeqCst), 0);
    let tags = reg.get("/v2/busy/app/tags/list").json();
    assert_eq!(tags["tags"].as_array().unwrap().len(), 200, "{tags}");
}

#[test]
fn two_processes_updating_one_index_lose_no_tag() {
    // Two servers on one root directory (the dedupe cache belongs to one
    // process, so it is off), and `skiff gc` passes beside them.
    let a = Arc::new(Registry::start_with(|cfg| {
        cfg["storage"]["dedupe"] = false.into();
        cfg["storage"]["gc"] = false.into();
    }));
    let root = a.root();
    let b = Arc::new(Registry::start_with(|cfg| {
        cfg["storage"]["rootDirectory"] = root.to_str().unwrap().into();
        cfg["storage"]["dedupe"] = false.into();
        cfg["storage"]["gc"] = false.into();
    }));
    let config = br#"{"n":2}"#;
    let layer = b"layer for two processes";
    let cd = a.push_blob("two/app", config);
    let ld = a.push_blob("two/app", layer);
    let manifest = image_manifest(&cd, config.len(), &[(&ld, layer.len())], None, None);

    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let gc = {
        let (done, cfg) = (done.clone(), a.config_path());
        std::thread::spawn(move || {
            let mut passes = 0;
            while !done.load(Ordering::SeqCst) && passes < 200 {
                let out = skiff_command("gc", &cfg).output().unwrap();
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stdout)
                );
                passes += 1;
            }
            passes
        })
    };
    let acknowledged = Arc::new(std::sync::Mutex::new(Vec::new()));
    let writers: Vec<_> = (0..16)
        .map(|w| {
            let reg = if w % 2 == 0 { a.clone() } else { b.clone() };
            let (manifest, acknowledged) = (manifest.clone(), acknowledged.clone());
            std::thread::spawn(move || {
                for i in 0..40 {
                    let tag = format!("w{w}-{i}");
                    let r = reg.put_manifest("two/app", &tag, OCI_MANIFEST, &manifest);
                    assert_eq!(r.status, 201, "{tag}: {}", r.text());
                    acknowledged.lock().unwrap().push(tag);
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    done.store(true, Ordering::SeqCst);
    assert!(gc.join().unwrap() > 0);

    let listed = a.get("/v2/two/app/tags/list").json();
    let listed: std::collections::BTreeSet<String> = listed["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    let acknowledged = acknowledged.lock().unwrap();
    assert_eq!(acknowledged.len(), 640);
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|t| !listed.contains(*t))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged tags lost: {lost:?}",
        lost.len()
    );
}

#[test]
fn many_large_referrers_of_one_subject() {
    let reg = Registry::start();
    let (subject, subject_digest) = reg.push_image("sig/app", "v1", "signed");
    let cd = reg.push_blob("sig/app", b"{}");
    // Each referrer is a manifest near the 4 MiB limit, nearly all annotation.
    let big = "x".repeat((4 << 20) - 4096);
    for i in 0..20 {
        let mut m: serde_json::Value = serde_json::from_slice(&image_manifest(
            &cd,
            2,
            &[],
            Some((&subject_digest, subject.len())),
            Some("application/vnd.example.signature"),
        ))
        .unwrap();
        m["annotations"] = serde_json::json!({ "big": big, "n": i.to_string() });
        let bytes = serde_json::to_vec(&m).unwrap();
        let r = reg.put_manifest("sig/app", &sha256(&bytes), OCI_MANIFEST, &bytes);
        assert_eq!(r.status, 201, "referrer {i}: {}", r.text());
    }
    let r = reg.get(&format!("/v2/sig/app/referrers/{subject_digest}"));
    assert_eq!(r.status, 200);
    let list = r.json();
    let manifests = list["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 20);
    // Entries carry what fits of the annotations: the small ones, not 4 MiB each.
    assert!(r.body.len() < 1 << 20, "{} bytes", r.body.len());
    let mut ns: Vec<String> = manifests
        .iter()
        .map(|m| m["annotations"]["n"].as_str().unwrap().to_string())
        .collect();
    ns.sort_by_key(|n| n.parse::<u32>().unwrap());
    assert_eq!(ns, (0..20).map(|i| i.to_string()).collect::<Vec<_>>());
    // The manifests themselves keep every annotation.
    let d = manifests[0]["digest"].as_str().unwrap();
    let m = reg.get_manifest("sig/app", d).json();
    assert_eq!(m["annotations"]["big"].as_str().unwrap().len(), big.len());
}

#[test]
fn deleting_a_tagged_manifest_as_a_blob_is_refused() {
    let reg = Registry::start();
    let (_, d) = reg.push_image("del/app", "v1", "keep");
    let r = reg.delete(&format!("/v2/del/app/blobs/{d}"));
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(r.error_code(), "DENIED");
    assert!(r.text().contains("v1"), "{}", r.text());
    assert_eq!(reg.get_manifest("del/app", "v1").status, 200);
    // Through the manifests endpoint it goes, tag and all.
    assert_eq!(
        reg.delete(&format!("/v2/del/app/manifests/{d}")).status,
        202
    );
    assert_eq!(reg.get_manifest("del/app", "v1").status, 404);
}

#[test]
fn max_blob_size_is_enforced() {
    let reg = Registry::start_with(|cfg| cfg["storage"]["maxBlobSize"] = 1000.into());
    let fits = vec![3u8; 1000];
    reg.push_blob("max/app", &fits);
    let over = vec![4u8; 1001];
    let r = reg
        .req(
            "POST",
            &format!("/v2/max/app/blobs/uploads/?digest={}", sha256(&over)),
        )
        .body(&over)
        .send();
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(r.error_code(), "SIZE_INVALID");
    // A streamed body of unknown length is cut off just past the limit,
    // and its session is dropped.
    let loc = reg.open_upload("max/app").location();
    let r = reg.patch_upload(&loc, &vec![5u8; 5000]).chunked().send();
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(reg.get(&loc).status, 404);
    // Chunks that add up past it are refused before they are stored.
    let loc = reg.open_upload("max/app").location();
    let r = reg.patch_chunk(&loc, 0, &[6u8; 600]).send();
    assert_eq!(r.status, 202);
    let r = reg.patch_chunk(&r.location(), 600, &[6u8; 600]).send();
    assert_eq!(r.status, 413, "{}", r.text());
    let uploads = reg.root().join("max/app/.uploads");
    let left: Vec<_> = std::fs::read_dir(&uploads)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    // Only the session still open (its bytes and state) remains.
    assert_eq!(left.len(), 2, "{left:?}");
}

#[test]
fn referrer_lists_of_earlier_versions_are_migrated() {
    let reg = Registry::start();
    let (subject, sd) = reg.push_image("old/app", "v1", "subject");
    let cd = reg.push_blob("old/app", b"{}");
    let referrer = |n: &str| {
        let mut m: serde_json::Value = serde_json::from_slice(&image_manifest(
            &cd,
            2,
            &[],
            Some((&sd, subject.len())),
            Some("application/vnd.example.sbom"),
        ))
        .unwrap();
        m["annotations"] = serde_json::json!({ "n": n });
        serde_json::to_vec(&m).unwrap()
    };
    let first = referrer("1");
    let r = reg.put_manifest("old/app", &sha256(&first), OCI_MANIFEST, &first);
    assert_eq!(r.status, 201);
    // Rewrite its entry the way earlier versions stored referrers: one JSON
    // list at the subject's key.
    let dir = reg
        .root()
        .join(format!("old/app/.referrers/sha256/{}", hex_of(&sd)));
    assert!(dir.is_dir());
    std::fs::remove_dir_all(&dir).unwrap();
    let legacy = serde_json::json!([{
        "mediaType": OCI_MANIFEST, "digest": sha256(&first), "size": first.len(),
        "artifactType": "application/vnd.example.sbom", "annotations": {"n": "1"},
    }]);
    std::fs::write(&dir, legacy.to_string()).unwrap();

    let list = reg.get(&format!("/v2/old/app/referrers/{sd}")).json();
    assert_eq!(list["manifests"].as_array().unwrap().len(), 1, "{list}");
    let second = referrer("2");
    let r = reg.put_manifest("old/app", &sha256(&second), OCI_MANIFEST, &second);
    assert_eq!(r.status, 201, "{}", r.text());
    let list = reg.get(&format!("/v2/old/app/referrers/{sd}")).json();
    let mut ns: Vec<&str> = list["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["annotations"]["n"].as_str().unwrap())
        .collect();
    ns.sort();
    assert_eq!(ns, ["1", "2"], "{list}");
    assert!(dir.is_dir(), "the list became entries");
}
