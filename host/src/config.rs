//! Configuration: one JSON file with zot's key names, or an embedded default.
//!
//! Values are checked here, before anything starts, and every error names the
//! key. Unknown keys are reported as warnings (a zot config mostly just works),
//! except where ignoring one would open the registry: zot's authentication,
//! TLS and access-control settings, which skiff does not have yet, stop it
//! from starting (see [`refuse_unsupported`]).

use crate::auth::settings::AuthSettings;
use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Config {
    pub http: Http,
    /// The default store, for every repository no subpath claims.
    pub storage: StoreConfig,
    /// Stores for repositories whose first path component is the subpath.
    pub sub_paths: Vec<SubPath>,
    /// How often the background scrub runs; `None`: it does not.
    pub scrub_interval: Option<Duration>,
    /// `storage.maxBlobSize`: uploads that would grow past this many bytes
    /// are refused (413) and dropped; `None`: no limit.
    pub max_blob_size: Option<u64>,
    /// `storage.remoteCache` with a DynamoDB `cacheDriver`: the dedupe
    /// index of S3 stores, shared by every server on the bucket. `None`:
    /// an embedded one in each store's `rootDirectory`.
    pub remote_cache: Option<DynamoSettings>,
    pub log_level: String,
    /// `log.output`: the file logs go to; `None`: stderr.
    pub log_output: Option<PathBuf>,
    /// `log.format`: `json` (one object per line) or `text`.
    pub log_json: bool,
    /// `log.audit`: the file every write and delete is recorded in.
    pub log_audit: Option<PathBuf>,
    /// `http.auth` and `http.accessControl`.
    pub auth: AuthSettings,
    /// Keys present in the file that skiff does not know.
    pub unknown_keys: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Http {
    pub address: IpAddr,
    /// 0 asks the OS for a free port (the one bound is printed at start).
    pub port: u16,
    /// Open connections; more wait in the listen backlog until one closes.
    pub max_connections: usize,
    /// Requests running in the registry component at once (each holds an
    /// instance); the instance pool is sized from this.
    pub max_requests_in_flight: usize,
    /// A connection whose next request head takes longer than this is closed.
    pub header_timeout: Duration,
    /// A request body that delivers no bytes for this long fails.
    pub body_timeout: Duration,
    /// Execution time the registry component may spend on one request
    /// (time it runs, not time it waits for a client).
    pub request_cpu_budget: Duration,
    /// `http.ratelimit`; `None`: no limit.
    pub rate_limit: Option<crate::ratelimit::RateLimit>,
    /// `http.tls`; `None`: plain HTTP.
    pub tls: Option<crate::tls::TlsSettings>,
    /// After SIGTERM/SIGINT, how long requests in flight may take to finish
    /// before request bodies still streaming in are cut off (`shutdown`).
    pub shutdown_timeout: Duration,
}

impl Http {
    pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
    pub const DEFAULT_MAX_REQUESTS_IN_FLIGHT: usize = 256;
    /// Each request slot reserves address space for its instance's memories
    /// (up to 3 of about 4 GiB each, backed only as used), so the cap keeps
    /// the pool well inside a 47-bit address space (2048 slots: ~25 TiB).
    pub const MAX_REQUESTS_IN_FLIGHT: usize = 2048;
}

/// One store's settings: the default one or a subpath's.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Local files of the store: all of it on disk; with S3, the dedupe
    /// cache and the markers of servers using it.
    pub root_directory: PathBuf,
    /// Where the objects are (`storageDriver`).
    pub driver: Driver,
    /// Store a blob pushed into many repositories once (hard links + cache).
    pub dedupe: bool,
    /// fsync files and their directories before publishing them.
    pub commit: bool,
    pub gc: bool,
    /// Nothing younger than this is collected: it may belong to a push in flight.
    pub gc_delay: Duration,
    pub gc_interval: Duration,
    pub retention: Vec<RetentionPolicy>,
    /// `retention.dryRun`: gc reports what it would remove and removes nothing.
    pub retention_dry_run: bool,
    /// `retention.delay`: no tag or untagged manifest younger than this is
    /// removed by retention (zot's default, 24 hours).
    pub retention_delay: Duration,
}

/// zot's `storageDriver`: where a store's objects live.
#[derive(Debug, Clone, PartialEq)]
pub enum Driver {
    /// Files under `rootDirectory` (no `storageDriver`).
    Local,
    S3(S3Settings),
}

/// zot's `cacheDriver` keys for DynamoDB.
#[derive(Debug, Clone, PartialEq)]
pub struct DynamoSettings {
    pub endpoint: Option<String>,
    pub region: String,
    pub table: String,
    /// Static credentials (tests); `None`: the standard AWS chain, as zot.
    pub credentials: Option<(String, String)>,
}

/// What an S3 store is configured with (zot's `storageDriver` keys).
#[derive(Debug, Clone, PartialEq)]
pub struct S3Settings {
    pub bucket: String,
    /// Key prefix inside the bucket (`rootdirectory`), without slashes at
    /// either end; empty: the whole bucket.
    pub prefix: String,
    pub region: String,
    /// `regionendpoint`: an S3-compatible endpoint instead of AWS's.
    pub endpoint: Option<String>,
    pub force_path_style: bool,
    /// Static credentials; `None`: the standard AWS chain (environment,
    /// `AWS_PROFILE` and `~/.aws/credentials`, instance roles).
    pub credentials: Option<(String, String)>,
    /// Size of the parts an upload is stored in (`chunksize`).
    pub part_size: u64,
    /// `redirect`: blob GETs answer 307 to a presigned URL of the object.
    pub redirect: bool,
    /// `redirectendpoint`: the endpoint the presigned URLs name, when
    /// clients reach the bucket by another name than the registry does.
    pub redirect_endpoint: Option<String>,
}

impl S3Settings {
    /// S3's smallest part but the last.
    pub const MIN_PART: u64 = 5 << 20;
    /// S3's largest single PUT, and so largest part.
    pub const MAX_PART: u64 = 5 << 30;
    pub const DEFAULT_PART: u64 = 10 << 20;
    /// Parts one multipart upload may have.
    pub const MAX_PARTS: u64 = skiff_core::s3_layout::MAX_PARTS;
}

#[derive(Debug, Clone)]
pub struct SubPath {
    /// The first path component of the repositories it holds.
    pub prefix: String,
    pub store: StoreConfig,
}

/// zot's `retention.policies[]`: the first policy whose `repositories` globs
/// match a repository decides what its garbage collection removes.
#[derive(Debug, Clone, PartialEq)]
pub struct RetentionPolicy {
    pub repositories: Vec<String>,
    pub delete_untagged: bool,
    pub delete_referrers: bool,
    /// `None`: every tag is kept. Otherwise a tag is kept if any rule keeps it.
    pub keep_tags: Option<Vec<KeepTags>>,
}

/// zot's `keepTags` rule. Of the tags matching `patterns`, those that meet
/// any of the criteria are kept; with no criteria, all of them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct KeepTags {
    /// Regular expressions; empty matches every tag.
    pub patterns: Vec<String>,
    /// The this-many most recently pushed.
    pub most_recently_pushed_count: Option<u32>,
    /// The this-many most recently pulled.
    pub most_recently_pulled_count: Option<u32>,
    /// Those pulled within this long.
    pub pulled_within: Option<Duration>,
    /// Those pushed within this long.
    pub pushed_within: Option<Duration>,
}

impl StoreConfig {
    fn default_at(root: PathBuf) -> StoreConfig {
        StoreConfig {
            root_directory: root,
            driver: Driver::Local,
            dedupe: true,
            commit: false,
            gc: true,
            gc_delay: Duration::from_secs(3600),
            gc_interval: Duration::from_secs(3600),
            retention: Vec::new(),
            retention_dry_run: false,
            retention_delay: Duration::from_secs(24 * 3600),
        }
    }

    /// The policy for `repo`; with none configured, zot's defaults: untagged
    /// manifests and referrers of missing subjects go, every tag stays.
    pub fn policy_for(&self, repo: &str) -> RetentionPolicy {
        self.retention
            .iter()
            .find(|p| p.repositories.iter().any(|g| glob_match(g, repo)))
            .cloned()
            .unwrap_or(RetentionPolicy {
                repositories: Vec::new(),
                delete_untagged: true,
                delete_referrers: true,
                keep_tags: None,
            })
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            http: Http {
                address: IpAddr::from([127, 0, 0, 1]),
                port: 5000,
                max_connections: Http::DEFAULT_MAX_CONNECTIONS,
                max_requests_in_flight: Http::DEFAULT_MAX_REQUESTS_IN_FLIGHT,
                header_timeout: Duration::from_secs(30),
                body_timeout: Duration::from_secs(60),
                request_cpu_budget: Duration::from_secs(30),
                shutdown_timeout: Duration::from_secs(30),
                rate_limit: None,
                tls: None,
            },
            storage: StoreConfig::default_at(PathBuf::from("skiff-data")),
            sub_paths: Vec::new(),
            scrub_interval: None,
            max_blob_size: None,
            remote_cache: None,
            log_level: "info".into(),
            log_output: None,
            log_json: false,
            log_audit: None,
            auth: AuthSettings::default(),
            unknown_keys: Vec::new(),
        }
    }
}

