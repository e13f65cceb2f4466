//! Test harness: runs the real `skiff` binary on 127.0.0.1 with a free port
//! and a fresh data directory, and talks to it over plain HTTP/1.1.
#![allow(dead_code)]

mod auth;
mod client;
mod edge;
mod engine;
mod kv;
mod ldap;
mod oci_layout;
mod store;
mod throttle;
#[allow(unused_imports)]
pub use auth::*;
#[allow(unused_imports)]
pub use client::*;
#[allow(unused_imports)]
pub use edge::*;
#[allow(unused_imports)]
pub use engine::*;
#[allow(unused_imports)]
pub use kv::*;
#[allow(unused_imports)]
pub use ldap::*;
#[allow(unused_imports)]
pub use oci_layout::*;
#[allow(unused_imports)]
pub use store::*;
#[allow(unused_imports)]
pub use throttle::*;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// A running registry; stopped (and its data removed) on drop.
pub struct Registry {
    /// `None` for a registry this harness did not start ([`Registry::attach`]).
    child: Option<Child>,
    pub port: u16,
    pub data: tempfile::TempDir,
    /// Where its objects are, for checks of what it stored.
    pub stored: Backing,
    /// The `Authorization` every request of [`Registry::req`] carries
    /// unless it sets its own (`as_user` in tests/common/auth.rs).
    pub authorization: std::sync::Mutex<Option<String>>,
}

impl Registry {
    pub fn start() -> Registry {
        Registry::start_with(|_| {})
    }

    /// Start under another program (`strace …`), which runs `skiff serve
    /// CONFIG` as its arguments' tail.
    pub fn start_under(wrapper: &[&str], edit: impl FnOnce(&mut serde_json::Value)) -> Registry {
        let (data, cfg_path) = write_config(edit);
        let mut command = Command::new(wrapper[0]);
        command
            .args(&wrapper[1..])
            .arg(env!("CARGO_BIN_EXE_skiff"))
            .arg("serve")
            .arg(&cfg_path)
            .env("SKIFF_CACHE_DIR", cache_dir());
        Registry::spawn(command, data)
    }

    /// Start on `bucket` (shared with other registries started on it),
    /// whatever this test target's default store is.
    pub fn start_on_bucket(
        bucket: &std::sync::Arc<Bucket>,
        edit: impl FnOnce(&mut serde_json::Value),
    ) -> Registry {
        let b = bucket.clone();
        let (mut store, cfg_path) = write_config(move |cfg| {
            on_bucket(cfg, b);
            edit(cfg)
        });
        store.stored = Backing::S3(bucket.clone());
        Registry::spawn(skiff_command("serve", &cfg_path), store)
    }

    /// Start with a config; `edit` may add keys to the JSON before it is written.
    pub fn start_with(edit: impl FnOnce(&mut serde_json::Value)) -> Registry {
        if let Some(edge) = EDGE {
            // The edge compositions take runtime settings, not skiff's config.
            let (store, _) = write_config(|cfg| {
                let before = cfg.clone();
                edit(cfg);
                assert_eq!(&before, cfg, "this test needs skiff serve's config");
            });
            return Registry::start_edge(edge, store);
        }
        let (data, cfg_path) = write_config(edit);
        Registry::spawn(skiff_command("serve", &cfg_path), data)
    }

    /// Like [`Registry::start_with`], with compiled components cached in
    /// `cache` rather than in the test run's shared cache.
    pub fn start_with_cache(cache: &Path, edit: impl FnOnce(&mut serde_json::Value)) -> Registry {
        let (data, cfg_path) = write_config(edit);
        let mut command = skiff_command("serve", &cfg_path);
        command.env("SKIFF_CACHE_DIR", cache);
        Registry::spawn(command, data)
    }

    pub fn spawn(command: Command, store: Store) -> Registry {
        let (child, port) = start_serving(command);
        Registry {
            child: Some(child),
            port,
            data: store.data,
            stored: store.stored,
            authorization: Default::default(),
        }
    }

    /// Kill the server (as a crash would) and start it again on the same
    /// config and data; it listens on a new port.
    pub fn restart(&mut self) {
        self.stop();
        let (child, port) = start_serving(skiff_command("serve", &self.config_path()));
        self.child = Some(child);
        self.port = port;
    }

