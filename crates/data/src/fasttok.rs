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
//!    conditions are checked on the loaded tokenizer; anything else runs unchanged.
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

pub struct DocTokenizer {
    tok: Tokenizer,
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
        // Our BPE needs the split words, and no added token that would still be matched in
        // the text (only special ones are skipped under `encode_special_tokens`).
        let bpe = if split_words && tok.get_added_tokens_decoder().values().all(|t| t.special) {
            serde_json::to_value(tok.get_model())
                .ok()
                .and_then(|m| crate::fastbpe::FastBpe::from_model_json(&m))
        } else {
            None
        };
        DocTokenizer {
            tok,
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
        if let Some(bpe) = &self.bpe {
            // Normalise (Prepend + Replace) and split before each run of `▁`, then BPE per word.
            let mut s = String::with_capacity(text.len() + 3);
            if !text.is_empty() {
                s.push(META);
            }
            for c in text.chars() {
                s.push(if c == ' ' { META } else { c });
            }
            let mut out = Vec::with_capacity(text.len() / 3 + 1);
            let mut start = 0;
            let mut prev_meta = true;
            for (i, c) in s.char_indices() {
                let meta = c == META;
                if meta && !prev_meta {
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
    fn other_tokenizers_run_unchanged_but_keep_special_text() {
        let tok = crate::tokenizer_train::train(
            vec!["some text here and more text".to_string(); 5],
            &crate::tokenizer_train::TrainOptions {
                vocab_size: 300,
                ..Default::default()
            },
        )
        .unwrap();
        let d = DocTokenizer::new(tok.clone());
        assert!(!d.accelerated());
        let t = "some text </s> here";
        assert_eq!(
            d.encode("some text").unwrap(),
            tok.encode("some text", false).unwrap().get_ids()
        );
        assert!(
            !d.encode(t).unwrap().contains(&2),
            "</s> in text is not EOS"
        );
        assert!(
            tok.encode(t, false).unwrap().get_ids().contains(&2),
            "HF's default would be"
        );
    }
}