/// Keys skiff reads (`*` matches any one key), and zot keys it accepts
/// without acting on them (so they are not reported as unknown).
const KNOWN: &[&str] = &[
    "distSpecVersion",
    "http",
    "http.address",
    "http.port",
    "http.realm",
    "http.maxConnections",
    "http.maxRequestsInFlight",
    "http.headerTimeout",
    "http.bodyTimeout",
    "http.requestCpuBudget",
    "http.shutdownTimeout",
    "http.ratelimit",
    "http.ratelimit.rate",
    "http.ratelimit.methods",
    // Checked as a whole by skiff_core::access::Policy (see OPAQUE).
    "http.accessControl",
    "http.auth",
    "http.auth.failDelay",
    "http.auth.htpasswd",
    "http.auth.htpasswd.path",
    "http.auth.bearer",
    "http.auth.bearer.realm",
    "http.auth.bearer.service",
    "http.auth.bearer.cert",
    "http.auth.bearer.key",
    "http.auth.bearer.expiration",
    "http.tls",
    "http.tls.cert",
    "http.tls.key",
    "http.tls.cacert",
    // Checked as a whole by auth::ldap (see OPAQUE).
    "http.auth.ldap",
    // Present only as null (or `apikey: false`) once `refuse_unsupported` passed.
    "http.auth.openid",
    "http.auth.apikey",
    "storage",
    "storage.rootDirectory",
    "storage.maxBlobSize",
    "storage.commit",
    "storage.dedupe",
    "storage.gc",
    "storage.gcDelay",
    "storage.gcInterval",
    "storage.retention",
    "storage.retention.dryRun",
    "storage.retention.delay",
    "storage.retention.policies",
    "storage.storageDriver",
    "storage.storageDriver.name",
    "storage.storageDriver.rootdirectory",
    "storage.storageDriver.region",
    "storage.storageDriver.bucket",
    "storage.storageDriver.regionendpoint",
    "storage.storageDriver.forcepathstyle",
    "storage.storageDriver.secure",
    "storage.storageDriver.skipverify",
    "storage.storageDriver.accesskey",
    "storage.storageDriver.secretkey",
    "storage.storageDriver.chunksize",
    "storage.storageDriver.redirect",
    "storage.storageDriver.redirectendpoint",
    "storage.subPaths.*.storageDriver",
    "storage.subPaths.*.storageDriver.name",
    "storage.subPaths.*.storageDriver.rootdirectory",
    "storage.subPaths.*.storageDriver.region",
    "storage.subPaths.*.storageDriver.bucket",
    "storage.subPaths.*.storageDriver.regionendpoint",
    "storage.subPaths.*.storageDriver.forcepathstyle",
    "storage.subPaths.*.storageDriver.secure",
    "storage.subPaths.*.storageDriver.skipverify",
    "storage.subPaths.*.storageDriver.accesskey",
    "storage.subPaths.*.storageDriver.secretkey",
    "storage.subPaths.*.storageDriver.chunksize",
    "storage.subPaths.*.storageDriver.redirect",
    "storage.subPaths.*.storageDriver.redirectendpoint",
    "storage.cacheDriver",
    "storage.cacheDriver.name",
    "storage.cacheDriver.rootDir",
    "storage.cacheDriver.endpoint",
    "storage.cacheDriver.region",
    "storage.cacheDriver.cacheTablename",
    "storage.remoteCache",
    "storage.subPaths",
    "storage.subPaths.*",
    "storage.subPaths.*.rootDirectory",
    "storage.subPaths.*.commit",
    "storage.subPaths.*.dedupe",
    "storage.subPaths.*.gc",
    "storage.subPaths.*.gcDelay",
    "storage.subPaths.*.gcInterval",
    "storage.subPaths.*.retention",
    "storage.subPaths.*.retention.dryRun",
    "storage.subPaths.*.retention.delay",
    "storage.subPaths.*.retention.policies",
    "log",
    "log.level",
    "log.output",
    "log.format",
    "log.audit",
    "extensions",
    "extensions.scrub",
    "extensions.scrub.enable",
    "extensions.scrub.interval",
    "extensions.metrics",
    "extensions.metrics.enable",
    "extensions.metrics.prometheus",
    "extensions.metrics.prometheus.path",
];

impl Config {
    pub fn load(path: Option<&Path>) -> Result<Config> {
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Config::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    /// The configuration in `text`, or every error in it at once.
    pub fn parse(text: &str) -> Result<Config> {
        let checked = Config::check(text)?;
        match checked.errors.as_slice() {
            [] => Ok(checked.config),
            [one] => bail!("{one}"),
            many => bail!(
                "{} errors:\n  {}",
                many.len(),
                many.iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("\n  ")
            ),
        }
    }

    /// Read `text` as far as it goes: the settings it gives (each key that
    /// is wrong left at its default) and every error, so an operator sees
    /// them all at once. `Err` only when it is not a JSON object at all.
    pub fn check(text: &str) -> Result<Checked> {
        let root: Value = serde_json::from_str(text).context("the file is not valid JSON")?;
        let Value::Object(root) = root else {
            bail!("the configuration must be a JSON object");
        };
        let mut p = Parse {
            root: &root,
            cfg: Config::default(),
            errors: Vec::new(),
        };
        collect_unknown(&root, "", &mut p.cfg.unknown_keys);
        let steps: [fn(&mut Parse) -> Result<()>; 14] = [
            |p| refuse_unsupported(p.root),
            |p| {
                p.cfg.auth = AuthSettings::parse(p.root.get("http").and_then(Value::as_object))?;
                Ok(())
            },
            |p| p.http_address(),
            |p| p.http_port(),
            |p| p.http_limits(),
            |p| p.http_timeouts(),
            |p| p.http_ratelimit(),
            // After the auth step: whether a client certificate is optional
            // depends on the other ways of signing in.
            |p| p.http_tls(),
            |p| p.storage(),
            |p| check_roots_apart(&p.cfg),
            |p| p.max_blob_size(),
            |p| p.scrub(),
            |p| p.log_level(),
            |p| p.log_files(),
        ];
        for step in steps {
            if let Err(e) = step(&mut p) {
                p.errors.push(e);
            }
        }
        Ok(Checked {
            config: p.cfg,
            errors: p.errors,
        })
    }

    /// What an operator should know before serving with these settings.
    pub fn warnings(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .unknown_keys
            .iter()
            .map(|k| format!("{k}: unknown key, ignored"))
            .collect();
        for (prefix, store) in self.stores() {
            if matches!(store.driver, Driver::S3(_)) && self.remote_cache.is_none() {
                let at = prefix.map_or("storage".to_string(), |p| format!("storage.subPaths./{p}"));
                out.push(format!(
                    "{at}.storageDriver: the dedupe cache is embedded in {}, so only one server \
                     may use this bucket; for several, set storage.remoteCache with a \
                     \"dynamodb\" cacheDriver",
                    store.root_directory.display()
                ));
            }
        }
        if !self.http.address.is_loopback() && !self.auth.auth_on() && self.auth.policy.is_none() {
            out.push(format!(
                "http.address: {} is reachable from other machines, and http.auth is not \
                 set: anyone who reaches it can push and delete",
                self.http.address
            ));
        }
        out
    }

    /// The settings in effect, defaults included, in zot's key names: what
    /// `skiff verify` prints. Read back as a config file, it means the same.
    pub fn effective(&self) -> Value {
        let h = &self.http;
        let mut storage = store_json(&self.storage);
        if let Some(n) = self.max_blob_size {
            storage["maxBlobSize"] = n.into();
        }
        if let Some(d) = &self.remote_cache {
            storage["remoteCache"] = true.into();
            storage["cacheDriver"] = json!({
                "name": "dynamodb",
                "endpoint": d.endpoint,
                "region": d.region,
                "cacheTablename": d.table,
            });
        }
        if !self.sub_paths.is_empty() {
            let subs: Map<String, Value> = self
                .sub_paths
                .iter()
                .map(|s| (format!("/{}", s.prefix), store_json(&s.store)))
                .collect();
            storage["subPaths"] = subs.into();
        }
        let mut cfg = json!({
            "http": {
                "address": h.address.to_string(),
                "port": h.port,
                "maxConnections": h.max_connections,
                "maxRequestsInFlight": h.max_requests_in_flight,
                "headerTimeout": duration_text(h.header_timeout),
                "bodyTimeout": duration_text(h.body_timeout),
                "requestCpuBudget": duration_text(h.request_cpu_budget),
                "shutdownTimeout": duration_text(h.shutdown_timeout),
            },
            "storage": storage,
            "log": {
                "level": self.log_level,
                "format": if self.log_json { "json" } else { "text" },
            },
        });
        if let Some(r) = &h.rate_limit {
            let methods: Vec<Value> = r
                .methods
                .iter()
                .map(|(m, rate)| json!({"method": m, "rate": rate}))
                .collect();
            cfg["http"]["ratelimit"] = json!({"rate": r.rate, "methods": methods});
        }
        if let Some(p) = &self.log_output {
            cfg["log"]["output"] = json!(p);
        }
        if let Some(p) = &self.log_audit {
            cfg["log"]["audit"] = json!(p);
        }
        if let Some(t) = &h.tls {
            cfg["http"]["tls"] = json!({"cert": t.cert, "key": t.key, "cacert": t.cacert});
        }
        for (key, v) in &self.auth.written {
            cfg["http"][*key] = v.clone();
        }
        if let Some(i) = self.scrub_interval {
            cfg["extensions"] = json!({"scrub": {"enable": true, "interval": duration_text(i)}});
        }
        cfg
    }

    /// Every store: the default one first, then the subpaths.
    pub fn stores(&self) -> impl Iterator<Item = (Option<&str>, &StoreConfig)> {
        std::iter::once((None, &self.storage)).chain(
            self.sub_paths
                .iter()
                .map(|s| (Some(s.prefix.as_str()), &s.store)),
        )
    }
}

/// A configuration read as far as it goes: see [`Config::check`].
pub struct Checked {
    pub config: Config,
    pub errors: Vec<anyhow::Error>,
}

/// The state of one [`Config::check`]: each step reads one key (or one
/// group of keys that only make sense together) and fails on its own.
struct Parse<'a> {
    root: &'a Map<String, Value>,
    cfg: Config,
    errors: Vec<anyhow::Error>,
}

