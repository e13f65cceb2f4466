//! Authentication and access control over the real API: an authorization
//! matrix of users, groups and anonymous callers × repository globs × every
//! action, each allowed or denied as the policy says, with the store
//! checked afterwards so that a refused request is known to have written
//! nothing. The same file runs as `auth_edge_kv`, against the edge
//! composition under `wasmtime serve` with the same users and policy as
//! runtime settings.

mod common;
use common::*;
use serde_json::json;

const USERS: &[User] = &[
    User {
        name: "root",
        password: "root-pw-4e1b9c",
    },
    User {
        name: "alice",
        password: "alice-pw-8d02f7",
    },
    User {
        name: "bob",
        password: "bob-pw-c35a10",
    },
    User {
        name: "carol",
        password: "carol-pw-f9e6d2",
    },
];

/// Two groups, four repository globs (and a scratch area to mount into).
fn policy() -> serde_json::Value {
    json!({
        "groups": {"ops": {"users": ["alice"]}, "devs": {"users": ["bob"]}},
        "repositories": {
            "public/**": {
                "anonymousPolicy": ["read"],
                "defaultPolicy": ["read"],
                "policies": [{"groups": ["devs"], "actions": ["read", "create", "update", "delete"]}]
            },
            "team/**": {
                "policies": [
                    {"groups": ["devs"], "actions": ["read", "create"]},
                    {"users": ["carol"], "actions": ["read", "update"]},
                    {"groups": ["ops"], "actions": ["read", "delete"]}
                ]
            },
            "private/*": {"policies": [{"users": ["alice"], "actions": ["read", "create", "update", "delete"]}]},
            "**": {"defaultPolicy": ["read"]},
            "scratch/**": {"defaultPolicy": ["read", "create"]}
        },
        "adminPolicy": {"users": ["root"], "actions": ["read", "create", "update", "delete"]}
    })
}

const REPOS: [&str; 4] = ["public/app", "team/app", "private/app", "other/app"];

/// What the policy above grants, written out by hand (R, C, U, D per repo
/// in `REPOS` order), so the test does not ask the code it checks.
fn expected(who: &str) -> [&'static str; 4] {
    match who {
        "anonymous" => ["R", "", "", ""],
        "alice" => ["R", "RD", "RCUD", "R"],
        "bob" => ["RCUD", "RC", "", "R"],
        "carol" => ["R", "RU", "", "R"],
        // In LDAP, whose group attribute says devs: what bob may.
        "dave" => ["RCUD", "RC", "", "R"],
        _ => unreachable!(),
    }
}

/// A caller of the matrix: a user (or nobody) and how they sign in.
struct Who {
    name: &'static str,
    basic: Option<String>,
    sign: Sign,
}

impl Who {
    fn anonymous(&self) -> bool {
        self.basic.is_none()
    }

