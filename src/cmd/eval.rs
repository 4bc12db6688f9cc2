use super::common::{check_device, load_cpu_model};
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};
use tinyllama_data::packed::{list_shards, PackedReader};
use tinyllama_engine::{CpuBackend, Llama};
use tinyllama_eval::perplexity::{perplexity, Perplexity};
use tinyllama_eval::shards::shard_perplexity;
use tinyllama_model::hf;

pub mod tasks;
pub use tasks::TasksArgs;

#[derive(Subcommand)]
pub enum EvalCommand {
    /// Perplexity of a text file (BOS + text, no EOS, every next token scored once, with a
    /// sliding window when the text is longer than the context), or of packed token shards
    /// (--shards: non-overlapping windows of the context, as training reads them).
    Perplexity(Box<PerplexityArgs>),
    /// Zero-shot benchmarks scored as lm-evaluation-harness does (HellaSwag, OpenBookQA,
    /// WinoGrande, ARC-Easy, ARC-Challenge, BoolQ, PIQA, LAMBADA): a markdown table of
    /// acc / acc_norm / perplexity with standard errors, and optionally JSON.
    Tasks(Box<TasksArgs>),
}

#[derive(Args)]
pub struct PerplexityArgs {
    /// Hugging Face model directory.
    #[arg(long)]
    pub model: PathBuf,
    /// UTF-8 text file to score.
    #[arg(long, conflicts_with = "shards", required_unless_present = "shards")]
    pub input: Option<PathBuf>,
    /// Directory of packed LITPKDS token shards to score instead of a text file.
    #[arg(long)]
    pub shards: Option<PathBuf>,
    /// Only shards named `<prefix>-NNNNN.bin` (default: every .bin file, in name order).
    #[arg(long, requires = "shards")]
    pub prefix: Option<String>,
    /// Score at most this many tokens of the shards.
    #[arg(long, requires = "shards")]
    pub max_tokens: Option<u64>,
    /// Shard windows per forward pass.
    #[arg(long, default_value_t = 4, requires = "shards")]
    pub batch_size: usize,
    /// Window length in tokens (default: the model's context).
    #[arg(long)]
    pub window: Option<usize>,
    /// Tokens a text window advances by (default: half the window).
    #[arg(long, conflicts_with = "shards")]
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
            check_perplexity_args(&a)?;
            let p = match &a.shards {
                Some(dir) => perplexity_of_shards(&a, dir)?,
                None => perplexity_of_text(&a)?,
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
        EvalCommand::Tasks(a) => tasks::run(*a),
    }
}

/// What can be checked before loading the model.
fn check_perplexity_args(a: &PerplexityArgs) -> Result<()> {
    if a.window.is_some_and(|w| w < 2) {
        bail!("--window must be at least 2 tokens (one to predict from, one to score)");
    }
    if a.stride == Some(0) {
        bail!("--stride must be at least 1");
    }
    if a.max_tokens == Some(0) {
        bail!("--max-tokens must be at least 1 (leave it out to score every token)");
    }
    if a.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    Ok(())
}

/// The window: at most the model's context.
fn window_for(a: &PerplexityArgs, context: usize) -> Result<usize> {
    match a.window {
        Some(w) if w > context => {
            bail!("--window must be in 2..={context} (the model's context), got {w}")
        }
        Some(w) => Ok(w),
        None => Ok(context),
    }
}

fn perplexity_of_text(a: &PerplexityArgs) -> Result<Perplexity> {
    let input = a.input.as_ref().expect("clap requires --input or --shards");
    let (model, tok) = load_cpu_model(&a.model, a.tokenizer.as_deref())?;
    let text = std::fs::read_to_string(input)
        .with_context(|| format!("cannot read {} (it must be UTF-8 text)", input.display()))?;
    let ids = tok.encode_with_bos(&text)?;
    let window = window_for(a, model.cfg.max_seq_len)?;
    let stride = a.stride.unwrap_or((window / 2).max(1));
    if !(1..=window).contains(&stride) {
        bail!("--stride must be in 1..={window} (the window), got {stride}");
    }
    if let Some(q) = &a.quant {
        // Score with the quantised decode runtime to measure what the weight format costs.
        let f = tinyllama_infer::WeightFormat::parse(q)?;
        let m = tinyllama_infer::DecodeModel::from_host(model.to_host(), f)?;
        drop(model);
        let ws = tinyllama_eval::perplexity::windows(ids.len(), window, stride);
        let r = tinyllama_infer::perplexity::perplexity_windows(&m, &ids, &ws)?;
        return Ok(Perplexity {
            tokens: r.tokens,
            mean_nll: r.mean_nll,
            perplexity: r.perplexity,
        });
    }
    let bar = super::progress_bar(0, "scoring");
    let p = perplexity(&model, &ids, window, stride, |i, n| {
        bar.set_length(n as u64);
        bar.set_position(i as u64);
    })?;
    bar.finish_and_clear();
    Ok(p)
}

fn perplexity_of_shards(a: &PerplexityArgs, dir: &Path) -> Result<Perplexity> {
    // Shards are already token ids: no tokenizer needed.
    let host = hf::load_dir(&a.model)?;
    let model = Llama::new(CpuBackend::<f32>::new(), &host)?;
    let files = match &a.prefix {
        Some(p) => list_shards(dir, p)?,
        None => all_bin_files(dir)?,
    };
    let reader = PackedReader::open(&files)?;
    let window = window_for(a, model.cfg.max_seq_len)?;
    let bar = super::progress_bar(0, "windows");
    let p = shard_perplexity(
        &model,
        &reader,
        window,
        a.max_tokens,
        a.batch_size,
        |i, n| {
            bar.set_length(n as u64);
            bar.set_position(i as u64);
        },
    )?;
    bar.finish_and_clear();
    Ok(p)
}

fn all_bin_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read shard directory {}", dir.display()))?;
    let mut files: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "bin"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!(
            "no .bin token shards in {}; produce them with `tinyllama data prepare` or pass --prefix",
            dir.display()
        );
    }
    Ok(files)
}
