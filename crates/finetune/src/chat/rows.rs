//! Rendered conversations into the trainer's rows: `seq_len` inputs and `seq_len` targets
//! (`targets[t]` is the token at input position `t + 1`, `-1` = no loss). Conversations that do
//! not fit are truncated by whole leading turns or dropped; with packing several conversations
//! share a row and no target crosses from one conversation into the next.

use super::formats::validate_conversation;
use super::render::{render, render_marking_from, Rendered, TrainOn};
use super::report::{DataReport, Malformed};
use super::split::messages_key;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use tinyllama_infer::chat_template::{ChatTemplate, Message};
use tinyllama_model::tokenizer::Tokenizer;

/// What to do with a conversation longer than `seq_len + 1` tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overflow {
    /// Drop whole leading turns (a leading system message stays) until it fits; when even the
    /// last exchange does not fit, drop the conversation.
    #[default]
    TruncateLeft,
    /// Drop the conversation.
    Drop,
}

/// How chat data becomes rows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatOptions {
    /// Positions per row; a conversation may have up to `seq_len + 1` tokens.
    pub seq_len: usize,
    #[serde(default)]
    pub train_on: TrainOn,
    #[serde(default)]
    pub overflow: Overflow,
    /// Several conversations per row (greedily, in order) instead of one padded row each.
    #[serde(default)]
    pub pack: bool,
}

impl Default for ChatOptions {
    fn default() -> Self {
        ChatOptions {
            seq_len: 2048,
            train_on: TrainOn::Assistant,
            overflow: Overflow::TruncateLeft,
            pack: false,
        }
    }
}

/// The input id of padding positions. Padding only ever follows the real tokens of a row and
/// its targets are -1, so under causal attention the id cannot affect any loss.
pub const PAD_INPUT_ID: u32 = 0;

/// One training row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub inputs: Vec<u32>,
    /// `targets[t]` = the token at input position `t + 1` when it carries a loss, else -1.
    pub targets: Vec<i32>,
}

impl Row {
    /// Positions with a target.
    pub fn target_count(&self) -> usize {
        self.targets.iter().filter(|&&t| t >= 0).count()
    }
}

/// A conversation with the place it came from (`path:line`, or `conversation N`).
#[derive(Clone, Debug, PartialEq)]
pub struct Conversation {
    pub messages: Vec<Message>,
    pub origin: String,
}

/// SFT rows and what happened on the way.
#[derive(Clone, Debug)]
pub struct SftData {
    pub rows: Vec<Row>,
    pub report: DataReport,
}

/// A prompt with a chosen and a rejected response, each rendered as prompt + response with
/// the mask true on the response (and its end-of-turn token) only.
#[derive(Clone, Debug, PartialEq)]
pub struct PreferencePair {
    pub chosen: Rendered,
    pub rejected: Rendered,
    /// `path:line` of the pair.
    pub origin: String,
    /// A hash of the pair's text, for the validation split.
    pub key: u64,
}

/// Preference pairs and what happened on the way.
#[derive(Clone, Debug)]
pub struct PreferenceData {
    pub pairs: Vec<PreferencePair>,
    pub report: DataReport,
}

/// A preference record before rendering.
#[derive(Clone, Debug, PartialEq)]
pub struct PreferenceRecord {
    pub prompt: Vec<Message>,
    pub chosen: Vec<Message>,
    pub rejected: Vec<Message>,
    pub origin: String,
}

/// Lays out token segments (each a conversation: tokens and loss mask) in one row. The first
/// token of each segment is never a target, so no target crosses a conversation boundary.
/// Segments must total at most `seq_len + 1` tokens.
pub fn row_from_segments(segments: &[(&[u32], &[bool])], seq_len: usize) -> Row {
    let mut stream = Vec::with_capacity(seq_len + 1);
    let mut wanted = Vec::with_capacity(seq_len + 1);
    for (tokens, mask) in segments {
        debug_assert_eq!(tokens.len(), mask.len());
        for (k, (&t, &m)) in tokens.iter().zip(mask.iter()).enumerate() {
            stream.push(t);
            wanted.push(m && k > 0);
        }
    }
    assert!(
        stream.len() <= seq_len + 1,
        "{} tokens do not fit a row of {seq_len}",
        stream.len()
    );
    let mut inputs = vec![PAD_INPUT_ID; seq_len];
    let mut targets = vec![-1i32; seq_len];
    for j in 0..stream.len().saturating_sub(1) {
        inputs[j] = stream[j];
        if wanted[j + 1] {
            targets[j] = stream[j + 1] as i32;
        }
    }
    Row { inputs, targets }
}

