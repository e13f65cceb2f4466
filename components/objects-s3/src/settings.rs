//! The runtime settings this component is configured with, read once per
//! instance from `wasi:config/store` (Spin's variables, wasmtime's `-S
//! config`), under the same names everywhere: `s3_bucket`, `s3_region`,
//! `s3_endpoint`, `s3_prefix`, `s3_path_style`, `s3_access_key`,
//! `s3_secret_key`, `s3_session_token`, `s3_part_size`.
//!
//! An empty value counts as unset: Spin variables declared without a
//! value are often given `""` as their default.

/// S3's smallest part but the last.
pub const MIN_PART: u64 = 5 << 20;
/// S3's largest single PUT, and so its largest part.
pub const MAX_PART: u64 = 5 << 30;
/// The native backend's default part size (its `chunksize`): a session
/// started by either side has parts of the size it recorded, so the
/// default only matters for new sessions, but the same one keeps buckets
/// written by both alike.
pub const DEFAULT_PART: u64 = 10 << 20;

#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub bucket: String,
    pub region: String,
    /// `http` or `https`.
    pub secure: bool,
    /// The endpoint's `host[:port]`, without a default port (what the
    /// signature names as `host` is what the request is sent to).
    pub host: String,
    /// `https://host/bucket/key` rather than `https://bucket.host/key`.
    pub path_style: bool,
    /// Key prefix inside the bucket, without slashes at either end; empty:
    /// the whole bucket.
    pub prefix: String,
    pub access_key: String,
    pub secret_key: String,
    pub session_token: Option<String>,
    /// Size of the parts an upload is stored in.
    pub part_size: u64,
}

/// The settings, from `lookup` (a variable's value, `None` if unset).
/// The error names the variable to set or fix.
pub fn parse(lookup: impl Fn(&str) -> Result<Option<String>, String>) -> Result<Settings, String> {
    let get = |name: &str| -> Result<Option<String>, String> {
        Ok(lookup(name)
            .map_err(|e| format!("reading the {name} variable: {e}"))?
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty()))
    };
    let bucket =
        get("s3_bucket")?.ok_or("objects-s3 is not configured: set the s3_bucket variable")?;
    let region = get("s3_region")?.unwrap_or_else(|| "us-east-1".to_string());
    let given = get("s3_endpoint")?;
    let endpoint = given
        .clone()
        .unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
    let (secure, host) = parse_endpoint(&endpoint)?;
    // A store of its own (MinIO, moto, R2) is addressed by path unless told
    // otherwise; AWS by virtual host, as it prefers.
    let path_style = match get("s3_path_style")? {
        None => given.is_some(),
        Some(v) => parse_bool(&v)
            .ok_or_else(|| format!("s3_path_style is {v:?}; set it to true or false"))?,
    };
    let prefix = get("s3_prefix")?
        .unwrap_or_default()
        .trim_matches('/')
        .to_string();
    let (access_key, secret_key) =
        match (get("s3_access_key")?, get("s3_secret_key")?) {
            (Some(a), Some(s)) => (a, s),
            _ => return Err(
                "objects-s3 has no credentials: set the s3_access_key and s3_secret_key variables"
                    .into(),
            ),
        };
    let session_token = get("s3_session_token")?;
    let part_size = match get("s3_part_size")? {
        None => DEFAULT_PART,
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|n| (MIN_PART..=MAX_PART).contains(n))
            .ok_or_else(|| {
                format!("s3_part_size is {v:?}; give bytes, from {MIN_PART} (5 MiB) to {MAX_PART} (5 GiB)")
            })?,
    };
    Ok(Settings {
        bucket,
        region,
        secure,
        host,
        path_style,
        prefix,
        access_key,
        secret_key,
        session_token,
        part_size,
    })
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

/// `(https?, host[:port])` of an endpoint URL; a default port is dropped,
/// as the signature leaves it out of `host` too.
fn parse_endpoint(url: &str) -> Result<(bool, String), String> {
    let (secure, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else if url.contains("://") {
        return Err(format!(
            "s3_endpoint {url:?}: only http and https are supported"
        ));
    } else {
        (true, url)
    };
    let host = rest.trim_end_matches('/');
    if host.is_empty() || host.contains(['/', '?', '#', '@', ' ']) {
        return Err(format!(
            "s3_endpoint {url:?}: give scheme, host and port only (e.g. http://127.0.0.1:9000)"
        ));
    }
    let default_port = if secure { ":443" } else { ":80" };
    let host = host.strip_suffix(default_port).unwrap_or(host);
    Ok((secure, host.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn with(vars: &[(&str, &str)]) -> Result<Settings, String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse(|k| Ok(vars.get(k).cloned()))
    }

    const CREDS: [(&str, &str); 2] = [("s3_access_key", "a"), ("s3_secret_key", "s")];

    #[test]
    fn aws_defaults() {
        let s = with(&[("s3_bucket", "b"), CREDS[0], CREDS[1]]).unwrap();
        assert_eq!(s.host, "s3.us-east-1.amazonaws.com");
        assert!(s.secure && !s.path_style);
        assert_eq!((s.prefix.as_str(), s.part_size), ("", DEFAULT_PART));
    }

    #[test]
    fn a_local_endpoint_is_path_style() {
        let s = with(&[
            ("s3_bucket", "b"),
            ("s3_endpoint", "http://127.0.0.1:5000/"),
            ("s3_prefix", "/a/b/"),
            ("s3_part_size", "5242880"),
            CREDS[0],
            CREDS[1],
        ])
        .unwrap();
        assert_eq!(
            (s.host.as_str(), s.secure, s.path_style),
            ("127.0.0.1:5000", false, true)
        );
        assert_eq!((s.prefix.as_str(), s.part_size), ("a/b", 5 << 20));
        let s = with(&[
            ("s3_bucket", "b"),
            ("s3_endpoint", "https://minio.example:443"),
            ("s3_path_style", "false"),
            CREDS[0],
            CREDS[1],
        ])
        .unwrap();
        assert_eq!((s.host.as_str(), s.path_style), ("minio.example", false));
    }

    #[test]
    fn what_is_missing_is_named() {
        assert!(with(&[CREDS[0], CREDS[1]])
            .unwrap_err()
            .contains("s3_bucket"));
        assert!(with(&[("s3_bucket", ""), CREDS[0], CREDS[1]])
            .unwrap_err()
            .contains("s3_bucket"));
        assert!(with(&[("s3_bucket", "b")])
            .unwrap_err()
            .contains("s3_access_key"));
        let e = with(&[
            ("s3_bucket", "b"),
            ("s3_part_size", "1000"),
            CREDS[0],
            CREDS[1],
        ]);
        assert!(e.unwrap_err().contains("s3_part_size"));
        let e = with(&[
            ("s3_bucket", "b"),
            ("s3_endpoint", "ftp://x"),
            CREDS[0],
            CREDS[1],
        ]);
        assert!(e.unwrap_err().contains("s3_endpoint"));
    }
}
