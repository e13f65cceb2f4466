//! Registries with authentication on, and clients that sign in: Basic
//! credentials on every request, or bearer tokens fetched from the
//! registry's token endpoint the way docker and skopeo do (a 401's
//! challenge names the realm and scope; the token is fetched with Basic
//! credentials and the request sent again).
//!
//! A secured registry is `skiff serve` with `http.auth` and
//! `http.accessControl`, or, in an `*_edge_*` target, the edge composition
//! under `wasmtime serve` with the same users, policy and key as runtime
//! settings.

use super::{write_config, Registry, Resp, EDGE};
use std::path::Path;
use std::process::Command;

/// Note a secret for the run's check that no log shows it (scripts/test.sh
/// greps the whole output for every line of `$SKIFF_SECRETS`).
pub fn note_secret(secret: &str) {
    let Some(path) = std::env::var_os("SKIFF_SECRETS") else {
        return;
    };
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("the secrets file");
    // One write per call: appends from tests running at once must not
    // interleave into a blank line, which would match every line of output.
    let mut text = String::new();
    for line in secret.lines().map(str::trim).filter(|l| l.len() >= 8) {
        text.push_str(line);
        text.push('\n');
    }
    f.write_all(text.as_bytes()).expect("noting a secret");
}

/// The body lines of a PEM key (not its armour, which is no secret).
pub fn note_pem(path: &Path) {
    let pem = std::fs::read_to_string(path).unwrap();
    note_secret(
        &pem.lines()
            .filter(|l| !l.starts_with("-----"))
            .collect::<Vec<_>>()
            .join("\n"),
    );
}

/// A user of the test registries, and the password they sign in with.
pub struct User {
    pub name: &'static str,
    pub password: &'static str,
}

/// The realm and service the secured registries' tokens are for.
pub const SERVICE: &str = "skiff-test";

/// A bcrypt htpasswd line (Python's crypt: another implementation than
/// the one that checks it).
pub fn htpasswd_line(user: &str, password: &str) -> String {
    let script = "import crypt,sys; print(sys.argv[1] + ':' + \
                  crypt.crypt(sys.argv[2], crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16)))";
    python(script, &[user, password])
}

/// What the Python `script` prints for `args`, trimmed (the test run's
/// venv, which has `cryptography`, or python3).
fn python(script: &str, args: &[&str]) -> String {
    let python = std::env::var("SKIFF_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(python)
        .args(["-W", "ignore", "-c", script])
        .args(args)
        .output()
        .expect("running python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Two forgeries of a real `token`, its grant moved to `repo`: the changed
/// claims under the original signature, and the same claims with `alg: none`
/// and no signature. Both are noted as secrets.
pub fn forged(token: &str, repo: &str) -> (String, String) {
    let script = r#"
import base64, json, sys
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
unb64 = lambda s: base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
head, body, sig = sys.argv[1].split(".")
claims = json.loads(unb64(body))
for a in claims["access"]:
    a["name"] = sys.argv[2]
body = b64(json.dumps(claims).encode())
print(head + "." + body + "." + sig)
print(b64(json.dumps({"alg": "none", "typ": "JWT"}).encode()) + "." + body + ".")
"#;
    let out = python(script, &[token, repo]);
    let (tampered, unsigned) = out.split_once('\n').expect("two forgeries");
    note_secret(tampered);
    note_secret(unsigned);
    (tampered.to_string(), unsigned.trim().to_string())
}

pub fn basic(user: &str, password: &str) -> String {
    use std::fmt::Write;
    // base64 by hand would be a second implementation to trust; openssl's is the reference.
    let mut out = String::new();
    let encoded = Command::new("sh")
        .arg("-c")
        .arg("printf '%s' \"$1\" | openssl base64 -A")
        .arg("sh")
        .arg(format!("{user}:{password}"))
        .output()
        .expect("openssl base64");
    let _ = write!(
        out,
        "Basic {}",
        String::from_utf8_lossy(&encoded.stdout).trim()
    );
    out
}

/// A fresh EC P-256 private key (PEM), made by openssl.
pub fn ec_key_pem(dir: &Path, name: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    let status = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
        ])
        .arg(&path)
        .status()
        .expect("openssl genpkey");
    assert!(status.success());
    path
}

/// A port that was free a moment ago (a secured registry must know its own
/// address for the realm it names).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// How a [`Registry::start_secured`] authenticates.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sign {
    /// htpasswd users with Basic credentials only.
    Basic,
    /// htpasswd users, and bearer tokens from the registry's own endpoint.
    Tokens,
}

