//! A Llama model as llama.cpp expects it in GGUF: `llama.*` hyper-parameters, the tokenizer
//! under `tokenizer.ggml.*`, tensors named `token_embd`, `blk.N.attn_q`, …, `output`.
//!
//! Hugging Face checkpoints rotate queries and keys in the "rotate-half" convention (pairs
//! `(i, i + d/2)` within a head), while llama.cpp's Llama graph rotates adjacent pairs
//! `(2i, 2i + 1)`, as Meta's original weights do. llama.cpp's converter therefore reorders
//! the rows of `q_proj` (per attention head) and `k_proj` (per key/value head) so that row
//! `2i + j` of a head is Hugging Face row `j·d/2 + i`; we do the same, and undo it on import.

use super::format::{self, GgufFile, TensorType, Value};
use super::vocab::Vocab;
use crate::quant::{quantize_q4_0, quantize_q8_0, Weights};
use anyhow::{bail, Context, Result};
use std::path::Path;
use tinyllama_model::params::param_specs;
use tinyllama_model::{HostWeights, ModelConfig};

/// GGUF tensor name of each parameter, in `param_specs` order.
fn tensor_names(cfg: &ModelConfig) -> Vec<String> {
    let mut v = vec!["token_embd.weight".to_string()];
    for l in 0..cfg.n_layers {
        for t in [
            "attn_norm",
            "attn_q",
            "attn_k",
            "attn_v",
            "attn_output",
            "ffn_norm",
            "ffn_gate",
            "ffn_up",
            "ffn_down",
        ] {
            v.push(format!("blk.{l}.{t}.weight"));
        }
    }
    v.push("output_norm.weight".into());
    if !cfg.tie_embeddings {
        v.push("output.weight".into());
    }
    v
}

/// Hugging Face (rotate-half) row order to GGUF (interleaved) order within each head.
pub fn permute_rotary_rows(w: &[f32], heads: usize, cols: usize) -> Vec<f32> {
    reorder(w, heads, cols, false)
}

/// The inverse of [`permute_rotary_rows`].
pub fn unpermute_rotary_rows(w: &[f32], heads: usize, cols: usize) -> Vec<f32> {
    reorder(w, heads, cols, true)
}

