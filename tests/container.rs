//! skiff's container image (container/Dockerfile, staged by
//! scripts/container-image.sh around the very binary these tests run): it
//! starts with no config, serves on 5000 as a non-root user with its data
//! in a volume, reports healthy, and holds its own image.

mod common;

use common::*;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The user the image runs as (distroless's "nonroot").
const USER: u32 = 65532;

/// A container, a volume and an image of one test, removed on drop.
struct Running {
    engine: Engine,
    container: String,
    volume: String,
}

impl Running {
    /// What the container printed, for failure messages.
    fn logs(&self) -> String {
        let o = output(self.engine.cmd().args(["logs", &self.container]));
        String::from_utf8_lossy(&o.stderr).to_string() + &String::from_utf8_lossy(&o.stdout)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self
            .engine
            .cmd()
            .args(["rm", "-f", "-v", &self.container])
            .output();
        let _ = self
            .engine
            .cmd()
            .args(["volume", "rm", "-f", &self.volume])
            .output();
    }
}

fn inspect(engine: &Engine, what: &str, format: &str) -> String {
    run(engine.cmd().args(["inspect", "--format", format, what]))
        .trim()
        .to_string()
}

/// Build the image around the tests' binary as `skiff-test-image:<unique>`.
fn build_image(engine: &Engine, unique: &str) -> String {
    let bin = Path::new(env!("CARGO_BIN_EXE_skiff"));
    let image = format!("skiff-test-image:{unique}");
    let out = output(
        Command::new("bash")
            .arg(workspace().join("scripts/container-image.sh"))
            .arg(&image)
            .env("SKIFF_BIN", bin),
    );
    assert!(
        out.status.success(),
        "scripts/container-image.sh failed (the tests' skiff must be linked statically: \
         scripts/test.sh builds it so):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    engine.remember(&image);
    image
}

#[test]
fn the_skiff_image_serves_as_nonroot_and_holds_itself() {
    let engine = Engine::docker();
    let unique = format!("{}-{}", std::process::id(), rand::random::<u32>());
    let image = build_image(&engine, &unique);
    assert_eq!(
        inspect(&engine, &image, "{{.Config.User}}"),
        format!("{USER}:{USER}")
    );
    assert!(inspect(&engine, &image, "{{json .Config.Volumes}}").contains("/var/lib/skiff"));

    // Published on a free port of 127.0.0.1, a health check every second.
    let running = Running {
        container: format!("skiff-test-{unique}"),
        volume: format!("skiff-test-data-{unique}"),
        engine,
    };
    let engine = &running.engine;
    run(engine.cmd().args([
        "run",
        "-d",
        "--name",
        &running.container,
        "-p",
        "127.0.0.1::5000",
        "-v",
        &format!("{}:/var/lib/skiff", running.volume),
        "--health-interval",
        "1s",
        &image,
    ]));
    let port = run(engine.cmd().args(["port", &running.container, "5000/tcp"]));
    let host = port
        .lines()
        .next()
        .and_then(|l| l.trim().rsplit_once(':'))
        .map(|(_, p)| format!("127.0.0.1:{p}"))
        .unwrap_or_else(|| panic!("no published port in {port:?}"));
    let reg = Registry::attach(&host);
    let healthy = eventually(Duration::from_secs(60), || {
        inspect(engine, &running.container, "{{.State.Health.Status}}") == "healthy"
    });
    let logs = || running.logs();
    assert!(healthy, "the container never became healthy:\n{}", logs());
    assert_eq!(reg.get("/v2/").status, 200);

    // Push the image into the registry it contains, and pull it back.
    let pushed = format!("{host}/skiff/skiff:{unique}");
    engine.tag(&image, &pushed);
    let out = run(engine.cmd().args(["push", &pushed]));
    let digest = digest_after(&out, ": digest: ");
    let m = reg.get_manifest("skiff/skiff", &unique);
    assert_eq!(m.status, 200, "{}", m.text());
    assert_eq!(sha256(&m.body), digest);
    let layers = engine.diff_ids(&image);
    engine.rmi(&[&pushed, &image]);
    let out = run(engine.cmd().args(["pull", &pushed]));
    engine.remember(&pushed);
    assert_eq!(digest_after(&out, "Digest: "), digest);
    assert_eq!(engine.diff_ids(&pushed), layers);
    // The binary came back whole: the layer holding it has its bytes.
    let config = reg.pull_blob(
        "skiff/skiff",
        m.json()["config"]["digest"].as_str().unwrap(),
    );
    assert!(String::from_utf8_lossy(&config).contains("/usr/local/bin/skiff"));

    // What it stored is in the volume, owned by the non-root user.
    let mountpoint = inspect(engine, &running.volume, "{{.Mountpoint}}");
    let blob = Path::new(&mountpoint)
        .join("skiff/skiff/blobs/sha256")
        .join(hex_of(&digest));
    let meta = std::fs::metadata(&blob)
        .unwrap_or_else(|e| panic!("{}: {e}; logs:\n{}", blob.display(), logs()));
    assert_eq!(meta.uid(), USER, "stored as the image's user");
    assert_eq!(file_sha256(&blob), digest);
}

/// The static binary in a scratch image (no NSS modules, no resolver
/// library) reaches an S3 endpoint by host name, and stores there.
#[test]
fn the_image_reaches_s3_by_host_name() {
    let engine = Engine::docker();
    let unique = format!("{}-{}", std::process::id(), rand::random::<u32>());
    let image = build_image(&engine, &unique);
    let bucket = std::sync::Arc::new(Bucket::create());
    let moto_port = std::env::var("SKIFF_TEST_S3_ENDPOINT")
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    let mut driver = bucket.driver();
    driver["regionendpoint"] = format!("http://motohost:{moto_port}").into();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = serde_json::json!({
        "http": {"address": "127.0.0.1", "port": port},
        "storage": {"rootDirectory": "/var/lib/skiff", "storageDriver": driver},
    });
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
    // Readable by the image's user.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        dir.path().join("config.json"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let running = Running {
        container: format!("skiff-test-{unique}"),
        volume: format!("skiff-test-data-{unique}"),
        engine,
    };
    let engine = &running.engine;
    run(engine.cmd().args([
        "run",
        "-d",
        "--name",
        &running.container,
        "--network",
        "host",
        "--add-host",
        "motohost:127.0.0.1",
        "-v",
        &format!("{}:/cfg:ro", dir.path().display()),
        "-v",
        &format!("{}:/var/lib/skiff", running.volume),
        &image,
        "serve",
        "/cfg/config.json",
    ]));
    let host = format!("127.0.0.1:{port}");
    let reg = Registry::attach(&host);
    let logs = || running.logs();
    let up = eventually(Duration::from_secs(60), || {
        std::net::TcpStream::connect(&host).is_ok() && reg.get("/v2/").status == 200
    });
    assert!(up, "skiff in the container never served:\n{}", logs());
    assert!(
        !logs().contains("no native root CA certificates"),
        "the image has no CA certificates for TLS to S3:\n{}",
        logs()
    );
    let d = reg.push_blob("named/repo", b"stored by host name");
    assert_eq!(reg.pull_blob("named/repo", &d), b"stored by host name");
    let stored = Backing::S3(bucket).files("named/repo");
    assert!(
        stored.contains(&format!("blobs/sha256/{}", hex_of(&d))),
        "{stored:?}\n{}",
        logs()
    );
}
