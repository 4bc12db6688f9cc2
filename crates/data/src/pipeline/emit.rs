//! The emit stage: re-read each input file, skip everything the scan rejected or the merge
//! dropped, re-apply the text-changing filters, and write the survivors — token ids followed
//! by EOS (no BOS) into per-file train/validation token files, or documents as zstd jsonl.
//!
//! Each survivor's text is re-hashed and compared with the scan's hash, so an input that
//! changed between stages is an error rather than silently different data.

use super::exec::{for_each_file, read_batches};
use super::merge::{merge_done, merge_missing, read_drops};
use super::scanfile::{ScanReader, ScanRecord};
use super::workdir::{fingerprint, read_json, write_json};
use super::{Ctx, TokState, FORMAT_VERSION};
use crate::config::OutputFormat;
use crate::dedup::exact_hash;
use crate::document::Document;
use crate::filters::FilterDoc;
use crate::hashing::mix64;
use crate::ingest::{parse, InputFile, Parsed, RawRecord, SourceCtx};
use crate::packed::encode_tokens;
use crate::progress::Progress;
use crate::stats::{RuleStats, MAX_EXAMPLES};
use anyhow::{bail, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use tinyllama_model::atomic::write_atomic_with;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct EmitMarker {
    pub fingerprint: String,
    pub source: usize,
    /// Documents that reached this stage (survived scan and merge).
    pub docs_in: u64,
    pub train_docs: u64,
    pub val_docs: u64,
    pub train_tokens: u64,
    pub val_tokens: u64,
    /// Text bytes written (tokenised or as jsonl).
    pub bytes_out: u64,
    /// Documents that could not be tokenised, by reason.
    pub rejected: BTreeMap<String, RuleStats>,
    /// The jsonl file written, for jsonl output.
    pub output: Option<PathBuf>,
    pub seconds: f64,
}

/// Whether a document (by its exact hash) belongs to the validation split.
pub fn is_validation(exact: u128, seed: u64, fraction: f64) -> bool {
    if fraction <= 0.0 {
        return false;
    }
    let x = mix64(exact as u64 ^ mix64((exact >> 64) as u64 ^ seed));
    ((x >> 11) as f64 / (1u64 << 53) as f64) < fraction
}

pub(crate) fn emit_fingerprint(ctx: &Ctx, i: usize, merge_fp: &str, tok_fp: &str) -> String {
    let o = &ctx.cfg.output;
    fingerprint(&(
        FORMAT_VERSION,
        merge_fp,
        &ctx.scan_fp[i],
        o.format,
        o.validation_fraction,
        o.validation_seed,
        tok_fp,
        ctx.cfg.tokenizer.as_ref().map(|t| (t.eos_id, &t.eos_token)),
    ))
}

pub(crate) fn jsonl_path(ctx: &Ctx, f: &InputFile) -> PathBuf {
    let name = f
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.split('.').next().unwrap_or("part");
    ctx.cfg
        .output_dir
        .join(&ctx.cfg.sources[f.source].name)
        .join(format!("{:05}-{stem}.jsonl.zst", f.index))
}

enum Out {
    Tokens {
        ids: Vec<u32>,
        val: bool,
        bytes: u64,
    },
    Json {
        line: Vec<u8>,
        bytes: u64,
    },
    Rejected {
        reason: &'static str,
        bytes: u64,
        loc: String,
    },
}

fn changed(file: &InputFile, line: u64, what: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "{}:{line}: {what} since the scan stage; the input changed — delete the work directory \
         (or restore the file) and run the pipeline again",
        file.path.display()
    )
}