impl Registry {
    /// A registry with `users` (htpasswd), `policy` (zot's accessControl)
    /// and, with [`Sign::Tokens`], a token endpoint at `/auth/token`.
    /// `edit` may add more to a `skiff serve` config.
    pub fn start_secured(
        users: &[User],
        policy: &serde_json::Value,
        sign: Sign,
        edit: impl FnOnce(&mut serde_json::Value),
    ) -> Registry {
        Registry::start_secured_trusting(users, policy, sign, None, edit)
    }

    /// [`Registry::start_secured`] that also accepts tokens signed by the
    /// issuer whose public key (PEM) is at `issuer` (`bearer.cert`).
    pub fn start_secured_trusting(
        users: &[User],
        policy: &serde_json::Value,
        sign: Sign,
        issuer: Option<&Path>,
        edit: impl FnOnce(&mut serde_json::Value),
    ) -> Registry {
        let port = free_port();
        let realm = format!("http://127.0.0.1:{port}/auth/token");
        for u in users {
            note_secret(u.password);
            note_secret(&basic(u.name, u.password));
        }
        let lines: Vec<String> = users
            .iter()
            .map(|u| htpasswd_line(u.name, u.password))
            .collect();
        let htpasswd = lines.join("\n") + "\n";
        let keys = tempfile::tempdir().unwrap();
        let key = ec_key_pem(keys.path(), "token.key");
        note_pem(&key);
        if let Some(edge) = EDGE {
            let (store, _) = write_config(|_| {});
            // The policy holds commas, which `-S config-var` cannot carry:
            // it comes as a mounted file, the rest as settings.
            let auth_dir = store.data.path().join("auth");
            std::fs::create_dir_all(&auth_dir).unwrap();
            std::fs::write(auth_dir.join("policy.json"), policy.to_string()).unwrap();
            let mut vars = vec![
                ("auth_htpasswd".to_string(), htpasswd),
                (
                    "auth_policy_file".to_string(),
                    "/auth/policy.json".to_string(),
                ),
            ];
            if sign == Sign::Tokens {
                vars.push(("auth_realm".into(), realm));
                vars.push(("auth_service".into(), SERVICE.into()));
                vars.push((
                    "auth_token_key".into(),
                    std::fs::read_to_string(&key).unwrap(),
                ));
            }
            if let Some(cert) = issuer {
                std::fs::copy(cert, auth_dir.join("issuer.pem")).unwrap();
                vars.push(("auth_token_cert_file".into(), "/auth/issuer.pem".into()));
            }
            return Registry::start_edge_with(edge, store, port, &vars, &[(auth_dir, "/auth")]);
        }
        let (store, cfg_path) = write_config(|cfg| {
            cfg["http"]["port"] = port.into();
            // Everything logged, so the run's check for secrets in logs sees it all.
            cfg["log"]["level"] = "debug".into();
            cfg["http"]["accessControl"] = policy.clone();
            cfg["http"]["auth"] = serde_json::json!({"htpasswd": {"path": "HTPASSWD"}});
            if sign == Sign::Tokens {
                cfg["http"]["auth"]["bearer"] = serde_json::json!({
                    "realm": realm, "service": SERVICE, "key": "KEY",
                });
                if let Some(cert) = issuer {
                    cfg["http"]["auth"]["bearer"]["cert"] = cert.to_str().unwrap().into();
                }
            }
            edit(cfg);
        });
        // The secret files sit beside the config, which names them.
        let dir = store.data.path();
        std::fs::write(dir.join("htpasswd"), htpasswd).unwrap();
        std::fs::copy(&key, dir.join("token.key")).unwrap();
        let text = std::fs::read_to_string(&cfg_path)
            .unwrap()
            .replace(
                "\"HTPASSWD\"",
                &serde_json::to_string(&dir.join("htpasswd")).unwrap(),
            )
            .replace(
                "\"KEY\"",
                &serde_json::to_string(&dir.join("token.key")).unwrap(),
            );
        std::fs::write(&cfg_path, text).unwrap();
        Registry::spawn(super::skiff_command("serve", &cfg_path), store)
    }

