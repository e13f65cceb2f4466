//! The native `access` provider: who the caller of a request is, and what
//! the policy lets them do. The decisions are skiff-core's (`caller`,
//! `access`, `token`), the same code the edge's `access` component runs;
//! what is here is what needs the host: secret files, re-reading the
//! htpasswd file when it changes, a cache of verified passwords (bcrypt is
//! slow on purpose, and clients send Basic credentials with every request),
//! and `failDelay` as an async sleep that holds no thread.

pub mod ldap;
pub mod settings;

use crate::runtime::skiff::registry::access::{self, Action, AuthError, IssuedToken};
use crate::runtime::Ctx;
use anyhow::Result;
use settings::{read_htpasswd, AuthSettings};
use sha2::{Digest, Sha256};
use skiff_core::access::{Action as CoreAction, Principal};
use skiff_core::caller::{Bearer, Caller, Credentials, Rules};
use skiff_core::htpasswd::Htpasswd;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};
use wasmtime::component::Resource;

/// A verified password is trusted again for this long without bcrypt.
const VERIFIED_TTL: Duration = Duration::from_secs(60);
/// Entries the verified-password cache holds before it starts over.
const VERIFIED_MAX: usize = 10_000;

pub struct Auth {
    rules: Rules,
    htpasswd: Option<HtpasswdFile>,
    ldap: Option<ldap::Directory>,
    fail_delay: Duration,
    /// sha256(user, password) → when it was verified, and who it is.
    verified: Mutex<HashMap<[u8; 32], (Instant, Principal)>>,
}

/// The htpasswd file and what it held when last read.
struct HtpasswdFile {
    path: PathBuf,
    current: RwLock<(Option<SystemTime>, u64, Arc<Htpasswd>)>,
}

impl HtpasswdFile {
    /// The users, re-read if the file changed (by mtime and size). A file
    /// that no longer parses keeps the previous users, with a warning.
    fn users(&self) -> (Arc<Htpasswd>, bool) {
        let stamp = stamp(&self.path);
        if let Ok(cur) = self.current.read() {
            if (cur.0, cur.1) == stamp {
                return (cur.2.clone(), false);
            }
        }
        let Ok(mut cur) = self.current.write() else {
            return (Arc::new(Htpasswd::default()), false);
        };
        match read_htpasswd(&self.path) {
            Ok(users) => {
                tracing::info!(path = %self.path.display(), "htpasswd file changed; re-read");
                *cur = (stamp.0, stamp.1, Arc::new(users));
                (cur.2.clone(), true)
            }
            Err(e) => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "htpasswd file no longer reads; keeping the users it had"
                );
                // Do not retry on every request until it changes again.
                cur.0 = stamp.0;
                cur.1 = stamp.1;
                (cur.2.clone(), false)
            }
        }
    }
}

/// What tells a changed file from the one read: its mtime and size.
fn stamp(path: &std::path::Path) -> (Option<SystemTime>, u64) {
    let meta = std::fs::metadata(path).ok();
    (
        meta.as_ref().and_then(|m| m.modified().ok()),
        meta.map_or(0, |m| m.len()),
    )
}

impl Auth {
    /// No authentication and no policy: everyone may do everything.
    pub fn open() -> Auth {
        Auth {
            rules: Rules::default(),
            htpasswd: None,
            ldap: None,
            fail_delay: Duration::ZERO,
            verified: Mutex::new(HashMap::new()),
        }
    }

    pub fn new(s: &AuthSettings) -> Result<Auth> {
        let (token_keys, issuer) = s.token_keys()?;
        let htpasswd = match &s.htpasswd {
            Some(path) => {
                let users = read_htpasswd(path)?;
                let (modified, len) = stamp(path);
                Some(HtpasswdFile {
                    path: path.clone(),
                    current: RwLock::new((modified, len, Arc::new(users))),
                })
            }
            None => None,
        };
        Ok(Auth {
            rules: Rules {
                auth_on: s.auth_on(),
                policy: s.policy.clone(),
                token_keys,
                bearer: s.bearer.as_ref().map(|b| Bearer {
                    realm: b.realm.clone(),
                    service: b.service.clone(),
                }),
                issuer,
            },
            htpasswd,
            ldap: s.ldap.as_ref().map(ldap::Directory::new).transpose()?,
            fail_delay: s.fail_delay,
            verified: Mutex::new(HashMap::new()),
        })
    }

