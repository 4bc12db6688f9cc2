//! `tinyllama data …`: the data pipeline (see docs/data.md). A thin shell over
//! `tinyllama_data`: it builds or loads a `PipelineConfig` and calls the library.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use tinyllama_data::config::{Format, OutputFormat, PipelineConfig, SourceConfig, TokenizerRef};
use tinyllama_data::filters::FiltersConfig;
use tinyllama_data::pipeline::{run_stage, run_with, RunOptions, Stage};
use tinyllama_data::Report;

#[derive(Args)]
pub struct DataArgs {
    #[command(subcommand)]
    pub command: DataCommand,
}

#[derive(Subcommand)]
pub enum DataCommand {
    /// Run a declared pipeline (ingest, filters, dedup, tokenise, pack) end to end, or one stage.
    Prepare(PrepareArgs),
    /// Apply the filters only; writes kept documents as zstd jsonl.
    Filter(StageArgs),
    /// Exact and near-duplicate removal only; writes kept documents as zstd jsonl.
    Dedup(StageArgs),
    /// Tokenise and pack only (each document → ids + EOS), per source, with a validation split.
    Tokenize(StageArgs),
    /// Print a shard's header, token count and a decoded sample.
    Inspect(InspectArgs),
    /// Time filtering + dedup + tokenisation on a corpus (the rules scripts/datatrove_bench.py runs).
    Bench(BenchArgs),
    /// Write a procedural benchmark corpus (jsonl.zst) with planted duplicates and junk.
    #[command(hide = true)]
    GenBenchCorpus(GenArgs),
}

