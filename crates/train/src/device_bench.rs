//! The training benchmark on any device: the same three timings as [`crate::bench`] (forward,
//! forward+backward, full AdamW step; medians after warmup), each ending with the device
//! drained, plus MFU against the GPU's dense bf16 peak and the peak device memory.

use crate::bench::TrainBench;
use crate::optimizer::{AdamW, AdamWConfig};
use anyhow::{bail, Result};
use serde::Serialize;
use std::time::Instant;
use tinyllama_engine::{Activations, Backend, Llama};
use tinyllama_model::rng::Rng;
use tinyllama_model::{HostWeights, ModelConfig};

#[derive(Clone, Debug, Serialize)]
pub struct DeviceBench {
    #[serde(flatten)]
    pub base: TrainBench,
    pub device: String,
    /// Whether layers were recomputed during the backward pass.
    pub recompute: bool,
    /// MFU of the full step against the device's peak, where the peak is known (GPUs).
    pub mfu: Option<f64>,
    pub peak_flops: Option<f64>,
    /// Peak device memory allocated through the backend (MiB).
    pub device_peak_mb: Option<f64>,
    /// Device memory in use at the end, everything of the process included (MiB).
    pub device_used_mb: Option<f64>,
}

/// How a backend reports device memory: (peak allocated, in use on the device), bytes.
pub type MemoryProbe<B> = fn(&B) -> (Option<u64>, Option<u64>);

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// The benchmark on a device named as in the run config: `cpu`, `cuda`, `cuda:N` (CUDA builds),
/// or `cuda:emu` (the kernel emulator: slow, for testing the plumbing).
#[allow(clippy::too_many_arguments)]
pub fn bench_train_device(
    device: &str,
    cfg: &ModelConfig,
    batch: usize,
    seq: usize,
    warmup: usize,
    steps: usize,
    recompute: bool,
    precision: &str,
) -> Result<DeviceBench> {
    if device == "cpu" {
        return bench_train_on(
            crate::trainer::cpu_backend(precision)?,
            device,
            cfg,
            batch,
            seq,
            warmup,
            steps,
            recompute,
            |_| (None, None),
        );
    }
    if device.starts_with("cuda") {
        if precision != "bf16" {
            bail!("device `{device}` trains in bf16 mixed precision; pass --precision bf16");
        }
        #[cfg(feature = "cuda")]
        {
            let backend = match tinyllama_cuda::parse_device(device)? {
                Some(n) => tinyllama_cuda::gpu_backend(n)?,
                None => tinyllama_cuda::emulator_backend()?,
            };
            return bench_train_on(
                backend,
                device,
                cfg,
                batch,
                seq,
                warmup,
                steps,
                recompute,
                |b: &tinyllama_cuda::CudaBackend| {
                    let m = b.memory();
                    (Some(m.peak_allocated), m.device_used)
                },
            );
        }
        #[cfg(not(feature = "cuda"))]
        bail!("device `{device}`: this binary was built without CUDA support; rebuild with `cargo build --release --features cuda`");
    }
    bail!("unknown device `{device}`; use cpu or cuda[:N]")
}

#[allow(clippy::too_many_arguments)]
pub fn bench_train_on<B: Backend>(
    backend: B,
    device: &str,
    cfg: &ModelConfig,
    batch: usize,
    seq: usize,
    warmup: usize,
    steps: usize,
    recompute: bool,
    memory: MemoryProbe<B>,
) -> Result<DeviceBench> {
    let mut model = Llama::new(backend, &HostWeights::init(cfg, 1))?;
    let mut rng = Rng::new(2);
    let n = batch * seq;
    let inputs: Vec<u32> = (0..n)
        .map(|_| rng.below(cfg.vocab_size as u64) as u32)
        .collect();
    let targets: Vec<i32> = (0..n)
        .map(|_| rng.below(cfg.vocab_size as u64) as i32)
        .collect();
    let mut acts = Activations::with_recompute(&model, batch, seq, recompute);
    let mut grads = model.zero_grads();
    let mut opt = AdamW::new(&model, AdamWConfig::default());
    // Every timed closure ends by waiting for the device.
    let time = |f: &mut dyn FnMut() -> Result<()>| -> Result<f64> {
        for _ in 0..warmup {
            f()?;
        }
        let mut ts = vec![];
        for _ in 0..steps.max(1) {
            let t = Instant::now();
            f()?;
            ts.push(t.elapsed().as_secs_f64());
        }
        Ok(median(ts))
    };
    let fwd = time(&mut || {
        model.forward_losses(&mut acts, &inputs, &targets)?;
        model.backend.synchronize();
        Ok(())
    })?;
    let fwd_bwd = time(&mut || {
        model.forward_backward(&mut acts, &mut grads, &inputs, &targets, 1.0)?;
        for g in grads.iter_mut() {
            model.backend.fill(g, 0.0);
        }
        model.backend.synchronize();
        Ok(())
    })?;
    let step = time(&mut || {
        model.forward_backward(&mut acts, &mut grads, &inputs, &targets, 1.0)?;
        let norm = AdamW::grad_norm(&model, &grads);
        opt.update(&mut model, &grads, 4e-4, norm);
        for g in grads.iter_mut() {
            model.backend.fill(g, 0.0);
        }
        model.backend.synchronize();
        Ok(())
    })?;
    let nt = n as f64;
    let step_flops = cfg.train_flops_per_token(seq) * nt / step;
    let name = model.backend.name();
    let peak_flops = crate::metrics::gpu_peak(&name);
    let (dev_peak, dev_used) = memory(&model.backend);
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    Ok(DeviceBench {
        base: TrainBench {
            implementation: "tinyllama".into(),
            backend: name,
            params: cfg.num_params(),
            batch,
            seq,
            threads: rayon::current_num_threads(),
            fwd_tok_s: nt / fwd,
            fwd_bwd_tok_s: nt / fwd_bwd,
            step_tok_s: nt / step,
            step_gflops: step_flops / 1e9,
            peak_rss_mb: crate::metrics::peak_rss_bytes().unwrap_or(0) as f64 / (1 << 20) as f64,
        },
        device: device.into(),
        recompute,
        mfu: peak_flops.map(|p| step_flops / p),
        peak_flops,
        device_peak_mb: dev_peak.map(mib),
        device_used_mb: dev_used.map(mib),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_device_bench_runs_with_and_without_recompute() {
        let cfg = tinyllama_model::presets::get("test-tiny").unwrap();
        for rc in [false, true] {
            let r = bench_train_device("cpu", &cfg, 2, 8, 0, 1, rc, "f32").unwrap();
            assert!(r.base.step_tok_s > 0.0 && r.recompute == rc);
            assert!(r.mfu.is_none() && r.device_peak_mb.is_none());
        }
        assert!(bench_train_device("tpu", &cfg, 1, 8, 0, 1, false, "f32").is_err());
        #[cfg(not(feature = "cuda"))]
        assert!(bench_train_device("cuda", &cfg, 1, 8, 0, 1, false, "bf16")
            .unwrap_err()
            .to_string()
            .contains("without CUDA support"));
    }
}
