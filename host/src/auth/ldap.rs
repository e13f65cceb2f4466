//! `http.auth.ldap` in zot's keys: a Basic user name and password are
//! checked against a directory. skiff binds with its own account
//! (`bindDN`, the password from `credentialsFile`), looks the user up
//! under `baseDN` by `userAttribute`, and binds as the entry found with the
//! password given; the values of `userGroupAttribute` are the user's groups
//! for `accessControl`. One connection per check: verified passwords are
//! cached by the caller (`auth`), so the directory sees a check a minute
//! per user at most.

use anyhow::{bail, Context, Result};
use ldap3::{ldap_escape, LdapConnAsync, LdapConnSettings, Scope, SearchEntry};
use serde_json::{Map, Value};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How long connecting, and each operation, may take.
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct LdapSettings {
    url: String,
    start_tls: bool,
    skip_verify: bool,
    cacert: Option<PathBuf>,
    base_dn: String,
    user_attribute: String,
    user_filter: Option<String>,
    group_attribute: Option<String>,
    subtree: bool,
    bind_dn: String,
    bind_password: String,
}

impl std::fmt::Debug for LdapSettings {
    // Not derived: the bind password must never reach a log or a panic.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LdapSettings")
            .field("url", &self.url)
            .field("base_dn", &self.base_dn)
            .field("bind_dn", &self.bind_dn)
            .finish_non_exhaustive()
    }
}

/// The keys zot's `ldap` section has that skiff reads.
const KEYS: &[&str] = &[
    "address",
    "port",
    "insecure",
    "startTLS",
    "skipVerify",
    "cacert",
    "baseDN",
    "userAttribute",
    "userFilter",
    "userGroupAttribute",
    "subtreeSearch",
    "bindDN",
    "credentialsFile",
];

impl LdapSettings {
    pub fn parse(v: &Value) -> Result<LdapSettings> {
        let o = v
            .as_object()
            .context("http.auth.ldap: expected an object")?;
        if o.contains_key("bindPassword") {
            bail!(
                "http.auth.ldap.bindPassword: secrets stay out of the main config; \
                 put bindDN and bindPassword in the file credentialsFile names"
            );
        }
        if let Some(k) = o.keys().find(|k| !KEYS.contains(&k.as_str())) {
            bail!("http.auth.ldap.{k}: unknown LDAP setting");
        }
        let text = |k: &str| -> Result<Option<String>> {
            match o.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
                Some(v) => bail!("http.auth.ldap.{k}: expected a string, found {v}"),
            }
        };
        let flag = |k: &str| -> Result<bool> {
            match o.get(k) {
                None | Some(Value::Null) => Ok(false),
                Some(Value::Bool(b)) => Ok(*b),
                Some(v) => bail!("http.auth.ldap.{k}: expected true or false, found {v}"),
            }
        };
        let address = text("address")?.context("http.auth.ldap.address: expected a host name")?;
        let insecure = flag("insecure")?;
        let start_tls = flag("startTLS")?;
        let port = match o.get("port") {
            None => {
                if insecure || start_tls {
                    389
                } else {
                    636
                }
            }
            Some(v) => v
                .as_u64()
                .and_then(|n| u16::try_from(n).ok())
                .filter(|n| *n > 0)
                .with_context(|| format!("http.auth.ldap.port: {v} is not a port"))?,
        };
        // zot: `insecure` is plain LDAP; otherwise StartTLS if asked, else LDAPS.
        let scheme = if insecure || start_tls {
            "ldap"
        } else {
            "ldaps"
        };
        let credentials_file = PathBuf::from(text("credentialsFile")?.context(
            "http.auth.ldap.credentialsFile: expected the path of the bind credentials",
        )?);
        let (file_dn, bind_password) = read_credentials(&credentials_file)?;
        let bind_dn = file_dn
            .or(text("bindDN")?)
            .context("http.auth.ldap: no bindDN (in credentialsFile or here)")?;
        Ok(LdapSettings {
            url: format!("{scheme}://{address}:{port}"),
            start_tls: start_tls && !insecure,
            skip_verify: flag("skipVerify")?,
            cacert: text("cacert")?.map(PathBuf::from),
            base_dn: text("baseDN")?.context("http.auth.ldap.baseDN: expected a DN")?,
            user_attribute: text("userAttribute")?.unwrap_or_else(|| "uid".into()),
            user_filter: text("userFilter")?,
            group_attribute: text("userGroupAttribute")?,
            subtree: flag("subtreeSearch")?,
            bind_dn,
            bind_password,
        })
    }
}

