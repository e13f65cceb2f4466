//! End-to-end conformance tests against the real binary: every case of the
//! OCI distribution-spec conformance suite (v1.1.1: pull, push, content
//! discovery, content management) plus the newer runner's range, upload and
//! referrers checks, and a look at the OCI image layout left on disk.

mod common;
use common::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const EMPTY_DIGEST: &str =
    "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";

// ---------------------------------------------------------------- helpers

/// Start an upload session; returns its Location.
fn start_upload(reg: &Registry, repo: &str) -> String {
    let r = reg.open_upload(repo);
    let loc = r.location();
    assert!(
        loc.starts_with(&format!("/v2/{repo}/blobs/uploads/")),
        "{loc}"
    );
    assert!(r.header("docker-upload-uuid").is_some());
    loc
}

/// A chunk accepted: 202, the session now holding `range`; returns the
/// session's new Location.
fn accepted(r: &Resp, range: &str) -> String {
    assert_eq!(r.status, 202, "to {range}: {}", r.text());
    assert_eq!(r.header("range"), Some(range));
    r.location()
}

/// An error response with this status and, first, this OCI error code.
fn assert_error(r: &Resp, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.error_code(), code);
}

/// The URL inside a `Link: <url>; rel="next"` header.
fn link_target(link: &str) -> String {
    assert!(link.ends_with("rel=\"next\""), "Link {link:?}");
    let start = link.find('<').expect("Link has <") + 1;
    let end = link.find('>').expect("Link has >");
    link[start..end].to_string()
}

/// GET `path` and the pages its `Link` headers lead to, each listing at most
/// two entries under `key`; `check(link, next, page)` checks each Link.
/// Returns every entry, in order, and the number of pages.
fn follow_links(
    reg: &Registry,
    mut path: String,
    key: &str,
    check: impl Fn(&str, &str, &[String]),
) -> (Vec<String>, usize) {
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let r = reg.get(&path);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        let page = strs(&r.json()[key]);
        assert!(page.len() <= 2, "{path}: {page:?}");
        seen.extend(page.clone());
        pages += 1;
        match r.header("link") {
            Some(link) => {
                let next = link_target(link);
                check(link, &next, &page);
                path = next;
            }
            None => break,
        }
        assert!(pages < 10);
    }
    (seen, pages)
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

/// HEAD and GET a blob: its length and digest, and (GET) exactly its bytes.
fn assert_blob(reg: &Registry, repo: &str, digest: &str, bytes: &[u8]) {
    let path = format!("/v2/{repo}/blobs/{digest}");
    for (method, body) in [("HEAD", &b""[..]), ("GET", bytes)] {
        let r = reg.req(method, &path).send();
        assert_eq!(r.status, 200, "{method} blob {digest} in {repo}");
        assert_eq!(
            r.header("content-length"),
            Some(bytes.len().to_string().as_str())
        );
        assert_eq!(r.header("docker-content-digest"), Some(digest));
        assert_eq!(r.body, body, "{method}: blob body of {digest}");
    }
}

fn assert_no_blob(reg: &Registry, repo: &str, digest: &str) {
    let h = reg.head(&format!("/v2/{repo}/blobs/{digest}"));
    assert_eq!(h.status, 404, "HEAD blob {digest} in {repo} should be 404");
    assert_error(
        &reg.get(&format!("/v2/{repo}/blobs/{digest}")),
        404,
        "BLOB_UNKNOWN",
    );
}

/// GET and HEAD a manifest and check it is served exactly as pushed.
fn assert_manifest(reg: &Registry, repo: &str, reference: &str, media_type: &str, bytes: &[u8]) {
    let path = format!("/v2/{repo}/manifests/{reference}");
    let digest = sha256(bytes);
    let accept_any =
        format!("{media_type}, {OCI_MANIFEST}, {OCI_INDEX}, {DOCKER_MANIFEST}, {DOCKER_LIST}");
    for (method, accept, body) in [
        ("GET", accept_any.as_str(), bytes),
        ("HEAD", media_type, &b""[..]),
    ] {
        let r = reg.req(method, &path).header("Accept", accept).send();
        assert_eq!(r.status, 200, "{method} {path}: {}", r.text());
        assert_eq!(r.header("content-type"), Some(media_type), "{path}");
        assert_eq!(
            r.header("docker-content-digest"),
            Some(digest.as_str()),
            "{path}"
        );
        assert_eq!(
            r.header("content-length"),
            Some(bytes.len().to_string().as_str())
        );
        assert_eq!(r.body, body, "{method} {path} must be byte-exact");
    }
}

fn assert_no_manifest(reg: &Registry, repo: &str, reference: &str) {
    let path = format!("/v2/{repo}/manifests/{reference}");
    let h = reg.head(&path);
    assert_eq!(h.status, 404, "HEAD {path} should be 404");
    let g = reg.get(&path);
    assert_eq!(g.status, 404, "GET {path} should be 404");
    assert_eq!(g.error_code(), "MANIFEST_UNKNOWN");
}

fn tags(reg: &Registry, repo: &str) -> Vec<String> {
    let r = reg.get(&format!("/v2/{repo}/tags/list"));
    assert_eq!(r.status, 200, "tags of {repo}: {}", r.text());
    let j = r.json();
    assert_eq!(j["name"], repo);
    strs(&j["tags"])
}

fn referrers(reg: &Registry, repo: &str, subject: &str, query: &str) -> (Resp, Vec<Value>) {
    let r = reg.get(&format!("/v2/{repo}/referrers/{subject}{query}"));
    assert_eq!(r.status, 200, "referrers: {}", r.text());
    assert_eq!(r.header("content-type"), Some(OCI_INDEX));
    let j = r.json();
    assert_eq!(j["schemaVersion"], 2);
    assert_eq!(j["mediaType"], OCI_INDEX);
    let list = j["manifests"].as_array().expect("manifests array").clone();
    (r, list)
}

/// The repository on disk is a valid OCI image layout: `oci-layout`,
/// `index.json` naming its tags with `org.opencontainers.image.ref.name`,
/// and `blobs/sha256/<hex>` files whose content hashes to their name.
fn assert_layout(reg: &Registry, repo: &str, expect_tags: &[&str]) {
    let read = |name: &str| -> Vec<u8> {
        reg.stored
            .read(&format!("{repo}/{name}"))
            .unwrap_or_else(|| panic!("{repo}: no {name}"))
    };
    let json = |name: &str| -> Value { serde_json::from_slice(&read(name)).unwrap() };
    assert_eq!(json("oci-layout")["imageLayoutVersion"], "1.0.0");
    let index = json("index.json");
    assert_eq!(index["schemaVersion"], 2);
    let mut stored_tags = BTreeSet::new();
    for m in index["manifests"].as_array().expect("index manifests") {
        let d = m["digest"].as_str().unwrap();
        let bytes = reg
            .stored
            .read(&format!("{repo}/blobs/sha256/{}", hex_of(d)))
            .unwrap_or_else(|| panic!("{repo}: {d} listed but missing"));
        assert_eq!(
            m["size"].as_u64(),
            Some(bytes.len() as u64),
            "{repo}: size of {d}"
        );
        assert!(m["mediaType"].is_string(), "{repo}: {m}");
        if let Some(t) = m["annotations"]["org.opencontainers.image.ref.name"].as_str() {
            assert!(
                stored_tags.insert(t.to_string()),
                "{repo}: tag {t} listed twice"
            );
        }
    }
    let want: BTreeSet<String> = expect_tags.iter().map(|s| s.to_string()).collect();
    assert_eq!(stored_tags, want, "{repo}: tags in index.json");
    let mut n = 0;
    for name in reg.stored.files(&format!("{repo}/blobs/sha256")) {
        assert_eq!(name.len(), 64, "{repo}: odd blob name {name}");
        let bytes = reg
            .stored
            .read(&format!("{repo}/blobs/sha256/{name}"))
            .unwrap();
        assert_eq!(
            sha256(&bytes),
            format!("sha256:{name}"),
            "{repo}: blob {name} is corrupt"
        );
        n += 1;
    }
    assert!(n > 0, "{repo}: no blobs");
}

