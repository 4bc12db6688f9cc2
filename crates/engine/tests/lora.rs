//! LoRA on the whole model: gradient check of every adapter (with and without dropout and
//! recomputation), the frozen base, enable/disable, merging, and parity with transformers +
//! peft on the fixture written by `scripts/make_lora_fixtures.py`.

use safetensors::SafeTensors;
use std::path::{Path, PathBuf};
use tinyllama_engine::{Activations, Backend, CpuBackend, Llama, LoraConfig, LoraTarget};
use tinyllama_model::{hf, peft, presets, HostWeights, ModelConfig, ParamKind};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn batch(cfg: &ModelConfig, b: usize, t: usize, seed: u64) -> (Vec<u32>, Vec<i32>) {
    let mut r = tinyllama_model::rng::Rng::new(seed);
    let inputs: Vec<u32> = (0..b * t)
        .map(|_| r.below(cfg.vocab_size as u64) as u32)
        .collect();
    let mut targets: Vec<i32> = (0..b * t)
        .map(|_| r.below(cfg.vocab_size as u64) as i32)
        .collect();
    targets[0] = -100;
    targets[3] = -100;
    (inputs, targets)
}

fn lora_cfg(rank: usize, dropout: f32) -> LoraConfig {
    LoraConfig {
        rank,
        alpha: 2.5 * rank as f32,
        dropout,
        targets: LoraTarget::ALL.to_vec(),
    }
}

/// Gives every adapter tensor random values (B non-zero, so A's gradient is too).
fn randomize<B: Backend>(model: &mut Llama<B>, seed: u64) {
    let mut r = tinyllama_model::rng::Rng::new(seed);
    let host: Vec<Vec<f32>> = model
        .lora()
        .unwrap()
        .specs
        .iter()
        .map(|s| {
            (0..s.numel())
                .map(|_| (r.next_f64() * 2.0 - 1.0) as f32 * 0.3)
                .collect()
        })
        .collect();
    model.set_lora_tensors(&host).unwrap();
}

#[allow(clippy::needless_range_loop)]
fn gradcheck(dropout: f32, recompute: bool) {
    let cfg = presets::get("test-tiny").unwrap();
    let (b, t) = (2, 6);
    let host = HostWeights::init(&cfg, 5);
    let mut model = Llama::new(CpuBackend::<f64>::new(), &host).unwrap();
    model.attach_lora(lora_cfg(3, dropout), 1).unwrap();
    randomize(&mut model, 2);
    model.set_dropout_seed(77);
    let n_adapters = 2 * 7 * cfg.n_layers;
    assert_eq!(model.trainable_specs().len(), n_adapters);
    let (inputs, targets) = batch(&cfg, b, t, 1);
    let mut acts = Activations::with_recompute(&model, b, t, recompute);
    let mut grads = model.zero_grads();
    assert_eq!(grads.len(), n_adapters);
    model
        .forward_backward(&mut acts, &mut grads, &inputs, &targets, 1.0)
        .unwrap();
    let n_valid = targets.iter().filter(|&&x| x >= 0).count() as f64;
    // The training loss: with dropout only forward_backward applies the (seeded) masks.
    let mut scratch = model.zero_grads();
    let mut loss_at = |model: &Llama<CpuBackend<f64>>| -> f64 {
        if dropout > 0.0 {
            model
                .forward_backward(&mut acts, &mut scratch, &inputs, &targets, 1.0)
                .unwrap();
        } else {
            model.forward_losses(&mut acts, &inputs, &targets).unwrap();
        }
        acts.losses().iter().sum::<f64>() / n_valid
    };
    let h = 1e-6;
    for i in 0..n_adapters {
        let name = model.trainable_specs()[i].name.clone();
        let len = grads[i].len();
        let gmax = grads[i].iter().fold(0f64, |m, g| m.max(g.abs()));
        assert!(gmax > 0.0, "{name}: gradient is identically zero");
        let mut worst = 0f64;
        for j in (0..len).step_by((len / 10).max(1)) {
            let orig = model.trainable_weights()[i][j];
            model.trainable_weights_mut()[i][j] = orig + h;
            let up = loss_at(&model);
            model.trainable_weights_mut()[i][j] = orig - h;
            let down = loss_at(&model);
            model.trainable_weights_mut()[i][j] = orig;
            let numeric = (up - down) / (2.0 * h);
            worst = worst.max((numeric - grads[i][j]).abs() / gmax);
        }
        assert!(
            worst < 1e-6,
            "{name} (dropout {dropout}, recompute {recompute}): finite differences disagree by {worst:.2e} of max |g|"
        );
    }
}

