//! The collective operations data-parallel training needs, over host buffers. Implementations:
//! [`SingleProcess`] (world of one: every operation is a copy), [`crate::local::LocalGroup`]
//! (ranks on threads of one process), and `MpiCollective` (feature `mpi`). GPU buffers go through
//! NCCL in the CUDA crate, which also offers this trait for host values.
//!
//! Every operation is called by every rank in the same order, as in MPI. Results are identical
//! on every rank (each implementation reduces in one fixed order), so ranks that take decisions
//! from reduced values (skip a step, clip) always take the same ones.

use anyhow::Result;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceOp {
    Sum,
    Max,
}

impl ReduceOp {
    pub fn apply_f32(self, a: f32, b: f32) -> f32 {
        match self {
            ReduceOp::Sum => a + b,
            // NaN wins: a rank with a NaN must be seen by all.
            ReduceOp::Max => {
                if a.is_nan() || b.is_nan() {
                    f32::NAN
                } else {
                    a.max(b)
                }
            }
        }
    }
    pub fn apply_f64(self, a: f64, b: f64) -> f64 {
        match self {
            ReduceOp::Sum => a + b,
            ReduceOp::Max => {
                if a.is_nan() || b.is_nan() {
                    f64::NAN
                } else {
                    a.max(b)
                }
            }
        }
    }
}

pub trait Collective: Send + Sync {
    fn rank(&self) -> usize;
    fn world(&self) -> usize;
    /// What carries the traffic, for logs (`single process`, `MPI (Open MPI v4.1)`, …).
    fn name(&self) -> String;

    /// `buf = op over ranks of buf`, in place.
    fn all_reduce_f32(&self, buf: &mut [f32], op: ReduceOp) -> Result<()>;
    fn all_reduce_f64(&self, buf: &mut [f64], op: ReduceOp) -> Result<()>;
    /// `send` is `world × recv.len()`; rank `r` receives the sum over ranks of block `r`.
    fn reduce_scatter_f32(&self, send: &[f32], recv: &mut [f32]) -> Result<()>;
    /// `recv` is `world × send.len()`; block `r` of `recv` is rank `r`'s `send`.
    fn all_gather_f32(&self, send: &[f32], recv: &mut [f32]) -> Result<()>;
    /// Rank `root`'s bytes into every rank's `buf` (all ranks pass the same length).
    fn broadcast_bytes(&self, buf: &mut [u8], root: usize) -> Result<()>;
    fn barrier(&self) -> Result<()>;

    /// Rank `root`'s `u64` to every rank.
    fn broadcast_u64(&self, value: u64, root: usize) -> Result<u64> {
        let mut b = value.to_le_bytes();
        self.broadcast_bytes(&mut b, root)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Every rank's byte string, in rank order (lengths may differ). Built from the fixed-size
    /// operations: lengths first, then the padded strings.
    fn all_gather_bytes(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>> {
        let w = self.world();
        let mut lens = vec![0f64; w];
        lens[self.rank()] = mine.len() as f64;
        self.all_reduce_f64(&mut lens, ReduceOp::Sum)?;
        let max = lens.iter().fold(0.0f64, |a, &b| a.max(b)) as usize;
        // Four bytes per f32 slot carry the payload bit for bit through the gather.
        let slots = max.div_ceil(4);
        let mut send = vec![0f32; slots];
        for (i, c) in mine.chunks(4).enumerate() {
            let mut b = [0u8; 4];
            b[..c.len()].copy_from_slice(c);
            send[i] = f32::from_bits(u32::from_le_bytes(b));
        }
        let mut recv = vec![0f32; slots * w];
        self.all_gather_f32(&send, &mut recv)?;
        Ok((0..w)
            .map(|r| {
                let bytes: Vec<u8> = recv[r * slots..(r + 1) * slots]
                    .iter()
                    .flat_map(|x| x.to_bits().to_le_bytes())
                    .collect();
                bytes[..lens[r] as usize].to_vec()
            })
            .collect())
    }
}

/// A shared collective is a collective (the CUDA job without MPI uses one NCCL communicator for
/// its host values and its device buffers).
impl<T: Collective + ?Sized> Collective for std::sync::Arc<T> {
    fn rank(&self) -> usize {
        (**self).rank()
    }
    fn world(&self) -> usize {
        (**self).world()
    }
    fn name(&self) -> String {
        (**self).name()
    }
    fn all_reduce_f32(&self, buf: &mut [f32], op: ReduceOp) -> Result<()> {
        (**self).all_reduce_f32(buf, op)
    }
    fn all_reduce_f64(&self, buf: &mut [f64], op: ReduceOp) -> Result<()> {
        (**self).all_reduce_f64(buf, op)
    }
    fn reduce_scatter_f32(&self, send: &[f32], recv: &mut [f32]) -> Result<()> {
        (**self).reduce_scatter_f32(send, recv)
    }
    fn all_gather_f32(&self, send: &[f32], recv: &mut [f32]) -> Result<()> {
        (**self).all_gather_f32(send, recv)
    }
    fn broadcast_bytes(&self, buf: &mut [u8], root: usize) -> Result<()> {
        (**self).broadcast_bytes(buf, root)
    }
    fn barrier(&self) -> Result<()> {
        (**self).barrier()
    }
}

/// One process: every operation leaves the data as it is (or copies it).
#[derive(Clone, Copy, Debug, Default)]
pub struct SingleProcess;

impl Collective for SingleProcess {
    fn rank(&self) -> usize {
        0
    }
    fn world(&self) -> usize {
        1
    }
    fn name(&self) -> String {
        "single process".into()
    }
    fn all_reduce_f32(&self, _: &mut [f32], _: ReduceOp) -> Result<()> {
        Ok(())
    }
    fn all_reduce_f64(&self, _: &mut [f64], _: ReduceOp) -> Result<()> {
        Ok(())
    }
    fn reduce_scatter_f32(&self, send: &[f32], recv: &mut [f32]) -> Result<()> {
        recv.copy_from_slice(&send[..recv.len()]);
        Ok(())
    }
    fn all_gather_f32(&self, send: &[f32], recv: &mut [f32]) -> Result<()> {
        recv.copy_from_slice(send);
        Ok(())
    }
    fn broadcast_bytes(&self, _: &mut [u8], _: usize) -> Result<()> {
        Ok(())
    }
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
}

/// Collectives on a backend's own buffers (GPU memory), for the two large transfers of a step:
/// the gradient reduce-scatter and the parameter all-gather. The buffers arrive type-erased
/// (the training loop is generic over backends); an implementation returns `Ok(false)` for
/// buffers it does not handle, and the caller then stages them through host memory and the
/// host [`Collective`]. The CUDA crate implements it with NCCL.
pub trait DeviceCollective: Send + Sync {
    fn name(&self) -> String;
    /// `send` holds `world × count` f32 values, `recv` `count`: rank `r` receives the sum over
    /// ranks of block `r`.
    fn reduce_scatter_f32(
        &self,
        backend: &dyn std::any::Any,
        send: &dyn std::any::Any,
        recv: &mut dyn std::any::Any,
    ) -> Result<bool>;
    /// `send` holds `count` f32 values, `recv` `world × count`.
    fn all_gather_f32(
        &self,
        backend: &dyn std::any::Any,
        send: &dyn std::any::Any,
        recv: &mut dyn std::any::Any,
    ) -> Result<bool>;
}
