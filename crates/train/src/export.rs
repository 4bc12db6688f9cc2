//! Checkpoint → Hugging Face model directory that transformers loads unchanged: weights and
//! config (sharded above 2 GB), `generation_config.json`, and the tokenizer with a
//! `tokenizer_config.json` naming its special tokens.

use anyhow::{bail, Context, Result};
use std::path::Path;
use tinyllama_model::atomic::write_atomic;
use tinyllama_model::hf::{self, SaveDtype};
use tinyllama_model::HostWeights;

pub fn export_hf(
    checkpoint: &Path,
    out: &Path,
    dtype: SaveDtype,
    tokenizer: Option<&Path>,
) -> Result<()> {
    let weights = hf::load_dir(checkpoint)
        .with_context(|| format!("loading checkpoint {}", checkpoint.display()))?;
    let tok_path = match tokenizer {
        Some(p) => Some(p.to_path_buf()),
        None => Some(checkpoint.join("tokenizer.json")).filter(|p| p.exists()),
    };
    export_weights(&weights, out, dtype, tok_path.as_deref())
}

/// Weights in memory → a Hugging Face directory, with the tokenizer when given (a LoRA run
/// exports its merged weights this way).
pub fn export_weights(
    weights: &HostWeights,
    out: &Path,
    dtype: SaveDtype,
    tokenizer: Option<&Path>,
) -> Result<()> {
    hf::save_dir(weights, out, dtype, hf::DEFAULT_SHARD_BYTES)?;
    let tok_path = tokenizer;
    let Some(tok_path) = tok_path else {
        eprintln!("note: no tokenizer.json found with the checkpoint; the export has weights and config only (pass --tokenizer FILE)");
        return Ok(());
    };
    let tok = tokenizers::Tokenizer::from_file(tok_path)
        .map_err(|e| anyhow::anyhow!("{}: {e}", tok_path.display()))?;
    let c = &weights.config;
    let name = |id: u32| tok.id_to_token(id);
    let (Some(bos), Some(eos)) = (name(c.bos_id), name(c.eos_id)) else {
        bail!(
            "{}: the tokenizer has no tokens for bos id {} / eos id {}",
            tok_path.display(),
            c.bos_id,
            c.eos_id
        );
    };
    if tok.get_vocab_size(true) > c.vocab_size {
        bail!(
            "{}: the tokenizer has {} tokens but the model only {} embeddings",
            tok_path.display(),
            tok.get_vocab_size(true),
            c.vocab_size
        );
    }
    write_atomic(&out.join("tokenizer.json"), &std::fs::read(tok_path)?)?;
    let unk = name(0).unwrap_or_else(|| "<unk>".into());
    let cfg = serde_json::json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": bos,
        "eos_token": eos,
        "unk_token": unk,
        "pad_token": eos,
        "add_bos_token": true,
        "add_eos_token": false,
        "model_max_length": c.max_seq_len,
        "clean_up_tokenization_spaces": false,
    });
    write_atomic(
        &out.join("tokenizer_config.json"),
        &serde_json::to_vec_pretty(&cfg)?,
    )?;
    let special = serde_json::json!({ "bos_token": bos, "eos_token": eos, "unk_token": unk, "pad_token": eos });
    write_atomic(
        &out.join("special_tokens_map.json"),
        &serde_json::to_vec_pretty(&special)?,
    )?;
    Ok(())
}
