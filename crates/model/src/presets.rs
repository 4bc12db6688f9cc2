//! Named model sizes, in the manner of litgpt's config presets.

use crate::ModelConfig;
use anyhow::{bail, Result};

/// A preset: its name, a one-line description and the configuration.
pub struct Preset {
    pub name: &'static str,
    pub about: &'static str,
    pub config: ModelConfig,
}

#[allow(clippy::too_many_arguments)]
fn llama(
    vocab_size: usize,
    dim: usize,
    n_layers: usize,
    n_heads: usize,
    n_kv_heads: usize,
    ffn_dim: usize,
    max_seq_len: usize,
    tie_embeddings: bool,
) -> ModelConfig {
    ModelConfig {
        vocab_size,
        dim,
        n_layers,
        n_heads,
        n_kv_heads,
        ffn_dim,
        rope_theta: 10000.0,
        norm_eps: 1e-5,
        max_seq_len,
        tie_embeddings,
        bos_id: 1,
        eos_id: 2,
    }
}

/// Every preset, largest first.
pub fn all() -> Vec<Preset> {
    vec![
        Preset {
            name: "tinyllama-1.1b",
            about:
                "TinyLlama 1.1B: 22 layers, dim 2048, 32 heads / 4 KV heads, SwiGLU 5632, 32K vocab",
            config: llama(32000, 2048, 22, 32, 4, 5632, 2048, false),
        },
        Preset {
            name: "tinyllama-120m",
            about:
                "TinyLlama 120M: 12 layers, dim 768, 12 heads / 1 KV head, SwiGLU 2048, 32K vocab",
            config: llama(32000, 768, 12, 12, 1, 2048, 2048, false),
        },
        Preset {
            name: "cpu-25m",
            about: "a CPU-trainable 25M model: 6 layers, dim 512, 8 heads / 2 KV heads, 8K vocab",
            config: llama(8192, 512, 6, 8, 2, 1408, 512, false),
        },
        Preset {
            name: "demo-5m",
            about: "the demo model: 4 layers, dim 256, 8 heads / 2 KV heads, SwiGLU 704, 4K vocab",
            config: llama(4096, 256, 4, 8, 2, 704, 256, false),
        },
        Preset {
            name: "micro-1m",
            about:
                "a 1M model for quick CPU runs: 2 layers, dim 128, 4 heads / 2 KV heads, 2K vocab",
            config: llama(2048, 128, 2, 4, 2, 384, 256, false),
        },
        Preset {
            name: "test-tiny",
            about: "a few thousand parameters, for gradient checks and unit tests",
            config: llama(64, 16, 2, 4, 2, 24, 32, false),
        },
    ]
}

pub fn names() -> Vec<&'static str> {
    all().iter().map(|p| p.name).collect()
}

/// Looks a preset up by name; the error lists the valid names.
pub fn get(name: &str) -> Result<ModelConfig> {
    match all().into_iter().find(|p| p.name == name) {
        Some(p) => Ok(p.config),
        None => bail!(
            "unknown model preset `{name}`; choose one of: {}",
            names().join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tinyllama_has_exactly_the_published_parameter_count() {
        assert_eq!(get("tinyllama-1.1b").unwrap().num_params(), 1_100_048_384);
    }

    #[test]
    fn every_preset_is_valid() {
        for p in all() {
            p.config.validate().unwrap();
        }
    }

    #[test]
    fn unknown_preset_lists_choices() {
        let e = get("nope").unwrap_err().to_string();
        assert!(e.contains("demo-5m") && e.contains("tinyllama-1.1b"), "{e}");
    }
}
