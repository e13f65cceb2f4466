//! Repository names, per the distribution spec's grammar.

use std::fmt;
use std::str::FromStr;

/// Longest name accepted. The spec lets registries bound it; 255 matches
/// distribution and keeps paths well under filesystem limits.
pub const MAX_NAME_LEN: usize = 255;

/// Path components that name parts of an OCI layout and so cannot be a
/// repository component without colliding with the layout it would sit in.
const RESERVED_COMPONENTS: &[&str] = &["blobs", "index.json", "oci-layout"];

/// A repository name: `/`-separated components of `[a-z0-9]+` joined by
/// `.`, `_`, `__` or `-+`. The grammar admits no `..`, no leading `/` and no
/// empty component, so a name is always a safe relative path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameError(pub String);

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid repository name {:?}", self.0)
    }
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// One path component: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn is_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__" or one or more "-".
        let start = i;
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start || i >= b.len() || !is_alnum(b[i]) {
            return false;
        }
    }
    true
}

impl RepoName {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first path component, which selects a subpath store.
    pub fn first_component(&self) -> &str {
        self.0.split('/').next().unwrap_or(&self.0)
    }
}

impl FromStr for RepoName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = !s.is_empty()
            && s.len() <= MAX_NAME_LEN
            && s.split('/')
                .all(|c| is_component(c) && !RESERVED_COMPONENTS.contains(&c));
        if ok {
            Ok(RepoName(s.to_string()))
        } else {
            Err(NameError(s.to_string()))
        }
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_spec_names() {
        for good in [
            "a",
            "library/alpine",
            "a0/b1/c2",
            "my.repo",
            "my_repo",
            "my__repo",
            "my-repo",
            "my---repo",
            "x/y.z_w__v-u",
        ] {
            assert!(good.parse::<RepoName>().is_ok(), "{good}");
        }
    }

    #[test]
    fn rejects_bad_names() {
        for bad in [
            "",
            "/a",
            "a/",
            "a//b",
            "A",
            "a..b",
            "a___b",
            "a.-b",
            "-a",
            "a-",
            "..",
            "a/../b",
            "a/./b",
            "a b",
            "a%2fb",
            "a/blobs",
            "x/index.json",
            "oci-layout",
        ] {
            assert!(bad.parse::<RepoName>().is_err(), "{bad}");
        }
        assert!("a".repeat(MAX_NAME_LEN + 1).parse::<RepoName>().is_err());
        assert!("a".repeat(MAX_NAME_LEN).parse::<RepoName>().is_ok());
    }

    #[test]
    fn first_component() {
        let n: RepoName = "team/app/web".parse().unwrap();
        assert_eq!(n.first_component(), "team");
    }
}