    /// A registry already serving at `host` (`127.0.0.1:PORT`), started by
    /// something else (a container): requests only, no process to control.
    pub fn attach(host: &str) -> Registry {
        let port = host
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {host:?}"));
        let data = tempfile::tempdir().unwrap();
        Registry {
            child: None,
            port,
            stored: Backing::Disk(data.path().join("root")),
            data,
            authorization: Default::default(),
        }
    }

    fn process(&mut self) -> &mut Child {
        self.child
            .as_mut()
            .expect("an attached registry has no process here")
    }

    pub fn root(&self) -> PathBuf {
        self.data.path().join("root")
    }

    /// The config file the registry was started with.
    pub fn config_path(&self) -> PathBuf {
        config_path(self.data.path())
    }

    /// Where the registry's default store keeps `digest` for `repo`.
    pub fn blob_path(&self, repo: &str, digest: &str) -> PathBuf {
        blob_path(&self.root(), repo, digest)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn req(&self, method: &str, path: &str) -> Req<'_> {
        let auth = self.authorization.lock().unwrap().clone();
        Req {
            reg: self,
            method: method.to_string(),
            path: path.to_string(),
            headers: auth
                .map(|a| ("Authorization".to_string(), a))
                .into_iter()
                .collect(),
            body: Vec::new(),
            chunked: false,
        }
    }

    pub fn get(&self, path: &str) -> Resp {
        self.req("GET", path).send()
    }

    pub fn head(&self, path: &str) -> Resp {
        self.req("HEAD", path).send()
    }

    pub fn delete(&self, path: &str) -> Resp {
        self.req("DELETE", path).send()
    }

    /// Stop the server and keep its data (the directory goes on drop).
    pub fn stop(&mut self) {
        let child = self.process();
        let _ = child.kill();
        let _ = child.wait();
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .expect("an attached registry has no process here")
            .id()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.process().try_wait(), Ok(None))
    }

    /// Send `signal` (`libc::SIGTERM`, …) to the server process.
    pub fn signal(&self, signal: i32) {
        let pid = i32::try_from(self.pid()).expect("a pid fits an i32");
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our
        // own child's, which stays reserved until it is waited for.
        let r = unsafe { libc::kill(pid, signal) };
        assert_eq!(
            r,
            0,
            "kill({pid}, {signal}): {}",
            std::io::Error::last_os_error()
        );
    }

    /// The server's exit status, waiting up to `limit` for it to exit;
    /// `None` if it is still running then.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.process().try_wait().expect("waiting for skiff") {
                return Some(status);
            }
            if started.elapsed() > limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Push a blob monolithically; returns its digest.
    pub fn push_blob(&self, repo: &str, bytes: &[u8]) -> String {
        let d = sha256(bytes);
        let r = self
            .req("POST", &format!("/v2/{repo}/blobs/uploads/?digest={d}"))
            .header("Content-Type", "application/octet-stream")
            .body(bytes)
            .send();
        assert_eq!(r.status, 201, "push blob: {}", r.text());
        d
    }

    /// Open an upload session in `repo` (`POST …/blobs/uploads/`, which must
    /// answer 202); returns the response, whose [`Resp::location`] is the session.
    pub fn open_upload(&self, repo: &str) -> Resp {
        let r = self
            .req("POST", &format!("/v2/{repo}/blobs/uploads/"))
            .send();
        assert_eq!(r.status, 202, "start upload in {repo}: {}", r.text());
        r
    }

    /// `PATCH` `part` (as octets) into the upload session at `loc`.
    pub fn patch_upload(&self, loc: &str, part: &[u8]) -> Req<'_> {
        self.req("PATCH", loc)
            .header("Content-Type", "application/octet-stream")
            .body(part)
    }

    /// `PATCH` the chunk `part` that starts at byte `at` into the session at `loc`.
    pub fn patch_chunk(&self, loc: &str, at: usize, part: &[u8]) -> Req<'_> {
        self.patch_upload(loc, part)
            .header("Content-Range", &format!("{at}-{}", at + part.len() - 1))
    }

    /// The `PUT <loc>?digest=<digest>` that closes the upload session at `loc`.
    pub fn close_upload(&self, loc: &str, digest: &str) -> Req<'_> {
        self.req("PUT", &with_query(loc, &format!("digest={digest}")))
    }

    /// Mount `digest` from `from` into `repo` (`POST …/uploads/?mount=&from=`).
    pub fn mount(&self, repo: &str, digest: &str, from: &str) -> Resp {
        self.req(
            "POST",
            &format!("/v2/{repo}/blobs/uploads/?mount={digest}&from={from}"),
        )
        .send()
    }

    /// GET a manifest, accepting an OCI image manifest.
    pub fn get_manifest(&self, repo: &str, reference: &str) -> Resp {
        self.req("GET", &format!("/v2/{repo}/manifests/{reference}"))
            .header("Accept", OCI_MANIFEST)
            .send()
    }

    /// GET a blob, which must answer 200 with bytes that hash to `digest`;
    /// returns the bytes.
    pub fn pull_blob(&self, repo: &str, digest: &str) -> Vec<u8> {
        let r = self.get(&format!("/v2/{repo}/blobs/{digest}"));
        assert_eq!(r.status, 200, "blob {digest} in {repo}: {}", r.text());
        assert_eq!(
            sha256(&r.body),
            digest,
            "blob {digest} in {repo} holds other bytes"
        );
        r.body
    }

    /// Push a manifest by tag or digest; returns the response.
    pub fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Resp {
        self.req("PUT", &format!("/v2/{repo}/manifests/{reference}"))
            .header("Content-Type", media_type)
            .body(bytes)
            .send()
    }

    /// Push a small image (config + one layer) and tag it; returns the manifest bytes and digest.
    pub fn push_image(&self, repo: &str, tag: &str, seed: &str) -> (Vec<u8>, String) {
        let config = format!("{{\"seed\":\"{seed}\"}}");
        let layer = format!("layer of {seed}");
        let cd = self.push_blob(repo, config.as_bytes());
        let ld = self.push_blob(repo, layer.as_bytes());
        let m = image_manifest(&cd, config.len(), &[(&ld, layer.len())], None, None);
        let r = self.put_manifest(repo, tag, OCI_MANIFEST, &m);
        assert_eq!(r.status, 201, "push manifest: {}", r.text());
        let d = sha256(&m);
        (m, d)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Run `command` (a `skiff serve`) and read the port it prints.
fn start_serving(mut command: Command) -> (Child, u16) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting skiff");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let port = line
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("skiff did not print its address: {line:?}"));
    (child, port)
}

