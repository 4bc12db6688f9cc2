//! The embedded fine-tuning demo behind `tinyllama finetune` with no arguments. It starts from
//! the pre-training demo's model (running that demo first when its export is absent), writes
//! synthetic multi-turn dialogues about the demo world — questions about its lands, creatures,
//! devices and sums, answered by an assistant — and preference pairs whose rejected answer is
//! wrong, then runs the same code paths a user's config would: SFT with LoRA, then DPO. It
//! reports held-out answer accuracy through the chat template before SFT, after SFT and after
//! DPO.
//!
//! Held out: the facts and sums the pre-training demo held out of its question drills (their
//! answers are stated in the pre-training text, their questions never asked) are never asked in
//! a dialogue or a pair either; they are what the accuracy is measured on.

use crate::chat::{render, Rendered};
use crate::run::{self, FinetuneSummary};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tinyllama_engine::sampling::SamplingParams;
use tinyllama_infer::chat_template::{ChatTemplate, Message};
use tinyllama_infer::model::DecodeModel;
use tinyllama_infer::quant::WeightFormat;
use tinyllama_infer::runner::GenParams;
use tinyllama_infer::runner::Runner;
use tinyllama_model::rng::Rng;
use tinyllama_model::tokenizer::Tokenizer;
use tinyllama_synth::arith::{universe, Op, Triple};
use tinyllama_synth::world::Fact;
use tinyllama_synth::{Manifest, QaItem, QaKind};
use tinyllama_train::trainer::RunOptions;

#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Where the fine-tuning demo writes its data, runs and models.
    pub dir: PathBuf,
    /// The pre-training demo's directory (trained first when it holds no export).
    pub pretrain_dir: PathBuf,
    pub seed: u64,
    /// Dialogues for SFT and pairs for DPO.
    pub dialogues: usize,
    pub pairs: usize,
    /// Passes over the dialogues / pairs.
    pub sft_epochs: f64,
    pub dpo_epochs: f64,
    /// Held-out questions scored (at most those the pre-training demo held out).
    pub eval_limit: usize,
    /// Steps of the pre-training demo when it must run first.
    pub pretrain_steps: u64,
    pub quiet: bool,
}

impl DemoOptions {
    pub fn new(dir: impl Into<PathBuf>, pretrain_dir: impl Into<PathBuf>) -> Self {
        DemoOptions {
            dir: dir.into(),
            pretrain_dir: pretrain_dir.into(),
            seed: 11,
            dialogues: 3000,
            pairs: 1000,
            sft_epochs: 2.0,
            dpo_epochs: 1.0,
            eval_limit: 400,
            pretrain_steps: 600,
            quiet: false,
        }
    }
}

/// Held-out accuracy of one model: `(right, asked)` per kind and measure.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Accuracy {
    /// Greedy generation: the reply is exactly the expected sentence with the right answer.
    pub facts_generated: (usize, usize),
    pub sums_generated: (usize, usize),
    /// Four-way choice: the right answer's sentence is the most likely whole reply.
    pub facts_choice: (usize, usize),
    pub sums_choice: (usize, usize),
}

fn rate(x: (usize, usize)) -> f64 {
    x.0 as f64 / x.1.max(1) as f64
}

