//! Log-likelihoods of tokenised (context, continuation) requests, many per forward pass.
//!
//! Sequences longer than the model's context are cut from the left, as the harness does
//! (`(context + continuation)[-(max_len + 1):][:-1]` is the input), so the continuation is
//! always scored whole. Two strategies, which give the same numbers:
//!
//! - [`Strategy::Shared`] (default): requests with the same context ids are grouped; each
//!   context is run once into a KV cache (its last position already scores every
//!   continuation's first token), the cache is forked once per continuation, and all
//!   continuations' remaining tokens run in one batched pass. Contexts of equal length share
//!   one prefill pass (the cache holds one length for the whole batch). A question's choices
//!   thus cost its context once plus their own tokens; one-token answers (BoolQ) cost nothing
//!   beyond the context.
//! - [`Strategy::Batched`]: each request is its own sequence `context + continuation[..-1]`
//!   (one whose tokens are a prefix of another's is scored inside it), sorted by length and run
//!   `batch` at a time, right-padded. Fewer, larger passes; contexts are recomputed per choice.

use anyhow::{bail, Result};
use serde::Serialize;
use std::collections::HashMap;
use std::str::FromStr;
use tinyllama_engine::infer::KvCache;
use tinyllama_engine::{Backend, Llama, RowTarget, TokenScore};

/// A tokenised request; `continuation` must be non-empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokRequest {
    pub context: Vec<u32>,
    pub continuation: Vec<u32>,
}

/// Summed natural-log probability of the continuation, and whether greedy decoding would have
/// produced every one of its tokens.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Scored {
    pub loglik: f64,
    pub greedy: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    Shared,
    Batched,
}

impl FromStr for Strategy {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "shared" => Strategy::Shared,
            "batched" => Strategy::Batched,
            _ => bail!("--strategy must be shared or batched (got `{s}`)"),
        })
    }
}

/// Id used to right-pad shorter sequences of a batch: padding follows every scored position,
/// and attention is causal, so its value never matters.
const PAD: u32 = 0;

/// The request after left truncation: (context, continuation) with total ≤ `max_len + 1`.
fn truncate(r: &TokRequest, max_len: usize) -> Result<(&[u32], &[u32])> {
    let cont = &r.continuation[..];
    if cont.is_empty() {
        bail!("a continuation encoded to no tokens");
    }
    if cont.len() > max_len {
        bail!(
            "a continuation of {} tokens does not fit the model's context of {max_len}",
            cont.len()
        );
    }
    let over = (r.context.len() + cont.len()).saturating_sub(max_len + 1);
    Ok((&r.context[over..], cont))
}

/// Accumulates per-token scores into per-request sums.
struct Sums(Vec<Scored>);

impl Sums {
    fn new(n: usize) -> Self {
        Sums(vec![
            Scored {
                loglik: 0.0,
                greedy: true
            };
            n
        ])
    }
    fn add(&mut self, req: usize, s: TokenScore) {
        self.0[req].loglik += s.logprob;
        self.0[req].greedy &= s.greedy;
    }
}

/// Scores every request; `progress(done)` is called with the number of requests finished.
pub fn score<B: Backend>(
    model: &Llama<B>,
    reqs: &[TokRequest],
    strategy: Strategy,
    batch: usize,
    progress: impl FnMut(usize),
) -> Result<Vec<Scored>> {
    let max_len = model.cfg.max_seq_len;
    let cut: Vec<(&[u32], &[u32])> = reqs
        .iter()
        .map(|r| truncate(r, max_len))
        .collect::<Result<_>>()?;
    let batch = batch.max(1);
    match strategy {
        Strategy::Shared => shared(model, &cut, batch, progress),
        Strategy::Batched => batched(model, &cut, batch, progress),
    }
}

