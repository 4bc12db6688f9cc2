use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};
use tinyllama_infer::gguf::{format::TensorType, llama::export, vocab::Vocab};
use tinyllama_infer::{DecodeModel, WeightFormat};
use tinyllama_model::{hf, presets, HostWeights};

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Training throughput on random data: forward, forward+backward, and the full AdamW step.
    Train(TrainBenchArgs),
    /// A fine-tuning step (full, or LoRA on every projection) on random data: tokens/s and the
    /// process's peak memory; one method per run, to set beside scripts/peft_finetune_bench.py.
    Finetune(FinetuneBenchArgs),
    /// Zero-shot evaluation throughput (items/s) on one task's first N items, with a model
    /// directory or a randomly initialised preset.
    Eval(Box<super::eval_bench::EvalBenchArgs>),
    /// Decode speed per weight format: prompt processing and generation tokens/s, optionally
    /// beside llama.cpp's llama-bench on the same weights exported to GGUF.
    Decode(DecodeBenchArgs),
    /// Server throughput: completion tokens/s with 1, 8, 32… concurrent HTTP clients.
    Serve(ServeBenchArgs),
}

#[derive(Args)]
pub struct DecodeBenchArgs {
    /// Model preset with random weights.
    #[arg(long, default_value = "tinyllama-1.1b")]
    pub preset: String,
    /// A Hugging Face model directory instead of a preset.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Weight formats to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "f32,bf16,q8_0,q4_0")]
    pub formats: Vec<String>,
    /// Prompt tokens for the prompt-processing figure (llama-bench's pp).
    #[arg(long, default_value_t = 512)]
    pub prompt: usize,
    /// Tokens for the generation figure (llama-bench's tg).
    #[arg(long, default_value_t = 128)]
    pub gen: usize,
    /// Timed repetitions (the median is reported) after one warm-up.
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// llama.cpp's `llama-bench` binary: also measure llama.cpp on the same weights (exported
    /// to GGUF in the same format) with the same thread count.
    #[arg(long)]
    pub llama_bench: Option<PathBuf>,
    /// Directory for the GGUF files given to llama-bench (default: the system temp directory);
    /// each file is deleted after its run.
    #[arg(long)]
    pub gguf_dir: Option<PathBuf>,
    /// Seed of the random weights and token ids.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print one JSON line per format instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct ServeBenchArgs {
    /// Model preset with random weights.
    #[arg(long, default_value = "tinyllama-1.1b")]
    pub preset: String,
    /// A Hugging Face model directory instead of a preset.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Weight format.
    #[arg(long, default_value = "f32")]
    pub quant: String,
    /// Concurrent clients, comma-separated; one measurement each.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    pub clients: Vec<usize>,
    /// Requests each client sends, one after another.
    #[arg(long, default_value_t = 2)]
    pub requests: usize,
    /// Prompt tokens per request.
    #[arg(long, default_value_t = 128)]
    pub prompt: usize,
    /// Completion tokens per request (EOS is ignored).
    #[arg(long, default_value_t = 128)]
    pub gen: usize,
    /// Sequences decoded together at most (default: the largest client count).
    #[arg(long)]
    pub max_parallel: Option<usize>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print one JSON line per client count instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Random weights for a preset, or a model directory.
fn bench_weights(preset: &str, model: Option<&Path>, seed: u64) -> Result<(HostWeights, String)> {
    match model {
        Some(dir) => Ok((hf::load_dir(dir)?, dir.display().to_string())),
        None => {
            let cfg = presets::get(preset)?;
            eprintln!(
                "initialising {preset} with random weights ({} parameters)...",
                cfg.num_params()
            );
            Ok((
                HostWeights::init(&cfg, seed),
                format!("{preset} (random weights)"),
            ))
        }
    }
}

fn gguf_type(f: WeightFormat) -> TensorType {
    match f {
        WeightFormat::F32 => TensorType::F32,
        WeightFormat::Bf16 => TensorType::Bf16,
        WeightFormat::Q8_0 => TensorType::Q8_0,
        WeightFormat::Q4_0 => TensorType::Q4_0,
    }
}

/// Runs llama-bench on a GGUF file; returns (pp tokens/s, tg tokens/s).
fn llama_bench(bin: &Path, gguf: &Path, a: &DecodeBenchArgs, threads: usize) -> Result<(f64, f64)> {
    let out = std::process::Command::new(bin)
        .arg("-m")
        .arg(gguf)
        .args(["-p", &a.prompt.to_string(), "-n", &a.gen.to_string()])
        .args([
            "-t",
            &threads.to_string(),
            "-r",
            &a.reps.max(1).to_string(),
            "-o",
            "json",
        ])
        .output()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed ({}): {}",
            bin.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("{} -o json printed no JSON", bin.display()))?;
    let (mut pp, mut tg) = (0.0, 0.0);
    for t in v.as_array().map(|a| a.as_slice()).unwrap_or(&[]) {
        let ts = t["avg_ts"].as_f64().unwrap_or(0.0);
        match (
            t["n_prompt"].as_u64().unwrap_or(0),
            t["n_gen"].as_u64().unwrap_or(0),
        ) {
            (p, 0) if p > 0 => pp = ts,
            (0, g) if g > 0 => tg = ts,
            _ => {}
        }
    }
    Ok((pp, tg))
}

