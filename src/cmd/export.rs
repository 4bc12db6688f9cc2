use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use tinyllama_model::hf::SaveDtype;
use tinyllama_train::checkpoint;

#[derive(Subcommand)]
pub enum ExportCommand {
    /// Write a Hugging Face model directory (weights, config, generation config, tokenizer)
    /// that transformers loads unchanged.
    Hf(HfArgs),
    /// Write a GGUF file (Llama metadata, tokenizer, weights) that llama.cpp and ollama load.
    Gguf(GgufArgs),
}

#[derive(Args)]
pub struct GgufArgs {
    /// Hugging Face model directory (config.json, safetensors, tokenizer.json).
    #[arg(long)]
    pub model: PathBuf,
    /// Output file.
    #[arg(long)]
    pub out: PathBuf,
    /// Type of the weight matrices: f32, f16, bf16, q8_0 or q4_0 (norms stay f32).
    #[arg(long = "type", default_value = "f16")]
    pub ty: String,
}

#[derive(Args)]
pub struct HfArgs {
    /// A checkpoint directory, or a run directory (its latest checkpoint is used).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Weight dtype: f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// tokenizer.json to include (default: the one saved with the checkpoint).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
}

pub fn run(c: ExportCommand) -> Result<()> {
    match c {
        ExportCommand::Gguf(a) => {
            let ty = tinyllama_infer::gguf::parse_type(&a.ty)?;
            let r = tinyllama_infer::gguf::export_dir(&a.model, &a.out, ty)?;
            println!(
                "wrote {} ({} tensors, {:.1} MiB, matrices {})",
                a.out.display(),
                r.tensors,
                r.bytes as f64 / (1 << 20) as f64,
                ty.name()
            );
            if !r.kept_f32.is_empty() {
                eprintln!(
                    "note: {} matrices have rows that are not whole {} blocks and were written as f32: {}",
                    r.kept_f32.len(),
                    ty.name(),
                    r.kept_f32.join(", ")
                );
            }
            Ok(())
        }
        ExportCommand::Hf(a) => {
            let ckpt = if a.checkpoint.join("state.json").exists()
                || a.checkpoint.join("config.json").exists()
            {
                a.checkpoint.clone()
            } else {
                match checkpoint::latest(&a.checkpoint)? {
                    Some(p) => p,
                    None => bail!(
                        "{} is neither a checkpoint (no state.json / config.json) nor a run directory with checkpoints",
                        a.checkpoint.display()
                    ),
                }
            };
            tinyllama_train::export::export_hf(
                &ckpt,
                &a.out,
                SaveDtype::parse(&a.dtype)?,
                a.tokenizer.as_deref(),
            )?;
            println!("exported {} to {}", ckpt.display(), a.out.display());
            Ok(())
        }
    }
}
