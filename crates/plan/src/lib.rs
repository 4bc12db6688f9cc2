//! The planner: the arithmetic to do before renting GPUs. Given some of a compute budget, a
//! model size, a token count and hardware, it works out the rest: Chinchilla-optimal sizing
//! ([`chinchilla`]), training FLOPs, time and cost ([`compute`]) and memory per GPU
//! ([`memory`]) on a catalogue of GPUs ([`gpus`]). Everything is returned as a serialisable
//! [`Plan`]; [`report::render`] turns it into text. All figures are first-order estimates.
//!
//! How the inputs combine:
//!
//! * A **budget** is either `compute` (FLOPs) or `gpus × gpu_type × hours` at an MFU (or a
//!   per-GPU throughput); not both.
//! * With a budget and a model the token count follows (`C / FLOPs per token`); with a budget
//!   and tokens the parameter count follows (`C / 6D`); a budget with both is over-determined.
//! * Without a budget, a model and tokens define the run, whose `6ND` is the compute compared
//!   with the Chinchilla optimum.

pub mod chinchilla;
pub mod comm;
pub mod compute;
pub mod gpus;
pub mod memory;
pub mod report;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use tinyllama_model::{presets, ModelConfig};

pub use chinchilla::Chinchilla;
pub use compute::{RateSource, Training};
pub use gpus::{Catalogue, Gpu};
pub use memory::{GradDtype, Memory};

/// The MFU assumed when neither an MFU nor a throughput is given.
pub const DEFAULT_MFU: f64 = 0.40;
/// The sequence length assumed when the model has no architecture (`--params` only).
pub const DEFAULT_SEQ_LEN: usize = 2048;

/// What the model is: a bare parameter count or a full architecture.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ModelSpec {
    Params { params: f64 },
    Config { source: String, config: ModelConfig },
}

impl ModelSpec {
    pub fn preset(name: &str) -> Result<Self> {
        Ok(ModelSpec::Config {
            source: format!("preset {name}"),
            config: presets::get(name)?,
        })
    }
    /// A Hugging Face model directory (only its `config.json` is read).
    pub fn from_dir(dir: &Path) -> Result<Self> {
        Ok(ModelSpec::Config {
            source: dir.display().to_string(),
            config: ModelConfig::from_hf_json(&dir.join("config.json"))?,
        })
    }
}

/// Everything the planner can be told. Unset fields are worked out or left out of the plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanRequest {
    /// A compute budget in FLOPs.
    pub compute: Option<f64>,
    pub gpus: Option<u64>,
    pub gpu_type: Option<String>,
    /// Wall-clock budget in hours (with `gpus` and `gpu_type`).
    pub hours: Option<f64>,
    pub mfu: Option<f64>,
    pub tokens_per_sec_per_gpu: Option<f64>,
    /// $/GPU-hour; defaults to the catalogue's price.
    pub price: Option<f64>,
    /// Extra or replacement catalogue entries.
    pub gpu_specs: Vec<Gpu>,
    pub model: Option<ModelSpec>,
    pub tokens: Option<f64>,
    /// Defaults to the model's context (or [`DEFAULT_SEQ_LEN`]).
    pub seq_len: Option<usize>,
    pub micro_batch: u64,
    pub zero_stage: u8,
    pub recompute: bool,
    pub grad_dtype: GradDtype,
    /// Tokens per fused-loss chunk; `None`: the whole micro-batch.
    pub loss_chunk: Option<u64>,
    pub tokens_per_param: f64,
    /// Sequences per optimizer step over all GPUs (for the communication section's step time).
    #[serde(default)]
    pub global_batch: Option<u64>,
    /// Overrides of the catalogue's nominal link speeds (GB/s per GPU, one direction).
    #[serde(default)]
    pub link_gbs: Option<f64>,
    #[serde(default)]
    pub network_gbs: Option<f64>,
    #[serde(default)]
    pub gpus_per_node: Option<u64>,
}

impl Default for PlanRequest {
    fn default() -> Self {
        PlanRequest {
            compute: None,
            gpus: None,
            gpu_type: None,
            hours: None,
            mfu: None,
            tokens_per_sec_per_gpu: None,
            price: None,
            gpu_specs: vec![],
            model: None,
            tokens: None,
            seq_len: None,
            micro_batch: 1,
            zero_stage: 0,
            recompute: false,
            grad_dtype: GradDtype::Bf16,
            loss_chunk: None,
            tokens_per_param: chinchilla::RULE_TOKENS_PER_PARAM,
            global_batch: None,
            link_gbs: None,
            network_gbs: None,
            gpus_per_node: None,
        }
    }
}