fn run_decode(a: DecodeBenchArgs) -> Result<()> {
    for (flag, v) in [("--prompt", a.prompt), ("--gen", a.gen), ("--reps", a.reps)] {
        if v == 0 {
            bail!("{flag} must be at least 1");
        }
    }
    let formats = a
        .formats
        .iter()
        .map(|f| WeightFormat::parse(f))
        .collect::<Result<Vec<_>>>()?;
    if let Some(b) = &a.llama_bench {
        if !b.exists() {
            bail!(
                "--llama-bench {} does not exist (build llama.cpp's llama-bench target)",
                b.display()
            );
        }
    }
    let (host, what) = bench_weights(&a.preset, a.model.as_deref(), a.seed)?;
    let ctx = host.config.max_seq_len;
    if a.prompt.saturating_add(a.gen) > ctx {
        bail!(
            "--prompt {} + --gen {} must fit the model's context of {ctx}",
            a.prompt,
            a.gen
        );
    }
    let threads = rayon::current_num_threads();
    let vocab = match &a.model {
        Some(dir) if a.llama_bench.is_some() => {
            let c = &host.config;
            Some(Vocab::from_dir(dir, c.vocab_size, c.bos_id, c.eos_id)?)
        }
        None if a.llama_bench.is_some() => Some(Vocab::synthetic(host.config.vocab_size)),
        _ => None,
    };
    if !a.json {
        println!(
            "{what}; {threads} threads; {} kernels; pp{} / tg{}; median of {}",
            tinyllama_infer::simd::describe(tinyllama_infer::simd::active()),
            a.prompt,
            a.gen,
            a.reps
        );
        println!(
            "{:<6} {:>9} {:>12} {:>12} {:>7} {:>12} {:>12} {:>7}",
            "format", "MiB", "pp tok/s", "llama.cpp", "ratio", "tg tok/s", "llama.cpp", "ratio"
        );
    }
    for f in formats {
        let model = DecodeModel::from_host(host.clone(), f)?;
        let ours = tinyllama_infer::bench::bench_decode(&model, a.prompt, a.gen, a.reps, a.seed)?;
        drop(model);
        let theirs = match (&a.llama_bench, &vocab) {
            (Some(bin), Some(v)) => {
                let dir = a.gguf_dir.clone().unwrap_or_else(std::env::temp_dir);
                let path = dir.join(format!(
                    "tinyllama-bench-{}-{}.gguf",
                    f.name(),
                    std::process::id()
                ));
                export(&host, v, "bench", &path, gguf_type(f))?;
                let r = llama_bench(bin, &path, &a, threads);
                let _ = std::fs::remove_file(&path);
                Some(r?)
            }
            _ => None,
        };
        let ratio = |o: f64, t: Option<f64>| t.filter(|&t| t > 0.0).map(|t| o / t);
        if a.json {
            println!(
                "{}",
                serde_json::json!({
                    "model": what, "threads": threads, "format": f.name(), "weight_mib": ours.weight_mib,
                    "prompt": a.prompt, "gen": a.gen,
                    "pp_tok_s": ours.pp_tok_s, "tg_tok_s": ours.tg_tok_s,
                    "llamacpp_pp_tok_s": theirs.map(|t| t.0), "llamacpp_tg_tok_s": theirs.map(|t| t.1),
                    "pp_ratio": ratio(ours.pp_tok_s, theirs.map(|t| t.0)),
                    "tg_ratio": ratio(ours.tg_tok_s, theirs.map(|t| t.1)),
                })
            );
        } else {
            let cell = |x: Option<f64>, p: usize| {
                x.map(|v| format!("{v:.p$}")).unwrap_or_else(|| "-".into())
            };
            println!(
                "{:<6} {:>9.1} {:>12.2} {:>12} {:>7} {:>12.2} {:>12} {:>7}",
                f.name(),
                ours.weight_mib,
                ours.pp_tok_s,
                cell(theirs.map(|t| t.0), 2),
                cell(ratio(ours.pp_tok_s, theirs.map(|t| t.0)), 2),
                ours.tg_tok_s,
                cell(theirs.map(|t| t.1), 2),
                cell(ratio(ours.tg_tok_s, theirs.map(|t| t.1)), 2),
            );
        }
    }
    Ok(())
}

