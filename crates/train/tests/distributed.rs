//! Data parallelism without MPI: ranks on threads of this process (`LocalGroup`), so every build
//! checks that N ranks train like one. The multi-process runs under mpirun are in the root
//! crate's `tests/distributed_mpi.rs` (feature `mpi`).

use std::path::Path;
use tinyllama_dist::local::LocalGroup;
use tinyllama_dist::{Collective, SingleProcess};
use tinyllama_engine::{Activations, Llama};
use tinyllama_model::HostWeights;
use tinyllama_train::checkpoint;
use tinyllama_train::config::RunConfig;
use tinyllama_train::data_parallel::{Comm, CommStats, Optimizer};
use tinyllama_train::loader::SourceSpec;
use tinyllama_train::testutil::{relative_difference, structured_source, tiny_run};
use tinyllama_train::trainer::{accumulate_step, cpu_backend, train_in, RunOptions, RunSummary};

/// One source (so the mixture draws no random numbers and every split of a step's sequences
/// over ranks reads the same sequences).
fn make_data(dir: &Path) -> SourceSpec {
    structured_source(dir, "a", 40_000, 5)
}

fn config(data: &SourceSpec, out: &Path, steps: u64, micro: usize, global: usize) -> RunConfig {
    let mut c = tiny_run(data.clone(), out, steps, micro, global);
    c.data.val = c.data.train.clone();
    c.run.eval_sequences = 6;
    c.run.keep_last = 10;
    c
}

fn quiet() -> RunOptions {
    RunOptions {
        quiet: true,
        ..Default::default()
    }
}

/// Runs `cfg` on `world` ranks (threads) and returns rank 0's summary.
fn run(world: usize, cfg: &RunConfig) -> RunSummary {
    run_until(world, cfg, None)
}

/// [`run`], interrupted after step `stop` when given.
fn run_until(world: usize, cfg: &RunConfig, stop: Option<u64>) -> RunSummary {
    let opts = RunOptions {
        stop_after: stop,
        ..quiet()
    };
    if world == 1 {
        return train_in(cfg, &opts, Box::new(SingleProcess)).unwrap();
    }
    let hs: Vec<_> = LocalGroup::new(world)
        .into_iter()
        .map(|g| {
            let (c, o) = (cfg.clone(), opts.clone());
            std::thread::spawn(move || train_in(&c, &o, Box::new(g)).unwrap())
        })
        .collect();
    let mut out: Vec<RunSummary> = hs.into_iter().map(|h| h.join().unwrap()).collect();
    for s in &out[1..] {
        assert_eq!(
            s.losses.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            out[0]
                .losses
                .iter()
                .map(|x| x.to_bits())
                .collect::<Vec<_>>(),
            "every rank reports the same losses"
        );
    }
    out.swap_remove(0)
}

fn weights(s: &RunSummary) -> HostWeights {
    checkpoint::load(s.checkpoint.as_ref().unwrap())
        .unwrap()
        .weights
}

/// Per-step losses and every tensor within `tol` relative (tensor-wise norm of the difference).
fn assert_close(a: &RunSummary, b: &RunSummary, tol: f64, what: &str) {
    assert_eq!(a.losses.len(), b.losses.len(), "{what}");
    for (i, (x, y)) in a.losses.iter().zip(&b.losses).enumerate() {
        assert!(
            (x - y).abs() <= tol * x.abs(),
            "{what}: step {i} loss {x} vs {y}"
        );
    }
    let (wa, wb) = (weights(a), weights(b));
    for ((s, ta), tb) in wa.specs.iter().zip(&wa.tensors).zip(&wb.tensors) {
        let r = relative_difference(ta, tb);
        assert!(
            r <= tol,
            "{what}: tensor {} differs by {r:.3e} relative",
            s.name
        );
    }
    let (va, vb) = (a.final_val_loss.unwrap(), b.final_val_loss.unwrap());
    assert!(
        (va - vb).abs() <= tol * va,
        "{what}: validation {va} vs {vb}"
    );
}

