use anyhow::{bail, Result};
use clap::Args;
use std::path::PathBuf;
use tinyllama_train::config::RunConfig;
use tinyllama_train::trainer::{train, RunOptions};

#[derive(Args)]
pub struct PretrainArgs {
    /// Run configuration (TOML); without it the embedded demo runs end to end.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Continue from the latest checkpoint in the output directory.
    #[arg(long)]
    pub resume: bool,
    /// Override run.out_dir.
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// Override batch.max_steps.
    #[arg(long)]
    pub max_steps: Option<u64>,
    /// Override batch.micro_batch.
    #[arg(long)]
    pub micro_batch: Option<usize>,
    /// Override batch.global_batch (sequences per optimizer step).
    #[arg(long)]
    pub global_batch: Option<usize>,
    /// Override optim.lr.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Override run.seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Override run.device (cpu, cuda[:N]).
    #[arg(long)]
    pub device: Option<String>,
    /// Override run.precision (f32, or bf16: bf16 products with f32 accumulation; on the CPU
    /// it pays off where the CPU has AMX).
    #[arg(long)]
    pub precision: Option<String>,
    /// Override run.save_every.
    #[arg(long)]
    pub save_every: Option<u64>,
    /// Override model.preset.
    #[arg(long)]
    pub preset: Option<String>,
    /// Demo only: directory for the demo's data and run (default: demo).
    #[arg(long, default_value = "demo")]
    pub demo_dir: PathBuf,
    /// Tests of the collective timeout: `RANK:STEP` makes that rank stop responding before
    /// that step.
    #[arg(long, hide = true)]
    pub test_hang: Option<String>,
    /// Demo only: optimizer steps (of 8 × 256 tokens).
    #[arg(long, default_value_t = 600)]
    pub demo_steps: u64,
}

/// The command-line overrides, checked before anything is read or started.
fn check_overrides(a: &PretrainArgs) -> Result<()> {
    for (flag, v) in [
        ("--max-steps", a.max_steps),
        ("--save-every", a.save_every),
        ("--micro-batch", a.micro_batch.map(|v| v as u64)),
        ("--global-batch", a.global_batch.map(|v| v as u64)),
    ] {
        if v == Some(0) {
            bail!("{flag} must be at least 1");
        }
    }
    if let (Some(m), Some(g)) = (a.micro_batch, a.global_batch) {
        if g % m != 0 {
            bail!("--global-batch {g} must be a multiple of --micro-batch {m}");
        }
    }
    if let Some(lr) = a.lr {
        if !(lr.is_finite() && lr > 0.0 && lr < 10.0) {
            bail!("--lr must be a positive learning rate below 10 (e.g. 4e-4), got {lr}");
        }
    }
    if a.demo_steps == 0 {
        bail!("--demo-steps must be at least 1");
    }
    Ok(())
}

pub fn run(a: PretrainArgs) -> Result<()> {
    check_overrides(&a)?;
    let Some(path) = &a.config else {
        if let Some(i) = tinyllama_dist::LaunchInfo::detect()?.filter(|i| i.world > 1) {
            bail!(
                "the embedded demo runs in one process, but this is rank {} of {} ({}); start it without a launcher, or give --config RUN.toml for a distributed run (docs/distributed.md)",
                i.rank,
                i.world,
                i.launcher
            );
        }
        return super::demo::run(&a.demo_dir, a.demo_steps, a.seed.unwrap_or(7));
    };
    let mut cfg = RunConfig::from_toml_file(path)?;
    if let Some(v) = &a.out_dir {
        cfg.run.out_dir = v.clone();
    }
    if let Some(v) = a.max_steps {
        cfg.batch.max_steps = Some(v);
        cfg.batch.max_tokens = None;
    }
    if let Some(v) = a.micro_batch {
        cfg.batch.micro_batch = v;
    }
    if let Some(v) = a.global_batch {
        cfg.batch.global_batch = v;
    }
    if let Some(v) = a.lr {
        cfg.optim.lr = v;
        cfg.optim.min_lr = cfg.optim.min_lr.min(v);
    }
    if let Some(v) = a.seed {
        cfg.run.seed = v;
    }
    if let Some(v) = &a.device {
        cfg.run.device = v.clone();
    }
    if let Some(v) = &a.precision {
        cfg.run.precision = v.clone();
    }
    if let Some(v) = a.save_every {
        cfg.run.save_every = v;
    }
    if let Some(v) = &a.preset {
        cfg.model.preset = Some(v.clone());
        cfg.model.init_from = None;
    }
    if a.resume {
        cfg.run.resume = true;
    }
    let mut opts = RunOptions::default();
    if let Some(h) = &a.test_hang {
        let (r, s) = h
            .split_once(':')
            .and_then(|(r, s)| Some((r.parse().ok()?, s.parse().ok()?)))
            .ok_or_else(|| anyhow::anyhow!("--test-hang takes RANK:STEP, got {h:?}"))?;
        opts.hang = Some((r, s));
    }
    let s = train(&cfg, &opts)?;
    if s.rank != 0 {
        // Rank 0 reports for the whole job.
        return Ok(());
    }
    if s.already_finished {
        println!(
            "the run in {} had already finished at step {}; nothing was trained (raise --max-steps to continue it)",
            s.run_dir.display(),
            s.steps
        );
        return Ok(());
    }
    if s.steps == 0 {
        bail!("no steps were run");
    }
    println!("run directory   {}", s.run_dir.display());
    println!("steps / tokens  {} / {}", s.steps, s.tokens);
    println!(
        "final loss      {:.4}",
        s.losses.last().copied().unwrap_or(f64::NAN)
    );
    if let Some(v) = s.final_val_loss {
        println!("validation loss {v:.4}");
    }
    if let Some(c) = &s.checkpoint {
        println!("checkpoint      {}", c.display());
    }
    if let Some(e) = &s.export_dir {
        println!("HF export       {}", e.display());
    }
    if let Some(p) = &s.plot_png {
        println!("loss plot       {} (+ .svg)", p.display());
    }
    if s.world > 1 {
        println!(
            "ranks           {} ({:.0} tok/s per rank; collectives {:.1} ms and {:.1} MB per step on rank 0)",
            s.world,
            s.tokens_per_s / s.world as f64,
            s.comm_s * 1e3,
            s.comm_bytes as f64 / 1e6
        );
    }
    println!(
        "metrics         {}",
        s.run_dir.join("metrics.jsonl").display()
    );
    Ok(())
}