impl Accuracy {
    pub fn generated(&self) -> f64 {
        rate((
            self.facts_generated.0 + self.sums_generated.0,
            self.facts_generated.1 + self.sums_generated.1,
        ))
    }
    pub fn choice(&self) -> f64 {
        rate((
            self.facts_choice.0 + self.sums_choice.0,
            self.facts_choice.1 + self.sums_choice.1,
        ))
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct DemoSummary {
    pub before: Accuracy,
    pub after_sft: Accuracy,
    pub after_dpo: Accuracy,
    pub sft: FinetuneSummary,
    pub dpo: FinetuneSummary,
    pub chance: f64,
    pub seconds: f64,
    /// The final chat model (a Hugging Face directory).
    pub model_dir: PathBuf,
}

fn stage(o: &DemoOptions, n: usize, what: &str) {
    if !o.quiet {
        eprintln!("\n== {n}/4 {what}");
    }
}

/// The pre-training demo's export, training it first when absent.
fn base_model(o: &DemoOptions) -> Result<PathBuf> {
    let hf = o.pretrain_dir.join("run").join("hf");
    let manifest = o.pretrain_dir.join("raw").join("manifest.json");
    if hf.join("config.json").exists() && manifest.exists() {
        return Ok(hf);
    }
    if !o.quiet {
        eprintln!(
            "no pre-trained demo model in {}; running the pre-training demo first (`tinyllama pretrain`)",
            o.pretrain_dir.display()
        );
    }
    let mut p = tinyllama_demo::DemoOptions::new(&o.pretrain_dir);
    p.steps = o.pretrain_steps;
    p.quiet = o.quiet;
    let s = tinyllama_demo::run(&p)?;
    s.export_dir
        .context("the pre-training demo wrote no Hugging Face export")
}

/// A held-out question: its text, the reply sentence for any answer, the four answers (the
/// pre-training demo's choices) and the right one.
pub struct Question {
    pub kind: QaKind,
    pub text: String,
    pub replies: Vec<String>,
    pub gold: usize,
}

/// The assistant's reply to a fact question: the first declarative phrasing the pre-training
/// text uses for the fact ("The capital of Vorlia is Zent.").
fn fact_reply(f: &Fact, answer: &str) -> String {
    f.rel.statements(&f.subject, answer)[0].clone()
}

/// The assistant's reply to a sum: the worked-step sentence ("7 plus 5 is 12.").
fn sum_reply(t: &Triple, answer: &str) -> String {
    let p = t.phrase();
    let mut c = p.chars();
    let p = match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => p,
    };
    format!("{p} is {answer}.")
}

/// The pre-training demo's held-out items, matched with the facts and sums they ask about.
fn held_out_questions(m: &Manifest, items: &[QaItem], limit: usize) -> Vec<Question> {
    let (mut facts, mut sums) = (Vec::new(), Vec::new());
    for it in items {
        let Some(q) = it
            .question
            .strip_prefix("Question: ")
            .map(|q| q.strip_suffix("\nAnswer:").unwrap_or(q).trim().to_string())
        else {
            continue;
        };
        let choices: Vec<String> = it.choices.iter().map(|c| c.trim().to_string()).collect();
        match it.kind {
            QaKind::Fact => {
                if let Some(f) = m
                    .held_out_facts
                    .iter()
                    .find(|f| f.rel.question(&f.subject) == q)
                {
                    facts.push(Question {
                        kind: it.kind,
                        replies: choices.iter().map(|c| fact_reply(f, c)).collect(),
                        text: q,
                        gold: it.gold,
                    });
                }
            }
            QaKind::Arithmetic => {
                if let Some(t) = m.held_out_arithmetic.iter().find(|t| t.question() == q) {
                    sums.push(Question {
                        kind: it.kind,
                        replies: choices.iter().map(|c| sum_reply(t, c)).collect(),
                        text: q,
                        gold: it.gold,
                    });
                }
            }
        }
    }
    let nf = facts.len().min(limit.div_ceil(2));
    let ns = sums.len().min(limit - nf);
    facts.truncate(nf);
    sums.truncate(ns);
    facts.into_iter().chain(sums).collect()
}

/// Scores a model on the held-out questions through its chat template, in two ways: greedy
/// generation (is the reply exactly the right sentence?) and four-way choice (is the right
/// sentence the most likely whole reply, end-of-turn marker included?). Both run on the
/// inference path `chat` and `serve` use.
pub fn chat_accuracy(model_dir: &Path, questions: &[Question]) -> Result<Accuracy> {
    let cfg = tinyllama_model::ModelConfig::from_hf_json(&model_dir.join("config.json"))?;
    let tok = Tokenizer::load(model_dir, cfg.bos_id, cfg.eos_id)?;
    let tmpl = ChatTemplate::load(model_dir)?;
    let runner = Runner::new(DecodeModel::load(model_dir, WeightFormat::F32)?, None)?;
    let mut acc = Accuracy::default();
    let mut prompts = Vec::with_capacity(questions.len());
    for q in questions {
        let user = [Message::new("user", &q.text)];
        let prompt =
            tinyllama_infer::conversation::encode_prompt(&tok, &tmpl, &tmpl.render(&user, true)?)?;
        prompts.push(prompt);
        let mut best = (f64::NEG_INFINITY, usize::MAX);
        for (i, reply) in q.replies.iter().enumerate() {
            let r: Rendered = render(
                &tmpl,
                &tok,
                &[
                    Message::new("user", &q.text),
                    Message::new("assistant", reply),
                ],
            )?;
            let lps = runner.score_prompt(&r.tokens, 0)?;
            // lps[j] is the log-probability of token j + 1.
            let ll: f64 = lps
                .iter()
                .enumerate()
                .filter(|(j, _)| r.assistant[j + 1])
                .map(|(_, l)| l.logprob as f64)
                .sum();
            if ll > best.0 {
                best = (ll, i);
            }
        }
        let slot = match q.kind {
            QaKind::Fact => &mut acc.facts_choice,
            QaKind::Arithmetic => &mut acc.sums_choice,
        };
        slot.1 += 1;
        slot.0 += (best.1 == q.gold) as usize;
    }
    let params: Vec<GenParams> = prompts
        .iter()
        .map(|_| GenParams {
            max_tokens: 24,
            sampling: SamplingParams::greedy(),
            seed: 0,
            stop_ids: vec![cfg.eos_id],
        })
        .collect();
    let outs = tinyllama_infer::generate::generate_batch(&runner, &prompts, &params)?;
    for (q, o) in questions.iter().zip(outs) {
        let text = tok.decode(&o.tokens)?;
        // What the template would have closed the turn with, if the model wrote it as text.
        let reply = text.split("</s>").next().unwrap_or("").trim();
        let slot = match q.kind {
            QaKind::Fact => &mut acc.facts_generated,
            QaKind::Arithmetic => &mut acc.sums_generated,
        };
        slot.1 += 1;
        slot.0 += (reply == q.replies[q.gold]) as usize;
    }
    Ok(acc)
}

/// The askable questions of the training side: facts whose questions the pre-training drills
/// asked, and sums outside the held-out set.
struct Askable {
    facts: Vec<Fact>,
    sums: Vec<Triple>,
    /// Other answers of the same relation, for wrong replies.
    pool: std::collections::BTreeMap<tinyllama_synth::world::Rel, Vec<String>>,
}

fn askable(m: &Manifest) -> Askable {
    let held: BTreeSet<&Fact> = m.held_out_facts.iter().collect();
    let facts: Vec<Fact> = m
        .facts
        .iter()
        .filter(|f| !held.contains(f))
        .cloned()
        .collect();
    let held_sums: BTreeSet<Triple> = m.held_out_arithmetic.iter().copied().collect();
    let commuted = m.config.hold_out_commuted;
    let sums = universe(m.config.max_operand)
        .into_iter()
        .filter(|t| {
            // With commuted hold-out, `b plus a` is held out with `a plus b`.
            let swapped = Triple {
                a: t.b,
                op: Op::Plus,
                b: t.a,
            };
            let commuted_out = commuted && t.op == Op::Plus && held_sums.contains(&swapped);
            !held_sums.contains(t) && !commuted_out
        })
        .collect();
    let mut pool = std::collections::BTreeMap::new();
    for f in &m.facts {
        pool.entry(f.rel)
            .or_insert_with(Vec::new)
            .push(f.answer.clone());
    }
    for v in pool.values_mut() {
        v.sort();
        v.dedup();
    }
    Askable { facts, sums, pool }
}

const SYSTEMS: &[&str] = &[
    "You are a helpful guide to the lands, creatures and devices of this world.",
    "You answer questions briefly.",
    "You are a patient tutor for sums and for facts about the world.",
];

impl Askable {
    /// A question, its right reply, and a wrong reply of the same shape.
    fn pick(&self, rng: &mut Rng) -> (String, String, String) {
        if rng.next_f64() < 0.6 {
            let f = &self.facts[rng.below(self.facts.len() as u64) as usize];
            let p = &self.pool[&f.rel];
            let wrong = loop {
                let w = &p[rng.below(p.len() as u64) as usize];
                if *w != f.answer || p.len() == 1 {
                    break w.clone();
                }
            };
            (
                f.rel.question(&f.subject),
                fact_reply(f, &f.answer),
                fact_reply(f, &wrong),
            )
        } else {
            let t = self.sums[rng.below(self.sums.len() as u64) as usize];
            let r = t.result() as i64;
            let wrong = loop {
                let d = rng.below(7) as i64 - 3;
                if d != 0 && r + d >= 0 {
                    break r + d;
                }
            };
            (
                t.question(),
                sum_reply(&t, &r.to_string()),
                sum_reply(&t, &wrong.to_string()),
            )
        }
    }
}

fn write_jsonl(path: &Path, lines: &[serde_json::Value]) -> Result<()> {
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
    );
    for l in lines {
        serde_json::to_writer(&mut f, l)?;
        f.write_all(b"\n")?;
    }
    f.flush()?;
    Ok(())
}

