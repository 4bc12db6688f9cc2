//! The data pipeline: from raw corpora (jsonl, jsonl.gz, jsonl.zst, parquet, plain text) to
//! filtered, deduplicated, tokenised and packed training shards.
//!
//! - [`packed`]: the LITPKDS shard format the trainer reads (no dependency on the rest).
//! - [`pipeline::run`]: runs a [`config::PipelineConfig`] end to end and returns a
//!   [`report::Report`]; [`pipeline::run_stage`] runs one stage of one shard (Slurm arrays).
//! - [`ingest`], [`filters`], [`dedup`]: the stages' building blocks.
//! - [`tokenizer_train`]: Llama-style BPE training.
//!
//! `docs/data.md` describes the commands, the configuration and the on-disk layout.

pub mod bench;
pub mod benchcorpus;
pub mod config;
pub mod dedup;
pub mod document;
pub mod fastbpe;
pub mod fasttok;
pub mod filters;
pub mod hashing;
pub mod ingest;
pub mod inspect;
pub mod normalize;
pub mod packed;
pub mod pipeline;
pub mod progress;
pub mod report;
pub mod stats;
pub mod tokenizer_train;

pub use config::PipelineConfig;
pub use document::Document;
pub use pipeline::{run, run_stage, run_with, RunOptions, Stage};
pub use report::Report;
