//! The data pipeline: from raw corpora (jsonl, jsonl.gz, jsonl.zst, parquet, plain text) to
//! deduplicated, filtered, tokenised and packed training shards.
//!
//! [`packed`] is the format the trainer reads; it has no dependency on the rest of the crate.

pub mod packed;