/// Multi-turn dialogues (1–3 exchanges, a system prompt half the time) in the OpenAI messages
/// shape, and preference pairs (one question, the right answer chosen, a wrong one rejected).
fn write_data(m: &Manifest, o: &DemoOptions, data: &Path) -> Result<(PathBuf, PathBuf)> {
    let a = askable(m);
    if a.facts.is_empty() || a.sums.is_empty() {
        bail!("the demo world has no training questions to ask");
    }
    let mut rng = Rng::derive(o.seed, 0xc4a7);
    let mut dialogues = Vec::with_capacity(o.dialogues);
    for _ in 0..o.dialogues {
        let mut msgs = Vec::new();
        if rng.next_f64() < 0.5 {
            let s = SYSTEMS[rng.below(SYSTEMS.len() as u64) as usize];
            msgs.push(serde_json::json!({"role": "system", "content": s}));
        }
        for _ in 0..1 + rng.below(3) {
            let (q, ans, _) = a.pick(&mut rng);
            msgs.push(serde_json::json!({"role": "user", "content": q}));
            msgs.push(serde_json::json!({"role": "assistant", "content": ans}));
        }
        dialogues.push(serde_json::json!({ "messages": msgs }));
    }
    let mut pairs = Vec::with_capacity(o.pairs);
    for _ in 0..o.pairs {
        let (q, ans, wrong) = a.pick(&mut rng);
        pairs.push(serde_json::json!({
            "prompt": q,
            "chosen": ans,
            "rejected": wrong,
        }));
    }
    std::fs::create_dir_all(data)?;
    let (s, d) = (data.join("dialogues.jsonl"), data.join("preferences.jsonl"));
    write_jsonl(&s, &dialogues)?;
    write_jsonl(&d, &pairs)?;
    Ok((s, d))
}