#[test]
fn two_ranks_train_like_one_rank_with_the_whole_batch_or_with_accumulation() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let src = make_data(d);
    let one_big = run(1, &config(&src, &d.join("1x4"), 20, 4, 4));
    let one_accum = run(1, &config(&src, &d.join("1x2x2"), 20, 2, 4));
    let two = run(2, &config(&src, &d.join("2x2"), 20, 2, 4));
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    assert!(
        mean(&one_big.losses[15..]) < mean(&one_big.losses[..5]),
        "training lowers the loss: {:?}",
        one_big.losses
    );
    assert_close(
        &one_big,
        &one_accum,
        1e-5,
        "1 rank × 4 vs 1 rank × 2 micro-steps of 2",
    );
    assert_close(&one_big, &two, 1e-5, "1 rank × 4 vs 2 ranks × 2 (ZeRO-1)");
    assert_eq!((two.world, two.rank), (2, 0));
    assert!(
        two.comm_bytes > 0,
        "the collectives carried the gradients and parameters"
    );
    // The checkpoint holds one optimizer file per rank and an index naming them.
    let ck = two.checkpoint.as_ref().unwrap();
    assert!(ck
        .join("optimizer-rank-00000-of-00002.safetensors")
        .exists());
    assert!(ck
        .join("optimizer-rank-00001-of-00002.safetensors")
        .exists());
    assert!(ck.join("loader-rank-00001.json").exists());
    checkpoint::verify(ck).unwrap();
    // Only rank 0 writes metrics.
    let steps = tinyllama_train::metrics::MetricsWriter::read_all(&d.join("2x2")).len();
    assert_eq!(steps, 20);
}

#[test]
fn zero1_equals_plain_data_parallel_and_three_ranks_shard_an_indivisible_count() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let src = make_data(d);
    let zero = run(2, &config(&src, &d.join("zero"), 12, 2, 4));
    let mut plain_cfg = config(&src, &d.join("plain"), 12, 2, 4);
    plain_cfg.dist.zero = false;
    let plain = run(2, &plain_cfg);
    assert_close(&zero, &plain, 1e-5, "ZeRO-1 vs plain data parallel");

    let n = tinyllama_model::presets::get("test-tiny")
        .unwrap()
        .num_params();
    assert_ne!(
        n % 3,
        0,
        "the test needs a parameter count that 3 does not divide"
    );
    let three = run(3, &config(&src, &d.join("3x2"), 12, 2, 6));
    let one = run(1, &config(&src, &d.join("1x6"), 12, 6, 6));
    assert_close(&one, &three, 1e-5, "1 rank × 6 vs 3 ranks × 2");
}

#[test]
fn resuming_on_another_number_of_ranks_continues_the_same_run() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let src = make_data(d);
    let straight = run(2, &config(&src, &d.join("straight"), 16, 2, 4));
    // 2 ranks to step 8, then 1 rank (two micro-steps per step) to the end.
    let two_then_one = d.join("2to1");
    run_until(2, &config(&src, &two_then_one, 16, 2, 4), Some(8));
    let mut c = config(&src, &two_then_one, 16, 2, 4);
    c.run.resume = true;
    let rest = run(1, &c);
    assert_eq!(rest.losses.len(), 8);
    for (i, (x, y)) in straight.losses[8..].iter().zip(&rest.losses).enumerate() {
        assert!((x - y).abs() <= 1e-5 * x, "2→1, step {}: {x} vs {y}", 8 + i);
    }
    // 1 rank to step 8, then 2 ranks.
    let one_then_two = d.join("1to2");
    run_until(1, &config(&src, &one_then_two, 16, 4, 4), Some(8));
    let mut c = config(&src, &one_then_two, 16, 2, 4);
    c.run.resume = true;
    let rest = run(2, &c);
    for (i, (x, y)) in straight.losses[8..].iter().zip(&rest.losses).enumerate() {
        assert!((x - y).abs() <= 1e-5 * x, "1→2, step {}: {x} vs {y}", 8 + i);
    }
    // Same world size: bit-identical to the uninterrupted run.
    let again = d.join("2to2");
    run_until(2, &config(&src, &again, 16, 2, 4), Some(8));
    let mut c = config(&src, &again, 16, 2, 4);
    c.run.resume = true;
    let rest = run(2, &c);
    assert_eq!(
        rest.losses.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        straight.losses[8..]
            .iter()
            .map(|x| x.to_bits())
            .collect::<Vec<_>>()
    );
    assert_eq!(weights(&rest).tensors, weights(&straight).tensors);
}

