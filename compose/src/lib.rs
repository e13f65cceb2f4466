//! Builds skiff's wasm components and composes them.
//!
//! One component per job (`components/*`), joined here by their WIT
//! interfaces, so the same dist-api, storage, gc and scrub files serve every
//! deployment:
//!
//! ```text
//! skiff serve (embedded by host/build.rs)   dist-api ← storage ← [objects: the host]
//!                                                     ← [access: the host]
//! target/edge/registry-kv.wasm   (Spin)     edge ← dist-api ← storage ← objects-kv
//!                                                           ← access
//!                                                ← gc, scrub ← (the same objects-kv)
//! target/edge/registry-s3.wasm   (Spin)     the same over objects-s3
//! target/edge/registry-s3-wasmtime.wasm     registry-s3 with the config bridge
//! target/edge/registry-kv-fs.wasm (tests)   registry-kv over kv-fs, with the bridge
//! ```
//!
//! Each edge composition imports only standard WASI. Spin maps its variables
//! to `wasi:config@0.2.0-draft-2024-09-27` and wasmtime 48's `-S config`
//! provides `@0.2.0-rc.1` (the same two functions); the files for `wasmtime
//! serve` put `config-bridge` in front so one build runs under both
//! (docs/decisions.md).
//!
//! The components are built by a nested cargo for wasm32-wasip2 into
//! `target/wasm`, so an outer build's lock is never contended.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use wac_graph::{types::Package, CompositionGraph, EncodeOptions, NodeId, PackageId};

pub const TARGET: &str = "wasm32-wasip2";

/// Every component crate, by package name.
pub const COMPONENTS: &[&str] = &[
    "skiff-dist-api",
    "skiff-storage",
    "skiff-gc",
    "skiff-scrub",
    "skiff-objects-kv",
    "skiff-objects-s3",
    "skiff-kv-fs",
    "skiff-edge",
    "skiff-access",
    "skiff-config-bridge",
];

const HANDLER: &str = "wasi:http/incoming-handler@0.2.12";
const STORE: &str = "skiff:registry/store@0.1.0";
const ACCESS: &str = "skiff:registry/access@0.1.0";
const OBJECTS: &str = "skiff:registry/objects@0.1.0";
const GC: &str = "skiff:registry/gc@0.1.0";
const SCRUB: &str = "skiff:registry/scrub@0.1.0";
const CONFIG: &str = "wasi:config/store@0.2.0-draft-2024-09-27";
const KEYVALUE: &[&str] = &[
    "wasi:keyvalue/store@0.2.0-draft2",
    "wasi:keyvalue/atomics@0.2.0-draft2",
    "wasi:keyvalue/batch@0.2.0-draft2",
];

/// The edge compositions: file name, objects implementation, whether
/// kv-fs is plugged under it, whether the config bridge is in front.
pub const EDGE: &[(&str, Objects, bool, bool)] = &[
    ("registry-kv.wasm", Objects::Kv, false, false),
    ("registry-s3.wasm", Objects::S3, false, false),
    ("registry-s3-wasmtime.wasm", Objects::S3, false, true),
    ("registry-kv-fs.wasm", Objects::Kv, true, true),
];

#[derive(Clone, Copy, Debug)]
pub enum Objects {
    Kv,
    S3,
}

/// The built components, by file.
pub struct Built {
    dir: PathBuf,
}

impl Built {
    pub fn path(&self, crate_name: &str) -> PathBuf {
        self.dir
            .join(format!("{}.wasm", crate_name.replace('-', "_")))
    }

    pub fn read(&self, crate_name: &str) -> Result<Vec<u8>> {
        let p = self.path(crate_name);
        std::fs::read(&p).with_context(|| format!("reading {}", p.display()))
    }
}

/// Build every component for wasm32-wasip2 (profile `wasm`) with the
/// cargo that runs us, into `<root>/target/wasm`.
pub fn build_components(root: &Path) -> Result<Built> {
    ensure_target()?;
    let target_dir = root.join("target").join("wasm");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args(["build", "--locked", "--profile", "wasm", "--target", TARGET])
        .arg("--target-dir")
        .arg(&target_dir);
    for c in COMPONENTS {
        cmd.args(["-p", c]);
    }
    // An outer build's settings are for the host target; keep them out.
    for (k, _) in std::env::vars() {
        let host_only = k.starts_with("CARGO_CFG_")
            || k.starts_with("CARGO_FEATURE_")
            || k.starts_with("CARGO_PKG_")
            || k.starts_with("CARGO_MANIFEST_")
            || k.starts_with("CARGO_PRIMARY_")
            || k.starts_with("CARGO_BIN_")
            || matches!(
                k.as_str(),
                "CARGO_ENCODED_RUSTFLAGS"
                    | "RUSTFLAGS"
                    | "CARGO_TARGET_DIR"
                    | "CARGO_BUILD_TARGET"
                    | "RUSTC_WORKSPACE_WRAPPER"
                    | "TARGET"
                    | "HOST"
                    | "OUT_DIR"
                    | "PROFILE"
                    | "OPT_LEVEL"
                    | "DEBUG"
                    | "NUM_JOBS"
            );
        if host_only {
            cmd.env_remove(k);
        }
    }
    let status = cmd
        .status()
        .context("running cargo for the wasm components")?;
    if !status.success() {
        bail!("building the wasm components failed");
    }
    Ok(Built {
        dir: target_dir.join(TARGET).join("wasm"),
    })
}