/// Compiled components are cached across the test run's registries.
fn cache_dir() -> PathBuf {
    let dir = std::env::temp_dir().join("skiff-test-cache");
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// A fresh data directory with the test config (127.0.0.1 with a free
/// port, the root inside it) as `edit` leaves it; the config's path.
pub fn write_config(edit: impl FnOnce(&mut serde_json::Value)) -> (Store, PathBuf) {
    let data = tempfile::tempdir().expect("tempdir");
    let mut cfg = serde_json::json!({
        "http": {"address": "127.0.0.1", "port": 0},
        "storage": {"rootDirectory": data.path().join("root")},
        "log": {"level": "warn"}
    });
    let stored = if ON_S3 {
        on_bucket(&mut cfg, std::sync::Arc::new(Bucket::create()))
    } else {
        Backing::Disk(data.path().join("root"))
    };
    edit(&mut cfg);
    let path = config_path(data.path());
    std::fs::write(&path, cfg.to_string()).unwrap();
    (Store { data, stored }, path)
}

/// Point a config at `bucket`.
fn on_bucket(cfg: &mut serde_json::Value, bucket: std::sync::Arc<Bucket>) -> Backing {
    cfg["storage"]["storageDriver"] = bucket.driver();
    Backing::S3(bucket)
}

/// A test registry's data directory (config, local root) and its objects.
pub struct Store {
    pub data: tempfile::TempDir,
    pub stored: Backing,
}

fn config_path(data: &Path) -> PathBuf {
    data.join("config.json")
}

/// `skiff <command> CONFIG`, sharing the test run's component cache; the
/// caller runs or spawns it.
pub fn skiff_command(command: &str, config: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_skiff"));
    c.arg(command)
        .arg(config)
        .env("SKIFF_CACHE_DIR", cache_dir())
        // For DynamoDB (`remoteCache`), which takes credentials from the
        // standard chain only, as zot's; moto accepts any.
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing");
    c
}

/// GET an absolute `http://host:port/...` URL (a redirect's target).
pub fn http_get(url: &str) -> Resp {
    let rest = url
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("not a plain http URL: {url}"));
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut s = TcpStream::connect(host).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let head = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    s.write_all(head.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    Resp::parse(&raw, false)
}

/// Append a query to a Location, which may already carry one.
pub fn with_query(location: &str, q: &str) -> String {
    if location.contains('?') {
        format!("{location}&{q}")
    } else {
        format!("{location}?{q}")
    }
}

pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// The digest of a file's content, read in pieces (files may be large).
pub fn file_sha256(path: &Path) -> String {
    use sha2::Digest;
    let mut f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    format!("sha256:{}", hex::encode(hasher.finalize()))
}

/// The hex part of a sha256 digest.
pub fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").expect("a sha256 digest")
}

