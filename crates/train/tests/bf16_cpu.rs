//! CPU training with bf16 products (`precision = "bf16"`): it converges like f32, stays close to
//! it step by step, and is deterministic. On CPUs with AMX this runs the tile kernels; elsewhere
//! the emulated path (same numerics), so CI checks the precision either way.

use std::path::Path;
use tinyllama_data::packed::PackedWriter;
use tinyllama_train::config::RunConfig;
use tinyllama_train::loader::SourceSpec;
use tinyllama_train::trainer::{train, RunOptions};

/// Tokens with structure (a repeating ramp with noise every third token), so the loss falls.
fn make_data(dir: &Path) {
    let mut r = tinyllama_model::rng::Rng::new(5);
    for (prefix, n) in [("train", 60_000), ("val", 4_000)] {
        let mut w = PackedWriter::new(&dir.join(prefix), prefix, 2048, 20_000).unwrap();
        let toks: Vec<u32> = (0..n)
            .map(|i| {
                if i % 3 == 0 {
                    r.below(256) as u32
                } else {
                    (i * 7 % 256) as u32
                }
            })
            .collect();
        w.push(&toks).unwrap();
        w.finish().unwrap();
    }
}

fn config(data: &Path, out: &Path, precision: &str) -> RunConfig {
    let mut c: RunConfig = toml::from_str("[data]\ntrain = []\n").unwrap();
    // micro-1m: dim 128, so the products have whole 32×32 AMX blocks as well as edges.
    c.model.preset = Some("micro-1m".into());
    c.data.seq_len = 64;
    let src = |p: &str| SourceSpec {
        name: None,
        path: data.join(p),
        prefix: Some(p.into()),
        weight: 1.0,
    };
    c.data.train = vec![src("train")];
    c.data.val = vec![src("val")];
    c.batch.micro_batch = 4;
    c.batch.global_batch = 8;
    c.batch.max_steps = Some(60);
    c.optim.lr = 3e-3;
    c.optim.min_lr = 3e-4;
    c.optim.warmup_steps = 5;
    c.run.out_dir = out.to_path_buf();
    c.run.eval_every = 60;
    c.run.eval_sequences = 16;
    c.run.save_every = 1000;
    c.run.peak_flops = Some(1e11);
    c.run.precision = precision.into();
    c
}

#[test]
fn bf16_products_train_like_f32() {
    let tmp = tempfile::tempdir().unwrap();
    make_data(tmp.path());
    let quiet = RunOptions {
        quiet: true,
        ..Default::default()
    };
    let f32_run = train(&config(tmp.path(), &tmp.path().join("f32"), "f32"), &quiet).unwrap();
    let bf16_run = train(
        &config(tmp.path(), &tmp.path().join("bf16"), "bf16"),
        &quiet,
    )
    .unwrap();
    let again = train(
        &config(tmp.path(), &tmp.path().join("again"), "bf16"),
        &quiet,
    )
    .unwrap();

    let (l32, l16) = (&f32_run.losses, &bf16_run.losses);
    assert_eq!(l32.len(), 60);
    assert_eq!(l16.len(), 60);
    // The first step sees identical weights and data: only the rounding of the products differs.
    assert!(
        (l16[0] - l32[0]).abs() < 0.01 * l32[0],
        "{} vs {}",
        l16[0],
        l32[0]
    );
    // Converges: well below the uniform-prediction loss ln(2048) ≈ 7.6, and close to f32.
    let tail = |l: &[f64]| l[50..].iter().sum::<f64>() / 10.0;
    let (t32, t16) = (tail(l32), tail(l16));
    assert!(
        t16 < 0.8 * l16[0],
        "bf16 did not converge: {} → {t16}",
        l16[0]
    );
    assert!(
        (t16 - t32).abs() < 0.05 * t32,
        "bf16 tail loss {t16} vs f32 {t32}"
    );
    let (v32, v16) = (
        f32_run.final_val_loss.unwrap(),
        bf16_run.final_val_loss.unwrap(),
    );
    assert!(
        (v16 - v32).abs() < 0.05 * v32,
        "val loss bf16 {v16} vs f32 {v32}"
    );
    // Deterministic: the same run twice gives the same bits.
    assert_eq!(bf16_run.losses, again.losses);
    assert_ne!(l16, l32, "bf16 run should not be bit-identical to f32");
}
