//! Configuration: one JSON file with zot's key names, or an embedded default.
//!
//! Values are checked here, before anything starts, and every error names the
//! key. Unknown keys are reported as warnings (a zot config mostly just works).

use anyhow::{bail, Context, Result};
use serde_json::{Map, Value};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Config {
    pub http: Http,
    pub storage: Storage,
    pub log_level: String,
    /// Keys present in the file that skiff does not know.
    pub unknown_keys: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Http {
    pub address: IpAddr,
    /// 0 asks the OS for a free port (the one bound is printed at start).
    pub port: u16,
}

#[derive(Debug, Clone)]
pub struct Storage {
    pub root_directory: PathBuf,
    /// fsync files and their directories before publishing them.
    pub commit: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            http: Http {
                address: IpAddr::from([127, 0, 0, 1]),
                port: 5000,
            },
            storage: Storage {
                root_directory: PathBuf::from("skiff-data"),
                commit: false,
            },
            log_level: "info".into(),
            unknown_keys: Vec::new(),
        }
    }
}

/// Keys skiff reads, and zot keys it accepts without acting on them yet
/// (so they are not reported as unknown).
const KNOWN: &[&str] = &[
    "distSpecVersion",
    "http",
    "http.address",
    "http.port",
    "http.realm",
    "storage",
    "storage.rootDirectory",
    "storage.commit",
    "storage.dedupe",
    "storage.gc",
    "storage.gcDelay",
    "storage.gcInterval",
    "log",
    "log.level",
    "log.output",
    "extensions",
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

    pub fn parse(text: &str) -> Result<Config> {
        let root: Value = serde_json::from_str(text).context("the file is not valid JSON")?;
        let Value::Object(root) = root else {
            bail!("the configuration must be a JSON object");
        };
        let mut cfg = Config::default();
        collect_unknown(&root, "", &mut cfg.unknown_keys);

        if let Some(v) = lookup(&root, "http.address") {
            let s = v.as_str().context("http.address: expected a string")?;
            cfg.http.address = s
                .parse()
                .with_context(|| format!("http.address: {s:?} is not an IP address"))?;
        }
        if let Some(v) = lookup(&root, "http.port") {
            cfg.http.port = parse_port(v)?;
        }
        if let Some(v) = lookup(&root, "storage.rootDirectory") {
            let s = v
                .as_str()
                .context("storage.rootDirectory: expected a string")?;
            if s.is_empty() {
                bail!("storage.rootDirectory: must not be empty");
            }
            cfg.storage.root_directory = PathBuf::from(s);
        }
        if let Some(v) = lookup(&root, "storage.commit") {
            cfg.storage.commit = v
                .as_bool()
                .context("storage.commit: expected true or false")?;
        }
        if let Some(v) = lookup(&root, "log.level") {
            let s = v.as_str().context("log.level: expected a string")?;
            let level = s.to_ascii_lowercase();
            if !["error", "warn", "info", "debug", "trace"].contains(&level.as_str()) {
                bail!("log.level: {s:?} is not one of error, warn, info, debug, trace");
            }
            cfg.log_level = level;
        }
        Ok(cfg)
    }
}

/// zot writes the port as a string ("8080"); accept a string or a number.
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

fn collect_unknown(obj: &Map<String, Value>, prefix: &str, out: &mut Vec<String>) {
    for (k, v) in obj {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        if !KNOWN.contains(&key.as_str()) {
            out.push(key);
            continue;
        }
        // `extensions` is accepted whole; its keys are the extensions' own.
        if let (Value::Object(inner), false) = (v, key == "extensions") {
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
            r#"{"distSpecVersion":"1.1.0","storage":{"rootDirectory":"/tmp/z","dedupe":true,"commit":true},
                "http":{"address":"0.0.0.0","port":"8080"},"log":{"level":"debug"}}"#,
        )
        .unwrap();
        assert_eq!(c.http.port, 8080);
        assert_eq!(c.http.address.to_string(), "0.0.0.0");
        assert_eq!(c.storage.root_directory, PathBuf::from("/tmp/z"));
        assert!(c.storage.commit);
        assert_eq!(c.log_level, "debug");
        assert!(c.unknown_keys.is_empty());
    }

    #[test]
    fn numeric_port_and_unknown_keys() {
        let c = Config::parse(r#"{"http":{"port":5001,"colour":"blue"},"frobnicate":1}"#).unwrap();
        assert_eq!(c.http.port, 5001);
        assert_eq!(c.unknown_keys, ["frobnicate", "http.colour"]);
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
            (r#"{"log":{"level":"loud"}}"#, "log.level"),
        ] {
            let e = format!("{:#}", Config::parse(text).unwrap_err());
            assert!(e.contains(key), "{e}");
        }
        assert!(Config::parse("[1]").is_err());
        assert!(Config::parse("{").is_err());
    }
}
