//! The tokenizer as GGUF stores it for llama.cpp's SentencePiece-style ("llama") tokenizer:
//! token texts by id, a score per token and a token type. Hugging Face's BPE form of a Llama
//! tokenizer has merges rather than scores; llama.cpp merges the adjacent pair whose joined
//! text has the highest score, so scoring each token by minus the rank of the first merge that
//! produces it reproduces the merge order (this is what SentencePiece's BPE scores are).

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;

/// llama.cpp's token types.
pub const NORMAL: i32 = 1;
pub const UNKNOWN: i32 = 2;
pub const CONTROL: i32 = 3;
pub const USER_DEFINED: i32 = 4;
pub const UNUSED: i32 = 5;
pub const BYTE: i32 = 6;

#[derive(Clone, Debug, PartialEq)]
pub struct Vocab {
    pub tokens: Vec<String>,
    pub scores: Vec<f32>,
    pub types: Vec<i32>,
    pub bos: u32,
    pub eos: u32,
    pub unk: Option<u32>,
    pub pad: Option<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
    /// Whether a space (▁) is prepended to the text before tokenizing.
    pub add_space_prefix: bool,
    pub chat_template: Option<String>,
}

fn is_byte_token(s: &str) -> bool {
    s.len() == 6
        && s.starts_with("<0x")
        && s.ends_with('>')
        && s[3..5].chars().all(|c| c.is_ascii_hexdigit())
}

fn mentions(v: &Value, key: &str, val: &str) -> bool {
    match v {
        Value::Object(o) => {
            o.get(key).and_then(|x| x.as_str()) == Some(val)
                || o.values().any(|x| mentions(x, key, val))
        }
        Value::Array(a) => a.iter().any(|x| mentions(x, key, val)),
        _ => false,
    }
}