fn emit_one(
    ctx: &Ctx,
    file: &InputFile,
    sctx: &SourceCtx,
    tok: Option<&TokState>,
    raw: RawRecord,
    exact: u128,
) -> Result<Out> {
    let line = raw.line;
    let Parsed::Doc { doc, .. } = parse(raw, sctx) else {
        return Err(changed(
            file,
            line,
            "this record no longer parses as a document",
        ));
    };
    let Document {
        id,
        text,
        url,
        meta,
        ..
    } = doc;
    let mut fd = FilterDoc::new(text, url.as_deref());
    if let Some(chain) = &ctx.chains[file.source] {
        if chain.transform(&mut fd).is_some() {
            return Err(changed(file, line, "the filters now reject this document"));
        }
    }
    let text = fd.into_text();
    if exact_hash(&text) != exact {
        return Err(changed(file, line, "the document's text differs"));
    }
    let bytes = text.len() as u64;
    match tok {
        Some(t) => match t
            .tok
            .as_ref()
            .expect("emit loads the encoder")
            .encode(&text)
        {
            Ok(mut ids) => {
                ids.push(t.eos);
                let o = &ctx.cfg.output;
                Ok(Out::Tokens {
                    ids,
                    val: is_validation(exact, o.validation_seed, o.validation_fraction),
                    bytes,
                })
            }
            Err(e) => Ok(Out::Rejected {
                reason: "tokenize/encode_error",
                bytes,
                loc: format!("{}:{line} ({e})", file.path.display()),
            }),
        },
        None => {
            let mut obj = serde_json::Map::new();
            obj.insert(
                "id".into(),
                id.unwrap_or_else(|| format!("{}:{line}", file.path.display()))
                    .into(),
            );
            obj.insert("text".into(), text.into());
            obj.insert(
                "source".into(),
                ctx.cfg.sources[file.source].name.clone().into(),
            );
            if let Some(u) = url {
                obj.insert("url".into(), u.into());
            }
            if !meta.is_empty() {
                obj.insert("meta".into(), meta.into());
            }
            let mut line = serde_json::to_vec(&obj)?;
            line.push(b'\n');
            Ok(Out::Json { line, bytes })
        }
    }
}

/// Reads `file` and calls `sink` with each surviving document's output, in file order.
fn process_file(
    ctx: &Ctx,
    file: &InputFile,
    tok: Option<&TokState>,
    keep: &[(u64, u128)],
    progress: &Progress,
    mut sink: impl FnMut(Out) -> Result<()>,
) -> Result<()> {
    let src = &ctx.cfg.sources[file.source];
    let sctx = SourceCtx {
        src,
        ingest: &ctx.cfg.ingest,
        name: ctx.names[file.source].clone(),
        file: Arc::from(file.path.as_path()),
    };
    let mut cursor = 0usize;
    read_batches(file, src, ctx.limits, progress, |batch| {
        let mut sel = Vec::new();
        for raw in batch {
            if cursor < keep.len() && raw.line == keep[cursor].0 {
                sel.push((raw, keep[cursor].1));
                cursor += 1;
            }
        }
        let outs: Vec<Result<Out>> = ctx.par(|| {
            sel.into_par_iter()
                .map(|(raw, exact)| emit_one(ctx, file, &sctx, tok, raw, exact))
                .collect()
        });
        for o in outs {
            sink(o?)?;
        }
        Ok(())
    })?;
    if cursor != keep.len() {
        bail!(
            "{}: {} documents kept by the scan stage were not found when re-reading (first at \
             line {}); the input changed — delete the work directory and run the pipeline again",
            file.path.display(),
            keep.len() - cursor,
            keep[cursor].0
        );
    }
    Ok(())
}