/// A fresh machine may have the toolchain without the wasm target; a
/// `rust-toolchain.toml` does not add it, so do it here.
fn ensure_target() -> Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    match installed {
        Ok(o)
            if String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim() == TARGET) =>
        {
            Ok(())
        }
        Ok(_) => {
            let status = Command::new("rustup")
                .args(["target", "add", TARGET])
                .status()?;
            if !status.success() {
                bail!("`rustup target add {TARGET}` failed");
            }
            Ok(())
        }
        // No rustup: trust that the toolchain has the target; cargo will say if not.
        Err(_) => Ok(()),
    }
}

/// A composition graph with the components registered on demand.
struct Graph<'a> {
    graph: CompositionGraph,
    built: &'a Built,
}

impl Graph<'_> {
    fn package(&mut self, crate_name: &str) -> Result<PackageId> {
        let bytes = self.built.read(crate_name)?;
        let name = crate_name.replacen("skiff-", "skiff:", 1);
        let pkg = Package::from_bytes(&name, None, bytes, self.graph.types_mut())
            .with_context(|| format!("loading {crate_name}"))?;
        Ok(self.graph.register_package(pkg)?)
    }

    /// A new instance of `crate_name`, its imports `args` (import name,
    /// instance, that instance's export of the same name).
    fn instance(&mut self, crate_name: &str, args: &[(&str, NodeId)]) -> Result<NodeId> {
        let pkg = self.package(crate_name)?;
        let node = self.graph.instantiate(pkg);
        for (name, from) in args {
            let export = self
                .graph
                .alias_instance_export(*from, name)
                .with_context(|| format!("{name} from the instance given to {crate_name}"))?;
            self.graph
                .set_instantiation_argument(node, name, export)
                .with_context(|| format!("{name} into {crate_name}"))?;
        }
        Ok(node)
    }

    fn finish(mut self, instance: NodeId, export: &str) -> Result<Vec<u8>> {
        let e = self.graph.alias_instance_export(instance, export)?;
        self.graph.export(e, export)?;
        Ok(self.graph.encode(EncodeOptions::default())?)
    }
}

/// What `skiff serve` embeds: dist-api over storage, importing `objects`
/// (the host's) and WASI.
pub fn registry(built: &Built) -> Result<Vec<u8>> {
    let mut g = Graph {
        graph: CompositionGraph::new(),
        built,
    };
    let storage = g.instance("skiff-storage", &[])?;
    let dist = g.instance("skiff-dist-api", &[(STORE, storage)])?;
    g.finish(dist, HANDLER)
}

/// One edge composition: one `objects` instance shared by storage, gc and
/// scrub, the dist-api handler behind the edge front.
pub fn edge(built: &Built, objects: Objects, kv_fs: bool, bridge: bool) -> Result<Vec<u8>> {
    let mut g = Graph {
        graph: CompositionGraph::new(),
        built,
    };
    let config = if bridge {
        Some(g.instance("skiff-config-bridge", &[])?)
    } else {
        None
    };
    let with_config = |args: &mut Vec<(&str, NodeId)>| {
        if let Some(c) = config {
            args.push((CONFIG, c));
        }
    };
    let objects = match objects {
        Objects::Kv => {
            let mut args = Vec::new();
            if kv_fs {
                let fs = g.instance("skiff-kv-fs", &[])?;
                args.extend(KEYVALUE.iter().map(|k| (*k, fs)));
            }
            g.instance("skiff-objects-kv", &args)?
        }
        Objects::S3 => {
            let mut args = Vec::new();
            with_config(&mut args);
            g.instance("skiff-objects-s3", &args)?
        }
    };
    let storage = g.instance("skiff-storage", &[(OBJECTS, objects)])?;
    let mut args = Vec::new();
    with_config(&mut args);
    let access = g.instance("skiff-access", &args)?;
    let dist = g.instance("skiff-dist-api", &[(STORE, storage), (ACCESS, access)])?;
    let gc = g.instance("skiff-gc", &[(OBJECTS, objects)])?;
    let scrub = g.instance("skiff-scrub", &[(OBJECTS, objects)])?;
    let mut args = vec![(HANDLER, dist), (GC, gc), (SCRUB, scrub)];
    with_config(&mut args);
    let front = g.instance("skiff-edge", &args)?;
    g.finish(front, HANDLER)
}

/// Write `bytes` unless the file holds them already (its mtime then stays,
/// and so does whatever embeds it).
pub fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<()> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// Write every edge composition into `out` (`target/edge`).
pub fn write_edge(built: &Built, out: &Path) -> Result<()> {
    for (file, objects, kv_fs, bridge) in EDGE {
        let bytes =
            edge(built, *objects, *kv_fs, *bridge).with_context(|| format!("composing {file}"))?;
        write_if_changed(&out.join(file), &bytes)?;
    }
    Ok(())
}
