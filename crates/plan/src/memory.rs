//! Memory per GPU for data-parallel mixed-precision training with AdamW, optionally sharded
//! with ZeRO / FSDP. **Estimates**: real frameworks differ in buffers, kernels and allocator
//! behaviour by several GiB either way; the point is the order of magnitude and what dominates.
//!
//! # Model states (N parameters, data-parallel degree P)
//!
//! | state                    | bytes / parameter | sharded (÷P) from |
//! |--------------------------|-------------------|-------------------|
//! | weights, bf16 working copy | 2               | ZeRO-3 (FSDP)     |
//! | gradients                | 2 (bf16) or 4 (f32, `--grad-dtype f32`) | ZeRO-2 |
//! | f32 master weights       | 4                 | ZeRO-1            |
//! | Adam first moment m, f32 | 4                 | ZeRO-1            |
//! | Adam second moment v, f32| 4                 | ZeRO-1            |
//!
//! so 16 B/param unsharded with bf16 gradients (18 with f32), and `16N/P` under ZeRO-3.
//! ZeRO-3 additionally materialises unsharded bf16 parameters for the units being computed:
//! the root unit (embedding, final norm, LM head) and two transformer blocks (the current one
//! and the prefetched next), plus the unsharded gradient of the largest unit before its
//! reduce-scatter.
//!
//! # Activations (bf16, 2 B per element, flash attention)
//!
//! Per token and layer, the tensors a Llama block keeps for its backward pass are, with `d` the
//! model width, `kv` the key/value width (`n_kv_heads · head_dim`) and `f` the SwiGLU width:
//!
//! * attention: the RMSNorm input (d) and output (d, the input of the q/k/v projections),
//!   q (d) and k (kv) after RoPE, v (kv), and the attention output (d, kept by flash
//!   attention's backward and as the input of the output projection); in f32 the RMSNorm's
//!   1/rms (1) and flash attention's softmax log-sum-exp (one per head). Flash attention keeps
//!   no seq × seq score matrix, so this is linear in the sequence length.
//! * SwiGLU MLP: the RMSNorm input (d) and output (d, the input of gate and up), gate (f),
//!   up (f) and the product silu(gate)·up (f, the input of the down projection); the RMSNorm's
//!   1/rms (1, f32). An unfused SwiGLU also keeps silu(gate), another f.
//!
//! i.e. `(6d + 2kv + 3f)·2 + (n_heads + 2)·4` bytes per token per layer. With recomputation
//! (activation checkpointing per block) only each block's input (d, bf16) is kept; the backward
//! pass recomputes one block at a time. Either way one block's worth of activation gradients is
//! live during its backward pass (the *working set*: one layer's activations; two with
//! recomputation, the recomputed activations plus their gradients). Outside the blocks: the final
//! RMSNorm's input and output (2d) and the logits of the loss chunk, `chunk · vocab · 6` bytes
//! (bf16 logits plus one f32 buffer for the softmax and its gradient, as a fused cross-entropy
//! does; without chunking the chunk is the whole micro-batch).
//!
//! # Allowance
//!
//! A fixed [`CONTEXT_BYTES`] for the CUDA context, cuBLAS / NCCL workspaces and kernels, plus
//! [`FRAGMENTATION`] of everything else for allocator fragmentation.

use serde::{Deserialize, Serialize};
use tinyllama_model::ModelConfig;

use crate::gpus::GIB;

/// CUDA context, library workspaces and communication buffers.
pub const CONTEXT_BYTES: f64 = GIB;
/// Fraction added to all allocations for caching-allocator fragmentation.
pub const FRAGMENTATION: f64 = 0.10;
/// Bytes per element of the loss chunk's logits: bf16 logits + an f32 softmax/gradient buffer.
pub const LOGIT_BYTES: f64 = 6.0;

/// Precision of the gradients.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GradDtype {
    #[default]
    Bf16,
    F32,
}

impl GradDtype {
    pub fn bytes(self) -> f64 {
        match self {
            GradDtype::Bf16 => 2.0,
            GradDtype::F32 => 4.0,
        }
    }
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "bf16" => Ok(GradDtype::Bf16),
            "f32" | "fp32" => Ok(GradDtype::F32),
            _ => anyhow::bail!("--grad-dtype `{s}`: choose bf16 or f32"),
        }
    }
}

