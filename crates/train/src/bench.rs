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

/// A fine-tuning step on random data, one method per process so the peak RSS is the method's
/// own: `full` (every weight trained) or `lora` (adapters on every projection, base frozen).
#[derive(Clone, Debug, Serialize)]
pub struct FinetuneBench {
    #[serde(rename = "impl")]
    pub implementation: String,
    pub method: String,
    pub backend: String,
    pub params: u64,
    pub trainable: u64,
    pub batch: usize,
    pub seq: usize,
    pub threads: usize,
    pub step_tok_s: f64,
    /// Peak resident memory of the process, and the part of it reached after the model was
    /// built (the step's own: activations, gradients, optimizer state).
    pub peak_rss_mb: f64,
    pub init_rss_mb: f64,
}

pub fn bench_finetune(
    cfg: &ModelConfig,
    lora: Option<tinyllama_engine::lora::LoraConfig>,
    batch: usize,
    seq: usize,
    warmup: usize,
    steps: usize,
) -> Result<FinetuneBench> {
    let (r, _) = finetune_rig(
        CpuBackend::<f32>::new(),
        cfg,
        lora,
        batch,
        seq,
        warmup,
        steps,
    )?;
    Ok(r)
}

/// Where a fine-tuning step's time goes, per backend op: (op, seconds per step, calls per
/// step), most expensive first.
pub fn profile_finetune(
    cfg: &ModelConfig,
    lora: Option<tinyllama_engine::lora::LoraConfig>,
    batch: usize,
    seq: usize,
    steps: usize,
) -> Result<Vec<(&'static str, f64, u64)>> {
    // No warm-up: the counters would include it.
    let (_, model) = finetune_rig(
        Profiled::new(CpuBackend::<f32>::new()),
        cfg,
        lora,
        batch,
        seq,
        0,
        steps,
    )?;
    let n = steps.max(1) as f64;
    Ok(model
        .backend
        .report()
        .into_iter()
        .map(|(k, s, c)| (k, s / n, (c as f64 / n).round() as u64))
        .collect())
}