fn shared<B: Backend>(
    model: &Llama<B>,
    reqs: &[(&[u32], &[u32])],
    batch: usize,
    mut progress: impl FnMut(usize),
) -> Result<Vec<Scored>> {
    // Requests grouped by identical context, in order of first appearance.
    let mut index: HashMap<&[u32], usize> = HashMap::new();
    let mut groups: Vec<(&[u32], Vec<usize>)> = vec![];
    for (i, &(ctx, _)) in reqs.iter().enumerate() {
        let g = *index.entry(ctx).or_insert_with(|| {
            groups.push((ctx, vec![]));
            groups.len() - 1
        });
        groups[g].1.push(i);
    }
    // Longest first, so a memory problem shows at once and the time estimate errs high.
    groups.sort_by_key(|(ctx, _)| std::cmp::Reverse(ctx.len()));
    let mut sums = Sums::new(reqs.len());
    let mut done = 0;
    let mut start = 0;
    while start < groups.len() {
        let len = groups[start].0.len();
        let end = (start..groups.len())
            .take(batch)
            .take_while(|&g| groups[g].0.len() == len)
            .last()
            .unwrap()
            + 1;
        let bucket = &groups[start..end];
        // Prefill: every context once; its last position scores each first continuation token.
        let tokens: Vec<u32> = bucket.iter().flat_map(|(c, _)| c.iter().copied()).collect();
        let mut targets = vec![];
        let mut owners = vec![];
        for (slot, (_, members)) in bucket.iter().enumerate() {
            for &r in members {
                targets.push(RowTarget {
                    row: slot * len + len - 1,
                    token: reqs[r].1[0],
                });
                owners.push(r);
            }
        }
        let mut cache = model.new_cache(bucket.len(), len);
        let scores = model.score_cached(&mut cache, &tokens, len, &targets)?;
        for (&r, s) in owners.iter().zip(scores) {
            sums.add(r, s);
        }
        // Continuations of two or more tokens: one forked cache slot each. Sorted by length
        // and cut where the length drops below 3/4 of a pass's longest, so that padding stays
        // under a quarter of each pass (PIQA's answers range from a few tokens to hundreds).
        let mut longer: Vec<(usize, usize)> = vec![];
        for (slot, (_, members)) in bucket.iter().enumerate() {
            for &r in members.iter().filter(|&&r| reqs[r].1.len() > 1) {
                longer.push((slot, r));
            }
        }
        longer.sort_by_key(|&(_, r)| std::cmp::Reverse(reqs[r].1.len()));
        let mut rest = &longer[..];
        while let Some(&(_, first)) = rest.first() {
            let m = reqs[first].1.len() - 1;
            let k = rest
                .iter()
                .take_while(|&&(_, r)| 4 * (reqs[r].1.len() - 1) >= 3 * m)
                .count();
            continue_forked(model, &cache, len, &rest[..k], reqs, &mut sums)?;
            rest = &rest[k..];
        }
        done += bucket.iter().map(|(_, m)| m.len()).sum::<usize>();
        progress(done);
        start = end;
    }
    Ok(sums.0)
}

/// Scores continuations (`(slot of cache, request)`, longest first) from a forked cache
/// whose slots hold their contexts of `len` tokens: tokens 2.. of each, in one pass.
fn continue_forked<B: Backend>(
    model: &Llama<B>,
    cache: &KvCache<B>,
    len: usize,
    conts: &[(usize, usize)],
    reqs: &[(&[u32], &[u32])],
    sums: &mut Sums,
) -> Result<()> {
    let m = reqs[conts[0].1].1.len() - 1;
    let slots: Vec<usize> = conts.iter().map(|&(slot, _)| slot).collect();
    let mut forked = model.fork_cache(cache, &slots, len + m)?;
    let mut tokens = vec![PAD; conts.len() * m];
    let mut targets = vec![];
    let mut owners = vec![];
    for (s, &(_, r)) in conts.iter().enumerate() {
        let cont = reqs[r].1;
        tokens[s * m..s * m + cont.len() - 1].copy_from_slice(&cont[..cont.len() - 1]);
        for (j, &t) in cont[1..].iter().enumerate() {
            targets.push(RowTarget {
                row: s * m + j,
                token: t,
            });
            owners.push(r);
        }
    }
    let scores = model.score_cached(&mut forked, &tokens, m, &targets)?;
    for (&r, s) in owners.iter().zip(scores) {
        sums.add(r, s);
    }
    Ok(())
}

