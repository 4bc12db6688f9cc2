//! The decode runtime against the engine, batching and speculative decoding.

use std::path::Path;
use tinyllama_engine::generate::{generate as engine_generate, GenerateParams};
use tinyllama_engine::sampling::SamplingParams;
use tinyllama_engine::{CpuBackend, Llama};
use tinyllama_infer::generate::{generate, generate_batch};
use tinyllama_infer::runner::PREFILL_CHUNK;
use tinyllama_infer::testutil::{random_weights, small_config};
use tinyllama_infer::{DecodeModel, Draft, Finish, GenParams, Runner, SeqInput, WeightFormat};
use tinyllama_model::{hf, tokenizer::Tokenizer, HostWeights};

fn greedy(max_tokens: usize) -> GenParams {
    GenParams {
        max_tokens,
        sampling: SamplingParams::greedy(),
        seed: 0,
        stop_ids: vec![],
    }
}

fn sampled(max_tokens: usize, seed: u64) -> GenParams {
    GenParams {
        max_tokens,
        sampling: SamplingParams {
            temperature: 0.9,
            top_k: 20,
            top_p: 0.95,
            min_p: 0.0,
            repetition_penalty: 1.1,
        },
        seed,
        stop_ids: vec![2],
    }
}

fn runner(w: &HostWeights, f: WeightFormat) -> Runner {
    Runner::new(DecodeModel::from_host(w.clone(), f).unwrap(), None).unwrap()
}

#[test]
fn f32_logits_match_the_engine() {
    for (cfg, gain) in [
        (small_config(64), 3.0),
        (tinyllama_model::presets::get("test-tiny").unwrap(), 1.0),
    ] {
        let w = random_weights(&cfg, 11, gain);
        let engine = Llama::new(CpuBackend::<f32>::new(), &w).unwrap();
        let m = DecodeModel::from_host(w.clone(), WeightFormat::F32).unwrap();
        let toks: Vec<u32> = (0..20)
            .map(|i| (i * 7 + 3) % cfg.vocab_size as u32)
            .collect();
        let want = engine.logits(&toks, 1, toks.len()).unwrap();
        // Prefill 12 tokens, then 8 one at a time: every position's logits agree.
        let mut st = m.new_state();
        let mut got = m
            .forward(&mut [SeqInput {
                state: &mut st,
                tokens: &toks[..12],
                logits: 12,
            }])
            .unwrap()
            .remove(0);
        for t in &toks[12..] {
            got.extend(
                m.forward(&mut [SeqInput {
                    state: &mut st,
                    tokens: std::slice::from_ref(t),
                    logits: 1,
                }])
                .unwrap()
                .remove(0),
            );
        }
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        let scale = want.iter().map(|x| x.abs()).fold(0f32, f32::max);
        assert!(
            worst < 2e-5 * scale.max(1.0),
            "max |Δlogit| {worst} (logit scale {scale})"
        );
    }
}

#[test]
fn batched_generation_equals_one_at_a_time_bitwise() {
    let cfg = small_config(128);
    let w = random_weights(&cfg, 5, 3.0);
    for f in WeightFormat::ALL {
        let r = runner(&w, f);
        let prompts: Vec<Vec<u32>> = (0..6)
            .map(|i| {
                (0..(3 + 5 * i))
                    .map(|j| ((j * 13 + i * 7) % 90 + 3) as u32)
                    .collect()
            })
            .collect();
        let params: Vec<GenParams> = (0..6)
            .map(|i| {
                if i % 2 == 0 {
                    greedy(10 + i)
                } else {
                    sampled(12, i as u64)
                }
            })
            .collect();
        let batch = generate_batch(&r, &prompts, &params).unwrap();
        for (i, p) in prompts.iter().enumerate() {
            let one = generate(&r, p, params[i].clone(), |_| true).unwrap();
            assert_eq!(one.tokens, batch[i].tokens, "{f:?} prompt {i}");
            assert_eq!(one.finish, batch[i].finish);
        }
    }
}

#[test]
fn long_prompts_are_prefilled_in_chunks_without_changing_results() {
    let cfg = small_config(PREFILL_CHUNK * 2 + 64);
    let w = random_weights(&cfg, 8, 3.0);
    let r = runner(&w, WeightFormat::F32);
    let prompt: Vec<u32> = (0..PREFILL_CHUNK + 100)
        .map(|j| ((j * 31) % 90 + 3) as u32)
        .collect();
    let out = generate(&r, &prompt, greedy(5), |_| true).unwrap();
    // The same prompt in a single forward pass gives the same first token.
    let mut st = r.target.new_state();
    let l = r
        .target
        .forward(&mut [SeqInput {
            state: &mut st,
            tokens: &prompt,
            logits: 1,
        }])
        .unwrap()
        .remove(0);
    assert_eq!(out.tokens[0], tinyllama_engine::sampling::argmax(&l));
    assert_eq!(out.tokens.len(), 5);
    assert_eq!(out.finish, Finish::Length);
}

