//! Finding duplicates from the signature records: exact duplicates by sorting/hashing the
//! 128-bit hashes, near duplicates by grouping equal band hashes (LSH) into candidate pairs
//! and joining them with union-find. Both keep the first document (smallest global index) and
//! mark the rest. See the module docs of [`crate::dedup`] for the memory model.

use super::bitset::BitSet;
use super::unionfind::UnionFind;
use anyhow::{Context, Result};
use rayon::slice::ParallelSliceMut;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// One document's dedup data.
pub struct SigRecord<'a> {
    /// Global index among documents that passed the filters.
    pub gidx: u64,
    pub exact: u128,
    /// Empty when the document has no words to shingle.
    pub bands: &'a [u64],
}

/// Replays the records of documents taking part in deduplication, in global order, as often
/// as asked.
pub trait SignatureSource {
    /// Upper bound (exclusive) of `gidx`.
    fn n_docs(&self) -> u64;
    /// Documents taking part in deduplication.
    fn n_participants(&self) -> u64;
    fn for_each(&self, f: &mut dyn FnMut(SigRecord) -> Result<()>) -> Result<()>;
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ClusterStats {
    /// Candidate pairs from LSH buckets (each bucket member paired with the bucket's first).
    pub candidate_pairs: u64,
    /// Clusters of two or more near-duplicate documents.
    pub clusters: u64,
    pub docs_in_clusters: u64,
    /// Cluster count by size range.
    pub size_histogram: BTreeMap<String, u64>,
    /// The largest clusters: (size, representative's global index).
    pub largest: Vec<(u64, u64)>,
    /// Partitions spilled to disk per band (1: in memory).
    pub partitions_per_band: u64,
    /// Passes over the signature files.
    pub passes: u64,
}

fn size_bucket(n: u64) -> &'static str {
    match n {
        0..=2 => "2",
        3..=5 => "3-5",
        6..=10 => "6-10",
        11..=100 => "11-100",
        101..=1000 => "101-1000",
        _ => ">1000",
    }
}

fn part_writers(paths: &[PathBuf]) -> Result<Vec<BufWriter<File>>> {
    paths
        .iter()
        .map(|p| {
            File::create(p)
                .map(|f| BufWriter::with_capacity(256 << 10, f))
                .with_context(|| format!("cannot create spill file {}", p.display()))
        })
        .collect()
}

fn read_all(path: &Path) -> Result<Vec<u8>> {
    let mut v = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut v))
        .with_context(|| format!("cannot read spill file {}", path.display()))?;
    Ok(v)
}

/// Partitions needed so that `bytes` split by hash prefix fit `budget` (a power of two).
fn partitions(bytes: u64, budget: u64) -> u64 {
    bytes.div_ceil(budget.max(1)).max(1).next_power_of_two()
}

fn partition_of(key_hi: u64, parts: u64) -> usize {
    if parts <= 1 {
        0
    } else {
        (key_hi >> (64 - parts.trailing_zeros())) as usize
    }
}

