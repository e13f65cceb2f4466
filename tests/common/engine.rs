//! Container images for the engine tests (docker, podman, buildah), built
//! locally from nothing: no image can be pulled here. Every image's
//! entrypoint is a tiny static program that prints the files it is given,
//! so running a pulled image shows which layers came down.

use super::client::{output, run};
use super::{sha256, Registry};
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const CAT_C: &str = r#"
#include <stdio.h>
int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "r");
        if (!f) { printf("missing %s\n", argv[i]); continue; }
        int c;
        while ((c = fgetc(f)) != EOF) putchar(c);
        fclose(f);
    }
    return 0;
}
"#;

/// The static `cat`, compiled once per test binary with the machine's C
/// compiler (`cc -static`).
pub fn cat_binary() -> &'static Path {
    static CAT: OnceLock<PathBuf> = OnceLock::new();
    CAT.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("skiff-cat-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let src = dir.join("cat.c");
        fs::write(&src, CAT_C).unwrap();
        let bin = dir.join("cat");
        run(Command::new("cc")
            .args(["-static", "-Os", "-o"])
            .arg(&bin)
            .arg(&src));
        bin
    })
}

/// A build context: a Dockerfile (`Containerfile` for podman too) and the
/// files it copies.
pub struct Context {
    pub dir: tempfile::TempDir,
}

