//! The `objects` contract as one test suite, run against every backend.
//! A backend joins with one test that passes a constructor of empty stores
//! to [`run`] (see the bottom of this file). Each case gets a store of its
//! own and states one rule of the WIT `objects` interface.

use super::Backend;
use crate::runtime::skiff::registry::objects::{
    Condition, Content, HashAlgorithm, ObjectError, Published,
};
use crate::runtime::Priority;
use sha2::{Digest as _, Sha256, Sha512};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream};

/// A fresh, empty store and whatever keeps it alive (a temporary directory).
pub struct Fresh {
    pub store: Arc<dyn Backend>,
    pub _keep: Box<dyn std::any::Any + Send>,
}

type Case = fn(Arc<dyn Backend>) -> Pin<Box<dyn Future<Output = ()> + Send>>;

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        &[$((stringify!($name), |s| Box::pin($name(s))),)*]
    };
}

const CASES: &[(&str, Case)] = cases![
    small_objects_round_trip,
    get_refuses_what_is_over_the_bound,
    missing_objects_are_not_found,
    conditional_puts,
    one_of_two_racing_writers_wins,
    conditional_deletes,
    listing_children,
    appends_check_their_offset,
    ranged_reads,
    appends_across_parts_publish_whole,
    digests_of_whole_objects,
    touch_moves_modified_time,
    publish_checks_the_digest,
    publish_of_content_already_there,
    copies_check_blob_digests,
    one_blob_in_many_repositories,
    deletes_race_publishes_of_one_blob,
    invalid_keys_are_refused,
];

