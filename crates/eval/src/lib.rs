//! Evaluation of trained models.
//!
//! - [`perplexity`]: mean negative log-likelihood of a token stream with a sliding window;
//!   [`shards`]: the same over packed token shards, in non-overlapping windows.
//! - [`tasks`]: zero-shot benchmarks (HellaSwag, OpenBookQA, WinoGrande, ARC, BoolQ, PIQA,
//!   LAMBADA) as lm-evaluation-harness builds their prompts; [`encode`] the tokenisation
//!   policy; [`scorer`] batched log-likelihoods with a shared context cache; [`metrics`] and
//!   [`run`] the harness's metrics; [`report`] the table.

pub mod encode;
pub mod metrics;
pub mod perplexity;
pub mod report;
pub mod run;
pub mod scorer;
pub mod shards;
pub mod tasks;
