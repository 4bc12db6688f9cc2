use super::common::{check_device, load_cpu_model};
use anyhow::Result;
use clap::Args;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;
use tinyllama_engine::generate::{generate, GenerateParams, StopReason};
use tinyllama_engine::sampling::SamplingParams;
use tinyllama_model::tokenizer::StreamDecoder;

#[derive(Args)]
pub struct GenerateArgs {
    /// Hugging Face model directory (config.json, safetensors weights, tokenizer.json).
    #[arg(long)]
    pub model: PathBuf,
    /// Text to continue (BOS is prepended).
    #[arg(long)]
    pub prompt: String,
    /// Maximum tokens to generate.
    #[arg(long, default_value_t = 128)]
    pub max_new_tokens: usize,
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
    /// Tokenizer file, if not the model directory's tokenizer.json.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Device to run on.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Report prompt and generation speed on stderr.
    #[arg(long)]
    pub verbose: bool,
}

pub fn run(a: GenerateArgs) -> Result<()> {
    check_device(&a.device)?;
    let (model, tok) = load_cpu_model(&a.model, a.tokenizer.as_deref())?;
    let ids = tok.encode_with_bos(&a.prompt)?;
    let params = GenerateParams {
        max_new_tokens: a.max_new_tokens,
        sampling: SamplingParams {
            temperature: a.temperature,
            top_k: a.top_k,
            top_p: a.top_p,
            min_p: a.min_p,
            repetition_penalty: a.repetition_penalty,
        },
        seed: a.seed,
        eos: Some(model.cfg.eos_id),
    };
    let mut dec = StreamDecoder::new();
    let mut out = std::io::stdout().lock();
    let t0 = Instant::now();
    let mut first_token_at = None;
    let mut err = None;
    let (new, reason) = generate(&model, &ids, &params, |t| {
        first_token_at.get_or_insert_with(|| t0.elapsed());
        match dec.push(&tok, t) {
            Ok(s) => {
                // A closed pipe (e.g. `| head`) ends generation quietly.
                out.write_all(s.as_bytes())
                    .and_then(|_| out.flush())
                    .is_ok()
            }
            Err(e) => {
                err = Some(e);
                false
            }
        }
    })?;
    if let Some(e) = err {
        return Err(e);
    }
    let _ = writeln!(out);
    if a.verbose {
        let total = t0.elapsed().as_secs_f64();
        let prefill = first_token_at.map(|d| d.as_secs_f64()).unwrap_or(total);
        eprintln!(
            "prompt {} tokens in {:.3}s ({:.1} tok/s); generated {} tokens in {:.3}s ({:.1} tok/s); stopped: {}",
            ids.len(),
            prefill,
            ids.len() as f64 / prefill,
            new.len(),
            total - prefill,
            (new.len().saturating_sub(1)) as f64 / (total - prefill).max(1e-9),
            match reason {
                StopReason::Eos => "end of sequence",
                StopReason::MaxTokens => "max tokens",
                StopReason::Context => "context full",
                StopReason::Callback => "output closed",
            }
        );
    }
    Ok(())
}