fn reorder(w: &[f32], heads: usize, cols: usize, inverse: bool) -> Vec<f32> {
    let rows = w.len() / cols;
    let hd = rows / heads;
    let half = hd / 2;
    let mut out = vec![0f32; w.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let gguf = h * hd + 2 * i + j;
                let hf = h * hd + j * half + i;
                let (dst, src) = if inverse { (hf, gguf) } else { (gguf, hf) };
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&w[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

/// ggml's `general.file_type` for a file whose matrices are `ty`.
fn file_type(ty: TensorType) -> u32 {
    match ty {
        TensorType::F32 => 0,
        TensorType::F16 => 1,
        TensorType::Q4_0 => 2,
        TensorType::Q8_0 => 7,
        TensorType::Bf16 => 32,
    }
}

fn encode(ty: TensorType, x: &[f32], rows: usize, cols: usize) -> Vec<u8> {
    match ty {
        TensorType::F32 => x.iter().flat_map(|v| v.to_le_bytes()).collect(),
        TensorType::F16 => x
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect(),
        TensorType::Bf16 => x
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect(),
        TensorType::Q8_0 => match quantize_q8_0(x, rows, cols) {
            Weights::Q8_0 { qs, d } => {
                let mut out = Vec::with_capacity(qs.len() / 32 * 34);
                for (blk, s) in qs.chunks(32).zip(&d) {
                    out.extend_from_slice(&s.to_le_bytes());
                    out.extend(blk.iter().map(|&q| q as u8));
                }
                out
            }
            _ => unreachable!(),
        },
        TensorType::Q4_0 => match quantize_q4_0(x, rows, cols) {
            Weights::Q4_0 { qs, d } => {
                let mut out = Vec::with_capacity(qs.len() / 16 * 18);
                for (blk, s) in qs.chunks(16).zip(&d) {
                    out.extend_from_slice(&s.to_le_bytes());
                    out.extend_from_slice(blk);
                }
                out
            }
            _ => unreachable!(),
        },
    }
}

/// What an export wrote.
#[derive(Clone, Debug)]
pub struct ExportReport {
    pub tensors: usize,
    pub bytes: u64,
    /// Matrices kept in f32 because their rows are not whole quantisation blocks.
    pub kept_f32: Vec<String>,
}

/// Writes `w` with `vocab` to `out`; matrices in `ty`, norms in f32.
pub fn export(
    w: &HostWeights,
    vocab: &Vocab,
    name: &str,
    out: &Path,
    ty: TensorType,
) -> Result<ExportReport> {
    let c = &w.config;
    c.validate()?;
    if vocab.tokens.len() != c.vocab_size {
        bail!(
            "the vocabulary has {} tokens but the model {} embeddings",
            vocab.tokens.len(),
            c.vocab_size
        );
    }
    let u32v = |x: usize| Value::U32(x as u32);
    let mut md: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::Str("llama".into())),
        ("general.name".into(), Value::Str(name.into())),
        ("general.file_type".into(), Value::U32(file_type(ty))),
        ("general.quantization_version".into(), Value::U32(2)),
        ("general.alignment".into(), u32v(format::DEFAULT_ALIGNMENT)),
        ("llama.vocab_size".into(), u32v(c.vocab_size)),
        ("llama.context_length".into(), u32v(c.max_seq_len)),
        ("llama.embedding_length".into(), u32v(c.dim)),
        ("llama.block_count".into(), u32v(c.n_layers)),
        ("llama.feed_forward_length".into(), u32v(c.ffn_dim)),
        ("llama.rope.dimension_count".into(), u32v(c.head_dim())),
        ("llama.attention.head_count".into(), u32v(c.n_heads)),
        ("llama.attention.head_count_kv".into(), u32v(c.n_kv_heads)),
        (
            "llama.attention.layer_norm_rms_epsilon".into(),
            Value::F32(c.norm_eps as f32),
        ),
        (
            "llama.rope.freq_base".into(),
            Value::F32(c.rope_theta as f32),
        ),
        ("tokenizer.ggml.model".into(), Value::Str("llama".into())),
        (
            "tokenizer.ggml.tokens".into(),
            Value::Array(vocab.tokens.iter().map(|t| Value::Str(t.clone())).collect()),
        ),
        (
            "tokenizer.ggml.scores".into(),
            Value::Array(vocab.scores.iter().map(|&s| Value::F32(s)).collect()),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            Value::Array(vocab.types.iter().map(|&t| Value::I32(t)).collect()),
        ),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(vocab.bos)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(vocab.eos)),
        (
            "tokenizer.ggml.add_bos_token".into(),
            Value::Bool(vocab.add_bos),
        ),
        (
            "tokenizer.ggml.add_eos_token".into(),
            Value::Bool(vocab.add_eos),
        ),
        (
            "tokenizer.ggml.add_space_prefix".into(),
            Value::Bool(vocab.add_space_prefix),
        ),
    ];
    if let Some(u) = vocab.unk {
        md.push(("tokenizer.ggml.unknown_token_id".into(), Value::U32(u)));
    }
    if let Some(p) = vocab.pad {
        md.push(("tokenizer.ggml.padding_token_id".into(), Value::U32(p)));
    }
    if let Some(t) = &vocab.chat_template {
        md.push(("tokenizer.chat_template".into(), Value::Str(t.clone())));
    }
    let specs = param_specs(c);
    let names = tensor_names(c);
    let mut kept_f32 = vec![];
    let mut tensors = Vec::with_capacity(specs.len());
    for (s, n) in specs.iter().zip(&names) {
        let dims: Vec<u64> = s.shape.iter().rev().map(|&d| d as u64).collect();
        let t = if s.shape.len() == 1 {
            TensorType::F32
        } else if !s.shape[1].is_multiple_of(ty.block().0) {
            kept_f32.push(n.clone());
            TensorType::F32
        } else {
            ty
        };
        tensors.push((n.clone(), dims, t));
    }
    let (hd_q, hd_k) = (c.n_heads, c.n_kv_heads);
    format::write(out, &md, &tensors, |i| {
        let s = &specs[i];
        let x = &w.tensors[i];
        let name = &tensors[i].0;
        let (rows, cols) = (s.shape[0], s.shape.get(1).copied().unwrap_or(1));
        let permuted;
        let x: &[f32] = if name.ends_with("attn_q.weight") {
            permuted = permute_rotary_rows(x, hd_q, cols);
            &permuted
        } else if name.ends_with("attn_k.weight") {
            permuted = permute_rotary_rows(x, hd_k, cols);
            &permuted
        } else {
            x
        };
        Ok(encode(tensors[i].2, x, rows, cols))
    })?;
    Ok(ExportReport {
        tensors: tensors.len(),
        bytes: std::fs::metadata(out)?.len(),
        kept_f32,
    })
}

/// An f32 metadata value as the decimal it was written from (1e-5, not 9.99999974738e-6).
fn meta_f(f: &GgufFile, key: &str) -> Option<f64> {
    match f.get(key)? {
        Value::F32(x) => x.to_string().parse().ok(),
        v => v.as_f64(),
    }
}

fn meta_u(f: &GgufFile, key: &str) -> Result<usize> {
    f.get(key)
        .and_then(|v| v.as_u64())
        .map(|v| v as usize)
        .with_context(|| format!("missing or non-integer metadata `{key}`"))
}

