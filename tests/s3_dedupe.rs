//! Dedupe on S3: a layer pushed into many repositories is stored once (the
//! others hold references resolved through the dedupe cache), every copy
//! outlives the deletion of any other, the first included; and with
//! `remoteCache` several servers share one DynamoDB table for it.

mod common;

use common::*;
use std::sync::Arc;

/// `n` bytes that do not compress or repeat, different for each `seed`.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}

/// An image in `repo` whose one layer is `layer` (pushed before).
fn tag_image(reg: &Registry, repo: &str, layer: &str, size: usize) {
    let config = format!("{{\"repo\":\"{repo}\"}}");
    let cd = reg.push_blob(repo, config.as_bytes());
    let m = image_manifest(&cd, config.len(), &[(layer, size)], None, None);
    let r = reg.put_manifest(repo, "v1", OCI_MANIFEST, &m);
    assert_eq!(r.status, 201, "{}", r.text());
}

fn assert_pulls(reg: &Registry, repo: &str, digest: &str) {
    let got = reg.pull_blob(repo, digest);
    assert_eq!(sha256(&got), digest, "{repo} through :{}", reg.port);
}

#[test]
fn a_layer_in_ten_repositories_is_stored_once_and_outlives_its_first_copy() {
    const SIZE: usize = 64 << 20;
    let bucket = Arc::new(Bucket::create());
    let reg = Registry::start_on_bucket(&bucket, |_| {});
    let layer = noise(SIZE, 1);
    let mut digest = String::new();
    for r in 0..10 {
        let repo = format!("dedupe/r{r}");
        digest = reg.push_blob(&repo, &layer);
        tag_image(&reg, &repo, &digest, SIZE);
    }
    // One layer's bytes, and the small manifests and configs beside it.
    let stored = bucket.bytes_stored();
    report(&format!(
        "s3 dedupe: a 64 MiB layer in 10 repositories takes {stored} bytes in the bucket"
    ));
    assert!(
        stored >= SIZE as u64 && stored < SIZE as u64 + (1 << 20),
        "{stored} bytes stored"
    );
    // Repository 0 held the bytes; deleting its copy moves them.
    let r = reg.delete(&format!("/v2/dedupe/r0/blobs/{digest}"));
    assert_eq!(r.status, 202, "{}", r.text());
    let r = reg.head(&format!("/v2/dedupe/r0/blobs/{digest}"));
    assert_eq!(r.status, 404);
    for r in 1..10 {
        assert_pulls(&reg, &format!("dedupe/r{r}"), &digest);
    }
    assert!(bucket.bytes_stored() < SIZE as u64 + (1 << 20));
    // Every copy but one goes, in turn; the last still pulls.
    for r in 1..9 {
        let r = reg.delete(&format!("/v2/dedupe/r{r}/blobs/{digest}"));
        assert_eq!(r.status, 202, "{}", r.text());
    }
    assert_pulls(&reg, "dedupe/r9", &digest);
    // The last copy deleted, the bytes leave the bucket.
    let r = reg.delete(&format!("/v2/dedupe/r9/blobs/{digest}"));
    assert_eq!(r.status, 202, "{}", r.text());
    assert!(bucket.bytes_stored() < 1 << 20);
}

/// Two servers with `remoteCache` on one DynamoDB table: pushes of one
/// layer through both, into 20 repositories at once, while copies are
/// deleted through both: one copy in the bucket, every remaining one pulls
/// through either server.
#[test]
fn two_servers_share_one_dedupe_table() {
    const SIZE: usize = 6 << 20;
    let bucket = Arc::new(Bucket::create());
    let table = fresh_table();
    let remote = |cfg: &mut serde_json::Value| use_dynamodb(cfg, &table);
    let servers = [
        Registry::start_on_bucket(&bucket, remote),
        Registry::start_on_bucket(&bucket, remote),
    ];
    let layer = noise(SIZE, 2);
    let digest = sha256(&layer);
    // The first copy, then 2 × 10 more at once; odd repositories delete
    // theirs right after pushing it, and one deletes the first.
    servers[0].push_blob("shared/first", &layer);
    std::thread::scope(|scope| {
        for (s, reg) in servers.iter().enumerate() {
            let (layer, digest) = (&layer, &digest);
            for i in 0..10 {
                scope.spawn(move || {
                    let repo = format!("shared/s{s}-r{i}");
                    reg.push_blob(&repo, layer);
                    if s == 1 && i == 0 {
                        let r = reg.delete(&format!("/v2/shared/first/blobs/{digest}"));
                        assert_eq!(r.status, 202, "{}", r.text());
                    }
                    if i % 2 == 1 {
                        let r = reg.delete(&format!("/v2/{repo}/blobs/{digest}"));
                        assert_eq!(r.status, 202, "{}", r.text());
                    }
                });
            }
        }
    });
    let stored = bucket.bytes_stored();
    report(&format!(
        "s3 dedupe with DynamoDB: a 6 MiB layer pushed into 21 repositories through 2 servers takes {stored} bytes"
    ));
    assert!(stored < 2 * SIZE as u64, "{stored} bytes stored");
    for reg in &servers {
        assert_eq!(
            reg.head(&format!("/v2/shared/first/blobs/{digest}")).status,
            404
        );
        for s in 0..2 {
            for i in 0..10 {
                let repo = format!("shared/s{s}-r{i}");
                if i % 2 == 1 {
                    assert_eq!(reg.head(&format!("/v2/{repo}/blobs/{digest}")).status, 404);
                } else {
                    assert_pulls(reg, &repo, &digest);
                }
            }
        }
    }
}

/// A mount from a repository on S3 costs no bytes: the new repository
/// holds a reference.
#[test]
fn mounts_on_s3_store_no_second_copy() {
    const SIZE: usize = 8 << 20;
    let bucket = Arc::new(Bucket::create());
    let reg = Registry::start_on_bucket(&bucket, |_| {});
    let layer = noise(SIZE, 3);
    let digest = reg.push_blob("mount/from", &layer);
    let r = reg.mount("mount/to", &digest, "mount/from");
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(bucket.bytes_stored() < SIZE as u64 + (1 << 20));
    let r = reg.delete(&format!("/v2/mount/from/blobs/{digest}"));
    assert_eq!(r.status, 202, "{}", r.text());
    assert_pulls(&reg, "mount/to", &digest);
}
