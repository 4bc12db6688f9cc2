//! The run configuration: a TOML file (`tinyllama pretrain --config RUN.toml`) with CLI
//! overrides. Every field has a default except the data; unknown keys are errors so a typo
//! never silently falls back to a default.

use crate::loader::SourceSpec;
use crate::optimizer::AdamWConfig;
use crate::schedule::{Schedule, ScheduleKind};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tinyllama_model::{hf, presets, ModelConfig};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    #[serde(default)]
    pub model: ModelSection,
    pub data: DataSection,
    #[serde(default)]
    pub optim: OptimSection,
    #[serde(default)]
    pub batch: BatchSection,
    #[serde(default)]
    pub run: RunSection,
    #[serde(default)]
    pub dist: DistSection,
    /// Fine-tuning (`tinyllama finetune`): chat data instead of shards, SFT (full or LoRA) or
    /// DPO. Absent for pre-training.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finetune: Option<FinetuneSection>,
}

/// What `[finetune] method` trains.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FinetuneMethod {
    /// Supervised fine-tuning of every weight.
    Full,
    /// Supervised fine-tuning of low-rank adapters; the base weights stay frozen.
    Lora,
    /// Direct Preference Optimization on preference pairs (full, or LoRA with `dpo.lora`).
    Dpo,
}

/// `[finetune]`: see docs/finetune.md.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FinetuneSection {
    pub method: FinetuneMethod,
    /// Chat JSONL files (SFT: OpenAI messages, ShareGPT or Alpaca; DPO: preference pairs).
    pub train: Vec<PathBuf>,
    /// Held-out files of the same kind (optional).
    pub val: Vec<PathBuf>,
    /// Or hold out this fraction of the training conversations (by a hash of each, so the same
    /// ones on every run).
    pub val_fraction: f64,
    /// `assistant` (loss on the assistant replies only) or `all` (every token).
    pub train_on: String,
    /// A conversation longer than the sequence: `truncate_left` (drop whole leading turns) or
    /// `drop`.
    pub overflow: String,
    /// Pack several conversations into one row (targets never cross conversations).
    pub pack: bool,
    /// Passes over the training data; sets `batch.max_steps` (which otherwise applies).
    pub epochs: Option<f64>,
    /// Warm-up as a fraction of the steps (overrides `optim.warmup_steps` when set).
    pub warmup_ratio: Option<f64>,
    pub lora: LoraSection,
    pub dpo: DpoSection,
}

impl Default for FinetuneSection {
    fn default() -> Self {
        FinetuneSection {
            method: FinetuneMethod::Lora,
            train: vec![],
            val: vec![],
            val_fraction: 0.0,
            train_on: "assistant".into(),
            overflow: "truncate_left".into(),
            pack: false,
            epochs: None,
            warmup_ratio: Some(0.03),
            lora: LoraSection::default(),
            dpo: DpoSection::default(),
        }
    }
}

/// `[finetune.lora]`: the adapters (PEFT's names and meaning).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoraSection {
    pub rank: usize,
    pub alpha: f64,
    pub dropout: f64,
    /// Any of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj.
    pub targets: Vec<String>,
}

