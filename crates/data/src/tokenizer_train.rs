//! Training a Llama-style BPE tokenizer with Hugging Face `tokenizers`.
//!
//! Layout of the result (the same conventions as Llama-2's tokenizer):
//! - ids 0, 1, 2 are `<unk>`, `<s>`, `</s>`; ids 3..=258 are the byte tokens `<0x00>`..`<0xFF>`
//!   used by byte fallback, so any text — including characters never seen in training —
//!   encodes without `<unk>` and decodes back exactly;
//! - spaces become `▁` and a `▁` is prepended to the text (SentencePiece's dummy prefix);
//!   words are split at `▁`, so no token spans a word boundary;
//! - the post-processor adds `<s>` for callers that ask for special tokens (transformers does
//!   by default); the data pipeline does not, see `docs/data.md`.
//!
//! BPE learns whatever strings are frequent, including the text `</s>` or `<0x0A>` when the
//! corpus contains it; such a token would share its string with a reserved token and so be
//! encoded as EOS or a byte. Training therefore learns a few spare merges, drops every merge
//! that would spell a reserved string (and those built on it), and keeps exactly as many as
//! the requested vocabulary size leaves room for.
//!
//! The training corpus is sampled to a memory budget: every document gets a pseudo-random key
//! from its content and a seed, and the documents with the smallest keys that fit the budget
//! are kept — a uniform sample, chosen in one pass, the same on every machine.

use crate::config::{Format, PipelineConfig, SourceConfig};
use crate::ingest::{discover, parse, read_file, Parsed, ReadLimits, SourceCtx};
use crate::progress::Progress;
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::collections::BinaryHeap;
use std::path::Path;
use std::sync::Arc;
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::{ModelWrapper, TrainerWrapper};
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::Tokenizer;

pub const UNK: &str = "<unk>";
pub const BOS: &str = "<s>";
pub const EOS: &str = "</s>";
/// Specials plus the 256 byte tokens.
pub const RESERVED: usize = 3 + 256;

#[derive(Clone, Debug)]
pub struct TrainOptions {
    /// Final vocabulary size, including the 259 reserved tokens.
    pub vocab_size: usize,
    /// Pairs seen fewer times are not merged.
    pub min_frequency: u64,
    /// Most distinct characters kept as base tokens (the rest go through byte fallback);
    /// default: enough to leave half the learned vocabulary to merges, at most 1000.
    pub limit_alphabet: Option<usize>,
    /// Longest token in characters.
    pub max_token_length: Option<usize>,
    /// Text sampled from the inputs for training.
    pub memory_budget_bytes: u64,
    pub seed: u64,
    pub quiet: bool,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            vocab_size: 32000,
            min_frequency: 2,
            limit_alphabet: None,
            max_token_length: Some(16),
            memory_budget_bytes: 1 << 30,
            seed: 0,
            quiet: true,
        }
    }
}

/// Trains on the given texts (all of them; sample first if they are large).
pub fn train<S: AsRef<str> + Send>(
    texts: impl IntoIterator<Item = S, IntoIter: Send>,
    opts: &TrainOptions,
) -> Result<Tokenizer> {
    if opts.vocab_size < RESERVED + 1 {
        bail!(
            "vocab size {} is too small: the 3 special and 256 byte tokens take {RESERVED} ids",
            opts.vocab_size
        );
    }
    let learned = opts.vocab_size - RESERVED;
    let limit_alphabet = opts
        .limit_alphabet
        .unwrap_or_else(|| (learned / 2).clamp(1, 1000));
    let mut t = Tokenizer::new(ModelWrapper::BPE(BPE::default()));
    t.with_pre_tokenizer(Some(PreTokenizerWrapper::Metaspace(Metaspace::new(
        '\u{2581}',
        PrependScheme::First,
        true,
    ))));
    // Spare merges to replace the ones dropped for spelling a reserved token.
    let spare = 16 + learned / 50;
    let mut trainer = TrainerWrapper::BpeTrainer(
        BpeTrainerBuilder::new()
            .vocab_size(learned + spare)
            .min_frequency(opts.min_frequency)
            .limit_alphabet(limit_alphabet)
            .max_token_length(opts.max_token_length)
            .show_progress(!opts.quiet)
            .build(),
    );
    t.train(
        &mut trainer,
        texts
            .into_iter()
            .map(|x| break_reserved(x.as_ref()).into_owned()),
    )
    .map_err(|e| anyhow::anyhow!("tokenizer training failed: {e}"))?;
    let model = serde_json::to_value(t.get_model()).context("reading the trained model")?;
    let mut trained: Vec<(String, u32)> = t.get_vocab(false).into_iter().collect();
    trained.sort_by_key(|(_, id)| *id);
    let merges = model
        .get("merges")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let (trained, merges) = without_reserved(trained, merges, learned)?;
    assemble(trained, merges)
}

