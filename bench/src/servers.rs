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
    /// Where the server keeps its data (the scale mode's direct fill
    /// writes there).
    pub data: PathBuf,
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
        Server::start("skiff", cmd, addr, dir, "/v2/").await
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
        Server::start("distribution", cmd, addr, dir, "/v2/").await
    }

    /// nginx serving `root`'s files as they are (the yardstick for blob
    /// reads: a web server handing files to the kernel).
    pub async fn nginx(bin: &Path, root: &Path) -> Result<Server> {
        let dir = TempDir::new("nginx")?;
        let addr = free_addr()?;
        let d = dir.0.display();
        let cfg = format!(
            "daemon off;\nworker_processes auto;\npid {d}/nginx.pid;\nerror_log stderr error;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n  keepalive_requests 1000000;\n\
               client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n\
               uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
               server {{ listen {addr}; root {}; location /nginx-up {{ return 200; }} }}\n}}\n",
            root.display()
        );
        let path = dir.0.join("nginx.conf");
        std::fs::write(&path, cfg)?;
        let mut cmd = Command::new(bin);
        cmd.arg("-c").arg(&path).arg("-p").arg(&dir.0);
        Server::start("nginx", cmd, addr, dir, "/nginx-up").await
    }

    async fn start(
        name: &'static str,
        mut cmd: Command,
        addr: SocketAddr,
        dir: TempDir,
        probe: &str,
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
            data: dir.0.join("data"),
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut conn = Conn::new(addr);
            if let Ok(a) = conn.get(probe, None).await {
                if a.status.is_success() {
                    return Ok(server);
                }
            }
            if let Some(status) = server.child.try_wait()? {
                bail!("{name} exited at start: {status}");
            }
            if Instant::now() > deadline {
                bail!("{name} did not answer {probe} within 30 s");
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

impl Drop for Server {
    /// nginx is asked to stop: killing its master would leave its workers
    /// running (and holding the port and the terminal).
    fn drop(&mut self) {
        let Some(pid) = self.child.id().filter(|_| self.name == "nginx") else {
            return;
        };
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && !matches!(self.child.try_wait(), Ok(Some(_))) {
            std::thread::sleep(Duration::from_millis(20));
        }
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