#[test]
fn whole_model_gradient_of_every_adapter() {
    gradcheck(0.0, false);
}

#[test]
fn whole_model_gradient_of_every_adapter_with_recompute() {
    gradcheck(0.0, true);
}

#[test]
fn whole_model_gradient_of_every_adapter_with_dropout() {
    gradcheck(0.2, false);
    gradcheck(0.2, true);
}

fn f32_model(cfg: &ModelConfig) -> (HostWeights, Llama<CpuBackend<f32>>) {
    let host = HostWeights::init(cfg, 4);
    let model = Llama::new(CpuBackend::<f32>::new(), &host).unwrap();
    (host, model)
}

#[test]
fn recompute_with_adapters_and_dropout_is_bit_identical() {
    let cfg = presets::get("micro-1m").unwrap();
    let (_, mut model) = f32_model(&cfg);
    model.attach_lora(lora_cfg(4, 0.1), 3).unwrap();
    randomize(&mut model, 4);
    model.set_dropout_seed(12);
    let (inputs, targets) = batch(&cfg, 2, 32, 11);
    let run = |recompute: bool| {
        let mut acts = Activations::with_recompute(&model, 2, 32, recompute);
        let mut grads = model.zero_grads();
        let mut loss = 0.0;
        for _ in 0..2 {
            loss = model
                .forward_backward(&mut acts, &mut grads, &inputs, &targets, 0.5)
                .unwrap();
        }
        (loss.to_bits(), grads)
    };
    let (l0, g0) = run(false);
    let (l1, g1) = run(true);
    assert_eq!(l0, l1);
    for (a, b) in g0.iter().zip(&g1) {
        assert!(a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()));
    }
}

#[test]
fn dropout_masks_follow_the_seed() {
    let cfg = presets::get("test-tiny").unwrap();
    let (_, mut model) = f32_model(&cfg);
    model.attach_lora(lora_cfg(2, 0.3), 3).unwrap();
    randomize(&mut model, 4);
    let (inputs, targets) = batch(&cfg, 2, 8, 5);
    let mut acts = Activations::new(&model, 2, 8);
    let mut run = |model: &mut Llama<CpuBackend<f32>>, seed: u64| {
        model.set_dropout_seed(seed);
        let mut g = model.zero_grads();
        let loss = model
            .forward_backward(&mut acts, &mut g, &inputs, &targets, 1.0)
            .unwrap();
        (loss, g)
    };
    let a = run(&mut model, 1);
    let b = run(&mut model, 1);
    let c = run(&mut model, 2);
    assert_eq!(a, b);
    assert_ne!(a.0, c.0);
    // Evaluation has no dropout: the same losses whatever the seed.
    let eval = |model: &Llama<CpuBackend<f32>>| {
        let mut acts = Activations::new(model, 2, 8);
        model.forward_losses(&mut acts, &inputs, &targets).unwrap()
    };
    let e1 = eval(&model);
    model.set_dropout_seed(99);
    assert_eq!(e1, eval(&model));
}