    /// Send what `make` builds as this caller: Basic credentials on the
    /// request, or the token dance (401 → token for the challenge's scope
    /// → the request again with it).
    fn send<'a>(&self, reg: &'a Registry, make: impl Fn() -> Req<'a>) -> Resp {
        self.send_with(reg, &[], make)
    }

    /// [`Who::send`], asking a token for `extra` scopes too, as clients do
    /// for the source of a mount.
    fn send_with<'a>(&self, reg: &'a Registry, extra: &[&str], make: impl Fn() -> Req<'a>) -> Resp {
        match self.sign {
            Sign::Basic => match &self.basic {
                Some(b) => make().header("Authorization", b).send(),
                None => make().anonymous().send(),
            },
            Sign::Tokens => {
                let first = make().anonymous().send();
                if first.status != 401 {
                    return first;
                }
                let c = first.header("www-authenticate").unwrap_or("");
                assert!(
                    c.starts_with("Bearer realm="),
                    "a 401 without a bearer challenge: {first:?}"
                );
                // /v2/ names no scope: `docker login` then asks for none.
                let scope = challenge_scope(&first);
                let mut scopes: Vec<&str> = scope.iter().map(String::as_str).collect();
                scopes.extend_from_slice(extra);
                let (r, token) = reg.token(self.basic.as_deref(), &scopes);
                let token = token.unwrap_or_else(|| panic!("token for {}: {r:?}", self.name));
                make()
                    .header("Authorization", &format!("Bearer {token}"))
                    .send()
            }
        }
    }

    /// A refusal as this caller must see it.
    fn assert_refused(&self, r: &Resp, what: &str) {
        let ctx = format!(
            "{what} as {} ({:?}): {} {}",
            self.name,
            self.sign,
            r.status,
            r.text()
        );
        if self.anonymous() || self.sign == Sign::Tokens {
            assert_eq!(r.status, 401, "{ctx}");
            let c = r
                .header("www-authenticate")
                .unwrap_or_else(|| panic!("no challenge: {ctx}"));
            match self.sign {
                Sign::Basic => assert!(c.starts_with("Basic realm="), "{ctx}: {c}"),
                Sign::Tokens => {
                    assert!(c.contains(&format!("service=\"{SERVICE}\"")), "{ctx}: {c}");
                    assert!(c.contains("scope=\""), "{ctx}: {c}");
                }
            }
            assert_eq!(r.error_code(), "UNAUTHORIZED", "{ctx}");
        } else {
            assert_eq!(r.status, 403, "{ctx}");
            assert_eq!(r.error_code(), "DENIED", "{ctx}");
        }
    }
}

/// What root put into each repository before the callers try it.
struct Seeded {
    base: String,
    layer: String,
    /// A second manifest (its blobs present), pushed by digest.
    other: (Vec<u8>, String),
}

fn seed(reg: &Registry, repo: &str, callers: &[&str]) -> Seeded {
    let (base_bytes, base) = reg.push_image(repo, "base", &format!("{repo} base"));
    let layer = sha256(format!("layer of {repo} base").as_bytes());
    let (bytes, other) = reg.push_image(repo, "scratch", &format!("{repo} other"));
    assert_eq!(
        reg.delete(&format!("/v2/{repo}/manifests/scratch")).status,
        202
    );
    // A referrer of base (an artifact with base as its subject).
    let cfg = reg.push_blob(repo, b"{}");
    let art = image_manifest(
        &cfg,
        2,
        &[],
        Some((&base, base_bytes.len())),
        Some("application/vnd.test.sig"),
    );
    let r = reg.put_manifest(repo, &sha256(&art), OCI_MANIFEST, &art);
    assert_eq!(r.status, 201, "referrer: {}", r.text());
    for who in callers {
        let r = reg.put_manifest(
            repo,
            &format!("mv-{who}"),
            OCI_MANIFEST,
            &reg.get_manifest(repo, "base").body,
        );
        assert_eq!(r.status, 201);
        reg.push_image(
            repo,
            &format!("victim-{who}"),
            &format!("{repo} victim {who}"),
        );
    }
    Seeded {
        base,
        layer,
        other: (bytes, other),
    }
}

/// The directory's user (the edge has no LDAP: it runs without dave).
const DAVE: LdapUser = LdapUser {
    uid: "dave",
    password: "dave-ldap-pw-0a4e",
    groups: &["devs"],
};

