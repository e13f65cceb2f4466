//! Keys of the `objects` interface, as every backend accepts them (the
//! host's disk and S3, the guests' key-value and S3): `/`-separated plain
//! names, bounded, so no key can reach outside a root or prefix; and which
//! keys name content, and so may only ever hold bytes of that digest.

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

/// The digest a key is named for (`sha256:<hex>`), when it is a blob of a
/// layout (`…/blobs/<alg>/<hex>`): such keys hold exactly that content,
/// which is what lets a store share one copy among them.
pub fn content_digest(key: &str) -> Option<String> {
    let mut it = key.rsplit('/');
    let (hex, alg, blobs) = (it.next()?, it.next()?, it.next()?);
    let d = format!("{alg}:{hex}");
    (blobs == "blobs" && d.parse::<crate::Digest>().is_ok()).then_some(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_plain_names() {
        assert!(valid_key("a/b/c"));
        for bad in [
            "", "/a", "a/", "a//b", "..", "a/../b", "./a", "a\\b", "a\0b",
        ] {
            assert!(!valid_key(bad), "{bad:?}");
        }
        assert!(!valid_key(&"a".repeat(MAX_KEY_LEN + 1)));
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
        assert_eq!(content_digest("a/index.json"), None);
    }
}