/// Rows from rendered conversations with their loss masks: one padded row each, or packed
/// greedily in order when `pack`.
pub fn rows_from_rendered(items: &[(Rendered, Vec<bool>)], seq_len: usize, pack: bool) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut group: Vec<(&[u32], &[bool])> = Vec::new();
    let mut used = 0;
    for (r, mask) in items {
        let n = r.tokens.len();
        if pack && used + n > seq_len + 1 && !group.is_empty() {
            rows.push(row_from_segments(&group, seq_len));
            group.clear();
            used = 0;
        }
        group.push((&r.tokens, mask));
        used += n;
        if !pack {
            rows.push(row_from_segments(&group, seq_len));
            group.clear();
            used = 0;
        }
    }
    if !group.is_empty() {
        rows.push(row_from_segments(&group, seq_len));
    }
    rows
}

/// The two rows of a preference pair, targets on the responses only. A pair longer than
/// `seq_len + 1` tokens (not one loaded with the same `seq_len`) keeps its last tokens.
pub fn pair_rows(p: &PreferencePair, seq_len: usize) -> (Row, Row) {
    let one = |r: &Rendered| {
        let cut = r.tokens.len().saturating_sub(seq_len + 1);
        row_from_segments(&[(&r.tokens[cut..], &r.assistant[cut..])], seq_len)
    };
    (one(&p.chosen), one(&p.rejected))
}

/// Drops the oldest exchange after the leading system message(s): the turns up to and
/// including the first assistant reply before index `limit`. None when there is none.
fn drop_leading_exchange(msgs: &[Message], limit: usize) -> Option<Vec<Message>> {
    let sys = msgs.iter().take_while(|m| m.role == "system").count();
    let j = (sys..limit.min(msgs.len())).find(|&j| msgs[j].role == "assistant")?;
    let mut out = msgs[..sys].to_vec();
    out.extend_from_slice(&msgs[j + 1..]);
    Some(out)
}

enum Fit<T> {
    Fits(T, bool),
    TooLong,
}

fn fit_conversation(
    messages: &[Message],
    opts: &ChatOptions,
    mut render: impl FnMut(&[Message]) -> Result<Rendered>,
) -> Result<Fit<Rendered>> {
    let mut msgs = messages.to_vec();
    let mut truncated = false;
    loop {
        let r = render(&msgs)?;
        if r.len() <= opts.seq_len + 1 {
            return Ok(Fit::Fits(r, truncated));
        }
        if opts.overflow == Overflow::Drop {
            return Ok(Fit::TooLong);
        }
        // Keep the last reply: drop only exchanges that end before it.
        let last = msgs
            .iter()
            .rposition(|m| m.role == "assistant")
            .unwrap_or(0);
        match drop_leading_exchange(&msgs, last) {
            Some(m) => {
                msgs = m;
                truncated = true;
            }
            None => return Ok(Fit::TooLong),
        }
    }
}

/// SFT rows from in-memory conversations (the demo, tests); origins are `conversation N`.
pub fn sft_rows_from_conversations(
    conversations: &[Vec<Message>],
    tmpl: &ChatTemplate,
    tok: &Tokenizer,
    opts: &ChatOptions,
) -> Result<SftData> {
    let mut report = DataReport::new("conversations", opts.seq_len);
    report.files = vec!["in-memory conversations".into()];
    report.lines_read = conversations.len();
    let mut convs = Vec::with_capacity(conversations.len());
    for (i, messages) in conversations.iter().enumerate() {
        let origin = format!("conversation {}", i + 1);
        match validate_conversation(messages) {
            Ok(()) => convs.push(Conversation {
                messages: messages.clone(),
                origin,
            }),
            Err(p) => report.record(p.reason, &origin, p.detail),
        }
    }
    build_sft(&convs, tmpl, tok, opts, report)
}

