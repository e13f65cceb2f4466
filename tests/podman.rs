//! podman, buildah and `skopeo sync` against the real binary, over plain
//! HTTP (`--tls-verify=false`). Images are built here from nothing (`FROM
//! scratch`); podman cannot start containers on these machines (no rlimits
//! for it), so a pulled image's files are read through `podman image mount`.

mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Command;

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// A local image name no other test uses: podman's storage is shared.
fn local(reg: &Registry, name: &str) -> String {
    format!(
        "localhost/skiff-test-{}/{name}",
        reg.host().replace([':', '.'], "-")
    )
}

fn digest_file(dir: &Path) -> std::path::PathBuf {
    dir.join(format!("digest-{}", rand::random::<u64>()))
}

/// Push with podman or buildah (`tool push --digestfile ...`); returns the
/// digest the tool reports.
fn push_with(tool: &Engine, extra: &[&str], local: &str, dest: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = digest_file(dir.path());
    run(tool
        .cmd()
        .args(["push", "--tls-verify=false", "--digestfile"])
        .arg(&file)
        .args(extra)
        .arg(local)
        .arg(format!("docker://{dest}")));
    fs::read_to_string(&file).unwrap().trim().to_string()
}

/// The contents of `files` in a local image, read through its mount.
fn files_of(podman: &Engine, image: &str, files: &[&str]) -> Vec<String> {
    let root = run(podman.cmd().args(["image", "mount", image]));
    let root = Path::new(root.trim());
    let out = files
        .iter()
        .map(|f| fs::read_to_string(root.join(f.trim_start_matches('/'))).unwrap_or_default())
        .collect();
    run(podman.cmd().args(["image", "unmount", image]));
    out
}

#[test]
fn podman_pushes_and_pulls_and_buildah_pushes_docker_format() {
    let reg = Registry::start();
    let host = reg.host();
    let podman = Engine::podman();
    let image = local(&reg, "app:1");
    podman.build(
        &image,
        &Context::new(
            "scratch",
            true,
            &[("/a.txt", b"alpha\n"), ("/etc/motd", b"hi\n")],
        ),
    );

    // podman keeps what it built in OCI form and pushes it so.
    let dest = format!("{host}/pod/app:1");
    let digest = push_with(&podman, &[], &image, &dest);
    let m = assert_stored(&reg, "pod/app", "1", &digest);
    assert_eq!(m["mediaType"], OCI_MANIFEST);
    assert_eq!(m["layers"].as_array().unwrap().len(), 3);

    // Pulled back into an empty store: the same digest, the same files.
    podman.rmi(&[&image]);
    run(podman
        .cmd()
        .args(["pull", "-q", "--tls-verify=false", &dest]));
    podman.remember(&dest);
    let pulled = run(podman
        .cmd()
        .args(["image", "inspect", "--format", "{{.Digest}}", &dest]));
    assert_eq!(pulled.trim(), digest);
    assert_eq!(
        files_of(&podman, &dest, &["/a.txt", "/etc/motd"]),
        ["alpha\n", "hi\n"]
    );

    // buildah, converting to docker's format on the way (v2s2).
    let buildah = Engine::buildah();
    let bdest = format!("{host}/bud/app:1");
    let bdigest = push_with(&buildah, &["--format", "v2s2"], &dest, &bdest);
    let bm = assert_stored(&reg, "bud/app", "1", &bdigest);
    assert_eq!(bm["mediaType"], DOCKER_MANIFEST);
    assert_ne!(bdigest, digest, "a converted manifest has another digest");
    // Its layers are the same bytes as podman's, only relabelled.
    let layers = |m: &Value| -> Vec<Value> {
        m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].clone())
            .collect()
    };
    assert_eq!(layers(&bm), layers(&m));
}