#[derive(Args, Clone)]
pub struct ShardArgs {
    /// Run only this stage: scan, merge, emit or pack (default: all, in order).
    #[arg(long)]
    pub stage: Option<String>,
    /// This task's shard for the scan and emit stages [default: $SLURM_ARRAY_TASK_ID, else 0].
    #[arg(long)]
    pub shard_index: Option<usize>,
    /// Number of shards for the scan and emit stages [default: $SLURM_ARRAY_TASK_COUNT, else 1].
    #[arg(long)]
    pub num_shards: Option<usize>,
    /// No progress bars or log lines.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Args)]
pub struct PrepareArgs {
    /// Pipeline config (TOML), e.g. configs/data/slimpajama-starcoder.toml.
    #[arg(long)]
    pub config: PathBuf,
    /// Output directory [default: output_dir from the config].
    #[arg(long)]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub shard: ShardArgs,
}

#[derive(Args)]
pub struct StageArgs {
    /// Pipeline config (TOML) giving sources and stage parameters; or use --input.
    #[arg(long, conflicts_with = "input")]
    pub config: Option<PathBuf>,
    /// Input files, directories or globs (repeatable), as one source named "data".
    #[arg(long)]
    pub input: Vec<String>,
    /// Input format: auto, jsonl, parquet, text, lines or paragraphs.
    #[arg(long, default_value = "auto")]
    pub format: String,
    /// JSON field or parquet column holding the text.
    #[arg(long, default_value = "text")]
    pub text_field: String,
    /// Output directory [default: output_dir from the config; required with --input].
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// tokenizer.json for `data tokenize` [default: [tokenizer] from the config].
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Fraction of documents for the validation split (tokenize) [default: 0.001].
    #[arg(long)]
    pub validation_fraction: Option<f64>,
    /// Tokens per shard file (tokenize) [default: 2049 × 1024].
    #[arg(long)]
    pub chunk_size: Option<usize>,
    #[command(flatten)]
    pub shard: ShardArgs,
}

#[derive(Args)]
pub struct InspectArgs {
    /// A LITPKDS shard (`train/<source>-00000.bin`).
    pub shard: PathBuf,
    /// tokenizer.json to decode the sample with.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// First token of the sample.
    #[arg(long, default_value_t = 0)]
    pub at: u64,
    /// Tokens to show and decode.
    #[arg(long, default_value_t = 64)]
    pub sample: usize,
    /// Count documents by this end-of-document id [default: none].
    #[arg(long)]
    pub eos_id: Option<u32>,
}

#[derive(Args)]
pub struct BenchArgs {
    /// Corpus files, directories or globs (repeatable).
    #[arg(long, required = true)]
    pub input: Vec<String>,
    /// JSON field holding the text.
    #[arg(long, default_value = "text")]
    pub text_field: String,
    /// tokenizer.json used for tokenisation.
    #[arg(long)]
    pub tokenizer: PathBuf,
    /// Scratch directory, emptied first.
    #[arg(long, default_value = "runs/bench-data")]
    pub output: PathBuf,
    /// Text held in memory for the tokenisation-only timing, MB.
    #[arg(long, default_value_t = 100)]
    pub tokenize_mb: u64,
}

#[derive(Args)]
pub struct GenArgs {
    /// Directory for web-NNNNN.jsonl.zst.
    #[arg(long)]
    pub output: PathBuf,
    /// Uncompressed text, MB.
    #[arg(long, default_value_t = 100)]
    pub mb: u64,
    /// Number of files.
    #[arg(long, default_value_t = 8)]
    pub files: usize,
    /// Seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// Megabytes a benchmark corpus or sample may ask for (1 TB): beyond, only a typo.
const MAX_MB: u64 = 1_000_000;

fn env_usize(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// The stage to run and the shard options, from flags or Slurm's array variables.
fn shard_options(a: &ShardArgs) -> Result<(Option<Stage>, RunOptions)> {
    let stage = a.stage.as_deref().map(Stage::parse).transpose()?;
    let sharded = matches!(stage, Some(Stage::Scan | Stage::Emit));
    let (mut index, mut count) = (a.shard_index, a.num_shards);
    if sharded {
        // Slurm numbers array tasks from --array's first value, not necessarily 0.
        let min = env_usize("SLURM_ARRAY_TASK_MIN").unwrap_or(0);
        index = index.or_else(|| env_usize("SLURM_ARRAY_TASK_ID").map(|i| i.saturating_sub(min)));
        count = count.or_else(|| env_usize("SLURM_ARRAY_TASK_COUNT"));
    } else if a.shard_index.is_some() || a.num_shards.is_some() {
        bail!(
            "--shard-index/--num-shards apply to --stage scan and --stage emit; merge and pack \
             run once, and a full run (no --stage) runs on one machine"
        );
    }
    let opts = RunOptions {
        quiet: a.quiet,
        shard_index: index.unwrap_or(0),
        num_shards: count.unwrap_or(1),
        threads: None,
    };
    Ok((stage, opts))
}

fn run_config(cfg: &PipelineConfig, shard: &ShardArgs) -> Result<()> {
    let (stage, opts) = shard_options(shard)?;
    let report = match stage {
        None => Some(run_with(cfg, &opts)?),
        Some(st) => {
            let r = run_stage(cfg, st, &opts)?;
            if r.is_none() {
                eprintln!(
                    "{} stage done{}",
                    st.name(),
                    if opts.num_shards > 1 {
                        format!(" for shard {} of {}", opts.shard_index, opts.num_shards)
                    } else {
                        String::new()
                    }
                );
            }
            r
        }
    };
    if let Some(r) = report {
        print_report(&r, cfg);
    }
    Ok(())
}

fn print_report(r: &Report, cfg: &PipelineConfig) {
    println!("{}", r.tables());
    println!("report: {}", cfg.output_dir.join("report.json").display());
    for s in &r.sources {
        if r.format == OutputFormat::Packed && s.train_tokens == 0 {
            println!("warning: source {} produced no training tokens", s.name);
        }
    }
}

fn parse_format(s: &str) -> Result<Format> {
    Ok(match s {
        "auto" => Format::Auto,
        "jsonl" => Format::Jsonl,
        "parquet" => Format::Parquet,
        "text" => Format::Text,
        "lines" => Format::Lines,
        "paragraphs" => Format::Paragraphs,
        o => bail!("--format {o:?}: expected auto, jsonl, parquet, text, lines or paragraphs"),
    })
}

/// The config of a single-stage command: from --config, or one source from --input.
fn stage_config(a: &StageArgs) -> Result<PipelineConfig> {
    let mut cfg = match &a.config {
        Some(p) => PipelineConfig::from_file(p)?,
        None => {
            if a.input.is_empty() {
                bail!("give --config DATA.toml or --input FILES (with --output DIR)");
            }
            let out = a
                .output
                .clone()
                .context("--output DIR is required with --input")?;
            let mut src = SourceConfig::new("data", &[]);
            src.paths = a.input.clone();
            src.format = parse_format(&a.format)?;
            src.text_field = a.text_field.clone();
            let mut c = PipelineConfig::new(out, vec![src]);
            c.output.format = OutputFormat::Jsonl;
            c
        }
    };
    if let Some(o) = &a.output {
        cfg.output_dir = o.clone();
        cfg.work_dir = None;
    }
    Ok(cfg)
}

pub fn run(a: DataArgs) -> Result<()> {
    match a.command {
        DataCommand::Prepare(p) => {
            let mut cfg = PipelineConfig::from_file(&p.config)?;
            if let Some(o) = p.output {
                cfg.output_dir = o;
                cfg.work_dir = None;
            }
            run_config(&cfg, &p.shard)
        }
        DataCommand::Filter(a) => {
            let mut cfg = stage_config(&a)?;
            if a.config.is_none() {
                cfg.filters = FiltersConfig::all_quality();
            }
            cfg.dedup.exact = false;
            cfg.dedup.near = false;
            cfg.output.format = OutputFormat::Jsonl;
            cfg.tokenizer = None;
            run_config(&cfg, &a.shard)
        }
        DataCommand::Dedup(a) => {
            let mut cfg = stage_config(&a)?;
            for s in &mut cfg.sources {
                s.apply_filters = false;
            }
            cfg.output.format = OutputFormat::Jsonl;
            cfg.tokenizer = None;
            run_config(&cfg, &a.shard)
        }
        DataCommand::Tokenize(a) => {
            let mut cfg = stage_config(&a)?;
            for s in &mut cfg.sources {
                s.apply_filters = false;
            }
            cfg.dedup.exact = false;
            cfg.dedup.near = false;
            cfg.output.format = OutputFormat::Packed;
            if let Some(t) = &a.tokenizer {
                cfg.tokenizer = Some(TokenizerRef::new(t));
            }
            if cfg.tokenizer.is_none() {
                bail!(
                    "data tokenize needs --tokenizer tokenizer.json (or [tokenizer] in the config)"
                );
            }
            if let Some(f) = a.validation_fraction {
                cfg.output.validation_fraction = f;
            }
            if let Some(c) = a.chunk_size {
                cfg.output.chunk_size = c;
            }
            cfg.validate()?;
            run_config(&cfg, &a.shard)
        }
        DataCommand::Inspect(a) => {
            if !(1..=1_000_000).contains(&a.sample) {
                bail!("--sample must be in 1..=1000000 tokens, got {}", a.sample);
            }
            let s = tinyllama_data::inspect::inspect(
                &a.shard,
                &tinyllama_data::inspect::InspectOptions {
                    tokenizer: a.tokenizer.as_deref(),
                    at: a.at,
                    sample: a.sample,
                    eos_id: a.eos_id,
                },
            )?;
            print!("{s}");
            Ok(())
        }
        DataCommand::Bench(a) => {
            if !(1..=MAX_MB).contains(&a.tokenize_mb) {
                bail!(
                    "--tokenize-mb must be in 1..={MAX_MB}, got {}",
                    a.tokenize_mb
                );
            }
            let r = tinyllama_data::bench::run(&tinyllama_data::bench::BenchOptions {
                inputs: a.input,
                text_field: a.text_field,
                tokenizer: a.tokenizer,
                output: a.output.clone(),
                threads: None,
                tokenize_mb: a.tokenize_mb,
                quiet: false,
            })?;
            println!("{}", r.report.tables());
            println!("{}", r.table());
            println!("results: {}", a.output.join("bench.json").display());
            Ok(())
        }
        DataCommand::GenBenchCorpus(a) => {
            if !(1..=MAX_MB).contains(&a.mb) {
                bail!("--mb must be in 1..={MAX_MB}, got {}", a.mb);
            }
            if !(1..=100_000).contains(&a.files) {
                bail!("--files must be in 1..=100000, got {}", a.files);
            }
            let s = tinyllama_data::benchcorpus::generate(
                &a.output,
                &tinyllama_data::benchcorpus::CorpusSpec {
                    bytes: a.mb * 1_000_000,
                    files: a.files,
                    seed: a.seed,
                    ..Default::default()
                },
            )?;
            println!(
                "{} documents, {:.1} MB of text in {} files under {} ({} exact copies, {} near copies, {} junk planted)",
                s.docs,
                s.text_bytes as f64 / 1e6,
                s.files.len(),
                a.output.display(),
                s.exact_dups,
                s.near_dups,
                s.junk
            );
            Ok(())
        }
    }
}
