//! What a registry on S3 asks of the bucket: how many requests each
//! registry operation costs (counted by skiff, read from `/metrics`),
//! redirects of blob GETs to presigned URLs, throttling (`SlowDown`)
//! answered by backing off, and gc removing what crashed publishes left.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// `skiff_cloud_requests_total` by operation, from `/metrics`.
fn requests(reg: &Registry) -> BTreeMap<String, u64> {
    let text = reg.get("/metrics").text();
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("skiff_cloud_requests_total{")?;
            let (labels, n) = rest.split_once("} ")?;
            let op = labels.split("operation=\"").nth(1)?.trim_end_matches('"');
            let service = labels.split("service=\"").nth(1)?.split('"').next()?;
            Some((format!("{service}:{op}"), n.trim().parse().ok()?))
        })
        .collect()
}

/// The requests `f` made, by operation.
fn cost(reg: &Registry, f: impl FnOnce()) -> BTreeMap<String, u64> {
    let before = requests(reg);
    f();
    let after = requests(reg);
    after
        .into_iter()
        .filter_map(|(op, n)| {
            let d = n - before.get(&op).copied().unwrap_or(0);
            (d > 0).then_some((op, d))
        })
        .collect()
}

fn total(c: &BTreeMap<String, u64>) -> u64 {
    c.values().sum()
}

#[test]
fn each_registry_operation_costs_few_s3_requests() {
    let bucket = Arc::new(Bucket::create());
    let reg = Registry::start_on_bucket(&bucket, |_| {});
    let (m, d) = reg.push_image("count/app", "v1", "counted");
    let manifest: serde_json::Value = serde_json::from_slice(&m).unwrap();
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let blob = format!("/v2/count/app/blobs/{layer}");
    // (what, doing it, the most requests it may cost)
    type Op<'a> = (&'static str, Box<dyn Fn() + 'a>, u64);
    let ops: Vec<Op> = vec![
        (
            "blob HEAD",
            Box::new(|| assert_eq!(reg.head(&blob).status, 200)),
            2,
        ),
        (
            "blob GET",
            Box::new(|| assert_eq!(reg.get(&blob).status, 200)),
            2,
        ),
        (
            "manifest GET by tag",
            Box::new(|| assert_eq!(reg.get_manifest("count/app", "v1").status, 200)),
            4,
        ),
        (
            "manifest GET by digest",
            Box::new(|| assert_eq!(reg.get_manifest("count/app", &d).status, 200)),
            3,
        ),
        (
            "manifest HEAD by tag",
            Box::new(|| {
                let r = reg.head("/v2/count/app/manifests/v1");
                assert_eq!(r.status, 200);
            }),
            3,
        ),
        (
            "tags list",
            Box::new(|| assert_eq!(reg.get("/v2/count/app/tags/list").status, 200)),
            2,
        ),
        (
            "new blob pushed in one request (POST with digest)",
            Box::new(|| {
                let blob = format!("a new small blob {}", rand::random::<u64>());
                reg.push_blob("count/app", blob.as_bytes());
            }),
            24,
        ),
        (
            "new image pushed (config, layer, manifest by tag)",
            Box::new(|| {
                let seed = format!("image {}", rand::random::<u64>());
                reg.push_image("count/app", "v2", &seed);
            }),
            60,
        ),
    ];
    // A manifest GET reads index.json and the manifest, and checks when
    // the image was last pulled (a HEAD; keepTags rules on pulls need it).
    // By tag, and a tag list, also look for tag entries not yet folded into
    // index.json (a GET or a LIST that usually finds nothing:
    // components/layout/src/journal.rs).
    // Once to warm anything lazily read, then counted.
    for (name, op, most) in &ops {
        op();
        let c = cost(&reg, op);
        report(&format!("s3 requests: {name}: {} ({c:?})", total(&c)));
        assert!(total(&c) <= *most, "{name} cost {c:?}, more than {most}");
        assert!(total(&c) >= 1, "{name}: no request counted ({c:?})");
    }
}

