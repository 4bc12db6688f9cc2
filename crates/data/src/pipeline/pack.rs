//! The pack stage: concatenates each source's per-file token outputs, in file order, into
//! `train/<source>-NNNNN.bin` and `validation/<source>-NNNNN.bin`, writes `manifest.json` for
//! the trainer, checks the accounting across stages and assembles the report.

use super::emit::{emit_done, emit_fingerprint, EmitMarker};
use super::merge::{merge_done, merge_missing};
use super::scan::scan_done;
use super::workdir::{fingerprint, read_json, write_json};
use super::{Ctx, TokState, FORMAT_VERSION};
use crate::config::OutputFormat;
use crate::packed::{shard_file_name, DType, PackedWriter};
use crate::report::{Report, SourceReport, StageRow};
use crate::stats::Stats;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// `manifest.json`: what the trainer needs to read the output.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub fingerprint: String,
    /// Always "LITPKDS v1".
    pub format: String,
    pub tokenizer: PathBuf,
    pub vocab_size: usize,
    /// Appended after every document.
    pub eos_id: u32,
    /// Shards never contain BOS; a trainer that wants one adds it.
    pub bos_in_shards: bool,
    pub dtype: DType,
    pub chunk_size: usize,
    pub sources: Vec<ManifestSource>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ManifestSource {
    pub name: String,
    pub weight: f64,
    pub train: ManifestSplit,
    pub validation: ManifestSplit,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ManifestSplit {
    /// Directory relative to the output directory (`train` or `validation`).
    pub dir: String,
    /// Shard prefix: files are `<dir>/<prefix>-NNNNN.bin`.
    pub prefix: String,
    pub files: Vec<String>,
    pub tokens: u64,
    pub docs: u64,
}

/// Removes `<prefix>-NNNNN.bin` files in `dir` with index `keep` or above (left by an earlier
/// run that wrote more chunks).
fn remove_stale(dir: &Path, prefix: &str, keep: usize) -> Result<()> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(idx) = name
            .strip_prefix(prefix)
            .and_then(|r| r.strip_prefix('-'))
            .and_then(|r| r.strip_suffix(".bin"))
            .filter(|r| r.len() >= 5 && r.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|r| r.parse::<usize>().ok())
        else {
            continue;
        };
        if idx >= keep {
            std::fs::remove_file(e.path())
                .with_context(|| format!("cannot remove stale shard {}", e.path().display()))?;
        }
    }
    Ok(())
}

/// Streams per-file token outputs into one prefix's shards.
fn pack_split(
    ctx: &Ctx,
    tok: &TokState,
    inputs: &[PathBuf],
    split: &str,
    prefix: &str,
    progress: &crate::progress::Progress,
) -> Result<ManifestSplit> {
    let dir = ctx.cfg.output_dir.join(split);
    let mut w = PackedWriter::new(&dir, prefix, tok.vocab, ctx.cfg.output.chunk_size)?;
    let size = tok.dtype.size();
    let mut bytes = vec![0u8; (4 << 20) / size * size];
    let mut ids: Vec<u32> = Vec::with_capacity(bytes.len() / size);
    for p in inputs {
        let mut f = std::fs::File::open(p)
            .with_context(|| format!("cannot open {}; rerun the emit stage", p.display()))?;
        let mut carry = 0usize;
        loop {
            let n = f
                .read(&mut bytes[carry..])
                .with_context(|| format!("reading {}", p.display()))?;
            if n == 0 {
                if carry != 0 {
                    bail!(
                        "{}: truncated token file; rerun the emit stage",
                        p.display()
                    );
                }
                break;
            }
            progress.inc(n as u64);
            let have = carry + n;
            let whole = have / size * size;
            ids.clear();
            match tok.dtype {
                DType::U16 => ids.extend(
                    bytes[..whole]
                        .chunks_exact(2)
                        .map(|c| u16::from_le_bytes([c[0], c[1]]) as u32),
                ),
                _ => ids.extend(
                    bytes[..whole]
                        .chunks_exact(4)
                        .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as u32),
                ),
            }
            w.push(&ids)?;
            bytes.copy_within(whole..have, 0);
            carry = have - whole;
        }
    }
    let s = w.finish()?;
    remove_stale(&dir, prefix, s.files.len())?;
    Ok(ManifestSplit {
        dir: split.to_string(),
        prefix: prefix.to_string(),
        files: (0..s.files.len())
            .map(|i| shard_file_name(prefix, i))
            .collect(),
        tokens: s.tokens,
        docs: 0,
    })
}

