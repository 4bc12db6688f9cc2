//! Damaged checkpoints: every corruption is detected on resume, named, and the run falls back to
//! the newest checkpoint that verifies; interrupted saves and prunes leave nothing loadable
//! behind; a finished run says so.

use std::path::{Path, PathBuf};
use tinyllama_train::checkpoint;
use tinyllama_train::config::RunConfig;
use tinyllama_train::loader::SourceSpec;
use tinyllama_train::testutil::{structured_source, tiny_run};
use tinyllama_train::trainer::{train, RunOptions};

fn config(data: &Path, out: &Path, steps: u64) -> RunConfig {
    let src = SourceSpec {
        name: None,
        path: data.join("a"),
        prefix: Some("a".into()),
        weight: 1.0,
    };
    let mut c = tiny_run(src, out, steps, 2, 2);
    c.optim.warmup_steps = 2;
    c.run.keep_last = 5;
    c
}

fn quiet() -> RunOptions {
    RunOptions {
        quiet: true,
        ..Default::default()
    }
}

/// A finished 12-step run (checkpoints at 4, 8, 12) and the config to resume it to 16 steps.
fn finished_run(tmp: &Path, name: &str) -> (RunConfig, PathBuf) {
    structured_source(tmp, "a", 30_000, 2);
    let out = tmp.join(name);
    train(&config(tmp, &out, 12), &quiet()).unwrap();
    let mut c = config(tmp, &out, 16);
    c.run.resume = true;
    (c, out.join("checkpoints"))
}

/// Rewrites a checkpoint's manifest to match its files, as a run that wrote damaged content
/// itself would have.
fn reseal(dir: &Path) {
    let mut m: checkpoint::Manifest =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    for (name, sum) in m.files.iter_mut() {
        let b = std::fs::read(dir.join(name)).unwrap();
        *sum = checkpoint::FileSum {
            bytes: b.len() as u64,
            xxh3: format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&b)),
        };
    }
    std::fs::write(dir.join("manifest.json"), serde_json::to_vec(&m).unwrap()).unwrap();
}

fn resumed_from(c: &RunConfig) -> u64 {
    let s = train(c, &quiet()).unwrap();
    s.steps - s.losses.len() as u64
}

#[test]
fn a_truncated_file_falls_back_to_the_previous_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let (c, ck) = finished_run(tmp.path(), "run");
    let f = ck.join("step-00000012/model.safetensors");
    let len = std::fs::metadata(&f).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&f)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let e = checkpoint::verify(&ck.join("step-00000012"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("model.safetensors") && e.contains("truncated"),
        "{e}"
    );
    assert_eq!(resumed_from(&c), 8);
}

#[test]
fn finite_garbage_in_the_weights_is_caught_by_the_checksum() {
    let tmp = tempfile::tempdir().unwrap();
    let (c, ck) = finished_run(tmp.path(), "run");
    let f = ck.join("step-00000012/model.safetensors");
    let mut b = std::fs::read(&f).unwrap();
    // Flip a low mantissa bit of a weight near the end: still a finite number.
    let i = b.len() - 10;
    b[i] ^= 1;
    std::fs::write(&f, b).unwrap();
    let e = checkpoint::verify(&ck.join("step-00000012"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("checksum"), "{e}");
    assert_eq!(resumed_from(&c), 8);
}

#[test]
fn a_damaged_optimizer_shard_or_a_missing_file_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let (c, ck) = finished_run(tmp.path(), "run");
    std::fs::remove_file(ck.join("step-00000012/optimizer-rank-00000-of-00001.safetensors"))
        .unwrap();
    let e = checkpoint::verify(&ck.join("step-00000012"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("optimizer-rank-00000-of-00001.safetensors") && e.contains("missing"),
        "{e}"
    );
    let f = ck.join("step-00000008/loader-rank-00000.json");
    std::fs::write(&f, b"{}").unwrap();
    assert!(checkpoint::verify(&ck.join("step-00000008")).is_err());
    assert_eq!(
        resumed_from(&c),
        4,
        "two damaged checkpoints: back to step 4"
    );
}

#[test]
fn non_finite_weights_and_a_step_mismatch_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (c, ck) = finished_run(tmp.path(), "run");
    // A checkpoint of a diverged run: NaN weights with a matching manifest.
    let dir = ck.join("step-00000012");
    let mut w = tinyllama_model::hf::load_dir(&dir).unwrap();
    w.tensors[3][5] = f32::NAN;
    tinyllama_model::hf::save_dir(&w, &dir, tinyllama_model::hf::SaveDtype::F32, usize::MAX)
        .unwrap();
    reseal(&dir);
    checkpoint::verify(&dir).unwrap();
    let e = format!("{:#}", checkpoint::load_model(&dir).err().unwrap());
    assert!(e.contains("non-finite"), "{e}");
    // step-8's state.json claims another step.
    let sp = ck.join("step-00000008/state.json");
    let mut st: serde_json::Value = serde_json::from_slice(&std::fs::read(&sp).unwrap()).unwrap();
    st["step"] = 5.into();
    std::fs::write(&sp, serde_json::to_vec(&st).unwrap()).unwrap();
    reseal(&ck.join("step-00000008"));
    let e = checkpoint::verify(&ck.join("step-00000008"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("step 5"), "{e}");
    assert_eq!(resumed_from(&c), 4);
}

#[test]
fn leftovers_of_an_interrupted_save_or_prune_are_removed_and_never_loaded() {
    let tmp = tempfile::tempdir().unwrap();
    let (c, ck) = finished_run(tmp.path(), "run");
    // A prune killed between rename and delete, and a save killed half-way.
    std::fs::rename(ck.join("step-00000004"), ck.join(".deleting-step-00000004")).unwrap();
    std::fs::create_dir_all(ck.join(".step-00000016.partial")).unwrap();
    std::fs::write(ck.join(".step-00000016.partial/model.safetensors"), b"half").unwrap();
    assert_eq!(checkpoint::list(&c.run.out_dir).unwrap().len(), 2);
    assert_eq!(resumed_from(&c), 12);
    assert!(!ck.join(".deleting-step-00000004").exists());
    assert!(!ck.join(".step-00000016.partial").exists());
}

#[test]
fn resuming_a_finished_run_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut c, _) = finished_run(tmp.path(), "run");
    c.batch.max_steps = Some(12);
    let s = train(&c, &quiet()).unwrap();
    assert!(s.already_finished && s.losses.is_empty() && s.steps == 12);
}

#[test]
fn the_last_good_checkpoint_is_never_the_one_just_loaded() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut c, _) = finished_run(tmp.path(), "run");
    c.run.max_bad_steps = 2;
    let e = format!(
        "{:#}",
        train(
            &c,
            &RunOptions {
                inject_nan_at: vec![12, 13],
                ..quiet()
            }
        )
        .unwrap_err()
    );
    assert!(
        e.contains("last good checkpoint is")
            && e.contains("step-00000008")
            && !e.contains("step-00000012"),
        "{e}"
    );
}