fn run_serve(a: ServeBenchArgs) -> Result<()> {
    use tinyllama_infer::batch::SchedulerConfig;
    use tinyllama_infer::loader::Loaded;
    use tinyllama_model::rng::Rng;
    if a.clients.is_empty() || a.clients.iter().any(|&c| c == 0 || c > 1024) {
        bail!("--clients needs counts in 1..=1024, e.g. 1,8,32");
    }
    if a.requests == 0 || a.gen == 0 {
        bail!("--requests and --gen must be at least 1");
    }
    if a.max_parallel == Some(0) {
        bail!("--max-parallel must be at least 1");
    }
    let format = WeightFormat::parse(&a.quant)?;
    let (host, what) = bench_weights(&a.preset, a.model.as_deref(), a.seed)?;
    let cfg = host.config.clone();
    if a.prompt.saturating_add(a.gen) > cfg.max_seq_len || a.prompt == 0 {
        bail!(
            "--prompt {} + --gen {} must fit the model's context of {} (prompt ≥ 1)",
            a.prompt,
            a.gen,
            cfg.max_seq_len
        );
    }
    let tokenizer = match &a.model {
        Some(dir) => tinyllama_model::tokenizer::Tokenizer::load(dir, cfg.bos_id, cfg.eos_id)?,
        None => {
            let json = tinyllama_infer::testutil::char_tokenizer_json(cfg.vocab_size);
            let inner: tokenizers::Tokenizer = json
                .parse()
                .map_err(|e| anyhow::anyhow!("building the stand-in tokenizer: {e}"))?;
            tinyllama_model::tokenizer::Tokenizer::from_inner(inner, cfg.bos_id, cfg.eos_id)
        }
    };
    let max_clients = *a.clients.iter().max().unwrap_or(&1);
    let loaded = Loaded {
        runner: tinyllama_infer::Runner::new(DecodeModel::from_host(host, format)?, None)?,
        tokenizer,
        template: tinyllama_infer::ChatTemplate::zephyr(),
        name: "bench".into(),
    };
    let opts = tinyllama_serve::ServeOptions {
        api_key: None,
        model_name: None,
        scheduler: SchedulerConfig {
            max_parallel: a.max_parallel.unwrap_or(max_clients),
            max_queue: max_clients * a.requests,
        },
        limits: tinyllama_serve::conn::Limits::default(),
        max_choices: None,
    };
    let srv = tinyllama_serve::spawn(loaded, "127.0.0.1:0".parse()?, &opts)?;
    if !a.json {
        println!(
            "{what}, {} weights; {} threads; prompt {} + completion {} tokens; {} requests per client; max parallel {}",
            format.name(),
            rayon::current_num_threads(),
            a.prompt,
            a.gen,
            a.requests,
            opts.scheduler.max_parallel
        );
        println!(
            "{:>8} {:>9} {:>12} {:>14}",
            "clients", "requests", "tok/s", "mean latency"
        );
    }
    let v = cfg.vocab_size as u64;
    for &c in &a.clients {
        let prompt = |i: usize| {
            let mut r = Rng::derive(a.seed, i as u64);
            let mut p = vec![cfg.bos_id];
            p.extend((1..a.prompt).map(|_| (3 + r.below(v - 3)) as u32));
            p
        };
        let t = tinyllama_serve::bench::measure(srv.addr, c, a.requests, a.gen, prompt)?;
        if a.json {
            println!("{}", serde_json::to_string(&t)?);
        } else {
            println!(
                "{:>8} {:>9} {:>12.1} {:>13.2}s",
                t.clients, t.requests, t.tok_s, t.mean_latency_s
            );
        }
    }
    srv.stop();
    Ok(())
}

