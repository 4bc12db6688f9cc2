//! Perplexity over packed LITPKDS token shards, the held-out form of the training data.
//!
//! The stream (all shards concatenated in order, document separators included, exactly as the
//! trainer reads it) is cut into non-overlapping windows of `window + 1` tokens that share their
//! boundary token: window `i` holds tokens `i·window ..= (i+1)·window`, its first `window` are
//! the inputs and its last `window` the targets. Every token but the first is predicted exactly
//! once, seeing the earlier tokens of its window only (0 to `window − 1` of them), which is
//! how training saw it — not the full-context figure a sliding window gives.

use crate::perplexity::Perplexity;
use anyhow::{bail, Context, Result};
use tinyllama_data::packed::PackedReader;
use tinyllama_engine::{Backend, Llama, RowTarget};

/// Scores up to `max_tokens` targets (all by default), `batch` windows per forward pass.
/// `progress(done, total)` counts windows.
pub fn shard_perplexity<B: Backend>(
    model: &Llama<B>,
    reader: &PackedReader,
    window: usize,
    max_tokens: Option<u64>,
    batch: usize,
    mut progress: impl FnMut(usize, usize),
) -> Result<Perplexity> {
    let window = window.min(model.cfg.max_seq_len);
    if window == 0 {
        bail!("the window must hold at least one token");
    }
    let available = reader.len().saturating_sub(1);
    let scored = max_tokens.map_or(available, |m| m.min(available));
    if scored == 0 {
        bail!(
            "the shards hold {} tokens; perplexity needs at least two",
            reader.len()
        );
    }
    // (start, number of targets) per window.
    let w = window as u64;
    let windows: Vec<(u64, usize)> = (0..scored.div_ceil(w))
        .map(|i| (i * w, (scored - i * w).min(w) as usize))
        .collect();
    let (mut sum, mut count) = (0f64, 0usize);
    let mut done = 0;
    // Full windows batch together; a short last one runs alone.
    let mut i = 0;
    while i < windows.len() {
        let n = windows[i].1;
        let group: Vec<(u64, usize)> = windows[i..]
            .iter()
            .take(batch.max(1))
            .take_while(|w| w.1 == n)
            .copied()
            .collect();
        let mut tokens = Vec::with_capacity(group.len() * n);
        let mut targets = Vec::with_capacity(group.len() * n);
        for (b, &(start, len)) in group.iter().enumerate() {
            let t = reader.read(start, len + 1)?;
            tokens.extend_from_slice(&t[..len]);
            targets.extend(t[1..].iter().enumerate().map(|(j, &tok)| RowTarget {
                row: b * n + j,
                token: tok,
            }));
        }
        let mut cache = model.new_cache(group.len(), n);
        let scores = model
            .score_cached(&mut cache, &tokens, n, &targets)
            .with_context(|| {
                format!(
                    "scoring tokens {}..{} (were the shards made with this model's tokenizer?)",
                    group[0].0,
                    group[0].0 + (group.len() * n) as u64
                )
            })?;
        sum -= scores.iter().map(|s| s.logprob).sum::<f64>();
        count += scores.len();
        i += group.len();
        done += group.len();
        progress(done, windows.len());
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
    use tinyllama_data::packed::PackedWriter;
    use tinyllama_engine::{Activations, CpuBackend};
    use tinyllama_model::{presets, HostWeights};

    #[test]
    fn windows_match_direct_losses_and_respect_max_tokens() {
        let cfg = presets::get("test-tiny").unwrap();
        let model = Llama::new(CpuBackend::<f32>::new(), &HostWeights::init(&cfg, 5)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let toks: Vec<u32> = (0..45).map(|i| (i * 13 % 61) as u32).collect();
        let mut w = PackedWriter::new(dir.path(), "val", 64, 20).unwrap();
        w.push(&toks).unwrap();
        w.finish().unwrap();
        let reader = PackedReader::open_prefix(dir.path(), "val").unwrap();
        let p = shard_perplexity(&model, &reader, 8, None, 3, |_, _| {}).unwrap();
        assert_eq!(p.tokens, 44);
        let mut want = 0f64;
        for start in (0..44).step_by(8) {
            let len = 8.min(44 - start);
            let mut a = Activations::new(&model, 1, len);
            let targets: Vec<i32> = toks[start + 1..=start + len]
                .iter()
                .map(|&t| t as i32)
                .collect();
            let l = model
                .forward_losses(&mut a, &toks[start..start + len], &targets)
                .unwrap();
            want += l.iter().map(|&x| x as f64).sum::<f64>();
        }
        assert!((p.mean_nll - want / 44.0).abs() < 1e-5);
        let q = shard_perplexity(&model, &reader, 8, Some(10), 3, |_, _| {}).unwrap();
        assert_eq!(q.tokens, 10);
    }
}
