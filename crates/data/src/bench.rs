//! `data bench`: times filtering + dedup + tokenisation on a corpus with the rules that
//! `scripts/datatrove_bench.py` runs in datatrove (Gopher repetition and quality, C4, FineWeb,
//! MinHash 5-gram 14×8 dedup, tokenisation), and pure tokenisation of in-memory text for
//! comparison with `scripts/hf_tokenize_bench.py`.

use crate::config::{Format, PipelineConfig, SourceConfig, TokenizerRef};
use crate::filters::FiltersConfig;
use crate::pipeline::{run_stage, RunOptions, Stage};
use crate::report::Report;
use crate::tokenizer_train::sample_inputs;
use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub inputs: Vec<String>,
    pub text_field: String,
    pub tokenizer: PathBuf,
    /// Scratch directory for the run (emptied first).
    pub output: PathBuf,
    pub threads: Option<usize>,
    /// Text held in memory for the tokenisation-only measurement.
    pub tokenize_mb: u64,
    pub quiet: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct StageTiming {
    pub stage: String,
    pub seconds: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Throughput {
    pub seconds: f64,
    pub docs: u64,
    pub bytes: u64,
    pub docs_per_s: f64,
    pub mb_per_s: f64,
    pub docs_per_s_per_core: f64,
    pub mb_per_s_per_core: f64,
}

impl Throughput {
    fn new(seconds: f64, docs: u64, bytes: u64, threads: usize) -> Self {
        let s = seconds.max(1e-9);
        let t = threads.max(1) as f64;
        Throughput {
            seconds,
            docs,
            bytes,
            docs_per_s: docs as f64 / s,
            mb_per_s: bytes as f64 / 1e6 / s,
            docs_per_s_per_core: docs as f64 / s / t,
            mb_per_s_per_core: bytes as f64 / 1e6 / s / t,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct BenchResult {
    pub threads: usize,
    pub stages: Vec<StageTiming>,
    /// Filtering + dedup + tokenisation, all stages, over the input documents and text bytes.
    pub pipeline: Throughput,
    /// Tokenisation alone, in memory (`encode` per document on all threads).
    pub tokenize_only: Throughput,
    pub tokens: u64,
    pub report: Report,
}

/// The pipeline configuration the benchmark runs: the datatrove-equivalent rules.
pub fn bench_config(o: &BenchOptions) -> PipelineConfig {
    let mut src = SourceConfig::new("bench", &[]);
    src.paths = o.inputs.clone();
    src.text_field = o.text_field.clone();
    let mut cfg = PipelineConfig::new(&o.output, vec![src]);
    let mut f = FiltersConfig::all_quality();
    f.length.enabled = false;
    cfg.filters = f;
    cfg.tokenizer = Some(TokenizerRef::new(&o.tokenizer));
    cfg.output.validation_fraction = 0.0;
    cfg
}

fn prepare_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        let non_empty = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .next()
            .is_some();
        if non_empty && !dir.join("bench.json").exists() && !dir.join("work").exists() {
            bail!(
                "{} is not empty and is not a previous benchmark directory; pass an empty --output",
                dir.display()
            );
        }
        for sub in ["work", "train", "validation"] {
            let p = dir.join(sub);
            if p.exists() {
                std::fs::remove_dir_all(&p)
                    .with_context(|| format!("cannot clear {}", p.display()))?;
            }
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))
}

pub fn run(o: &BenchOptions) -> Result<BenchResult> {
    prepare_dir(&o.output)?;
    let cfg = bench_config(o);
    let opts = RunOptions {
        quiet: o.quiet,
        threads: o.threads,
        ..Default::default()
    };
    let threads = o.threads.unwrap_or_else(rayon::current_num_threads);
    let mut stages = Vec::new();
    let mut report = None;
    let total = Instant::now();
    for st in [Stage::Scan, Stage::Merge, Stage::Emit, Stage::Pack] {
        let t = Instant::now();
        report = run_stage(&cfg, st, &opts)?;
        stages.push(StageTiming {
            stage: st.name().into(),
            seconds: t.elapsed().as_secs_f64(),
        });
    }
    let seconds = total.elapsed().as_secs_f64();
    let report = report.context("the pack stage returned no report")?;
    let pipeline = Throughput::new(seconds, report.scan.docs_in, report.scan.bytes_in, threads);

    // Tokenisation alone on text already in memory.
    let (texts, _) = sample_inputs(
        &o.inputs,
        Format::Auto,
        &o.text_field,
        o.tokenize_mb << 20,
        0,
        true,
    )?;
    let tok = tokenizers::Tokenizer::from_file(&o.tokenizer)
        .map_err(|e| anyhow::anyhow!("{}: {e}", o.tokenizer.display()))?;
    let tok = crate::fasttok::DocTokenizer::new(tok);
    let bytes: u64 = texts.iter().map(|t| t.len() as u64).sum();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .context("cannot start worker threads")?;
    let t = Instant::now();
    let tokens: u64 = pool.install(|| {
        texts
            .par_iter()
            .map(|s| tok.encode(s).map_or(0, |e| e.len() as u64))
            .sum()
    });
    let tokenize_only = Throughput::new(
        t.elapsed().as_secs_f64(),
        texts.len() as u64,
        bytes,
        threads,
    );
    let r = BenchResult {
        threads,
        stages,
        pipeline,
        tokenize_only,
        tokens,
        report,
    };
    crate::pipeline::workdir::write_json(&o.output.join("bench.json"), &r)?;
    Ok(r)
}

impl BenchResult {
    pub fn table(&self) -> String {
        let mut s = String::new();
        use std::fmt::Write;
        let _ = writeln!(s, "threads {}", self.threads);
        for st in &self.stages {
            let _ = writeln!(s, "  {:<6} {:>9.2} s", st.stage, st.seconds);
        }
        for (name, t) in [
            ("filter+dedup+tokenize", &self.pipeline),
            ("tokenize only", &self.tokenize_only),
        ] {
            let _ = writeln!(
                s,
                "{name:<22} {:>8.2} s  {:>10.0} docs/s  {:>8.2} MB/s  per core: {:>8.0} docs/s {:>7.2} MB/s",
                t.seconds, t.docs_per_s, t.mb_per_s, t.docs_per_s_per_core, t.mb_per_s_per_core
            );
        }
        s
    }
}
