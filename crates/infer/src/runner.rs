//! Stepping sequences: one [`Runner::step`] advances any set of sequences together: new
//! prompts are prefilled (in chunks), running sequences get their next token(s), and with a
//! draft model every sequence gets up to k speculative tokens verified in the same batched
//! target pass. Generation for one prompt, several prompts and the server all go through it.
//!
//! A sequence's last token is kept *pending* (sampled but not yet run through the model), so a
//! step feeds `tokens[cached..]` and samples from the logits of the last position.

use crate::model::{DecodeModel, KvState, SeqInput};
use crate::speculative::accept;
use anyhow::{bail, Result};
use tinyllama_engine::sampling::{distribution, draw, SamplingParams};
use tinyllama_model::rng::Rng;

/// Prompt tokens run per step and sequence; longer prompts are prefilled over several steps so
/// that other sequences in the batch keep producing tokens meanwhile.
pub const PREFILL_CHUNK: usize = 512;

#[derive(Clone, Debug)]
pub struct GenParams {
    /// New tokens at most.
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    pub seed: u64,
    /// Token ids that end generation (not included in the output), normally EOS.
    pub stop_ids: Vec<u32>,
}

/// The log-probability of a token under the model (raw logits, before temperature and the
/// other sampling settings, as OpenAI reports them) and the `top` most likely tokens there.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLogprob {
    pub token: u32,
    pub logprob: f32,
    /// The most likely tokens with their log-probabilities, most likely first.
    pub top: Vec<(u32, f32)>,
}

/// `token`'s log-probability in the distribution of `logits`, with the `top` best tokens.
pub fn token_logprob(logits: &[f32], token: u32, top: usize) -> TokenLogprob {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&x| ((x - max) as f64).exp()).sum();
    let lse = max + sum.ln() as f32;
    let lp = |i: usize| logits[i] - lse;
    let mut best: Vec<usize> = (0..logits.len()).collect();
    let top = top.min(logits.len());
    if top > 0 && top < best.len() {
        best.select_nth_unstable_by(top - 1, |&a, &b| logits[b].total_cmp(&logits[a]));
    }
    best.truncate(top);
    best.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    TokenLogprob {
        token,
        logprob: lp(token as usize),
        top: best.into_iter().map(|i| (i as u32, lp(i))).collect(),
    }
}

/// Why a sequence ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// A stop token (EOS).
    Eos,
    /// `max_tokens` reached.
    Length,
    /// The model's context is full.
    Context,
    /// The consumer found a stop string.
    StopString,
    /// The consumer went away or asked to stop.
    Cancelled,
}

impl Finish {
    /// The OpenAI `finish_reason`.
    pub fn openai(self) -> &'static str {
        match self {
            Finish::Eos | Finish::StopString | Finish::Cancelled => "stop",
            Finish::Length | Finish::Context => "length",
        }
    }
    pub fn describe(self) -> &'static str {
        match self {
            Finish::Eos => "end of sequence",
            Finish::Length => "max tokens",
            Finish::Context => "context full",
            Finish::StopString => "stop string",
            Finish::Cancelled => "cancelled",
        }
    }
}

/// Records the log-probability of the token `emit` just appended (if it appended one) when
/// the sequence asked for them.
fn note_logprob(s: &mut Sequence, row: &[f32]) {
    if let (Some(top), Some(&t)) = (s.logprobs, s.new_tokens.last()) {
        if s.new_logprobs.len() < s.new_tokens.len() {
            s.new_logprobs.push(token_logprob(row, t, top));
        }
    }
}

/// A draft model for speculative decoding.
pub struct Draft {
    pub model: DecodeModel,
    /// Tokens proposed per step.
    pub k: usize,
}

/// The target model, and optionally a draft model.
pub struct Runner {
    pub target: DecodeModel,
    pub draft: Option<Draft>,
}

