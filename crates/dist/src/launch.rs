//! Which rank this process is. Launchers announce it through environment variables:
//!
//! | launcher | rank | world size | rank on this node |
//! |---|---|---|---|
//! | Open MPI `mpirun` | `OMPI_COMM_WORLD_RANK` | `OMPI_COMM_WORLD_SIZE` | `OMPI_COMM_WORLD_LOCAL_RANK` |
//! | MPICH / Intel MPI (Hydra) | `PMI_RANK` | `PMI_SIZE` | `MPI_LOCALRANKID` |
//! | Slurm `srun` | `SLURM_PROCID` | `SLURM_NTASKS` | `SLURM_LOCALID` |
//! | torchrun and similar | `RANK` | `WORLD_SIZE` | `LOCAL_RANK` |
//!
//! The first complete set wins. [`open`] turns it into a [`Collective`]: MPI when the binary
//! has the `mpi` feature, otherwise a clear refusal, because N processes that each believe they
//! are alone would train N copies of the same run and race on one output directory.

use crate::collective::{Collective, SingleProcess};
use anyhow::{bail, Context, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchInfo {
    pub rank: usize,
    pub world: usize,
    pub local_rank: usize,
    /// Which launcher's variables were read, e.g. `mpirun (Open MPI)`.
    pub launcher: &'static str,
    /// The variables, for messages (`OMPI_COMM_WORLD_RANK=1 OMPI_COMM_WORLD_SIZE=2`).
    pub vars: String,
}

const LAUNCHERS: [(&str, &str, &str, &str); 4] = [
    (
        "mpirun (Open MPI)",
        "OMPI_COMM_WORLD_RANK",
        "OMPI_COMM_WORLD_SIZE",
        "OMPI_COMM_WORLD_LOCAL_RANK",
    ),
    ("MPICH / Hydra", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"),
    (
        "Slurm srun",
        "SLURM_PROCID",
        "SLURM_NTASKS",
        "SLURM_LOCALID",
    ),
    ("torchrun-style", "RANK", "WORLD_SIZE", "LOCAL_RANK"),
];

impl LaunchInfo {
    /// Reads the launcher's variables from `get` (the process environment in [`Self::detect`]).
    /// `None` when no launcher set them.
    pub fn detect_with(get: impl Fn(&str) -> Option<String>) -> Result<Option<LaunchInfo>> {
        for (launcher, rank_var, size_var, local_var) in LAUNCHERS {
            let (Some(r), Some(w)) = (get(rank_var), get(size_var)) else {
                continue;
            };
            let num = |var: &str, v: &str| -> Result<usize> {
                v.trim().parse::<usize>().with_context(|| {
                    format!("{var}={v:?} (set by the launcher, {launcher}) is not a non-negative integer")
                })
            };
            let rank = num(rank_var, &r)?;
            let world = num(size_var, &w)?;
            if world == 0 || rank >= world {
                bail!("{rank_var}={rank} and {size_var}={world} (from {launcher}): the rank must be below the world size");
            }
            let local_rank = match get(local_var) {
                Some(l) => num(local_var, &l)?,
                None => 0,
            };
            return Ok(Some(LaunchInfo {
                rank,
                world,
                local_rank,
                launcher,
                vars: format!("{rank_var}={rank} {size_var}={world}"),
            }));
        }
        Ok(None)
    }

    pub fn detect() -> Result<Option<LaunchInfo>> {
        Self::detect_with(|k| std::env::var(k).ok())
    }
}

/// The collective for this process: a single process when no launcher started several, MPI
/// when one did and the binary has it.
pub fn open() -> Result<Box<dyn Collective>> {
    let info = LaunchInfo::detect()?;
    match info {
        None => Ok(Box::new(SingleProcess)),
        Some(i) if i.world == 1 => Ok(Box::new(SingleProcess)),
        Some(i) => open_many(&i),
    }
}

#[cfg(feature = "mpi")]
fn open_many(i: &LaunchInfo) -> Result<Box<dyn Collective>> {
    let c = crate::mpi_comm::MpiCollective::init()?;
    if c.world() != i.world || c.rank() != i.rank {
        bail!(
            "the launcher says rank {} of {} ({}), MPI says rank {} of {}: was this binary started by a launcher of another MPI library than the one it was built against?",
            i.rank,
            i.world,
            i.vars,
            c.rank(),
            c.world()
        );
    }
    Ok(Box::new(c))
}

#[cfg(not(feature = "mpi"))]
fn open_many(i: &LaunchInfo) -> Result<Box<dyn Collective>> {
    bail!(
        "this process is rank {} of {} ({}: {}), but this binary was built without MPI support, so every rank would train its own copy of the run. \
         Rebuild with `cargo build --release --features mpi` (after `apt-get install libopenmpi-dev openmpi-bin libclang-dev`), or start one process",
        i.rank,
        i.world,
        i.launcher,
        i.vars
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn each_launcher_is_recognised_and_mpirun_wins_over_slurm() {
        assert_eq!(LaunchInfo::detect_with(env(&[])).unwrap(), None);
        let i = LaunchInfo::detect_with(env(&[
            ("SLURM_PROCID", "9"),
            ("SLURM_NTASKS", "16"),
            ("SLURM_LOCALID", "1"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!((i.rank, i.world, i.local_rank), (9, 16, 1));
        assert_eq!(i.launcher, "Slurm srun");
        let i = LaunchInfo::detect_with(env(&[
            ("SLURM_PROCID", "9"),
            ("SLURM_NTASKS", "16"),
            ("OMPI_COMM_WORLD_RANK", "3"),
            ("OMPI_COMM_WORLD_SIZE", "4"),
            ("OMPI_COMM_WORLD_LOCAL_RANK", "3"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!((i.rank, i.world, i.local_rank), (3, 4, 3));
        let i = LaunchInfo::detect_with(env(&[("RANK", "1"), ("WORLD_SIZE", "2")]))
            .unwrap()
            .unwrap();
        assert_eq!((i.rank, i.world, i.local_rank), (1, 2, 0));
        let i = LaunchInfo::detect_with(env(&[("PMI_RANK", "0"), ("PMI_SIZE", "8")]))
            .unwrap()
            .unwrap();
        assert_eq!(i.launcher, "MPICH / Hydra");
    }

    #[test]
    fn malformed_variables_are_named() {
        let e = LaunchInfo::detect_with(env(&[("RANK", "one"), ("WORLD_SIZE", "2")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("RANK=\"one\""), "{e}");
        let e = LaunchInfo::detect_with(env(&[("RANK", "2"), ("WORLD_SIZE", "2")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("below the world size"), "{e}");
    }

    #[cfg(not(feature = "mpi"))]
    #[test]
    fn several_ranks_without_mpi_are_refused() {
        let i = LaunchInfo::detect_with(env(&[
            ("OMPI_COMM_WORLD_RANK", "1"),
            ("OMPI_COMM_WORLD_SIZE", "2"),
        ]))
        .unwrap()
        .unwrap();
        let e = open_many(&i).err().unwrap().to_string();
        assert!(
            e.contains("--features mpi") && e.contains("rank 1 of 2"),
            "{e}"
        );
    }
}
