//! Random models with a character-level tokenizer, written as Hugging Face directories, for
//! the tests of this crate, the server and the CLI (no downloaded data needed).

use anyhow::Result;
use std::path::Path;
use tinyllama_model::{hf, HostWeights, ModelConfig};

/// Characters of the test tokenizer after `<unk>`, `<s>`, `</s>`.
const CHARS: &str = " \nabcdefghijklmnopqrstuvwxyz.,!?'<|>/:ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

/// A `tokenizer.json`: one token per character (no merges), `<unk>`=0, `<s>`=1, `</s>`=2
/// (special), filler tokens `t<N>` up to `vocab_size`.
pub fn char_tokenizer_json(vocab_size: usize) -> String {
    let mut vocab = serde_json::Map::new();
    for (i, s) in ["<unk>", "<s>", "</s>"].iter().enumerate() {
        vocab.insert(s.to_string(), i.into());
    }
    for c in CHARS.chars() {
        if vocab.len() >= vocab_size {
            break;
        }
        let id = vocab.len();
        vocab.insert(c.to_string(), id.into());
    }
    while vocab.len() < vocab_size {
        let id = vocab.len();
        vocab.insert(format!("t{id}"), id.into());
    }
    let special = |id: usize, s: &str| {
        serde_json::json!({"id": id, "content": s, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true})
    };
    serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [special(0, "<unk>"), special(1, "<s>"), special(2, "</s>")],
        "normalizer": null,
        "pre_tokenizer": null,
        "post_processor": null,
        "decoder": {"type": "Fuse"},
        "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>",
            "continuing_subword_prefix": null, "end_of_word_suffix": null,
            "fuse_unk": true, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": []}
    })
    .to_string()
}

/// A small config (2 layers, dim 64, GQA, vocab 96, context `ctx`) for runtime tests.
pub fn small_config(ctx: usize) -> ModelConfig {
    ModelConfig {
        vocab_size: 96,
        dim: 64,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 2,
        ffn_dim: 160,
        rope_theta: 10000.0,
        norm_eps: 1e-5,
        max_seq_len: ctx,
        tie_embeddings: false,
        bos_id: 1,
        eos_id: 2,
    }
}

/// Random weights with a larger scale than TinyLlama's init, so the next-token distributions
/// are peaked (as in a trained model) rather than nearly uniform.
pub fn random_weights(cfg: &ModelConfig, seed: u64, gain: f32) -> HostWeights {
    let mut w = HostWeights::init(cfg, seed);
    for (spec, t) in w.specs.iter().zip(w.tensors.iter_mut()) {
        if !spec.kind.is_norm() {
            t.iter_mut().for_each(|x| *x *= gain);
        }
    }
    w
}

/// Writes a Hugging Face directory: config, f32 safetensors, the character tokenizer and,
/// if given, a `tokenizer_config.json`.
pub fn write_model_dir(w: &HostWeights, dir: &Path, tokenizer_config: Option<&str>) -> Result<()> {
    hf::save_dir(w, dir, hf::SaveDtype::F32, hf::DEFAULT_SHARD_BYTES)?;
    std::fs::write(
        dir.join("tokenizer.json"),
        char_tokenizer_json(w.config.vocab_size),
    )?;
    if let Some(t) = tokenizer_config {
        std::fs::write(dir.join("tokenizer_config.json"), t)?;
    }
    Ok(())
}
