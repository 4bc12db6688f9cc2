//! How a (context, continuation) pair becomes token ids. lm-evaluation-harness versions differ
//! here, and the differences move scores by a point or more, so both conventions are offered:
//!
//! - `joint` (harness 0.4, the default): trailing whitespace of the context is moved to the
//!   front of the continuation; the context and the whole string are encoded, and the
//!   continuation is the whole string's tokens after the context's token count.
//! - `separate` (older harness releases): context and continuation are encoded on their own and
//!   concatenated. With a SentencePiece tokenizer `" yes"` then starts with an extra `▁` token.
//!
//! BOS: `never` (the default; harness 0.4.0 and the releases after it encode with
//! `add_special_tokens=False` for causal models, which is how TinyLlama's table was made),
//! `always` (`add_bos_token=True`), or `auto`: whatever the tokenizer's own post-processor adds
//! (`add_special_tokens=True`, which for Llama tokenizers is `<s>`; lm-eval 0.4.13 does this
//! when `add_bos_token` is not given). A BOS goes before the context only. An empty context is
//! replaced by BOS whatever the policy, as the harness scores an empty context after its prefix
//! token.

use anyhow::{bail, Result};
use serde::Serialize;
use std::str::FromStr;
use tinyllama_model::tokenizer::Tokenizer;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BosPolicy {
    Auto,
    Always,
    Never,
}

impl FromStr for BosPolicy {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "auto" => BosPolicy::Auto,
            "always" => BosPolicy::Always,
            "never" => BosPolicy::Never,
            _ => bail!("--bos must be auto, always or never (got `{s}`)"),
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    Joint,
    Separate,
}

impl FromStr for Encoding {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "joint" => Encoding::Joint,
            "separate" => Encoding::Separate,
            _ => bail!("--encoding must be joint or separate (got `{s}`)"),
        })
    }
}

/// A resolved policy: whether BOS is prepended, and how pairs are split.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Policy {
    pub bos_policy: BosPolicy,
    pub bos: bool,
    pub encoding: Encoding,
}

impl Policy {
    pub fn resolve(bos: BosPolicy, encoding: Encoding, tok: &Tokenizer) -> Result<Policy> {
        let add = match bos {
            BosPolicy::Always => true,
            BosPolicy::Never => false,
            BosPolicy::Auto => tokenizer_adds_bos(tok)?,
        };
        Ok(Policy {
            bos_policy: bos,
            bos: add,
            encoding,
        })
    }
}

/// Whether encoding with special tokens puts BOS in front (the tokenizer's post-processor).
pub fn tokenizer_adds_bos(tok: &Tokenizer) -> Result<bool> {
    let with = tok
        .inner()
        .encode("a", true)
        .map_err(|e| anyhow::anyhow!("tokenizer: {e}"))?;
    let without = tok.encode("a")?;
    Ok(with.get_ids().len() > without.len() && with.get_ids().first() == Some(&tok.bos_id))
}

/// Context and continuation ids under `policy` (see the module docs).
pub fn encode_pair(
    tok: &Tokenizer,
    policy: &Policy,
    context: &str,
    continuation: &str,
) -> Result<(Vec<u32>, Vec<u32>)> {
    let (mut ctx, cont) = match policy.encoding {
        Encoding::Separate => (tok.encode(context)?, tok.encode(continuation)?),
        Encoding::Joint => {
            let trimmed = context.trim_end();
            let moved = format!("{}{continuation}", &context[trimmed.len()..]);
            let ctx = tok.encode(trimmed)?;
            let whole = tok.encode(&format!("{trimmed}{moved}"))?;
            let cont = whole.get(ctx.len()..).unwrap_or_default().to_vec();
            (ctx, cont)
        }
    };
    if policy.bos || ctx.is_empty() {
        ctx.insert(0, tok.bos_id);
    }
    Ok((ctx, cont))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A word-level tokenizer with a Llama-like `▁` prefix, built in memory.
    pub fn toy_tokenizer() -> Tokenizer {
        let json = r#"{
          "version": "1.0", "truncation": null, "padding": null,
          "added_tokens": [{"id": 1, "content": "<s>", "single_word": false, "lstrip": false,
                            "rstrip": false, "normalized": false, "special": true}],
          "normalizer": {"type": "Sequence", "normalizers": [
              {"type": "Prepend", "prepend": "▁"},
              {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
          "pre_tokenizer": null,
          "post_processor": {"type": "TemplateProcessing",
              "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
              "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
              "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
          "decoder": null,
          "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>", "continuing_subword_prefix": null,
                    "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": false,
                    "vocab": {"<unk>": 0, "<s>": 1, "▁": 2, "a": 3, "▁a": 4, "b": 5, "▁b": 6, "▁▁": 7},
                    "merges": ["▁ a", "▁ b", "▁ ▁"]}
        }"#;
        let inner = tokenizers::Tokenizer::from_bytes(json.as_bytes()).unwrap();
        Tokenizer::from_inner(inner, 1, 2)
    }

    fn policy(bos: bool, encoding: Encoding) -> Policy {
        Policy {
            bos_policy: if bos {
                BosPolicy::Always
            } else {
                BosPolicy::Never
            },
            bos,
            encoding,
        }
    }

    #[test]
    fn joint_and_separate_differ_on_the_leading_space() {
        let tok = toy_tokenizer();
        let joint = encode_pair(&tok, &policy(false, Encoding::Joint), "a", " b").unwrap();
        assert_eq!(joint, (vec![4], vec![6]));
        // Encoded alone, " b" gets the prefix `▁` and its own space: `▁▁b` -> `▁`, `▁b`.
        let sep = encode_pair(&tok, &policy(false, Encoding::Separate), "a", " b").unwrap();
        assert_eq!(sep, (vec![4], vec![2, 6]));
        let bos = encode_pair(&tok, &policy(true, Encoding::Joint), "a", " b").unwrap();
        assert_eq!(bos, (vec![1, 4], vec![6]));
    }

    #[test]
    fn trailing_context_space_moves_to_the_continuation() {
        let tok = toy_tokenizer();
        let p = policy(false, Encoding::Joint);
        assert_eq!(
            encode_pair(&tok, &p, "a ", "b").unwrap(),
            encode_pair(&tok, &p, "a", " b").unwrap()
        );
        // An empty context scores the continuation after BOS.
        assert_eq!(encode_pair(&tok, &p, "", " a").unwrap().0, vec![1]);
    }

    #[test]
    fn auto_follows_the_post_processor() {
        let tok = toy_tokenizer();
        assert!(tokenizer_adds_bos(&tok).unwrap());
        let p = Policy::resolve(BosPolicy::Auto, Encoding::Joint, &tok).unwrap();
        assert!(p.bos);
        assert!("sometimes".parse::<BosPolicy>().is_err());
    }
}
