//! The Llama-2 decoder written against [`Backend`]: explicit forward and backward passes,
//! llm.c style. Weights and gradients are one buffer per [`ParamSpec`] in
//! [`tinyllama_model::params::param_specs`] order; activations live in [`Activations`],
//! allocated once per (batch, sequence) shape and reused every step.
//!
//! One layer, with `x` the residual stream:
//! ```text
//! a = rmsnorm(x)·w1;  q,k,v = a·Wqᵀ, a·Wkᵀ, a·Wvᵀ;  q,k = rope(q), rope(k)
//! m = x + attention(q,k,v)·Woᵀ
//! b = rmsnorm(m)·w2;  h = silu(b·Wgᵀ) ⊙ (b·Wuᵀ);  x' = m + h·Wdᵀ
//! ```
//!
//! Memory: `h` is not kept per layer (the backward pass recomputes it from the saved gate and
//! up projections, one elementwise op), and with [`Activations::with_recompute`] only each
//! layer's input is kept and the whole layer is re-run during the backward pass.

use crate::backend::{AttnShape, Backend, BufKind};
use anyhow::{bail, Result};
use tinyllama_model::params::{param_specs, HostWeights, ParamSpec};
use tinyllama_model::ModelConfig;

/// Index of a layer's tensors relative to the layer's first tensor (see `LAYER_KINDS`).
const ATTN_NORM: usize = 0;
const WQ: usize = 1;
const WK: usize = 2;
const WV: usize = 3;
const WO: usize = 4;
const MLP_NORM: usize = 5;
const WG: usize = 6;
const WU: usize = 7;
const WD: usize = 8;

/// Where each tensor sits in the parameter list.
#[derive(Clone, Debug)]
pub struct Layout {
    pub n_layers: usize,
    pub tied: bool,
}

impl Layout {
    pub fn embed(&self) -> usize {
        0
    }
    pub fn layer(&self, l: usize, t: usize) -> usize {
        1 + 9 * l + t
    }
    pub fn final_norm(&self) -> usize {
        1 + 9 * self.n_layers
    }
    /// The LM head's weight: the embedding when tied.
    pub fn head(&self) -> usize {
        if self.tied {
            0
        } else {
            2 + 9 * self.n_layers
        }
    }
}

/// A model on a backend: configuration, weights and the rotary table.
pub struct Llama<B: Backend> {
    pub cfg: ModelConfig,
    pub specs: Vec<ParamSpec>,
    pub layout: Layout,
    pub weights: Vec<B::Buf>,
    pub rope: B::Buf,
    pub backend: B,
}

/// Per-layer saved activations.
struct LayerActs<B: Backend> {
    ln1: B::Buf,
    rstd1: B::Buf,
    q: B::Buf,
    k: B::Buf,
    v: B::Buf,
    att: B::Buf,
    lse: B::Buf,
    mid: B::Buf,
    ln2: B::Buf,
    rstd2: B::Buf,
    g: B::Buf,
    u: B::Buf,
}

/// Activation and gradient scratch for one (batch, seq) shape.
pub struct Activations<B: Backend> {
    pub batch: usize,
    pub seq: usize,
    ids: B::Ids,
    targets: B::Ids,
    /// Re-run each layer's forward pass during the backward pass instead of keeping its
    /// activations (`layers` then holds one set, shared by all layers).
    pub recompute: bool,
    /// Residual stream before each layer and after the last (`n_layers + 1` buffers).
    res: Vec<B::Buf>,
    layers: Vec<LayerActs<B>>,
    /// The SwiGLU product of the layer being computed (forward only).
    h: B::Buf,
    lnf: B::Buf,
    rstdf: B::Buf,
    losses: B::Buf,
    head_scratch: B::Buf,
    // Gradient scratch, shared by all layers.
    dres: B::Buf,
    dln: B::Buf,
    dq: B::Buf,
    dk: B::Buf,
    dv: B::Buf,
    datt: B::Buf,
    dg: B::Buf,
    du: B::Buf,
    dh: B::Buf,
}

