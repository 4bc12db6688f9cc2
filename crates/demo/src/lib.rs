//! The embedded demo behind `tinyllama pretrain` with no arguments: on a machine with no
//! network and no files it generates a corpus, runs the data pipeline on it, pre-trains a small
//! model, evaluates it on held-out questions whose answers the generator knows, samples from
//! it, and exports it — every stage of the system, in a few minutes on two CPU cores.

pub mod qa;

use anyhow::{Context, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tinyllama_data::config::{Format, PipelineConfig, SourceConfig, TokenizerRef};
use tinyllama_data::filters::FiltersConfig;
use tinyllama_data::tokenizer_train;
use tinyllama_engine::generate::{generate, GenerateParams};
use tinyllama_engine::sampling::SamplingParams;
use tinyllama_engine::{CpuBackend, Llama};
use tinyllama_model::tokenizer::Tokenizer;
use tinyllama_synth::SynthConfig;
use tinyllama_train::config::RunConfig;
use tinyllama_train::loader::SourceSpec;
use tinyllama_train::trainer::{train, RunOptions};

#[derive(Clone, Debug)]
pub struct DemoOptions {
    pub dir: PathBuf,
    pub seed: u64,
    /// Optimizer steps of 8 × 256 tokens.
    pub steps: u64,
    pub vocab_size: usize,
    pub quiet: bool,
}

impl DemoOptions {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DemoOptions {
            dir: dir.into(),
            seed: 7,
            steps: 600,
            vocab_size: 4096,
            quiet: false,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct DemoSummary {
    pub corpus_docs: u64,
    pub kept_docs: u64,
    pub train_tokens: u64,
    pub val_loss: f64,
    pub unigram_loss: f64,
    pub qa: qa::QaResult,
    pub samples: Vec<(String, String)>,
    pub run_dir: PathBuf,
    pub export_dir: Option<PathBuf>,
    pub plot: Option<PathBuf>,
    pub seconds: f64,
}

fn stage(opts: &DemoOptions, n: usize, what: &str) {
    if !opts.quiet {
        eprintln!("\n== {n}/5 {what}");
    }
}

/// Cross-entropy (nats/token) of the best context-free model: unigram frequencies counted on
/// the training tokens, scored on the validation tokens. The trained model must beat it.
fn unigram_baseline(train: &[SourceSpec], val: &[SourceSpec], vocab: usize) -> Result<f64> {
    let mut counts = vec![1u64; vocab]; // add-one smoothing
    for s in train {
        let r = s.open()?;
        let toks = r.read(0, r.len() as usize)?;
        for t in toks {
            counts[t as usize] += 1;
        }
    }
    let total: u64 = counts.iter().sum();
    let (mut nll, mut n) = (0f64, 0u64);
    for s in val {
        let r = s.open()?;
        for t in r.read(0, r.len() as usize)? {
            nll -= (counts[t as usize] as f64 / total as f64).ln();
            n += 1;
        }
    }
    Ok(nll / n.max(1) as f64)
}

pub fn run(opts: &DemoOptions) -> Result<DemoSummary> {
    let t0 = Instant::now();
    let dir = &opts.dir;
    // A fresh demo every time: its directory is its own.
    if dir.join("demo.json").exists() || dir.join("raw").exists() {
        std::fs::remove_dir_all(dir)
            .with_context(|| format!("cannot clear the previous demo in {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;

    stage(opts, 1, "synthetic corpus: stories, facts, arithmetic, code — with planted duplicates, junk and offensive documents");
    let raw = dir.join("raw");
    let synth = tinyllama_synth::generate(
        &SynthConfig {
            seed: opts.seed,
            ..SynthConfig::default()
        },
        &raw,
    )?;
    if !opts.quiet {
        let bytes: usize = synth.text_bytes.values().sum();
        eprintln!(
            "{:.1} MB of text written to {} (ground truth in manifest.json)",
            bytes as f64 / 1e6,
            raw.display()
        );
    }

    stage(opts, 2, "data pipeline: tokenizer training, quality and offensive-content filters, exact and near dedup, packing");
    let natural = raw.join("natural/*.jsonl.zst").display().to_string();
    let code = raw.join("code/*.parquet").display().to_string();
    let (mut texts, _) = tokenizer_train::sample_inputs(
        std::slice::from_ref(&natural),
        Format::Auto,
        "text",
        4 << 20,
        opts.seed,
        opts.quiet,
    )?;
    let (code_texts, _) = tokenizer_train::sample_inputs(
        std::slice::from_ref(&code),
        Format::Auto,
        "content",
        2 << 20,
        opts.seed,
        opts.quiet,
    )?;
    texts.extend(code_texts);
    let tok = tokenizer_train::train(
        &texts,
        &tokenizer_train::TrainOptions {
            vocab_size: opts.vocab_size,
            seed: opts.seed,
            ..Default::default()
        },
    )?;
    let tok_dir = dir.join("tokenizer");
    tokenizer_train::save(&tok, &tok_dir)?;
    let tok_path = tok_dir.join("tokenizer.json");

    let mut nat = SourceConfig::new("natural", &[&natural]);
    nat.url_field = Some("url".into());
    nat.weight = 0.7;
    // C4's line rule drops lines without end punctuation, which would delete the `Answer: 12`
    // lines of the quiz documents; the other quality rules apply.
    let mut nat_filters = FiltersConfig::all_quality();
    nat_filters.c4.enabled = false;
    // Gopher counts punctuation tokens as words, so at its 0.8 default the number-dense
    // arithmetic drills fail "words with a letter"; 0.5 still rejects symbol soup and number
    // tables.
    nat_filters.gopher_quality.min_alpha_words_ratio = 0.5;
    nat_filters.wordlist.enabled = true;
    nat_filters.wordlist.files = vec![raw.join("blocklist.txt")];
    nat_filters.url_blocklist.enabled = true;
    nat_filters.url_blocklist.domains = vec![raw.join("url_blocklist.txt")];
    nat.filters = Some(nat_filters);
    let mut cod = SourceConfig::new("code", &[&code]);
    cod.text_field = "content".into();
    cod.weight = 0.3;
    // Prose rules (Gopher, FineWeb) misjudge code; code gets length and word-list checks only.
    let mut code_filters = FiltersConfig::default();
    code_filters.length.enabled = true;
    code_filters.wordlist.enabled = true;
    code_filters.wordlist.files = vec![raw.join("blocklist.txt")];
    cod.filters = Some(code_filters);
    let data_dir = dir.join("data");
    let mut pcfg = PipelineConfig::new(&data_dir, vec![nat, cod]);
    pcfg.tokenizer = Some(TokenizerRef::new(&tok_path));
    pcfg.output.validation_fraction = 0.03;
    pcfg.output.chunk_size = 1 << 20;
    pcfg.dedup.seed = opts.seed;
    let report = tinyllama_data::pipeline::run(&pcfg)?;
    if !opts.quiet {
        eprintln!("{}", report.tables());
        eprintln!("{}", qa::planted_summary(&synth, &report));
    }
    let kept_docs: u64 = report.sources.iter().map(|s| s.docs_out).sum();
    let corpus_docs = report.scan.docs_in;

    stage(opts, 3, "pre-training a 5M-parameter Llama on CPU");
    let spec = |split: &str, s: &tinyllama_data::report::SourceReport| SourceSpec {
        name: Some(format!("{}-{split}", s.name)),
        path: data_dir.join(split),
        prefix: Some(s.name.clone()),
        weight: s.weight,
    };
    let mut rc: RunConfig = toml_from_defaults();
    rc.model.preset = Some("demo-5m".into());
    rc.model.vocab_size = Some(opts.vocab_size);
    rc.model.tokenizer = Some(tok_path.clone());
    rc.data.seq_len = 256;
    rc.data.train = report.sources.iter().map(|s| spec("train", s)).collect();
    rc.data.val = report
        .sources
        .iter()
        .filter(|s| s.val_tokens > 257)
        .map(|s| spec("validation", s))
        .collect();
    rc.optim.lr = 2e-3;
    rc.optim.min_lr = 2e-4;
    rc.optim.warmup_steps = 30;
    rc.optim.weight_decay = 0.1;
    rc.batch.micro_batch = 8;
    rc.batch.global_batch = 8;
    rc.batch.max_steps = Some(opts.steps);
    rc.run.out_dir = dir.join("run");
    rc.run.seed = opts.seed;
    rc.run.eval_every = (opts.steps / 6).max(1);
    rc.run.eval_sequences = 48;
    rc.run.save_every = (opts.steps / 3).max(1);
    rc.run.log_every = 25;
    let summary = train(
        &rc,
        &RunOptions {
            quiet: opts.quiet,
            ..Default::default()
        },
    )?;
    let val_loss = summary
        .final_val_loss
        .context("the demo's validation split is empty")?;
    let unigram_loss = unigram_baseline(&rc.data.train, &rc.data.val, opts.vocab_size)?;

    stage(
        opts,
        4,
        "evaluation on held-out questions (answers known to the generator)",
    );
    let ckpt = summary
        .checkpoint
        .clone()
        .context("no checkpoint written")?;
    let host = tinyllama_model::hf::load_dir(&ckpt)?;
    let tokenizer = Tokenizer::load(&tok_path, host.config.bos_id, host.config.eos_id)?;
    let model = Llama::new(CpuBackend::<f32>::new(), &host)?;
    let items = tinyllama_synth::load_eval_qa(raw.join("eval_qa.jsonl"))?;
    let qa = qa::evaluate(&model, &tokenizer, &items)?;

    stage(opts, 5, "samples, export and summary");
    let mut samples = vec![];
    let prompts = qa::sample_prompts(&synth);
    for p in prompts {
        let mut ids = vec![host.config.eos_id]; // documents in the shards start after an EOS
        ids.extend(tokenizer.encode(&p)?);
        let params = GenerateParams {
            max_new_tokens: 48,
            sampling: SamplingParams {
                temperature: 0.6,
                top_k: 40,
                top_p: 0.95,
                min_p: 0.0,
                repetition_penalty: 1.0,
            },
            seed: opts.seed,
            eos: Some(host.config.eos_id),
        };
        let (out, _) = generate(&model, &ids, &params, |_| true)?;
        // Decode prompt and continuation together: decoding the continuation alone would drop
        // its leading space (the ▁ word-boundary rule).
        let prompt_text = tokenizer.decode(&ids)?;
        let mut all = ids.clone();
        all.extend(out.iter().copied());
        let text = tokenizer.decode(&all)?;
        samples.push((p, text.get(prompt_text.len()..).unwrap_or("").to_string()));
    }
    let s = DemoSummary {
        corpus_docs,
        kept_docs,
        train_tokens: report.train_tokens,
        val_loss,
        unigram_loss,
        qa,
        samples,
        run_dir: summary.run_dir.clone(),
        export_dir: summary.export_dir.clone(),
        plot: summary.plot_png.clone(),
        seconds: t0.elapsed().as_secs_f64(),
    };
    tinyllama_model::atomic::write_atomic(&dir.join("demo.json"), &serde_json::to_vec_pretty(&s)?)?;
    Ok(s)
}

fn toml_from_defaults() -> RunConfig {
    RunConfig {
        model: Default::default(),
        data: tinyllama_train::config::DataSection {
            train: vec![],
            val: vec![],
            seq_len: 256,
        },
        optim: Default::default(),
        batch: Default::default(),
        run: Default::default(),
        dist: Default::default(),
        finetune: None,
    }
}

/// The closing summary printed by the CLI.
pub fn describe(s: &DemoSummary, dir: &Path) -> String {
    let mut o = String::new();
    o += &format!(
        "\nheld-out loss {:.3} nats/token vs unigram baseline {:.3} ({:.1}× lower perplexity)\n",
        s.val_loss,
        s.unigram_loss,
        (s.unigram_loss - s.val_loss).exp()
    );
    o += &format!("{}\n", s.qa.table());
    o += "samples (temperature 0.6):\n";
    for (p, c) in &s.samples {
        o += &format!("  » {}{}\n", p.replace('\n', "⏎"), c.replace('\n', "⏎"));
    }
    o += &format!("\ncorpus            {}\n", dir.join("raw").display());
    o += &format!(
        "packed shards     {} ({} training tokens)\n",
        dir.join("data").display(),
        s.train_tokens
    );
    o += &format!("run (checkpoints, metrics.jsonl) {}\n", s.run_dir.display());
    if let Some(p) = &s.plot {
        o += &format!("loss plot         {} (+ loss.svg)\n", p.display());
    }
    if let Some(e) = &s.export_dir {
        o += &format!("Hugging Face model {}  (try: tinyllama generate --model {} --prompt \"Question: What is 3 plus 4?\\nAnswer:\" --temperature 0)\n", e.display(), e.display());
    }
    o += &format!("summary           {}\n", dir.join("demo.json").display());
    o += &format!("total time        {:.0} s\n", s.seconds);
    o
}
