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

impl AdamWConfig {
    /// The factor gradients are scaled by: `clip / norm` when the global norm exceeds the clip.
    pub fn clip_scale(&self, grad_norm: f64) -> f64 {
        if self.grad_clip > 0.0 && grad_norm > self.grad_clip {
            self.grad_clip / (grad_norm + 1e-6)
        } else {
            1.0
        }
    }

    /// One AdamW update of one buffer (`step` ≥ 1 for the bias corrections, gradients scaled
    /// by `scale`): the single place the configuration meets the backend's kernel.
    #[allow(clippy::too_many_arguments)]
    pub fn apply<B: Backend>(
        &self,
        be: &B,
        p: &mut B::Buf,
        g: &B::Buf,
        (m, v): (&mut B::Buf, &mut B::Buf),
        lr: f64,
        weight_decay: f64,
        step: u64,
        scale: f64,
    ) {
        be.adamw(
            p,
            g,
            m,
            v,
            lr as f32,
            self.beta1 as f32,
            self.beta2 as f32,
            self.eps as f32,
            weight_decay as f32,
            step,
            scale as f32,
        );
    }

    /// The weight decay of a tensor of this kind.
    pub fn decay_for(&self, kind: tinyllama_model::params::ParamKind) -> f64 {
        if self.no_decay_norms_and_embeddings && (kind.is_norm() || kind.is_embedding()) {
            0.0
        } else {
            self.weight_decay
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
        let scale = c.clip_scale(grad_norm);
        self.step += 1;
        let (be, specs, weights) = model.trainable_parts_mut();
        for i in 0..weights.len() {
            let wd = c.decay_for(specs[i].kind);
            c.apply(
                be,
                &mut weights[i],
                &grads[i],
                (&mut self.m[i], &mut self.v[i]),
                lr,
                wd,
                self.step,
                scale,
            );
        }
        scale
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tinyllama_engine::{Activations, CpuBackend, LoraConfig};
    use tinyllama_model::params::ParamKind;
    use tinyllama_model::{presets, HostWeights};

    #[test]
    fn adapters_are_decayed_like_other_matrices() {
        let c = AdamWConfig {
            no_decay_norms_and_embeddings: true,
            ..AdamWConfig::default()
        };
        assert_eq!(c.decay_for(ParamKind::LoraA), c.weight_decay);
        assert_eq!(c.decay_for(ParamKind::LoraB), c.weight_decay);
        assert_eq!(c.decay_for(ParamKind::AttnNorm), 0.0);
    }

    #[test]
    fn lora_step_moves_only_the_adapters() {
        let cfg = presets::get("test-tiny").unwrap();
        let host = HostWeights::init(&cfg, 1);
        let mut model = Llama::new(CpuBackend::<f32>::new(), &host).unwrap();
        model.attach_lora(LoraConfig::default(), 2).unwrap();
        let mut opt = AdamW::new(&model, AdamWConfig::default());
        assert_eq!(opt.m.len(), 2 * 7 * cfg.n_layers);
        let before = model.lora_host();
        let inputs: Vec<u32> = (0..16).map(|i| (i * 7 % cfg.vocab_size) as u32).collect();
        let targets: Vec<i32> = inputs.iter().map(|&t| ((t + 1) % 50) as i32).collect();
        let mut acts = Activations::new(&model, 2, 8);
        for step in 0..2 {
            model.set_dropout_seed(step);
            let mut grads = model.zero_grads();
            model
                .forward_backward(&mut acts, &mut grads, &inputs, &targets, 1.0)
                .unwrap();
            let norm = AdamW::grad_norm(&model, &grads);
            opt.update(&mut model, &grads, 1e-2, norm);
        }
        assert_eq!(model.to_host().tensors, host.tensors, "the base is frozen");
        let after = model.lora_host();
        assert!(
            before.iter().zip(&after).all(|(a, b)| a != b),
            "every adapter moved"
        );
    }
}