impl<B: Backend> Activations<B> {
    /// Per-position losses of the last forward pass, in the backend's own precision.
    pub fn losses(&self) -> &B::Buf {
        &self.losses
    }

    pub fn new(model: &Llama<B>, batch: usize, seq: usize) -> Self {
        Self::with_recompute(model, batch, seq, false)
    }

    /// Like [`Activations::new`]; with `recompute` only the layer inputs are kept and every
    /// layer is run forward a second time during the backward pass (about a third more
    /// compute for a fraction of the activation memory).
    pub fn with_recompute(model: &Llama<B>, batch: usize, seq: usize, recompute: bool) -> Self {
        let c = &model.cfg;
        let be = &model.backend;
        let n = batch * seq;
        let (d, qd, kvd, f) = (c.dim, c.n_heads * c.head_dim(), c.kv_dim(), c.ffn_dim);
        // Per-token tensors may be stored in reduced precision; per-row statistics and the
        // logits scratch stay f32.
        let z = |len: usize| be.zeros_as(len, BufKind::Act);
        let z32 = |len: usize| be.zeros_as(len, BufKind::F32);
        let sets = if recompute { 1 } else { c.n_layers };
        let layers = (0..sets)
            .map(|_| LayerActs {
                ln1: z(n * d),
                rstd1: z32(n),
                q: z(n * qd),
                k: z(n * kvd),
                v: z(n * kvd),
                att: z(n * qd),
                lse: z32(batch * c.n_heads * seq),
                mid: z(n * d),
                ln2: z(n * d),
                rstd2: z32(n),
                g: z(n * f),
                u: z(n * f),
            })
            .collect();
        let chunk = be.head_chunk_rows(c.vocab_size).min(n);
        Activations {
            batch,
            seq,
            recompute,
            ids: be.upload_ids(&vec![0; n]),
            targets: be.upload_ids(&vec![-1; n]),
            res: (0..=c.n_layers).map(|_| z(n * d)).collect(),
            layers,
            h: z(n * f),
            lnf: z(n * d),
            rstdf: z32(n),
            losses: z32(n),
            head_scratch: z32(chunk * c.vocab_size),
            dres: z(n * d),
            dln: z(n * d),
            dq: z(n * qd),
            dk: z(n * kvd),
            dv: z(n * kvd),
            datt: z(n * qd),
            dg: z(n * f),
            du: z(n * f),
            dh: z(n * f),
        }
    }
}

impl<B: Backend> Llama<B> {
    pub fn new(backend: B, host: &HostWeights) -> Result<Self> {
        let cfg = host.config.clone();
        cfg.validate()?;
        let specs = param_specs(&cfg);
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
        let weights = host
            .tensors
            .iter()
            .map(|t| backend.upload_as(t, BufKind::Weight))
            .collect();
        let rope = backend.upload(&crate::cpu::rope::table(
            cfg.head_dim(),
            cfg.max_seq_len,
            cfg.rope_theta,
        ));
        let layout = Layout {
            n_layers: cfg.n_layers,
            tied: cfg.tie_embeddings,
        };
        Ok(Llama {
            cfg,
            specs,
            layout,
            weights,
            rope,
            backend,
        })
    }

    pub fn to_host(&self) -> HostWeights {
        HostWeights {
            config: self.cfg.clone(),
            specs: self.specs.clone(),
            tensors: self
                .weights
                .iter()
                .map(|w| self.backend.download(w))
                .collect(),
        }
    }

    /// The tensors that training updates, in the order [`Llama::forward_backward`]'s `grads`
    /// follow: every weight for full training; only the adapters once LoRA is attached
    /// (the base weights are then frozen and get neither gradients nor optimizer state).
    pub fn trainable_specs(&self) -> &[ParamSpec] {
        &self.specs
    }

    /// The buffers of [`Llama::trainable_specs`].
    pub fn trainable_weights(&self) -> &[B::Buf] {
        &self.weights
    }

    /// [`Llama::trainable_weights`], writable (the optimizer's view).
    pub fn trainable_weights_mut(&mut self) -> &mut [B::Buf] {
        &mut self.weights
    }

