//! The decode-time model: a Llama whose projections live in any [`WeightFormat`], run over a
//! batch of independent sequences that each have their own KV cache and position. One forward
//! pass may mix a new prompt (many tokens), running sequences (one token each) and speculative
//! verification (a few tokens); every weight matrix is read once for all of them.

use crate::kernels::{self, Act, OutPtr, WView};
use crate::linear::Linear;
use crate::ops::{rmsnorm_row, rope_row, swiglu_row, weighted_rows};
use crate::quant::WeightFormat;
use crate::simd::Isa;
use anyhow::{bail, Result};
use rayon::prelude::*;
use std::path::Path;
use tinyllama_model::{hf, HostWeights, ModelConfig};

struct Layer {
    attn_norm: Vec<f32>,
    /// q, k and v projections stacked: `[qd + 2·kvd, dim]`.
    wqkv: Linear,
    wo: Linear,
    mlp_norm: Vec<f32>,
    /// Gate and up projections stacked: `[2·ffn, dim]`.
    wgu: Linear,
    wd: Linear,
}

pub struct DecodeModel {
    pub cfg: ModelConfig,
    pub format: WeightFormat,
    embed: Vec<f32>,
    layers: Vec<Layer>,
    final_norm: Vec<f32>,
    head: Linear,
    rope: Vec<f32>,
    /// Matrices left in f32 because their width is not a multiple of the block size.
    pub kept_f32: usize,
}

/// Keys and values of one sequence, every layer, growing as it goes.
#[derive(Clone, Debug)]
pub struct KvState {
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    len: usize,
    kv_dim: usize,
}

impl KvState {
    /// Positions cached.
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Forgets positions from `len` on (rejected speculative tokens).
    pub fn truncate(&mut self, len: usize) {
        if len < self.len {
            for (k, v) in self.k.iter_mut().zip(&mut self.v) {
                k.truncate(len * self.kv_dim);
                v.truncate(len * self.kv_dim);
            }
            self.len = len;
        }
    }
}

/// One sequence's part of a forward pass.
pub struct SeqInput<'a> {
    pub state: &'a mut KvState,
    /// New tokens, at positions `state.len()..`.
    pub tokens: &'a [u32],
    /// Logits are returned for this many of the last new positions (0 = none).
    pub logits: usize,
}

impl DecodeModel {
    /// Builds the model from host weights, converting every projection (and the LM head) to
    /// `format`. Norms stay f32; embedding rows stay f32 in memory with the values of `format`.
    pub fn from_host(mut host: HostWeights, format: WeightFormat) -> Result<Self> {
        let cfg = host.config.clone();
        cfg.validate()?;
        let specs = tinyllama_model::params::param_specs(&cfg);
        if specs.len() != host.tensors.len() {
            bail!(
                "weights do not match the configuration ({} tensors, expected {})",
                host.tensors.len(),
                specs.len()
            );
        }
        for (s, t) in specs.iter().zip(&host.tensors) {
            if s.numel() != t.len() {
                bail!(
                    "tensor `{}` has {} elements, expected {:?}",
                    s.name,
                    t.len(),
                    s.shape
                );
            }
        }
        let (d, hd) = (cfg.dim, cfg.head_dim());
        let (qd, kvd, f) = (cfg.n_heads * hd, cfg.kv_dim(), cfg.ffn_dim);
        let mut take = |i: usize| std::mem::take(&mut host.tensors[i]);
        // The embedding rows are looked up, not multiplied, so they stay f32 in memory, but
        // with the values of the chosen format: a GGUF export stores `token_embd` in that
        // format and llama.cpp reads those rows, so both decode from the same numbers (f32
        // rows here made quantised runs part from llama.cpp's after a dozen tokens).
        let embed = crate::quant::into_f32(crate::quant::convert(
            take(0),
            cfg.vocab_size,
            cfg.dim,
            format,
        ));
        let mut kept_f32 = 0;
        let mut lin = |w: Vec<f32>, rows: usize, cols: usize| {
            let l = Linear::new(w, rows, cols, format);
            if l.format() != format {
                kept_f32 += 1;
            }
            l
        };
        let mut layers = Vec::with_capacity(cfg.n_layers);
        for l in 0..cfg.n_layers {
            let base = 1 + 9 * l;
            let attn_norm = take(base);
            let mut qkv = take(base + 1);
            qkv.extend(take(base + 2));
            qkv.extend(take(base + 3));
            let wo = take(base + 4);
            let mlp_norm = take(base + 5);
            let mut gu = take(base + 6);
            gu.extend(take(base + 7));
            let wd = take(base + 8);
            layers.push(Layer {
                attn_norm,
                wqkv: lin(qkv, qd + 2 * kvd, d),
                wo: lin(wo, d, qd),
                mlp_norm,
                wgu: lin(gu, 2 * f, d),
                wd: lin(wd, d, f),
            });
        }
        let final_norm = take(1 + 9 * cfg.n_layers);
        let head_w = if cfg.tie_embeddings {
            embed.clone()
        } else {
            take(2 + 9 * cfg.n_layers)
        };
        let head = lin(head_w, cfg.vocab_size, d);
        let rope = tinyllama_engine::cpu::rope::table(hd, cfg.max_seq_len, cfg.rope_theta);
        Ok(DecodeModel {
            cfg,
            format,
            embed,
            layers,
            final_norm,
            head,
            rope,
            kept_f32,
        })
    }

