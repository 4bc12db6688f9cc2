//! The training loop: gradient accumulation over micro-batches, data parallelism over ranks,
//! global-norm clipping, AdamW on a schedule, non-finite-step skipping, validation, metrics,
//! checkpoints and exact resume.
//!
//! **Loss normalisation.** A step's loss and gradient are the sum over every target token of
//! every micro-batch on every rank, divided by the number of those tokens (all-reduced) — not a
//! mean of per-micro-batch means, which would weight a micro-batch with few targets (masked
//! prompts, padding) like a full one. With full micro-batches both agree to the last bit.

use crate::checkpoint::{self, RankPart, TrainState};
use crate::config::FinetuneMethod;
use crate::config::RunConfig;
use crate::data_parallel::{Comm, CommStats, Optimizer};
use crate::dpo::{self, DpoStats, ReferenceCache};
use crate::loader::{BatchSource, LoaderState, MixtureLoader, ValSet};
use crate::metrics::{self, MetricsWriter, StepRecord};
use crate::rows::{FinetuneData, IndexLoader, PairRows, RowLoader};
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tinyllama_dist::watchdog::Watched;
#[cfg(feature = "cuda")]
use tinyllama_dist::LaunchInfo;
use tinyllama_dist::{Collective, ReduceOp};
use tinyllama_engine::{Activations, Backend, CpuBackend, Llama};
use tinyllama_model::atomic::write_atomic;
use tinyllama_model::hf::SaveDtype;
use tinyllama_model::HostWeights;

/// Knobs that are not part of the run's identity.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Print nothing (tests, and callers that draw their own progress).
    pub quiet: bool,
    /// Stop after this step as if interrupted (tests of resume).
    pub stop_after: Option<u64>,
    /// Treat these steps' losses as NaN (tests of bad-step handling).
    pub inject_nan_at: Vec<u64>,
    /// Rank `.0` stops responding (sleeps) before step `.1` (tests of the collective timeout).
    pub hang: Option<(usize, u64)>,
}

#[derive(Clone, Debug)]
pub struct RunSummary {
    pub run_dir: PathBuf,
    pub steps: u64,
    pub tokens: u64,
    pub losses: Vec<f64>,
    pub final_val_loss: Option<f64>,
    pub checkpoint: Option<PathBuf>,
    pub export_dir: Option<PathBuf>,
    pub plot_png: Option<PathBuf>,
    /// Whole-job throughput (all ranks).
    pub tokens_per_s: f64,
    pub mfu: f64,
    pub skipped_steps: u64,
    pub elapsed_s: f64,
    pub rank: usize,
    pub world: usize,
    /// Seconds per step spent in collectives (last step, this rank).
    pub comm_s: f64,
    /// Bytes this rank handed to collectives in the last step.
    pub comm_bytes: u64,
    /// The run had already reached its last step when it was resumed: nothing was trained.
    pub already_finished: bool,
}

/// How many times `[dist] timeout_s` the other ranks wait while rank 0 writes a checkpoint or
/// the export.
const CHECKPOINT_PATIENCE: u32 = 20;

/// Runs (or resumes) the configured training run as one rank of the job this process was
/// launched into (a single process when no launcher started several; see [`tinyllama_dist`]).
pub fn train(cfg: &RunConfig, opts: &RunOptions) -> Result<RunSummary> {
    run_job(cfg, opts, None)
}

/// Fine-tuning on the same loop: `data` holds the run's rows (SFT) or preference pairs (DPO),
/// prepared by the caller from `cfg.finetune`.
pub fn finetune(cfg: &RunConfig, opts: &RunOptions, data: &FinetuneData) -> Result<RunSummary> {
    run_job(cfg, opts, Some(data))
}

fn run_job(cfg: &RunConfig, opts: &RunOptions, data: Option<&FinetuneData>) -> Result<RunSummary> {
    cfg.validate()?;
    #[cfg(all(feature = "cuda", not(feature = "mpi")))]
    if cfg.run.device.starts_with("cuda") {
        if let Some(info) = LaunchInfo::detect()?.filter(|i| i.world > 1) {
            return train_cuda_without_mpi(cfg, opts, &info, data);
        }
    }
    let coll = tinyllama_dist::open()?;
    run_in(cfg, opts, coll, data)
}

/// A GPU job started without MPI (torchrun-style variables, or srun without an MPI library):
/// NCCL carries everything, its unique id shared through a file in the run directory.
#[cfg(all(feature = "cuda", not(feature = "mpi")))]
fn train_cuda_without_mpi(
    cfg: &RunConfig,
    opts: &RunOptions,
    info: &LaunchInfo,
    data: Option<&FinetuneData>,
) -> Result<RunSummary> {
    use std::sync::Arc;
    use tinyllama_cuda::nccl::{IdExchange, NcclCollective};
    if cfg.run.precision != "bf16" {
        bail!("[run]: CUDA trains in bf16 mixed precision; set precision = \"bf16\"");
    }
    let dev = cfg.run.device.as_str();
    let ordinal = match tinyllama_cuda::parse_device(dev)? {
        Some(_) if dev == "cuda" => info.local_rank,
        Some(o) => o,
        None => bail!("device `{dev}`: the kernel emulator cannot join a job of several ranks"),
    };
    let backend = tinyllama_cuda::gpu_backend(ordinal)
        .with_context(|| format!("cannot use device `{dev}` (GPU {ordinal})"))?;
    let key = tinyllama_dist::rendezvous::job_key(|k| std::env::var(k).ok());
    let nccl = Arc::new(
        NcclCollective::open(
            backend.device().clone(),
            info.rank,
            info.world,
            IdExchange::File {
                run_dir: &cfg.run.out_dir,
                key,
                timeout: Duration::from_secs(cfg.dist.timeout_s.max(60)),
            },
        )
        .with_context(|| {
            format!(
                "rank {} of {} ({}): setting up NCCL",
                info.rank, info.world, info.launcher
            )
        })?,
    );
    let quiet = RunOptions {
        quiet: opts.quiet || info.rank != 0,
        ..opts.clone()
    };
    let device: Arc<dyn tinyllama_dist::DeviceCollective> = nccl.clone();
    train_on(backend, cfg, &quiet, Box::new(nccl), Some(device), data)
}