/// Run every case, each on a fresh store from `fresh`; then check that the
/// store of a case that cleans up after itself is empty.
pub async fn run<F: Future<Output = Fresh>>(fresh: impl Fn() -> F) {
    for (name, case) in CASES {
        eprintln!("objects suite: {name}");
        let f = fresh().await;
        case(f.store.clone()).await;
        assert_no_leftovers(name, f.store.as_ref()).await;
    }
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

const REPO: &str = "suite/repo";

fn blob_key(bytes: &[u8]) -> String {
    format!("{REPO}/blobs/sha256/{}", sha256_hex(bytes))
}

fn input(bytes: &[u8]) -> DynInputStream {
    Box::new(MemoryInputPipe::new(bytes.to_vec()))
}

async fn read_all(s: &dyn Backend, key: &str, start: u64, len: u64) -> Vec<u8> {
    let pipe = MemoryOutputPipe::new(usize::MAX);
    let mut out: DynOutputStream = Box::new(pipe.clone());
    s.read_to(key, start, len, &mut out).await.unwrap();
    pipe.contents().to_vec()
}

/// Every key under `prefix`, depth first.
async fn all_keys(s: &dyn Backend, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![prefix.to_string()];
    while let Some(p) = todo.pop() {
        let children = match s.list_children(&p).await {
            Ok(c) => c,
            Err(ObjectError::NotFound) => continue,
            Err(e) => panic!("list {p:?}: {e:?}"),
        };
        for c in children {
            let full = format!("{p}{}", c.name);
            if c.is_prefix {
                todo.push(format!("{full}/"));
            } else {
                out.push(full);
            }
        }
    }
    out.sort();
    out
}

/// The disk store's own files at its root: its dedupe cache, server markers.
fn own_file(name: &str) -> bool {
    name.starts_with(".skiff-cache") || name.starts_with(".skiff-running")
}

/// Cases delete what they made, so anything left (a temporary file, a
/// staging object) is something a backend failed to clean up.
async fn assert_no_leftovers(case: &str, s: &dyn Backend) {
    let left: Vec<String> = all_keys(s, "")
        .await
        .into_iter()
        .filter(|k| !own_file(k))
        .collect();
    assert!(left.is_empty(), "{case} left {left:?} behind");
}

async fn small_objects_round_trip(s: Arc<dyn Backend>) {
    let key = format!("{REPO}/index.json");
    let m = s
        .put(&key, b"{}".to_vec(), Condition::Always)
        .await
        .unwrap();
    assert_eq!(m.size, 2);
    let (bytes, got) = s.get(&key, 1024).await.unwrap();
    assert_eq!(bytes, b"{}");
    assert_eq!(got.version, m.version);
    assert_eq!(s.stat(&key).await.unwrap().version, m.version);
    // A replace changes the version, even to bytes of the same size.
    let m2 = s
        .put(&key, b"[]".to_vec(), Condition::Always)
        .await
        .unwrap();
    assert_ne!(m2.version, m.version);
    assert_eq!(s.get(&key, 1024).await.unwrap().0, b"[]");
    s.delete(&key, Condition::Always).await.unwrap();
}

async fn get_refuses_what_is_over_the_bound(s: Arc<dyn Backend>) {
    let key = format!("{REPO}/big");
    s.put(&key, vec![7; 100], Condition::Always).await.unwrap();
    assert!(matches!(
        s.get(&key, 99).await,
        Err(ObjectError::TooLarge(100))
    ));
    assert_eq!(s.get(&key, 100).await.unwrap().0.len(), 100);
    s.delete(&key, Condition::Always).await.unwrap();
}

async fn missing_objects_are_not_found(s: Arc<dyn Backend>) {
    let key = format!("{REPO}/nothing");
    assert!(matches!(s.get(&key, 10).await, Err(ObjectError::NotFound)));
    assert!(matches!(s.stat(&key).await, Err(ObjectError::NotFound)));
    assert!(matches!(
        s.delete(&key, Condition::Always).await,
        Err(ObjectError::NotFound)
    ));
    assert!(matches!(s.touch(&key).await, Err(ObjectError::NotFound)));
    assert!(matches!(
        s.digest(&key, HashAlgorithm::Sha256, Priority::Request)
            .await,
        Err(ObjectError::NotFound)
    ));
}

async fn conditional_puts(s: Arc<dyn Backend>) {
    // Not index.json: the disk store keeps its previous version beside it.
    let key = format!("{REPO}/state.json");
    let v1 = s
        .put(&key, b"1".to_vec(), Condition::IfAbsent)
        .await
        .unwrap();
    assert!(matches!(
        s.put(&key, b"x".to_vec(), Condition::IfAbsent).await,
        Err(ObjectError::PreconditionFailed)
    ));
    let v2 = s
        .put(
            &key,
            b"2".to_vec(),
            Condition::IfVersion(v1.version.clone()),
        )
        .await
        .unwrap();
    // The old version no longer holds.
    assert!(matches!(
        s.put(&key, b"x".to_vec(), Condition::IfVersion(v1.version))
            .await,
        Err(ObjectError::PreconditionFailed)
    ));
    let (bytes, meta) = s.get(&key, 10).await.unwrap();
    assert_eq!((bytes, meta.version), (b"2".to_vec(), v2.version));
    // A version of nothing there fails too.
    let other = format!("{REPO}/other");
    assert!(matches!(
        s.put(&other, b"x".to_vec(), Condition::IfVersion("v".into()))
            .await,
        Err(ObjectError::PreconditionFailed | ObjectError::NotFound)
    ));
    s.delete(&key, Condition::Always).await.unwrap();
}

async fn one_of_two_racing_writers_wins(s: Arc<dyn Backend>) {
    // Not index.json: the disk store keeps its previous version beside it.
    let key = format!("{REPO}/state.json");
    let base = s.put(&key, b"0".to_vec(), Condition::Always).await.unwrap();
    for round in 0..20u8 {
        let current = s.stat(&key).await.unwrap().version;
        let cas = |v: u8| {
            let (s, key, when) = (
                s.clone(),
                key.clone(),
                Condition::IfVersion(current.clone()),
            );
            tokio::spawn(async move { s.put(&key, vec![v], when).await })
        };
        let (a, b) = (cas(2 * round), cas(2 * round + 1));
        let results = [a.await.unwrap(), b.await.unwrap()];
        let won: Vec<_> = results.iter().filter(|r| r.is_ok()).collect();
        assert_eq!(won.len(), 1, "round {round}: {results:?}");
        assert!(results
            .iter()
            .any(|r| matches!(r, Err(ObjectError::PreconditionFailed))));
        // What is stored is the winner's write, at the winner's version.
        let (bytes, meta) = s.get(&key, 10).await.unwrap();
        let winner = won[0].as_ref().unwrap();
        assert_eq!(meta.version, winner.version);
        assert!(bytes == [2 * round] || bytes == [2 * round + 1]);
    }
    let _ = base;
    s.delete(&key, Condition::Always).await.unwrap();
}

async fn conditional_deletes(s: Arc<dyn Backend>) {
    let key = format!("{REPO}/tag");
    let v1 = s.put(&key, b"1".to_vec(), Condition::Always).await.unwrap();
    let v2 = s.put(&key, b"2".to_vec(), Condition::Always).await.unwrap();
    assert!(matches!(
        s.delete(&key, Condition::IfVersion(v1.version)).await,
        Err(ObjectError::PreconditionFailed)
    ));
    assert_eq!(
        s.get(&key, 10).await.unwrap().0,
        b"2",
        "a refused delete keeps the object"
    );
    assert!(s.delete(&key, Condition::IfAbsent).await.is_err());
    s.delete(&key, Condition::IfVersion(v2.version))
        .await
        .unwrap();
    assert!(matches!(s.stat(&key).await, Err(ObjectError::NotFound)));
}

async fn listing_children(s: Arc<dyn Backend>) {
    let keys = [
        format!("{REPO}/index.json"),
        format!("{REPO}/oci-layout"),
        format!("{REPO}/blobs/sha256/aa"),
        format!("{REPO}/blobs/sha512/bb"),
    ];
    for k in &keys {
        s.put(k, b"x".to_vec(), Condition::Always).await.unwrap();
    }
    let children = s.list_children(&format!("{REPO}/")).await.unwrap();
    let names: Vec<(&str, bool)> = children
        .iter()
        .map(|c| (c.name.as_str(), c.is_prefix))
        .collect();
    assert_eq!(
        names,
        [
            ("blobs", true),
            ("index.json", false),
            ("oci-layout", false)
        ],
        "sorted, prefixes marked"
    );
    let mut expect: Vec<String> = keys.to_vec();
    expect.sort();
    assert_eq!(all_keys(s.as_ref(), "suite/").await, expect);
    // A prefix with nothing below it lists nothing.
    match s.list_children(&format!("{REPO}/nothing/")).await {
        Ok(c) => assert!(c.is_empty()),
        Err(e) => assert!(matches!(e, ObjectError::NotFound), "{e:?}"),
    }
    for k in &keys {
        s.delete(k, Condition::Always).await.unwrap();
    }
    // Deleting the last key of a prefix leaves no empty prefix listed.
    let top: Vec<_> = s
        .list_children("")
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|c| !own_file(&c.name))
        .collect();
    assert!(top.is_empty(), "{top:?}");
}

