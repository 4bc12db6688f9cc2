//! `tinyllama generate` and `tinyllama chat` end to end on a random model with a character
//! tokenizer: streaming output, stop strings, quantised weights, speculative decoding, and
//! user mistakes reported as one line.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use tinyllama_infer::testutil::{random_weights, small_config, write_model_dir};

fn tinyllama(args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tinyllama"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tinyllama");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn model(dir: &Path, seed: u64, template: Option<&str>) -> String {
    let w = random_weights(&small_config(256), seed, 3.0);
    write_model_dir(&w, dir, template).unwrap();
    dir.to_str().unwrap().to_string()
}

#[test]
fn generate_is_deterministic_across_draft_and_batching() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model(&tmp.path().join("m"), 1, None);
    let d = model(&tmp.path().join("d"), 2, None);
    let base = [
        "generate",
        "--model",
        &m,
        "--prompt",
        "hello",
        "--temperature",
        "0",
        "--max-new-tokens",
        "30",
    ];
    let (ok, plain, err) = tinyllama(&base, "");
    assert!(ok, "{err}");
    assert!(!plain.trim().is_empty());
    let mut spec = base.to_vec();
    spec.extend([
        "--draft-model",
        &d,
        "--draft-k",
        "3",
        "--verbose",
        "--compare-plain",
    ]);
    let (ok, out, err) = tinyllama(&spec, "");
    assert!(ok, "{err}");
    assert_eq!(out, plain);
    assert!(
        err.contains("draft acceptance") && err.contains("identical output"),
        "{err}"
    );
    // A stop string cuts the text before it.
    let stop: String = plain
        .trim_end_matches('\n')
        .chars()
        .skip(5)
        .take(2)
        .collect();
    let mut s = base.to_vec();
    s.extend(["--stop", &stop]);
    let (ok, out, _) = tinyllama(&s, "");
    assert!(ok);
    assert!(plain.starts_with(out.trim_end_matches('\n')));
    assert!(!out.contains(&stop), "{out:?} contains {stop:?}");
    for q in ["bf16", "q8_0", "q4_0"] {
        let mut s = base.to_vec();
        s.extend(["--quant", q]);
        let (ok, _, err) = tinyllama(&s, "");
        assert!(ok, "{q}: {err}");
    }
}

#[test]
fn user_mistakes_are_one_line_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model(&tmp.path().join("m"), 1, None);
    let (ok, _, err) = tinyllama(
        &["generate", "--model", &m, "--prompt", "x", "--quant", "q3"],
        "",
    );
    assert!(!ok && err.contains("unknown weight format `q3`"), "{err}");
    let (ok, _, err) = tinyllama(
        &["generate", "--model", &m, "--prompt", "x", "--top-p", "0"],
        "",
    );
    assert!(!ok && err.contains("--top-p"), "{err}");
    // A draft whose tokenizer maps tokens differently is refused.
    let d = tmp.path().join("d");
    model(&d, 2, None);
    let tj = std::fs::read_to_string(d.join("tokenizer.json")).unwrap();
    assert!(tj.contains("\"a\":5,\"b\":6"));
    std::fs::write(
        d.join("tokenizer.json"),
        tj.replace("\"a\":5,\"b\":6", "\"a\":6,\"b\":5"),
    )
    .unwrap();
    let (ok, _, err) = tinyllama(
        &[
            "generate",
            "--model",
            &m,
            "--prompt",
            "x",
            "--draft-model",
            d.to_str().unwrap(),
        ],
        "",
    );
    assert!(!ok && err.contains("differs from the target"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let (ok, _, err) = tinyllama(&["chat", "--model", "/nonexistent/model"], "");
    assert!(!ok && err.contains("does not exist"), "{err}");
}

#[test]
fn chat_answers_keeps_history_and_handles_commands() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = r#"{"bos_token": "<s>", "eos_token": "</s>", "chat_template": "{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}{{ eos_token }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"}"#;
    let m = model(&tmp.path().join("m"), 3, Some(cfg));
    let input =
        "hi there\n/system be brief\nand again\n/nonsense\n/reset\nlast one\n/exit\nnot read\n";
    let (ok, out, err) = tinyllama(
        &[
            "chat",
            "--model",
            &m,
            "--temperature",
            "0",
            "--max-new-tokens",
            "12",
            "--verbose",
        ],
        input,
    );
    assert!(ok, "{err}");
    // Three replies, each reported.
    assert_eq!(err.matches("generated").count(), 3, "{err}");
    assert!(
        err.contains("(system prompt set)") && err.contains("(conversation reset)"),
        "{err}"
    );
    assert!(err.contains("unknown command `/nonsense`"), "{err}");
    assert!(!out.is_empty());
    // The history grows: the second prompt is longer than the first plus the reply.
    let prompts: Vec<usize> = err
        .lines()
        .filter_map(|l| l.strip_prefix("prompt ")?.split(' ').next()?.parse().ok())
        .collect();
    assert_eq!(prompts.len(), 3);
    assert!(
        prompts[1] > prompts[0] + 10 && prompts[2] < prompts[1],
        "{prompts:?}"
    );
}

#[test]
fn chat_trims_history_to_the_context() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model(&tmp.path().join("m"), 4, None);
    // Context 256 with 100 kept for the reply: a few long turns overflow it.
    let long = "abcdefghij ".repeat(6);
    let input = format!("{long}\n{long}\n{long}\n");
    let (ok, _, err) = tinyllama(
        &[
            "chat",
            "--model",
            &m,
            "--temperature",
            "0",
            "--max-new-tokens",
            "100",
        ],
        &input,
    );
    assert!(ok, "{err}");
    assert!(err.contains("oldest messages to fit"), "{err}");
    let huge = "x".repeat(400);
    let (ok, _, err) = tinyllama(
        &["chat", "--model", &m, "--max-new-tokens", "10"],
        &format!("{huge}\nshort\n"),
    );
    assert!(ok, "{err}");
    assert!(err.contains("shorten the message"), "{err}");
}
