//! No user input ends in a panic or an abort: every subcommand is run with zero, negative,
//! huge and malformed values for its numeric options (and a config.json with an absurd
//! context), and each run must fail cleanly — a non-zero exit code that is not Rust's panic
//! code 101 or a signal, no "panicked" on stderr, and a short message naming the option.
//! Every child is killed after a bound, so a value that starts real work fails the test
//! instead of hanging it.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tinyllama_infer::testutil::{random_weights, small_config, write_model_dir};

const LIMIT: Duration = Duration::from_secs(60);

struct Outcome {
    code: Option<i32>,
    stderr: String,
    took: Duration,
}

fn run(args: &[String]) -> Outcome {
    let t0 = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tinyllama"))
        .args(args)
        .env_remove("TINYLLAMA_THREADS")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tinyllama");
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut stderr)
                .unwrap();
            return Outcome {
                code: status.code(),
                stderr,
                took: t0.elapsed(),
            };
        }
        if t0.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            return Outcome {
                code: None,
                stderr: format!("still running after {LIMIT:?}"),
                took: t0.elapsed(),
            };
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

#[test]
fn every_subcommand_refuses_bad_numbers_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("m");
    write_model_dir(&random_weights(&small_config(64), 1, 1.0), &model, None).unwrap();
    let model = model.to_str().unwrap().to_string();
    // A config whose context would need a 64 GB RoPE table.
    let huge = tmp.path().join("huge");
    write_model_dir(&random_weights(&small_config(64), 1, 1.0), &huge, None).unwrap();
    let cfg_path = huge.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["max_position_embeddings"] = 1_000_000_000u64.into();
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let huge = huge.to_str().unwrap().to_string();
    let text = tmp.path().join("t.txt");
    std::fs::write(&text, "the boats on the river. ".repeat(50)).unwrap();
    let text = text.to_str().unwrap().to_string();
    let out = tmp.path().join("out");
    let out = out.to_str().unwrap().to_string();

    let gen = s(&["generate", "--model", &model, "--prompt", "hi"]);
    let ppl = s(&["eval", "perplexity", "--model", &model, "--input", &text]);
    let tok = s(&["tokenizer", "train", "--input", &text, "--output", &out]);
    let train = s(&["bench", "train", "--steps", "1", "--warmup", "0"]);
    let serve = s(&["serve", "--model", &model, "--port", "0"]);
    let plan = s(&["plan", "--params", "1e9", "--gpus", "8"]);
    let tokjson = format!("{model}/tokenizer.json");
    let dtok = s(&[
        "data",
        "tokenize",
        "--input",
        &text,
        "--output",
        &out,
        "--tokenizer",
        &tokjson,
    ]);
    let hs = tmp.path().join("hs.jsonl");
    std::fs::write(
        &hs,
        r#"{"query": "Rowing: two people row.", "choices": ["a", "b"], "gold": 0}"#,
    )
    .unwrap();
    let hs_file = format!("hellaswag={}", hs.display());
    let tasks = s(&[
        "eval",
        "tasks",
        "--model",
        &model,
        "--tasks",
        "hellaswag",
        "--file",
        &hs_file,
    ]);
    let decode = s(&["bench", "decode", "--model", &model, "--formats", "f32"]);
    let beval = s(&[
        "bench",
        "eval",
        "--model",
        &model,
        "--task",
        "hellaswag",
        "--file",
        &hs.display().to_string(),
    ]);
    let bserve = s(&[
        "bench", "serve", "--model", &model, "--prompt", "8", "--gen", "4",
    ]);
    // The overrides are checked before the (absent) config is read.
    let pre = s(&["pretrain", "--config", "/nonexistent/run.toml"]);
    // (base command, option, values that must each be refused)
    let bad = ["-1", "abc", "1.5.2", "99999999999999999999999"];
    let mut cases: Vec<(Vec<String>, &str, Vec<&str>)> = vec![
        (train.clone(), "--batch", vec!["0", "100000000"]),
        (train.clone(), "--seq", vec!["0", "100000000"]),
        (train.clone(), "--steps", vec!["0"]),
        (gen.clone(), "--max-new-tokens", vec!["0"]),
        (
            s(&["chat", "--model", &model]),
            "--max-new-tokens",
            vec!["0"],
        ),
        (gen.clone(), "--temperature", vec!["-1", "nan", "inf"]),
        (gen.clone(), "--top-p", vec!["0", "2", "nan"]),
        (gen.clone(), "--min-p", vec!["2", "nan"]),
        (gen.clone(), "--repetition-penalty", vec!["0", "-1", "nan"]),
        (gen.clone(), "--top-k", vec!["99999999999999999999999"]),
        (gen.clone(), "--draft-k", vec!["0", "100000"]),
        (ppl.clone(), "--window", vec!["0", "1", "100000000"]),
        (ppl.clone(), "--stride", vec!["0", "100000000"]),
        (
            tok.clone(),
            "--memory-budget-mb",
            vec!["0", "99999999999999"],
        ),
        (
            tok.clone(),
            "--vocab-size",
            vec!["0", "100", "100000000000"],
        ),
        (serve.clone(), "--max-parallel", vec!["0", "100000"]),
        (serve.clone(), "--max-queue", vec!["100000000000"]),
        (
            serve.clone(),
            "--header-timeout",
            vec!["0", "-1", "nan", "1e300"],
        ),
        (serve.clone(), "--max-connections", vec!["0"]),
        (serve.clone(), "--port", vec!["70000"]),
        (plan.clone(), "--gpus", vec!["0"]),
        (plan.clone(), "--mfu", vec!["0", "2", "nan"]),
        (plan.clone(), "--hours", vec!["0", "-1", "inf"]),
        (
            dtok.clone(),
            "--validation-fraction",
            vec!["2", "-0.5", "nan"],
        ),
        (dtok.clone(), "--chunk-size", vec!["0"]),
        (
            s(&["info", "--model", &model]),
            "--threads",
            vec!["0", "100000"],
        ),
        (tasks.clone(), "--batch-size", vec!["0"]),
        (tasks.clone(), "--limit", vec!["0"]),
        (decode.clone(), "--prompt", vec!["0", "100000000"]),
        (decode.clone(), "--gen", vec!["0", "100000000"]),
        (decode.clone(), "--reps", vec!["0"]),
        (bserve.clone(), "--clients", vec!["0", "100000"]),
        (bserve.clone(), "--requests", vec!["0"]),
        (bserve.clone(), "--gen", vec!["0"]),
        (pre.clone(), "--micro-batch", vec!["0"]),
        (pre.clone(), "--global-batch", vec!["0"]),
        (pre.clone(), "--lr", vec!["0", "-1", "nan", "inf"]),
        (pre.clone(), "--max-steps", vec!["0"]),
        (
            s(&["data", "gen-bench-corpus", "--output", &out]),
            "--mb",
            vec!["0", "10000000000000"],
        ),
        (
            s(&["data", "gen-bench-corpus", "--output", &out, "--mb", "1"]),
            "--files",
            vec!["0", "100000000"],
        ),
        (
            s(&[
                "data",
                "bench",
                "--input",
                &text,
                "--tokenizer",
                &tokjson,
                "--output",
                &out,
            ]),
            "--tokenize-mb",
            vec!["0", "10000000000000"],
        ),
        (s(&["data", "inspect", &text]), "--sample", vec!["0"]),
        (beval.clone(), "--limit", vec!["0"]),
        (beval.clone(), "--batch-size", vec!["0"]),
    ];
    for c in cases.iter_mut() {
        c.2.extend(bad);
    }
    let mut runs: Vec<Vec<String>> = Vec::new();
    for (base, opt, values) in &cases {
        for v in values {
            let mut a = base.clone();
            a.push(format!("{opt}={v}"));
            runs.push(a);
        }
    }
    // Whole-command mistakes.
    runs.push(s(&["info", "--model", &huge]));
    runs.push(s(&["generate", "--model", &huge, "--prompt", "hi"]));
    runs.push(s(&[
        "eval",
        "perplexity",
        "--model",
        &huge,
        "--input",
        &text,
    ]));

    let mut failures = Vec::new();
    let mut slowest = Duration::ZERO;
    for a in &runs {
        let o = run(a);
        slowest = slowest.max(o.took);
        let first = o.stderr.lines().next().unwrap_or("").to_string();
        let clean = matches!(o.code, Some(c) if c != 0 && c != 101)
            && !o.stderr.contains("panicked")
            && !o.stderr.trim().is_empty()
            && o.stderr.len() < 4000;
        if !clean {
            failures.push(format!(
                "tinyllama {}\n  exit {:?}: {}",
                a.join(" "),
                o.code,
                o.stderr.chars().take(600).collect::<String>()
            ));
        } else {
            assert!(
                !first.is_empty(),
                "{}: no message on the first line",
                a.join(" ")
            );
        }
    }
    eprintln!(
        "{} malformed invocations refused cleanly ({} failures); slowest {slowest:?}",
        runs.len() - failures.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let _ = Path::new(&out);
}
