//! [`Collective`] over MPI (rsmpi), for host buffers: CPU training, and the start-up of GPU
//! jobs (the NCCL unique id is broadcast over it).

use crate::collective::{Collective, ReduceOp};
use anyhow::{bail, Result};
use mpi::collective::SystemOperation;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;

pub struct MpiCollective {
    // Dropping the universe finalises MPI; it lives as long as the collective.
    _universe: mpi::environment::Universe,
    comm: SimpleCommunicator,
    rank: usize,
    world: usize,
    version: String,
}

// The training loop calls MPI from one thread at a time (the level requested at
// initialisation, MPI_THREAD_SERIALIZED); the handles themselves are plain integers/pointers
// owned by the MPI library.
unsafe impl Send for MpiCollective {}
unsafe impl Sync for MpiCollective {}

impl MpiCollective {
    pub fn init() -> Result<Self> {
        let Some((universe, _level)) = mpi::initialize_with_threading(mpi::Threading::Serialized)
        else {
            bail!("MPI was already initialised in this process");
        };
        let comm = universe.world();
        let version = mpi::environment::library_version()
            .unwrap_or_else(|_| "unknown version".into())
            .lines()
            .next()
            .unwrap_or("")
            .split(',')
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        Ok(MpiCollective {
            rank: comm.rank() as usize,
            world: comm.size() as usize,
            comm,
            _universe: universe,
            version,
        })
    }

    fn op(op: ReduceOp) -> SystemOperation {
        match op {
            ReduceOp::Sum => SystemOperation::sum(),
            ReduceOp::Max => SystemOperation::max(),
        }
    }
}

impl Collective for MpiCollective {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world(&self) -> usize {
        self.world
    }
    fn name(&self) -> String {
        format!("MPI ({})", self.version)
    }
    fn all_reduce_f32(&self, buf: &mut [f32], op: ReduceOp) -> Result<()> {
        let send = buf.to_vec();
        self.comm.all_reduce_into(&send[..], buf, Self::op(op));
        // MPI's max ignores NaN on some implementations; a NaN on any rank must reach all.
        if op == ReduceOp::Max {
            let mut nan = [send.iter().any(|x| x.is_nan()) as u8 as f32];
            let n = nan;
            self.comm
                .all_reduce_into(&n[..], &mut nan[..], SystemOperation::max());
            if nan[0] > 0.0 {
                buf.iter_mut().for_each(|x| *x = f32::NAN);
            }
        }
        Ok(())
    }
    fn all_reduce_f64(&self, buf: &mut [f64], op: ReduceOp) -> Result<()> {
        let send = buf.to_vec();
        self.comm.all_reduce_into(&send[..], buf, Self::op(op));
        if op == ReduceOp::Max {
            let mut nan = [send.iter().any(|x| x.is_nan()) as u8 as f64];
            let n = nan;
            self.comm
                .all_reduce_into(&n[..], &mut nan[..], SystemOperation::max());
            if nan[0] > 0.0 {
                buf.iter_mut().for_each(|x| *x = f64::NAN);
            }
        }
        Ok(())
    }
    fn reduce_scatter_f32(&self, send: &[f32], recv: &mut [f32]) -> Result<()> {
        assert_eq!(send.len(), recv.len() * self.world);
        self.comm
            .reduce_scatter_block_into(send, recv, SystemOperation::sum());
        Ok(())
    }
    fn all_gather_f32(&self, send: &[f32], recv: &mut [f32]) -> Result<()> {
        assert_eq!(recv.len(), send.len() * self.world);
        self.comm.all_gather_into(send, recv);
        Ok(())
    }
    fn broadcast_bytes(&self, buf: &mut [u8], root: usize) -> Result<()> {
        self.comm.process_at_rank(root as i32).broadcast_into(buf);
        Ok(())
    }
    fn barrier(&self) -> Result<()> {
        self.comm.barrier();
        Ok(())
    }
}
