//! Likelihood scoring for evaluation: the log-probability of given tokens at chosen positions
//! and whether each is the greedy choice, without keeping training activations and without
//! materialising logits for positions nobody asked about.
//!
//! Multiple-choice evaluation scores a few continuation tokens per sequence; the rest of the
//! sequence is context. Running the LM head over every position (as `forward_losses` does)
//! would, for a 32K vocabulary and a small model, cost more than the decoder layers, and the
//! training [`crate::Activations`] keep every layer's intermediates (megabytes per position for
//! a 1B model). Here the decoder runs through a KV cache (one layer's scratch at a time), and
//! the head runs over the wanted rows only, a bounded chunk at a time.

use crate::backend::Backend;
use crate::infer::KvCache;
use crate::llama::Llama;
use anyhow::{bail, Result};
use rayon::prelude::*;

/// A token to score: `row` indexes the `[batch, n]` tokens of the call (`b * n + t`), and the
/// token is the one predicted from that position, i.e. the next token of sequence `b`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowTarget {
    pub row: usize,
    pub token: u32,
}

/// Natural-log probability of a target token, and whether it is the arg-max of its row (ties
/// go to the lowest id, as `torch.argmax` does).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TokenScore {
    pub logprob: f64,
    pub greedy: bool,
}

/// Logit elements computed per head chunk (32 MiB of f32), whatever the number of rows asked.
const HEAD_CHUNK_ELEMS: usize = 8 << 20;

impl<B: Backend> Llama<B> {
    /// Runs `n` new tokens per sequence (`tokens` is `[batch, n]`) like
    /// [`Self::forward_cached`], then scores each target. Several targets may share a row.
    pub fn score_cached(
        &self,
        cache: &mut KvCache<B>,
        tokens: &[u32],
        n: usize,
        targets: &[RowTarget],
    ) -> Result<Vec<TokenScore>> {
        let rows = cache.batch * n;
        let vocab = self.cfg.vocab_size;
        for t in targets {
            if t.row >= rows {
                bail!("score_cached: target row {} beyond the {rows} rows", t.row);
            }
            if t.token as usize >= vocab {
                bail!(
                    "target token {} is outside the vocabulary of {vocab}",
                    t.token
                );
            }
        }
        let x = self.trunk_cached(cache, tokens, n)?;
        let mut wanted: Vec<usize> = targets.iter().map(|t| t.row).collect();
        wanted.sort_unstable();
        wanted.dedup();
        let mut out = vec![
            TokenScore {
                logprob: 0.0,
                greedy: false
            };
            targets.len()
        ];
        // Targets grouped by row, so each chunk finds its own quickly.
        let mut by_row: Vec<usize> = (0..targets.len()).collect();
        by_row.sort_by_key(|&i| targets[i].row);
        let chunk = (HEAD_CHUNK_ELEMS / vocab).max(1);
        let mut next = 0;
        for rows_chunk in wanted.chunks(chunk) {
            let logits = self.head_rows(&x, rows_chunk);
            let stats: Vec<(f64, usize)> = logits.par_chunks(vocab).map(row_stats).collect();
            while next < by_row.len() && targets[by_row[next]].row <= *rows_chunk.last().unwrap() {
                let i = by_row[next];
                let t = targets[i];
                let k = rows_chunk
                    .binary_search(&t.row)
                    .expect("row is in this chunk");
                let (lse, argmax) = stats[k];
                out[i] = TokenScore {
                    logprob: logits[k * vocab + t.token as usize] as f64 - lse,
                    greedy: argmax == t.token as usize,
                };
                next += 1;
            }
        }
        Ok(out)
    }

    /// Final norm and LM head over the listed rows of the residual stream `x`.
    fn head_rows(&self, x: &B::Buf, rows: &[usize]) -> Vec<f32> {
        let (be, c, lay) = (&self.backend, &self.cfg, &self.layout);
        let (d, r) = (c.dim, rows.len());
        let mut xs = be.zeros(r * d);
        for (i, &row) in rows.iter().enumerate() {
            be.copy(&mut xs, i * d, x, row * d, d);
        }
        let mut lnf = be.zeros(r * d);
        let mut rstd = be.zeros(r);
        let w = &self.weights;
        be.rmsnorm_fwd(
            &mut lnf,
            &mut rstd,
            &xs,
            &w[lay.final_norm()],
            d,
            c.norm_eps as f32,
        );
        let mut logits = be.zeros(r * c.vocab_size);
        be.matmul(
            &mut logits,
            &lnf,
            false,
            &w[lay.head()],
            true,
            r,
            c.vocab_size,
            d,
            false,
        );
        be.download(&logits)
    }

