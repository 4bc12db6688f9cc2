//! Autoregressive generation: prefill the prompt, then sample one token at a time until EOS,
//! the token budget or the context runs out.

use crate::backend::Backend;
use crate::llama::Llama;
use crate::sampling::{sample, SamplingParams};
use anyhow::{bail, Result};
use tinyllama_model::rng::Rng;

#[derive(Clone, Debug)]
pub struct GenerateParams {
    pub max_new_tokens: usize,
    pub sampling: SamplingParams,
    pub seed: u64,
    /// Stop when this token is produced (it is not returned).
    pub eos: Option<u32>,
}

/// Why generation stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    Eos,
    MaxTokens,
    Context,
    /// The callback asked to stop.
    Callback,
}

/// Generates after `prompt`; `on_token` sees each new token as it is produced and may return
/// `false` to stop. Returns the new tokens and the reason for stopping.
pub fn generate<B: Backend>(
    model: &Llama<B>,
    prompt: &[u32],
    p: &GenerateParams,
    mut on_token: impl FnMut(u32) -> bool,
) -> Result<(Vec<u32>, StopReason)> {
    if prompt.is_empty() {
        bail!("the prompt is empty; generation needs at least one token (e.g. BOS)");
    }
    let ctx = model.cfg.max_seq_len;
    if prompt.len() >= ctx {
        bail!(
            "the prompt has {} tokens, leaving no room in the model's context of {ctx}",
            prompt.len()
        );
    }
    let mut cache = model.new_cache(1, (prompt.len() + p.max_new_tokens).min(ctx));
    let mut rng = Rng::new(p.seed);
    let mut history = prompt.to_vec();
    let mut logits = model.forward_cached(&mut cache, prompt, prompt.len(), false)?;
    let mut out = Vec::new();
    loop {
        if out.len() >= p.max_new_tokens {
            return Ok((out, StopReason::MaxTokens));
        }
        let t = sample(&logits, &p.sampling, &history, &mut rng);
        if Some(t) == p.eos {
            return Ok((out, StopReason::Eos));
        }
        out.push(t);
        history.push(t);
        if !on_token(t) {
            return Ok((out, StopReason::Callback));
        }
        if cache.len >= cache.cap {
            return Ok((
                out,
                if cache.cap >= ctx {
                    StopReason::Context
                } else {
                    StopReason::MaxTokens
                },
            ));
        }
        logits = model.forward_cached(&mut cache, &[t], 1, false)?;
    }
}
