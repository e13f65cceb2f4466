//! The process's life: what SIGTERM and SIGINT do to requests in flight and
//! to start-up work, and what a torn compiled-component cache does to the
//! next start. Waits are bounded; what is asserted is who gets which answer
//! and how the process exits, never how long anything took.

mod common;
use common::*;
use rand::{RngCore, SeedableRng};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

const MIB: usize = 1 << 20;
/// Generous bound on any one wait for the server.
const PATIENCE: Duration = Duration::from_secs(60);

/// The bytes the uploads here send: a pseudo-random block repeated, so any
/// range of them can be made again (to resume an upload) without keeping
/// hundreds of MiB in memory.
fn body_bytes(at: usize, len: usize) -> Vec<u8> {
    static BLOCK: OnceLock<Vec<u8>> = OnceLock::new();
    // Not a power of two, so the pattern does not line up with the pieces.
    let block = BLOCK.get_or_init(|| random_bytes(1, MIB + 4099));
    (at..at + len).map(|i| block[i % block.len()]).collect()
}

fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// The digest of `body_bytes(0, len)`.
fn body_digest(len: usize) -> String {
    let mut h = Sha256::new();
    let mut at = 0;
    while at < len {
        let n = (len - at).min(8 * MIB);
        h.update(body_bytes(at, n));
        at += n;
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// A PATCH whose body the test sends piece by piece over a connection of its
/// own (kept alive, as clients do), then reads the answer.
struct Upload {
    stream: TcpStream,
    sent: usize,
}

impl Upload {
    fn start(reg: &Registry, location: &str, declared: usize) -> Upload {
        let mut stream = TcpStream::connect(("127.0.0.1", reg.port)).expect("connect");
        let head = format!(
            "PATCH {location} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\n\
             Content-Length: {declared}\r\n\r\n",
            reg.host()
        );
        stream.write_all(head.as_bytes()).expect("send the head");
        Upload { stream, sent: 0 }
    }

    /// Send the next `n` bytes of the body.
    fn send(&mut self, n: usize) -> std::io::Result<()> {
        let end = self.sent + n;
        while self.sent < end {
            let piece = body_bytes(self.sent, (end - self.sent).min(MIB));
            self.stream.write_all(&piece)?;
            self.sent += piece.len();
        }
        Ok(())
    }

    /// What the server answered, once it has answered in full or closed the
    /// connection (waiting up to [`PATIENCE`]); `None` if it closed it (or
    /// stayed silent) without a byte of answer.
    fn response(mut self) -> Option<Resp> {
        self.stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !complete(&got) {
            match self.stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        (!got.is_empty()).then(|| Resp::parse(&got, false))
    }
}

/// Whether a new connection is turned away: refused, or answered 503 with
/// when to retry. False while the server still serves new connections (and
/// for a connection closed without an answer: the next one tells).
fn turned_away(reg: &Registry) -> bool {
    let mut s = match TcpStream::connect(("127.0.0.1", reg.port)) {
        Ok(s) => s,
        Err(e) => return e.kind() == ErrorKind::ConnectionRefused,
    };
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let req = format!(
        "GET /v2/ HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        reg.host()
    );
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    if !complete(&raw) {
        return false;
    }
    let r = Resp::parse(&raw, false);
    if r.status == 503 {
        assert_too_many("a request during the drain", &r);
        return true;
    }
    false
}

/// Wait until the server is streaming `n` uploads into the registry (each
/// holds a slot): their requests are in flight, not merely sent.
fn wait_uploads_in_flight(reg: &Registry, n: u64) {
    let in_flight = || {
        let r = reg.get("/metrics");
        assert_eq!(r.status, 200, "/metrics: {}", r.text());
        metric(&r.text(), "skiff_uploads_in_flight")
    };
    assert!(
        eventually(PATIENCE, || in_flight() == Some(n)),
        "uploads in flight: {:?}, not {n}",
        in_flight()
    );
}

/// After a signal: wait until new connections are turned away (the drain has
/// begun), and check the process is still there, draining.
fn assert_draining(reg: &mut Registry) {
    assert!(
        eventually(PATIENCE, || turned_away(reg)),
        "new connections were still served a minute after the signal"
    );
    assert!(
        reg.alive(),
        "the server exited at once, with a request in flight"
    );
}

fn assert_exits_0(reg: &mut Registry, limit: Duration, what: &str) {
    let status = reg
        .wait_exit(limit)
        .unwrap_or_else(|| panic!("{what}: still running {limit:?} after the signal"));
    assert!(status.success(), "{what}: exit status {status}");
}

/// A second server on the first one's root (which stays until `first` is dropped).
fn on_root_of(first: &Registry, dedupe: bool) -> Registry {
    let root = first.root();
    Registry::start_with(|c| {
        c["storage"]["rootDirectory"] = json!(root);
        c["storage"]["dedupe"] = json!(dedupe);
    })
}

/// SIGTERM while a 500 MB PATCH is mid-body: new connections are turned
/// away, the upload goes on to the end and is answered 202, then the server
/// exits 0. Everything uploaded is there for the next server.
#[test]
fn an_upload_in_flight_at_sigterm_finishes_before_the_server_exits() {
    const TOTAL: usize = 500 * MIB;
    const BEFORE: usize = 100 * MIB;
    let mut reg = Registry::start_with(|c| c["http"]["shutdownTimeout"] = json!("60s"));
    let loc = reg.open_upload("big").location();
    let mut up = Upload::start(&reg, &loc, TOTAL);
    up.send(BEFORE).expect("sending the first 100 MiB");
    wait_uploads_in_flight(&reg, 1);

    reg.signal(libc::SIGTERM);
    assert_draining(&mut reg);
    up.send(TOTAL - BEFORE)
        .expect("the server cut the upload off during the drain");
    let r = up
        .response()
        .expect("the upload was closed without an answer");
    assert_eq!(
        r.status,
        202,
        "the upload finished in the drain: {}",
        r.text()
    );
    assert_eq!(
        r.header("range"),
        Some(format!("0-{}", TOTAL - 1).as_str()),
        "{:?}",
        r.headers
    );
    assert_exits_0(&mut reg, PATIENCE, "after the upload finished");

    let next = on_root_of(&reg, true);
    let digest = body_digest(TOTAL);
    let r = next.close_upload(&loc, &digest).send();
    assert_eq!(
        r.status,
        201,
        "closing the upload after the restart: {}",
        r.text()
    );
    let r = next.head(&format!("/v2/big/blobs/{digest}"));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some(TOTAL.to_string().as_str()));
}

/// SIGTERM while a PATCH stalls mid-body: once `http.shutdownTimeout` is up
/// the upload is answered 503 (TOOMANYREQUESTS, Retry-After, and the
/// connection closes) rather than cut off bare, the server exits 0, and the
/// next server resumes the upload from where it stood.
#[test]
fn an_upload_stalled_past_the_shutdown_timeout_gets_503_and_stays_resumable() {
    const DECLARED: usize = 500 * MIB;
    const SENT: usize = 50 * MIB;
    let mut reg = Registry::start_with(|c| c["http"]["shutdownTimeout"] = json!("10s"));
    let loc = reg.open_upload("big").location();
    let mut up = Upload::start(&reg, &loc, DECLARED);
    up.send(SENT).expect("sending the first 50 MiB");
    wait_uploads_in_flight(&reg, 1);

    reg.signal(libc::SIGTERM);
    assert_draining(&mut reg);
    let r = up
        .response()
        .expect("the stalled upload was closed without an answer");
    assert_too_many("the upload cut off by the shutdown", &r);
    assert_eq!(r.header("connection"), Some("close"), "{:?}", r.headers);
    assert_exits_0(&mut reg, PATIENCE, "after the drain timed out");

    // The session holds what was stored of the body; the client resumes
    // from there and finishes the blob.
    let next = on_root_of(&reg, true);
    let s = next.req("GET", &loc).send();
    assert_eq!(s.status, 204, "the session after the restart: {}", s.text());
    let range = s.header("range").expect("Range").to_string();
    let last: usize = range
        .strip_prefix("0-")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("Range {range:?}"));
    let offset = if last == 0 { 0 } else { last + 1 };
    assert!(
        offset <= SENT,
        "the session holds {offset} bytes of {SENT} sent"
    );
    let tail = body_bytes(offset, MIB);
    let r = next.patch_chunk(&loc, offset, &tail).send();
    assert_eq!(r.status, 202, "resuming at {offset}: {}", r.text());
    let digest = body_digest(offset + MIB);
    let r = next.close_upload(&loc, &digest).send();
    assert_eq!(r.status, 201, "closing the resumed upload: {}", r.text());
    next.pull_blob("big", &digest);
}

/// Start-up dedupe convergence runs in the background; SIGTERM while it
/// runs ends the process at once (status 0): every file it replaces is
/// replaced by a rename, so stopping it between two leaves the store whole,
/// and the next start converges the rest.
#[test]
fn sigterm_during_dedupe_convergence_exits_0_and_leaves_the_store_whole() {
    let repos = ["conv/a", "conv/b", "conv/c"];
    let blobs: Vec<Vec<u8>> = (0..10).map(|i| random_bytes(100 + i, 10 * MIB)).collect();
    let mut first = Registry::start_with(|c| c["storage"]["dedupe"] = json!(false));
    let mut digests = Vec::new();
    for blob in &blobs {
        for repo in repos {
            digests.push((repo, first.push_blob(repo, blob)));
        }
    }
    let copies = |reg: &Registry| {
        let mut inodes = std::collections::HashSet::new();
        for (repo, d) in &digests {
            inodes.insert(std::fs::metadata(reg.blob_path(repo, d)).unwrap().ino());
        }
        inodes.len()
    };
    assert_eq!(copies(&first), 30);
    // So that convergence is surely still running when the signal comes,
    // whatever the machine: two copies of one huge blob (sparse files, 64
    // GiB each), which convergence hashes before it links them; neither
    // checks out, so hashing both takes minutes.
    let huge = sha256(b"a layer too large to hash before the signal");
    let huge_copies = [
        first.blob_path("conv/a", &huge),
        first.blob_path("conv/b", &huge),
    ];
    for p in &huge_copies {
        std::fs::File::create(p)
            .and_then(|f| f.set_len(64 << 30))
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    }
    first.signal(libc::SIGTERM);
    assert_exits_0(&mut first, PATIENCE, "the server with dedupe off, idle");

    let mut converging = on_root_of(&first, true);
    converging.signal(libc::SIGTERM);
    assert_exits_0(
        &mut converging,
        Duration::from_secs(10),
        "during convergence",
    );
    eprintln!(
        "{} separate files for 10 blobs when the process exited",
        copies(&first)
    );

    // The store is whole: the next start converges it and serves every blob.
    for p in &huge_copies {
        std::fs::remove_file(p).unwrap();
    }
    let again = on_root_of(&first, true);
    assert!(
        eventually(PATIENCE, || copies(&first) == 10),
        "{} separate files for 10 blobs a minute after the restart",
        copies(&first)
    );
    for (repo, d) in &digests {
        again.pull_blob(repo, d);
    }
}

/// A second SIGTERM (or SIGINT) while the drain waits for a stalled upload
/// ends the process at once, with 128 + the signal's number: it did not
/// finish what was in flight.
#[test]
fn a_second_signal_during_the_drain_exits_at_once() {
    for (signal, code) in [(libc::SIGTERM, 143), (libc::SIGINT, 130)] {
        let mut reg = Registry::start_with(|c| c["http"]["shutdownTimeout"] = json!("60s"));
        let loc = reg.open_upload("stalled").location();
        let mut up = Upload::start(&reg, &loc, 100 * MIB);
        up.send(MIB).expect("sending the first MiB");
        wait_uploads_in_flight(&reg, 1);
        reg.signal(signal);
        assert_draining(&mut reg);
        reg.signal(signal);
        let status = reg
            .wait_exit(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("signal {signal}: a second one did not end the 60 s drain"));
        assert_eq!(status.code(), Some(code), "signal {signal}: {status}");
        drop(up);
    }
}

// ---------------------------------------------------------------- component cache

/// The compiled components a server cached in `dir` (no temporary files).
fn cached(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = names_in(dir)
        .into_iter()
        .filter(|n| n.ends_with(".cwasm") && !n.starts_with('.'))
        .map(|n| dir.join(n))
        .collect();
    v.sort();
    v
}

/// The cache file's own check, as skiff writes it: `SKIFFCW1`, the sha256 of
/// the serialized component, then the serialized component.
fn seal_holds(bytes: &[u8]) -> bool {
    bytes.len() > 40
        && &bytes[..8] == b"SKIFFCW1"
        && bytes[8..40] == Sha256::digest(&bytes[40..])[..]
}

fn round_trip(reg: &Registry, seed: &str) {
    let (manifest, _) = reg.push_image("cache/app", seed, seed);
    let r = reg.get_manifest("cache/app", seed);
    assert_eq!(r.status, 200, "pull {seed}: {}", r.text());
    assert_eq!(r.body, manifest);
    let layer = format!("layer of {seed}");
    reg.pull_blob("cache/app", &sha256(layer.as_bytes()));
}

/// A torn or rotten cache file is noticed, recompiled and rewritten: the
/// server serves correctly, and the files check out again.
#[test]
fn a_corrupt_component_cache_is_recompiled_and_rewritten() {
    let cache = tempfile::tempdir().unwrap();
    {
        let reg = Registry::start_with_cache(cache.path(), |_| {});
        round_trip(&reg, "v1");
    }
    let files = cached(cache.path());
    assert_eq!(files.len(), 3, "{files:?}");
    // One file with bytes flipped in the middle, one truncated to half,
    // one cut to nothing.
    let mut corrupted = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let mut bytes = std::fs::read(f).unwrap();
        match i {
            0 => {
                let mid = bytes.len() / 2;
                for b in &mut bytes[mid..mid + 64] {
                    *b ^= 0x5a;
                }
            }
            1 => bytes.truncate(bytes.len() / 2),
            _ => bytes.clear(),
        }
        std::fs::write(f, &bytes).unwrap();
        corrupted.push(bytes);
    }
    {
        let reg = Registry::start_with_cache(cache.path(), |_| {});
        round_trip(&reg, "v2");
        round_trip(&reg, "v1");
    }
    assert_eq!(cached(cache.path()), files, "other cache files than before");
    let mut inodes = Vec::new();
    for (f, bad) in files.iter().zip(&corrupted) {
        let bytes = std::fs::read(f).unwrap();
        assert!(bytes != *bad, "{} was not rewritten", f.display());
        assert!(seal_holds(&bytes), "{} does not check out", f.display());
        inodes.push(std::fs::metadata(f).unwrap().ino());
    }
    // Files that check out are loaded as they are, not compiled again.
    {
        let reg = Registry::start_with_cache(cache.path(), |_| {});
        round_trip(&reg, "v3");
    }
    for (f, ino) in files.iter().zip(&inodes) {
        assert_eq!(
            std::fs::metadata(f).unwrap().ino(),
            *ino,
            "{} was rewritten though it checked out",
            f.display()
        );
    }
}