fn emit_file(
    ctx: &Ctx,
    file: &InputFile,
    tok: Option<&TokState>,
    fp: String,
    progress: &Progress,
) -> Result<EmitMarker> {
    let t = Instant::now();
    let drops = read_drops(&ctx.work.drops(), file.index)?;
    let mut keep = Vec::new();
    let mut r = ScanReader::open(&ctx.work.scan_sig(file.index), ctx.bands)?;
    let mut rec = ScanRecord::default();
    let (mut k, mut di) = (0u32, 0usize);
    while r.next_into(&mut rec)? {
        if di < drops.len() && drops[di].0 == k {
            di += 1;
        } else {
            keep.push((rec.line, rec.exact));
        }
        k += 1;
    }
    let mut m = EmitMarker {
        fingerprint: fp,
        source: file.source,
        docs_in: keep.len() as u64,
        ..Default::default()
    };
    match (ctx.cfg.output.format, tok) {
        (OutputFormat::Packed, Some(tok)) => {
            let mut buf = Vec::new();
            write_atomic_with(&ctx.work.emit_train(file.index), |wt| {
                write_atomic_with(&ctx.work.emit_val(file.index), |wv| {
                    process_file(ctx, file, Some(tok), &keep, progress, |o| {
                        match o {
                            Out::Tokens { ids, val, bytes } => {
                                buf.clear();
                                encode_tokens(tok.dtype, &ids, &mut buf);
                                if val {
                                    wv.write_all(&buf)?;
                                    m.val_docs += 1;
                                    m.val_tokens += ids.len() as u64;
                                } else {
                                    wt.write_all(&buf)?;
                                    m.train_docs += 1;
                                    m.train_tokens += ids.len() as u64;
                                }
                                m.bytes_out += bytes;
                            }
                            Out::Rejected { reason, bytes, loc } => {
                                note_reject(&mut m, reason, bytes, loc)
                            }
                            Out::Json { .. } => unreachable!(),
                        }
                        Ok(())
                    })
                })
            })?;
        }
        (OutputFormat::Jsonl, _) => {
            let path = jsonl_path(ctx, file);
            write_atomic_with(&path, |w| {
                let mut enc = zstd::Encoder::new(&mut *w, 3)?;
                process_file(ctx, file, None, &keep, progress, |o| {
                    match o {
                        Out::Json { line, bytes } => {
                            enc.write_all(&line)?;
                            m.train_docs += 1;
                            m.bytes_out += bytes;
                        }
                        Out::Rejected { reason, bytes, loc } => {
                            note_reject(&mut m, reason, bytes, loc)
                        }
                        Out::Tokens { .. } => unreachable!(),
                    }
                    Ok(())
                })?;
                enc.finish()?;
                Ok(())
            })?;
            m.output = Some(path);
        }
        (OutputFormat::Packed, None) => bail!("packed output needs a tokenizer"),
    }
    m.seconds = t.elapsed().as_secs_f64();
    write_json(&ctx.work.emit_marker(file.index), &m)?;
    Ok(m)
}

fn note_reject(m: &mut EmitMarker, reason: &str, bytes: u64, loc: String) {
    let r = m.rejected.entry(reason.to_string()).or_default();
    r.docs += 1;
    r.bytes += bytes;
    if r.examples.len() < MAX_EXAMPLES {
        r.examples.push(loc);
    }
}

pub(crate) fn emit_done(ctx: &Ctx, i: usize, fp: &str) -> Option<EmitMarker> {
    let m: EmitMarker = read_json(&ctx.work.emit_marker(i))?;
    if m.fingerprint != fp {
        return None;
    }
    let outputs_exist = match &m.output {
        Some(p) => p.exists(),
        None => ctx.work.emit_train(i).exists() && ctx.work.emit_val(i).exists(),
    };
    outputs_exist.then_some(m)
}

pub(crate) fn emit(ctx: &Ctx) -> Result<()> {
    let Some(merge) = merge_done(ctx) else {
        bail!("{}", merge_missing(ctx, "run `--stage emit`"));
    };
    let tok = if ctx.packed() {
        Some(TokState::load(ctx.cfg, true)?)
    } else {
        None
    };
    let tok_fp = tok.as_ref().map_or(String::new(), |t| t.fp.clone());
    let mine = ctx.my_files();
    let todo: Vec<&InputFile> = mine
        .iter()
        .copied()
        .filter(|f| {
            let fp = emit_fingerprint(ctx, f.index, &merge.fingerprint, &tok_fp);
            emit_done(ctx, f.index, &fp).is_none()
        })
        .collect();
    ctx.log(&format!(
        "emit: {} input files for this shard, {} already done",
        mine.len(),
        mine.len() - todo.len()
    ));
    if todo.is_empty() {
        return Ok(());
    }
    let total: u64 = todo.iter().map(|f| f.size).sum();
    let progress = Progress::bytes("emit", total, ctx.opts.quiet);
    for_each_file(&todo, ctx.open_files, |f| {
        let fp = emit_fingerprint(ctx, f.index, &merge.fingerprint, &tok_fp);
        emit_file(ctx, f, tok.as_ref(), fp, &progress)
    })?;
    progress.finish();
    Ok(())
}
