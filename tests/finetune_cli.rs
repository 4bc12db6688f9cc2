//! `tinyllama finetune --config …` end to end through the binary on a tiny model: a LoRA run
//! prints where its chat model and PEFT adapter are, `chat`'s template travels with the export,
//! `--resume` of a finished run trains nothing more, and mistakes are one readable line.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tinyllama_model::hf::{self, SaveDtype};
use tinyllama_model::{presets, HostWeights};

fn tinyllama(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tinyllama"))
        .args(args)
        .output()
        .expect("run tinyllama")
}

/// A random tiny model with the committed fixture tokenizer (no chat template: Zephyr).
fn base(dir: &Path) -> PathBuf {
    let mut c = presets::get("test-tiny").unwrap();
    c.vocab_size = 600;
    c.max_seq_len = 64;
    let out = dir.join("base");
    hf::save_dir(&HostWeights::init(&c, 2), &out, SaveDtype::F32, usize::MAX).unwrap();
    let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chat/tokenizer.json");
    std::fs::copy(fx, out.join("tokenizer.json")).unwrap();
    out
}

#[test]
fn lora_run_through_the_binary_and_its_mistakes() {
    let dir = tempfile::tempdir().unwrap();
    let b = base(dir.path());
    let mut data = String::new();
    for i in 0..24 {
        data.push_str(&format!(
            "{{\"messages\": [{{\"role\": \"user\", \"content\": \"say {i}\"}}, {{\"role\": \"assistant\", \"content\": \"{i} {i}\"}}]}}\n"
        ));
    }
    data.push_str("{\"messages\": [{\"role\": \"robot\", \"content\": \"hi\"}]}\n");
    std::fs::write(dir.path().join("chat.jsonl"), data).unwrap();
    let cfg = dir.path().join("sft.toml");
    std::fs::write(
        &cfg,
        format!(
            "[model]\ninit_from = {:?}\n[data]\nseq_len = 32\n[batch]\nmicro_batch = 4\nglobal_batch = 4\n\
             [run]\nout_dir = \"run\"\n[finetune]\nmethod = \"lora\"\ntrain = [\"chat.jsonl\"]\nepochs = 1\n",
            b.display().to_string()
        ),
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    let o = tinyllama(&["--threads", "2", "finetune", "--config", c]);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "{out}\n{err}");
    assert!(
        out.contains("chat model") && out.contains("PEFT adapter"),
        "{out}"
    );
    // The malformed line is reported by reason with its place, not silently dropped.
    assert!(err.contains("chat.jsonl:25"), "{err}");
    let run = dir.path().join("run");
    assert!(run.join("adapter/adapter_config.json").exists());
    let tc = std::fs::read_to_string(run.join("hf/tokenizer_config.json")).unwrap();
    assert!(tc.contains("chat_template"), "{tc}");

    // Resuming a finished run trains nothing and says so.
    let o = tinyllama(&["finetune", "--config", c, "--resume"]);
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("already finished"), "{err}");

    for (args, want) in [
        (vec!["finetune", "--config", c, "--epochs", "0"], "--epochs"),
        (vec!["finetune", "--config", c, "--lr", "-1"], "--lr"),
        (
            vec![
                "finetune",
                "--config",
                c,
                "--out-dir",
                "elsewhere",
                "--precision",
                "fp8",
            ],
            "precision",
        ),
    ] {
        let o = tinyllama(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let o = tinyllama(&["pretrain", "--config", c]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("tinyllama finetune"),
        "{err}"
    );
}
