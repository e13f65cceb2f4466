//! Where each part of a repository lives in the object key space.

use skiff_core::Digest;

pub fn index(repo: &str) -> String {
    format!("{repo}/index.json")
}

pub fn oci_layout(repo: &str) -> String {
    format!("{repo}/oci-layout")
}

pub fn blob(repo: &str, d: &Digest) -> String {
    format!("{repo}/blobs/{}/{}", d.algorithm().as_str(), d.hex())
}

pub fn upload_data(repo: &str, id: &str) -> String {
    format!("{repo}/.uploads/{id}")
}

pub fn upload_state(repo: &str, id: &str) -> String {
    format!("{repo}/.uploads/{id}.json")
}

pub fn referrers(repo: &str, subject: &Digest) -> String {
    format!(
        "{repo}/.referrers/{}/{}",
        subject.algorithm().as_str(),
        subject.hex()
    )
}

/// Parse a digest the caller promised was valid; a broken promise is an
/// internal error, not a client one.
pub fn digest(s: &str) -> Result<Digest, crate::Error> {
    s.parse()
        .map_err(|e| crate::Error::DigestInvalid(format!("{e}")))
}
