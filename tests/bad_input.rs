//! Malformed requests, as one table: each row is a request and the exact
//! status and OCI error code it must get. After every row the registry must
//! still answer `GET /v2/`, its process must still be running, and whatever
//! the request failed to do must have left no trace (checked per row where it
//! could, and for the whole data directory at the end).

mod common;
use common::*;
use std::collections::BTreeSet;

const REPO: &str = "good";
/// A valid digest of content never pushed.
fn ghost() -> String {
    sha256(b"never pushed anywhere")
}
const MD5: &str = "md5:d41d8cd98f00b204e9800998ecf8427e";
/// The 10-byte blob the range rows read.
const TEN: &[u8] = b"0123456789";

type Check = Box<dyn Fn(&Registry, &Resp)>;

struct Case {
    what: String,
    method: &'static str,
    /// `{upload}` is replaced by the id of a fresh, empty upload session in `good`.
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    chunked: bool,
    status: u16,
    code: &'static str,
    /// Headers the error response must carry.
    expect: Vec<(&'static str, String)>,
    /// Checks that the failed request left nothing behind.
    then: Option<Check>,
}

fn case(
    what: &str,
    method: &'static str,
    path: impl Into<String>,
    status: u16,
    code: &'static str,
) -> Case {
    Case {
        what: what.to_string(),
        method,
        path: path.into(),
        headers: Vec::new(),
        body: Vec::new(),
        chunked: false,
        status,
        code,
        expect: Vec::new(),
        then: None,
    }
}

impl Case {
    fn header(mut self, k: &str, v: impl Into<String>) -> Self {
        self.headers.push((k.to_string(), v.into()));
        self
    }
    fn body(mut self, b: impl Into<Vec<u8>>) -> Self {
        self.body = b.into();
        self
    }
    /// A manifest body, sent as an OCI image manifest.
    fn manifest(self, b: impl Into<Vec<u8>>) -> Self {
        self.header("Content-Type", OCI_MANIFEST).body(b)
    }
    fn chunked(mut self) -> Self {
        self.chunked = true;
        self
    }
    fn expect(mut self, k: &'static str, v: impl Into<String>) -> Self {
        self.expect.push((k, v.into()));
        self
    }
    fn then(mut self, f: impl Fn(&Registry, &Resp) + 'static) -> Self {
        self.then = Some(Box::new(f));
        self
    }
}

fn new_session(reg: &Registry, repo: &str) -> String {
    let loc = reg.open_upload(repo).location();
    let id = loc
        .rsplit('/')
        .next()
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_string();
    assert!(!id.is_empty(), "{loc}");
    id
}

fn blob_files(reg: &Registry, repo: &str) -> BTreeSet<String> {
    reg.stored.files(&format!("{repo}/blobs"))
}

fn blob_file(d: &str) -> String {
    d.replacen(':', "/", 1)
}

fn assert_status(reg: &Registry, method: &str, path: &str, status: u16) {
    let r = reg.req(method, path).send();
    assert_eq!(r.status, status, "{method} {path}: {}", r.text());
}

fn assert_tags(reg: &Registry, repo: &str, tags: &[&str]) {
    let r = reg.get(&format!("/v2/{repo}/tags/list"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["tags"], serde_json::json!(tags));
}

/// The code of the first error in an OCI error body, if the body is one.
fn error_code_of(r: &Resp) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
    Some(v["errors"][0]["code"].as_str()?.to_string())
}

/// A response's headers, sorted, without the two that belong to one request:
/// `Date` (which may tick between two requests) and `X-Request-Id` (new for
/// each request).
fn headers_of_any_request(r: &Resp) -> Vec<(String, String)> {
    let mut h: Vec<_> = r
        .headers
        .iter()
        .filter(|(k, _)| k != "date" && k != "x-request-id")
        .cloned()
        .collect();
    h.sort();
    h
}

/// The spec's error body, with JSON's content type.
fn assert_error_body(what: &str, r: &Resp, code: &str, head: bool) {
    let ct = r.header("content-type").unwrap_or("");
    assert!(
        ct.split(';').next().unwrap().trim() == "application/json",
        "{what}: error Content-Type is {ct:?}"
    );
    if head {
        assert!(r.body.is_empty(), "{what}: HEAD answered with a body");
        return;
    }
    let v: serde_json::Value = serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("{what}: error body is not JSON ({e}): {}", r.text()));
    let errors = v["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: no errors array: {v}"));
    assert!(!errors.is_empty(), "{what}: empty errors array");
    for e in errors {
        let obj = e
            .as_object()
            .unwrap_or_else(|| panic!("{what}: error entry {e}"));
        assert!(obj["code"].is_string(), "{what}: code in {e}");
        assert!(
            obj.get("message").is_some_and(|m| m.is_string()),
            "{what}: message in {e}"
        );
        assert!(obj.contains_key("detail"), "{what}: detail in {e}");
    }
    assert_eq!(errors[0]["code"], code, "{what}: {v}");
    if let Some(len) = r.header("content-length") {
        assert_eq!(len, r.body.len().to_string(), "{what}: Content-Length");
    }
}