pub struct Sequence {
    /// Prompt followed by the generated tokens.
    pub tokens: Vec<u32>,
    pub prompt_len: usize,
    pub params: GenParams,
    target: KvState,
    draft: Option<KvState>,
    rng: Rng,
    pub finish: Option<Finish>,
    /// Tokens produced by the last step.
    pub new_tokens: Vec<u32>,
    /// When set, each produced token's log-probability with this many alternatives is kept in
    /// `new_logprobs`, one per entry of `new_tokens`.
    pub logprobs: Option<usize>,
    pub new_logprobs: Vec<TokenLogprob>,
    /// Draft tokens proposed and accepted so far.
    pub proposed: usize,
    pub accepted: usize,
}

impl Sequence {
    pub fn generated(&self) -> &[u32] {
        &self.tokens[self.prompt_len..]
    }
    pub fn is_finished(&self) -> bool {
        self.finish.is_some()
    }
}

/// What one sequence does in a step.
enum Plan {
    Idle,
    /// Run `n` more prompt tokens, no sampling yet.
    Prefill(usize),
    /// Sample, with `k` draft tokens to verify.
    Decode {
        k: usize,
    },
}

impl Runner {
    pub fn new(target: DecodeModel, draft: Option<Draft>) -> Result<Self> {
        if let Some(d) = &draft {
            if d.model.cfg.vocab_size != target.cfg.vocab_size {
                bail!(
                    "the draft model has a vocabulary of {} tokens and the target {}; speculative decoding needs the same tokenizer",
                    d.model.cfg.vocab_size,
                    target.cfg.vocab_size
                );
            }
            if d.k == 0 {
                bail!("speculative decoding needs at least one draft token per step (k ≥ 1)");
            }
        }
        Ok(Runner { target, draft })
    }

    /// The longest sequence (prompt + output) the target can hold.
    pub fn context(&self) -> usize {
        self.target.cfg.max_seq_len
    }

    /// Checks a prompt and makes a sequence ready to step.
    pub fn new_sequence(&self, prompt: &[u32], params: GenParams) -> Result<Sequence> {
        if prompt.is_empty() {
            bail!("the prompt is empty; generation needs at least one token (e.g. BOS)");
        }
        let ctx = self.context();
        if prompt.len() >= ctx {
            bail!(
                "the prompt has {} tokens, leaving no room in the model's context of {ctx}",
                prompt.len()
            );
        }
        let v = self.target.cfg.vocab_size;
        if let Some(bad) = prompt.iter().find(|&&t| t as usize >= v) {
            bail!("token id {bad} is outside the vocabulary of {v}");
        }
        let finish = (params.max_tokens == 0).then_some(Finish::Length);
        Ok(Sequence {
            tokens: prompt.to_vec(),
            prompt_len: prompt.len(),
            rng: Rng::new(params.seed),
            params,
            target: self.target.new_state(),
            draft: self.draft.as_ref().map(|d| d.model.new_state()),
            finish,
            new_tokens: vec![],
            logprobs: None,
            new_logprobs: vec![],
            proposed: 0,
            accepted: 0,
        })
    }

    fn plan(&self, s: &Sequence) -> Plan {
        if s.finish.is_some() {
            return Plan::Idle;
        }
        let pending = s.tokens.len() - s.target.len();
        if pending > PREFILL_CHUNK {
            return Plan::Prefill(PREFILL_CHUNK);
        }
        let Some(d) = &self.draft else {
            return Plan::Decode { k: 0 };
        };
        let len = s.tokens.len();
        // Draft tokens occupy positions len..len+k of both models; the step emits up to k + 1
        // tokens and must not pass max_tokens.
        let left = s.params.max_tokens - s.generated().len();
        let k =
            d.k.min(left.saturating_sub(1))
                .min(self.context().saturating_sub(len))
                .min(d.model.cfg.max_seq_len.saturating_sub(len));
        Plan::Decode { k }
    }

