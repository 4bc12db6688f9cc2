//! `tinyllama pretrain` as several processes. With the `mpi` feature (CI builds it and runs this
//! under Open MPI's mpirun): two processes equal one, a killed rank ends the job and the run
//! resumes to the same bytes, a hung rank ends the job within the configured bound. Without the
//! feature: a process started as one of several ranks refuses to train.

use std::path::{Path, PathBuf};
use std::process::Command;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_tinyllama")
}

fn make_data(dir: &Path) {
    tinyllama_train::testutil::structured_source(dir, "data", 40_000, 5);
}

fn write_config(dir: &Path, out: &str, micro: usize, steps: u64, timeout_s: u64) -> PathBuf {
    let cfg = format!(
        r#"
[model]
preset = "test-tiny"

[data]
seq_len = 16
[[data.train]]
path = "data"
prefix = "data"
[[data.val]]
path = "data"
prefix = "data"

[optim]
lr = 3e-3
min_lr = 3e-4
warmup_steps = 3

[batch]
micro_batch = {micro}
global_batch = 4
max_steps = {steps}

[run]
out_dir = "{out}"
save_every = 4
keep_last = 3
eval_sequences = 6
peak_flops = 1e11

[dist]
timeout_s = {timeout_s}
"#
    );
    let p = dir.join(format!("{out}.toml"));
    std::fs::write(&p, cfg).unwrap();
    p
}

#[cfg(not(feature = "mpi"))]
#[test]
fn a_rank_of_several_without_mpi_refuses_to_train() {
    let tmp = tempfile::tempdir().unwrap();
    make_data(tmp.path());
    let cfg = write_config(tmp.path(), "run", 2, 4, 60);
    let out = Command::new(bin())
        .args(["pretrain", "--config"])
        .arg(&cfg)
        .env("OMPI_COMM_WORLD_RANK", "1")
        .env("OMPI_COMM_WORLD_SIZE", "2")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("without MPI support") && err.contains("--features mpi"),
        "{err}"
    );
    assert!(
        !tmp.path().join("run/checkpoints").exists(),
        "nothing was trained"
    );
}

#[cfg(feature = "mpi")]
mod mpi {
    use super::*;
    use std::time::{Duration, Instant};

    fn mpirun(np: usize, args: &[&str], cwd: &Path) -> Command {
        let mut c = Command::new("mpirun");
        c.args(["--allow-run-as-root", "--oversubscribe", "-np"])
            .arg(np.to_string())
            .arg(bin())
            .args(["--threads", "1"])
            .args(args)
            .current_dir(cwd);
        c
    }

    fn have_mpirun() -> bool {
        let ok = Command::new("mpirun").arg("--version").output().is_ok();
        if !ok {
            eprintln!("SKIPPED: mpirun not found (apt-get install openmpi-bin)");
        }
        ok
    }

    fn losses(run: &Path) -> Vec<f64> {
        std::fs::read_to_string(run.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"]
                    .as_f64()
                    .unwrap()
            })
            .collect()
    }

    fn weights(run: &Path, step: u64) -> Vec<u8> {
        std::fs::read(run.join(format!("checkpoints/step-{step:08}/model.safetensors"))).unwrap()
    }

    fn check(out: std::process::Output) -> String {
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            out.status.success(),
            "{}\n{err}",
            String::from_utf8_lossy(&out.stdout)
        );
        err
    }

    #[test]
    fn two_processes_train_like_one_and_resume_after_a_killed_rank() {
        if !have_mpirun() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        make_data(d);
        // One process, micro-batch 4.
        let one = write_config(d, "one", 4, 16, 60);
        check(
            Command::new(bin())
                .args(["--threads", "1", "pretrain", "--config"])
                .arg(&one)
                .current_dir(d)
                .output()
                .unwrap(),
        );
        // Two processes, micro-batch 2 each.
        write_config(d, "two", 2, 16, 60);
        let err = check(
            mpirun(2, &["pretrain", "--config", "two.toml"], d)
                .output()
                .unwrap(),
        );
        assert!(err.contains("data parallel over MPI"), "{err}");
        let (a, b) = (losses(&d.join("one")), losses(&d.join("two")));
        assert_eq!(a.len(), 16);
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() <= 1e-5 * x, "{a:?}\n{b:?}");
        }

        // Rank 1 stops before step 10 and is killed there; the job must end (mpirun sees the
        // death), then the run resumes from step 8 to the same bytes as the straight run.
        write_config(d, "killed", 2, 16, 600);
        let t0 = Instant::now();
        let mut child = mpirun(
            2,
            &["pretrain", "--config", "killed.toml", "--test-hang", "1:10"],
            d,
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
        let hb = d.join("killed/heartbeat/rank-00001.json");
        let pid = loop {
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "rank 1 never reached step 10"
            );
            if let Ok(b) = std::fs::read(&hb) {
                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&b) {
                    if v["step"].as_u64() == Some(10) {
                        break v["pid"].as_u64().unwrap();
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        std::thread::sleep(Duration::from_millis(300));
        Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap();
        let t_kill = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(
                t_kill.elapsed() < Duration::from_secs(60),
                "the job still runs 60 s after a rank was killed"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(!status.success());
        eprintln!(
            "job ended {:.1} s after SIGKILL of rank 1",
            t_kill.elapsed().as_secs_f64()
        );
        let resumed = check(
            mpirun(2, &["pretrain", "--config", "killed.toml", "--resume"], d)
                .output()
                .unwrap(),
        );
        assert!(
            resumed.contains("resuming from") && resumed.contains("step-00000008"),
            "{resumed}"
        );
        assert_eq!(
            weights(&d.join("killed"), 16),
            weights(&d.join("two"), 16),
            "byte-identical to the uninterrupted 2-rank run"
        );
        // And 2 → 1 rank: the same run continues with one process.
        let err = check(
            Command::new(bin())
                .args([
                    "--threads",
                    "1",
                    "pretrain",
                    "--config",
                    "two.toml",
                    "--resume",
                    "--max-steps",
                    "20",
                ])
                .current_dir(d)
                .output()
                .unwrap(),
        );
        assert!(err.contains("written by 2 ranks"), "{err}");
    }

    #[test]
    fn a_hung_rank_ends_the_job_within_the_timeout_naming_it() {
        if !have_mpirun() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        make_data(d);
        write_config(d, "hung", 2, 16, 3);
        let t0 = Instant::now();
        let out = mpirun(
            2,
            &["pretrain", "--config", "hung.toml", "--test-hang", "1:6"],
            d,
        )
        .output()
        .unwrap();
        let took = t0.elapsed();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{err}");
        assert!(took < Duration::from_secs(60), "took {took:?}");
        assert!(
            err.contains("rank 1 (pid") && err.contains("last finished step 6"),
            "{err}"
        );
        assert!(
            err.contains("Last complete checkpoint") && err.contains("step-00000004"),
            "{err}"
        );
        eprintln!(
            "hung rank: job ended after {:.1} s (timeout 3 s)",
            took.as_secs_f64()
        );
    }
}
