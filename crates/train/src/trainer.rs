//! The training loop: gradient accumulation over micro-batches, global-norm clipping, AdamW on
//! a schedule, non-finite-step skipping, validation, metrics, checkpoints and exact resume.

use crate::checkpoint::{self, TrainState};
use crate::config::RunConfig;
use crate::loader::{MixtureLoader, ValSet};
use crate::metrics::{self, MetricsWriter, StepRecord};
use crate::optimizer::AdamW;
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;
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
    pub tokens_per_s: f64,
    pub mfu: f64,
    pub skipped_steps: u64,
    pub elapsed_s: f64,
}

/// Runs (or resumes) the configured training run.
pub fn train(cfg: &RunConfig, opts: &RunOptions) -> Result<RunSummary> {
    cfg.validate()?;
    let dev = cfg.run.device.as_str();
    if dev == "cpu" {
        let backend = cpu_backend(&cfg.run.precision)?;
        if cfg.run.precision == "bf16" && !tinyllama_engine::cpu::bf16_is_native() {
            say(
                opts,
                "note: this CPU has no AMX tiles, so bf16 products are emulated and slower than f32; precision = \"f32\" is the faster choice here",
            );
        }
        return train_on(backend, cfg, opts);
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
                Some(ordinal) => tinyllama_cuda::gpu_backend(ordinal)
                    .with_context(|| format!("cannot use device `{dev}`"))?,
                None => tinyllama_cuda::emulator_backend()?,
            };
            return train_on(backend, cfg, opts);
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

fn val_loss<B: Backend>(
    model: &Llama<B>,
    val: &ValSet,
    micro: usize,
    seq: usize,
    cache: &mut Vec<Activations<B>>,
) -> Result<f64> {
    let mut total = 0.0;
    let mut count = 0usize;
    let mut i = 0;
    while i < val.sequences {
        let b = micro.min(val.sequences - i);
        let pos = cache.iter().position(|a| a.batch == b);
        let idx = match pos {
            Some(p) => p,
            None => {
                // Validation runs forward only: no per-layer activations need keeping.
                cache.push(Activations::with_recompute(model, b, seq, true));
                cache.len() - 1
            }
        };
        let r = i * seq..(i + b) * seq;
        let l = model.forward_losses(&mut cache[idx], &val.inputs[r.clone()], &val.targets[r])?;
        total += l.iter().map(|&x| x as f64).sum::<f64>();
        count += l.len();
        i += b;
    }
    Ok(total / count as f64)
}

fn train_on<B: Backend>(backend: B, cfg: &RunConfig, opts: &RunOptions) -> Result<RunSummary> {
    let run_dir = cfg.run.out_dir.clone();
    std::fs::create_dir_all(&run_dir)
        .with_context(|| format!("cannot create run directory {}", run_dir.display()))?;
    let mcfg = cfg.model_config()?;
    let (seq, micro) = (cfg.data.seq_len, cfg.batch.micro_batch);
    let accum = cfg.accumulation(1)?;
    let total = cfg.total_steps()?;
    let schedule = cfg.schedule()?;

    let resume_from = if cfg.run.resume {
        checkpoint::latest(&run_dir)?
    } else {
        None
    };
    if resume_from.is_none() && !checkpoint::list(&run_dir)?.is_empty() {
        bail!(
            "{} already holds checkpoints of an earlier run; resume it (`--resume` / resume = true) or choose another out_dir",
            run_dir.display()
        );
    }
    if let Some(tok) = &cfg.model.tokenizer {
        write_atomic(
            &run_dir.join("tokenizer.json"),
            &std::fs::read(tok).with_context(|| format!("cannot read {}", tok.display()))?,
        )?;
    }
    write_atomic(&run_dir.join("config.toml"), cfg.to_toml().as_bytes())?;

    let (host, moments, mut state) = match &resume_from {
        Some(p) => {
            let l = checkpoint::load(p)?;
            if l.weights.config != mcfg {
                bail!(
                    "{}: the checkpoint's model differs from the run config's; refusing to resume",
                    p.display()
                );
            }
            say(
                opts,
                format!("resuming from {} (step {})", p.display(), l.state.step),
            );
            let st = l.state;
            (l.weights, Some((l.m, l.v)), Some(st))
        }
        None => {
            let w = match &cfg.model.init_from {
                Some(dir) => tinyllama_model::hf::load_dir(dir)?,
                None => HostWeights::init(&mcfg, cfg.run.seed),
            };
            (w, None, None)
        }
    };
    let mut model = Llama::new(backend, &host)?;
    let mut opt = AdamW::new(&model, cfg.adamw());
    if let Some((m, v)) = moments {
        for i in 0..m.len() {
            opt.m[i] = model.backend.upload(&m[i]);
            opt.v[i] = model.backend.upload(&v[i]);
        }
    }
    let mut loader = MixtureLoader::new(&cfg.data.train, seq, cfg.run.seed, 0, 1)?;
    let val = if cfg.data.val.is_empty() {
        None
    } else {
        Some(ValSet::load(&cfg.data.val, seq, cfg.run.eval_sequences)?)
    };
    let mut st = match state.take() {
        Some(s) => {
            loader.restore(s.loader.clone())?;
            opt.step = s.updates;
            s
        }
        None => TrainState {
            step: 0,
            updates: 0,
            tokens_seen: 0,
            skipped_steps: 0,
            consecutive_bad: 0,
            loader: loader.state.clone(),
            elapsed_s: 0.0,
            config: cfg.clone(),
        },
    };
    let mut metrics = MetricsWriter::open(&run_dir, Some(st.step))?;
    let peak = match cfg.run.peak_flops {
        Some(p) => p,
        None => metrics::gpu_peak(&model.backend.name()).unwrap_or_else(metrics::measure_cpu_peak),
    };
    let flops_per_token = mcfg.train_flops_per_token(seq);
    let mut acts = Activations::with_recompute(&model, micro, seq, cfg.run.recompute);
    let mut val_acts = Vec::new();
    let mut grads = model.zero_grads();
    let (mut inputs, mut targets) = (Vec::new(), Vec::new());
    let tokens_per_step = (cfg.batch.global_batch * seq) as u64;

    say(
        opts,
        format!(
            "training {} params on {} · {} steps of {} tokens ({} × {} micro-batches × {seq}) · peak {:.1} GFLOP/s for MFU",
            mcfg.num_params(),
            model.backend.name(),
            total,
            tokens_per_step,
            accum,
            micro,
            peak / 1e9
        ),
    );
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
    while st.step < total {
        let step = st.step;
        let t0 = Instant::now();
        let mut loss = 0.0;
        for _ in 0..accum {
            loader.next_batch(micro, &mut inputs, &mut targets)?;
            loss += model.forward_backward(
                &mut acts,
                &mut grads,
                &inputs,
                &targets,
                1.0 / accum as f32,
            )? as f64
                / accum as f64;
        }
        if opts.inject_nan_at.contains(&step) {
            loss = f64::NAN;
        }
        let norm = AdamW::grad_norm(&model, &grads);
        let lr = schedule.lr_at(step);
        if loss.is_finite() && norm.is_finite() {
            opt.update(&mut model, &grads, lr, norm);
            st.consecutive_bad = 0;
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
                    checkpoint::latest(&run_dir)?.map(|p| p.display().to_string()).unwrap_or_else(|| "none (no checkpoint was written yet)".into())
                );
            }
        }
        for g in grads.iter_mut() {
            model.backend.fill(g, 0.0);
        }
        st.step += 1;
        st.updates = opt.step;
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
        };
        if let Some(v) = &val {
            if last || (cfg.run.eval_every > 0 && st.step % cfg.run.eval_every == 0) {
                let vl = val_loss(&model, v, micro, seq, &mut val_acts)?;
                rec.val_loss = Some(vl);
                last_val = Some(vl);
            }
        }
        metrics.write(&rec)?;
        losses.push(loss);
        let line = format!(
            "step {:>6} loss {:.4}{} lr {:.2e} gnorm {:.3} {:.0} tok/s mfu {:.1}%",
            step,
            loss,
            rec.val_loss
                .map(|v| format!(" val {v:.4}"))
                .unwrap_or_default(),
            lr,
            norm,
            tps,
            100.0 * mfu
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
            st.loader = loader.state.clone();
            st.elapsed_s = elapsed_before + started.elapsed().as_secs_f64();
            let m: Vec<Vec<f32>> = opt.m.iter().map(|b| model.backend.download(b)).collect();
            let v: Vec<Vec<f32>> = opt.v.iter().map(|b| model.backend.download(b)).collect();
            last_ckpt = Some(checkpoint::save(
                &run_dir,
                &model.to_host(),
                &m,
                &v,
                &st,
                cfg.run.keep_last,
            )?);
        }
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
            });
        }
    }
    if let Some(b) = &bar {
        b.finish();
    }
    let all = MetricsWriter::read_all(&run_dir);
    let plot_png = match crate::plot::write(&run_dir, &all) {
        Ok(_) => Some(run_dir.join("loss.png")),
        Err(e) => {
            say(
                opts,
                format!("warning: could not draw the loss plot: {e:#}"),
            );
            None
        }
    };
    let export_dir = if cfg.run.export {
        let ckpt = match &last_ckpt {
            Some(c) => c.clone(),
            None => checkpoint::latest(&run_dir)?.context("no checkpoint to export")?,
        };
        let out = run_dir.join("hf");
        crate::export::export_hf(&ckpt, &out, SaveDtype::F32, None)?;
        Some(out)
    } else {
        None
    };
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
    })
}
