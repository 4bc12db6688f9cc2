//! Inference with a KV cache: a prompt is run once (prefill), then each new token costs one
//! pass over one position, attending to the cached keys and values.

use crate::backend::{AttnShape, Backend};
use crate::llama::Llama;
use crate::lora::LoraTarget;
use anyhow::{bail, Result};

/// Keys and values of every layer for `batch` sequences of up to `cap` positions
/// (`[batch, cap, kv_dim]` per layer).
pub struct KvCache<B: Backend> {
    pub(crate) k: Vec<B::Buf>,
    pub(crate) v: Vec<B::Buf>,
    pub batch: usize,
    pub cap: usize,
    /// Positions filled so far (the same for every sequence of the batch).
    pub len: usize,
}

impl<B: Backend> KvCache<B> {
    pub fn reset(&mut self) {
        self.len = 0;
    }
    /// Forgets everything after position `len` (e.g. rejected speculative tokens).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }
}

impl<B: Backend> Llama<B> {
    pub fn new_cache(&self, batch: usize, cap: usize) -> KvCache<B> {
        let cap = cap.min(self.cfg.max_seq_len);
        let n = batch * cap * self.cfg.kv_dim();
        KvCache {
            k: (0..self.cfg.n_layers)
                .map(|_| self.backend.zeros(n))
                .collect(),
            v: (0..self.cfg.n_layers)
                .map(|_| self.backend.zeros(n))
                .collect(),
            batch,
            cap,
            len: 0,
        }
    }

    /// Runs `n` new tokens per sequence (`tokens` is `[batch, n]`) at positions
    /// `cache.len..cache.len + n`, appends their keys and values, and returns logits
    /// (`[batch, vocab]` for the last new position, or `[batch, n, vocab]` with `all_logits`).
    pub fn forward_cached(
        &self,
        cache: &mut KvCache<B>,
        tokens: &[u32],
        n: usize,
        all_logits: bool,
    ) -> Result<Vec<f32>> {
        let x = self.trunk_cached(cache, tokens, n)?;
        let (be, c, lay) = (&self.backend, &self.cfg, &self.layout);
        let (batch, d, rows) = (cache.batch, c.dim, cache.batch * n);
        let eps = c.norm_eps as f32;
        let z = |len: usize| be.zeros(len);
        let w = &self.weights;
        // Only the rows whose logits are wanted go through the final norm and the head.
        let (xs, out_rows) = if all_logits || n == 1 {
            (x, rows)
        } else {
            let mut last = z(batch * d);
            for b in 0..batch {
                be.copy(&mut last, b * d, &x, (b * n + n - 1) * d, d);
            }
            (last, batch)
        };
        let mut lnf = z(out_rows * d);
        let mut rstdf = z(out_rows);
        be.rmsnorm_fwd(&mut lnf, &mut rstdf, &xs, &w[lay.final_norm()], d, eps);
        let mut logits = z(out_rows * c.vocab_size);
        be.matmul(
            &mut logits,
            &lnf,
            false,
            &w[lay.head()],
            true,
            out_rows,
            c.vocab_size,
            d,
            false,
        );
        Ok(be.download(&logits))
    }

