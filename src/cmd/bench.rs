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
    /// Sequences per step.
    #[arg(long, default_value_t = 8)]
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
    /// Device to run on.
    #[arg(long, default_value = "cpu")]
    pub device: String,
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
            super::common::check_device(&a.device)?;
            let cfg = presets::get(&a.preset)?;
            let seq = a.seq.unwrap_or(cfg.max_seq_len);
            let r = tinyllama_train::bench::bench_train(&cfg, a.batch, seq, a.warmup, a.steps)?;
            if a.json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "{} ({} params), batch {} × {}, {}",
                    a.preset, r.params, a.batch, seq, r.backend
                );
                println!("forward            {:>10.0} tokens/s", r.fwd_tok_s);
                println!("forward+backward   {:>10.0} tokens/s", r.fwd_bwd_tok_s);
                println!(
                    "full AdamW step    {:>10.0} tokens/s ({:.1} GFLOP/s)",
                    r.step_tok_s, r.step_gflops
                );
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
