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
//! With LoRA attached ([`Llama::attach_lora`]) the seven projections may each carry an adapter
//! (see [`crate::lora`]); the base weights are then frozen: no gradient buffers, no weight-
//! gradient products, only the activation gradients the adapters need.
//!
//! Memory: `h` is not kept per layer (the backward pass recomputes it from the saved gate and
//! up projections, one elementwise op), and with [`Activations::with_recompute`] only each
//! layer's input is kept and the whole layer is re-run during the backward pass.

use crate::backend::{AttnShape, Backend, BufKind};
use crate::lora::{self, Lora, LoraConfig, LoraShape, LoraTarget};
use anyhow::{bail, Result};
use tinyllama_model::params::{param_specs, HostWeights, ParamKind, ParamSpec};
use tinyllama_model::peft::{self, PeftAdapter};
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

/// The layer slot of the base weight a LoRA target adapts.
fn slot_of(t: LoraTarget) -> usize {
    match t {
        LoraTarget::Q => WQ,
        LoraTarget::K => WK,
        LoraTarget::V => WV,
        LoraTarget::O => WO,
        LoraTarget::Gate => WG,
        LoraTarget::Up => WU,
        LoraTarget::Down => WD,
    }
}

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
    lora: Option<Lora<B>>,
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
    /// With LoRA: `t = s·drop(x)·Aᵀ` (`[n, r]`) per adapted target (by [`LoraTarget::index`]).
    lora_t: Vec<Option<B::Buf>>,
}

/// LoRA scratch, shared by all layers.
struct LoraActs<B: Backend> {
    /// The configuration the buffers were sized for.
    config: LoraConfig,
    /// `∂L/∂(drop(x)·Aᵀ)` of the module being differentiated (`[n, r]`).
    g: B::Buf,
    /// With dropout: `drop(x)` scratch, one per distinct input width (`[n, width]`).
    xd: Vec<(usize, B::Buf)>,
    /// Where the frozen norms' weight gradients go (never read).
    norm_dw: B::Buf,
}

