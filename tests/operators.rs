//! What operators see of a running `skiff serve`: `/metrics` moving by
//! exactly what a push and a pull moved, `/livez` and `/readyz` (not ready
//! once the storage is gone), JSON logs carrying each request's id, and the
//! audit log of every write and delete.

mod common;

use common::*;
use serde_json::{json, Value};
use std::fs;
use std::time::Duration;

fn scrape(reg: &Registry) -> String {
    let r = reg.get("/metrics");
    assert_eq!(r.status, 200);
    r.text()
}

/// A counter's value, 0 if the series does not exist yet.
fn value(text: &str, series: &str) -> u64 {
    metric(text, series).unwrap_or(0)
}

fn requests(method: &str, route: &str, status: u16) -> String {
    format!(
        "skiff_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}}"
    )
}

#[test]
fn metrics_move_by_exactly_what_a_push_and_a_pull_moved() {
    let reg = Registry::start();
    let before = scrape(&reg);

    // A push: two blobs, then the manifest; every body sent is counted.
    let (mut sent, mut received) = (0u64, 0u64);
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let layer: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let blob = |bytes: &[u8]| {
        let d = sha256(bytes);
        let r = reg
            .req("POST", &format!("/v2/m/app/blobs/uploads/?digest={d}"))
            .header("Content-Type", "application/octet-stream")
            .body(bytes)
            .send();
        assert_eq!(r.status, 201, "{}", r.text());
        (d, r.body.len() as u64)
    };
    let (cd, got) = blob(&config);
    received += got;
    let (ld, got) = blob(&layer);
    received += got;
    sent += (config.len() + layer.len()) as u64;
    let manifest = image_manifest(&cd, config.len(), &[(&ld, layer.len())], None, None);
    let r = reg.put_manifest("m/app", "v1", OCI_MANIFEST, &manifest);
    assert_eq!(r.status, 201);
    sent += manifest.len() as u64;
    received += r.body.len() as u64;

    // A pull: the manifest by tag, both blobs, and one miss.
    let r = reg.get_manifest("m/app", "v1");
    assert_eq!(r.body, manifest);
    received += r.body.len() as u64;
    for d in [&cd, &ld] {
        let r = reg.get(&format!("/v2/m/app/blobs/{d}"));
        assert_eq!(r.status, 200);
        received += r.body.len() as u64;
    }
    let r = reg.get("/v2/m/app/manifests/nope");
    assert_eq!(r.status, 404);
    received += r.body.len() as u64;

    let after = scrape(&reg);
    let moved = |series: &str| value(&after, series) - value(&before, series);
    assert_eq!(moved(&requests("POST", "upload", 201)), 2);
    assert_eq!(moved(&requests("PUT", "manifest", 201)), 1);
    assert_eq!(moved(&requests("GET", "manifest", 200)), 1);
    assert_eq!(moved(&requests("GET", "manifest", 404)), 1);
    assert_eq!(moved(&requests("GET", "blob", 200)), 2);
    assert_eq!(moved("skiff_http_request_bytes_total"), sent);
    assert_eq!(moved("skiff_http_response_bytes_total"), received);
    // Every request is in its route's latency histogram, once.
    let count =
        |route: &str| format!("skiff_http_request_duration_seconds_count{{route=\"{route}\"}}");
    assert_eq!(moved(&count("upload")), 2);
    assert_eq!(moved(&count("manifest")), 3);
    assert_eq!(moved(&count("blob")), 2);
    let inf = "skiff_http_request_duration_seconds_bucket{route=\"blob\",le=\"+Inf\"}";
    assert_eq!(value(&after, inf), value(&after, &count("blob")));
    // The scrape itself and the probes are not API traffic.
    assert!(!after.contains("route=\"metrics\""), "{after}");
}

#[test]
fn storage_per_repository_is_reported_after_gc() {
    let reg = Registry::start_with(|cfg| {
        cfg["storage"]["gcInterval"] = json!("1s");
    });
    let (manifest, _) = reg.push_image("sized/app", "v1", "sizes");
    let m: Value = serde_json::from_slice(&manifest).unwrap();
    let expected = manifest.len() as u64
        + m["config"]["size"].as_u64().unwrap()
        + m["layers"][0]["size"].as_u64().unwrap();
    let series = "skiff_repository_bytes{repository=\"sized/app\"}";
    let reported = eventually(Duration::from_secs(20), || {
        metric(&scrape(&reg), series) == Some(expected)
    });
    assert!(
        reported,
        "{series} never became {expected}:\n{}",
        scrape(&reg)
    );
}

