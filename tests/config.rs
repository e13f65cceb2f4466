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
fn security_settings_skiff_lacks_or_cannot_use_refuse_to_start() {
    let data = tempfile::tempdir().unwrap();
    for (http, key) in [
        // Settings skiff has, that cannot be used as given: missing TLS
        // files or secret file, a bind password in the main config, a
        // bearer setup without keys, a policy with an action zot does not have.
        (
            serde_json::json!({"tls": {"cert": "/etc/skiff/cert.pem", "key": "/etc/skiff/key.pem"}}),
            "http.tls.cert",
        ),
        (
            serde_json::json!({"auth": {"ldap": {"address": "127.0.0.1", "baseDN": "dc=x",
                "credentialsFile": "/etc/skiff/bind.json", "bindPassword": "inline"}}}),
            "http.auth.ldap.bindPassword",
        ),
        (
            serde_json::json!({"auth": {"htpasswd": {"path": "/etc/skiff/no-such-htpasswd"}}}),
            "http.auth.htpasswd.path",
        ),
        (
            serde_json::json!({"auth": {"bearer": {"realm": "https://auth.example/token", "service": "reg"}}}),
            "http.auth.bearer",
        ),
        (
            serde_json::json!({"accessControl": {"repositories": {"**": {"anonymousPolicy": ["write"]}}}}),
            "http.accessControl.repositories.**.anonymousPolicy",
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

/// `skiff verify` shows every error and warning at once (not just the first),
/// exits 1 on errors, and prints nothing to stdout then.
#[test]
fn verify_reports_every_error_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    let cfg = serde_json::json!({
        "http": {"address": "127.0.0.1", "port": "eighty", "bodyTimeout": "soon"},
        "storage": {
            "rootDirectory": dir.path().join("root"),
            "gcDelay": "yesterday",
            "subPaths": {"/a/b": {"rootDirectory": dir.path().join("ab")}}
        },
        "log": {"level": "loud"},
        "colour": "blue"
    });
    std::fs::write(&path, cfg.to_string()).unwrap();
    let out = run_bounded(skiff_command("verify", &path), Duration::from_secs(60))
        .expect("skiff verify kept running");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    for key in [
        "http.port",
        "http.bodyTimeout",
        "storage.gcDelay",
        "storage.subPaths./a/b",
        "log.level",
    ] {
        let line = format!("error: {key}: ");
        assert_eq!(
            stderr.lines().filter(|l| l.starts_with(&line)).count(),
            1,
            "one error line for {key}:\n{stderr}"
        );
    }
    assert!(stderr.contains("warning: colour: unknown key"), "{stderr}");
    assert!(stderr.contains("5 errors, 1 warning"), "{stderr}");
    // What `serve` says is the same list, not just its first entry.
    let out = run_bounded(skiff_command("serve", &path), Duration::from_secs(60))
        .expect("skiff serve with errors kept running");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("5 errors"), "{stderr}");
    assert!(
        stderr.contains("log.level") && stderr.contains("http.port"),
        "{stderr}"
    );
}

/// A good config: the effective settings, defaults included, as JSON in
/// zot's key names, which read back as a config mean the same.
#[test]
fn verify_prints_the_effective_settings_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    let cfg = serde_json::json!({
        "distSpecVersion": "1.1.0",
        "http": {"address": "127.0.0.1", "port": "8080"},
        "storage": {
            "rootDirectory": dir.path().join("root"),
            "gcDelay": "90m",
            "retention": {"policies": [{"repositories": ["ci/**"], "keepTags": [{"mostRecentlyPushedCount": 5}]}]},
            "subPaths": {"/team": {"rootDirectory": dir.path().join("team"), "dedupe": false}}
        },
        "extensions": {"scrub": {"interval": "12h"}}
    });
    std::fs::write(&path, cfg.to_string()).unwrap();
    let out = run_bounded(skiff_command("verify", &path), Duration::from_secs(60))
        .expect("skiff verify kept running");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("0 errors, 0 warnings"), "{stderr}");
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    assert_eq!(shown["http"]["port"], 8080);
    assert_eq!(shown["http"]["address"], "127.0.0.1");
    assert_eq!(shown["http"]["bodyTimeout"], "1m", "a default is shown");
    assert_eq!(shown["storage"]["gcDelay"], "1h30m");
    assert_eq!(shown["storage"]["gcInterval"], "1h");
    assert_eq!(shown["storage"]["dedupe"], true);
    assert_eq!(
        shown["storage"]["retention"]["policies"][0]["keepTags"][0]["mostRecentlyPushedCount"],
        5
    );
    let team = &shown["storage"]["subPaths"]["/team"];
    assert_eq!(team["dedupe"], false);
    assert_eq!(
        team["gcDelay"], "1h30m",
        "a subpath inherits the default store's settings"
    );
    assert_eq!(shown["extensions"]["scrub"]["interval"], "12h");
    // Read back, it means the same.
    let again = dir.path().join("effective.json");
    std::fs::write(&again, &out.stdout).unwrap();
    let out2 = run_bounded(skiff_command("verify", &again), Duration::from_secs(60))
        .expect("skiff verify kept running");
    assert!(
        out2.status.success(),
        "{}",
        String::from_utf8_lossy(&out2.stderr)
    );
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&out2.stdout).unwrap(),
        shown
    );
}

/// `skiff healthcheck` (for a container's HEALTHCHECK): 0 while skiff
/// serves, 1 once it is gone.
#[test]
fn healthcheck_tells_a_serving_registry_from_a_stopped_one() {
    let mut reg = Registry::start();
    let host = reg.host();
    let check = || {
        Command::new(env!("CARGO_BIN_EXE_skiff"))
            .args(["healthcheck", &host])
            .output()
            .expect("running skiff healthcheck")
    };
    let up = check();
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    reg.stop();
    let down = check();
    assert_eq!(down.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&down.stderr).contains("not healthy"));
}
