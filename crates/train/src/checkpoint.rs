//! Checkpoints. Each is a directory `checkpoints/step-NNNNNNNN/` holding:
//!
//! - a Hugging Face model (`config.json`, `model*.safetensors` in f32), so a checkpoint can be
//!   generated from or evaluated directly; written by rank 0;
//! - the AdamW moments as the flat parameter vector cut into one file per rank,
//!   `optimizer-rank-RRRRR-of-WWWWW.safetensors` (tensors `m` and `v` over that rank's range),
//!   each written by its own rank in parallel: with ZeRO-1 no rank ever holds the whole
//!   optimizer state, so gathering it on rank 0 would need the memory ZeRO saves;
//!   `optimizer.json` names the world size and every file's range;
//! - `loader-rank-RRRRR.json`: each rank's data-loader position;
//! - `state.json` (step, counters, run config) and `manifest.json` (size and xxh3-64 of every
//!   other file), written last by rank 0.
//!
//! It is built under a temporary name and renamed into place only when every rank's part is
//! there (the ranks meet at a barrier), so a crash leaves either the whole checkpoint or none.
//! On load, the manifest is checked and the weights must be finite; [`latest_verified`] walks
//! back to the newest checkpoint that passes, saying why it passed over the others. Old
//! checkpoints are pruned by renaming them to `.deleting-…` first, so a crash during pruning
//! never leaves a half-deleted checkpoint that looks loadable; leftovers are removed next time.

use crate::config::RunConfig;
use crate::loader::LoaderState;
use anyhow::{bail, Context, Result};
use safetensors::{tensor::TensorView, Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use tinyllama_dist::Collective;
use tinyllama_model::atomic::write_atomic;
use tinyllama_model::hf::{self, SaveDtype};
use tinyllama_model::HostWeights;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps completed (the next step to run).
    pub step: u64,
    /// Optimizer updates applied (steps minus skipped ones; drives bias correction).
    pub updates: u64,
    pub tokens_seen: u64,
    pub skipped_steps: u64,
    pub consecutive_bad: u64,
    /// Rank 0's data-loader position (each rank's is in `loader-rank-RRRRR.json`).
    pub loader: LoaderState,
    pub elapsed_s: f64,
    pub config: RunConfig,
    /// Ranks that wrote this checkpoint.
    #[serde(default = "one")]
    pub world_size: usize,
}

fn one() -> usize {
    1
}

pub fn checkpoints_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoints")
}

fn step_name(step: u64) -> String {
    format!("step-{step:08}")
}

fn step_of(dir: &Path) -> Option<u64> {
    dir.file_name()?
        .to_str()?
        .strip_prefix("step-")?
        .parse()
        .ok()
}

fn opt_file(rank: usize, world: usize) -> String {
    format!("optimizer-rank-{rank:05}-of-{world:05}.safetensors")
}

fn loader_file(rank: usize) -> String {
    format!("loader-rank-{rank:05}.json")
}

/// `optimizer.json`: how the flat moments are cut into files.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OptimizerIndex {
    pub world_size: usize,
    /// Parameters in the flat vector (without padding).
    pub total: usize,
    pub files: Vec<OptimizerFile>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OptimizerFile {
    pub file: String,
    pub start: usize,
    pub len: usize,
}

/// `manifest.json`: every file of the checkpoint with its size and checksum.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Manifest {
    pub files: BTreeMap<String, FileSum>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSum {
    pub bytes: u64,
    pub xxh3: String,
}

/// Size and checksum of a file, streamed: a checkpoint's weights are never held twice.
fn file_sum(path: &Path) -> Result<FileSum> {
    use std::io::Read;
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        bytes += n as u64;
    }
    Ok(FileSum {
        bytes,
        xxh3: format!("{:016x}", h.digest()),
    })
}

