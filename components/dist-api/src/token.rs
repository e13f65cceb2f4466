//! The token endpoint (`GET /auth/token`), the Docker way: a client that
//! got a 401 with a `Bearer realm=...` challenge asks here, with Basic
//! credentials or none, for the scopes it needs, and gets a signed token for
//! the part of them the policy allows (possibly none of it). Signing is the
//! `access` provider's: the key stays with the host or the runtime.

use crate::bindings::skiff::registry::access;
use crate::guard::{unauthorized, Guard};
use crate::request::Request;
use crate::response::Response;
use skiff_core::access::{narrow, Action, Scope};
use skiff_core::{ErrorCode, RegistryError, RepoName};

/// Where the endpoint is; `http.auth.bearer.realm` should name it.
pub const PATH: &str = "/auth/token";

/// Scopes one request may ask for.
const MAX_SCOPES: usize = 64;

pub fn issue(req: &Request, guard: &Guard) -> Result<Response, RegistryError> {
    // A token may not mint a longer-lived one for itself.
    if guard.came_with_token() {
        return Ok(unauthorized(
            "the token endpoint takes Basic credentials or none".into(),
            None,
            None,
        )
        .0);
    }
    let requested: Vec<&str> = req
        .query_all("scope")
        .into_iter()
        .flat_map(|s| s.split(' '))
        .filter(|s| !s.is_empty())
        .collect();
    if requested.len() > MAX_SCOPES {
        return Err(RegistryError::new(
            ErrorCode::Unsupported,
            format!("at most {MAX_SCOPES} scopes per token"),
        ));
    }
    let mut granted = Vec::new();
    for s in requested {
        let Some(scope) = Scope::parse(s) else {
            return Err(RegistryError::new(
                ErrorCode::Unsupported,
                format!("scope {s:?} is not type:name:actions"),
            ));
        };
        let g = if scope.kind == "repository" {
            match scope.name.parse::<RepoName>() {
                Ok(repo) => narrow(&scope, |a| guard.caller.may(repo.as_str(), to_wit(a))),
                // Nothing can exist under an invalid name: grant nothing.
                Err(_) => narrow(&scope, |_| false),
            }
        } else {
            narrow(&scope, |_| true)
        };
        granted.push(g.to_string());
    }
    match guard.caller.issue_token(&granted) {
        Ok(t) => {
            let body = serde_json::json!({
                "token": t.token,
                "access_token": t.token,
                "expires_in": t.expires_in,
                "issued_at": t.issued_at,
            });
            Ok(Response::json(200, body.to_string().into_bytes())
                .header("Cache-Control", "no-store"))
        }
        Err(why) => Err(RegistryError::new(ErrorCode::NotFound, why)),
    }
}

pub fn to_wit(a: Action) -> access::Action {
    match a {
        Action::Read => access::Action::Read,
        Action::Create => access::Action::Create,
        Action::Update => access::Action::Update,
        Action::Delete => access::Action::Delete,
    }
}
