//! The model configuration and its Hugging Face `config.json` form.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Hyper-parameters of a Llama-2-family decoder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub vocab_size: usize,
    /// Width of the residual stream (`hidden_size`).
    pub dim: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    /// Key/value heads; fewer than `n_heads` means grouped-query attention.
    pub n_kv_heads: usize,
    /// Hidden width of the SwiGLU MLP (`intermediate_size`).
    pub ffn_dim: usize,
    pub rope_theta: f64,
    pub norm_eps: f64,
    /// Longest sequence the model is trained or served at (`max_position_embeddings`).
    pub max_seq_len: usize,
    /// Whether the LM head shares the token-embedding matrix.
    pub tie_embeddings: bool,
    pub bos_id: u32,
    pub eos_id: u32,
}

impl ModelConfig {
    pub fn head_dim(&self) -> usize {
        self.dim / self.n_heads
    }
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim()
    }

    /// Checks the invariants the engine relies on; the message says which field to fix.
    pub fn validate(&self) -> Result<()> {
        let fields = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.dim),
            ("num_hidden_layers", self.n_layers),
            ("num_attention_heads", self.n_heads),
            ("num_key_value_heads", self.n_kv_heads),
            ("intermediate_size", self.ffn_dim),
            ("max_position_embeddings", self.max_seq_len),
        ];
        for (name, v) in fields {
            if v == 0 {
                bail!("model config: `{name}` must be positive, got 0");
            }
        }
        // Upper bounds far above any real Llama (so every real config passes) that stop an
        // absurd value before it turns into an allocation of many gigabytes (the rotary table
        // alone is max_position_embeddings × head_dim floats).
        let limits = [
            ("vocab_size", self.vocab_size, 1 << 22),
            ("hidden_size", self.dim, 1 << 16),
            ("num_hidden_layers", self.n_layers, 1 << 10),
            ("num_attention_heads", self.n_heads, 1 << 10),
            ("num_key_value_heads", self.n_kv_heads, 1 << 10),
            ("intermediate_size", self.ffn_dim, 1 << 18),
            ("max_position_embeddings", self.max_seq_len, 1 << 20),
        ];
        for (name, v, max) in limits {
            if v > max {
                bail!(
                    "model config: `{name}` is {v}, above the {max} this implementation supports; check config.json"
                );
            }
        }
        if !self.dim.is_multiple_of(self.n_heads) {
            bail!(
                "model config: hidden_size {} is not divisible by num_attention_heads {}",
                self.dim,
                self.n_heads
            );
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            bail!(
                "model config: num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.n_heads,
                self.n_kv_heads
            );
        }
        if !self.head_dim().is_multiple_of(2) {
            bail!(
                "model config: head dimension {} must be even for rotary embeddings",
                self.head_dim()
            );
        }
        if self.bos_id as usize >= self.vocab_size || self.eos_id as usize >= self.vocab_size {
            bail!(
                "model config: bos_token_id {} / eos_token_id {} must be below vocab_size {}",
                self.bos_id,
                self.eos_id,
                self.vocab_size
            );
        }
        Ok(())
    }

    /// Number of trainable parameters (the LM head counted once when tied).
    pub fn num_params(&self) -> u64 {
        crate::params::param_specs(self)
            .iter()
            .map(|p| p.numel() as u64)
            .sum()
    }

    /// Parameters excluding the embedding matrix and the LM head (the "non-embedding" count
    /// used by scaling laws).
    pub fn num_non_embedding_params(&self) -> u64 {
        let emb = (self.vocab_size * self.dim) as u64;
        self.num_params() - emb * if self.tie_embeddings { 1 } else { 2 }
    }

    /// Training FLOPs per token for a context of `seq_len`: 6N for the matmuls of every
    /// parameter (forward 2N, backward 4N) plus the attention score and value products,
    /// 6 · 2 · n_layers · seq_len · dim (the PaLM appendix B convention; causal masking is not
    /// subtracted, which is how MFU is conventionally reported).
    pub fn train_flops_per_token(&self, seq_len: usize) -> f64 {
        let n = self.num_params() as f64
            - if self.tie_embeddings {
                0.0
            } else {
                (self.vocab_size * self.dim) as f64
            };
        // The input embedding is a lookup, not a matmul; a tied matrix still does the head matmul.
        6.0 * n + 12.0 * (self.n_layers * seq_len * self.dim) as f64
    }

    /// Reads a Hugging Face `config.json` (LlamaForCausalLM).
    pub fn from_hf_json(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read model config {}", path.display()))?;
        Self::from_hf_str(&text).with_context(|| format!("in {}", path.display()))
    }

    pub fn from_hf_str(text: &str) -> Result<Self> {
        let v: serde_json::Value =
            serde_json::from_str(text).context("config.json is not valid JSON")?;
        let get_u = |k: &str| -> Result<usize> {
            v.get(k)
                .and_then(|x| x.as_u64())
                .map(|x| x as usize)
                .with_context(|| format!("config.json: missing or non-integer field `{k}`"))
        };
        if let Some(mt) = v.get("model_type").and_then(|x| x.as_str()) {
            if mt != "llama" {
                bail!("config.json: model_type is `{mt}`, only `llama` is supported");
            }
        }
        if let Some(act) = v.get("hidden_act").and_then(|x| x.as_str()) {
            if act != "silu" {
                bail!("config.json: hidden_act `{act}` is not supported (Llama uses `silu`)");
            }
        }
        // transformers < 5 writes `rope_theta` and `rope_scaling`; transformers 5 writes
        // `rope_parameters: {rope_theta, rope_type}`. Only plain RoPE is implemented, so any
        // scaling type is refused rather than silently ignored.
        let mut rope_theta = v.get("rope_theta").and_then(|x| x.as_f64());
        for key in ["rope_scaling", "rope_parameters"] {
            match v.get(key) {
                None | Some(serde_json::Value::Null) => {}
                Some(rs) => {
                    let kind = rs
                        .get("rope_type")
                        .or_else(|| rs.get("type"))
                        .and_then(|x| x.as_str())
                        .unwrap_or("default");
                    if kind != "default" {
                        bail!("config.json: {key} with rope_type `{kind}` is not supported (only plain RoPE is); remove it to use plain RoPE");
                    }
                    if let Some(t) = rs.get("rope_theta").and_then(|x| x.as_f64()) {
                        rope_theta = Some(t);
                    }
                }
            }
        }
        for k in ["attention_bias", "mlp_bias"] {
            if v.get(k).and_then(|x| x.as_bool()) == Some(true) {
                bail!("config.json: `{k}: true` is not supported (Llama-2 has no biases)");
            }
        }
        let dim = get_u("hidden_size")?;
        let n_heads = get_u("num_attention_heads")?;
        if let Some(hd) = v.get("head_dim").and_then(|x| x.as_u64()) {
            if n_heads > 0 && hd as usize != dim / n_heads {
                bail!("config.json: head_dim {hd} != hidden_size / num_attention_heads; not supported");
            }
        }
        let id = |k: &str, default: u32| -> u32 {
            match v.get(k) {
                Some(serde_json::Value::Number(n)) => {
                    n.as_u64().map(|x| x as u32).unwrap_or(default)
                }
                Some(serde_json::Value::Array(a)) => a
                    .first()
                    .and_then(|x| x.as_u64())
                    .map(|x| x as u32)
                    .unwrap_or(default),
                _ => default,
            }
        };
        let cfg = ModelConfig {
            vocab_size: get_u("vocab_size")?,
            dim,
            n_layers: get_u("num_hidden_layers")?,
            n_heads,
            n_kv_heads: v
                .get("num_key_value_heads")
                .and_then(|x| x.as_u64())
                .map(|x| x as usize)
                .unwrap_or(n_heads),
            ffn_dim: get_u("intermediate_size")?,
            rope_theta: rope_theta.unwrap_or(10000.0),
            norm_eps: v
                .get("rms_norm_eps")
                .and_then(|x| x.as_f64())
                .unwrap_or(1e-6),
            max_seq_len: v
                .get("max_position_embeddings")
                .and_then(|x| x.as_u64())
                .map(|x| x as usize)
                .unwrap_or(2048),
            tie_embeddings: v
                .get("tie_word_embeddings")
                .and_then(|x| x.as_bool())
                .unwrap_or(false),
            bos_id: id("bos_token_id", 1),
            eos_id: id("eos_token_id", 2),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// The `config.json` transformers writes for this model.
    pub fn to_hf_json(&self, torch_dtype: &str) -> serde_json::Value {
        serde_json::json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "attention_bias": false,
            "attention_dropout": 0.0,
            "mlp_bias": false,
            "hidden_act": "silu",
            "vocab_size": self.vocab_size,
            "hidden_size": self.dim,
            "intermediate_size": self.ffn_dim,
            "num_hidden_layers": self.n_layers,
            "num_attention_heads": self.n_heads,
            "num_key_value_heads": self.n_kv_heads,
            "head_dim": self.head_dim(),
            "max_position_embeddings": self.max_seq_len,
            "rms_norm_eps": self.norm_eps,
            "rope_theta": self.rope_theta,
            "rope_parameters": { "rope_theta": self.rope_theta, "rope_type": "default" },
            "tie_word_embeddings": self.tie_embeddings,
            "bos_token_id": self.bos_id,
            "eos_token_id": self.eos_id,
            "initializer_range": 0.02,
            "pretraining_tp": 1,
            "use_cache": true,
            "torch_dtype": torch_dtype,
            "dtype": torch_dtype,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_transformers_4_and_5_rope_fields() {
        let base = r#""vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 4"#;
        let v4 = ModelConfig::from_hf_str(&format!(
            "{{{base}, \"rope_theta\": 500.0, \"rope_scaling\": null}}"
        ))
        .unwrap();
        assert_eq!(v4.rope_theta, 500.0);
        let v5 = ModelConfig::from_hf_str(&format!(
            "{{{base}, \"rope_parameters\": {{\"rope_theta\": 1234.0, \"rope_type\": \"default\"}}}}"
        ))
        .unwrap();
        assert_eq!(v5.rope_theta, 1234.0);
        let e = ModelConfig::from_hf_str(&format!(
            "{{{base}, \"rope_parameters\": {{\"rope_theta\": 1.0, \"rope_type\": \"yarn\"}}}}"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("yarn"), "{e}");
        // Our own output reads back identically.
        let back = ModelConfig::from_hf_str(&v5.to_hf_json("float32").to_string()).unwrap();
        assert_eq!(back, v5);
    }

    #[test]
    fn missing_field_is_named() {
        let e = ModelConfig::from_hf_str(r#"{"vocab_size": 10}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("hidden_size"), "{e}");
    }
}
