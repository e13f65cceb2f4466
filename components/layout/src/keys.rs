//! Where each part of a repository lives in the object key space.

use skiff_core::Digest;

pub fn index(repo: &str) -> String {
    format!("{repo}/index.json")
}

/// The version of `index.json` before its last change (the disk keeps it).
pub fn index_previous(repo: &str) -> String {
    format!("{repo}/.index.json.prev")
}

pub fn oci_layout(repo: &str) -> String {
    format!("{repo}/oci-layout")
}

pub fn blob(repo: &str, d: &Digest) -> String {
    format!("{repo}/blobs/{}/{}", d.algorithm().as_str(), d.hex())
}

/// The listing prefix of one algorithm's blobs.
pub fn blobs_prefix(repo: &str, algorithm: &str) -> String {
    format!("{repo}/blobs/{algorithm}/")
}

pub fn uploads_prefix(repo: &str) -> String {
    format!("{repo}/.uploads/")
}

pub fn upload_data(repo: &str, id: &str) -> String {
    format!("{repo}/.uploads/{id}")
}

pub fn upload_state(repo: &str, id: &str) -> String {
    format!("{repo}/.uploads/{id}.json")
}

/// The prefix of `subject`'s referrer entries: one small object per
/// referrer, so recording one never rewrites the others.
pub fn referrers(repo: &str, subject: &Digest) -> String {
    format!(
        "{repo}/.referrers/{}/{}/",
        subject.algorithm().as_str(),
        subject.hex()
    )
}

/// The entry for `referrer` among `subject`'s referrers.
pub fn referrer_entry(repo: &str, subject: &Digest, referrer: &Digest) -> String {
    format!(
        "{}{}-{}",
        referrers(repo, subject),
        referrer.algorithm().as_str(),
        referrer.hex()
    )
}

/// The referrer a `referrer_entry` name stands for.
pub fn parse_referrer_entry(name: &str) -> Option<Digest> {
    let (alg, hex) = name.split_once('-')?;
    format!("{alg}:{hex}").parse().ok()
}

/// The listing prefix of the subjects (of one algorithm) that have referrers.
pub fn referrers_prefix(repo: &str, algorithm: &str) -> String {
    format!("{repo}/.referrers/{algorithm}/")
}

/// A marker whose modification time is when manifest `d` was last pulled.
pub fn pulled(repo: &str, d: &Digest) -> String {
    format!("{repo}/.pulls/{}/{}", d.algorithm().as_str(), d.hex())
}

/// The listing prefix of one algorithm's pull markers.
pub fn pulled_prefix(repo: &str, algorithm: &str) -> String {
    format!("{repo}/.pulls/{algorithm}/")
}

/// A tag pushed into a large repository and not yet folded into its
/// `index.json` (`journal`).
pub fn tag_entry(repo: &str, tag: &str) -> String {
    format!("{repo}/.tags/{tag}")
}

/// The listing prefix of a repository's tag entries.
pub fn tag_entries_prefix(repo: &str) -> String {
    format!("{repo}/.tags/")
}
