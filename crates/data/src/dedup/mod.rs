//! Deduplication: exact (128-bit hash of normalised text) and near-duplicate (MinHash + LSH
//! banding + union-find), across all sources.
//!
//! # Memory model
//!
//! The signature stage streams: it holds one batch of documents per open file and writes
//! `40 + 8 × bands` bytes per document to its signature file. The merge stage holds:
//!
//! - exact: a hash set of 16-byte hashes (about 32 bytes per document with overhead) when
//!   that fits `memory_budget_mb`; otherwise `(hash, index)` records (24 bytes) are spilled
//!   into hash-prefix partitions on disk, each sorted in memory in turn;
//! - near: `(band hash, index)` records, 16 bytes per document per band. As many bands as fit
//!   the budget are processed per pass over the signature files; when a single band does not
//!   fit, each band is spilled into hash-prefix partitions sized to the budget;
//! - two bit sets (1 bit per document each) for the duplicates found;
//! - the union-find over documents in candidate pairs: roughly 32 bytes per document that has
//!   a near duplicate, outside the budget.
//!
//! Everything is keyed by the global document index (files in config order, records in file
//! order), so results do not depend on thread count or on how a run was sharded.

pub mod bitset;
pub mod cluster;
pub mod signature;
pub mod unionfind;

pub use bitset::BitSet;
pub use cluster::{find_exact_duplicates, find_near_duplicates, ClusterStats, SignatureSource};
pub use signature::{exact_hash, MinHasher};