    /// Advances every unfinished sequence by one step. Afterwards each sequence's
    /// `new_tokens` holds what it produced (possibly nothing while prefilling) and `finish`
    /// says whether it has ended.
    pub fn step(&self, seqs: &mut [&mut Sequence]) -> Result<()> {
        for s in seqs.iter_mut() {
            s.new_tokens.clear();
            s.new_logprobs.clear();
        }
        let plans: Vec<Plan> = seqs.iter().map(|s| self.plan(s)).collect();
        let drafted = self.run_draft(seqs, &plans)?;

        // One target pass for everyone: prompt chunks, pending tokens, draft tokens to verify.
        let mut inputs: Vec<Vec<u32>> = Vec::new();
        let mut who = Vec::new();
        for (i, (s, plan)) in seqs.iter().zip(&plans).enumerate() {
            let fed = s.target.len();
            match plan {
                Plan::Idle => continue,
                Plan::Prefill(n) => inputs.push(s.tokens[fed..fed + n].to_vec()),
                Plan::Decode { .. } => {
                    let mut t = s.tokens[fed..].to_vec();
                    t.extend(drafted[i].iter().map(|d| d.0));
                    inputs.push(t);
                }
            }
            who.push(i);
        }
        if who.is_empty() {
            return Ok(());
        }
        let logits = {
            let mut batch: Vec<SeqInput> = Vec::with_capacity(who.len());
            let mut rest: &mut [&mut Sequence] = seqs;
            let mut base = 0;
            for (&i, toks) in who.iter().zip(&inputs) {
                let (_, tail) = std::mem::take(&mut rest).split_at_mut(i - base);
                let (s, tail) = tail.split_first_mut().expect("index in range");
                rest = tail;
                base = i + 1;
                let n_logits = match plans[i] {
                    Plan::Decode { k } => k + 1,
                    _ => 0,
                };
                batch.push(SeqInput {
                    state: &mut s.target,
                    tokens: toks,
                    logits: n_logits,
                });
            }
            self.target.forward(&mut batch)?
        };
        let vocab = self.target.cfg.vocab_size;
        for (&i, rows) in who.iter().zip(&logits) {
            let Plan::Decode { k } = plans[i] else {
                continue;
            };
            let s = &mut *seqs[i];
            let base_len = s.tokens.len();
            let mut kept = 0;
            let mut emitted_all = true;
            for (j, (x, q)) in drafted[i].iter().enumerate() {
                let p = distribution(
                    &rows[j * vocab..(j + 1) * vocab],
                    &s.params.sampling,
                    &s.tokens,
                );
                let row = &rows[j * vocab..(j + 1) * vocab];
                match accept(&p, q, *x, &mut s.rng) {
                    Ok(()) => {
                        kept += 1;
                        let go = self.emit(s, *x);
                        note_logprob(s, row);
                        if !go {
                            emitted_all = false;
                            break;
                        }
                    }
                    Err(t) => {
                        self.emit(s, t);
                        note_logprob(s, row);
                        emitted_all = false;
                        break;
                    }
                }
            }
            if emitted_all {
                let p = distribution(
                    &rows[k * vocab..(k + 1) * vocab],
                    &s.params.sampling,
                    &s.tokens,
                );
                let t = draw(&p, &mut s.rng);
                self.emit(s, t);
                note_logprob(s, &rows[k * vocab..(k + 1) * vocab]);
            }
            s.proposed += k;
            s.accepted += kept;
            // Forget the cache entries of rejected draft tokens.
            s.target.truncate(base_len + kept);
            if let Some(d) = &mut s.draft {
                d.truncate(base_len + kept);
            }
        }
        Ok(())
    }

