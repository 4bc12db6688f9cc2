//! Training data held in memory as ready rows: what fine-tuning feeds the loop (rendered
//! conversations with their target masks, or preference pairs for DPO). The order is the same
//! keyed permutation per epoch as the shard loader's ([`crate::loader::permute`]), rank `r` of
//! `world` taking positions `r, r + world, …`, and the position is the same [`LoaderState`] in
//! checkpoints, so resume continues at exactly the next row and re-sharding works the same way.

use crate::loader::{permute, BatchSource, LoaderState, SourceState};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tinyllama_model::rng::Rng;

/// One training sequence: `inputs[t]` predicts `targets[t]`; a negative target is ignored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    pub inputs: Vec<u32>,
    pub targets: Vec<i32>,
}

impl Row {
    /// Targets that count (non-negative).
    pub fn target_count(&self) -> usize {
        self.targets.iter().filter(|&&t| t >= 0).count()
    }
}

/// A preference pair for DPO: the same prompt with the preferred and the rejected reply, each
/// a row whose targets are the reply's tokens only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairRows {
    pub chosen: Row,
    pub rejected: Row,
}

/// What a fine-tuning run trains on, prepared by the caller (tokenised and cut to the
/// sequence length).
#[derive(Clone, Debug)]
pub enum FinetuneData {
    /// Supervised fine-tuning: rows with masked targets; validation rows (possibly none).
    Sft { train: Arc<Vec<Row>>, val: Vec<Row> },
    /// DPO: preference pairs; validation pairs (possibly none).
    Dpo {
        train: Arc<Vec<PairRows>>,
        val: Vec<PairRows>,
    },
}

impl FinetuneData {
    pub fn train_len(&self) -> usize {
        match self {
            FinetuneData::Sft { train, .. } => train.len(),
            FinetuneData::Dpo { train, .. } => train.len(),
        }
    }
}

/// The order in which one rank visits `n` in-memory items, epoch after epoch.
pub struct IndexLoader {
    n: u64,
    rank: u64,
    world: u64,
    seed: u64,
    pub state: LoaderState,
}

impl IndexLoader {
    pub fn new(name: &str, n: usize, seed: u64, rank: usize, world: usize) -> Result<Self> {
        if rank >= world {
            bail!("rank {rank} must be below world size {world}");
        }
        if n < world {
            bail!("the training data has {n} items, fewer than the {world} ranks; add data or use fewer ranks");
        }
        Ok(IndexLoader {
            n: n as u64,
            rank: rank as u64,
            world: world as u64,
            seed,
            state: LoaderState {
                rng: Rng::derive(seed, 0x10ad_0000 + rank as u64),
                sources: vec![SourceState {
                    name: name.into(),
                    blocks: n as u64,
                    epoch: 0,
                    cursor: 0,
                    sequences: 0,
                }],
            },
        })
    }

    /// Items per epoch that are this rank's.
    fn share(&self) -> u64 {
        (self.n - self.rank).div_ceil(self.world)
    }

    /// The next item of this rank.
    pub fn next_index(&mut self) -> usize {
        let st = &self.state.sources[0];
        let key = Rng::derive(self.seed, st.epoch).next_u64();
        let idx = permute(self.rank + st.cursor * self.world, self.n, key);
        let share = self.share();
        let st = &mut self.state.sources[0];
        st.sequences += 1;
        st.cursor += 1;
        if st.cursor >= share {
            st.cursor = 0;
            st.epoch += 1;
        }
        idx as usize
    }

    pub fn restore(&mut self, state: LoaderState) -> Result<()> {
        match state.sources.as_slice() {
            [s] if s.name == self.state.sources[0].name && s.blocks == self.n => {
                self.state = state;
                Ok(())
            }
            _ => bail!(
                "the checkpoint's data position does not fit this data ({} then, {} items of `{}` now); \
                 the training files changed since the checkpoint, so resuming would not continue the same stream",
                state
                    .sources
                    .iter()
                    .map(|s| format!("{} items of `{}`", s.blocks, s.name))
                    .collect::<Vec<_>>()
                    .join(", "),
                self.n,
                self.state.sources[0].name
            ),
        }
    }
}

/// Batches of in-memory rows (supervised fine-tuning).
pub struct RowLoader {
    rows: Arc<Vec<Row>>,
    order: IndexLoader,
}

impl RowLoader {
    pub fn new(rows: Arc<Vec<Row>>, seed: u64, rank: usize, world: usize) -> Result<Self> {
        let order = IndexLoader::new("finetune-rows", rows.len(), seed, rank, world)?;
        Ok(RowLoader { rows, order })
    }
}

impl BatchSource for RowLoader {
    fn next_batch(
        &mut self,
        batch: usize,
        inputs: &mut Vec<u32>,
        targets: &mut Vec<i32>,
    ) -> Result<()> {
        inputs.clear();
        targets.clear();
        for _ in 0..batch {
            let r = &self.rows[self.order.next_index()];
            inputs.extend_from_slice(&r.inputs);
            targets.extend_from_slice(&r.targets);
        }
        Ok(())
    }
    fn state(&self) -> &LoaderState {
        &self.order.state
    }
    fn restore(&mut self, state: LoaderState) -> Result<()> {
        self.order.restore(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ranks_cover_every_item_once_per_epoch_and_resume_continues() {
        let n = 23;
        let mut seen = Vec::new();
        for rank in 0..3 {
            let mut l = IndexLoader::new("x", n, 4, rank, 3).unwrap();
            while l.state.sources[0].epoch == 0 {
                seen.push(l.next_index());
            }
        }
        assert_eq!(seen.len(), n);
        assert_eq!(seen.iter().collect::<HashSet<_>>().len(), n);

        let mut a = IndexLoader::new("x", n, 4, 0, 1).unwrap();
        for _ in 0..30 {
            a.next_index();
        }
        let saved = serde_json::to_string(&a.state).unwrap();
        let mut b = IndexLoader::new("x", n, 4, 0, 1).unwrap();
        b.restore(serde_json::from_str(&saved).unwrap()).unwrap();
        let next_a: Vec<usize> = (0..40).map(|_| a.next_index()).collect();
        let next_b: Vec<usize> = (0..40).map(|_| b.next_index()).collect();
        assert_eq!(next_a, next_b);

        let mut c = IndexLoader::new("x", n + 1, 4, 0, 1).unwrap();
        let e = c
            .restore(serde_json::from_str(&saved).unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("changed since the checkpoint"), "{e}");
    }

    #[test]
    fn epochs_visit_items_in_different_orders() {
        let mut l = IndexLoader::new("x", 50, 9, 0, 1).unwrap();
        let e0: Vec<usize> = (0..50).map(|_| l.next_index()).collect();
        let e1: Vec<usize> = (0..50).map(|_| l.next_index()).collect();
        assert_ne!(e0, e1);
        let mut s0 = e0.clone();
        s0.sort();
        assert_eq!(s0, (0..50).collect::<Vec<_>>());
    }
}