/// [`train`] as one rank of `coll` (tests pass an in-process group).
pub fn train_in(
    cfg: &RunConfig,
    opts: &RunOptions,
    coll: Box<dyn Collective>,
) -> Result<RunSummary> {
    run_in(cfg, opts, coll, None)
}

/// [`finetune`] as one rank of `coll`.
pub fn finetune_in(
    cfg: &RunConfig,
    opts: &RunOptions,
    coll: Box<dyn Collective>,
    data: &FinetuneData,
) -> Result<RunSummary> {
    run_in(cfg, opts, coll, Some(data))
}

fn run_in(
    cfg: &RunConfig,
    opts: &RunOptions,
    coll: Box<dyn Collective>,
    data: Option<&FinetuneData>,
) -> Result<RunSummary> {
    cfg.validate()?;
    match (&cfg.finetune, data) {
        (Some(_), None) => bail!(
            "the run config has a [finetune] section: run it with `tinyllama finetune --config …`"
        ),
        (None, Some(_)) => {
            bail!("fine-tuning data was given but the run config has no [finetune] section")
        }
        _ => {}
    }
    let rank = coll.rank();
    let quiet_rank = RunOptions {
        quiet: opts.quiet || rank != 0,
        ..opts.clone()
    };
    let opts = &quiet_rank;
    let dev = cfg.run.device.as_str();
    if dev == "cpu" {
        let backend = cpu_backend(&cfg.run.precision)?;
        if cfg.run.precision == "bf16" && !tinyllama_engine::cpu::bf16_is_native() {
            say(
                opts,
                "note: this CPU has no AMX tiles, so bf16 products are emulated and slower than f32; precision = \"f32\" is the faster choice here",
            );
        }
        return train_on(backend, cfg, opts, coll, None, data);
    }
    if dev.starts_with("cuda") {
        #[cfg(feature = "cuda")]
        {
            if cfg.run.precision != "bf16" {
                bail!(
                    "[run]: device `{dev}` trains in bf16 mixed precision (f32 master weights and optimizer state); set precision = \"bf16\""
                );
            }
            let backend = match tinyllama_cuda::parse_device(dev)? {
                // One GPU per rank: a bare `cuda` in a job of several ranks means the GPU of
                // this rank's index on its node.
                Some(ordinal) => {
                    let ordinal = if dev == "cuda" && coll.world() > 1 {
                        LaunchInfo::detect()?
                            .map(|i| i.local_rank)
                            .unwrap_or(ordinal)
                    } else {
                        ordinal
                    };
                    tinyllama_cuda::gpu_backend(ordinal)
                        .with_context(|| format!("cannot use device `{dev}` (GPU {ordinal})"))?
                }
                None => tinyllama_cuda::emulator_backend()?,
            };
            // Gradients and parameters move GPU to GPU through NCCL; its unique id travels
            // over the host collective (MPI).
            let device: Option<std::sync::Arc<dyn tinyllama_dist::DeviceCollective>> = if coll
                .world()
                > 1
            {
                match tinyllama_cuda::nccl::NcclCollective::open(
                    backend.device().clone(),
                    coll.rank(),
                    coll.world(),
                    tinyllama_cuda::nccl::IdExchange::Host(&*coll),
                ) {
                    Ok(n) => Some(std::sync::Arc::new(n)),
                    Err(e) => {
                        say(opts, format!("warning: NCCL unavailable ({e:#}); gradients go through host memory and {}", coll.name()));
                        None
                    }
                }
            } else {
                None
            };
            return train_on(backend, cfg, opts, coll, device, data);
        }
        #[cfg(not(feature = "cuda"))]
        bail!(
            "device `{dev}`: this binary was built without CUDA support; rebuild with `cargo build --release --features cuda` (no CUDA toolkit needed to build), or set device = \"cpu\""
        );
    }
    bail!("[run]: unknown device `{dev}`; use cpu or cuda[:N]")
}

/// The CPU backend for a run's `precision`: `f32`, or `bf16` (bf16 operands and f32
/// accumulation in the layer products, on AMX tiles where the CPU has them; f32 master weights,
/// optimizer state and everything else).
pub fn cpu_backend(precision: &str) -> Result<CpuBackend<f32>> {
    match precision {
        "f32" => Ok(CpuBackend::new()),
        "bf16" => Ok(CpuBackend::bf16()),
        p => bail!("precision `{p}` unknown; use f32 or bf16"),
    }
}