/// A manifest with a subject and optional annotations, built by hand so the
/// annotations can be checked in the referrers list.
fn artifact_manifest(
    config_media_type: &str,
    config: (&str, usize),
    layers: &[(&str, usize)],
    subject: (&str, usize),
    artifact_type: Option<&str>,
    annotations: Option<Value>,
) -> Vec<u8> {
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": config_media_type, "digest": config.0, "size": config.1},
        "layers": layers.iter().map(|(d, s)| json!({
            "mediaType": "application/octet-stream", "digest": d, "size": s
        })).collect::<Vec<_>>(),
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject.0, "size": subject.1},
    });
    if let Some(t) = artifact_type {
        m["artifactType"] = json!(t);
    }
    if let Some(a) = annotations {
        m["annotations"] = a;
    }
    serde_json::to_vec_pretty(&m).unwrap()
}

// ---------------------------------------------------------------- base

#[test]
fn base_endpoint() {
    let reg = Registry::start();
    for (method, path) in [("GET", "/v2/"), ("GET", "/v2"), ("HEAD", "/v2/")] {
        let r = reg.req(method, path).send();
        assert_eq!(r.status, 200, "{method} {path}");
        assert_eq!(
            r.header("docker-distribution-api-version"),
            Some("registry/2.0"),
            "{method} {path}"
        );
    }
}

// ---------------------------------------------------------------- pull

#[test]
fn pull_manifests_by_tag_and_digest() {
    let reg = Registry::start();
    let repo = "pull/manifests";
    let (m, d) = reg.push_image(repo, "latest", "pull");
    assert_manifest(&reg, repo, "latest", OCI_MANIFEST, &m);
    assert_manifest(&reg, repo, &d, OCI_MANIFEST, &m);

    // Missing: an unknown tag, an unknown digest, an unknown repository.
    assert_no_manifest(&reg, repo, "nope");
    assert_no_manifest(&reg, repo, &sha256(b"no such manifest"));
    let r = reg.get("/v2/never/pushed/manifests/latest");
    assert_eq!(r.status, 404);
    assert!(
        ["MANIFEST_UNKNOWN", "NAME_UNKNOWN"].contains(&r.error_code().as_str()),
        "{}",
        r.text()
    );
    assert_layout(&reg, repo, &["latest"]);
}

#[test]
fn pull_blobs() {
    let reg = Registry::start();
    let repo = "pull/blob-repo";
    let bytes = b"some blob content".to_vec();
    let d = reg.push_blob(repo, &bytes);
    assert_blob(&reg, repo, &d, &bytes);
    let g = reg.get(&format!("/v2/{repo}/blobs/{d}"));
    assert!(g.header("content-type").is_some());

    // Unknown blob in a known repository and in an unknown one.
    assert_no_blob(&reg, repo, &sha256(b"absent"));
    let r = reg.get(&format!("/v2/unknown/repo/blobs/{d}"));
    assert_eq!(r.status, 404);
    assert!(["BLOB_UNKNOWN", "NAME_UNKNOWN"].contains(&r.error_code().as_str()));
    assert_layout(&reg, repo, &[]);
}

#[test]
fn blob_range_requests() {
    let reg = Registry::start();
    let repo = "ranges";
    let bytes = b"0123456789abcdef";
    let size = bytes.len();
    let d = reg.push_blob(repo, bytes);
    let path = format!("/v2/{repo}/blobs/{d}");
    let ranged = |range: &str| reg.req("GET", &path).header("Range", range).send();

    let cases: &[(&str, usize, usize)] = &[
        ("bytes=0-0", 0, 0),
        ("bytes=2-5", 2, 5),
        ("bytes=2-", 2, size - 1),
        ("bytes=-3", size - 3, size - 1),
        // The end clamps to the last byte.
        ("bytes=10-100", 10, size - 1),
        ("bytes=0-15", 0, 15),
        // A suffix longer than the blob is the whole blob.
        ("bytes=-100", 0, size - 1),
    ];
    for &(range, first, last) in cases {
        let r = ranged(range);
        assert_eq!(r.status, 206, "{range}: {}", r.text());
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes {first}-{last}/{size}").as_str()),
            "{range}"
        );
        assert_eq!(
            r.header("content-length"),
            Some((last - first + 1).to_string().as_str())
        );
        assert_eq!(r.body, &bytes[first..=last], "{range}");
        assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
    }
    let r = ranged("bytes=2-5");
    assert_eq!(r.body, b"2345");

    for bad in ["bytes=16-", "bytes=16-20", "bytes=100-200", "bytes=5-2"] {
        let r = ranged(bad);
        assert_eq!(r.status, 416, "{bad}: {}", r.text());
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes */{size}").as_str()),
            "{bad}"
        );
    }
    // No Range: the whole blob, 200, advertising range support.
    let r = reg.get(&path);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, bytes);
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    // A range on a missing blob is still 404.
    let r = reg
        .req("GET", &format!("/v2/{repo}/blobs/{}", sha256(b"x")))
        .header("Range", "bytes=0-0")
        .send();
    assert_eq!(r.status, 404);
}

// ---------------------------------------------------------------- push: blobs

#[test]
fn push_blob_monolithic() {
    let reg = Registry::start();
    let repo = "push/mono";

    // POST with ?digest= and the whole body.
    let bytes = b"monolithic post".to_vec();
    let d = sha256(&bytes);
    let r = reg
        .req("POST", &format!("/v2/{repo}/blobs/uploads/?digest={d}"))
        .header("Content-Type", "application/octet-stream")
        .body(&bytes)
        .send();
    assert_eq!(r.status, 201, "{}", r.text());
    let loc = r.location();
    assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
    let g = reg.get(&loc);
    assert_eq!(g.status, 200);
    assert_eq!(g.body, bytes);
    assert_blob(&reg, repo, &d, &bytes);

    // POST, then PUT with the body.
    let bytes = b"post then put".to_vec();
    let d = sha256(&bytes);
    let loc = start_upload(&reg, repo);
    let r = reg
        .close_upload(&loc, &d)
        .header("Content-Type", "application/octet-stream")
        .body(&bytes)
        .send();
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        r.header("location"),
        Some(format!("/v2/{repo}/blobs/{d}").as_str())
    );
    assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
    assert_blob(&reg, repo, &d, &bytes);
    // The session is spent.
    assert_error(&reg.get(&loc), 404, "BLOB_UPLOAD_UNKNOWN");

    // POST, then PUT with a chunked body.
    let bytes: Vec<u8> = (0..50_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let d = sha256(&bytes);
    let loc = start_upload(&reg, repo);
    let r = reg
        .close_upload(&loc, &d)
        .header("Content-Type", "application/octet-stream")
        .body(&bytes)
        .chunked()
        .send();
    assert_eq!(r.status, 201, "{}", r.text());
    assert_blob(&reg, repo, &d, &bytes);

    // Pushing the same content again is fine.
    assert_eq!(reg.push_blob(repo, &bytes), d);
    assert_blob(&reg, repo, &d, &bytes);
    assert_layout(&reg, repo, &[]);
}