/// What the estimate needs.
#[derive(Clone, Debug)]
pub struct MemoryInputs<'a> {
    pub params: f64,
    /// The architecture; without it activations cannot be estimated.
    pub config: Option<&'a ModelConfig>,
    pub data_parallel: u64,
    pub zero_stage: u8,
    pub grad_dtype: GradDtype,
    pub micro_batch: u64,
    pub seq_len: u64,
    /// Tokens per loss chunk; `None` is the whole micro-batch.
    pub loss_chunk: Option<u64>,
    pub recompute: bool,
    pub gpu_bytes: Option<f64>,
}

/// Bytes per parameter of each model state, before sharding.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BytesPerParam {
    pub weights: f64,
    pub grads: f64,
    pub master: f64,
    pub adam_m: f64,
    pub adam_v: f64,
}

/// One tensor saved for backward, per token per layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SavedTensor {
    pub name: String,
    pub elements_per_token: f64,
    pub bytes_per_element: f64,
}

/// Activation memory for the micro-batch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Activations {
    pub saved_per_layer: Vec<SavedTensor>,
    pub bytes_per_token_per_layer: f64,
    /// All blocks' saved tensors (no recomputation).
    pub blocks_bytes: f64,
    /// Only each block's input (recomputation).
    pub blocks_recompute_bytes: f64,
    /// One block's activations, live during its backward pass.
    pub one_layer_bytes: f64,
    pub final_norm_bytes: f64,
    pub loss_chunk_tokens: u64,
    pub logits_bytes: f64,
}

/// The per-GPU total for one recomputation setting.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Total {
    pub recompute: bool,
    /// Saved activations + working set + final norm + logits.
    pub activations_bytes: f64,
    /// Context + fragmentation.
    pub allowance_bytes: f64,
    pub total_bytes: f64,
    /// Whether it fits the GPU, when a GPU was given.
    pub fits: Option<bool>,
    /// The largest micro-batch that fits at this sequence length (0: not even 1).
    pub max_micro_batch: Option<u64>,
}

/// The memory section of a plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    pub data_parallel: u64,
    pub zero_stage: u8,
    pub grad_dtype: GradDtype,
    pub micro_batch: u64,
    pub seq_len: u64,
    pub recompute: bool,
    pub bytes_per_param: BytesPerParam,
    /// Per GPU, after sharding.
    pub weights_bytes: f64,
    pub grads_bytes: f64,
    /// f32 master + Adam m + v, per GPU after sharding.
    pub optimizer_bytes: f64,
    /// ZeRO-3's unsharded parameters and gradient in flight (0 otherwise).
    pub zero3_gathered_bytes: f64,
    pub model_states_bytes: f64,
    /// Whether the model states plus the allowance fit the GPU, before any activations.
    pub model_states_fit: Option<bool>,
    pub context_bytes: f64,
    pub fragmentation: f64,
    /// `None` without an architecture.
    pub activations: Option<Activations>,
    pub without_recompute: Option<Total>,
    pub with_recompute: Option<Total>,
    pub gpu_memory_bytes: Option<f64>,
}

impl Memory {
    /// The total for the chosen recomputation setting.
    pub fn chosen(&self) -> Option<&Total> {
        if self.recompute {
            self.with_recompute.as_ref()
        } else {
            self.without_recompute.as_ref()
        }
    }
}

fn saved_tensors(c: &ModelConfig) -> Vec<SavedTensor> {
    let (d, kv, f) = (c.dim as f64, c.kv_dim() as f64, c.ffn_dim as f64);
    let q = (c.n_heads * c.head_dim()) as f64;
    let t = |name: &str, e: f64, b: f64| SavedTensor {
        name: name.into(),
        elements_per_token: e,
        bytes_per_element: b,
    };
    vec![
        t("attn RMSNorm input", d, 2.0),
        t("attn RMSNorm output (q/k/v input)", d, 2.0),
        t("attn RMSNorm 1/rms", 1.0, 4.0),
        t("q after RoPE", q, 2.0),
        t("k after RoPE", kv, 2.0),
        t("v", kv, 2.0),
        t("attention output (o_proj input)", q, 2.0),
        t("flash-attention log-sum-exp", c.n_heads as f64, 4.0),
        t("MLP RMSNorm input", d, 2.0),
        t("MLP RMSNorm output (gate/up input)", d, 2.0),
        t("MLP RMSNorm 1/rms", 1.0, 4.0),
        t("gate", f, 2.0),
        t("up", f, 2.0),
        t("silu(gate)*up (down input)", f, 2.0),
    ]
}

