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
    let out = Command::new("python3")
        .args(["-W", "ignore", "-c", script, user, password])
        .output()
        .expect("python3 for bcrypt");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
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
        let port = free_port();
        let realm = format!("http://127.0.0.1:{port}/auth/token");
        let lines: Vec<String> = users
            .iter()
            .map(|u| htpasswd_line(u.name, u.password))
            .collect();
        let htpasswd = lines.join("\n") + "\n";
        let keys = tempfile::tempdir().unwrap();
        let key = ec_key_pem(keys.path(), "token.key");
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
            return Registry::start_edge_with(edge, store, port, &vars, &[(auth_dir, "/auth")]);
        }
        let (store, cfg_path) = write_config(|cfg| {
            cfg["http"]["port"] = port.into();
            cfg["http"]["accessControl"] = policy.clone();
            cfg["http"]["auth"] = serde_json::json!({"htpasswd": {"path": "HTPASSWD"}});
            if sign == Sign::Tokens {
                cfg["http"]["auth"]["bearer"] = serde_json::json!({
                    "realm": realm, "service": SERVICE, "key": "KEY",
                });
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
