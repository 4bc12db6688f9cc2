//! A data run killed with SIGKILL leaves `.NAME.tmp.PID` files behind; the next run removes
//! them and completes. The kill lands while a temporary file is open (the test waits for one
//! to appear), so the leftover is real rather than planted.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tinyllama_infer::testutil::{random_weights, small_config, write_model_dir};

fn temp_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(temp_files(&p));
        } else if p
            .file_name()
            .is_some_and(|n| n.to_string_lossy().contains(".tmp."))
        {
            out.push(p);
        }
    }
    out
}

#[test]
fn a_killed_data_run_leaves_temporary_files_the_next_run_removes() {
    let bin = env!("CARGO_BIN_EXE_tinyllama");
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("m");
    write_model_dir(&random_weights(&small_config(64), 1, 1.0), &model, None).unwrap();
    let tokenizer = model.join("tokenizer.json");
    let corpus = tmp.path().join("corpus");
    let st = Command::new(bin)
        .args([
            "data",
            "gen-bench-corpus",
            "--mb",
            "40",
            "--files",
            "4",
            "--output",
        ])
        .arg(&corpus)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let out = tmp.path().join("out");
    let tokenize = || {
        let mut c = Command::new(bin);
        c.args(["--threads", "2", "data", "tokenize", "--quiet", "--input"])
            .arg(&corpus)
            .arg("--tokenizer")
            .arg(&tokenizer)
            .arg("--output")
            .arg(&out)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        c
    };

    // Kill while a stage's own output is being written (a scan signature file, an emitted
    // token file or a shard), not just the small metadata written first (bounded wait).
    let stage_output = |p: &PathBuf| {
        let n = p.file_name().unwrap().to_string_lossy().into_owned();
        [".sig.tmp.", ".train.tmp.", ".val.tmp.", ".bin.tmp."]
            .iter()
            .any(|x| n.contains(x))
    };
    let mut child = tokenize().spawn().unwrap();
    let t0 = Instant::now();
    let mut seen = Vec::new();
    while t0.elapsed() < Duration::from_secs(120) {
        seen = temp_files(&out).into_iter().filter(stage_output).collect();
        if !seen.is_empty() || child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        !seen.is_empty(),
        "no stage output was being written before the run ended; the corpus is too small to catch one"
    );
    let left = temp_files(&out);
    assert!(!left.is_empty(), "the killed run left no temporary file");

    let done = tokenize().output().unwrap();
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let remaining = temp_files(&out);
    assert!(
        remaining.is_empty(),
        "left after the second run: {remaining:?} (the kill left {left:?})"
    );
    let names: Vec<String> = left
        .iter()
        .map(|p| p.strip_prefix(&out).unwrap().display().to_string())
        .collect();
    eprintln!(
        "SIGKILL left {} temporary file(s) ({}); the next run removed them and completed",
        left.len(),
        names.join(", ")
    );
}
