//! Builds the registry's wasm components (`skiff-compose`) and embeds the
//! composition that serves requests: dist-api with storage plugged into its
//! `store` import. What remains imported is `objects` (provided natively by
//! the host) and WASI. The gc and scrub components import only `objects` and
//! are embedded as they are. The edge compositions (`target/edge/`) are
//! written by the same build, so the tests find them.

use anyhow::{Context, Result};
use std::env;
use std::path::PathBuf;

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

    let built = skiff_compose::build_components(&root)?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    skiff_compose::write_if_changed(
        &out.join("registry.wasm"),
        &skiff_compose::registry(&built)?,
    )?;
    for job in ["gc", "scrub"] {
        let wasm = built.read(&format!("skiff-{job}"))?;
        skiff_compose::write_if_changed(&out.join(format!("{job}.wasm")), &wasm)?;
    }
    skiff_compose::write_edge(&built, &root.join("target").join("edge"))
}