#[test]
fn base_is_frozen_and_untouched_by_training() {
    let cfg = presets::get("test-tiny").unwrap();
    let (host, mut model) = f32_model(&cfg);
    model.attach_lora(LoraConfig::default(), 7).unwrap();
    let lo = model.lora().unwrap();
    assert_eq!(lo.specs.len(), 2 * 7 * cfg.n_layers);
    assert_eq!(model.zero_grads().len(), lo.specs.len());
    assert_eq!(
        lo.specs[0].name,
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
    );
    assert_eq!(lo.specs[0].kind, ParamKind::LoraA);
    assert_eq!(
        lo.specs[13].name,
        "base_model.model.model.layers.0.mlp.down_proj.lora_B.weight"
    );
    assert_eq!(lo.specs[13].shape, vec![cfg.dim, 8]);
    // PEFT's initialisation: A within ±1/√in, B zero.
    let w = model.lora_host();
    let bound = 1.0 / (cfg.dim as f32).sqrt();
    assert!(w[0].iter().all(|x| x.abs() <= bound) && w[0].iter().any(|&x| x != 0.0));
    assert!(w[1].iter().all(|&x| x == 0.0));

    let (inputs, targets) = batch(&cfg, 2, 8, 3);
    let mut acts = Activations::new(&model, 2, 8);
    for step in 0..3 {
        model.set_dropout_seed(step);
        let mut grads = model.zero_grads();
        model
            .forward_backward(&mut acts, &mut grads, &inputs, &targets, 1.0)
            .unwrap();
        let (be, _, weights) = model.trainable_parts_mut();
        for (w, g) in weights.iter_mut().zip(&grads) {
            let g = be.download(g);
            for (x, d) in w.iter_mut().zip(g) {
                *x -= 0.5 * d;
            }
        }
    }
    assert_eq!(model.to_host().tensors, host.tensors);
    let after = model.lora_host();
    assert!(
        after.iter().zip(&w).all(|(a, b)| a != b),
        "every adapter moved"
    );
}

#[test]
fn zero_b_or_disabled_adapters_give_exactly_the_base_model() {
    let cfg = presets::get("test-tiny").unwrap();
    let (_, base) = f32_model(&cfg);
    let (_, mut model) = f32_model(&cfg);
    let (inputs, targets) = batch(&cfg, 2, 8, 3);
    let losses = |m: &Llama<CpuBackend<f32>>| {
        let mut acts = Activations::new(m, 2, 8);
        let l = m.forward_losses(&mut acts, &inputs, &targets).unwrap();
        let mut g = m.zero_grads();
        let mean = m
            .forward_backward(&mut acts, &mut g, &inputs, &targets, 1.0)
            .unwrap();
        (l, mean, m.logits(&inputs, 2, 8).unwrap())
    };
    let want = losses(&base);
    model.attach_lora(lora_cfg(4, 0.1), 1).unwrap();
    assert_eq!(losses(&model), want, "B = 0: the base model exactly");
    randomize(&mut model, 5);
    assert_ne!(losses(&model).0, want.0);
    model.set_adapters_enabled(false);
    assert!(!model.lora().unwrap().enabled());
    assert_eq!(losses(&model), want, "adapters off: the base model exactly");
    // Disabled: no gradient reaches the adapters.
    let mut acts = Activations::new(&model, 2, 8);
    let mut g = model.zero_grads();
    model
        .forward_backward(&mut acts, &mut g, &inputs, &targets, 1.0)
        .unwrap();
    assert!(g.iter().all(|g| g.iter().all(|&x| x == 0.0)));
    model.set_adapters_enabled(true);
    assert_ne!(losses(&model).0, want.0);
}

#[test]
fn merged_weights_compute_what_the_adapters_do() {
    let cfg = presets::get("test-tiny").unwrap();
    let (_, mut model) = f32_model(&cfg);
    model.attach_lora(lora_cfg(4, 0.0), 1).unwrap();
    randomize(&mut model, 6);
    let merged = Llama::new(CpuBackend::<f32>::new(), &model.merged_host()).unwrap();
    assert_ne!(merged.to_host().tensors, model.to_host().tensors);
    let (inputs, targets) = batch(&cfg, 2, 8, 3);
    let mut a1 = Activations::new(&model, 2, 8);
    let mut a2 = Activations::new(&merged, 2, 8);
    let l1 = model.forward_losses(&mut a1, &inputs, &targets).unwrap();
    let l2 = merged.forward_losses(&mut a2, &inputs, &targets).unwrap();
    for (x, y) in l1.iter().zip(&l2) {
        assert!((x - y).abs() <= 1e-5 * x.abs().max(1e-3), "{x} vs {y}");
    }
    let (g1, g2) = (
        model.logits(&inputs, 2, 8).unwrap(),
        merged.logits(&inputs, 2, 8).unwrap(),
    );
    let worst = g1
        .iter()
        .zip(&g2)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-4, "merged logits differ by {worst}");
}

