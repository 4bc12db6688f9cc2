//! Training: everything between data (packed shards, or fine-tuning rows) and checkpoints.
//!
//! - [`config`]: the run configuration (TOML) and its validation.
//! - [`schedule`]: learning-rate schedules.
//! - [`optimizer`]: AdamW state, global-norm clipping, weight-decay groups.
//! - [`loader`]: the mixture data loader over packed shards, with resumable state.
//! - [`checkpoint`]: atomic checkpoints, retention, resume.
//! - [`metrics`]: `metrics.jsonl`, MFU, peak FLOP/s.
//! - [`plot`]: the loss / learning-rate picture.
//! - [`data_parallel`]: gradient exchange over ranks and the (ZeRO-1 sharded) optimizer step.
//! - [`rows`]: in-memory rows and preference pairs (fine-tuning data) and their loader.
//! - [`dpo`]: the DPO loss, its gradient and the cached reference log-probabilities.
//! - [`trainer`]: the training loop (pre-training and fine-tuning).
//! - [`export`]: checkpoint → Hugging Face directory.
//! - [`bench`]: training-step throughput.

pub mod adapter;
pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod data_parallel;
pub mod device_bench;
pub mod dpo;
pub mod export;
pub mod loader;
pub mod metrics;
pub mod optimizer;
pub mod plot;
pub mod rows;
pub mod schedule;
#[doc(hidden)]
pub mod testutil;
pub mod trainer;