#[test]
fn push_zero_length_blob() {
    let reg = Registry::start();
    let repo = "push/empty";
    assert_eq!(sha256(b""), EMPTY_DIGEST);
    // Monolithic.
    let r = reg
        .req(
            "POST",
            &format!("/v2/{repo}/blobs/uploads/?digest={EMPTY_DIGEST}"),
        )
        .header("Content-Type", "application/octet-stream")
        .send();
    assert_eq!(r.status, 201, "{}", r.text());
    assert_blob(&reg, repo, EMPTY_DIGEST, b"");
    // POST then PUT without a body, in another repository.
    let repo2 = "push/empty2";
    let loc = start_upload(&reg, repo2);
    let r = reg.close_upload(&loc, EMPTY_DIGEST).send();
    assert_eq!(r.status, 201, "{}", r.text());
    assert_blob(&reg, repo2, EMPTY_DIGEST, b"");
    assert_layout(&reg, repo, &[]);
    assert_layout(&reg, repo2, &[]);
}

/// sha512 is a registered digest algorithm: blobs and manifests named by it
/// are verified, stored under `blobs/sha512/` and served.
#[test]
fn sha512_blobs_and_manifests() {
    use sha2::Digest as _;
    let sha512 = |b: &[u8]| format!("sha512:{}", hex::encode(sha2::Sha512::digest(b)));
    let reg = Registry::start();
    let repo = "push/sha512";
    let layer: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let ld = sha512(&layer);
    // Monolithic.
    let r = reg
        .req("POST", &format!("/v2/{repo}/blobs/uploads/?digest={ld}"))
        .body(&layer)
        .send();
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("docker-content-digest"), Some(ld.as_str()));
    assert_blob(&reg, repo, &ld, &layer);
    assert!(reg
        .stored
        .read(&format!("{repo}/blobs/sha512/{}", &ld["sha512:".len()..]))
        .is_some());
    // Chunked, into another repository, then a wrong sha512 is refused.
    let config = br#"{"os":"linux"}"#;
    let cd = sha512(config);
    let loc = start_upload(&reg, repo);
    let r = reg.patch_chunk(&loc, 0, &config[..5]).send();
    assert_eq!(r.status, 202, "{}", r.text());
    let r = reg
        .close_upload(&r.location(), &cd)
        .body(&config[5..])
        .send();
    assert_eq!(r.status, 201, "{}", r.text());
    let loc = start_upload(&reg, repo);
    let wrong = sha512(b"something else");
    let r = reg.close_upload(&loc, &wrong).body(config).send();
    assert_eq!((r.status, r.error_code().as_str()), (400, "DIGEST_INVALID"));
    assert_eq!(reg.head(&format!("/v2/{repo}/blobs/{wrong}")).status, 404);
    // A manifest of sha512 blobs, pushed by its sha512 digest and a tag.
    let m = image_manifest(&cd, config.len(), &[(&ld, layer.len())], None, None);
    let md = sha512(&m);
    let r = reg
        .req("PUT", &format!("/v2/{repo}/manifests/{md}?tag=v512"))
        .header("Content-Type", OCI_MANIFEST)
        .body(&m)
        .send();
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("docker-content-digest"), Some(md.as_str()));
    for reference in [md.as_str(), "v512"] {
        let r = reg.get(&format!("/v2/{repo}/manifests/{reference}"));
        assert_eq!(r.status, 200, "{reference}: {}", r.text());
        assert_eq!(r.body, m);
        assert_eq!(r.header("docker-content-digest"), Some(md.as_str()));
    }
}

#[test]
fn push_blob_streamed() {
    let reg = Registry::start();
    let repo = "push/stream";
    let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    let d = sha256(&bytes);
    let (a, b) = bytes.split_at(70_001);

    let loc = start_upload(&reg, repo);
    // PATCH without Content-Range, with a Content-Length.
    let r = reg.patch_upload(&loc, a).send();
    let loc = accepted(&r, &format!("0-{}", a.len() - 1));
    // PATCH without Content-Range, chunked.
    let r = reg.patch_upload(&loc, b).chunked().send();
    let loc = accepted(&r, &format!("0-{}", bytes.len() - 1));
    let s = reg.get(&loc);
    assert_eq!(s.status, 204);
    assert_eq!(
        s.header("range"),
        Some(format!("0-{}", bytes.len() - 1).as_str())
    );
    // PUT with no body closes it.
    let r = reg.close_upload(&loc, &d).send();
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        r.header("location"),
        Some(format!("/v2/{repo}/blobs/{d}").as_str())
    );
    assert_blob(&reg, repo, &d, &bytes);

    // A single chunked PATCH of a larger blob.
    let big: Vec<u8> = (0..1_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let bd = sha256(&big);
    let loc = start_upload(&reg, repo);
    let r = reg.req("PATCH", &loc).body(&big).chunked().send();
    let loc = accepted(&r, &format!("0-{}", big.len() - 1));
    let r = reg.close_upload(&loc, &bd).send();
    assert_eq!(r.status, 201, "{}", r.text());
    assert_blob(&reg, repo, &bd, &big);

    // A closing PUT whose chunked body is empty.
    let c = b"closed by an empty chunked PUT";
    let cd = sha256(c);
    let loc = start_upload(&reg, repo);
    let r = reg.req("PATCH", &loc).body(c).send();
    assert_eq!(r.status, 202, "{}", r.text());
    let r = reg.close_upload(&r.location(), &cd).chunked().send();
    assert_eq!(r.status, 201, "{}", r.text());
    assert_blob(&reg, repo, &cd, c);
    assert_layout(&reg, repo, &[]);
}

