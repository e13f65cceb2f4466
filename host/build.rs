//! Builds the registry's wasm components and composes the one that serves
//! requests: dist-api with storage plugged into its `store` import. What
//! remains imported is `objects` (provided natively by the host) and WASI.
//! The gc and scrub components import only `objects` and are embedded as
//! they are.
//!
//! The components are built by a nested cargo for wasm32-wasip2 into their
//! own target directory, so the outer build's lock is never contended.

use anyhow::{bail, Context, Result};
use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;
use wac_graph::{types::Package, CompositionGraph, EncodeOptions};

const TARGET: &str = "wasm32-wasip2";
const COMPONENTS: &[&str] = &["skiff-dist-api", "skiff-storage", "skiff-gc", "skiff-scrub"];

fn main() -> Result<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest_dir
        .parent()
        .context("workspace root")?
        .to_path_buf();
    // Run every time: cargo was seen to take changed component sources for
    // fresh (both with `components` named and with every file named), and a
    // stale component is embedded silently. The nested build is incremental
    // (about a second when nothing changed) and the outputs are rewritten
    // only when their bytes change, so the host is not rebuilt for nothing.
    println!(
        "cargo:rerun-if-changed={}",
        root.join("target/wasm/.always-rebuild").display()
    );

    ensure_target()?;
    let wasm_dir = build_components(&root)?;
    let composed = compose(
        &wasm_dir.join("skiff_dist_api.wasm"),
        &wasm_dir.join("skiff_storage.wasm"),
    )?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    write_if_changed(&out.join("registry.wasm"), &composed)?;
    for job in ["gc", "scrub"] {
        let wasm = std::fs::read(wasm_dir.join(format!("skiff_{job}.wasm")))?;
        write_if_changed(&out.join(format!("{job}.wasm")), &wasm)?;
    }
    Ok(())
}

/// Write `bytes` unless the file holds them already (its mtime then stays,
/// and so does the host crate that embeds it).
fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<()> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
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

fn build_components(root: &Path) -> Result<PathBuf> {
    let target_dir = root.join("target").join("wasm");
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args(["build", "--locked", "--profile", "wasm", "--target", TARGET])
        .arg("--target-dir")
        .arg(&target_dir);
    for c in COMPONENTS {
        cmd.args(["-p", c]);
    }
    // The outer build's settings are for the host target; keep them out.
    for (k, _) in env::vars() {
        let host_only = k.starts_with("CARGO_CFG_")
            || k.starts_with("CARGO_FEATURE_")
            || k.starts_with("CARGO_PKG_")
            || k.starts_with("CARGO_MANIFEST_")
            || k.starts_with("CARGO_PRIMARY_")
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
    Ok(target_dir.join(TARGET).join("wasm"))
}

fn compose(socket: &Path, plug: &Path) -> Result<Vec<u8>> {
    let mut graph = CompositionGraph::new();
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let socket_pkg = Package::from_bytes("skiff:dist-api", None, read(socket)?, graph.types_mut())?;
    let plug_pkg = Package::from_bytes("skiff:storage", None, read(plug)?, graph.types_mut())?;
    let socket_id = graph.register_package(socket_pkg)?;
    let plug_id = graph.register_package(plug_pkg)?;
    wac_graph::plug(&mut graph, vec![plug_id], socket_id)?;
    Ok(graph.encode(EncodeOptions::default())?)
}