impl Default for LoraSection {
    fn default() -> Self {
        LoraSection {
            rank: 8,
            alpha: 16.0,
            dropout: 0.05,
            targets: [
                "q_proj",
                "k_proj",
                "v_proj",
                "o_proj",
                "gate_proj",
                "up_proj",
                "down_proj",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

/// `[finetune.dpo]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DpoSection {
    /// The strength of the KL anchor to the reference model.
    pub beta: f64,
    /// Train LoRA adapters (reference: the base model, adapters off) instead of every weight.
    pub lora: bool,
}

impl Default for DpoSection {
    fn default() -> Self {
        DpoSection {
            beta: 0.1,
            lora: false,
        }
    }
}

impl FinetuneSection {
    /// Whether this run trains adapters.
    pub fn uses_lora(&self) -> bool {
        match self.method {
            FinetuneMethod::Lora => true,
            FinetuneMethod::Dpo => self.dpo.lora,
            FinetuneMethod::Full => false,
        }
    }
}

/// Several processes (`mpirun -np N tinyllama pretrain …`, see docs/distributed.md). Ignored by
/// a single process.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DistSection {
    /// Shard the optimizer state over ranks (ZeRO-1). `false` keeps every moment on every rank
    /// and all-reduces whole gradients (plain data parallel).
    pub zero: bool,
    /// A collective that waits longer than this ends the job with a message naming the rank
    /// that stopped (0 disables the bound).
    pub timeout_s: u64,
}

impl Default for DistSection {
    fn default() -> Self {
        DistSection {
            zero: true,
            timeout_s: 300,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSection {
    /// A named preset (`tinyllama info --list-presets`), initialised from `run.seed`.
    pub preset: Option<String>,
    /// Or continue from a Hugging Face model directory.
    pub init_from: Option<PathBuf>,
    /// `tokenizer.json` to ship with checkpoints and exports.
    pub tokenizer: Option<PathBuf>,
    /// Override the vocabulary size of the preset (e.g. to match a trained tokenizer).
    pub vocab_size: Option<usize>,
    /// Override the preset's context length.
    pub max_seq_len: Option<usize>,
}

impl Default for ModelSection {
    fn default() -> Self {
        ModelSection {
            preset: Some("demo-5m".into()),
            init_from: None,
            tokenizer: None,
            vocab_size: None,
            max_seq_len: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// Training sources with mixture weights (fine-tuning reads `[finetune] train` instead).
    #[serde(default)]
    pub train: Vec<SourceSpec>,
    /// Validation sources (optional).
    #[serde(default)]
    pub val: Vec<SourceSpec>,
    /// Tokens per training sequence.
    #[serde(default = "default_seq")]
    pub seq_len: usize,
}

fn default_seq() -> usize {
    256
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimSection {
    pub lr: f64,
    pub min_lr: f64,
    pub warmup_steps: u64,
    pub schedule: ScheduleKind,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub no_decay_norms_and_embeddings: bool,
    pub grad_clip: f64,
}

impl Default for OptimSection {
    fn default() -> Self {
        let a = AdamWConfig::default();
        OptimSection {
            lr: 4e-4,
            min_lr: 4e-5,
            warmup_steps: 100,
            schedule: ScheduleKind::Cosine,
            beta1: a.beta1,
            beta2: a.beta2,
            eps: a.eps,
            weight_decay: a.weight_decay,
            no_decay_norms_and_embeddings: a.no_decay_norms_and_embeddings,
            grad_clip: a.grad_clip,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchSection {
    /// Sequences per forward/backward pass.
    pub micro_batch: usize,
    /// Sequences per optimizer step, over all ranks (a multiple of micro_batch × world_size).
    pub global_batch: usize,
    /// Optimizer steps to run (or give `max_tokens`).
    pub max_steps: Option<u64>,
    /// Tokens to train on; converted to steps.
    pub max_tokens: Option<u64>,
}

impl Default for BatchSection {
    fn default() -> Self {
        BatchSection {
            micro_batch: 8,
            global_batch: 8,
            max_steps: Some(1000),
            max_tokens: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunSection {
    pub out_dir: PathBuf,
    pub seed: u64,
    /// Log a line (when not on a terminal) every this many steps.
    pub log_every: u64,
    /// Validation loss every this many steps (0 = only at the end).
    pub eval_every: u64,
    /// Validation sequences evaluated each time.
    pub eval_sequences: usize,
    /// Checkpoint every this many steps (0 = only at the end).
    pub save_every: u64,
    /// Checkpoints kept (oldest deleted first).
    pub keep_last: usize,
    /// `cpu` (or `cuda[:N]` with a CUDA build).
    pub device: String,
    /// `f32` (CPU default) or `bf16` mixed precision. On CUDA, bf16 activations and products
    /// with f32 master weights. On the CPU, the layer products and the LM head take bf16
    /// operands and accumulate in f32 (on AMX tiles where the CPU has them; emulated, and
    /// slower than f32, where not); everything else stays f32.
    pub precision: String,
    /// Stop after this many consecutive steps with non-finite loss or gradients.
    pub max_bad_steps: u64,
    /// Keep only each layer's input and re-run the layer during the backward pass (activation
    /// recomputation): much less activation memory for about a third more compute.
    pub recompute: bool,
    /// Peak FLOP/s for MFU; measured on CPU and looked up for known GPUs when absent.
    pub peak_flops: Option<f64>,
    /// Continue from the latest complete checkpoint in `out_dir/checkpoints` if there is one.
    pub resume: bool,
    /// Export a Hugging Face directory to `out_dir/hf` at the end.
    pub export: bool,
}

impl Default for RunSection {
    fn default() -> Self {
        RunSection {
            out_dir: PathBuf::from("runs/run"),
            seed: 1337,
            log_every: 10,
            eval_every: 0,
            eval_sequences: 64,
            save_every: 0,
            keep_last: 3,
            device: "cpu".into(),
            precision: "f32".into(),
            max_bad_steps: 5,
            recompute: false,
            peak_flops: None,
            resume: false,
            export: true,
        }
    }
}

impl RunConfig {
    pub fn from_toml_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read run config {}", path.display()))?;
        let mut cfg: RunConfig =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        // Every relative path in the file (data, init_from, tokenizer, out_dir) is relative to
        // the file, so a config means the same thing from any working directory.
        let base = path.parent().unwrap_or(Path::new("."));
        let fix = |p: &mut PathBuf| {
            if p.is_relative() && !p.as_os_str().is_empty() {
                *p = base.join(&*p);
            }
        };
        for s in cfg.data.train.iter_mut().chain(cfg.data.val.iter_mut()) {
            fix(&mut s.path);
        }
        if let Some(p) = cfg.model.init_from.as_mut() {
            fix(p);
        }
        if let Some(p) = cfg.model.tokenizer.as_mut() {
            fix(p);
        }
        fix(&mut cfg.run.out_dir);
        if let Some(f) = cfg.finetune.as_mut() {
            for p in f.train.iter_mut().chain(f.val.iter_mut()) {
                fix(p);
            }
        }
        Ok(cfg)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("run config serialises")
    }

    /// The model configuration this run trains.
    pub fn model_config(&self) -> Result<ModelConfig> {
        let mut cfg = match (&self.model.preset, &self.model.init_from) {
            (_, Some(dir)) => ModelConfig::from_hf_json(&dir.join("config.json"))?,
            (Some(p), None) => presets::get(p)?,
            (None, None) => bail!("[model]: give `preset` or `init_from`"),
        };
        if let Some(v) = self.model.vocab_size {
            if self.model.init_from.is_some() && v != cfg.vocab_size {
                bail!(
                    "[model]: vocab_size {v} differs from the vocabulary of init_from ({})",
                    cfg.vocab_size
                );
            }
            cfg.vocab_size = v;
        }
        if let Some(t) = self.model.max_seq_len {
            cfg.max_seq_len = t;
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Micro-batches per optimizer step on one rank.
    pub fn accumulation(&self, world: usize) -> Result<usize> {
        let b = &self.batch;
        if b.micro_batch == 0 || b.global_batch == 0 {
            bail!("[batch]: micro_batch and global_batch must be positive");
        }
        let per_pass = b.micro_batch * world;
        if !b.global_batch.is_multiple_of(per_pass) {
            bail!(
                "[batch]: global_batch {} is not a multiple of micro_batch {} × {world} rank(s)",
                b.global_batch,
                b.micro_batch
            );
        }
        Ok(b.global_batch / per_pass)
    }

    pub fn total_steps(&self) -> Result<u64> {
        let tokens_per_step = (self.batch.global_batch * self.data.seq_len) as u64;
        match (self.batch.max_steps, self.batch.max_tokens) {
            (_, Some(t)) => Ok(t.div_ceil(tokens_per_step).max(1)),
            (Some(s), None) if s > 0 => Ok(s),
            _ => bail!("[batch]: give max_steps (> 0) or max_tokens"),
        }
    }

    pub fn schedule(&self) -> Result<Schedule> {
        let o = &self.optim;
        if o.lr.is_nan() || o.lr <= 0.0 || o.min_lr < 0.0 || o.min_lr > o.lr {
            bail!(
                "[optim]: need 0 <= min_lr <= lr and lr > 0 (got lr {}, min_lr {})",
                o.lr,
                o.min_lr
            );
        }
        Ok(Schedule {
            kind: o.schedule,
            lr: o.lr,
            min_lr: o.min_lr,
            warmup_steps: o.warmup_steps,
            total_steps: self.total_steps()?,
        })
    }

    pub fn adamw(&self) -> AdamWConfig {
        let o = &self.optim;
        AdamWConfig {
            beta1: o.beta1,
            beta2: o.beta2,
            eps: o.eps,
            weight_decay: o.weight_decay,
            no_decay_norms_and_embeddings: o.no_decay_norms_and_embeddings,
            grad_clip: o.grad_clip,
        }
    }

    /// Everything that can be checked before touching data or memory.
    pub fn validate(&self) -> Result<()> {
        let m = self.model_config()?;
        if self.data.seq_len == 0 || self.data.seq_len > m.max_seq_len {
            bail!(
                "[data]: seq_len {} must be in 1..={} (the model's context)",
                self.data.seq_len,
                m.max_seq_len
            );
        }
        self.accumulation(1)?;
        self.schedule()?;
        if let Some(dir) = &self.model.init_from {
            hf::weight_files(dir)?;
        }
        if let Some(t) = &self.model.tokenizer {
            if !t.exists() {
                bail!("[model]: tokenizer {} does not exist", t.display());
            }
        }
        match self.run.precision.as_str() {
            "f32" | "bf16" => {}
            p => bail!("[run]: precision `{p}` unknown; use f32 or bf16"),
        }
        if let Some(f) = &self.finetune {
            f.validate()?;
        }
        Ok(())
    }
}

impl FinetuneSection {
    pub fn validate(&self) -> Result<()> {
        if self.train.is_empty() {
            bail!("[finetune]: give `train = [\"chat.jsonl\", …]`, the conversations (or preference pairs) to train on");
        }
        if !(0.0..1.0).contains(&self.val_fraction) {
            bail!(
                "[finetune]: val_fraction {} must be in [0, 1)",
                self.val_fraction
            );
        }
        match self.train_on.as_str() {
            "assistant" | "all" => {}
            t => bail!("[finetune]: train_on `{t}` unknown; use \"assistant\" (loss on the replies) or \"all\""),
        }
        match self.overflow.as_str() {
            "truncate_left" | "drop" => {}
            t => bail!("[finetune]: overflow `{t}` unknown; use \"truncate_left\" or \"drop\""),
        }
        if let Some(e) = self.epochs {
            if !(e > 0.0 && e.is_finite()) {
                bail!("[finetune]: epochs must be positive, got {e}");
            }
        }
        if let Some(w) = self.warmup_ratio {
            if !(0.0..1.0).contains(&w) {
                bail!("[finetune]: warmup_ratio {w} must be in [0, 1)");
            }
        }
        let l = &self.lora;
        if self.uses_lora() {
            if l.rank == 0 {
                bail!("[finetune.lora]: rank must be at least 1");
            }
            if !(l.alpha > 0.0 && l.alpha.is_finite()) {
                bail!("[finetune.lora]: alpha must be positive, got {}", l.alpha);
            }
            if !(0.0..1.0).contains(&l.dropout) {
                bail!("[finetune.lora]: dropout {} must be in [0, 1)", l.dropout);
            }
            if l.targets.is_empty() {
                bail!("[finetune.lora]: targets is empty; name at least one of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj");
            }
        }
        if self.method == FinetuneMethod::Dpo && !(self.dpo.beta > 0.0 && self.dpo.beta.is_finite())
        {
            bail!(
                "[finetune.dpo]: beta must be positive, got {}",
                self.dpo.beta
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_tinyllama_config_parses_and_reproduces_the_recipe() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/tinyllama-1.1b.toml");
        let c = RunConfig::from_toml_file(&path).unwrap();
        assert_eq!(c.model.preset.as_deref(), Some("tinyllama-1.1b"));
        assert_eq!(
            (c.optim.lr, c.optim.min_lr, c.optim.warmup_steps),
            (4e-4, 4e-5, 2000)
        );
        assert_eq!(
            (
                c.optim.beta1,
                c.optim.beta2,
                c.optim.eps,
                c.optim.weight_decay,
                c.optim.grad_clip
            ),
            (0.9, 0.95, 1e-8, 0.1, 1.0)
        );
        assert_eq!(
            (c.data.seq_len, c.batch.global_batch, c.batch.micro_batch),
            (2048, 1024, 8)
        );
        assert_eq!(c.run.precision, "bf16");
        let w: Vec<f64> = c.data.train.iter().map(|s| s.weight).collect();
        assert_eq!(w, vec![0.693584, 0.306416]);
        // 3T tokens at ~2M tokens per step.
        assert_eq!(c.total_steps().unwrap(), 1_430_512);
        assert_eq!(c.accumulation(16).unwrap(), 8);
    }

    #[test]
    fn unknown_keys_and_bad_batches_are_errors() {
        let e = toml::from_str::<RunConfig>("[data]\ntrain = []\n[optim]\nlearning_rate = 1.0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("learning_rate"), "{e}");
        let mut c: RunConfig = toml::from_str("[data]\ntrain = []\n").unwrap();
        c.batch.global_batch = 12;
        c.batch.micro_batch = 8;
        assert!(c
            .accumulation(1)
            .unwrap_err()
            .to_string()
            .contains("multiple"));
    }
}
