//! `http.tls` with a test CA made here by openssl: skopeo, podman and
//! oras-py sign in through bearer tokens over TLS and push and pull; mutual
//! TLS names the user by the client certificate; SIGHUP swaps the
//! certificate without dropping the connections already open. Tokens that
//! expired, name another repository or were forged get 401 over TLS too,
//! and write nothing.

mod common;

use common::*;
use serde_json::json;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const ALICE: User = User {
    name: "alice",
    password: "tls-alice-pw-7x3",
};
const BOB: User = User {
    name: "bob",
    password: "tls-bob-pw-k9q",
};

/// alice may do everything in `team/**`; bob may only read it.
fn policy() -> serde_json::Value {
    json!({
        "repositories": {
            "team/**": {"policies": [
                {"users": ["alice"], "actions": ["read", "create", "update", "delete"]},
                {"users": ["bob"], "actions": ["read"]},
            ]},
            "alice/**": {"policies": [
                {"users": ["alice"], "actions": ["read", "create", "update", "delete"]},
            ]},
        },
    })
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, and certificates it signs, in one directory.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// A CA named `name` (`NAME.crt`, `NAME.key`).
    fn new(name: &str) -> Pki {
        let pki = Pki {
            dir: tempfile::tempdir().unwrap(),
        };
        let (crt, key) = (format!("{name}.crt"), format!("{name}.key"));
        openssl(
            pki.path(),
            &[
                "req",
                "-x509",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "2",
                "-keyout",
                &key,
                "-out",
                &crt,
                "-subj",
                &format!("/CN={name}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        pki.note_key(&key);
        pki
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn note_key(&self, key: &str) {
        note_pem(&self.path().join(key));
    }

    /// A certificate for `cn` signed by the CA `ca`, for a server on
    /// 127.0.0.1 or a client: `NAME.crt` and `NAME.key`.
    fn issue(&self, ca: &str, name: &str, cn: &str, server: bool) -> (PathBuf, PathBuf) {
        let (crt, key, csr) = (
            format!("{name}.crt"),
            format!("{name}.key"),
            format!("{name}.csr"),
        );
        openssl(
            self.path(),
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                &format!("/CN={cn}"),
            ],
        );
        let ext = format!("{name}.ext");
        let usage = if server {
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
        } else {
            "extendedKeyUsage=clientAuth\n"
        };
        fs::write(
            self.path().join(&ext),
            format!("basicConstraints=CA:FALSE\n{usage}"),
        )
        .unwrap();
        openssl(
            self.path(),
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &format!("{ca}.crt"),
                "-CAkey",
                &format!("{ca}.key"),
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                &crt,
                "-extfile",
                &ext,
            ],
        );
        self.note_key(&key);
        (self.path().join(crt), self.path().join(key))
    }

    fn file(&self, name: &str) -> PathBuf {
        self.path().join(name)
    }

    /// A directory in the containers/image layout (`certs.d`): the CA as
    /// `ca.crt`, and with `client`, its pair as `client.cert`/`client.key`.
    fn cert_dir(&self, ca: &str, client: Option<&str>) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        fs::copy(self.file(&format!("{ca}.crt")), d.path().join("ca.crt")).unwrap();
        if let Some(c) = client {
            fs::copy(self.file(&format!("{c}.crt")), d.path().join("client.cert")).unwrap();
            fs::copy(self.file(&format!("{c}.key")), d.path().join("client.key")).unwrap();
        }
        d
    }
}

fn tls_config(cfg: &mut serde_json::Value, pki: &Pki, cacert: bool) {
    cfg["http"]["tls"] = json!({
        "cert": pki.file("server.crt"),
        "key": pki.file("server.key"),
    });
    if cacert {
        cfg["http"]["tls"]["cacert"] = json!(pki.file("ca.crt"));
    }
}

/// A secured registry over TLS: htpasswd users, bearer tokens from its own
/// endpoint (an https realm), the policy above.
fn start_tls_bearer(pki: &Pki) -> Registry {
    Registry::start_secured(&[ALICE, BOB], &policy(), Sign::Tokens, |cfg| {
        tls_config(cfg, pki, false);
        let port = cfg["http"]["port"].as_u64().unwrap();
        cfg["http"]["auth"]["bearer"]["realm"] =
            format!("https://127.0.0.1:{port}/auth/token").into();
    })
}

/// A token from the registry's endpoint over TLS, for alice and `scope`.
fn tls_token(reg: &Registry, pki: &Pki, user: &User, scope: &str) -> (u16, Option<String>) {
    let creds = format!("{}:{}", user.name, user.password);
    let (status, body) = curl(
        reg,
        pki,
        &format!("/auth/token?service={SERVICE}&scope={scope}"),
        &["-u", &creds],
    );
    let token = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["token"].as_str().map(str::to_string));
    if let Some(t) = &token {
        note_secret(t);
    }
    (status, token)
}

