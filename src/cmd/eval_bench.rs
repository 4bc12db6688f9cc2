//! `tinyllama bench eval`: items/s of zero-shot scoring on one task's first N items. With
//! `--preset` the model is randomly initialised (speed does not depend on the weights) and can
//! be saved with `--save-hf` so that `scripts/eval_bench.py` scores the very same model.

use super::common::{check_device, load_cpu_model};
use super::eval::tasks::run_task;
use anyhow::{bail, Result};
use clap::Args;
use std::path::PathBuf;
use tinyllama_engine::{CpuBackend, Llama};
use tinyllama_eval::encode::{BosPolicy, Encoding, Policy};
use tinyllama_eval::run::TaskOptions;
use tinyllama_eval::scorer::Strategy;
use tinyllama_eval::tasks::{self, Task};
use tinyllama_model::hf::{self, SaveDtype};
use tinyllama_model::{presets, tokenizer::Tokenizer, HostWeights};

#[derive(Args)]
pub struct EvalBenchArgs {
    /// Hugging Face model directory.
    #[arg(long, conflicts_with = "preset", required_unless_present = "preset")]
    pub model: Option<PathBuf>,
    /// A model preset, randomly initialised (needs --tokenizer).
    #[arg(long)]
    pub preset: Option<String>,
    /// Tokenizer file or directory (required with --preset; its vocabulary must fit the
    /// preset's, e.g. ../shared/data/models/tinystories-llama for demo-5m).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Seed of the random initialisation.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Save the preset's weights and tokenizer as a Hugging Face directory here, for
    /// scripts/eval_bench.py.
    #[arg(long, requires = "preset")]
    pub save_hf: Option<PathBuf>,
    /// The task to time.
    #[arg(long, default_value = "piqa")]
    pub task: String,
    /// Directory holding the task file.
    #[arg(long, default_value = "../shared/data/eval")]
    pub data_dir: PathBuf,
    /// The task file itself, instead of looking in --data-dir.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Items timed (the first N).
    #[arg(long, default_value_t = 200)]
    pub limit: usize,
    /// Contexts (or sequences with --strategy batched) per forward pass.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// shared or batched (see `eval tasks --help`).
    #[arg(long, default_value = "shared")]
    pub strategy: Strategy,
    /// never, always or auto (see `eval tasks --help`).
    #[arg(long, default_value = "never")]
    pub bos: BosPolicy,
    /// joint or separate (see `eval tasks --help`).
    #[arg(long, default_value = "joint")]
    pub encoding: Encoding,
    /// Device to run on.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Print one JSON line instead of text.
    #[arg(long)]
    pub json: bool,
}

fn model_and_tokenizer(a: &EvalBenchArgs) -> Result<(Llama<CpuBackend<f32>>, Tokenizer, String)> {
    if let Some(dir) = &a.model {
        let (m, t) = load_cpu_model(dir, a.tokenizer.as_deref())?;
        return Ok((m, t, dir.display().to_string()));
    }
    let name = a
        .preset
        .as_deref()
        .expect("clap requires --model or --preset");
    let Some(tok_path) = &a.tokenizer else {
        bail!("--preset {name} needs --tokenizer FILE_OR_DIR (random weights come without one)");
    };
    let cfg = presets::get(name)?;
    let tok = Tokenizer::load(tok_path, cfg.bos_id, cfg.eos_id)?;
    if tok.vocab_size() > cfg.vocab_size {
        bail!(
            "the tokenizer {} has {} tokens, more than {name}'s vocabulary of {}; use a smaller tokenizer",
            tok.path.display(),
            tok.vocab_size(),
            cfg.vocab_size
        );
    }
    let host = HostWeights::init(&cfg, a.seed);
    if let Some(out) = &a.save_hf {
        hf::save_dir(&host, out, SaveDtype::F32, usize::MAX)?;
        tok.save_to_dir(out)?;
        eprintln!("saved {name} (seed {}) to {}", a.seed, out.display());
    }
    let model = Llama::new(CpuBackend::new(), &host)?;
    Ok((model, tok, format!("preset {name} (seed {})", a.seed)))
}

pub fn run(a: EvalBenchArgs) -> Result<()> {
    check_device(&a.device)?;
    if a.limit == 0 || a.batch_size == 0 {
        bail!("--limit and --batch-size must be at least 1");
    }
    let task = Task::parse_list(&a.task)?[0];
    let path = match &a.file {
        Some(p) => p.clone(),
        None => tasks::find_file(task, &a.data_dir)?,
    };
    let (model, tok, what) = model_and_tokenizer(&a)?;
    let opts = TaskOptions {
        limit: Some(a.limit),
        batch: a.batch_size.max(1),
        strategy: a.strategy,
        policy: Policy::resolve(a.bos, a.encoding, &tok)?,
    };
    let r = run_task(&model, &tok, task, &path, &opts)?;
    let loglik_sum: f64 = r.samples.iter().flat_map(|s| &s.loglik).sum();
    let acc = r.metric("acc").map_or(f64::NAN, |m| m.value);
    if a.json {
        let j = serde_json::json!({
            "model": what,
            "task": task.name(),
            "items": r.n,
            "requests": r.requests,
            "tokens": r.tokens,
            "elapsed_s": r.elapsed_s,
            "items_per_s": r.items_per_s,
            "tokens_per_s": r.tokens as f64 / r.elapsed_s,
            "acc": acc,
            "loglik_sum": loglik_sum,
            "batch_size": opts.batch,
            "strategy": opts.strategy,
            "policy": opts.policy,
            "threads": rayon::current_num_threads(),
        });
        println!("{j}");
    } else {
        println!(
            "{what}, {} × {} items, batch {}, {:?} strategy, {} threads",
            task.name(),
            r.n,
            opts.batch,
            opts.strategy,
            rayon::current_num_threads()
        );
        println!("items/s        {:>10.2}", r.items_per_s);
        println!(
            "tokens/s       {:>10.0}  ({} tokens in {} requests)",
            r.tokens as f64 / r.elapsed_s,
            r.tokens,
            r.requests
        );
        println!("elapsed        {:>10.2} s", r.elapsed_s);
        println!("acc            {acc:>10.4}  (loglik sum {loglik_sum:.4}, to compare with scripts/eval_bench.py)");
    }
    Ok(())
}
