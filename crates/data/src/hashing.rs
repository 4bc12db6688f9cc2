//! Small hashing helpers shared by the filters and deduplication. Keys that are already
//! 64-bit hashes go into maps through [`IdBuildHasher`] instead of being hashed again.

use std::hash::{BuildHasherDefault, Hasher};

/// A finaliser that spreads every input bit over the output (the MurmurHash3 / SplitMix64
/// mixer).
#[inline]
pub fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// Hash of a byte string (a word, a shingle).
#[inline]
pub fn hash_bytes(b: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(b)
}

/// Order-dependent combination of word hashes (an n-gram's identity).
#[inline]
pub fn hash_seq(hs: &[u64]) -> u64 {
    let mut h = 0x9e37_79b9_7f4a_7c15u64;
    for &x in hs {
        h = (h.rotate_left(23) ^ x).wrapping_mul(0x2127_599b_f432_5c37);
    }
    mix64(h)
}

/// Passes a u64 key through; for maps keyed by values that are already well-mixed hashes.
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only reached for non-u64 keys; fold them in so the hasher stays correct.
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64 ^ (n >> 64) as u64;
    }
}

pub type IdBuildHasher = BuildHasherDefault<IdHasher>;
pub type U64Map<V> = std::collections::HashMap<u64, V, IdBuildHasher>;
pub type U64Set = std::collections::HashSet<u64, IdBuildHasher>;

/// Hasher for small integer keys (document indices): mixes them first.
#[derive(Default, Clone, Copy)]
pub struct MixHasher(u64);

impl Hasher for MixHasher {
    fn finish(&self) -> u64 {
        mix64(self.0)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

pub type MixBuildHasher = BuildHasherDefault<MixHasher>;

/// A fast non-cryptographic hasher for in-process maps with short keys (words, id pairs),
/// in the style of rustc's FxHasher: multiply-add per 8 bytes. Not for untrusted adversarial
/// keys where collisions could be forced, which is acceptable for a batch tool.
#[derive(Default, Clone, Copy)]
pub struct FxHasher(u64);

const FX_K: u64 = 0xf135_7aea_2e62_a9c5;

impl FxHasher {
    #[inline]
    fn add(&mut self, x: u64) {
        self.0 = self.0.wrapping_add(x).wrapping_mul(FX_K);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().unwrap()));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(b) ^ ((rest.len() as u64) << 59));
        }
    }
    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.add(n as u64);
    }
    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.add(n as u64);
    }
    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }
    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        // The multiply leaves the low bits weak; hashbrown reads the top bits too, so rotate.
        self.0.rotate_left(26)
    }
}

pub type FxBuildHasher = BuildHasherDefault<FxHasher>;
pub type FxMap<K, V> = std::collections::HashMap<K, V, FxBuildHasher>;
pub type FxSet<K> = std::collections::HashSet<K, FxBuildHasher>;