/// `curl` against the registry over TLS, trusting the test CA; `extra`
/// adds credentials or a client certificate. Returns the HTTP status (0 if
/// no response came, e.g. the handshake failed) and the body.
fn curl(reg: &Registry, pki: &Pki, path: &str, extra: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(pki.file("ca.crt"))
        .args(extra)
        .args(["-w", "\n%{http_code}"])
        .arg(format!("https://127.0.0.1:{}{path}", reg.port))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    match code.trim().parse() {
        Ok(code) if code != 0 => (code, body.to_string()),
        // No answer: curl's own words say why.
        _ => (0, String::from_utf8_lossy(&out.stderr).to_string()),
    }
}

/// A one-image layout whose layer is a real tar (podman unpacks it).
fn image_layout(dir: &Path, tag: &str, text: &str) -> String {
    let files = dir.join("files");
    fs::create_dir_all(&files).unwrap();
    fs::write(files.join("hello.txt"), text).unwrap();
    let tar = dir.join("layer.tar");
    run(Command::new("tar")
        .arg("-cf")
        .arg(&tar)
        .arg("-C")
        .arg(&files)
        .arg("hello.txt"));
    let mut layout = Layout::create(&dir.join("layout"));
    let layer = layout.blob(LAYER_TAR, &fs::read(&tar).unwrap());
    let (desc, _) = layout.image("amd64", &layer);
    layout.tag(tag, &desc);
    layout.save();
    desc["digest"].as_str().unwrap().to_string()
}

