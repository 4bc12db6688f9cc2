//! The list of parameter tensors of a Llama model, in a fixed order, with their Hugging Face
//! names and shapes, and host-side weights with TinyLlama's initialisation.

use crate::rng::Rng;
use crate::ModelConfig;

/// What a tensor is; the engine and the optimizer dispatch on this (e.g. no weight decay on
/// norms).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParamKind {
    Embedding,
    AttnNorm,
    Wq,
    Wk,
    Wv,
    Wo,
    MlpNorm,
    WGate,
    WUp,
    WDown,
    FinalNorm,
    LmHead,
    /// A LoRA adapter's down-projection `A` (`[rank, in]`), trained while the base is frozen.
    LoraA,
    /// A LoRA adapter's up-projection `B` (`[out, rank]`).
    LoraB,
}

impl ParamKind {
    pub fn is_norm(self) -> bool {
        matches!(
            self,
            ParamKind::AttnNorm | ParamKind::MlpNorm | ParamKind::FinalNorm
        )
    }
    pub fn is_embedding(self) -> bool {
        matches!(self, ParamKind::Embedding | ParamKind::LmHead)
    }
    /// A LoRA adapter matrix (weight decay applies to it like to any other matrix).
    pub fn is_lora(self) -> bool {
        matches!(self, ParamKind::LoraA | ParamKind::LoraB)
    }
}

/// One parameter tensor: its Hugging Face name, shape (row-major, as PyTorch stores it) and
/// the layer it belongs to.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub kind: ParamKind,
    pub layer: Option<usize>,
}

impl ParamSpec {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Per-layer tensors in the order [`param_specs`] lists them.
pub const LAYER_KINDS: [ParamKind; 9] = [
    ParamKind::AttnNorm,
    ParamKind::Wq,
    ParamKind::Wk,
    ParamKind::Wv,
    ParamKind::Wo,
    ParamKind::MlpNorm,
    ParamKind::WGate,
    ParamKind::WUp,
    ParamKind::WDown,
];

/// All parameters: embedding, then each layer's nine tensors, the final norm and (untied) the
/// LM head.
pub fn param_specs(cfg: &ModelConfig) -> Vec<ParamSpec> {
    let (d, kv, f, v) = (cfg.dim, cfg.kv_dim(), cfg.ffn_dim, cfg.vocab_size);
    let qd = cfg.n_heads * cfg.head_dim();
    let mut out = vec![ParamSpec {
        name: "model.embed_tokens.weight".into(),
        shape: vec![v, d],
        kind: ParamKind::Embedding,
        layer: None,
    }];
    for l in 0..cfg.n_layers {
        let p = |suffix: &str, shape: Vec<usize>, kind| ParamSpec {
            name: format!("model.layers.{l}.{suffix}"),
            shape,
            kind,
            layer: Some(l),
        };
        out.push(p("input_layernorm.weight", vec![d], ParamKind::AttnNorm));
        out.push(p("self_attn.q_proj.weight", vec![qd, d], ParamKind::Wq));
        out.push(p("self_attn.k_proj.weight", vec![kv, d], ParamKind::Wk));
        out.push(p("self_attn.v_proj.weight", vec![kv, d], ParamKind::Wv));
        out.push(p("self_attn.o_proj.weight", vec![d, qd], ParamKind::Wo));
        out.push(p(
            "post_attention_layernorm.weight",
            vec![d],
            ParamKind::MlpNorm,
        ));
        out.push(p("mlp.gate_proj.weight", vec![f, d], ParamKind::WGate));
        out.push(p("mlp.up_proj.weight", vec![f, d], ParamKind::WUp));
        out.push(p("mlp.down_proj.weight", vec![d, f], ParamKind::WDown));
    }
    out.push(ParamSpec {
        name: "model.norm.weight".into(),
        shape: vec![d],
        kind: ParamKind::FinalNorm,
        layer: None,
    });
    if !cfg.tie_embeddings {
        out.push(ParamSpec {
            name: "lm_head.weight".into(),
            shape: vec![v, d],
            kind: ParamKind::LmHead,
            layer: None,
        });
    }
    out
}

/// Weights in host memory, f32, one vector per [`ParamSpec`] in [`param_specs`] order.
#[derive(Clone, Debug)]
pub struct HostWeights {
    pub config: ModelConfig,
    pub specs: Vec<ParamSpec>,
    pub tensors: Vec<Vec<f32>>,
}

impl HostWeights {
    pub fn zeros(cfg: &ModelConfig) -> Self {
        let specs = param_specs(cfg);
        let tensors = specs.iter().map(|s| vec![0.0; s.numel()]).collect();
        HostWeights {
            config: cfg.clone(),
            specs,
            tensors,
        }
    }

    /// TinyLlama's initialisation (lit-gpt `_init_weights`): every linear and the embedding
    /// from N(0, sqrt(2 / (5·dim))) (the "small init" of Nguyen & Salazar), the attention and
    /// MLP output projections from N(0, 1/sqrt(dim)/n_layers), norms at one. Each tensor has
    /// its own RNG stream, so the result does not depend on thread count or tensor order.
    pub fn init(cfg: &ModelConfig, seed: u64) -> Self {
        let mut w = Self::zeros(cfg);
        let small = (2.0 / (5.0 * cfg.dim as f64)).sqrt();
        let out_proj = 1.0 / (cfg.dim as f64).sqrt() / cfg.n_layers as f64;
        for (i, (spec, t)) in w.specs.iter().zip(w.tensors.iter_mut()).enumerate() {
            let std = match spec.kind {
                k if k.is_norm() => {
                    t.fill(1.0);
                    continue;
                }
                ParamKind::Wo | ParamKind::WDown => out_proj,
                _ => small,
            };
            let mut rng = Rng::derive(seed, i as u64);
            for x in t.iter_mut() {
                *x = (rng.normal() * std) as f32;
            }
        }
        w
    }

    pub fn get(&self, name: &str) -> Option<&[f32]> {
        self.specs
            .iter()
            .position(|s| s.name == name)
            .map(|i| self.tensors[i].as_slice())
    }

    pub fn num_params(&self) -> usize {
        self.tensors.iter().map(|t| t.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::presets;

    #[test]
    fn init_is_deterministic_and_scaled() {
        let cfg = presets::get("micro-1m").unwrap();
        let a = HostWeights::init(&cfg, 3);
        let b = HostWeights::init(&cfg, 3);
        let c = HostWeights::init(&cfg, 4);
        assert_eq!(a.tensors, b.tensors);
        assert_ne!(a.tensors, c.tensors);
        let std = |t: &[f32]| {
            (t.iter().map(|x| (*x as f64).powi(2)).sum::<f64>() / t.len() as f64).sqrt()
        };
        let q = a.get("model.layers.0.self_attn.q_proj.weight").unwrap();
        let o = a.get("model.layers.0.self_attn.o_proj.weight").unwrap();
        let want_q = (2.0 / (5.0 * 128.0f64)).sqrt();
        let want_o = 1.0 / 128f64.sqrt() / 2.0;
        assert!((std(q) / want_q - 1.0).abs() < 0.05);
        assert!((std(o) / want_o - 1.0).abs() < 0.05);
        assert!(a
            .get("model.norm.weight")
            .unwrap()
            .iter()
            .all(|&x| x == 1.0));
    }
}