async fn appends_check_their_offset(s: Arc<dyn Backend>) {
    let key = format!("{REPO}/.uploads/session/data");
    let w = s
        .write_from(&key, 0, &mut input(b"hello "), None)
        .await
        .unwrap();
    assert_eq!(w.size, 6);
    // Wrong offsets change nothing.
    for wrong in [0, 3, 7] {
        assert!(
            matches!(
                s.write_from(&key, wrong, &mut input(b"zzz"), None).await,
                Err(ObjectError::PreconditionFailed)
            ),
            "offset {wrong}"
        );
    }
    let w = s
        .write_from(&key, 6, &mut input(b"world!!"), Some(5))
        .await
        .unwrap();
    assert_eq!(w.size, 11, "a limit stops the copy");
    if let Some(hex) = &w.sha256 {
        assert_eq!(*hex, sha256_hex(b"hello world"));
    }
    assert_eq!(read_all(s.as_ref(), &key, 0, 11).await, b"hello world");
    s.delete(&key, Condition::Always).await.unwrap();
}

async fn ranged_reads(s: Arc<dyn Backend>) {
    let key = format!("{REPO}/.uploads/r/data");
    let bytes: Vec<u8> = (0..=255u8).cycle().take(3 << 20).collect();
    s.write_from(&key, 0, &mut input(&bytes), None)
        .await
        .unwrap();
    for (start, len) in [(0u64, 10u64), (5, 1), (1 << 20, 2 << 20), (3 << 20, 0)] {
        let got = read_all(s.as_ref(), &key, start, len).await;
        let (a, b) = (start as usize, (start + len) as usize);
        assert_eq!(got, bytes[a..b], "{start}+{len}");
    }
    s.delete(&key, Condition::Always).await.unwrap();
}