fn tags_on_disk(reg: &Registry, repo: &str) -> Vec<String> {
    let index = reg.root().join(repo).join("index.json");
    if !index.exists() {
        return Vec::new();
    }
    read_json(&index)["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str())
        .map(str::to_string)
        .collect()
}

#[test]
fn skopeo_podman_and_oras_sign_in_with_tokens_and_push_and_pull_over_tls() {
    let pki = Pki::new("ca");
    pki.issue("ca", "server", "127.0.0.1", true);
    let reg = start_tls_bearer(&pki);
    let host = reg.host();
    let certs = pki.cert_dir("ca", None);
    let tmp = tempfile::tempdir().unwrap();
    let creds = |u: &User| format!("{}:{}", u.name, u.password);

    // Plain HTTP on the TLS port gets no registry answer.
    let plain = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .arg(format!("http://{host}/v2/"))
        .output()
        .unwrap();
    assert_ne!(String::from_utf8_lossy(&plain.stdout), "200");
    // Anonymous over TLS: a bearer challenge naming the https realm.
    let (status, _) = curl(&reg, &pki, "/v2/", &[]);
    assert_eq!(status, 401);

    // skopeo up, with alice's password (bearer flow: 401 → token → retry).
    let digest = image_layout(tmp.path(), "1", "over tls\n");
    let layout = tmp.path().join("layout");
    let digestfile = tmp.path().join("digest");
    run(skopeo(tmp.path())
        .args(["copy", "--preserve-digests", "--dest-cert-dir"])
        .arg(certs.path())
        .args(["--dest-creds", &creds(&ALICE), "--digestfile"])
        .arg(&digestfile)
        .arg(format!("oci:{}:1", layout.display()))
        .arg(format!("docker://{host}/team/app:1")));
    assert_eq!(fs::read_to_string(&digestfile).unwrap().trim(), digest);
    assert_eq!(tags_on_disk(&reg, "team/app"), ["1"]);

    // bob reads it back (raw manifest bytes hash to the digest)...
    let raw = output(
        skopeo(tmp.path())
            .args(["inspect", "--raw", "--cert-dir"])
            .arg(certs.path())
            .args(["--creds", &creds(&BOB)])
            .arg(format!("docker://{host}/team/app:1")),
    );
    assert!(
        raw.status.success(),
        "{}",
        String::from_utf8_lossy(&raw.stderr)
    );
    assert_eq!(sha256(&raw.stdout), digest);
    // ...but may not push there, and a wrong password gets nowhere.
    for (who, why) in [
        (creds(&BOB), "bob has read only"),
        (format!("alice:{}-wrong", ALICE.password), "wrong password"),
    ] {
        run_failing(
            skopeo(tmp.path())
                .args(["copy", "--preserve-digests", "--dest-cert-dir"])
                .arg(certs.path())
                .args(["--dest-creds", &who])
                .arg(format!("oci:{}:1", layout.display()))
                .arg(format!("docker://{host}/team/app:refused")),
        );
        assert_eq!(tags_on_disk(&reg, "team/app"), ["1"], "{why}");
    }
    // Without the CA, skopeo does not trust the server.
    let untrusted = output(
        skopeo(tmp.path())
            .args(["inspect", "--raw", "--creds", &creds(&BOB)])
            .arg(format!("docker://{host}/team/app:1")),
    );
    assert!(!untrusted.status.success());
    assert!(
        String::from_utf8_lossy(&untrusted.stderr).contains("certificate"),
        "{}",
        String::from_utf8_lossy(&untrusted.stderr)
    );

    // podman pulls what skopeo pushed, and pushes it under another tag.
    let podman = Engine::podman();
    let src = format!("{host}/team/app:1");
    run(podman
        .cmd()
        .args(["pull", "-q", "--cert-dir"])
        .arg(certs.path())
        .args(["--creds", &creds(&BOB), &src]));
    podman.remember(&src);
    let pulled = run(podman
        .cmd()
        .args(["image", "inspect", "--format", "{{.Digest}}", &src]));
    assert_eq!(pulled.trim(), digest);
    let podman_digest = tmp.path().join("podman-digest");
    run(podman
        .cmd()
        .args(["push", "--cert-dir"])
        .arg(certs.path())
        .args(["--creds", &creds(&ALICE), "--digestfile"])
        .arg(&podman_digest)
        .arg(&src)
        .arg(format!("docker://{host}/team/app:2")));
    let mut tags = tags_on_disk(&reg, "team/app");
    tags.sort();
    assert_eq!(tags, ["1", "2"]);
    let (status, body) = curl(&reg, &pki, "/v2/team/app/tags/list", &["-u", &creds(&BOB)]);
    // Basic credentials work too where bearer is on (the token endpoint is
    // one way; the registry also accepts the password directly).
    assert_eq!(status, 200, "{body}");

    // oras-py: push an artifact with alice, pull it back with bob.
    let work = tempfile::tempdir().unwrap();
    fs::write(work.path().join("file.txt"), "an artifact over tls\n").unwrap();
    let python = std::env::var("SKIFF_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = output(
        Command::new(python)
            .arg(workspace().join("tests/clients/oras_tls.py"))
            .args([&host, work.path().to_str().unwrap()])
            .args([ALICE.name, ALICE.password, BOB.name, BOB.password])
            .env("REQUESTS_CA_BUNDLE", pki.file("ca.crt")),
    );
    assert!(
        out.status.success(),
        "oras-py: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let pulled = fs::read_to_string(work.path().join("pulled/file.txt")).unwrap();
    assert_eq!(pulled, "an artifact over tls\n");
    assert_eq!(tags_on_disk(&reg, "team/artifact"), ["v1"]);
    // bob's push through oras-py was refused and wrote nothing.
    assert!(tags_on_disk(&reg, "team/bob-artifact").is_empty());
}

#[test]
fn mutual_tls_names_the_user_by_the_client_certificate() {
    let pki = Pki::new("ca");
    pki.issue("ca", "server", "127.0.0.1", true);
    pki.issue("ca", "alice", "alice", false);
    pki.issue("ca", "bob", "bob", false);
    // mallory's certificate says alice, but another CA signed it.
    let other = Pki::new("other");
    other.issue("other", "mallory", "alice", false);
    let (store, cfg_path) = write_config(|cfg| {
        cfg["log"]["level"] = "debug".into();
        cfg["http"]["accessControl"] = policy();
        tls_config(cfg, &pki, true);
    });
    let reg = Registry::spawn(skiff_command("serve", &cfg_path), store);
    let host = reg.host();
    let cert = |name: &str, at: &Pki| -> Vec<String> {
        vec![
            "--cert".into(),
            at.file(&format!("{name}.crt")).display().to_string(),
            "--key".into(),
            at.file(&format!("{name}.key")).display().to_string(),
        ]
    };

    // No certificate, or one from another CA: no TLS session at all.
    assert_eq!(curl(&reg, &pki, "/v2/", &[]).0, 0);
    let mallory = cert("mallory", &other);
    assert_eq!(curl(&reg, &pki, "/v2/", &strs(&mallory)).0, 0);
    // alice's certificate: in, as alice.
    let alice = cert("alice", &pki);
    assert_eq!(curl(&reg, &pki, "/v2/", &strs(&alice)).0, 200);

    // skopeo with alice's certificate pushes where alice may, not elsewhere.
    let tmp = tempfile::tempdir().unwrap();
    let digest = image_layout(tmp.path(), "1", "mutual\n");
    let layout = tmp.path().join("layout");
    let alice_dir = pki.cert_dir("ca", Some("alice"));
    run(skopeo(tmp.path())
        .args(["copy", "--preserve-digests", "--dest-cert-dir"])
        .arg(alice_dir.path())
        .arg(format!("oci:{}:1", layout.display()))
        .arg(format!("docker://{host}/alice/app:1")));
    assert_eq!(tags_on_disk(&reg, "alice/app"), ["1"]);
    run_failing(
        skopeo(tmp.path())
            .args(["copy", "--preserve-digests", "--dest-cert-dir"])
            .arg(alice_dir.path())
            .arg(format!("oci:{}:1", layout.display()))
            .arg(format!("docker://{host}/elsewhere/app:1")),
    );
    assert!(!reg.root().join("elsewhere").exists());
    let (status, body) = curl(&reg, &pki, "/v2/alice/app/manifests/1", &strs(&alice));
    assert_eq!(status, 200);
    assert_eq!(sha256(body.as_bytes()), digest);

    // bob's certificate reads team/** but not alice/**: 403, he is known.
    let bob = cert("bob", &pki);
    let (status, body) = curl(&reg, &pki, "/v2/alice/app/manifests/1", &strs(&bob));
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("DENIED"), "{body}");
    // The catalog shows each only what they may read.
    let (_, cat) = curl(&reg, &pki, "/v2/_catalog", &strs(&alice));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&cat).unwrap()["repositories"],
        json!(["alice/app"])
    );
    let (_, cat) = curl(&reg, &pki, "/v2/_catalog", &strs(&bob));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&cat).unwrap()["repositories"],
        json!([])
    );
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// A TLS client that keeps one connection open (tests/clients/tls_probe.py).
struct Probe {
    child: std::process::Child,
    lines: BufReader<std::process::ChildStdout>,
}

