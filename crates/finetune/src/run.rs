//! `tinyllama finetune --config RUN.toml`: the run configuration with fine-tuning's defaults,
//! the chat data rendered into rows (or preference pairs), the shared training loop, and a
//! model directory that `chat`, `serve`, `export gguf` and transformers use unchanged.

use crate::chat::{self, ChatOptions, Overflow, TrainOn, Validation};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tinyllama_infer::chat_template::ChatTemplate;
use tinyllama_model::tokenizer::Tokenizer;
use tinyllama_model::ModelConfig;
use tinyllama_train::config::{FinetuneMethod, FinetuneSection, RunConfig};
use tinyllama_train::rows::{FinetuneData, PairRows, Row};
use tinyllama_train::trainer::{self, RunOptions};

/// The built-in Zephyr format as a Jinja chat template, written into exports of models that
/// had none: it renders the tokens [`ChatTemplate::zephyr`] gives (the BOS our renderer adds
/// is written by the template itself, because transformers' `apply_chat_template` adds no
/// special tokens), and marks the assistant replies with `{% generation %}` so transformers'
/// `return_assistant_tokens_mask` works too.
pub const ZEPHYR_JINJA: &str = "{{- bos_token -}}\
{%- for m in messages -%}\
{%- if m['role'] not in ['system', 'user', 'assistant'] -%}\
{{ raise_exception('the Zephyr chat format has the roles system, user and assistant') }}\
{%- endif -%}\
{{ '<|' + m['role'] + '|>\\n' }}\
{%- if m['role'] == 'assistant' -%}\
{% generation %}{{ m['content'] + '</s>' }}{% endgeneration %}\
{%- else -%}\
{{ m['content'] + '</s>' }}\
{%- endif -%}\
{{ '\\n' }}\
{%- endfor -%}\
{%- if add_generation_prompt -%}{{ '<|assistant|>\\n' }}{%- endif -%}";

/// What a fine-tuning run produced.
#[derive(Clone, Debug, Serialize)]
pub struct FinetuneSummary {
    pub method: FinetuneMethod,
    pub steps: u64,
    pub final_loss: f64,
    pub val_loss: Option<f64>,
    /// The chat model: merged weights for LoRA (Hugging Face directory).
    pub model_dir: Option<PathBuf>,
    /// The adapter in PEFT's layout (LoRA runs).
    pub adapter_dir: Option<PathBuf>,
    pub run_dir: PathBuf,
    pub train_items: usize,
    pub val_items: usize,
    pub tokens_per_s: f64,
    pub elapsed_s: f64,
}

/// Reads a run config for fine-tuning and fills what the file leaves out with fine-tuning's
/// defaults (which differ from pre-training's): the learning rate per method (full SFT 2e-5,
/// LoRA 2e-4, DPO 5e-7, or 5e-6 for DPO with LoRA), cosine to zero, AdamW betas (0.9, 0.999)
/// without weight decay as transformers' Trainer uses, one epoch, the model's context as the
/// sequence length, and `runs/finetune` as the output directory.
pub fn load_config(path: &Path) -> Result<RunConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read run config {}", path.display()))?;
    let given: toml::Value =
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let mut cfg = RunConfig::from_toml_file(path)?;
    if cfg.finetune.is_none() {
        bail!(
            "{}: no [finetune] section; `tinyllama finetune` needs one (method, train files; see docs/finetune.md). For pre-training use `tinyllama pretrain`",
            path.display()
        );
    }
    apply_defaults(&mut cfg, &given)?;
    Ok(cfg)
}

fn has(v: &toml::Value, section: &str, key: &str) -> bool {
    v.get(section).and_then(|s| s.get(key)).is_some()
}