#[test]
fn context_and_stop_tokens_end_generation() {
    let cfg = small_config(16);
    let w = random_weights(&cfg, 2, 3.0);
    let r = runner(&w, WeightFormat::F32);
    let out = generate(&r, &[1, 5, 6], greedy(100), |_| true).unwrap();
    assert_eq!(out.finish, Finish::Context);
    assert_eq!(out.tokens.len(), 16 - 3);
    let first = out.tokens[0];
    let mut p = greedy(100);
    p.stop_ids = vec![first];
    let out = generate(&r, &[1, 5, 6], p, |_| true).unwrap();
    assert_eq!((out.tokens.len(), out.finish), (0, Finish::Eos));
    let e = r
        .new_sequence(&[1; 16], greedy(1))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("leaving no room"), "{e}");
    let e = r.new_sequence(&[500], greedy(1)).err().unwrap().to_string();
    assert!(e.contains("outside the vocabulary"), "{e}");
}

/// Drafts: a different random model, and a copy of the target with its last layer dropped.
fn drafts(w: &HostWeights) -> Vec<(&'static str, HostWeights)> {
    let other = random_weights(&w.config, 99, 3.0);
    let mut cfg1 = w.config.clone();
    cfg1.n_layers = 1;
    let specs = tinyllama_model::params::param_specs(&cfg1);
    let mut trunc = HostWeights::zeros(&cfg1);
    for (i, s) in specs.iter().enumerate() {
        trunc.tensors[i] = w.get(&s.name).unwrap().to_vec();
    }
    vec![("random", other), ("truncated", trunc)]
}

#[test]
fn speculative_greedy_output_is_identical_to_the_target_alone() {
    let cfg = small_config(96);
    let w = random_weights(&cfg, 3, 3.0);
    let plain = runner(&w, WeightFormat::F32);
    let prompts: Vec<Vec<u32>> = (0..4).map(|i| vec![1, 10 + i, 20 + i, 30]).collect();
    let want: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| generate(&plain, p, greedy(60), |_| true).unwrap().tokens)
        .collect();
    for (name, dw) in drafts(&w) {
        for k in [1, 3, 5] {
            let r = Runner::new(
                DecodeModel::from_host(w.clone(), WeightFormat::F32).unwrap(),
                Some(Draft {
                    model: DecodeModel::from_host(dw.clone(), WeightFormat::F32).unwrap(),
                    k,
                }),
            )
            .unwrap();
            let mut proposed = 0;
            let mut accepted = 0;
            for (p, want) in prompts.iter().zip(&want) {
                let out = generate(&r, p, greedy(60), |_| true).unwrap();
                assert_eq!(&out.tokens, want, "draft {name}, k {k}");
                proposed += out.proposed;
                accepted += out.accepted;
            }
            assert!(proposed > 0);
            if name == "truncated" {
                assert!(accepted > 0, "a truncated copy should agree sometimes");
            }
            // Batched speculative decoding too.
            let batch = generate_batch(&r, &prompts, &vec![greedy(60); 4]).unwrap();
            for (b, want) in batch.iter().zip(&want) {
                assert_eq!(&b.tokens, want, "batched, draft {name}, k {k}");
            }
        }
    }
}

