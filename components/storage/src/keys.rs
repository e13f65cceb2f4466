//! Where each part of a repository lives: `skiff-layout`'s keys, plus the
//! parse of a digest the caller promised was valid.

use skiff_core::Digest;
pub use skiff_layout::keys::*;

/// A digest from the wire layer, which has already checked it.
pub fn digest(s: &str) -> Result<Digest, crate::Error> {
    s.parse()
        .map_err(|e| crate::Error::DigestInvalid(format!("{e}")))
}