    /// The decoder layers of [`Self::forward_cached`]: runs `n` new tokens per sequence,
    /// appends their keys and values to the cache and returns the residual stream after the
    /// last layer (`[batch, n, dim]`, before the final norm), leaving the head to the caller.
    pub(crate) fn trunk_cached(
        &self,
        cache: &mut KvCache<B>,
        tokens: &[u32],
        n: usize,
    ) -> Result<B::Buf> {
        let (be, c, lay) = (&self.backend, &self.cfg, &self.layout);
        let batch = cache.batch;
        if tokens.len() != batch * n || n == 0 {
            bail!(
                "forward_cached: expected {batch} × {n} tokens, got {}",
                tokens.len()
            );
        }
        if cache.len + n > cache.cap {
            bail!(
                "the sequence would reach {} tokens, beyond the cache of {} (the model's context is {})",
                cache.len + n,
                cache.cap,
                c.max_seq_len
            );
        }
        if let Some(bad) = tokens.iter().find(|&&t| t as usize >= c.vocab_size) {
            bail!(
                "token id {bad} is outside the vocabulary of {}",
                c.vocab_size
            );
        }
        let w = &self.weights;
        let rows = batch * n;
        let (d, qd, kvd, f, hd) = (
            c.dim,
            c.n_heads * c.head_dim(),
            c.kv_dim(),
            c.ffn_dim,
            c.head_dim(),
        );
        let eps = c.norm_eps as f32;
        let z = |len: usize| be.zeros(len);
        let (mut x, mut ln, mut rstd) = (z(rows * d), z(rows * d), z(rows));
        let (mut q, mut k, mut v, mut att) =
            (z(rows * qd), z(rows * kvd), z(rows * kvd), z(rows * qd));
        let mut lse = z(batch * c.n_heads * n);
        let (mut g, mut u, mut h) = (z(rows * f), z(rows * f), z(rows * f));
        let ids = be.upload_ids(&tokens.iter().map(|&t| t as i32).collect::<Vec<_>>());
        be.embedding_fwd(&mut x, &w[lay.embed()], &ids, d);
        let shape = AttnShape {
            batch,
            tq: n,
            tk: cache.len + n,
            kv_stride: cache.cap,
            n_heads: c.n_heads,
            n_kv_heads: c.n_kv_heads,
            head_dim: hd,
        };
        // LoRA adapters (no dropout): `t` is their [rows, r] intermediate.
        let mut lora_t = self.lora().map(|lo| z(rows * lo.config.rank));
        let mut adapt = |l: usize, target: LoraTarget, y: &mut B::Buf, x: &B::Buf| {
            if let (Some(t), Some((_, a, b, sh))) =
                (lora_t.as_mut(), self.adapter(l, target, rows, false))
            {
                crate::lora::forward(be, y, t, x, a, b, None, sh);
            }
        };
        for l in 0..c.n_layers {
            let p = |t| &w[lay.layer(l, t)];
            be.rmsnorm_fwd(&mut ln, &mut rstd, &x, p(0), d, eps);
            be.matmul(&mut q, &ln, false, p(1), true, rows, qd, d, false);
            be.matmul(&mut k, &ln, false, p(2), true, rows, kvd, d, false);
            be.matmul(&mut v, &ln, false, p(3), true, rows, kvd, d, false);
            adapt(l, LoraTarget::Q, &mut q, &ln);
            adapt(l, LoraTarget::K, &mut k, &ln);
            adapt(l, LoraTarget::V, &mut v, &ln);
            be.rope(&mut q, &self.rope, c.n_heads, hd, n, cache.len, false);
            be.rope(&mut k, &self.rope, c.n_kv_heads, hd, n, cache.len, false);
            for b in 0..batch {
                let dst = (b * cache.cap + cache.len) * kvd;
                be.copy(&mut cache.k[l], dst, &k, b * n * kvd, n * kvd);
                be.copy(&mut cache.v[l], dst, &v, b * n * kvd, n * kvd);
            }
            be.attention_fwd(&mut att, &mut lse, &q, &cache.k[l], &cache.v[l], shape);
            be.matmul(&mut x, &att, false, p(4), true, rows, d, qd, true);
            adapt(l, LoraTarget::O, &mut x, &att);
            be.rmsnorm_fwd(&mut ln, &mut rstd, &x, p(5), d, eps);
            be.matmul(&mut g, &ln, false, p(6), true, rows, f, d, false);
            be.matmul(&mut u, &ln, false, p(7), true, rows, f, d, false);
            adapt(l, LoraTarget::Gate, &mut g, &ln);
            adapt(l, LoraTarget::Up, &mut u, &ln);
            be.swiglu_fwd(&mut h, &g, &u);
            be.matmul(&mut x, &h, false, p(8), true, rows, d, f, true);
            adapt(l, LoraTarget::Down, &mut x, &h);
        }
        cache.len += n;
        Ok(x)
    }

    /// Logits for every position of `batch` sequences of `seq` tokens (no cache kept).
    pub fn logits(&self, tokens: &[u32], batch: usize, seq: usize) -> Result<Vec<f32>> {
        let mut cache = self.new_cache(batch, seq);
        if cache.cap < seq {
            bail!(
                "sequence of {seq} tokens exceeds the model's context of {}",
                self.cfg.max_seq_len
            );
        }
        self.forward_cached(&mut cache, tokens, seq, true)
    }
}