/// Micro-batches with different numbers of ignored targets: the step's loss and gradient are
/// those of one batch holding them all (sum over targets / number of targets), in one process
/// with accumulation and over two ranks.
#[test]
fn masked_targets_weigh_every_token_equally_however_the_batch_is_split() {
    let cfg = tinyllama_model::presets::get("test-tiny").unwrap();
    let host = HostWeights::init(&cfg, 3);
    let seq = 12;
    let mut r = tinyllama_model::rng::Rng::new(8);
    let inputs: Vec<u32> = (0..4 * seq).map(|_| r.below(64) as u32).collect();
    let mut targets: Vec<i32> = (0..4 * seq).map(|_| r.below(64) as i32).collect();
    // Sequence 0 keeps 2 targets, sequence 1 all, sequence 2 five, sequence 3 all.
    for (s, keep) in [(0usize, 2usize), (2, 5)] {
        for t in keep..seq {
            targets[s * seq + t] = -1;
        }
    }
    let slice = |a: usize, b: usize| {
        (
            inputs[a * seq..b * seq].to_vec(),
            targets[a * seq..b * seq].to_vec(),
        )
    };
    let grads_of = |batches: Vec<(Vec<u32>, Vec<i32>)>, coll: &dyn Collective| {
        let model = Llama::new(cpu_backend("f32").unwrap(), &host).unwrap();
        let b = batches[0].0.len() / seq;
        let mut acts = Activations::new(&model, b, seq);
        let mut grads = model.zero_grads();
        let loss = accumulate_step(&model, &mut acts, &mut grads, &batches, coll).unwrap();
        let mut opt = Optimizer::new(&model, Default::default(), coll.rank(), coll.world(), false);
        opt.exchange(
            &model,
            &mut grads,
            Comm::host(coll),
            &mut CommStats::default(),
        )
        .unwrap();
        (loss, grads)
    };
    let (l_all, g_all) = grads_of(vec![slice(0, 4)], &SingleProcess);
    let (l_acc, g_acc) = grads_of(vec![slice(0, 2), slice(2, 4)], &SingleProcess);
    let hs: Vec<_> = LocalGroup::new(2)
        .into_iter()
        .map(|g| {
            let b = if g.rank() == 0 {
                slice(0, 2)
            } else {
                slice(2, 4)
            };
            (g, b)
        })
        .collect();
    let host2 = host.clone();
    let results: Vec<(f64, Vec<Vec<f32>>)> = hs
        .into_iter()
        .map(|(g, b)| {
            let h = host2.clone();
            std::thread::spawn(move || {
                let model = Llama::new(cpu_backend("f32").unwrap(), &h).unwrap();
                let mut acts = Activations::new(&model, 2, seq);
                let mut grads = model.zero_grads();
                let loss = accumulate_step(&model, &mut acts, &mut grads, &[b], &g).unwrap();
                let mut opt = Optimizer::new(&model, Default::default(), g.rank(), 2, false);
                opt.exchange(
                    &model,
                    &mut grads,
                    Comm::host(&g),
                    &mut CommStats::default(),
                )
                .unwrap();
                (loss, grads)
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    // Tensor-wise: the norm of the difference within 1e-5 of the tensor's norm (single
    // elements that nearly cancel carry float noise of their own).
    let close = |a: &[Vec<f32>], b: &[Vec<f32>], what: &str| {
        for (i, (ta, tb)) in a.iter().zip(b).enumerate() {
            let r = relative_difference(ta, tb);
            assert!(r <= 1e-5, "{what}: tensor {i}: {r:.3e}");
        }
    };
    assert!((l_all - l_acc).abs() < 1e-6 * l_all, "{l_all} vs {l_acc}");
    close(&g_all, &g_acc, "one batch vs two micro-batches");
    for (l, g) in &results {
        assert!((l_all - l).abs() < 1e-6 * l_all, "{l_all} vs {l}");
        close(&g_all, g, "one batch vs two ranks");
    }
    // A mean of per-micro-batch means would weigh sequence 0's two targets like a whole
    // sequence: the rule above is what makes these agree.
    let mean_of_means = {
        let (la, _) = grads_of(vec![slice(0, 2)], &SingleProcess);
        let (lb, _) = grads_of(vec![slice(2, 4)], &SingleProcess);
        (la + lb) / 2.0
    };
    assert!(
        (mean_of_means - l_all).abs() > 1e-4,
        "the test's masks must matter"
    );
}
