//! `POST /_skiff/gc` and `POST /_skiff/scrub`.
//!
//! Query parameters:
//! - `repo=NAME`: that repository only. Without it, repositories are taken
//!   in order, after `after=NAME` when given, until `budget_ms` (default
//!   10 s, at most 60 s) has passed; the answer's `next` says where the
//!   next call should continue (`null` when every repository was done).
//!   A runtime gives a request only so long; this keeps each call short.
//! - gc: `delay_ms` (zot's gcDelay, default one hour), `dry_run`,
//!   `untagged` (remove untagged manifests, default true), `referrers`
//!   (remove referrers whose subject is gone, default true).
//! - scrub: `repair` (remove blobs whose bytes do not match their name).
//!
//! Access: `Authorization: Bearer <admin_token>`, the token a runtime
//! setting (Spin variable `admin_token`). With no token set the routes are
//! off: nobody can run them.

use crate::bindings::skiff::registry::{gc, scrub};
use crate::bindings::wasi::config0_2_0_draft_2024_09_27::store as config;
use crate::reply;
use serde_json::{json, Value};
use wasip2::clocks::monotonic_clock;
use wasip2::http::types::{IncomingRequest, Method, ResponseOutparam};

const DEFAULT_BUDGET_MS: u64 = 10_000;
const MAX_BUDGET_MS: u64 = 60_000;
/// zot's default gcDelay.
const DEFAULT_DELAY_MS: u64 = 60 * 60 * 1000;

enum Job {
    Gc(gc::Policy),
    Scrub { repair: bool },
}

pub fn handle(request: &IncomingRequest, path_and_query: &str, out: ResponseOutparam) {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let route = match path {
        "/_skiff/gc" | "/_skiff/scrub" => path,
        _ => return reply::error(out, 404, "NAME_UNKNOWN", "no such admin route", &[]),
    };
    if !matches!(request.method(), Method::Post) {
        return reply::error(out, 405, "UNSUPPORTED", "use POST", &[("Allow", "POST")]);
    }
    if let Err((status, code, message)) = authorize(request) {
        let challenge = [("WWW-Authenticate", "Bearer realm=\"skiff-admin\"")];
        let headers: &[(&str, &str)] = if status == 401 { &challenge } else { &[] };
        return reply::error(out, status, code, &message, headers);
    }
    let params = match Params::parse(query) {
        Ok(p) => p,
        Err(message) => return reply::error(out, 400, "UNSUPPORTED", &message, &[]),
    };
    let job = if route == "/_skiff/gc" {
        Job::Gc(gc::Policy {
            delay_ms: params.number("delay_ms").unwrap_or(DEFAULT_DELAY_MS),
            retention_delay_ms: 0,
            dry_run: params.flag("dry_run").unwrap_or(false),
            delete_untagged: params.flag("untagged").unwrap_or(true),
            delete_referrers: params.flag("referrers").unwrap_or(true),
            keep_tags: None,
        })
    } else {
        Job::Scrub {
            repair: params.flag("repair").unwrap_or(false),
        }
    };
    let body = run(&job, &params);
    reply::json(out, 200, &[], &body);
}

/// The bearer token must equal the `admin_token` setting.
fn authorize(request: &IncomingRequest) -> Result<(), (u16, &'static str, String)> {
    let token = match config::get("admin_token") {
        Ok(Some(t)) if !t.is_empty() => t,
        Ok(_) => {
            return Err((
                403,
                "DENIED",
                "admin routes are off: set the admin_token variable".into(),
            ))
        }
        Err(e) => return Err((500, "UNKNOWN", format!("reading admin_token: {e:?}"))),
    };
    let given = request
        .headers()
        .get("authorization")
        .into_iter()
        .find_map(|v| String::from_utf8(v).ok())
        .and_then(|v| v.strip_prefix("Bearer ").map(|t| t.trim().to_string()));
    match given {
        Some(g) if constant_time_eq::constant_time_eq(g.as_bytes(), token.as_bytes()) => Ok(()),
        Some(_) => Err((401, "UNAUTHORIZED", "wrong admin token".into())),
        None => Err((401, "UNAUTHORIZED", "an admin token is required".into())),
    }
}

