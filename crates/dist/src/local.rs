//! A group of ranks inside one process, each rank on its own thread. It implements
//! [`Collective`] exactly (sums in rank order, so every rank sees identical results), which lets
//! the test suite check that N ranks train like one without MPI or a launcher.

use crate::collective::{Collective, ReduceOp};
use anyhow::Result;
use std::sync::{Arc, Barrier, Mutex};

struct Shared {
    world: usize,
    barrier: Barrier,
    slots: Mutex<Vec<Vec<u8>>>,
}

/// One rank's handle; make a whole group with [`LocalGroup::new`].
pub struct LocalGroup {
    rank: usize,
    shared: Arc<Shared>,
}

impl LocalGroup {
    /// Handles for ranks `0..world`, to be moved one per thread.
    pub fn new(world: usize) -> Vec<LocalGroup> {
        assert!(world > 0);
        let shared = Arc::new(Shared {
            world,
            barrier: Barrier::new(world),
            slots: Mutex::new(vec![Vec::new(); world]),
        });
        (0..world)
            .map(|rank| LocalGroup {
                rank,
                shared: shared.clone(),
            })
            .collect()
    }

    /// Every rank's bytes, in rank order.
    fn exchange(&self, mine: Vec<u8>) -> Vec<Vec<u8>> {
        self.shared.slots.lock().unwrap()[self.rank] = mine;
        self.shared.barrier.wait();
        let all = self.shared.slots.lock().unwrap().clone();
        // Nobody may overwrite a slot before everyone has read this round.
        self.shared.barrier.wait();
        all
    }
}

fn f32_bytes(x: &[f32]) -> Vec<u8> {
    x.iter().flat_map(|v| v.to_le_bytes()).collect()
}
fn bytes_f32(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

impl Collective for LocalGroup {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world(&self) -> usize {
        self.shared.world
    }
    fn name(&self) -> String {
        format!("in-process group of {}", self.shared.world)
    }
    fn all_reduce_f32(&self, buf: &mut [f32], op: ReduceOp) -> Result<()> {
        let all = self.exchange(f32_bytes(buf));
        let mut acc = bytes_f32(&all[0]);
        for other in &all[1..] {
            for (a, b) in acc.iter_mut().zip(bytes_f32(other)) {
                *a = op.apply_f32(*a, b);
            }
        }
        buf.copy_from_slice(&acc);
        Ok(())
    }
    fn all_reduce_f64(&self, buf: &mut [f64], op: ReduceOp) -> Result<()> {
        let all = self.exchange(buf.iter().flat_map(|v| v.to_le_bytes()).collect());
        let as_f64 = |b: &[u8]| -> Vec<f64> {
            b.chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                .collect()
        };
        let mut acc = as_f64(&all[0]);
        for other in &all[1..] {
            for (a, b) in acc.iter_mut().zip(as_f64(other)) {
                *a = op.apply_f64(*a, b);
            }
        }
        buf.copy_from_slice(&acc);
        Ok(())
    }
    fn reduce_scatter_f32(&self, send: &[f32], recv: &mut [f32]) -> Result<()> {
        let n = recv.len();
        assert_eq!(send.len(), n * self.world());
        let all = self.exchange(f32_bytes(send));
        let lo = self.rank * n;
        recv.fill(0.0);
        for other in &all {
            let o = bytes_f32(other);
            for (a, b) in recv.iter_mut().zip(&o[lo..lo + n]) {
                *a += *b;
            }
        }
        Ok(())
    }
    fn all_gather_f32(&self, send: &[f32], recv: &mut [f32]) -> Result<()> {
        let n = send.len();
        assert_eq!(recv.len(), n * self.world());
        let all = self.exchange(f32_bytes(send));
        for (r, other) in all.iter().enumerate() {
            recv[r * n..(r + 1) * n].copy_from_slice(&bytes_f32(other));
        }
        Ok(())
    }
    fn broadcast_bytes(&self, buf: &mut [u8], root: usize) -> Result<()> {
        let all = self.exchange(buf.to_vec());
        buf.copy_from_slice(&all[root]);
        Ok(())
    }
    fn barrier(&self) -> Result<()> {
        self.exchange(Vec::new());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<T: Send + 'static>(world: usize, f: fn(LocalGroup) -> T) -> Vec<T> {
        let hs: Vec<_> = LocalGroup::new(world)
            .into_iter()
            .map(|g| std::thread::spawn(move || f(g)))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    }

    #[test]
    fn collectives_agree_with_their_definitions() {
        let out = run(3, |g| {
            let r = g.rank() as f32;
            let mut a = vec![r, 10.0 * r];
            g.all_reduce_f32(&mut a, ReduceOp::Sum).unwrap();
            let mut m = vec![r as f64, -(r as f64)];
            g.all_reduce_f64(&mut m, ReduceOp::Max).unwrap();
            // Rank r sends [r, r, r, r, r, r]: block b summed over ranks is 0 + 1 + 2.
            let send: Vec<f32> = (0..6).map(|i| r + i as f32).collect();
            let mut rs = vec![0.0; 2];
            g.reduce_scatter_f32(&send, &mut rs).unwrap();
            let mut ag = vec![0.0; 6];
            g.all_gather_f32(&[r, r + 0.5], &mut ag).unwrap();
            let mut b = if g.rank() == 2 { *b"abc" } else { *b"xyz" };
            g.broadcast_bytes(&mut b, 2).unwrap();
            let strings = g
                .all_gather_bytes(&vec![b'a' + g.rank() as u8; g.rank() + 1])
                .unwrap();
            g.barrier().unwrap();
            (a, m, rs, ag, b, strings)
        });
        for (rank, (a, m, rs, ag, b, strings)) in out.into_iter().enumerate() {
            assert_eq!(a, vec![3.0, 30.0]);
            assert_eq!(m, vec![2.0, 0.0]);
            let lo = 2.0 * rank as f32;
            assert_eq!(rs, vec![3.0 * lo + 3.0, 3.0 * lo + 6.0], "rank {rank}");
            assert_eq!(ag, vec![0.0, 0.5, 1.0, 1.5, 2.0, 2.5]);
            assert_eq!(&b, b"abc");
            assert_eq!(
                strings,
                vec![b"a".to_vec(), b"bb".to_vec(), b"ccc".to_vec()]
            );
        }
    }

    #[test]
    fn max_propagates_nan_so_every_rank_skips_together() {
        let out = run(2, |g| {
            let mut v = vec![if g.rank() == 1 { f64::NAN } else { 1.0 }];
            g.all_reduce_f64(&mut v, ReduceOp::Max).unwrap();
            v[0]
        });
        assert!(out.iter().all(|v| v.is_nan()));
    }
}