/// The model as the plan uses it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelSummary {
    /// Where it came from: a preset, a directory, `--params`, or derived from the budget.
    pub source: String,
    pub params: f64,
    pub non_embedding_params: Option<f64>,
    pub config: Option<ModelConfig>,
}

/// Where the compute budget came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetSource {
    /// `--compute`.
    Compute,
    /// `gpus × peak × MFU × hours`.
    Hardware,
    /// `6·N·D` of the given run.
    Run,
}

/// The compute the Chinchilla section is about.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    pub flops: f64,
    pub source: BudgetSource,
    pub hours: Option<f64>,
    /// GPU-hours to spend `flops` on the chosen GPU at the MFU.
    pub gpu_hours: Option<f64>,
    pub cost_usd: Option<f64>,
}

/// The result: every section that the inputs allow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub request: PlanRequest,
    pub model: Option<ModelSummary>,
    pub tokens: Option<f64>,
    pub gpu: Option<Gpu>,
    pub budget: Option<Budget>,
    pub chinchilla: Option<Chinchilla>,
    pub training: Option<Training>,
    pub memory: Option<Memory>,
    /// Data-parallel communication per step (several GPUs of a known type).
    #[serde(default)]
    pub comm: Option<comm::CommCost>,
    pub notes: Vec<String>,
}

/// Parses a count or FLOP figure: a number (`3e12`, `1_100_048_384`, `1,000`) optionally with
/// a suffix K, M, B (or G), T, P, E for 1e3 … 1e18 (`3T`, `1.1B`).
pub fn parse_quantity(s: &str) -> std::result::Result<f64, String> {
    let t: String = s
        .trim()
        .chars()
        .filter(|c| !matches!(c, '_' | ','))
        .collect();
    let (num, mul) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1e3),
        Some('M') => (&t[..t.len() - 1], 1e6),
        Some('B' | 'G') => (&t[..t.len() - 1], 1e9),
        Some('T') => (&t[..t.len() - 1], 1e12),
        Some('P') => (&t[..t.len() - 1], 1e15),
        Some('E') => (&t[..t.len() - 1], 1e18),
        _ => (t.as_str(), 1.0),
    };
    match num.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v * mul),
        _ => Err(format!(
            "expected a number such as 3e12, 3T or 1.1B, got `{s}`"
        )),
    }
}

/// `5e21` for large or tiny magnitudes, `0.5` otherwise.
fn show(x: f64) -> String {
    if x != 0.0 && !(1e-3..1e6).contains(&x.abs()) {
        format!("{x:e}")
    } else {
        format!("{x}")
    }
}

fn positive(name: &str, v: Option<f64>) -> Result<()> {
    if let Some(x) = v {
        if !(x.is_finite() && x > 0.0) {
            bail!("{name} must be positive, got {}", show(x));
        }
    }
    Ok(())
}

