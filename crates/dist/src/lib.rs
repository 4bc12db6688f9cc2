//! Distributed training support, kept apart from the training loop so each piece can be tested
//! on its own:
//!
//! - [`collective`]: the [`Collective`] trait (all-reduce, reduce-scatter, all-gather,
//!   broadcast, barrier) and its single-process implementation.
//! - [`local`]: an in-process group of ranks on threads, so the equivalence of one rank and
//!   many is tested in every build, with or without MPI.
//! - `mpi` (feature `mpi`): the same trait over MPI, through rsmpi.
//! - [`launch`]: which rank this process is, read from the launcher's environment (mpirun,
//!   srun, torchrun), and the refusal to train N copies of one run without MPI.
//! - [`shard`]: the ZeRO-1 layout of the flat parameter vector over ranks.
//! - [`watchdog`]: every rank's heartbeat file and the bound on how long a collective may wait.
//! - [`rendezvous`]: exchanging a few bytes (the NCCL unique id) through a file on the shared
//!   filesystem when there is no MPI.

pub mod collective;
pub mod launch;
pub mod local;
#[cfg(feature = "mpi")]
pub mod mpi_comm;
pub mod rendezvous;
pub mod shard;
pub mod watchdog;

pub use collective::{Collective, DeviceCollective, ReduceOp, SingleProcess};
pub use launch::{open, LaunchInfo};
pub use shard::{Segment, ShardLayout};