    /// A cache whose sequence `i` is a copy of sequence `slots[i]` of `src` (its first
    /// `src.len` positions), with room for `cap` positions: one prefilled context can then be
    /// continued several ways at once, one per slot.
    pub fn fork_cache(&self, src: &KvCache<B>, slots: &[usize], cap: usize) -> Result<KvCache<B>> {
        if let Some(&bad) = slots.iter().find(|&&s| s >= src.batch) {
            bail!(
                "fork_cache: slot {bad} beyond the source's {} sequences",
                src.batch
            );
        }
        let mut dst = self.new_cache(slots.len(), cap);
        if dst.cap < src.len {
            bail!(
                "fork_cache: capacity {} is below the {} cached positions",
                dst.cap,
                src.len
            );
        }
        let kvd = self.cfg.kv_dim();
        for l in 0..self.cfg.n_layers {
            for (i, &s) in slots.iter().enumerate() {
                let (to, from, len) = (i * dst.cap * kvd, s * src.cap * kvd, src.len * kvd);
                self.backend.copy(&mut dst.k[l], to, &src.k[l], from, len);
                self.backend.copy(&mut dst.v[l], to, &src.v[l], from, len);
            }
        }
        dst.len = src.len;
        Ok(dst)
    }
}

/// Log-sum-exp (in f64) and arg-max of one row of logits.
fn row_stats(row: &[f32]) -> (f64, usize) {
    let mut argmax = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[argmax] {
            argmax = i;
        }
    }
    let m = row[argmax] as f64;
    let sum: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
    (m + sum.ln(), argmax)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CpuBackend;
    use tinyllama_model::{presets, HostWeights};

    fn model() -> Llama<CpuBackend<f32>> {
        let cfg = presets::get("test-tiny").unwrap();
        Llama::new(CpuBackend::<f32>::new(), &HostWeights::init(&cfg, 7)).unwrap()
    }

    fn log_softmax(row: &[f32]) -> Vec<f64> {
        let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let s: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
        row.iter().map(|&v| v as f64 - m - s.ln()).collect()
    }

    #[test]
    fn scores_match_full_logits() {
        let m = model();
        let v = m.cfg.vocab_size;
        let toks: Vec<u32> = (0..2 * 9).map(|i| (i * 5 % 60) as u32).collect();
        let all = m.logits(&toks, 2, 9).unwrap();
        let targets = [
            RowTarget { row: 3, token: 7 },
            RowTarget { row: 3, token: 9 },
            RowTarget { row: 17, token: 1 },
            RowTarget { row: 0, token: 2 },
        ];
        let mut cache = m.new_cache(2, 9);
        let got = m.score_cached(&mut cache, &toks, 9, &targets).unwrap();
        for (t, g) in targets.iter().zip(&got) {
            let row = &all[t.row * v..(t.row + 1) * v];
            let want = log_softmax(row)[t.token as usize];
            assert!(
                (g.logprob - want).abs() < 1e-5,
                "{t:?}: {} vs {want}",
                g.logprob
            );
            let best = (0..v).fold(0, |b, i| if row[i] > row[b] { i } else { b });
            assert_eq!(g.greedy, best == t.token as usize);
        }
    }

    #[test]
    fn a_forked_cache_continues_like_the_whole_sequence() {
        let m = model();
        let v = m.cfg.vocab_size;
        let ctx: Vec<u32> = vec![3, 14, 15, 9, 2];
        let cont: [Vec<u32>; 2] = [vec![6, 5, 3], vec![5, 8, 9]];
        let mut c1 = m.new_cache(1, 5);
        m.forward_cached(&mut c1, &ctx, ctx.len(), false).unwrap();
        let mut forked = m.fork_cache(&c1, &[0, 0], 8).unwrap();
        let toks: Vec<u32> = cont.iter().flat_map(|c| c.clone()).collect();
        let targets: Vec<RowTarget> = (0..2)
            .flat_map(|b| (0..2).map(move |t| (b, t)))
            .map(|(b, t)| RowTarget {
                row: b * 3 + t,
                token: cont[b][t + 1],
            })
            .collect();
        let got = m.score_cached(&mut forked, &toks, 3, &targets).unwrap();
        for (b, c) in cont.iter().enumerate() {
            let whole: Vec<u32> = ctx.iter().chain(c).cloned().collect();
            let all = m.logits(&whole, 1, whole.len()).unwrap();
            for t in 0..2 {
                let row = &all[(ctx.len() + t) * v..(ctx.len() + t + 1) * v];
                let want = log_softmax(row)[c[t + 1] as usize];
                assert!((got[b * 2 + t].logprob - want).abs() < 1e-5);
            }
        }
        assert!(m.fork_cache(&c1, &[1], 8).is_err());
        assert!(m.fork_cache(&c1, &[0], 3).is_err());
    }

    #[test]
    fn bad_targets_are_refused() {
        let m = model();
        let mut cache = m.new_cache(1, 4);
        let bad_row = [RowTarget { row: 4, token: 1 }];
        assert!(m
            .score_cached(&mut cache, &[1, 2, 3, 4], 4, &bad_row)
            .is_err());
        let bad_tok = [RowTarget { row: 0, token: 64 }];
        assert!(m
            .score_cached(&mut cache, &[1, 2, 3, 4], 4, &bad_tok)
            .is_err());
    }
}
