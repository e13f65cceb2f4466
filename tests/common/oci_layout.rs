//! OCI image layouts made by the tests, and skopeo to copy them: the
//! fixtures of the client tests (native and edge alike).

use super::{hex_of, read_json, sha256, OCI_INDEX, OCI_MANIFEST};
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// `skopeo copy` arguments for every platform of an image, digests kept, to
/// the registry (plain HTTP).
pub const COPY_UP: [&str; 4] = [
    "copy",
    "--all",
    "--preserve-digests",
    "--dest-tls-verify=false",
];

/// `skopeo copy` arguments for every platform of an image from the registry
/// (plain HTTP) into a layout, digests kept and uncompressed layers as they are.
pub const COPY_DOWN: [&str; 5] = [
    "copy",
    "--all",
    "--preserve-digests",
    "--src-tls-verify=false",
    "--dest-oci-accept-uncompressed-layers",
];

/// skopeo with no signature policy to consult and its temporary files in `tmp`.
pub fn skopeo(tmp: &Path) -> Command {
    let mut c = Command::new("skopeo");
    c.env("TMPDIR", tmp).arg("--insecure-policy");
    c
}

/// An OCI image layout being written: blobs go in as they are made, and
/// `save` writes `index.json` with the tags added so far.
pub struct Layout {
    pub dir: PathBuf,
    pub tags: Vec<Value>,
}

impl Layout {
    pub fn create(dir: &Path) -> Layout {
        fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        Layout {
            dir: dir.to_path_buf(),
            tags: Vec::new(),
        }
    }

    /// Store a blob; returns its descriptor.
    pub fn blob(&self, media_type: &str, bytes: &[u8]) -> Value {
        let d = sha256(bytes);
        fs::write(self.blob_path(&d), bytes).unwrap();
        json!({"mediaType": media_type, "digest": d, "size": bytes.len()})
    }

    /// Store `size` bytes from a seeded PRNG, hashing while writing, so a
    /// large blob never sits in memory.
    pub fn random_blob(&self, media_type: &str, size: u64, seed: u64) -> Value {
        let tmp = self.dir.join("blobs/sha256/.incoming");
        let mut f = std::io::BufWriter::with_capacity(1 << 20, fs::File::create(&tmp).unwrap());
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut left = size;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            rng.fill_bytes(&mut buf[..n]);
            hasher.update(&buf[..n]);
            f.write_all(&buf[..n]).unwrap();
            left -= n as u64;
        }
        f.into_inner().unwrap().sync_all().unwrap();
        let d = format!("sha256:{}", hex::encode(hasher.finalize()));
        fs::rename(&tmp, self.blob_path(&d)).unwrap();
        json!({"mediaType": media_type, "digest": d, "size": size})
    }

    pub fn blob_path(&self, digest: &str) -> PathBuf {
        self.dir.join("blobs/sha256").join(hex_of(digest))
    }

    /// An image: a config for `arch` and the given layer (already stored).
    /// Returns the manifest's descriptor and bytes.
    pub fn image(&self, arch: &str, layer: &Value) -> (Value, Vec<u8>) {
        let config = json!({
            "architecture": arch,
            "os": "linux",
            "config": {"Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]},
            "history": [{"created_by": format!("skiff clients test ({arch})")}],
        });
        let config = self.blob(CONFIG, &serde_json::to_vec(&config).unwrap());
        let manifest = serde_json::to_vec_pretty(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config,
            "layers": [layer],
        }))
        .unwrap();
        (self.blob(OCI_MANIFEST, &manifest), manifest)
    }

    pub fn tag(&mut self, tag: &str, desc: &Value) {
        let mut d = desc.clone();
        d["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
        self.tags.push(d);
    }

    pub fn save(&self) {
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self.tags});
        fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&index).unwrap(),
        )
        .unwrap();
    }
}

/// A tar archive holding the given regular files.
pub fn tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data) in files {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..108].copy_from_slice(b"0000644\0");
        h[108..116].copy_from_slice(b"0000000\0");
        h[116..124].copy_from_slice(b"0000000\0");
        h[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
        h[136..148].copy_from_slice(b"14000000000\0");
        h[148..156].copy_from_slice(b"        ");
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        let sum: u32 = h.iter().map(|&b| b as u32).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// A multi-arch index (linux/amd64 and linux/arm64, each a config and one
/// layer) tagged `multi`. Returns the index's descriptor and bytes.
pub fn add_multi_arch(layout: &mut Layout) -> (Value, Vec<u8>) {
    let mut manifests = Vec::new();
    for arch in ["amd64", "arm64"] {
        let content = format!("hello from linux/{arch}\n");
        let layer = layout.blob(LAYER_TAR, &tar(&[("hello.txt", content.as_bytes())]));
        let (mut desc, _) = layout.image(arch, &layer);
        desc["platform"] = json!({"architecture": arch, "os": "linux"});
        manifests.push(desc);
    }
    let index = serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": manifests,
        "annotations": {"org.opencontainers.image.description": "skiff clients test"},
    }))
    .unwrap();
    let desc = layout.blob(OCI_INDEX, &index);
    layout.tag("multi", &desc);
    (desc, index)
}

/// Blob files of a layout by name, with their sizes.
pub fn blob_files(dir: &Path) -> BTreeMap<String, u64> {
    fs::read_dir(dir.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| {
            (
                e.file_name().to_string_lossy().to_string(),
                e.metadata().unwrap().len(),
            )
        })
        .collect()
}

/// The layout's tags: name -> (mediaType, digest, size).
pub fn layout_tags(dir: &Path) -> BTreeMap<String, (String, String, u64)> {
    read_json(&dir.join("index.json"))["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| {
            let tag = d["annotations"]["org.opencontainers.image.ref.name"].as_str()?;
            Some((
                tag.to_string(),
                (
                    d["mediaType"].as_str().unwrap().to_string(),
                    d["digest"].as_str().unwrap().to_string(),
                    d["size"].as_u64().unwrap(),
                ),
            ))
        })
        .collect()
}

pub fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}
