//! One request's caller and what it may do: the part of authentication and
//! access control that is the same wherever it runs. The native host and
//! the edge's `access` component each check credentials their own way
//! (LDAP needs the host) and then decide here.

use crate::access::{Action, Policy, Principal};
use crate::token::{self, Audience, Claims, SigningKey, VerifyingKey};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

/// What the `Authorization` header holds.
#[derive(PartialEq, Eq)]
pub enum Credentials {
    None,
    Basic { user: String, password: String },
    Bearer(String),
}

// Never print a password or a token.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::None => f.write_str("None"),
            Credentials::Basic { user, .. } => write!(f, "Basic({user:?}, <password>)"),
            Credentials::Bearer(_) => f.write_str("Bearer(<token>)"),
        }
    }
}

/// Longest `Authorization` header read; anything longer is refused.
pub const MAX_AUTHORIZATION: usize = 16 << 10;

impl Credentials {
    pub fn parse(header: Option<&str>) -> Result<Credentials, String> {
        let Some(h) = header.map(str::trim).filter(|h| !h.is_empty()) else {
            return Ok(Credentials::None);
        };
        if h.len() > MAX_AUTHORIZATION {
            return Err("the Authorization header is too long".into());
        }
        let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
        let rest = rest.trim();
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => {
                let raw = B64
                    .decode(rest)
                    .map_err(|_| "Basic credentials are not base64".to_string())?;
                let text = String::from_utf8(raw)
                    .map_err(|_| "Basic credentials are not UTF-8".to_string())?;
                let (user, password) = text
                    .split_once(':')
                    .ok_or_else(|| "Basic credentials lack a ':'".to_string())?;
                Ok(Credentials::Basic {
                    user: user.to_string(),
                    password: password.to_string(),
                })
            }
            "bearer" if !rest.is_empty() => Ok(Credentials::Bearer(rest.to_string())),
            _ => Err(format!("unsupported authorization scheme {scheme:?}")),
        }
    }
}

/// How a deployment authenticates, and its policy.
#[derive(Debug, Default)]
pub struct Rules {
    /// Some way of signing in is configured. Without one, every caller is
    /// anonymous, and with no policy either, anyone may do anything.
    pub auth_on: bool,
    /// `http.accessControl`; `None`: a signed-in user may do anything, an
    /// anonymous caller nothing (zot's behaviour with authentication on).
    pub policy: Option<Policy>,
    /// Keys bearer tokens are checked with (the token endpoint's own and
    /// `bearer.cert`'s).
    pub token_keys: Vec<VerifyingKey>,
    /// `bearer.realm` and `bearer.service`, when tokens are in use.
    pub bearer: Option<Bearer>,
    /// The token endpoint's key, when this deployment issues tokens.
    pub issuer: Option<Issuer>,
}

/// What the token endpoint signs with.
#[derive(Debug)]
pub struct Issuer {
    pub key: SigningKey,
    pub ttl_secs: u64,
}

impl Issuer {
    /// Tokens live five minutes, as with Docker's token servers; clients
    /// fetch a new one when theirs runs out.
    pub const DEFAULT_TTL_SECS: u64 = 300;
}

/// A token as the endpoint hands it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub token: String,
    pub expires_in: u64,
    pub issued_at: String,
}

#[derive(Debug, Clone)]
pub struct Bearer {
    pub realm: String,
    pub service: String,
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    /// Set when the caller came with a bearer token: its grants bound what
    /// the policy allows.
    pub token: Option<Claims>,
}

impl Caller {
    pub fn anonymous() -> Caller {
        Caller {
            principal: Principal::anonymous(),
            token: None,
        }
    }

    pub fn user(name: &str, groups: Vec<String>) -> Caller {
        Caller {
            principal: Principal::user(name, groups),
            token: None,
        }
    }
}

impl Rules {
    /// The caller a bearer token stands for.
    pub fn from_token(&self, token: &str, now: u64) -> Result<Caller, token::TokenError> {
        let service = self
            .bearer
            .as_ref()
            .map(|b| b.service.as_str())
            .unwrap_or("");
        let claims = token::verify(&self.token_keys, token, service, now)?;
        let principal = if claims.sub.is_empty() {
            Principal::anonymous()
        } else {
            Principal::user(claims.sub.clone(), claims.groups.clone())
        };
        Ok(Caller {
            principal,
            token: Some(claims),
        })
    }

    /// May `caller` do `action` on `repo`?
    pub fn may(&self, caller: &Caller, repo: &str, action: Action) -> bool {
        if let Some(t) = &caller.token {
            if !t.grants("repository", repo, action.scope_action()) {
                return false;
            }
        }
        self.policy_allows(&caller.principal, repo, action)
    }

    fn policy_allows(&self, who: &Principal, repo: &str, action: Action) -> bool {
        match &self.policy {
            Some(p) => p.allows(who, repo, action),
            None => !self.auth_on || who.user.is_some(),
        }
    }

