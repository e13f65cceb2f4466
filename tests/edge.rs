//! The edge compositions (`target/edge/`) as a user of Spin or `wasmtime
//! serve` meets them: what they import, what `spin.toml` names and builds,
//! real clients through them under `wasmtime serve`, one bucket served by
//! the edge and by `skiff serve` alike, and the admin routes that run gc and
//! scrub. (The conformance and bad-input suites run through both
//! compositions as the `*_edge_kv` and `*_edge_s3` test targets.)

mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

const MIB: u64 = 1 << 20;

// ---------------------------------------------------------------- imports

/// The names a component imports and exports itself (not those of the
/// components nested in it).
fn top_level(bytes: &[u8]) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut imports = BTreeSet::new();
    let mut exports = BTreeSet::new();
    let mut depth = 0u32;
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        match payload.expect("a valid component") {
            wasmparser::Payload::Version { .. } => depth += 1,
            wasmparser::Payload::End(_) => depth -= 1,
            wasmparser::Payload::ComponentImportSection(s) if depth == 1 => {
                for i in s {
                    imports.insert(i.unwrap().name.name.to_string());
                }
            }
            wasmparser::Payload::ComponentExportSection(s) if depth == 1 => {
                for e in s {
                    exports.insert(e.unwrap().name.name.to_string());
                }
            }
            _ => {}
        }
    }
    (imports, exports)
}

/// How many core instances and memories one instantiation of a component
/// creates, nested components included: what a request costs a runtime's
/// instance pool.
fn instance_cost(bytes: &[u8]) -> (usize, usize) {
    let (mut instances, mut memories) = (0, 0);
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        match payload.expect("a valid component") {
            wasmparser::Payload::InstanceSection(s) => {
                instances += s
                    .into_iter()
                    .filter(|i| matches!(i, Ok(wasmparser::Instance::Instantiate { .. })))
                    .count();
            }
            wasmparser::Payload::MemorySection(s) => memories += s.count() as usize,
            _ => {}
        }
    }
    (instances, memories)
}

/// `wasi:http/types@0.2.12` -> `http`.
fn wasi_package(name: &str) -> Option<&str> {
    name.strip_prefix("wasi:")?.split('/').next()
}

/// Check what `file` imports: standard WASI of the `allowed` packages
/// only (nothing `skiff:`), and it serves `wasi:http/incoming-handler`.
fn check_imports(file: &Path, allowed: &[&str]) -> BTreeSet<String> {
    let bytes = std::fs::read(file).unwrap();
    let (imports, exports) = top_level(&bytes);
    for i in &imports {
        let pkg = wasi_package(i).unwrap_or_else(|| panic!("{}: imports {i}", file.display()));
        assert!(
            allowed.contains(&pkg),
            "{}: imports {i}, not one of wasi:{allowed:?}",
            file.display()
        );
    }
    assert!(
        exports
            .iter()
            .any(|e| e.starts_with("wasi:http/incoming-handler@0.2.")),
        "{}: exports {exports:?}",
        file.display()
    );
    imports
}

/// `filesystem`: the access component reads settings from mounted files
/// (`auth_policy_file`, ...), which Spin's `files` and `wasmtime serve
/// --dir` provide.
const STANDARD: &[&str] = &[
    "http",
    "io",
    "keyvalue",
    "clocks",
    "random",
    "cli",
    "config",
    "filesystem",
];