/// Parameters of one transformer block and of the root unit (embedding, final norm, head).
fn unit_params(c: &ModelConfig) -> (f64, f64) {
    let (d, kv, f) = (c.dim as f64, c.kv_dim() as f64, c.ffn_dim as f64);
    let q = (c.n_heads * c.head_dim()) as f64;
    let block = d * (q + 2.0 * kv) + q * d + 3.0 * d * f + 2.0 * d;
    let emb = (c.vocab_size * c.dim) as f64;
    let root = emb * if c.tie_embeddings { 1.0 } else { 2.0 } + d;
    (block, root)
}

/// Estimates per-GPU memory; see the module documentation for the formulas.
pub fn estimate(m: &MemoryInputs) -> Memory {
    let p = m.data_parallel.max(1) as f64;
    let n = m.params;
    let bpp = BytesPerParam {
        weights: 2.0,
        grads: m.grad_dtype.bytes(),
        master: 4.0,
        adam_m: 4.0,
        adam_v: 4.0,
    };
    let shard = |stage: u8| if m.zero_stage >= stage { p } else { 1.0 };
    let weights = bpp.weights * n / shard(3);
    let grads = bpp.grads * n / shard(2);
    let optimizer = (bpp.master + bpp.adam_m + bpp.adam_v) * n / shard(1);
    let gathered = match m.config {
        Some(c) if m.zero_stage >= 3 && p > 1.0 => {
            let (block, root) = unit_params(c);
            2.0 * (root + 2.0 * block) + bpp.grads * root.max(block)
        }
        _ => 0.0,
    };
    let states = weights + grads + optimizer + gathered;

    let acts = m
        .config
        .map(|c| activations(c, m.micro_batch, m.seq_len, m.loss_chunk));
    let allowance = |act: f64| CONTEXT_BYTES + FRAGMENTATION * (states + act);
    let total = |act: f64| states + act + allowance(act);
    // The largest micro-batch that fits; the total grows monotonically with it.
    let max_mb = |c: &ModelConfig, recompute: bool| -> Option<u64> {
        let g = m.gpu_bytes?;
        let fits =
            |mb: u64| total(activations(c, mb, m.seq_len, m.loss_chunk).live(recompute)) <= g;
        if !fits(1) {
            return Some(0);
        }
        let (mut lo, mut hi) = (1u64, 2u64);
        while fits(hi) {
            if hi >= 1 << 24 {
                return Some(hi);
            }
            lo = hi;
            hi *= 2;
        }
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if fits(mid) {
                lo = mid
            } else {
                hi = mid
            }
        }
        Some(lo)
    };
    let total_for = |c: &ModelConfig, a: &Activations, recompute: bool| {
        let act = a.live(recompute);
        Total {
            recompute,
            activations_bytes: act,
            allowance_bytes: allowance(act),
            total_bytes: total(act),
            fits: m.gpu_bytes.map(|g| total(act) <= g),
            max_micro_batch: max_mb(c, recompute),
        }
    };
    let (without, with) = match (m.config, &acts) {
        (Some(c), Some(a)) => (Some(total_for(c, a, false)), Some(total_for(c, a, true))),
        _ => (None, None),
    };

    Memory {
        data_parallel: m.data_parallel.max(1),
        zero_stage: m.zero_stage,
        grad_dtype: m.grad_dtype,
        micro_batch: m.micro_batch,
        seq_len: m.seq_len,
        recompute: m.recompute,
        bytes_per_param: bpp,
        weights_bytes: weights,
        grads_bytes: grads,
        optimizer_bytes: optimizer,
        zero3_gathered_bytes: gathered,
        model_states_bytes: states,
        model_states_fit: m.gpu_bytes.map(|g| total(0.0) <= g),
        context_bytes: CONTEXT_BYTES,
        fragmentation: FRAGMENTATION,
        activations: acts,
        without_recompute: without,
        with_recompute: with,
        gpu_memory_bytes: m.gpu_bytes,
    }
}

