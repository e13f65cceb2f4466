//! htpasswd files with bcrypt entries (`htpasswd -B`), as zot and CNCF
//! distribution accept: `user:$2y$...` per line, `#` comments. Other hash
//! kinds are refused when the file is read, not silently never matched.

use std::collections::BTreeMap;

/// A parsed htpasswd file. Its `Debug` shows user names only.
#[derive(Clone, Default, PartialEq)]
pub struct Htpasswd {
    users: BTreeMap<String, String>,
}

impl std::fmt::Debug for Htpasswd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.users.keys()).finish()
    }
}

impl Htpasswd {
    /// Errors give the line number, never the line.
    pub fn parse(text: &str) -> Result<Htpasswd, String> {
        let mut users = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, hash)) = line.split_once(':') else {
                return Err(format!("line {}: expected user:hash", i + 1));
            };
            if !(hash.starts_with("$2y$") || hash.starts_with("$2a$") || hash.starts_with("$2b$")) {
                return Err(format!(
                    "line {}: the entry for {user:?} is not bcrypt (make it with htpasswd -B)",
                    i + 1
                ));
            }
            users.insert(user.to_string(), hash.to_string());
        }
        Ok(Htpasswd { users })
    }

    /// Is `password` right for `user`? An unknown user costs a bcrypt check
    /// too, so timing does not tell which users exist.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        // A valid hash of a random string (cost 10, as htpasswd -B makes).
        const DUMMY: &str = "$2b$10$p5PpwUokeB8XIkqRC/YyKemeh1gcRXM/pcGvPFzXzv/Y/G2xZAsxC";
        match self.users.get(user) {
            Some(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            None => {
                let _ = bcrypt::verify(password, DUMMY);
                false
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bcrypt_entries_verify() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let h = Htpasswd::parse(&format!("# users\nalice:{hash}\n\n")).unwrap();
        assert!(h.verify("alice", "s3cret"));
        assert!(!h.verify("alice", "S3cret"));
        assert!(!h.verify("bob", "s3cret"));
    }

    #[test]
    fn other_hashes_are_refused_without_echoing_them() {
        let e = Htpasswd::parse("alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=").unwrap_err();
        assert!(e.contains("line 1") && e.contains("bcrypt"), "{e}");
        assert!(!e.contains("W6ph5"), "{e}");
        assert!(Htpasswd::parse("no-colon").is_err());
    }
}
