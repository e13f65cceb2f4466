//! The registries the compare and scale modes start themselves: skiff and
//! CNCF distribution (Debian's `docker-registry`), each on a free loopback
//! port with its data in a fresh directory, stopped when dropped.

use crate::client::Conn;
use anyhow::{bail, Context, Result};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

pub struct Server {
    pub name: &'static str,
    pub addr: SocketAddr,
    child: Child,
    _dir: TempDir,
}

impl Server {
    /// `skiff serve` with its defaults but the data directory and port.
    pub async fn skiff(bin: &Path) -> Result<Server> {
        let dir = TempDir::new("skiff")?;
        let addr = free_addr()?;
        let cfg = serde_json::json!({
            "storage": {"rootDirectory": dir.0.join("data")},
            "http": {"address": "127.0.0.1", "port": addr.port()},
            "log": {"level": "error"},
        });
        let path = dir.0.join("config.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&cfg)?)?;
        let mut cmd = Command::new(bin);
        cmd.arg("serve").arg(&path);
        Server::start("skiff", cmd, addr, dir).await
    }

    /// CNCF distribution as Debian packages it, filesystem storage,
    /// deletes on, logs off.
    pub async fn distribution(bin: &Path) -> Result<Server> {
        let dir = TempDir::new("distribution")?;
        let addr = free_addr()?;
        let cfg = format!(
            "version: 0.1\n\
             log:\n  level: error\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: {addr}\n",
            dir.0.join("data").display()
        );
        let path = dir.0.join("config.yml");
        std::fs::write(&path, cfg)?;
        let mut cmd = Command::new(bin);
        cmd.arg("serve").arg(&path);
        Server::start("distribution", cmd, addr, dir).await
    }

    async fn start(
        name: &'static str,
        mut cmd: Command,
        addr: SocketAddr,
        dir: TempDir,
    ) -> Result<Server> {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let mut server = Server {
            name,
            addr,
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut conn = Conn::new(addr);
            if let Ok(a) = conn.get("/v2/", None).await {
                if a.status.is_success() {
                    return Ok(server);
                }
            }
            if let Some(status) = server.child.try_wait()? {
                bail!("{name} exited at start: {status}");
            }
            if Instant::now() > deadline {
                bail!("{name} did not answer /v2/ within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The server's resident set size, in bytes (Linux), if it can be read.
    pub fn rss(&self) -> Option<u64> {
        let pid = self.child.id()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    }
}

fn free_addr() -> Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

/// A directory removed when dropped (tempfile is only a dev-dependency).
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> Result<TempDir> {
        let base = std::env::temp_dir();
        for _ in 0..100 {
            let p = base.join(format!("skiff-bench-{what}-{:016x}", rand::random::<u64>()));
            if std::fs::create_dir(&p).is_ok() {
                return Ok(TempDir(p));
            }
        }
        bail!("could not make a directory under {}", base.display())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