/// Activation memory of a micro-batch of `micro_batch` sequences of `seq_len` tokens.
pub fn activations(
    c: &ModelConfig,
    micro_batch: u64,
    seq_len: u64,
    loss_chunk: Option<u64>,
) -> Activations {
    let saved = saved_tensors(c);
    let per_tl: f64 = saved
        .iter()
        .map(|t| t.elements_per_token * t.bytes_per_element)
        .sum();
    let tokens_u = micro_batch * seq_len;
    let tokens = tokens_u as f64;
    let (d, layers) = (c.dim as f64, c.n_layers as f64);
    let chunk = loss_chunk.unwrap_or(tokens_u).min(tokens_u);
    Activations {
        bytes_per_token_per_layer: per_tl,
        blocks_bytes: per_tl * layers * tokens,
        blocks_recompute_bytes: 2.0 * d * layers * tokens,
        one_layer_bytes: per_tl * tokens,
        final_norm_bytes: (2.0 * 2.0 * d + 4.0) * tokens,
        loss_chunk_tokens: chunk,
        logits_bytes: chunk as f64 * c.vocab_size as f64 * LOGIT_BYTES,
        saved_per_layer: saved,
    }
}

impl Activations {
    /// Peak live activation bytes: the saved tensors, the backward working set (one layer;
    /// two with recomputation), the final norm and the loss chunk's logits.
    pub fn live(&self, recompute: bool) -> f64 {
        let (saved, working) = if recompute {
            (self.blocks_recompute_bytes, 2.0 * self.one_layer_bytes)
        } else {
            (self.blocks_bytes, self.one_layer_bytes)
        };
        saved + working + self.final_norm_bytes + self.logits_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tinyllama_model::presets;

    fn inputs(c: &ModelConfig, stage: u8) -> MemoryInputs<'_> {
        MemoryInputs {
            params: c.num_params() as f64,
            config: Some(c),
            data_parallel: 8,
            zero_stage: stage,
            grad_dtype: GradDtype::Bf16,
            micro_batch: 2,
            seq_len: 1024,
            loss_chunk: None,
            recompute: false,
            gpu_bytes: Some(80.0 * GIB),
        }
    }

    #[test]
    fn each_zero_stage_shards_one_more_state() {
        let c = presets::get("tinyllama-1.1b").unwrap();
        let n = c.num_params() as f64;
        let m: Vec<Memory> = (0..4).map(|s| estimate(&inputs(&c, s))).collect();
        assert_eq!(m[0].optimizer_bytes, 12.0 * n);
        assert_eq!(m[1].optimizer_bytes, 12.0 * n / 8.0);
        assert_eq!(m[1].grads_bytes, 2.0 * n);
        assert_eq!(m[2].grads_bytes, 2.0 * n / 8.0);
        assert_eq!(m[2].weights_bytes, 2.0 * n);
        assert_eq!(m[3].weights_bytes, 2.0 * n / 8.0);
        assert!(m[3].zero3_gathered_bytes > 0.0 && m[2].zero3_gathered_bytes == 0.0);
        for w in m.windows(2) {
            assert!(w[1].model_states_bytes < w[0].model_states_bytes);
        }
    }

    #[test]
    fn recompute_saves_memory_and_max_micro_batch_is_the_boundary() {
        let c = presets::get("tinyllama-1.1b").unwrap();
        let m = estimate(&inputs(&c, 3));
        let (no, re) = (
            m.without_recompute.as_ref().unwrap(),
            m.with_recompute.as_ref().unwrap(),
        );
        assert!(re.total_bytes < no.total_bytes);
        for t in [no, re] {
            let mb = t.max_micro_batch.unwrap();
            assert!(mb >= 1);
            let at = |b: u64| {
                estimate(&MemoryInputs {
                    micro_batch: b,
                    recompute: t.recompute,
                    ..inputs(&c, 3)
                })
                .chosen()
                .unwrap()
                .total_bytes
            };
            assert!(at(mb) <= 80.0 * GIB && at(mb + 1) > 80.0 * GIB);
        }
        assert!(re.max_micro_batch > no.max_micro_batch);
    }

    #[test]
    fn loss_chunk_bounds_the_logits() {
        let c = presets::get("tinyllama-1.1b").unwrap();
        let a = activations(&c, 8, 2048, Some(1024));
        assert_eq!(a.logits_bytes, 1024.0 * 32000.0 * LOGIT_BYTES);
        let b = activations(&c, 1, 512, Some(1024));
        assert_eq!(b.loss_chunk_tokens, 512);
    }
}
