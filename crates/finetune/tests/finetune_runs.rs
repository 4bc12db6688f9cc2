//! `tinyllama finetune` end to end on a tiny model: LoRA and full SFT learn from masked chat
//! data, only the adapters move, exports load as chat models and PEFT adapters, resume is
//! exact, the step's loss is normalised over every micro-batch's targets, and DPO raises the
//! preference for the chosen replies against a cached reference.

use std::path::{Path, PathBuf};
use tinyllama_engine::{Activations, CpuBackend, Llama};
use tinyllama_finetune::run::{self, FinetuneSummary};
use tinyllama_model::hf::{self, SaveDtype};
use tinyllama_model::{presets, HostWeights};
use tinyllama_train::config::RunConfig;
use tinyllama_train::trainer::RunOptions;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/chat")
}

/// A random tiny Llama with the fixture tokenizer (600 pieces; `<s>` 1, `</s>` 2) and a
/// Zephyr-format chat template with generation blocks.
fn base_model(dir: &Path) -> PathBuf {
    let mut c = presets::get("test-tiny").unwrap();
    c.vocab_size = 600;
    c.dim = 32;
    c.ffn_dim = 64;
    c.max_seq_len = 64;
    let out = dir.join("base");
    hf::save_dir(&HostWeights::init(&c, 5), &out, SaveDtype::F32, usize::MAX).unwrap();
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(fixtures().join(f), out.join(f)).unwrap();
    }
    out
}

const WORDS: &[&str] = &[
    "red", "blue", "green", "stone", "river", "lamp", "seven", "cloud", "bread", "wolf",
];

/// Conversations with a learnable rule: the assistant repeats the user's word twice.
fn chat_file(dir: &Path, n: usize) -> PathBuf {
    let p = dir.join("chat.jsonl");
    let mut s = String::new();
    for i in 0..n {
        let w = WORDS[i % WORDS.len()];
        let v = WORDS[(i * 7 + 3) % WORDS.len()];
        let mut msgs = vec![];
        if i % 3 == 0 {
            msgs.push(serde_json::json!({"role": "system", "content": "Repeat."}));
        }
        msgs.push(serde_json::json!({"role": "user", "content": format!("say {w}")}));
        msgs.push(serde_json::json!({"role": "assistant", "content": format!("{w} {w}")}));
        if i % 2 == 0 {
            msgs.push(serde_json::json!({"role": "user", "content": format!("say {v}")}));
            msgs.push(serde_json::json!({"role": "assistant", "content": format!("{v} {v}")}));
        }
        s.push_str(&serde_json::json!({ "messages": msgs }).to_string());
        s.push('\n');
    }
    std::fs::write(&p, s).unwrap();
    p
}

/// Preference pairs: the chosen reply repeats the word, the rejected one says another word.
fn pairs_file(dir: &Path, n: usize) -> PathBuf {
    let p = dir.join("pairs.jsonl");
    let mut s = String::new();
    for i in 0..n {
        let w = WORDS[i % WORDS.len()];
        let x = WORDS[(i + 3) % WORDS.len()];
        s.push_str(
            &serde_json::json!({
                "prompt": format!("say {w}"),
                "chosen": format!("{w} {w}"),
                "rejected": format!("{x} {x}"),
            })
            .to_string(),
        );
        s.push('\n');
    }
    std::fs::write(&p, s).unwrap();
    p
}

fn config(dir: &Path, base: &Path, body: &str) -> RunConfig {
    let path = dir.join("run.toml");
    std::fs::write(
        &path,
        format!(
            "[model]\ninit_from = {:?}\n[data]\nseq_len = 32\n[run]\nout_dir = \"out\"\nlog_every = 1000\n{body}",
            base.display().to_string()
        ),
    )
    .unwrap();
    run::load_config(&path).unwrap()
}

fn quiet() -> RunOptions {
    RunOptions {
        quiet: true,
        ..Default::default()
    }
}

fn losses_of(dir: &Path) -> Vec<f64> {
    tinyllama_train::metrics::MetricsWriter::read_all(dir)
        .iter()
        .map(|r| r.loss)
        .collect()
}