/// Marks every document whose exact hash equals an earlier document's.
pub fn find_exact_duplicates(src: &dyn SignatureSource, budget: u64, tmp: &Path) -> Result<BitSet> {
    let n = src.n_docs();
    let mut dups = BitSet::new(n);
    let parts = partitions(src.n_participants() * 48, budget);
    if parts == 1 {
        let mut seen: HashSet<u128, crate::hashing::IdBuildHasher> =
            HashSet::with_capacity_and_hasher(src.n_participants() as usize, Default::default());
        src.for_each(&mut |r| {
            if !seen.insert(r.exact) {
                dups.set(r.gidx);
            }
            Ok(())
        })?;
        return Ok(dups);
    }
    std::fs::create_dir_all(tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let paths: Vec<PathBuf> = (0..parts)
        .map(|p| tmp.join(format!("exact-{p:04}.bin")))
        .collect();
    let mut ws = part_writers(&paths)?;
    src.for_each(&mut |r| {
        let w = &mut ws[partition_of((r.exact >> 64) as u64, parts)];
        w.write_all(&r.exact.to_le_bytes())?;
        w.write_all(&r.gidx.to_le_bytes())?;
        Ok(())
    })?;
    for w in &mut ws {
        w.flush().context("writing exact-dedup spill file")?;
    }
    drop(ws);
    for p in &paths {
        let bytes = read_all(p)?;
        let mut recs: Vec<(u128, u64)> = bytes
            .chunks_exact(24)
            .map(|c| {
                (
                    u128::from_le_bytes(c[..16].try_into().unwrap()),
                    u64::from_le_bytes(c[16..].try_into().unwrap()),
                )
            })
            .collect();
        drop(bytes);
        recs.par_sort_unstable();
        for w in recs.windows(2) {
            if w[0].0 == w[1].0 {
                dups.set(w[1].1);
            }
        }
        let _ = std::fs::remove_file(p);
    }
    Ok(dups)
}

/// Unions every member of each run of equal keys with the run's first (smallest) member.
fn union_runs(recs: &mut [(u64, u64)], uf: &mut UnionFind, pairs: &mut u64) {
    recs.par_sort_unstable();
    let mut i = 0;
    while i < recs.len() {
        let mut j = i + 1;
        while j < recs.len() && recs[j].0 == recs[i].0 {
            uf.union(recs[i].1, recs[j].1);
            *pairs += 1;
            j += 1;
        }
        i = j;
    }
}

/// Near-duplicate clusters over documents not already in `skip`; marks every member except
/// each cluster's smallest index.
pub fn find_near_duplicates(
    src: &dyn SignatureSource,
    bands: usize,
    skip: &BitSet,
    budget: u64,
    tmp: &Path,
) -> Result<(BitSet, ClusterStats)> {
    let n = src.n_docs();
    let per_band = src.n_participants() * 16;
    let parts = partitions(per_band, budget);
    // Bands per pass: all that fit in memory, or as many as keep open spill files bounded.
    let group = if parts == 1 {
        ((budget / per_band.max(1)) as usize).clamp(1, bands.max(1))
    } else {
        (256 / parts as usize).clamp(1, bands.max(1))
    };
    let mut uf = UnionFind::new();
    let mut stats = ClusterStats {
        partitions_per_band: parts,
        ..Default::default()
    };
    let mut b0 = 0;
    while b0 < bands {
        let b1 = (b0 + group).min(bands);
        stats.passes += 1;
        if parts == 1 {
            let mut recs: Vec<Vec<(u64, u64)>> = (b0..b1)
                .map(|_| Vec::with_capacity(src.n_participants() as usize))
                .collect();
            src.for_each(&mut |r| {
                if !r.bands.is_empty() && !skip.get(r.gidx) {
                    for (v, &h) in recs.iter_mut().zip(&r.bands[b0..b1]) {
                        v.push((h, r.gidx));
                    }
                }
                Ok(())
            })?;
            for mut v in recs {
                union_runs(&mut v, &mut uf, &mut stats.candidate_pairs);
            }
        } else {
            std::fs::create_dir_all(tmp)
                .with_context(|| format!("cannot create {}", tmp.display()))?;
            let paths: Vec<PathBuf> = (b0..b1)
                .flat_map(|b| (0..parts).map(move |p| (b, p)))
                .map(|(b, p)| tmp.join(format!("band{b:03}-{p:04}.bin")))
                .collect();
            let mut ws = part_writers(&paths)?;
            src.for_each(&mut |r| {
                if !r.bands.is_empty() && !skip.get(r.gidx) {
                    for (k, &h) in r.bands[b0..b1].iter().enumerate() {
                        let w = &mut ws[k * parts as usize + partition_of(h, parts)];
                        w.write_all(&h.to_le_bytes())?;
                        w.write_all(&r.gidx.to_le_bytes())?;
                    }
                }
                Ok(())
            })?;
            for w in &mut ws {
                w.flush().context("writing near-dedup spill file")?;
            }
            drop(ws);
            for p in &paths {
                let bytes = read_all(p)?;
                let mut v: Vec<(u64, u64)> = bytes
                    .chunks_exact(16)
                    .map(|c| {
                        (
                            u64::from_le_bytes(c[..8].try_into().unwrap()),
                            u64::from_le_bytes(c[8..].try_into().unwrap()),
                        )
                    })
                    .collect();
                drop(bytes);
                union_runs(&mut v, &mut uf, &mut stats.candidate_pairs);
                let _ = std::fs::remove_file(p);
            }
        }
        b0 = b1;
    }
    let mut dups = BitSet::new(n);
    let mut sizes: BTreeMap<u64, u64> = BTreeMap::new();
    for (m, root) in uf.members() {
        *sizes.entry(root).or_default() += 1;
        if m != root {
            dups.set(m);
        }
    }
    stats.clusters = sizes.len() as u64;
    stats.docs_in_clusters = sizes.values().sum();
    for &s in sizes.values() {
        *stats
            .size_histogram
            .entry(size_bucket(s).to_string())
            .or_default() += 1;
    }
    let mut largest: Vec<(u64, u64)> = sizes.into_iter().map(|(r, s)| (s, r)).collect();
    largest.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    largest.truncate(5);
    stats.largest = largest;
    Ok((dups, stats))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Mem(Vec<(u128, Vec<u64>)>);
    impl SignatureSource for Mem {
        fn n_docs(&self) -> u64 {
            self.0.len() as u64
        }
        fn n_participants(&self) -> u64 {
            self.0.len() as u64
        }
        fn for_each(&self, f: &mut dyn FnMut(SigRecord) -> Result<()>) -> Result<()> {
            for (i, (e, b)) in self.0.iter().enumerate() {
                f(SigRecord {
                    gidx: i as u64,
                    exact: *e,
                    bands: b,
                })?;
            }
            Ok(())
        }
    }

    fn corpus() -> Mem {
        // Docs 0,3,5 are exact copies; 1,4 share band 1; 2,6,4 share band 0 via 6;
        // 7 is alone.
        Mem(vec![
            (10, vec![100, 200]),
            (11, vec![101, 201]),
            (12, vec![102, 202]),
            (10, vec![100, 200]),
            (14, vec![104, 201]),
            (10, vec![100, 200]),
            (16, vec![102, 204]),
            (17, vec![107, 207]),
        ])
    }

    fn check(budget: u64) {
        let tmp = tempfile::tempdir().unwrap();
        let src = corpus();
        let exact = find_exact_duplicates(&src, budget, tmp.path()).unwrap();
        let got: Vec<u64> = (0..8).filter(|&i| exact.get(i)).collect();
        assert_eq!(got, vec![3, 5]);
        let (near, st) = find_near_duplicates(&src, 2, &exact, budget, tmp.path()).unwrap();
        let got: Vec<u64> = (0..8).filter(|&i| near.get(i)).collect();
        assert_eq!(got, vec![4, 6]);
        assert_eq!(st.clusters, 2);
        assert_eq!(st.docs_in_clusters, 4);
        assert_eq!(st.largest, vec![(2, 1), (2, 2)]);
        assert_eq!(
            std::fs::read_dir(tmp.path()).unwrap().count(),
            0,
            "spill files removed"
        );
    }

    #[test]
    fn in_memory_and_spilled_agree() {
        check(1 << 30);
        // A budget of a few bytes forces hash-prefix partitions on disk.
        check(40);
    }
}