#[test]
fn livez_and_readyz_and_not_ready_once_the_storage_is_gone() {
    let reg = Registry::start();
    assert_eq!(reg.get("/livez").status, 200);
    assert_eq!(reg.get("/readyz").status, 200);

    // The disk goes away (an unmounted volume): alive, but not ready.
    let root = reg.root();
    let away = reg.data.path().join("root-away");
    fs::rename(&root, &away).unwrap();
    let r = reg.get("/readyz");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("storage"), "{}", r.text());
    assert_eq!(reg.get("/livez").status, 200);

    // Back: ready again, without a restart.
    fs::rename(&away, &root).unwrap();
    assert_eq!(reg.get("/readyz").status, 200);
}

const ALICE: User = User {
    name: "alice",
    password: "ops-alice-pw-51z",
};
const BOB: User = User {
    name: "bob",
    password: "ops-bob-pw-8vv",
};

#[test]
fn json_logs_carry_request_ids_and_the_audit_log_records_every_write() {
    let policy = json!({"repositories": {"**": {"policies": [
        {"users": ["alice"], "actions": ["read", "create", "update", "delete"]},
        {"users": ["bob"], "actions": ["read"]},
    ]}}});
    let logs = tempfile::tempdir().unwrap();
    let (log, audit) = (logs.path().join("skiff.log"), logs.path().join("audit.log"));
    let (l, a) = (log.clone(), audit.clone());
    let reg = Registry::start_secured(&[ALICE, BOB], &policy, Sign::Basic, move |cfg| {
        cfg["log"] = json!({"level": "debug", "format": "json", "output": l, "audit": a});
    });

    // A request id: a fresh one per request, or the client's if it sent one.
    let r = reg.get("/v2/");
    let generated = r.header("x-request-id").unwrap().to_string();
    assert!(!generated.is_empty());
    assert_ne!(
        reg.get("/v2/").header("x-request-id"),
        Some(generated.as_str())
    );
    let r = reg
        .req("GET", "/v2/")
        .header("X-Request-Id", "ops-test-4711")
        .send();
    assert_eq!(r.header("x-request-id"), Some("ops-test-4711"));

    // alice pushes; bob may read but not delete; a GET is not audited.
    reg.as_user(Some(basic(ALICE.name, ALICE.password)));
    let (_, digest) = reg.push_image("audited/app", "v1", "audit");
    reg.as_user(Some(basic(BOB.name, BOB.password)));
    assert_eq!(reg.get_manifest("audited/app", "v1").status, 200);
    let r = reg.delete(&format!("/v2/audited/app/manifests/{digest}"));
    assert_eq!(r.status, 403);
    reg.as_user(None);
    let r = reg.delete(&format!("/v2/audited/app/manifests/{digest}"));
    assert_eq!(r.status, 401);

    let entries: Vec<Value> = fs::read_to_string(&audit)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary: Vec<(String, String, String, String)> = entries
        .iter()
        .map(|e| {
            (
                e["method"].as_str().unwrap().to_string(),
                e["route"].as_str().unwrap().to_string(),
                e["user"].as_str().unwrap_or("-").to_string(),
                e["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let s = |m: &str, r: &str, u: &str, o: &str| (m.into(), r.into(), u.into(), o.into());
    assert_eq!(
        summary,
        [
            s("POST", "upload", "alice", "ok"),
            s("POST", "upload", "alice", "ok"),
            s("PUT", "manifest", "alice", "ok"),
            s("DELETE", "manifest", "bob", "denied"),
            s("DELETE", "manifest", "-", "denied"),
        ]
    );
    let put = &entries[2];
    assert_eq!(put["repository"], "audited/app");
    assert_eq!(put["reference"], "v1");
    assert_eq!(put["digest"], digest.as_str());
    assert_eq!(put["status"], 201);
    assert_eq!(entries[3]["reference"], digest.as_str());
    assert_eq!(entries[3]["status"], 403);
    for e in &entries {
        assert_eq!(e["client"], "127.0.0.1");
        assert!(e["time"].as_str().unwrap().ends_with('Z'), "{e}");
        assert!(!e["request_id"].as_str().unwrap().is_empty(), "{e}");
    }

    // Every log line is a JSON object; the client's id is in its request's lines.
    let text = fs::read_to_string(&log).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(lines
        .iter()
        .all(|l| l["level"].is_string() && l["timestamp"].is_string()));
    let tagged = lines
        .iter()
        .filter(|l| l["span"]["id"] == "ops-test-4711")
        .count();
    assert!(tagged >= 1, "no log line carries the request id:\n{text}");
    for secret in [ALICE.password, BOB.password] {
        assert!(!text.contains(secret) && !fs::read_to_string(&audit).unwrap().contains(secret));
    }
}
