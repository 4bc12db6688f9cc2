//! Running a [`PipelineConfig`]: four stages over a shared work directory.
//!
//! | stage | runs | does |
//! |---|---|---|
//! | `scan` | per shard of input files | read, repair/normalise, filter, hash (exact + MinHash) |
//! | `merge` | once | exact and near-duplicate clusters → documents to drop |
//! | `emit` | per shard of input files | re-read, keep survivors, tokenise (+EOS) or write jsonl |
//! | `pack` | once | concatenate per source into LITPKDS shards, manifest, report |
//!
//! [`run`] does all four in this process. For a Slurm job array, run `scan` and `emit` with
//! `shard_index`/`num_shards` (files are dealt round-robin) and `merge`/`pack` as single
//! tasks; each stage checks that the previous one is complete, skips work whose marker is
//! current, and can be rerun after an interruption without losing or duplicating documents.
//! Everything is keyed by file order and record position, so the output is identical whatever
//! the thread count or sharding.

mod emit;
mod exec;
mod leftovers;
mod merge;
mod pack;
mod scan;
pub mod scanfile;
pub mod workdir;

pub use pack::{Manifest, ManifestSource, ManifestSplit};

use crate::config::{OutputFormat, PipelineConfig};
use crate::dedup::MinHasher;
use crate::filters::FilterChain;
use crate::ingest::{discover_counting, InputFile, ReadLimits};
use crate::packed::DType;
use crate::report::Report;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use workdir::{fingerprint, WorkDir};

/// Bumped when any on-disk intermediate format or stage semantics change, so old work
/// directories are redone rather than misread.
const FORMAT_VERSION: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Scan,
    Merge,
    Emit,
    Pack,
}

impl Stage {
    pub fn parse(s: &str) -> Result<Stage> {
        Ok(match s {
            "scan" | "signature" | "signatures" => Stage::Scan,
            "merge" | "cluster" => Stage::Merge,
            "emit" | "filter" | "tokenize" => Stage::Emit,
            "pack" | "finish" => Stage::Pack,
            other => bail!("unknown stage {other:?}: expected scan, merge, emit or pack"),
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            Stage::Scan => "scan",
            Stage::Merge => "merge",
            Stage::Emit => "emit",
            Stage::Pack => "pack",
        }
    }
}

#[derive(Clone, Debug)]
pub struct RunOptions {
    /// No progress bars or log lines.
    pub quiet: bool,
    /// This task's shard (files `i` with `i % num_shards == shard_index`).
    pub shard_index: usize,
    pub num_shards: usize,
    /// Worker threads; `None` uses rayon's global pool (sized by `--threads`).
    pub threads: Option<usize>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            quiet: false,
            shard_index: 0,
            num_shards: 1,
            threads: None,
        }
    }
}

/// The tokenizer as the emit stage uses it.
pub(crate) struct TokState {
    /// Built only where documents are encoded (emit), not for packing.
    pub tok: Option<crate::fasttok::DocTokenizer>,
    pub eos: u32,
    pub vocab: usize,
    pub dtype: DType,
    pub fp: String,
    pub path: PathBuf,
}

impl TokState {
    fn load(cfg: &PipelineConfig, for_encoding: bool) -> Result<Self> {
        let t = cfg
            .tokenizer
            .as_ref()
            .context("packed output needs [tokenizer] path")?;
        let file = if t.path.is_dir() {
            t.path.join("tokenizer.json")
        } else {
            t.path.clone()
        };
        let bytes = std::fs::read(&file).with_context(|| {
            format!(
                "cannot read tokenizer {} (set [tokenizer] path to a Hugging Face tokenizer.json)",
                file.display()
            )
        })?;
        let tok = tokenizers::Tokenizer::from_bytes(&bytes)
            .map_err(|e| anyhow::anyhow!("{}: not a valid tokenizer.json: {e}", file.display()))?;

        let eos = match t.eos_id {
            Some(id) => id,
            None => tok.token_to_id(&t.eos_token).with_context(|| {
                format!(
                    "{}: no token {:?} to end documents with; set [tokenizer] eos_id or eos_token",
                    file.display(),
                    t.eos_token
                )
            })?,
        };
        let vocab = tok.get_vocab_size(true);
        if eos as usize >= vocab {
            bail!("tokenizer eos_id {eos} is outside the vocabulary of {vocab}");
        }
        Ok(TokState {
            tok: for_encoding.then(|| crate::fasttok::DocTokenizer::new(tok)),
            eos,
            vocab,
            dtype: DType::for_vocab(vocab),
            fp: format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&bytes)),
            path: file,
        })
    }
}