#[test]
fn blob_gets_redirect_to_the_bucket_when_asked_to() {
    let bucket = Arc::new(Bucket::create());
    let reg = Registry::start_on_bucket(&bucket, |cfg| {
        cfg["storage"]["storageDriver"]["redirect"] = true.into();
    });
    let bytes: Vec<u8> = (0..(7 << 20)).map(|i| (i % 251) as u8).collect();
    let d = reg.push_blob("redir/app", &bytes);
    let path = format!("/v2/redir/app/blobs/{d}");
    let r = reg.get(&path);
    assert_eq!(r.status, 307, "{}", r.text());
    assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
    let target = r.location();
    assert!(target.contains("X-Amz-Signature"), "{target}");
    let got = http_get(&target);
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(sha256(&got.body), d);
    // A deduplicated copy redirects to the bytes too.
    reg.push_blob("redir/other", &bytes);
    let r = reg.get(&format!("/v2/redir/other/blobs/{d}"));
    assert_eq!(r.status, 307, "{}", r.text());
    assert_eq!(sha256(&http_get(&r.location()).body), d);
    // No redirect for a HEAD, a browser's fetch, or a client that asks.
    assert_eq!(reg.head(&path).status, 200);
    for (h, v) in [
        ("Origin", "http://ui.example"),
        ("Sec-Fetch-Mode", "cors"),
        ("X-Skiff-No-Redirect", "1"),
    ] {
        let r = reg.req("GET", &path).header(h, v).send();
        assert_eq!(r.status, 200, "{h}: {}", r.text());
        assert_eq!(sha256(&r.body), d);
    }
    // An unknown blob is a 404 as ever, not a redirect.
    let missing = sha256(b"never pushed");
    assert_eq!(
        reg.get(&format!("/v2/redir/app/blobs/{missing}")).status,
        404
    );

    // The URLs may name the bucket by a public endpoint of its own.
    let endpoint = std::env::var("SKIFF_TEST_S3_ENDPOINT").unwrap();
    let public = endpoint.replace("127.0.0.1", "localhost");
    let other = Registry::start_on_bucket(&bucket, |cfg| {
        cfg["storage"]["storageDriver"]["redirect"] = true.into();
        cfg["storage"]["storageDriver"]["redirectendpoint"] = public.clone().into();
    });
    let r = other.get(&path);
    assert_eq!(r.status, 307, "{}", r.text());
    let target = r.location();
    assert!(target.starts_with(&public), "{target}");
    let got = http_get(&target.replace("localhost", "127.0.0.1"));
    assert_eq!(sha256(&got.body), d);

    // A real client follows it: skopeo copies the image out of the bucket.
    let (m, _) = reg.push_image("redir/app", "v1", "redirected");
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    run(std::process::Command::new("skopeo").args([
        "copy",
        "--src-tls-verify=false",
        &format!("docker://127.0.0.1:{}/redir/app:v1", reg.port),
        &format!("oci:{}:v1", layout.display()),
    ]));
    // Its config blob (which no copy recompresses) came through whole.
    let manifest: serde_json::Value = serde_json::from_slice(&m).unwrap();
    let cd = manifest["config"]["digest"].as_str().unwrap();
    let copied = std::fs::read(layout.join("blobs/sha256").join(hex_of(cd)))
        .unwrap_or_else(|e| panic!("{cd} not in the copy ({e}): {:?}", files_under(&layout)));
    assert_eq!(sha256(&copied), cd);
}

/// Every third request to S3 answered `503 SlowDown`: pushes, chunked
/// uploads, pulls and deletes all succeed, after retries.
#[test]
fn throttling_is_retried_never_passed_on() {
    let bucket = Arc::new(Bucket::create());
    let throttle = Throttle::start(&std::env::var("SKIFF_TEST_S3_ENDPOINT").unwrap(), 3);
    let endpoint = throttle.endpoint.clone();
    let reg = Registry::start_on_bucket(&bucket, move |cfg| {
        cfg["storage"]["storageDriver"]["regionendpoint"] = endpoint.into();
    });
    let before = requests(&reg);
    for i in 0..5 {
        let (m, d) = reg.push_image("slow/app", &format!("v{i}"), &format!("seed {i}"));
        assert_eq!(reg.get_manifest("slow/app", &d).body, m);
    }
    let big: Vec<u8> = (0..(11 << 20)).map(|i| (i % 241) as u8).collect();
    let digest = sha256(&big);
    let loc = reg.open_upload("slow/big").location();
    let r = reg.patch_chunk(&loc, 0, &big[..6 << 20]).send();
    assert_eq!(r.status, 202, "{}", r.text());
    let r = reg
        .patch_chunk(&r.location(), 6 << 20, &big[6 << 20..])
        .send();
    assert_eq!(r.status, 202, "{}", r.text());
    let r = reg.close_upload(&r.location(), &digest).send();
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(reg.pull_blob("slow/big", &digest), big);
    let r = reg.delete(&format!("/v2/slow/big/blobs/{digest}"));
    assert_eq!(r.status, 202, "{}", r.text());
    let throttled = throttle.throttled.load(Ordering::SeqCst);
    let passed = throttle.passed.load(Ordering::SeqCst);
    let sent = total(&requests(&reg)) - total(&before);
    report(&format!(
        "s3 throttling: {throttled} SlowDown answers, {passed} requests through, {sent} attempts counted by skiff"
    ));
    assert!(throttled >= 20, "only {throttled} requests throttled");

    // Throttled through every retry: the client is told to come back
    // later, and nothing half-made is left.
    throttle.all.store(true, Ordering::SeqCst);
    let r = reg
        .req("POST", "/v2/slow/app/blobs/uploads/")
        .header("Content-Length", "0")
        .send();
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.error_code(), "TOOMANYREQUESTS");
    assert!(r.header("retry-after").is_some(), "{:?}", r.headers);
    throttle.all.store(false, Ordering::SeqCst);
    assert_eq!(reg.get_manifest("slow/app", "v0").status, 200);
}

/// gc removes multipart uploads and staged parts that a crash left behind,
/// once they are older than gcDelay.
#[test]
fn gc_removes_abandoned_multipart_uploads_and_staged_parts() {
    let bucket = Arc::new(Bucket::create());
    bucket.abandon_multipart_upload("crashed/repo/blobs/sha256/00");
    bucket.overwrite(
        ".skiff-staging/crashed/repo/.uploads/gone/data/part-00001",
        &[1; 1024],
    );
    assert_eq!(bucket.multipart_uploads(), 1);
    let reg = Registry::start_on_bucket(&bucket, |cfg| {
        cfg["storage"]["gcDelay"] = "2s".into();
        cfg["storage"]["gcInterval"] = "1s".into();
    });
    assert!(
        eventually(Duration::from_secs(30), || {
            bucket.multipart_uploads() == 0 && reg.stored.files(".skiff-staging/crashed").is_empty()
        }),
        "abandoned upload parts are still there: {} multipart uploads, staged {:?}",
        bucket.multipart_uploads(),
        reg.stored.files(".skiff-staging/crashed")
    );
}
