//! The merge stage: reads every signature file, finds exact and near duplicates across all
//! sources, and writes `drops.bin` — for each input file, the positions (among its surviving
//! documents) to drop and why.
//!
//! `drops.bin`: `TLDROP01`, file count n (u64), n + 1 entry offsets (u64), then 5-byte
//! entries (position u32, reason u8: 1 exact, 2 near), grouped by file in file order.

use super::scanfile::{ScanReader, ScanRecord, FLAG_BANDS, FLAG_DEDUP};
use super::workdir::{fingerprint, read_json, write_json};
use super::{scan::scan_done, Ctx, FORMAT_VERSION};
use crate::dedup::cluster::SigRecord;
use crate::dedup::{find_exact_duplicates, find_near_duplicates, BitSet, SignatureSource};
use crate::ingest::InputFile;
use crate::progress::Progress;
use crate::report::{DedupReport, LargestCluster};
use crate::stats::RuleStats;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Instant;
use tinyllama_model::atomic::write_atomic_with;

pub const DROP_MAGIC: &[u8; 8] = b"TLDROP01";
pub const REASON_EXACT: u8 = 1;
pub const REASON_NEAR: u8 = 2;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MergeMarker {
    pub fingerprint: String,
    /// Surviving documents per input file after the scan.
    pub kept_per_file: Vec<u64>,
    pub dropped_per_file: Vec<u64>,
    pub dedup: DedupReport,
    pub seconds: f64,
}

pub(crate) fn merge_fingerprint(ctx: &Ctx) -> String {
    let params = ctx.minhash.as_ref().map(|m| m.params);
    let dedup_sources: Vec<bool> = ctx.cfg.sources.iter().map(|s| s.dedup).collect();
    fingerprint(&(
        FORMAT_VERSION,
        &ctx.scan_fp,
        ctx.cfg.dedup.exact,
        ctx.cfg.dedup.near,
        params,
        dedup_sources,
    ))
}

/// Why `merge_done` found no usable merge, for the message of the stages that need one: not
/// run yet, or run on inputs that have changed since (named), or on another configuration.
pub(crate) fn merge_missing(ctx: &Ctx, next: &str) -> String {
    if read_json::<MergeMarker>(&ctx.work.merge_marker()).is_none() {
        return format!("the merge stage has not completed for this configuration; {next}");
    }
    // The scan records the input list it read; compare it with the inputs now.
    let scanned: Vec<InputFile> = read_json(&ctx.work.files_json()).unwrap_or_default();
    let then: BTreeMap<&Path, &InputFile> = scanned.iter().map(|f| (f.path.as_path(), f)).collect();
    let now: BTreeMap<&Path, &InputFile> =
        ctx.files.iter().map(|f| (f.path.as_path(), f)).collect();
    let mut changes = Vec::new();
    for (p, f) in &now {
        match then.get(p) {
            None => changes.push(format!("{} is new", p.display())),
            Some(old) if old.size != f.size => changes.push(format!(
                "{} changed size ({} → {} bytes)",
                p.display(),
                old.size,
                f.size
            )),
            Some(old) if old.mtime != f.mtime => {
                changes.push(format!("{} was modified", p.display()))
            }
            Some(_) => {}
        }
    }
    for p in then.keys() {
        if !now.contains_key(p) {
            changes.push(format!("{} is gone", p.display()));
        }
    }
    if changes.is_empty() {
        return format!(
            "the merge stage ran with a different configuration (sources, filters or dedup settings changed since); run the scan and merge stages again, then {next}"
        );
    }
    let n = changes.len();
    changes.truncate(5);
    format!(
        "the inputs changed since the scan and merge stages ran ({n} file(s): {}{}); run the scan and merge stages again (or the whole pipeline), then {next}",
        changes.join("; "),
        if n > 5 { "; ..." } else { "" }
    )
}

pub(crate) fn merge_done(ctx: &Ctx) -> Option<MergeMarker> {
    let m: MergeMarker = read_json(&ctx.work.merge_marker())?;
    (m.fingerprint == merge_fingerprint(ctx) && ctx.work.drops().exists()).then_some(m)
}

struct ScanSet<'a> {
    ctx: &'a Ctx<'a>,
    offsets: Vec<u64>,
    participants: u64,
    quiet: bool,
    /// Passes over the signature files so far, to label progress.
    passes: std::sync::atomic::AtomicUsize,
}