#[test]
fn edge_compositions_import_only_standard_wasi() {
    let kv = check_imports(&edge_file("registry-kv.wasm"), STANDARD);
    assert!(kv.contains("wasi:keyvalue/store@0.2.0-draft2"), "{kv:?}");
    assert!(kv.contains("wasi:keyvalue/atomics@0.2.0-draft2"), "{kv:?}");
    assert!(
        kv.contains("wasi:config/store@0.2.0-draft-2024-09-27"),
        "{kv:?}"
    );
    assert!(
        !kv.iter().any(|i| i.starts_with("wasi:http/outgoing")),
        "{kv:?}"
    );

    let s3 = check_imports(&edge_file("registry-s3.wasm"), STANDARD);
    assert!(s3.contains("wasi:http/outgoing-handler@0.2.12"), "{s3:?}");
    assert!(
        s3.contains("wasi:config/store@0.2.0-draft-2024-09-27"),
        "{s3:?}"
    );
    assert!(!s3.iter().any(|i| i.starts_with("wasi:keyvalue")), "{s3:?}");

    // For wasmtime serve: the same, with the config bridge in front.
    let bridged = check_imports(&edge_file("registry-s3-wasmtime.wasm"), STANDARD);
    assert!(
        bridged.contains("wasi:config/store@0.2.0-rc.1"),
        "{bridged:?}"
    );
    assert!(
        !bridged.contains("wasi:config/store@0.2.0-draft-2024-09-27"),
        "{bridged:?}"
    );
    // The test-only kv-fs composition keeps its store in files.
    let fs = check_imports(
        &edge_file("registry-kv-fs.wasm"),
        &[STANDARD, &["filesystem"]].concat(),
    );
    assert!(!fs.iter().any(|i| i.starts_with("wasi:keyvalue")), "{fs:?}");

    for file in ["registry-kv.wasm", "registry-s3.wasm"] {
        let (instances, memories) = instance_cost(&std::fs::read(edge_file(file)).unwrap());
        report(&format!(
            "edge: a request to {file} instantiates {instances} core instances with {memories} memories"
        ));
    }
}

// ---------------------------------------------------------------- spin.toml

fn manifest(name: &str) -> toml::Value {
    let text = std::fs::read_to_string(workspace().join(name)).unwrap();
    toml::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Run a manifest's build command the way `spin build` does (a shell in
/// the manifest's directory), with the test build's target flags removed.
fn run_build(command: &str) -> String {
    run(Command::new("sh")
        .args(["-c", command])
        .current_dir(workspace())
        .env_remove("RUSTFLAGS"))
}

/// What components/access reads (its module docs).
const AUTH_SETTINGS: &[&str] = &[
    "auth_htpasswd",
    "auth_htpasswd_file",
    "auth_policy",
    "auth_policy_file",
    "auth_realm",
    "auth_service",
    "auth_token_key",
    "auth_token_key_file",
    "auth_token_cert",
    "auth_token_cert_file",
    "auth_fail_delay",
];

#[test]
fn spin_manifests_build_and_name_registry_handlers() {
    for (file, kind) in [("spin.toml", "kv"), ("spin-s3.toml", "s3")] {
        let m = manifest(file);
        assert_eq!(m["spin_manifest_version"].as_integer(), Some(2), "{file}");
        let triggers = m["trigger"]["http"].as_array().unwrap();
        let registry = triggers
            .iter()
            .find(|t| t["route"].as_str() == Some("/v2/..."))
            .unwrap_or_else(|| panic!("{file}: no trigger on /v2/..."));
        let name = registry["component"].as_str().unwrap();
        let components = m["component"].as_table().unwrap();
        let command = components[name]["build"]["command"].as_str().unwrap();
        // It prints each file it wrote.
        let built: BTreeSet<_> = run_build(command)
            .lines()
            .map(|l| std::fs::canonicalize(l.trim()).unwrap())
            .collect();
        for (cname, c) in components {
            let source = workspace().join(c["source"].as_str().unwrap());
            let source = std::fs::canonicalize(&source).unwrap();
            assert!(
                built.contains(&source),
                "{file}: the build did not write {}: {built:?}",
                source.display()
            );
            check_imports(&source, STANDARD);
            let vars = c.get("variables").and_then(|v| v.as_table());
            // The access component's settings, every one declared (Spin
            // gives a component only the variables it names).
            let vars_of = vars.unwrap_or_else(|| panic!("{file}: {cname} has no variables"));
            for v in AUTH_SETTINGS {
                assert!(vars_of.contains_key(*v), "{file}: {cname} lacks {v}");
                assert!(m["variables"].get(*v).is_some(), "{file}: no variable {v}");
            }
            assert!(
                triggers
                    .iter()
                    .any(|t| t["route"].as_str() == Some("/auth/...")
                        && t["component"].as_str() == Some(cname.as_str())),
                "{file}: the token endpoint is not routed to {cname}"
            );
            if kind == "kv" {
                assert_eq!(
                    c["key_value_stores"].as_array().unwrap(),
                    &vec![toml::Value::from("default")],
                    "{file}: {cname}"
                );
            } else {
                let vars = vars.unwrap_or_else(|| panic!("{file}: {cname} has no variables"));
                for v in [
                    "s3_bucket",
                    "s3_region",
                    "s3_endpoint",
                    "s3_prefix",
                    "s3_path_style",
                    "s3_access_key",
                    "s3_secret_key",
                ] {
                    assert!(vars.contains_key(v), "{file}: {cname} lacks {v}");
                    assert!(m["variables"].get(v).is_some(), "{file}: no variable {v}");
                }
                assert!(
                    c["allowed_outbound_hosts"]
                        .as_array()
                        .is_some_and(|h| !h.is_empty()),
                    "{file}: {cname} may call nothing"
                );
            }
        }
    }
}

// ---------------------------------------------------------------- clients

/// A registry under `wasmtime serve` on a store of its own.
fn start(edge: Edge) -> Registry {
    let data = tempfile::tempdir().unwrap();
    let stored = match edge {
        Edge::S3 => Backing::S3(Arc::new(Bucket::create())),
        // start_edge points it at the kv-fs directory.
        Edge::Kv => Backing::Disk(data.path().to_path_buf()),
    };
    Registry::start_edge(edge, Store { data, stored })
}

/// Peak resident memory of a process, from /proc (kB → bytes).
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM in /proc/PID/status");
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap();
    kb * 1024
}

