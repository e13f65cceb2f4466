//! The real Docker Engine against the real binary: images built here from
//! nothing (`FROM scratch` around a static program), pushed to skiff,
//! removed, pulled back and run. 127.0.0.1 registries are plain HTTP to the
//! engine by default. Every image a test makes is removed when it ends.

mod common;

use common::*;
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};
use serde_json::Value;
use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// `docker push`: its output and the manifest digest it reports.
fn push(engine: &Engine, image: &str) -> (String, String) {
    let out = run(engine.cmd().args(["push", image]));
    let digest = digest_after(&out, ": digest: ");
    (out, digest)
}

/// `docker pull`: its output and the digest it reports.
fn pull(engine: &Engine, image: &str) -> (String, String) {
    let out = run(engine.cmd().args(["pull", image]));
    engine.remember(image);
    let digest = digest_after(&out, "Digest: ");
    (out, digest)
}

fn run_image(engine: &Engine, image: &str, args: &[&str]) -> String {
    run(engine.cmd().args(["run", "--rm", image]).args(args))
}

fn lines_with(out: &str, what: &str) -> usize {
    out.lines().filter(|l| l.contains(what)).count()
}

/// The manifest skiff holds for `reference`, whole (see `assert_stored`),
/// of the docker media type the engine pushes.
fn assert_docker(
    reg: &Registry,
    repo: &str,
    reference: &str,
    digest: &str,
    media_type: &str,
) -> Value {
    let m = assert_stored(reg, repo, reference, digest);
    assert_eq!(m["mediaType"], media_type, "{repo}:{reference}");
    m
}

#[test]
fn docker_pushes_pulls_and_runs_images_sharing_layers() {
    let reg = Registry::start();
    let host = reg.host();
    let engine = Engine::docker();
    let base = format!("{host}/apps/base:1");
    let a = format!("{host}/apps/a:1");
    let b = format!("{host}/apps/b:1");

    // base: the static cat; a: base + two files (3 layers); b: base + one.
    engine.build(&base, &Context::new("scratch", true, &[]));
    engine.build(
        &a,
        &Context::new(
            &base,
            false,
            &[("/a.txt", b"alpha\n"), ("/dir/c.txt", b"gamma\n")],
        ),
    );
    engine.build(&b, &Context::new(&base, false, &[("/b.txt", b"beta\n")]));
    let a_layers = engine.diff_ids(&a);
    assert_eq!(a_layers.as_array().unwrap().len(), 3);

    // First push: every layer goes up.
    let (out, a_digest) = push(&engine, &a);
    assert_eq!(lines_with(&out, ": Pushed"), 3, "{out}");
    let m = assert_docker(&reg, "apps/a", "1", &a_digest, DOCKER_MANIFEST);
    assert_eq!(m["layers"].as_array().unwrap().len(), 3);
    let cat_layer = m["layers"][0]["digest"].as_str().unwrap().to_string();

    // Another repository: the shared layer is mounted, not sent again.
    let (out, b_digest) = push(&engine, &b);
    assert_eq!(lines_with(&out, "Mounted from apps/a"), 1, "{out}");
    assert_eq!(lines_with(&out, ": Pushed"), 1, "{out}");
    let mb = assert_docker(&reg, "apps/b", "1", &b_digest, DOCKER_MANIFEST);
    assert_eq!(mb["layers"][0]["digest"], cat_layer.as_str());

    // The same tag again: nothing to send, the same manifest.
    let (out, again) = push(&engine, &a);
    assert_eq!(lines_with(&out, "Layer already exists"), 3, "{out}");
    assert_eq!(again, a_digest);
    // b under another tag of apps/a: the shared layer already exists there.
    let a2 = format!("{host}/apps/a:2");
    engine.tag(&b, &a2);
    let (out, a2_digest) = push(&engine, &a2);
    assert_eq!(a2_digest, b_digest);
    assert!(lines_with(&out, "Layer already exists") >= 1, "{out}");
    assert_docker(&reg, "apps/a", "2", &b_digest, DOCKER_MANIFEST);

    // Nothing of these images left in the engine: the pull must fetch all.
    engine.rmi(&[&a, &a2, &b, &base]);
    assert!(!engine.exists(&a) && !engine.exists(&base));
    let (out, pulled) = pull(&engine, &a);
    assert_eq!(pulled, a_digest);
    assert_eq!(lines_with(&out, "Pull complete"), 3, "{out}");
    assert_eq!(engine.diff_ids(&a), a_layers);
    assert_eq!(
        run_image(&engine, &a, &["/a.txt", "/dir/c.txt"]),
        "alpha\ngamma\n"
    );

    // b shares the cat layer with the pulled a: one layer comes down.
    let (out, pulled) = pull(&engine, &b);
    assert_eq!(pulled, b_digest);
    assert_eq!(lines_with(&out, "Already exists"), 1, "{out}");
    assert_eq!(lines_with(&out, "Pull complete"), 1, "{out}");
    assert_eq!(
        run_image(&engine, &b, &["/b.txt", "/a.txt"]),
        "beta\nmissing /a.txt\n"
    );

    // Moving a tag: apps/a:1 now names b's image.
    engine.tag(&b, &a);
    let (_, moved) = push(&engine, &a);
    assert_eq!(moved, b_digest);
    assert_docker(&reg, "apps/a", "1", &b_digest, DOCKER_MANIFEST);
    engine.rmi(&[&a]);
    let (_, pulled) = pull(&engine, &a);
    assert_eq!(pulled, b_digest);
    assert_eq!(run_image(&engine, &a, &["/b.txt"]), "beta\n");
}