/// The text as BPE should learn from it: a space after each `<` that starts a reserved string,
/// so that (words being split at spaces) no token can spell one, and corpora full of `</s>`
/// cost no merges.
fn break_reserved(text: &str) -> std::borrow::Cow<'_, str> {
    let starts_reserved = |rest: &str| {
        [UNK, BOS, EOS].iter().any(|r| rest.starts_with(r))
            || rest.get(..6).is_some_and(is_reserved)
    };
    if !text
        .match_indices('<')
        .any(|(i, _)| starts_reserved(&text[i..]))
    {
        return text.into();
    }
    let mut out = String::with_capacity(text.len() + 16);
    for (i, c) in text.char_indices() {
        out.push(c);
        if c == '<' && starts_reserved(&text[i..]) {
            out.push(' ');
        }
    }
    out.into()
}

fn is_reserved(tok: &str) -> bool {
    [UNK, BOS, EOS].contains(&tok)
        || (tok.len() == 6
            && tok.starts_with("<0x")
            && tok.ends_with('>')
            && tok[3..5].chars().all(|c| c.is_ascii_hexdigit()))
}

/// A merge as its two parts (`["a", "b"]`, or `"a b"` in older files).
fn merge_parts(m: &Value) -> Option<(String, String)> {
    match m {
        Value::Array(a) if a.len() == 2 => Some((a[0].as_str()?.into(), a[1].as_str()?.into())),
        Value::String(s) => s.split_once(' ').map(|(a, b)| (a.into(), b.into())),
        _ => None,
    }
}

/// A learned vocabulary (tokens in id order) and its merges.
type Learned = (Vec<(String, u32)>, Vec<Value>);

/// The learned vocabulary (in id order) and merges with every token that spells a reserved
/// string removed, along with the merges that build on it, cut to `learned` tokens.
fn without_reserved(
    trained: Vec<(String, u32)>,
    merges: Vec<Value>,
    learned: usize,
) -> Result<Learned> {
    let parts: Vec<(String, String)> = merges
        .iter()
        .map(|m| merge_parts(m).context("unexpected merge format in the trained model"))
        .collect::<Result<_>>()?;
    let results: std::collections::HashSet<String> =
        parts.iter().map(|(a, b)| format!("{a}{b}")).collect();
    // The alphabet: every token no merge produces (single characters).
    let mut vocab: Vec<(String, u32)> = trained
        .into_iter()
        .filter(|(t, _)| !results.contains(t) && !is_reserved(t))
        .collect();
    let mut have: std::collections::HashSet<String> =
        vocab.iter().map(|(t, _)| t.clone()).collect();
    let mut kept = Vec::new();
    for (m, (a, b)) in merges.into_iter().zip(parts) {
        if vocab.len() >= learned {
            break;
        }
        let r = format!("{a}{b}");
        if is_reserved(&r) || !have.contains(&a) || !have.contains(&b) {
            continue;
        }
        // Another pair may already have made `r`; the merge still applies, no new token.
        if have.insert(r.clone()) {
            vocab.push((r, 0));
        }
        kept.push(m);
    }
    Ok((vocab, kept))
}

fn byte_token(b: u8) -> String {
    format!("<0x{b:02X}>")
}

/// The final tokenizer.json: reserved ids first, then the learned vocabulary in order.
fn assemble(trained: Vec<(String, u32)>, merges: Vec<Value>) -> Result<Tokenizer> {
    let mut vocab = serde_json::Map::new();
    let mut next = 0u32;
    let mut add = |tok: String, vocab: &mut serde_json::Map<String, Value>| {
        if !vocab.contains_key(&tok) {
            vocab.insert(tok, next.into());
            next += 1;
        }
    };
    for s in [UNK, BOS, EOS] {
        add(s.to_string(), &mut vocab);
    }
    for b in 0..=255u8 {
        add(byte_token(b), &mut vocab);
    }
    for (tok, _) in trained {
        add(tok, &mut vocab);
    }
    let special = |id: u32, content: &str| {
        json!({"id": id, "content": content, "single_word": false, "lstrip": false,
               "rstrip": false, "normalized": false, "special": true})
    };
    let j = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [special(0, UNK), special(1, BOS), special(2, EOS)],
        "normalizer": null,
        "pre_tokenizer": {"type": "Metaspace", "replacement": "\u{2581}",
                          "prepend_scheme": "first", "split": true},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": BOS, "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": BOS, "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": BOS, "type_id": 1}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {BOS: {"id": BOS, "ids": [1], "tokens": [BOS]}}
        },
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "},
            {"type": "ByteFallback"},
            {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}
        ]},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": UNK,
            "continuing_subword_prefix": null, "end_of_word_suffix": null,
            "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
            "vocab": vocab, "merges": merges
        }
    });
    let s = serde_json::to_string(&j)?;
    s.parse::<Tokenizer>()
        .map_err(|e| anyhow::anyhow!("assembling the trained tokenizer: {e}"))
}

