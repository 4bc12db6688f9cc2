//! Tokenising documents for pre-training: the same ids as the `tokenizer.json`, with two
//! differences that matter for training data, and much faster on Llama-style tokenizers.
//!
//! 1. **Special-token text stays text.** A document containing the characters `</s>` must not
//!    produce the EOS id — that would forge a document boundary. Hugging Face splits such text
//!    out as special tokens by default; [`DocTokenizer`] encodes it as ordinary characters, as
//!    SentencePiece does (so it matches SentencePiece where HF does not).
//! 2. **Speed.** Llama-2's `tokenizer.json` normalises with `Prepend("▁")` + `Replace(" ", "▁")`
//!    and has no pre-tokenizer. HF applies `Replace` match by match while tracking alignments
//!    (quadratic in practice) and then runs BPE over each whole document as one word. When the
//!    normaliser is exactly that pair, we apply it ourselves in one pass; and when no vocabulary
//!    entry contains `▁` right after another character, no merge can join the end of one word
//!    to the `▁` that starts the next, so the normalised text is split before every run of `▁`
//!    and the pieces are encoded separately (and cached) with identical results. Both
//!    conditions are checked on the loaded tokenizer. Tokenizers with a splitting Metaspace
//!    pre-tokenizer (what `tokenizer train` writes) get the same treatment, splitting exactly
//!    where Metaspace does. The words then go through [`crate::fastbpe`], a lean port of the
//!    same BPE with a large word cache; any other tokenizer runs through `tokenizers` as is.
//!
//! Tests compare the ids with plain HF encoding and with SentencePiece's recorded ids.

use anyhow::Result;
use tokenizers::models::ModelWrapper;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{SplitDelimiterBehavior, Tokenizer};

const META: char = '\u{2581}';

/// A vocabulary entry with `▁` after some other character.
fn crosses_word_start(token: &str) -> bool {
    let mut prev_other = false;
    for c in token.chars() {
        if c == META && prev_other {
            return true;
        }
        prev_other = c != META;
    }
    false
}

/// The normaliser is Llama's `Prepend("▁")` then `Replace(" ", "▁")`.
fn is_llama_normalizer(tok: &Tokenizer) -> bool {
    let Some(n) = tok.get_normalizer() else {
        return false;
    };
    let Ok(v) = serde_json::to_value(n) else {
        return false;
    };
    let want = serde_json::json!({"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": "\u{2581}"},
        {"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}
    ]});
    v == want
}

/// The BPE vocabulary never joins across a `▁` word start, and words carry no prefix/suffix.
fn bpe_splittable(tok: &Tokenizer) -> bool {
    let ModelWrapper::BPE(bpe) = tok.get_model() else {
        return false;
    };
    let Ok(m) = serde_json::to_value(bpe) else {
        return false;
    };
    m["continuing_subword_prefix"].is_null()
        && m["end_of_word_suffix"].is_null()
        && !bpe.get_vocab().keys().any(|k| crosses_word_start(k))
}

/// How the fast path turns text into words before BPE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Words {
    /// Llama-2: prepend `▁`, spaces → `▁`, split before each run of `▁` (proven safe).
    LlamaRuns,
    /// A Metaspace pre-tokenizer with `split = true` (what `tokenizer train` writes): spaces →
    /// `▁`, prepend `▁` unless the text starts with one (if `prepend`), split before each `▁`.
    Metaspace { prepend: bool },
}

pub struct DocTokenizer {
    tok: Tokenizer,
    words: Option<Words>,
    /// Our own BPE for the fast path (see [`crate::fastbpe`]).
    bpe: Option<crate::fastbpe::FastBpe>,
    /// We apply the Llama normaliser ourselves (it was removed from `tok`).
    prenormalize: bool,
    /// A `▁`-run split was added.
    pub split_words: bool,
}

impl DocTokenizer {
    pub fn new(mut tok: Tokenizer) -> Self {
        tok.set_encode_special_tokens(true);
        let mut prenormalize = false;
        let mut split_words = false;
        if tok.get_pre_tokenizer().is_none() && is_llama_normalizer(&tok) {
            prenormalize = true;
            tok.with_normalizer(None::<tokenizers::NormalizerWrapper>);
            if bpe_splittable(&tok) {
                if let Ok(split) = Split::new(
                    SplitPattern::Regex("\u{2581}+".into()),
                    SplitDelimiterBehavior::MergedWithNext,
                    false,
                ) {
                    tok.with_pre_tokenizer(Some(PreTokenizerWrapper::Split(split)));
                    split_words = true;
                }
            }
        }
        let mut words = split_words.then_some(Words::LlamaRuns);
        if !prenormalize && tok.get_normalizer().is_none() {
            if let Some(pt) = tok.get_pre_tokenizer() {
                let v = serde_json::to_value(pt).unwrap_or_default();
                if v["type"] == "Metaspace" && v["replacement"] == "\u{2581}" && v["split"] == true
                {
                    words = match v["prepend_scheme"].as_str() {
                        Some("first") | Some("always") => Some(Words::Metaspace { prepend: true }),
                        Some("never") => Some(Words::Metaspace { prepend: false }),
                        _ => None,
                    };
                }
            }
        }
        // Our BPE needs the words, and no added token that would still be matched in the text
        // (only special ones are skipped under `encode_special_tokens`).
        let bpe = if words.is_some() && tok.get_added_tokens_decoder().values().all(|t| t.special) {
            serde_json::to_value(tok.get_model())
                .ok()
                .and_then(|m| crate::fastbpe::FastBpe::from_model_json(&m))
        } else {
            None
        };
        DocTokenizer {
            tok,
            words: if bpe.is_some() { words } else { None },
            bpe,
            prenormalize,
            split_words,
        }
    }

