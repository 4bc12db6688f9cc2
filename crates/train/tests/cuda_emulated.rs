//! The training loop on the CUDA backend, run on the kernel emulator (`device = "cuda:emu"`):
//! bf16 mixed-precision steps, checkpoints, validation, and checkpoints moving between the CUDA
//! backend and the CPU backend in both directions. Needs a C++ compiler for the emulator.
#![cfg(feature = "cuda")]

use std::path::Path;
use tinyllama_data::packed::PackedWriter;
use tinyllama_train::checkpoint;
use tinyllama_train::config::RunConfig;
use tinyllama_train::loader::SourceSpec;
use tinyllama_train::trainer::{train, RunOptions};

fn make_data(dir: &Path) {
    let mut r = tinyllama_model::rng::Rng::new(5);
    for (prefix, n) in [("a", 6_000), ("val", 1_000)] {
        let mut w = PackedWriter::new(&dir.join(prefix), prefix, 64, 3_000).unwrap();
        let toks: Vec<u32> = (0..n)
            .map(|i| {
                if i % 4 == 0 {
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

fn config(data: &Path, out: &Path, steps: u64, device: &str) -> RunConfig {
    let mut c: RunConfig = toml::from_str("[data]\ntrain = []\n").unwrap();
    // Head dimension 32: an instantiated attention kernel.
    c.model.preset = Some("micro-1m".into());
    c.data.seq_len = 24;
    c.data.train = vec![SourceSpec {
        name: None,
        path: data.join("a"),
        prefix: Some("a".into()),
        weight: 1.0,
    }];
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
    c.optim.warmup_steps = 1;
    c.run.out_dir = out.to_path_buf();
    c.run.eval_every = 2;
    c.run.eval_sequences = 4;
    c.run.save_every = 2;
    c.run.keep_last = 3;
    c.run.peak_flops = Some(1e11);
    c.run.export = false;
    c.run.device = device.into();
    c.run.precision = if device == "cpu" { "f32" } else { "bf16" }.into();
    c
}

fn quiet() -> RunOptions {
    RunOptions {
        quiet: true,
        ..Default::default()
    }
}

fn emulator_available() -> bool {
    match tinyllama_cuda::emulator_backend() {
        Ok(_) => true,
        Err(e) => {
            eprintln!("skipping: no kernel emulator ({e:#})");
            false
        }
    }
}

#[test]
fn cuda_run_trains_and_its_checkpoint_resumes_on_the_cpu_and_back() {
    if !emulator_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    make_data(tmp.path());

    // bf16 on the (emulated) CUDA backend, then the same run continued on the CPU.
    let out = tmp.path().join("gpu-then-cpu");
    let gpu = train(&config(tmp.path(), &out, 4, "cuda:emu"), &quiet()).unwrap();
    assert_eq!(gpu.steps, 4);
    assert!(gpu.losses.iter().all(|l| l.is_finite()));
    assert!(gpu.losses[3] < gpu.losses[0], "{:?}", gpu.losses);
    assert!(gpu.final_val_loss.unwrap().is_finite());
    let ckpt = checkpoint::latest(&out).unwrap().unwrap();
    let mut cpu_cfg = config(tmp.path(), &out, 6, "cpu");
    cpu_cfg.run.resume = true;
    let cont = train(&cpu_cfg, &quiet()).unwrap();
    assert_eq!(cont.steps, 6);
    assert_eq!(
        cont.losses.len(),
        2,
        "two more steps after the GPU checkpoint"
    );
    assert!(cont.losses.iter().all(|l| l.is_finite()));
    assert!(checkpoint::latest(&out).unwrap().unwrap() != ckpt);

    // The reference: the whole run on the CPU. bf16 steps differ from f32 ones, but not by much.
    let cpu = train(
        &config(tmp.path(), &tmp.path().join("cpu"), 6, "cpu"),
        &quiet(),
    )
    .unwrap();
    for (a, b) in gpu.losses.iter().zip(&cpu.losses) {
        assert!((a - b).abs() < 0.05 * b.abs(), "bf16 {a} vs f32 {b}");
    }
    for (a, b) in cont.losses.iter().zip(&cpu.losses[4..]) {
        assert!((a - b).abs() < 0.05 * b.abs(), "resumed {a} vs f32 {b}");
    }

    // And a CPU checkpoint continued on the CUDA backend.
    let out2 = tmp.path().join("cpu-then-gpu");
    train(&config(tmp.path(), &out2, 2, "cpu"), &quiet()).unwrap();
    let mut gcfg = config(tmp.path(), &out2, 4, "cuda:emu");
    gcfg.run.resume = true;
    let g2 = train(&gcfg, &quiet()).unwrap();
    assert_eq!((g2.steps, g2.losses.len()), (4, 2));
    for (a, b) in g2.losses.iter().zip(&cpu.losses[2..4]) {
        assert!(
            (a - b).abs() < 0.05 * b.abs(),
            "resumed on cuda {a} vs f32 {b}"
        );
    }
}

#[test]
fn cuda_device_needs_bf16_precision() {
    let tmp = tempfile::tempdir().unwrap();
    make_data(tmp.path());
    let mut c = config(tmp.path(), &tmp.path().join("x"), 1, "cuda:emu");
    c.run.precision = "f32".into();
    let e = train(&c, &quiet()).unwrap_err().to_string();
    assert!(e.contains("bf16"), "{e}");
}

/// ZeRO-1 on the CUDA backend (device buffers staged through host memory, as when NCCL is
/// absent): two ranks on the emulator train like one with the whole batch.
#[test]
fn zero1_on_the_cuda_backend_equals_one_rank() {
    if !emulator_available() {
        return;
    }
    use tinyllama_dist::local::LocalGroup;
    let tmp = tempfile::tempdir().unwrap();
    make_data(tmp.path());
    let mut one_cfg = config(tmp.path(), &tmp.path().join("one"), 4, "cuda:emu");
    one_cfg.batch.micro_batch = 4;
    let one = tinyllama_train::trainer::train_in(
        &one_cfg,
        &quiet(),
        Box::new(tinyllama_dist::SingleProcess),
    )
    .unwrap();
    let two_cfg = config(tmp.path(), &tmp.path().join("two"), 4, "cuda:emu");
    let hs: Vec<_> = LocalGroup::new(2)
        .into_iter()
        .map(|g| {
            let c = two_cfg.clone();
            std::thread::spawn(move || {
                tinyllama_train::trainer::train_in(&c, &quiet(), Box::new(g)).unwrap()
            })
        })
        .collect();
    let two: Vec<_> = hs.into_iter().map(|h| h.join().unwrap()).collect();
    // bf16 activations: the two splits round differently, so agreement is to bf16 precision.
    for (a, b) in one.losses.iter().zip(&two[0].losses) {
        assert!((a - b).abs() < 2e-3 * a, "1 rank {a} vs 2 ranks {b}");
    }
    assert_eq!(two[0].losses, two[1].losses);
    let wa = checkpoint::load(one.checkpoint.as_ref().unwrap())
        .unwrap()
        .weights;
    let wb = checkpoint::load(two[0].checkpoint.as_ref().unwrap())
        .unwrap()
        .weights;
    for (ta, tb) in wa.tensors.iter().zip(&wb.tensors) {
        let r = tinyllama_train::testutil::relative_difference(ta, tb);
        assert!(r < 1e-2, "{r:.3e}");
    }
}