    /// The backend, the trainable specs and their buffers at once (the optimizer reads the
    /// first two while writing the third).
    pub fn trainable_parts_mut(&mut self) -> (&B, &[ParamSpec], &mut [B::Buf]) {
        (&self.backend, &self.specs, &mut self.weights)
    }

    /// Zeroed gradient buffers shaped like the trainable tensors.
    pub fn zero_grads(&self) -> Vec<B::Buf> {
        self.trainable_specs()
            .iter()
            .map(|s| self.backend.zeros_as(s.numel(), BufKind::F32))
            .collect()
    }

    fn check_tokens(
        &self,
        inputs: &[u32],
        targets: Option<&[i32]>,
        acts: &Activations<B>,
    ) -> Result<()> {
        let n = acts.batch * acts.seq;
        if inputs.len() != n {
            bail!(
                "expected {n} input tokens ({} × {}), got {}",
                acts.batch,
                acts.seq,
                inputs.len()
            );
        }
        if acts.seq > self.cfg.max_seq_len {
            bail!(
                "sequence length {} exceeds the model's context of {}",
                acts.seq,
                self.cfg.max_seq_len
            );
        }
        let v = self.cfg.vocab_size;
        if let Some(bad) = inputs.iter().find(|&&t| t as usize >= v) {
            bail!("token id {bad} is outside the vocabulary of {v}; was the data tokenized with another tokenizer?");
        }
        if let Some(t) = targets {
            if t.len() != n {
                bail!("expected {n} targets, got {}", t.len());
            }
            if let Some(bad) = t.iter().find(|&&x| x >= v as i32) {
                bail!("target id {bad} is outside the vocabulary of {v}");
            }
        }
        Ok(())
    }

    fn attn_shape(&self, batch: usize, seq: usize) -> AttnShape {
        AttnShape {
            batch,
            tq: seq,
            tk: seq,
            kv_stride: seq,
            n_heads: self.cfg.n_heads,
            n_kv_heads: self.cfg.n_kv_heads,
            head_dim: self.cfg.head_dim(),
        }
    }

    /// One layer forward from its input `x`, saving what its backward pass needs in `s`. With
    /// `out`, also writes the layer's output (the next residual stream) using `h` as scratch;
    /// without, stops after the MLP projections (a recomputation for the backward pass).
    #[allow(clippy::too_many_arguments)]
    fn layer_forward(
        &self,
        l: usize,
        x: &B::Buf,
        s: &mut LayerActs<B>,
        h: &mut B::Buf,
        out: Option<&mut B::Buf>,
        batch: usize,
        seq: usize,
    ) {
        let (be, c, lay) = (&self.backend, &self.cfg, &self.layout);
        let w = &self.weights;
        let n = batch * seq;
        let (d, qd, kvd, f, hd) = (
            c.dim,
            c.n_heads * c.head_dim(),
            c.kv_dim(),
            c.ffn_dim,
            c.head_dim(),
        );
        let eps = c.norm_eps as f32;
        let shape = self.attn_shape(batch, seq);
        let p = |t| &w[lay.layer(l, t)];
        be.rmsnorm_fwd(&mut s.ln1, &mut s.rstd1, x, p(ATTN_NORM), d, eps);
        be.matmul(&mut s.q, &s.ln1, false, p(WQ), true, n, qd, d, false);
        be.matmul(&mut s.k, &s.ln1, false, p(WK), true, n, kvd, d, false);
        be.matmul(&mut s.v, &s.ln1, false, p(WV), true, n, kvd, d, false);
        be.rope(&mut s.q, &self.rope, c.n_heads, hd, seq, 0, false);
        be.rope(&mut s.k, &self.rope, c.n_kv_heads, hd, seq, 0, false);
        be.attention_fwd(&mut s.att, &mut s.lse, &s.q, &s.k, &s.v, shape);
        be.copy(&mut s.mid, 0, x, 0, n * d);
        be.matmul(&mut s.mid, &s.att, false, p(WO), true, n, d, qd, true);
        be.rmsnorm_fwd(&mut s.ln2, &mut s.rstd2, &s.mid, p(MLP_NORM), d, eps);
        be.matmul(&mut s.g, &s.ln2, false, p(WG), true, n, f, d, false);
        be.matmul(&mut s.u, &s.ln2, false, p(WU), true, n, f, d, false);
        if let Some(out) = out {
            be.swiglu_fwd(h, &s.g, &s.u);
            be.copy(out, 0, &s.mid, 0, n * d);
            be.matmul(out, h, false, p(WD), true, n, d, f, true);
        }
    }