impl<B: Backend> LoraActs<B> {
    fn xd(&mut self, width: usize) -> Option<&mut B::Buf> {
        self.xd
            .iter_mut()
            .find(|(w, _)| *w == width)
            .map(|(_, b)| b)
    }
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
    lora: Option<LoraActs<B>>,
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
        let lcfg = model.lora.as_ref().map(|l| &l.config);
        let lora_t = || {
            LoraTarget::ALL
                .iter()
                .map(|&t| match lcfg {
                    Some(lc) if lc.targets(t) => Some(z(n * lc.rank)),
                    _ => None,
                })
                .collect::<Vec<_>>()
        };
        let lora = lcfg.map(|lc| {
            let mut widths = vec![];
            if lc.dropout > 0.0 {
                for &t in &lc.targets {
                    let w = match t {
                        LoraTarget::O => qd,
                        LoraTarget::Down => f,
                        _ => d,
                    };
                    if !widths.contains(&w) {
                        widths.push(w);
                    }
                }
            }
            LoraActs {
                config: lc.clone(),
                g: z(n * lc.rank),
                xd: widths.into_iter().map(|w| (w, z(n * w))).collect(),
                norm_dw: z32(d),
            }
        });
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
                lora_t: lora_t(),
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
            lora,
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
            lora: None,
        })
    }

    /// The base weights (without any LoRA adapter; see [`Llama::merged_host`]).
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
        match &self.lora {
            Some(l) => &l.specs,
            None => &self.specs,
        }
    }

    /// The buffers of [`Llama::trainable_specs`].
    pub fn trainable_weights(&self) -> &[B::Buf] {
        match &self.lora {
            Some(l) => &l.weights,
            None => &self.weights,
        }
    }

    /// [`Llama::trainable_weights`], writable (the optimizer's view).
    pub fn trainable_weights_mut(&mut self) -> &mut [B::Buf] {
        match &mut self.lora {
            Some(l) => &mut l.weights,
            None => &mut self.weights,
        }
    }

    /// The backend, the trainable specs and their buffers at once (the optimizer reads the
    /// first two while writing the third).
    pub fn trainable_parts_mut(&mut self) -> (&B, &[ParamSpec], &mut [B::Buf]) {
        match &mut self.lora {
            Some(l) => (&self.backend, &l.specs, &mut l.weights),
            None => (&self.backend, &self.specs, &mut self.weights),
        }
    }

    /// Zeroed gradient buffers shaped like the trainable tensors.
    pub fn zero_grads(&self) -> Vec<B::Buf> {
        self.trainable_specs()
            .iter()
            .map(|s| self.backend.zeros_as(s.numel(), BufKind::F32))
            .collect()
    }

    /// The attached LoRA adapters, if any.
    pub fn lora(&self) -> Option<&Lora<B>> {
        self.lora.as_ref()
    }

    /// The adapter tensors `cfg` implies for this model, in PEFT's order and names.
    fn lora_specs(&self, cfg: &LoraConfig) -> (Vec<ParamSpec>, Vec<[Option<usize>; 7]>) {
        let mut specs = vec![];
        let mut slots = vec![[None; 7]; self.cfg.n_layers];
        for (l, slot) in slots.iter_mut().enumerate() {
            for t in LoraTarget::ALL {
                if !cfg.targets(t) {
                    continue;
                }
                let base = &self.specs[self.layout.layer(l, slot_of(t))];
                debug_assert_eq!(base.kind, t.base_kind());
                let (out, inp) = (base.shape[0], base.shape[1]);
                slot[t.index()] = Some(specs.len());
                for (is_b, shape, kind) in [
                    (false, vec![cfg.rank, inp], ParamKind::LoraA),
                    (true, vec![out, cfg.rank], ParamKind::LoraB),
                ] {
                    specs.push(ParamSpec {
                        name: peft::tensor_name(l, t.peft_name(), is_b),
                        shape,
                        kind,
                        layer: Some(l),
                    });
                }
            }
        }
        (specs, slots)
    }

    /// Attaches fresh LoRA adapters and freezes the base weights: from now on the trainable
    /// tensors ([`Llama::trainable_specs`], [`Llama::zero_grads`], the `grads` of
    /// [`Llama::forward_backward`]) are the adapters alone. `A` is drawn as PEFT does
    /// (U(−1/√in, 1/√in), each tensor from its own stream of `seed`), `B` is zero, so the
    /// model's outputs are unchanged until training moves `B`. Allocate [`Activations`] after
    /// this call.
    pub fn attach_lora(&mut self, cfg: LoraConfig, seed: u64) -> Result<()> {
        if self.lora.is_some() {
            bail!("a LoRA adapter is already attached to this model (only one is supported)");
        }
        cfg.validate()?;
        let (specs, slots) = self.lora_specs(&cfg);
        let weights = specs
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut v = vec![0f32; s.numel()];
                if s.kind == ParamKind::LoraA {
                    let mut rng = tinyllama_model::rng::Rng::derive(seed, i as u64);
                    lora::init_a(&mut v, s.shape[1], &mut rng);
                }
                self.backend.upload_as(&v, BufKind::Weight)
            })
            .collect();
        self.lora = Some(Lora {
            config: cfg,
            specs,
            weights,
            enabled: true,
            dropout_seed: 0.into(),
            slots,
        });
        Ok(())
    }

    /// Attaches an adapter read by [`tinyllama_model::peft::load_peft`]: its configuration and
    /// tensors, every one checked by name and shape against this model.
    pub fn attach_peft(&mut self, adapter: &PeftAdapter) -> Result<()> {
        if self.lora.is_some() {
            bail!("a LoRA adapter is already attached to this model (only one is supported)");
        }
        let cfg = LoraConfig::from_peft(&adapter.config)?;
        let (specs, _) = self.lora_specs(&cfg);
        let mut host = Vec::with_capacity(specs.len());
        for s in &specs {
            let Some(t) = adapter.tensors.get(&s.name) else {
                bail!(
                    "the adapter has no tensor `{}` although its config targets `{}`; \
                     is {} complete?",
                    s.name,
                    s.name.split('.').rev().nth(2).unwrap_or("?"),
                    peft::WEIGHTS_FILE
                );
            };
            if t.shape != s.shape {
                bail!(
                    "adapter tensor `{}` has shape {:?}, but this model needs {:?}; was the \
                     adapter trained for another base model{}?",
                    s.name,
                    t.shape,
                    s.shape,
                    adapter
                        .base_model_name_or_path
                        .as_deref()
                        .map(|b| format!(" (it names {b})"))
                        .unwrap_or_default()
                );
            }
            host.push(t.data.clone());
        }
        if let Some(extra) = adapter
            .tensors
            .keys()
            .find(|k| !specs.iter().any(|s| &s.name == *k))
        {
            bail!(
                "the adapter holds tensor `{extra}`, which this {}-layer model has no place \
                 for (only LoRA A/B matrices of {} are supported)",
                self.cfg.n_layers,
                peft::TARGET_MODULES.join(", ")
            );
        }
        self.attach_lora(cfg, 0)?;
        self.set_lora_tensors(&host)
    }

    /// Writes the adapters as a PEFT directory (`adapter_config.json`,
    /// `adapter_model.safetensors`) that `PeftModel.from_pretrained` loads.
    pub fn save_peft(
        &self,
        dir: &std::path::Path,
        base_model_name_or_path: Option<&str>,
    ) -> Result<()> {
        let Some(lo) = &self.lora else {
            bail!("no LoRA adapter is attached; nothing to save as a PEFT adapter");
        };
        let names: Vec<String> = lo.specs.iter().map(|s| s.name.clone()).collect();
        let shapes: Vec<Vec<usize>> = lo.specs.iter().map(|s| s.shape.clone()).collect();
        peft::save_peft(
            dir,
            &lo.config.to_peft(),
            &names,
            &shapes,
            &self.lora_host(),
            base_model_name_or_path,
        )
    }

    /// Overwrites the adapter tensors (resuming, loading), in [`Lora::specs`] order.
    pub fn set_lora_tensors(&mut self, host: &[Vec<f32>]) -> Result<()> {
        let Some(lo) = self.lora.as_mut() else {
            bail!("no LoRA adapter is attached; call attach_lora first");
        };
        if host.len() != lo.specs.len() {
            bail!(
                "expected {} LoRA tensors, got {}",
                lo.specs.len(),
                host.len()
            );
        }
        for (s, t) in lo.specs.iter().zip(host) {
            if t.len() != s.numel() {
                bail!(
                    "LoRA tensor `{}` has {} elements, expected {:?}",
                    s.name,
                    t.len(),
                    s.shape
                );
            }
        }
        for (w, t) in lo.weights.iter_mut().zip(host) {
            self.backend.write(w, 0, t);
        }
        Ok(())
    }

    /// The adapter tensors in host memory, in [`Lora::specs`] order (empty without LoRA).
    pub fn lora_host(&self) -> Vec<Vec<f32>> {
        self.lora
            .as_ref()
            .map(|lo| {
                lo.weights
                    .iter()
                    .map(|w| self.backend.download(w))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Turns the adapters on or off: off, every pass is exactly the base model's (the frozen
    /// reference policy of DPO) and `forward_backward` accumulates no gradient. No-op without
    /// LoRA.
    pub fn set_adapters_enabled(&mut self, on: bool) {
        if let Some(lo) = self.lora.as_mut() {
            lo.enabled = on;
        }
    }

    /// The seed of the adapters' dropout masks for the following passes: set it per
    /// micro-batch (each adapted module derives its own mask from it).
    pub fn set_dropout_seed(&self, seed: u64) {
        if let Some(lo) = self.lora.as_ref() {
            lo.dropout_seed
                .store(seed, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// The base weights with every adapter merged in, `W + s·B·A` (computed in f64): a plain
    /// model that computes what the adapted one does. The base weights without LoRA.
    pub fn merged_host(&self) -> HostWeights {
        let mut host = self.to_host();
        let Some(lo) = &self.lora else {
            return host;
        };
        let s = lo.config.scale() as f64;
        let r = lo.config.rank;
        for l in 0..self.cfg.n_layers {
            for t in LoraTarget::ALL {
                let Some(i) = lo.module(l, t) else { continue };
                let a = self.backend.download(&lo.weights[i]);
                let b = self.backend.download(&lo.weights[i + 1]);
                let (out, inp) = (lo.specs[i + 1].shape[0], lo.specs[i].shape[1]);
                let w = &mut host.tensors[self.layout.layer(l, slot_of(t))];
                for o in 0..out {
                    for j in 0..inp {
                        let mut acc = 0f64;
                        for k in 0..r {
                            acc += b[o * r + k] as f64 * a[k * inp + j] as f64;
                        }
                        let v = &mut w[o * inp + j];
                        *v = (*v as f64 + s * acc) as f32;
                    }
                }
            }
        }
        host
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

    /// The adapter of `target` in layer `l` when LoRA is attached, enabled and targets it:
    /// `(A, B, shape)`, with dropout only when `train`.
    pub(crate) fn adapter(
        &self,
        l: usize,
        target: LoraTarget,
        rows: usize,
        train: bool,
    ) -> Option<(usize, &B::Buf, &B::Buf, LoraShape)> {
        let lo = self.lora.as_ref().filter(|lo| lo.enabled)?;
        let i = lo.module(l, target)?;
        let (a, b) = (&lo.specs[i], &lo.specs[i + 1]);
        let sh = LoraShape {
            rows,
            d_in: a.shape[1],
            d_out: b.shape[0],
            rank: lo.config.rank,
            scale: lo.config.scale(),
            dropout: if train { lo.config.dropout } else { 0.0 },
            seed: lo.module_seed(l, target),
        };
        Some((i, &lo.weights[i], &lo.weights[i + 1], sh))
    }

    /// `y += adapter(x)` for `target` of layer `l`, saving `t` in `s` (a no-op without it).
    #[allow(clippy::too_many_arguments)]
    fn adapter_fwd(
        &self,
        l: usize,
        target: LoraTarget,
        y: &mut B::Buf,
        x: &B::Buf,
        t: &mut [Option<B::Buf>],
        la: &mut Option<LoraActs<B>>,
        rows: usize,
        train: bool,
    ) {
        if let Some((_, a, b, sh)) = self.adapter(l, target, rows, train) {
            let t = t[target.index()]
                .as_mut()
                .expect("activations sized for LoRA");
            let xd = la.as_mut().and_then(|la| la.xd(sh.d_in));
            lora::forward(&self.backend, y, t, x, a, b, xd, sh);
        }
    }

    /// The adapter's weight gradients for `target` of layer `l` (into `grads`, indexed like
    /// the adapters), leaving `∂L/∂(drop(x)·Aᵀ)` in the LoRA scratch for
    /// [`Llama::adapter_bwd_input`].
    #[allow(clippy::too_many_arguments)]
    fn adapter_bwd_weights(
        &self,
        l: usize,
        target: LoraTarget,
        grads: &mut [B::Buf],
        la: &mut Option<LoraActs<B>>,
        dy: &B::Buf,
        x: &B::Buf,
        t: &[Option<B::Buf>],
        rows: usize,
    ) {
        if let Some((i, _, b, sh)) = self.adapter(l, target, rows, true) {
            let la = la.as_mut().expect("activations sized for LoRA");
            let (ga, gb) = grads[i..i + 2].split_at_mut(1);
            let t = t[target.index()]
                .as_ref()
                .expect("activations sized for LoRA");
            let xd = la
                .xd
                .iter_mut()
                .find(|(w, _)| *w == sh.d_in)
                .map(|(_, b)| b);
            lora::backward_weights(
                &self.backend,
                &mut ga[0],
                &mut gb[0],
                &mut la.g,
                xd,
                dy,
                x,
                b,
                t,
                sh,
            );
        }
    }

    /// `dx +=` the adapter's input gradient (after [`Llama::adapter_bwd_weights`]).
    fn adapter_bwd_input(
        &self,
        l: usize,
        target: LoraTarget,
        la: &mut Option<LoraActs<B>>,
        dx: &mut B::Buf,
        rows: usize,
    ) {
        if let Some((_, a, _, sh)) = self.adapter(l, target, rows, true) {
            let la = la.as_mut().expect("activations sized for LoRA");
            let xd = la
                .xd
                .iter_mut()
                .find(|(w, _)| *w == sh.d_in)
                .map(|(_, b)| b);
            lora::backward_input(&self.backend, dx, &la.g, a, xd, sh);
        }
    }

    /// One layer forward from its input `x`, saving what its backward pass needs in `s`. With
    /// `out`, also writes the layer's output (the next residual stream) using `h` as scratch;
    /// without, stops after the MLP projections (a recomputation for the backward pass).
    /// `train` turns on the adapters' dropout.
    #[allow(clippy::too_many_arguments)]
    fn layer_forward(
        &self,
        l: usize,
        x: &B::Buf,
        s: &mut LayerActs<B>,
        la: &mut Option<LoraActs<B>>,
        h: &mut B::Buf,
        out: Option<&mut B::Buf>,
        batch: usize,
        seq: usize,
        train: bool,
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
        let lt = &mut s.lora_t;
        be.rmsnorm_fwd(&mut s.ln1, &mut s.rstd1, x, p(ATTN_NORM), d, eps);
        be.matmul(&mut s.q, &s.ln1, false, p(WQ), true, n, qd, d, false);
        be.matmul(&mut s.k, &s.ln1, false, p(WK), true, n, kvd, d, false);
        be.matmul(&mut s.v, &s.ln1, false, p(WV), true, n, kvd, d, false);
        if self.lora.is_some() {
            use LoraTarget::{K, Q, V};
            self.adapter_fwd(l, Q, &mut s.q, &s.ln1, lt, la, n, train);
            self.adapter_fwd(l, K, &mut s.k, &s.ln1, lt, la, n, train);
            self.adapter_fwd(l, V, &mut s.v, &s.ln1, lt, la, n, train);
        }
        be.rope(&mut s.q, &self.rope, c.n_heads, hd, seq, 0, false);
        be.rope(&mut s.k, &self.rope, c.n_kv_heads, hd, seq, 0, false);
        be.attention_fwd(&mut s.att, &mut s.lse, &s.q, &s.k, &s.v, shape);
        be.copy(&mut s.mid, 0, x, 0, n * d);
        be.matmul(&mut s.mid, &s.att, false, p(WO), true, n, d, qd, true);
        if self.lora.is_some() {
            self.adapter_fwd(l, LoraTarget::O, &mut s.mid, &s.att, lt, la, n, train);
        }
        be.rmsnorm_fwd(&mut s.ln2, &mut s.rstd2, &s.mid, p(MLP_NORM), d, eps);
        be.matmul(&mut s.g, &s.ln2, false, p(WG), true, n, f, d, false);
        be.matmul(&mut s.u, &s.ln2, false, p(WU), true, n, f, d, false);
        if self.lora.is_some() {
            use LoraTarget::{Gate, Up};
            self.adapter_fwd(l, Gate, &mut s.g, &s.ln2, lt, la, n, train);
            self.adapter_fwd(l, Up, &mut s.u, &s.ln2, lt, la, n, train);
        }
        if let Some(out) = out {
            be.swiglu_fwd(h, &s.g, &s.u);
            be.copy(out, 0, &s.mid, 0, n * d);
            be.matmul(out, h, false, p(WD), true, n, d, f, true);
            if self.lora.is_some() {
                self.adapter_fwd(l, LoraTarget::Down, out, h, lt, la, n, train);
            }
        }
    }

    /// Forward pass through the final norm, saving everything the backward pass needs.
    fn forward_trunk(&self, a: &mut Activations<B>, train: bool) {
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
                &mut a.lora,
                &mut a.h,
                Some(&mut after[0]),
                a.batch,
                a.seq,
                train,
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

    /// Activations allocated before `attach_lora` (or for another adapter) lack its buffers.
    fn check_acts(&self, a: &Activations<B>) -> Result<()> {
        let have = a.lora.as_ref().map(|l| &l.config);
        let want = self.lora.as_ref().map(|l| &l.config);
        if have != want {
            bail!(
                "these Activations were allocated for {} but the model now has {}; \
                 allocate them again (Activations::new) after attaching the adapter",
                have.map_or("no LoRA adapter".to_string(), |c| format!("{c:?}")),
                want.map_or("no LoRA adapter".to_string(), |c| format!("{c:?}")),
            );
        }
        Ok(())
    }

    /// Per-position losses (natural-log cross-entropy; 0 where the target is negative) without
    /// gradients: validation, perplexity and task scoring. Adapters run without dropout.
    pub fn forward_losses(
        &self,
        a: &mut Activations<B>,
        inputs: &[u32],
        targets: &[i32],
    ) -> Result<Vec<f32>> {
        self.check_tokens(inputs, Some(targets), a)?;
        self.check_acts(a)?;
        let be = &self.backend;
        be.write_ids(
            &mut a.ids,
            &inputs.iter().map(|&t| t as i32).collect::<Vec<_>>(),
        );
        be.write_ids(&mut a.targets, targets);
        self.forward_trunk(a, false);
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
    /// targets and *accumulates* `grad_scale · ∂(mean loss)/∂θ` into `grads`, which are indexed
    /// like [`Llama::trainable_specs`] (the adapters alone once LoRA is attached; their
    /// dropout masks follow [`Llama::set_dropout_seed`]).
    pub fn forward_backward(
        &self,
        a: &mut Activations<B>,
        grads: &mut [B::Buf],
        inputs: &[u32],
        targets: &[i32],
        grad_scale: f32,
    ) -> Result<f32> {
        self.check_tokens(inputs, Some(targets), a)?;
        self.check_acts(a)?;
        if grads.len() != self.trainable_specs().len() {
            bail!(
                "expected {} gradient buffers (one per trainable tensor), got {}",
                self.trainable_specs().len(),
                grads.len()
            );
        }
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
        self.forward_trunk(a, true);

        // Full training: every weight gets a gradient. With LoRA the base is frozen: only the
        // activation gradients are propagated (norm weight gradients land in a scratch).
        let full = self.lora.is_none();
        let lora_on = self.lora.as_ref().is_some_and(|l| l.enabled);
        if let Some(la) = a.lora.as_mut() {
            be.fill(&mut la.norm_dw, 0.0);
        }
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
        let head_dw = if full {
            Some(&mut grads[lay.head()])
        } else {
            None
        };
        be.lm_head_loss(
            &mut a.losses,
            &a.lnf,
            &w[lay.head()],
            &a.targets,
            c.vocab_size,
            d,
            &mut a.head_scratch,
            Some((&mut a.dln, head_dw, scale)),
        );
        be.fill(&mut a.dres, 0.0);
        be.rmsnorm_bwd(
            &mut a.dres,
            match a.lora.as_mut() {
                Some(la) if !full => &mut la.norm_dw,
                _ => &mut grads[lay.final_norm()],
            },
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
                    &mut a.lora,
                    &mut a.h,
                    None,
                    a.batch,
                    a.seq,
                    true,
                );
            }
            let set = if a.recompute { 0 } else { l };
            let x = &a.res[l];
            let gi = |t| lay.layer(l, t);
            let p = |t| &w[lay.layer(l, t)];
            // MLP: x' = m + h·Wdᵀ. h is recomputed into the dh scratch for Wd's gradient, then
            // dh is overwritten with its own gradient.
            be.swiglu_fwd(&mut a.dh, &a.layers[set].g, &a.layers[set].u);
            if a.recompute && lora_on {
                // The recomputation stopped before the down projection: its adapter's `t`.
                if let Some((_, a_down, _, sh)) = self.adapter(l, LoraTarget::Down, n, true) {
                    let t = a.layers[0].lora_t[LoraTarget::Down.index()]
                        .as_mut()
                        .expect("activations sized for LoRA");
                    let xd = a.lora.as_mut().and_then(|la| la.xd(sh.d_in));
                    lora::down(be, t, &a.dh, a_down, xd, sh);
                }
            }
            let s = &a.layers[set];
            if full {
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
            }
            if lora_on {
                self.adapter_bwd_weights(
                    l,
                    LoraTarget::Down,
                    grads,
                    &mut a.lora,
                    &a.dres,
                    &a.dh,
                    &s.lora_t,
                    n,
                );
            }
            be.matmul(&mut a.dh, &a.dres, false, p(WD), false, n, f, d, false);
            if lora_on {
                self.adapter_bwd_input(l, LoraTarget::Down, &mut a.lora, &mut a.dh, n);
            }
            be.swiglu_bwd(&mut a.dg, &mut a.du, &a.dh, &s.g, &s.u);
            be.matmul(&mut a.dln, &a.dg, false, p(WG), false, n, d, f, false);
            be.matmul(&mut a.dln, &a.du, false, p(WU), false, n, d, f, true);
            if full {
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
            }
            if lora_on {
                for (t, dy) in [(LoraTarget::Gate, &a.dg), (LoraTarget::Up, &a.du)] {
                    self.adapter_bwd_weights(l, t, grads, &mut a.lora, dy, &s.ln2, &s.lora_t, n);
                    self.adapter_bwd_input(l, t, &mut a.lora, &mut a.dln, n);
                }
            }
            be.rmsnorm_bwd(
                &mut a.dres,
                match a.lora.as_mut() {
                    Some(la) if !full => &mut la.norm_dw,
                    _ => &mut grads[gi(MLP_NORM)],
                },
                &a.dln,
                &s.mid,
                p(MLP_NORM),
                &s.rstd2,
                d,
            );
            // Attention: m = x + att·Woᵀ
            be.matmul(&mut a.datt, &a.dres, false, p(WO), false, n, qd, d, false);
            if full {
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
            }
            if lora_on {
                let o = LoraTarget::O;
                self.adapter_bwd_weights(l, o, grads, &mut a.lora, &a.dres, &s.att, &s.lora_t, n);
                self.adapter_bwd_input(l, o, &mut a.lora, &mut a.datt, n);
            }
            be.attention_bwd(
                &mut a.dq, &mut a.dk, &mut a.dv, &a.datt, &s.att, &s.lse, &s.q, &s.k, &s.v, shape,
            );
            be.rope(&mut a.dq, &self.rope, c.n_heads, hd, a.seq, 0, true);
            be.rope(&mut a.dk, &self.rope, c.n_kv_heads, hd, a.seq, 0, true);
            be.matmul(&mut a.dln, &a.dq, false, p(WQ), false, n, d, qd, false);
            be.matmul(&mut a.dln, &a.dk, false, p(WK), false, n, d, kvd, true);
            be.matmul(&mut a.dln, &a.dv, false, p(WV), false, n, d, kvd, true);
            if full {
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
            }
            if lora_on {
                for (t, dy) in [
                    (LoraTarget::Q, &a.dq),
                    (LoraTarget::K, &a.dk),
                    (LoraTarget::V, &a.dv),
                ] {
                    self.adapter_bwd_weights(l, t, grads, &mut a.lora, dy, &s.ln1, &s.lora_t, n);
                    self.adapter_bwd_input(l, t, &mut a.lora, &mut a.dln, n);
                }
            }
            be.rmsnorm_bwd(
                &mut a.dres,
                match a.lora.as_mut() {
                    Some(la) if !full => &mut la.norm_dw,
                    _ => &mut grads[gi(ATTN_NORM)],
                },
                &a.dln,
                x,
                p(ATTN_NORM),
                &s.rstd1,
                d,
            );
        }
        if full {
            be.embedding_bwd(&mut grads[lay.embed()], &a.dres, &a.ids, d);
        }

        let losses = be.download(&a.losses);
        let sum: f64 = losses.iter().map(|&x| x as f64).sum();
        Ok((sum / n_valid as f64) as f32)
    }
}
