//! Exact resume and bad-step handling of the training loop, on a tiny model and generated data.

use std::path::Path;
use tinyllama_data::packed::PackedWriter;
use tinyllama_train::checkpoint;
use tinyllama_train::config::RunConfig;
use tinyllama_train::loader::SourceSpec;
use tinyllama_train::trainer::{train, RunOptions};

/// Two sources of pseudo-random tokens with some structure (so loss falls), and a validation
/// source.
fn make_data(dir: &Path) {
    let mut r = tinyllama_model::rng::Rng::new(11);
    for (prefix, n) in [("a", 30_000), ("b", 20_000), ("val", 4_000)] {
        let mut w = PackedWriter::new(&dir.join(prefix), prefix, 64, 7_000).unwrap();
        let toks: Vec<u32> = (0..n)
            .map(|i| {
                if i % 3 == 0 {
                    r.below(64) as u32
                } else {
                    (i % 64) as u32
                }
            })
            .collect();
        w.push(&toks).unwrap();
        w.finish().unwrap();
    }
}

fn config(data: &Path, out: &Path, steps: u64) -> RunConfig {
    let mut c: RunConfig = toml::from_str("[data]\ntrain = []\n").unwrap();
    c.model.preset = Some("test-tiny".into());
    c.data.seq_len = 16;
    c.data.train = vec![
        SourceSpec {
            name: None,
            path: data.join("a"),
            prefix: Some("a".into()),
            weight: 0.7,
        },
        SourceSpec {
            name: None,
            path: data.join("b"),
            prefix: Some("b".into()),
            weight: 0.3,
        },
    ];
    c.data.val = vec![SourceSpec {
        name: None,
        path: data.join("val"),
        prefix: Some("val".into()),
        weight: 1.0,
    }];
    c.batch.micro_batch = 2;
    c.batch.global_batch = 4;
    c.batch.max_steps = Some(steps);
    c.optim.lr = 3e-3;
    c.optim.min_lr = 3e-4;
    c.optim.warmup_steps = 3;
    c.run.out_dir = out.to_path_buf();
    c.run.eval_every = 5;
    c.run.eval_sequences = 8;
    c.run.save_every = 4;
    c.run.keep_last = 2;
    c.run.peak_flops = Some(1e11);
    c
}

fn quiet() -> RunOptions {
    RunOptions {
        quiet: true,
        ..Default::default()
    }
}

#[test]
fn interrupted_and_resumed_run_has_bit_identical_losses_and_weights() {
    let tmp = tempfile::tempdir().unwrap();
    make_data(tmp.path());
    let full = train(&config(tmp.path(), &tmp.path().join("full"), 20), &quiet()).unwrap();
    assert_eq!(full.steps, 20);
    assert!(
        full.losses[19] < full.losses[0],
        "training reduces the loss: {:?}",
        full.losses
    );

    // Interrupted after step 10 (last checkpoint at 8), then resumed to the end.
    let mut c = config(tmp.path(), &tmp.path().join("resumed"), 20);
    let part = train(
        &c,
        &RunOptions {
            stop_after: Some(10),
            ..quiet()
        },
    )
    .unwrap();
    assert_eq!(part.steps, 10);
    c.run.resume = true;
    let rest = train(&c, &quiet()).unwrap();
    // Steps 8..20 were (re)run after resuming from the checkpoint at step 8.
    let resumed: Vec<u64> = rest.losses.iter().map(|x| x.to_bits()).collect();
    let want: Vec<u64> = full.losses[8..].iter().map(|x| x.to_bits()).collect();
    assert_eq!(
        resumed, want,
        "per-step losses after resume are bit-identical"
    );
    let a = checkpoint::load(full.checkpoint.as_ref().unwrap()).unwrap();
    let b = checkpoint::load(rest.checkpoint.as_ref().unwrap()).unwrap();
    assert_eq!(a.weights.tensors, b.weights.tensors);
    assert_eq!(a.m, b.m);
    // metrics.jsonl has each step exactly once.
    let steps: Vec<u64> =
        tinyllama_train::metrics::MetricsWriter::read_all(&tmp.path().join("resumed"))
            .iter()
            .map(|r| r.step)
            .collect();
    assert_eq!(steps, (0..20).collect::<Vec<_>>());
    // Retention: keep_last = 2.
    assert_eq!(
        checkpoint::list(&tmp.path().join("resumed")).unwrap().len(),
        2
    );
    // The run ends with a validation loss, a plot and a Hugging Face export.
    assert!(rest.final_val_loss.is_some());
    assert!(
        tmp.path().join("resumed/loss.png").exists()
            && tmp.path().join("resumed/loss.svg").exists()
    );
    let exported = tinyllama_model::hf::load_dir(rest.export_dir.as_ref().unwrap()).unwrap();
    assert_eq!(exported.tensors, b.weights.tensors);
}

#[test]
fn refuses_to_overwrite_an_earlier_run_without_resume() {
    let tmp = tempfile::tempdir().unwrap();
    make_data(tmp.path());
    let c = config(tmp.path(), &tmp.path().join("run"), 4);
    train(&c, &quiet()).unwrap();
    let e = format!("{:#}", train(&c, &quiet()).unwrap_err());
    assert!(e.contains("resume"), "{e}");
}

#[test]
fn non_finite_steps_are_skipped_counted_and_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    make_data(tmp.path());
    let c = config(tmp.path(), &tmp.path().join("nan"), 12);
    let s = train(
        &c,
        &RunOptions {
            inject_nan_at: vec![2, 6],
            ..quiet()
        },
    )
    .unwrap();
    assert_eq!(s.skipped_steps, 2);
    assert_eq!(s.steps, 12);
    let recs = tinyllama_train::metrics::MetricsWriter::read_all(&tmp.path().join("nan"));
    assert_eq!(recs[7].skipped_steps, 2);

    let mut c = config(tmp.path(), &tmp.path().join("nan2"), 30);
    c.run.max_bad_steps = 3;
    let e = format!(
        "{:#}",
        train(
            &c,
            &RunOptions {
                inject_nan_at: vec![9, 10, 11],
                ..quiet()
            }
        )
        .unwrap_err()
    );
    assert!(
        e.contains("3 consecutive") && e.contains("step-00000008"),
        "{e}"
    );
}