#[test]
fn lora_sft_learns_moves_only_the_adapters_and_exports_a_chat_model_and_a_peft_adapter() {
    let tmp = tempfile::tempdir().unwrap();
    let base = base_model(tmp.path());
    chat_file(tmp.path(), 60);
    let cfg = config(
        tmp.path(),
        &base,
        "[batch]\nmicro_batch = 4\nglobal_batch = 8\n[optim]\nlr = 1e-2\n\
         [finetune]\nmethod = \"lora\"\ntrain = [\"chat.jsonl\"]\nepochs = 12\nval_fraction = 0.1\n\
         [finetune.lora]\nrank = 4\nalpha = 8\ndropout = 0.05\n",
    );
    // Fine-tuning's defaults fill what the file leaves out.
    assert_eq!(cfg.optim.weight_decay, 0.0);
    assert_eq!(cfg.optim.beta2, 0.999);
    let s: FinetuneSummary = run::run(&cfg, &quiet()).unwrap();
    let l = losses_of(&s.run_dir);
    let (first, last) = (l[0], *l.last().unwrap());
    assert!(last < 0.6 * first, "loss {first} → {last}");
    assert!(
        s.val_loss.unwrap() < first,
        "held-out loss {:?}",
        s.val_loss
    );

    // The merged export: only adapted projections differ from the base.
    let model_dir = s.model_dir.clone().unwrap();
    let merged = hf::load_dir(&model_dir).unwrap();
    let orig = hf::load_dir(&base).unwrap();
    for ((spec, a), b) in merged.specs.iter().zip(&merged.tensors).zip(&orig.tensors) {
        let adapted = spec.name.contains("proj");
        assert_eq!(a != b, adapted, "{}", spec.name);
    }
    // It is a chat model: the template travelled with it.
    let tc: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(model_dir.join("tokenizer_config.json")).unwrap(),
    )
    .unwrap();
    assert!(tc["chat_template"].as_str().unwrap().contains("generation"));
    tinyllama_infer::DecodeModel::load(&model_dir, tinyllama_infer::WeightFormat::F32).unwrap();

    // The PEFT adapter on the base computes what the merged model computes.
    let adapter = tinyllama_model::peft::load_peft(&s.adapter_dir.clone().unwrap()).unwrap();
    let mut with_adapter = Llama::new(CpuBackend::<f32>::new(), &orig).unwrap();
    with_adapter.attach_peft(&adapter).unwrap();
    let merged_model = Llama::new(CpuBackend::<f32>::new(), &merged).unwrap();
    let inputs: Vec<u32> = (0..32).map(|i| (i * 37 % 600) as u32).collect();
    let targets: Vec<i32> = (1..=32).map(|i| i * 37 % 600).collect();
    let mut a1 = Activations::new(&with_adapter, 1, 32);
    let mut a2 = Activations::new(&merged_model, 1, 32);
    let l1 = with_adapter
        .forward_losses(&mut a1, &inputs, &targets)
        .unwrap();
    let l2 = merged_model
        .forward_losses(&mut a2, &inputs, &targets)
        .unwrap();
    for (x, y) in l1.iter().zip(&l2) {
        assert!((x - y).abs() <= 1e-4 * x.abs().max(1.0), "{x} vs {y}");
    }
}

/// Runs `cfg`, stopping after `stop` steps and resuming when given; returns the export's
/// weights.
fn run_to_end(cfg: &RunConfig, stop: Option<u64>) -> HostWeights {
    if let Some(k) = stop {
        let o = RunOptions {
            quiet: true,
            stop_after: Some(k),
            ..Default::default()
        };
        let s = run::run(cfg, &o).unwrap();
        assert!(s.model_dir.is_none(), "an interrupted run exports nothing");
        let mut c = cfg.clone();
        c.run.resume = true;
        return hf::load_dir(&run::run(&c, &quiet()).unwrap().model_dir.unwrap()).unwrap();
    }
    hf::load_dir(&run::run(cfg, &quiet()).unwrap().model_dir.unwrap()).unwrap()
}

#[test]
fn interrupted_and_resumed_runs_equal_uninterrupted_ones_for_lora_full_and_dpo() {
    for method in ["lora", "full", "dpo"] {
        let tmp = tempfile::tempdir().unwrap();
        let base = base_model(tmp.path());
        chat_file(tmp.path(), 40);
        pairs_file(tmp.path(), 24);
        let train = if method == "dpo" {
            "pairs.jsonl"
        } else {
            "chat.jsonl"
        };
        let body = format!(
            "[batch]\nmicro_batch = 4\nglobal_batch = 8\nmax_steps = 6\n[optim]\nlr = 1e-3\n\
             [finetune]\nmethod = \"{m}\"\ntrain = [\"{train}\"]\n[finetune.lora]\nrank = 4\n\
             [finetune.dpo]\nlora = true\n",
            m = if method == "dpo" { "dpo" } else { method }
        );
        let mut whole = config(tmp.path(), &base, &body);
        whole.run.save_every = 2;
        whole.run.out_dir = tmp.path().join("whole");
        let mut split = whole.clone();
        split.run.out_dir = tmp.path().join("split");
        let a = run_to_end(&whole, None);
        let b = run_to_end(&split, Some(3));
        for ((s, x), y) in a.specs.iter().zip(&a.tensors).zip(&b.tensors) {
            assert_eq!(x, y, "{method}: {} differs after resume", s.name);
        }
        if method == "dpo" {
            assert!(split
                .run
                .out_dir
                .join(tinyllama_train::dpo::REFERENCE_FILE)
                .exists());
        }
    }
}

