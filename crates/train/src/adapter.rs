//! A LoRA run's adapter: the run config's `[finetune.lora]` as the engine's [`LoraConfig`],
//! and the adapter's PEFT files in checkpoints and exports.

use crate::config::{LoraSection, RunConfig};
use anyhow::{bail, Context, Result};
use std::path::Path;
use tinyllama_engine::lora::{LoraConfig, LoraTarget};
use tinyllama_engine::{Backend, Llama};
use tinyllama_model::peft;

pub fn lora_config(s: &LoraSection) -> Result<LoraConfig> {
    let targets = s
        .targets
        .iter()
        .map(|t| LoraTarget::parse(t))
        .collect::<Result<Vec<_>>>()
        .context("[finetune.lora] targets")?;
    let c = LoraConfig {
        rank: s.rank,
        alpha: s.alpha as f32,
        dropout: s.dropout as f32,
        targets,
    };
    c.validate().context("[finetune.lora]")?;
    Ok(c)
}

/// Writes the model's adapter into `dir` in PEFT's layout, naming the base model the run
/// started from.
pub fn save<B: Backend>(model: &Llama<B>, dir: &Path, cfg: &RunConfig) -> Result<()> {
    let base = cfg
        .model
        .init_from
        .as_ref()
        .map(|p| p.display().to_string());
    model.save_peft(dir, base.as_deref())
}

/// Loads the adapter a checkpoint holds into the model's attached adapter (same
/// configuration: the run's).
pub fn load_into<B: Backend>(model: &mut Llama<B>, checkpoint: &Path) -> Result<()> {
    let a = peft::load_peft(checkpoint).with_context(|| {
        format!(
            "{}: the LoRA adapter of the checkpoint",
            checkpoint.display()
        )
    })?;
    let lo = model
        .lora()
        .context("no adapter attached to load the checkpoint's into")?;
    let mut theirs = a.config.target_modules.clone();
    let mut ours = lo.config.to_peft().target_modules;
    theirs.sort();
    ours.sort();
    if a.config.r != lo.config.rank || a.config.lora_alpha != lo.config.alpha || theirs != ours {
        bail!(
            "{}: the checkpoint's adapter (rank {}, alpha {}, targets {:?}) differs from [finetune.lora] of the run config; resume with the config the run started with",
            checkpoint.display(),
            a.config.r,
            a.config.lora_alpha,
            a.config.target_modules
        );
    }
    let mut host = Vec::with_capacity(lo.specs.len());
    for s in &lo.specs {
        let t = a.tensors.get(&s.name).with_context(|| {
            format!(
                "{}: the adapter has no tensor `{}`",
                checkpoint.display(),
                s.name
            )
        })?;
        if t.shape != s.shape {
            bail!(
                "{}: adapter tensor `{}` has shape {:?}, expected {:?}",
                checkpoint.display(),
                s.name,
                t.shape,
                s.shape
            );
        }
        if let Some(i) = t.data.iter().position(|x| !x.is_finite()) {
            bail!(
                "{}: adapter tensor `{}` holds a non-finite value at index {i}; the run had diverged when this checkpoint was written",
                checkpoint.display(),
                s.name
            );
        }
        host.push(t.data.clone());
    }
    model.set_lora_tensors(&host)
}