/// Appends of uneven sizes that cross the S3 backend's 5 MiB parts (and
/// end mid-part), then a publish: the blob is the bytes in order.
async fn appends_across_parts_publish_whole(s: Arc<dyn Backend>) {
    let key = format!("{REPO}/.uploads/big/data");
    let sizes = [3 << 20, 4 << 20, (5 << 20) + 123, 1, 0, 7];
    let total: usize = sizes.iter().sum();
    let bytes: Vec<u8> = (0..total).map(|i| (i * 31 % 251) as u8).collect();
    let mut at = 0;
    for n in sizes {
        let w = s
            .write_from(&key, at as u64, &mut input(&bytes[at..at + n]), None)
            .await
            .unwrap();
        at += n;
        assert_eq!(w.size, at as u64);
        if let Some(hex) = w.sha256 {
            assert_eq!(hex, sha256_hex(&bytes[..at]), "after {at} bytes");
        }
    }
    assert_eq!(s.stat(&key).await.unwrap().size, total as u64);
    let boundary: usize = 5 << 20;
    assert_eq!(
        read_all(s.as_ref(), &key, boundary as u64 - 10, 20).await,
        bytes[boundary - 10..boundary + 10]
    );
    let dst = blob_key(&bytes);
    let p = s.publish(&key, &dst, sha256_of(&bytes)).await.unwrap();
    assert_eq!(p.size, total as u64);
    assert_eq!(s.stat(&dst).await.unwrap().size, total as u64);
    assert_eq!(
        s.digest(&dst, HashAlgorithm::Sha256, Priority::Request)
            .await
            .unwrap(),
        sha256_hex(&bytes)
    );
    assert_eq!(read_all(s.as_ref(), &dst, 0, total as u64).await, bytes);
    s.delete(&dst, Condition::Always).await.unwrap();
}

async fn digests_of_whole_objects(s: Arc<dyn Backend>) {
    let key = format!("{REPO}/x");
    s.put(&key, b"abc".to_vec(), Condition::Always)
        .await
        .unwrap();
    for (alg, expect) in [
        (HashAlgorithm::Sha256, sha256_hex(b"abc")),
        (HashAlgorithm::Sha512, hex::encode(Sha512::digest(b"abc"))),
    ] {
        for p in [Priority::Request, Priority::Background] {
            assert_eq!(s.digest(&key, alg, p).await.unwrap(), expect);
        }
    }
    s.delete(&key, Condition::Always).await.unwrap();
}

async fn touch_moves_modified_time(s: Arc<dyn Backend>) {
    let key = blob_key(b"touched");
    s.put(&key, b"touched".to_vec(), Condition::IfAbsent)
        .await
        .unwrap();
    let before = s.stat(&key).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let after = s.touch(&key).await.unwrap();
    assert!(
        after.modified_ms >= before.modified_ms + 1000,
        "{before:?} -> {after:?}"
    );
    assert_eq!(s.get(&key, 100).await.unwrap().0, b"touched");
    s.delete(&key, Condition::Always).await.unwrap();
}

fn sha256_of(bytes: &[u8]) -> Content {
    Content {
        algorithm: HashAlgorithm::Sha256,
        hex: sha256_hex(bytes),
    }
}

async fn publish_checks_the_digest(s: Arc<dyn Backend>) {
    let src = format!("{REPO}/.uploads/p/data");
    let bytes = b"the blob's bytes";
    s.write_from(&src, 0, &mut input(bytes), None)
        .await
        .unwrap();
    let dst = blob_key(bytes);
    // The wrong digest: nothing published, the upload as it was.
    let wrong = sha256_of(b"other bytes");
    match s
        .publish(&src, &format!("{REPO}/blobs/sha256/{}", wrong.hex), wrong)
        .await
    {
        Err(ObjectError::DigestMismatch(actual)) => assert_eq!(actual, sha256_hex(bytes)),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.stat(&src).await.unwrap().size, bytes.len() as u64);
    assert!(matches!(s.stat(&dst).await, Err(ObjectError::NotFound)));
    // The right one: the blob appears whole and the upload is gone.
    let p = s.publish(&src, &dst, sha256_of(bytes)).await.unwrap();
    assert_eq!((p.size, p.existed), (bytes.len() as u64, false), "{p:?}");
    assert_eq!(s.get(&dst, 100).await.unwrap().0, bytes);
    assert!(matches!(s.stat(&src).await, Err(ObjectError::NotFound)));
    // Nothing is appended to an upload once it is published.
    assert!(matches!(
        s.write_from(&src, bytes.len() as u64, &mut input(b"more"), None)
            .await,
        Err(ObjectError::NotFound | ObjectError::PreconditionFailed)
    ));
    assert!(matches!(
        s.publish(&src, &dst, sha256_of(bytes)).await,
        Err(ObjectError::NotFound)
    ));
    s.delete(&dst, Condition::Always).await.unwrap();
}

