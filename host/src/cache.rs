//! The compiled-component cache: the machine code `Component::serialize`
//! made on an earlier start, so later starts skip compiling (seconds to
//! minutes) and take milliseconds.
//!
//! Deserializing is trusting: wasmtime maps the code and runs it as it is,
//! so garbage in the file is undefined behaviour, not an error. A file is
//! therefore used only if it checks out. Each is written whole and
//! atomically (a temporary file in the same directory, written, fsynced,
//! renamed over the old one, then the directory fsynced), and starts with
//! the sha256 of what follows; it is read into memory and verified before
//! `Component::deserialize` sees a byte of it. A file that does not check
//! out (torn by a power cut, a flipped bit, another format) is logged,
//! compiled again and rewritten. The checksum guards against accidents,
//! not against someone who can write the cache directory: they could write
//! a matching checksum, or replace the binary.

use anyhow::{Context, Result};
use sha2::{Digest as _, Sha256};
use std::hash::{Hash, Hasher};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use wasmtime::component::Component;
use wasmtime::Engine;

/// What a cache file starts with: its format, then the sha256 of the rest.
const MAGIC: &[u8; 8] = b"SKIFFCW1";
const HEADER_LEN: usize = MAGIC.len() + 32;

/// The header for `payload`.
fn header(payload: &[u8]) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..MAGIC.len()].copy_from_slice(MAGIC);
    h[MAGIC.len()..].copy_from_slice(&Sha256::digest(payload));
    h
}

/// The serialized component in a cache file's bytes, if they check out.
pub fn verify(file: &[u8]) -> Result<&[u8]> {
    if file.len() < HEADER_LEN || &file[..MAGIC.len()] != MAGIC {
        anyhow::bail!("not a skiff component cache file (no SKIFFCW1 header)");
    }
    let (head, payload) = file.split_at(HEADER_LEN);
    if head != header(payload) {
        anyhow::bail!("the checksum does not match the contents (a torn or damaged file)");
    }
    Ok(payload)
}

/// Compile an embedded component, or load the machine code a previous start
/// cached. The cache key covers the component bytes and everything about the
/// engine that makes compiled code compatible.
pub fn load_component(engine: &Engine, name: &str, wasm: &[u8]) -> Result<Component> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    let key = format!(
        "{}-{:016x}",
        &hex::encode(Sha256::digest(wasm))[..32],
        h.finish()
    );
    let dir = cache_dir();
    // "sealed": not the unchecked files earlier versions wrote, which they
    // would try to load (and fail on) if the names were the same.
    let path = dir.join(format!("{name}-{key}-sealed.cwasm"));
    match load(engine, &path) {
        Ok(Some(c)) => {
            tracing::debug!(path = %path.display(), "loaded precompiled component");
            return Ok(c);
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(
            path = %path.display(), error = format!("{e:#}"),
            "ignoring the cached {name} component; compiling it again"
        ),
    }
    let started = std::time::Instant::now();
    let component = Component::new(engine, wasm)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("compiling the {name} component"))?;
    tracing::info!(
        ms = started.elapsed().as_millis() as u64,
        "compiled the {name} component"
    );
    if let Err(e) = save(&dir, &path, &component.serialize()?) {
        tracing::warn!(error = format!("{e:#}"), dir = %dir.display(), "cannot cache the compiled component");
    }
    Ok(component)
}

/// The cached component at `path`: `None` if there is none.
fn load(engine: &Engine, path: &Path) -> Result<Option<Component>> {
    let file = match std::fs::read(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).context("reading it"),
    };
    let payload = verify(&file)?;
    // SAFETY: `payload` is byte for byte what `Component::serialize` of this
    // same component produced (its sha256 matches the one written with it),
    // under a key that includes the engine's compatibility hash; wasmtime
    // checks the rest (format version, engine settings) itself.
    let component = unsafe { Component::deserialize(engine, payload) }
        .map_err(anyhow::Error::from)
        .context("deserializing it")?;
    Ok(Some(component))
}

/// Write `payload` to `path` under its header, atomically and durably:
/// whoever reads `path` finds the old file or the whole new one, also after
/// a power cut.
fn save(dir: &Path, path: &Path, payload: &[u8]) -> Result<()> {
    std::fs::create_dir_all(dir).context("creating the cache directory")?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .context("a cache file name")?;
    // Unique among writers: another skiff may be starting beside this one.
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    let written = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::options()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(&header(payload))?;
        f.write_all(payload)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename itself is durable once the directory is.
        std::fs::File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.with_context(|| format!("writing {}", path.display()))
}

fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("SKIFF_CACHE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("skiff");
    }
    if let Some(h) = std::env::var_os("HOME") {
        return PathBuf::from(h).join(".cache").join("skiff");
    }
    std::env::temp_dir().join("skiff-cache")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed(payload: &[u8]) -> Vec<u8> {
        let mut f = header(payload).to_vec();
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn only_a_whole_unchanged_file_checks_out() {
        let payload: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let file = sealed(&payload);
        assert_eq!(verify(&file).unwrap(), &payload[..]);
        assert_eq!(verify(&sealed(b"")).unwrap(), b"");
        // A bit flipped anywhere: in the contents, the checksum, the magic.
        for at in [HEADER_LEN + 5_000, file.len() - 1, MAGIC.len() + 3, 0] {
            let mut bad = file.clone();
            bad[at] ^= 0x01;
            assert!(verify(&bad).is_err(), "a flipped bit at {at}");
        }
        // Torn: cut anywhere, header included; or grown.
        for len in [
            0,
            7,
            HEADER_LEN - 1,
            HEADER_LEN,
            HEADER_LEN + 1,
            file.len() - 1,
        ] {
            assert!(verify(&file[..len]).is_err(), "cut to {len} bytes");
        }
        let mut longer = file.clone();
        longer.push(0);
        assert!(verify(&longer).is_err(), "a byte appended");
        // What earlier versions wrote: the serialized component alone.
        assert!(verify(&payload).is_err());
    }

    #[test]
    fn saving_replaces_the_file_whole_and_leaves_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.cwasm");
        std::fs::write(&path, b"a torn old file").unwrap();
        save(dir.path(), &path, b"new machine code").unwrap();
        let file = std::fs::read(&path).unwrap();
        assert_eq!(verify(&file).unwrap(), b"new machine code");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["c.cwasm"], "temporary files left behind");
    }
}
