//! `metrics.jsonl` (one JSON object per optimizer step) and model FLOPs utilisation.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StepRecord {
    pub step: u64,
    pub tokens: u64,
    pub loss: f64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub val_loss: Option<f64>,
    pub lr: f64,
    pub grad_norm: f64,
    pub tokens_per_s: f64,
    pub mfu: f64,
    pub skipped_steps: u64,
    pub elapsed_s: f64,
    /// DPO runs: the step's reward statistics (loss is then the DPO loss).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub dpo: Option<crate::dpo::DpoStats>,
    /// DPO runs: the same on the validation pairs, when evaluated.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub val_dpo: Option<crate::dpo::DpoStats>,
}

pub struct MetricsWriter {
    path: PathBuf,
    file: std::fs::File,
}

impl MetricsWriter {
    /// Opens `metrics.jsonl` for appending. On resume, lines past `resume_step` (written after
    /// the checkpoint by the interrupted process) are dropped so no step appears twice.
    pub fn open(run_dir: &Path, resume_step: Option<u64>) -> Result<Self> {
        let path = run_dir.join("metrics.jsonl");
        let keep: Vec<String> = match (resume_step, std::fs::read_to_string(&path)) {
            (Some(s), Ok(text)) => text
                .lines()
                .filter(|l| {
                    serde_json::from_str::<StepRecord>(l)
                        .map(|r| r.step < s)
                        .unwrap_or(false)
                })
                .map(String::from)
                .collect(),
            _ => vec![],
        };
        let mut body = keep.join("\n");
        if !body.is_empty() {
            body.push('\n');
        }
        tinyllama_model::atomic::write_atomic(&path, body.as_bytes())?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        Ok(MetricsWriter { path, file })
    }

    pub fn write(&mut self, r: &StepRecord) -> Result<()> {
        let mut line = serde_json::to_string(r)?;
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .with_context(|| format!("writing {}", self.path.display()))
    }

    pub fn read_all(run_dir: &Path) -> Vec<StepRecord> {
        std::fs::read_to_string(run_dir.join("metrics.jsonl"))
            .map(|t| {
                t.lines()
                    .filter_map(|l| serde_json::from_str(l).ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Dense bf16 peak FLOP/s of common GPUs (vendor datasheets, without sparsity).
pub const GPU_PEAKS: &[(&str, f64)] = &[
    ("A100", 312e12),
    ("H100 SXM", 989e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("H200", 989e12),
    ("L40S", 362e12),
    ("RTX 4090", 165e12),
    ("RTX 3090", 71e12),
];

/// The peak for a device name, matching the catalogue by substring.
pub fn gpu_peak(device_name: &str) -> Option<f64> {
    GPU_PEAKS
        .iter()
        .find(|(n, _)| device_name.contains(n))
        .map(|x| x.1)
}

/// Measured f32 matmul throughput of this CPU with the current thread pool: the practical
/// peak the CPU backend can reach, used as the MFU denominator on CPU.
pub fn measure_cpu_peak() -> f64 {
    use tinyllama_engine::{Backend, CpuBackend};
    let be = CpuBackend::<f32>::new();
    let n = 512;
    let a = be.upload(&vec![0.5f32; n * n]);
    let b = be.upload(&vec![0.25f32; n * n]);
    let mut c = be.zeros(n * n);
    be.matmul(&mut c, &a, false, &b, true, n, n, n, false);
    // The fastest of many short multiplies, not the mean: on a shared machine another process
    // can take the cores for part of the window, and an underestimated peak shows an MFU above
    // 100% later (seen in the demo). The fastest one is the closest to what the cores can do.
    let flops = 2.0 * (n * n * n) as f64;
    let t = std::time::Instant::now();
    let mut best = f64::INFINITY;
    while t.elapsed().as_secs_f64() < 0.5 {
        let s = std::time::Instant::now();
        be.matmul(&mut c, &a, false, &b, true, n, n, n, false);
        best = best.min(s.elapsed().as_secs_f64());
    }
    flops / best
}

/// Peak resident memory of this process in bytes (Linux `VmHWM`), if known.
pub fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Resident memory of this process now (`VmRSS`), where the system reports it.
pub fn current_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