impl Parse<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        lookup(self.root, key)
    }

    fn http_address(&mut self) -> Result<()> {
        if let Some(v) = self.get("http.address") {
            let s = v.as_str().context("http.address: expected a string")?;
            self.cfg.http.address = s
                .parse()
                .with_context(|| format!("http.address: {s:?} is not an IP address"))?;
        }
        Ok(())
    }

    fn http_port(&mut self) -> Result<()> {
        if let Some(v) = self.get("http.port") {
            self.cfg.http.port = parse_port(v)?;
        }
        Ok(())
    }

    fn http_limits(&mut self) -> Result<()> {
        if let Some(v) = self.get("http.maxConnections") {
            match parse_count(v, "http.maxConnections", 1, 1 << 20) {
                Ok(n) => self.cfg.http.max_connections = n,
                Err(e) => self.errors.push(e),
            }
        }
        if let Some(v) = self.get("http.maxRequestsInFlight") {
            // Two at least: a quarter of the slots (one of two) is kept for
            // requests without a streamed body.
            self.cfg.http.max_requests_in_flight = parse_count(
                v,
                "http.maxRequestsInFlight",
                2,
                Http::MAX_REQUESTS_IN_FLIGHT,
            )?;
        }
        Ok(())
    }

    fn http_tls(&mut self) -> Result<()> {
        let Some(v) = self.get("http.tls").filter(|v| !v.is_null()) else {
            return Ok(());
        };
        let t = v.as_object().context("http.tls: expected an object")?;
        let path = |k: &str| -> Result<Option<PathBuf>> {
            match t.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if !s.is_empty() => Ok(Some(PathBuf::from(s))),
                Some(v) => bail!("http.tls.{k}: expected a file path, found {v}"),
            }
        };
        let (Some(cert), Some(key)) = (path("cert")?, path("key")?) else {
            bail!("http.tls: both cert and key must be set");
        };
        let cacert = path("cacert")?;
        let settings = crate::tls::TlsSettings {
            cert,
            key,
            certificate_optional: self.cfg.auth.auth_on(),
            cacert,
        };
        // Read now, so a bad file stops the start (and `skiff verify`).
        crate::tls::Tls::load(&settings)?;
        self.cfg.auth.client_certs = settings.cacert.is_some();
        self.cfg.http.tls = Some(settings);
        Ok(())
    }

    fn http_ratelimit(&mut self) -> Result<()> {
        let Some(v) = self.get("http.ratelimit").filter(|v| !v.is_null()) else {
            return Ok(());
        };
        let rate = |v: &Value, key: &str| -> Result<f64> {
            v.as_f64()
                .filter(|r| r.is_finite() && *r > 0.0 && *r <= 1e9)
                .with_context(|| format!("{key}: expected requests per second above 0, found {v}"))
        };
        let r = v
            .as_object()
            .context("http.ratelimit: expected an object")?;
        let mut out = crate::ratelimit::RateLimit {
            rate: None,
            methods: Vec::new(),
        };
        if let Some(x) = r.get("rate") {
            out.rate = Some(rate(x, "http.ratelimit.rate")?);
        }
        if let Some(ms) = r.get("methods") {
            let ms = ms
                .as_array()
                .context("http.ratelimit.methods: expected a list")?;
            for (i, m) in ms.iter().enumerate() {
                let key = format!("http.ratelimit.methods[{i}]");
                let method = m
                    .get("method")
                    .and_then(Value::as_str)
                    .with_context(|| format!("{key}.method: expected an HTTP method"))?;
                let per = rate(
                    m.get("rate").unwrap_or(&Value::Null),
                    &format!("{key}.rate"),
                )?;
                out.methods.push((method.to_ascii_uppercase(), per));
            }
        }
        self.cfg.http.rate_limit = Some(out);
        Ok(())
    }

    fn http_timeouts(&mut self) -> Result<()> {
        let root = self.root;
        let http = &mut self.cfg.http;
        for (key, slot) in [
            ("http.headerTimeout", &mut http.header_timeout),
            ("http.bodyTimeout", &mut http.body_timeout),
            ("http.requestCpuBudget", &mut http.request_cpu_budget),
        ] {
            if let Some(v) = lookup(root, key) {
                match parse_duration(v, key) {
                    Ok(d) if d.is_zero() => self
                        .errors
                        .push(anyhow::anyhow!("{key}: must be more than zero")),
                    Ok(d) => *slot = d,
                    Err(e) => self.errors.push(e),
                }
            }
        }
        if let Some(v) = lookup(root, "http.shutdownTimeout") {
            // Zero is allowed: no drain, bodies in flight are cut off at once.
            http.shutdown_timeout = parse_duration(v, "http.shutdownTimeout")?;
        }
        Ok(())
    }

    fn storage(&mut self) -> Result<()> {
        let Some(Value::Object(storage)) = self.root.get("storage") else {
            return Ok(());
        };
        match parse_store(storage, "storage", &self.cfg.storage) {
            Ok(s) => self.cfg.storage = s,
            Err(e) => self.errors.push(e),
        }
        if let Err(e) = self.cache_driver() {
            self.errors.push(e);
        }
        let Some(subs) = storage.get("subPaths") else {
            return Ok(());
        };
        let subs = subs
            .as_object()
            .context("storage.subPaths: expected an object of subpath settings")?;
        for (path, v) in subs {
            let key = format!("storage.subPaths.{path}");
            match self.sub_path(&key, path, v) {
                Ok(sub) => self.cfg.sub_paths.push(sub),
                Err(e) => self.errors.push(e),
            }
        }
        Ok(())
    }

    /// `storage.cacheDriver` and `storage.remoteCache`, as zot has them.
    fn cache_driver(&mut self) -> Result<()> {
        let remote = match self.get("storage.remoteCache") {
            None => false,
            Some(v) => v
                .as_bool()
                .context("storage.remoteCache: expected true or false")?,
        };
        let text = |p: &Parse, k: &str| -> Result<Option<String>> {
            p.get(&format!("storage.cacheDriver.{k}"))
                .map(|v| {
                    v.as_str()
                        .map(String::from)
                        .with_context(|| format!("storage.cacheDriver.{k}: expected a string"))
                })
                .transpose()
        };
        let name = text(self, "name")?;
        match name.as_deref() {
            None if remote => {
                bail!("storage.remoteCache: true needs a storage.cacheDriver with name \"dynamodb\"")
            }
            None => Ok(()),
            // zot's embedded cache is boltdb; skiff's is redb, in the same place.
            Some("redb" | "boltdb") if remote => bail!(
                "storage.remoteCache: true needs storage.cacheDriver.name \"dynamodb\"; {:?} is embedded",
                name.unwrap_or_default()
            ),
            Some("redb" | "boltdb") => Ok(()),
            Some("dynamodb") if !remote => bail!(
                "storage.cacheDriver.name: \"dynamodb\" is used only with storage.remoteCache: true"
            ),
            Some("dynamodb") => {
                let table = text(self, "cacheTablename")?
                    .filter(|t| !t.is_empty())
                    .context("storage.cacheDriver.cacheTablename: required for dynamodb")?;
                self.cfg.remote_cache = Some(DynamoSettings {
                    endpoint: text(self, "endpoint")?.filter(|e| !e.is_empty()),
                    region: text(self, "region")?.unwrap_or_else(|| "us-east-1".into()),
                    table,
                    credentials: None,
                });
                Ok(())
            }
            Some(other) => bail!(
                "storage.cacheDriver.name: {other:?} is not supported (use \"redb\", or \"dynamodb\" with remoteCache)"
            ),
        }
    }

    fn sub_path(&self, key: &str, path: &str, v: &Value) -> Result<SubPath> {
        let prefix = path.trim_start_matches('/');
        let valid = !prefix.is_empty()
            && !prefix.contains('/')
            && prefix.parse::<skiff_core::RepoName>().is_ok();
        if !valid {
            bail!("{key}: a subpath is one repository path component, like \"/team\"");
        }
        let obj = v
            .as_object()
            .with_context(|| format!("{key}: expected an object"))?;
        if !obj.contains_key("rootDirectory") {
            bail!("{key}.rootDirectory: required");
        }
        if self.cfg.sub_paths.iter().any(|s| s.prefix == prefix) {
            bail!("{key}: subpath given twice");
        }
        // A subpath inherits the default store's settings it does not set.
        Ok(SubPath {
            prefix: prefix.to_string(),
            store: parse_store(obj, key, &self.cfg.storage)?,
        })
    }

    fn max_blob_size(&mut self) -> Result<()> {
        let Some(v) = self.get("storage.maxBlobSize") else {
            return Ok(());
        };
        let max = parse_size(v, "storage.maxBlobSize")?;
        self.cfg.max_blob_size = Some(max);
        // An S3 upload has at most 10,000 parts of `chunksize`: without a
        // chunksize, it is chosen large enough for the largest blob.
        let needed = max
            .div_ceil(S3Settings::MAX_PARTS)
            .next_multiple_of(1 << 20);
        let root = self.root;
        let mut stores: Vec<(String, &mut StoreConfig)> =
            vec![("storage".to_string(), &mut self.cfg.storage)];
        for sp in &mut self.cfg.sub_paths {
            stores.push((format!("storage.subPaths./{}", sp.prefix), &mut sp.store));
        }
        for (at, store) in stores {
            let Driver::S3(d) = &mut store.driver else {
                continue;
            };
            if d.part_size >= needed {
                continue;
            }
            let key = format!("{at}.storageDriver.chunksize");
            if lookup(root, &key).is_some() {
                bail!(
                    "storage.maxBlobSize: {max} bytes do not fit in S3's 10,000 parts of \
                     {key} ({} bytes); make it at least {needed}",
                    d.part_size
                );
            }
            d.part_size = needed.min(S3Settings::MAX_PART);
        }
        Ok(())
    }

    fn scrub(&mut self) -> Result<()> {
        let Some(v) = self.get("extensions.scrub") else {
            return Ok(());
        };
        let enable = match v.get("enable") {
            None => true,
            Some(b) => b
                .as_bool()
                .context("extensions.scrub.enable: expected true or false")?,
        };
        let interval = match v.get("interval") {
            None => Duration::from_secs(24 * 3600),
            Some(i) => parse_duration(i, "extensions.scrub.interval")?,
        };
        self.cfg.scrub_interval = enable.then_some(interval);
        Ok(())
    }

    fn log_files(&mut self) -> Result<()> {
        let path = |key: &str| -> Result<Option<PathBuf>> {
            match lookup(self.root, key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if !s.is_empty() => Ok(Some(PathBuf::from(s))),
                Some(v) => bail!("{key}: expected a file path, found {v}"),
            }
        };
        self.cfg.log_output = path("log.output")?;
        self.cfg.log_audit = path("log.audit")?;
        if let Some(v) = self.get("log.format") {
            self.cfg.log_json = match v.as_str() {
                Some("json") => true,
                Some("text") => false,
                _ => bail!("log.format: {v} is not \"json\" or \"text\""),
            };
        }
        Ok(())
    }

    fn log_level(&mut self) -> Result<()> {
        if let Some(v) = self.get("log.level") {
            let s = v.as_str().context("log.level: expected a string")?;
            let level = s.to_ascii_lowercase();
            if !["error", "warn", "info", "debug", "trace"].contains(&level.as_str()) {
                bail!("log.level: {s:?} is not one of error, warn, info, debug, trace");
            }
            self.cfg.log_level = level;
        }
        Ok(())
    }
}