/// skopeo copies a multi-arch image and a 300 MiB layer up and back down
/// through the composition, digests kept; the wasmtime process's memory
/// does not grow with the layer.
fn skopeo_round_trip(edge: Edge) {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let out = tmp.path().join("out");
    let mut layout = Layout::create(&src);
    let (multi, _) = add_multi_arch(&mut layout);
    let big_layer = layout.random_blob(LAYER_TAR, 300 * MIB, 0xed6e);
    let (big, _) = layout.image("amd64", &big_layer);
    layout.tag("big", &big);
    layout.save();

    let reg = start(edge);
    let host = reg.host();
    let down_args = COPY_DOWN;
    let copy = |args: &[&str], from: String, to: String| {
        run(skopeo(tmp.path()).args(args).arg(from).arg(to));
    };
    let oci = |dir: &Path, tag: &str| format!("oci:{}:{tag}", dir.display());
    let remote = |name: &str| format!("docker://{host}/edge/{name}:v1");

    copy(&COPY_UP, oci(&src, "multi"), remote("multi"));
    copy(&down_args, remote("multi"), oci(&out, "multi"));
    let small = peak_rss(reg.pid());
    copy(&COPY_UP, oci(&src, "big"), remote("big"));
    copy(&down_args, remote("big"), oci(&out, "big"));
    let after = peak_rss(reg.pid());
    report(&format!(
        "edge {edge:?}: wasmtime serve peak RSS {} MiB after the multi-arch image, {} MiB after the 300 MiB layer in and out",
        small / MIB,
        after / MIB
    ));

    assert_eq!(layout_tags(&out), layout_tags(&src));
    assert_eq!(
        layout_tags(&out)["multi"].1,
        multi["digest"].as_str().unwrap()
    );
    let blobs = blob_files(&out);
    assert_eq!(blobs, blob_files(&src));
    for name in blobs.keys() {
        let path = out.join("blobs/sha256").join(name);
        assert_eq!(file_sha256(&path), format!("sha256:{name}"), "{name}");
    }
    // A layer held whole would add 300 MiB; chunks and parts add a few.
    assert!(
        after < small + 100 * MIB,
        "peak RSS grew from {small} to {after} bytes with a 300 MiB layer"
    );
}