#[test]
fn push_blob_chunked_with_content_range() {
    let reg = Registry::start();
    let repo = "push/chunked";
    let bytes = b"0123456789ABCDEFGHIJabcdefghij"; // 30 bytes
    let d = sha256(bytes);

    let r = reg.open_upload(repo);
    assert!(r.header("oci-chunk-min-length").is_some());
    let loc = r.location();

    let patch = |loc: &str, range: &str, body: &[u8]| {
        reg.patch_upload(loc, body)
            .header("Content-Range", range)
            .send()
    };

    let r = patch(&loc, "0-9", &bytes[0..10]);
    let loc = accepted(&r, "0-9");

    let r = patch(&loc, "10-19", &bytes[10..20]);
    let loc = accepted(&r, "0-19");

    // Upload status.
    let s = reg.get(&loc);
    assert_eq!(s.status, 204, "{}", s.text());
    assert_eq!(s.header("range"), Some("0-19"));
    assert!(s.header("location").is_some());
    assert!(s.body.is_empty());

    // Out of order: skips bytes 20..25.
    let r = patch(&loc, "25-29", &bytes[25..30]);
    assert_eq!(r.status, 416, "out-of-order chunk: {}", r.text());
    // It says where the session stands, so the client can resume.
    assert_eq!(r.header("range"), Some("0-19"));
    assert!(r.header("location").is_some());
    // Repeated chunk.
    let r = patch(&loc, "10-19", &bytes[10..20]);
    assert_eq!(r.status, 416, "repeated chunk: {}", r.text());
    let r = patch(&loc, "0-9", &bytes[0..10]);
    assert_eq!(r.status, 416, "repeated first chunk: {}", r.text());
    // The session is unharmed.
    let s = reg.get(&loc);
    assert_eq!(s.status, 204);
    assert_eq!(s.header("range"), Some("0-19"));

    // The final chunk in the PUT, with its Content-Range.
    let r = reg
        .close_upload(&loc, &d)
        .header("Content-Type", "application/octet-stream")
        .header("Content-Range", "20-29")
        .body(&bytes[20..30])
        .send();
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        r.header("location"),
        Some(format!("/v2/{repo}/blobs/{d}").as_str())
    );
    assert_blob(&reg, repo, &d, bytes);
    assert_error(&reg.get(&loc), 404, "BLOB_UPLOAD_UNKNOWN");

    // The final chunk in a chunked PUT, with its Content-Range.
    let bytes3 = b"chunk one|chunk two, sent chunked";
    let d3 = sha256(bytes3);
    let loc = start_upload(&reg, repo);
    let r = patch(&loc, "0-9", &bytes3[0..10]);
    assert_eq!(r.status, 202, "{}", r.text());
    let r = reg
        .close_upload(&r.location(), &d3)
        .header("Content-Range", &format!("10-{}", bytes3.len() - 1))
        .body(&bytes3[10..])
        .chunked()
        .send();
    assert_eq!(r.status, 201, "{}", r.text());
    assert_blob(&reg, repo, &d3, bytes3);

    // All chunks by PATCH, then a PUT without a body.
    let bytes2 = b"second blob, three chunks";
    let d2 = sha256(bytes2);
    let mut loc = start_upload(&reg, repo);
    for (range, part) in [
        ("0-5", &bytes2[0..6]),
        ("6-15", &bytes2[6..16]),
        ("16-24", &bytes2[16..25]),
    ] {
        let r = patch(&loc, range, part);
        loc = accepted(&r, &format!("0-{}", range.split('-').nth(1).unwrap()));
    }
    let r = reg.close_upload(&loc, &d2).send();
    assert_eq!(r.status, 201, "{}", r.text());
    assert_blob(&reg, repo, &d2, bytes2);
    assert_layout(&reg, repo, &[]);
}

#[test]
fn push_blob_wrong_digest() {
    let reg = Registry::start();
    let repo = "push/wrong";
    let bytes = b"the real content";
    let real = sha256(bytes);
    let claimed = sha256(b"something else");
    // Refused, and stored under neither digest.
    let refused = |r: Resp| {
        assert_error(&r, 400, "DIGEST_INVALID");
        assert_no_blob(&reg, repo, &claimed);
        assert_no_blob(&reg, repo, &real);
    };

    // Monolithic.
    refused(
        reg.req(
            "POST",
            &format!("/v2/{repo}/blobs/uploads/?digest={claimed}"),
        )
        .header("Content-Type", "application/octet-stream")
        .body(bytes)
        .send(),
    );

    // POST then PUT.
    let loc = start_upload(&reg, repo);
    refused(
        reg.close_upload(&loc, &claimed)
            .header("Content-Type", "application/octet-stream")
            .body(bytes)
            .send(),
    );

    // Streamed then a wrong digest on the closing PUT.
    let loc = start_upload(&reg, repo);
    let r = reg.req("PATCH", &loc).body(bytes).send();
    assert_eq!(r.status, 202);
    refused(reg.close_upload(&r.location(), &claimed).send());

    // Nothing under blobs/ in the store either.
    let left = reg.stored.files(&format!("{repo}/blobs/sha256"));
    assert_eq!(
        left.len(),
        0,
        "a blob was stored despite the digest mismatch"
    );
}

#[test]
fn cancel_upload() {
    let reg = Registry::start();
    let repo = "push/cancel";
    let loc = start_upload(&reg, repo);
    let r = reg.req("PATCH", &loc).body(b"partial data").send();
    assert_eq!(r.status, 202);
    let loc = r.location();

    let r = reg.delete(&loc);
    assert_eq!(r.status, 204, "{}", r.text());
    let unknown = |r: Resp| assert_error(&r, 404, "BLOB_UPLOAD_UNKNOWN");
    unknown(reg.get(&loc));
    unknown(reg.req("PATCH", &loc).body(b"more").send());
    unknown(reg.close_upload(&loc, &sha256(b"partial data")).send());
    unknown(reg.delete(&loc));
    assert_no_blob(&reg, repo, &sha256(b"partial data"));

    // A made-up session id is unknown too.
    unknown(reg.get(&format!(
        "/v2/{repo}/blobs/uploads/0123456789abcdef0123456789abcdef"
    )));
}

#[test]
fn cross_repo_mount() {
    let reg = Registry::start();
    let bytes = b"shared layer";
    let d = reg.push_blob("mount/src", bytes);

    let r = reg.mount("mount/dst", &d, "mount/src");
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        r.header("location"),
        Some(format!("/v2/mount/dst/blobs/{d}").as_str())
    );
    assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
    assert_blob(&reg, "mount/dst", &d, bytes);
    // The source keeps its copy.
    assert_blob(&reg, "mount/src", &d, bytes);
    // Mounting again is still 201.
    let r = reg.mount("mount/dst", &d, "mount/src");
    assert_eq!(r.status, 201);

    // From a repository that lacks the blob: an ordinary upload session.
    let other = b"not in the source";
    let od = sha256(other);
    let r = reg.mount("mount/dst2", &od, "mount/src");
    assert_eq!(r.status, 202, "{}", r.text());
    let loc = r.location();
    assert!(loc.starts_with("/v2/mount/dst2/blobs/uploads/"), "{loc}");
    assert_eq!(reg.get(&loc).status, 204);
    assert_no_blob(&reg, "mount/dst2", &od);
    // The session works.
    let r = reg.close_upload(&loc, &od).body(other).send();
    assert_eq!(r.status, 201, "{}", r.text());
    assert_blob(&reg, "mount/dst2", &od, other);

    // From a repository that does not exist: also a session.
    let r = reg.mount("mount/dst3", &d, "no/such/repo");
    assert_eq!(r.status, 202, "{}", r.text());
    assert!(r
        .header("location")
        .unwrap()
        .starts_with("/v2/mount/dst3/blobs/uploads/"));

    // Without `from`: a session.
    let r = reg
        .req("POST", &format!("/v2/mount/dst4/blobs/uploads/?mount={d}"))
        .send();
    assert_eq!(r.status, 202, "{}", r.text());
    let loc = r.location();
    assert!(loc.starts_with("/v2/mount/dst4/blobs/uploads/"), "{loc}");
    assert_eq!(reg.get(&loc).status, 204);

    // A mounted blob can back a manifest in the target.
    let cfg = b"{}";
    let cd = reg.push_blob("mount/dst", cfg);
    let m = image_manifest(&cd, cfg.len(), &[(&d, bytes.len())], None, None);
    let r = reg.put_manifest("mount/dst", "v1", OCI_MANIFEST, &m);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_layout(&reg, "mount/src", &[]);
    assert_layout(&reg, "mount/dst", &["v1"]);
}