fn finetune_rig<B: Backend>(
    backend: B,
    cfg: &ModelConfig,
    lora: Option<tinyllama_engine::lora::LoraConfig>,
    batch: usize,
    seq: usize,
    warmup: usize,
    steps: usize,
) -> Result<(FinetuneBench, Llama<B>)> {
    let mb = |b: Option<u64>| b.unwrap_or(0) as f64 / (1 << 20) as f64;
    let mut model = Llama::new(backend, &HostWeights::init(cfg, 1))?;
    let method = if lora.is_some() { "lora" } else { "full" };
    if let Some(l) = lora {
        model.attach_lora(l, 3)?;
        // B starts at zero; give it values so the step computes what a trained adapter does.
        let mut host = model.lora_host();
        let specs = model.trainable_specs().to_vec();
        let mut rng = Rng::new(4);
        for (s, t) in specs.iter().zip(host.iter_mut()) {
            if s.kind == tinyllama_model::params::ParamKind::LoraB {
                t.iter_mut().for_each(|x| *x = (rng.normal() * 0.01) as f32);
            }
        }
        model.set_lora_tensors(&host)?;
    }
    let init_rss = crate::metrics::current_rss_bytes();
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
    let trainable: usize = model.trainable_specs().iter().map(|s| s.numel()).sum();
    let mut k = 0u64;
    let mut one = |model: &mut Llama<B>| -> Result<()> {
        k += 1;
        model.set_dropout_seed(k);
        model.forward_backward(&mut acts, &mut grads, &inputs, &targets, 1.0)?;
        let norm = AdamW::grad_norm(model, &grads);
        opt.update(model, &grads, 1e-4, norm);
        for g in grads.iter_mut() {
            model.backend.fill(g, 0.0);
        }
        Ok(())
    };
    for _ in 0..warmup {
        one(&mut model)?;
    }
    let mut ts = vec![];
    for _ in 0..steps.max(1) {
        let t = Instant::now();
        one(&mut model)?;
        ts.push(t.elapsed().as_secs_f64());
    }
    let step = median(ts);
    let r = FinetuneBench {
        implementation: "tinyllama".into(),
        method: method.into(),
        backend: model.backend.name(),
        params: cfg.num_params(),
        trainable: trainable as u64,
        batch,
        seq,
        threads: rayon::current_num_threads(),
        step_tok_s: n as f64 / step,
        peak_rss_mb: mb(crate::metrics::peak_rss_bytes()),
        init_rss_mb: mb(init_rss),
    };
    Ok((r, model))
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

/// The data-parallel step as each rank of `coll` runs it: forward and backward on the rank's own
/// random micro-batch, the ZeRO-1 exchange (reduce-scatter, norm all-reduce), AdamW on the
/// shard and the all-gather. Run under a launcher (`mpirun -np 2 tinyllama --threads 1 bench
/// train`); every rank must call it.
#[derive(Clone, Debug, Serialize)]
pub struct RanksBench {
    pub ranks: usize,
    pub collective: String,
    pub batch_per_rank: usize,
    pub seq: usize,
    pub threads_per_rank: usize,
    /// Median step time (the slowest rank's, each step).
    pub step_s: f64,
    /// Whole-job tokens per second.
    pub job_tok_s: f64,
    /// Median time rank 0 spent inside the collectives per step.
    pub comm_s: f64,
    /// Bytes each rank handed to the collectives per step.
    pub comm_bytes: u64,
    /// Optimizer moments held per rank, and in all.
    pub moments_per_rank: usize,
    pub moments_total: usize,
}

pub fn bench_train_ranks(
    cfg: &ModelConfig,
    batch: usize,
    seq: usize,
    warmup: usize,
    steps: usize,
    precision: &str,
    coll: &dyn tinyllama_dist::Collective,
) -> Result<RanksBench> {
    use crate::data_parallel::{Comm, CommStats, Optimizer};
    let (rank, world) = (coll.rank(), coll.world());
    let backend = crate::trainer::cpu_backend(precision)?;
    let mut model = Llama::new(backend, &HostWeights::init(cfg, 1))?;
    let mut rng = Rng::new(2 + rank as u64);
    let n = batch * seq;
    let inputs: Vec<u32> = (0..n)
        .map(|_| rng.below(cfg.vocab_size as u64) as u32)
        .collect();
    let targets: Vec<i32> = (0..n)
        .map(|_| rng.below(cfg.vocab_size as u64) as i32)
        .collect();
    let batches = vec![(inputs, targets)];
    let mut acts = Activations::new(&model, batch, seq);
    let mut grads = model.zero_grads();
    let mut opt = Optimizer::new(&model, AdamWConfig::default(), rank, world, true);
    let (mut times, mut comms) = (vec![], vec![]);
    let mut bytes = 0;
    for i in 0..warmup + steps.max(1) {
        coll.barrier()?;
        let t = Instant::now();
        let mut stats = CommStats::default();
        crate::trainer::accumulate_step(&model, &mut acts, &mut grads, &batches, coll)?;
        let norm = opt.exchange(&model, &mut grads, Comm::host(coll), &mut stats)?;
        opt.update(&mut model, &grads, 4e-4, norm, Comm::host(coll), &mut stats)?;
        for g in grads.iter_mut() {
            model.backend.fill(g, 0.0);
        }
        let mut dt = [t.elapsed().as_secs_f64()];
        coll.all_reduce_f64(&mut dt, tinyllama_dist::ReduceOp::Max)?;
        if i >= warmup {
            times.push(dt[0]);
            comms.push(stats.seconds);
            bytes = stats.bytes;
        }
    }
    let step_s = median(times);
    let owned = opt.owned_range(&model).len();
    Ok(RanksBench {
        ranks: world,
        collective: coll.name(),
        batch_per_rank: batch,
        seq,
        threads_per_rank: rayon::current_num_threads(),
        step_s,
        job_tok_s: (world * n) as f64 / step_s,
        comm_s: median(comms),
        comm_bytes: bytes,
        moments_per_rank: 2 * owned,
        moments_total: 2 * cfg.num_params() as usize,
    })
}