fn run_matrix(sign: Sign) {
    let slapd = EDGE.is_none().then(|| Slapd::start(&[DAVE]));
    let ldap = slapd.as_ref().map(Slapd::config);
    let reg = Registry::start_secured(USERS, &policy(), sign, |cfg| {
        if let Some(l) = ldap {
            cfg["http"]["auth"]["ldap"] = l;
        }
    });
    let pw = |n: &str| {
        USERS
            .iter()
            .find(|u| u.name == n)
            .map_or(DAVE.password, |u| u.password)
    };
    let root = Some(basic("root", pw("root")));
    let mut names = vec!["anonymous", "alice", "bob", "carol"];
    if slapd.is_some() {
        names.push("dave");
    }
    reg.as_user(root.clone());
    let seeded: Vec<Seeded> = REPOS.iter().map(|r| seed(&reg, r, &names)).collect();
    reg.as_user(None);

    for name in names.iter().copied() {
        let who = Who {
            name,
            basic: (name != "anonymous").then(|| basic(name, pw(name))),
            sign,
        };
        let grants = expected(name);
        for (i, repo) in REPOS.iter().enumerate() {
            let may = |a: char| grants[i].contains(a);
            let s = &seeded[i];
            let check = |allowed: bool, r: &Resp, ok: u16, what: &str| {
                let what = format!("{what} in {repo}");
                if allowed {
                    assert_eq!(r.status, ok, "{what} as {name} ({sign:?}): {}", r.text());
                } else {
                    who.assert_refused(r, &what);
                }
            };
            // Reading.
            let r = who.send(&reg, || {
                reg.req("GET", &format!("/v2/{repo}/manifests/base"))
                    .header("Accept", OCI_MANIFEST)
            });
            check(may('R'), &r, 200, "pull");
            if may('R') {
                assert_eq!(sha256(&r.body), s.base);
            }
            let r = who.send(&reg, || {
                reg.req("GET", &format!("/v2/{repo}/blobs/{}", s.layer))
            });
            check(may('R'), &r, 200, "blob pull");
            let r = who.send(&reg, || reg.req("GET", &format!("/v2/{repo}/tags/list")));
            check(may('R'), &r, 200, "tags list");
            let r = who.send(&reg, || {
                reg.req("GET", &format!("/v2/{repo}/referrers/{}", s.base))
            });
            check(may('R'), &r, 200, "referrers");
            if may('R') {
                assert_eq!(
                    r.json()["manifests"].as_array().unwrap().len(),
                    1,
                    "{}",
                    r.text()
                );
            }

            // Pushing something new: a blob, and a new tag.
            let blob = format!("{name} was here in {repo}");
            let d = sha256(blob.as_bytes());
            let r = who.send(&reg, || {
                reg.req("POST", &format!("/v2/{repo}/blobs/uploads/?digest={d}"))
                    .header("Content-Type", "application/octet-stream")
                    .body(blob.as_bytes())
            });
            check(may('C'), &r, 201, "blob push");
            // The other manifest under `tag`: a new tag (create), or an
            // existing one moved (update).
            let put_other = |tag: &str| {
                who.send(&reg, || {
                    reg.req("PUT", &format!("/v2/{repo}/manifests/{tag}"))
                        .header("Content-Type", OCI_MANIFEST)
                        .body(&s.other.0)
                })
            };
            let new_tag = format!("new-{name}");
            check(may('C'), &put_other(&new_tag), 201, "push of a new tag");
            let mv = format!("mv-{name}");
            check(may('U'), &put_other(&mv), 201, "tag move");

            // Deleting.
            let victim = sha256(
                &reg.as_user(root.clone())
                    .get_manifest(repo, &format!("victim-{name}"))
                    .body,
            );
            reg.as_user(None);
            let r = who.send(&reg, || {
                reg.req("DELETE", &format!("/v2/{repo}/manifests/{victim}"))
            });
            check(may('D'), &r, 202, "delete");

            // Mounting from here into a scratch repository the signed-in may write.
            let target = format!("scratch/{name}-{i}");
            let source = format!("repository:{repo}:pull");
            let r = who.send_with(&reg, &[&source], || {
                reg.req(
                    "POST",
                    &format!("/v2/{target}/blobs/uploads/?mount={}&from={repo}", s.layer),
                )
            });
            match (who.anonymous(), may('R')) {
                (true, _) => who.assert_refused(&r, "mount"),
                (false, true) => {
                    assert_eq!(r.status, 201, "mount from {repo} as {name}: {}", r.text())
                }
                // Not readable: an ordinary upload session instead, as if the blob were not there.
                (false, false) => {
                    assert_eq!(r.status, 202, "mount from {repo} as {name}: {}", r.text())
                }
            }

            // What is stored now, seen by root: exactly the allowed writes happened.
            reg.as_user(root.clone());
            let has_blob = reg.head(&format!("/v2/{repo}/blobs/{d}")).status == 200;
            assert_eq!(has_blob, may('C'), "{name}'s blob in {repo}");
            let new = reg.get_manifest(repo, &new_tag);
            assert_eq!(new.status == 200, may('C'), "{name}'s new tag in {repo}");
            let moved = sha256(&reg.get_manifest(repo, &mv).body);
            assert_eq!(moved == s.other.1, may('U'), "{name}'s tag move in {repo}");
            let gone = reg.get_manifest(repo, &victim).status == 404;
            assert_eq!(gone, may('D'), "{name}'s delete in {repo}");
            let mounted = reg.head(&format!("/v2/{target}/blobs/{}", s.layer)).status == 200;
            assert_eq!(
                mounted,
                !who.anonymous() && may('R'),
                "{name}'s mount from {repo}"
            );
            reg.as_user(None);
        }

        // The catalog lists exactly what the caller may read.
        let r = who.send(&reg, || reg.req("GET", "/v2/_catalog"));
        assert_eq!(r.status, 200, "catalog as {name}: {}", r.text());
        let listed: Vec<String> = r.json()["repositories"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        let want: Vec<&str> = REPOS
            .iter()
            .zip(grants)
            .filter(|(_, g)| g.contains('R'))
            .map(|(r, _)| *r)
            .collect();
        let got: Vec<&str> = listed
            .iter()
            .map(String::as_str)
            .filter(|r| REPOS.contains(r))
            .collect();
        let mut want_sorted = want.clone();
        want_sorted.sort();
        assert_eq!(got, want_sorted, "catalog as {name}");
        if who.anonymous() {
            assert!(
                listed.iter().all(|r| !r.starts_with("scratch/")),
                "{listed:?}"
            );
        }
    }

    // docker login's check: /v2/ asks anonymous callers to sign in, and
    // lets a signed-in one through.
    let r = reg.req("GET", "/v2/").anonymous().send();
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").is_some());
    let alice = basic("alice", pw("alice"));
    let r = Who {
        name: "alice",
        basic: Some(alice),
        sign,
    }
    .send(&reg, || reg.req("GET", "/v2/"));
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn access_matrix_with_basic_credentials() {
    run_matrix(Sign::Basic);
}

#[test]
fn access_matrix_with_bearer_tokens() {
    run_matrix(Sign::Tokens);
}

#[test]
fn wrong_passwords_get_401_and_write_nothing() {
    let reg = Registry::start_secured(USERS, &policy(), Sign::Tokens, |_| {});
    let wrong = basic("bob", "not-bobs-password");
    let blob = b"should not land";
    let d = sha256(blob);
    let r = reg
        .req("POST", &format!("/v2/public/app/blobs/uploads/?digest={d}"))
        .header("Authorization", &wrong)
        .body(blob)
        .send();
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.error_code(), "UNAUTHORIZED");
    let (r, token) = reg.token(Some(&wrong), &["repository:public/app:pull,push"]);
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(token.is_none());
    // An unknown user, and garbage in the header.
    let r = reg
        .req("GET", "/v2/public/app/tags/list")
        .header("Authorization", &basic("mallory", "x"))
        .send();
    assert_eq!(r.status, 401);
    let r = reg
        .req("GET", "/v2/public/app/tags/list")
        .header("Authorization", "Basic ???")
        .send();
    assert_eq!(r.status, 401);
    reg.as_user(Some(basic("root", USERS[0].password)));
    assert_eq!(reg.head(&format!("/v2/public/app/blobs/{d}")).status, 404);
}

#[test]
fn a_token_grants_only_what_the_policy_allows_and_only_where_asked() {
    let reg = Registry::start_secured(USERS, &policy(), Sign::Tokens, |_| {});
    let carol = basic("carol", USERS[3].password);
    // carol asks for everything on team/app and private/app.
    let (r, token) = reg.token(
        Some(&carol),
        &[
            "repository:team/app:pull,push,delete",
            "repository:private/app:pull",
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let token = token.unwrap();
    assert!(r.json()["expires_in"].as_u64().unwrap() > 0);
    assert!(r.json()["issued_at"].as_str().unwrap().ends_with('Z'));
    let bearer = format!("Bearer {token}");
    // team/app: read yes; a blob push (create) no, though "push" was asked.
    reg.as_user(Some(bearer));
    let r = reg.get("/v2/team/app/tags/list");
    assert_eq!(r.status, 404, "readable, and empty: {}", r.text());
    let d = sha256(b"x");
    let r = reg
        .req("POST", &format!("/v2/team/app/blobs/uploads/?digest={d}"))
        .body(b"x")
        .send();
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r
        .header("www-authenticate")
        .unwrap()
        .contains("insufficient_scope"));
    // Another repository than the token names.
    let r = reg.get("/v2/other/app/tags/list");
    assert_eq!(r.status, 401, "{}", r.text());
    let r = reg.get("/v2/private/app/tags/list");
    assert_eq!(r.status, 401, "{}", r.text());
    // A token cannot mint another.
    let r = reg
        .req(
            "GET",
            "/auth/token?service=x&scope=repository:team/app:pull",
        )
        .send();
    assert_eq!(r.status, 401, "{}", r.text());
}

#[test]
fn expired_foreign_tampered_and_unsigned_tokens_get_401_and_write_nothing() {
    let issuer = Issuer::new();
    let reg = Registry::start_secured_trusting(
        USERS,
        &policy(),
        Sign::Tokens,
        Some(&issuer.cert()),
        |_| {},
    );
    let now = unix_now();
    let header = json!({"alg": "ES256", "typ": "JWT"});
    let claims = |sub: &str, repo: &str, aud: &str, exp: u64| {
        json!({
            "iss": "external", "sub": sub, "aud": aud, "exp": exp, "nbf": now - 10, "iat": now - 10,
            "jti": format!("{sub}-{exp}"),
            "access": [{"type": "repository", "name": repo, "actions": ["pull", "push"]}]
        })
    };
    let push = |token: &str, repo: &str, what: &str| -> (Resp, String) {
        let blob = format!("pushed with a {what} token");
        let d = sha256(blob.as_bytes());
        let r = reg
            .req("POST", &format!("/v2/{repo}/blobs/uploads/?digest={d}"))
            .header("Authorization", &format!("Bearer {token}"))
            .body(blob.as_bytes())
            .send();
        (r, d)
    };
    // The external issuer's token works, for what it grants and the policy allows.
    let good = issuer.token(
        &header,
        &claims("bob", "public/app", SERVICE, now + 300),
        true,
    );
    let (r, d) = push(&good, "public/app", "good");
    assert_eq!(r.status, 201, "{}", r.text());
    let mut written = vec![("public/app", d, true)];

    let (h, rest) = good.split_once('.').unwrap();
    let (_, sig) = rest.split_once('.').unwrap();
    let root_claims = issuer.token(
        &header,
        &claims("root", "team/app", SERVICE, now + 300),
        false,
    );
    let forged_body = root_claims.split('.').nth(1).unwrap();
    let stranger = Issuer::new();
    let bad = [
        (
            "expired",
            issuer.token(
                &header,
                &claims("bob", "public/app", SERVICE, now - 120),
                true,
            ),
            "public/app",
        ),
        ("other-repository", good.clone(), "team/app"),
        (
            "wrong-audience",
            issuer.token(
                &header,
                &claims("bob", "public/app", "elsewhere", now + 300),
                true,
            ),
            "public/app",
        ),
        ("tampered", format!("{h}.{forged_body}.{sig}"), "team/app"),
        (
            "alg-none",
            issuer.token(
                &json!({"alg": "none", "typ": "JWT"}),
                &claims("root", "team/app", SERVICE, now + 300),
                false,
            ),
            "team/app",
        ),
        (
            "hs256",
            issuer.token(
                &json!({"alg": "HS256", "typ": "JWT"}),
                &claims("root", "team/app", SERVICE, now + 300),
                false,
            ) + "c2ln",
            "team/app",
        ),
        (
            "untrusted-issuer",
            stranger.token(
                &header,
                &claims("bob", "public/app", SERVICE, now + 300),
                true,
            ),
            "public/app",
        ),
        ("garbage", "not.a.jwt".to_string(), "public/app"),
    ];
    for (what, token, repo) in bad {
        let (r, d) = push(&token, repo, what);
        assert_eq!(r.status, 401, "a {what} token: {}", r.text());
        assert_eq!(r.error_code(), "UNAUTHORIZED", "{what}");
        assert!(
            r.header("www-authenticate")
                .is_some_and(|c| c.starts_with("Bearer ")),
            "{what}"
        );
        written.push((repo, d, false));
    }
    reg.as_user(Some(basic("root", USERS[0].password)));
    for (repo, d, stored) in written {
        let status = reg.head(&format!("/v2/{repo}/blobs/{d}")).status;
        assert_eq!(status == 200, stored, "{repo} {d}: {status}");
    }
}

/// `skiff serve` re-reads the htpasswd file when it changes: a new user
/// signs in, a changed password works and the old one stops at once (the
/// cache of verified passwords is dropped with the old file). The edge
/// takes its users from runtime settings, read on every request.
#[test]
fn a_changed_htpasswd_file_takes_effect_without_a_restart() {
    if EDGE.is_some() {
        return;
    }
    let reg = Registry::start_secured(&USERS[..2], &policy(), Sign::Basic, |_| {});
    let file = reg.data.path().join("htpasswd");
    let status = |user: &str, pw: &str| {
        reg.req("GET", "/v2/other/app/tags/list")
            .header("Authorization", &basic(user, pw))
            .send()
            .status
    };
    // alice signs in (and is cached); carol is not known yet.
    assert_eq!(status("alice", USERS[1].password), 404);
    assert_eq!(status("carol", USERS[3].password), 401);

    let new_alice = "alice-new-pw-77c1";
    note_secret(new_alice);
    let text = [
        htpasswd_line("root", USERS[0].password),
        htpasswd_line("alice", new_alice),
        htpasswd_line("carol", USERS[3].password),
    ]
    .join("\n")
        + "\n";
    // Written aside and renamed, as an operator's tool would.
    let tmp = file.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &file).unwrap();

    assert_eq!(status("carol", USERS[3].password), 404);
    assert_eq!(status("alice", new_alice), 404);
    assert_eq!(status("alice", USERS[1].password), 401);

    // A file that no longer parses keeps the users it had.
    std::fs::write(&tmp, "carol:not-a-bcrypt-hash\n").unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    assert_eq!(status("carol", USERS[3].password), 404);
}

/// LDAP beside htpasswd: a wrong or empty password and a filter injected
/// as the user name get 401; with the directory down its users get 503
/// (the directory could not be asked: not "wrong password") while htpasswd
/// users go on.
#[test]
fn ldap_refuses_wrong_empty_and_injected_credentials_and_says_when_it_is_down() {
    if EDGE.is_some() {
        return;
    }
    const ERIN: LdapUser = LdapUser {
        uid: "erin",
        password: "erin-ldap-pw-93c2",
        groups: &[],
    };
    let mut slapd = Slapd::start(&[DAVE, ERIN]);
    let ldap = slapd.config();
    let reg = Registry::start_secured(&USERS[..1], &policy(), Sign::Basic, |cfg| {
        cfg["http"]["auth"]["ldap"] = ldap;
    });
    let status = |user: &str, pw: &str| {
        reg.req("GET", "/v2/other/app/tags/list")
            .header("Authorization", &basic(user, pw))
            .send()
    };
    assert_eq!(status("dave", DAVE.password).status, 404);
    for (user, pw) in [
        ("dave", "wrong-pw-for-dave"),
        ("dave", ""),
        ("*", DAVE.password),
        ("dave)(uid=*", DAVE.password),
        ("nobody", "whatever-pw"),
    ] {
        let r = status(user, pw);
        assert_eq!(r.status, 401, "{user:?}/{pw:?}: {}", r.text());
    }
    slapd.stop();
    // erin was never verified, so the directory must be asked: 503.
    let r = status("erin", ERIN.password);
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(status("root", USERS[0].password).status, 404);
}
