//! SHA-256 whose state can be saved and resumed: an upload session on a
//! shared store (S3) may be continued by another process, which must not
//! read the bytes already uploaded again to finish the digest. The block
//! function is `sha2`'s (with its SHA-NI path); only the buffering of a
//! partial block and the final padding are here.

use serde::{Deserialize, Serialize};
use sha2::digest::generic_array::GenericArray;

/// FIPS 180-4's initial hash value for SHA-256.
const H0: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sha256State {
    h: [u32; 8],
    /// Bytes hashed so far, the partial block included.
    len: u64,
    /// The bytes of the last, partial block (fewer than 64), as hex.
    tail: String,
}

impl Default for Sha256State {
    fn default() -> Self {
        Sha256State {
            h: H0,
            len: 0,
            tail: String::new(),
        }
    }
}

impl Sha256State {
    pub fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        let mut tail = hex::decode(&self.tail).unwrap_or_default();
        if !tail.is_empty() {
            let take = (64 - tail.len()).min(data.len());
            tail.extend_from_slice(&data[..take]);
            data = &data[take..];
            if tail.len() < 64 {
                self.tail = hex::encode(tail);
                return;
            }
            sha2::compress256(&mut self.h, &[*GenericArray::from_slice(&tail)]);
        }
        let whole = data.len() / 64 * 64;
        let blocks: Vec<GenericArray<u8, _>> = data[..whole]
            .chunks_exact(64)
            .map(|b| *GenericArray::from_slice(b))
            .collect();
        sha2::compress256(&mut self.h, &blocks);
        self.tail = hex::encode(&data[whole..]);
    }

    /// The hex digest of everything hashed so far; the state is unchanged.
    pub fn hex(&self) -> String {
        let mut last = hex::decode(&self.tail).unwrap_or_default();
        last.push(0x80);
        while last.len() % 64 != 56 {
            last.push(0);
        }
        last.extend_from_slice(&(self.len.wrapping_mul(8)).to_be_bytes());
        let mut h = self.h;
        let blocks: Vec<GenericArray<u8, _>> = last
            .chunks_exact(64)
            .map(|b| *GenericArray::from_slice(b))
            .collect();
        sha2::compress256(&mut h, &blocks);
        h.iter().map(|w| format!("{w:08x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest as _, Sha256};

    #[test]
    fn matches_sha2_for_any_split_and_survives_a_round_trip() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        for len in [0, 1, 55, 56, 63, 64, 65, 119, 120, 128, 1000, 5000] {
            let want = hex::encode(Sha256::digest(&data[..len]));
            for split in [0, 1, 3, 63, 64, 65, len / 2, len] {
                let split = split.min(len);
                let mut s = Sha256State::default();
                s.update(&data[..split]);
                // Saved and restored between the two pieces.
                let json = serde_json::to_string(&s).unwrap();
                let mut s: Sha256State = serde_json::from_str(&json).unwrap();
                s.update(&data[split..len]);
                assert_eq!(s.hex(), want, "len {len}, split {split}");
                assert_eq!(s.len, len as u64);
            }
        }
    }
}