fn say(opts: &RunOptions, msg: impl AsRef<str>) {
    if !opts.quiet {
        eprintln!("{}", msg.as_ref());
    }
}

/// Validation loss over the whole validation set: rank `r` takes sequences `r, r + world, …`
/// and the per-position sums and counts are all-reduced, so every rank gets the same mean and
/// it equals a single process's (up to summation order).
fn val_loss<B: Backend>(
    model: &Llama<B>,
    val: &ValSet,
    micro: usize,
    seq: usize,
    cache: &mut Vec<Activations<B>>,
    coll: &dyn Collective,
) -> Result<f64> {
    let (rank, world) = (coll.rank(), coll.world());
    let mine: Vec<usize> = (rank..val.sequences).step_by(world).collect();
    let mut sums = [0.0f64, 0.0];
    for chunk in mine.chunks(micro) {
        let b = chunk.len();
        let idx = match cache.iter().position(|a| a.batch == b) {
            Some(p) => p,
            None => {
                // Validation runs forward only: no per-layer activations need keeping.
                cache.push(Activations::with_recompute(model, b, seq, true));
                cache.len() - 1
            }
        };
        let (mut inp, mut tgt) = (Vec::with_capacity(b * seq), Vec::with_capacity(b * seq));
        for &i in chunk {
            inp.extend_from_slice(&val.inputs[i * seq..(i + 1) * seq]);
            tgt.extend_from_slice(&val.targets[i * seq..(i + 1) * seq]);
        }
        let l = model.forward_losses(&mut cache[idx], &inp, &tgt)?;
        sums[0] += l.iter().map(|&x| x as f64).sum::<f64>();
        // Ignored targets (masked prompts, padding) score 0 and do not count.
        sums[1] += tgt.iter().filter(|&&t| t >= 0).count() as f64;
    }
    coll.all_reduce_f64(&mut sums, ReduceOp::Sum)?;
    Ok(sums[0] / sums[1])
}

/// Where a resumed run's ranks start reading when the checkpoint was written by a different
/// number of ranks. Rank `r` of `W` had read the positions `r, r + W, …` of each source's
/// shuffled order below its cursor, so every position below `W × min(cursor)` was read by
/// someone. The new ranks continue from there: nothing is skipped, and the few positions above
/// it that a faster rank had already read are read again. The mixture's random draws start a
/// new stream derived from the seed, rank and step.
fn reshard_loader(
    saved: &[LoaderState],
    old_world: usize,
    rank: usize,
    world: usize,
    seed: u64,
    step: u64,
) -> LoaderState {
    let mut st = saved[0].clone();
    for (s, src) in st.sources.iter_mut().enumerate() {
        let epoch = saved.iter().map(|l| l.sources[s].epoch).min().unwrap_or(0);
        let min_cursor = saved
            .iter()
            .map(|l| {
                if l.sources[s].epoch > epoch {
                    u64::MAX
                } else {
                    l.sources[s].cursor
                }
            })
            .min()
            .unwrap_or(0);
        let consumed = (old_world as u64 * min_cursor).min(src.blocks);
        src.epoch = epoch;
        // Positions rank, rank + world, … below `consumed`.
        src.cursor = consumed.saturating_sub(rank as u64).div_ceil(world as u64);
        src.sequences = saved.iter().map(|l| l.sources[s].sequences).sum::<u64>() / world as u64;
    }
    st.rng = tinyllama_model::rng::Rng::derive(seed, 0x7e5a_0000 ^ (step << 20) ^ rank as u64);
    st
}

/// Forward and backward over this rank's micro-batches of one step, accumulating into `grads`
/// the gradient of (Σ target losses over every micro-batch of every rank) / (number of those
/// targets). Returns that loss, identical on every rank. The gradients are this rank's part of
/// the sum; the optimizer's exchange adds the ranks' parts.
pub fn accumulate_step<B: Backend>(
    model: &Llama<B>,
    acts: &mut Activations<B>,
    grads: &mut [B::Buf],
    batches: &[(Vec<u32>, Vec<i32>)],
    coll: &dyn Collective,
) -> Result<f64> {
    let local: usize = batches
        .iter()
        .map(|(_, t)| t.iter().filter(|&&x| x >= 0).count())
        .sum();
    let mut counts = [local as f64];
    coll.all_reduce_f64(&mut counts, ReduceOp::Sum)?;
    let global = counts[0];
    if global == 0.0 {
        bail!("no micro-batch on any rank has a target token to learn from");
    }
    let mut loss_sum = 0.0f64;
    // Adapter dropout: each micro-batch draws its own masks from the step's seed.
    let step_seed = model.lora().map(|l| l.dropout_seed());
    for (i, (inp, tgt)) in batches.iter().enumerate() {
        let n = tgt.iter().filter(|&&t| t >= 0).count();
        if n == 0 {
            continue;
        }
        if let Some(s) = step_seed {
            model.set_dropout_seed(tinyllama_model::rng::Rng::derive(s, i as u64).next_u64());
        }
        let mean =
            model.forward_backward(acts, grads, inp, tgt, (n as f64 / global) as f32)? as f64;
        loss_sum += mean * n as f64;
    }
    let mut ls = [loss_sum];
    coll.all_reduce_f64(&mut ls, ReduceOp::Sum)?;
    Ok(ls[0] / global)
}

struct Resumed {
    path: PathBuf,
    state: TrainState,
}

