//! `access` at the edge, where no host stands in front: the same decisions
//! `skiff serve` makes (skiff-core's `caller`, `access` and `token`), set up
//! from runtime settings instead of files:
//!
//! | setting | what it holds |
//! |---|---|
//! | `auth_htpasswd` | htpasswd lines (bcrypt), users who may sign in |
//! | `auth_policy` | zot's `accessControl` object, as JSON |
//! | `auth_realm`, `auth_service` | the bearer challenge's realm and service |
//! | `auth_token_key` | PEM EC P-256 private key: tokens are issued here |
//! | `auth_token_cert` | PEM public keys or certificates of other issuers |
//! | `auth_fail_delay` | seconds a wrong password waits before its 401 |
//!
//! `auth_htpasswd`, `auth_policy`, `auth_token_key` and `auth_token_cert`
//! may instead be a file, named by `<setting>_file` (mounted into the
//! component).
//!
//! None set: authentication is off and everyone may do everything, as with
//! `skiff serve` without `http.auth`. A setting that cannot be used fails
//! every request (a 401 naming the setting), never opens the registry.

mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "access-provider",
        with: {
            "wasi:config/store@0.2.0-draft-2024-09-27": generate,
        },
    });
}

use bindings::exports::skiff::registry::access::{
    Action, AuthError, Caller as CallerHandle, Guest, GuestCaller, IssuedToken,
};
use bindings::wasi::config0_2_0_draft_2024_09_27::store as config;
use skiff_core::access::{Action as CoreAction, Policy};
use skiff_core::caller::{Bearer, Caller, Credentials, Issuer, Rules};
use skiff_core::htpasswd::Htpasswd;
use skiff_core::token::{SigningKey, VerifyingKey};
use std::rc::Rc;
use std::time::Duration;

struct Access;

bindings::export!(Access with_types_in bindings);

/// What the settings say, read once per instance (one request).
struct Settings {
    rules: Rules,
    users: Htpasswd,
    fail_delay: Duration,
}

thread_local! {
    static SETTINGS: Rc<Result<Settings, String>> = Rc::new(load());
}

fn settings() -> Rc<Result<Settings, String>> {
    SETTINGS.with(Rc::clone)
}

fn get(key: &str) -> Result<Option<String>, String> {
    match config::get(key) {
        Ok(v) => Ok(v.filter(|v| !v.trim().is_empty())),
        Err(e) => Err(format!("reading setting {key}: {e:?}")),
    }
}

/// A setting's value, or the contents of the file `<key>_file` names (a
/// mounted file: Spin's `files`, `wasmtime serve --dir`). Files suit what
/// is long or holds commas, which `wasmtime serve -S config-var` cannot.
fn setting(key: &str) -> Result<Option<String>, String> {
    if let Some(v) = get(key)? {
        return Ok(Some(v));
    }
    let file_key = format!("{key}_file");
    match get(&file_key)? {
        Some(path) => std::fs::read_to_string(path.trim())
            .map(Some)
            // The path, never the contents.
            .map_err(|e| format!("{file_key}: reading {}: {e}", path.trim())),
        None => Ok(None),
    }
}

fn load() -> Result<Settings, String> {
    let users = match setting("auth_htpasswd")? {
        Some(text) => Htpasswd::parse(&text).map_err(|e| format!("auth_htpasswd: {e}"))?,
        None => Htpasswd::default(),
    };
    let policy = match setting("auth_policy")? {
        Some(json) => {
            let v: serde_json::Value =
                serde_json::from_str(&json).map_err(|e| format!("auth_policy: {e}"))?;
            Some(Policy::from_json(&v).map_err(|e| format!("auth_policy: {e}"))?)
        }
        None => None,
    };
    let mut token_keys = Vec::new();
    if let Some(pem) = setting("auth_token_cert")? {
        token_keys =
            VerifyingKey::all_from_pem(&pem).map_err(|e| format!("auth_token_cert: {e}"))?;
    }
    let issuer = match setting("auth_token_key")? {
        Some(pem) => {
            let key = SigningKey::from_pem(&pem).map_err(|e| format!("auth_token_key: {e}"))?;
            token_keys.push(key.verifying_key());
            Some(Issuer {
                key,
                ttl_secs: Issuer::DEFAULT_TTL_SECS,
            })
        }
        None => None,
    };
    let bearer = match (get("auth_realm")?, get("auth_service")?) {
        (Some(realm), Some(service)) => Some(Bearer { realm, service }),
        (None, None) if token_keys.is_empty() => None,
        _ => return Err("auth_realm and auth_service: tokens need both".into()),
    };
    if bearer.is_some() && token_keys.is_empty() {
        return Err(
            "auth_realm: no key to check tokens with (auth_token_key or auth_token_cert)".into(),
        );
    }
    let fail_delay = match get("auth_fail_delay")? {
        Some(s) => Duration::from_secs(
            s.trim()
                .parse::<u64>()
                .ok()
                .filter(|&n| n <= 60)
                .ok_or_else(|| {
                    format!("auth_fail_delay: {s:?} is not a number of seconds up to 60")
                })?,
        ),
        None => Duration::ZERO,
    };
    let auth_on = !users.is_empty() || bearer.is_some();
    Ok(Settings {
        rules: Rules {
            auth_on,
            policy,
            token_keys,
            bearer,
            issuer,
        },
        users,
        fail_delay,
    })
}