#[test]
fn a_step_is_normalised_over_every_micro_batch_target() {
    // One micro-batch of 8 and four of 2 give the same update, although the rows hold very
    // different numbers of assistant tokens (one or two exchanges).
    let tmp = tempfile::tempdir().unwrap();
    let base = base_model(tmp.path());
    chat_file(tmp.path(), 8);
    let mut out = vec![];
    for micro in [8, 2] {
        let mut c = config(
            tmp.path(),
            &base,
            &format!(
                "[batch]\nmicro_batch = {micro}\nglobal_batch = 8\nmax_steps = 1\n[optim]\nlr = 1e-2\n\
                 [finetune]\nmethod = \"full\"\ntrain = [\"chat.jsonl\"]\n"
            ),
        );
        c.run.out_dir = tmp.path().join(format!("m{micro}"));
        let s = run::run(&c, &quiet()).unwrap();
        out.push((s.final_loss, hf::load_dir(&s.model_dir.unwrap()).unwrap()));
    }
    assert!(
        (out[0].0 - out[1].0).abs() < 1e-5,
        "{} vs {}",
        out[0].0,
        out[1].0
    );
    for ((s, x), y) in out[0]
        .1
        .specs
        .iter()
        .zip(&out[0].1.tensors)
        .zip(&out[1].1.tensors)
    {
        let d = x
            .iter()
            .zip(y)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(d < 1e-6, "{}: {d}", s.name);
    }
}

#[test]
fn dpo_with_lora_prefers_the_chosen_replies() {
    let tmp = tempfile::tempdir().unwrap();
    let base = base_model(tmp.path());
    pairs_file(tmp.path(), 40);
    let cfg = config(
        tmp.path(),
        &base,
        "[batch]\nmicro_batch = 4\nglobal_batch = 8\n[optim]\nlr = 2e-2\n\
         [finetune]\nmethod = \"dpo\"\ntrain = [\"pairs.jsonl\"]\nepochs = 4\nval_fraction = 0.2\n\
         [finetune.dpo]\nbeta = 0.5\nlora = true\n[finetune.lora]\nrank = 4\nalpha = 8\n",
    );
    let s = run::run(&cfg, &quiet()).unwrap();
    let recs = tinyllama_train::metrics::MetricsWriter::read_all(&s.run_dir);
    let first = recs[0].dpo.unwrap();
    let last = recs.last().unwrap();
    // At the start the policy is the reference: z = 0 for every pair, loss ln 2.
    assert!(
        (first.loss - std::f64::consts::LN_2).abs() < 1e-6,
        "{first:?}"
    );
    assert_eq!(first.margin, 0.0);
    let d = last.dpo.unwrap();
    let trace: Vec<String> = recs
        .iter()
        .map(|r| {
            let d = r.dpo.unwrap();
            format!("{:.3}/{:.2}/{:.2}", d.loss, d.accuracy, r.grad_norm)
        })
        .collect();
    assert!(d.loss < 0.5 && d.accuracy > 0.9, "{d:?}\n{trace:?}");
    // The held-out pairs are scored at the end (their words pair up differently, so a model
    // this small need not generalise to them; only that they are measured is checked).
    let v = last.val_dpo.unwrap();
    assert!(v.pairs >= 4.0 && v.loss.is_finite(), "{v:?}");
    assert!(s
        .adapter_dir
        .unwrap()
        .join("adapter_model.safetensors")
        .exists());
}