fn batched<B: Backend>(
    model: &Llama<B>,
    reqs: &[(&[u32], &[u32])],
    batch: usize,
    mut progress: impl FnMut(usize),
) -> Result<Vec<Scored>> {
    let seqs: Vec<Vec<u32>> = reqs
        .iter()
        .map(|(c, k)| c.iter().chain(&k[..k.len() - 1]).copied().collect())
        .collect();
    // A sequence that is a prefix of another is scored inside it. In lexicographic order a
    // prefix is immediately followed by one of its extensions, so each request's host is the
    // host of its successor when the successor extends it.
    let mut order: Vec<usize> = (0..seqs.len()).collect();
    order.sort_by(|&a, &b| seqs[a].cmp(&seqs[b]));
    let mut host = vec![0; seqs.len()];
    for k in (0..order.len()).rev() {
        let i = order[k];
        host[i] = match order.get(k + 1) {
            Some(&j) if seqs[j].starts_with(&seqs[i]) => host[j],
            _ => i,
        };
    }
    let mut guests: HashMap<usize, Vec<usize>> = HashMap::new();
    for (i, &h) in host.iter().enumerate() {
        guests.entry(h).or_default().push(i);
    }
    let mut hosts: Vec<usize> = guests.keys().copied().collect();
    hosts.sort_by_key(|&h| (std::cmp::Reverse(seqs[h].len()), h));
    let mut sums = Sums::new(reqs.len());
    let mut done = 0;
    for chunk in hosts.chunks(batch) {
        let n = seqs[chunk[0]].len();
        let mut tokens = vec![PAD; chunk.len() * n];
        let mut targets = vec![];
        let mut owners = vec![];
        for (b, &h) in chunk.iter().enumerate() {
            tokens[b * n..b * n + seqs[h].len()].copy_from_slice(&seqs[h]);
            for &r in &guests[&h] {
                let (ctx, cont) = reqs[r];
                for (j, &t) in cont.iter().enumerate() {
                    targets.push(RowTarget {
                        row: b * n + ctx.len() - 1 + j,
                        token: t,
                    });
                    owners.push(r);
                }
                done += 1;
            }
        }
        let mut cache = model.new_cache(chunk.len(), n);
        let scores = model.score_cached(&mut cache, &tokens, n, &targets)?;
        for (&r, s) in owners.iter().zip(scores) {
            sums.add(r, s);
        }
        progress(done);
    }
    Ok(sums.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tinyllama_engine::CpuBackend;
    use tinyllama_model::{presets, HostWeights};

    fn model() -> Llama<CpuBackend<f32>> {
        let cfg = presets::get("test-tiny").unwrap();
        Llama::new(CpuBackend::<f32>::new(), &HostWeights::init(&cfg, 3)).unwrap()
    }

    /// The log-likelihood straight from full logits of the whole sequence.
    fn direct(m: &Llama<CpuBackend<f32>>, ctx: &[u32], cont: &[u32]) -> (f64, bool) {
        let v = m.cfg.vocab_size;
        let whole: Vec<u32> = ctx.iter().chain(cont).copied().collect();
        let inputs = &whole[..whole.len() - 1];
        let logits = m.logits(inputs, 1, inputs.len()).unwrap();
        let (mut ll, mut greedy) = (0.0, true);
        for (j, &t) in cont.iter().enumerate() {
            let row = &logits[(ctx.len() - 1 + j) * v..(ctx.len() + j) * v];
            let mx = row.iter().cloned().fold(f32::MIN, f32::max) as f64;
            let lse = mx + row.iter().map(|&x| (x as f64 - mx).exp()).sum::<f64>().ln();
            ll += row[t as usize] as f64 - lse;
            greedy &= (0..v).all(|i| row[i] <= row[t as usize]);
        }
        (ll, greedy)
    }

    fn requests() -> Vec<TokRequest> {
        let r = |c: &[u32], k: &[u32]| TokRequest {
            context: c.to_vec(),
            continuation: k.to_vec(),
        };
        vec![
            r(&[1, 5, 9, 2], &[7]),
            r(&[1, 5, 9, 2], &[8, 3, 3]),
            r(&[1, 5, 9, 2], &[8]),
            r(&[1, 5, 9, 2], &[8, 3]),
            r(&[1, 6], &[4, 4, 4, 4, 4]),
            r(&[2, 6], &[9]),
            r(&[1, 5, 9, 3], &[10, 11]),
        ]
    }

    #[test]
    fn both_strategies_match_direct_scoring_at_any_batch() {
        let m = model();
        let reqs = requests();
        for strategy in [Strategy::Shared, Strategy::Batched] {
            for batch in [1, 2, 16] {
                let mut last = 0;
                let got = score(&m, &reqs, strategy, batch, |d| last = d).unwrap();
                assert_eq!(last, reqs.len());
                for (r, g) in reqs.iter().zip(&got) {
                    let (ll, greedy) = direct(&m, &r.context, &r.continuation);
                    assert!((g.loglik - ll).abs() < 1e-5, "{strategy:?} {batch}: {r:?}");
                    assert_eq!(g.greedy, greedy);
                }
            }
        }
    }

    #[test]
    fn long_requests_are_cut_from_the_left() {
        let m = model();
        let max = m.cfg.max_seq_len;
        let ctx: Vec<u32> = (0..max as u32 + 10).map(|i| i % 50 + 1).collect();
        let long = TokRequest {
            context: ctx.clone(),
            continuation: vec![3, 4],
        };
        let got = score(&m, &[long], Strategy::Shared, 4, |_| {}).unwrap();
        let (ll, _) = direct(&m, &ctx[ctx.len() - (max - 1)..], &[3, 4]);
        assert!((got[0].loglik - ll).abs() < 1e-5);
        let too_long = TokRequest {
            context: vec![1],
            continuation: vec![2; max + 1],
        };
        assert!(score(&m, &[too_long], Strategy::Batched, 4, |_| {}).is_err());
    }
}
