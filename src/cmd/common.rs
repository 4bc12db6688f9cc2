//! Pieces shared by several commands.

use anyhow::{bail, Result};
use std::path::Path;
use tinyllama_engine::{CpuBackend, Llama};
use tinyllama_model::{hf, tokenizer::Tokenizer};

/// Loads a Hugging Face model directory onto the CPU backend, with its tokenizer.
pub fn load_cpu_model(
    dir: &Path,
    tokenizer: Option<&Path>,
) -> Result<(Llama<CpuBackend<f32>>, Tokenizer)> {
    let host = hf::load_dir(dir)?;
    let tok = Tokenizer::load(
        tokenizer.unwrap_or(dir),
        host.config.bos_id,
        host.config.eos_id,
    )?;
    if tok.vocab_size() > host.config.vocab_size {
        bail!(
            "the tokenizer ({}) has {} tokens but the model only {} embeddings; they do not belong together",
            tok.path.display(),
            tok.vocab_size(),
            host.config.vocab_size
        );
    }
    Ok((Llama::new(CpuBackend::new(), &host)?, tok))
}

/// Refuses devices this build cannot use, with the fix.
pub fn check_device(device: &str) -> Result<()> {
    match device {
        "cpu" => Ok(()),
        d if d.starts_with("cuda") => bail!(
            "device `{d}`: this command runs on the CPU backend; use --device cpu (CUDA runs `pretrain`, `bench train` and `selftest`)"
        ),
        d => bail!("unknown device `{d}`; use cpu or cuda[:N]"),
    }
}