impl ScanSet<'_> {
    fn for_each_record(&self, f: &mut dyn FnMut(u64, &ScanRecord) -> Result<()>) -> Result<()> {
        let total = *self.offsets.last().unwrap();
        let pass = self
            .passes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let progress = Progress::items(&format!("merge pass {pass}"), total, self.quiet);
        let mut rec = ScanRecord::default();
        for file in &self.ctx.files {
            let mut r = ScanReader::open(&self.ctx.work.scan_sig(file.index), self.ctx.bands)?;
            let mut g = self.offsets[file.index];
            let mut n = 0u64;
            while r.next_into(&mut rec)? {
                f(g, &rec)?;
                g += 1;
                n += 1;
                if n.is_multiple_of(65536) {
                    progress.inc(65536);
                }
            }
            progress.inc(n % 65536);
            if g != self.offsets[file.index + 1] {
                bail!(
                    "{}: the signature file has {} records but its marker says {}; rerun the scan stage",
                    self.ctx.work.scan_sig(file.index).display(),
                    g - self.offsets[file.index],
                    self.offsets[file.index + 1] - self.offsets[file.index]
                );
            }
        }
        progress.finish();
        Ok(())
    }
}

impl SignatureSource for ScanSet<'_> {
    fn n_docs(&self) -> u64 {
        *self.offsets.last().unwrap()
    }
    fn n_participants(&self) -> u64 {
        self.participants
    }
    fn for_each(&self, f: &mut dyn FnMut(SigRecord) -> Result<()>) -> Result<()> {
        self.for_each_record(&mut |g, rec| {
            if rec.flags & FLAG_DEDUP == 0 {
                return Ok(());
            }
            let bands: &[u64] = if rec.flags & FLAG_BANDS != 0 {
                &rec.bands
            } else {
                &[]
            };
            f(SigRecord {
                gidx: g,
                exact: rec.exact,
                bands,
            })
        })
    }
}

