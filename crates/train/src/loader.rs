//! The mixture data loader. Each source is a set of packed shards read as one token stream cut
//! into non-overlapping blocks of `seq + 1` tokens (inputs and shifted targets). Every epoch of
//! a source visits its blocks in a seeded pseudo-random order; rank `r` of `world` takes the
//! positions `r, r + world, r + 2·world, …` of that order, so ranks never read the same block
//! and together cover all of them (TinyLlama shuffled files per rank and read some data twice).
//! The source of each sequence is drawn by mixture weight.
//!
//! The order is a keyed Feistel permutation, computed per index: no permutation table, so a
//! source of billions of blocks costs no memory, and the loader's whole state is a few numbers
//! that go into the checkpoint: resuming continues at exactly the next batch.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use tinyllama_data::packed::{list_shards, PackedReader};
use tinyllama_model::rng::Rng;

/// One data source of the mixture.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// Name used in logs and state (defaults to the prefix or directory name).
    #[serde(default)]
    pub name: Option<String>,
    /// Directory of `LITPKDS` shards.
    pub path: PathBuf,
    /// Only shards named `<prefix>-NNNNN.bin`; all `.bin` files when absent.
    #[serde(default)]
    pub prefix: Option<String>,
    /// Mixture weight (relative; normalised over the sources).
    #[serde(default = "one")]
    pub weight: f64,
}

fn one() -> f64 {
    1.0
}

impl SourceSpec {
    pub fn display_name(&self) -> String {
        self.name
            .clone()
            .or_else(|| self.prefix.clone())
            .unwrap_or_else(|| {
                self.path
                    .file_name()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| self.path.display().to_string())
            })
    }

    pub fn open(&self) -> Result<PackedReader> {
        let files = match &self.prefix {
            Some(p) => list_shards(&self.path, p)
                .with_context(|| format!("data source `{}`", self.display_name()))?,
            None => {
                let rd = std::fs::read_dir(&self.path).with_context(|| {
                    format!(
                        "data source `{}`: cannot read {}",
                        self.display_name(),
                        self.path.display()
                    )
                })?;
                let mut files: Vec<PathBuf> = rd
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "bin"))
                    .collect();
                files.sort();
                files
            }
        };
        if files.is_empty() {
            bail!(
                "data source `{}`: no .bin shards in {}; run `tinyllama data prepare` first",
                self.display_name(),
                self.path.display()
            );
        }
        PackedReader::open(&files)
    }
}

