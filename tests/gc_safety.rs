//! gc, retention, dedupe and scrub never lose what is in use: regression
//! tests against the real binary and the real `skiff gc` / `skiff scrub`
//! commands. Files are aged with `utime` (set_modified), never by sleeping.

mod common;

use common::*;
use serde_json::json;

/// A registry whose own gc never runs: the tests run `skiff gc` themselves.
fn registry(edit: impl FnOnce(&mut serde_json::Value)) -> Registry {
    Registry::start_with(|cfg| {
        cfg["storage"]["gc"] = false.into();
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