#[test]
fn skopeo_round_trips_through_the_kv_composition() {
    skopeo_round_trip(Edge::Kv);
}

#[test]
fn skopeo_round_trips_through_the_s3_composition() {
    skopeo_round_trip(Edge::S3);
}

// ---------------------------------------------------------------- one bucket

/// A chunked upload: opened and fed its first chunk by `a`, finished by `b`.
fn upload_across(a: &Registry, b: &Registry, repo: &str, bytes: &[u8]) -> String {
    let digest = sha256(bytes);
    let half = bytes.len() / 2;
    let loc = a.open_upload(repo).location();
    let r = a.patch_chunk(&loc, 0, &bytes[..half]).send();
    assert_eq!(r.status, 202, "first chunk: {}", r.text());
    let loc = r.location();
    let r = b.patch_chunk(&loc, half, &bytes[half..]).send();
    assert_eq!(r.status, 202, "second chunk, other server: {}", r.text());
    let r = b.close_upload(&r.location(), &digest).send();
    assert_eq!(r.status, 201, "finish: {}", r.text());
    digest
}

#[test]
fn edge_and_skiff_serve_share_one_bucket() {
    let bucket = Arc::new(Bucket::create());
    let store = Store {
        data: tempfile::tempdir().unwrap(),
        stored: Backing::S3(bucket.clone()),
    };
    let edge = Registry::spawn_wasmtime(
        serve_command(
            &edge_file("registry-s3-wasmtime.wasm"),
            &s3_vars(&bucket),
            None,
        ),
        store,
    );
    let native = Registry::start_on_bucket(&bucket, |_| {});

    // Written at the edge, served natively.
    let (m, md) = edge.push_image("at/edge", "v1", "written at the edge");
    let big: Vec<u8> = (0..12 * MIB as usize).map(|i| (i % 251) as u8).collect();
    let big_digest = upload_across(&edge, &edge, "at/edge", &big);
    assert_eq!(native.get_manifest("at/edge", "v1").body, m);
    assert_eq!(native.pull_blob("at/edge", &big_digest).len(), big.len());
    let parsed: Value = serde_json::from_slice(&m).unwrap();
    for layer in parsed["layers"].as_array().unwrap() {
        native.pull_blob("at/edge", layer["digest"].as_str().unwrap());
    }

    // Written natively, served at the edge: a blob in two repositories is
    // stored once natively (the second is a dedupe reference).
    let (n, nd) = native.push_image("at/home", "v1", "written natively");
    let shared = native.push_blob("at/home", b"one layer, two repositories");
    assert_eq!(native.mount("at/other", &shared, "at/home").status, 201);
    assert_eq!(edge.get_manifest("at/home", "v1").body, n);
    assert_eq!(
        edge.pull_blob("at/other", &shared),
        b"one layer, two repositories"
    );

    // Upload sessions move between them, both ways.
    let a = upload_across(&native, &edge, "at/mixed", &big[..7 * MIB as usize]);
    let b = upload_across(&edge, &native, "at/mixed", &big[MIB as usize..]);
    edge.pull_blob("at/mixed", &a);
    native.pull_blob("at/mixed", &b);

    // Tags and deletes are seen by both.
    let tags = native.get("/v2/at/edge/tags/list").json();
    assert_eq!(tags["tags"], serde_json::json!(["v1"]));
    let r = edge.delete(&format!("/v2/at/edge/manifests/{md}"));
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(native.get_manifest("at/edge", "v1").status, 404);
    let r = native.delete(&format!("/v2/at/home/manifests/{nd}"));
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(edge.get_manifest("at/home", "v1").status, 404);
}

