//! `http.auth` and `http.accessControl` in zot's key names, checked before
//! anything starts. Secrets are named by path (`htpasswd.path`,
//! `bearer.key`, `bearer.cert`) and read here, so a missing or unreadable
//! file stops the start with the key that names it, never with its contents.

use anyhow::{bail, Context, Result};
use serde_json::{Map, Value};
use skiff_core::access::Policy;
use skiff_core::caller::Issuer;
use skiff_core::htpasswd::Htpasswd;
use skiff_core::token::{SigningKey, VerifyingKey};
use std::path::PathBuf;
use std::time::Duration;

/// How the registry authenticates and what its policy is.
#[derive(Debug, Clone, Default)]
pub struct AuthSettings {
    /// `http.auth.htpasswd.path`.
    pub htpasswd: Option<PathBuf>,
    /// `http.auth.failDelay`: how long a wrong password waits for its 401.
    pub fail_delay: Duration,
    pub bearer: Option<BearerSettings>,
    /// `http.accessControl`.
    pub policy: Option<Policy>,
    /// `http.tls.cacert`: a verified client certificate names the user.
    pub client_certs: bool,
    /// `http.auth.ldap`.
    pub ldap: Option<super::ldap::LdapSettings>,
    /// `http.auth` and `http.accessControl` as written (paths, not
    /// secrets), for `skiff verify`'s effective config.
    pub written: Vec<(&'static str, Value)>,
}

#[derive(Debug, Clone)]
pub struct BearerSettings {
    pub realm: String,
    pub service: String,
    /// `bearer.cert`: keys of the issuers whose tokens are accepted.
    pub cert: Option<PathBuf>,
    /// `bearer.key` (skiff's): the key skiff's own token endpoint signs with.
    pub key: Option<PathBuf>,
    /// `bearer.expiration` (seconds): how long issued tokens live.
    pub ttl_secs: u64,
}

/// zot's key, a whole number of seconds; more than this is a mistake.
const MAX_FAIL_DELAY_SECS: u64 = 60;

impl AuthSettings {
    /// Some way of signing in is configured.
    pub fn auth_on(&self) -> bool {
        self.htpasswd.is_some() || self.bearer.is_some() || self.client_certs || self.ldap.is_some()
    }

    pub fn parse(http: Option<&Map<String, Value>>) -> Result<AuthSettings> {
        let mut out = AuthSettings::default();
        let Some(http) = http else {
            return Ok(out);
        };
        if let Some(v) = http.get("accessControl").filter(|v| !v.is_null()) {
            out.policy = Some(Policy::from_json(v).map_err(|e| anyhow::anyhow!("{e}"))?);
            out.written.push(("accessControl", v.clone()));
        }
        let Some(auth) = http.get("auth").and_then(Value::as_object) else {
            return Ok(out);
        };
        out.written.push(("auth", Value::Object(auth.clone())));
        if let Some(v) = auth.get("failDelay") {
            let n = v
                .as_u64()
                .filter(|&n| n <= MAX_FAIL_DELAY_SECS)
                .with_context(|| {
                    format!("http.auth.failDelay: expected whole seconds up to {MAX_FAIL_DELAY_SECS}, found {v}")
                })?;
            out.fail_delay = Duration::from_secs(n);
        }
        if let Some(h) = auth.get("htpasswd").filter(|v| !v.is_null()) {
            let path = h
                .get("path")
                .and_then(Value::as_str)
                .context("http.auth.htpasswd.path: expected the path of an htpasswd file")?;
            let path = PathBuf::from(path);
            read_htpasswd(&path).map_err(|e| anyhow::anyhow!("http.auth.htpasswd.path: {e:#}"))?;
            out.htpasswd = Some(path);
        }
        if let Some(l) = auth.get("ldap").filter(|v| !v.is_null()) {
            out.ldap = Some(super::ldap::LdapSettings::parse(l)?);
        }
        if let Some(b) = auth.get("bearer").filter(|v| !v.is_null()) {
            out.bearer = Some(bearer(b)?);
        }
        Ok(out)
    }

    /// The keys tokens are checked with and the token endpoint's issuer.
    pub fn token_keys(&self) -> Result<(Vec<VerifyingKey>, Option<Issuer>)> {
        match &self.bearer {
            Some(b) => token_keys(b),
            None => Ok((Vec::new(), None)),
        }
    }
}

fn token_keys(b: &BearerSettings) -> Result<(Vec<VerifyingKey>, Option<Issuer>)> {
    {
        let mut keys = Vec::new();
        if let Some(p) = &b.cert {
            let pem =
                read_secret(p).map_err(|e| anyhow::anyhow!("http.auth.bearer.cert: {e:#}"))?;
            keys = VerifyingKey::all_from_pem(&pem)
                .map_err(|e| anyhow::anyhow!("http.auth.bearer.cert: {}: {e}", p.display()))?;
        }
        let issuer = match &b.key {
            Some(p) => {
                let pem =
                    read_secret(p).map_err(|e| anyhow::anyhow!("http.auth.bearer.key: {e:#}"))?;
                let key = SigningKey::from_pem(&pem)
                    .map_err(|e| anyhow::anyhow!("http.auth.bearer.key: {}: {e}", p.display()))?;
                keys.push(key.verifying_key());
                Some(Issuer {
                    key,
                    ttl_secs: b.ttl_secs,
                })
            }
            None => None,
        };
        Ok((keys, issuer))
    }
}

fn bearer(b: &Value) -> Result<BearerSettings> {
    let s = |k: &str| b.get(k).and_then(Value::as_str).map(str::to_string);
    let realm = s("realm").context("http.auth.bearer.realm: expected the token endpoint's URL")?;
    let service = s("service").context("http.auth.bearer.service: expected the service name")?;
    let ttl_secs = match b.get("expiration") {
        None => Issuer::DEFAULT_TTL_SECS,
        Some(v) => v
            .as_u64()
            .filter(|n| (1..=86_400).contains(n))
            .with_context(|| {
                format!("http.auth.bearer.expiration: expected seconds from 1 to 86400, found {v}")
            })?,
    };
    let out = BearerSettings {
        realm,
        service,
        cert: s("cert").map(PathBuf::from),
        key: s("key").map(PathBuf::from),
        ttl_secs,
    };
    if out.cert.is_none() && out.key.is_none() {
        bail!("http.auth.bearer: needs cert (an issuer's certificate or public key) or key (to issue tokens here)");
    }
    token_keys(&out)?;
    Ok(out)
}

/// Read a secret file; the error names the path, never what is in it.
pub fn read_secret(path: &std::path::Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

pub fn read_htpasswd(path: &std::path::Path) -> Result<Htpasswd> {
    let text = read_secret(path)?;
    Htpasswd::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}