#[test]
fn misuse_is_an_error_not_a_panic() {
    let cfg = presets::get("test-tiny").unwrap();
    let (_, mut model) = f32_model(&cfg);
    let (inputs, targets) = batch(&cfg, 1, 8, 3);
    let mut stale = Activations::new(&model, 1, 8);
    let full_grads = model.zero_grads();
    assert!(model.set_lora_tensors(&[]).is_err());
    let e = format!(
        "{:#}",
        model
            .attach_lora(
                LoraConfig {
                    rank: 0,
                    ..LoraConfig::default()
                },
                1
            )
            .unwrap_err()
    );
    assert!(e.contains("lora.rank"), "{e}");
    model.attach_lora(LoraConfig::default(), 1).unwrap();
    let e = format!(
        "{:#}",
        model.attach_lora(LoraConfig::default(), 1).unwrap_err()
    );
    assert!(e.contains("already attached"), "{e}");
    let e = format!(
        "{:#}",
        model
            .forward_losses(&mut stale, &inputs, &targets)
            .unwrap_err()
    );
    assert!(e.contains("allocate them again"), "{e}");
    let mut acts = Activations::new(&model, 1, 8);
    let mut g = full_grads;
    let e = format!(
        "{:#}",
        model
            .forward_backward(&mut acts, &mut g, &inputs, &targets, 1.0)
            .unwrap_err()
    );
    assert!(e.contains("gradient buffers"), "{e}");
    let e = format!("{:#}", model.set_lora_tensors(&[vec![0.0]]).unwrap_err());
    assert!(e.contains("LoRA tensors"), "{e}");
    // The fixture adapter (hidden 32) on a model of another shape.
    let adapter = peft::load_peft(&fixtures().join("lora/adapter")).unwrap();
    let (_, mut other) = f32_model(&cfg);
    let e = format!("{:#}", other.attach_peft(&adapter).unwrap_err());
    assert!(
        e.contains("another base model") && e.contains("hf-tiny-gqa"),
        "{e}"
    );
    assert!(other.lora().is_none());
}

// ------------------------------------------------------------------------------------------
// parity with transformers + peft

