//! Pre-training: everything between packed shards and checkpoints.
//!
//! - [`config`]: the run configuration (TOML) and its validation.
//! - [`schedule`]: learning-rate schedules.
//! - [`optimizer`]: AdamW state, global-norm clipping, weight-decay groups.
//! - [`loader`]: the mixture data loader over packed shards, with resumable state.
//! - [`checkpoint`]: atomic checkpoints, retention, resume.
//! - [`metrics`]: `metrics.jsonl`, MFU, peak FLOP/s.
//! - [`plot`]: the loss / learning-rate picture.
//! - [`data_parallel`]: gradient exchange over ranks and the (ZeRO-1 sharded) optimizer step.
//! - [`trainer`]: the training loop.
//! - [`export`]: checkpoint → Hugging Face directory.
//! - [`bench`]: training-step throughput.

pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod data_parallel;
pub mod device_bench;
pub mod export;
pub mod loader;
pub mod metrics;
pub mod optimizer;
pub mod plot;
pub mod schedule;
#[doc(hidden)]
pub mod testutil;
pub mod trainer;
