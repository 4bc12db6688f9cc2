//! One task end to end: the loaded items are tokenised under the policy, scored, and reduced
//! to the harness's metrics.

use crate::encode::{encode_pair, Policy};
use crate::metrics::{argmax, argmax_norm, mean_metric, perplexity, Metric};
use crate::scorer::{score, Scored, Strategy, TokRequest};
use crate::tasks::{Layout, Loaded, Problem, Task};
use anyhow::Result;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;
use tinyllama_engine::{Backend, Llama};
use tinyllama_model::tokenizer::Tokenizer;

#[derive(Clone, Copy, Debug)]
pub struct TaskOptions {
    /// Only the first N items (after malformed rows are dropped), as the harness's `--limit`.
    pub limit: Option<usize>,
    /// Contexts (shared strategy) or sequences (batched) per forward pass.
    pub batch: usize,
    pub strategy: Strategy,
    pub policy: Policy,
}

/// Per-item outcome, for `--samples`.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    pub line: usize,
    pub gold: usize,
    pub loglik: Vec<f64>,
    pub greedy: Vec<bool>,
    pub tokens: Vec<usize>,
}

#[derive(Debug, Serialize)]
pub struct TaskResult {
    pub task: Task,
    pub file: PathBuf,
    pub layouts: BTreeMap<Layout, usize>,
    /// Items scored.
    pub n: usize,
    /// Rows skipped as malformed or unscorable, and the first few reasons (`file:line: why`).
    pub skipped: usize,
    pub skipped_examples: Vec<String>,
    pub metrics: Vec<Metric>,
    /// (context, continuation) requests scored, and their tokens (context + continuation).
    pub requests: usize,
    pub tokens: usize,
    pub elapsed_s: f64,
    pub items_per_s: f64,
    #[serde(skip)]
    pub samples: Vec<Sample>,
}

impl TaskResult {
    pub fn metric(&self, name: &str) -> Option<&Metric> {
        self.metrics.iter().find(|m| m.name == name)
    }
}

/// How many skipped rows are quoted in reports.
const QUOTED: usize = 5;

/// Tokenises, scores and reduces one task. `progress(done, total)` counts requests.
pub fn evaluate<B: Backend>(
    model: &Llama<B>,
    tok: &Tokenizer,
    mut loaded: Loaded,
    opts: &TaskOptions,
    mut progress: impl FnMut(usize, usize),
) -> Result<TaskResult> {
    let t0 = Instant::now();
    if let Some(n) = opts.limit {
        loaded.items.truncate(n);
    }
    let max_len = model.cfg.max_seq_len;
    let mut reqs: Vec<TokRequest> = vec![];
    let mut kept = vec![];
    for (line, item) in &loaded.items {
        let mut these = vec![];
        let mut problem = None;
        for r in &item.requests {
            let (context, continuation) =
                encode_pair(tok, &opts.policy, &r.context, &r.continuation)?;
            if continuation.is_empty() {
                problem = Some(format!(
                    "continuation {:?} encodes to no tokens after its context (the tokenizer \
                     merges it into the context's last token; --encoding separate scores it)",
                    r.continuation
                ));
            } else if continuation.len() > max_len {
                problem = Some(format!(
                    "continuation of {} tokens exceeds the model's context of {max_len}",
                    continuation.len()
                ));
            }
            these.push(TokRequest {
                context,
                continuation,
            });
        }
        match problem {
            Some(message) => loaded.skipped.push(Problem {
                line: *line,
                message,
            }),
            None => {
                kept.push((*line, item, reqs.len()));
                reqs.extend(these);
            }
        }
    }
    let total = reqs.len();
    progress(0, total);
    let scores = if reqs.is_empty() {
        vec![]
    } else {
        score(model, &reqs, opts.strategy, opts.batch, |d| {
            progress(d, total)
        })?
    };
    let samples: Vec<Sample> = kept
        .iter()
        .map(|&(line, item, first)| {
            let k = item.requests.len();
            let s: &[Scored] = &scores[first..first + k];
            Sample {
                line,
                gold: item.gold,
                loglik: s.iter().map(|x| x.loglik).collect(),
                greedy: s.iter().map(|x| x.greedy).collect(),
                tokens: reqs[first..first + k]
                    .iter()
                    .map(|r| r.continuation.len())
                    .collect(),
            }
        })
        .collect();
    let metrics = reduce(loaded.task, &kept, &samples);
    let elapsed = t0.elapsed().as_secs_f64();
    Ok(TaskResult {
        task: loaded.task,
        skipped: loaded.skipped.len(),
        skipped_examples: loaded.skipped_report(QUOTED),
        file: loaded.path.clone(),
        layouts: loaded.layouts.clone(),
        n: samples.len(),
        metrics,
        requests: total,
        tokens: reqs
            .iter()
            .map(|r| r.context.len() + r.continuation.len())
            .sum(),
        elapsed_s: elapsed,
        items_per_s: samples.len() as f64 / elapsed.max(1e-9),
        samples,
    })
}

fn reduce(
    task: Task,
    kept: &[(usize, &crate::tasks::Item, usize)],
    samples: &[Sample],
) -> Vec<Metric> {
    if samples.is_empty() {
        return vec![];
    }
    if task == Task::Lambada {
        let acc: Vec<f64> = samples.iter().map(|s| s.greedy[0] as u8 as f64).collect();
        let lls: Vec<f64> = samples.iter().map(|s| s.loglik[0]).collect();
        return vec![mean_metric("acc", &acc), perplexity(&lls)];
    }
    let acc: Vec<f64> = samples
        .iter()
        .map(|s| (argmax(&s.loglik) == s.gold) as u8 as f64)
        .collect();
    let mut out = vec![mean_metric("acc", &acc)];
    if task.has_acc_norm() {
        let acc_norm: Vec<f64> = samples
            .iter()
            .zip(kept)
            .map(|(s, (_, item, _))| {
                (argmax_norm(&s.loglik, &item.choice_chars) == s.gold) as u8 as f64
            })
            .collect();
        out.push(mean_metric("acc_norm", &acc_norm));
    }
    out
}
