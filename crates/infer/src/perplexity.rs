//! Perplexity with the decode runtime, so quantised weights can be compared with f32 on the
//! same text: windows of at most the context, each scoring its tokens after the first.

use crate::model::{DecodeModel, SeqInput};
use anyhow::{bail, Result};

#[derive(Clone, Debug, serde::Serialize)]
pub struct Perplexity {
    pub tokens: usize,
    pub mean_nll: f64,
    pub perplexity: f64,
}

/// Scores `tokens` (BOS included if wanted) in consecutive windows of `window` tokens.
pub fn perplexity(model: &DecodeModel, tokens: &[u32], window: usize) -> Result<Perplexity> {
    let window = window.min(model.cfg.max_seq_len);
    if tokens.len() < 2 || window < 2 {
        bail!("need at least two tokens and a window of at least two to score");
    }
    let windows: Vec<(usize, usize, usize)> = (0..tokens.len() - 1)
        .step_by(window - 1)
        .map(|s| (s, s + 1, (s + window - 1).min(tokens.len() - 1)))
        .collect();
    perplexity_windows(model, tokens, &windows)
}

/// Scores `tokens` over explicit windows `(start, first, last)`: inputs
/// `tokens[start..last]`, targets `tokens[first..=last]` (the sliding-window layout of the eval
/// crate, so both report the same numbers for f32 weights).
pub fn perplexity_windows(
    model: &DecodeModel,
    tokens: &[u32],
    windows: &[(usize, usize, usize)],
) -> Result<Perplexity> {
    let v = model.cfg.vocab_size;
    let (mut sum, mut n) = (0f64, 0usize);
    for &(start, first, last) in windows {
        if last <= start || first <= start || last >= tokens.len() {
            bail!("bad perplexity window ({start}, {first}, {last})");
        }
        let mut st = model.new_state();
        let inputs = &tokens[start..last];
        let logits = model
            .forward(&mut [SeqInput {
                state: &mut st,
                tokens: inputs,
                logits: inputs.len(),
            }])?
            .remove(0);
        for (i, &target) in tokens[start + 1..=last].iter().enumerate() {
            if start + 1 + i < first {
                continue;
            }
            let row = &logits[i * v..(i + 1) * v];
            let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
            let lse = m + row.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln();
            sum += lse - row[target as usize] as f64;
            n += 1;
        }
    }
    if n == 0 {
        bail!("no tokens to score");
    }
    let mean_nll = sum / n as f64;
    Ok(Perplexity {
        tokens: n,
        mean_nll,
        perplexity: mean_nll.exp(),
    })
}