/// Fine-tuning's defaults for every key the file did not set.
pub fn apply_defaults(cfg: &mut RunConfig, given: &toml::Value) -> Result<()> {
    let f = cfg.finetune.clone().context("no [finetune] section")?;
    let o = &mut cfg.optim;
    if !has(given, "optim", "lr") {
        o.lr = match (f.method, f.uses_lora()) {
            (FinetuneMethod::Full, _) => 2e-5,
            (FinetuneMethod::Lora, _) => 2e-4,
            (FinetuneMethod::Dpo, false) => 5e-7,
            (FinetuneMethod::Dpo, true) => 5e-6,
        };
    }
    if !has(given, "optim", "min_lr") {
        o.min_lr = 0.0;
    }
    if !has(given, "optim", "beta2") {
        o.beta2 = 0.999;
    }
    if !has(given, "optim", "weight_decay") {
        o.weight_decay = 0.0;
    }
    let fs = given.get("finetune");
    let epochs_given = fs.and_then(|s| s.get("epochs")).is_some();
    if !epochs_given && !has(given, "batch", "max_steps") && !has(given, "batch", "max_tokens") {
        cfg.finetune.as_mut().unwrap().epochs = Some(1.0);
    }
    if !has(given, "data", "seq_len") {
        cfg.data.seq_len = cfg.model_config()?.max_seq_len.min(2048);
    }
    if !has(given, "run", "out_dir") {
        cfg.run.out_dir = PathBuf::from("runs/finetune");
    }
    Ok(())
}

fn chat_options(f: &FinetuneSection, seq_len: usize) -> ChatOptions {
    ChatOptions {
        seq_len,
        train_on: if f.train_on == "all" {
            TrainOn::All
        } else {
            TrainOn::Assistant
        },
        overflow: if f.overflow == "drop" {
            Overflow::Drop
        } else {
            Overflow::TruncateLeft
        },
        pack: f.pack,
    }
}

fn to_row(r: chat::Row) -> Row {
    Row {
        inputs: r.inputs,
        targets: r.targets,
    }
}

/// The data of a run, rendered with the model's own chat template (Zephyr when it has none).
pub fn prepare(cfg: &RunConfig, quiet: bool) -> Result<FinetuneData> {
    let f = cfg.finetune.as_ref().context("no [finetune] section")?;
    let dir = cfg
        .model
        .init_from
        .as_ref()
        .context("[model]: fine-tuning starts from a model: set `init_from = \"DIR\"` (a Hugging Face directory)")?;
    let mcfg = ModelConfig::from_hf_json(&dir.join("config.json"))?;
    let tok = Tokenizer::load(dir, mcfg.bos_id, mcfg.eos_id).with_context(|| {
        format!(
            "{}: fine-tuning needs the model's tokenizer.json",
            dir.display()
        )
    })?;
    let tmpl = ChatTemplate::load(dir)?;
    let opts = chat_options(f, cfg.data.seq_len);
    let say = |m: String| {
        if !quiet {
            eprintln!("{m}");
        }
    };
    say(format!("chat format: {}", tmpl.origin));
    let validation = if !f.val.is_empty() {
        Validation::Files(f.val.clone())
    } else if f.val_fraction > 0.0 {
        Validation::Fraction {
            fraction: f.val_fraction,
            seed: cfg.run.seed,
        }
    } else {
        Validation::None
    };
    match f.method {
        FinetuneMethod::Full | FinetuneMethod::Lora => {
            let (t, v) = chat::load_sft_with_validation(&f.train, &validation, &tmpl, &tok, &opts)?;
            say(format!("training data\n{}", t.report));
            if let Some(v) = &v {
                say(format!("validation data\n{}", v.report));
            }
            Ok(FinetuneData::Sft {
                train: Arc::new(t.rows.into_iter().map(to_row).collect()),
                val: v
                    .map(|v| v.rows.into_iter().map(to_row).collect())
                    .unwrap_or_default(),
            })
        }
        FinetuneMethod::Dpo => {
            let (t, v) =
                chat::load_preferences_with_validation(&f.train, &validation, &tmpl, &tok, &opts)?;
            say(format!("preference pairs\n{}", t.report));
            if let Some(v) = &v {
                say(format!("validation pairs\n{}", v.report));
            }
            let rows = |ps: &[chat::PreferencePair]| -> Vec<PairRows> {
                ps.iter()
                    .map(|p| {
                        let (c, r) = chat::pair_rows(p, cfg.data.seq_len);
                        PairRows {
                            chosen: to_row(c),
                            rejected: to_row(r),
                        }
                    })
                    .collect()
            };
            Ok(FinetuneData::Dpo {
                train: Arc::new(rows(&t.pairs)),
                val: v.map(|v| rows(&v.pairs)).unwrap_or_default(),
            })
        }
    }
}