/// The run configurations the demo uses, written beside the data so a user can rerun or edit
/// them (`tinyllama finetune --config …`).
fn write_config(path: &Path, body: &str) -> Result<()> {
    std::fs::write(path, body).with_context(|| format!("cannot write {}", path.display()))
}

pub fn run(o: &DemoOptions) -> Result<DemoSummary> {
    let t0 = Instant::now();
    if o.dir.exists() {
        std::fs::remove_dir_all(&o.dir)
            .with_context(|| format!("cannot clear the previous demo in {}", o.dir.display()))?;
    }
    std::fs::create_dir_all(&o.dir)?;
    let base = base_model(o)?;
    let manifest =
        tinyllama_synth::load_manifest(o.pretrain_dir.join("raw").join("manifest.json"))?;
    let items =
        tinyllama_synth::load_eval_qa(o.pretrain_dir.join("raw").join(&manifest.files.eval_qa))?;
    let qs = held_out_questions(&manifest, &items, o.eval_limit);
    if qs.is_empty() {
        bail!(
            "the pre-training demo in {} has no held-out questions to score",
            o.pretrain_dir.display()
        );
    }
    let chance = 1.0 / qs[0].replies.len().max(1) as f64;

    stage(o, 1, "synthetic dialogues and preference pairs about the demo world (held-out questions never asked)");
    let data = o.dir.join("data");
    let (dialogues, prefs) = write_data(&manifest, o, &data)?;
    if !o.quiet {
        eprintln!(
            "{} dialogues → {}\n{} preference pairs → {}",
            o.dialogues,
            dialogues.display(),
            o.pairs,
            prefs.display()
        );
    }
    let before = chat_accuracy(&base, &qs)?;
    if !o.quiet {
        eprintln!(
            "held-out accuracy before fine-tuning: {}",
            describe_acc(&before)
        );
    }

    stage(
        o,
        2,
        "supervised fine-tuning with LoRA (loss on the assistant replies)",
    );
    let sft_cfg = o.dir.join("sft.toml");
    write_config(
        &sft_cfg,
        &format!(
            "# Written by the fine-tuning demo; rerun with `tinyllama finetune --config {name}`.\n\
             [model]\ninit_from = {base:?}\n\n\
             [data]\nseq_len = 128\n\n\
             [batch]\nmicro_batch = 16\nglobal_batch = 16\n\n\
             [optim]\nlr = 2e-3\n\n\
             [run]\nout_dir = \"sft\"\nseed = {seed}\nlog_every = 20\n\n\
             [finetune]\nmethod = \"lora\"\ntrain = [\"data/dialogues.jsonl\"]\nval_fraction = 0.05\npack = true\nepochs = {ep}\n\n\
             [finetune.lora]\nrank = 16\nalpha = 32\ndropout = 0.05\n",
            name = sft_cfg.display(),
            base = base.canonicalize()?.display().to_string(),
            seed = o.seed,
            ep = o.sft_epochs,
        ),
    )?;
    let opts = RunOptions {
        quiet: o.quiet,
        ..Default::default()
    };
    let sft = run::run(&run::load_config(&sft_cfg)?, &opts)?;
    let sft_model = sft
        .model_dir
        .clone()
        .context("the SFT run exported no model")?;
    let after_sft = chat_accuracy(&sft_model, &qs)?;
    if !o.quiet {
        eprintln!("held-out accuracy after SFT: {}", describe_acc(&after_sft));
    }

    stage(
        o,
        3,
        "DPO on preference pairs whose rejected answer is wrong (LoRA, reference = the SFT model)",
    );
    let dpo_cfg = o.dir.join("dpo.toml");
    write_config(
        &dpo_cfg,
        &format!(
            "# Written by the fine-tuning demo; rerun with `tinyllama finetune --config {name}`.\n\
             [model]\ninit_from = {base:?}\n\n\
             [data]\nseq_len = 64\n\n\
             [batch]\nmicro_batch = 8\nglobal_batch = 16\n\n\
             [optim]\nlr = 1e-4\n\n\
             [run]\nout_dir = \"dpo\"\nseed = {seed}\nlog_every = 10\n\n\
             [finetune]\nmethod = \"dpo\"\ntrain = [\"data/preferences.jsonl\"]\nval_fraction = 0.05\nepochs = {ep}\n\n\
             [finetune.dpo]\nbeta = 0.1\nlora = true\n\n\
             [finetune.lora]\nrank = 16\nalpha = 32\n",
            name = dpo_cfg.display(),
            base = sft_model.canonicalize()?.display().to_string(),
            seed = o.seed,
            ep = o.dpo_epochs,
        ),
    )?;
    let dpo = run::run(&run::load_config(&dpo_cfg)?, &opts)?;
    let dpo_model = dpo
        .model_dir
        .clone()
        .context("the DPO run exported no model")?;
    let after_dpo = chat_accuracy(&dpo_model, &qs)?;

    stage(o, 4, "summary");
    Ok(DemoSummary {
        before,
        after_sft,
        after_dpo,
        sft,
        dpo,
        chance,
        seconds: t0.elapsed().as_secs_f64(),
        model_dir: dpo_model,
    })
}

