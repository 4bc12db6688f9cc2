//! The tokenizer: a thin wrapper over Hugging Face `tokenizers` that loads `tokenizer.json`
//! and applies Llama's BOS/EOS policy explicitly (we never rely on the post-processor, so the
//! same text gives the same ids whichever tokenizer.json variant is used).

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    pub path: PathBuf,
    pub bos_id: u32,
    pub eos_id: u32,
}

impl Tokenizer {
    /// Loads `tokenizer.json` from a file or a model directory.
    pub fn load(path: &Path, bos_id: u32, eos_id: u32) -> Result<Self> {
        let file = if path.is_dir() {
            path.join("tokenizer.json")
        } else {
            path.to_path_buf()
        };
        if !file.exists() {
            bail!(
                "no tokenizer at {}: the model directory needs a Hugging Face tokenizer.json \
                 (copy it from the model you trained or fine-tuned from, or pass --tokenizer FILE)",
                file.display()
            );
        }
        let inner = tokenizers::Tokenizer::from_file(&file)
            .map_err(|e| anyhow::anyhow!("{}: cannot load tokenizer: {e}", file.display()))?;
        Ok(Tokenizer {
            inner,
            path: file,
            bos_id,
            eos_id,
        })
    }

    pub fn from_inner(inner: tokenizers::Tokenizer, bos_id: u32, eos_id: u32) -> Self {
        Tokenizer {
            inner,
            path: PathBuf::new(),
            bos_id,
            eos_id,
        }
    }

    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Token ids of `text`, without BOS/EOS.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| anyhow::anyhow!("tokenizer: {e}"))?;
        Ok(enc.get_ids().to_vec())
    }

    /// BOS followed by the ids of `text`.
    pub fn encode_with_bos(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = vec![self.bos_id];
        ids.extend(self.encode(text)?);
        Ok(ids)
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, true)
            .map_err(|e| anyhow::anyhow!("tokenizer: {e}"))
    }

    /// Writes `tokenizer.json` into `dir` (used by exports).
    pub fn save_to_dir(&self, dir: &Path) -> Result<()> {
        let s = self
            .inner
            .to_string(true)
            .map_err(|e| anyhow::anyhow!("tokenizer: {e}"))?;
        crate::atomic::write_atomic(&dir.join("tokenizer.json"), s.as_bytes())
            .with_context(|| format!("saving tokenizer to {}", dir.display()))
    }
}

/// Decodes a growing id sequence into text pieces as they become printable. SentencePiece-style
/// tokenizers strip the leading space of a decode and byte-fallback tokens only form a character
/// together, so we decode the whole tail and emit the new suffix.
pub struct StreamDecoder {
    ids: Vec<u32>,
    emitted: usize,
}

impl Default for StreamDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamDecoder {
    pub fn new() -> Self {
        StreamDecoder {
            ids: Vec::new(),
            emitted: 0,
        }
    }

    /// Adds a token and returns the newly complete text, if any.
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Result<String> {
        self.ids.push(id);
        let text = tok.decode(&self.ids)?;
        // An incomplete UTF-8 sequence decodes to U+FFFD; wait for more bytes.
        if text.ends_with('\u{FFFD}') || text.len() < self.emitted {
            return Ok(String::new());
        }
        let new = text[self.emitted..].to_string();
        self.emitted = text.len();
        Ok(new)
    }
}