// ---------------------------------------------------------------- push: manifests

#[test]
fn push_manifests() {
    let reg = Registry::start();
    let repo = "push/manifests";
    let cfg = br#"{"architecture":"amd64","os":"linux"}"#;
    let layer = b"layer bytes";
    let cd = reg.push_blob(repo, cfg);
    let ld = reg.push_blob(repo, layer);

    // By tag; pretty-printed with odd spacing, to check it is stored byte-exact.
    let m = format!(
        "{{\n  \"schemaVersion\" : 2,\n  \"mediaType\": \"{OCI_MANIFEST}\",\n  \"config\": {{\"mediaType\": \"application/vnd.oci.image.config.v1+json\", \"digest\": \"{cd}\", \"size\": {}}},\n  \"layers\": [ {{\"mediaType\": \"application/vnd.oci.image.layer.v1.tar\", \"digest\": \"{ld}\", \"size\": {}}} ]\n}}\n",
        cfg.len(),
        layer.len()
    )
    .into_bytes();
    let md = sha256(&m);
    let r = reg.put_manifest(repo, "v1", OCI_MANIFEST, &m);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        r.header("location"),
        Some(format!("/v2/{repo}/manifests/{md}").as_str())
    );
    assert_eq!(r.header("docker-content-digest"), Some(md.as_str()));
    assert_manifest(&reg, repo, "v1", OCI_MANIFEST, &m);
    assert_manifest(&reg, repo, &md, OCI_MANIFEST, &m);
    // Pushing the same manifest again is idempotent.
    let r = reg.put_manifest(repo, "v1", OCI_MANIFEST, &m);
    assert_eq!(r.status, 201);

    // By digest: no tag.
    let m2 = image_manifest(&cd, cfg.len(), &[], None, None);
    let d2 = sha256(&m2);
    let r = reg.put_manifest(repo, &d2, OCI_MANIFEST, &m2);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("docker-content-digest"), Some(d2.as_str()));
    assert_eq!(
        r.header("location"),
        Some(format!("/v2/{repo}/manifests/{d2}").as_str())
    );
    assert_manifest(&reg, repo, &d2, OCI_MANIFEST, &m2);
    assert_eq!(tags(&reg, repo), ["v1"]);

    // By digest with ?tag=a&tag=b.
    let m3 = image_manifest(
        &cd,
        cfg.len(),
        &[(&ld, layer.len()), (&ld, layer.len())],
        None,
        None,
    );
    let d3 = sha256(&m3);
    let r = reg
        .req("PUT", &format!("/v2/{repo}/manifests/{d3}?tag=a&tag=b"))
        .header("Content-Type", OCI_MANIFEST)
        .body(&m3)
        .send();
    assert_eq!(r.status, 201, "{}", r.text());
    let mut oci_tags = r.header_all("oci-tag");
    oci_tags.sort();
    assert_eq!(oci_tags, ["a", "b"]);
    assert_eq!(r.header("docker-content-digest"), Some(d3.as_str()));
    assert_manifest(&reg, repo, "a", OCI_MANIFEST, &m3);
    assert_manifest(&reg, repo, "b", OCI_MANIFEST, &m3);
    assert_eq!(tags(&reg, repo), ["a", "b", "v1"]);

    // Moving a tag: v1 now names m3; m stays reachable by digest.
    let r = reg.put_manifest(repo, "v1", OCI_MANIFEST, &m3);
    assert_eq!(r.status, 201);
    assert_manifest(&reg, repo, "v1", OCI_MANIFEST, &m3);
    assert_manifest(&reg, repo, &md, OCI_MANIFEST, &m);

    // With a subject: OCI-Subject names it.
    let m4 = image_manifest(
        &cd,
        cfg.len(),
        &[],
        Some((&md, m.len())),
        Some("application/vnd.example+type"),
    );
    let d4 = sha256(&m4);
    let r = reg.put_manifest(repo, &d4, OCI_MANIFEST, &m4);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("oci-subject"), Some(md.as_str()));
    // Without a subject: no OCI-Subject.
    let r = reg.put_manifest(repo, "v1", OCI_MANIFEST, &m3);
    assert!(r.header("oci-subject").is_none());

    // An OCI image index over two pushed manifests.
    let idx = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": md, "size": m.len(),
             "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": OCI_MANIFEST, "digest": d2, "size": m2.len(),
             "platform": {"architecture": "arm64", "os": "linux"}},
        ],
    }))
    .unwrap();
    let r = reg.put_manifest(repo, "multi", OCI_INDEX, &idx);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        r.header("docker-content-digest"),
        Some(sha256(&idx).as_str())
    );
    assert_manifest(&reg, repo, "multi", OCI_INDEX, &idx);
    assert_manifest(&reg, repo, &sha256(&idx), OCI_INDEX, &idx);
    // Its children still resolve by digest.
    assert_manifest(&reg, repo, &md, OCI_MANIFEST, &m);
    assert_manifest(&reg, repo, &d2, OCI_MANIFEST, &m2);

    assert_layout(&reg, repo, &["a", "b", "multi", "v1"]);
}

#[test]
fn push_docker_manifests() {
    let reg = Registry::start();
    let repo = "push/docker";
    let cfg = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let layer = b"gzip-ish layer";
    let cd = reg.push_blob(repo, cfg);
    let ld = reg.push_blob(repo, layer);
    let m = serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": cfg.len(), "digest": cd},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": layer.len(), "digest": ld}],
    }))
    .unwrap();
    let md = sha256(&m);
    let r = reg.put_manifest(repo, "schema2", DOCKER_MANIFEST, &m);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("docker-content-digest"), Some(md.as_str()));
    assert_manifest(&reg, repo, "schema2", DOCKER_MANIFEST, &m);
    assert_manifest(&reg, repo, &md, DOCKER_MANIFEST, &m);

    let list = serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_LIST,
        "manifests": [{"mediaType": DOCKER_MANIFEST, "size": m.len(), "digest": md,
                       "platform": {"architecture": "amd64", "os": "linux"}}],
    }))
    .unwrap();
    let r = reg.put_manifest(repo, "list", DOCKER_LIST, &list);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_manifest(&reg, repo, "list", DOCKER_LIST, &list);
    assert_manifest(&reg, repo, &sha256(&list), DOCKER_LIST, &list);

    // A Docker manifest missing its layer is refused like an OCI one.
    let bad = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": cfg.len(), "digest": cd},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 3, "digest": sha256(b"nope")}],
    }))
    .unwrap();
    let r = reg.put_manifest(repo, "bad", DOCKER_MANIFEST, &bad);
    assert_error(&r, 400, "MANIFEST_BLOB_UNKNOWN");
    assert_layout(&reg, repo, &["list", "schema2"]);
}