/// Where a store rooted at `root` keeps `digest` for `repo`.
pub fn blob_path(root: &Path, repo: &str, digest: &str) -> PathBuf {
    root.join(repo).join("blobs/sha256").join(hex_of(digest))
}

/// A JSON file, parsed.
pub fn read_json(path: &Path) -> serde_json::Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The names in `dir` (files and directories alike); none if it does not exist.
pub fn names_in(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Every regular file under `dir`, as paths relative to it.
pub fn files_under(dir: &Path) -> BTreeSet<String> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.insert(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

/// Poll `check` every 100 ms for up to `limit`; true once it holds.
pub fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    loop {
        if check() {
            return true;
        }
        if started.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The value of a metric in a Prometheus text exposition.
pub fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// An OCI image manifest; `subject` is (digest, size) of another manifest.
pub fn image_manifest(
    config: &str,
    config_size: usize,
    layers: &[(&str, usize)],
    subject: Option<(&str, usize)>,
    artifact_type: Option<&str>,
) -> Vec<u8> {
    let mut m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": config_size},
        "layers": layers.iter().map(|(d, s)| serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": s
        })).collect::<Vec<_>>(),
    });
    if let Some((d, s)) = subject {
        m["subject"] = serde_json::json!({"mediaType": OCI_MANIFEST, "digest": d, "size": s});
    }
    if let Some(t) = artifact_type {
        m["artifactType"] = serde_json::json!(t);
    }
    serde_json::to_vec(&m).unwrap()
}

pub struct Req<'a> {
    reg: &'a Registry,
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    chunked: bool,
}

impl Req<'_> {
    pub fn header(mut self, k: &str, v: &str) -> Self {
        if k.eq_ignore_ascii_case("authorization") {
            self.headers
                .retain(|(h, _)| !h.eq_ignore_ascii_case("authorization"));
        }
        self.headers.push((k.to_string(), v.to_string()));
        self
    }

    /// Send no `Authorization` at all.
    pub fn anonymous(mut self) -> Self {
        self.headers
            .retain(|(h, _)| !h.eq_ignore_ascii_case("authorization"));
        self
    }

    pub fn body(mut self, b: &[u8]) -> Self {
        self.body = b.to_vec();
        self
    }

    /// Send the body with `Transfer-Encoding: chunked` (no Content-Length).
    pub fn chunked(mut self) -> Self {
        self.chunked = true;
        self
    }

    pub fn send(self) -> Resp {
        let mut s = TcpStream::connect(("127.0.0.1", self.reg.port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n",
            self.method, self.path, self.reg.port
        );
        let has_len = self
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-length"));
        for (k, v) in &self.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if self.chunked {
            head.push_str("Transfer-Encoding: chunked\r\n\r\n");
            s.write_all(head.as_bytes()).unwrap();
            for part in self.body.chunks(7000) {
                s.write_all(format!("{:x}\r\n", part.len()).as_bytes())
                    .unwrap();
                s.write_all(part).unwrap();
                s.write_all(b"\r\n").unwrap();
            }
            s.write_all(b"0\r\n\r\n").unwrap();
        } else {
            if !has_len
                && (!self.body.is_empty()
                    || matches!(self.method.as_str(), "PUT" | "POST" | "PATCH"))
            {
                head.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
            }
            head.push_str("\r\n");
            s.write_all(head.as_bytes()).unwrap();
            let _ = s.write_all(&self.body);
        }
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        Resp::parse(&raw, self.method == "HEAD")
    }
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// A chunked body decoded; a malformed or unfinished one fails the test
/// (a body cut short must never look whole).
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("a chunk size line");
        let size_text = std::str::from_utf8(&raw[..line_end]).expect("a chunk size in ASCII");
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
            .unwrap_or_else(|e| panic!("chunk size {size_text:?}: {e}"));
        raw = &raw[line_end + 2..];
        if size == 0 {
            assert!(raw.starts_with(b"\r\n"), "a chunked body without its end");
            return out;
        }
        assert!(raw.len() >= size + 2, "a chunk cut short");
        out.extend_from_slice(&raw[..size]);
        assert_eq!(&raw[size..size + 2], b"\r\n", "a chunk without its CRLF");
        raw = &raw[size + 2..];
    }
}

