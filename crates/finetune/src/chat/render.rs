//! A conversation through the chat template and the tokenizer, with a per-token mask of the
//! assistant's replies (each reply's end-of-turn token included).
//!
//! Where the replies are in the rendered text:
//! * templates with transformers' `{% generation %}` blocks: the text those blocks produced;
//! * other templates (TinyLlama-Chat's Zephyr template, the built-in Zephyr format): reply `i`
//!   spans from the end of the rendering of `messages[..i]` with the generation prompt to the
//!   end of the rendering of `messages[..=i]`, less the whitespace after it (so Zephyr's
//!   `{reply}</s>` is marked and the `\n` after it is not).
//!
//! The full text is tokenized once (special tokens in it become their ids) and a token is an
//! assistant token when its offsets overlap a reply's span, which is how transformers 5's
//! `apply_chat_template(..., return_assistant_tokens_mask=True)` decides.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::ops::Range;
use tinyllama_infer::chat_template::{ChatTemplate, Message};
use tinyllama_model::tokenizer::Tokenizer;

/// Which tokens carry the loss.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrainOn {
    /// The assistant's replies and the end-of-turn token after each (the default).
    #[default]
    Assistant,
    /// Every token (what TinyLlama-Chat and Zephyr were tuned with).
    All,
}

/// Token ids of a rendered conversation and, per token, whether it belongs to an assistant
/// reply (the end-of-turn token that closes the reply included).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Rendered {
    pub tokens: Vec<u32>,
    pub assistant: Vec<bool>,
}

impl Rendered {
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The per-token loss mask under `train_on`.
    pub fn loss_mask(&self, train_on: TrainOn) -> Vec<bool> {
        match train_on {
            TrainOn::Assistant => self.assistant.clone(),
            TrainOn::All => vec![true; self.tokens.len()],
        }
    }
}

/// Renders and tokenizes a conversation with every assistant reply marked.
pub fn render(tmpl: &ChatTemplate, tok: &Tokenizer, messages: &[Message]) -> Result<Rendered> {
    render_marking_from(tmpl, tok, messages, 0)
}

/// Like [`render`], but only the replies at message index `first` or later are marked (a
/// preference pair: the prompt's turns, `messages[..first]`, are context only).
pub fn render_marking_from(
    tmpl: &ChatTemplate,
    tok: &Tokenizer,
    messages: &[Message],
    first: usize,
) -> Result<Rendered> {
    let (text, spans) = reply_spans(tmpl, messages, first)?;
    tokenize_with_spans(tmpl, tok, &text, &spans)
}

/// The rendered text of a whole conversation and the byte spans of the replies at message
/// index `first` or later, in order.
pub fn reply_spans(
    tmpl: &ChatTemplate,
    messages: &[Message],
    first: usize,
) -> Result<(String, Vec<Range<usize>>)> {
    let first = first.min(messages.len());
    let wanted = messages[first..].iter().any(|m| m.role == "assistant");
    if tmpl.has_generation_blocks() {
        let (text, spans) = tmpl.render_with_generation_spans(messages, false)?;
        if wanted && spans.iter().all(|s| s.is_empty()) {
            bail!(
                "the chat template ({}) has {{% generation %}} blocks but they produced no text \
                 for this conversation's assistant replies; check the template's generation \
                 blocks or use --train-on all",
                tmpl.origin
            );
        }
        if first == 0 {
            return Ok((text, spans));
        }
        // Keep what lies after the earlier messages.
        let prompt = tmpl.render(&messages[..first], false)?;
        check_prefix(tmpl, &prompt, &text, first)?;
        let start = prompt.len();
        let spans = spans
            .into_iter()
            .filter(|s| s.end > start)
            .map(|s| s.start.max(start)..s.end)
            .collect();
        return Ok((text, spans));
    }
    let text = tmpl.render(messages, false)?;
    let mut spans = Vec::new();
    for (i, m) in messages.iter().enumerate().skip(first) {
        if m.role != "assistant" {
            continue;
        }
        let before = tmpl.render(&messages[..i], true)?;
        let through = tmpl.render(&messages[..=i], false)?;
        check_prefix(tmpl, &before, &through, i)?;
        check_prefix(tmpl, &through, &text, i + 1)?;
        let end = through.trim_end().len().max(before.len());
        spans.push(before.len()..end);
    }
    Ok((text, spans))
}

fn check_prefix(tmpl: &ChatTemplate, prefix: &str, whole: &str, n: usize) -> Result<()> {
    if whole.starts_with(prefix) {
        return Ok(());
    }
    let at = prefix
        .char_indices()
        .zip(whole.chars())
        .find(|((_, a), b)| a != b)
        .map_or(prefix.len().min(whole.len()), |((i, _), _)| i);
    bail!(
        "the chat template ({}) renders the first {n} message(s) differently from the start of \
         the longer conversation (they differ at byte {at}: {:?} vs {:?}), so the assistant's \
         replies cannot be located; add {{% generation %}}...{{% endgeneration %}} around the \
         assistant content in the template, or use --train-on all",
        tmpl.origin,
        snippet(prefix, at),
        snippet(whole, at)
    )
}

fn snippet(s: &str, at: usize) -> String {
    let mut end = (at + 24).min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[at.min(end)..end].to_string()
}