/// Renders, fits and lays out conversations into rows, completing `report`. Fails (with the
/// report's explanation) when no conversation is usable.
pub fn build_sft(
    convs: &[Conversation],
    tmpl: &ChatTemplate,
    tok: &Tokenizer,
    opts: &ChatOptions,
    mut report: DataReport,
) -> Result<SftData> {
    report.seq_len = opts.seq_len;
    let mut items = Vec::with_capacity(convs.len());
    for c in convs {
        match fit_conversation(&c.messages, opts, |m| render(tmpl, tok, m)) {
            Err(e) => report.record(Malformed::TemplateError, &c.origin, format!("{e:#}")),
            Ok(Fit::TooLong) => report.dropped_too_long += 1,
            Ok(Fit::Fits(r, truncated)) => {
                report.conversations_kept += 1;
                report.truncated += usize::from(truncated);
                report.total_tokens += r.len();
                let mask = r.loss_mask(opts.train_on);
                items.push((r, mask));
            }
        }
    }
    if items.is_empty() {
        return Err(report.nothing_usable());
    }
    let rows = rows_from_rendered(&items, opts.seq_len, opts.pack);
    report.rows = rows.len();
    report.target_tokens = rows.iter().map(Row::target_count).sum();
    Ok(SftData { rows, report })
}

/// Renders and fits preference records (the prompt loses leading exchanges when a response
/// does not fit), completing `report`. Fails when no pair is usable.
pub fn build_preferences(
    records: &[PreferenceRecord],
    tmpl: &ChatTemplate,
    tok: &Tokenizer,
    opts: &ChatOptions,
    mut report: DataReport,
) -> Result<PreferenceData> {
    report.seq_len = opts.seq_len;
    let mut pairs = Vec::with_capacity(records.len());
    for rec in records {
        match fit_pair(rec, tmpl, tok, opts) {
            Err(e) => report.record(Malformed::TemplateError, &rec.origin, format!("{e:#}")),
            Ok(Fit::TooLong) => report.dropped_too_long += 1,
            Ok(Fit::Fits((chosen, rejected), truncated)) => {
                report.conversations_kept += 1;
                report.truncated += usize::from(truncated);
                for r in [&chosen, &rejected] {
                    report.total_tokens += r.len();
                    report.target_tokens += r.assistant.iter().skip(1).filter(|&&m| m).count();
                }
                let mut all = rec.prompt.clone();
                all.extend(rec.chosen.iter().cloned());
                all.push(Message::new("", ""));
                all.extend(rec.rejected.iter().cloned());
                pairs.push(PreferencePair {
                    chosen,
                    rejected,
                    origin: rec.origin.clone(),
                    key: messages_key(&all),
                });
            }
        }
    }
    if pairs.is_empty() {
        return Err(report.nothing_usable());
    }
    Ok(PreferenceData { pairs, report })
}