#[derive(Args)]
pub struct TrainBenchArgs {
    /// Model preset to benchmark.
    #[arg(long, default_value = "demo-5m")]
    pub preset: String,
    /// Sequences per step (one micro-batch).
    #[arg(long = "micro-batch", alias = "batch", default_value_t = 8)]
    pub batch: usize,
    /// Tokens per sequence (default: the preset's context).
    #[arg(long)]
    pub seq: Option<usize>,
    /// Timed repetitions (the median is reported).
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Untimed repetitions first.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Device to run on: cpu, or cuda / cuda:N in a CUDA build.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Re-run each layer during the backward pass instead of keeping its activations.
    #[arg(long)]
    pub recompute: bool,
    /// Compute precision: f32, or bf16 (bf16 matmul operands with f32 accumulation; on the CPU
    /// it runs on AMX tiles where present). Default: f32 on the CPU, bf16 on CUDA.
    #[arg(long)]
    pub precision: Option<String>,
    /// Print one JSON line instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also time every backend op and print where a step's time goes.
    #[arg(long)]
    pub profile: bool,
}

#[derive(Args)]
pub struct FinetuneBenchArgs {
    /// Model preset to benchmark.
    #[arg(long, default_value = "demo-5m")]
    pub preset: String,
    /// `full` or `lora`.
    #[arg(long, default_value = "lora")]
    pub method: String,
    /// Sequences per step.
    #[arg(long = "micro-batch", alias = "batch", default_value_t = 8)]
    pub batch: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 256)]
    pub seq: usize,
    /// LoRA rank (alpha is twice it; dropout 0.05; every projection adapted).
    #[arg(long, default_value_t = 8)]
    pub rank: usize,
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// LoRA dropout on the adapters' inputs.
    #[arg(long, default_value_t = 0.05)]
    pub dropout: f32,
    /// Print one JSON line instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also time every backend op and print where a step's time goes.
    #[arg(long)]
    pub profile: bool,
}

/// Tokens one benchmark step may hold (activations grow with it): far above any useful
/// micro-batch on one device, far below what exhausts memory by a typo.
const MAX_STEP_TOKENS: usize = 1 << 20;

/// Refuses shapes the engine cannot run (it sizes its buffers from them) before any work.
fn check_train_shape(batch: usize, seq: usize, context: usize, steps: usize) -> Result<()> {
    if batch == 0 {
        bail!("--micro-batch (--batch) must be at least 1");
    }
    if seq == 0 || seq > context {
        bail!("--seq must be in 1..={context} (the preset's context), got {seq}");
    }
    if batch.saturating_mul(seq) > MAX_STEP_TOKENS {
        bail!(
            "--micro-batch {batch} × --seq {seq} is {} tokens per step; at most {MAX_STEP_TOKENS} are allowed",
            batch.saturating_mul(seq)
        );
    }
    if steps == 0 {
        bail!("--steps must be at least 1 (the median of the timed steps is reported)");
    }
    Ok(())
}

