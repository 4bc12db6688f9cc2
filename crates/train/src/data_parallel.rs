//! Data parallelism over a [`Collective`]: the gradient exchange and the optimizer step.
//!
//! Every rank holds the whole model and runs its own micro-batches. At the end of a step:
//!
//! - **ZeRO-1** (the default with more than one rank, as llm.c does it): the gradients, laid end
//!   to end in one flat vector ([`ShardLayout`]), are reduce-scattered so each rank holds the
//!   summed gradient of its shard only; the global norm is the all-reduced sum of the shards'
//!   squares; clipping and AdamW run on the shard (the moments exist only for the shard: 1/world
//!   of the single-process optimizer state); the updated shards are all-gathered into every
//!   rank's weights.
//! - **Plain data parallel** (`[dist] zero = false`): the whole gradient is all-reduced and every
//!   rank runs the full AdamW step (every rank keeps all the moments). Kept as the reference
//!   ZeRO-1 is tested against.
//! - **One rank**: the optimizer of a single process, untouched.
//!
//! Buffers that the backend keeps in host memory (the CPU backend) go to the collective in
//! place; device buffers go through a [`DeviceCollective`] when one is given (NCCL for the CUDA
//! backend) and are otherwise staged through host memory.

use crate::optimizer::{AdamW, AdamWConfig};
use anyhow::Result;
use std::any::Any;
use std::time::Instant;
use tinyllama_dist::{Collective, DeviceCollective, ReduceOp, Segment, ShardLayout};
use tinyllama_engine::{Backend, BufKind, Llama};

/// One piece of a rank's shard and its optimizer state.
struct SegState<B: Backend> {
    seg: Segment,
    m: B::Buf,
    v: B::Buf,
    /// The piece's parameters and gradient, copied out of the flat vectors for AdamW.
    p: B::Buf,
    g: B::Buf,
}

pub struct Sharded<B: Backend> {
    pub layout: ShardLayout,
    rank: usize,
    segs: Vec<SegState<B>>,
    /// The flat gradient (all ranks' shards, padded), then this rank's summed shard.
    gflat: B::Buf,
    gshard: B::Buf,
    /// This rank's updated parameters, then everyone's.
    pshard: B::Buf,
    pflat: B::Buf,
}

pub enum Optimizer<B: Backend> {
    /// One rank, or plain data parallel: every rank holds every moment.
    Full(AdamW<B>),
    Zero1 {
        cfg: AdamWConfig,
        step: u64,
        state: Box<Sharded<B>>,
    },
}

/// What the ranks talk through: the host collective, and the device one for backend buffers
/// (NCCL for CUDA) when there is one.
#[derive(Clone, Copy)]
pub struct Comm<'a> {
    pub host: &'a dyn Collective,
    pub device: Option<&'a dyn DeviceCollective>,
}

impl<'a> Comm<'a> {
    pub fn host(host: &'a dyn Collective) -> Self {
        Comm { host, device: None }
    }
}

/// Time and bytes moved by the collectives in the last step (this rank's view).
#[derive(Clone, Copy, Debug, Default)]
pub struct CommStats {
    pub seconds: f64,
    /// Payload bytes this rank handed to collectives (gradients and parameters).
    pub bytes: u64,
}

#[derive(Clone, Copy)]
enum Move {
    ReduceScatter,
    AllGather,
}

/// `recv = move(send)` over the ranks: on the device when the device collective takes these
/// buffers, otherwise through the host collective — in place for host buffers, staged through
/// host copies for device ones.
fn move_buffers<B: Backend + 'static>(
    be: &B,
    comm: Comm,
    what: Move,
    send: &B::Buf,
    recv: &mut B::Buf,
) -> Result<()>
where
    B::Buf: 'static,
{
    if let Some(d) = comm.device {
        let (b, s, r) = (be as &dyn Any, send as &dyn Any, &mut *recv as &mut dyn Any);
        let done = match what {
            Move::ReduceScatter => d.reduce_scatter_f32(b, s, r)?,
            Move::AllGather => d.all_gather_f32(b, s, r)?,
        };
        if done {
            return Ok(());
        }
    }
    let staged = be.host_f32(send).is_none().then(|| be.download(send));
    let send: &[f32] = match &staged {
        Some(h) => h,
        None => be.host_f32(send).expect("a host buffer"),
    };
    let run = |out: &mut [f32]| match what {
        Move::ReduceScatter => comm.host.reduce_scatter_f32(send, out),
        Move::AllGather => comm.host.all_gather_f32(send, out),
    };
    match be.host_f32_mut(recv) {
        Some(out) => run(out),
        None => {
            let mut out = vec![0f32; be.len(recv)];
            run(&mut out)?;
            be.write(recv, 0, &out);
            Ok(())
        }
    }
}