impl Vocab {
    /// Reads `tokenizer.json` (and `tokenizer_config.json` if present) of a model directory.
    /// The vocabulary is padded with unused tokens up to `vocab_size` (the embedding rows).
    pub fn from_dir(dir: &Path, vocab_size: usize, bos: u32, eos: u32) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read {} (GGUF export needs the tokenizer)",
                path.display()
            )
        })?;
        let tj: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", path.display()))?;
        let cfg_path = dir.join("tokenizer_config.json");
        let cfg: Value = if cfg_path.exists() {
            serde_json::from_str(&std::fs::read_to_string(&cfg_path)?)
                .with_context(|| format!("{} is not valid JSON", cfg_path.display()))?
        } else {
            Value::Null
        };
        Self::from_json(&tj, &cfg, vocab_size, bos, eos)
            .with_context(|| format!("in {}", path.display()))
    }

    pub fn from_json(
        tj: &Value,
        cfg: &Value,
        vocab_size: usize,
        bos: u32,
        eos: u32,
    ) -> Result<Self> {
        let model = tj.get("model").context("missing `model`")?;
        match model.get("type").and_then(|t| t.as_str()) {
            Some("BPE") => {}
            other => bail!(
                "model.type is {other:?}; GGUF export supports BPE tokenizers of the Llama (SentencePiece) kind"
            ),
        }
        if mentions(
            tj.get("pre_tokenizer").unwrap_or(&Value::Null),
            "type",
            "ByteLevel",
        ) {
            bail!("this is a byte-level (GPT-2 style) BPE tokenizer; GGUF export supports SentencePiece-style Llama tokenizers only");
        }
        let vocab = model
            .get("vocab")
            .and_then(|v| v.as_object())
            .context("missing `model.vocab` object")?;
        let mut by_id: HashMap<u32, (String, i32)> = HashMap::new();
        let byte_fallback = model
            .get("byte_fallback")
            .and_then(|b| b.as_bool())
            .unwrap_or(false);
        for (tok, id) in vocab {
            let id = id
                .as_u64()
                .with_context(|| format!("model.vocab: id of `{tok}` is not an integer"))?
                as u32;
            let ty = if byte_fallback && is_byte_token(tok) {
                BYTE
            } else {
                NORMAL
            };
            by_id.insert(id, (tok.clone(), ty));
        }
        let unk_name = model.get("unk_token").and_then(|u| u.as_str());
        for a in tj
            .get("added_tokens")
            .and_then(|a| a.as_array())
            .map(|a| a.as_slice())
            .unwrap_or(&[])
        {
            let id =
                a.get("id")
                    .and_then(|i| i.as_u64())
                    .context("added_tokens: entry without an integer `id`")? as u32;
            let content = a
                .get("content")
                .and_then(|c| c.as_str())
                .context("added_tokens: entry without `content`")?;
            let special = a.get("special").and_then(|s| s.as_bool()).unwrap_or(false);
            by_id.insert(
                id,
                (
                    content.to_string(),
                    if special { CONTROL } else { USER_DEFINED },
                ),
            );
        }
        let n = by_id.keys().max().map(|&m| m as usize + 1).unwrap_or(0);
        if n > vocab_size {
            bail!("the tokenizer has {n} tokens but the model only {vocab_size} embeddings");
        }
        let mut tokens = Vec::with_capacity(vocab_size);
        let mut types = Vec::with_capacity(vocab_size);
        for id in 0..vocab_size as u32 {
            match by_id.get(&id) {
                Some((t, ty)) => {
                    tokens.push(t.clone());
                    types.push(*ty);
                }
                None => {
                    tokens.push(format!("[PAD{id}]"));
                    types.push(UNUSED);
                }
            }
        }
        let index: HashMap<&str, usize> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.as_str(), i))
            .collect();
        let unk = unk_name.and_then(|u| index.get(u)).map(|&i| i as u32);
        if let Some(u) = unk {
            types[u as usize] = UNKNOWN;
        }
        // Scores: -(rank of the first merge producing the token); everything else below them.
        let merges = model
            .get("merges")
            .and_then(|m| m.as_array())
            .map(|m| m.as_slice())
            .unwrap_or(&[]);
        let mut scores: Vec<Option<f32>> = vec![None; vocab_size];
        for (rank, m) in merges.iter().enumerate() {
            let joined = match m {
                Value::String(s) => s.split_once(' ').map(|(a, b)| format!("{a}{b}")),
                Value::Array(p) if p.len() == 2 => Some(format!(
                    "{}{}",
                    p[0].as_str().unwrap_or_default(),
                    p[1].as_str().unwrap_or_default()
                )),
                _ => None,
            }
            .with_context(|| format!("model.merges[{rank}] is neither \"a b\" nor [a, b]"))?;
            if let Some(&i) = index.get(joined.as_str()) {
                scores[i].get_or_insert(-(rank as f32));
            }
        }
        let floor = -(merges.len() as f32);
        let scores = scores
            .iter()
            .enumerate()
            .map(|(i, s)| match (s, types[i]) {
                (Some(s), _) => *s,
                (None, NORMAL) => floor - i as f32,
                _ => 0.0,
            })
            .collect();
        let prepends = mentions(
            tj.get("normalizer").unwrap_or(&Value::Null),
            "type",
            "Prepend",
        ) || mentions(
            tj.get("pre_tokenizer").unwrap_or(&Value::Null),
            "type",
            "Metaspace",
        );
        let cfg_tok = |k: &str| -> Option<String> {
            match cfg.get(k)? {
                Value::String(s) => Some(s.clone()),
                Value::Object(o) => o.get("content")?.as_str().map(String::from),
                _ => None,
            }
        };
        let pad = cfg_tok("pad_token")
            .and_then(|p| index.get(p.as_str()))
            .map(|&i| i as u32);
        let chat_template = match cfg.get("chat_template") {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Array(list)) => list.iter().find_map(|t| {
                (t.get("name")?.as_str()? == "default")
                    .then(|| t.get("template")?.as_str().map(String::from))?
            }),
            _ => None,
        };
        Ok(Vocab {
            tokens,
            scores,
            types,
            bos,
            eos,
            unk,
            pad,
            add_bos: cfg
                .get("add_bos_token")
                .and_then(|b| b.as_bool())
                .unwrap_or(true),
            add_eos: cfg
                .get("add_eos_token")
                .and_then(|b| b.as_bool())
                .unwrap_or(false),
            add_space_prefix: prepends,
            chat_template,
        })
    }

    /// A stand-in vocabulary for models without a tokenizer (benchmarks on random weights):
    /// `<unk>`, `<s>`, `</s>`, the 256 byte tokens, then `▁t<N>`.
    pub fn synthetic(vocab_size: usize) -> Self {
        let mut tokens = vec!["<unk>".to_string(), "<s>".into(), "</s>".into()];
        let mut types = vec![UNKNOWN, CONTROL, CONTROL];
        for b in 0..256 {
            tokens.push(format!("<0x{b:02X}>"));
            types.push(BYTE);
        }
        while tokens.len() < vocab_size {
            tokens.push(format!("\u{2581}t{}", tokens.len()));
            types.push(NORMAL);
        }
        tokens.truncate(vocab_size);
        types.truncate(vocab_size);
        let scores = (0..tokens.len()).map(|i| -(i as f32)).collect();
        Vocab {
            tokens,
            scores,
            types,
            bos: 1,
            eos: 2,
            unk: Some(0),
            pad: None,
            add_bos: true,
            add_eos: false,
            add_space_prefix: true,
            chat_template: None,
        }
    }
}
