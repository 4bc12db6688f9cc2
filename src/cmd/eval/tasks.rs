//! `tinyllama eval tasks`: find each task's file, load it (reporting malformed rows), score it
//! with a progress bar, then print the table and write the JSON.

use super::super::common::{check_device, load_cpu_model};
use anyhow::{bail, Context, Result};
use clap::Args;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tinyllama_engine::{CpuBackend, Llama};
use tinyllama_eval::encode::{BosPolicy, Encoding, Policy};
use tinyllama_eval::report::{headline_average, markdown};
use tinyllama_eval::run::{evaluate, TaskOptions, TaskResult};
use tinyllama_eval::scorer::Strategy;
use tinyllama_eval::tasks::{self, Task};
use tinyllama_model::tokenizer::Tokenizer;

#[derive(Args)]
pub struct TasksArgs {
    /// Hugging Face model directory.
    #[arg(long)]
    pub model: PathBuf,
    /// Comma-separated tasks (hellaswag, openbookqa, winogrande, arc_easy, arc_challenge,
    /// boolq, piqa, lambada) or `all`.
    #[arg(long, default_value = "all")]
    pub tasks: String,
    /// Directory holding the task files (e.g. ../shared/data/eval); see docs/eval.md for the
    /// file names looked for.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// A task's file, overriding the data directory: `--file piqa=/data/piqa_val.jsonl`
    /// (repeatable).
    #[arg(long = "file", value_name = "TASK=PATH")]
    pub files: Vec<String>,
    /// Only the first N items of each task.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Contexts per forward pass (with --strategy batched: sequences per pass).
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// BOS before each context: never (harness 0.4 with add_special_tokens=False, as when
    /// TinyLlama's table was made), always (add_bos_token=True), or auto: whatever the
    /// tokenizer's post-processor adds (lm-eval 0.4.13's default; BOS for Llama tokenizers).
    #[arg(long, default_value = "never")]
    pub bos: BosPolicy,
    /// joint: encode context and context+continuation, split by the context's length (harness
    /// 0.4); separate: encode each on its own (older harness releases).
    #[arg(long, default_value = "joint")]
    pub encoding: Encoding,
    /// shared: each context once in a KV cache, forked per choice; batched: one padded
    /// sequence per choice. Same numbers.
    #[arg(long, default_value = "shared")]
    pub strategy: Strategy,
    /// Write the results as JSON to this file.
    #[arg(long, value_name = "OUT")]
    pub json: Option<PathBuf>,
    /// Write per-item log-likelihoods to DIR/<task>.jsonl.
    #[arg(long, value_name = "DIR")]
    pub samples: Option<PathBuf>,
    /// Tokenizer file, if not the model directory's tokenizer.json.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Device to run on.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// The task files: `--file` overrides first, then the data directory.
fn task_files(a: &TasksArgs, list: &[Task]) -> Result<Vec<(Task, PathBuf)>> {
    let mut given: HashMap<Task, PathBuf> = HashMap::new();
    for f in &a.files {
        let Some((name, path)) = f.split_once('=') else {
            bail!("--file {f}: expected TASK=PATH, e.g. --file piqa=/data/piqa.jsonl");
        };
        let task = Task::parse_list(name)?;
        given.insert(task[0], PathBuf::from(path));
    }
    list.iter()
        .map(|&t| {
            let path = match (given.remove(&t), &a.data_dir) {
                (Some(p), _) => p,
                (None, Some(dir)) => tasks::find_file(t, dir)?,
                (None, None) => bail!(
                    "no file for {}: pass --data-dir DIR (e.g. ../shared/data/eval) or --file {}=PATH",
                    t.name(),
                    t.name()
                ),
            };
            Ok((t, path))
        })
        .collect()
}

/// Loads and scores one task, warning about skipped rows on stderr.
pub fn run_task(
    model: &Llama<CpuBackend<f32>>,
    tok: &Tokenizer,
    task: Task,
    path: &Path,
    opts: &TaskOptions,
) -> Result<TaskResult> {
    let loaded = tasks::load(task, path)?;
    let bar = super::super::progress_bar(0, task.name());
    let r = evaluate(model, tok, loaded, opts, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    if r.skipped > 0 {
        eprintln!(
            "warning: {}: skipped {} of {} rows:",
            r.file.display(),
            r.skipped,
            r.skipped + r.n
        );
        for line in &r.skipped_examples {
            eprintln!("  {line}");
        }
        if r.skipped > r.skipped_examples.len() {
            eprintln!("  … and {} more", r.skipped - r.skipped_examples.len());
        }
    }
    Ok(r)
}

pub fn run(a: TasksArgs) -> Result<()> {
    check_device(&a.device)?;
    if a.batch_size == 0 {
        anyhow::bail!("--batch-size must be at least 1");
    }
    if a.limit == Some(0) {
        anyhow::bail!("--limit must be at least 1 (leave it out to score every item)");
    }
    let list = Task::parse_list(&a.tasks)?;
    // Find every file before the (slow) model load, so a typo fails at once.
    let files = task_files(&a, &list)?;
    let (model, tok) = load_cpu_model(&a.model, a.tokenizer.as_deref())?;
    let opts = TaskOptions {
        limit: a.limit,
        batch: a.batch_size.max(1),
        strategy: a.strategy,
        policy: Policy::resolve(a.bos, a.encoding, &tok)?,
    };
    let t0 = Instant::now();
    let mut results = vec![];
    for (task, path) in &files {
        let r = run_task(&model, &tok, *task, path, &opts)?;
        eprintln!(
            "{}: {} items in {:.1} s ({:.1} items/s)",
            task.name(),
            r.n,
            r.elapsed_s,
            r.items_per_s
        );
        if let Some(dir) = &a.samples {
            write_samples(dir, &r)?;
        }
        results.push(r);
    }
    print!("{}", markdown(&results));
    if let Some(out) = &a.json {
        let avg = headline_average(&results);
        let doc = serde_json::json!({
            "model": a.model,
            "tokenizer": tok.path,
            "config": model.cfg,
            "policy": opts.policy,
            "strategy": opts.strategy,
            "batch_size": opts.batch,
            "limit": opts.limit,
            "threads": rayon::current_num_threads(),
            "elapsed_s": t0.elapsed().as_secs_f64(),
            "average": avg.map(|(v, k)| serde_json::json!({"value": v, "tasks": k})),
            "tasks": results,
        });
        std::fs::write(out, serde_json::to_string_pretty(&doc)? + "\n")
            .with_context(|| format!("cannot write {}", out.display()))?;
        eprintln!("wrote {}", out.display());
    }
    Ok(())
}

fn write_samples(dir: &Path, r: &TaskResult) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(format!("{}.jsonl", r.task.name()));
    let mut text = String::new();
    for s in &r.samples {
        text += &serde_json::to_string(s)?;
        text.push('\n');
    }
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
}
