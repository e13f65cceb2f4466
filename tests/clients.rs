//! End-to-end tests with real clients against the real binary: skopeo,
//! umoci, the docker CLI (no engine) and the Python `oras` client.
//!
//! Every client must be installed (`scripts/test.sh` installs them); a missing
//! one fails the test rather than skipping it. Python comes from
//! `$SKIFF_PYTHON`, else `.venv/bin/python` in the workspace root.

mod common;

use common::*;
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const GIB: u64 = 1 << 30;

fn umoci() -> Command {
    Command::new("umoci")
}

// ---------------------------------------------------------------------------
// a. skopeo: a multi-arch index and a 1 GiB layer, up and back down

#[test]
fn skopeo_round_trips_multi_arch_index_and_one_gib_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let out = tmp.path().join("out");
    let mut layout = Layout::create(&src);
    let (multi, index_bytes) = add_multi_arch(&mut layout);
    let t = Instant::now();
    let big_layer = layout.random_blob(LAYER_TAR, GIB, 0x5eed);
    eprintln!("skopeo: generated the 1 GiB layer in {:.1?}", t.elapsed());
    let (big, big_manifest) = layout.image("amd64", &big_layer);
    layout.tag("big", &big);
    layout.save();

    let reg = Registry::start();
    let host = reg.host();
    let src_ref = |tag: &str| format!("oci:{}:{tag}", src.display());
    let out_ref = |tag: &str| format!("oci:{}:{tag}", out.display());

    // Up. --preserve-digests: skopeo would otherwise gzip uncompressed layers
    // on their way to a registry.
    run(skopeo(tmp.path())
        .args(COPY_UP)
        .arg(src_ref("multi"))
        .arg(format!("docker://{host}/lib/multi:v1")));
    let t = Instant::now();
    run(skopeo(tmp.path())
        .args(COPY_UP)
        .arg(src_ref("big"))
        .arg(format!("docker://{host}/lib/big:v1")));
    let up = t.elapsed();

    // Down, into a new layout (uncompressed layers kept as they are).
    let down_args = COPY_DOWN;
    run(skopeo(tmp.path())
        .args(down_args)
        .arg(format!("docker://{host}/lib/multi:v1"))
        .arg(out_ref("multi")));
    let t = Instant::now();
    run(skopeo(tmp.path())
        .args(down_args)
        .arg(format!("docker://{host}/lib/big:v1"))
        .arg(out_ref("big")));
    let down = t.elapsed();
    report(&format!(
        "skopeo: 1 GiB image copied up in {up:.1?}, down in {down:.1?}"
    ));

    // Same index, manifests and blobs, byte for byte.
    assert_eq!(layout_tags(&out), layout_tags(&src));
    assert_eq!(
        layout_tags(&out)["multi"].1,
        multi["digest"].as_str().unwrap()
    );
    assert_eq!(layout_tags(&out)["big"].1, big["digest"].as_str().unwrap());
    let blobs = blob_files(&out);
    assert_eq!(blobs, blob_files(&src));
    assert_eq!(blobs.len(), 10, "index, 3 manifests, 3 configs, 3 layers");
    for name in blobs.keys() {
        let path = out.join("blobs/sha256").join(name);
        assert_eq!(
            file_sha256(&path),
            format!("sha256:{name}"),
            "{name} corrupted"
        );
    }
    // The 1 GiB blob went into the registry's storage whole.
    let stored = reg.blob_path("lib/big", big_layer["digest"].as_str().unwrap());
    assert_eq!(fs::metadata(&stored).unwrap().len(), GIB);

    // inspect --raw gives back the index (and manifest) exactly.
    let raw = run(skopeo(tmp.path())
        .args(["inspect", "--tls-verify=false"])
        .arg(format!("docker://{host}/lib/multi:v1"))
        .arg("--raw"));
    assert_eq!(raw.as_bytes(), &index_bytes[..]);
    let raw = run(skopeo(tmp.path())
        .args(["inspect", "--tls-verify=false", "--raw"])
        .arg(format!("docker://{host}/lib/big:v1")));
    assert_eq!(raw.as_bytes(), &big_manifest[..]);

    // A non-raw inspect resolves the platform's image and reads its config.
    let info = json_of(&run(skopeo(tmp.path())
        .args(["--override-arch", "arm64", "--override-os", "linux"])
        .args(["inspect", "--tls-verify=false"])
        .arg(format!("docker://{host}/lib/multi:v1"))));
    assert_eq!(info["Architecture"], "arm64");
    // Digest is the index's (what the tag names); the layers are arm64's.
    assert_eq!(info["Digest"], multi["digest"]);
    let arm64 = reg
        .get(&format!(
            "/v2/lib/multi/manifests/{}",
            multi_child(&index_bytes, "arm64")
        ))
        .json();
    assert_eq!(info["Layers"], json!([arm64["layers"][0]["digest"]]));

    let list_tags = || {
        json_of(&run(skopeo(tmp.path())
            .args(["list-tags", "--tls-verify=false"])
            .arg(format!("docker://{host}/lib/multi"))))
    };
    let tags = list_tags();
    assert_eq!(tags["Tags"], json!(["v1"]), "{tags}");

    // delete resolves the tag and deletes by digest: the index and its tag go.
    run(skopeo(tmp.path())
        .args(["delete", "--tls-verify=false"])
        .arg(format!("docker://{host}/lib/multi:v1")));
    let err = run_failing(
        skopeo(tmp.path())
            .args(["inspect", "--tls-verify=false", "--raw"])
            .arg(format!("docker://{host}/lib/multi:v1")),
    );
    assert!(err.contains("manifest unknown"), "{err}");
    let r = reg.get(&format!(
        "/v2/lib/multi/manifests/{}",
        multi["digest"].as_str().unwrap()
    ));
    assert_eq!(r.status, 404, "{}", r.text());
    let tags = list_tags();
    assert!(tags["Tags"].as_array().unwrap().is_empty(), "{tags}");
}