async fn publish_of_content_already_there(s: Arc<dyn Backend>) {
    let bytes = b"pushed twice";
    let dst = blob_key(bytes);
    for expect_existed in [false, true] {
        let src = format!("{REPO}/.uploads/twice/data");
        s.write_from(&src, 0, &mut input(bytes), None)
            .await
            .unwrap();
        let p: Published = s.publish(&src, &dst, sha256_of(bytes)).await.unwrap();
        assert_eq!(p.existed, expect_existed);
        assert!(matches!(s.stat(&src).await, Err(ObjectError::NotFound)));
    }
    // A damaged blob is replaced by a publish of the right bytes.
    s.put(&dst, b"rotten".to_vec(), Condition::Always)
        .await
        .unwrap();
    let src = format!("{REPO}/.uploads/repair/data");
    s.write_from(&src, 0, &mut input(bytes), None)
        .await
        .unwrap();
    let p = s.publish(&src, &dst, sha256_of(bytes)).await.unwrap();
    assert!(!p.existed);
    assert_eq!(s.get(&dst, 100).await.unwrap().0, bytes);
    s.delete(&dst, Condition::Always).await.unwrap();
}

async fn copies_check_blob_digests(s: Arc<dyn Backend>) {
    let bytes = b"mounted";
    let from = blob_key(bytes);
    s.put(&from, bytes.to_vec(), Condition::IfAbsent)
        .await
        .unwrap();
    let to = format!("other/repo/blobs/sha256/{}", sha256_hex(bytes));
    s.copy_in(s.as_ref(), &from, &to, Condition::IfAbsent)
        .await
        .unwrap();
    assert_eq!(s.get(&to, 100).await.unwrap().0, bytes);
    // Deleting one copy leaves the other whole.
    s.delete(&from, Condition::Always).await.unwrap();
    assert_eq!(s.get(&to, 100).await.unwrap().0, bytes);
    // Bytes that do not match the blob key they would go to are refused.
    let bad_src = format!("{REPO}/.uploads/bad/data");
    s.put(&bad_src, b"not it".to_vec(), Condition::Always)
        .await
        .unwrap();
    let target = format!("third/repo/blobs/sha256/{}", sha256_hex(bytes));
    assert!(matches!(
        s.copy_in(s.as_ref(), &bad_src, &target, Condition::IfAbsent)
            .await,
        Err(ObjectError::DigestMismatch(_))
    ));
    assert!(matches!(s.stat(&target).await, Err(ObjectError::NotFound)));
    s.delete(&bad_src, Condition::Always).await.unwrap();
    s.delete(&to, Condition::Always).await.unwrap();
}

/// Publish `bytes` through an upload into `repo`'s blob key.
async fn push_into(s: &dyn Backend, repo: &str, bytes: &[u8]) -> String {
    let src = format!("{repo}/.uploads/{:016x}/data", rand::random::<u64>());
    s.write_from(&src, 0, &mut input(bytes), None)
        .await
        .unwrap();
    let dst = format!("{repo}/blobs/sha256/{}", sha256_hex(bytes));
    s.publish(&src, &dst, sha256_of(bytes)).await.unwrap();
    dst
}

async fn assert_holds(s: &dyn Backend, key: &str, bytes: &[u8]) {
    assert_eq!(s.stat(key).await.unwrap().size, bytes.len() as u64, "{key}");
    assert_eq!(s.get(key, 1 << 20).await.unwrap().0, bytes, "{key}");
    let n = bytes.len() as u64;
    assert_eq!(read_all(s, key, 1, n - 2).await, bytes[1..bytes.len() - 1]);
    assert_eq!(
        s.digest(key, HashAlgorithm::Sha256, Priority::Request)
            .await
            .unwrap(),
        sha256_hex(bytes)
    );
}