/// `at.k` as true or false, if it is there.
fn bool_at(obj: &Map<String, Value>, at: &str, k: &str) -> Result<Option<bool>> {
    obj.get(k)
        .map(|v| {
            v.as_bool()
                .with_context(|| format!("{at}.{k}: expected true or false"))
        })
        .transpose()
}

fn parse_store(obj: &Map<String, Value>, at: &str, base: &StoreConfig) -> Result<StoreConfig> {
    let mut s = base.clone();
    let bool_key = |k: &str| bool_at(obj, at, k);
    if let Some(v) = obj.get("rootDirectory") {
        let p = v
            .as_str()
            .filter(|p| !p.is_empty())
            .with_context(|| format!("{at}.rootDirectory: expected a non-empty path"))?;
        s.root_directory = PathBuf::from(p);
    }
    if let Some(d) = obj.get("storageDriver") {
        s.driver = parse_driver(d, &format!("{at}.storageDriver"))?;
    }
    if let Some(b) = bool_key("dedupe")? {
        s.dedupe = b;
    }
    if let Some(b) = bool_key("commit")? {
        s.commit = b;
    }
    if let Some(b) = bool_key("gc")? {
        s.gc = b;
    }
    if let Some(v) = obj.get("gcDelay") {
        s.gc_delay = parse_duration(v, &format!("{at}.gcDelay"))?;
    }
    if let Some(v) = obj.get("gcInterval") {
        s.gc_interval = parse_duration(v, &format!("{at}.gcInterval"))?;
        if s.gc_interval.is_zero() {
            bail!("{at}.gcInterval: must be more than zero");
        }
    }
    if let Some(r) = obj.get("retention") {
        let r = r
            .as_object()
            .with_context(|| format!("{at}.retention: expected an object"))?;
        only_keys(
            r,
            &format!("{at}.retention"),
            &["dryRun", "delay", "policies"],
        )?;
        if let Some(b) = r.get("dryRun") {
            s.retention_dry_run = b
                .as_bool()
                .with_context(|| format!("{at}.retention.dryRun: expected true or false"))?;
        }
        if let Some(v) = r.get("delay") {
            s.retention_delay = parse_duration(v, &format!("{at}.retention.delay"))?;
        }
        if let Some(p) = r.get("policies") {
            s.retention = parse_policies(p, &format!("{at}.retention.policies"))?;
        }
    }
    Ok(s)
}

fn store_json(s: &StoreConfig) -> Value {
    let policies: Vec<Value> = s
        .retention
        .iter()
        .map(|p| {
            let mut v = json!({
                "repositories": p.repositories,
                "deleteUntagged": p.delete_untagged,
                "deleteReferrers": p.delete_referrers,
            });
            if let Some(rules) = &p.keep_tags {
                let rules: Vec<Value> = rules.iter().map(keep_tags_json).collect();
                v["keepTags"] = rules.into();
            }
            v
        })
        .collect();
    let mut v = json!({
        "rootDirectory": s.root_directory,
        "dedupe": s.dedupe,
        "commit": s.commit,
        "gc": s.gc,
        "gcDelay": duration_text(s.gc_delay),
        "gcInterval": duration_text(s.gc_interval),
        "retention": {
            "dryRun": s.retention_dry_run,
            "delay": duration_text(s.retention_delay),
            "policies": policies,
        },
    });
    if let Driver::S3(d) = &s.driver {
        let mut driver = json!({
            "name": "s3",
            "bucket": d.bucket,
            "rootdirectory": d.prefix,
            "region": d.region,
            "forcepathstyle": d.force_path_style,
            "chunksize": d.part_size,
        });
        if let Some(e) = &d.endpoint {
            driver["regionendpoint"] = e.as_str().into();
        }
        driver["redirect"] = d.redirect.into();
        if let Some(e) = &d.redirect_endpoint {
            driver["redirectendpoint"] = e.as_str().into();
        }
        if let Some((id, _)) = &d.credentials {
            // The secret is not printed; the key id says which one is used.
            driver["accesskey"] = id.as_str().into();
            driver["secretkey"] = "(set, not shown)".into();
        }
        v["storageDriver"] = driver;
    }
    v
}

