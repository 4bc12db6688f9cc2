//! Decode speed, measured the way llama.cpp's `llama-bench` does so the two can be put side by
//! side: prompt processing is one forward pass over `prompt` tokens into an empty cache
//! (`pp512`), generation is `gen` single-token passes from an empty cache (`tg128`); token ids
//! are random, no sampling. Each figure is the median of `reps` runs after a warm-up.

use crate::model::{DecodeModel, SeqInput};
use anyhow::Result;
use serde::Serialize;
use std::time::Instant;
use tinyllama_model::rng::Rng;

#[derive(Clone, Debug, Serialize)]
pub struct DecodeBench {
    pub format: String,
    pub weight_mib: f64,
    pub prompt_tokens: usize,
    pub gen_tokens: usize,
    /// Prompt processing, tokens per second.
    pub pp_tok_s: f64,
    /// Generation, tokens per second.
    pub tg_tok_s: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

pub fn bench_decode(
    model: &DecodeModel,
    prompt: usize,
    gen: usize,
    reps: usize,
    seed: u64,
) -> Result<DecodeBench> {
    let v = model.cfg.vocab_size as u64;
    let mut rng = Rng::new(seed);
    let mut toks = |n: usize| -> Vec<u32> { (0..n).map(|_| rng.below(v) as u32).collect() };
    let reps = reps.max(1);
    let mut pp = Vec::with_capacity(reps);
    let mut tg = Vec::with_capacity(reps);
    // The first round warms caches and page-faults the weights in; it is not counted.
    for r in 0..=reps {
        if prompt > 0 {
            let t = toks(prompt);
            let mut st = model.new_state();
            let t0 = Instant::now();
            model.forward(&mut [SeqInput {
                state: &mut st,
                tokens: &t,
                logits: 1,
            }])?;
            if r > 0 {
                pp.push(prompt as f64 / t0.elapsed().as_secs_f64());
            }
        }
        if gen > 0 {
            let t = toks(gen);
            let mut st = model.new_state();
            let t0 = Instant::now();
            for tok in &t {
                model.forward(&mut [SeqInput {
                    state: &mut st,
                    tokens: std::slice::from_ref(tok),
                    logits: 1,
                }])?;
            }
            if r > 0 {
                tg.push(gen as f64 / t0.elapsed().as_secs_f64());
            }
        }
    }
    Ok(DecodeBench {
        format: model.format.name().into(),
        weight_mib: model.weight_bytes() as f64 / (1 << 20) as f64,
        prompt_tokens: prompt,
        gen_tokens: gen,
        pp_tok_s: if prompt > 0 { median(pp) } else { 0.0 },
        tg_tok_s: if gen > 0 { median(tg) } else { 0.0 },
    })
}