pub(crate) fn merge(ctx: &Ctx) -> Result<MergeMarker> {
    if let Some(m) = merge_done(ctx) {
        ctx.log("merge: already done");
        return Ok(m);
    }
    let t = Instant::now();
    let mut missing = Vec::new();
    let mut kept = Vec::with_capacity(ctx.files.len());
    for f in &ctx.files {
        match scan_done(ctx, f.index) {
            Some(m) => kept.push(m.kept),
            None => {
                missing.push(f.path.display().to_string());
                kept.push(0);
            }
        }
    }
    if !missing.is_empty() {
        bail!(
            "the scan stage is not complete for {} of {} input files (first: {}); run the scan \
             stage for every shard first",
            missing.len(),
            ctx.files.len(),
            missing[..missing.len().min(3)].join(", ")
        );
    }
    let mut offsets = vec![0u64];
    for k in &kept {
        offsets.push(offsets.last().unwrap() + k);
    }
    let participants = ctx
        .files
        .iter()
        .filter(|f| ctx.cfg.sources[f.source].dedup)
        .map(|f| kept[f.index])
        .sum();
    let n = *offsets.last().unwrap();
    let set = ScanSet {
        ctx,
        offsets: offsets.clone(),
        participants,
        quiet: ctx.opts.quiet,
        passes: Default::default(),
    };
    let budget = ((ctx.cfg.dedup.memory_budget_mb * 1048576.0) as u64).max(1);
    let tmp = ctx.work.tmp();
    ctx.log(&format!(
        "merge: {n} documents, {participants} taking part in deduplication"
    ));
    let exact = if ctx.cfg.dedup.exact {
        find_exact_duplicates(&set, budget, &tmp).context("exact deduplication")?
    } else {
        BitSet::new(n)
    };
    let (near, clusters) = if ctx.minhash.is_some() {
        find_near_duplicates(&set, ctx.bands, &exact, budget, &tmp)
            .context("near-duplicate deduplication")?
    } else {
        (BitSet::new(n), Default::default())
    };

    // One more pass for per-source accounting and the largest clusters' locations.
    let nsrc = ctx.cfg.sources.len();
    let mut rep = DedupReport {
        exact: ctx.cfg.dedup.exact,
        near: ctx.cfg.dedup.near,
        params: ctx.minhash.as_ref().map(|m| m.params),
        participants,
        by_source_exact: vec![RuleStats::default(); nsrc],
        by_source_near: vec![RuleStats::default(); nsrc],
        ..Default::default()
    };
    let wanted: Vec<u64> = clusters.largest.iter().map(|&(_, r)| r).collect();
    let mut locations = vec![String::new(); wanted.len()];
    let file_of = |g: u64| offsets.partition_point(|&o| o <= g) - 1;
    set.for_each_record(&mut |g, rec| {
        let fi = file_of(g);
        let src = ctx.files[fi].source;
        if exact.get(g) {
            rep.by_source_exact[src].docs += 1;
            rep.by_source_exact[src].bytes += rec.bytes;
        } else if near.get(g) {
            rep.by_source_near[src].docs += 1;
            rep.by_source_near[src].bytes += rec.bytes;
        }
        for (w, loc) in wanted.iter().zip(locations.iter_mut()) {
            if *w == g {
                *loc = format!("{}:{}", ctx.files[fi].path.display(), rec.line);
            }
        }
        Ok(())
    })?;
    for s in 0..nsrc {
        let (e, nr) = (&rep.by_source_exact[s], &rep.by_source_near[s]);
        rep.exact_duplicates.docs += e.docs;
        rep.exact_duplicates.bytes += e.bytes;
        rep.near_duplicates.docs += nr.docs;
        rep.near_duplicates.bytes += nr.bytes;
    }
    rep.largest_clusters = clusters
        .largest
        .iter()
        .zip(locations)
        .map(|(&(size, _), representative)| LargestCluster {
            size,
            representative,
        })
        .collect();
    rep.clusters = clusters;

    // drops.bin
    let mut dropped = vec![0u64; ctx.files.len()];
    for (i, d) in dropped.iter_mut().enumerate() {
        *d = (offsets[i]..offsets[i + 1])
            .filter(|&g| exact.get(g) || near.get(g))
            .count() as u64;
    }
    write_atomic_with(&ctx.work.drops(), |w| {
        w.write_all(DROP_MAGIC)?;
        w.write_all(&(ctx.files.len() as u64).to_le_bytes())?;
        let mut acc = 0u64;
        w.write_all(&acc.to_le_bytes())?;
        for d in &dropped {
            acc += d;
            w.write_all(&acc.to_le_bytes())?;
        }
        for i in 0..ctx.files.len() {
            for g in offsets[i]..offsets[i + 1] {
                let reason = if exact.get(g) {
                    REASON_EXACT
                } else if near.get(g) {
                    REASON_NEAR
                } else {
                    continue;
                };
                w.write_all(&((g - offsets[i]) as u32).to_le_bytes())?;
                w.write_all(&[reason])?;
            }
        }
        Ok(())
    })?;
    let marker = MergeMarker {
        fingerprint: merge_fingerprint(ctx),
        kept_per_file: kept,
        dropped_per_file: dropped,
        dedup: rep,
        seconds: t.elapsed().as_secs_f64(),
    };
    write_json(&ctx.work.merge_marker(), &marker)?;
    ctx.log(&format!(
        "merge: {} exact and {} near duplicates in {} clusters",
        marker.dedup.exact_duplicates.docs,
        marker.dedup.near_duplicates.docs,
        marker.dedup.clusters.clusters
    ));
    Ok(marker)
}

/// The drop entries (position among the file's surviving documents, reason) of file `i`.
pub(crate) fn read_drops(path: &Path, i: usize) -> Result<Vec<(u32, u8)>> {
    let mut f = std::fs::File::open(path)
        .with_context(|| format!("cannot open {}; run the merge stage", path.display()))?;
    let mut h = [0u8; 16];
    f.read_exact(&mut h)
        .with_context(|| format!("{}: truncated", path.display()))?;
    if &h[..8] != DROP_MAGIC {
        bail!("{}: not a drop list", path.display());
    }
    let files = u64::from_le_bytes(h[8..16].try_into().unwrap()) as usize;
    if i >= files {
        bail!(
            "{}: has {files} files, asked for {i}; rerun the merge stage",
            path.display()
        );
    }
    let mut o = [0u8; 16];
    f.seek(SeekFrom::Start(16 + 8 * i as u64))?;
    f.read_exact(&mut o)?;
    let a = u64::from_le_bytes(o[..8].try_into().unwrap());
    let b = u64::from_le_bytes(o[8..].try_into().unwrap());
    let base = 16 + 8 * (files as u64 + 1);
    f.seek(SeekFrom::Start(base + 5 * a))?;
    let mut buf = vec![0u8; (5 * (b - a)) as usize];
    f.read_exact(&mut buf)
        .with_context(|| format!("{}: truncated", path.display()))?;
    Ok(buf
        .chunks_exact(5)
        .map(|c| (u32::from_le_bytes(c[..4].try_into().unwrap()), c[4]))
        .collect())
}
