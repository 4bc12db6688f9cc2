//! The scan stage: read each input file, apply the UTF-8 policy, NFC and the filters, and write
//! one signature record per surviving document plus a marker with the file's accounting.

use super::exec::{for_each_file, read_batches};
use super::scanfile::{self, ScanRecord, FLAG_BANDS, FLAG_DEDUP};
use super::workdir::{read_json, write_json};
use super::Ctx;
use crate::dedup::{exact_hash, MinHasher};
use crate::filters::{FilterChain, FilterDoc};
use crate::ingest::{parse, InputFile, Parsed, RawRecord, SourceCtx};
use crate::progress::Progress;
use crate::stats::Stats;
use anyhow::Result;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use tinyllama_model::atomic::write_atomic_with;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScanMarker {
    pub fingerprint: String,
    pub file: PathBuf,
    pub source: usize,
    /// Documents written to the signature file.
    pub kept: u64,
    pub stats: Stats,
    pub seconds: f64,
}

enum Out {
    Blank,
    Rejected {
        reason: &'static str,
        bytes: u64,
        count: u64,
        line: u64,
        detail: Option<String>,
        flags: DocFlags,
    },
    Kept {
        rec: ScanRecord,
        out_bytes: u64,
        flags: DocFlags,
    },
}

#[derive(Default)]
struct DocFlags {
    repaired: bool,
    nfc: bool,
    lines_removed: Vec<(&'static str, u32)>,
}

fn scan_one(
    raw: RawRecord,
    sctx: &SourceCtx,
    chain: Option<&FilterChain>,
    minhash: Option<&MinHasher>,
    dedup: bool,
) -> Out {
    let line = raw.line;
    let (doc, repaired, nfc) = match parse(raw, sctx) {
        Parsed::Blank => return Out::Blank,
        Parsed::Rejected {
            reason,
            bytes,
            count,
            detail,
        } => {
            return Out::Rejected {
                reason,
                bytes,
                count,
                line,
                detail,
                flags: DocFlags::default(),
            }
        }
        Parsed::Doc {
            doc,
            utf8_repaired,
            nfc_changed,
        } => (doc, utf8_repaired, nfc_changed),
    };
    let in_bytes = doc.text.len() as u64;
    let mut fd = FilterDoc::new(doc.text, doc.url.as_deref());
    let verdict = chain.and_then(|c| c.run(&mut fd));
    let flags = DocFlags {
        repaired,
        nfc,
        lines_removed: std::mem::take(&mut fd.lines_removed),
    };
    if let Some(rule) = verdict {
        return Out::Rejected {
            reason: rule,
            bytes: in_bytes,
            count: 1,
            line,
            detail: None,
            flags,
        };
    }
    let text = fd.text();
    let mut rec = ScanRecord {
        line,
        bytes: in_bytes,
        exact: exact_hash(text),
        flags: if dedup { FLAG_DEDUP } else { 0 },
        bands: Vec::new(),
    };
    if let (true, Some(mh)) = (dedup, minhash) {
        rec.bands = vec![0; mh.params.bands];
        if mh.band_hashes(text, &mut rec.bands) {
            rec.flags |= FLAG_BANDS;
        }
    }
    Out::Kept {
        out_bytes: text.len() as u64,
        rec,
        flags,
    }
}

/// Whether file `i`'s scan output is complete and current.
pub(crate) fn scan_done(ctx: &Ctx, i: usize) -> Option<ScanMarker> {
    let m: ScanMarker = read_json(&ctx.work.scan_marker(i))?;
    (m.fingerprint == ctx.scan_fp[i] && ctx.work.scan_sig(i).exists()).then_some(m)
}

fn scan_file(ctx: &Ctx, file: &InputFile, progress: &Progress) -> Result<ScanMarker> {
    let t = Instant::now();
    let src = &ctx.cfg.sources[file.source];
    let chain = ctx.chains[file.source].as_ref();
    let sctx = SourceCtx {
        src,
        ingest: &ctx.cfg.ingest,
        name: ctx.names[file.source].clone(),
        file: Arc::from(file.path.as_path()),
    };
    let shown = file.path.display().to_string();
    let mut stats = Stats {
        files: 1,
        raw_bytes: file.size,
        ..Default::default()
    };
    let mut kept = 0u64;
    let bands = ctx.bands;
    write_atomic_with(&ctx.work.scan_sig(file.index), |w| {
        scanfile::write_header(w, bands)?;
        let problems = read_batches(file, src, ctx.limits, progress, |batch| {
            let outs: Vec<Out> = ctx.par(|| {
                batch
                    .into_par_iter()
                    .map(|raw| scan_one(raw, &sctx, chain, ctx.minhash.as_ref(), src.dedup))
                    .collect()
            });
            for o in outs {
                match o {
                    Out::Blank => stats.blank_lines += 1,
                    Out::Rejected {
                        reason,
                        bytes,
                        count,
                        line,
                        detail,
                        flags,
                    } => {
                        stats.docs_in += count;
                        stats.bytes_in += bytes;
                        note_flags(&mut stats, &flags);
                        let loc = match detail {
                            Some(d) => format!("{shown}:{line} ({d})"),
                            None => format!("{shown}:{line}"),
                        };
                        stats.reject(reason, bytes, Some(loc));
                        if let Some(r) = stats.rejected.get_mut(reason) {
                            // A `Lost` record stands for `count` documents.
                            r.docs += count - 1;
                        }
                    }
                    Out::Kept {
                        rec,
                        out_bytes,
                        flags,
                    } => {
                        stats.docs_in += 1;
                        stats.bytes_in += rec.bytes;
                        note_flags(&mut stats, &flags);
                        stats.keep(out_bytes);
                        rec.write(w, bands)?;
                        kept += 1;
                    }
                }
            }
            Ok(())
        })?;
        for p in problems {
            stats.file_error(p.reason, format!("{shown}:{}: {}", p.line, p.detail));
        }
        Ok(())
    })?;
    stats.check_balance(&shown)?;
    let marker = ScanMarker {
        fingerprint: ctx.scan_fp[file.index].clone(),
        file: file.path.clone(),
        source: file.source,
        kept,
        stats,
        seconds: t.elapsed().as_secs_f64(),
    };
    write_json(&ctx.work.scan_marker(file.index), &marker)?;
    Ok(marker)
}

fn note_flags(stats: &mut Stats, f: &DocFlags) {
    stats.utf8_repaired += f.repaired as u64;
    stats.nfc_changed += f.nfc as u64;
    for (r, n) in &f.lines_removed {
        *stats.lines_removed.entry(r.to_string()).or_default() += *n as u64;
    }
}

pub(crate) fn scan(ctx: &Ctx) -> Result<()> {
    let mine = ctx.my_files();
    if ctx.opts.shard_index == 0 {
        write_json(&ctx.work.files_json(), &ctx.files)?;
    }
    let todo: Vec<&InputFile> = mine
        .iter()
        .copied()
        .filter(|f| scan_done(ctx, f.index).is_none())
        .collect();
    ctx.log(&format!(
        "scan: {} input files for this shard, {} already done",
        mine.len(),
        mine.len() - todo.len()
    ));
    if todo.is_empty() {
        return Ok(());
    }
    let total: u64 = todo.iter().map(|f| f.size).sum();
    let progress = Progress::bytes("scan", total, ctx.opts.quiet);
    for_each_file(&todo, ctx.open_files, |f| scan_file(ctx, f, &progress))?;
    progress.finish();
    Ok(())
}
