//! Access control in zot's shape (`http.accessControl`): who may do what to
//! which repositories. Plain data and one decision function, so the native
//! host and the edge's `access` component decide alike.
//!
//! A repository's permissions come from the longest of the `repositories`
//! globs that matches its name (zot's rule), where `*` stays within one path
//! component and `**` crosses them. Within that entry a signed-in user may
//! do what a policy naming them or one of their groups lists, plus
//! `defaultPolicy`; an anonymous caller may do `anonymousPolicy`.
//! `adminPolicy` adds its actions on every repository.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a request does to a repository (zot's four actions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Pull: manifests, blobs, tags, referrers, and the source of a mount.
    Read,
    /// Push something new: blobs, a manifest by digest, a tag that does not exist yet.
    Create,
    /// Move an existing tag to another manifest.
    Update,
    Delete,
}

impl Action {
    pub const ALL: [Action; 4] = [Action::Read, Action::Create, Action::Update, Action::Delete];

    pub fn parse(s: &str) -> Option<Action> {
        Some(match s {
            "read" => Action::Read,
            "create" => Action::Create,
            "update" => Action::Update,
            "delete" => Action::Delete,
            _ => return None,
        })
    }

    /// The Docker token scope action that covers this one.
    pub fn scope_action(self) -> &'static str {
        match self {
            Action::Read => "pull",
            Action::Create | Action::Update => "push",
            Action::Delete => "delete",
        }
    }
}

/// Who is asking: a signed-in user with their groups, or nobody.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Principal {
    /// `None`: anonymous.
    pub user: Option<String>,
    /// Groups from the identity provider (LDAP, a token); the policy's own
    /// `groups` are added when deciding.
    pub groups: Vec<String>,
}

impl Principal {
    pub fn anonymous() -> Principal {
        Principal::default()
    }

    pub fn user(name: impl Into<String>, groups: Vec<String>) -> Principal {
        Principal {
            user: Some(name.into()),
            groups,
        }
    }
}

/// A setting that cannot be used (a policy document, a key file), with
/// why; the message names the key and never echoes a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingError(pub String);

impl std::fmt::Display for SettingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SettingError {}

/// `http.accessControl`, checked.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Policy {
    /// Group name → members.
    groups: BTreeMap<String, Vec<String>>,
    repositories: Vec<(String, RepoRules)>,
    admin: Rule,
}

#[derive(Debug, Clone, PartialEq, Default)]
struct RepoRules {
    policies: Vec<Rule>,
    default: Vec<Action>,
    anonymous: Vec<Action>,
}

#[derive(Debug, Clone, PartialEq, Default)]
struct Rule {
    users: Vec<String>,
    groups: Vec<String>,
    actions: Vec<Action>,
}

// zot's JSON, as written; checked into the types above.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    groups: BTreeMap<String, RawGroup>,
    #[serde(default)]
    repositories: BTreeMap<String, RawRepo>,
    #[serde(default, rename = "adminPolicy")]
    admin_policy: Option<RawRule>,
    /// zot's older key for who may read `/metrics`; accepted, unused.
    #[serde(default)]
    #[allow(dead_code)]
    metrics: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    #[serde(default)]
    users: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRepo {
    #[serde(default)]
    policies: Vec<RawRule>,
    #[serde(default, rename = "defaultPolicy")]
    default_policy: Vec<String>,
    #[serde(default, rename = "anonymousPolicy")]
    anonymous_policy: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    actions: Vec<String>,
}

fn actions(key: &str, names: &[String]) -> Result<Vec<Action>, SettingError> {
    names
        .iter()
        .map(|n| {
            Action::parse(n).ok_or_else(|| {
                SettingError(format!(
                    "{key}: unknown action {n:?} (expected read, create, update or delete)"
                ))
            })
        })
        .collect()
}

fn rule(key: &str, raw: RawRule) -> Result<Rule, SettingError> {
    Ok(Rule {
        actions: actions(&format!("{key}.actions"), &raw.actions)?,
        users: raw.users,
        groups: raw.groups,
    })
}