fn keep_tags_json(k: &KeepTags) -> Value {
    let mut v = json!({"patterns": k.patterns});
    let counts = [
        ("mostRecentlyPushedCount", k.most_recently_pushed_count),
        ("mostRecentlyPulledCount", k.most_recently_pulled_count),
    ];
    for (key, n) in counts {
        if let Some(n) = n {
            v[key] = n.into();
        }
    }
    for (key, d) in [
        ("pulledWithin", k.pulled_within),
        ("pushedWithin", k.pushed_within),
    ] {
        if let Some(d) = d {
            v[key] = duration_text(d).into();
        }
    }
    v
}

/// A duration as [`parse_duration`] reads it, in the largest whole units:
/// "24h", "1h30m", "90s", "1500ms".
pub fn duration_text(d: Duration) -> String {
    if d.is_zero() {
        return "0".into();
    }
    if d.subsec_nanos() != 0 {
        return match d.subsec_nanos() % 1_000_000 {
            0 => format!("{}ms", d.as_millis()),
            _ => format!("{}ns", d.as_nanos()),
        };
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    for (n, unit) in [(h, "h"), (m, "m"), (s, "s")] {
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    out
}

/// `storageDriver` with zot's keys. Only `s3` is a driver skiff has.
fn parse_driver(v: &Value, at: &str) -> Result<Driver> {
    let o = v
        .as_object()
        .with_context(|| format!("{at}: expected an object"))?;
    let text = |k: &str| -> Result<Option<String>> {
        o.get(k)
            .map(|v| {
                v.as_str()
                    .map(String::from)
                    .with_context(|| format!("{at}.{k}: expected a string"))
            })
            .transpose()
    };
    let flag =
        |k: &str, default: bool| -> Result<bool> { Ok(bool_at(o, at, k)?.unwrap_or(default)) };
    match text("name")?.as_deref() {
        Some("s3") => {}
        Some(other) => bail!("{at}.name: {other:?} is not a driver skiff has (use \"s3\", or no storageDriver for local disk)"),
        None => bail!("{at}.name: required (\"s3\")"),
    }
    let bucket = text("bucket")?
        .filter(|b| !b.is_empty())
        .with_context(|| format!("{at}.bucket: required"))?;
    let region = text("region")?.unwrap_or_else(|| "us-east-1".into());
    let secure = flag("secure", true)?;
    if flag("skipverify", false)? {
        bail!("{at}.skipverify: not supported yet; refusing to talk to the store without checking its certificate");
    }
    let with_scheme = |e: String| {
        if e.contains("://") {
            e
        } else if secure {
            format!("https://{e}")
        } else {
            format!("http://{e}")
        }
    };
    let endpoint = text("regionendpoint")?
        .filter(|e| !e.is_empty())
        .map(with_scheme);
    let redirect_endpoint = text("redirectendpoint")?
        .filter(|e| !e.is_empty())
        .map(with_scheme);
    let credentials = match (text("accesskey")?, text("secretkey")?) {
        (Some(a), Some(s)) if !a.is_empty() => Some((a, s)),
        (None, None) => None,
        (Some(a), None) if a.is_empty() => None,
        _ => bail!(
            "{at}.accesskey, {at}.secretkey: give both, or neither for the AWS credential chain"
        ),
    };
    let part_size = match o.get("chunksize") {
        None => S3Settings::DEFAULT_PART,
        Some(v) => parse_size(v, &format!("{at}.chunksize"))?,
    };
    if !(S3Settings::MIN_PART..=S3Settings::MAX_PART).contains(&part_size) {
        bail!("{at}.chunksize: {part_size} bytes; S3 parts are 5 MiB to 5 GiB");
    }
    Ok(Driver::S3(S3Settings {
        bucket,
        prefix: text("rootdirectory")?
            .unwrap_or_default()
            .trim_matches('/')
            .to_string(),
        region,
        endpoint,
        force_path_style: flag("forcepathstyle", false)?,
        credentials,
        part_size,
        redirect: flag("redirect", false)?,
        redirect_endpoint,
    }))
}

/// No store's root may lie inside another's (or be the same): the outer
/// store would see the inner one's repositories as its own, list them in
/// its catalog and collect them under its own gc policy.
fn check_roots_apart(cfg: &Config) -> Result<()> {
    let key = |prefix: Option<&str>| match prefix {
        None => "storage.rootDirectory".to_string(),
        Some(p) => format!("storage.subPaths./{p}.rootDirectory"),
    };
    let roots: Vec<(String, PathBuf)> = cfg
        .stores()
        .map(|(prefix, s)| (key(prefix), lexical_absolute(&s.root_directory)))
        .collect();
    for (i, (ka, a)) in roots.iter().enumerate() {
        for (kb, b) in &roots[i + 1..] {
            if a.starts_with(b) || b.starts_with(a) {
                bail!(
                    "{ka} ({}) and {kb} ({}) overlap: each store needs a directory of its own",
                    a.display(),
                    b.display()
                );
            }
        }
    }
    Ok(())
}

/// `p` made absolute and rid of `.` and `..` without touching the
/// filesystem (the directories may not exist yet).
fn lexical_absolute(p: &Path) -> PathBuf {
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    };
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Retention decides what is deleted: a key skiff does not act on must not
/// be dropped silently (a misspelt `repositories` would widen a policy to
/// every repository), so any other key is an error.
fn only_keys(obj: &Map<String, Value>, at: &str, known: &[&str]) -> Result<()> {
    match obj.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => bail!(
            "{at}.{k}: not a key skiff knows here (known: {}); refusing to guess what it should keep",
            known.join(", ")
        ),
        None => Ok(()),
    }
}

fn parse_policies(v: &Value, at: &str) -> Result<Vec<RetentionPolicy>> {
    let list = v
        .as_array()
        .with_context(|| format!("{at}: expected a list"))?;
    let mut out = Vec::new();
    for (i, p) in list.iter().enumerate() {
        let at = format!("{at}[{i}]");
        let o = p
            .as_object()
            .with_context(|| format!("{at}: expected an object"))?;
        only_keys(
            o,
            &at,
            &[
                "repositories",
                "deleteReferrers",
                "deleteUntagged",
                "keepTags",
            ],
        )?;
        let strings = |v: &Value, key: &str| -> Result<Vec<String>> {
            v.as_array()
                .and_then(|a| a.iter().map(|s| s.as_str().map(String::from)).collect())
                .with_context(|| format!("{key}: expected a list of strings"))
        };
        let flag =
            |k: &str, default: bool| -> Result<bool> { Ok(bool_at(o, &at, k)?.unwrap_or(default)) };
        let repositories = match o.get("repositories") {
            Some(r) => strings(r, &format!("{at}.repositories"))?,
            None => vec!["**".to_string()],
        };
        let keep_tags = match o.get("keepTags") {
            None => None,
            Some(k) => {
                let rules = k
                    .as_array()
                    .with_context(|| format!("{at}.keepTags: expected a list"))?;
                let mut parsed = Vec::new();
                for (j, r) in rules.iter().enumerate() {
                    let rat = format!("{at}.keepTags[{j}]");
                    let r = r
                        .as_object()
                        .with_context(|| format!("{rat}: expected an object"))?;
                    only_keys(
                        r,
                        &rat,
                        &[
                            "patterns",
                            "mostRecentlyPushedCount",
                            "mostRecentlyPulledCount",
                            "pulledWithin",
                            "pushedWithin",
                        ],
                    )?;
                    let count = |k: &str| -> Result<Option<u32>> {
                        r.get(k)
                            .map(|n| {
                                n.as_u64()
                                    .and_then(|n| u32::try_from(n).ok())
                                    .with_context(|| format!("{rat}.{k}: expected a count"))
                            })
                            .transpose()
                    };
                    let within = |k: &str| -> Result<Option<Duration>> {
                        r.get(k)
                            .map(|v| parse_duration(v, &format!("{rat}.{k}")))
                            .transpose()
                    };
                    let patterns = match r.get("patterns") {
                        Some(p) => strings(p, &format!("{rat}.patterns"))?,
                        None => Vec::new(),
                    };
                    for pat in &patterns {
                        regex_lite::Regex::new(pat).with_context(|| {
                            format!("{rat}.patterns: {pat:?} is not a regular expression")
                        })?;
                    }
                    parsed.push(KeepTags {
                        patterns,
                        most_recently_pushed_count: count("mostRecentlyPushedCount")?,
                        most_recently_pulled_count: count("mostRecentlyPulledCount")?,
                        pulled_within: within("pulledWithin")?,
                        pushed_within: within("pushedWithin")?,
                    });
                }
                Some(parsed)
            }
        };
        out.push(RetentionPolicy {
            repositories,
            delete_untagged: flag("deleteUntagged", true)?,
            delete_referrers: flag("deleteReferrers", true)?,
            keep_tags,
        });
    }
    Ok(out)
}

/// Go-style durations as zot writes them: "1h", "90m", "2h30m", "10s", "500ms".
/// The longest duration accepted: longer ones are surely mistakes, and
/// every duration must fit the millisecond counts the components take.
const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

pub fn parse_duration(v: &Value, key: &str) -> Result<Duration> {
    let bad = || anyhow::anyhow!("{key}: {v} is not a duration like \"1h\", \"30m\" or \"10s\"");
    let s = v.as_str().ok_or_else(bad)?.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let n: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let secs = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        // try_from_secs_f64 refuses what does not fit (no panic, no wrap).
        let part = Duration::try_from_secs_f64(n * secs).map_err(|_| bad())?;
        total = total
            .checked_add(part)
            .filter(|t| *t <= MAX_DURATION)
            .ok_or_else(|| anyhow::anyhow!("{key}: {v} is longer than 100 years"))?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

pub use skiff_core::access::glob_match;

/// zot features skiff does not have yet, each of which would leave the
/// registry more open than its operator configured it to be if it were
/// ignored: a config that asks for one does not start.
const REFUSED: &[(&str, &str)] = &[
    (
        "http.auth.openid",
        "OpenID authentication is not supported yet; refusing to serve without authentication",
    ),
    (
        "http.auth.apikey",
        "API keys are not supported yet; refusing to serve without authentication",
    ),
];

/// `http.auth` keys skiff acts on: the ways of signing in it has, and
/// `failDelay`, which tunes them.
const AUTH_KNOWN: &[&str] = &["failDelay", "htpasswd", "bearer", "ldap"];

/// Fail on any security setting skiff would otherwise ignore. `null` (and
/// `"apikey": false`) means the feature is off, as in zot. Under `http.auth`
/// an unknown key is an error, not a warning: it may be a way of turning
/// authentication on that skiff does not know.
fn refuse_unsupported(root: &Map<String, Value>) -> Result<()> {
    for (key, why) in REFUSED {
        match lookup(root, key) {
            None | Some(Value::Null) | Some(Value::Bool(false)) => {}
            Some(_) => bail!("{key}: {why}"),
        }
    }
    match lookup(root, "http.auth") {
        None | Some(Value::Null) => {}
        Some(Value::Object(auth)) => {
            let methods = REFUSED
                .iter()
                .filter_map(|(k, _)| k.strip_prefix("http.auth."));
            let known: Vec<&str> = methods.chain(AUTH_KNOWN.iter().copied()).collect();
            if let Some(k) = auth.keys().find(|k| !known.contains(&k.as_str())) {
                bail!(
                    "http.auth.{k}: unknown authentication setting; refusing to start \
                     rather than serve without the authentication it may ask for"
                );
            }
        }
        Some(v) => bail!("http.auth: expected an object, found {v}"),
    }
    Ok(())
}

/// A whole number in `min..=max`.
fn parse_count(v: &Value, key: &str, min: usize, max: usize) -> Result<usize> {
    v.as_u64()
        .and_then(|n| usize::try_from(n).ok())
        .filter(|n| (min..=max).contains(n))
        .with_context(|| format!("{key}: {v} is not a whole number from {min} to {max}"))
}

/// zot writes the port as a string ("8080"); accept a string or a number.
/// A size in bytes: a number, or a string with a unit (`"512MiB"`, `"10GB"`).
pub fn parse_size(v: &Value, key: &str) -> Result<u64> {
    let bad = || anyhow::anyhow!("{key}: {v} is not a size (a number of bytes, or like \"10GiB\")");
    let n = match v {
        Value::Number(n) => n.as_u64().ok_or_else(bad)?,
        Value::String(s) => {
            let s = s.trim();
            let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
            let (digits, unit) = s.split_at(split);
            let n: u64 = digits.parse().map_err(|_| bad())?;
            let scale: u64 = match unit.trim() {
                "" | "B" => 1,
                "KB" => 1_000,
                "MB" => 1_000_000,
                "GB" => 1_000_000_000,
                "TB" => 1_000_000_000_000,
                "KiB" => 1 << 10,
                "MiB" => 1 << 20,
                "GiB" => 1 << 30,
                "TiB" => 1 << 40,
                _ => return Err(bad()),
            };
            n.checked_mul(scale).ok_or_else(bad)?
        }
        _ => return Err(bad()),
    };
    if n == 0 {
        bail!("{key}: must be above 0");
    }
    Ok(n)
}

fn parse_port(v: &Value) -> Result<u16> {
    let n = match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    };
    match n {
        Some(n) if n <= u16::MAX as u64 => Ok(n as u16),
        _ => bail!("http.port: {v} is not a port number (0-65535)"),
    }
}

fn lookup<'a>(root: &'a Map<String, Value>, dotted: &str) -> Option<&'a Value> {
    let mut parts = dotted.split('.');
    let mut v = root.get(parts.next()?)?;
    for p in parts {
        v = v.as_object()?.get(p)?;
    }
    Some(v)
}

