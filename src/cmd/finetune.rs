//! `tinyllama finetune`: supervised fine-tuning (full or LoRA) and DPO from chat data (see
//! `tinyllama_finetune` and docs/finetune.md); with no config, the embedded fine-tuning demo.

use anyhow::{bail, Result};
use clap::Args;
use std::path::PathBuf;
use tinyllama_finetune::demo::{self, DemoOptions};
use tinyllama_finetune::run::{self as ft, FinetuneSummary};
use tinyllama_train::trainer::RunOptions;

#[derive(Args)]
pub struct FinetuneArgs {
    /// Run configuration (TOML) with a [finetune] section; without it the embedded demo runs:
    /// synthetic dialogues about the pre-training demo's world, SFT with LoRA, then DPO.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Continue from the latest checkpoint in the output directory.
    #[arg(long)]
    pub resume: bool,
    /// Override run.out_dir.
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// Override model.init_from (the Hugging Face model to start from).
    #[arg(long)]
    pub init_from: Option<PathBuf>,
    /// Override batch.max_steps (instead of finetune.epochs).
    #[arg(long)]
    pub max_steps: Option<u64>,
    /// Override finetune.epochs.
    #[arg(long)]
    pub epochs: Option<f64>,
    /// Override optim.lr.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Override run.seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Override run.precision (f32 or bf16).
    #[arg(long)]
    pub precision: Option<String>,
    /// Demo only: directory for the fine-tuning demo (default: demo-finetune).
    #[arg(long, default_value = "demo-finetune")]
    pub demo_dir: PathBuf,
    /// Demo only: the pre-training demo's directory, trained first when it holds no model.
    #[arg(long, default_value = "demo")]
    pub pretrain_dir: PathBuf,
}

pub fn run(a: FinetuneArgs) -> Result<()> {
    if a.max_steps == Some(0) {
        bail!("--max-steps must be at least 1");
    }
    if let Some(e) = a.epochs {
        if !(e > 0.0 && e.is_finite()) {
            bail!("--epochs must be positive, got {e}");
        }
    }
    if let Some(lr) = a.lr {
        if !(lr.is_finite() && lr > 0.0 && lr < 10.0) {
            bail!("--lr must be a positive learning rate below 10 (e.g. 2e-5), got {lr}");
        }
    }
    let Some(path) = &a.config else {
        let mut o = DemoOptions::new(&a.demo_dir, &a.pretrain_dir);
        if let Some(s) = a.seed {
            o.seed = s;
        }
        let s = demo::run(&o)?;
        println!("{}", demo::describe(&s));
        return Ok(());
    };
    let mut cfg = ft::load_config(path)?;
    if let Some(v) = &a.out_dir {
        cfg.run.out_dir = v.clone();
    }
    if let Some(v) = &a.init_from {
        cfg.model.init_from = Some(v.clone());
        cfg.model.preset = None;
    }
    if let Some(f) = cfg.finetune.as_mut() {
        if let Some(e) = a.epochs {
            f.epochs = Some(e);
        }
        if let Some(v) = a.max_steps {
            f.epochs = None;
            cfg.batch.max_steps = Some(v);
            cfg.batch.max_tokens = None;
        }
    }
    if let Some(v) = a.lr {
        cfg.optim.lr = v;
        cfg.optim.min_lr = cfg.optim.min_lr.min(v);
    }
    if let Some(v) = a.seed {
        cfg.run.seed = v;
    }
    if let Some(v) = &a.precision {
        cfg.run.precision = v.clone();
    }
    if a.resume {
        cfg.run.resume = true;
    }
    let s = ft::run(&cfg, &RunOptions::default())?;
    report(&s);
    Ok(())
}

fn report(s: &FinetuneSummary) {
    println!("run directory   {}", s.run_dir.display());
    println!(
        "method          {:?} · {} training / {} validation items",
        s.method, s.train_items, s.val_items
    );
    println!("steps           {}", s.steps);
    println!("final loss      {:.4}", s.final_loss);
    if let Some(v) = s.val_loss {
        println!("validation loss {v:.4}");
    }
    if let Some(m) = &s.model_dir {
        println!(
            "chat model      {} (`tinyllama chat --model {}`)",
            m.display(),
            m.display()
        );
    }
    if let Some(a) = &s.adapter_dir {
        println!("PEFT adapter    {}", a.display());
    }
    println!(
        "metrics         {}",
        s.run_dir.join("metrics.jsonl").display()
    );
}