impl Resp {
    pub fn parse(raw: &[u8], head: bool) -> Resp {
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(raw)));
        let text = String::from_utf8_lossy(&raw[..split]).to_string();
        let mut lines = text.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .expect("status line");
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        // Every request says `Connection: close`, so the body is whatever
        // follows the head, decoded when it is chunked (a streamed listing).
        let rest = &raw[split + 4..];
        let chunked = headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
        let body = if chunked && !head {
            dechunk(rest)
        } else {
            rest.to_vec()
        };
        let resp = Resp {
            status,
            headers,
            body,
        };
        resp.check_framing(head, chunked);
        resp
    }

    /// The body read must be the body announced: for HEAD none at all, else
    /// exactly `Content-Length` bytes (a short or long body fails the test).
    fn check_framing(&self, head: bool, chunked: bool) {
        let lengths = self.header_all("content-length");
        assert!(
            lengths.len() <= 1,
            "{} response with several Content-Length headers: {lengths:?}",
            self.status
        );
        assert!(
            chunked || self.header("transfer-encoding").is_none(),
            "{} response with Transfer-Encoding {:?}: this client decodes only chunked",
            self.status,
            self.header("transfer-encoding")
        );
        assert!(
            !chunked || lengths.is_empty(),
            "{} response both chunked and with a Content-Length",
            self.status
        );
        if head {
            assert!(
                self.body.is_empty(),
                "HEAD answered {} with {} bytes of body: {:?}",
                self.status,
                self.body.len(),
                String::from_utf8_lossy(&self.body[..self.body.len().min(200)])
            );
            return;
        }
        if let Some(len) = lengths.first() {
            let len: usize = len.parse().unwrap_or_else(|e| {
                panic!("{} response: Content-Length {len:?}: {e}", self.status)
            });
            assert_eq!(
                self.body.len(),
                len,
                "{} response: Content-Length says {len} bytes, the body read has {}",
                self.status,
                self.body.len()
            );
        }
    }

    pub fn header(&self, k: &str) -> Option<&str> {
        self.header_all(k).first().copied()
    }

    pub fn header_all(&self, k: &str) -> Vec<&str> {
        let k = k.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(n, _)| *n == k)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The Location header, which must be there.
    pub fn location(&self) -> String {
        self.header("location").expect("Location").to_string()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// The code of the first error in an OCI error body.
    pub fn error_code(&self) -> String {
        self.json()["errors"][0]["code"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }
}

/// Make a file `by` older: set its modification time back, as time would.
pub fn age_file(path: &Path, by: Duration) {
    let f = std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let t = f.metadata().unwrap().modified().unwrap() - by;
    f.set_modified(t)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(std::fs::metadata(path).unwrap().modified().unwrap(), t);
}

/// Age every regular file under `dir` (there must be one).
pub fn age_files_under(dir: &Path, by: Duration) {
    let files = files_under(dir);
    assert!(!files.is_empty(), "nothing to age in {}", dir.display());
    for f in files {
        age_file(&dir.join(f), by);
    }
}

/// Older than any delay these tests configure.
pub const LONG_AGO: Duration = Duration::from_secs(2 * 3600);

/// Whether `raw` holds a whole response: its head and as many body bytes as
/// its Content-Length says.
pub fn complete(raw: &[u8]) -> bool {
    let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    raw.len() >= split + 4 + len
}

/// Every file under `dir` with its size and modification time: what a
/// change on disk would show in.
pub fn listing(dir: &Path) -> Vec<(String, u64, std::time::SystemTime)> {
    files_under(dir)
        .into_iter()
        .map(|f| {
            let md = std::fs::metadata(dir.join(&f)).unwrap();
            (f, md.len(), md.modified().unwrap())
        })
        .collect()
}

/// The registry turned a request away: 503, when to retry, and the OCI error.
pub fn assert_too_many(what: &str, r: &Resp) {
    assert_eq!(r.status, 503, "{what}: {}", r.text());
    let retry = r
        .header("retry-after")
        .unwrap_or_else(|| panic!("{what}: 503 without Retry-After"));
    assert!(
        retry.parse::<u64>().is_ok(),
        "{what}: Retry-After {retry:?}"
    );
    assert_eq!(r.error_code(), "TOOMANYREQUESTS", "{what}: {}", r.text());
}
