//! `tinyllama tokenizer …`: training a Llama-style BPE tokenizer.

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use tinyllama_data::config::Format;
use tinyllama_data::tokenizer_train::{sample_inputs, save, train, TrainOptions};

#[derive(Args)]
pub struct TokenizerArgs {
    #[command(subcommand)]
    pub command: TokenizerCommand,
}

#[derive(Subcommand)]
pub enum TokenizerCommand {
    /// Train a Llama-style BPE (byte fallback, ▁ word boundaries, <unk> <s> </s> at 0 1 2).
    Train(TrainArgs),
}

#[derive(Args)]
pub struct TrainArgs {
    /// Vocabulary size including the 3 special and 256 byte tokens.
    #[arg(long, default_value_t = 32000)]
    pub vocab_size: usize,
    /// Training text: files, directories or globs (repeatable).
    #[arg(long, required = true)]
    pub input: Vec<String>,
    /// Input format: auto, jsonl, parquet, text, lines or paragraphs.
    #[arg(long, default_value = "auto")]
    pub format: String,
    /// JSON field or parquet column holding the text.
    #[arg(long, default_value = "text")]
    pub text_field: String,
    /// Directory for tokenizer.json, tokenizer_config.json and special_tokens_map.json.
    #[arg(long)]
    pub output: PathBuf,
    /// Text sampled from the inputs for training, MB.
    #[arg(long, default_value_t = 1024)]
    pub memory_budget_mb: u64,
    /// Minimum pair frequency for a merge.
    #[arg(long, default_value_t = 2)]
    pub min_frequency: u64,
    /// Most distinct characters kept as base tokens [default: min(1000, learned vocab / 2)].
    #[arg(long)]
    pub limit_alphabet: Option<usize>,
    /// Sampling seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// 16 TiB: far beyond any machine's memory, so only a typo (or a negative number) is refused.
const MAX_BUDGET_MB: u64 = 1 << 24;
/// The reserved tokens plus at least one learned token.
const MIN_VOCAB: usize = tinyllama_data::tokenizer_train::RESERVED + 1;
/// Ids must fit the u32 token ids (and far exceed any useful vocabulary).
const MAX_VOCAB: usize = 1 << 24;

pub fn run(a: TokenizerArgs) -> Result<()> {
    match a.command {
        TokenizerCommand::Train(t) => {
            // Checked before reading any input, so a typo costs nothing.
            if t.memory_budget_mb == 0 || t.memory_budget_mb > MAX_BUDGET_MB {
                bail!(
                    "--memory-budget-mb must be in 1..={MAX_BUDGET_MB} (text sampled for training), got {}",
                    t.memory_budget_mb
                );
            }
            if !(MIN_VOCAB..=MAX_VOCAB).contains(&t.vocab_size) {
                bail!(
                    "--vocab-size must be in {MIN_VOCAB}..={MAX_VOCAB} (3 special and 256 byte tokens come first), got {}",
                    t.vocab_size
                );
            }
            if t.min_frequency == 0 {
                bail!("--min-frequency must be at least 1");
            }
            let format = match t.format.as_str() {
                "auto" => Format::Auto,
                "jsonl" => Format::Jsonl,
                "parquet" => Format::Parquet,
                "text" => Format::Text,
                "lines" => Format::Lines,
                "paragraphs" => Format::Paragraphs,
                o => bail!(
                    "--format {o:?}: expected auto, jsonl, parquet, text, lines or paragraphs"
                ),
            };
            let (texts, s) = sample_inputs(
                &t.input,
                format,
                &t.text_field,
                t.memory_budget_mb << 20,
                t.seed,
                false,
            )?;
            eprintln!(
                "sampled {} of {} documents ({:.1} of {:.1} MB) from {} files",
                s.docs_kept,
                s.docs_seen,
                s.bytes_kept as f64 / 1e6,
                s.bytes_seen as f64 / 1e6,
                s.files
            );
            if texts.is_empty() {
                bail!("no documents found in the inputs to train on");
            }
            let tok = train(
                texts,
                &TrainOptions {
                    vocab_size: t.vocab_size,
                    min_frequency: t.min_frequency,
                    limit_alphabet: t.limit_alphabet,
                    memory_budget_bytes: t.memory_budget_mb << 20,
                    seed: t.seed,
                    quiet: false,
                    ..Default::default()
                },
            )?;
            save(&tok, &t.output)?;
            println!(
                "wrote {} (vocab {})",
                t.output.join("tokenizer.json").display(),
                tok.get_vocab_size(true)
            );
            Ok(())
        }
    }
}
