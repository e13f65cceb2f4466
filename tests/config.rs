//! Configs skiff cannot honour must stop it before it serves anything: the
//! real binary, `serve` and `verify`, with zot security settings it does not
//! implement yet.

mod common;
use common::*;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Run `cmd` to completion, or kill it after `limit` and return `None`
/// (a `serve` that started would otherwise run forever).
fn run_bounded(mut cmd: Command, limit: Duration) -> Option<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting skiff");
    let started = Instant::now();
    loop {
        if child.try_wait().expect("waiting for skiff").is_some() {
            return Some(child.wait_with_output().expect("collecting output"));
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn security_settings_skiff_lacks_refuse_to_start() {
    let data = tempfile::tempdir().unwrap();
    for (http, key) in [
        (
            serde_json::json!({"tls": {"cert": "/etc/skiff/cert.pem", "key": "/etc/skiff/key.pem"}}),
            "http.tls",
        ),
        (
            serde_json::json!({"auth": {"htpasswd": {"path": "/etc/skiff/htpasswd"}}}),
            "http.auth.htpasswd",
        ),
        (
            serde_json::json!({"auth": {"bearer": {"realm": "https://auth.example/token", "service": "reg"}}}),
            "http.auth.bearer",
        ),
        (
            serde_json::json!({"accessControl": {"repositories": {"**": {"anonymousPolicy": ["read"]}}}}),
            "http.accessControl",
        ),
        (
            serde_json::json!({"auth": {"kerberos": {}}}),
            "http.auth.kerberos",
        ),
    ] {
        let mut http = http;
        http["address"] = serde_json::json!("127.0.0.1");
        http["port"] = serde_json::json!(0);
        let cfg = serde_json::json!({
            "http": http,
            "storage": {"rootDirectory": data.path().join("root")},
            "log": {"level": "warn"}
        });
        let path = data.path().join("config.json");
        std::fs::write(&path, cfg.to_string()).unwrap();
        for command in ["serve", "verify"] {
            let out = run_bounded(skiff_command(command, &path), Duration::from_secs(60))
                .unwrap_or_else(|| panic!("skiff {command} with {key} kept running"));
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                !out.status.success(),
                "skiff {command} with {key} succeeded; stderr: {stderr}"
            );
            assert!(
                stderr.contains(&format!("{key}: ")),
                "skiff {command} with {key}: the error does not name the key: {stderr}"
            );
            assert!(
                !String::from_utf8_lossy(&out.stdout).contains("listening"),
                "skiff {command} with {key} listened"
            );
        }
        assert!(
            !data.path().join("root").exists(),
            "{key}: the refused config still created the data directory"
        );
    }
}