#[test]
fn config_mistakes_are_explained() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("a.toml");
    std::fs::write(&p, "[data]\nseq_len = 16\n").unwrap();
    let e = format!("{:#}", run::load_config(&p).unwrap_err());
    assert!(e.contains("no [finetune] section"), "{e}");

    let base = base_model(tmp.path());
    chat_file(tmp.path(), 10);
    let mut c = config(
        tmp.path(),
        &base,
        "[finetune]\nmethod = \"lora\"\ntrain = [\"chat.jsonl\"]\n",
    );
    c.finetune.as_mut().unwrap().train_on = "replies".into();
    let e = format!("{:#}", run::run(&c, &quiet()).unwrap_err());
    assert!(e.contains("train_on") && e.contains("assistant"), "{e}");

    let mut c = config(
        tmp.path(),
        &base,
        "[finetune]\nmethod = \"lora\"\ntrain = [\"chat.jsonl\"]\n",
    );
    c.finetune.as_mut().unwrap().lora.targets = vec!["qkv".into()];
    let e = format!("{:#}", run::run(&c, &quiet()).unwrap_err());
    assert!(e.contains("qkv"), "{e}");

    // pretrain refuses a fine-tuning config instead of ignoring its data.
    let e = format!(
        "{:#}",
        tinyllama_train::trainer::train(&c, &quiet()).unwrap_err()
    );
    assert!(e.contains("tinyllama finetune"), "{e}");
}

#[test]
fn two_ranks_train_what_one_process_trains_for_lora_sft_and_dpo() {
    use tinyllama_dist::local::LocalGroup;
    for method in ["lora", "dpo"] {
        let tmp = tempfile::tempdir().unwrap();
        let base = base_model(tmp.path());
        chat_file(tmp.path(), 80);
        pairs_file(tmp.path(), 48);
        let train = if method == "dpo" {
            "pairs.jsonl"
        } else {
            "chat.jsonl"
        };
        let one = config(
            tmp.path(),
            &base,
            &format!(
                "[batch]\nmicro_batch = 2\nglobal_batch = 8\nmax_steps = 4\n[optim]\nlr = 1e-2\n\
                 [finetune]\nmethod = \"{method}\"\ntrain = [\"{train}\"]\n\
                 [finetune.lora]\nrank = 4\ndropout = 0.0\n[finetune.dpo]\nlora = true\n"
            ),
        );
        let mut two = one.clone();
        two.run.out_dir = tmp.path().join("two");
        let a = run::run(&one, &quiet()).unwrap();
        let hs: Vec<_> = LocalGroup::new(2)
            .into_iter()
            .map(|g| {
                let c = two.clone();
                std::thread::spawn(move || run::run_in(&c, &quiet(), Box::new(g)).unwrap())
            })
            .collect();
        let b: Vec<FinetuneSummary> = hs.into_iter().map(|h| h.join().unwrap()).collect();
        let (wa, wb) = (
            hf::load_dir(a.model_dir.as_ref().unwrap()).unwrap(),
            hf::load_dir(b[0].model_dir.as_ref().unwrap()).unwrap(),
        );
        // Within an epoch the ranks together read the rows one process reads in each step (rank
        // r takes positions r, r + 2, … of the same shuffled order), summed in another order.
        assert!(
            (a.final_loss - b[0].final_loss).abs() < 1e-4 * a.final_loss.abs().max(1.0),
            "{method}: loss {} vs {}: {:?} vs {:?}",
            a.final_loss,
            b[0].final_loss,
            losses_of(&a.run_dir),
            losses_of(&b[0].run_dir)
        );
        for ((s, x), y) in wa.specs.iter().zip(&wa.tensors).zip(&wb.tensors) {
            let num: f64 = x.iter().zip(y).map(|(p, q)| ((p - q) as f64).powi(2)).sum();
            let den: f64 = x.iter().map(|p| (*p as f64).powi(2)).sum();
            assert!(
                (num / den.max(1e-30)).sqrt() < 1e-4,
                "{method}: {} differs between 1 and 2 ranks",
                s.name
            );
        }
    }
}

#[test]
fn lora_sft_and_dpo_run_in_bf16_mixed_precision() {
    for (method, file) in [("lora", "chat.jsonl"), ("dpo", "pairs.jsonl")] {
        let tmp = tempfile::tempdir().unwrap();
        let base = base_model(tmp.path());
        chat_file(tmp.path(), 40);
        pairs_file(tmp.path(), 24);
        let mut c = config(
            tmp.path(),
            &base,
            &format!(
                "[batch]\nmicro_batch = 4\nglobal_batch = 8\nmax_steps = 12\n[optim]\nlr = 1e-2\n\
                 [finetune]\nmethod = \"{method}\"\ntrain = [\"{file}\"]\n\
                 [finetune.lora]\nrank = 4\n[finetune.dpo]\nlora = true\nbeta = 0.5\n"
            ),
        );
        c.run.precision = "bf16".into();
        let s = run::run(&c, &quiet()).unwrap();
        let l = losses_of(&s.run_dir);
        assert!(
            l.iter().all(|x| x.is_finite()) && *l.last().unwrap() < 0.9 * l[0],
            "{method} in bf16: {l:?}"
        );
    }
}