fn describe_acc(a: &Accuracy) -> String {
    let pct = |x: (usize, usize)| format!("{:>3}/{:<3} {:>5.1}%", x.0, x.1, 100.0 * rate(x));
    format!(
        "answers: facts {} sums {} · choice: facts {} sums {}",
        pct(a.facts_generated),
        pct(a.sums_generated),
        pct(a.facts_choice),
        pct(a.sums_choice),
    )
}

/// The demo's closing report.
pub fn describe(s: &DemoSummary) -> String {
    let row = |name: &str, a: &Accuracy| format!("  {name:<16} {}", describe_acc(a));
    format!(
        "held-out questions through the chat template (answers: greedy reply exactly right; choice: the right one of 4 replies most likely, chance {:.0}%):\n{}\n{}\n{}\n\
         SFT: {} steps, final loss {:.3}{} · DPO: {} steps, final loss {:.3}{}\n\
         the chat model: {} (try `tinyllama chat --model {}`)\n\
         finished in {:.0} s",
        100.0 * s.chance,
        row("before SFT", &s.before),
        row("after SFT", &s.after_sft),
        row("after DPO", &s.after_dpo),
        s.sft.steps,
        s.sft.final_loss,
        s.sft.val_loss.map(|v| format!(" (val {v:.3})")).unwrap_or_default(),
        s.dpo.steps,
        s.dpo.final_loss,
        s.dpo.val_loss.map(|v| format!(" (val {v:.3})")).unwrap_or_default(),
        s.model_dir.display(),
        s.model_dir.display(),
        s.seconds
    )
}
