//! Whole-model gradient check: the f64 CPU backend's analytic gradient of the mean loss with
//! respect to every parameter tensor against central finite differences, for untied (GQA) and
//! tied (MQA) configurations. Also: gradient accumulation, determinism.

use tinyllama_engine::{Activations, CpuBackend, Llama};
use tinyllama_model::{presets, HostWeights, ModelConfig};

fn batch(cfg: &ModelConfig, b: usize, t: usize, seed: u64) -> (Vec<u32>, Vec<i32>) {
    let mut r = tinyllama_model::rng::Rng::new(seed);
    let inputs: Vec<u32> = (0..b * t)
        .map(|_| r.below(cfg.vocab_size as u64) as u32)
        .collect();
    let mut targets: Vec<i32> = (0..b * t)
        .map(|_| r.below(cfg.vocab_size as u64) as i32)
        .collect();
    targets[3] = -100;
    (inputs, targets)
}

#[allow(clippy::needless_range_loop)]
fn check_config(cfg: ModelConfig) {
    let (b, t) = (2, 6);
    let host = HostWeights::init(&cfg, 5);
    let mut model = Llama::new(CpuBackend::<f64>::new(), &host).unwrap();
    // Give the norms non-trivial weights so their gradients are exercised.
    let mut r = tinyllama_model::rng::Rng::new(9);
    for (spec, w) in model.specs.iter().zip(model.weights.iter_mut()) {
        if spec.kind.is_norm() {
            w.iter_mut()
                .for_each(|x| *x = 1.0 + 0.3 * (r.next_f64() - 0.5));
        }
    }
    let (inputs, targets) = batch(&cfg, b, t, 1);
    let mut acts = Activations::new(&model, b, t);
    let mut grads = model.zero_grads();
    model
        .forward_backward(&mut acts, &mut grads, &inputs, &targets, 1.0)
        .unwrap();
    let n_valid = targets.iter().filter(|&&x| x >= 0).count() as f64;
    let h = 1e-6;
    for i in 0..model.weights.len() {
        let name = model.specs[i].name.clone();
        let len = model.weights[i].len();
        let gmax = grads[i].iter().fold(0f64, |m, g| m.max(g.abs()));
        assert!(gmax > 0.0, "{name}: gradient is identically zero");
        let mut worst = 0f64;
        for j in (0..len).step_by((len / 12).max(1)) {
            let orig = model.weights[i][j];
            let mut loss_at = |x: f64, model: &mut Llama<CpuBackend<f64>>| {
                model.weights[i][j] = x;
                model.forward_losses(&mut acts, &inputs, &targets).unwrap();
                acts.losses().iter().sum::<f64>() / n_valid
            };
            let up = loss_at(orig + h, &mut model);
            let down = loss_at(orig - h, &mut model);
            model.weights[i][j] = orig;
            let numeric = (up - down) / (2.0 * h);
            worst = worst.max((numeric - grads[i][j]).abs() / gmax);
        }
        assert!(
            worst < 1e-6,
            "{name}: finite differences disagree by {worst:.2e} of max |g|"
        );
    }
}

#[test]
fn whole_model_gradient_untied_gqa() {
    check_config(presets::get("test-tiny").unwrap());
}

#[test]
fn whole_model_gradient_tied_mqa() {
    let mut cfg = presets::get("test-tiny").unwrap();
    cfg.tie_embeddings = true;
    cfg.n_kv_heads = 1;
    check_config(cfg);
}

#[test]
fn accumulating_two_half_batches_equals_one_batch() {
    let cfg = presets::get("test-tiny").unwrap();
    let host = HostWeights::init(&cfg, 2);
    let model = Llama::new(CpuBackend::<f64>::new(), &host).unwrap();
    let (inputs, mut targets) = batch(&cfg, 2, 8, 3);
    targets[3] = 5; // no ignored targets, so halves have equal weight
    let mut full = model.zero_grads();
    model
        .forward_backward(
            &mut Activations::new(&model, 2, 8),
            &mut full,
            &inputs,
            &targets,
            1.0,
        )
        .unwrap();
    let mut acc = model.zero_grads();
    let mut a1 = Activations::new(&model, 1, 8);
    for half in 0..2 {
        let r = half * 8..half * 8 + 8;
        model
            .forward_backward(&mut a1, &mut acc, &inputs[r.clone()], &targets[r], 0.5)
            .unwrap();
    }
    for (f, a) in full.iter().zip(&acc) {
        for (x, y) in f.iter().zip(a) {
            assert!((x - y).abs() < 1e-12);
        }
    }
}

#[test]
fn f32_losses_are_bit_identical_across_runs() {
    let cfg = presets::get("micro-1m").unwrap();
    let host = HostWeights::init(&cfg, 4);
    let run = || {
        let model = Llama::new(CpuBackend::<f32>::new(), &host).unwrap();
        let (inputs, targets) = batch(&cfg, 2, 64, 8);
        let mut acts = Activations::new(&model, 2, 64);
        let mut grads = model.zero_grads();
        let loss = model
            .forward_backward(&mut acts, &mut grads, &inputs, &targets, 1.0)
            .unwrap();
        (
            loss.to_bits(),
            grads
                .iter()
                .map(|g| g.iter().map(|x| x.to_bits() as u64).sum::<u64>())
                .collect::<Vec<_>>(),
        )
    };
    assert_eq!(run(), run());
}

#[test]
fn layer_recomputation_gives_bit_identical_gradients() {
    let cfg = presets::get("micro-1m").unwrap();
    let host = HostWeights::init(&cfg, 6);
    let model = Llama::new(CpuBackend::<f32>::new(), &host).unwrap();
    let (inputs, targets) = batch(&cfg, 2, 32, 11);
    let run = |recompute: bool| {
        let mut acts = Activations::with_recompute(&model, 2, 32, recompute);
        assert_eq!(acts.recompute, recompute);
        let mut grads = model.zero_grads();
        // Two calls: the second must not depend on state the first left behind.
        let mut loss = 0.0;
        for _ in 0..2 {
            loss = model
                .forward_backward(&mut acts, &mut grads, &inputs, &targets, 0.5)
                .unwrap();
        }
        let val = model.forward_losses(&mut acts, &inputs, &targets).unwrap();
        (loss.to_bits(), grads, val)
    };
    let (l0, g0, v0) = run(false);
    let (l1, g1, v1) = run(true);
    assert_eq!(l0, l1);
    assert_eq!(v0, v1);
    for (a, b) in g0.iter().zip(&g1) {
        assert!(a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()));
    }
}