impl Context {
    /// `FROM base` (or `scratch`), the static `cat` at `/bin/cat` as the
    /// entrypoint when `with_cat`, then one `COPY` (one layer) per file.
    pub fn new(from: &str, with_cat: bool, files: &[(&str, &[u8])]) -> Context {
        let dir = tempfile::tempdir().unwrap();
        let mut dockerfile = format!("FROM {from}\n");
        if with_cat {
            let cat = dir.path().join("cat");
            fs::copy(cat_binary(), &cat).unwrap();
            // A layer is a tar, which holds the file's mtime: a time of its
            // own makes this context's cat layer differ from every other
            // test's, so an engine shared by tests running at once never
            // finds one already there.
            let when = std::time::UNIX_EPOCH
                + std::time::Duration::from_secs(1_000_000_000 + rand::random::<u32>() as u64);
            fs::File::options()
                .write(true)
                .open(&cat)
                .and_then(|f| f.set_modified(when))
                .unwrap();
            dockerfile.push_str("COPY cat /bin/cat\nENTRYPOINT [\"/bin/cat\"]\n");
        }
        for (i, (path, bytes)) in files.iter().enumerate() {
            let name = format!("file{i}");
            fs::write(dir.path().join(&name), bytes).unwrap();
            dockerfile.push_str(&format!("COPY {name} {path}\n"));
        }
        fs::write(dir.path().join("Dockerfile"), &dockerfile).unwrap();
        fs::write(dir.path().join("Containerfile"), &dockerfile).unwrap();
        Context { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// The `sha256:` digest in a client's output line that starts with `prefix`
/// (`"Digest: "`, or `"latest: digest: "` for a docker push).
pub fn digest_after(output: &str, marker: &str) -> String {
    output
        .lines()
        .find_map(|l| {
            let at = l.find(marker)? + marker.len();
            let d: String = l[at..].chars().take_while(|c| !c.is_whitespace()).collect();
            d.starts_with("sha256:").then_some(d)
        })
        .unwrap_or_else(|| panic!("no {marker:?} line with a digest in:\n{output}"))
}

/// A container engine's CLI (docker or podman) as one test uses it: a
/// client config directory of the test's own, and every image name the test
/// made, removed when it ends.
pub struct Engine {
    program: &'static str,
    config: tempfile::TempDir,
    images: RefCell<BTreeSet<String>>,
    /// Image ids seen under those names, newest last.
    ids: RefCell<Vec<String>>,
}

impl Engine {
    pub fn docker() -> Engine {
        Engine::of("docker")
    }

    pub fn podman() -> Engine {
        Engine::of("podman")
    }

    /// buildah shares podman's image store.
    pub fn buildah() -> Engine {
        Engine::of("buildah")
    }

    fn of(program: &'static str) -> Engine {
        let config = tempfile::tempdir().unwrap();
        // podman and buildah insist that an auth file they are pointed at exists.
        fs::write(config.path().join("auth.json"), "{}").unwrap();
        Engine {
            program,
            config,
            images: RefCell::new(BTreeSet::new()),
            ids: RefCell::new(Vec::new()),
        }
    }

    /// The CLI, its client state (`docker manifest` lists, logins) kept in
    /// the test's own directory.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(self.program);
        c.env("DOCKER_CONFIG", self.config.path())
            .env("REGISTRY_AUTH_FILE", self.config.path().join("auth.json"));
        c
    }

    /// Remember `image` for removal at the end.
    pub fn track(&self, image: &str) {
        self.images.borrow_mut().insert(image.to_string());
    }

    /// Remember `image` (built or pulled just now) and the ids of it and
    /// the steps it was built from, which outlive its name.
    pub fn remember(&self, image: &str) {
        self.track(image);
        let out = output(self.cmd().args(["history", "-q", image]));
        let mut ids = self.ids.borrow_mut();
        for id in String::from_utf8_lossy(&out.stdout).lines().rev() {
            let id = id.trim();
            if !id.is_empty() && id != "<missing>" && !ids.iter().any(|i| i == id) {
                ids.push(id.to_string());
            }
        }
    }

    /// Build the context into `image` (docker: the legacy builder, since
    /// BuildKit's own image cannot be pulled here).
    pub fn build(&self, image: &str, ctx: &Context) {
        run(self
            .cmd()
            .env("DOCKER_BUILDKIT", "0")
            // No cache: a cached step's image may belong to another test,
            // which can remove it mid-build.
            .args(["build", "--no-cache", "-q", "-t", image])
            .arg(ctx.path()));
        self.remember(image);
    }

    pub fn tag(&self, from: &str, to: &str) {
        self.track(to);
        run(self.cmd().args(["tag", from, to]));
    }

    /// Remove images, and their layers once no image uses them.
    pub fn rmi(&self, images: &[&str]) {
        run(self.cmd().args(["rmi", "-f"]).args(images));
    }

    pub fn exists(&self, image: &str) -> bool {
        output(self.cmd().args(["image", "inspect", image]))
            .status
            .success()
    }

    /// The image's layers as the engine knows them (uncompressed digests).
    pub fn diff_ids(&self, image: &str) -> serde_json::Value {
        let out = run(self.cmd().args([
            "image",
            "inspect",
            "--format",
            "{{json .RootFS.Layers}}",
            image,
        ]));
        serde_json::from_str(out.trim()).unwrap()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let quiet = |args: &[&str]| {
            let _ = self.cmd().args(args).output();
        };
        for name in self.images.borrow().iter() {
            quiet(&["rmi", "-f", name]);
            // podman keeps a manifest list apart from images.
            if self.program != "docker" {
                quiet(&["manifest", "rm", name]);
            }
        }
        // What the names no longer reach: a pulled image whose tag moved, a
        // build's intermediate steps.
        for id in self.ids.borrow().iter().rev() {
            quiet(&["rmi", "-f", id]);
        }
    }
}

/// The manifest skiff holds for `reference`: its bytes hash to `digest`, it
/// has the media type it says, and every blob it names is whole.
pub fn assert_stored(
    reg: &Registry,
    repo: &str,
    reference: &str,
    digest: &str,
) -> serde_json::Value {
    let r = reg.get_manifest(repo, reference);
    assert_eq!(r.status, 200, "{repo}:{reference}: {}", r.text());
    assert_eq!(sha256(&r.body), digest, "{repo}:{reference}");
    let m = r.json();
    if let Some(t) = m["mediaType"].as_str() {
        assert_eq!(r.header("content-type"), Some(t));
    }
    if m["layers"].is_array() {
        let mut blobs = vec![m["config"].clone()];
        blobs.extend(m["layers"].as_array().unwrap().iter().cloned());
        for b in blobs {
            let d = b["digest"].as_str().unwrap();
            let bytes = reg.pull_blob(repo, d);
            assert_eq!(sha256(&bytes), d, "{repo}: blob {d}");
            assert_eq!(
                Some(bytes.len() as u64),
                b["size"].as_u64(),
                "{repo}: size of {d}"
            );
        }
    }
    m
}
