//! AdamW over all parameter tensors with global-norm gradient clipping. The clip is folded into
//! the optimizer's gradient scale, so clipping costs one reduction and no extra pass.

use serde::{Deserialize, Serialize};
use tinyllama_engine::{Backend, Llama};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Exempt RMSNorm weights and the embedding / LM head from weight decay. TinyLlama decayed
    /// everything, so the default is false.
    pub no_decay_norms_and_embeddings: bool,
    /// Clip the global gradient norm to this value (0 disables clipping).
    pub grad_clip: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
            no_decay_norms_and_embeddings: false,
            grad_clip: 1.0,
        }
    }
}

/// First and second moments, one buffer per parameter tensor.
pub struct AdamW<B: Backend> {
    pub cfg: AdamWConfig,
    pub m: Vec<B::Buf>,
    pub v: Vec<B::Buf>,
    /// Optimizer steps taken (bias correction uses `step + 1` for the next one).
    pub step: u64,
}

impl<B: Backend> AdamW<B> {
    pub fn new(model: &Llama<B>, cfg: AdamWConfig) -> Self {
        AdamW {
            cfg,
            m: model.zero_grads(),
            v: model.zero_grads(),
            step: 0,
        }
    }

    /// Global L2 norm of the gradients (f64, fixed reduction order).
    pub fn grad_norm(model: &Llama<B>, grads: &[B::Buf]) -> f64 {
        grads
            .iter()
            .map(|g| model.backend.sum_squares(g))
            .sum::<f64>()
            .sqrt()
    }

    /// One update with learning rate `lr`; gradients are scaled by `clip / norm` when the norm
    /// exceeds the clip value. Returns the scale applied.
    #[allow(clippy::needless_range_loop)] // indexes four parallel tensor lists
    pub fn update(
        &mut self,
        model: &mut Llama<B>,
        grads: &[B::Buf],
        lr: f64,
        grad_norm: f64,
    ) -> f64 {
        let c = &self.cfg;
        let scale = if c.grad_clip > 0.0 && grad_norm > c.grad_clip {
            c.grad_clip / (grad_norm + 1e-6)
        } else {
            1.0
        };
        self.step += 1;
        for i in 0..model.weights.len() {
            let kind = model.specs[i].kind;
            let wd = if c.no_decay_norms_and_embeddings && (kind.is_norm() || kind.is_embedding()) {
                0.0
            } else {
                c.weight_decay
            };
            model.backend.adamw(
                &mut model.weights[i],
                &grads[i],
                &mut self.m[i],
                &mut self.v[i],
                lr as f32,
                c.beta1 as f32,
                c.beta2 as f32,
                c.eps as f32,
                wd as f32,
                self.step,
                scale as f32,
            );
        }
        scale
    }
}
