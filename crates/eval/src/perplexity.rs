//! Perplexity of a token stream. Every token after the first is scored exactly once, with as
//! much preceding context as the window allows: the first window scores its whole length; each
//! later window advances by `stride` tokens and scores only the new ones, seeing `window −
//! stride` tokens of context before them (the method of transformers' perplexity guide).

use anyhow::{bail, Result};
use serde::Serialize;
use tinyllama_engine::{Activations, Backend, Llama};

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Perplexity {
    /// Tokens scored (all but the first).
    pub tokens: usize,
    /// Mean negative log-likelihood in nats.
    pub mean_nll: f64,
    pub perplexity: f64,
}

/// The (input start, first scored target index, last scored target index) of each window over
/// `n` tokens, targets being indices into the stream.
pub fn windows(n: usize, window: usize, stride: usize) -> Vec<(usize, usize, usize)> {
    let mut out = vec![];
    let mut next = 1;
    let mut first = true;
    while next < n {
        let step = if first { window } else { stride };
        let last = (next + step - 1).min(n - 1);
        let start = last.saturating_sub(window);
        out.push((start, next, last));
        next = last + 1;
        first = false;
    }
    out
}

/// Scores `tokens` (already including BOS if wanted) with windows of at most `window` tokens.
pub fn perplexity<B: Backend>(
    model: &Llama<B>,
    tokens: &[u32],
    window: usize,
    stride: usize,
    mut progress: impl FnMut(usize, usize),
) -> Result<Perplexity> {
    if tokens.len() < 2 {
        bail!("need at least two tokens to score (got {})", tokens.len());
    }
    let window = window.min(model.cfg.max_seq_len);
    if stride == 0 || stride > window {
        bail!("stride must be in 1..={window}");
    }
    let mut acts: Vec<Activations<B>> = vec![];
    let (mut sum, mut count) = (0f64, 0usize);
    let ws = windows(tokens.len(), window, stride);
    for (i, &(start, first, last)) in ws.iter().enumerate() {
        let len = last - start; // inputs tokens[start..last], targets tokens[start+1..=last]
        let inputs = &tokens[start..last];
        let targets: Vec<i32> = (start + 1..=last)
            .map(|j| if j >= first { tokens[j] as i32 } else { -100 })
            .collect();
        let idx = match acts.iter().position(|a| a.seq == len) {
            Some(p) => p,
            None => {
                acts.push(Activations::new(model, 1, len));
                acts.len() - 1
            }
        };
        let losses = model.forward_losses(&mut acts[idx], inputs, &targets)?;
        sum += losses.iter().map(|&x| x as f64).sum::<f64>();
        count += last + 1 - first;
        progress(i + 1, ws.len());
    }
    let mean = sum / count as f64;
    Ok(Perplexity {
        tokens: count,
        mean_nll: mean,
        perplexity: mean.exp(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_score_every_target_once_with_full_context_first() {
        for (n, w, s) in [
            (2, 4, 2),
            (10, 4, 2),
            (10, 4, 4),
            (11, 5, 3),
            (100, 16, 7),
            (5, 8, 4),
        ] {
            let ws = windows(n, w, s);
            let mut scored = vec![0; n];
            for &(start, first, last) in &ws {
                assert!(last - start <= w, "window too long: {start}..{last}");
                assert!(start < first && first <= last);
                for s in &mut scored[first..=last] {
                    *s += 1;
                }
            }
            assert_eq!(scored[0], 0);
            assert!(
                scored[1..].iter().all(|&c| c == 1),
                "{n} {w} {s}: {scored:?}"
            );
            assert_eq!(ws[0].0, 0);
        }
    }

    #[test]
    fn short_text_in_one_window_equals_direct_scoring() {
        use tinyllama_engine::CpuBackend;
        use tinyllama_model::{presets, HostWeights};
        let cfg = presets::get("test-tiny").unwrap();
        let model = Llama::new(CpuBackend::<f32>::new(), &HostWeights::init(&cfg, 1)).unwrap();
        let toks: Vec<u32> = (0..20).map(|i| (i * 7 % 64) as u32).collect();
        let p = perplexity(&model, &toks, 32, 16, |_, _| {}).unwrap();
        let mut a = Activations::new(&model, 1, 19);
        let targets: Vec<i32> = toks[1..].iter().map(|&t| t as i32).collect();
        let l = model.forward_losses(&mut a, &toks[..19], &targets).unwrap();
        let want = l.iter().map(|&x| x as f64).sum::<f64>() / 19.0;
        assert_eq!(p.tokens, 19);
        assert!((p.mean_nll - want).abs() < 1e-6);
        // A sliding window over the same text sees less context, so scores differ slightly.
        let q = perplexity(&model, &toks, 8, 4, |_, _| {}).unwrap();
        assert_eq!(q.tokens, 19);
    }
}