    /// Who sent `authorization` over a connection whose verified client
    /// certificate (if any) names `certified`. Credentials in the request
    /// win over the certificate: the client chose to sign in as someone.
    pub async fn authenticate(
        &self,
        authorization: Option<&str>,
        certified: Option<&str>,
    ) -> Result<Caller, AuthError> {
        if !self.rules.auth_on {
            return Ok(Caller::anonymous());
        }
        match Credentials::parse(authorization).map_err(AuthError::Invalid)? {
            Credentials::None => Ok(match certified {
                Some(user) => Caller {
                    principal: Principal::user(user, Vec::new()),
                    token: None,
                },
                None => Caller::anonymous(),
            }),
            Credentials::Bearer(t) => self
                .rules
                .from_token(&t, unix_now())
                .map_err(|e| AuthError::Invalid(e.to_string())),
            Credentials::Basic { user, password } => {
                match self.check_password(&user, &password).await? {
                    Some(p) => Ok(Caller {
                        principal: p,
                        token: None,
                    }),
                    None => {
                        tracing::info!(user = %user, "wrong user name or password");
                        tokio::time::sleep(self.fail_delay).await;
                        Err(AuthError::Invalid("wrong user name or password".into()))
                    }
                }
            }
        }
    }

    /// The user `password` signs in, checked against the htpasswd file,
    /// then the directory; `Err` if the directory could not be asked.
    async fn check_password(
        &self,
        user: &str,
        password: &str,
    ) -> Result<Option<Principal>, AuthError> {
        let (users, reloaded) = match &self.htpasswd {
            Some(file) => file.users(),
            None => (Arc::new(Htpasswd::default()), false),
        };
        let key: [u8; 32] = Sha256::new()
            .chain_update(user.len().to_le_bytes())
            .chain_update(user)
            .chain_update(password)
            .finalize()
            .into();
        if let Ok(mut verified) = self.verified.lock() {
            if reloaded {
                // A removed user or changed password must stop working now.
                verified.clear();
            }
            if let Some((at, p)) = verified.get(&key) {
                if at.elapsed() < VERIFIED_TTL {
                    return Ok(Some(p.clone()));
                }
            }
        }
        let p = if users.verify(user, password) {
            Principal::user(user, Vec::new())
        } else if let Some(dir) = &self.ldap {
            match dir.verify(user, password).await {
                Ok(Some(groups)) => Principal::user(user, groups),
                Ok(None) => return Ok(None),
                Err(e) => {
                    tracing::error!(error = %e, "LDAP: cannot check a password");
                    return Err(AuthError::Unavailable(
                        "the directory (LDAP) does not answer".into(),
                    ));
                }
            }
        } else {
            return Ok(None);
        };
        if let Ok(mut v) = self.verified.lock() {
            if v.len() >= VERIFIED_MAX {
                v.clear();
            }
            v.insert(key, (Instant::now(), p.clone()));
        }
        Ok(Some(p))
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn core_action(a: Action) -> CoreAction {
    match a {
        Action::Read => CoreAction::Read,
        Action::Create => CoreAction::Create,
        Action::Update => CoreAction::Update,
        Action::Delete => CoreAction::Delete,
    }
}

/// The caller resource the registry component holds for one request.
pub struct CallerState(Caller);

impl Ctx {
    fn caller(&self, c: &Resource<CallerState>) -> Option<&Caller> {
        self.table.get(c).ok().map(|s| &s.0)
    }
}

impl access::Host for Ctx {
    async fn authenticate(
        &mut self,
        authorization: Option<String>,
    ) -> Result<Resource<CallerState>, AuthError> {
        let caller = self
            .auth
            .authenticate(authorization.as_deref(), self.certified.as_deref())
            .await?;
        if let Some(user) = &caller.principal.user {
            let _ = self.identified.set(user.clone());
        }
        self.table
            .push(CallerState(caller))
            .map_err(|e| AuthError::Unavailable(format!("no room for the caller: {e}")))
    }

    async fn challenge(&mut self, scope: Option<String>, error: Option<String>) -> Option<String> {
        self.auth
            .rules
            .challenge(scope.as_deref(), error.as_deref())
    }
}

impl access::HostCaller for Ctx {
    async fn user(&mut self, c: Resource<CallerState>) -> Option<String> {
        self.caller(&c)?.principal.user.clone()
    }

    async fn may(&mut self, c: Resource<CallerState>, repo: String, action: Action) -> bool {
        let auth = self.auth.clone();
        self.caller(&c)
            .is_some_and(|c| auth.rules.may(c, &repo, core_action(action)))
    }

    async fn visible(&mut self, c: Resource<CallerState>, repos: Vec<String>) -> Vec<String> {
        let auth = self.auth.clone();
        match self.caller(&c) {
            Some(c) => auth.rules.visible(c, repos),
            None => Vec::new(),
        }
    }

    async fn issue_token(
        &mut self,
        c: Resource<CallerState>,
        scopes: Vec<String>,
    ) -> Result<IssuedToken, String> {
        let auth = self.auth.clone();
        let caller = self.caller(&c).ok_or("unknown caller")?;
        let jti = format!("{:032x}", rand::random::<u128>());
        let t = auth.rules.issue(caller, &scopes, unix_now(), jti)?;
        Ok(IssuedToken {
            token: t.token,
            expires_in: u32::try_from(t.expires_in).unwrap_or(u32::MAX),
            issued_at: t.issued_at,
        })
    }

    async fn drop(&mut self, c: Resource<CallerState>) -> wasmtime::Result<()> {
        self.table.delete(c)?;
        Ok(())
    }
}