/// zot's credentials file: `{"bindDN": "...", "bindPassword": "..."}`.
fn read_credentials(path: &std::path::Path) -> Result<(Option<String>, String)> {
    let text = super::settings::read_secret(path)
        .map_err(|e| anyhow::anyhow!("http.auth.ldap.credentialsFile: {e:#}"))?;
    let v: Map<String, Value> = serde_json::from_str(&text).map_err(|_| {
        // serde's message could quote the file; say only where it is wrong.
        anyhow::anyhow!(
            "http.auth.ldap.credentialsFile: {} is not a JSON object",
            path.display()
        )
    })?;
    let password = v
        .get("bindPassword")
        .and_then(Value::as_str)
        .with_context(|| {
            format!(
                "http.auth.ldap.credentialsFile: {} has no bindPassword",
                path.display()
            )
        })?
        .to_string();
    let dn = v.get("bindDN").and_then(Value::as_str).map(str::to_string);
    Ok((dn, password))
}

pub struct Directory {
    s: LdapSettings,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Directory {
    pub fn new(s: &LdapSettings) -> Result<Directory> {
        let tls = match &s.cacert {
            Some(path) => {
                use rustls_pki_types::pem::PemObject;
                let mut roots = rustls::RootCertStore::empty();
                for c in rustls_pki_types::CertificateDer::pem_file_iter(path).map_err(|e| {
                    anyhow::anyhow!("http.auth.ldap.cacert: {}: {e}", path.display())
                })? {
                    let c = c.map_err(|e| anyhow::anyhow!("http.auth.ldap.cacert: {e}"))?;
                    roots
                        .add(c)
                        .context("http.auth.ldap.cacert: not a CA certificate")?;
                }
                let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .context("http.auth.ldap: TLS")?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                Some(Arc::new(config))
            }
            None => None,
        };
        Ok(Directory { s: s.clone(), tls })
    }

    /// The user's groups if `password` is theirs; `None` if it is not or
    /// the user is not found (or found twice); `Err` if the directory
    /// could not be asked.
    pub async fn verify(&self, user: &str, password: &str) -> Result<Option<Vec<String>>, String> {
        // An empty password makes a simple bind "unauthenticated", which
        // directories accept: it must never count as signing in.
        if user.is_empty() || password.is_empty() {
            return Ok(None);
        }
        let s = &self.s;
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(TIMEOUT)
            .set_starttls(s.start_tls)
            .set_no_tls_verify(s.skip_verify);
        if let Some(c) = &self.tls {
            settings = settings.set_config(c.clone());
        }
        let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &s.url)
            .await
            .map_err(|e| format!("connecting to {}: {e}", s.url))?;
        ldap3::drive!(conn);
        ldap.with_timeout(TIMEOUT)
            .simple_bind(&s.bind_dn, &s.bind_password)
            .await
            .and_then(|r| r.success())
            .map_err(|e| format!("binding as {}: {e}", s.bind_dn))?;
        let filter = format!(
            "(&({}={}){})",
            s.user_attribute,
            ldap_escape(user),
            s.user_filter.as_deref().unwrap_or("")
        );
        let attrs = match &s.group_attribute {
            Some(a) => vec![a.as_str()],
            // No attributes, only the DN.
            None => vec!["1.1"],
        };
        let scope = if s.subtree {
            Scope::Subtree
        } else {
            Scope::OneLevel
        };
        let (entries, _) = ldap
            .with_timeout(TIMEOUT)
            .search(&s.base_dn, scope, &filter, attrs)
            .await
            .and_then(|r| r.success())
            .map_err(|e| format!("searching {}: {e}", s.base_dn))?;
        if entries.len() > 1 {
            tracing::warn!(
                user,
                found = entries.len(),
                "LDAP: the user name matches several entries; refusing"
            );
        }
        let (1, Some(entry)) = (entries.len(), entries.into_iter().next()) else {
            let _ = ldap.unbind().await;
            return Ok(None);
        };
        let entry = SearchEntry::construct(entry);
        let bound = ldap
            .with_timeout(TIMEOUT)
            .simple_bind(&entry.dn, password)
            .await
            .map_err(|e| format!("binding as the user: {e}"))?;
        let _ = ldap.unbind().await;
        if bound.rc != 0 {
            return Ok(None);
        }
        let groups = s
            .group_attribute
            .as_ref()
            .and_then(|a| entry.attrs.get(a).cloned())
            .unwrap_or_default();
        Ok(Some(groups))
    }
}