#[test]
fn docker_manifest_create_and_push_a_two_platform_index() {
    let reg = Registry::start();
    let host = reg.host();
    let engine = Engine::docker();
    // The engine's own platform, and another one for the second entry.
    let native = run(engine
        .cmd()
        .args(["version", "--format", "{{.Server.Arch}}"]))
    .trim()
    .to_string();
    let other = if native == "arm64" { "amd64" } else { "arm64" };
    let here = format!("{host}/multi/here:1");
    let there = format!("{host}/multi/there:1");
    engine.build(
        &here,
        &Context::new("scratch", true, &[("/which", b"native\n")]),
    );
    engine.build(
        &there,
        &Context::new("scratch", true, &[("/which", b"other\n")]),
    );
    let (_, here_digest) = push(&engine, &here);
    let (_, there_digest) = push(&engine, &there);

    // The index refers to manifests in other repositories: `docker manifest
    // push` mounts their blobs and pushes the manifests by digest.
    let list = format!("{host}/multi/app:1");
    run(engine
        .cmd()
        .args(["manifest", "create", "--insecure", &list, &here, &there]));
    run(engine.cmd().args([
        "manifest", "annotate", "--arch", other, "--os", "linux", &list, &there,
    ]));
    let out = run(engine.cmd().args(["manifest", "push", "--insecure", &list]));
    // It reports each child it pushed, then the index's digest, last.
    let index_digest = out
        .split_whitespace()
        .rfind(|w| w.starts_with("sha256:"))
        .unwrap_or_else(|| panic!("no digest in {out:?}"))
        .to_string();

    let index = assert_docker(&reg, "multi/app", "1", &index_digest, DOCKER_LIST);
    let entries = index["manifests"].as_array().unwrap();
    let platforms: BTreeSet<(String, String)> = entries
        .iter()
        .map(|e| {
            (
                e["platform"]["architecture"].as_str().unwrap().to_string(),
                e["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        platforms,
        BTreeSet::from([
            (native.clone(), here_digest.clone()),
            (other.to_string(), there_digest.clone())
        ])
    );
    // Each child is in the index's repository, whole.
    for d in [&here_digest, &there_digest] {
        assert_docker(&reg, "multi/app", d, d, DOCKER_MANIFEST);
    }

    // Pulling the index gets the engine's platform, which runs.
    engine.rmi(&[&here, &there]);
    let (_, pulled) = pull(&engine, &list);
    assert_eq!(pulled, index_digest);
    assert_eq!(run_image(&engine, &list, &["/which"]), "native\n");
}

/// A 512 MiB layer of random bytes (gzip cannot shrink it) up and back: the
/// digests identical end to end. The times are reported, not asserted.
#[test]
fn docker_pushes_and_pulls_a_512_mib_layer() {
    const SIZE: usize = 512 << 20;
    let reg = Registry::start();
    let host = reg.host();
    let engine = Engine::docker();
    let image = format!("{host}/big/layer:1");

    let ctx = Context::new("scratch", true, &[]);
    let big = ctx.path().join("big");
    write_random(&big, SIZE, 512);
    let big_digest = file_sha256(&big);
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY cat /bin/cat\nCOPY big /big\nENTRYPOINT [\"/bin/cat\"]\n",
    )
    .unwrap();
    engine.build(&image, &ctx);
    drop(ctx);
    let layers = engine.diff_ids(&image);

    let t = Instant::now();
    let (_, digest) = push(&engine, &image);
    let up = t.elapsed();
    let m = assert_docker(&reg, "big/layer", "1", &digest, DOCKER_MANIFEST);
    // The stored layer is the compressed tar of the file: bigger than it.
    let stored = &m["layers"][1];
    assert!(stored["size"].as_u64().unwrap() > SIZE as u64, "{stored}");
    let path = reg.blob_path("big/layer", stored["digest"].as_str().unwrap());
    assert_eq!(file_sha256(&path), stored["digest"].as_str().unwrap());

    engine.rmi(&[&image]);
    let t = Instant::now();
    let (_, pulled) = pull(&engine, &image);
    let down = t.elapsed();
    assert_eq!(pulled, digest);
    // The engine checked each layer's uncompressed digest as it unpacked it.
    assert_eq!(engine.diff_ids(&image), layers);
    report(&format!(
        "docker engine: 512 MiB layer pushed in {up:.1?}, pulled in {down:.1?} (file {big_digest})"
    ));
}

/// `size` bytes from a seeded PRNG, written in 1 MiB pieces.
fn write_random(path: &Path, size: usize, seed: u64) {
    let mut f = std::io::BufWriter::new(fs::File::create(path).unwrap());
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len());
        rng.fill_bytes(&mut buf[..n]);
        f.write_all(&buf[..n]).unwrap();
        left -= n;
    }
    f.flush().unwrap();
}
