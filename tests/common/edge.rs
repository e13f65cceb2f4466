//! Registries under `wasmtime serve`: the edge compositions the build writes
//! to `target/edge/`, run by a runtime we did not write. Test targets named
//! `*_edge_kv` and `*_edge_s3` (the same sources built again) start every
//! [`Registry::start`] this way: over kv-fs in the test's data directory,
//! or over a fresh bucket on the test S3 endpoint.

use super::{Bucket, Registry, Store};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Edge {
    Kv,
    S3,
}

const fn ends_with(name: &[u8], suffix: &[u8]) -> bool {
    if name.len() < suffix.len() {
        return false;
    }
    let mut i = 0;
    while i < suffix.len() {
        if name[name.len() - suffix.len() + i] != suffix[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Which edge composition this test target's registries run, if any.
pub const EDGE: Option<Edge> = {
    let name = env!("CARGO_CRATE_NAME").as_bytes();
    if ends_with(name, b"_edge_kv") {
        Some(Edge::Kv)
    } else if ends_with(name, b"_edge_s3") {
        Some(Edge::S3)
    } else {
        None
    }
};

/// The bearer token the test registries take for `/_skiff/...`.
pub const ADMIN_TOKEN: &str = "skiff-test-admin-token";

/// A file the build wrote to `target/edge/`.
pub fn edge_file(name: &str) -> PathBuf {
    let p = super::workspace().join("target").join("edge").join(name);
    assert!(
        p.exists(),
        "{} is missing: the build writes it",
        p.display()
    );
    p
}

/// `wasmtime` from the test command's tools (`$SKIFF_WASMTIME`).
pub fn wasmtime() -> PathBuf {
    std::env::var_os("SKIFF_WASMTIME")
        .map(PathBuf::from)
        .expect("SKIFF_WASMTIME is not set: scripts/test.sh installs wasmtime-cli and sets it")
}

/// The settings of the S3 composition for `bucket`, as Spin variables
/// (here `wasi:config` variables).
pub fn s3_vars(bucket: &Bucket) -> Vec<(String, String)> {
    [
        ("s3_bucket", bucket.name.as_str()),
        ("s3_region", "us-east-1"),
        ("s3_endpoint", &super::store::endpoint()),
        ("s3_prefix", super::store::PREFIX),
        ("s3_path_style", "true"),
        ("s3_access_key", "testing"),
        ("s3_secret_key", "testing"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// `wasmtime serve` on 127.0.0.1 with a free port: WASI cli (std in the
/// components needs it), `wasi:config` with `vars` and the admin token,
/// room for 100+ concurrent requests, and `dir` preopened as `/data`.
pub fn serve_command(file: &Path, vars: &[(String, String)], dir: Option<&Path>) -> Command {
    serve_command_on(0, file, vars, dir, &[])
}

/// [`serve_command`] on a given port (0: a free one).
pub fn serve_command_on(
    port: u16,
    file: &Path,
    vars: &[(String, String)],
    dir: Option<&Path>,
    mounts: &[(PathBuf, &str)],
) -> Command {
    let mut c = Command::new(wasmtime());
    c.arg("serve")
        .arg("--addr")
        .arg(format!("127.0.0.1:{port}"))
        .args(["-S", "cli", "-S", "config"])
        // A request instantiates every component of the composition (18
        // core instances, more tables); wasmtime's default pool of 1,000 of
        // each caps concurrency near 50 requests (README, "Spin and the edge").
        .args(["-O", "pooling-total-core-instances=10000"])
        .args(["-O", "pooling-total-tables=10000"])
        .arg("-S")
        .arg(format!("config-var=admin_token={ADMIN_TOKEN}"));
    for (k, v) in vars {
        c.arg("-S").arg(format!("config-var={k}={v}"));
    }
    if let Some(d) = dir {
        std::fs::create_dir_all(d).expect("creating the kv-fs directory");
        c.arg("--dir").arg(format!("{}::/data", d.display()));
    }
    for (host, guest) in mounts {
        c.arg("--dir").arg(format!("{}::{guest}", host.display()));
    }
    c.arg(file);
    c
}

impl Registry {
    /// Start `command` (a `wasmtime serve`) and wait for its address; its
    /// later output goes to the test's stderr.
    pub fn spawn_wasmtime(mut command: Command, store: Store) -> Registry {
        let mut child = command
            .stdout(Stdio::inherit())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting wasmtime serve");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let port = loop {
            let line = match lines.next() {
                Some(Ok(l)) => l,
                _ => panic!("wasmtime serve exited before serving: {:?}", child.wait()),
            };
            if let Some(rest) = line.strip_prefix("Serving HTTP on http://") {
                let addr = rest.trim_end_matches('/');
                break addr
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.parse().ok())
                    .unwrap_or_else(|| panic!("no port in {line:?}"));
            }
            eprintln!("wasmtime: {line}");
        };
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                eprintln!("wasmtime: {line}");
            }
        });
        Registry {
            child: Some(child),
            port,
            data: store.data,
            stored: store.stored,
            authorization: Default::default(),
        }
    }

    /// A registry of this target's edge kind on a fresh store.
    pub fn start_edge(edge: Edge, store: Store) -> Registry {
        Registry::start_edge_with(edge, store, 0, &[], &[])
    }

    /// [`Registry::start_edge`] on `port` (0: any) with more runtime
    /// settings (`auth_*`, say).
    pub fn start_edge_with(
        edge: Edge,
        store: Store,
        port: u16,
        vars: &[(String, String)],
        mounts: &[(PathBuf, &str)],
    ) -> Registry {
        let kv = store.data.path().join("kv");
        let command = match (edge, &store.stored) {
            (Edge::S3, super::Backing::S3(bucket)) => {
                let mut all = s3_vars(bucket);
                all.extend_from_slice(vars);
                serve_command_on(
                    port,
                    &edge_file("registry-s3-wasmtime.wasm"),
                    &all,
                    None,
                    mounts,
                )
            }
            (Edge::S3, _) => unreachable!("an _edge_s3 target's store is a bucket"),
            (Edge::Kv, _) => serve_command_on(
                port,
                &edge_file("registry-kv-fs.wasm"),
                vars,
                Some(&kv),
                mounts,
            ),
        };
        let mut store = store;
        if edge == Edge::Kv {
            store.stored = super::Backing::Kv(super::KvView::new(&kv));
        }
        Registry::spawn_wasmtime(command, store)
    }
}