fn fit_pair(
    rec: &PreferenceRecord,
    tmpl: &ChatTemplate,
    tok: &Tokenizer,
    opts: &ChatOptions,
) -> Result<Fit<(Rendered, Rendered)>> {
    let mut prompt = rec.prompt.clone();
    let mut truncated = false;
    loop {
        let one = |response: &[Message]| {
            let mut m = prompt.clone();
            m.extend_from_slice(response);
            render_marking_from(tmpl, tok, &m, prompt.len())
        };
        let chosen = one(&rec.chosen)?;
        let rejected = one(&rec.rejected)?;
        if chosen.len().max(rejected.len()) <= opts.seq_len + 1 {
            return Ok(Fit::Fits((chosen, rejected), truncated));
        }
        if opts.overflow == Overflow::Drop {
            return Ok(Fit::TooLong);
        }
        match drop_leading_exchange(&prompt, prompt.len().saturating_sub(1)) {
            Some(p) => {
                prompt = p;
                truncated = true;
            }
            None => return Ok(Fit::TooLong),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(tokens: &[u32], assistant: &[bool]) -> Rendered {
        Rendered {
            tokens: tokens.to_vec(),
            assistant: assistant.to_vec(),
        }
    }

    #[test]
    fn one_conversation_per_row_is_padded() {
        let r = rendered(&[1, 10, 11, 12, 2], &[false, false, true, true, true]);
        let rows = rows_from_rendered(&[(r.clone(), r.assistant.clone())], 6, false);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].inputs, [1, 10, 11, 12, 0, 0]);
        assert_eq!(rows[0].targets, [-1, 11, 12, 2, -1, -1]);
        // Exactly seq_len + 1 tokens fill the row.
        let rows = rows_from_rendered(&[(r.clone(), r.assistant.clone())], 4, false);
        assert_eq!(rows[0].inputs, [1, 10, 11, 12]);
        assert_eq!(rows[0].targets, [-1, 11, 12, 2]);
        // Train on all: every next token, but never position 0's own token.
        let all = r.loss_mask(TrainOn::All);
        let rows = rows_from_rendered(&[(r, all)], 4, false);
        assert_eq!(rows[0].targets, [10, 11, 12, 2]);
    }

    #[test]
    fn packing_never_targets_across_conversations() {
        let a = rendered(&[1, 5, 6, 2], &[false, false, true, true]);
        let b = rendered(&[1, 7, 8, 2], &[true, true, true, true]);
        let c = rendered(&[1, 9, 2], &[false, true, true]);
        let items: Vec<_> = [a, b, c]
            .into_iter()
            .map(|r| {
                let m = r.assistant.clone();
                (r, m)
            })
            .collect();
        let rows = rows_from_rendered(&items, 8, true);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].inputs, [1, 5, 6, 2, 1, 7, 8, 0]);
        // Position 3 holds a's EOS; the next token (b's BOS) is not its target, even though b's
        // mask is true there.
        assert_eq!(rows[0].targets, [-1, 6, 2, -1, 7, 8, 2, -1]);
        assert_eq!(rows[1].inputs, [1, 9, 0, 0, 0, 0, 0, 0]);
        assert_eq!(rows[1].targets, [9, 2, -1, -1, -1, -1, -1, -1]);
    }

    #[test]
    fn truncation_drops_leading_exchanges_and_keeps_system() {
        let msgs = vec![
            Message::new("system", "S"),
            Message::new("user", "u1"),
            Message::new("assistant", "a1"),
            Message::new("user", "u2"),
            Message::new("assistant", "a2"),
            Message::new("user", "u3"),
            Message::new("assistant", "a3"),
        ];
        // One token per message.
        let count = |m: &[Message]| Ok(rendered(&vec![0; m.len()], &vec![true; m.len()]));
        let opts = |seq_len, overflow| ChatOptions {
            seq_len,
            overflow,
            ..Default::default()
        };
        let Fit::Fits(r, truncated) =
            fit_conversation(&msgs, &opts(6, Overflow::TruncateLeft), count).unwrap()
        else {
            panic!()
        };
        assert_eq!((r.len(), truncated), (7, false));
        let mut seen = vec![];
        let Fit::Fits(r, truncated) = fit_conversation(
            &msgs,
            &opts(3, Overflow::TruncateLeft),
            |m: &[Message]| {
                seen.push(
                    m.iter()
                        .map(|m| m.content.clone())
                        .collect::<Vec<_>>()
                        .join(" "),
                );
                count(m)
            },
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!((r.len(), truncated), (3, true));
        assert_eq!(seen, ["S u1 a1 u2 a2 u3 a3", "S u2 a2 u3 a3", "S u3 a3"]);
        assert!(matches!(
            fit_conversation(&msgs, &opts(1, Overflow::TruncateLeft), count).unwrap(),
            Fit::TooLong
        ));
        assert!(matches!(
            fit_conversation(&msgs, &opts(5, Overflow::Drop), count).unwrap(),
            Fit::TooLong
        ));
    }

    #[test]
    fn pair_rows_keep_the_end() {
        let r = rendered(&[1, 3, 4, 5, 2], &[false, false, false, true, true]);
        let p = PreferencePair {
            chosen: r.clone(),
            rejected: rendered(&[1, 3, 4, 6], &[false, false, false, true]),
            origin: "x:1".into(),
            key: 0,
        };
        let (c, rj) = pair_rows(&p, 6);
        assert_eq!(c.targets, [-1, -1, 5, 2, -1, -1]);
        assert_eq!(rj.targets, [-1, -1, 6, -1, -1, -1]);
        let (c, _) = pair_rows(&p, 3);
        assert_eq!(c.inputs, [3, 4, 5]);
        assert_eq!(c.targets, [-1, 5, 2]);
    }
}