#[test]
fn push_manifest_errors() {
    let reg = Registry::start();
    let repo = "push/errors";
    let cfg = b"{}";
    let cd = reg.push_blob(repo, cfg);

    // A layer that was never pushed.
    let missing = sha256(b"never pushed");
    let m = image_manifest(&cd, cfg.len(), &[(&missing, 12)], None, None);
    let r = reg.put_manifest(repo, "broken", OCI_MANIFEST, &m);
    assert_error(&r, 400, "MANIFEST_BLOB_UNKNOWN");
    assert_no_manifest(&reg, repo, "broken");
    assert_no_manifest(&reg, repo, &sha256(&m));
    // A missing config likewise.
    let m = image_manifest(&missing, 12, &[], None, None);
    let r = reg.put_manifest(repo, "broken", OCI_MANIFEST, &m);
    assert_error(&r, 400, "MANIFEST_BLOB_UNKNOWN");

    // Over 4 MiB.
    let big = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cfg.len()},
        "layers": [],
        "annotations": {"padding": "x".repeat(4 * 1024 * 1024 + 10)},
    }))
    .unwrap();
    assert!(big.len() > 4 * 1024 * 1024);
    let r = reg.put_manifest(repo, "big", OCI_MANIFEST, &big);
    assert_eq!(r.status, 413, "{}", r.text());
    let r = reg
        .req("PUT", &format!("/v2/{repo}/manifests/big"))
        .header("Content-Type", OCI_MANIFEST)
        .body(&big)
        .chunked()
        .send();
    assert_eq!(r.status, 413, "chunked: {}", r.text());
    assert_no_manifest(&reg, repo, "big");

    // PUT by a digest that is not the body's.
    let good = image_manifest(&cd, cfg.len(), &[], None, None);
    let wrong = sha256(b"another manifest");
    let r = reg.put_manifest(repo, &wrong, OCI_MANIFEST, &good);
    assert_error(&r, 400, "DIGEST_INVALID");
    assert_no_manifest(&reg, repo, &wrong);
    assert_no_manifest(&reg, repo, &sha256(&good));

    // Not JSON, and JSON that is no manifest.
    for bad in [
        &b"this is not json"[..],
        b"{\"schemaVersion\":2,",
        b"[]",
        b"{\"schemaVersion\":1}",
    ] {
        let r = reg.put_manifest(repo, "invalid", OCI_MANIFEST, bad);
        assert_eq!(
            r.status,
            400,
            "{:?}: {}",
            String::from_utf8_lossy(bad),
            r.text()
        );
        assert_eq!(r.error_code(), "MANIFEST_INVALID");
    }
    assert_no_manifest(&reg, repo, "invalid");

    // The repository still has no tags, and a valid push still works.
    assert!(tags(&reg, repo).is_empty());
    let r = reg.put_manifest(repo, "ok", OCI_MANIFEST, &good);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_layout(&reg, repo, &["ok"]);
}

/// References that are neither a tag nor a digest name nothing that can
/// exist: reads and deletes of them are 404 MANIFEST_UNKNOWN, as the OCI
/// conformance suite and CNCF distribution answer; a PUT of one is refused
/// with 400, and nothing is stored.
#[test]
fn invalid_manifest_references() {
    let reg = Registry::start();
    let repo = "refs/invalid";
    let (m, _) = reg.push_image(repo, "v1", "the only image");
    let too_long = "t".repeat(129);
    for reference in [
        ".INVALID_MANIFEST_NAME",
        "-leading-dash",
        too_long.as_str(),
        "sha256:tooshort",
        "md5:d41d8cd98f00b204e9800998ecf8427e",
    ] {
        let path = format!("/v2/{repo}/manifests/{reference}");
        let g = reg.get(&path);
        assert_error(&g, 404, "MANIFEST_UNKNOWN");
        assert_eq!(reg.head(&path).status, 404, "HEAD {path}");
        let d = reg.req("DELETE", &path).send();
        assert_error(&d, 404, "MANIFEST_UNKNOWN");
        let p = reg.put_manifest(repo, reference, OCI_MANIFEST, &m);
        assert_eq!(p.status, 400, "PUT {path}: {}", p.text());
        let code = p.error_code();
        assert!(
            code == "MANIFEST_INVALID" || code == "DIGEST_INVALID",
            "PUT {path}: {code}"
        );
    }
    // Nothing was added or removed.
    assert_layout(&reg, repo, &["v1"]);
    assert_manifest(&reg, repo, "v1", OCI_MANIFEST, &m);
}

// ---------------------------------------------------------------- content discovery