impl Policy {
    /// Parse zot's `accessControl` object; errors name the key under it.
    pub fn from_json(value: &serde_json::Value) -> Result<Policy, SettingError> {
        let raw: RawPolicy = serde_json::from_value(value.clone())
            .map_err(|e| SettingError(format!("http.accessControl: {e}")))?;
        let mut repositories = Vec::new();
        for (glob, repo) in raw.repositories {
            let key = format!("http.accessControl.repositories.{glob}");
            let policies = repo
                .policies
                .into_iter()
                .enumerate()
                .map(|(i, r)| rule(&format!("{key}.policies[{i}]"), r))
                .collect::<Result<_, _>>()?;
            repositories.push((
                glob,
                RepoRules {
                    policies,
                    default: actions(&format!("{key}.defaultPolicy"), &repo.default_policy)?,
                    anonymous: actions(&format!("{key}.anonymousPolicy"), &repo.anonymous_policy)?,
                },
            ));
        }
        let admin = match raw.admin_policy {
            Some(r) => rule("http.accessControl.adminPolicy", r)?,
            None => Rule::default(),
        };
        Ok(Policy {
            groups: raw.groups.into_iter().map(|(g, v)| (g, v.users)).collect(),
            repositories,
            admin,
        })
    }

    /// May `who` do `action` on the repository `repo`?
    pub fn allows(&self, who: &Principal, repo: &str, action: Action) -> bool {
        let groups = self.groups_of(who);
        let in_rule = |r: &Rule| match &who.user {
            Some(u) => {
                r.users.iter().any(|x| x == u)
                    || r.groups.iter().any(|g| groups.contains(&g.as_str()))
            }
            None => false,
        };
        if in_rule(&self.admin) && self.admin.actions.contains(&action) {
            return true;
        }
        let Some(rules) = self.rules_for(repo) else {
            return false;
        };
        if who.user.is_none() {
            return rules.anonymous.contains(&action);
        }
        rules.default.contains(&action)
            || rules
                .policies
                .iter()
                .any(|r| in_rule(r) && r.actions.contains(&action))
    }

    /// The longest glob matching `repo` decides (zot's rule).
    fn rules_for(&self, repo: &str) -> Option<&RepoRules> {
        self.repositories
            .iter()
            .filter(|(g, _)| glob_match(g, repo))
            .max_by_key(|(g, _)| g.len())
            .map(|(_, r)| r)
    }

    fn groups_of<'a>(&'a self, who: &'a Principal) -> Vec<&'a str> {
        let mut groups: Vec<&str> = who.groups.iter().map(String::as_str).collect();
        if let Some(u) = &who.user {
            groups.extend(
                self.groups
                    .iter()
                    .filter(|(_, members)| members.iter().any(|m| m == u))
                    .map(|(g, _)| g.as_str()),
            );
        }
        groups
    }
}

/// zot's glob over repository names: `*` matches within one path component,
/// `**` across components; everything else matches itself.
pub fn glob_match(glob: &str, name: &str) -> bool {
    // Backtracking is exponential in the number of stars at worst; globs
    // come from the operator's config and are short.
    fn m(g: &[u8], n: &[u8]) -> bool {
        match g.first() {
            None => n.is_empty(),
            Some(b'*') if g.get(1) == Some(&b'*') => (0..=n.len()).any(|i| m(&g[2..], &n[i..])),
            Some(b'*') => (0..=n.len())
                .take_while(|&i| i == 0 || n[i - 1] != b'/')
                .any(|i| m(&g[1..], &n[i..])),
            Some(c) => n.first() == Some(c) && m(&g[1..], &n[1..]),
        }
    }
    m(glob.as_bytes(), name.as_bytes())
}

/// One entry of a token's `access` claim, and one `scope` a client asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

impl Scope {
    /// `type:name:actions`; the name may itself hold colons (a port).
    pub fn parse(s: &str) -> Option<Scope> {
        let (kind, rest) = s.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        if kind.is_empty() || name.is_empty() {
            return None;
        }
        Some(Scope {
            kind: kind.to_string(),
            name: name.to_string(),
            actions: actions
                .split(',')
                .filter(|a| !a.is_empty())
                .map(str::to_string)
                .collect(),
        })
    }

    pub fn repository(name: &str, actions: &[&str]) -> Scope {
        Scope {
            kind: "repository".into(),
            name: name.into(),
            actions: actions.iter().map(|a| a.to_string()).collect(),
        }
    }

    pub fn grants(&self, kind: &str, name: &str, action: &str) -> bool {
        self.kind == kind
            && self.name == name
            && self.actions.iter().any(|a| a == action || a == "*")
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.kind, self.name, self.actions.join(","))
    }
}

