//! Training throughput on random data: forward-only, forward+backward, and the full optimizer
//! step (forward, backward, global-norm clip, AdamW, zeroing), medians of timed repetitions
//! after warmup. Run it on an otherwise idle machine.

use crate::optimizer::{AdamW, AdamWConfig};
use anyhow::Result;
use serde::Serialize;
use std::time::Instant;
use tinyllama_engine::profile::Profiled;
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

/// Everything one benchmark needs, allocated once.
struct Rig<B: Backend> {
    model: Llama<B>,
    acts: Activations<B>,
    grads: Vec<B::Buf>,
    opt: AdamW<B>,
    inputs: Vec<u32>,
    targets: Vec<i32>,
}

impl<B: Backend> Rig<B> {
    fn new(backend: B, cfg: &ModelConfig, batch: usize, seq: usize) -> Result<Self> {
        let model = Llama::new(backend, &HostWeights::init(cfg, 1))?;
        let mut rng = Rng::new(2);
        let n = batch * seq;
        let inputs = (0..n)
            .map(|_| rng.below(cfg.vocab_size as u64) as u32)
            .collect();
        let targets = (0..n)
            .map(|_| rng.below(cfg.vocab_size as u64) as i32)
            .collect();
        let acts = Activations::new(&model, batch, seq);
        let grads = model.zero_grads();
        let opt = AdamW::new(&model, AdamWConfig::default());
        Ok(Rig {
            model,
            acts,
            grads,
            opt,
            inputs,
            targets,
        })
    }
    fn forward(&mut self) -> Result<()> {
        self.model
            .forward_losses(&mut self.acts, &self.inputs, &self.targets)
            .map(|_| ())
    }
    fn forward_backward(&mut self) -> Result<()> {
        self.model.forward_backward(
            &mut self.acts,
            &mut self.grads,
            &self.inputs,
            &self.targets,
            1.0,
        )?;
        for g in self.grads.iter_mut() {
            self.model.backend.fill(g, 0.0);
        }
        Ok(())
    }
    fn step(&mut self) -> Result<()> {
        self.model.forward_backward(
            &mut self.acts,
            &mut self.grads,
            &self.inputs,
            &self.targets,
            1.0,
        )?;
        let norm = AdamW::grad_norm(&self.model, &self.grads);
        self.opt.update(&mut self.model, &self.grads, 4e-4, norm);
        for g in self.grads.iter_mut() {
            self.model.backend.fill(g, 0.0);
        }
        Ok(())
    }
}

fn time(warmup: usize, steps: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
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
}

pub fn bench_train(
    cfg: &ModelConfig,
    batch: usize,
    seq: usize,
    warmup: usize,
    steps: usize,
) -> Result<TrainBench> {
    let mut r = Rig::new(CpuBackend::<f32>::new(), cfg, batch, seq)?;
    let fwd = time(warmup, steps, || r.forward())?;
    let fwd_bwd = time(warmup, steps, || r.forward_backward())?;
    let step = time(warmup, steps, || r.step())?;
    let nt = (batch * seq) as f64;
    Ok(TrainBench {
        implementation: "tinyllama".into(),
        backend: r.model.backend.name(),
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

/// Where a full training step's time goes, per backend op: (op, seconds per step, calls per
/// step), most expensive first.
pub fn profile_train(
    cfg: &ModelConfig,
    batch: usize,
    seq: usize,
    steps: usize,
    precision: &str,
) -> Result<Vec<(&'static str, f64, u64)>> {
    let backend = crate::trainer::cpu_backend(precision)?;
    let mut r = Rig::new(Profiled::new(backend), cfg, batch, seq)?;
    r.step()?;
    r.model.backend.reset();
    let steps = steps.max(1);
    for _ in 0..steps {
        r.step()?;
    }
    let n = steps as f64;
    Ok(r.model
        .backend
        .report()
        .into_iter()
        .map(|(k, s, c)| (k, s / n, (c as f64 / n).round() as u64))
        .collect())
}