/// Writes `tokenizer.json` (plus `tokenizer_config.json` and `special_tokens_map.json`, so
/// `transformers.AutoTokenizer.from_pretrained(dir)` loads it) into `dir`, atomically.
pub fn save(tok: &Tokenizer, dir: &Path) -> Result<()> {
    let s = tok
        .to_string(true)
        .map_err(|e| anyhow::anyhow!("serialising tokenizer: {e}"))?;
    let w = tinyllama_model::atomic::write_atomic;
    w(&dir.join("tokenizer.json"), s.as_bytes())
        .with_context(|| format!("saving tokenizer to {}", dir.display()))?;
    let cfg = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS, "eos_token": EOS, "unk_token": UNK,
        "add_bos_token": true, "add_eos_token": false,
        "clean_up_tokenization_spaces": false,
        "model_max_length": 1_000_000_000_000_000_000u64
    });
    w(
        &dir.join("tokenizer_config.json"),
        serde_json::to_string_pretty(&cfg)?.as_bytes(),
    )?;
    let map = json!({"bos_token": BOS, "eos_token": EOS, "unk_token": UNK});
    w(
        &dir.join("special_tokens_map.json"),
        serde_json::to_string_pretty(&map)?.as_bytes(),
    )?;
    Ok(())
}

/// What [`sample_inputs`] read and kept.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SampleStats {
    pub files: usize,
    pub docs_seen: u64,
    pub bytes_seen: u64,
    pub docs_kept: u64,
    pub bytes_kept: u64,
    pub rejected: u64,
}