/// A bijection of `0..n` keyed by `key`: a 4-round Feistel network on the next even power of
/// two, with cycle-walking back into range.
pub fn permute(i: u64, n: u64, key: u64) -> u64 {
    assert!(i < n);
    if n <= 1 {
        return 0;
    }
    let bits = (64 - (n - 1).leading_zeros()).max(2);
    let bits = bits + (bits & 1);
    let half = bits / 2;
    let mask = (1u64 << half) - 1;
    let mut x = i;
    loop {
        let (mut l, mut r) = (x >> half, x & mask);
        for round in 0..4u64 {
            let mut h = r
                ^ key.rotate_left(round as u32 * 16)
                ^ (round.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            h = (h ^ (h >> 31)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            h = (h ^ (h >> 29)).wrapping_mul(0x94D0_49BB_1331_11EB);
            h ^= h >> 32;
            let nl = r;
            r = l ^ (h & mask);
            l = nl;
        }
        x = (l << half) | r;
        if x < n {
            return x;
        }
    }
}

/// Where one source stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceState {
    pub name: String,
    /// Blocks the source had when the run started (checked on resume).
    pub blocks: u64,
    pub epoch: u64,
    /// Position within this rank's share of the current epoch.
    pub cursor: u64,
    /// Sequences drawn from this source so far.
    pub sequences: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoaderState {
    pub rng: Rng,
    pub sources: Vec<SourceState>,
}

/// A stream of training batches whose position is a [`LoaderState`] (checkpointed, restored
/// on resume): the shard mixture of pre-training or the in-memory rows of fine-tuning.
pub trait BatchSource {
    /// Fills `inputs` and `targets` (`batch × seq` each) with the next batch.
    fn next_batch(
        &mut self,
        batch: usize,
        inputs: &mut Vec<u32>,
        targets: &mut Vec<i32>,
    ) -> Result<()>;
    fn state(&self) -> &LoaderState;
    /// Continues from a checkpointed state, refusing if the data changed underneath.
    fn restore(&mut self, state: LoaderState) -> Result<()>;
}

impl BatchSource for MixtureLoader {
    fn next_batch(
        &mut self,
        batch: usize,
        inputs: &mut Vec<u32>,
        targets: &mut Vec<i32>,
    ) -> Result<()> {
        MixtureLoader::next_batch(self, batch, inputs, targets)
    }
    fn state(&self) -> &LoaderState {
        &self.state
    }
    fn restore(&mut self, state: LoaderState) -> Result<()> {
        MixtureLoader::restore(self, state)
    }
}

struct Source {
    reader: PackedReader,
    weight: f64,
}

pub struct MixtureLoader {
    sources: Vec<Source>,
    pub seq_len: usize,
    pub rank: u64,
    pub world: u64,
    seed: u64,
    pub state: LoaderState,
}

impl MixtureLoader {
    pub fn new(
        specs: &[SourceSpec],
        seq_len: usize,
        seed: u64,
        rank: u64,
        world: u64,
    ) -> Result<Self> {
        if specs.is_empty() {
            bail!("no training data sources configured ([[data.train]] in the run config)");
        }
        if rank >= world {
            bail!("rank {rank} must be below world size {world}");
        }
        let mut sources = Vec::new();
        let mut states = Vec::new();
        for s in specs {
            if !(s.weight > 0.0 && s.weight.is_finite()) {
                bail!(
                    "data source `{}`: weight must be positive, got {}",
                    s.display_name(),
                    s.weight
                );
            }
            let reader = s.open()?;
            let blocks = reader.len() / (seq_len as u64 + 1);
            if blocks < world {
                bail!(
                    "data source `{}` has {} tokens: fewer than {} blocks of {} tokens (one per rank); \
                     use more data or a shorter sequence",
                    s.display_name(),
                    reader.len(),
                    world,
                    seq_len + 1
                );
            }
            states.push(SourceState {
                name: s.display_name(),
                blocks,
                epoch: 0,
                cursor: 0,
                sequences: 0,
            });
            sources.push(Source {
                reader,
                weight: s.weight,
            });
        }
        Ok(MixtureLoader {
            sources,
            seq_len,
            rank,
            world,
            seed,
            state: LoaderState {
                rng: Rng::derive(seed, 0x10ad_0000 + rank),
                sources: states,
            },
        })
    }

    /// Continues from a checkpointed state, refusing if the data changed underneath.
    pub fn restore(&mut self, state: LoaderState) -> Result<()> {
        if state.sources.len() != self.state.sources.len() {
            bail!(
                "checkpoint has {} data sources, the run config {}",
                state.sources.len(),
                self.state.sources.len()
            );
        }
        for (a, b) in state.sources.iter().zip(&self.state.sources) {
            if a.name != b.name || a.blocks != b.blocks {
                bail!(
                    "data source `{}` changed since the checkpoint ({} blocks then, `{}` with {} now); \
                     resuming would not continue the same stream",
                    a.name,
                    a.blocks,
                    b.name,
                    b.blocks
                );
            }
        }
        self.state = state;
        Ok(())
    }

    /// Blocks of source `s` that belong to this rank per epoch.
    fn share(&self, s: usize) -> u64 {
        let n = self.state.sources[s].blocks;
        (n - self.rank).div_ceil(self.world)
    }

    /// The block index (into source `s`) of this rank's `cursor`-th block of `epoch`.
    pub fn block_index(&self, s: usize, epoch: u64, cursor: u64) -> u64 {
        let n = self.state.sources[s].blocks;
        let key = Rng::derive(self.seed, (s as u64) << 32 | epoch).next_u64();
        permute(self.rank + cursor * self.world, n, key)
    }

    fn pick_source(&mut self) -> usize {
        if self.sources.len() == 1 {
            return 0;
        }
        let total: f64 = self.sources.iter().map(|s| s.weight).sum();
        let mut r = self.state.rng.next_f64() * total;
        for (i, s) in self.sources.iter().enumerate() {
            if r < s.weight {
                return i;
            }
            r -= s.weight;
        }
        self.sources.len() - 1
    }

    /// Fills `inputs` and `targets` (`batch × seq` each) with the next batch.
    pub fn next_batch(
        &mut self,
        batch: usize,
        inputs: &mut Vec<u32>,
        targets: &mut Vec<i32>,
    ) -> Result<()> {
        let t = self.seq_len;
        inputs.clear();
        targets.clear();
        let mut block = vec![0u32; t + 1];
        for _ in 0..batch {
            let s = self.pick_source();
            let (epoch, cursor) = (self.state.sources[s].epoch, self.state.sources[s].cursor);
            let idx = self.block_index(s, epoch, cursor);
            self.sources[s]
                .reader
                .read_into(idx * (t as u64 + 1), &mut block)?;
            let st = &mut self.state.sources[s];
            st.sequences += 1;
            st.cursor += 1;
            if st.cursor >= self.share(s) {
                let st = &mut self.state.sources[s];
                st.cursor = 0;
                st.epoch += 1;
            }
            inputs.extend_from_slice(&block[..t]);
            targets.extend(block[1..].iter().map(|&x| x as i32));
        }
        Ok(())
    }
}

/// A fixed validation set: the first `max_blocks` blocks of the validation shards, in order.
pub struct ValSet {
    pub inputs: Vec<u32>,
    pub targets: Vec<i32>,
    pub sequences: usize,
}

impl ValSet {
    /// Validation rows prepared in memory (fine-tuning's held-out conversations), each of
    /// `seq_len` positions.
    pub fn from_rows(rows: &[crate::rows::Row], seq_len: usize) -> Result<Self> {
        let mut v = ValSet {
            inputs: Vec::with_capacity(rows.len() * seq_len),
            targets: Vec::with_capacity(rows.len() * seq_len),
            sequences: 0,
        };
        for (i, r) in rows.iter().enumerate() {
            if r.inputs.len() != seq_len || r.targets.len() != seq_len {
                bail!(
                    "validation row {i} has {} inputs and {} targets; every row must have {seq_len}",
                    r.inputs.len(),
                    r.targets.len()
                );
            }
            v.inputs.extend_from_slice(&r.inputs);
            v.targets.extend_from_slice(&r.targets);
            v.sequences += 1;
        }
        if v.sequences == 0 {
            bail!("the validation set is empty");
        }
        Ok(v)
    }

    pub fn load(specs: &[SourceSpec], seq_len: usize, max_blocks: usize) -> Result<Self> {
        let mut v = ValSet {
            inputs: vec![],
            targets: vec![],
            sequences: 0,
        };
        let mut block = vec![0u32; seq_len + 1];
        let per_source = max_blocks.div_ceil(specs.len().max(1));
        for s in specs {
            let r = s.open()?;
            let n = (r.len() / (seq_len as u64 + 1)).min(per_source as u64);
            for i in 0..n {
                r.read_into(i * (seq_len as u64 + 1), &mut block)?;
                v.inputs.extend_from_slice(&block[..seq_len]);
                v.targets.extend(block[1..].iter().map(|&x| x as i32));
                v.sequences += 1;
            }
        }
        if v.sequences == 0 {
            bail!(
                "the validation data has no complete block of {} tokens",
                seq_len + 1
            );
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use tinyllama_data::packed::PackedWriter;

    #[test]
    fn permutation_is_a_bijection() {
        for n in [1u64, 2, 3, 17, 1000, 4097] {
            let seen: HashSet<u64> = (0..n).map(|i| permute(i, n, 42)).collect();
            assert_eq!(seen.len() as u64, n);
            assert!(seen.iter().all(|&x| x < n));
        }
        let a: Vec<u64> = (0..100).map(|i| permute(i, 100, 1)).collect();
        let b: Vec<u64> = (0..100).map(|i| permute(i, 100, 2)).collect();
        assert_ne!(a, b, "different keys give different orders");
    }

    fn write_source(dir: &std::path::Path, prefix: &str, tokens: usize, base: u32) -> SourceSpec {
        let mut w = PackedWriter::new(dir, prefix, 60000, 1000).unwrap();
        let toks: Vec<u32> = (0..tokens as u32).map(|i| base + i % 50000).collect();
        w.push(&toks).unwrap();
        w.finish().unwrap();
        SourceSpec {
            name: None,
            path: dir.to_path_buf(),
            prefix: Some(prefix.into()),
            weight: 1.0,
        }
    }

    #[test]
    fn ranks_read_disjoint_blocks_that_cover_the_source() {
        let dir = tempfile::tempdir().unwrap();
        let seq = 7;
        let spec = write_source(dir.path(), "a", 8 * 997 + 3, 0); // 997 blocks + a remainder
        let world = 3;
        let mut all = Vec::new();
        for rank in 0..world {
            let mut l =
                MixtureLoader::new(std::slice::from_ref(&spec), seq, 5, rank, world).unwrap();
            let share = l.share(0);
            let (mut inp, mut tgt) = (vec![], vec![]);
            for _ in 0..share {
                l.next_batch(1, &mut inp, &mut tgt).unwrap();
                assert_eq!(
                    inp[1..],
                    tgt.iter().map(|&x| x as u32).collect::<Vec<_>>()[..seq - 1]
                );
                all.push(inp[0] / 8); // blocks start at multiples of 8 tokens
            }
            assert_eq!(
                l.state.sources[0].epoch, 1,
                "rank {rank} finished exactly one epoch"
            );
        }
        let set: HashSet<u32> = all.iter().copied().collect();
        assert_eq!(all.len(), 997, "every block read once in total");
        assert_eq!(set.len(), 997, "no block read by two ranks");
    }

    #[test]
    fn restored_state_continues_the_exact_stream_and_mixture_follows_weights() {
        let dir = tempfile::tempdir().unwrap();
        let a = write_source(dir.path(), "a", 20000, 0);
        let mut b = write_source(dir.path(), "b", 20000, 10000);
        b.weight = 3.0;
        let specs = [a, b];
        let mut l1 = MixtureLoader::new(&specs, 15, 9, 0, 1).unwrap();
        let (mut i1, mut t1) = (vec![], vec![]);
        for _ in 0..5 {
            l1.next_batch(4, &mut i1, &mut t1).unwrap();
        }
        let saved = serde_json::to_string(&l1.state).unwrap();
        l1.next_batch(4, &mut i1, &mut t1).unwrap();
        let mut l2 = MixtureLoader::new(&specs, 15, 9, 0, 1).unwrap();
        l2.restore(serde_json::from_str(&saved).unwrap()).unwrap();
        let (mut i2, mut t2) = (vec![], vec![]);
        l2.next_batch(4, &mut i2, &mut t2).unwrap();
        assert_eq!((&i1, &t1), (&i2, &t2));
        for _ in 0..300 {
            l2.next_batch(4, &mut i2, &mut t2).unwrap();
        }
        let s = &l2.state.sources;
        let frac_b = s[1].sequences as f64 / (s[0].sequences + s[1].sequences) as f64;
        assert!((frac_b - 0.75).abs() < 0.05, "{frac_b}");
    }

    #[test]
    fn missing_data_is_explained() {
        let dir = tempfile::tempdir().unwrap();
        let spec = SourceSpec {
            name: None,
            path: dir.path().into(),
            prefix: None,
            weight: 1.0,
        };
        let e = format!(
            "{:#}",
            MixtureLoader::new(&[spec], 8, 0, 0, 1).err().unwrap()
        );
        assert!(e.contains("data prepare"), "{e}");
    }
}
