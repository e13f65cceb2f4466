//! The two digests objects are checked against.

use crate::bindings::exports::skiff::registry::objects::HashAlgorithm;
use sha2::{Digest as _, Sha256, Sha512};

pub enum Hasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Hasher {
    pub fn new(algorithm: HashAlgorithm) -> Hasher {
        match algorithm {
            HashAlgorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            HashAlgorithm::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    pub fn hex(self) -> String {
        match self {
            Hasher::Sha256(h) => hex::encode(h.finalize()),
            Hasher::Sha512(h) => hex::encode(h.finalize()),
        }
    }
}

/// The `objects` name of a digest's algorithm.
pub fn algorithm_of(d: &skiff_core::Digest) -> HashAlgorithm {
    match d.algorithm() {
        skiff_core::Algorithm::Sha256 => HashAlgorithm::Sha256,
        skiff_core::Algorithm::Sha512 => HashAlgorithm::Sha512,
    }
}