// ---------------------------------------------------------------- admin

fn admin(reg: &Registry, path: &str, token: Option<&str>) -> Resp {
    let mut r = reg.req("POST", path);
    if let Some(t) = token {
        r = r.header("Authorization", &format!("Bearer {t}"));
    }
    r.send()
}

fn admin_routes(edge: Edge) {
    let reg = start(edge);
    let (_, md) = reg.push_image("app", "v1", "admin routes");
    let (m2, _) = reg.push_image("kept", "v1", "kept by gc");

    // Locked: no token, a wrong one, the wrong method, a mistyped option.
    let r = admin(&reg, "/_skiff/gc", None);
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r
        .header("www-authenticate")
        .is_some_and(|h| h.starts_with("Bearer ")));
    assert_eq!(admin(&reg, "/_skiff/gc", Some("guess")).status, 401);
    let r = reg
        .req("GET", "/_skiff/gc")
        .header("Authorization", &format!("Bearer {ADMIN_TOKEN}"))
        .send();
    assert_eq!(r.status, 405);
    let r = admin(&reg, "/_skiff/gc?dryrun=true", Some(ADMIN_TOKEN));
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.error_code(), "UNSUPPORTED");

    // gc: the untagged image goes once the delay allows, the tagged stays.
    let parsed: Value = serde_json::from_slice(&reg.get_manifest("app", "v1").body).unwrap();
    let layer = parsed["layers"][0]["digest"].as_str().unwrap().to_string();
    assert_eq!(reg.delete(&format!("/v2/app/manifests/{md}")).status, 202);
    let r = admin(&reg, "/_skiff/gc?repo=app", Some(ADMIN_TOKEN));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["reports"][0]["blobsRemoved"],
        0,
        "gcDelay protects them"
    );
    assert_eq!(reg.head(&format!("/v2/app/blobs/{layer}")).status, 200);
    let r = admin(&reg, "/_skiff/gc?delay_ms=0", Some(ADMIN_TOKEN));
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["next"], Value::Null, "{body}");
    let app = body["reports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["repository"] == "app")
        .unwrap_or_else(|| panic!("{body}"));
    assert!(app["blobsRemoved"].as_u64().unwrap() >= 2, "{body}");
    assert_eq!(reg.head(&format!("/v2/app/blobs/{layer}")).status, 404);
    assert_eq!(reg.get_manifest("kept", "v1").body, m2);

    // scrub: clean, then (on S3, where a test can reach the bytes) damaged.
    let r = admin(&reg, "/_skiff/scrub?repo=kept", Some(ADMIN_TOKEN));
    assert_eq!(r.status, 200, "{}", r.text());
    let report = &r.json()["reports"][0];
    assert!(report["blobsChecked"].as_u64().unwrap() >= 2, "{report}");
    assert_eq!(report["damaged"], serde_json::json!([]), "{report}");
    if let Backing::S3(bucket) = &reg.stored {
        let kept: Value = serde_json::from_slice(&m2).unwrap();
        let layer = kept["layers"][0]["digest"].as_str().unwrap();
        bucket.overwrite(&format!("kept/blobs/sha256/{}", hex_of(layer)), b"rot");
        let r = admin(&reg, "/_skiff/scrub?repo=kept", Some(ADMIN_TOKEN));
        let report = &r.json()["reports"][0];
        assert_eq!(report["damaged"][0]["digest"], layer, "{report}");
        assert_eq!(report["damaged"][0]["images"], serde_json::json!(["v1"]));
    }
}

#[test]
fn admin_routes_run_gc_and_scrub_on_kv() {
    admin_routes(Edge::Kv);
}

#[test]
fn admin_routes_run_gc_and_scrub_on_s3() {
    admin_routes(Edge::S3);
}