fn f64s(st: &SafeTensors, name: &str) -> Vec<f64> {
    let t = st
        .tensor(name)
        .unwrap_or_else(|_| panic!("fixture lacks {name}"));
    t.data()
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn i64s(st: &SafeTensors, name: &str) -> Vec<i64> {
    st.tensor(name)
        .unwrap()
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

struct Reference {
    inputs: Vec<u32>,
    targets: Vec<i32>,
    b: usize,
    t: usize,
    bytes: Vec<u8>,
}

fn reference() -> Reference {
    let bytes = std::fs::read(fixtures().join("lora/reference.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let shape = st.tensor("input_ids").unwrap().shape().to_vec();
    Reference {
        inputs: i64s(&st, "input_ids").iter().map(|&x| x as u32).collect(),
        targets: i64s(&st, "targets").iter().map(|&x| x as i32).collect(),
        b: shape[0],
        t: shape[1],
        bytes: bytes.clone(),
    }
}

fn adapted<B: Backend>(backend: B) -> Llama<B> {
    let host = hf::load_dir(&fixtures().join("hf-tiny-gqa")).unwrap();
    let adapter = peft::load_peft(&fixtures().join("lora/adapter")).unwrap();
    let mut model = Llama::new(backend, &host).unwrap();
    model.attach_peft(&adapter).unwrap();
    model
}

/// (max |Δlogit|, loss relative error, worst norm-wise relative adapter-gradient error).
fn compare<B: Backend>(backend: B) -> (f64, f64, (f64, String)) {
    let r = reference();
    let st = SafeTensors::deserialize(&r.bytes).unwrap();
    let model = adapted(backend);
    let lo = model.lora().unwrap();
    assert_eq!(lo.config.rank, 4);
    assert_eq!(lo.config.scale(), 2.0);
    assert_eq!(lo.specs.len(), 28);

    let logits = model.logits(&r.inputs, r.b, r.t).unwrap();
    let want = f64s(&st, "logits");
    let dlogit = logits
        .iter()
        .zip(&want)
        .map(|(a, b)| (*a as f64 - b).abs())
        .fold(0.0, f64::max);

    let mut acts = Activations::new(&model, r.b, r.t);
    let mut grads = model.zero_grads();
    let loss = model
        .forward_backward(&mut acts, &mut grads, &r.inputs, &r.targets, 1.0)
        .unwrap() as f64;
    let want_loss = f64s(&st, "loss")[0];
    let dloss = (loss - want_loss).abs() / want_loss.abs();

    let mut worst = (0.0, String::new());
    for (spec, g) in model.trainable_specs().iter().zip(&grads) {
        let got = model.backend.download(g);
        let want = f64s(&st, &format!("grad.{}", spec.name));
        assert_eq!(got.len(), want.len(), "{}", spec.name);
        let diff: f64 = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (*a as f64 - b).powi(2))
            .sum::<f64>()
            .sqrt();
        let norm: f64 = want.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!(norm > 0.0, "{}: zero reference gradient", spec.name);
        let rel = diff / norm;
        if rel > worst.0 {
            worst = (rel, spec.name.clone());
        }
    }
    (dlogit, dloss, worst)
}

#[test]
fn adapters_match_peft_logits_loss_and_gradients() {
    for (name, (dl, dloss, (dg, which))) in [
        ("f32", compare(CpuBackend::<f32>::new())),
        ("f64", compare(CpuBackend::<f64>::new())),
    ] {
        println!(
            "lora {name}: max |Δlogit| {dl:.2e}, loss rel {dloss:.2e}, worst adapter grad rel {dg:.2e} ({which})"
        );
        assert!(dl < 1e-4, "{name}: logits differ by {dl}");
        assert!(dloss < 1e-4, "{name}: loss differs by {dloss} relative");
        assert!(
            dg < 1e-4,
            "{name}: gradient of {which} differs by {dg} relative"
        );
    }
}

#[test]
fn peft_adapter_round_trips_through_save_peft() {
    let model = adapted(CpuBackend::<f32>::new());
    let orig = peft::load_peft(&fixtures().join("lora/adapter")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    model
        .save_peft(dir.path(), orig.base_model_name_or_path.as_deref())
        .unwrap();
    let back = peft::load_peft(dir.path()).unwrap();
    assert_eq!(back, orig);
}

/// Writes a trained copy of the fixture adapter and our logits with it, for
/// `scripts/make_lora_fixtures.py --check-adapter DIR` (DIR = $TINYLLAMA_LORA_CHECK_DIR, a
/// temporary directory otherwise).
#[test]
fn saved_adapter_for_peft() {
    let mut model = adapted(CpuBackend::<f32>::new());
    let r = reference();
    let mut acts = Activations::new(&model, r.b, r.t);
    let mut grads = model.zero_grads();
    model
        .forward_backward(&mut acts, &mut grads, &r.inputs, &r.targets, 1.0)
        .unwrap();
    let stepped: Vec<Vec<f32>> = model
        .lora_host()
        .iter()
        .zip(&grads)
        .map(|(w, g)| w.iter().zip(g).map(|(x, d)| x - 2.0 * d).collect())
        .collect();
    model.set_lora_tensors(&stepped).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = std::env::var_os("TINYLLAMA_LORA_CHECK_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_path_buf());
    model
        .save_peft(&dir, Some("tests/fixtures/hf-tiny-gqa"))
        .unwrap();
    let logits = model.logits(&r.inputs, r.b, r.t).unwrap();
    let bytes: Vec<u8> = logits.iter().flat_map(|x| x.to_le_bytes()).collect();
    let view = safetensors::tensor::TensorView::new(
        safetensors::Dtype::F32,
        vec![r.b, r.t, logits.len() / (r.b * r.t)],
        &bytes,
    )
    .unwrap();
    let st = safetensors::serialize([("logits", view)], None).unwrap();
    std::fs::write(dir.join("tinyllama_logits.safetensors"), st).unwrap();
    // What we wrote loads back as what we hold.
    let back = peft::load_peft(&dir).unwrap();
    let mut again = Llama::new(
        CpuBackend::<f32>::new(),
        &hf::load_dir(&fixtures().join("hf-tiny-gqa")).unwrap(),
    )
    .unwrap();
    again.attach_peft(&back).unwrap();
    assert_eq!(again.lora_host(), stepped);
    assert_eq!(again.logits(&r.inputs, r.b, r.t).unwrap(), logits);
}