impl Probe {
    fn start(port: u16, ca: &Path) -> Probe {
        let python = std::env::var("SKIFF_PYTHON").unwrap_or_else(|_| "python3".into());
        let mut child = Command::new(python)
            .arg(workspace().join("tests/clients/tls_probe.py"))
            .arg(port.to_string())
            .arg(ca)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap());
        Probe { child, lines }
    }

    /// Send a command; its answer line.
    fn ask(&mut self, command: &str) -> String {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{command}").unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        self.lines.read_line(&mut line).unwrap();
        line.trim().to_string()
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn sighup_swaps_the_certificate_and_keeps_open_connections() {
    let pki = Pki::new("ca");
    pki.issue("ca", "server", "127.0.0.1", true);
    let first = fs::read_to_string(pki.file("server.crt")).unwrap();
    let (store, cfg_path) = write_config(|cfg| {
        cfg["http"]["port"] = free_port().into();
        tls_config(cfg, &pki, false);
    });
    let reg = Registry::spawn(skiff_command("serve", &cfg_path), store);

    let mut probe = Probe::start(reg.port, &pki.file("ca.crt"));
    // "get" sends GET /v2/ on the open connection: the status, and the
    // sha256 of the certificate that connection saw.
    let before = probe.ask("get");
    let (status, old_cert) = before.split_once(' ').unwrap();
    assert_eq!(status, "200");

    // A new certificate in place of the old one, and SIGHUP.
    pki.issue("ca", "server", "127.0.0.1", true);
    assert_ne!(fs::read_to_string(pki.file("server.crt")).unwrap(), first);
    reg.signal(libc::SIGHUP);
    let swapped = eventually(Duration::from_secs(10), || {
        let fresh = probe.ask("new");
        fresh
            .split_once(' ')
            .is_some_and(|(s, c)| s == "200" && c != old_cert)
    });
    assert!(swapped, "new connections never got the new certificate");
    // The connection opened before the swap still serves, on its session.
    assert_eq!(probe.ask("get"), before);

    // A broken file and SIGHUP: the server keeps the certificate it has.
    let now = probe.ask("new");
    fs::write(pki.file("server.crt"), "not a certificate\n").unwrap();
    reg.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(probe.ask("new"), now);
}

/// Over TLS, as over plain HTTP: a wrong password gets no token; a token
/// used on another repository, with its claims changed, with `alg: none`,
/// or after it expired gets 401 with a bearer challenge; none writes a
/// byte. (tests/auth.rs runs the same refusals against an external
/// issuer's tokens.)
#[test]
fn stale_misdirected_and_forged_tokens_over_tls_get_401_and_write_nothing() {
    let pki = Pki::new("ca");
    pki.issue("ca", "server", "127.0.0.1", true);
    let reg = Registry::start_secured(&[ALICE, BOB], &policy(), Sign::Tokens, |cfg| {
        tls_config(cfg, &pki, false);
        let port = cfg["http"]["port"].as_u64().unwrap();
        cfg["http"]["auth"]["bearer"]["realm"] =
            format!("https://127.0.0.1:{port}/auth/token").into();
        // Short-lived tokens, so one can expire within the test (past
        // the verifier's leeway for clock skew).
        cfg["http"]["auth"]["bearer"]["expiration"] = 1.into();
    });
    let alice = format!("{}:{}", ALICE.name, ALICE.password);
    // What a push of `text` into `repo` with `token` answers, and the digest.
    let push = |repo: &str, token: &str, text: &str| -> (u16, String, String) {
        let d = sha256(text.as_bytes());
        let (status, body) = curl(
            &reg,
            &pki,
            &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
            &[
                "-X",
                "POST",
                "-H",
                &format!("Authorization: Bearer {token}"),
                "-H",
                "Content-Type: application/octet-stream",
                "--data-binary",
                text,
            ],
        );
        (status, body, d)
    };
    // HEAD over HTTP/2 (curl's choice over TLS), which once reset the
    // stream: the blob's body was polled though a HEAD sends none.
    let stored = |repo: &str, d: &str| {
        let (status, _) = curl(
            &reg,
            &pki,
            &format!("/v2/{repo}/blobs/{d}"),
            &["-I", "-u", &alice],
        );
        status
    };

    let wrong = User {
        name: "alice",
        password: "not-alices-password",
    };
    let (status, token) = tls_token(&reg, &pki, &wrong, "repository:team/app:pull,push");
    assert_eq!((status, token.is_none()), (401, true));

    let (status, token) = tls_token(&reg, &pki, &ALICE, "repository:team/app:pull,push");
    assert_eq!(status, 200);
    let token = token.expect("a token");
    let (status, body, d) = push("team/app", &token, "a good token's blob");
    assert_eq!(status, 201, "{body}");
    assert_eq!(stored("team/app", &d), 200);

    let (tampered, unsigned) = forged(&token, "alice/private");
    let refused = |what: &str, token: &str, repo: &str| {
        let (status, body, d) = push(repo, token, &format!("a blob pushed with a {what} token"));
        assert_eq!(status, 401, "a {what} token: {body}");
        assert!(body.contains("UNAUTHORIZED"), "a {what} token: {body}");
        assert_eq!(stored(repo, &d), 404, "a {what} token wrote {repo} {d}");
    };
    refused("another repository's", &token, "team/other");
    refused("tampered", &tampered, "alice/private");
    refused("alg: none", &unsigned, "alice/private");
    // Past its lifetime and the verifier's leeway, the good token is stale.
    std::thread::sleep(Duration::from_secs(1 + 31));
    refused("expired", &token, "team/app");
}
