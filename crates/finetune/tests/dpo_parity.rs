//! The DPO loss and its gradient for every LoRA tensor against PyTorch on a committed fixture
//! (`scripts/make_dpo_fixture.py`): the LoRA fixture model on two preference pairs, reference
//! = the base with the adapter off, float64 on the Python side.

use safetensors::SafeTensors;
use std::path::{Path, PathBuf};
use tinyllama_dist::SingleProcess;
use tinyllama_engine::{Activations, Backend, CpuBackend, Llama};
use tinyllama_model::{hf, peft};
use tinyllama_train::dpo;
use tinyllama_train::rows::{PairRows, Row};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

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
        .unwrap_or_else(|_| panic!("fixture lacks {name}"))
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn rows(st: &SafeTensors, which: &str, pairs: usize) -> Vec<Row> {
    let inputs = i64s(st, &format!("{which}_inputs"));
    let targets = i64s(st, &format!("{which}_targets"));
    let t = inputs.len() / pairs;
    (0..pairs)
        .map(|p| Row {
            inputs: inputs[p * t..(p + 1) * t]
                .iter()
                .map(|&x| x as u32)
                .collect(),
            targets: targets[p * t..(p + 1) * t]
                .iter()
                .map(|&x| x.max(-1) as i32)
                .collect(),
        })
        .collect()
}

/// (loss relative error, worst norm-wise relative gradient error and its tensor, reference
/// log-probability error).
fn compare<B: Backend>(backend: B) -> (f64, (f64, String), f64) {
    let bytes = std::fs::read(fixtures().join("dpo/reference.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let host = hf::load_dir(&fixtures().join("hf-tiny-gqa")).unwrap();
    let mut model = Llama::new(backend, &host).unwrap();
    model
        .attach_peft(&peft::load_peft(&fixtures().join("lora/adapter")).unwrap())
        .unwrap();
    let want_refs = f64s(&st, "ref_logps");
    let np = want_refs.len() / 2;
    let pairs: Vec<PairRows> = rows(&st, "chosen", np)
        .into_iter()
        .zip(rows(&st, "rejected", np))
        .map(|(chosen, rejected)| PairRows { chosen, rejected })
        .collect();
    let t = pairs[0].chosen.inputs.len();
    let mut acts = Activations::new(&model, 1, t);
    let coll = SingleProcess;

    // Our reference: the same model with its adapter switched off.
    model.set_adapters_enabled(false);
    let refs = dpo::pair_logps(&model, &mut acts, &pairs, &coll).unwrap();
    model.set_adapters_enabled(true);
    let ref_err = refs
        .iter()
        .flat_map(|(a, b)| [*a, *b])
        .zip(&want_refs)
        .map(|(a, b)| (a - b).abs() / b.abs())
        .fold(0f64, f64::max);

    let mut grads = model.zero_grads();
    let ps: Vec<&PairRows> = pairs.iter().collect();
    let beta = f64s(&st, "beta")[0];
    let s =
        dpo::accumulate_step(&model, &mut acts, &mut grads, &ps, &refs, beta, np, &coll).unwrap();
    let want_loss = f64s(&st, "loss")[0];
    let loss_err = (s.loss - want_loss).abs() / want_loss.abs();
    let mut worst = (0f64, String::new());
    for (spec, g) in model.trainable_specs().iter().zip(&grads) {
        let got = model.backend.download(g);
        let want = f64s(&st, &format!("grad.{}", spec.name));
        let num: f64 = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (*a as f64 - b).powi(2))
            .sum::<f64>()
            .sqrt();
        let den = want.iter().map(|b| b * b).sum::<f64>().sqrt().max(1e-12);
        if num / den > worst.0 {
            worst = (num / den, spec.name.clone());
        }
    }
    (loss_err, worst, ref_err)
}

#[test]
fn dpo_loss_and_adapter_gradients_match_pytorch() {
    for (name, (loss, (grad, which), refs)) in [
        ("f32", compare(CpuBackend::<f32>::new())),
        ("f64", compare(CpuBackend::<f64>::new())),
    ] {
        eprintln!("{name}: loss rel {loss:.2e}, worst gradient rel {grad:.2e} ({which}), reference log-probs rel {refs:.2e}");
        assert!(loss < 1e-4, "{name}: loss relative error {loss}");
        assert!(grad < 1e-4, "{name}: gradient of {which} off by {grad}");
        assert!(
            refs < 1e-4,
            "{name}: reference log-probabilities off by {refs}"
        );
    }
}