/// Rejects impossible or contradictory requests with a message naming the flags.
pub fn validate(r: &PlanRequest) -> Result<()> {
    positive("--compute", r.compute)?;
    positive("--hours", r.hours)?;
    positive("--tokens-per-sec-per-gpu", r.tokens_per_sec_per_gpu)?;
    positive("--price", r.price)?;
    positive("--tokens", r.tokens)?;
    positive("--tokens-per-param", Some(r.tokens_per_param))?;
    if let Some(ModelSpec::Params { params }) = &r.model {
        positive("--params", Some(*params))?;
    }
    if let Some(m) = r.mfu {
        if !(m.is_finite() && m > 0.0 && m <= 1.0) {
            bail!(
                "--mfu is a fraction of the GPU's peak and must be in (0, 1], got {}",
                show(m)
            );
        }
    }
    if r.gpus == Some(0) {
        bail!("--gpus must be at least 1");
    }
    if r.micro_batch == 0 {
        bail!("--micro-batch must be at least 1");
    }
    if r.seq_len == Some(0) {
        bail!("--seq-len must be at least 1");
    }
    if r.loss_chunk == Some(0) {
        bail!("--loss-chunk must be at least 1 token");
    }
    if r.zero_stage > 3 {
        bail!("--zero-stage must be 0, 1, 2 or 3, got {}", r.zero_stage);
    }
    if r.compute.is_some() && (r.gpus.is_some() || r.hours.is_some()) {
        bail!(
            "--compute is a FLOP budget and cannot be combined with --gpus/--hours, which define \
             the budget from hardware; give one or the other"
        );
    }
    if r.hours.is_some() && (r.gpus.is_none() || r.gpu_type.is_none()) {
        bail!("--hours needs --gpus and --gpu-type to turn time into compute");
    }
    if r.mfu.is_some() && r.tokens_per_sec_per_gpu.is_some() {
        bail!(
            "--mfu and --tokens-per-sec-per-gpu are alternatives (each implies the other); give one"
        );
    }
    if r.tokens_per_sec_per_gpu.is_some() && r.model.is_none() {
        bail!(
            "--tokens-per-sec-per-gpu needs a model (--params, --preset or --model) to convert \
             tokens into FLOPs"
        );
    }
    let budget = r.compute.is_some() || r.hours.is_some();
    if !budget && r.model.is_none() {
        bail!(
            "nothing to plan: give a budget (--compute, or --gpus --gpu-type --hours) and/or a \
             model (--params, --preset or --model); --tokens alone fixes neither"
        );
    }
    if budget && r.model.is_some() && r.tokens.is_some() {
        bail!(
            "over-determined: a model and --tokens already fix the compute; drop --compute/--hours \
             to get the time the run takes, or drop --tokens to get the tokens the budget buys"
        );
    }
    if let Some(ModelSpec::Config { config, .. }) = &r.model {
        config.validate()?;
    }
    Ok(())
}