fn numel<B: Backend>(model: &Llama<B>) -> Vec<usize> {
    model.trainable_specs().iter().map(|s| s.numel()).collect()
}

impl<B: Backend + 'static> Optimizer<B>
where
    B::Buf: 'static,
{
    /// The optimizer for this rank: ZeRO-1 when `zero` and there are several ranks.
    pub fn new(model: &Llama<B>, cfg: AdamWConfig, rank: usize, world: usize, zero: bool) -> Self {
        if world == 1 || !zero {
            return Optimizer::Full(AdamW::new(model, cfg));
        }
        let be = &model.backend;
        let layout = ShardLayout::new(numel(model), world);
        let segs = layout
            .segments(rank)
            .into_iter()
            .map(|seg| SegState {
                seg,
                m: be.zeros_as(seg.len, BufKind::F32),
                v: be.zeros_as(seg.len, BufKind::F32),
                p: be.zeros_as(seg.len, BufKind::F32),
                g: be.zeros_as(seg.len, BufKind::F32),
            })
            .collect();
        let (s, padded) = (layout.shard_len(), layout.padded());
        Optimizer::Zero1 {
            cfg,
            step: 0,
            state: Box::new(Sharded {
                rank,
                segs,
                gflat: be.zeros_as(padded, BufKind::F32),
                gshard: be.zeros_as(s, BufKind::F32),
                pshard: be.zeros_as(s, BufKind::F32),
                pflat: be.zeros_as(padded, BufKind::F32),
                layout,
            }),
        }
    }

    /// Optimizer updates applied so far.
    pub fn updates(&self) -> u64 {
        match self {
            Optimizer::Full(o) => o.step,
            Optimizer::Zero1 { step, .. } => *step,
        }
    }

    pub fn set_updates(&mut self, n: u64) {
        match self {
            Optimizer::Full(o) => o.step = n,
            Optimizer::Zero1 { step, .. } => *step = n,
        }
    }

    /// The range of the flat parameter vector whose moments this rank holds.
    pub fn owned_range(&self, model: &Llama<B>) -> std::ops::Range<usize> {
        match self {
            Optimizer::Full(_) => 0..numel(model).iter().sum(),
            Optimizer::Zero1 { state, .. } => state.layout.range(state.rank),
        }
    }

    /// This rank's moments as flat vectors over [`Self::owned_range`].
    pub fn moments(&self, model: &Llama<B>) -> (Vec<f32>, Vec<f32>) {
        let be = &model.backend;
        match self {
            Optimizer::Full(o) => (
                o.m.iter().flat_map(|b| be.download(b)).collect(),
                o.v.iter().flat_map(|b| be.download(b)).collect(),
            ),
            Optimizer::Zero1 { state, .. } => (
                state.segs.iter().flat_map(|s| be.download(&s.m)).collect(),
                state.segs.iter().flat_map(|s| be.download(&s.v)).collect(),
            ),
        }
    }

    /// Restores moments saved by [`Self::moments`] (over the same owned range).
    pub fn set_moments(&mut self, model: &Llama<B>, m: &[f32], v: &[f32]) {
        let be = &model.backend;
        match self {
            Optimizer::Full(o) => {
                let mut at = 0;
                for (i, n) in numel(model).into_iter().enumerate() {
                    o.m[i] = be.upload_as(&m[at..at + n], BufKind::F32);
                    o.v[i] = be.upload_as(&v[at..at + n], BufKind::F32);
                    at += n;
                }
            }
            Optimizer::Zero1 { state, .. } => {
                for s in state.segs.iter_mut() {
                    let r = s.seg.shard_offset..s.seg.shard_offset + s.seg.len;
                    s.m = be.upload_as(&m[r.clone()], BufKind::F32);
                    s.v = be.upload_as(&v[r], BufKind::F32);
                }
            }
        }
    }

    /// Sums the gradients over ranks (all of them, or this rank's shard) and returns the global
    /// gradient norm, identical on every rank.
    pub fn exchange(
        &mut self,
        model: &Llama<B>,
        grads: &mut [B::Buf],
        comm: Comm,
        stats: &mut CommStats,
    ) -> Result<f64> {
        let coll = comm.host;
        let be = &model.backend;
        match self {
            Optimizer::Full(_) if coll.world() == 1 => Ok(AdamW::grad_norm(model, grads)),
            Optimizer::Full(_) => {
                // Plain data parallel: all-reduce each tensor's gradient.
                let t0 = Instant::now();
                for g in grads.iter_mut() {
                    stats.bytes += 4 * be.len(g) as u64;
                    match be.host_f32_mut(g) {
                        Some(h) => coll.all_reduce_f32(h, ReduceOp::Sum)?,
                        None => {
                            let mut h = be.download(g);
                            coll.all_reduce_f32(&mut h, ReduceOp::Sum)?;
                            be.write(g, 0, &h);
                        }
                    }
                }
                stats.seconds += t0.elapsed().as_secs_f64();
                Ok(AdamW::grad_norm(model, grads))
            }
            Optimizer::Zero1 { state, .. } => {
                let offs = state.layout.offsets();
                for (i, g) in grads.iter().enumerate() {
                    be.copy(&mut state.gflat, offs[i], g, 0, be.len(g));
                }
                let t0 = Instant::now();
                stats.bytes += 4 * state.layout.padded() as u64;
                move_buffers(
                    be,
                    comm,
                    Move::ReduceScatter,
                    &state.gflat,
                    &mut state.gshard,
                )?;
                let mut sq = [be.sum_squares(&state.gshard)];
                coll.all_reduce_f64(&mut sq, ReduceOp::Sum)?;
                stats.seconds += t0.elapsed().as_secs_f64();
                Ok(sq[0].sqrt())
            }
        }
    }

    /// One AdamW update with the summed gradients (after [`Self::exchange`]); with ZeRO-1 the
    /// updated shards are then gathered into every rank's weights.
    pub fn update(
        &mut self,
        model: &mut Llama<B>,
        grads: &[B::Buf],
        lr: f64,
        grad_norm: f64,
        comm: Comm,
        stats: &mut CommStats,
    ) -> Result<()> {
        match self {
            Optimizer::Full(o) => {
                o.update(model, grads, lr, grad_norm);
                Ok(())
            }
            Optimizer::Zero1 { cfg, step, state } => {
                let scale = cfg.clip_scale(grad_norm);
                *step += 1;
                let (be, specs, weights) = model.trainable_parts_mut();
                for s in state.segs.iter_mut() {
                    let sg = s.seg;
                    let wd = cfg.decay_for(specs[sg.tensor].kind);
                    be.copy(&mut s.g, 0, &state.gshard, sg.shard_offset, sg.len);
                    be.copy(&mut s.p, 0, &weights[sg.tensor], sg.tensor_offset, sg.len);
                    cfg.apply(
                        be,
                        &mut s.p,
                        &s.g,
                        (&mut s.m, &mut s.v),
                        lr,
                        wd,
                        *step,
                        scale,
                    );
                    be.copy(&mut state.pshard, sg.shard_offset, &s.p, 0, sg.len);
                }
                let t0 = Instant::now();
                stats.bytes += 4 * state.layout.padded() as u64;
                move_buffers(be, comm, Move::AllGather, &state.pshard, &mut state.pflat)?;
                stats.seconds += t0.elapsed().as_secs_f64();
                let offs = state.layout.offsets();
                for (i, w) in weights.iter_mut().enumerate() {
                    let n = be.len(w);
                    be.copy(w, 0, &state.pflat, offs[i], n);
                }
                Ok(())
            }
        }
    }
}