/// Rank 0 chooses the newest checkpoint that verifies (saying why it passed over newer ones)
/// and every rank loads that one.
fn find_resume(run_dir: &Path, coll: &dyn Collective) -> Result<Option<(Resumed, HostWeights)>> {
    let mut mine = None;
    if coll.rank() == 0 {
        let (found, notes) = checkpoint::latest_verified(run_dir)?;
        for n in notes {
            eprintln!("warning: {n}");
        }
        if found.is_none() && !checkpoint::list(run_dir)?.is_empty() {
            bail!(
                "{}: no checkpoint verifies (see the warnings above); move the run directory aside to start afresh",
                run_dir.display()
            );
        }
        mine = found;
    }
    let chosen = coll.broadcast_u64(mine.as_ref().map_or(u64::MAX, |v| v.state.step), 0)?;
    if chosen == u64::MAX {
        return Ok(None);
    }
    // Rank 0 has it loaded already; the others read the one it chose.
    let v = match mine {
        Some(v) => v,
        None => {
            let path = checkpoint::checkpoints_dir(run_dir).join(format!("step-{chosen:08}"));
            let (weights, state) = checkpoint::load_model(&path)?;
            checkpoint::Verified {
                path,
                weights,
                state,
            }
        }
    };
    Ok(Some((
        Resumed {
            path: v.path,
            state: v.state,
        },
        v.weights,
    )))
}

/// Where a run's batches come from.
enum Feed {
    /// Token rows: the shard mixture of pre-training or supervised fine-tuning rows.
    Stream(Box<dyn BatchSource>),
    /// Preference pairs (DPO), taken whole.
    Pairs {
        order: IndexLoader,
        pairs: std::sync::Arc<Vec<PairRows>>,
    },
}

impl Feed {
    fn state(&self) -> &LoaderState {
        match self {
            Feed::Stream(l) => l.state(),
            Feed::Pairs { order, .. } => &order.state,
        }
    }
    fn restore(&mut self, s: LoaderState) -> Result<()> {
        match self {
            Feed::Stream(l) => l.restore(s),
            Feed::Pairs { order, .. } => order.restore(s),
        }
    }
}

/// The dropout masks of a step: a function of the seed, the step and the rank only, so a
/// resumed run draws the same masks as an uninterrupted one.
fn dropout_seed(seed: u64, step: u64, rank: usize) -> u64 {
    tinyllama_model::rng::Rng::derive(seed ^ 0xd7_0000_0000, step << 16 | rank as u64).next_u64()
}

/// The reference log-probabilities of a DPO run: from the cache in the run directory when it
/// was made for this data, otherwise computed now with the starting model (for LoRA, the base
/// model with the adapters off) and cached by rank 0.
#[allow(clippy::too_many_arguments)]
fn dpo_reference<B: Backend + 'static>(
    model: &mut Llama<B>,
    acts: &mut Activations<B>,
    train: &[PairRows],
    val: &[PairRows],
    run_dir: &Path,
    resumed: bool,
    coll: &Watched,
    opts: &RunOptions,
) -> Result<ReferenceCache>
where
    B::Buf: 'static,
{
    let hash = dpo::pairs_hash(train, val);
    if let Some(c) = ReferenceCache::load(run_dir, &hash)? {
        if c.train.len() == train.len() && c.val.len() == val.len() {
            say(
                opts,
                format!(
                    "reference log-probabilities of {} pairs read from {}",
                    train.len() + val.len(),
                    run_dir.join(dpo::REFERENCE_FILE).display()
                ),
            );
            return Ok(c);
        }
    }
    let lora = model.lora().is_some();
    if resumed && !lora {
        bail!(
            "{}: the reference log-probabilities of this DPO run are missing or were made for other data, and the starting model's weights are gone from a resumed full fine-tune; start the run afresh (a new out_dir)",
            run_dir.join(dpo::REFERENCE_FILE).display()
        );
    }
    let t0 = Instant::now();
    if lora {
        model.set_adapters_enabled(false);
    }
    let computed = (|| -> Result<ReferenceCache> {
        Ok(ReferenceCache {
            data_hash: hash.clone(),
            train: dpo::pair_logps(model, acts, train, coll)?,
            val: dpo::pair_logps(model, acts, val, coll)?,
        })
    })();
    if lora {
        model.set_adapters_enabled(true);
    }
    let c = computed.context("computing the DPO reference log-probabilities")?;
    if coll.rank() == 0 {
        c.save(run_dir)?;
    }
    say(
        opts,
        format!(
            "reference log-probabilities of {} pairs computed in {:.1} s (cached in {})",
            train.len() + val.len(),
            t0.elapsed().as_secs_f64(),
            run_dir.join(dpo::REFERENCE_FILE).display()
        ),
    );
    coll.barrier()?;
    Ok(c)
}

