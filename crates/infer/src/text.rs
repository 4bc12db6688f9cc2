//! Incremental detokenization. Decoding only the new ids loses context (SentencePiece-style
//! decoders strip the leading space of a decode; byte-fallback tokens form a character only
//! together), so we decode a short window that starts a few ids back and emit what the new ids
//! add to it, the way vLLM does.

use anyhow::Result;
use tinyllama_model::tokenizer::Tokenizer;

/// Ids of context kept before the new ids.
const CONTEXT_IDS: usize = 4;

pub struct TextStream {
    ids: Vec<u32>,
    /// Start of the decode window.
    prefix: usize,
    /// Ids before this have been emitted.
    read: usize,
}

impl TextStream {
    /// `context` is the end of the prompt, so the first generated word gets its space right.
    pub fn new(context: &[u32]) -> Self {
        let ctx = &context[context.len().saturating_sub(CONTEXT_IDS)..];
        TextStream {
            ids: ctx.to_vec(),
            prefix: 0,
            read: ctx.len(),
        }
    }

    /// Adds ids and returns the newly complete text (empty while a character is incomplete).
    pub fn push(&mut self, tok: &Tokenizer, new: &[u32]) -> Result<String> {
        self.ids.extend_from_slice(new);
        let before = tok.decode(&self.ids[self.prefix..self.read])?;
        let all = tok.decode(&self.ids[self.prefix..])?;
        // An incomplete UTF-8 sequence decodes to U+FFFD; wait for the rest.
        if all.len() <= before.len()
            || all.ends_with('\u{FFFD}')
            || !all.is_char_boundary(before.len())
        {
            return Ok(String::new());
        }
        let out = all[before.len()..].to_string();
        // The next window starts at the ids just emitted: enough context for spacing.
        self.prefix = self.read;
        self.read = self.ids.len();
        Ok(out)
    }

    /// Whatever is still held back (an incomplete character at the very end), decoded as is.
    pub fn flush(&mut self, tok: &Tokenizer) -> Result<String> {
        let before = tok.decode(&self.ids[self.prefix..self.read])?;
        let all = tok.decode(&self.ids[self.prefix..])?;
        self.prefix = self.ids.len();
        self.read = self.ids.len();
        Ok(
            if all.len() > before.len() && all.is_char_boundary(before.len()) {
                all[before.len()..].to_string()
            } else {
                String::new()
            },
        )
    }
}
