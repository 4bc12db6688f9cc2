//! Small generated training data for tests (this crate's, and the binary's end-to-end tests).

use crate::config::RunConfig;
use crate::loader::SourceSpec;
use std::path::Path;
use tinyllama_data::packed::PackedWriter;

/// Packed shards `dir/<prefix>/<prefix>-NNNNN.bin` of `tokens` tokens below 64 with structure a
/// tiny model learns (every third token random, the rest counting up), and the source naming
/// them.
pub fn structured_source(dir: &Path, prefix: &str, tokens: usize, seed: u64) -> SourceSpec {
    let mut r = tinyllama_model::rng::Rng::new(seed);
    let mut w = PackedWriter::new(&dir.join(prefix), prefix, 64, 9_000).expect("shard writer");
    let toks: Vec<u32> = (0..tokens)
        .map(|i| {
            if i % 3 == 0 {
                r.below(64) as u32
            } else {
                (i % 64) as u32
            }
        })
        .collect();
    w.push(&toks).expect("write tokens");
    w.finish().expect("finish shards");
    SourceSpec {
        name: None,
        path: dir.join(prefix),
        prefix: Some(prefix.into()),
        weight: 1.0,
    }
}

/// A run of the `test-tiny` preset on `train`: sequences of 16 tokens, the given batch shape
/// and steps, a short warm-up, a checkpoint every 4 steps, no export.
pub fn tiny_run(
    train: SourceSpec,
    out: &Path,
    steps: u64,
    micro: usize,
    global: usize,
) -> RunConfig {
    let mut c: RunConfig = toml::from_str("[data]\ntrain = []\n").expect("minimal config");
    c.model.preset = Some("test-tiny".into());
    c.data.seq_len = 16;
    c.data.train = vec![train];
    c.batch.micro_batch = micro;
    c.batch.global_batch = global;
    c.batch.max_steps = Some(steps);
    c.optim.lr = 3e-3;
    c.optim.min_lr = 3e-4;
    c.optim.warmup_steps = 3;
    c.run.out_dir = out.to_path_buf();
    c.run.save_every = 4;
    c.run.peak_flops = Some(1e11);
    c.run.export = false;
    c
}

/// `‖a − b‖ / ‖a‖` in f64: how far a tensor moved, in the tensor-wise sense the equivalence
/// tests use (single elements that nearly cancel carry float noise of their own).
pub fn relative_difference(a: &[f32], b: &[f32]) -> f64 {
    let d: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let n: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum();
    d.sqrt() / n.sqrt()
}