fn flat_tensors(
    items: &[(&str, &[f32])],
    meta: std::collections::HashMap<String, String>,
) -> Result<Vec<u8>> {
    let bytes: Vec<(String, Vec<u8>)> = items
        .iter()
        .map(|(n, t)| {
            (
                n.to_string(),
                t.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views: Vec<(String, TensorView)> = bytes
        .iter()
        .zip(items)
        .map(|((n, b), (_, t))| Ok((n.clone(), TensorView::new(Dtype::F32, vec![t.len()], b)?)))
        .collect::<Result<_>>()?;
    Ok(safetensors::serialize(views, Some(meta))?)
}

fn read_f32(st: &SafeTensors, name: &str, path: &Path, len: usize) -> Result<Vec<f32>> {
    let t = st
        .tensor(name)
        .with_context(|| format!("{}: missing `{name}`", path.display()))?;
    let d: Vec<f32> = t
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    if d.len() != len {
        bail!(
            "{}: `{name}` has {} values, expected {len}",
            path.display(),
            d.len()
        );
    }
    Ok(d)
}

/// Writes more files into a checkpoint directory being built.
pub type ExtraFiles<'a> = dyn Fn(&Path) -> Result<()> + 'a;

/// What one rank contributes to a checkpoint.
pub struct RankPart<'a> {
    /// The whole model (rank 0 only; other ranks pass `None`).
    pub weights: Option<&'a HostWeights>,
    /// This rank's range of the flat parameter vector and its moments there.
    pub range: Range<usize>,
    pub m: &'a [f32],
    pub v: &'a [f32],
    /// Parameters in the flat vector.
    pub total: usize,
    pub loader: &'a LoaderState,
    /// The run's state (meaningful on rank 0).
    pub state: &'a TrainState,
    /// More files rank 0 writes into the checkpoint directory (a LoRA run's adapter); they
    /// are covered by the manifest like the rest.
    pub extra: Option<&'a ExtraFiles<'a>>,
}

/// Writes the checkpoint for `state.step` together with the other ranks (every rank calls it)
/// and prunes all but the newest `keep_last`. Returns the checkpoint's directory.
pub fn save(
    run_dir: &Path,
    part: &RankPart,
    coll: &dyn Collective,
    keep_last: usize,
) -> Result<PathBuf> {
    let (rank, world) = (coll.rank(), coll.world());
    let dir = checkpoints_dir(run_dir);
    let name = step_name(part.state.step);
    let tmp = dir.join(format!(".{name}.partial"));
    if rank == 0 {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        std::fs::create_dir_all(&tmp)?;
    }
    coll.barrier()?;
    let mut meta = std::collections::HashMap::new();
    meta.insert("start".into(), part.range.start.to_string());
    meta.insert("len".into(), part.range.len().to_string());
    let bytes = flat_tensors(&[("m", part.m), ("v", part.v)], meta)?;
    write_atomic(&tmp.join(opt_file(rank, world)), &bytes)?;
    write_atomic(
        &tmp.join(loader_file(rank)),
        &serde_json::to_vec_pretty(part.loader)?,
    )?;
    // Every rank's range, for the index (the ranges are contiguous and in rank order).
    let mut lens = vec![0f64; world];
    lens[rank] = part.range.len() as f64;
    coll.all_reduce_f64(&mut lens, tinyllama_dist::ReduceOp::Sum)?;
    if rank == 0 {
        let w = part
            .weights
            .context("rank 0 must pass the model to the checkpoint")?;
        hf::save_dir(w, &tmp, SaveDtype::F32, hf::DEFAULT_SHARD_BYTES)?;
        let tok = run_dir.join("tokenizer.json");
        if tok.exists() {
            write_atomic(&tmp.join("tokenizer.json"), &std::fs::read(tok)?)?;
        }
        if let Some(extra) = part.extra {
            extra(&tmp)?;
        }
    }
    coll.barrier()?;
    let result = if rank == 0 {
        let mut at = 0;
        let files = lens
            .iter()
            .enumerate()
            .map(|(r, &l)| {
                let f = OptimizerFile {
                    file: opt_file(r, world),
                    start: at,
                    len: l as usize,
                };
                at += l as usize;
                f
            })
            .collect();
        let index = OptimizerIndex {
            world_size: world,
            total: part.total,
            files,
        };
        write_atomic(
            &tmp.join("optimizer.json"),
            &serde_json::to_vec_pretty(&index)?,
        )?;
        write_atomic(
            &tmp.join("state.json"),
            &serde_json::to_vec_pretty(part.state)?,
        )?;
        let mut manifest = Manifest::default();
        for e in std::fs::read_dir(&tmp)?.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if !n.starts_with('.') {
                manifest.files.insert(n, file_sum(&e.path())?);
            }
        }
        // The manifest last: its presence marks the content complete even before the rename.
        write_atomic(
            &tmp.join("manifest.json"),
            &serde_json::to_vec_pretty(&manifest)?,
        )?;
        let fin = dir.join(&name);
        if fin.exists() {
            retire(&fin)?;
        }
        std::fs::rename(&tmp, &fin)
            .with_context(|| format!("cannot rename {} to {}", tmp.display(), fin.display()))?;
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        let all = list(run_dir)?;
        if all.len() > keep_last.max(1) {
            for old in &all[..all.len() - keep_last.max(1)] {
                retire(old)?;
            }
        }
        Ok(fin)
    } else {
        Ok(dir.join(&name))
    };
    // Nobody goes on (or reports the checkpoint) before it is complete and in place.
    coll.barrier()?;
    result
}

/// Removes a checkpoint crash-safely: first a rename out of the `step-` namespace (atomic, so
/// it is never listed again), then the deletion.
fn retire(path: &Path) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let gone = path.with_file_name(format!(".deleting-{name}"));
    if gone.exists() {
        std::fs::remove_dir_all(&gone).ok();
    }
    std::fs::rename(path, &gone).with_context(|| format!("cannot retire {}", path.display()))?;
    std::fs::remove_dir_all(&gone).ok();
    Ok(())
}