pub(crate) fn pack(ctx: &Ctx, timings: &BTreeMap<String, f64>) -> Result<Report> {
    let cfg = ctx.cfg;
    let Some(merge) = merge_done(ctx) else {
        bail!(
            "{}",
            merge_missing(ctx, "run `--stage emit` and `--stage pack`")
        );
    };
    let tok = if ctx.packed() {
        Some(TokState::load(cfg, false)?)
    } else {
        None
    };
    let tok_fp = tok.as_ref().map_or(String::new(), |t| t.fp.clone());
    let mut scans = Vec::new();
    let mut emits: Vec<EmitMarker> = Vec::new();
    let mut missing = Vec::new();
    let mut emit_fps = Vec::new();
    for f in &ctx.files {
        let Some(s) = scan_done(ctx, f.index) else {
            bail!(
                "{}: scan output missing or stale; run the scan stage first",
                f.path.display()
            );
        };
        scans.push(s);
        let fp = emit_fingerprint(ctx, f.index, &merge.fingerprint, &tok_fp);
        match emit_done(ctx, f.index, &fp) {
            Some(m) => emits.push(m),
            None => {
                missing.push(f.path.display().to_string());
                emits.push(EmitMarker::default());
            }
        }
        emit_fps.push(fp);
    }
    if !missing.is_empty() {
        bail!(
            "the emit stage is not complete for {} of {} input files (first: {}); run it for every shard first",
            missing.len(),
            ctx.files.len(),
            missing[..missing.len().min(3)].join(", ")
        );
    }

    let weight_sum: f64 = cfg.sources.iter().map(|s| s.weight).sum();
    let mut sources: Vec<SourceReport> = cfg
        .sources
        .iter()
        .map(|s| SourceReport {
            name: s.name.clone(),
            weight: s.weight,
            target_proportion: if weight_sum > 0.0 {
                s.weight / weight_sum
            } else {
                0.0
            },
            ..Default::default()
        })
        .collect();
    for (f, (s, e)) in ctx.files.iter().zip(scans.iter().zip(&emits)) {
        let r = &mut sources[f.source];
        r.files += 1;
        r.scan.merge(&s.stats);
        r.train_docs += e.train_docs;
        r.val_docs += e.val_docs;
        r.train_tokens += e.train_tokens;
        r.val_tokens += e.val_tokens;
        r.bytes_out += e.bytes_out;
        for (k, v) in &e.rejected {
            let x = r.emit_rejected.entry(k.clone()).or_default();
            x.docs += v.docs;
            x.bytes += v.bytes;
            for ex in &v.examples {
                if x.examples.len() < crate::stats::MAX_EXAMPLES {
                    x.examples.push(ex.clone());
                }
            }
        }
    }
    // Cross-stage accounting, per source.
    for (i, r) in sources.iter_mut().enumerate() {
        r.exact_duplicates = merge.dedup.by_source_exact[i].clone();
        r.near_duplicates = merge.dedup.by_source_near[i].clone();
        r.docs_out = r.train_docs + r.val_docs;
        let emit_in: u64 = ctx
            .files
            .iter()
            .zip(&emits)
            .filter(|(f, _)| f.source == i)
            .map(|(_, e)| e.docs_in)
            .sum();
        let emit_rej: u64 = r.emit_rejected.values().map(|v| v.docs).sum();
        r.scan.check_balance(&format!("source {}", r.name))?;
        if r.scan.docs_out != emit_in + r.exact_duplicates.docs + r.near_duplicates.docs
            || emit_in != r.docs_out + emit_rej
        {
            bail!(
                "internal accounting error for source {}: {} documents after filtering, {} exact \
                 and {} near duplicates, {} reached output, {} written, {} rejected there",
                r.name,
                r.scan.docs_out,
                r.exact_duplicates.docs,
                r.near_duplicates.docs,
                emit_in,
                r.docs_out,
                emit_rej
            );
        }
    }
    let train_total: u64 = sources.iter().map(|s| s.train_tokens).sum();
    for s in &mut sources {
        s.realised_proportion = if train_total > 0 {
            s.train_tokens as f64 / train_total as f64
        } else {
            0.0
        };
    }

    // Shards and manifest.
    if let Some(tok) = &tok {
        let pack_fp = fingerprint(&(
            FORMAT_VERSION,
            &emit_fps,
            cfg.output.chunk_size,
            cfg.sources
                .iter()
                .map(|s| (&s.name, s.weight))
                .collect::<Vec<_>>(),
        ));
        let manifest_path = cfg.output_dir.join("manifest.json");
        let current = read_json::<Manifest>(&manifest_path).filter(|m| {
            m.fingerprint == pack_fp
                && m.sources.iter().all(|s| {
                    [&s.train, &s.validation].iter().all(|sp| {
                        sp.files
                            .iter()
                            .all(|f| cfg.output_dir.join(&sp.dir).join(f).exists())
                    })
                })
        });
        let manifest = match current {
            Some(m) => {
                ctx.log("pack: shards are up to date");
                m
            }
            None => {
                let total: u64 = ctx
                    .files
                    .iter()
                    .flat_map(|f| [ctx.work.emit_train(f.index), ctx.work.emit_val(f.index)])
                    .filter_map(|p| std::fs::metadata(p).ok())
                    .map(|m| m.len())
                    .sum();
                let progress = crate::progress::Progress::bytes("pack", total, ctx.opts.quiet);
                let mut ms = Vec::new();
                for (i, s) in cfg.sources.iter().enumerate() {
                    let files: Vec<&crate::ingest::InputFile> =
                        ctx.files.iter().filter(|f| f.source == i).collect();
                    let train_in: Vec<PathBuf> =
                        files.iter().map(|f| ctx.work.emit_train(f.index)).collect();
                    let val_in: Vec<PathBuf> =
                        files.iter().map(|f| ctx.work.emit_val(f.index)).collect();
                    let mut train = pack_split(ctx, tok, &train_in, "train", &s.name, &progress)?;
                    let mut validation =
                        pack_split(ctx, tok, &val_in, "validation", &s.name, &progress)?;
                    train.docs = sources[i].train_docs;
                    validation.docs = sources[i].val_docs;
                    ms.push(ManifestSource {
                        name: s.name.clone(),
                        weight: s.weight,
                        train,
                        validation,
                    });
                }
                progress.finish();
                let m = Manifest {
                    fingerprint: pack_fp,
                    format: "LITPKDS v1".into(),
                    tokenizer: tok.path.clone(),
                    vocab_size: tok.vocab,
                    eos_id: tok.eos,
                    bos_in_shards: false,
                    dtype: tok.dtype,
                    chunk_size: cfg.output.chunk_size,
                    sources: ms,
                };
                write_json(&manifest_path, &m)?;
                m
            }
        };
        for (r, m) in sources.iter_mut().zip(&manifest.sources) {
            if m.train.tokens != r.train_tokens || m.validation.tokens != r.val_tokens {
                bail!(
                    "internal accounting error: source {} has {} + {} tokens in its shards but \
                     the emit stage counted {} + {}",
                    r.name,
                    m.train.tokens,
                    m.validation.tokens,
                    r.train_tokens,
                    r.val_tokens
                );
            }
            r.train_files = m
                .train
                .files
                .iter()
                .map(|f| PathBuf::from("train").join(f))
                .collect();
            r.val_files = m
                .validation
                .files
                .iter()
                .map(|f| PathBuf::from("validation").join(f))
                .collect();
        }
    }

    let mut scan_total = Stats::default();
    for s in &sources {
        scan_total.merge(&s.scan);
    }
    let dedup_in = scan_total.docs_out;
    let dups = merge.dedup.exact_duplicates.docs + merge.dedup.near_duplicates.docs;
    let dup_bytes = merge.dedup.exact_duplicates.bytes + merge.dedup.near_duplicates.bytes;
    let docs_out: u64 = sources.iter().map(|s| s.docs_out).sum();
    let bytes_out: u64 = sources.iter().map(|s| s.bytes_out).sum();
    let stages = vec![
        StageRow {
            stage: "scan".into(),
            docs_in: scan_total.docs_in,
            bytes_in: scan_total.bytes_in,
            docs_out: scan_total.docs_out,
            bytes_out: scan_total.bytes_out,
        },
        StageRow {
            stage: "dedup".into(),
            docs_in: dedup_in,
            bytes_in: scan_total.bytes_out,
            docs_out: dedup_in - dups,
            bytes_out: scan_total.bytes_out.saturating_sub(dup_bytes),
        },
        StageRow {
            stage: if ctx.packed() { "tokenize" } else { "write" }.into(),
            docs_in: dedup_in - dups,
            bytes_in: scan_total.bytes_out.saturating_sub(dup_bytes),
            docs_out,
            bytes_out,
        },
    ];
    Ok(Report {
        output_dir: cfg.output_dir.clone(),
        format: if ctx.packed() {
            OutputFormat::Packed
        } else {
            OutputFormat::Jsonl
        },
        stages,
        scan: scan_total,
        dedup: merge.dedup.clone(),
        train_tokens: sources.iter().map(|s| s.train_tokens).sum(),
        val_tokens: sources.iter().map(|s| s.val_tokens).sum(),
        sources,
        timings: timings.clone(),
        hidden_skipped: ctx.hidden_skipped,
    })
}
