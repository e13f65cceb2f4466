//! Object keys: which the interface accepts (every segment a plain name, so
//! no key reaches outside the store's prefix; the same rule as the native
//! backends'), which ones name content, and how keys are spelled in S3
//! request paths, queries and `x-amz-copy-source`.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

pub use skiff_core::object_key::{content_digest, valid_key, valid_prefix};

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
    fn encoding_keeps_slashes_between_segments_only() {
        assert_eq!(encode_path("p/a b/c+d~e.f_g-h"), "p/a%20b/c%2Bd~e.f_g-h");
        assert_eq!(encode_path("sha256:ab"), "sha256%3Aab");
        assert_eq!(encode_query("a/b+c=="), "a%2Fb%2Bc%3D%3D");
        assert_eq!(encode_path("é"), "%C3%A9");
    }
}