    /// Loads a Hugging Face model directory.
    pub fn load(dir: &Path, format: WeightFormat) -> Result<Self> {
        Self::from_host(hf::load_dir(dir)?, format)
    }

    pub fn new_state(&self) -> KvState {
        KvState {
            k: vec![vec![]; self.cfg.n_layers],
            v: vec![vec![]; self.cfg.n_layers],
            len: 0,
            kv_dim: self.cfg.kv_dim(),
        }
    }

    /// Bytes of weights as stored (f32 embedding included).
    pub fn weight_bytes(&self) -> usize {
        let norms = 4
            * (self.final_norm.len()
                + self
                    .layers
                    .iter()
                    .map(|l| l.attn_norm.len() + l.mlp_norm.len())
                    .sum::<usize>());
        4 * self.embed.len()
            + norms
            + self.head.w.bytes()
            + self
                .layers
                .iter()
                .map(|l| l.wqkv.w.bytes() + l.wo.w.bytes() + l.wgu.w.bytes() + l.wd.w.bytes())
                .sum::<usize>()
    }

    /// Runs every sequence's new tokens and returns, per sequence, the logits of its last
    /// `logits` positions (`[logits, vocab]` row-major).
    pub fn forward(&self, batch: &mut [SeqInput<'_>]) -> Result<Vec<Vec<f32>>> {
        let c = &self.cfg;
        let (d, hd, kvd, f) = (c.dim, c.head_dim(), c.kv_dim(), c.ffn_dim);
        let qd = c.n_heads * hd;
        let wqkv = qd + 2 * kvd;
        let eps = c.norm_eps as f32;
        for s in batch.iter() {
            if s.tokens.is_empty() {
                bail!("forward: a sequence has no new tokens");
            }
            if s.logits > s.tokens.len() {
                bail!("forward: asked for more logit rows than new tokens");
            }
            if s.state.len + s.tokens.len() > c.max_seq_len {
                bail!(
                    "the sequence would reach {} tokens, beyond the model's context of {}",
                    s.state.len + s.tokens.len(),
                    c.max_seq_len
                );
            }
            if let Some(bad) = s.tokens.iter().find(|&&t| t as usize >= c.vocab_size) {
                bail!(
                    "token id {bad} is outside the vocabulary of {}",
                    c.vocab_size
                );
            }
        }
        // Row r of the batch belongs to sequence seq_of[r] at position pos[r].
        let mut offs = Vec::with_capacity(batch.len() + 1);
        let mut pos = Vec::new();
        offs.push(0);
        for s in batch.iter() {
            pos.extend(s.state.len..s.state.len + s.tokens.len());
            offs.push(pos.len());
        }
        let rows = pos.len();
        let mut x = vec![0f32; rows * d];
        for (r, &t) in batch.iter().flat_map(|s| s.tokens.iter()).enumerate() {
            x[r * d..(r + 1) * d]
                .copy_from_slice(&self.embed[t as usize * d..(t as usize + 1) * d]);
        }
        let mut ln = vec![0f32; rows * d];
        let mut qkv = vec![0f32; rows * wqkv];
        let mut att = vec![0f32; rows * qd];
        let mut gu = vec![0f32; rows * 2 * f];
        let mut h = vec![0f32; rows * f];
        let row_par = rows >= 8;
        for (li, layer) in self.layers.iter().enumerate() {
            norm_rows(&mut ln, &x, &layer.attn_norm, eps, row_par);
            layer.wqkv.forward(&ln, rows, &mut qkv, false);
            let rope = |(r, row): (usize, &mut [f32])| {
                rope_row(&mut row[..qd + kvd], &self.rope, hd, pos[r]);
            };
            if row_par {
                qkv.par_chunks_mut(wqkv).enumerate().for_each(rope);
            } else {
                qkv.chunks_mut(wqkv).enumerate().for_each(rope);
            }
            for (si, s) in batch.iter_mut().enumerate() {
                let (k, v) = (&mut s.state.k[li], &mut s.state.v[li]);
                for r in offs[si]..offs[si + 1] {
                    k.extend_from_slice(&qkv[r * wqkv + qd..r * wqkv + qd + kvd]);
                    v.extend_from_slice(&qkv[r * wqkv + qd + kvd..(r + 1) * wqkv]);
                }
            }
            self.attention(batch, li, &offs, &qkv, &mut att);
            layer.wo.forward(&att, rows, &mut x, true);
            norm_rows(&mut ln, &x, &layer.mlp_norm, eps, row_par);
            layer.wgu.forward(&ln, rows, &mut gu, false);
            let act = |(hr, gr): (&mut [f32], &[f32])| swiglu_row(hr, &gr[..f], &gr[f..]);
            if row_par {
                h.par_chunks_mut(f).zip(gu.par_chunks(2 * f)).for_each(act);
            } else {
                h.chunks_mut(f).zip(gu.chunks(2 * f)).for_each(act);
            }
            layer.wd.forward(&h, rows, &mut x, true);
        }
        for s in batch.iter_mut() {
            s.state.len += s.tokens.len();
        }
        // Only the rows whose logits are wanted go through the final norm and the head.
        let want: Vec<usize> = batch
            .iter()
            .enumerate()
            .flat_map(|(si, s)| offs[si + 1] - s.logits..offs[si + 1])
            .collect();
        if want.is_empty() {
            return Ok(vec![vec![]; batch.len()]);
        }
        let mut xs = vec![0f32; want.len() * d];
        for (o, &r) in want.iter().enumerate() {
            rmsnorm_row(
                &mut xs[o * d..(o + 1) * d],
                &x[r * d..(r + 1) * d],
                &self.final_norm,
                eps,
            );
        }
        let v = c.vocab_size;
        let mut logits = vec![0f32; want.len() * v];
        self.head.forward(&xs, want.len(), &mut logits, false);
        let mut out = Vec::with_capacity(batch.len());
        let mut at = 0;
        for s in batch.iter() {
            out.push(logits[at * v..(at + s.logits) * v].to_vec());
            at += s.logits;
        }
        Ok(out)
    }

    /// Causal attention of every new row over its sequence's cache, one task per
    /// (sequence, head). Scores are kernel dot products, so a row's result does not depend on
    /// how many rows its sequence brought.
    fn attention(
        &self,
        batch: &[SeqInput<'_>],
        layer: usize,
        offs: &[usize],
        qkv: &[f32],
        att: &mut [f32],
    ) {
        let c = &self.cfg;
        let (hd, kvd) = (c.head_dim(), c.kv_dim());
        let qd = c.n_heads * hd;
        let wqkv = qd + 2 * kvd;
        let group = c.n_heads / c.n_kv_heads;
        let scale = 1.0 / (hd as f32).sqrt();
        let isa: Isa = crate::simd::active();
        let outp = OutPtr(att.as_mut_ptr());
        let task = |t: usize| {
            let (si, h) = (t / c.n_heads, t % c.n_heads);
            let s = &batch[si];
            let n = offs[si + 1] - offs[si];
            let total = s.state.len + n;
            let start = s.state.len;
            let kvh = h / group;
            let (kc, vc) = (&s.state.k[layer], &s.state.v[layer]);
            let mut scores = vec![0f32; n * total];
            // Causal: a block of query rows needs the keys up to its last row only, so a long
            // prompt computes about half the square.
            for r0 in (0..n).step_by(SCORE_ROWS) {
                let r1 = (r0 + SCORE_ROWS).min(n);
                // SAFETY: q rows, the cache and `scores` cover the block (asserted in `block`).
                unsafe {
                    kernels::block(
                        isa,
                        Act::F32 {
                            x: &qkv[offs[si] * wqkv + h * hd..],
                            lda: wqkv,
                        },
                        (r0, r1),
                        WView::F32 {
                            w: &kc[kvh * hd..],
                            ldw: kvd,
                        },
                        (0, start + r1),
                        hd,
                        scores.as_mut_ptr(),
                        total,
                        false,
                    );
                }
            }
            let mut o = vec![0f32; hd];
            for r in 0..n {
                let keys = start + r + 1;
                let row = &mut scores[r * total..r * total + keys];
                row.iter_mut().for_each(|v| *v *= scale);
                let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                let sum = tinyllama_engine::cpu::simd::exp_shifted_sum(row, m);
                weighted_rows(&mut o, row, &vc[kvh * hd..], kvd);
                let inv = 1.0 / sum;
                o.iter_mut().for_each(|x| *x *= inv);
                // SAFETY: this task alone writes head h of its sequence's rows.
                unsafe {
                    let dst = outp.get().add((offs[si] + r) * qd + h * hd);
                    std::ptr::copy_nonoverlapping(o.as_ptr(), dst, hd);
                }
            }
        };
        let tasks = batch.len() * c.n_heads;
        let work: usize = batch
            .iter()
            .enumerate()
            .map(|(i, s)| (offs[i + 1] - offs[i]) * (s.state.len))
            .sum::<usize>()
            * c.n_heads
            * hd;
        if work < (1 << 15) {
            (0..tasks).for_each(task);
        } else {
            (0..tasks).into_par_iter().for_each(task);
        }
    }
}

/// Query rows per block of attention scores (a multiple of the kernels' row tile).
const SCORE_ROWS: usize = 32;

fn norm_rows(out: &mut [f32], x: &[f32], w: &[f32], eps: f32, par: bool) {
    let d = w.len();
    if par {
        out.par_chunks_mut(d)
            .zip(x.par_chunks(d))
            .for_each(|(o, xr)| rmsnorm_row(o, xr, w, eps));
    } else {
        out.chunks_mut(d)
            .zip(x.chunks(d))
            .for_each(|(o, xr)| rmsnorm_row(o, xr, w, eps));
    }
}