#[test]
fn tags_list_and_pagination() {
    let reg = Registry::start();
    let repo = "discover/tags";
    let (m, _) = reg.push_image(repo, "v10", "tags");
    for t in ["alpha", "latest", "v2", "1.0", "Beta", "v1"] {
        let r = reg.put_manifest(repo, t, OCI_MANIFEST, &m);
        assert_eq!(r.status, 201);
    }
    let want = ["1.0", "Beta", "alpha", "latest", "v1", "v10", "v2"];
    assert_eq!(tags(&reg, repo), want, "lexically sorted");

    // ?n=2, then follow Link until the end.
    let (seen, pages) = follow_links(
        &reg,
        format!("/v2/{repo}/tags/list?n=2"),
        "tags",
        |link, next, page| {
            assert_eq!(
                next,
                format!("/v2/{repo}/tags/list?n=2&last={}", page.last().unwrap()),
                "Link {link}"
            );
        },
    );
    assert_eq!(seen, want);
    assert_eq!(pages, 4);

    // Explicit pages.
    let r = reg.get(&format!("/v2/{repo}/tags/list?n=2"));
    assert_eq!(strs(&r.json()["tags"]), ["1.0", "Beta"]);
    assert_eq!(
        r.header("link"),
        Some(format!("</v2/{repo}/tags/list?n=2&last=Beta>; rel=\"next\"").as_str())
    );
    let r = reg.get(&format!("/v2/{repo}/tags/list?n=2&last=Beta"));
    assert_eq!(strs(&r.json()["tags"]), ["alpha", "latest"]);
    assert!(r.header("link").is_some());
    // The last page (exactly n left): no Link.
    let r = reg.get(&format!("/v2/{repo}/tags/list?n=2&last=v1"));
    assert_eq!(strs(&r.json()["tags"]), ["v10", "v2"]);
    assert!(r.header("link").is_none(), "{:?}", r.header("link"));
    // n larger than what is left: all of it, no Link.
    let r = reg.get(&format!("/v2/{repo}/tags/list?n=100"));
    assert_eq!(strs(&r.json()["tags"]), want);
    assert!(r.header("link").is_none());
    // last alone.
    let r = reg.get(&format!("/v2/{repo}/tags/list?last=latest"));
    assert_eq!(strs(&r.json()["tags"]), ["v1", "v10", "v2"]);
    // last past the end.
    let r = reg.get(&format!("/v2/{repo}/tags/list?n=2&last=zzz"));
    assert_eq!(r.status, 200);
    assert!(strs(&r.json()["tags"]).is_empty());
    assert!(r.header("link").is_none());
    // n=0: an empty page.
    let r = reg.get(&format!("/v2/{repo}/tags/list?n=0"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["name"], repo);
    assert!(strs(&r.json()["tags"]).is_empty());

    // Unknown repository.
    assert_error(&reg.get("/v2/no/such/repo/tags/list"), 404, "NAME_UNKNOWN");

    assert_layout(&reg, repo, &want);
}

#[test]
fn catalog() {
    let reg = Registry::start();
    let r = reg.get("/v2/_catalog");
    assert_eq!(r.status, 200);
    assert!(strs(&r.json()["repositories"]).is_empty());

    for repo in ["zeta", "a/b/c", "alpha", "m/n", "library/busybox"] {
        reg.push_image(repo, "latest", repo);
    }
    let want = ["a/b/c", "alpha", "library/busybox", "m/n", "zeta"];
    let r = reg.get("/v2/_catalog");
    assert_eq!(r.status, 200);
    assert_eq!(strs(&r.json()["repositories"]), want);

    // Follow Link with n=2.
    let (seen, pages) = follow_links(
        &reg,
        "/v2/_catalog?n=2".to_string(),
        "repositories",
        |_, next, _| assert!(next.starts_with("/v2/_catalog?n=2&last="), "{next}"),
    );
    assert_eq!(seen, want);
    assert_eq!(pages, 3);

    let r = reg.get("/v2/_catalog?n=2&last=alpha");
    assert_eq!(strs(&r.json()["repositories"]), ["library/busybox", "m/n"]);
    assert!(r.header("link").is_some());
    let r = reg.get("/v2/_catalog?n=2&last=library/busybox");
    assert_eq!(strs(&r.json()["repositories"]), ["m/n", "zeta"]);
    assert!(r.header("link").is_none());
    let r = reg.get("/v2/_catalog?n=0");
    assert_eq!(r.status, 200);
    assert!(strs(&r.json()["repositories"]).is_empty());

    for repo in want {
        assert_layout(&reg, repo, &["latest"]);
    }
}

#[test]
fn referrers_api() {
    let reg = Registry::start();
    let repo = "discover/referrers";
    let (subject, sd) = reg.push_image(repo, "v1", "subject");

    // Nothing refers yet: an empty index.
    let (r, list) = referrers(&reg, repo, &sd, "");
    assert!(list.is_empty());
    assert!(r.header("oci-filters-applied").is_none());
    // A digest nothing in the repository has: also empty, 200.
    let (_, list) = referrers(&reg, repo, &sha256(b"unknown subject"), "");
    assert!(list.is_empty());
    // A malformed digest is a 400.
    let r = reg.get(&format!("/v2/{repo}/referrers/sha256:notadigest"));
    assert_eq!(r.status, 400);

    let empty = b"{}";
    let ed = reg.push_blob(repo, empty);
    let sbom_layer = b"{\"sbom\":true}";
    let sl = reg.push_blob(repo, sbom_layer);
    let sig_cfg = b"{\"sig\":1}";
    let scd = reg.push_blob(repo, sig_cfg);
    // Push a referrer by digest: 201, naming its subject. Returns its digest.
    let put_referrer = |bytes: &[u8], media_type: &str, subject: &str| -> String {
        let d = sha256(bytes);
        let r = reg.put_manifest(repo, &d, media_type, bytes);
        assert_eq!(r.status, 201, "{}", r.text());
        assert_eq!(r.header("oci-subject"), Some(subject));
        d
    };

    // Referrer A: explicit artifactType, empty config, annotations.
    let a = artifact_manifest(
        OCI_EMPTY,
        (&ed, empty.len()),
        &[(&sl, sbom_layer.len())],
        (&sd, subject.len()),
        Some("application/vnd.example.sbom"),
        Some(json!({"org.opencontainers.image.created": "2024-01-01T00:00:00Z", "kind": "sbom"})),
    );
    let ad = put_referrer(&a, OCI_MANIFEST, &sd);

    // Referrer B: no artifactType; its config's mediaType stands in.
    let b = artifact_manifest(
        "application/vnd.example.signature.config+json",
        (&scd, sig_cfg.len()),
        &[],
        (&sd, subject.len()),
        None,
        None,
    );
    let bd = put_referrer(&b, OCI_MANIFEST, &sd);

    let (_, list) = referrers(&reg, repo, &sd, "");
    assert_eq!(list.len(), 2, "{list:?}");
    let by_digest: BTreeMap<String, Value> = list
        .iter()
        .map(|d| (d["digest"].as_str().unwrap().to_string(), d.clone()))
        .collect();
    let da = &by_digest[&ad];
    assert_eq!(da["mediaType"], OCI_MANIFEST);
    assert_eq!(da["size"].as_u64(), Some(a.len() as u64));
    assert_eq!(da["artifactType"], "application/vnd.example.sbom");
    assert_eq!(da["annotations"]["kind"], "sbom");
    assert_eq!(
        da["annotations"]["org.opencontainers.image.created"],
        "2024-01-01T00:00:00Z"
    );
    let db = &by_digest[&bd];
    assert_eq!(db["mediaType"], OCI_MANIFEST);
    assert_eq!(db["size"].as_u64(), Some(b.len() as u64));
    assert_eq!(
        db["artifactType"],
        "application/vnd.example.signature.config+json"
    );
    assert!(db
        .get("annotations")
        .is_none_or(|a| a.as_object().unwrap().is_empty()));
    // The referrers are ordinary manifests too.
    assert_manifest(&reg, repo, &ad, OCI_MANIFEST, &a);
    assert_manifest(&reg, repo, &bd, OCI_MANIFEST, &b);
    // And they do not refer to themselves.
    let (_, list) = referrers(&reg, repo, &ad, "");
    assert!(list.is_empty());

    // Filtering by artifactType.
    for (artifact_type, want) in [
        ("application/vnd.example.sbom", vec![ad.as_str()]),
        (
            "application%2Fvnd.example.signature.config%2Bjson",
            vec![bd.as_str()],
        ),
        ("application/x-none", vec![]),
    ] {
        let (r, list) = referrers(&reg, repo, &sd, &format!("?artifactType={artifact_type}"));
        assert_eq!(r.header("oci-filters-applied"), Some("artifactType"));
        let digests: Vec<&str> = list.iter().map(|d| d["digest"].as_str().unwrap()).collect();
        assert_eq!(digests, want, "{artifact_type}: {list:?}");
    }

    // An index can refer too.
    let ix = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "artifactType": "application/vnd.example.bundle",
        // It lists the subject itself, so the referrer `ad` deleted below is
        // no index's child (an index's children cannot be deleted alone).
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": sd, "size": subject.len()}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": sd, "size": subject.len()},
    }))
    .unwrap();
    let ixd = put_referrer(&ix, OCI_INDEX, &sd);
    let (_, list) = referrers(
        &reg,
        repo,
        &sd,
        "?artifactType=application/vnd.example.bundle",
    );
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["digest"], ixd.as_str());
    assert_eq!(list[0]["mediaType"], OCI_INDEX);

    // A referrer pushed before its subject exists.
    let later_cfg = b"{\"later\":true}";
    let lcd = reg.push_blob(repo, later_cfg);
    let later = image_manifest(&lcd, later_cfg.len(), &[], None, None);
    let later_d = sha256(&later);
    let early = artifact_manifest(
        OCI_EMPTY,
        (&ed, empty.len()),
        &[],
        (&later_d, later.len()),
        Some("application/vnd.example.early"),
        None,
    );
    let early_d = put_referrer(&early, OCI_MANIFEST, &later_d);
    assert_no_manifest(&reg, repo, &later_d);
    let (_, list) = referrers(&reg, repo, &later_d, "");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["digest"], early_d.as_str());
    assert_eq!(list[0]["artifactType"], "application/vnd.example.early");
    let r = reg.put_manifest(repo, "later", OCI_MANIFEST, &later);
    assert_eq!(r.status, 201);
    let (_, list) = referrers(&reg, repo, &later_d, "");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["digest"], early_d.as_str());

    // Deleting a referrer removes it from the list.
    let r = reg.delete(&format!("/v2/{repo}/manifests/{ad}"));
    assert_eq!(r.status, 202, "{}", r.text());
    let (_, list) = referrers(&reg, repo, &sd, "");
    let digests: BTreeSet<&str> = list.iter().map(|d| d["digest"].as_str().unwrap()).collect();
    assert_eq!(digests, BTreeSet::from([bd.as_str(), ixd.as_str()]));
    let (_, list) = referrers(
        &reg,
        repo,
        &sd,
        "?artifactType=application/vnd.example.sbom",
    );
    assert!(list.is_empty());

    // Pushing a referrer twice lists it once.
    let r = reg.put_manifest(repo, &bd, OCI_MANIFEST, &b);
    assert_eq!(r.status, 201);
    let (_, list) = referrers(&reg, repo, &sd, "");
    assert_eq!(list.len(), 2);

    assert_layout(&reg, repo, &["later", "v1"]);
}

