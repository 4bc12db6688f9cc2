//! Options shared by the commands that generate text (generate, chat, serve).

use anyhow::{bail, Result};
use clap::Args;
use std::path::PathBuf;
use tinyllama_engine::sampling::SamplingParams;
use tinyllama_infer::loader::{load, LoadOptions, Loaded};
use tinyllama_infer::WeightFormat;

/// Draft tokens per step at most: acceptance falls geometrically with k, so more only wastes
/// the draft model's time.
const MAX_DRAFT_K: usize = 64;

#[derive(Args, Clone)]
pub struct ModelOpts {
    /// Hugging Face model directory (config.json, safetensors weights, tokenizer.json).
    #[arg(long)]
    pub model: PathBuf,
    /// Tokenizer file, if not the model directory's tokenizer.json.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Weight format for decoding, converted on load: f32, bf16, q8_0 (int8, blocks of 32) or
    /// q4_0 (4-bit, blocks of 32).
    #[arg(long, default_value = "f32")]
    pub quant: String,
    /// A small model with the same tokenizer that proposes tokens for the target to verify
    /// (speculative decoding).
    #[arg(long)]
    pub draft_model: Option<PathBuf>,
    /// Tokens the draft model proposes per step.
    #[arg(long, default_value_t = 4)]
    pub draft_k: usize,
    /// Weight format of the draft model (default: --quant).
    #[arg(long)]
    pub draft_quant: Option<String>,
    /// Device to run on.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

impl ModelOpts {
    pub fn load(&self) -> Result<Loaded> {
        super::common::check_device(&self.device)?;
        if !(1..=MAX_DRAFT_K).contains(&self.draft_k) {
            bail!(
                "--draft-k must be in 1..={MAX_DRAFT_K}, got {}",
                self.draft_k
            );
        }
        load(&LoadOptions {
            model: self.model.clone(),
            tokenizer: self.tokenizer.clone(),
            format: WeightFormat::parse(&self.quant)?,
            draft: self.draft_model.clone(),
            draft_format: self
                .draft_quant
                .as_deref()
                .map(WeightFormat::parse)
                .transpose()?,
            draft_k: self.draft_k,
        })
    }
}

#[derive(Args, Clone)]
pub struct SamplingOpts {
    /// Sampling temperature; 0 is greedy decoding.
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f32,
    /// Sample only from the k most likely tokens (0 = no limit).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Nucleus sampling: the smallest set of tokens with this much probability (1 = off).
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    /// Drop tokens less likely than min-p times the most likely one (0 = off).
    #[arg(long, default_value_t = 0.0)]
    pub min_p: f32,
    /// Penalise tokens already in the text (1 = off; 1.1 is typical).
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f32,
    /// Random seed for sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl SamplingOpts {
    pub fn params(&self) -> Result<SamplingParams> {
        check_sampling(
            self.temperature,
            self.top_k,
            self.top_p,
            self.min_p,
            self.repetition_penalty,
        )?;
        Ok(SamplingParams {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repetition_penalty: self.repetition_penalty,
        })
    }
}

/// Range checks with the option to fix in the message.
pub fn check_sampling(t: f32, _k: usize, p: f32, min_p: f32, rep: f32) -> Result<()> {
    // Above 100 the distribution is uniform to within float rounding: only a typo asks for it.
    if !(t.is_finite() && (0.0..=100.0).contains(&t)) {
        bail!("--temperature must be 0 (greedy) or positive up to 100, got {t}");
    }
    if !(p > 0.0 && p <= 1.0) {
        bail!("--top-p must be in (0, 1], got {p}");
    }
    if !(0.0..=1.0).contains(&min_p) {
        bail!("--min-p must be in [0, 1], got {min_p}");
    }
    if !(rep.is_finite() && rep > 0.0 && rep <= 100.0) {
        bail!("--repetition-penalty must be in (0, 100] (1 = off), got {rep}");
    }
    Ok(())
}

/// The one-line speed report of `--verbose`.
pub fn speed_report(out: &tinyllama_infer::generate::Output) -> String {
    let pre = out.prefill_time.as_secs_f64();
    let dec = out.decode_time.as_secs_f64();
    let mut s = format!(
        "prompt {} tokens in {:.3}s ({:.1} tok/s); generated {} tokens in {:.3}s ({:.1} tok/s after the first); stopped: {}",
        out.prompt_tokens,
        pre,
        out.prompt_tokens as f64 / pre.max(1e-9),
        out.tokens.len(),
        pre + dec,
        out.tokens.len().saturating_sub(1) as f64 / dec.max(1e-9),
        out.finish.describe()
    );
    if let Some(r) = out.acceptance_rate() {
        s.push_str(&format!(
            "; draft acceptance {:.1}% ({} of {})",
            100.0 * r,
            out.accepted,
            out.proposed
        ));
    }
    s
}