/// Steps from epochs and warm-up from its ratio, now that the data's size is known.
fn size_run(cfg: &mut RunConfig, items: usize) -> Result<()> {
    let f = cfg.finetune.clone().context("no [finetune] section")?;
    if let Some(e) = f.epochs {
        let gb = cfg.batch.global_batch.max(1);
        cfg.batch.max_steps = Some(((e * items as f64) / gb as f64).ceil().max(1.0) as u64);
        cfg.batch.max_tokens = None;
    }
    if let Some(w) = f.warmup_ratio {
        cfg.optim.warmup_steps = (w * cfg.total_steps()? as f64).round() as u64;
    }
    Ok(())
}

/// A run's export gets the tokenizer files and the chat template of the model it started
/// from (the built-in Zephyr template written out when that model had none), so `chat`,
/// `serve` and transformers' `apply_chat_template` format conversations as training did.
fn finish_export(init_from: &Path, out: &Path) -> Result<()> {
    for f in ["tokenizer.json", "special_tokens_map.json"] {
        let src = init_from.join(f);
        if src.exists() {
            tinyllama_model::atomic::write_atomic(&out.join(f), &std::fs::read(&src)?)?;
        }
    }
    let src = init_from.join("tokenizer_config.json");
    let mut tc: serde_json::Value = match std::fs::read_to_string(&src) {
        Ok(t) => serde_json::from_str(&t)
            .with_context(|| format!("{} is not valid JSON", src.display()))?,
        Err(_) => std::fs::read_to_string(out.join("tokenizer_config.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_else(|| serde_json::json!({})),
    };
    if tc.get("chat_template").is_none() {
        tc["chat_template"] = serde_json::Value::String(ZEPHYR_JINJA.into());
    }
    tinyllama_model::atomic::write_atomic(
        &out.join("tokenizer_config.json"),
        &serde_json::to_vec_pretty(&tc)?,
    )
}

/// Prepares the data and runs the fine-tune (or resumes it) as the job this process was
/// launched into (one process, or one rank of several: see `docs/distributed.md`).
pub fn run(cfg: &RunConfig, opts: &RunOptions) -> Result<FinetuneSummary> {
    let (cfg, data) = setup(cfg, opts)?;
    let s = trainer::finetune(&cfg, opts, &data)?;
    finish(&cfg, &data, s)
}

/// [`run`] as one rank of `coll` (tests run ranks on threads).
pub fn run_in(
    cfg: &RunConfig,
    opts: &RunOptions,
    coll: Box<dyn tinyllama_dist::Collective>,
) -> Result<FinetuneSummary> {
    let quiet = RunOptions {
        quiet: opts.quiet || coll.rank() != 0,
        ..opts.clone()
    };
    let (cfg, data) = setup(cfg, &quiet)?;
    let s = trainer::finetune_in(&cfg, &quiet, coll, &data)?;
    finish(&cfg, &data, s)
}

/// The config completed for this data (steps, warm-up, tokenizer) and the data.
fn setup(cfg: &RunConfig, opts: &RunOptions) -> Result<(RunConfig, FinetuneData)> {
    cfg.validate()?;
    let mut cfg = cfg.clone();
    let data = prepare(&cfg, opts.quiet)?;
    if data.train_len() == 0 {
        bail!("no training examples remain after reading the data (see the report above)");
    }
    size_run(&mut cfg, data.train_len())?;
    let init_from = cfg.model.init_from.clone().context("no init_from")?;
    cfg.model.tokenizer = Some(init_from.join("tokenizer.json"));
    Ok((cfg, data))
}

fn finish(cfg: &RunConfig, data: &FinetuneData, s: trainer::RunSummary) -> Result<FinetuneSummary> {
    let (n_train, n_val) = match data {
        FinetuneData::Sft { train, val } => (train.len(), val.len()),
        FinetuneData::Dpo { train, val } => (train.len(), val.len()),
    };
    let f = cfg.finetune.as_ref().context("no [finetune] section")?;
    if let (Some(out), Some(init_from)) = (&s.export_dir, &cfg.model.init_from) {
        finish_export(init_from, out)?;
    }
    let lora = f.uses_lora();
    Ok(FinetuneSummary {
        method: f.method,
        steps: s.steps,
        final_loss: s.losses.last().copied().unwrap_or(f64::NAN),
        val_loss: s.final_val_loss,
        model_dir: s.export_dir.clone(),
        adapter_dir: (lora && s.export_dir.is_some()).then(|| s.run_dir.join("adapter")),
        run_dir: s.run_dir,
        train_items: n_train,
        val_items: n_val,
        tokens_per_s: s.tokens_per_s,
        elapsed_s: s.elapsed_s,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tinyllama_infer::chat_template::Message;

    fn fixture_tokenizer() -> Tokenizer {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/chat/tokenizer.json");
        Tokenizer::load(&p, 1, 2).unwrap()
    }

    #[test]
    fn exported_zephyr_template_gives_the_training_tokens_and_masks() {
        let tok = fixture_tokenizer();
        let builtin = ChatTemplate::zephyr();
        let jinja = ChatTemplate::from_jinja(ZEPHYR_JINJA, "<s>", "</s>").unwrap();
        assert!(jinja.has_generation_blocks());
        let convs = [
            vec![
                Message::new("user", "hi"),
                Message::new("assistant", "hello there"),
            ],
            vec![
                Message::new("system", "Be brief."),
                Message::new("user", "say red"),
                Message::new("assistant", "red red"),
                Message::new("user", "and blue?"),
                Message::new("assistant", "blue blue"),
            ],
        ];
        for c in &convs {
            let a = chat::render(&builtin, &tok, c).unwrap();
            let b = chat::render(&jinja, &tok, c).unwrap();
            assert_eq!(a.tokens, b.tokens, "{c:?}");
            assert_eq!(a.assistant, b.assistant, "{c:?}");
            assert_eq!(a.tokens[0], 1, "one BOS first");
            assert_ne!(a.tokens[1], 1, "and only one");
            // Prompts for generation agree too.
            let pa = builtin.render(&c[..1], true).unwrap();
            let pb = jinja.render(&c[..1], true).unwrap();
            assert_eq!(
                tinyllama_infer::conversation::encode_prompt(&tok, &builtin, &pa).unwrap(),
                tinyllama_infer::conversation::encode_prompt(&tok, &jinja, &pb).unwrap()
            );
        }
        // What transformers 5.24's `apply_chat_template(..., tokenize=True,
        // return_assistant_tokens_mask=True)` gives with this template and tokenizer.
        let c = [
            Message::new("system", "Be brief."),
            Message::new("user", "say red"),
            Message::new("assistant", "red red"),
        ];
        let r = chat::render(&jinja, &tok, &c).unwrap();
        let want: [u32; 34] = [
            1, 328, 395, 331, 203, 38, 73, 268, 280, 479, 18, 2, 203, 328, 393, 331, 203, 87, 69,
            93, 314, 72, 2, 203, 328, 399, 331, 203, 272, 72, 314, 72, 2, 203,
        ];
        assert_eq!(r.tokens, want);
        let mask: Vec<bool> = (0..34).map(|i| (28..33).contains(&i)).collect();
        assert_eq!(r.assistant, mask);
        let e = jinja
            .render(&[Message::new("tool", "x")], false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("system, user and assistant"), "{e}");
    }
}