fn is_known(key: &str) -> bool {
    let parts: Vec<&str> = key.split('.').collect();
    KNOWN.iter().any(|k| {
        let kp: Vec<&str> = k.split('.').collect();
        kp.len() == parts.len() && kp.iter().zip(&parts).all(|(a, b)| *a == "*" || a == b)
    })
}

/// Known objects whose keys are checked by their own parser, which refuses
/// unknown ones (a misspelt policy key must not widen access silently).
const OPAQUE: &[&str] = &["http.accessControl", "http.auth.ldap"];

fn collect_unknown(obj: &Map<String, Value>, prefix: &str, out: &mut Vec<String>) {
    for (k, v) in obj {
        // Subpath names may contain dots' cousins but never dots; keep them as one key.
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{}", k.replace('.', "_"))
        };
        if !is_known(&key) {
            out.push(key);
            continue;
        }
        if OPAQUE.contains(&key.as_str()) {
            continue;
        }
        if let Value::Object(inner) = v {
            collect_unknown(inner, &key, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zot_style_config() {
        let c = Config::parse(
            r#"{"distSpecVersion":"1.1.0","storage":{"rootDirectory":"/tmp/z","dedupe":false,"commit":true,
                  "gcDelay":"2h","gcInterval":"30m",
                  "subPaths":{"/a":{"rootDirectory":"/tmp/a","dedupe":true,"gc":false}}},
                "http":{"address":"0.0.0.0","port":"8080"},"log":{"level":"debug"},
                "extensions":{"scrub":{"enable":true,"interval":"12h"}}}"#,
        )
        .unwrap();
        assert_eq!(c.http.port, 8080);
        assert_eq!(c.http.address.to_string(), "0.0.0.0");
        assert_eq!(c.storage.root_directory, PathBuf::from("/tmp/z"));
        assert!(c.storage.commit && !c.storage.dedupe);
        assert_eq!(c.storage.gc_delay, Duration::from_secs(7200));
        assert_eq!(c.storage.gc_interval, Duration::from_secs(1800));
        assert_eq!(c.sub_paths.len(), 1);
        let a = &c.sub_paths[0];
        assert_eq!(a.prefix, "a");
        assert!(a.store.dedupe && !a.store.gc);
        assert!(a.store.commit, "inherited from the default store");
        assert_eq!(c.scrub_interval, Some(Duration::from_secs(12 * 3600)));
        assert_eq!(c.log_level, "debug");
        assert!(c.unknown_keys.is_empty(), "{:?}", c.unknown_keys);
    }

    #[test]
    fn duration_text_reads_back_as_the_same_duration() {
        for (d, text) in [
            (Duration::ZERO, "0"),
            (Duration::from_secs(24 * 3600), "24h"),
            (Duration::from_secs(5400), "1h30m"),
            (Duration::from_secs(3661), "1h1m1s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_millis(1500), "1500ms"),
            (Duration::from_nanos(1_000_001), "1000001ns"),
        ] {
            assert_eq!(duration_text(d), text);
            assert_eq!(parse_duration(&Value::from(text), "k").unwrap(), d);
        }
    }

    #[test]
    fn check_collects_every_error_and_keeps_the_good_settings() {
        let c = Config::check(
            r#"{"http":{"port":"x","address":"10.0.0.1","headerTimeout":"0s","bodyTimeout":"5s"},
                "storage":{"rootDirectory":"/tmp/q","gcInterval":"0s",
                  "subPaths":{"/ok":{"rootDirectory":"/tmp/ok"},"bad/one":{"rootDirectory":"/tmp/b"}}},
                "log":{"level":"loud"}}"#,
        )
        .unwrap();
        let errors: Vec<String> = c.errors.iter().map(|e| e.to_string()).collect();
        let keys: Vec<&str> = errors
            .iter()
            .map(|e| e.split(": ").next().unwrap())
            .collect();
        assert_eq!(
            keys,
            [
                "http.port",
                "http.headerTimeout",
                "storage.gcInterval",
                "storage.subPaths.bad/one",
                "log.level"
            ],
            "{errors:?}"
        );
        // The keys that were right took effect.
        assert_eq!(c.config.http.address.to_string(), "10.0.0.1");
        assert_eq!(c.config.http.body_timeout, Duration::from_secs(5));
        assert_eq!(c.config.sub_paths.len(), 1);
        assert!(c
            .config
            .warnings()
            .iter()
            .any(|w| w.starts_with("http.address: 10.0.0.1")));
        let err = Config::parse(&c.config.effective().to_string());
        assert!(err.is_ok(), "{err:?}");
    }

    #[test]
    fn numeric_port_and_unknown_keys() {
        let c = Config::parse(r#"{"http":{"port":5001,"colour":"blue"},"frobnicate":1}"#).unwrap();
        assert_eq!(c.http.port, 5001);
        assert_eq!(c.unknown_keys, ["frobnicate", "http.colour"]);
    }

    #[test]
    fn retention_policies() {
        let c = Config::parse(
            r#"{"storage":{"retention":{"policies":[
                {"repositories":["infra/*"],"deleteUntagged":false,"keepTags":[{"patterns":["v1.*"],"mostRecentlyPushedCount":2}]},
                {"repositories":["**"],"deleteReferrers":false}]}}}"#,
        )
        .unwrap();
        let p = c.storage.policy_for("infra/app");
        assert!(!p.delete_untagged);
        assert_eq!(
            p.keep_tags.as_ref().unwrap()[0].most_recently_pushed_count,
            Some(2)
        );
        let q = c.storage.policy_for("infra/app/deep");
        assert!(!q.delete_referrers && q.delete_untagged);
        let none = StoreConfig::default_at(PathBuf::from("x")).policy_for("any");
        assert!(none.delete_untagged && none.delete_referrers && none.keep_tags.is_none());
    }

    #[test]
    fn durations_and_globs() {
        let d = |s: &str| parse_duration(&Value::String(s.into()), "k").unwrap();
        assert_eq!(d("1h"), Duration::from_secs(3600));
        assert_eq!(d("2h30m"), Duration::from_secs(9000));
        assert_eq!(d("500ms"), Duration::from_millis(500));
        assert_eq!(d("0"), Duration::ZERO);
        for bad in ["", "h", "1d", "abc", "1.2.3s"] {
            assert!(
                parse_duration(&Value::String(bad.into()), "k").is_err(),
                "{bad}"
            );
        }
        assert!(glob_match("**", "a/b/c"));
        assert!(glob_match("infra/*", "infra/x"));
        assert!(!glob_match("infra/*", "infra/x/y"));
        assert!(glob_match("infra/**", "infra/x/y"));
        assert!(!glob_match("prod", "production"));
    }

    #[test]
    fn durations_never_wrap_or_panic() {
        for huge in [
            "99999999999999999999h",
            "5124095576031h",
            "1e300h",
            "876001h",
        ] {
            let e = parse_duration(&Value::String(huge.into()), "k").unwrap_err();
            assert!(e.to_string().starts_with("k: "), "{huge}: {e}");
        }
        let century = parse_duration(&Value::String("876000h".into()), "k").unwrap();
        assert_eq!(century, Duration::from_secs(876_000 * 3600));
    }

    #[test]
    fn retention_keys_are_strict() {
        for (json, key) in [
            (
                r#"{"dryRun":true,"policies":[{"repoNames":["a"]}]}"#,
                "policies[0].repoNames",
            ),
            (r#"{"policies":[{"KeepTags":[]}]}"#, "policies[0].KeepTags"),
            (
                r#"{"policies":[{"keepTags":[{"pulledWithinn":"1h"}]}]}"#,
                "keepTags[0].pulledWithinn",
            ),
            (r#"{"dryrun":true}"#, "retention.dryrun"),
        ] {
            let text = format!(r#"{{"storage":{{"retention":{json}}}}}"#);
            let e = format!("{:#}", Config::parse(&text).unwrap_err());
            assert!(e.contains(key), "{json}: {e}");
        }
        let cfg = Config::parse(
            r#"{"storage":{"retention":{"dryRun":true,"delay":"2h","policies":[{"keepTags":[
                {"patterns":["^v"],"pulledWithin":"24h","pushedWithin":"1h","mostRecentlyPulledCount":3}]}]}}}"#,
        )
        .unwrap();
        assert!(cfg.storage.retention_dry_run);
        assert_eq!(cfg.storage.retention_delay, Duration::from_secs(7200));
        let rule = &cfg.storage.retention[0].keep_tags.as_ref().unwrap()[0];
        assert_eq!(rule.pulled_within, Some(Duration::from_secs(86400)));
        assert_eq!(rule.pushed_within, Some(Duration::from_secs(3600)));
        assert_eq!(rule.most_recently_pulled_count, Some(3));
        // zot's default delay.
        let cfg = Config::parse(r#"{"storage":{}}"#).unwrap();
        assert_eq!(cfg.storage.retention_delay, Duration::from_secs(86400));
    }

    #[test]
    fn store_roots_may_not_overlap() {
        for (root, sub) in [
            ("/srv/r", "/srv/r/team"),
            ("/srv/r/inner", "/srv/r"),
            ("/srv/r", "/srv/x/../r"),
        ] {
            let text = format!(
                r#"{{"storage":{{"rootDirectory":"{root}","subPaths":{{"/team":{{"rootDirectory":"{sub}"}}}}}}}}"#
            );
            let e = format!("{:#}", Config::parse(&text).unwrap_err());
            assert!(
                e.contains("storage.rootDirectory")
                    && e.contains("storage.subPaths./team.rootDirectory"),
                "{root} {sub}: {e}"
            );
        }
        assert!(Config::parse(
            r#"{"storage":{"rootDirectory":"/srv/r","subPaths":{"/team":{"rootDirectory":"/srv/rt"}}}}"#
        )
        .is_ok());
    }

    #[test]
    fn sizes() {
        let size = |v: Value| parse_size(&v, "k");
        assert_eq!(size(serde_json::json!(1000)).unwrap(), 1000);
        assert_eq!(size(serde_json::json!("512MiB")).unwrap(), 512 << 20);
        assert_eq!(size(serde_json::json!("10GB")).unwrap(), 10_000_000_000);
        for bad in [
            serde_json::json!(0),
            serde_json::json!(-1),
            serde_json::json!("10 parsecs"),
            serde_json::json!("99999999999999999999TiB"),
            serde_json::json!("18446744073709551615TiB"),
        ] {
            let e = size(bad.clone()).unwrap_err().to_string();
            assert!(e.starts_with("k: "), "{bad}: {e}");
        }
    }

    #[test]
    fn s3_with_a_dynamodb_cache_and_redirects() {
        let s3 = r#""storageDriver":{"name":"s3","bucket":"b","redirect":true,
                     "redirectendpoint":"files.example:9000","secure":false}"#;
        let c = Config::parse(&format!(
            r#"{{"storage":{{"rootDirectory":"/tmp/z","remoteCache":true,{s3},
                 "cacheDriver":{{"name":"dynamodb","endpoint":"http://d:8000","region":"eu-west-1",
                                 "cacheTablename":"T"}}}}}}"#
        ))
        .unwrap();
        let d = c.remote_cache.as_ref().unwrap();
        assert_eq!(
            (d.endpoint.as_deref(), d.region.as_str(), d.table.as_str()),
            (Some("http://d:8000"), "eu-west-1", "T")
        );
        let Driver::S3(s) = &c.storage.driver else {
            panic!("{:?}", c.storage.driver)
        };
        assert!(s.redirect);
        assert_eq!(
            s.redirect_endpoint.as_deref(),
            Some("http://files.example:9000")
        );
        // Read back, the effective settings mean the same.
        let again = Config::parse(&c.effective().to_string()).unwrap();
        assert_eq!(again.remote_cache, c.remote_cache);
        assert_eq!(again.storage.driver, c.storage.driver);
        // remoteCache without a DynamoDB cacheDriver, and the reverse.
        for bad in [
            r#"{"storage":{"remoteCache":true}}"#,
            r#"{"storage":{"remoteCache":true,"cacheDriver":{"name":"redb"}}}"#,
            r#"{"storage":{"remoteCache":true,"cacheDriver":{"name":"dynamodb"}}}"#,
        ] {
            let e = Config::parse(bad).unwrap_err().to_string();
            assert!(
                e.contains("storage.remoteCache") || e.contains("cacheTablename"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn the_s3_part_size_holds_the_largest_blob() {
        let s3 = r#"{"name":"s3","bucket":"b"}"#;
        // No chunksize: chosen so 10,000 parts hold maxBlobSize.
        let c = Config::parse(&format!(
            r#"{{"storage":{{"maxBlobSize":"500GiB","storageDriver":{s3}}}}}"#
        ))
        .unwrap();
        let Driver::S3(d) = &c.storage.driver else {
            panic!()
        };
        assert!(
            d.part_size * S3Settings::MAX_PARTS >= 500 << 30,
            "{}",
            d.part_size
        );
        assert!(d.part_size < 60 << 20, "{}", d.part_size);
        // A small maxBlobSize keeps the default.
        let c = Config::parse(&format!(
            r#"{{"storage":{{"maxBlobSize":"1GiB","storageDriver":{s3}}}}}"#
        ))
        .unwrap();
        let Driver::S3(d) = &c.storage.driver else {
            panic!()
        };
        assert_eq!(d.part_size, S3Settings::DEFAULT_PART);
        // A chunksize given too small for it is an error naming both.
        let e = Config::parse(
            r#"{"storage":{"maxBlobSize":"500GiB","storageDriver":{"name":"s3","bucket":"b","chunksize":"5MiB"}}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("storage.maxBlobSize") && e.contains("chunksize"),
            "{e}"
        );
    }

    #[test]
    fn errors_name_the_key() {
        for (text, key) in [
            (r#"{"http":{"port":"eighty"}}"#, "http.port"),
            (r#"{"http":{"port":70000}}"#, "http.port"),
            (r#"{"http":{"address":"localhost:5"}}"#, "http.address"),
            (
                r#"{"storage":{"rootDirectory":5}}"#,
                "storage.rootDirectory",
            ),
            (r#"{"storage":{"commit":"yes"}}"#, "storage.commit"),
            (r#"{"storage":{"gcDelay":"soon"}}"#, "storage.gcDelay"),
            (r#"{"storage":{"gcInterval":"0s"}}"#, "storage.gcInterval"),
            (
                r#"{"storage":{"subPaths":{"/a/b":{"rootDirectory":"/x"}}}}"#,
                "storage.subPaths./a/b",
            ),
            (r#"{"storage":{"subPaths":{"/a":{}}}}"#, "rootDirectory"),
            (
                r#"{"storage":{"cacheDriver":{"name":"dynamodb"}}}"#,
                "storage.cacheDriver.name",
            ),
            (
                r#"{"storage":{"retention":{"policies":[{"keepTags":[{"patterns":["("]}]}]}}}"#,
                "keepTags[0].patterns",
            ),
            (
                r#"{"extensions":{"scrub":{"interval":"often"}}}"#,
                "extensions.scrub.interval",
            ),
            (r#"{"log":{"level":"loud"}}"#, "log.level"),
            (r#"{"http":{"maxConnections":0}}"#, "http.maxConnections"),
            (
                r#"{"http":{"maxConnections":"many"}}"#,
                "http.maxConnections",
            ),
            (
                r#"{"http":{"maxRequestsInFlight":1}}"#,
                "http.maxRequestsInFlight",
            ),
            (
                r#"{"http":{"maxRequestsInFlight":100000}}"#,
                "http.maxRequestsInFlight",
            ),
            (r#"{"http":{"headerTimeout":"0s"}}"#, "http.headerTimeout"),
            (r#"{"http":{"bodyTimeout":30}}"#, "http.bodyTimeout"),
            (
                r#"{"http":{"requestCpuBudget":"lots"}}"#,
                "http.requestCpuBudget",
            ),
            (
                r#"{"http":{"shutdownTimeout":"soon"}}"#,
                "http.shutdownTimeout",
            ),
            (r#"{"http":{"shutdownTimeout":30}}"#, "http.shutdownTimeout"),
        ] {
            let e = format!("{:#}", Config::parse(text).unwrap_err());
            assert!(e.contains(key), "{key}: {e}");
        }
        assert!(Config::parse("[1]").is_err());
        assert!(Config::parse("{").is_err());
    }

    #[test]
    fn limits_have_defaults_and_can_be_set() {
        let d = Config::parse("{}").unwrap().http;
        assert_eq!(d.max_connections, 1024);
        assert_eq!(d.max_requests_in_flight, 256);
        assert_eq!(d.header_timeout, Duration::from_secs(30));
        assert_eq!(d.body_timeout, Duration::from_secs(60));
        assert_eq!(d.request_cpu_budget, Duration::from_secs(30));
        assert_eq!(d.shutdown_timeout, Duration::from_secs(30));
        let c = Config::parse(
            r#"{"http":{"maxConnections":10,"maxRequestsInFlight":4,"headerTimeout":"5s",
                "bodyTimeout":"2m","requestCpuBudget":"500ms","shutdownTimeout":"1m30s"}}"#,
        )
        .unwrap();
        assert_eq!(c.http.max_connections, 10);
        assert_eq!(c.http.max_requests_in_flight, 4);
        assert_eq!(c.http.header_timeout, Duration::from_secs(5));
        assert_eq!(c.http.body_timeout, Duration::from_secs(120));
        assert_eq!(c.http.request_cpu_budget, Duration::from_millis(500));
        assert_eq!(c.http.shutdown_timeout, Duration::from_secs(90));
        let zero = Config::parse(r#"{"http":{"shutdownTimeout":"0s"}}"#).unwrap();
        assert_eq!(zero.http.shutdown_timeout, Duration::ZERO);
        assert!(c.unknown_keys.is_empty(), "{:?}", c.unknown_keys);
    }

    #[test]
    fn security_settings_it_cannot_honour_refuse_to_start() {
        for (text, key) in [
            (
                r#"{"http":{"auth":{"openid":{"providers":{}}}}}"#,
                "http.auth.openid",
            ),
            (r#"{"http":{"auth":{"apikey":true}}}"#, "http.auth.apikey"),
        ] {
            let e = format!("{:#}", Config::parse(text).unwrap_err());
            assert!(e.contains(&format!("{key}: ")), "{key}: {e}");
            assert!(e.contains("not supported yet"), "{key}: {e}");
        }
    }

    #[test]
    fn tls_needs_both_files_and_readable_ones() {
        for (text, says) in [
            (r#"{"http":{"tls":{}}}"#, "http.tls: both cert and key"),
            (
                r#"{"http":{"tls":{"cert":"/nonexistent/c.pem","key":"k.pem"}}}"#,
                "http.tls.cert: cannot read /nonexistent/c.pem",
            ),
            (
                r#"{"http":{"tls":{"cert":7,"key":"k"}}}"#,
                "http.tls.cert: expected a file path",
            ),
        ] {
            let e = format!("{:#}", Config::parse(text).unwrap_err());
            assert!(e.contains(says), "{says}: {e}");
        }
    }

    #[test]
    fn ldap_settings_keep_the_bind_password_out_of_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("bind.json");
        std::fs::write(
            &creds,
            r#"{"bindDN":"cn=r,dc=x","bindPassword":"pw-in-a-file"}"#,
        )
        .unwrap();
        let ldap = |extra: &str| {
            format!(
                r#"{{"http":{{"auth":{{"ldap":{{"address":"127.0.0.1","baseDN":"dc=x",
                    "credentialsFile":{}{extra}}}}}}}}}"#,
                serde_json::to_string(&creds).unwrap()
            )
        };
        let c = Config::parse(&ldap("")).unwrap();
        assert!(c.auth.auth_on());
        assert!(c.unknown_keys.is_empty(), "{:?}", c.unknown_keys);
        for (extra, says) in [
            (
                r#","bindPassword":"x""#,
                "http.auth.ldap.bindPassword: secrets stay out",
            ),
            (
                r#","userAtribute":"uid""#,
                "http.auth.ldap.userAtribute: unknown",
            ),
            (r#","port":70000"#, "http.auth.ldap.port"),
        ] {
            let e = format!("{:#}", Config::parse(&ldap(extra)).unwrap_err());
            assert!(e.contains(says), "{says}: {e}");
        }
        std::fs::write(&creds, "{not json").unwrap();
        let e = format!("{:#}", Config::parse(&ldap("")).unwrap_err());
        assert!(
            e.contains("credentialsFile") && !e.contains("not json"),
            "{e}"
        );
    }

    #[test]
    fn unknown_auth_keys_are_errors_not_warnings() {
        for (text, key) in [
            (r#"{"http":{"auth":{"mtls":{}}}}"#, "http.auth.mtls"),
            (
                r#"{"http":{"auth":{"failDelay":1,"htpass":{}}}}"#,
                "http.auth.htpass",
            ),
        ] {
            let e = format!("{:#}", Config::parse(text).unwrap_err());
            assert!(e.contains(key), "{key}: {e}");
        }
        let e = format!(
            "{:#}",
            Config::parse(r#"{"http":{"auth":"htpasswd"}}"#).unwrap_err()
        );
        assert!(e.contains("http.auth: expected an object"), "{e}");
    }

    #[test]
    fn security_settings_that_are_off_are_accepted() {
        let c = Config::parse(
            r#"{"http":{"tls":null,"accessControl":null,
                "auth":{"failDelay":5,"apikey":false,"htpasswd":null}}}"#,
        )
        .unwrap();
        assert!(c.unknown_keys.is_empty(), "{:?}", c.unknown_keys);
    }
}
