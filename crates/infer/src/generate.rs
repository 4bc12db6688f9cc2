//! Generation loops over [`Runner::step`]: one prompt with a streaming callback, or several
//! prompts decoded together as one batch.

use crate::runner::{Finish, GenParams, Runner, Sequence};
use anyhow::Result;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct Output {
    pub tokens: Vec<u32>,
    pub finish: Finish,
    pub prompt_tokens: usize,
    /// Draft tokens proposed and accepted (0 without a draft model).
    pub proposed: usize,
    pub accepted: usize,
    /// Time until the first new token (prompt processing) and after it.
    pub prefill_time: Duration,
    pub decode_time: Duration,
}

impl Output {
    fn from(s: &Sequence, prefill_time: Duration, decode_time: Duration) -> Self {
        Output {
            tokens: s.generated().to_vec(),
            finish: s.finish.unwrap_or(Finish::Cancelled),
            prompt_tokens: s.prompt_len,
            proposed: s.proposed,
            accepted: s.accepted,
            prefill_time,
            decode_time,
        }
    }

    /// Fraction of proposed draft tokens that were accepted.
    pub fn acceptance_rate(&self) -> Option<f64> {
        (self.proposed > 0).then(|| self.accepted as f64 / self.proposed as f64)
    }
}

/// Generates after `prompt`; `on_tokens` sees new tokens as they are produced (several at once
/// with speculative decoding) and may return `false` to stop (the finish reason is then
/// [`Finish::StopString`]).
pub fn generate(
    runner: &Runner,
    prompt: &[u32],
    params: GenParams,
    mut on_tokens: impl FnMut(&[u32]) -> bool,
) -> Result<Output> {
    let mut s = runner.new_sequence(prompt, params)?;
    let t0 = Instant::now();
    let mut first = None;
    while s.finish.is_none() {
        runner.step(&mut [&mut s])?;
        if !s.new_tokens.is_empty() {
            first.get_or_insert_with(|| t0.elapsed());
            if !on_tokens(&s.new_tokens) {
                s.finish = Some(Finish::StopString);
            }
        }
    }
    let total = t0.elapsed();
    let pre = first.unwrap_or(total);
    Ok(Output::from(&s, pre, total - pre))
}

/// Decodes several prompts as one batch (each with its own parameters); returns outputs in
/// prompt order.
pub fn generate_batch(
    runner: &Runner,
    prompts: &[Vec<u32>],
    params: &[GenParams],
) -> Result<Vec<Output>> {
    assert_eq!(prompts.len(), params.len());
    let mut seqs = prompts
        .iter()
        .zip(params)
        .map(|(p, g)| runner.new_sequence(p, g.clone()))
        .collect::<Result<Vec<_>>>()?;
    let t0 = Instant::now();
    let mut first: Vec<Option<Duration>> = vec![None; seqs.len()];
    let mut done: Vec<Option<Duration>> = vec![None; seqs.len()];
    while seqs.iter().any(|s| s.finish.is_none()) {
        let mut active: Vec<&mut Sequence> =
            seqs.iter_mut().filter(|s| s.finish.is_none()).collect();
        runner.step(&mut active)?;
        let now = t0.elapsed();
        for (i, s) in seqs.iter().enumerate() {
            if !s.new_tokens.is_empty() {
                first[i].get_or_insert(now);
            }
            if s.finish.is_some() {
                done[i].get_or_insert(now);
            }
        }
    }
    Ok(seqs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let end = done[i].unwrap_or_default();
            let pre = first[i].unwrap_or(end);
            Output::from(s, pre, end.saturating_sub(pre))
        })
        .collect())
}

/// Text produced by [`generate_text`].
#[derive(Clone, Debug)]
pub struct TextOutput {
    pub text: String,
    pub output: Output,
}

/// [`generate`] with detokenization and stop strings: `on_text` receives text as it becomes
/// final (never part of a stop string) and may return `false` to stop
/// ([`Finish::Cancelled`]). The returned text excludes the stop string.
pub fn generate_text(
    runner: &Runner,
    tok: &tinyllama_model::tokenizer::Tokenizer,
    prompt: &[u32],
    params: GenParams,
    stops: &[String],
    mut on_text: impl FnMut(&str) -> bool,
) -> Result<TextOutput> {
    use crate::stop::StopMatcher;
    use crate::text::TextStream;
    let mut ts = TextStream::new(prompt);
    let mut sm = StopMatcher::new(stops);
    let mut text = String::new();
    let mut err = None;
    let mut finish = None;
    let mut output = generate(runner, prompt, params, |new| {
        let piece = match ts.push(tok, new) {
            Ok(p) => p,
            Err(e) => {
                err = Some(e);
                return false;
            }
        };
        let (emit, stop) = sm.push(&piece);
        text.push_str(&emit);
        let go_on = emit.is_empty() || on_text(&emit);
        if stop {
            finish = Some(Finish::StopString);
        } else if !go_on {
            finish = Some(Finish::Cancelled);
        }
        finish.is_none()
    })?;
    if let Some(e) = err {
        return Err(e);
    }
    if finish.is_none() {
        let (emit, stop) = sm.push(&ts.flush(tok)?);
        let mut rest = emit;
        if stop {
            finish = Some(Finish::StopString);
        } else {
            rest.push_str(&sm.flush());
        }
        if !rest.is_empty() {
            on_text(&rest);
            text.push_str(&rest);
        }
    }
    if let Some(f) = finish {
        output.finish = f;
    }
    Ok(TextOutput { text, output })
}