/// The digest of the manifest for `arch` in an index.
fn multi_child(index: &[u8], arch: &str) -> String {
    let index: Value = serde_json::from_slice(index).unwrap();
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["platform"]["architecture"] == arch)
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

// ---------------------------------------------------------------------------
// b. Python oras: artifacts, pull, referrers

fn python() -> PathBuf {
    match std::env::var_os("SKIFF_PYTHON") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => workspace().join(".venv/bin/python"),
    }
}

#[test]
fn oras_python_pushes_pulls_and_attaches_referrers() {
    let reg = Registry::start();
    let host = reg.host();
    let (subject, subject_digest) = reg.push_image("art/file", "img", "oras subject");

    let work = tempfile::tempdir().unwrap();
    let mut artifact = b"an artifact pushed by oras-py\n".to_vec();
    let mut noise = vec![0u8; 300_000];
    SmallRng::seed_from_u64(7).fill_bytes(&mut noise);
    artifact.extend_from_slice(&noise);
    fs::write(work.path().join("file.txt"), &artifact).unwrap();
    fs::write(
        work.path().join("sbom.json"),
        br#"{"spdxVersion":"SPDX-2.3","name":"skiff"}"#,
    )
    .unwrap();

    let py = python();
    assert!(
        py.exists(),
        "{} does not exist: run scripts/test.sh (or set SKIFF_PYTHON to a python with `oras`)",
        py.display()
    );
    run(Command::new(&py)
        .arg(workspace().join("tests/clients/oras_client.py"))
        .arg(&host)
        .arg(work.path())
        .arg(&subject_digest)
        .arg(subject.len().to_string()));
    let r = json_of(&fs::read_to_string(work.path().join("result.json")).unwrap());

    // The artifact, its typed config and annotations.
    assert_eq!(r["push_status"], 201, "{r:#}");
    let m = &r["manifest"];
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.skiff.test.config"
    );
    assert_eq!(m["annotations"]["org.skiff.test"], "artifact");
    assert_eq!(
        m["layers"][0]["mediaType"],
        "application/vnd.skiff.test.file"
    );
    assert_eq!(m["layers"][0]["size"], artifact.len());
    let by_http = reg.get("/v2/art/file/manifests/v1");
    assert_eq!(by_http.status, 200);
    assert_eq!(
        Some(sha256(&by_http.body).as_str()),
        r["push_digest"].as_str()
    );

    // Pulled back byte for byte.
    let pulled = r["pulled"].as_array().unwrap();
    assert_eq!(pulled.len(), 1, "{r:#}");
    let pulled = PathBuf::from(pulled[0].as_str().unwrap());
    assert_eq!(pulled, work.path().join("pulled/file.txt"));
    assert!(
        fs::read(&pulled).unwrap() == artifact,
        "pulled bytes differ"
    );

    // Both referrers were accepted and their subject acknowledged.
    assert_eq!(r["sig_status"], 201, "{r:#}");
    assert_eq!(r["sig_oci_subject"], subject_digest.as_str());
    assert_eq!(r["sbom_status"], 201, "{r:#}");
    assert_eq!(r["sbom_response_digest"], r["sbom_digest"]);
    assert_eq!(r["sbom_oci_subject"], subject_digest.as_str());
    let sig = r["sig_digest"].as_str().unwrap();
    let sbom = r["sbom_digest"].as_str().unwrap();

    // The referrers API, as oras-py saw it.
    assert_eq!(r["referrers_status"], 200);
    assert_eq!(r["referrers_content_type"], OCI_INDEX);
    let list = r["referrers"]["manifests"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{r:#}");
    let find = |d: &str| {
        list.iter()
            .find(|x| x["digest"] == d)
            .unwrap_or_else(|| panic!("{d} not listed: {r:#}"))
    };
    // push() cannot set artifactType: the config media type stands in for it.
    assert_eq!(
        find(sig)["artifactType"],
        "application/vnd.skiff.test.signature"
    );
    assert_eq!(find(sig)["annotations"]["org.skiff.kind"], "signature");
    assert_eq!(find(sig)["mediaType"], OCI_MANIFEST);
    assert_eq!(
        find(sbom)["artifactType"],
        "application/vnd.skiff.test.sbom"
    );
    assert_eq!(find(sbom)["annotations"]["org.skiff.kind"], "sbom");
    assert_eq!(r["filtered_status"], 200);
    assert_eq!(r["filters_applied"], "artifactType");
    let filtered = r["filtered"]["manifests"].as_array().unwrap();
    assert_eq!(filtered.len(), 1, "{r:#}");
    assert_eq!(filtered[0]["digest"], sbom);

    // The same through the harness, and the tags oras-py listed.
    let direct = reg
        .get(&format!("/v2/art/file/referrers/{subject_digest}"))
        .json();
    assert_eq!(direct["manifests"], r["referrers"]["manifests"]);
    let mut tags: Vec<String> = serde_json::from_value(r["tags"].clone()).unwrap();
    tags.sort();
    assert_eq!(tags, ["img", "sig", "v1"]);
}

// ---------------------------------------------------------------------------
// c. The docker CLI, without an engine

#[test]
fn docker_manifest_inspect_shows_both_platforms() {
    let tmp = tempfile::tempdir().unwrap();
    let mut layout = Layout::create(&tmp.path().join("src"));
    let (_, index_bytes) = add_multi_arch(&mut layout);
    layout.save();
    let reg = Registry::start();
    let host = reg.host();
    run(skopeo(tmp.path())
        .args(COPY_UP)
        .arg(format!("oci:{}:multi", layout.dir.display()))
        .arg(format!("docker://{host}/lib/multi:v1")));

    let docker_config = tempfile::tempdir().unwrap();
    let docker = || {
        let mut c = Command::new("docker");
        c.env("DOCKER_CONFIG", docker_config.path())
            .env_remove("DOCKER_HOST");
        c
    };
    // `docker manifest inspect --insecure [extra] HOST/reference`, which must
    // succeed. Plain HTTP needs --insecure: without it the CLI skips non-TLS
    // endpoints, even for 127.0.0.1, and reports "no such manifest".
    let inspect = |extra: &[&str], reference: &str| {
        json_of(&run(docker()
            .args(["manifest", "inspect", "--insecure"])
            .args(extra)
            .arg(format!("{host}/{reference}"))))
    };

    let shown = inspect(&[], "lib/multi:v1");
    assert_eq!(shown["mediaType"], OCI_INDEX, "{shown:#}");
    let original: Value = serde_json::from_slice(&index_bytes).unwrap();
    let platforms: BTreeSet<(String, String, String)> = shown["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["platform"]["os"].as_str().unwrap().to_string(),
                m["platform"]["architecture"].as_str().unwrap().to_string(),
                m["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected: BTreeSet<_> = original["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                "linux".to_string(),
                m["platform"]["architecture"].as_str().unwrap().to_string(),
                m["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(platforms, expected);

    // --verbose fetches each platform's manifest as well.
    let verbose = inspect(&["--verbose"], "lib/multi:v1");
    let entries = verbose.as_array().unwrap_or_else(|| panic!("{verbose:#}"));
    assert_eq!(entries.len(), 2, "{verbose:#}");
    for e in entries {
        let arch = e["Descriptor"]["platform"]["architecture"]
            .as_str()
            .unwrap();
        assert_eq!(e["Descriptor"]["digest"], multi_child(&index_bytes, arch));
        let m = if e["OCIManifest"].is_object() {
            &e["OCIManifest"]
        } else {
            &e["SchemaV2Manifest"]
        };
        assert_eq!(m["layers"].as_array().unwrap().len(), 1, "{e:#}");
    }

    // One platform's image by digest.
    let amd64 = multi_child(&index_bytes, "amd64");
    let one = inspect(&[], &format!("lib/multi@{amd64}"));
    assert_eq!(one["mediaType"], OCI_MANIFEST, "{one:#}");
    assert_eq!(one["config"]["mediaType"], CONFIG);

    // A tag that is not there.
    let err = run_failing(
        docker()
            .args(["manifest", "inspect", "--insecure"])
            .arg(format!("{host}/lib/multi:nope")),
    );
    assert!(
        err.to_lowercase().contains("no such manifest") || err.contains("manifest unknown"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------
// d. A layout made by another tool, served as it is

/// `umoci init` + `umoci new` + `umoci insert` (rootless, so root is not
/// needed): an image with one layer
/// holding `file`, tagged `tag`.
fn umoci_image(dir: &Path, tag: &str, scratch: &Path, content: &str) {
    if !dir.join("oci-layout").exists() {
        run(umoci().args(["init", "--layout"]).arg(dir));
    }
    let image = format!("{}:{tag}", dir.display());
    run(umoci().args(["new", "--image", &image]));
    let file = scratch.join(format!("{tag}.txt"));
    fs::write(&file, content).unwrap();
    run(umoci()
        .args(["insert", "--rootless", "--image", &image])
        .arg(&file)
        .arg(format!("/{tag}.txt")));
}

/// Pull a tag over HTTP as a client would, checking every digest on the way.
fn pull_over_http(reg: &Registry, repo: &str, tag: &str, expect: &(String, String, u64)) {
    let r = reg
        .req("GET", &format!("/v2/{repo}/manifests/{tag}"))
        .header("Accept", &format!("{OCI_MANIFEST}, {OCI_INDEX}"))
        .send();
    assert_eq!(r.status, 200, "{repo}:{tag}: {}", r.text());
    assert_eq!(r.header("content-type"), Some(expect.0.as_str()));
    assert_eq!(sha256(&r.body), expect.1);
    assert_eq!(r.header("docker-content-digest"), Some(expect.1.as_str()));
    assert_eq!(r.body.len() as u64, expect.2);
    let m = r.json();
    let mut blobs = vec![m["config"].clone()];
    blobs.extend(m["layers"].as_array().unwrap().iter().cloned());
    assert!(blobs.len() >= 2, "umoci image has a layer: {m:#}");
    for b in blobs {
        let bytes = reg.pull_blob(repo, b["digest"].as_str().unwrap());
        assert_eq!(bytes.len() as u64, b["size"].as_u64().unwrap());
    }
}

#[test]
fn umoci_layout_is_served_and_stays_valid() {
    let tmp = tempfile::tempdir().unwrap();
    let scratch = tmp.path().join("scratch");
    fs::create_dir_all(&scratch).unwrap();

    // Made before the registry starts, in what becomes its storage root.
    let root = tmp.path().join("root");
    let dir = root.join("some/repo");
    fs::create_dir_all(dir.parent().unwrap()).unwrap();
    umoci_image(&dir, "t1", &scratch, "made by umoci\n");
    let before = layout_tags(&dir);
    assert_eq!(before.keys().collect::<Vec<_>>(), ["t1"]);

    let reg = Registry::start_with(|cfg| cfg["storage"]["rootDirectory"] = json!(root));
    let host = reg.host();
    pull_over_http(&reg, "some/repo", "t1", &before["t1"]);
    let tags = reg.get("/v2/some/repo/tags/list").json();
    assert_eq!(tags["tags"], json!(["t1"]));

    let info = json_of(&run(skopeo(tmp.path())
        .args(["inspect", "--tls-verify=false"])
        .arg(format!("docker://{host}/some/repo:t1"))));
    assert_eq!(info["Digest"], before["t1"].1.as_str());
    assert_eq!(info["Layers"].as_array().unwrap().len(), 1);

    // Made while the registry runs.
    let late = root.join("late/repo");
    fs::create_dir_all(late.parent().unwrap()).unwrap();
    umoci_image(&late, "t1", &scratch, "made by umoci later\n");
    pull_over_http(&reg, "late/repo", "t1", &layout_tags(&late)["t1"]);

    // Push another umoci-made image into the first layout as tag t2.
    let other = tmp.path().join("other");
    umoci_image(&other, "t2", &scratch, "pushed with skopeo\n");
    run(skopeo(tmp.path())
        .args(["copy", "--preserve-digests", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:t2", other.display()))
        .arg(format!("docker://{host}/some/repo:t2")));
    let after = layout_tags(&dir);
    assert_eq!(after["t1"], before["t1"], "t1 untouched");
    assert_eq!(after["t2"], layout_tags(&other)["t2"]);

    // Still a valid layout for umoci and skopeo.
    let ls = run(umoci().args(["ls", "--layout"]).arg(&dir));
    let mut listed: Vec<&str> = ls
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    listed.sort();
    assert_eq!(listed, ["t1", "t2"], "{ls}");
    for tag in ["t1", "t2"] {
        let image = format!("{}:{tag}", dir.display());
        let stat = json_of(&run(umoci().args(["stat", "--json", "--image", &image])));
        assert!(stat["history"].is_array(), "{stat:#}");
        let info = json_of(&run(skopeo(tmp.path())
            .arg("inspect")
            .arg(format!("oci:{image}"))));
        assert_eq!(info["Digest"], after[tag].1.as_str());
    }
    // skopeo reads (and checks) every blob of both tags out of the layout.
    let copy = tmp.path().join("copy");
    for tag in ["t1", "t2"] {
        run(skopeo(tmp.path())
            .args(["copy", "--preserve-digests"])
            .arg(format!("oci:{}:{tag}", dir.display()))
            .arg(format!("oci:{}:{tag}", copy.display())));
    }
    assert_eq!(layout_tags(&copy), after);
}