/// Everything the stages share.
pub(crate) struct Ctx<'a> {
    pub cfg: &'a PipelineConfig,
    pub opts: RunOptions,
    pub files: Vec<InputFile>,
    /// Hidden files and directories the input paths left out.
    pub hidden_skipped: u64,
    pub work: WorkDir,
    pub chains: Vec<Option<FilterChain>>,
    pub names: Vec<Arc<str>>,
    pub minhash: Option<MinHasher>,
    pub bands: usize,
    pub scan_fp: Vec<String>,
    pub limits: ReadLimits,
    pub open_files: usize,
    pool: Option<rayon::ThreadPool>,
}

/// Size and mtime of every list file the filters read, so editing a list redoes the scan.
fn list_files_fp(cfg: &crate::filters::FiltersConfig) -> Vec<(PathBuf, u64, u64)> {
    let mut paths: Vec<PathBuf> = Vec::new();
    paths.extend(cfg.wordlist.files.iter().cloned());
    paths.extend(cfg.url_blocklist.domains.iter().cloned());
    paths.extend(cfg.url_blocklist.urls.iter().cloned());
    for d in &cfg.url_blocklist.dirs {
        paths.push(d.join("domains"));
        paths.push(d.join("urls"));
    }
    paths
        .into_iter()
        .map(|p| {
            let (s, m) = std::fs::metadata(&p)
                .map(|m| {
                    let mt = m
                        .modified()
                        .ok()
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map_or(0, |d| d.as_secs());
                    (m.len(), mt)
                })
                .unwrap_or((0, 0));
            (p, s, m)
        })
        .collect()
}

impl<'a> Ctx<'a> {
    fn new(cfg: &'a PipelineConfig, opts: &RunOptions) -> Result<Self> {
        cfg.validate()?;
        if opts.num_shards == 0 || opts.shard_index >= opts.num_shards {
            bail!(
                "shard index {} is not below the number of shards {}",
                opts.shard_index,
                opts.num_shards
            );
        }
        let (files, hidden_skipped) = discover_counting(cfg)?;
        let mut chains = Vec::new();
        let mut names = Vec::new();
        for (i, s) in cfg.sources.iter().enumerate() {
            names.push(Arc::from(s.name.as_str()));
            chains.push(match cfg.filters_for(i) {
                Some(f) if f.any_enabled() => Some(
                    FilterChain::build(f)
                        .with_context(|| format!("filters of source {}", s.name))?,
                ),
                _ => None,
            });
        }
        let minhash = if cfg.dedup.near {
            Some(MinHasher::new(cfg.dedup.minhash()?))
        } else {
            None
        };
        let bands = minhash.as_ref().map_or(0, |m| m.params.bands);
        let dedup_fp = (
            cfg.dedup.exact,
            cfg.dedup.near,
            minhash.as_ref().map(|m| m.params),
        );
        let scan_fp = files
            .iter()
            .map(|f| {
                let mut src = cfg.sources[f.source].clone();
                src.weight = 0.0; // weights only matter to the trainer
                let filters = cfg.filters_for(f.source);
                fingerprint(&(
                    FORMAT_VERSION,
                    f,
                    &src,
                    &cfg.ingest.nfc,
                    &cfg.ingest.invalid_utf8,
                    &cfg.ingest.max_record_mb,
                    filters,
                    filters.map(list_files_fp),
                    dedup_fp,
                ))
            })
            .collect();
        let pool = match opts.threads {
            Some(n) => Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n.max(1))
                    .build()
                    .context("cannot start worker threads")?,
            ),
            None => None,
        };
        let threads = pool
            .as_ref()
            .map_or_else(rayon::current_num_threads, |p| p.current_num_threads());
        let open_files = cfg
            .ingest
            .open_files
            .unwrap_or_else(|| threads.div_ceil(4).clamp(2, 8))
            .max(1);
        Ok(Ctx {
            cfg,
            opts: opts.clone(),
            work: WorkDir::new(cfg.work_dir()),
            files,
            hidden_skipped,
            chains,
            names,
            minhash,
            bands,
            scan_fp,
            limits: ReadLimits {
                max_record_bytes: (cfg.ingest.max_record_mb as usize) << 20,
                batch_docs: cfg.ingest.batch_docs,
                batch_bytes: 32 << 20,
            },
            open_files,
            pool,
        })
    }

    /// Runs parallel work on this run's pool.
    pub fn par<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match &self.pool {
            Some(p) => p.install(f),
            None => f(),
        }
    }

    /// The files this shard handles.
    fn my_files(&self) -> Vec<&InputFile> {
        self.files
            .iter()
            .filter(|f| f.index % self.opts.num_shards == self.opts.shard_index)
            .collect()
    }

    fn log(&self, msg: &str) {
        if !self.opts.quiet {
            eprintln!("{msg}");
        }
    }

    /// Removes temporary files a killed run left in the work and output directories.
    fn clean_leftovers(&self) {
        let (n, i) = (self.opts.num_shards, self.opts.shard_index);
        let (scan, emit) = (self.work.root.join("scan"), self.work.root.join("emit"));
        // Unsharded runs own every file; a shard owns the scan and emit files of its inputs.
        let owned = |p: &std::path::Path| {
            n <= 1
                || (p.parent().is_some_and(|d| d == scan || d == emit)
                    && leftovers::file_index(p).is_some_and(|f| f % n == i))
        };
        let mut removed = leftovers::clean(&self.work.root, &owned);
        // The rest of the output directory (shards, report), when the work directory is in it.
        removed += std::fs::read_dir(&self.cfg.output_dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path() != self.work.root)
            .map(|e| match e.file_type() {
                Ok(t) if t.is_dir() => leftovers::clean(&e.path(), &owned),
                Ok(t) if t.is_file() => leftovers::clean_file(&e.path(), &owned),
                _ => 0,
            })
            .sum::<usize>();
        if removed > 0 {
            self.log(&format!(
                "removed {removed} temporary files left by an interrupted run"
            ));
        }
    }

    fn packed(&self) -> bool {
        self.cfg.output.format == OutputFormat::Packed
    }
}