fn train_on<B: Backend + 'static>(
    backend: B,
    cfg: &RunConfig,
    opts: &RunOptions,
    coll: Box<dyn Collective>,
    device: Option<std::sync::Arc<dyn tinyllama_dist::DeviceCollective>>,
    data: Option<&FinetuneData>,
) -> Result<RunSummary>
where
    B::Buf: 'static,
{
    let device = device.as_deref();
    let run_dir = cfg.run.out_dir.clone();
    let (rank, world) = (coll.rank(), coll.world());
    let timeout = (cfg.dist.timeout_s > 0).then(|| Duration::from_secs(cfg.dist.timeout_s));
    if rank == 0 {
        std::fs::create_dir_all(&run_dir)
            .with_context(|| format!("cannot create run directory {}", run_dir.display()))?;
    }
    coll.barrier()?;
    let coll = Watched::new(coll, &run_dir, timeout);
    let coll: &Watched = &coll;
    let mcfg = cfg.model_config()?;
    let (seq, micro) = (cfg.data.seq_len, cfg.batch.micro_batch);
    let accum = cfg.accumulation(world)?;
    let total = cfg.total_steps()?;
    let schedule = cfg.schedule()?;

    if rank == 0 {
        for p in checkpoint::clean_leftovers(&run_dir)? {
            say(
                opts,
                format!(
                    "removed {} (left by an interrupted save or prune)",
                    p.display()
                ),
            );
        }
    }
    coll.barrier()?;
    let (resumed, resumed_weights) = match if cfg.run.resume {
        // Rank 0 reads every file of the candidate checkpoints while the others wait.
        coll.with_patience(CHECKPOINT_PATIENCE, || find_resume(&run_dir, coll))?
    } else {
        None
    } {
        Some((r, w)) => (Some(r), Some(w)),
        None => (None, None),
    };
    if resumed.is_none() && !checkpoint::list(&run_dir)?.is_empty() {
        bail!(
            "{} already holds checkpoints of an earlier run; resume it (`--resume` / resume = true) or choose another out_dir",
            run_dir.display()
        );
    }
    if rank == 0 {
        if let Some(tok) = &cfg.model.tokenizer {
            write_atomic(
                &run_dir.join("tokenizer.json"),
                &std::fs::read(tok).with_context(|| format!("cannot read {}", tok.display()))?,
            )?;
        }
        write_atomic(&run_dir.join("config.toml"), cfg.to_toml().as_bytes())?;
    }

    let host = match (&resumed, resumed_weights) {
        (Some(r), Some(w)) => {
            if w.config != mcfg {
                bail!(
                    "{}: the checkpoint's model differs from the run config's; refusing to resume",
                    r.path.display()
                );
            }
            say(
                opts,
                format!(
                    "resuming from {} (step {}, written by {} rank{})",
                    r.path.display(),
                    r.state.step,
                    r.state.world_size,
                    if r.state.world_size == 1 { "" } else { "s" }
                ),
            );
            w
        }
        _ => match &cfg.model.init_from {
            Some(dir) => tinyllama_model::hf::load_dir(dir)?,
            None => HostWeights::init(&mcfg, cfg.run.seed),
        },
    };
    let mut model = Llama::new(backend, &host)?;
    drop(host);
    let lora = cfg.finetune.as_ref().filter(|f| f.uses_lora());
    if let Some(f) = lora {
        let mut lc = crate::adapter::lora_config(&f.lora)?;
        if f.method == FinetuneMethod::Dpo {
            // As TRL's DPO does by default (`disable_dropout`): the log-probabilities DPO
            // compares are those of the model without dropout.
            lc.dropout = 0.0;
        }
        model.attach_lora(lc, cfg.run.seed)?;
        if let Some(r) = &resumed {
            crate::adapter::load_into(&mut model, &r.path)?;
        }
    }
    let mut opt = Optimizer::new(&model, cfg.adamw(), rank, world, cfg.dist.zero);
    let names: Vec<String> = model
        .trainable_specs()
        .iter()
        .map(|s| s.name.clone())
        .collect();
    let numel: Vec<usize> = model.trainable_specs().iter().map(|s| s.numel()).collect();
    let total_params: usize = numel.iter().sum();
    let mut loader = match data {
        None => Feed::Stream(Box::new(MixtureLoader::new(
            &cfg.data.train,
            seq,
            cfg.run.seed,
            rank as u64,
            world as u64,
        )?)),
        Some(FinetuneData::Sft { train, .. }) => Feed::Stream(Box::new(RowLoader::new(
            train.clone(),
            cfg.run.seed,
            rank,
            world,
        )?)),
        Some(FinetuneData::Dpo { train, .. }) => Feed::Pairs {
            order: IndexLoader::new("finetune-pairs", train.len(), cfg.run.seed, rank, world)?,
            pairs: train.clone(),
        },
    };
    let val = match data {
        None if cfg.data.val.is_empty() => None,
        None => Some(ValSet::load(&cfg.data.val, seq, cfg.run.eval_sequences)?),
        Some(FinetuneData::Sft { val, .. }) if !val.is_empty() => {
            Some(ValSet::from_rows(val, seq)?)
        }
        Some(_) => None,
    };
    let dpo_val: &[PairRows] = match data {
        Some(FinetuneData::Dpo { val, .. }) => val,
        _ => &[],
    };
    let mut st = match &resumed {
        Some(r) => {
            let (m, v) =
                checkpoint::load_moments(&r.path, opt.owned_range(&model), &names, &numel)?;
            opt.set_moments(&model, &m, &v);
            let old_world = r.state.world_size.max(1);
            let ls = if old_world == world {
                checkpoint::load_loader(&r.path, rank, &r.state)?.with_context(|| {
                    format!("{}: no data-loader state for rank {rank}", r.path.display())
                })?
            } else {
                let saved = (0..old_world)
                    .map(|k| {
                        checkpoint::load_loader(&r.path, k, &r.state)?.with_context(|| {
                            format!("{}: no data-loader state for rank {k}", r.path.display())
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                if rank == 0 {
                    say(
                        opts,
                        format!(
                            "re-sharding: the checkpoint was written by {old_world} ranks, this job has {world}; optimizer moments are re-cut exactly, the data continues from the position every old rank had passed"
                        ),
                    );
                }
                reshard_loader(&saved, old_world, rank, world, cfg.run.seed, r.state.step)
            };
            loader.restore(ls)?;
            opt.set_updates(r.state.updates);
            r.state.clone()
        }
        None => TrainState {
            step: 0,
            updates: 0,
            tokens_seen: 0,
            skipped_steps: 0,
            consecutive_bad: 0,
            loader: loader.state().clone(),
            elapsed_s: 0.0,
            config: cfg.clone(),
            world_size: world,
        },
    };
    st.world_size = world;
    // A checkpoint is "good" once finite steps have been taken from it: the one just loaded
    // becomes good after this process's first finite step; until then the good one is the
    // verified checkpoint before it, if the steps between the two were finite.
    // (The one before is looked up only when a message needs it.)
    let loaded_from = resumed.as_ref().map(|r| r.path.clone());
    let good_before_loaded = resumed
        .as_ref()
        .is_some_and(|r| r.state.consecutive_bad == 0);
    let mut last_good: Option<PathBuf> = None;
    drop(resumed);

    if st.step >= total {
        say(
            opts,
            format!(
                "the run in {} is already finished (step {} of {total}); nothing to train. Raise batch.max_steps (or max_tokens) to continue it",
                run_dir.display(),
                st.step
            ),
        );
        return Ok(RunSummary {
            run_dir,
            steps: st.step,
            tokens: st.tokens_seen,
            losses: vec![],
            final_val_loss: None,
            checkpoint: loaded_from,
            export_dir: None,
            plot_png: None,
            tokens_per_s: 0.0,
            mfu: 0.0,
            skipped_steps: st.skipped_steps,
            elapsed_s: st.elapsed_s,
            rank,
            world,
            comm_s: 0.0,
            comm_bytes: 0,
            already_finished: true,
        });
    }

    let mut metrics = if rank == 0 {
        Some(MetricsWriter::open(&run_dir, Some(st.step))?)
    } else {
        None
    };
    let peak_per_rank = match cfg.run.peak_flops {
        Some(p) => p,
        None => metrics::gpu_peak(&model.backend.name()).unwrap_or_else(metrics::measure_cpu_peak),
    };
    let peak = peak_per_rank * world as f64;
    let dpo = cfg
        .finetune
        .as_ref()
        .filter(|f| f.method == FinetuneMethod::Dpo)
        .map(|f| f.dpo.beta);
    // Model FLOPs per trained position: 6N (+ attention) for full training; frozen weights
    // skip their weight gradients (4N); DPO runs each row forward once more (+2N).
    let flops_per_token = mcfg.train_flops_per_token(seq)
        * if lora.is_some() { 4.0 / 6.0 } else { 1.0 }
        + if dpo.is_some() {
            mcfg.train_flops_per_token(seq) / 3.0
        } else {
            0.0
        };
    // DPO runs one row at a time (its weights need the row's log-probability first).
    let act_batch = if dpo.is_some() { 1 } else { micro };
    let mut acts = Activations::with_recompute(&model, act_batch, seq, cfg.run.recompute);
    let mut val_acts = Vec::new();
    let mut grads = model.zero_grads();
    let rows_per_item = if dpo.is_some() { 2 } else { 1 };
    let tokens_per_step = (cfg.batch.global_batch * seq * rows_per_item) as u64;
    let refs = match data {
        Some(FinetuneData::Dpo { train, val }) => Some(dpo_reference(
            &mut model,
            &mut acts,
            train,
            val,
            &run_dir,
            st.step > 0,
            coll,
            opts,
        )?),
        _ => None,
    };
    let mut batches: Vec<(Vec<u32>, Vec<i32>)> = vec![(Vec::new(), Vec::new()); accum];

    say(
        opts,
        format!(
            "training {} params on {} · {} steps of {} tokens ({world} rank{} × {} × {} micro-batches × {seq}) · peak {:.1} GFLOP/s per rank for MFU",
            mcfg.num_params(),
            model.backend.name(),
            total,
            tokens_per_step,
            if world == 1 { "" } else { "s" },
            accum,
            micro,
            peak_per_rank / 1e9
        ),
    );
    if world > 1 {
        say(
            opts,
            format!(
                "data parallel over {}{} · {} · optimizer state per rank: {:.1} MB of {:.1} MB",
                coll.name(),
                device
                    .map(|d| format!(" (device buffers over {})", d.name()))
                    .unwrap_or_default(),
                if matches!(opt, Optimizer::Zero1 { .. }) {
                    "ZeRO-1 (sharded moments)"
                } else {
                    "plain (every rank holds every moment)"
                },
                opt.owned_range(&model).len() as f64 * 8.0 / 1e6,
                total_params as f64 * 8.0 / 1e6,
            ),
        );
    }
    let tty = std::io::stderr().is_terminal() && !opts.quiet;
    let bar = if tty {
        let b = ProgressBar::new(total);
        b.set_style(
            ProgressStyle::with_template(
                "{bar:30.cyan/blue} {pos}/{len} {msg} [{elapsed_precise} < {eta_precise}]",
            )
            .expect("valid template"),
        );
        b.set_position(st.step);
        Some(b)
    } else {
        None
    };

    let started = Instant::now();
    let elapsed_before = st.elapsed_s;
    let mut losses = Vec::new();
    let mut last_val = None;
    let mut last_ckpt = None;
    let (mut last_tps, mut last_mfu) = (0.0, 0.0);
    let mut comm = CommStats::default();
    let links = Comm { host: coll, device };
    coll.beat(st.step, None)?;
    while st.step < total {
        let step = st.step;
        if opts.hang == Some((rank, step)) {
            // Test hook: this rank stops responding, as a stuck process would.
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        let t0 = Instant::now();
        comm = CommStats::default();
        if lora.is_some() {
            model.set_dropout_seed(dropout_seed(cfg.run.seed, step, rank));
        }
        let mut dstats: Option<DpoStats> = None;
        let mut loss = match &mut loader {
            Feed::Stream(l) => {
                // All of this rank's micro-batches first: the step's gradient is normalised by
                // the number of targets over every micro-batch of every rank, known before any
                // backward.
                for (inp, tgt) in batches.iter_mut() {
                    l.next_batch(micro, inp, tgt)?;
                }
                accumulate_step(&model, &mut acts, &mut grads, &batches, coll)
                    .with_context(|| format!("step {step}"))?
            }
            Feed::Pairs { order, pairs } => {
                let idx: Vec<usize> = (0..accum * micro).map(|_| order.next_index()).collect();
                let ps: Vec<&PairRows> = idx.iter().map(|&i| &pairs[i]).collect();
                let r = refs.as_ref().expect("DPO has reference log-probabilities");
                let rs: Vec<(f64, f64)> = idx.iter().map(|&i| r.train[i]).collect();
                let s = dpo::accumulate_step(
                    &model,
                    &mut acts,
                    &mut grads,
                    &ps,
                    &rs,
                    dpo.unwrap_or(0.1),
                    cfg.batch.global_batch,
                    coll,
                )
                .with_context(|| format!("step {step}"))?;
                dstats = Some(s);
                s.loss
            }
        };
        if opts.inject_nan_at.contains(&step) {
            loss = f64::NAN;
        }
        let norm = opt.exchange(&model, &mut grads, links, &mut comm)?;
        let lr = schedule.lr_at(step);
        if loss.is_finite() && norm.is_finite() {
            opt.update(&mut model, &grads, lr, norm, links, &mut comm)?;
            st.consecutive_bad = 0;
            if last_good.is_none() {
                last_good = loaded_from.clone();
            }
        } else {
            st.skipped_steps += 1;
            st.consecutive_bad += 1;
            let msg = format!(
                "step {step}: loss {loss} / gradient norm {norm} is not finite; update skipped"
            );
            match &bar {
                Some(b) => b.println(msg),
                None => say(opts, msg),
            }
            if st.consecutive_bad >= cfg.run.max_bad_steps {
                bail!(
                    "stopping: {} consecutive steps had non-finite loss or gradients (max_bad_steps = {}); the last good checkpoint is {}. \
                     Lower the learning rate, check the data, or raise max_bad_steps",
                    st.consecutive_bad,
                    cfg.run.max_bad_steps,
                    last_good
                        .clone()
                        .or_else(|| {
                            let loaded = loaded_from.as_ref().filter(|_| good_before_loaded)?;
                            checkpoint::verified_before(&run_dir, loaded)
                        })
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|| "none (no checkpoint has yet been followed by a finite step)".into())
                );
            }
        }
        for g in grads.iter_mut() {
            model.backend.fill(g, 0.0);
        }
        st.step += 1;
        st.updates = opt.updates();
        st.tokens_seen += tokens_per_step;
        let dt = t0.elapsed().as_secs_f64();
        let tps = tokens_per_step as f64 / dt;
        let mfu = flops_per_token * tps / peak;
        (last_tps, last_mfu) = (tps, mfu);
        let last = st.step == total;
        let mut rec = StepRecord {
            step,
            tokens: st.tokens_seen,
            loss,
            val_loss: None,
            lr,
            grad_norm: norm,
            tokens_per_s: tps,
            mfu,
            skipped_steps: st.skipped_steps,
            elapsed_s: elapsed_before + started.elapsed().as_secs_f64(),
            dpo: dstats,
            val_dpo: None,
        };
        let eval_now = last || (cfg.run.eval_every > 0 && st.step % cfg.run.eval_every == 0);
        if let Some(v) = &val {
            if eval_now {
                let vl = val_loss(&model, v, micro, seq, &mut val_acts, coll)?;
                rec.val_loss = Some(vl);
                last_val = Some(vl);
            }
        }
        if let (Some(beta), Some(r)) = (dpo, refs.as_ref()) {
            if eval_now && !dpo_val.is_empty() {
                let vs = dpo::evaluate(&model, &mut acts, dpo_val, &r.val, beta, coll)?;
                rec.val_loss = Some(vs.loss);
                rec.val_dpo = Some(vs);
                last_val = Some(vs.loss);
            }
        }
        if let Some(m) = metrics.as_mut() {
            m.write(&rec)?;
        }
        losses.push(loss);
        let line = format!(
            "step {:>6} loss {:.4}{}{} lr {:.2e} gnorm {:.3} {:.0} tok/s{} mfu {:.1}%{}",
            step,
            loss,
            rec.val_loss
                .map(|v| format!(" val {v:.4}"))
                .unwrap_or_default(),
            rec.dpo
                .map(|d| format!(
                    " margin {:.3} acc {:.2}{}",
                    d.margin,
                    d.accuracy,
                    rec.val_dpo
                        .map(|v| format!(" val acc {:.2}", v.accuracy))
                        .unwrap_or_default()
                ))
                .unwrap_or_default(),
            lr,
            norm,
            tps,
            if world > 1 {
                format!(" ({:.0}/rank)", tps / world as f64)
            } else {
                String::new()
            },
            100.0 * mfu,
            if world > 1 {
                format!(" comm {:.0} ms", comm.seconds * 1e3)
            } else {
                String::new()
            },
        );
        match &bar {
            Some(b) => {
                b.set_message(line);
                b.set_position(st.step);
            }
            None if !opts.quiet
                && (step % cfg.run.log_every.max(1) == 0 || last || rec.val_loss.is_some()) =>
            {
                eprintln!("{line}")
            }
            None => {}
        }
        if last || (cfg.run.save_every > 0 && st.step % cfg.run.save_every == 0) {
            st.loader = loader.state().clone();
            st.elapsed_s = elapsed_before + started.elapsed().as_secs_f64();
            // Rank 0's loader position goes into state.json; every rank's into its own file.
            let mut state0 = st.clone();
            if world > 1 {
                let all = coll.all_gather_bytes(&serde_json::to_vec(loader.state())?)?;
                state0.loader = serde_json::from_slice(&all[0])?;
            }
            let (m, v) = opt.moments(&model);
            let host = (rank == 0).then(|| model.to_host());
            let write_adapter = |dir: &Path| crate::adapter::save(&model, dir, cfg);
            let extra: Option<&checkpoint::ExtraFiles> = match lora {
                Some(_) => Some(&write_adapter),
                None => None,
            };
            // The other ranks wait while rank 0 writes the model: a checkpoint of a large model
            // on a slow filesystem is not a hang.
            let p = coll.with_patience(CHECKPOINT_PATIENCE, || {
                checkpoint::save(
                    &run_dir,
                    &RankPart {
                        weights: host.as_ref(),
                        range: opt.owned_range(&model),
                        m: &m,
                        v: &v,
                        total: total_params,
                        loader: loader.state(),
                        state: &state0,
                        extra,
                    },
                    coll,
                    cfg.run.keep_last,
                )
            })?;
            if st.consecutive_bad == 0 {
                last_good = Some(p.clone());
            }
            last_ckpt = Some(p);
        }
        coll.beat(st.step, last_ckpt.as_deref())?;
        if opts.stop_after == Some(st.step) && !last {
            if let Some(b) = &bar {
                b.abandon();
            }
            return Ok(RunSummary {
                run_dir,
                steps: st.step,
                tokens: st.tokens_seen,
                losses,
                final_val_loss: last_val,
                checkpoint: last_ckpt,
                export_dir: None,
                plot_png: None,
                tokens_per_s: last_tps,
                mfu: last_mfu,
                skipped_steps: st.skipped_steps,
                elapsed_s: st.elapsed_s,
                rank,
                world,
                comm_s: comm.seconds,
                comm_bytes: comm.bytes,
                already_finished: false,
            });
        }
    }
    if let Some(b) = &bar {
        b.finish();
    }
    let (mut plot_png, mut export_dir) = (None, None);
    if rank == 0 {
        let all = MetricsWriter::read_all(&run_dir);
        plot_png = match crate::plot::write(&run_dir, &all) {
            Ok(_) => Some(run_dir.join("loss.png")),
            Err(e) => {
                say(
                    opts,
                    format!("warning: could not draw the loss plot: {e:#}"),
                );
                None
            }
        };
        if cfg.run.export {
            let out = run_dir.join("hf");
            if lora.is_some() {
                // The adapters merged into the base weights, and the adapter on its own in
                // PEFT's layout beside it.
                let tok = run_dir.join("tokenizer.json");
                crate::export::export_weights(
                    &model.merged_host(),
                    &out,
                    SaveDtype::F32,
                    Some(tok.as_path()).filter(|p| p.exists()),
                )?;
                crate::adapter::save(&model, &run_dir.join("adapter"), cfg)?;
            } else {
                let ckpt = match &last_ckpt {
                    Some(c) => c.clone(),
                    None => checkpoint::latest(&run_dir)?.context("no checkpoint to export")?,
                };
                crate::export::export_hf(&ckpt, &out, SaveDtype::F32, None)?;
            }
            export_dir = Some(out);
        }
    }
    coll.with_patience(CHECKPOINT_PATIENCE, || coll.barrier())?;
    Ok(RunSummary {
        run_dir,
        steps: st.step,
        tokens: st.tokens_seen,
        losses,
        final_val_loss: last_val,
        checkpoint: last_ckpt,
        export_dir,
        plot_png,
        tokens_per_s: last_tps,
        mfu: last_mfu,
        skipped_steps: st.skipped_steps,
        elapsed_s: elapsed_before + started.elapsed().as_secs_f64(),
        rank,
        world,
        comm_s: comm.seconds,
        comm_bytes: comm.bytes,
        already_finished: false,
    })
}
