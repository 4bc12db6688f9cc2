//! Training FLOPs, throughput, wall-clock time and cost.
//!
//! * FLOPs per token: `6·N_matmul` (forward 2, backward 4 per weight that takes part in a
//!   matmul: every parameter except an untied input embedding, which is a lookup) plus the
//!   attention score and value products, `12·n_layers·seq_len·d` (PaLM appendix B; causal
//!   masking not subtracted, as MFU is conventionally reported). Without an architecture
//!   (`--params` only) it is `6N`.
//! * Model FLOPs utilisation: `MFU = tokens/s per GPU · FLOPs per token / peak`, so a
//!   throughput gives an MFU and an MFU gives a throughput.
//! * GPU-seconds = total FLOPs / (peak · MFU) = tokens / (tokens/s per GPU); wall-clock =
//!   GPU-seconds / GPUs; cost = GPU-hours · $/GPU-hour.

use serde::{Deserialize, Serialize};
use tinyllama_model::ModelConfig;

/// FLOPs per trained token and their split.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlopsPerToken {
    pub total: f64,
    /// `6·N_matmul`.
    pub matmul: f64,
    /// `12·n_layers·seq_len·d` (0 without an architecture).
    pub attention: f64,
}

/// FLOPs per token for an architecture at context `seq_len`.
pub fn flops_per_token(cfg: &ModelConfig, seq_len: usize) -> FlopsPerToken {
    let total = cfg.train_flops_per_token(seq_len);
    let attention = 12.0 * (cfg.n_layers * seq_len * cfg.dim) as f64;
    FlopsPerToken {
        total,
        matmul: total - attention,
        attention,
    }
}

/// `6N` when only a parameter count is known.
pub fn flops_per_token_params_only(params: f64) -> FlopsPerToken {
    FlopsPerToken {
        total: 6.0 * params,
        matmul: 6.0 * params,
        attention: 0.0,
    }
}

/// MFU from a per-GPU throughput.
pub fn mfu_from_throughput(tokens_per_sec_per_gpu: f64, flops_per_token: f64, peak: f64) -> f64 {
    tokens_per_sec_per_gpu * flops_per_token / peak
}

/// Per-GPU throughput from an MFU.
pub fn throughput_from_mfu(mfu: f64, flops_per_token: f64, peak: f64) -> f64 {
    mfu * peak / flops_per_token
}

/// GPU-seconds to execute `flops` at `mfu` of `peak`.
pub fn gpu_seconds(flops: f64, mfu: f64, peak: f64) -> f64 {
    flops / (mfu * peak)
}

/// Where the utilisation figure came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateSource {
    /// `--mfu`.
    Mfu,
    /// The default MFU.
    DefaultMfu,
    /// `--tokens-per-sec-per-gpu`.
    Throughput,
}

/// The training section of a plan: a run of `tokens` tokens on a model of `params`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Training {
    pub params: f64,
    pub tokens: f64,
    pub seq_len: Option<usize>,
    pub flops_per_token: FlopsPerToken,
    /// `flops_per_token · tokens`.
    pub total_flops: f64,
    /// `6·N·D`, the Chinchilla approximation, for comparison.
    pub six_nd: f64,
    pub gpu: Option<String>,
    pub gpus: Option<u64>,
    pub peak_flops_per_gpu: Option<f64>,
    pub rate_source: Option<RateSource>,
    pub mfu: Option<f64>,
    pub tokens_per_sec_per_gpu: Option<f64>,
    /// Whole-cluster throughput (needs `--gpus`).
    pub tokens_per_sec: Option<f64>,
    pub gpu_hours: Option<f64>,
    pub wall_clock_hours: Option<f64>,
    pub wall_clock_days: Option<f64>,
    pub price_per_gpu_hour: Option<f64>,
    pub cost_usd: Option<f64>,
}
