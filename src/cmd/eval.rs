use super::common::{check_device, load_cpu_model};
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use tinyllama_eval::perplexity::perplexity;

#[derive(Subcommand)]
pub enum EvalCommand {
    /// Perplexity of a text file: BOS + text (no EOS), every next token scored once, with a
    /// sliding window when the text is longer than the context.
    Perplexity(PerplexityArgs),
}

#[derive(Args)]
pub struct PerplexityArgs {
    /// Hugging Face model directory.
    #[arg(long)]
    pub model: PathBuf,
    /// UTF-8 text file to score.
    #[arg(long)]
    pub input: PathBuf,
    /// Window length in tokens (default: the model's context).
    #[arg(long)]
    pub window: Option<usize>,
    /// Tokens a window advances by (default: half the window).
    #[arg(long)]
    pub stride: Option<usize>,
    /// Print `{"tokens": N, "mean_nll": x, "perplexity": y}` instead of text.
    #[arg(long)]
    pub json: bool,
    /// Tokenizer file, if not the model directory's tokenizer.json.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Device to run on.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Score with the decode runtime in this weight format (f32, bf16, q8_0, q4_0) instead of
    /// the training engine, to measure what quantisation costs.
    #[arg(long)]
    pub quant: Option<String>,
}

pub fn run(c: EvalCommand) -> Result<()> {
    match c {
        EvalCommand::Perplexity(a) => {
            check_device(&a.device)?;
            let (model, tok) = load_cpu_model(&a.model, a.tokenizer.as_deref())?;
            let text = std::fs::read_to_string(&a.input).with_context(|| {
                format!("cannot read {} (it must be UTF-8 text)", a.input.display())
            })?;
            let ids = tok.encode_with_bos(&text)?;
            let window = a
                .window
                .unwrap_or(model.cfg.max_seq_len)
                .min(model.cfg.max_seq_len);
            let stride = a.stride.unwrap_or((window / 2).max(1));
            if !(1..=window).contains(&stride) {
                anyhow::bail!("--stride must be in 1..={window}");
            }
            let p = if let Some(q) = &a.quant {
                let f = tinyllama_infer::WeightFormat::parse(q)?;
                let m = tinyllama_infer::DecodeModel::from_host(model.to_host(), f)?;
                drop(model);
                let ws = tinyllama_eval::perplexity::windows(ids.len(), window, stride);
                let r = tinyllama_infer::perplexity::perplexity_windows(&m, &ids, &ws)?;
                tinyllama_eval::perplexity::Perplexity {
                    tokens: r.tokens,
                    mean_nll: r.mean_nll,
                    perplexity: r.perplexity,
                }
            } else {
                let bar = super::progress_bar(0, "scoring");
                let p = perplexity(&model, &ids, window, stride, |i, n| {
                    bar.set_length(n as u64);
                    bar.set_position(i as u64);
                })?;
                bar.finish_and_clear();
                p
            };
            if a.json {
                println!("{}", serde_json::to_string(&p)?);
            } else {
                println!("tokens      {}", p.tokens);
                println!("mean NLL    {:.6} nats", p.mean_nll);
                println!("perplexity  {:.4}", p.perplexity);
            }
            Ok(())
        }
    }
}