/// Reads documents from `inputs` (files, directories, globs) and keeps a uniform sample that
/// fits `budget` bytes.
pub fn sample_inputs(
    inputs: &[String],
    format: Format,
    text_field: &str,
    budget: u64,
    seed: u64,
    quiet: bool,
) -> Result<(Vec<String>, SampleStats)> {
    let mut src = SourceConfig::new("tokenizer", &[]);
    src.paths = inputs.to_vec();
    src.format = format;
    src.text_field = text_field.to_string();
    let mut cfg = PipelineConfig::new("unused", vec![src]);
    cfg.output.format = crate::config::OutputFormat::Jsonl;
    let files = discover(&cfg)?;
    let src = &cfg.sources[0];
    let limits = ReadLimits {
        max_record_bytes: (cfg.ingest.max_record_mb as usize) << 20,
        batch_docs: 4096,
        batch_bytes: 32 << 20,
    };
    let total: u64 = files.iter().map(|f| f.size).sum();
    let progress = Progress::bytes("sample", total, quiet);
    let mut stats = SampleStats {
        files: files.len(),
        ..Default::default()
    };
    // Max-heap on key: the top is the first to evict.
    let mut heap: BinaryHeap<(u64, u64, String)> = BinaryHeap::new();
    let mut held = 0u64;
    let mut order = 0u64;
    for f in &files {
        let ctx = SourceCtx {
            src,
            ingest: &cfg.ingest,
            name: Arc::from("tokenizer"),
            file: Arc::from(f.path.as_path()),
        };
        let problems = read_file(f, src, limits, &progress, &mut |batch| {
            for raw in batch {
                match parse(raw, &ctx) {
                    Parsed::Doc { doc, .. } => {
                        let n = doc.text.len() as u64;
                        stats.docs_seen += 1;
                        stats.bytes_seen += n;
                        if n > budget {
                            continue;
                        }
                        let key = xxhash_rust::xxh3::xxh3_64_with_seed(doc.text.as_bytes(), seed);
                        if held + n > budget {
                            if let Some(top) = heap.peek() {
                                if top.0 < key {
                                    continue;
                                }
                            }
                        }
                        held += n;
                        heap.push((key, order, doc.text));
                        order += 1;
                        while held > budget {
                            let (_, _, t) = heap.pop().unwrap();
                            held -= t.len() as u64;
                        }
                    }
                    Parsed::Rejected { count, .. } => stats.rejected += count,
                    Parsed::Blank => {}
                }
            }
            Ok(())
        })?;
        if !quiet {
            for p in problems {
                eprintln!(
                    "warning: {}:{}: {} ({})",
                    f.path.display(),
                    p.line,
                    p.reason,
                    p.detail
                );
            }
        }
    }
    progress.finish();
    let mut docs: Vec<(u64, u64, String)> = heap.into_vec();
    docs.sort_unstable_by_key(|d| (d.0, d.1));
    stats.docs_kept = docs.len() as u64;
    stats.bytes_kept = held;
    Ok((docs.into_iter().map(|d| d.2).collect(), stats))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus() -> Vec<String> {
        let words = [
            "the", "river", "boats", "harbor", "workers", "lanterns", "morning", "bread", "market",
            "stone", "bridge", "garden",
        ];
        let mut r = tinyllama_model::rng::Rng::new(5);
        (0..400)
            .map(|_| {
                (0..30)
                    .map(|_| words[r.below(words.len() as u64) as usize])
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    }

    #[test]
    fn llama_layout_and_byte_fallback_round_trip() {
        let opts = TrainOptions {
            vocab_size: 300,
            ..Default::default()
        };
        let tok = train(corpus(), &opts).unwrap();
        assert_eq!(tok.token_to_id(UNK), Some(0));
        assert_eq!(tok.token_to_id(BOS), Some(1));
        assert_eq!(tok.token_to_id(EOS), Some(2));
        assert_eq!(tok.token_to_id("<0x00>"), Some(3));
        assert_eq!(tok.token_to_id("<0xFF>"), Some(258));
        assert_eq!(tok.get_vocab_size(true), 300, "exactly the requested size");
        // Words from training become few tokens; unseen characters fall back to bytes.
        let text = "the river  boats\nZ été 🦀 ∑";
        let enc = tok.encode(text, false).unwrap();
        assert!(
            !enc.get_ids().contains(&0),
            "no <unk>: {:?}",
            enc.get_tokens()
        );
        assert_eq!(tok.decode(enc.get_ids(), true).unwrap(), text);
        assert!(enc.get_tokens()[0].starts_with('\u{2581}'));
        // The post-processor adds BOS when asked (transformers' default).
        assert_eq!(tok.encode("the", true).unwrap().get_ids()[0], 1);
        // Saved and reloaded through the model crate's wrapper.
        let dir = tempfile::tempdir().unwrap();
        save(&tok, dir.path()).unwrap();
        let w = tinyllama_model::tokenizer::Tokenizer::load(dir.path(), 1, 2).unwrap();
        assert_eq!(w.encode(text).unwrap(), enc.get_ids());
        assert!(dir.path().join("tokenizer_config.json").exists());
    }

    #[test]
    fn reserved_strings_in_the_text_stay_ordinary_text() {
        // A corpus full of the reserved strings: BPE would learn `</s>`, `<s>`, `<unk>` and
        // `<0x0A>` as tokens and then share their ids.
        // Words of 1-3 made-up syllables: enough distinct pairs for 1000 tokens.
        let syl = [
            "ka", "lo", "mi", "ten", "ras", "bu", "fe", "dor", "qui", "zan", "pel", "vo", "ris",
            "tum", "gha", "ne",
        ];
        let mut x = 12345u64;
        let mut next = move || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) as usize
        };
        let texts: Vec<String> = (0..3000)
            .map(|i| {
                let words: Vec<String> = (0..12)
                    .map(|_| {
                        (0..1 + next() % 3)
                            .map(|_| syl[next() % syl.len()])
                            .collect()
                    })
                    .collect();
                format!("{} </s> <s> <unk> <0x0A> end{i}</s>", words.join(" "))
            })
            .collect();
        for vocab_size in [400, 1000] {
            let opts = TrainOptions {
                vocab_size,
                ..Default::default()
            };
            let tok = train(&texts, &opts).unwrap();
            assert_eq!(tok.get_vocab_size(true), vocab_size);
            let ids: std::collections::HashSet<u32> = tok.get_vocab(true).into_values().collect();
            assert_eq!(ids.len(), vocab_size, "ids are distinct");
            assert_eq!(ids.iter().max(), Some(&(vocab_size as u32 - 1)));
            let doc = crate::fasttok::DocTokenizer::new(tok.clone());
            let text = "the boats </s> and <s> or <unk> with <0x0A> here";
            let enc = doc.encode(text).unwrap();
            assert!(
                enc.iter().all(|&t| t > 2 && t != 3 + 0x0A),
                "{vocab_size}: {enc:?} {:?}",
                tok.decode(&enc, false)
            );
            assert_eq!(tok.decode(&enc, true).unwrap(), text);
        }
    }

    #[test]
    fn sampling_respects_budget_and_is_deterministic() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.txt");
        std::fs::write(&p, corpus().join("\n")).unwrap();
        let inputs = vec![p.display().to_string()];
        let (a, s) = sample_inputs(&inputs, Format::Lines, "text", 5000, 1, true).unwrap();
        let (b, _) = sample_inputs(&inputs, Format::Lines, "text", 5000, 1, true).unwrap();
        assert_eq!(a, b);
        assert_eq!(s.docs_seen, 400);
        assert!(s.bytes_kept <= 5000 && s.bytes_kept > 4000, "{s:?}");
        let (all, _) = sample_inputs(&inputs, Format::Lines, "text", 1 << 30, 1, true).unwrap();
        assert_eq!(all.len(), 400);
    }
}