    /// Forward pass through the final norm, saving everything the backward pass needs.
    fn forward_trunk(&self, a: &mut Activations<B>) {
        let (be, c, lay) = (&self.backend, &self.cfg, &self.layout);
        let w = &self.weights;
        let d = c.dim;
        be.embedding_fwd(&mut a.res[0], &w[lay.embed()], &a.ids, d);
        for l in 0..c.n_layers {
            let (before, after) = a.res.split_at_mut(l + 1);
            let set = if a.recompute { 0 } else { l };
            self.layer_forward(
                l,
                &before[l],
                &mut a.layers[set],
                &mut a.h,
                Some(&mut after[0]),
                a.batch,
                a.seq,
            );
        }
        be.rmsnorm_fwd(
            &mut a.lnf,
            &mut a.rstdf,
            &a.res[c.n_layers],
            &w[lay.final_norm()],
            d,
            c.norm_eps as f32,
        );
    }

    /// Per-position losses (natural-log cross-entropy; 0 where the target is negative) without
    /// gradients: validation, perplexity and task scoring.
    pub fn forward_losses(
        &self,
        a: &mut Activations<B>,
        inputs: &[u32],
        targets: &[i32],
    ) -> Result<Vec<f32>> {
        self.check_tokens(inputs, Some(targets), a)?;
        let be = &self.backend;
        be.write_ids(
            &mut a.ids,
            &inputs.iter().map(|&t| t as i32).collect::<Vec<_>>(),
        );
        be.write_ids(&mut a.targets, targets);
        self.forward_trunk(a);
        let head = &self.weights[self.layout.head()];
        be.lm_head_loss(
            &mut a.losses,
            &a.lnf,
            head,
            &a.targets,
            self.cfg.vocab_size,
            self.cfg.dim,
            &mut a.head_scratch,
            None,
        );
        Ok(be.download(&a.losses))
    }

