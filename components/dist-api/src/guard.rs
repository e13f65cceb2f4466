//! Who may do what, decided before the store is touched: the caller is
//! authenticated through `access`, and each route names the actions it
//! needs on which repositories. A tag push needs `create` when the tag is
//! new and `update` when it moves; a mount needs `read` on its source
//! (checked in `uploads`); the catalog shows only what the caller may read
//! (`listing`).
//!
//! A refusal is a 401 with a challenge when signing in (or a token with
//! more scope) could help, and a 403 when the signed-in user is simply not
//! allowed.

use crate::bindings::skiff::registry::access::{self, Action, AuthError, Caller};

use crate::bindings::skiff::registry::store;
use crate::request::Request;
use crate::response::Response;
use crate::route::Route;
use skiff_core::{ErrorCode, Reference, RegistryError, RepoName};

/// The authenticated caller of one request.
pub struct Guard {
    pub caller: Caller,
    /// The request came with a bearer token (so more scope may help).
    bearer: bool,
}

/// A refusal, already a response.
pub struct Refusal(pub Response);

impl Guard {
    pub fn authenticate(req: &Request) -> Result<Guard, Refusal> {
        let header = req.header("authorization");
        let bearer = header
            .as_deref()
            .is_some_and(|h| h.len() > 7 && h[..7].eq_ignore_ascii_case("bearer "));
        match access::authenticate(header.as_deref()) {
            Ok(caller) => Ok(Guard { caller, bearer }),
            Err(AuthError::Invalid(why)) => Err(unauthorized(why, None, None)),
            Err(AuthError::Unavailable(why)) => Err(Refusal(
                Response::error(RegistryError::new(ErrorCode::AuthUnavailable, why))
                    .header("Retry-After", "5"),
            )),
        }
    }

    pub fn anonymous(&self) -> bool {
        self.caller.user().is_none()
    }

    pub fn came_with_token(&self) -> bool {
        self.bearer
    }

    pub fn may(&self, repo: &RepoName, action: Action) -> bool {
        self.caller.may(repo.as_str(), action)
    }

    /// Check what `route` needs.
    pub fn admit(&self, route: &Route, req: &Request) -> Result<(), Refusal> {
        use Action::*;
        let need = |repo: &RepoName, action: Action| self.require(repo, action);
        match route {
            // Clients learn here how to sign in (`docker login` relies on it).
            Route::Base if self.anonymous() => match access::challenge(None, None) {
                Some(c) => Err(unauthorized(String::new(), Some(c), None)),
                None => Ok(()),
            },
            Route::Base | Route::Token | Route::Catalog => Ok(()),
            Route::Tags(r)
            | Route::Referrers(r, _)
            | Route::GetManifest(r, _)
            | Route::GetBlob(r, _) => need(r, Read),
            Route::PutManifest(r, reference) => {
                let mut tags: Vec<String> =
                    req.query_all("tag").into_iter().map(String::from).collect();
                if let Reference::Tag(t) = reference {
                    tags.push(t.to_string());
                }
                if tags.is_empty() {
                    return need(r, Create);
                }
                for t in tags {
                    // Checked against what the tag is now; a tag created in
                    // between by someone else is moved as an update would be.
                    let exists = match store::manifest_get(r.as_str(), &t) {
                        Ok(_) => true,
                        Err(store::Error::ManifestUnknown | store::Error::NameUnknown) => false,
                        Err(e) => return Err(Refusal(Response::error(e.into()))),
                    };
                    need(r, if exists { Update } else { Create })?;
                }
                Ok(())
            }
            Route::DeleteManifest(r, _) | Route::DeleteBlob(r, _) => need(r, Delete),
            Route::StartUpload(r)
            | Route::UploadStatus(r, _)
            | Route::PatchUpload(r, _)
            | Route::FinishUpload(r, _)
            | Route::CancelUpload(r, _) => need(r, Create),
        }
    }

    fn require(&self, repo: &RepoName, action: Action) -> Result<(), Refusal> {
        if self.may(repo, action) {
            return Ok(());
        }
        let scope = format!("repository:{repo}:{}", scope_actions(action));
        Err(self.refuse(&scope, format!("{} on {repo}", name(action))))
    }

    /// The refusal for a caller who lacks `scope`: 401 if a token with more
    /// scope or signing in could help, 403 if not.
    pub fn refuse(&self, scope: &str, what: String) -> Refusal {
        if self.anonymous() || self.bearer {
            let error = self.bearer.then_some("insufficient_scope");
            if let Some(c) = access::challenge(Some(scope), error) {
                return unauthorized(format!("{what} needs {scope}"), Some(c), None);
            }
        }
        Refusal(Response::error(RegistryError::new(
            ErrorCode::Denied,
            format!("{what} is not allowed for this user"),
        )))
    }
}

/// What a token must grant for `action` (a push also reads, as clients ask).
fn scope_actions(action: Action) -> &'static str {
    match action {
        Action::Read => "pull",
        Action::Create | Action::Update => "pull,push",
        Action::Delete => "delete",
    }
}

fn name(action: Action) -> &'static str {
    match action {
        Action::Read => "read",
        Action::Create => "create",
        Action::Update => "update",
        Action::Delete => "delete",
    }
}

/// 401 with the challenge for `scope` (computed here unless given).
pub fn unauthorized(detail: String, challenge: Option<String>, scope: Option<&str>) -> Refusal {
    let challenge = challenge.or_else(|| access::challenge(scope, None));
    let mut r = Response::error(RegistryError::new(ErrorCode::Unauthorized, detail));
    if let Some(c) = challenge {
        r = r.header("WWW-Authenticate", c);
    }
    Refusal(r)
}