/// Reads a Llama GGUF back into host f32 weights (dequantised, rows in Hugging Face order) and
/// its vocabulary.
pub fn import(path: &Path) -> Result<(HostWeights, Vocab)> {
    let f = GgufFile::read(path)?;
    (|| -> Result<(HostWeights, Vocab)> {
        match f.get("general.architecture").and_then(|v| v.as_str()) {
            Some("llama") => {}
            other => bail!("general.architecture is {other:?}, not \"llama\""),
        }
        let strs = |k: &str| -> Result<Vec<String>> {
            f.get(k)
                .and_then(|v| v.as_array())
                .with_context(|| format!("missing array `{k}`"))?
                .iter()
                .map(|x| {
                    x.as_str()
                        .map(String::from)
                        .with_context(|| format!("`{k}` holds a non-string"))
                })
                .collect()
        };
        let tokens = strs("tokenizer.ggml.tokens")?;
        let nums = |k: &str| -> Vec<f64> {
            f.get(k)
                .and_then(|v| v.as_array())
                .map(|a| a.iter().filter_map(|x| x.as_f64()).collect())
                .unwrap_or_default()
        };
        let id = |k: &str| f.get(k).and_then(|v| v.as_u64()).map(|v| v as u32);
        let flag = |k: &str, d: bool| match f.get(k) {
            Some(Value::Bool(b)) => *b,
            _ => d,
        };
        let vocab = Vocab {
            scores: nums("tokenizer.ggml.scores")
                .iter()
                .map(|&x| x as f32)
                .collect(),
            types: f
                .get("tokenizer.ggml.token_type")
                .and_then(|v| v.as_array())
                .map(|a| {
                    a.iter()
                        .map(|x| match x {
                            Value::I32(t) => *t,
                            other => other.as_u64().unwrap_or(1) as i32,
                        })
                        .collect()
                })
                .unwrap_or_default(),
            bos: id("tokenizer.ggml.bos_token_id").unwrap_or(1),
            eos: id("tokenizer.ggml.eos_token_id").unwrap_or(2),
            unk: id("tokenizer.ggml.unknown_token_id"),
            pad: id("tokenizer.ggml.padding_token_id"),
            add_bos: flag("tokenizer.ggml.add_bos_token", true),
            add_eos: flag("tokenizer.ggml.add_eos_token", false),
            add_space_prefix: flag("tokenizer.ggml.add_space_prefix", true),
            chat_template: f
                .get("tokenizer.chat_template")
                .and_then(|v| v.as_str())
                .map(String::from),
            tokens,
        };
        let cfg = ModelConfig {
            vocab_size: vocab.tokens.len(),
            dim: meta_u(&f, "llama.embedding_length")?,
            n_layers: meta_u(&f, "llama.block_count")?,
            n_heads: meta_u(&f, "llama.attention.head_count")?,
            n_kv_heads: meta_u(&f, "llama.attention.head_count_kv")
                .or_else(|_| meta_u(&f, "llama.attention.head_count"))?,
            ffn_dim: meta_u(&f, "llama.feed_forward_length")?,
            rope_theta: meta_f(&f, "llama.rope.freq_base").unwrap_or(10000.0),
            norm_eps: meta_f(&f, "llama.attention.layer_norm_rms_epsilon")
                .context("missing `llama.attention.layer_norm_rms_epsilon`")?,
            max_seq_len: meta_u(&f, "llama.context_length")?,
            tie_embeddings: f.tensor("output.weight").is_none(),
            bos_id: vocab.bos,
            eos_id: vocab.eos,
        };
        cfg.validate()?;
        let specs = param_specs(&cfg);
        let names = tensor_names(&cfg);
        let mut tensors = Vec::with_capacity(specs.len());
        for (s, n) in specs.iter().zip(&names) {
            let info = f
                .tensor(n)
                .with_context(|| format!("missing tensor `{n}`"))?;
            let want: Vec<u64> = s.shape.iter().rev().map(|&d| d as u64).collect();
            if info.dims != want {
                bail!(
                    "tensor `{n}` has dimensions {:?}, expected {want:?}",
                    info.dims
                );
            }
            let x = f.to_f32(n)?;
            let cols = s.shape.get(1).copied().unwrap_or(1);
            tensors.push(if n.ends_with("attn_q.weight") {
                unpermute_rotary_rows(&x, cfg.n_heads, cols)
            } else if n.ends_with("attn_k.weight") {
                unpermute_rotary_rows(&x, cfg.n_kv_heads, cols)
            } else {
                x
            });
        }
        Ok((
            HostWeights {
                config: cfg,
                specs,
                tensors,
            },
            vocab,
        ))
    })()
    .with_context(|| format!("reading {}", path.display()))
}
