//! Checkpoints. Each is a directory `checkpoints/step-NNNNNNNN/` holding a Hugging Face model
//! (`config.json`, `model.safetensors` in f32 — so a checkpoint can be generated from or
//! evaluated directly), `optimizer.safetensors` (Adam moments) and `state.json` (step, data
//! loader, counters, run config). It is built under a temporary name, every file fsynced, and
//! renamed into place only when complete: a crash leaves either the whole checkpoint or none.

use crate::config::RunConfig;
use crate::loader::LoaderState;
use anyhow::{bail, Context, Result};
use safetensors::{tensor::TensorView, Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tinyllama_model::atomic::write_atomic;
use tinyllama_model::hf::{self, SaveDtype};
use tinyllama_model::HostWeights;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps completed (the next step to run).
    pub step: u64,
    /// Optimizer updates applied (steps minus skipped ones; drives bias correction).
    pub updates: u64,
    pub tokens_seen: u64,
    pub skipped_steps: u64,
    pub consecutive_bad: u64,
    pub loader: LoaderState,
    pub elapsed_s: f64,
    pub config: RunConfig,
}

pub fn checkpoints_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoints")
}

fn step_name(step: u64) -> String {
    format!("step-{step:08}")
}

fn save_moments(path: &Path, names: &[String], m: &[Vec<f32>], v: &[Vec<f32>]) -> Result<()> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = names
        .iter()
        .zip(m)
        .map(|(n, t)| (format!("m.{n}"), t))
        .chain(names.iter().zip(v).map(|(n, t)| (format!("v.{n}"), t)))
        .map(|(n, t)| {
            (
                n,
                vec![t.len()],
                t.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views: Vec<(String, TensorView)> = bytes
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
            )
        })
        .collect();
    write_atomic(path, &safetensors::serialize(views, None)?)
}

/// Writes a checkpoint for `state.step` and deletes all but the newest `keep_last`.
pub fn save(
    run_dir: &Path,
    weights: &HostWeights,
    m: &[Vec<f32>],
    v: &[Vec<f32>],
    state: &TrainState,
    keep_last: usize,
) -> Result<PathBuf> {
    let dir = checkpoints_dir(run_dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let name = step_name(state.step);
    let tmp = dir.join(format!(".{name}.partial"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir_all(&tmp)?;
    hf::save_dir(weights, &tmp, SaveDtype::F32, hf::DEFAULT_SHARD_BYTES)?;
    let names: Vec<String> = weights.specs.iter().map(|s| s.name.clone()).collect();
    save_moments(&tmp.join("optimizer.safetensors"), &names, m, v)?;
    if let Some(tok) = run_dir
        .join("tokenizer.json")
        .exists()
        .then(|| run_dir.join("tokenizer.json"))
    {
        write_atomic(&tmp.join("tokenizer.json"), &std::fs::read(tok)?)?;
    }
    // state.json last: its presence marks the content complete even before the rename.
    write_atomic(&tmp.join("state.json"), &serde_json::to_vec_pretty(state)?)?;
    let fin = dir.join(&name);
    if fin.exists() {
        std::fs::remove_dir_all(&fin)?;
    }
    std::fs::rename(&tmp, &fin)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), fin.display()))?;
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    let all = list(run_dir)?;
    if all.len() > keep_last.max(1) {
        for old in &all[..all.len() - keep_last.max(1)] {
            std::fs::remove_dir_all(old).ok();
        }
    }
    Ok(fin)
}

/// Complete checkpoints, oldest first.
pub fn list(run_dir: &Path) -> Result<Vec<PathBuf>> {
    let dir = checkpoints_dir(run_dir);
    if !dir.exists() {
        return Ok(vec![]);
    }
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("step-"))
                && p.join("state.json").exists()
        })
        .collect();
    v.sort();
    Ok(v)
}

pub fn latest(run_dir: &Path) -> Result<Option<PathBuf>> {
    Ok(list(run_dir)?.pop())
}

pub struct Loaded {
    pub weights: HostWeights,
    pub m: Vec<Vec<f32>>,
    pub v: Vec<Vec<f32>>,
    pub state: TrainState,
}

pub fn load(path: &Path) -> Result<Loaded> {
    let state_path = path.join("state.json");
    let state: TrainState =
        serde_json::from_slice(&std::fs::read(&state_path).with_context(|| {
            format!(
                "{} is not a complete checkpoint (no state.json)",
                path.display()
            )
        })?)
        .with_context(|| format!("{} is corrupt", state_path.display()))?;
    let weights = hf::load_dir(path)?;
    let opt_path = path.join("optimizer.safetensors");
    let bytes =
        std::fs::read(&opt_path).with_context(|| format!("cannot read {}", opt_path.display()))?;
    let st = SafeTensors::deserialize(&bytes)
        .with_context(|| format!("{} is corrupt", opt_path.display()))?;
    let read = |n: &str, len: usize| -> Result<Vec<f32>> {
        let t = st
            .tensor(n)
            .with_context(|| format!("{}: missing `{n}`", opt_path.display()))?;
        let d: Vec<f32> = t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if d.len() != len {
            bail!(
                "{}: `{n}` has {} values, expected {len}",
                opt_path.display(),
                d.len()
            );
        }
        Ok(d)
    };
    let mut m = vec![];
    let mut v = vec![];
    for s in &weights.specs {
        m.push(read(&format!("m.{}", s.name), s.numel())?);
        v.push(read(&format!("v.{}", s.name), s.numel())?);
    }
    Ok(Loaded {
        weights,
        m,
        v,
        state,
    })
}