/// Runs every stage in this process and returns the report (also written to
/// `<output_dir>/report.json`).
pub fn run(cfg: &PipelineConfig) -> Result<Report> {
    run_with(cfg, &RunOptions::default())
}

pub fn run_with(cfg: &PipelineConfig, opts: &RunOptions) -> Result<Report> {
    if opts.num_shards > 1 {
        bail!(
            "a sharded run goes stage by stage: scan (each shard), merge (once), emit (each \
             shard), pack (once); pass a stage"
        );
    }
    let ctx = Ctx::new(cfg, opts)?;
    ctx.clean_leftovers();
    let mut timings = BTreeMap::new();
    for stage in [Stage::Scan, Stage::Merge, Stage::Emit] {
        let t = Instant::now();
        run_stage_ctx(&ctx, stage, &BTreeMap::new())?;
        timings.insert(stage.name().to_string(), t.elapsed().as_secs_f64());
    }
    let t = Instant::now();
    let mut report = pack::pack(&ctx, &timings)?;
    report
        .timings
        .insert("pack".into(), t.elapsed().as_secs_f64());
    workdir::write_json(&cfg.output_dir.join("report.json"), &report)?;
    Ok(report)
}

/// Runs one stage (for this shard where the stage is sharded). Returns the report after
/// `pack`.
pub fn run_stage(cfg: &PipelineConfig, stage: Stage, opts: &RunOptions) -> Result<Option<Report>> {
    let ctx = Ctx::new(cfg, opts)?;
    ctx.clean_leftovers();
    if matches!(stage, Stage::Merge | Stage::Pack) && opts.num_shards > 1 {
        bail!(
            "the {} stage runs once over all shards: run it without --num-shards (as a single task)",
            stage.name()
        );
    }
    run_stage_ctx(&ctx, stage, &BTreeMap::new())
}

fn run_stage_ctx(
    ctx: &Ctx,
    stage: Stage,
    timings: &BTreeMap<String, f64>,
) -> Result<Option<Report>> {
    match stage {
        Stage::Scan => scan::scan(ctx).map(|_| None),
        Stage::Merge => ctx.par(|| merge::merge(ctx)).map(|_| None),
        Stage::Emit => emit::emit(ctx).map(|_| None),
        Stage::Pack => {
            let r = pack::pack(ctx, timings)?;
            workdir::write_json(&ctx.cfg.output_dir.join("report.json"), &r)?;
            Ok(Some(r))
        }
    }
}
