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