/// Removes what an interrupted save or prune left behind (`.step-….partial`,
/// `.deleting-step-…`). Called by rank 0 before a run starts or resumes.
pub fn clean_leftovers(run_dir: &Path) -> Result<Vec<PathBuf>> {
    let dir = checkpoints_dir(run_dir);
    let mut removed = Vec::new();
    if let Ok(rd) = std::fs::read_dir(&dir) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if (n.starts_with(".step-") && n.ends_with(".partial")) || n.starts_with(".deleting-") {
                std::fs::remove_dir_all(e.path())
                    .with_context(|| format!("cannot remove {}", e.path().display()))?;
                removed.push(e.path());
            }
        }
    }
    Ok(removed)
}

/// Complete checkpoints (by name and `state.json`), oldest first. Use [`latest_verified`] to
/// pick one to load.
pub fn list(run_dir: &Path) -> Result<Vec<PathBuf>> {
    let dir = checkpoints_dir(run_dir);
    if !dir.exists() {
        return Ok(vec![]);
    }
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| step_of(p).is_some() && p.join("state.json").exists())
        .collect();
    v.sort();
    Ok(v)
}

pub fn latest(run_dir: &Path) -> Result<Option<PathBuf>> {
    Ok(list(run_dir)?.pop())
}

/// Checks a checkpoint without loading the model: every file in the manifest is present with
/// its size and checksum, and `state.json`'s step matches the directory's name.
pub fn verify(path: &Path) -> Result<()> {
    let mpath = path.join("manifest.json");
    if !mpath.exists() && path.join("optimizer.json").exists() {
        bail!(
            "{} has no manifest.json: its save did not complete, or the manifest was removed",
            path.display()
        );
    }
    if mpath.exists() {
        let m: Manifest = serde_json::from_slice(&std::fs::read(&mpath)?)
            .with_context(|| format!("{} is corrupt", mpath.display()))?;
        for (name, want) in &m.files {
            let f = path.join(name);
            let got = file_sum(&f)
                .with_context(|| format!("{} is missing or unreadable", f.display()))?;
            if got.bytes != want.bytes {
                bail!(
                    "{} has {} bytes, the manifest says {} (truncated or replaced)",
                    f.display(),
                    got.bytes,
                    want.bytes
                );
            }
            if got != *want {
                bail!(
                    "{}: checksum {} differs from the manifest's {} (the file was changed or damaged)",
                    f.display(),
                    got.xxh3,
                    want.xxh3
                );
            }
        }
    }
    let state = read_state(path)?;
    if Some(state.step) != step_of(path) {
        bail!(
            "{}: state.json is for step {}, the directory's name says otherwise; refusing a checkpoint whose parts disagree",
            path.display(),
            state.step
        );
    }
    Ok(())
}

fn read_state(path: &Path) -> Result<TrainState> {
    let state_path = path.join("state.json");
    serde_json::from_slice(&std::fs::read(&state_path).with_context(|| {
        format!(
            "{} is not a complete checkpoint (no state.json)",
            path.display()
        )
    })?)
    .with_context(|| format!("{} is corrupt", state_path.display()))
}

/// A checkpoint that verified, loaded.
pub struct Verified {
    pub path: PathBuf,
    pub weights: HostWeights,
    pub state: TrainState,
}

/// The newest checkpoint that verifies and whose weights are finite, loaded, with a line for
/// each newer one passed over (to print). `None` when there is none.
pub fn latest_verified(run_dir: &Path) -> Result<(Option<Verified>, Vec<String>)> {
    let mut notes = Vec::new();
    for p in list(run_dir)?.into_iter().rev() {
        match verify(&p).and_then(|_| load_model(&p)) {
            Ok((weights, state)) => {
                return Ok((
                    Some(Verified {
                        path: p,
                        weights,
                        state,
                    }),
                    notes,
                ))
            }
            Err(e) => notes.push(format!(
                "checkpoint {} is unusable ({e:#}); falling back to the one before it",
                p.display()
            )),
        }
    }
    Ok((None, notes))
}

/// The newest checkpoint older than `path` that verifies.
pub fn verified_before(run_dir: &Path, path: &Path) -> Option<PathBuf> {
    list(run_dir)
        .ok()?
        .into_iter()
        .rev()
        .filter(|p| p.as_path() < path)
        .find(|p| verify(p).is_ok())
}