// ---------------------------------------------------------------- content management

#[test]
fn delete_manifests_and_blobs() {
    let reg = Registry::start();
    let repo = "manage/delete";
    let (m, md) = reg.push_image(repo, "t1", "delete");
    let r = reg.put_manifest(repo, "t2", OCI_MANIFEST, &m);
    assert_eq!(r.status, 201);
    let (m2, md2) = reg.push_image(repo, "other", "delete-other");
    assert_eq!(tags(&reg, repo), ["other", "t1", "t2"]);

    // Delete by tag: only that tag goes.
    let r = reg.delete(&format!("/v2/{repo}/manifests/t1"));
    assert_eq!(r.status, 202, "{}", r.text());
    assert_no_manifest(&reg, repo, "t1");
    assert_manifest(&reg, repo, "t2", OCI_MANIFEST, &m);
    assert_manifest(&reg, repo, &md, OCI_MANIFEST, &m);
    assert_eq!(tags(&reg, repo), ["other", "t2"]);
    assert_layout(&reg, repo, &["other", "t2"]);
    // The same tag again: unknown.
    let r = reg.delete(&format!("/v2/{repo}/manifests/t1"));
    assert_error(&r, 404, "MANIFEST_UNKNOWN");

    // Delete by digest: the manifest and every tag on it go.
    let r = reg.delete(&format!("/v2/{repo}/manifests/{md}"));
    assert_eq!(r.status, 202, "{}", r.text());
    assert_no_manifest(&reg, repo, &md);
    assert_no_manifest(&reg, repo, "t2");
    assert_eq!(tags(&reg, repo), ["other"]);
    assert_manifest(&reg, repo, "other", OCI_MANIFEST, &m2);
    assert_manifest(&reg, repo, &md2, OCI_MANIFEST, &m2);
    let r = reg.delete(&format!("/v2/{repo}/manifests/{md}"));
    assert_error(&r, 404, "MANIFEST_UNKNOWN");
    assert_layout(&reg, repo, &["other"]);

    // Deleting unknown manifests.
    let r = reg.delete(&format!("/v2/{repo}/manifests/{}", sha256(b"never")));
    assert_error(&r, 404, "MANIFEST_UNKNOWN");
    let r = reg.delete(&format!("/v2/{repo}/manifests/never"));
    assert_error(&r, 404, "MANIFEST_UNKNOWN");

    // Blobs: delete, then HEAD and GET are 404, and a second delete too.
    let layer = b"layer of delete";
    let ld = sha256(layer);
    assert_blob(&reg, repo, &ld, layer);
    let r = reg.delete(&format!("/v2/{repo}/blobs/{ld}"));
    assert_eq!(r.status, 202, "{}", r.text());
    assert_no_blob(&reg, repo, &ld);
    let r = reg.delete(&format!("/v2/{repo}/blobs/{ld}"));
    assert_error(&r, 404, "BLOB_UNKNOWN");
    let r = reg.delete(&format!("/v2/{repo}/blobs/{}", sha256(b"never pushed")));
    assert_error(&r, 404, "BLOB_UNKNOWN");
    // Other content is untouched.
    assert_manifest(&reg, repo, "other", OCI_MANIFEST, &m2);
    assert_blob(
        &reg,
        repo,
        &sha256(b"layer of delete-other"),
        b"layer of delete-other",
    );

    // A blob's digest is not a manifest: DELETE on manifests/ leaves it alone.
    let ol = sha256(b"layer of delete-other");
    let r = reg.delete(&format!("/v2/{repo}/manifests/{ol}"));
    assert_error(&r, 404, "MANIFEST_UNKNOWN");
    assert_blob(&reg, repo, &ol, b"layer of delete-other");
    // Nor is a blob's digest a manifest to GET.
    assert_no_manifest(&reg, repo, &ol);

    // Re-pushing a deleted manifest brings it back.
    reg.push_blob(repo, layer);
    let r = reg.put_manifest(repo, "t1", OCI_MANIFEST, &m);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_manifest(&reg, repo, "t1", OCI_MANIFEST, &m);
    assert_layout(&reg, repo, &["other", "t1"]);
}

// ---------------------------------------------------------------- concurrency

#[test]
fn concurrent_pushes_to_one_repo() {
    let reg = Registry::start();
    let repo = "concurrent/tags";
    let results: Vec<(String, Vec<u8>, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let reg = &reg;
                s.spawn(move || {
                    let tag = format!("t{i}");
                    let (m, d) = reg.push_image(repo, &tag, &format!("seed {i}"));
                    (tag, m, d)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("push thread"))
            .collect()
    });
    let mut want: Vec<String> = results.iter().map(|(t, _, _)| t.clone()).collect();
    want.sort();
    assert_eq!(tags(&reg, repo), want);
    for (tag, m, d) in &results {
        assert_manifest(&reg, repo, tag, OCI_MANIFEST, m);
        assert_manifest(&reg, repo, d, OCI_MANIFEST, m);
    }

    // Concurrent tag moves and extra tags on one manifest, racing.
    let (m0, d0) = (&results[0].1, &results[0].2);
    std::thread::scope(|s| {
        for i in 0..8 {
            let reg = &reg;
            s.spawn(move || {
                let r = reg
                    .req(
                        "PUT",
                        &format!("/v2/{repo}/manifests/{d0}?tag=x{i}&tag=shared"),
                    )
                    .header("Content-Type", OCI_MANIFEST)
                    .body(m0)
                    .send();
                assert_eq!(r.status, 201, "{}", r.text());
            });
        }
    });
    let all = tags(&reg, repo);
    for i in 0..8 {
        assert!(all.contains(&format!("x{i}")), "x{i} missing from {all:?}");
        assert!(all.contains(&format!("t{i}")));
    }
    assert!(all.contains(&"shared".to_string()));
    assert_eq!(all.len(), 17);
    let mut expect: Vec<String> = all.clone();
    expect.sort();
    let expect: Vec<&str> = expect.iter().map(String::as_str).collect();
    assert_layout(&reg, repo, &expect);
}