/// One blob pushed into several repositories and mounted into another
/// (what dedupe stores once): deleting any copy, the first included,
/// leaves every other one whole.
async fn one_blob_in_many_repositories(s: Arc<dyn Backend>) {
    let bytes = b"a layer shared by many repositories".repeat(40);
    let mut keys = Vec::new();
    for r in 0..4 {
        keys.push(push_into(s.as_ref(), &format!("many/r{r}"), &bytes).await);
    }
    let mounted = format!("many/mounted/blobs/sha256/{}", sha256_hex(&bytes));
    s.copy_in(s.as_ref(), &keys[1], &mounted, Condition::IfAbsent)
        .await
        .unwrap();
    keys.push(mounted);
    while let Some(gone) = (!keys.is_empty()).then(|| keys.remove(0)) {
        s.delete(&gone, Condition::Always).await.unwrap();
        assert!(matches!(s.stat(&gone).await, Err(ObjectError::NotFound)));
        for k in &keys {
            assert_holds(s.as_ref(), k, &bytes).await;
        }
    }
}

/// Sixteen writers publish one blob into repositories of their own while
/// others delete copies: every copy not deleted stays whole.
async fn deletes_race_publishes_of_one_blob(s: Arc<dyn Backend>) {
    let bytes = b"raced".repeat(1000);
    let first = push_into(s.as_ref(), "race/first", &bytes).await;
    let mut tasks = Vec::new();
    for i in 0..16 {
        let (s, bytes, first) = (s.clone(), bytes.clone(), first.clone());
        tasks.push(tokio::spawn(async move {
            let key = push_into(s.as_ref(), &format!("race/r{i}"), &bytes).await;
            if i == 0 {
                // The first copy goes while the others are being made.
                s.delete(&first, Condition::Always).await.unwrap();
            }
            // Half the copies go again at once.
            if i % 2 == 1 {
                s.delete(&key, Condition::Always).await.unwrap();
                None
            } else {
                Some(key)
            }
        }));
    }
    let mut kept = Vec::new();
    for t in tasks {
        kept.extend(t.await.unwrap());
    }
    assert_eq!(kept.len(), 8);
    for k in &kept {
        assert_holds(s.as_ref(), k, &bytes).await;
    }
    for k in &kept {
        s.delete(k, Condition::Always).await.unwrap();
    }
}

async fn invalid_keys_are_refused(s: Arc<dyn Backend>) {
    for bad in ["", "/a", "a/", "a//b", "..", "a/../b", "./a", "a\0b"] {
        assert!(
            matches!(
                s.put(bad, b"x".to_vec(), Condition::Always).await,
                Err(ObjectError::InvalidKey(_))
            ),
            "{bad:?}"
        );
        assert!(
            matches!(s.get(bad, 10).await, Err(ObjectError::InvalidKey(_))),
            "{bad:?}"
        );
    }
}

// ---------------------------------------------------------------- backends

#[tokio::test(flavor = "multi_thread")]
async fn disk() {
    run(|| async { disk_store(false, false) }).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn disk_with_commit_and_dedupe() {
    run(|| async { disk_store(true, true) }).await;
}

fn disk_store(commit: bool, dedupe: bool) -> Fresh {
    let dir = tempfile::tempdir().unwrap();
    let disk = super::Disk::new(dir.path().join("root"), commit, dedupe).unwrap();
    Fresh {
        store: Arc::new(disk),
        _keep: Box::new(dir),
    }
}

/// S3 on the endpoint the test command started (moto): a bucket per case.
#[tokio::test(flavor = "multi_thread")]
async fn s3() {
    let endpoint = std::env::var("SKIFF_TEST_S3_ENDPOINT")
        .expect("SKIFF_TEST_S3_ENDPOINT is not set: scripts/test.sh starts moto and sets it");
    run(|| super::s3::tests::fresh_bucket(&endpoint, 5 << 20, false)).await;
}

/// S3 with dedupe (references and the embedded holders index), and with
/// every touch of a non-empty object taking the part-by-part copy that
/// objects over 5 GiB need.
#[tokio::test(flavor = "multi_thread")]
async fn s3_with_dedupe() {
    let endpoint = std::env::var("SKIFF_TEST_S3_ENDPOINT")
        .expect("SKIFF_TEST_S3_ENDPOINT is not set: scripts/test.sh starts moto and sets it");
    run(|| super::s3::tests::fresh_bucket(&endpoint, 5 << 20, true)).await;
}