/// Run `job` on the chosen repositories within the time budget.
fn run(job: &Job, params: &Params) -> Value {
    let started = monotonic_clock::now();
    let budget_ns = params
        .number("budget_ms")
        .unwrap_or(DEFAULT_BUDGET_MS)
        .min(MAX_BUDGET_MS)
        .saturating_mul(1_000_000);
    let (repos, single) = match params.get("repo") {
        Some(r) => (Ok(vec![r.to_string()]), true),
        None => (list(job), false),
    };
    let repos = match repos {
        Ok(r) => r,
        Err(e) => return json!({"errors": [{"code": "UNKNOWN", "message": e}]}),
    };
    let after = params.get("after").unwrap_or("");
    let mut reports = Vec::new();
    let mut errors = Vec::new();
    let mut next = Value::Null;
    for repo in repos.iter().filter(|r| single || r.as_str() > after) {
        if !reports.is_empty() && monotonic_clock::now().saturating_sub(started) > budget_ns {
            // Continue after the last one done.
            next = reports
                .last()
                .and_then(|r: &Value| r.get("repository").cloned())
                .unwrap_or(Value::Null);
            break;
        }
        match run_one(job, repo) {
            Ok(report) => reports.push(report),
            Err(e) => {
                errors.push(json!({"repository": repo, "message": e}));
                reports.push(json!({"repository": repo, "failed": true}));
            }
        }
    }
    json!({"reports": reports, "errors": errors, "next": next})
}

fn list(job: &Job) -> Result<Vec<String>, String> {
    let mut repos = match job {
        Job::Gc(_) => gc::repositories()?,
        Job::Scrub { .. } => scrub::repositories()?,
    };
    repos.sort();
    Ok(repos)
}

fn run_one(job: &Job, repo: &str) -> Result<Value, String> {
    Ok(match job {
        Job::Gc(policy) => {
            let r = gc::run(repo, policy)?;
            json!({
                "repository": repo,
                "tagsRemoved": r.tags_removed,
                "manifestsRemoved": r.manifests_removed,
                "blobsRemoved": r.blobs_removed,
                "bytesFreed": r.bytes_freed,
                "uploadsRemoved": r.uploads_removed,
                "repositoryRemoved": r.repository_removed,
                "blobsScanned": r.blobs_scanned,
                "bytesScanned": r.bytes_scanned,
            })
        }
        Job::Scrub { repair } => {
            let r = scrub::run(repo, *repair)?;
            let damaged: Vec<Value> = r
                .damaged
                .iter()
                .map(|d| {
                    json!({"digest": d.digest, "actual": d.actual, "images": d.images, "removed": d.removed})
                })
                .collect();
            json!({
                "repository": repo,
                "blobsChecked": r.blobs_checked,
                "bytesChecked": r.bytes_checked,
                "damaged": damaged,
            })
        }
    })
}

/// The query string, checked: unknown parameters are refused, so a typo
/// (`dryrun=true`) cannot turn a dry run into a real one.
struct Params(Vec<(String, String)>);

const KNOWN: &[&str] = &[
    "repo",
    "after",
    "budget_ms",
    "delay_ms",
    "dry_run",
    "untagged",
    "referrers",
    "repair",
];

impl Params {
    fn parse(query: &str) -> Result<Params, String> {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        for (k, v) in &pairs {
            if !KNOWN.contains(&k.as_str()) {
                return Err(format!("unknown parameter {k}"));
            }
            let ok = match k.as_str() {
                "budget_ms" | "delay_ms" => v.parse::<u64>().is_ok(),
                "dry_run" | "untagged" | "referrers" | "repair" => {
                    matches!(v.as_str(), "true" | "false")
                }
                _ => !v.is_empty(),
            };
            if !ok {
                return Err(format!("bad value for {k}: {v:?}"));
            }
        }
        Ok(Params(pairs))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn number(&self, name: &str) -> Option<u64> {
        self.get(name).and_then(|v| v.parse().ok())
    }

    fn flag(&self, name: &str) -> Option<bool> {
        self.get(name).map(|v| v == "true")
    }
}