/// Tokenizes `text` (special tokens recognised, BOS in front when the template asks for it and
/// the text does not already start with it: the same ids as `encode_prompt`) and marks the
/// tokens whose offsets overlap one of `spans`.
pub fn tokenize_with_spans(
    tmpl: &ChatTemplate,
    tok: &Tokenizer,
    text: &str,
    spans: &[Range<usize>],
) -> Result<Rendered> {
    let enc = tok
        .inner()
        .encode(text, false)
        .map_err(|e| anyhow::anyhow!("tokenizer: {e}"))?;
    let ids = enc.get_ids();
    let mut assistant = overlap_mask(enc.get_offsets(), spans);
    let mut tokens = ids.to_vec();
    if tmpl.add_bos && tokens.first() != Some(&tok.bos_id) {
        tokens.insert(0, tok.bos_id);
        assistant.insert(0, false);
    }
    Ok(Rendered { tokens, assistant })
}

/// transformers' rule: a token is marked when `token_end > span.start` and
/// `token_start < span.end` (offsets and spans both ascending, one pass).
fn overlap_mask(offsets: &[(usize, usize)], spans: &[Range<usize>]) -> Vec<bool> {
    let mut mask = vec![false; offsets.len()];
    let mut s = 0;
    for (i, &(start, end)) in offsets.iter().enumerate() {
        while s < spans.len() && start >= spans[s].end {
            s += 1;
        }
        if s == spans.len() {
            break;
        }
        mask[i] = end > spans[s].start;
    }
    mask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_rule() {
        let offsets = [(0, 3), (3, 5), (5, 9), (9, 9), (9, 12), (12, 14)];
        assert_eq!(
            overlap_mask(&offsets, &[4..9, 12..13]),
            [false, true, true, false, false, true]
        );
        assert_eq!(overlap_mask(&offsets, &[]), [false; 6]);
        // An empty span marks nothing.
        let empty = [Range { start: 5, end: 5 }];
        assert_eq!(overlap_mask(&offsets, &empty), [false; 6]);
    }

    fn conv() -> Vec<Message> {
        vec![
            Message::new("system", "Be brief."),
            Message::new("user", "Hi"),
            Message::new("assistant", "Hello!"),
            Message::new("user", "Bye"),
            Message::new("assistant", "See you."),
        ]
    }

    #[test]
    fn prefix_rule_on_zephyr_marks_reply_and_eos_not_newline() {
        let t = ChatTemplate::zephyr();
        let (text, spans) = reply_spans(&t, &conv(), 0).unwrap();
        let marked: Vec<&str> = spans.iter().map(|r| &text[r.clone()]).collect();
        assert_eq!(marked, ["Hello!</s>", "See you.</s>"]);
        assert!(text[spans[0].end..].starts_with("\n<|user|>"));
        // Only the last reply when the earlier turns are the prompt.
        let (_, spans) = reply_spans(&t, &conv(), 3).unwrap();
        let marked: Vec<&str> = spans.iter().map(|r| &text[r.clone()]).collect();
        assert_eq!(marked, ["See you.</s>"]);
    }

    #[test]
    fn prefix_rule_on_tinyllama_chat_template_equals_builtin_zephyr() {
        // TinyLlama-1.1B-Chat-v1.0's chat_template (as in crates/infer's tests).
        const TINYLLAMA_CHAT: &str = "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}";
        let t = ChatTemplate::from_jinja(TINYLLAMA_CHAT, "<s>", "</s>").unwrap();
        for first in [0, 3] {
            assert_eq!(
                reply_spans(&t, &conv(), first).unwrap(),
                reply_spans(&ChatTemplate::zephyr(), &conv(), first).unwrap()
            );
        }
    }

    #[test]
    fn generation_blocks_are_used_when_present() {
        let src = "{% for m in messages %}<{{ m.role }}>{% if m.role == 'assistant' %}{% generation %}{{ m.content }}.{% endgeneration %}{% else %}{{ m.content }}{% endif %}\n{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}";
        let t = ChatTemplate::from_jinja(src, "", "").unwrap();
        let (text, spans) = reply_spans(&t, &conv(), 0).unwrap();
        let marked: Vec<&str> = spans.iter().map(|r| &text[r.clone()]).collect();
        assert_eq!(marked, ["Hello!.", "See you.."]);
        let (_, spans) = reply_spans(&t, &conv(), 3).unwrap();
        assert_eq!(spans.len(), 1);
        assert_eq!(&text[spans[0].clone()], "See you..");
    }

    #[test]
    fn a_template_whose_prefix_is_not_a_prefix_is_refused() {
        // Puts a turn count at the top: the rendering of fewer messages is no prefix.
        let src = "[{{ messages|length }}]{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}";
        let t = ChatTemplate::from_jinja(src, "", "").unwrap();
        let e = reply_spans(&t, &conv(), 0).unwrap_err().to_string();
        assert!(e.contains("chat_template"), "{e}");
        assert!(e.contains("cannot be located"), "{e}");
        assert!(e.contains("--train-on all"), "{e}");
    }

    #[test]
    fn loss_mask_by_train_on() {
        let r = Rendered {
            tokens: vec![1, 2, 3],
            assistant: vec![false, true, false],
        };
        assert_eq!(r.loss_mask(TrainOn::Assistant), [false, true, false]);
        assert_eq!(r.loss_mask(TrainOn::All), [true; 3]);
        assert_eq!(serde_json::to_string(&TrainOn::All).unwrap(), "\"all\"");
        let a: TrainOn = serde_json::from_str("\"assistant\"").unwrap();
        assert_eq!(a, TrainOn::Assistant);
    }
}