// ---------------------------------------------------------------- signatures

/// Against an S3 endpoint that checks SigV4 signatures (moto with IAM
/// on): the right key works, a wrong secret fails cleanly.
#[test]
fn s3_composition_signs_requests_an_endpoint_checks() {
    let moto = StrictMoto::start(4);
    let bucket = "signed";
    let (id, secret) = moto.user_with_bucket(bucket);
    let vars = |secret: &str| -> Vec<(String, String)> {
        [
            ("s3_bucket", bucket),
            ("s3_endpoint", moto.endpoint.as_str()),
            ("s3_access_key", id.as_str()),
            ("s3_secret_key", secret),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    };
    let serve = |secret: &str| {
        let store = Store {
            data: tempfile::tempdir().unwrap(),
            stored: Backing::Disk(std::env::temp_dir()),
        };
        let file = edge_file("registry-s3-wasmtime.wasm");
        Registry::spawn_wasmtime(serve_command(&file, &vars(secret), None), store)
    };

    let good = serve(&secret);
    let (m, _) = good.push_image("signed/app", "v1", "signed requests");
    let big: Vec<u8> = (0..11 * MIB as usize).map(|i| (i % 241) as u8).collect();
    let d = upload_across(&good, &good, "signed/app", &big);
    assert_eq!(good.get_manifest("signed/app", "v1").body, m);
    assert_eq!(good.pull_blob("signed/app", &d).len(), big.len());

    let bad = serve("not-the-secret");
    let r = bad.get_manifest("signed/app", "v1");
    assert!(r.status >= 500, "{} {}", r.status, r.text());
    assert!(r.text().contains("403"), "{}", r.text());
    let r = bad
        .req(
            "POST",
            &format!("/v2/signed/app/blobs/uploads/?digest={}", sha256(b"x")),
        )
        .body(b"x")
        .send();
    assert!(
        r.status >= 500,
        "a refused write must not succeed: {}",
        r.status
    );
}

// ---------------------------------------------------------------- concurrency

/// 100 clients at once push one shared layer and an image each, under a tag
/// of their own, into one repository: every compare-and-swap of
/// `index.json` and every create-if-absent of the shared blob must hold.
fn concurrent_pushes(edge: Edge) {
    const CLIENTS: usize = 100;
    let reg = start(edge);
    let shared = b"the layer every client pushes";
    let pushed: Vec<(String, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|i| {
                let reg = &reg;
                s.spawn(move || {
                    let layer = reg.push_blob("busy/repo", shared);
                    let config = format!("{{\"client\":{i}}}");
                    let cd = reg.push_blob("busy/repo", config.as_bytes());
                    let m =
                        image_manifest(&cd, config.len(), &[(&layer, shared.len())], None, None);
                    let tag = format!("t{i:03}");
                    let r = reg.put_manifest("busy/repo", &tag, OCI_MANIFEST, &m);
                    assert_eq!(r.status, 201, "client {i}: {}", r.text());
                    (tag, sha256(&m))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let tags = reg.get("/v2/busy/repo/tags/list?n=1000").json();
    let listed: BTreeSet<String> = tags["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    let want: BTreeSet<String> = pushed.iter().map(|(t, _)| t.clone()).collect();
    assert_eq!(listed, want, "tags lost under concurrent pushes");
    for (tag, digest) in &pushed {
        let r = reg.get_manifest("busy/repo", tag);
        assert_eq!(r.status, 200, "{tag}");
        assert_eq!(sha256(&r.body), *digest, "{tag} names another manifest");
    }
    assert_eq!(reg.pull_blob("busy/repo", &sha256(shared)), shared);
}

#[test]
fn a_hundred_concurrent_pushes_lose_nothing_on_kv() {
    concurrent_pushes(Edge::Kv);
}

#[test]
fn a_hundred_concurrent_pushes_lose_nothing_on_s3() {
    concurrent_pushes(Edge::S3);
}