/// Works out the plan.
pub fn plan(req: &PlanRequest) -> Result<Plan> {
    validate(req)?;
    let mut notes = vec![
        "All figures are first-order estimates from the formulas in docs/plan.md, not \
         measurements; real runs differ with kernels, framework and communication."
            .to_string(),
    ];
    let catalogue = Catalogue::new(&req.gpu_specs);
    let gpu = match &req.gpu_type {
        Some(t) => Some(catalogue.find(t)?.clone()),
        None => None,
    };
    let peak = gpu.as_ref().map(Gpu::peak_flops);
    let price = req
        .price
        .or_else(|| gpu.as_ref().and_then(|g| g.price_per_hour));

    // The model.
    let mut model = req.model.as_ref().map(|m| match m {
        ModelSpec::Params { params } => ModelSummary {
            source: "--params".into(),
            params: *params,
            non_embedding_params: None,
            config: None,
        },
        ModelSpec::Config { source, config } => ModelSummary {
            source: source.clone(),
            params: config.num_params() as f64,
            non_embedding_params: Some(config.num_non_embedding_params() as f64),
            config: Some(config.clone()),
        },
    });
    let config = model.as_ref().and_then(|m| m.config.clone());
    let seq_len = req
        .seq_len
        .or(config.as_ref().map(|c| c.max_seq_len))
        .unwrap_or(DEFAULT_SEQ_LEN);
    if let Some(c) = &config {
        if seq_len > c.max_seq_len {
            notes.push(format!(
                "--seq-len {seq_len} exceeds the model's context {}.",
                c.max_seq_len
            ));
        }
    }
    let fpt_for = |m: &ModelSummary| match &m.config {
        Some(c) => compute::flops_per_token(c, seq_len),
        None => compute::flops_per_token_params_only(m.params),
    };
    let mut fpt = model.as_ref().map(fpt_for);

    // Utilisation: a throughput implies an MFU and vice versa.
    let (rate_source, mfu, tps) = match req.tokens_per_sec_per_gpu {
        Some(t) => {
            let f = fpt
                .as_ref()
                .expect("validated: throughput needs a model")
                .total;
            let mfu = peak.map(|p| compute::mfu_from_throughput(t, f, p));
            if let (Some(m), Some(g)) = (mfu, &gpu) {
                if m > 1.0 {
                    bail!(
                        "{t} tokens/s per GPU at {:.3e} FLOPs per token is {:.0}% of the {}'s \
                         peak; check --tokens-per-sec-per-gpu, the model and --gpu-type",
                        f,
                        m * 100.0,
                        g.name
                    );
                }
            }
            (RateSource::Throughput, mfu, Some(t))
        }
        None => {
            let (m, src) = match req.mfu {
                Some(m) => (m, RateSource::Mfu),
                None => (DEFAULT_MFU, RateSource::DefaultMfu),
            };
            let tps = match (peak, &fpt) {
                (Some(p), Some(f)) => Some(compute::throughput_from_mfu(m, f.total, p)),
                _ => None,
            };
            (src, Some(m), tps)
        }
    };

    // The budget.
    let mut budget = None;
    if let Some(c) = req.compute {
        let gpu_hours = match (peak, mfu) {
            (Some(p), Some(m)) => Some(compute::gpu_seconds(c, m, p) / 3600.0),
            _ => None,
        };
        budget = Some(Budget {
            flops: c,
            source: BudgetSource::Compute,
            hours: None,
            gpu_hours,
            cost_usd: gpu_hours.zip(price).map(|(h, p)| h * p),
        });
    } else if let Some(h) = req.hours {
        let g = req.gpus.expect("validated") as f64;
        let per_gpu_flops_per_sec = match (tps, &fpt) {
            (Some(t), Some(f)) if rate_source == RateSource::Throughput => t * f.total,
            _ => mfu.expect("no throughput: an MFU") * peak.expect("validated: --gpu-type"),
        };
        budget = Some(Budget {
            flops: g * h * 3600.0 * per_gpu_flops_per_sec,
            source: BudgetSource::Hardware,
            hours: Some(h),
            gpu_hours: Some(g * h),
            cost_usd: price.map(|p| g * h * p),
        });
    }

    // Fill in tokens or parameters from the budget.
    let mut tokens = req.tokens;
    if let Some(b) = &budget {
        match (&model, tokens) {
            (Some(_), None) => {
                let f = fpt.as_ref().expect("a model has FLOPs per token").total;
                tokens = Some(b.flops / f);
                notes.push(format!(
                    "Tokens derived from the budget: {:.3e} FLOPs / {:.3e} FLOPs per token.",
                    b.flops, f
                ));
            }
            (None, Some(d)) => {
                let m = ModelSummary {
                    source: "derived: C / (6·tokens)".into(),
                    params: b.flops / (6.0 * d),
                    non_embedding_params: None,
                    config: None,
                };
                fpt = Some(fpt_for(&m));
                model = Some(m);
                notes.push(
                    "Parameters derived from the budget and --tokens (C / 6D); activation memory \
                     needs an architecture (--preset or --model)."
                        .into(),
                );
            }
            _ => {}
        }
    }
    let params = model.as_ref().map(|m| m.params);

    if budget.is_none() {
        if let (Some(n), Some(d)) = (params, tokens) {
            budget = Some(Budget {
                flops: 6.0 * n * d,
                source: BudgetSource::Run,
                hours: None,
                gpu_hours: None,
                cost_usd: None,
            });
        }
    }

    let chinchilla = budget
        .as_ref()
        .map(|b| chinchilla::analyse(b.flops, req.tokens_per_param, params.zip(tokens)));

    // Training time and cost.
    let training = match (params, tokens, &fpt) {
        (Some(n), Some(d), Some(f)) => {
            let total = f.total * d;
            let gpu_seconds = match (req.tokens_per_sec_per_gpu, peak, mfu) {
                (Some(t), _, _) => Some(d / t),
                (None, Some(p), Some(m)) => Some(compute::gpu_seconds(total, m, p)),
                _ => None,
            };
            let gpu_hours = gpu_seconds.map(|s| s / 3600.0);
            let wall = gpu_hours.zip(req.gpus).map(|(h, g)| h / g as f64);
            Some(Training {
                params: n,
                tokens: d,
                seq_len: config.as_ref().map(|_| seq_len),
                flops_per_token: f.clone(),
                total_flops: total,
                six_nd: 6.0 * n * d,
                gpu: gpu.as_ref().map(|g| g.name.clone()),
                gpus: req.gpus,
                peak_flops_per_gpu: peak,
                rate_source: gpu_seconds.map(|_| rate_source),
                mfu: if gpu.is_some() { mfu } else { None },
                tokens_per_sec_per_gpu: tps,
                tokens_per_sec: tps.zip(req.gpus).map(|(t, g)| t * g as f64),
                gpu_hours,
                wall_clock_hours: wall,
                wall_clock_days: wall.map(|h| h / 24.0),
                price_per_gpu_hour: price,
                cost_usd: gpu_hours.zip(price).map(|(h, p)| h * p),
            })
        }
        _ => None,
    };
    if training.is_some() && gpu.is_none() && req.tokens_per_sec_per_gpu.is_none() {
        notes.push("Pass --gpu-type (and --gpus) for training time and cost.".into());
    } else if training.as_ref().is_some_and(|t| t.gpu_hours.is_some()) && req.gpus.is_none() {
        notes.push(if req.compute.is_some() {
            "Wall-clock = GPU-hours / number of GPUs (--compute sets the budget, so --gpus is \
             not taken)."
                .into()
        } else {
            "Pass --gpus for wall-clock time.".into()
        });
    }
    if rate_source == RateSource::DefaultMfu
        && (training.is_some() || budget.is_some())
        && gpu.is_some()
    {
        notes.push(format!(
            "MFU {:.0}% assumed; set --mfu or --tokens-per-sec-per-gpu for your stack.",
            DEFAULT_MFU * 100.0
        ));
    }

    // Memory.
    let memory = params.map(|n| {
        memory::estimate(&memory::MemoryInputs {
            params: n,
            config: config.as_ref(),
            data_parallel: req.gpus.unwrap_or(1),
            zero_stage: req.zero_stage,
            grad_dtype: req.grad_dtype,
            micro_batch: req.micro_batch,
            seq_len: seq_len as u64,
            loss_chunk: req.loss_chunk,
            recompute: req.recompute,
            gpu_bytes: gpu.as_ref().map(Gpu::memory_bytes),
        })
    });
    if memory.is_some() {
        if config.is_none() && req.model.is_some() {
            notes.push(
                "Activation memory needs an architecture: pass --preset or --model instead of \
                 --params."
                    .into(),
            );
        }
        if req.zero_stage > 0 && req.gpus.unwrap_or(1) == 1 {
            notes.push(
                "ZeRO shards over data-parallel GPUs; with one GPU it saves nothing (pass --gpus)."
                    .into(),
            );
        }
    }

    // Communication of data parallelism (ZeRO-1 moves what one all-reduce moves).
    let comm = match (params, req.gpus, &gpu) {
        (Some(n), Some(g), Some(gp)) if g > 1 => {
            let mut ic = comm::interconnect_for(&gp.name);
            if let Some(v) = req.link_gbs {
                ic.link_gbs = v;
            }
            if let Some(v) = req.network_gbs {
                ic.network_gbs = v;
            }
            if let Some(v) = req.gpus_per_node {
                ic.gpus_per_node = v.max(1);
            }
            let step_tokens = req
                .global_batch
                .map(|b| (b * seq_len as u64) as f64 / g as f64);
            if step_tokens.is_none() {
                notes.push("Pass --global-batch (sequences per step over all GPUs) for the step time with and without overlapping communication.".into());
            }
            Some(comm::zero1_step(
                n,
                req.grad_dtype.bytes(),
                g,
                ic,
                step_tokens,
                tps,
                config.as_ref().map(|c| c.n_layers),
            ))
        }
        _ => None,
    };
    Ok(Plan {
        request: req.clone(),
        model,
        tokens,
        gpu,
        budget,
        chinchilla,
        training,
        memory,
        comm,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_take_suffixes() {
        assert_eq!(parse_quantity("3T").unwrap(), 3e12);
        assert_eq!(parse_quantity("1.1B").unwrap(), 1.1e9);
        assert_eq!(parse_quantity("5.76e23").unwrap(), 5.76e23);
        assert_eq!(parse_quantity("1_100_048_384").unwrap(), 1_100_048_384.0);
        assert_eq!(parse_quantity("24k").unwrap(), 24_000.0);
        assert_eq!(parse_quantity("-2").unwrap(), -2.0);
        assert!(parse_quantity("lots").is_err());
        assert!(parse_quantity("nan").is_err());
        assert!(parse_quantity("").is_err());
    }

    #[test]
    fn params_only_gives_states_but_no_activations() {
        let p = plan(&PlanRequest {
            model: Some(ModelSpec::Params { params: 7e9 }),
            tokens: Some(1.4e11),
            gpu_type: Some("H100".into()),
            ..Default::default()
        })
        .unwrap();
        let m = p.memory.unwrap();
        assert_eq!(m.model_states_bytes, 16.0 * 7e9);
        assert!(m.activations.is_none());
        assert_eq!(p.training.unwrap().flops_per_token.total, 42e9);
        assert!(p.notes.iter().any(|n| n.contains("--preset or --model")));
    }

    #[test]
    fn a_budget_and_tokens_give_the_parameter_count() {
        let p = plan(&PlanRequest {
            compute: Some(6e21),
            tokens: Some(1e12),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(p.model.unwrap().params, 1e9);
    }
}
