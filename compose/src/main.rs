//! `cargo run -p skiff-compose -- [--out DIR] [FILE...]`: build the
//! components and write the edge compositions (all, or the named ones) to
//! `target/edge/` or DIR. Spin's `build` command runs this.

use anyhow::{bail, Context, Result};
use std::path::PathBuf;

fn main() -> Result<()> {
    // At run time, not compile time: with a build cache shared between
    // checkouts, this binary may have been built in another one.
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .context("run this with `cargo run -p skiff-compose`")?;
    let root = PathBuf::from(manifest_dir)
        .parent()
        .context("workspace root")?
        .to_path_buf();
    let mut out = root.join("target").join("edge");
    let mut only = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--out" => out = PathBuf::from(args.next().context("--out takes a directory")?),
            f if skiff_compose::EDGE.iter().any(|(name, ..)| *name == f) => only.push(a),
            f => bail!(
                "unknown composition {f}; one of {:?}",
                skiff_compose::EDGE.iter().map(|e| e.0).collect::<Vec<_>>()
            ),
        }
    }
    let built = skiff_compose::build_components(&root)?;
    for (file, objects, kv_fs, bridge) in skiff_compose::EDGE {
        if !only.is_empty() && !only.iter().any(|o| o == file) {
            continue;
        }
        let bytes = skiff_compose::edge(&built, *objects, *kv_fs, *bridge)
            .with_context(|| format!("composing {file}"))?;
        let path = out.join(file);
        skiff_compose::write_if_changed(&path, &bytes)?;
        println!("{}", path.display());
    }
    Ok(())
}
