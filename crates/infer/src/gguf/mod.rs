//! GGUF, the file format of llama.cpp and ollama: a writer and reader for the container
//! ([`format`]), the tokenizer as llama.cpp wants it ([`vocab`]) and Llama models in and out
//! ([`llama`]).

pub mod format;
pub mod llama;
pub mod vocab;

use anyhow::{bail, Result};
use format::TensorType;
use std::path::Path;

/// The export types of `tinyllama export gguf --type`.
pub fn parse_type(s: &str) -> Result<TensorType> {
    Ok(match s.to_ascii_lowercase().as_str() {
        "f32" => TensorType::F32,
        "f16" => TensorType::F16,
        "bf16" => TensorType::Bf16,
        "q8_0" => TensorType::Q8_0,
        "q4_0" => TensorType::Q4_0,
        _ => bail!("unknown GGUF type `{s}`; use f32, f16, bf16, q8_0 or q4_0"),
    })
}

/// Exports a Hugging Face model directory (weights, config, tokenizer) to a GGUF file.
pub fn export_dir(model: &Path, out: &Path, ty: TensorType) -> Result<llama::ExportReport> {
    let host = tinyllama_model::hf::load_dir(model)?;
    let c = &host.config;
    let vocab = vocab::Vocab::from_dir(model, c.vocab_size, c.bos_id, c.eos_id)?;
    let name = model
        .canonicalize()
        .unwrap_or_else(|_| model.to_path_buf())
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    llama::export(&host, &vocab, &name, out, ty)
}