/// The model and run state of a checkpoint; refuses non-finite weights.
pub fn load_model(path: &Path) -> Result<(HostWeights, TrainState)> {
    let state = read_state(path)?;
    let weights = hf::load_dir(path)?;
    for (spec, t) in weights.specs.iter().zip(&weights.tensors) {
        if let Some(i) = t.iter().position(|x| !x.is_finite()) {
            bail!(
                "{}: weight `{}` holds a non-finite value ({}) at index {i}; the run had diverged when this checkpoint was written",
                path.display(),
                spec.name,
                t[i]
            );
        }
    }
    Ok((weights, state))
}

/// This rank's data-loader position as saved by rank `rank` (None for ranks the checkpoint did
/// not have); rank 0 of checkpoints from before per-rank files uses `state.json`'s.
pub fn load_loader(path: &Path, rank: usize, state: &TrainState) -> Result<Option<LoaderState>> {
    let f = path.join(loader_file(rank));
    if f.exists() {
        return Ok(Some(
            serde_json::from_slice(&std::fs::read(&f)?)
                .with_context(|| format!("{} is corrupt", f.display()))?,
        ));
    }
    Ok((rank == 0).then(|| state.loader.clone()))
}

/// The moments over `range` of the flat parameter vector, read from whichever files of the
/// checkpoint cover it (any world size), or from the per-tensor `optimizer.safetensors` of
/// checkpoints written before sharding. `names` and `numel` describe the model's tensors.
pub fn load_moments(
    path: &Path,
    range: Range<usize>,
    names: &[String],
    numel: &[usize],
) -> Result<(Vec<f32>, Vec<f32>)> {
    let (mut m, mut v) = (vec![0f32; range.len()], vec![0f32; range.len()]);
    let ipath = path.join("optimizer.json");
    if ipath.exists() {
        let idx: OptimizerIndex = serde_json::from_slice(&std::fs::read(&ipath)?)
            .with_context(|| format!("{} is corrupt", ipath.display()))?;
        let total: usize = numel.iter().sum();
        if idx.total != total {
            bail!(
                "{}: the moments cover {} parameters, the model has {total}",
                ipath.display(),
                idx.total
            );
        }
        for f in &idx.files {
            let lo = f.start.max(range.start);
            let hi = (f.start + f.len).min(range.end);
            if lo >= hi {
                continue;
            }
            let fp = path.join(&f.file);
            let bytes =
                std::fs::read(&fp).with_context(|| format!("cannot read {}", fp.display()))?;
            let st = SafeTensors::deserialize(&bytes)
                .with_context(|| format!("{} is corrupt", fp.display()))?;
            let fm = read_f32(&st, "m", &fp, f.len)?;
            let fv = read_f32(&st, "v", &fp, f.len)?;
            let (a, b) = (lo - f.start, hi - f.start);
            m[lo - range.start..hi - range.start].copy_from_slice(&fm[a..b]);
            v[lo - range.start..hi - range.start].copy_from_slice(&fv[a..b]);
        }
        return Ok((m, v));
    }
    // Per-tensor moments (checkpoints from before the flat layout).
    let opt_path = path.join("optimizer.safetensors");
    let bytes =
        std::fs::read(&opt_path).with_context(|| format!("cannot read {}", opt_path.display()))?;
    let st = SafeTensors::deserialize(&bytes)
        .with_context(|| format!("{} is corrupt", opt_path.display()))?;
    let mut at = 0;
    for (n, &len) in names.iter().zip(numel) {
        let lo = at.max(range.start);
        let hi = (at + len).min(range.end);
        if lo < hi {
            let tm = read_f32(&st, &format!("m.{n}"), &opt_path, len)?;
            let tv = read_f32(&st, &format!("v.{n}"), &opt_path, len)?;
            m[lo - range.start..hi - range.start].copy_from_slice(&tm[lo - at..hi - at]);
            v[lo - range.start..hi - range.start].copy_from_slice(&tv[lo - at..hi - at]);
        }
        at += len;
    }
    Ok((m, v))
}

/// A whole checkpoint in memory (tools and tests): the model, the run state and every moment,
/// per tensor, whatever number of ranks wrote it.
pub struct Loaded {
    pub weights: HostWeights,
    pub m: Vec<Vec<f32>>,
    pub v: Vec<Vec<f32>>,
    pub state: TrainState,
}

pub fn load(path: &Path) -> Result<Loaded> {
    verify(path)?;
    let (weights, state) = load_model(path)?;
    let names: Vec<String> = weights.specs.iter().map(|s| s.name.clone()).collect();
    let numel: Vec<usize> = weights.specs.iter().map(|s| s.numel()).collect();
    let total = numel.iter().sum();
    let (fm, fv) = load_moments(path, 0..total, &names, &numel)?;
    let (mut m, mut v, mut at) = (vec![], vec![], 0);
    for n in numel {
        m.push(fm[at..at + n].to_vec());
        v.push(fv[at..at + n].to_vec());
        at += n;
    }
    Ok(Loaded {
        weights,
        m,
        v,
        state,
    })
}