    /// Forward and backward for one micro-batch. Returns the mean loss over non-ignored
    /// targets and *accumulates* `grad_scale · ∂(mean loss)/∂θ` into `grads`.
    pub fn forward_backward(
        &self,
        a: &mut Activations<B>,
        grads: &mut [B::Buf],
        inputs: &[u32],
        targets: &[i32],
        grad_scale: f32,
    ) -> Result<f32> {
        self.check_tokens(inputs, Some(targets), a)?;
        let n_valid = targets.iter().filter(|&&t| t >= 0).count();
        if n_valid == 0 {
            bail!("the batch has no target tokens to learn from (all are ignored)");
        }
        let (be, c, lay) = (&self.backend, &self.cfg, &self.layout);
        be.write_ids(
            &mut a.ids,
            &inputs.iter().map(|&t| t as i32).collect::<Vec<_>>(),
        );
        be.write_ids(&mut a.targets, targets);
        self.forward_trunk(a);

        let w = &self.weights;
        let n = a.batch * a.seq;
        let (d, qd, kvd, f, hd) = (
            c.dim,
            c.n_heads * c.head_dim(),
            c.kv_dim(),
            c.ffn_dim,
            c.head_dim(),
        );
        let shape = self.attn_shape(a.batch, a.seq);
        let scale = grad_scale / n_valid as f32;

        // Head and loss: dln = ∂/∂lnf, head gradient accumulated.
        be.lm_head_loss(
            &mut a.losses,
            &a.lnf,
            &w[lay.head()],
            &a.targets,
            c.vocab_size,
            d,
            &mut a.head_scratch,
            Some((&mut a.dln, &mut grads[lay.head()], scale)),
        );
        be.fill(&mut a.dres, 0.0);
        be.rmsnorm_bwd(
            &mut a.dres,
            &mut grads[lay.final_norm()],
            &a.dln,
            &a.res[c.n_layers],
            &w[lay.final_norm()],
            &a.rstdf,
            d,
        );

        for l in (0..c.n_layers).rev() {
            if a.recompute {
                self.layer_forward(
                    l,
                    &a.res[l],
                    &mut a.layers[0],
                    &mut a.h,
                    None,
                    a.batch,
                    a.seq,
                );
            }
            let s = &a.layers[if a.recompute { 0 } else { l }];
            let x = &a.res[l];
            let gi = |t| lay.layer(l, t);
            let p = |t| &w[lay.layer(l, t)];
            // MLP: x' = m + h·Wdᵀ. h is recomputed into the dh scratch for Wd's gradient, then
            // dh is overwritten with its own gradient.
            be.swiglu_fwd(&mut a.dh, &s.g, &s.u);
            be.matmul(
                &mut grads[gi(WD)],
                &a.dres,
                true,
                &a.dh,
                false,
                d,
                f,
                n,
                true,
            );
            be.matmul(&mut a.dh, &a.dres, false, p(WD), false, n, f, d, false);
            be.swiglu_bwd(&mut a.dg, &mut a.du, &a.dh, &s.g, &s.u);
            be.matmul(&mut a.dln, &a.dg, false, p(WG), false, n, d, f, false);
            be.matmul(&mut a.dln, &a.du, false, p(WU), false, n, d, f, true);
            be.matmul(
                &mut grads[gi(WG)],
                &a.dg,
                true,
                &s.ln2,
                false,
                f,
                d,
                n,
                true,
            );
            be.matmul(
                &mut grads[gi(WU)],
                &a.du,
                true,
                &s.ln2,
                false,
                f,
                d,
                n,
                true,
            );
            be.rmsnorm_bwd(
                &mut a.dres,
                &mut grads[gi(MLP_NORM)],
                &a.dln,
                &s.mid,
                p(MLP_NORM),
                &s.rstd2,
                d,
            );
            // Attention: m = x + att·Woᵀ
            be.matmul(&mut a.datt, &a.dres, false, p(WO), false, n, qd, d, false);
            be.matmul(
                &mut grads[gi(WO)],
                &a.dres,
                true,
                &s.att,
                false,
                d,
                qd,
                n,
                true,
            );
            be.attention_bwd(
                &mut a.dq, &mut a.dk, &mut a.dv, &a.datt, &s.att, &s.lse, &s.q, &s.k, &s.v, shape,
            );
            be.rope(&mut a.dq, &self.rope, c.n_heads, hd, a.seq, 0, true);
            be.rope(&mut a.dk, &self.rope, c.n_kv_heads, hd, a.seq, 0, true);
            be.matmul(&mut a.dln, &a.dq, false, p(WQ), false, n, d, qd, false);
            be.matmul(&mut a.dln, &a.dk, false, p(WK), false, n, d, kvd, true);
            be.matmul(&mut a.dln, &a.dv, false, p(WV), false, n, d, kvd, true);
            be.matmul(
                &mut grads[gi(WQ)],
                &a.dq,
                true,
                &s.ln1,
                false,
                qd,
                d,
                n,
                true,
            );
            be.matmul(
                &mut grads[gi(WK)],
                &a.dk,
                true,
                &s.ln1,
                false,
                kvd,
                d,
                n,
                true,
            );
            be.matmul(
                &mut grads[gi(WV)],
                &a.dv,
                true,
                &s.ln1,
                false,
                kvd,
                d,
                n,
                true,
            );
            be.rmsnorm_bwd(
                &mut a.dres,
                &mut grads[gi(ATTN_NORM)],
                &a.dln,
                x,
                p(ATTN_NORM),
                &s.rstd1,
                d,
            );
        }
        be.embedding_bwd(&mut grads[lay.embed()], &a.dres, &a.ids, d);

        let losses = be.download(&a.losses);
        let sum: f64 = losses.iter().map(|&x| x as f64).sum();
        Ok((sum / n_valid as f64) as f32)
    }
}
