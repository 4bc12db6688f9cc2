//! Crash safety of `tinyllama pretrain`: the process is killed with SIGKILL at random moments,
//! resumed each time, and must end with exactly the weights of an uninterrupted run.

use std::path::Path;
use std::process::Command;
use std::time::Duration;
use tinyllama_data::packed::PackedWriter;
use tinyllama_model::rng::Rng;

fn write_config(dir: &Path, out: &str) -> std::path::PathBuf {
    let cfg = format!(
        r#"
[model]
preset = "micro-1m"
vocab_size = 512

[data]
seq_len = 64
[[data.train]]
path = "data"
prefix = "a"

[optim]
lr = 2e-3
min_lr = 2e-4
warmup_steps = 5

[batch]
micro_batch = 2
global_batch = 4
max_steps = 40

[run]
out_dir = "{out}"
save_every = 1
keep_last = 2
peak_flops = 1e11
resume = true
"#
    );
    let p = dir.join(format!("{out}.toml"));
    std::fs::write(&p, cfg).unwrap();
    p
}

fn run(bin: &str, cfg: &Path) -> std::process::Child {
    Command::new(bin)
        .args(["--threads", "2", "pretrain", "--config"])
        .arg(cfg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

fn final_weights(run_dir: &Path) -> Vec<u8> {
    let ck = run_dir.join("checkpoints/step-00000040/model.safetensors");
    std::fs::read(&ck).unwrap_or_else(|_| panic!("missing {}", ck.display()))
}

/// The newest complete checkpoint's step (checkpoints are renamed into place when complete).
fn latest_checkpoint(run_dir: &Path) -> Option<u64> {
    std::fs::read_dir(run_dir.join("checkpoints"))
        .ok()?
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_prefix("step-")?
                .parse()
                .ok()
        })
        .max()
}

#[test]
fn sigkill_at_random_moments_then_resume_gives_the_uninterrupted_weights() {
    let bin = env!("CARGO_BIN_EXE_tinyllama");
    let tmp = tempfile::tempdir().unwrap();
    let mut w = PackedWriter::new(&tmp.path().join("data"), "a", 512, 1 << 20).unwrap();
    let mut r = Rng::new(3);
    let toks: Vec<u32> = (0..60_000)
        .map(|i| {
            if i % 4 == 0 {
                r.below(512) as u32
            } else {
                (i * 7 % 512) as u32
            }
        })
        .collect();
    w.push(&toks).unwrap();
    w.finish().unwrap();

    let clean = write_config(tmp.path(), "clean");
    assert!(run(bin, &clean).wait().unwrap().success());
    let want = final_weights(&tmp.path().join("clean"));

    let killed = write_config(tmp.path(), "killed");
    // Kill at moments tied to progress rather than to the clock: a fixed sleep lets a fast
    // machine finish the whole run before the first kill (CI did). Each round waits until the
    // run has saved a checkpoint newer than the one it resumed from, then kills it after a
    // random 0–30 ms, which lands anywhere in the next step: mid-forward, mid-optimizer,
    // mid-checkpoint write or mid-metrics append.
    let run_dir = tmp.path().join("killed");
    let mut rng = Rng::new(12345);
    let mut kills = 0;
    for _ in 0..6 {
        let before = latest_checkpoint(&run_dir);
        let mut child = run(bin, &killed);
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while latest_checkpoint(&run_dir) <= before
            && child.try_wait().unwrap().is_none()
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(rng.below(31)));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL on Unix
            kills += 1;
        }
        child.wait().unwrap();
    }
    // However far the killed runs got, one more resume finishes the run.
    assert!(run(bin, &killed).wait().unwrap().success());
    assert!(
        kills >= 5,
        "the test should interrupt the run several times (got {kills})"
    );
    assert_eq!(
        final_weights(&tmp.path().join("killed")),
        want,
        "weights after {kills} SIGKILLs differ"
    );
    let steps: Vec<u64> = std::fs::read_to_string(tmp.path().join("killed/metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(
        steps,
        (0..40).collect::<Vec<_>>(),
        "metrics.jsonl has each step once"
    );
}