/// Exact marginal distributions of the first two sampled tokens under the target, against
/// frequencies from speculative sampling: a chi-squared test on a 64-token vocabulary.
#[test]
fn speculative_sampling_preserves_the_target_distribution() {
    let cfg = tinyllama_model::presets::get("test-tiny").unwrap();
    let w = random_weights(&cfg, 4, 6.0);
    let dw = random_weights(&cfg, 40, 6.0);
    let sp = SamplingParams {
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
        min_p: 0.0,
        repetition_penalty: 1.0,
    };
    let target = DecodeModel::from_host(w.clone(), WeightFormat::F32).unwrap();
    let v = cfg.vocab_size;
    let prompt = [1u32, 7, 9];
    let probs = |toks: &[u32]| -> Vec<f64> {
        let mut st = target.new_state();
        let l = target
            .forward(&mut [SeqInput {
                state: &mut st,
                tokens: toks,
                logits: 1,
            }])
            .unwrap()
            .remove(0);
        let mut p = vec![0f64; v];
        for (t, q) in tinyllama_engine::sampling::distribution(&l, &sp, toks) {
            p[t as usize] = q as f64;
        }
        p
    };
    let p1 = probs(&prompt);
    let mut p2 = vec![0f64; v];
    for (t1, pt1) in p1.iter().enumerate() {
        let mut ctx = prompt.to_vec();
        ctx.push(t1 as u32);
        for (t2, q) in probs(&ctx).iter().enumerate() {
            p2[t2] += pt1 * q;
        }
    }
    let r = Runner::new(
        DecodeModel::from_host(w, WeightFormat::F32).unwrap(),
        Some(Draft {
            model: DecodeModel::from_host(dw, WeightFormat::F32).unwrap(),
            k: 3,
        }),
    )
    .unwrap();
    let n = 6000;
    let (mut c1, mut c2) = (vec![0f64; v], vec![0f64; v]);
    let (mut proposed, mut accepted) = (0, 0);
    for seed in 0..n {
        let params = GenParams {
            max_tokens: 3,
            sampling: sp.clone(),
            seed,
            stop_ids: vec![],
        };
        let out = generate(&r, &prompt, params, |_| true).unwrap();
        c1[out.tokens[0] as usize] += 1.0;
        c2[out.tokens[1] as usize] += 1.0;
        proposed += out.proposed;
        accepted += out.accepted;
    }
    assert!(
        proposed > 0 && accepted > 0 && accepted < proposed,
        "{accepted}/{proposed}"
    );
    for (name, p, c) in [("first", &p1, &c1), ("second", &p2, &c2)] {
        // Pool categories with small expectations so the chi-squared approximation holds.
        let (mut chi2, mut dof) = (0.0, 0usize);
        let (mut pe, mut pc) = (0.0, 0.0);
        for t in 0..v {
            let e = p[t] * n as f64;
            if e < 5.0 {
                pe += e;
                pc += c[t];
                continue;
            }
            chi2 += (c[t] - e).powi(2) / e;
            dof += 1;
        }
        if pe > 0.0 {
            chi2 += (pc - pe).powi(2) / pe.max(1e-9);
            dof += 1;
        }
        // Wilson–Hilferty: the 99.9th percentile of chi-squared with `dof - 1` degrees.
        let k = (dof - 1) as f64;
        let crit = k * (1.0 - 2.0 / (9.0 * k) + 3.09 * (2.0 / (9.0 * k)).sqrt()).powi(3);
        assert!(
            chi2 < crit,
            "{name} token: chi2 {chi2:.1} > {crit:.1} ({dof} categories)"
        );
    }
}

#[test]
fn draft_with_another_vocabulary_is_refused() {
    let cfg = small_config(32);
    let mut cfg2 = cfg.clone();
    cfg2.vocab_size = 100;
    let e = Runner::new(
        DecodeModel::from_host(random_weights(&cfg, 1, 1.0), WeightFormat::F32).unwrap(),
        Some(Draft {
            model: DecodeModel::from_host(random_weights(&cfg2, 1, 1.0), WeightFormat::F32)
                .unwrap(),
            k: 2,
        }),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("same tokenizer"), "{e}");
}

fn tinystories() -> Option<&'static Path> {
    let p = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/data/models/tinystories-llama"
    ));
    if p.join("model.safetensors").exists() {
        Some(p)
    } else {
        eprintln!(
            "SKIPPED: {} not found (the shared reference data is absent)",
            p.display()
        );
        None
    }
}

#[test]
fn tinystories_greedy_text_matches_the_engine() {
    let Some(dir) = tinystories() else { return };
    let host = hf::load_dir(dir).unwrap();
    let tok = Tokenizer::load(dir, 1, 2).unwrap();
    let ids = tok
        .encode_with_bos("Once upon a time, there was a little girl")
        .unwrap();
    let engine = Llama::new(CpuBackend::<f32>::new(), &host).unwrap();
    let gp = GenerateParams {
        max_new_tokens: 80,
        sampling: SamplingParams::greedy(),
        seed: 0,
        eos: Some(2),
    };
    let (want, _) = engine_generate(&engine, &ids, &gp, |_| true).unwrap();
    let r = runner(&host, WeightFormat::F32);
    let mut p = greedy(80);
    p.stop_ids = vec![2];
    let got = generate(&r, &ids, p, |_| true).unwrap();
    assert_eq!(
        got.tokens,
        want,
        "{:?}\nvs\n{:?}",
        tok.decode(&got.tokens),
        tok.decode(&want)
    );
}