    /// Whether the Llama fast path (own normalisation, word split and BPE) is in use.
    pub fn accelerated(&self) -> bool {
        self.bpe.is_some()
    }

    pub fn vocab_size(&self) -> usize {
        self.tok.get_vocab_size(true)
    }

    pub fn token_to_id(&self, t: &str) -> Option<u32> {
        self.tok.token_to_id(t)
    }

    /// Token ids of a document, without BOS/EOS.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        if let (Some(bpe), Some(words)) = (&self.bpe, self.words) {
            let mut s = String::with_capacity(text.len() + 3);
            let prepend = match words {
                Words::LlamaRuns => !text.is_empty(),
                Words::Metaspace { prepend } => {
                    prepend && !text.is_empty() && !text.starts_with([' ', META])
                }
            };
            if prepend {
                s.push(META);
            }
            for c in text.chars() {
                s.push(if c == ' ' { META } else { c });
            }
            let mut out = Vec::with_capacity(text.len() / 3 + 1);
            let mut start = 0;
            // Llama splits before a run of `▁`; Metaspace before every `▁`.
            let mut prev_meta = true;
            for (i, c) in s.char_indices() {
                let meta = c == META;
                let boundary = match words {
                    Words::LlamaRuns => meta && !prev_meta,
                    Words::Metaspace { .. } => meta && i > 0,
                };
                if boundary {
                    bpe.encode_word(&s[start..i], &mut out);
                    start = i;
                }
                prev_meta = meta;
            }
            bpe.encode_word(&s[start..], &mut out);
            return Ok(out);
        }
        let enc = if self.prenormalize {
            let mut s = String::with_capacity(text.len() + 3);
            if !text.is_empty() {
                s.push(META);
            }
            for c in text.chars() {
                s.push(if c == ' ' { META } else { c });
            }
            self.tok.encode_fast(s, false)
        } else {
            self.tok.encode_fast(text, false)
        };
        enc.map(|e| e.get_ids().to_vec())
            .map_err(|e| anyhow::anyhow!("tokenizer: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crossing_tokens() {
        assert!(!crosses_word_start("\u{2581}the"));
        assert!(!crosses_word_start("\u{2581}\u{2581}"));
        assert!(crosses_word_start("a\u{2581}b"));
        assert!(!crosses_word_start("ab"));
    }

    #[test]
    fn trained_metaspace_tokenizers_match_and_keep_special_text() {
        let tok = crate::tokenizer_train::train(
            vec!["some text here and more text".to_string(); 5],
            &crate::tokenizer_train::TrainOptions {
                vocab_size: 300,
                ..Default::default()
            },
        )
        .unwrap();
        let d = DocTokenizer::new(tok.clone());
        assert!(
            d.accelerated(),
            "our own trained layout takes the fast path"
        );
        let t = "some text </s> here";
        assert!(
            !d.encode(t).unwrap().contains(&2),
            "</s> in text is not EOS"
        );
        assert!(
            tok.encode(t, false).unwrap().get_ids().contains(&2),
            "HF's default would be"
        );
        // Same ids as `tokenizers` (with special-token text as text) on awkward strings.
        let mut reference = tok.clone();
        reference.set_encode_special_tokens(true);
        let alphabet = [
            "some", "text", " ", "  ", "\u{2581}", "\n", "x", "é", "🦀", "</s>", "<s>", "here", ".",
        ];
        let mut r = tinyllama_model::rng::Rng::new(3);
        for _ in 0..3000 {
            let n = 1 + r.below(30) as usize;
            let s: String = (0..n)
                .map(|_| alphabet[r.below(alphabet.len() as u64) as usize])
                .collect();
            let want = reference.encode(s.as_str(), false).unwrap();
            assert_eq!(d.encode(&s).unwrap(), want.get_ids(), "{s:?}");
        }
    }
}