    /// From now on, requests carry `authorization` (`None`: nothing).
    pub fn as_user(&self, authorization: Option<String>) -> &Registry {
        *self.authorization.lock().unwrap() = authorization;
        self
    }

    /// A token from the registry's endpoint for `scopes`, signed in with
    /// `basic` (`None`: anonymously); the response, and the token if 200.
    pub fn token(&self, basic: Option<&str>, scopes: &[&str]) -> (Resp, Option<String>) {
        // Scopes hold only characters a query may carry as they are.
        let mut q = format!("service={SERVICE}");
        for s in scopes {
            q += &format!("&scope={s}");
        }
        let mut req = self.req("GET", &format!("/auth/token?{q}")).anonymous();
        if let Some(b) = basic {
            req = req.header("Authorization", b);
        }
        let r = req.send();
        let token = (r.status == 200).then(|| r.json()["token"].as_str().unwrap().to_string());
        if let Some(t) = &token {
            note_secret(t);
        }
        (r, token)
    }
}

/// The `scope` a 401's bearer challenge asks for.
pub fn challenge_scope(r: &Resp) -> Option<String> {
    let c = r.header("www-authenticate")?;
    let at = c.find("scope=\"")? + 7;
    let end = c[at..].find('"')?;
    Some(c[at..at + end].to_string())
}

/// An external token issuer for the tests: an EC P-256 key made by
/// openssl, tokens signed by Python's `cryptography` (not by skiff's code).
pub struct Issuer {
    pub dir: tempfile::TempDir,
}

impl Issuer {
    pub fn new() -> Issuer {
        let dir = tempfile::tempdir().unwrap();
        let key = ec_key_pem(dir.path(), "issuer.key");
        note_pem(&key);
        let status = Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&key)
            .arg("-out")
            .arg(dir.path().join("issuer.pem"))
            .status()
            .unwrap();
        assert!(status.success());
        Issuer { dir }
    }

    /// The public key, for `bearer.cert`.
    pub fn cert(&self) -> std::path::PathBuf {
        self.dir.path().join("issuer.pem")
    }

    /// A JWT with `header` and `claims`, signed ES256 (`sign: false`: the
    /// signature left empty).
    pub fn token(
        &self,
        header: &serde_json::Value,
        claims: &serde_json::Value,
        sign: bool,
    ) -> String {
        let script = r#"
import base64, json, sys
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
key = serialization.load_pem_private_key(open(sys.argv[1], "rb").read(), None)
signing_input = b64(sys.argv[2].encode()) + "." + b64(sys.argv[3].encode())
sig = ""
if sys.argv[4] == "1":
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    sig = b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
print(signing_input + "." + sig)
"#;
        let key = self.dir.path().join("issuer.key");
        let token = python(
            script,
            &[
                key.to_str().unwrap(),
                &header.to_string(),
                &claims.to_string(),
                if sign { "1" } else { "0" },
            ],
        );
        note_secret(&token);
        token
    }
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}
