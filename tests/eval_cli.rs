//! `tinyllama eval tasks` and `eval perplexity --shards` end to end with the shared
//! tinystories-llama model (skipped with a `SKIPPED:` line when ../shared/data is absent), and
//! user mistakes as one readable line.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tinyllama_data::packed::PackedWriter;

fn tinyllama(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tinyllama"))
        .args(args)
        .output()
        .expect("run tinyllama")
}

fn model_dir(test: &str) -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/models/tinystories-llama");
    if p.is_dir() {
        Some(p)
    } else {
        println!("SKIPPED: {test}: {} not found", p.display());
        None
    }
}

#[test]
fn tasks_prints_a_table_writes_json_and_reports_bad_rows_by_line() {
    let Some(model) = model_dir("tasks_prints_a_table") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let piqa = dir.path().join("piqa.jsonl");
    std::fs::write(
        &piqa,
        concat!(
            r#"{"goal": "Warm up cold hands", "sol1": "rub them together", "sol2": "hold an ice cube", "label": 0}"#,
            "\n",
            r#"{"goal": "Open a jar", "sol1": "twist the lid", "label": 0}"#,
            "\n",
            r#"{"query": "Question: Dry wet socks\n", "choices": ["hang them up", "put them in the sink"], "gold": 0}"#,
            "\n"
        ),
    )
    .unwrap();
    let json = dir.path().join("out.json");
    let out = tinyllama(&[
        "eval",
        "tasks",
        "--model",
        model.to_str().unwrap(),
        "--tasks",
        "piqa",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.starts_with("| task | metric | value | stderr | n |"),
        "{stdout}"
    );
    assert!(stdout.contains("| piqa | acc_norm |"), "{stdout}");
    assert!(
        stderr.contains("piqa.jsonl:2: field `sol2` is missing"),
        "{stderr}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let t = &v["tasks"][0];
    assert_eq!(t["n"], 2);
    assert_eq!(t["skipped"], 1);
    assert_eq!(t["layouts"]["huggingface"], 1);
    assert_eq!(t["layouts"]["llm-foundry"], 1);
    assert_eq!(v["policy"]["encoding"], "joint");
    assert_eq!(v["policy"]["bos"], false);
}

#[test]
fn shard_perplexity_scores_every_token_but_the_first() {
    let Some(model) = model_dir("shard_perplexity") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut w = PackedWriter::new(dir.path(), "val", 2048, 300).unwrap();
    let toks: Vec<u32> = (0..1000).map(|i| (i * 37 % 2000 + 3) as u32).collect();
    w.push(&toks).unwrap();
    w.finish().unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "eval",
            "perplexity",
            "--model",
            model.to_str().unwrap(),
            "--shards",
            dir.path().to_str().unwrap(),
            "--json",
        ];
        args.extend_from_slice(extra);
        let out = tinyllama(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    assert_eq!(run(&["--prefix", "val"])["tokens"], 999);
    let v = run(&["--max-tokens", "100", "--window", "64"]);
    assert_eq!(v["tokens"], 100);
    assert!(v["perplexity"].as_f64().unwrap() > 1.0);
}

#[test]
fn mistakes_are_one_line_with_the_fix() {
    let out = tinyllama(&[
        "eval",
        "tasks",
        "--model",
        "/nonexistent",
        "--tasks",
        "piqa,mmlu",
    ]);
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("unknown task `mmlu`"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let out = tinyllama(&[
        "eval",
        "tasks",
        "--model",
        "/nonexistent",
        "--tasks",
        "boolq",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("no boolq data") && e.contains("boolq.jsonl"),
        "{e}"
    );
}
