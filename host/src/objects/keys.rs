//! Object keys: which are valid (every segment a plain name, so no key can
//! reach outside a root or prefix), and keys as filesystem paths.

use crate::runtime::skiff::registry::objects::{Content, HashAlgorithm, ObjectError};
use std::path::{Path, PathBuf};

pub use skiff_core::object_key::{content_digest, valid_key, valid_prefix};

pub fn key_path(root: &Path, key: &str) -> Result<PathBuf, ObjectError> {
    if !valid_key(key) {
        return Err(ObjectError::InvalidKey(key.to_string()));
    }
    Ok(root.join(key))
}

/// A listing prefix: empty (the root) or a key followed by `/`.
pub fn prefix_path(root: &Path, prefix: &str) -> Result<PathBuf, ObjectError> {
    if prefix.is_empty() {
        return Ok(root.to_path_buf());
    }
    match prefix.strip_suffix('/') {
        Some(k) => key_path(root, k),
        None => Err(ObjectError::InvalidKey(prefix.to_string())),
    }
}

/// The hash algorithm a digest names.
pub fn algorithm_of(d: &skiff_core::Digest) -> HashAlgorithm {
    match d.algorithm() {
        skiff_core::Algorithm::Sha256 => HashAlgorithm::Sha256,
        skiff_core::Algorithm::Sha512 => HashAlgorithm::Sha512,
    }
}

/// `expected` as a digest string (`sha256:<hex>`).
pub fn digest_text(expected: &Content) -> String {
    let alg = match expected.algorithm {
        HashAlgorithm::Sha256 => "sha256",
        HashAlgorithm::Sha512 => "sha512",
    };
    format!("{alg}:{}", expected.hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_stay_under_the_root() {
        let root = Path::new("/data");
        assert_eq!(key_path(root, "a/b/c").unwrap(), Path::new("/data/a/b/c"));
        for bad in [
            "", "/a", "a/", "a//b", "..", "a/../b", "./a", "a\\b", "a\0b",
        ] {
            assert!(key_path(root, bad).is_err(), "{bad:?}");
        }
        assert_eq!(prefix_path(root, "").unwrap(), Path::new("/data"));
        assert_eq!(prefix_path(root, "a/").unwrap(), Path::new("/data/a"));
        assert!(prefix_path(root, "a").is_err());
        assert!(prefix_path(root, "../").is_err());
    }
}
