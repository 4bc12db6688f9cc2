//! Scoring the demo's held-out questions and comparing the pipeline's decisions with the
//! generator's ground truth.

use anyhow::Result;
use serde::Serialize;
use tinyllama_data::report::Report;
use tinyllama_engine::{Activations, Backend, Llama};
use tinyllama_model::tokenizer::Tokenizer;
use tinyllama_synth::{Manifest, PlantedKind, QaItem, QaKind};

#[derive(Clone, Debug, Default, Serialize)]
pub struct KindScore {
    pub n: usize,
    pub correct: usize,
}

impl KindScore {
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.n.max(1) as f64
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct QaResult {
    pub arithmetic: KindScore,
    pub fact: KindScore,
    /// 1 / number of choices.
    pub chance: f64,
}

impl QaResult {
    pub fn overall(&self) -> f64 {
        (self.arithmetic.correct + self.fact.correct) as f64
            / (self.arithmetic.n + self.fact.n).max(1) as f64
    }
    pub fn table(&self) -> String {
        format!(
            "held-out questions (4 choices, chance {:.0}%):\n  arithmetic  {:>3}/{:<3} {:>5.1}%\n  facts       {:>3}/{:<3} {:>5.1}%\n  overall             {:>5.1}%",
            100.0 * self.chance,
            self.arithmetic.correct,
            self.arithmetic.n,
            100.0 * self.arithmetic.accuracy(),
            self.fact.correct,
            self.fact.n,
            100.0 * self.fact.accuracy(),
            100.0 * self.overall()
        )
    }
}

/// Sum of log-probabilities of `cont` after `ctx`.
fn loglik<B: Backend>(model: &Llama<B>, ctx: &[u32], cont: &[u32]) -> Result<f64> {
    let mut seq: Vec<u32> = ctx.to_vec();
    seq.extend_from_slice(cont);
    let n = seq.len() - 1;
    let inputs = &seq[..n];
    let targets: Vec<i32> = (1..=n)
        .map(|j| if j >= ctx.len() { seq[j] as i32 } else { -100 })
        .collect();
    let mut acts = Activations::new(model, 1, n);
    let losses = model.forward_losses(&mut acts, inputs, &targets)?;
    Ok(-losses.iter().map(|&x| x as f64).sum::<f64>())
}

/// Multiple choice by summed log-likelihood of each choice after the question. Documents in
/// the packed shards follow an EOS, so the context starts with one. Question and choice are
/// tokenised together (a choice's leading space belongs to its first token) and the
/// continuation is whatever follows the question's own tokens.
pub fn evaluate<B: Backend>(
    model: &Llama<B>,
    tok: &Tokenizer,
    items: &[QaItem],
) -> Result<QaResult> {
    let mut r = QaResult {
        chance: 0.25,
        ..Default::default()
    };
    for it in items {
        let q = tok.encode(&it.question)?;
        let mut best = (f64::NEG_INFINITY, 0);
        for (i, c) in it.choices.iter().enumerate() {
            let full = tok.encode(&format!("{}{}", it.question, c))?;
            let common = q.iter().zip(&full).take_while(|(a, b)| a == b).count();
            let mut ctx = vec![model.cfg.eos_id];
            ctx.extend_from_slice(&full[..common]);
            let ll = loglik(model, &ctx, &full[common..])?;
            if ll > best.0 {
                best = (ll, i);
            }
        }
        r.chance = 1.0 / it.choices.len().max(1) as f64;
        let k = match it.kind {
            QaKind::Arithmetic => &mut r.arithmetic,
            QaKind::Fact => &mut r.fact,
        };
        k.n += 1;
        if best.1 == it.gold {
            k.correct += 1;
        }
    }
    Ok(r)
}

/// What was planted against what the pipeline removed.
pub fn planted_summary(m: &Manifest, report: &Report) -> String {
    let count = |k: PlantedKind| m.planted.iter().filter(|p| p.kind == k).count();
    let dups_planted = count(PlantedKind::ExactDup) + count(PlantedKind::NearDup);
    let removed = report.dedup.exact_duplicates.docs + report.dedup.near_duplicates.docs;
    let rejected: u64 = report.scan.rejected.values().map(|r| r.docs).sum();
    let offensive: u64 = report
        .scan
        .rejected
        .iter()
        .filter(|(k, _)| k.contains("wordlist"))
        .map(|(_, r)| r.docs)
        .sum();
    let urls: u64 = report
        .scan
        .rejected
        .iter()
        .filter(|(k, _)| k.contains("url"))
        .map(|(_, r)| r.docs)
        .sum();
    format!(
        "ground truth vs pipeline: {} planted duplicates ({} exact, {} near) → {} removed by dedup; \
         {} junk + {} offensive + {} blocked-URL documents planted → {} rejected by filters \
         ({} by the word list, {} by the URL blocklist)",
        dups_planted,
        count(PlantedKind::ExactDup),
        count(PlantedKind::NearDup),
        removed,
        count(PlantedKind::Junk),
        count(PlantedKind::Offensive),
        count(PlantedKind::BlockedUrl),
        rejected,
        offensive,
        urls
    )
}

/// Prompts for the sample generations: a story opening, a fact, a drill question and code.
pub fn sample_prompts(m: &Manifest) -> Vec<String> {
    let mut v = vec!["Once upon a time,".to_string()];
    if let Some(f) = m.facts.first() {
        v.push(format!("Question: {}\nAnswer:", f.rel.question(&f.subject)));
    }
    v.push("Question: What is 6 plus 7?\nAnswer:".into());
    v.push("def ".into());
    v
}