    /// Runs the draft model: catches it up on prompt chunks and proposes k tokens for each
    /// decoding sequence. Returns, per sequence, the draft tokens with the distribution each was
    /// drawn from.
    #[allow(clippy::type_complexity)]
    fn run_draft(
        &self,
        seqs: &mut [&mut Sequence],
        plans: &[Plan],
    ) -> Result<Vec<Vec<(u32, Vec<(u32, f32)>)>>> {
        let mut drafted: Vec<Vec<(u32, Vec<(u32, f32)>)>> = vec![vec![]; seqs.len()];
        let Some(d) = &self.draft else {
            return Ok(drafted);
        };
        let kmax = plans
            .iter()
            .map(|p| match p {
                Plan::Decode { k } => *k,
                _ => 0,
            })
            .max()
            .unwrap_or(0);
        // Round 0 also carries prompt chunks, so the draft keeps pace with the target.
        for round in 0..kmax.max(1) {
            let mut toks: Vec<Vec<u32>> = Vec::new();
            let mut who: Vec<(usize, usize)> = Vec::new();
            for (i, (s, plan)) in seqs.iter().zip(plans).enumerate() {
                let Some(ds) = &s.draft else { continue };
                match *plan {
                    Plan::Prefill(n) if round == 0 => {
                        let end = (s.target.len() + n)
                            .min(s.tokens.len() - 1)
                            .min(d.model.cfg.max_seq_len);
                        if ds.len() < end {
                            toks.push(s.tokens[ds.len()..end].to_vec());
                            who.push((i, 0));
                        }
                    }
                    Plan::Decode { k } if k > round => {
                        let t = if round == 0 {
                            s.tokens[ds.len()..].to_vec()
                        } else {
                            vec![drafted[i][round - 1].0]
                        };
                        toks.push(t);
                        who.push((i, 1));
                    }
                    _ => {}
                }
            }
            if who.is_empty() {
                continue;
            }
            let logits = {
                let mut batch: Vec<SeqInput> = Vec::with_capacity(who.len());
                let mut rest: &mut [&mut Sequence] = seqs;
                let mut base = 0;
                for (&(i, nl), t) in who.iter().zip(&toks) {
                    let (_, tail) = std::mem::take(&mut rest).split_at_mut(i - base);
                    let (s, tail) = tail.split_first_mut().expect("index in range");
                    rest = tail;
                    base = i + 1;
                    batch.push(SeqInput {
                        state: s.draft.as_mut().expect("draft state"),
                        tokens: t,
                        logits: nl,
                    });
                }
                d.model.forward(&mut batch)?
            };
            for (&(i, nl), l) in who.iter().zip(&logits) {
                if nl == 0 {
                    continue;
                }
                let s = &mut *seqs[i];
                let mut hist = s.tokens.clone();
                hist.extend(drafted[i].iter().map(|x| x.0));
                let q = distribution(l, &s.params.sampling, &hist);
                let x = draw(&q, &mut s.rng);
                drafted[i].push((x, q));
            }
        }
        Ok(drafted)
    }

    /// Log-probabilities of every prompt token after the first under the target model (the
    /// first has none), each with the `top` best alternatives; for scoring a text (`echo` with
    /// `logprobs`). Runs on its own cache, beside any decoding.
    pub fn score_prompt(&self, prompt: &[u32], top: usize) -> Result<Vec<TokenLogprob>> {
        let ctx = self.context();
        if prompt.len() > ctx {
            bail!(
                "the prompt has {} tokens, more than the model's context of {ctx}",
                prompt.len()
            );
        }
        let v = self.target.cfg.vocab_size;
        if let Some(bad) = prompt.iter().find(|&&t| t as usize >= v) {
            bail!("token id {bad} is outside the vocabulary of {v}");
        }
        let mut state = self.target.new_state();
        let mut out = Vec::with_capacity(prompt.len().saturating_sub(1));
        // Row i of a chunk starting at `start` predicts token start + i + 1; the last token
        // predicts nothing we need, so it is not fed.
        let fed = prompt.len().saturating_sub(1);
        for start in (0..fed).step_by(PREFILL_CHUNK) {
            let end = (start + PREFILL_CHUNK).min(fed);
            let mut batch = [SeqInput {
                state: &mut state,
                tokens: &prompt[start..end],
                logits: end - start,
            }];
            let rows = self.target.forward(&mut batch)?;
            for (i, pos) in (start..end).enumerate() {
                let row = &rows[0][i * v..(i + 1) * v];
                out.push(token_logprob(row, prompt[pos + 1], top));
            }
        }
        Ok(out)
    }

    /// Appends a sampled token unless it ends the sequence; returns whether the sequence goes
    /// on.
    fn emit(&self, s: &mut Sequence, t: u32) -> bool {
        if s.params.stop_ids.contains(&t) {
            s.finish = Some(Finish::Eos);
            return false;
        }
        s.tokens.push(t);
        s.new_tokens.push(t);
        if s.generated().len() >= s.params.max_tokens {
            s.finish = Some(Finish::Length);
        } else if s.tokens.len() >= self.context() {
            // The pending token could not be run: no position left.
            s.finish = Some(Finish::Context);
        }
        s.finish.is_none()
    }
}