#[test]
fn podman_manifest_pushes_a_multi_arch_list() {
    let reg = Registry::start();
    let host = reg.host();
    let podman = Engine::podman();
    let amd = local(&reg, "amd:1");
    let arm = local(&reg, "arm:1");
    podman.build(
        &amd,
        &Context::new("scratch", true, &[("/which", b"amd64\n")]),
    );
    podman.build(
        &arm,
        &Context::new("scratch", true, &[("/which", b"arm64\n")]),
    );
    let list = local(&reg, "list:1");
    podman.track(&list);
    run(podman.cmd().args(["manifest", "create", &list]));
    run(podman
        .cmd()
        .args(["manifest", "add", "--arch", "amd64", "--os", "linux", &list])
        .arg(format!("containers-storage:{amd}")));
    run(podman
        .cmd()
        .args(["manifest", "add", "--arch", "arm64", "--os", "linux", &list])
        .arg(format!("containers-storage:{arm}")));
    let dir = tempfile::tempdir().unwrap();
    let file = digest_file(dir.path());
    run(podman
        .cmd()
        .args([
            "manifest",
            "push",
            "--all",
            "--tls-verify=false",
            "--digestfile",
        ])
        .arg(&file)
        .arg(&list)
        .arg(format!("docker://{host}/pod/multi:1")));
    let digest = fs::read_to_string(&file).unwrap().trim().to_string();

    let index = assert_stored(&reg, "pod/multi", "1", &digest);
    let kind = index["mediaType"].as_str().unwrap();
    assert!(kind == OCI_INDEX || kind == DOCKER_LIST, "{kind}");
    let entries = index["manifests"].as_array().unwrap();
    let archs: BTreeSet<&str> = entries
        .iter()
        .map(|e| e["platform"]["architecture"].as_str().unwrap())
        .collect();
    assert_eq!(archs, BTreeSet::from(["amd64", "arm64"]));
    // Each platform's image is in the repository, whole, and holds its file.
    for e in entries {
        let d = e["digest"].as_str().unwrap();
        let child = assert_stored(&reg, "pod/multi", d, d);
        let last = child["layers"].as_array().unwrap().last().unwrap()["digest"]
            .as_str()
            .unwrap()
            .to_string();
        let arch = e["platform"]["architecture"].as_str().unwrap();
        let layer = reg.pull_blob("pod/multi", &last);
        let tar = gunzip(&layer);
        assert!(
            String::from_utf8_lossy(&tar).contains(&format!("{arch}\n")),
            "{arch}'s layer holds its /which"
        );
    }
}

/// `skopeo sync` a whole repository (every tag) out of skiff into a
/// directory, and from there into another repository: digests kept.
#[test]
fn skopeo_sync_a_whole_repository_out_and_in() {
    let reg = Registry::start();
    let host = reg.host();
    let mut pushed = Vec::new();
    for tag in ["1.0", "1.1", "latest"] {
        let (_, d) = reg.push_image("sync/src", tag, &format!("sync {tag}"));
        pushed.push((tag.to_string(), d));
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    run(skopeo(tmp.path())
        .args([
            "sync",
            "--src",
            "docker",
            "--dest",
            "dir",
            "--src-tls-verify=false",
        ])
        .arg(format!("{host}/sync/src"))
        .arg(&out));
    // One directory per tag, each manifest the registry's bytes.
    for (tag, d) in &pushed {
        let m = out.join(format!("src:{tag}")).join("manifest.json");
        assert_eq!(file_sha256(&m), *d, "{tag}");
    }
    run(skopeo(tmp.path())
        .args([
            "sync",
            "--src",
            "dir",
            "--dest",
            "docker",
            "--dest-tls-verify=false",
        ])
        .arg(&out)
        .arg(format!("{host}/sync/mirror")));
    let tags = reg.get("/v2/sync/mirror/src/tags/list").json();
    assert_eq!(tags["tags"], serde_json::json!(["1.0", "1.1", "latest"]));
    for (tag, d) in &pushed {
        assert_stored(&reg, "sync/mirror/src", tag, d);
    }
}

fn skopeo(tmp: &Path) -> Command {
    let mut c = Command::new("skopeo");
    c.env("TMPDIR", tmp).arg("--insecure-policy");
    c
}

/// Decompress a gzip'd layer with the system's gzip.
fn gunzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("gzip")
        .arg("-dc")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("gzip");
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success());
    o.stdout
}