/// A manifest for the image in `good`, with an annotation of `pad` bytes.
fn padded_manifest(
    config: &str,
    config_len: usize,
    layer: &str,
    layer_len: usize,
    pad: usize,
) -> Vec<u8> {
    let mut m: serde_json::Value = serde_json::from_slice(&image_manifest(
        config,
        config_len,
        &[(layer, layer_len)],
        None,
        None,
    ))
    .unwrap();
    m["annotations"] = serde_json::json!({ "pad": "x".repeat(pad) });
    serde_json::to_vec(&m).unwrap()
}

#[test]
fn malformed_requests_are_refused_cleanly() {
    let mut reg = Registry::start();

    // Fixtures: an image tagged v1 in `good`, a 10-byte blob there for the
    // range rows, and an upload session in `other`, which holds nothing else.
    let config = "{\"seed\":\"bad-input\"}";
    let layer = "layer of bad-input";
    let cd = reg.push_blob(REPO, config.as_bytes());
    let ld = reg.push_blob(REPO, layer.as_bytes());
    let m = image_manifest(&cd, config.len(), &[(&ld, layer.len())], None, None);
    let md = sha256(&m);
    assert_eq!(reg.put_manifest(REPO, "v1", OCI_MANIFEST, &m).status, 201);
    let ten = reg.push_blob(REPO, TEN);
    let other_session = new_session(&reg, "other");

    let blobs_before = blob_files(&reg, REPO);
    assert_eq!(
        blobs_before,
        [&cd, &ld, &md, &ten]
            .iter()
            .map(|d| blob_file(d))
            .collect::<BTreeSet<_>>()
    );

    let g = ghost();
    let (ld_hex, md_hex) = (hex_of(&ld), hex_of(&md));
    let long_name = "a".repeat(256);
    let max_name = "a".repeat(255);
    let missing_layer = image_manifest(&cd, config.len(), &[(&g, 5)], None, None);
    let big = padded_manifest(&cd, config.len(), &ld, layer.len(), 4 * 1024 * 1024);
    // Valid manifests of the image, each a distinct digest, never stored.
    let pad1 = padded_manifest(&cd, config.len(), &ld, layer.len(), 1);
    let pad2 = padded_manifest(&cd, config.len(), &ld, layer.len(), 2);
    let pad3 = padded_manifest(&cd, config.len(), &ld, layer.len(), 3);
    let v1_only = |reg: &Registry, _: &Resp| assert_tags(reg, REPO, &["v1"]);
    let no_ghost = {
        let g = g.clone();
        move |reg: &Registry, _: &Resp| {
            assert_status(reg, "HEAD", &format!("/v2/{REPO}/blobs/{g}"), 404);
            assert_status(reg, "GET", &format!("/v2/{REPO}/manifests/{g}"), 404);
        }
    };
    let manifest_absent = |digest: String| {
        move |reg: &Registry, _: &Resp| {
            assert_status(reg, "HEAD", &format!("/v2/{REPO}/manifests/{digest}"), 404);
            assert_status(reg, "HEAD", &format!("/v2/{REPO}/blobs/{digest}"), 404);
            assert_tags(reg, REPO, &["v1"]);
        }
    };
    let no_repo = |name: &'static str| {
        move |reg: &Registry, _: &Resp| {
            let files = reg.stored.files(name);
            assert!(files.is_empty(), "{name}/ holds {files:?}");
        }
    };
    let still_there = |digest: String| {
        move |reg: &Registry, _: &Resp| {
            assert_status(reg, "HEAD", &format!("/v2/{REPO}/blobs/{digest}"), 200)
        }
    };
    let blob_absent = |bytes: &[u8]| {
        let digest = sha256(bytes);
        move |reg: &Registry, _: &Resp| {
            assert_status(reg, "HEAD", &format!("/v2/{REPO}/blobs/{digest}"), 404)
        }
    };
    // No ghost, and no blob of `bytes` either.
    let ghost_nor = |bytes: &[u8]| {
        let (no_ghost, absent) = (no_ghost.clone(), blob_absent(bytes));
        move |reg: &Registry, r: &Resp| {
            no_ghost(reg, r);
            absent(reg, r);
        }
    };
    // A range the 10-byte blob cannot serve.
    let bad_range = |what: &str, method: &'static str, range: &str| {
        case(
            what,
            method,
            format!("/v2/good/blobs/{ten}"),
            416,
            "RANGE_INVALID",
        )
        .header("Range", range)
        .expect("content-range", "bytes */10")
    };

    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        // ---- repository names ----
        case("uppercase name", "GET", "/v2/Good/tags/list", 404, "NAME_UNKNOWN"),
        case("name ..", "GET", "/v2/../tags/list", 404, "NAME_UNKNOWN"),
        case("name a//b", "GET", "/v2/a//b/tags/list", 404, "NAME_UNKNOWN"),
        case("name with trailing slash", "GET", "/v2/good//tags/list", 404, "NAME_UNKNOWN"),
        case("name with trailing slash, manifest", "GET", "/v2/good//manifests/v1", 404, "NAME_UNKNOWN"),
        case("name of 256 chars", "GET", format!("/v2/{long_name}/tags/list"), 404, "NAME_UNKNOWN"),
        case("name of 255 chars is valid, unknown", "GET", format!("/v2/{max_name}/tags/list"), 404, "NAME_UNKNOWN"),
        case("percent-encoded ..", "GET", "/v2/%2e%2e/tags/list", 404, "NAME_UNKNOWN"),
        case("percent-encoded ../ in name", "GET", "/v2/good%2f..%2f..%2fx/manifests/v1", 404, "NAME_UNKNOWN"),
        case("component named blobs", "GET", "/v2/good/blobs/tags/list", 404, "NAME_UNKNOWN"),
        case("name is blobs", "PUT", "/v2/blobs/manifests/v1", 400, "NAME_INVALID")
            .manifest(m.clone())
            .then(no_repo("blobs")),
        case("component named index.json", "GET", "/v2/good/index.json/tags/list", 404, "NAME_UNKNOWN"),
        case("hidden component", "GET", "/v2/good/.uploads/tags/list", 404, "NAME_UNKNOWN"),
        case("leading dash", "GET", "/v2/-good/manifests/v1", 404, "NAME_UNKNOWN"),
        case("uppercase name, upload", "POST", "/v2/Upper/blobs/uploads/", 400, "NAME_INVALID").then(no_repo("Upper")),
        case("no name", "GET", "/v2/manifests/v1", 404, "NAME_UNKNOWN"),
        // An upload session under an invalid name cannot exist, whatever the method.
        case("upload status, invalid name", "GET", "/v2/Bad/blobs/uploads/{upload}", 404, "BLOB_UPLOAD_UNKNOWN"),
        case("PATCH upload, invalid name", "PATCH", "/v2/Bad/blobs/uploads/{upload}", 404, "BLOB_UPLOAD_UNKNOWN")
            .body(b"data".to_vec())
            .then(no_repo("Bad")),
        case("PUT upload, invalid name", "PUT", format!("/v2/Bad/blobs/uploads/{{upload}}?digest={ld}"), 404, "BLOB_UPLOAD_UNKNOWN")
            .then(no_repo("Bad")),
        case("DELETE upload, invalid name", "DELETE", "/v2/a//b/blobs/uploads/{upload}", 404, "BLOB_UPLOAD_UNKNOWN"),
        case("PUT manifest, invalid name", "PUT", "/v2/Bad/manifests/v1", 400, "NAME_INVALID")
            .manifest(m.clone())
            .then(no_repo("Bad")),
        case("PUT manifest by a malformed digest", "PUT", "/v2/good/manifests/sha256:abc", 400, "DIGEST_INVALID")
            .manifest(m.clone())
            .then(v1_only),
        // ---- digests: blobs ----
        case("blob digest not hex", "GET", format!("/v2/good/blobs/sha256:{}", "z".repeat(64)), 404, "BLOB_UNKNOWN"),
        case("blob digest too short", "GET", "/v2/good/blobs/sha256:abc", 404, "BLOB_UNKNOWN"),
        case("blob digest too long", "GET", format!("/v2/good/blobs/{ld}0"), 404, "BLOB_UNKNOWN"),
        case("blob digest uppercase hex", "GET", format!("/v2/good/blobs/sha256:{}", ld_hex.to_uppercase()), 404, "BLOB_UNKNOWN"),
        case("blob digest uppercase algorithm", "GET", format!("/v2/good/blobs/SHA256:{ld_hex}"), 404, "BLOB_UNKNOWN"),
        case("HEAD blob uppercase hex", "HEAD", format!("/v2/good/blobs/sha256:{}", ld_hex.to_uppercase()), 404, "BLOB_UNKNOWN"),
        case("blob digest md5", "GET", format!("/v2/good/blobs/{MD5}"), 404, "BLOB_UNKNOWN"),
        case("HEAD blob digest md5", "HEAD", format!("/v2/good/blobs/{MD5}"), 404, "BLOB_UNKNOWN"),
        case("blob digest sha512 of sha256 length", "GET", format!("/v2/good/blobs/sha512:{ld_hex}"), 404, "BLOB_UNKNOWN"),
        case("blob digest without algorithm", "GET", format!("/v2/good/blobs/{ld_hex}"), 404, "BLOB_UNKNOWN"),
        case("blob digest without hex", "GET", "/v2/good/blobs/sha256:", 404, "BLOB_UNKNOWN"),
        case("blob digest empty", "GET", "/v2/good/blobs/", 404, "BLOB_UNKNOWN"),
        case("DELETE blob uppercase hex", "DELETE", format!("/v2/good/blobs/sha256:{}", ld_hex.to_uppercase()), 404, "BLOB_UNKNOWN")
            .then(still_there(ld.clone())),
        case("DELETE blob md5", "DELETE", format!("/v2/good/blobs/{MD5}"), 404, "BLOB_UNKNOWN"),
        case("DELETE blob without algorithm", "DELETE", format!("/v2/good/blobs/{ld_hex}"), 404, "BLOB_UNKNOWN")
            .then(still_there(ld.clone())),
        case("DELETE blob empty digest", "DELETE", "/v2/good/blobs/", 404, "BLOB_UNKNOWN"),
        case("unknown blob", "GET", format!("/v2/good/blobs/{g}"), 404, "BLOB_UNKNOWN"),
        case("HEAD unknown blob", "HEAD", format!("/v2/good/blobs/{g}"), 404, "BLOB_UNKNOWN"),
        case("blob of unknown repo", "GET", format!("/v2/nosuch/blobs/{ld}"), 404, "BLOB_UNKNOWN"),
        case("DELETE unknown blob", "DELETE", format!("/v2/good/blobs/{g}"), 404, "BLOB_UNKNOWN"),
        // ---- references: manifests ----
        case("manifest digest not hex", "GET", format!("/v2/good/manifests/sha256:{}", "z".repeat(64)), 404, "MANIFEST_UNKNOWN"),
        case("manifest digest uppercase hex", "GET", format!("/v2/good/manifests/sha256:{}", md_hex.to_uppercase()), 404, "MANIFEST_UNKNOWN"),
        case("HEAD manifest digest too short", "HEAD", "/v2/good/manifests/sha256:abc", 404, "MANIFEST_UNKNOWN"),
        case("manifest digest md5", "GET", format!("/v2/good/manifests/{MD5}"), 404, "MANIFEST_UNKNOWN"),
        case("manifest digest without hex", "GET", "/v2/good/manifests/sha256:", 404, "MANIFEST_UNKNOWN"),
        // Without an algorithm, 64 hex characters are a well-formed tag.
        case("manifest digest without algorithm is a tag", "GET", format!("/v2/good/manifests/{md_hex}"), 404, "MANIFEST_UNKNOWN"),
        case("DELETE manifest bad digest", "DELETE", "/v2/good/manifests/sha256:abc", 404, "MANIFEST_UNKNOWN").then(v1_only),
        case("tag of 129 chars", "GET", format!("/v2/good/manifests/{}", "t".repeat(129)), 404, "MANIFEST_UNKNOWN"),
        case("tag starting with .", "GET", "/v2/good/manifests/.v1", 404, "MANIFEST_UNKNOWN"),
        case("empty reference", "GET", "/v2/good/manifests/", 404, "MANIFEST_UNKNOWN"),
        case("PUT tag of 129 chars", "PUT", format!("/v2/good/manifests/{}", "t".repeat(129)), 400, "MANIFEST_INVALID")
            .manifest(m.clone())
            .then(v1_only),
        case("PUT tag starting with .", "PUT", "/v2/good/manifests/.hidden", 400, "MANIFEST_INVALID")
            .manifest(m.clone())
            .then(v1_only),
        case("DELETE tag starting with -", "DELETE", "/v2/good/manifests/-v1", 404, "MANIFEST_UNKNOWN").then(v1_only),
        case("unknown tag", "GET", "/v2/good/manifests/nosuchtag", 404, "MANIFEST_UNKNOWN"),
        case("HEAD unknown tag", "HEAD", "/v2/good/manifests/nosuchtag", 404, "MANIFEST_UNKNOWN"),
        case("manifest of unknown repo", "GET", "/v2/nosuch/manifests/v1", 404, "MANIFEST_UNKNOWN"),
        case("unknown manifest digest", "GET", format!("/v2/good/manifests/{g}"), 404, "MANIFEST_UNKNOWN"),
        case("a layer is not a manifest", "GET", format!("/v2/good/manifests/{ld}"), 404, "MANIFEST_UNKNOWN"),
        case("DELETE unknown tag", "DELETE", "/v2/good/manifests/nosuchtag", 404, "MANIFEST_UNKNOWN").then(v1_only),
        case("DELETE manifest by a config's digest", "DELETE", format!("/v2/good/manifests/{cd}"), 404, "MANIFEST_UNKNOWN")
            .then(still_there(cd.clone())),
        case("DELETE manifest by a layer's digest", "DELETE", format!("/v2/good/manifests/{ld}"), 404, "MANIFEST_UNKNOWN")
            .then(still_there(ld.clone())),
        // ---- referrers ----
        case("referrers digest too short", "GET", "/v2/good/referrers/sha256:abc", 400, "DIGEST_INVALID"),
        case("referrers digest md5", "GET", format!("/v2/good/referrers/{MD5}"), 400, "DIGEST_INVALID"),
        case("referrers by tag", "GET", "/v2/good/referrers/v1", 400, "DIGEST_INVALID"),
        case("referrers uppercase hex", "GET", format!("/v2/good/referrers/sha256:{}", md_hex.to_uppercase()), 400, "DIGEST_INVALID"),
        case("referrers empty digest", "GET", "/v2/good/referrers/", 400, "DIGEST_INVALID"),
        // ---- ranges on a 10-byte blob ----
        bad_range("range end before start", "GET", "bytes=5-2"),
        bad_range("range past the end", "GET", "bytes=100-"),
        bad_range("range starting at the size", "GET", "bytes=10-20"),
        bad_range("range not numbers", "GET", "bytes=a-b"),
        bad_range("multi-range", "GET", "bytes=0-1,3-4"),
        bad_range("range in items", "GET", "items=0-1"),
        bad_range("range of nothing", "GET", "bytes=-"),
        bad_range("HEAD range end before start", "HEAD", "bytes=5-2"),
        // ---- uploads ----
        case("PUT upload without digest", "PUT", "/v2/good/blobs/uploads/{upload}", 400, "DIGEST_INVALID")
            .body(b"hello".to_vec())
            .then(no_ghost.clone()),
        case("PUT upload with wrong digest", "PUT", format!("/v2/good/blobs/uploads/{{upload}}?digest={g}"), 400, "DIGEST_INVALID")
            .body(b"not the ghost".to_vec())
            .then(ghost_nor(b"not the ghost")),
        case("PUT upload with malformed digest", "PUT", "/v2/good/blobs/uploads/{upload}?digest=sha256:abc", 400, "DIGEST_INVALID")
            .body(b"hello".to_vec()),
        case("PUT upload with md5 digest", "PUT", format!("/v2/good/blobs/uploads/{{upload}}?digest={MD5}"), 400, "DIGEST_INVALID"),
        case("monolithic POST with wrong digest", "POST", format!("/v2/good/blobs/uploads/?digest={g}"), 400, "DIGEST_INVALID")
            .header("Content-Type", "application/octet-stream")
            .body(b"also not the ghost".to_vec())
            .then(ghost_nor(b"also not the ghost")),
        case("monolithic POST to a new repo with wrong digest", "POST", format!("/v2/fresh/blobs/uploads/?digest={g}"), 400, "DIGEST_INVALID")
            .body(b"wrong".to_vec())
            .then(move |reg, r| {
                no_repo("fresh")(reg, r);
                assert_status(reg, "GET", "/v2/fresh/tags/list", 404);
            }),
        case("monolithic POST with malformed digest", "POST", "/v2/fresh2/blobs/uploads/?digest=sha256:abc", 400, "DIGEST_INVALID")
            .body(b"hello".to_vec())
            .then(no_repo("fresh2")),
        case("monolithic POST with md5 digest", "POST", format!("/v2/fresh3/blobs/uploads/?digest={MD5}"), 400, "DIGEST_INVALID")
            .body(b"hello".to_vec())
            .then(no_repo("fresh3")),
        case("mount with malformed digest", "POST", "/v2/fresh4/blobs/uploads/?mount=sha256:abc&from=good", 400, "DIGEST_INVALID")
            .then(no_repo("fresh4")),
        case("mount from an invalid name", "POST", format!("/v2/fresh5/blobs/uploads/?mount={ld}&from=Bad..Name"), 400, "NAME_INVALID")
            .then(no_repo("fresh5")),
        case("GET unknown upload", "GET", format!("/v2/good/blobs/uploads/{}", "0".repeat(32)), 404, "BLOB_UPLOAD_UNKNOWN"),
        case("GET malformed upload id", "GET", "/v2/good/blobs/uploads/not-an-id", 404, "BLOB_UPLOAD_UNKNOWN"),
        case("GET upload id ..", "GET", "/v2/good/blobs/uploads/..", 404, "BLOB_UPLOAD_UNKNOWN"),
        case("PATCH unknown upload", "PATCH", format!("/v2/good/blobs/uploads/{}", "0".repeat(32)), 404, "BLOB_UPLOAD_UNKNOWN")
            .header("Content-Type", "application/octet-stream")
            .body(b"hello".to_vec()),
        case("PATCH malformed upload id", "PATCH", "/v2/good/blobs/uploads/..%2f..%2fx", 404, "BLOB_UPLOAD_UNKNOWN")
            .body(b"hello".to_vec()),
        case("PUT unknown upload", "PUT", format!("/v2/good/blobs/uploads/{}?digest={}", "0".repeat(32), sha256(b"hi")), 404, "BLOB_UPLOAD_UNKNOWN")
            .body(b"hi".to_vec())
            .then(blob_absent(b"hi")),
        case("PUT malformed upload id", "PUT", format!("/v2/good/blobs/uploads/x.json?digest={}", sha256(b"")), 404, "BLOB_UPLOAD_UNKNOWN"),
        case("DELETE unknown upload", "DELETE", format!("/v2/good/blobs/uploads/{}", "0".repeat(32)), 404, "BLOB_UPLOAD_UNKNOWN"),
        case("DELETE malformed upload id", "DELETE", "/v2/good/blobs/uploads/UPPERCASE", 404, "BLOB_UPLOAD_UNKNOWN"),
        case("upload of another repository", "GET", format!("/v2/good/blobs/uploads/{other_session}"), 404, "BLOB_UPLOAD_UNKNOWN"),
        case("PUT upload of another repository", "PUT", format!("/v2/good/blobs/uploads/{other_session}?digest={}", sha256(b"")), 404, "BLOB_UPLOAD_UNKNOWN")
            .then(blob_absent(b"")),
        case("out-of-order chunk", "PATCH", "/v2/good/blobs/uploads/{upload}", 416, "RANGE_INVALID")
            .header("Content-Type", "application/octet-stream")
            .header("Content-Range", "5-9")
            .body(b"56789".to_vec())
            .expect("range", "0-0"),
        case("malformed Content-Range", "PATCH", "/v2/good/blobs/uploads/{upload}", 400, "BLOB_UPLOAD_INVALID")
            .header("Content-Range", "five-nine")
            .body(b"56789".to_vec()),
        case("backwards Content-Range", "PATCH", "/v2/good/blobs/uploads/{upload}", 400, "BLOB_UPLOAD_INVALID")
            .header("Content-Range", "9-5")
            .body(b"56789".to_vec()),
        case("Content-Length differs from Content-Range", "PATCH", "/v2/good/blobs/uploads/{upload}", 400, "SIZE_INVALID")
            .header("Content-Range", "0-9")
            .body(b"01234".to_vec()),
        case("PUT with malformed Content-Range", "PUT", format!("/v2/good/blobs/uploads/{{upload}}?digest={}", sha256(b"01234")), 400, "BLOB_UPLOAD_INVALID")
            .header("Content-Range", "0_4")
            .body(b"01234".to_vec())
            .then(blob_absent(b"01234")),
        // 2^64 bytes, which no length can say: once wrapped to a length of 0,
        // which `Content-Length: 0` matched (202). Refused as a malformed range is.
        case("Content-Range of 2^64 bytes", "PATCH", "/v2/good/blobs/uploads/{upload}", 400, "BLOB_UPLOAD_INVALID")
            .header("Content-Type", "application/octet-stream")
            .header("Content-Range", "0-18446744073709551615")
            .header("Content-Length", "0"),
        case("PUT with a Content-Range of 2^64 bytes", "PUT", format!("/v2/good/blobs/uploads/{{upload}}?digest={}", sha256(b"01234")), 400, "BLOB_UPLOAD_INVALID")
            .header("Content-Range", "0-18446744073709551615")
            .body(b"01234".to_vec())
            .then(blob_absent(b"01234")),
        case("PUT with out-of-order Content-Range", "PUT", format!("/v2/good/blobs/uploads/{{upload}}?digest={}", sha256(b"01234")), 416, "RANGE_INVALID")
            .header("Content-Range", "3-7")
            .body(b"01234".to_vec())
            .then(blob_absent(b"01234")),
        // ---- manifest pushes ----
        case("manifest not JSON", "PUT", "/v2/good/manifests/v2", 400, "MANIFEST_INVALID")
            .manifest(b"{not json".to_vec())
            .then(v1_only),
        case("manifest schemaVersion 1", "PUT", "/v2/good/manifests/v2", 400, "MANIFEST_INVALID")
            .manifest(String::from_utf8(m.clone()).unwrap().replace("\"schemaVersion\":2", "\"schemaVersion\":1"))
            .then(v1_only),
        case("Content-Type contradicts mediaType", "PUT", "/v2/good/manifests/v2", 400, "MANIFEST_INVALID")
            .header("Content-Type", OCI_INDEX)
            .body(m.clone())
            .then(v1_only),
        case("unknown manifest media type", "PUT", "/v2/good/manifests/v2", 400, "MANIFEST_INVALID")
            .header("Content-Type", "application/vnd.example.unknown+json")
            .body(String::from_utf8(m.clone()).unwrap().replace(OCI_MANIFEST, "application/vnd.example.unknown+json"))
            .then(v1_only),
        case("manifest with a malformed layer digest", "PUT", "/v2/good/manifests/v2", 400, "MANIFEST_INVALID")
            .manifest(String::from_utf8(m.clone()).unwrap().replace(&ld, "sha256:nothex"))
            .then(v1_only),
        case("manifest referencing a missing blob", "PUT", "/v2/good/manifests/v2", 400, "MANIFEST_BLOB_UNKNOWN")
            .manifest(missing_layer.clone())
            .then(manifest_absent(sha256(&missing_layer))),
        case("manifest over 4 MiB", "PUT", "/v2/good/manifests/v2", 413, "MANIFEST_INVALID")
            .manifest(big.clone())
            .then(manifest_absent(sha256(&big))),
        case("manifest over 4 MiB, chunked", "PUT", "/v2/good/manifests/v2", 413, "MANIFEST_INVALID")
            .manifest(big.clone())
            .chunked()
            .then(manifest_absent(sha256(&big))),
        case("PUT manifest by a mismatched digest", "PUT", format!("/v2/good/manifests/{g}"), 400, "DIGEST_INVALID")
            .manifest(pad1.clone())
            .then({
                let real = sha256(&pad1);
                let no_ghost = no_ghost.clone();
                move |reg, r| {
                    no_ghost(reg, r);
                    manifest_absent(real.clone())(reg, r);
                }
            }),
        case("bad ?tag= value", "PUT", format!("/v2/good/manifests/{}?tag=.bad", sha256(&pad2)), 400, "MANIFEST_INVALID")
            .manifest(pad2.clone())
            .then(manifest_absent(sha256(&pad2))),
        case("one bad ?tag= among good ones", "PUT", format!("/v2/good/manifests/{}?tag=ok&tag={}", sha256(&pad3), "t".repeat(129)), 400, "MANIFEST_INVALID")
            .manifest(pad3.clone())
            .then(manifest_absent(sha256(&pad3))),
        // ---- pagination ----
        case("tags n=abc", "GET", "/v2/good/tags/list?n=abc", 400, "PAGINATION_NUMBER_INVALID"),
        case("tags n=-1", "GET", "/v2/good/tags/list?n=-1", 400, "PAGINATION_NUMBER_INVALID"),
        case("tags n empty", "GET", "/v2/good/tags/list?n=", 400, "PAGINATION_NUMBER_INVALID"),
        case("catalog n=abc", "GET", "/v2/_catalog?n=abc", 400, "PAGINATION_NUMBER_INVALID"),
        case("catalog n=-1", "GET", "/v2/_catalog?n=-1", 400, "PAGINATION_NUMBER_INVALID"),
        case("catalog n overflows", "GET", "/v2/_catalog?n=99999999999999999999999", 400, "PAGINATION_NUMBER_INVALID"),
        // ---- methods (a 405 says what is allowed) and routes ----
        case("POST a manifest", "POST", "/v2/good/manifests/v1", 405, "UNSUPPORTED")
            .expect("allow", "GET, HEAD, PUT, DELETE")
            .then(v1_only),
        case("PATCH a manifest", "PATCH", "/v2/good/manifests/v1", 405, "UNSUPPORTED")
            .expect("allow", "GET, HEAD, PUT, DELETE")
            .then(v1_only),
        case("PUT a blob", "PUT", format!("/v2/good/blobs/{g}"), 405, "UNSUPPORTED")
            .body(b"x".to_vec())
            .expect("allow", "GET, HEAD, DELETE")
            .then(no_ghost.clone()),
        case("POST a blob", "POST", format!("/v2/good/blobs/{ld}"), 405, "UNSUPPORTED").expect("allow", "GET, HEAD, DELETE"),
        case("DELETE the tag list", "DELETE", "/v2/good/tags/list", 405, "UNSUPPORTED")
            .expect("allow", "GET, HEAD")
            .then(v1_only),
        case("PUT the catalog", "PUT", "/v2/_catalog", 405, "UNSUPPORTED").expect("allow", "GET, HEAD"),
        case("DELETE the base", "DELETE", "/v2/", 405, "UNSUPPORTED").expect("allow", "GET, HEAD"),
        case("DELETE referrers", "DELETE", format!("/v2/good/referrers/{md}"), 405, "UNSUPPORTED").expect("allow", "GET, HEAD"),
        case("GET upload start", "GET", "/v2/good/blobs/uploads/", 405, "UNSUPPORTED").expect("allow", "POST"),
        case("POST to a session", "POST", "/v2/good/blobs/uploads/{upload}", 405, "UNSUPPORTED")
            .expect("allow", "GET, HEAD, PUT, PATCH, DELETE"),
        case("OPTIONS a manifest", "OPTIONS", "/v2/good/manifests/v1", 405, "UNSUPPORTED")
            .expect("allow", "GET, HEAD, PUT, DELETE"),
        case("unknown method", "FROB", "/v2/good/tags/list", 405, "UNSUPPORTED").expect("allow", "GET, HEAD"),
        case("other API version", "GET", "/v3/", 404, "NOT_FOUND"),
        case("root", "GET", "/", 404, "NOT_FOUND"),
        case("v2 without slash", "GET", "/v2x/good/tags/list", 404, "NOT_FOUND"),
        case("no endpoint", "GET", "/v2/good", 404, "NOT_FOUND"),
        case("tags without list", "GET", "/v2/good/tags", 404, "NOT_FOUND"),
        case("tags list trailing slash", "GET", "/v2/good/tags/list/", 404, "NOT_FOUND"),
        case("tags list with no name", "GET", "/v2/tags/list", 404, "NOT_FOUND"),
        case("unknown endpoint", "GET", "/v2/good/layers/x", 404, "NOT_FOUND"),
        // ---- traversal ----
        case("traversal in name, manifest", "GET", "/v2/../../etc/passwd/manifests/x", 404, "NAME_UNKNOWN"),
        case("traversal in digest", "GET", "/v2/good/blobs/sha256:../../x", 404, "NOT_FOUND"),
        case("traversal in digest, one segment", "GET", "/v2/good/blobs/sha256:..%2f..%2fx", 404, "BLOB_UNKNOWN"),
        case("traversal in name, tags", "GET", "/v2/good/../bar/tags/list", 404, "NAME_UNKNOWN"),
        case("traversal after uploads", "GET", "/v2/good/blobs/uploads/../../../x", 404, "NOT_FOUND"),
        case("traversal into index.json", "GET", "/v2/good/blobs/uploads/../../index.json", 404, "NOT_FOUND"),
        case("traversal as a tag", "GET", "/v2/good/manifests/..", 404, "MANIFEST_UNKNOWN"),
        case("traversal as a PUT tag", "PUT", "/v2/good/manifests/..%2f..%2findex.json", 400, "MANIFEST_INVALID")
            .manifest(m.clone())
            .then(v1_only),
        case("traversal in name, upload", "POST", "/v2/good/../../x/blobs/uploads/", 400, "NAME_INVALID"),
        case("absolute name", "GET", "/v2//etc/tags/list", 404, "NAME_UNKNOWN"),
        // ---- unknown things ----
        case("tags of unknown repo", "GET", "/v2/nosuch/tags/list", 404, "NAME_UNKNOWN"),
        case("tags of unknown nested repo", "GET", "/v2/good/nosuch/tags/list", 404, "NAME_UNKNOWN"),
    ];

    assert!(cases.len() >= 40, "{} cases", cases.len());
    let mut sessions = vec![other_session.clone()];
    let mut failures = Vec::new();
    for c in &cases {
        let path = if c.path.contains("{upload}") {
            let id = new_session(&reg, REPO);
            sessions.push(id.clone());
            c.path.replace("{upload}", &id)
        } else {
            c.path.clone()
        };
        let what = format!(
            "{} ({} {})",
            c.what,
            c.method,
            if path.len() > 120 {
                &path[..120]
            } else {
                &path
            }
        );
        let send = |method: &str| {
            let mut req = reg.req(method, &path);
            for (k, v) in &c.headers {
                req = req.header(k, v);
            }
            req = req.body(&c.body);
            if c.chunked {
                req = req.chunked();
            }
            req.send()
        };
        let head = c.method == "HEAD";
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let r = send(c.method);
            if head {
                // A HEAD answer has no body to carry the code: it must have the
                // table's status and no body, and the GET of the same path must
                // answer the table's status and code with the same headers.
                assert_eq!(r.status, c.status, "{what}");
                assert!(r.body.is_empty(), "{what}: HEAD answered with a body");
                let g = send("GET");
                assert_eq!(
                    (g.status, error_code_of(&g)),
                    (c.status, Some(c.code.to_string())),
                    "{what}: the GET of the same path: {}",
                    g.text()
                );
                assert_error_body(&format!("{what}, as GET"), &g, c.code, false);
                assert_eq!(
                    headers_of_any_request(&r),
                    headers_of_any_request(&g),
                    "{what}: HEAD and GET headers differ"
                );
                let id = |x: &Resp| {
                    x.headers
                        .iter()
                        .find(|(k, _)| k == "x-request-id")
                        .map(|(_, v)| v.clone())
                };
                // The native host tags each request; `wasmtime serve` does not.
                if EDGE.is_none() {
                    assert!(id(&r).is_some(), "{what}: no X-Request-Id");
                    assert_ne!(id(&r), id(&g), "{what}: two requests, one request id");
                }
            } else {
                assert_eq!(
                    (r.status, error_code_of(&r)),
                    (c.status, Some(c.code.to_string())),
                    "{what}: {}",
                    r.text()
                );
            }
            assert_error_body(&what, &r, c.code, head);
            for (k, v) in &c.expect {
                assert_eq!(r.header(k), Some(v.as_str()), "{what}: header {k}");
            }
            if let Some(then) = &c.then {
                then(&reg, &r);
            }
            // No blob appeared or vanished.
            assert_eq!(
                blob_files(&reg, REPO),
                blobs_before,
                "{what}: blobs/ changed"
            );
        }));
        if let Err(e) = outcome {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failures.push(msg);
        }
        // Whatever happened, the registry serves on.
        assert!(reg.alive(), "{what}: the registry exited");
        let base = reg.get("/v2/");
        assert_eq!(
            base.status, 200,
            "{what}: /v2/ then answered {}",
            base.status
        );
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );

    // Nothing of any failed request remains anywhere: once the sessions this
    // test opened are gone, the data directory holds the fixtures and only them.
    for id in sessions {
        let repo = if id == other_session { "other" } else { REPO };
        let r = reg.delete(&format!("/v2/{repo}/blobs/uploads/{id}"));
        assert!(
            r.status == 204 || r.status == 404,
            "cancel {id}: {}",
            r.status
        );
    }
    let mut want: BTreeSet<String> = blobs_before
        .iter()
        .map(|f| format!("{REPO}/blobs/{f}"))
        .collect();
    want.insert(format!("{REPO}/index.json"));
    want.insert(format!("{REPO}/oci-layout"));
    // The catalog's index, beside the layouts.
    want.insert(".skiff/catalog.json".to_string());
    if ON_S3 || EDGE.is_some() {
        // In the bucket (or the key-value store): the objects and nothing
        // else (no staging left).
        assert_eq!(reg.stored.files(""), want, "stray objects in the bucket");
    } else {
        // The version of index.json before the fixture's last tag push.
        want.insert(format!("{REPO}/.index.json.prev"));
        // The dedupe cache (on by default) lives at the root.
        want.insert(".skiff-cache.db".to_string());
        // And the marker of the server running on the store.
        let running: Vec<String> = files_under(&reg.root())
            .into_iter()
            .filter(|f| f.starts_with(".skiff-running."))
            .collect();
        assert_eq!(running.len(), 1, "{running:?}");
        want.extend(running);
        assert_eq!(
            files_under(&reg.root()),
            want,
            "stray files in the data directory"
        );
    }
    let outside: BTreeSet<String> = files_under(reg.data.path())
        .into_iter()
        // The local root, or the key-value files of an edge run.
        .filter(|f| !f.starts_with("root/") && !f.starts_with("kv/"))
        .collect();
    assert_eq!(outside, BTreeSet::from(["config.json".to_string()]));
    assert_tags(&reg, REPO, &["v1"]);
    assert_eq!(reg.get(&format!("/v2/{REPO}/manifests/v1")).body, m);
    assert_eq!(reg.get(&format!("/v2/{REPO}/blobs/{ten}")).body, TEN);
}
