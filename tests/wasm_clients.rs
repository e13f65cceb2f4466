//! The WebAssembly package tools against the real binary: `wkg` (from
//! crates.io; scripts/test.sh installs it) and the Rust `oci-client` crate.
//! The payloads are skiff's own components, as built for this binary:
//! skiff holds itself.

mod common;

use common::*;
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest::OciImageManifest;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::process::Command;

const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
const WASM_LAYER: &str = "application/wasm";

/// One of skiff's components, as the build embedded it.
fn component(name: &str) -> PathBuf {
    let path = workspace()
        .join("target/wasm/wasm32-wasip2/wasm")
        .join(format!("skiff_{name}.wasm"));
    assert!(
        path.is_file(),
        "{} is missing: build skiff first",
        path.display()
    );
    path
}

/// `wkg`: installed by scripts/test.sh into the machine's tool cache, or on
/// PATH.
fn wkg() -> Command {
    let cached = std::env::var_os("SKIFF_TOOLS")
        .map(PathBuf::from)
        .map(|d| d.join("bin/wkg"))
        .filter(|p| p.is_file());
    Command::new(cached.unwrap_or_else(|| PathBuf::from("wkg")))
}

#[test]
fn wkg_publishes_a_component_and_fetches_it_back() {
    let reg = Registry::start();
    let host = reg.host();
    let wasm = component("storage");
    let bytes = fs::read(&wasm).unwrap();
    let reference = format!("{host}/wasm/skiff-storage:0.1.0");
    let home = tempfile::tempdir().unwrap();
    let wkg = || {
        let mut c = wkg();
        // No docker credentials to consult, no config of the machine's.
        c.env("HOME", home.path())
            .env("DOCKER_CONFIG", home.path().join(".docker"))
            .env("XDG_CONFIG_HOME", home.path().join(".config"))
            .env("XDG_CACHE_HOME", home.path().join(".cache"));
        c
    };
    run(wkg()
        .args(["oci", "push", "--insecure", &host])
        .args([
            "--annotation",
            "org.opencontainers.image.description=skiff's storage component",
        ])
        .arg(&reference)
        .arg(&wasm));

    // A wasm artifact as the Wasm OCI format describes it.
    let r = reg.get_manifest("wasm/skiff-storage", "0.1.0");
    assert_eq!(r.status, 200, "{}", r.text());
    let m = r.json();
    assert_eq!(m["config"]["mediaType"], WASM_CONFIG);
    assert_eq!(m["layers"].as_array().unwrap().len(), 1);
    assert_eq!(m["layers"][0]["mediaType"], WASM_LAYER);
    assert_eq!(m["layers"][0]["digest"], sha256(&bytes));
    assert_eq!(m["layers"][0]["size"], bytes.len());
    assert_eq!(
        m["annotations"]["org.opencontainers.image.description"],
        "skiff's storage component"
    );
    let config = reg.pull_blob(
        "wasm/skiff-storage",
        m["config"]["digest"].as_str().unwrap(),
    );
    let config: serde_json::Value = serde_json::from_slice(&config).unwrap();
    assert!(
        config["component"]["exports"].to_string().contains("store"),
        "the config lists the component's exports: {config}"
    );

    let out = home.path().join("fetched.wasm");
    run(wkg()
        .args(["oci", "pull", "--insecure", &host, &reference, "-o"])
        .arg(&out));
    assert_eq!(fs::read(&out).unwrap(), bytes);
}

#[test]
fn oci_client_crate_pushes_and_pulls_an_artifact() {
    let reg = Registry::start();
    let host = reg.host();
    let wasm = fs::read(component("dist_api")).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = Client::new(ClientConfig {
            protocol: ClientProtocol::Http,
            ..Default::default()
        });
        let auth = RegistryAuth::Anonymous;
        let reference: Reference = format!("{host}/artifacts/dist-api:v1").parse().unwrap();
        let config_type = "application/vnd.skiff.component.config.v1+json";
        let layer_type = "application/vnd.skiff.component.v1+wasm";
        let layer_notes = BTreeMap::from([(
            "org.opencontainers.image.title".to_string(),
            "skiff_dist_api.wasm".to_string(),
        )]);
        let layers = vec![ImageLayer::new(
            wasm.clone(),
            layer_type.into(),
            Some(layer_notes),
        )];
        let config = Config::new(
            br#"{"component":"dist-api"}"#.to_vec(),
            config_type.into(),
            None,
        );
        let notes = BTreeMap::from([
            (
                "org.opencontainers.image.source".to_string(),
                "skiff".to_string(),
            ),
            ("dev.skiff.test".to_string(), "oci-client".to_string()),
        ]);
        let manifest = OciImageManifest::build(&layers, &config, Some(notes.clone()));
        client
            .push(&reference, &layers, config, &auth, Some(manifest))
            .await
            .expect("oci-client push");

        // What skiff stored, read over plain HTTP.
        let r = reg.get_manifest("artifacts/dist-api", "v1");
        assert_eq!(r.status, 200, "{}", r.text());
        let stored = r.json();
        assert_eq!(stored["config"]["mediaType"], config_type);
        assert_eq!(stored["layers"][0]["mediaType"], layer_type);
        assert_eq!(stored["layers"][0]["digest"], sha256(&wasm));
        assert_eq!(
            stored["layers"][0]["annotations"]["org.opencontainers.image.title"],
            "skiff_dist_api.wasm"
        );
        for (k, v) in &notes {
            assert_eq!(stored["annotations"][k], v.as_str());
        }

        // And back through the crate.
        let image = client
            .pull(&reference, &auth, vec![layer_type])
            .await
            .expect("oci-client pull");
        assert_eq!(image.layers.len(), 1);
        assert_eq!(&image.layers[0].data[..], &wasm[..]);
        assert_eq!(image.config.media_type, config_type);
        assert_eq!(&image.config.data[..], br#"{"component":"dist-api"}"#);
        assert_eq!(image.digest.as_deref(), Some(sha256(&r.body).as_str()));
        let (raw, digest) = client
            .pull_manifest_raw(&reference, &auth, &[OCI_MANIFEST])
            .await
            .expect("oci-client manifest");
        assert_eq!(&raw[..], &r.body[..]);
        assert_eq!(digest, sha256(&r.body));
        let tags = client
            .list_tags(&reference, &auth, None, None)
            .await
            .expect("oci-client tags");
        assert_eq!(tags.tags, ["v1"]);
    });
}
