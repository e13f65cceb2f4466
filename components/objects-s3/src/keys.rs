//! Object keys: which the interface accepts (every segment a plain name, so
//! no key reaches outside the store's prefix; the same rule as the native
//! backends'), which ones name content, and how keys are spelled in S3
//! request paths, queries and `x-amz-copy-source`.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

const MAX_KEY_LEN: usize = 1024;

fn valid_segment(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains(['\\', '\0'])
}

/// A key every backend accepts: `/`-separated plain names, bounded.
pub fn valid_key(key: &str) -> bool {
    key.len() <= MAX_KEY_LEN && key.split('/').all(valid_segment)
}

/// A listing prefix: empty (the root) or a valid key followed by `/`.
pub fn valid_prefix(prefix: &str) -> bool {
    prefix.is_empty() || prefix.strip_suffix('/').is_some_and(valid_key)
}

/// The digest a key is named for, when it is a blob of a layout
/// (`…/blobs/<alg>/<hex>`): such keys must hold exactly that content.
pub fn content_digest(key: &str) -> Option<String> {
    let mut it = key.rsplit('/');
    let (hex, alg, blobs) = (it.next()?, it.next()?, it.next()?);
    let d = format!("{alg}:{hex}");
    (blobs == "blobs" && d.parse::<skiff_core::Digest>().is_ok()).then_some(d)
}

/// SigV4's URI encoding, which S3 checks the signature against: the
/// unreserved characters as they are, every other byte as `%XX`.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A key as a URL path (or `x-amz-copy-source`): each segment encoded,
/// the `/` between them kept. Encoded exactly once, as S3 signs it.
pub fn encode_path(key: &str) -> String {
    key.split('/')
        .map(|seg| utf8_percent_encode(seg, UNRESERVED).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

/// A query parameter's name or value, `/` included.
pub fn encode_query(s: &str) -> String {
    utf8_percent_encode(s, UNRESERVED).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_stay_under_the_prefix() {
        assert!(valid_key("a/b/c"));
        for bad in [
            "", "/a", "a/", "a//b", "..", "a/../b", "./a", "a\\b", "a\0b",
        ] {
            assert!(!valid_key(bad), "{bad:?}");
        }
        assert!(valid_prefix("") && valid_prefix("a/b/"));
        assert!(!valid_prefix("a") && !valid_prefix("../"));
    }

    #[test]
    fn content_addressed_keys() {
        let hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(
            content_digest(&format!("a/b/blobs/sha256/{hex}")),
            Some(format!("sha256:{hex}"))
        );
        assert_eq!(content_digest(&format!("a/.uploads/{hex}")), None);
        assert_eq!(content_digest("a/blobs/sha256/abc"), None);
    }

    #[test]
    fn encoding_keeps_slashes_between_segments_only() {
        assert_eq!(encode_path("p/a b/c+d~e.f_g-h"), "p/a%20b/c%2Bd~e.f_g-h");
        assert_eq!(encode_path("sha256:ab"), "sha256%3Aab");
        assert_eq!(encode_query("a/b+c=="), "a%2Fb%2Bc%3D%3D");
        assert_eq!(encode_path("é"), "%C3%A9");
    }
}
