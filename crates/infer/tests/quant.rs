//! Quantised decoding against f32: perplexity of the tinystories model on a fixed story
//! (skipped without the shared data), and greedy agreement on a random model.

use std::path::Path;
use tinyllama_infer::perplexity::perplexity;
use tinyllama_infer::{DecodeModel, WeightFormat};
use tinyllama_model::{hf, tokenizer::Tokenizer};

/// A short story in the style of TinyStories, written for this test.
const STORY: &str = "Once upon a time, there was a little girl named Mia. Mia loved to play in the park with her red ball. One sunny day, she went to the park with her mom. She saw a big dog under a tree. The dog was sad because he was lost. Mia said, \"Don't be sad, dog. I will help you find your home.\" Mia and her mom walked with the dog to the houses near the park. They knocked on many doors. At the last house, a kind old man opened the door. \"Max! You came back!\" he said with a big smile. The dog wagged his tail and jumped up and down. The old man thanked Mia and gave her a cookie. Mia was very happy. She learned that helping others makes everyone feel good. From that day on, Mia and Max played in the park every day.\nOne day, a boy named Tom found a shiny rock in his garden. He wanted to show it to his friend Sue. He ran to her house and knocked on the door. Sue looked at the rock and said, \"Wow, it is so pretty!\" They put the rock on the table and looked at it all day. When the sun went down, the rock began to glow. Tom and Sue were surprised. They laughed and hugged. It was the best day ever.";

/// Tolerances on the perplexity ratio to f32 (measured: bf16 +0.000% because this model's
/// weights are already bf16-exact, q8_0 +0.22%, q4_0 +6.3%).
const TOLERANCE: [(WeightFormat, f64); 3] = [
    (WeightFormat::Bf16, 0.005),
    (WeightFormat::Q8_0, 0.01),
    (WeightFormat::Q4_0, 0.10),
];

#[test]
fn quantised_perplexity_is_within_tolerance_of_f32() {
    let dir = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/data/models/tinystories-llama"
    ));
    if !dir.join("model.safetensors").exists() {
        eprintln!(
            "SKIPPED: {} not found (the shared reference data is absent)",
            dir.display()
        );
        return;
    }
    let host = hf::load_dir(dir).unwrap();
    let tok = Tokenizer::load(dir, 1, 2).unwrap();
    let ids = tok.encode_with_bos(STORY).unwrap();
    assert!(ids.len() > 150, "{}", ids.len());
    let base = perplexity(
        &DecodeModel::from_host(host.clone(), WeightFormat::F32).unwrap(),
        &ids,
        512,
    )
    .unwrap();
    assert!(
        base.perplexity < 20.0,
        "f32 perplexity {} is implausible for this model",
        base.perplexity
    );
    for (f, tol) in TOLERANCE {
        let m = DecodeModel::from_host(host.clone(), f).unwrap();
        assert_eq!(m.kept_f32, 0, "{f:?}: every matrix should be converted");
        let p = perplexity(&m, &ids, 512).unwrap();
        let rel = p.perplexity / base.perplexity - 1.0;
        eprintln!(
            "{}: perplexity {:.4} vs f32 {:.4} ({:+.3}%)",
            f.name(),
            p.perplexity,
            base.perplexity,
            100.0 * rel
        );
        assert!(
            rel.abs() < tol,
            "{f:?}: perplexity {} vs f32 {} ({:+.2}%, tolerance {}%)",
            p.perplexity,
            base.perplexity,
            100.0 * rel,
            100.0 * tol
        );
    }
}

/// Random Gaussian weights are a harsh case for 4 bits (about 8% error per weight, compounded
/// over five matrix products); measured 0.5% / 2.2% / 24% RMS when this was written.
#[test]
fn quantised_logits_track_f32_on_a_random_model() {
    use tinyllama_infer::testutil::{random_weights, small_config};
    use tinyllama_infer::SeqInput;
    let w = random_weights(&small_config(128), 17, 1.0);
    let toks: Vec<u32> = (0..60).map(|i| (i * 11 % 90 + 3) as u32).collect();
    let logits = |f| {
        let m = DecodeModel::from_host(w.clone(), f).unwrap();
        let mut st = m.new_state();
        m.forward(&mut [SeqInput {
            state: &mut st,
            tokens: &toks,
            logits: toks.len(),
        }])
        .unwrap()
        .remove(0)
    };
    let base = logits(WeightFormat::F32);
    let rms =
        |v: &[f32]| (v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
    for (f, tol) in [
        (WeightFormat::Bf16, 0.01),
        (WeightFormat::Q8_0, 0.04),
        (WeightFormat::Q4_0, 0.35),
    ] {
        let got = logits(f);
        let diff: Vec<f32> = got.iter().zip(&base).map(|(a, b)| a - b).collect();
        let rel = rms(&diff) / rms(&base);
        eprintln!("{}: relative RMS logit error {rel:.4}", f.name());
        assert!(rel < tol, "{f:?}: relative RMS logit error {rel}");
    }
}