pub fn run(c: BenchCommand) -> Result<()> {
    match c {
        BenchCommand::Eval(a) => super::eval_bench::run(*a),
        BenchCommand::Decode(a) => run_decode(a),
        BenchCommand::Serve(a) => run_serve(a),
        BenchCommand::Finetune(a) => {
            let cfg = presets::get(&a.preset)?;
            check_train_shape(a.batch, a.seq, cfg.max_seq_len, a.steps)?;
            let lora = match a.method.as_str() {
                "full" => None,
                "lora" => Some(tinyllama_engine::lora::LoraConfig {
                    rank: a.rank,
                    alpha: 2.0 * a.rank as f32,
                    dropout: a.dropout,
                    ..Default::default()
                }),
                m => bail!("--method `{m}` unknown; use full or lora"),
            };
            if a.rank == 0 {
                bail!("--rank must be at least 1");
            }
            let r = tinyllama_train::bench::bench_finetune(
                &cfg,
                lora.clone(),
                a.batch,
                a.seq,
                a.warmup,
                a.steps,
            )?;
            if a.json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "{} ({} params, {} trained), {} fine-tuning, micro-batch {} × {}, {} threads, {}",
                    a.preset, r.params, r.trainable, r.method, r.batch, r.seq, r.threads, r.backend
                );
                println!("full step   {:>10.0} tokens/s", r.step_tok_s);
                println!(
                    "peak RSS    {:>10.1} MB ({:.1} MB after building the model)",
                    r.peak_rss_mb, r.init_rss_mb
                );
            }
            if a.profile {
                let p =
                    tinyllama_train::bench::profile_finetune(&cfg, lora, a.batch, a.seq, a.steps)?;
                let total: f64 = p.iter().map(|x| x.1).sum();
                println!(
                    "where a step's time goes ({:.1} ms per step in backend ops):",
                    total * 1e3
                );
                for (op, s, calls) in p {
                    println!(
                        "  {op:<22} {:>8.2} ms {:>5.1}%  {calls} calls",
                        s * 1e3,
                        100.0 * s / total
                    );
                }
            }
            Ok(())
        }
        BenchCommand::Train(a) => {
            let cfg = presets::get(&a.preset)?;
            let seq = a.seq.unwrap_or(cfg.max_seq_len);
            check_train_shape(a.batch, seq, cfg.max_seq_len, a.steps)?;
            // Started as one of several ranks (mpirun): the data-parallel step of the job.
            let coll = tinyllama_dist::open()?;
            if coll.world() > 1 {
                if a.device != "cpu" {
                    bail!("bench train under a launcher measures CPU ranks; use `pretrain` for GPU jobs");
                }
                let precision = a.precision.clone().unwrap_or_else(|| "f32".into());
                let r = tinyllama_train::bench::bench_train_ranks(
                    &cfg, a.batch, seq, a.warmup, a.steps, &precision, &*coll,
                )?;
                if coll.rank() == 0 {
                    if a.json {
                        println!("{}", serde_json::to_string(&r)?);
                    } else {
                        println!(
                            "{} ({} params), {} ranks × micro-batch {} × {}, {} thread(s) per rank, over {}",
                            a.preset,
                            cfg.num_params(),
                            r.ranks,
                            r.batch_per_rank,
                            seq,
                            r.threads_per_rank,
                            r.collective
                        );
                        println!(
                            "full ZeRO-1 step   {:>10.0} tokens/s for the job ({:.1} ms per step)",
                            r.job_tok_s,
                            r.step_s * 1e3
                        );
                        println!(
                            "collectives        {:>10.1} ms per step ({:.1}% of it), {:.1} MB per rank per step",
                            r.comm_s * 1e3,
                            100.0 * r.comm_s / r.step_s,
                            r.comm_bytes as f64 / 1e6
                        );
                        println!(
                            "optimizer moments  {:>10} per rank of {} ({:.0}%)",
                            r.moments_per_rank,
                            r.moments_total,
                            100.0 * r.moments_per_rank as f64 / r.moments_total as f64
                        );
                    }
                }
                return Ok(());
            }
            let precision = a
                .precision
                .clone()
                .unwrap_or_else(|| if a.device == "cpu" { "f32" } else { "bf16" }.to_string());
            let d = tinyllama_train::device_bench::bench_train_device(
                &a.device,
                &cfg,
                a.batch,
                seq,
                a.warmup,
                a.steps,
                a.recompute,
                &precision,
            )?;
            let r = &d.base;
            if a.json {
                println!("{}", serde_json::to_string(&d)?);
            } else {
                println!(
                    "{} ({} params), micro-batch {} × {}{}, {}",
                    a.preset,
                    r.params,
                    a.batch,
                    seq,
                    if a.recompute { ", recompute" } else { "" },
                    r.backend
                );
                println!("forward            {:>10.0} tokens/s", r.fwd_tok_s);
                println!("forward+backward   {:>10.0} tokens/s", r.fwd_bwd_tok_s);
                println!(
                    "full AdamW step    {:>10.0} tokens/s ({:.1} GFLOP/s)",
                    r.step_tok_s, r.step_gflops
                );
                if let (Some(mfu), Some(peak)) = (d.mfu, d.peak_flops) {
                    println!(
                        "MFU                {:>10.1} % of {:.0} TFLOP/s (dense bf16 peak)",
                        100.0 * mfu,
                        peak / 1e12
                    );
                }
                if let Some(p) = d.device_peak_mb {
                    println!(
                        "peak GPU memory    {:>10.2} GiB allocated{}",
                        p / 1024.0,
                        d.device_used_mb
                            .map(|u| format!(" ({:.2} GiB in use on the device)", u / 1024.0))
                            .unwrap_or_default()
                    );
                }
                println!("peak RSS           {:>10.1} MiB", r.peak_rss_mb);
            }
            if a.profile {
                // The op profile runs on the CPU backend; a GPU run's precision does not apply.
                let cpu_precision = if a.device == "cpu" { &precision } else { "f32" };
                let p = tinyllama_train::bench::profile_train(
                    &cfg,
                    a.batch,
                    seq,
                    a.steps,
                    cpu_precision,
                )?;
                let total: f64 = p.iter().map(|x| x.1).sum();
                println!(
                    "\n{:<28} {:>10} {:>7} {:>6}",
                    "op (per full step)", "ms", "share", "calls"
                );
                for (op, s, calls) in p {
                    println!(
                        "{op:<28} {:>10.2} {:>6.1}% {calls:>6}",
                        s * 1e3,
                        100.0 * s / total
                    );
                }
                println!("{:<28} {:>10.2}", "total", total * 1e3);
            }
            Ok(())
        }
    }
}
