//! Training throughput on random data: forward-only, forward+backward, and the full optimizer
//! step (forward, backward, global-norm clip, AdamW, zeroing), medians of timed repetitions
//! after warmup. Run it on an otherwise idle machine.

use crate::optimizer::{AdamW, AdamWConfig};
use anyhow::Result;
use serde::Serialize;
use std::time::Instant;
use tinyllama_engine::{Activations, Backend, CpuBackend, Llama};
use tinyllama_model::rng::Rng;
use tinyllama_model::{HostWeights, ModelConfig};

#[derive(Clone, Debug, Serialize)]
pub struct TrainBench {
    #[serde(rename = "impl")]
    pub implementation: String,
    pub backend: String,
    pub params: u64,
    pub batch: usize,
    pub seq: usize,
    pub threads: usize,
    pub fwd_tok_s: f64,
    pub fwd_bwd_tok_s: f64,
    pub step_tok_s: f64,
    pub step_gflops: f64,
    pub peak_rss_mb: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

pub fn bench_train(
    cfg: &ModelConfig,
    batch: usize,
    seq: usize,
    warmup: usize,
    steps: usize,
) -> Result<TrainBench> {
    let host = HostWeights::init(cfg, 1);
    let mut model = Llama::new(CpuBackend::<f32>::new(), &host)?;
    let mut rng = Rng::new(2);
    let n = batch * seq;
    let inputs: Vec<u32> = (0..n)
        .map(|_| rng.below(cfg.vocab_size as u64) as u32)
        .collect();
    let targets: Vec<i32> = (0..n)
        .map(|_| rng.below(cfg.vocab_size as u64) as i32)
        .collect();
    let mut acts = Activations::new(&model, batch, seq);
    let mut grads = model.zero_grads();
    let mut opt = AdamW::new(&model, AdamWConfig::default());
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
        model
            .forward_losses(&mut acts, &inputs, &targets)
            .map(|_| ())
    })?;
    let fwd_bwd = time(&mut || {
        model.forward_backward(&mut acts, &mut grads, &inputs, &targets, 1.0)?;
        for g in grads.iter_mut() {
            model.backend.fill(g, 0.0);
        }
        Ok(())
    })?;
    let step = time(&mut || {
        model.forward_backward(&mut acts, &mut grads, &inputs, &targets, 1.0)?;
        let norm = AdamW::grad_norm(&model, &grads);
        opt.update(&mut model, &grads, 4e-4, norm);
        for g in grads.iter_mut() {
            model.backend.fill(g, 0.0);
        }
        Ok(())
    })?;
    let nt = n as f64;
    Ok(TrainBench {
        implementation: "tinyllama".into(),
        backend: model.backend.name(),
        params: cfg.num_params(),
        batch,
        seq,
        threads: rayon::current_num_threads(),
        fwd_tok_s: nt / fwd,
        fwd_bwd_tok_s: nt / fwd_bwd,
        step_tok_s: nt / step,
        step_gflops: cfg.train_flops_per_token(seq) * nt / step / 1e9,
        peak_rss_mb: crate::metrics::peak_rss_bytes().unwrap_or(0) as f64 / (1 << 20) as f64,
    })
}