    /// The catalog shows what the caller may read, to a token only if it
    /// grants the catalog (`registry:catalog:*`).
    pub fn visible(&self, caller: &Caller, repos: Vec<String>) -> Vec<String> {
        if let Some(t) = &caller.token {
            if !t.grants("registry", "catalog", "*") {
                return Vec::new();
            }
        }
        repos
            .into_iter()
            .filter(|r| self.policy_allows(&caller.principal, r, Action::Read))
            .collect()
    }

    /// Sign a token for `caller` granting `scopes` (already narrowed).
    /// `jti` is a fresh random id from the caller of this function.
    pub fn issue(
        &self,
        caller: &Caller,
        scopes: &[String],
        now: u64,
        jti: String,
    ) -> Result<Issued, String> {
        let (Some(issuer), Some(bearer)) = (&self.issuer, &self.bearer) else {
            return Err("this registry issues no tokens".into());
        };
        let claims = Claims {
            iss: bearer.service.clone(),
            sub: caller.principal.user.clone().unwrap_or_default(),
            aud: Audience::One(bearer.service.clone()),
            exp: now.saturating_add(issuer.ttl_secs),
            nbf: now,
            iat: now,
            jti,
            access: scopes
                .iter()
                .filter_map(|s| crate::access::Scope::parse(s))
                .collect(),
            groups: caller.principal.groups.clone(),
        };
        Ok(Issued {
            token: issuer.key.sign(&claims),
            expires_in: issuer.ttl_secs,
            issued_at: rfc3339(now),
        })
    }

    /// The `WWW-Authenticate` value for a 401; `None` with authentication off.
    pub fn challenge(&self, scope: Option<&str>, error: Option<&str>) -> Option<String> {
        if !self.auth_on {
            return None;
        }
        let Some(b) = &self.bearer else {
            return Some("Basic realm=\"skiff\"".into());
        };
        let mut v = format!(
            "Bearer realm={},service={}",
            quote(&b.realm),
            quote(&b.service)
        );
        if let Some(s) = scope {
            v += &format!(",scope={}", quote(s));
        }
        if let Some(e) = error {
            v += &format!(",error={}", quote(e));
        }
        Some(v)
    }
}

/// `secs` since the epoch as an RFC 3339 UTC time.
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Days since 1970-01-01 to a civil date (the proleptic Gregorian calendar).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Scope;
    use serde_json::json;

    #[test]
    fn credentials_parse() {
        let b = B64.encode("alice:pa:ss");
        assert_eq!(
            Credentials::parse(Some(&format!("Basic {b}"))).unwrap(),
            Credentials::Basic {
                user: "alice".into(),
                password: "pa:ss".into()
            }
        );
        assert_eq!(
            Credentials::parse(Some("Bearer abc")).unwrap(),
            Credentials::Bearer("abc".into())
        );
        assert_eq!(Credentials::parse(None).unwrap(), Credentials::None);
        assert!(Credentials::parse(Some("Basic !!!")).is_err());
        assert!(Credentials::parse(Some("Digest x")).is_err());
        let dbg = format!(
            "{:?}",
            Credentials::parse(Some(&format!("Basic {b}"))).unwrap()
        );
        assert!(!dbg.contains("pa:ss"), "{dbg}");
    }

    #[test]
    fn a_token_bounds_what_the_policy_allows() {
        let rules = Rules {
            auth_on: true,
            policy: Some(
                Policy::from_json(
                    &json!({"repositories": {"**": {"defaultPolicy": ["read", "create"]}}}),
                )
                .unwrap(),
            ),
            ..Rules::default()
        };
        let mut c = Caller::user("alice", vec![]);
        assert!(rules.may(&c, "a", Action::Create));
        c.token = Some(Claims {
            iss: String::new(),
            sub: "alice".into(),
            aud: token::Audience::None,
            exp: 0,
            nbf: 0,
            iat: 0,
            jti: String::new(),
            access: vec![Scope::repository("a", &["pull"])],
            groups: vec![],
        });
        assert!(rules.may(&c, "a", Action::Read));
        assert!(!rules.may(&c, "a", Action::Create));
        assert!(!rules.may(&c, "b", Action::Read));
        assert!(rules.visible(&c, vec!["a".into()]).is_empty());
    }

    #[test]
    fn without_a_policy_signed_in_users_may_do_anything() {
        let rules = Rules {
            auth_on: true,
            ..Rules::default()
        };
        assert!(rules.may(&Caller::user("x", vec![]), "a", Action::Delete));
        assert!(!rules.may(&Caller::anonymous(), "a", Action::Read));
        let open = Rules::default();
        assert!(open.may(&Caller::anonymous(), "a", Action::Delete));
        assert_eq!(open.challenge(None, None), None);
    }

    #[test]
    fn times_print_as_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_129_999), "2026-12-01T12:59:59Z");
    }

    #[test]
    fn challenges_name_realm_service_and_scope() {
        let rules = Rules {
            auth_on: true,
            bearer: Some(Bearer {
                realm: "https://r/auth/token".into(),
                service: "skiff".into(),
            }),
            ..Rules::default()
        };
        assert_eq!(
            rules
                .challenge(Some("repository:a:pull"), Some("insufficient_scope"))
                .unwrap(),
            r#"Bearer realm="https://r/auth/token",service="skiff",scope="repository:a:pull",error="insufficient_scope""#
        );
    }
}
