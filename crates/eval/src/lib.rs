//! Evaluation of trained models.
//!
//! - [`perplexity`]: mean negative log-likelihood of a token stream with a sliding window.

pub mod perplexity;