fn now() -> u64 {
    wasip2::clocks::wall_clock::now().seconds
}

/// Slow down the next guess.
fn fail(settings: &Settings, why: &str) -> AuthError {
    if !settings.fail_delay.is_zero() {
        let ns = settings.fail_delay.as_nanos().min(u64::MAX as u128) as u64;
        wasip2::clocks::monotonic_clock::subscribe_duration(ns).block();
    }
    AuthError::Invalid(why.into())
}

impl Guest for Access {
    type Caller = EdgeCaller;

    fn authenticate(authorization: Option<String>) -> Result<CallerHandle, AuthError> {
        let all = settings();
        let s = all
            .as_ref()
            .as_ref()
            .map_err(|e| AuthError::Invalid(e.clone()))?;
        let caller = if !s.rules.auth_on {
            // Credentials mean nothing without a way to sign in.
            Caller::anonymous()
        } else {
            match Credentials::parse(authorization.as_deref()).map_err(AuthError::Invalid)? {
                Credentials::None => Caller::anonymous(),
                Credentials::Basic { user, password } => {
                    if !s.users.verify(&user, &password) {
                        return Err(fail(s, "wrong user name or password"));
                    }
                    Caller::user(&user, Vec::new())
                }
                Credentials::Bearer(t) => s
                    .rules
                    .from_token(&t, now())
                    .map_err(|e| AuthError::Invalid(e.to_string()))?,
            }
        };
        Ok(CallerHandle::new(EdgeCaller { caller, all }))
    }

    fn challenge(scope: Option<String>, error: Option<String>) -> Option<String> {
        match settings().as_ref() {
            Ok(s) => s.rules.challenge(scope.as_deref(), error.as_deref()),
            // Broken settings: ask for credentials that cannot be given.
            Err(_) => Some("Basic realm=\"skiff\"".into()),
        }
    }
}

pub struct EdgeCaller {
    caller: Caller,
    all: Rc<Result<Settings, String>>,
}

impl EdgeCaller {
    fn rules(&self) -> Option<&Rules> {
        self.all.as_ref().as_ref().ok().map(|s| &s.rules)
    }
}

impl GuestCaller for EdgeCaller {
    fn user(&self) -> Option<String> {
        self.caller.principal.user.clone()
    }

    fn may(&self, repo: String, action: Action) -> bool {
        let action = match action {
            Action::Read => CoreAction::Read,
            Action::Create => CoreAction::Create,
            Action::Update => CoreAction::Update,
            Action::Delete => CoreAction::Delete,
        };
        self.rules()
            .is_some_and(|r| r.may(&self.caller, &repo, action))
    }

    fn visible(&self, repos: Vec<String>) -> Vec<String> {
        match self.rules() {
            Some(r) => r.visible(&self.caller, repos),
            None => Vec::new(),
        }
    }

    fn issue_token(&self, scopes: Vec<String>) -> Result<IssuedToken, String> {
        let rules = self.rules().ok_or("the access settings are broken")?;
        let jti = format!("{:016x}", wasip2::random::random::get_random_u64());
        let t = rules.issue(&self.caller, &scopes, now(), jti)?;
        Ok(IssuedToken {
            token: t.token,
            expires_in: u32::try_from(t.expires_in).unwrap_or(u32::MAX),
            issued_at: t.issued_at,
        })
    }
}
