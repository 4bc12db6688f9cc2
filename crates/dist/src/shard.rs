//! The ZeRO-1 layout: every parameter tensor laid end to end in one flat vector (in the model's
//! parameter order), padded to a multiple of the world size and cut into equal shards. Rank `r`
//! owns `r·S .. (r+1)·S`; its optimizer state (moments) covers only that range. A shard cuts
//! tensors wherever it falls, so a rank's range is a list of [`Segment`]s, each inside one
//! tensor, which lets per-tensor rules (weight decay groups) still apply.

use serde::{Deserialize, Serialize};
use std::ops::Range;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardLayout {
    /// Elements of each tensor, in parameter order.
    pub numel: Vec<usize>,
    pub world: usize,
}

/// A piece of one tensor inside one rank's shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub tensor: usize,
    /// Offset inside the tensor.
    pub tensor_offset: usize,
    /// Offset inside the rank's shard.
    pub shard_offset: usize,
    pub len: usize,
}

impl ShardLayout {
    pub fn new(numel: Vec<usize>, world: usize) -> Self {
        assert!(world > 0);
        ShardLayout { numel, world }
    }

    /// Parameters in all (without padding).
    pub fn total(&self) -> usize {
        self.numel.iter().sum()
    }

    /// Elements per shard: `ceil(total / world)`.
    pub fn shard_len(&self) -> usize {
        self.total().div_ceil(self.world).max(1)
    }

    /// The flat vector's length with padding (`world × shard_len`).
    pub fn padded(&self) -> usize {
        self.shard_len() * self.world
    }

    /// Where each tensor starts in the flat vector.
    pub fn offsets(&self) -> Vec<usize> {
        let mut o = Vec::with_capacity(self.numel.len());
        let mut at = 0;
        for &n in &self.numel {
            o.push(at);
            at += n;
        }
        o
    }

    /// Rank `rank`'s range of the flat vector, clipped to real parameters (the last ranks'
    /// ranges may be short, or empty on a tiny model).
    pub fn range(&self, rank: usize) -> Range<usize> {
        let s = self.shard_len();
        let t = self.total();
        (rank * s).min(t)..((rank + 1) * s).min(t)
    }

    /// The tensor pieces in rank `rank`'s shard, in order.
    pub fn segments(&self, rank: usize) -> Vec<Segment> {
        let r = self.range(rank);
        let mut out = Vec::new();
        for (tensor, (&off, &n)) in self.offsets().iter().zip(&self.numel).enumerate() {
            let lo = off.max(r.start);
            let hi = (off + n).min(r.end);
            if lo < hi {
                out.push(Segment {
                    tensor,
                    tensor_offset: lo - off,
                    shard_offset: lo - r.start,
                    len: hi - lo,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_every_parameter_once_for_any_world() {
        let numel = vec![7, 1, 13, 4, 4, 29];
        for world in 1..=9 {
            let l = ShardLayout::new(numel.clone(), world);
            assert_eq!(l.padded() % world, 0);
            assert!(l.padded() >= l.total() && l.padded() - l.total() < world.max(2));
            let mut seen = vec![0u8; l.total()];
            let offs = l.offsets();
            for r in 0..world {
                let mut shard_at = 0;
                for s in l.segments(r) {
                    assert_eq!(s.shard_offset, shard_at, "segments are contiguous");
                    assert!(s.tensor_offset + s.len <= numel[s.tensor]);
                    for i in 0..s.len {
                        seen[offs[s.tensor] + s.tensor_offset + i] += 1;
                    }
                    shard_at += s.len;
                }
                assert_eq!(shard_at, l.range(r).len());
            }
            assert!(seen.iter().all(|&c| c == 1), "world {world}");
        }
    }

    #[test]
    fn a_count_that_does_not_divide_pads_the_last_shard() {
        let l = ShardLayout::new(vec![10], 3);
        assert_eq!((l.shard_len(), l.padded()), (4, 12));
        assert_eq!((l.range(0), l.range(1), l.range(2)), (0..4, 4..8, 8..10));
    }
}