/// Of what `requested` asks for, what the caller gets: each action it may
/// do, `*` standing for all of them. Unknown kinds get nothing.
pub fn narrow(requested: &Scope, may: impl Fn(Action) -> bool) -> Scope {
    let wants = |a: &str| requested.actions.iter().any(|x| x == a || x == "*");
    let actions: Vec<String> = match requested.kind.as_str() {
        "repository" => {
            let mut got = Vec::new();
            if wants("pull") && may(Action::Read) {
                got.push("pull");
            }
            if wants("push") && (may(Action::Create) || may(Action::Update)) {
                got.push("push");
            }
            if wants("delete") && may(Action::Delete) {
                got.push("delete");
            }
            got.into_iter().map(str::to_string).collect()
        }
        // Which repositories it lists is decided per request (`visible`).
        "registry" if requested.name == "catalog" && wants("*") => vec!["*".into()],
        _ => Vec::new(),
    };
    Scope {
        kind: requested.kind.clone(),
        name: requested.name.clone(),
        actions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy() -> Policy {
        Policy::from_json(&json!({
            "groups": {"devs": {"users": ["bob", "carol"]}},
            "repositories": {
                "**": {"anonymousPolicy": ["read"], "defaultPolicy": ["read"]},
                "team/**": {
                    "policies": [
                        {"users": ["alice"], "actions": ["read", "create", "update", "delete"]},
                        {"groups": ["devs"], "actions": ["read", "create"]}
                    ]
                },
                "private/*": {"policies": [{"users": ["alice"], "actions": ["read"]}]}
            },
            "adminPolicy": {"users": ["root"], "actions": ["read", "delete"]}
        }))
        .unwrap()
    }

    #[test]
    fn the_longest_matching_glob_decides() {
        let p = policy();
        let anon = Principal::anonymous();
        let bob = Principal::user("bob", vec![]);
        let alice = Principal::user("alice", vec![]);
        assert!(p.allows(&anon, "pub/x", Action::Read));
        assert!(!p.allows(&anon, "pub/x", Action::Create));
        // team/** has no anonymous or default policy: it replaces "**".
        assert!(!p.allows(&anon, "team/app", Action::Read));
        assert!(p.allows(&bob, "team/app", Action::Create));
        assert!(!p.allows(&bob, "team/app", Action::Update));
        assert!(p.allows(&alice, "team/app", Action::Update));
        // * stays within one component: private/a/b falls back to "**".
        assert!(!p.allows(&bob, "private/a", Action::Read));
        assert!(p.allows(&bob, "private/a/b", Action::Read));
    }

    #[test]
    fn groups_come_from_the_policy_and_the_identity() {
        let p = policy();
        let dave = Principal::user("dave", vec!["devs".into()]);
        assert!(p.allows(&dave, "team/x", Action::Create));
        let dave_alone = Principal::user("dave", vec![]);
        assert!(!p.allows(&dave_alone, "team/x", Action::Create));
    }

    #[test]
    fn admins_get_their_actions_everywhere() {
        let p = policy();
        let root = Principal::user("root", vec![]);
        assert!(p.allows(&root, "private/a", Action::Delete));
        assert!(!p.allows(&root, "private/a", Action::Create));
    }

    #[test]
    fn an_unknown_action_names_its_key() {
        let e = Policy::from_json(&json!({"repositories": {"a/*": {"defaultPolicy": ["write"]}}}))
            .unwrap_err();
        assert!(e.0.contains("repositories.a/*.defaultPolicy"), "{e}");
        let e = Policy::from_json(&json!({"repositories": {}, "admins": {}})).unwrap_err();
        assert!(e.0.contains("admins"), "{e}");
    }

    #[test]
    fn globs() {
        assert!(glob_match("**", "a/b/c"));
        assert!(glob_match("a/*", "a/b"));
        assert!(!glob_match("a/*", "a/b/c"));
        assert!(glob_match("a/**", "a/b/c"));
        assert!(glob_match("*-dev", "app-dev"));
        assert!(!glob_match("a", "ab"));
    }

    #[test]
    fn scopes_parse_with_colons_in_names() {
        let s = Scope::parse("repository:localhost:5000/app:pull,push").unwrap();
        assert_eq!(s.name, "localhost:5000/app");
        assert_eq!(s.actions, ["pull", "push"]);
        assert_eq!(s.to_string(), "repository:localhost:5000/app:pull,push");
        assert!(Scope::parse("repository").is_none());
    }
    #[test]
    fn narrowing_keeps_only_what_is_allowed() {
        let s = Scope::parse("repository:a:pull,push,delete").unwrap();
        let n = narrow(&s, |a| a == Action::Read || a == Action::Update);
        assert_eq!(n.actions, ["pull", "push"]);
        let all = narrow(&Scope::parse("repository:a:*").unwrap(), |a| {
            a == Action::Delete
        });
        assert_eq!(all.actions, ["delete"]);
        assert!(narrow(&Scope::parse("weird:a:*").unwrap(), |_| true)
            .actions
            .is_empty());
    }
}
