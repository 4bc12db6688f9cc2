//! Log-probabilities in OpenAI's two shapes: the completions API's parallel lists
//! (`tokens`, `token_logprobs`, `top_logprobs`, `text_offset`, with `null` for the first
//! prompt token under `echo`) and the chat API's `content` list of objects.

use serde_json::{json, Map, Value};
use tinyllama_infer::TokenLogprob;
use tinyllama_model::tokenizer::Tokenizer;

/// The text of one token as it appears in a longer text: SentencePiece's `▁` is a space and a
/// byte-fallback token `<0x0A>` is its byte (when that is a character by itself).
pub fn token_text(tok: &Tokenizer, id: u32) -> String {
    let Some(piece) = tok.inner().id_to_token(id) else {
        return String::new();
    };
    if let Some(hex) = piece.strip_prefix("<0x").and_then(|p| p.strip_suffix('>')) {
        if let Ok(b) = u8::from_str_radix(hex, 16) {
            if b.is_ascii() {
                return (b as char).to_string();
            }
        }
    }
    if piece.contains('▁') {
        return piece.replace('▁', " ");
    }
    // Byte-level BPE pieces (`Ġ`) and the like are mapped back by the decoder; special
    // tokens, which it drops, are shown as themselves.
    match tok.decode(&[id]) {
        Ok(t) if !t.is_empty() => t,
        _ => piece,
    }
}

/// The completions API's `logprobs` object for `prompt` (with `echo`: its first token has no
/// log-probability) followed by the generated tokens; `offset` is where the text starts.
pub struct CompletionLogprobs {
    tokens: Vec<Value>,
    token_logprobs: Vec<Value>,
    top_logprobs: Vec<Value>,
    text_offset: Vec<Value>,
    offset: usize,
}

impl CompletionLogprobs {
    pub fn new(offset: usize) -> Self {
        CompletionLogprobs {
            tokens: vec![],
            token_logprobs: vec![],
            top_logprobs: vec![],
            text_offset: vec![],
            offset,
        }
    }

    fn push_token(&mut self, tok: &Tokenizer, id: u32) {
        let t = token_text(tok, id);
        self.text_offset.push(self.offset.into());
        self.offset += t.chars().count();
        self.tokens.push(t.into());
    }

    /// The first prompt token: there is nothing before it to predict it from.
    pub fn push_first(&mut self, tok: &Tokenizer, id: u32) {
        self.push_token(tok, id);
        self.token_logprobs.push(Value::Null);
        self.top_logprobs.push(Value::Null);
    }

    pub fn push(&mut self, tok: &Tokenizer, lp: &TokenLogprob) {
        self.push_token(tok, lp.token);
        self.token_logprobs.push(json!(lp.logprob));
        let mut top = Map::new();
        for &(id, l) in &lp.top {
            top.entry(token_text(tok, id)).or_insert(json!(l));
        }
        self.top_logprobs.push(Value::Object(top));
    }

    /// The object so far; the lists start again empty (for the next streamed chunk).
    pub fn take(&mut self) -> Value {
        json!({
            "tokens": std::mem::take(&mut self.tokens),
            "token_logprobs": std::mem::take(&mut self.token_logprobs),
            "top_logprobs": std::mem::take(&mut self.top_logprobs),
            "text_offset": std::mem::take(&mut self.text_offset),
        })
    }
}

fn chat_entry(tok: &Tokenizer, id: u32, logprob: f32) -> Value {
    let t = token_text(tok, id);
    json!({"token": t, "logprob": logprob, "bytes": t.as_bytes()})
}

/// The chat API's `logprobs` object.
pub fn chat_logprobs(tok: &Tokenizer, lps: &[TokenLogprob]) -> Value {
    let content: Vec<Value> = lps
        .iter()
        .map(|lp| {
            let mut e = chat_entry(tok, lp.token, lp.logprob);
            e["top_logprobs"] = lp
                .top
                .iter()
                .map(|&(id, l)| chat_entry(tok, id, l))
                .collect();
            e
        })
        .collect();
    json!({"content": content, "refusal": null})
}
