use anyhow::Result;
use clap::{Args, Subcommand};
use tinyllama_model::presets;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Training throughput on random data: forward, forward+backward, and the full AdamW step.
    Train(TrainBenchArgs),
    /// Zero-shot evaluation throughput (items/s) on one task's first N items, with a model
    /// directory or a randomly initialised preset.
    Eval(Box<super::eval_bench::EvalBenchArgs>),
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
    /// Print one JSON line instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also time every backend op and print where a step's time goes.
    #[arg(long)]
    pub profile: bool,
}

pub fn run(c: BenchCommand) -> Result<()> {
    match c {
        BenchCommand::Eval(a) => super::eval_bench::run(*a),
        BenchCommand::Train(a) => {
            let cfg = presets::get(&a.preset)?;
            let seq = a.seq.unwrap_or(cfg.max_seq_len);
            let d = tinyllama_train::device_bench::bench_train_device(
                &a.device,
                &cfg,
                a.batch,
                seq,
                a.warmup,
                a.steps,
                a.recompute,
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
                let p = tinyllama_train::bench::profile_train(&cfg, a.batch, seq, a.steps)?;
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
