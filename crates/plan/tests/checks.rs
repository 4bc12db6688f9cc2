//! The planner's acceptance checks. Each expected value is computed here from first principles,
//! not by calling the crate's helpers.

use tinyllama_plan::{plan, GradDtype, ModelSpec, Plan, PlanRequest};

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs()
}

fn tinyllama() -> ModelSpec {
    ModelSpec::preset("tinyllama-1.1b").unwrap()
}

/// TinyLlama by hand: 32000 vocab, d 2048, 22 layers, 32 heads, 4 KV heads of 64, SwiGLU 5632,
/// untied head.
fn tinyllama_train_flops_per_token(seq: f64) -> f64 {
    let (v, d, l, kv, f) = (32000.0, 2048.0, 22.0, 4.0 * 64.0, 5632.0);
    let per_layer = d * d /* q */ + 2.0 * d * kv /* k, v */ + d * d /* o */ + 3.0 * d * f /* gate, up, down */ + 2.0 * d /* norms */;
    // Every weight but the input embedding (a lookup) does a matmul: 2 FLOPs forward, 4 backward.
    let matmul_params = l * per_layer + d /* final norm */ + v * d /* LM head */;
    6.0 * matmul_params + 12.0 * l * seq * d
}

#[test]
fn tinyllama_3t_tokens_on_16_a100s_at_24k_tokens_per_gpu_takes_90_days_at_56_percent_mfu() {
    let p = plan(&PlanRequest {
        model: Some(tinyllama()),
        tokens: Some(3e12),
        gpus: Some(16),
        gpu_type: Some("A100-40G".into()),
        tokens_per_sec_per_gpu: Some(24_000.0),
        ..Default::default()
    })
    .unwrap();
    let t = p.training.as_ref().unwrap();

    let days: f64 = 3e12 / (16.0 * 24_000.0) / 86_400.0;
    assert!((days - 90.4).abs() < 0.05, "{days}");
    assert!(rel(t.wall_clock_days.unwrap(), days) < 1e-12);
    assert!(rel(t.gpu_hours.unwrap(), 16.0 * days * 24.0) < 1e-12);

    // 24k tokens/s × FLOPs per token against the A100's 312 TFLOP/s bf16 dense peak.
    let mfu = 24_000.0 * tinyllama_train_flops_per_token(2048.0) / 312e12;
    assert!(
        (mfu - 0.56).abs() < 0.005,
        "TinyLlama reports 56% MFU; got {mfu}"
    );
    assert!(
        rel(t.mfu.unwrap(), mfu) < 1e-9,
        "{} vs {mfu}",
        t.mfu.unwrap()
    );
    assert!(
        rel(
            t.flops_per_token.total,
            tinyllama_train_flops_per_token(2048.0)
        ) < 1e-12
    );

    // And the other way round: 56% MFU gives about 24k tokens/s and about 90 days.
    let q = plan(&PlanRequest {
        model: Some(tinyllama()),
        tokens: Some(3e12),
        gpus: Some(16),
        gpu_type: Some("a100-40gb".into()),
        mfu: Some(0.56),
        ..Default::default()
    })
    .unwrap();
    let u = q.training.unwrap();
    assert!((u.tokens_per_sec_per_gpu.unwrap() - 24_000.0).abs() < 200.0);
    assert!((u.wall_clock_days.unwrap() - 90.4).abs() < 1.0);
}

/// Minimises `L(N, C/6N)` numerically (golden-section search on log N) with the published
/// constants, independently of the closed form.
fn parametric_optimum_numerically(c: f64) -> f64 {
    let l = |ln_n: f64| {
        let n = ln_n.exp();
        let d = c / (6.0 * n);
        1.69 + 406.4 / n.powf(0.34) + 410.7 / d.powf(0.28)
    };
    let (mut a, mut b) = (1e6f64.ln(), 1e15f64.ln());
    let phi = (5f64.sqrt() - 1.0) / 2.0;
    for _ in 0..200 {
        let x1 = b - phi * (b - a);
        let x2 = a + phi * (b - a);
        if l(x1) < l(x2) {
            b = x2
        } else {
            a = x1
        }
    }
    ((a + b) / 2.0).exp()
}

#[test]
fn chinchilla_compute_gives_69b_by_the_rule_and_about_32b_by_the_parametric_fit() {
    let c = 5.76e23;
    let p = plan(&PlanRequest {
        compute: Some(c),
        ..Default::default()
    })
    .unwrap();
    let ch = p.chinchilla.as_ref().unwrap();

    // 20 tokens/parameter: C = 6·N·20N.
    let n_rule = (c / 120.0).sqrt();
    let d_rule = 20.0 * n_rule;
    assert!(rel(ch.rule.params, n_rule) < 1e-12);
    assert!(rel(ch.rule.tokens, d_rule) < 1e-12);
    assert!((n_rule / 1e9 - 69.3).abs() < 0.1, "{n_rule}");
    assert!((d_rule / 1e12 - 1.39).abs() < 0.01, "{d_rule}");
    // The paper's Chinchilla: 70B parameters on 1.4T tokens.
    assert!(rel(ch.rule.params, 70e9) < 0.02 && rel(ch.rule.tokens, 1.4e12) < 0.02);

    let n_fit = parametric_optimum_numerically(c);
    assert!(
        rel(ch.parametric.params, n_fit) < 1e-6,
        "{} vs {n_fit}",
        ch.parametric.params
    );
    assert!(rel(ch.parametric.tokens, c / (6.0 * n_fit)) < 1e-6);
    assert!((n_fit / 1e9 - 32.0).abs() < 1.0, "{n_fit}");
    assert!(ch.parametric.predicted_loss < ch.rule.predicted_loss);
    assert!(ch.why_they_differ.contains("Approach"));

    let text = tinyllama_plan::report::render(&p);
    assert!(text.contains("69.3B") && text.contains("32.2B"), "{text}");
}

#[test]
fn tinyllama_micro_batch_8_by_2048_under_fsdp_on_16_gpus_fits_in_40gb() {
    let p = plan(&PlanRequest {
        model: Some(tinyllama()),
        gpus: Some(16),
        gpu_type: Some("A100-40GB".into()),
        micro_batch: 8,
        seq_len: Some(2048),
        zero_stage: 3,
        grad_dtype: GradDtype::Bf16,
        ..Default::default()
    })
    .unwrap();
    let m = p.memory.as_ref().unwrap();
    let total = m.without_recompute.as_ref().unwrap();

    // By hand, for N = 1,100,048,384, 16 ranks, 16 384 tokens.
    let n = 1_100_048_384.0;
    let states_sharded = (2.0 + 2.0 + 4.0 + 4.0 + 4.0) * n / 16.0;
    let (v, d, l, kv, f, heads) = (32000.0, 2048.0, 22.0, 256.0, 5632.0, 32.0);
    let block = 2.0 * d * d + 2.0 * d * kv + 3.0 * d * f + 2.0 * d;
    let root = 2.0 * v * d + d;
    // Gathered bf16: root unit + current and prefetched block; bf16 gradient of the largest unit.
    let gathered = 2.0 * (root + 2.0 * block) + 2.0 * root;
    let tokens = 8.0 * 2048.0;
    // attention: norm in/out, q, k, v, out; MLP: norm in/out, gate, up, product (bf16);
    // f32: two 1/rms and one log-sum-exp per head.
    let per_token_layer = 2.0 * (d + d + d + kv + kv + d + d + d + f + f + f) + 4.0 * (2.0 + heads);
    let acts = per_token_layer * l * tokens      // saved by all layers
        + per_token_layer * tokens               // one layer's backward working set
        + (2.0 * 2.0 * d + 4.0) * tokens         // final norm
        + tokens * v * 6.0; // logits: bf16 + f32
    let expect = (states_sharded + gathered + acts) * 1.10 + GIB;
    assert!(
        rel(total.total_bytes, expect) < 1e-9,
        "{} vs {expect}",
        total.total_bytes
    );
    assert!(expect < 40.0 * GIB, "{} GiB", expect / GIB);
    assert_eq!(total.fits, Some(true));
    assert!(m.with_recompute.as_ref().unwrap().total_bytes < total.total_bytes);

    // Without sharding every rank holds all 16 bytes per parameter.
    let ddp = plan(&PlanRequest {
        zero_stage: 0,
        ..p.request.clone()
    })
    .unwrap()
    .memory
    .unwrap();
    assert!(rel(ddp.model_states_bytes, 16.0 * n) < 1e-12);
}

/// Numbers equal up to float parsing (serde_json's default parser may be one ulp off).
fn same(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value::*;
    match (a, b) {
        (Number(x), Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            x == y || (x - y).abs() <= 1e-12 * x.abs().max(y.abs())
        }
        (Array(x), Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q)),
        (Object(x), Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

#[test]
fn plan_round_trips_through_json() {
    let p = plan(&PlanRequest {
        model: Some(tinyllama()),
        tokens: Some(3e12),
        gpus: Some(16),
        gpu_type: Some("A100-40GB".into()),
        tokens_per_sec_per_gpu: Some(24_000.0),
        micro_batch: 8,
        zero_stage: 3,
        gpu_specs: vec![tinyllama_plan::gpus::parse_spec("MI300X:1307:192:4.0").unwrap()],
        ..Default::default()
    })
    .unwrap();
    let text = serde_json::to_string_pretty(&p).unwrap();
    let back: Plan = serde_json::from_str(&text).unwrap();
    assert!(same(
        &serde_json::to_value(&p).unwrap(),
        &serde_json::to_value(&back).unwrap()
    ));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    for key in ["model", "chinchilla", "training", "memory", "notes"] {
        assert!(!v[key].is_null(), "{key} missing");
    }
}

fn err(r: PlanRequest) -> String {
    format!("{:#}", plan(&r).unwrap_err())
}

#[test]
fn unknown_gpu_type_lists_the_choices() {
    let e = err(PlanRequest {
        gpu_type: Some("V100".into()),
        compute: Some(1e21),
        ..Default::default()
    });
    assert!(e.contains("unknown GPU type `V100`"), "{e}");
    for g in [
        "A100-40GB",
        "A100-80GB",
        "H100-SXM",
        "H100-PCIe",
        "H200",
        "L40S",
        "RTX-4090",
        "RTX-3090",
    ] {
        assert!(e.contains(g), "{e}");
    }
}

#[test]
fn zero_and_negative_values_are_rejected() {
    let cases: Vec<(PlanRequest, &str)> = vec![
        (
            PlanRequest {
                compute: Some(-1e21),
                ..Default::default()
            },
            "--compute must be positive",
        ),
        (
            PlanRequest {
                compute: Some(0.0),
                ..Default::default()
            },
            "--compute must be positive",
        ),
        (
            PlanRequest {
                tokens: Some(0.0),
                ..Default::default()
            },
            "--tokens must be positive",
        ),
        (
            PlanRequest {
                model: Some(ModelSpec::Params { params: -5.0 }),
                ..Default::default()
            },
            "--params must be positive",
        ),
        (
            PlanRequest {
                gpus: Some(0),
                ..Default::default()
            },
            "--gpus must be at least 1",
        ),
        (
            PlanRequest {
                mfu: Some(0.0),
                ..Default::default()
            },
            "--mfu",
        ),
        (
            PlanRequest {
                mfu: Some(1.5),
                ..Default::default()
            },
            "--mfu",
        ),
        (
            PlanRequest {
                price: Some(-2.0),
                ..Default::default()
            },
            "--price must be positive",
        ),
        (
            PlanRequest {
                micro_batch: 0,
                ..Default::default()
            },
            "--micro-batch",
        ),
        (
            PlanRequest {
                seq_len: Some(0),
                ..Default::default()
            },
            "--seq-len",
        ),
        (
            PlanRequest {
                zero_stage: 4,
                ..Default::default()
            },
            "--zero-stage",
        ),
        (
            PlanRequest {
                model: Some(tinyllama()),
                tokens_per_sec_per_gpu: Some(-24_000.0),
                ..Default::default()
            },
            "--tokens-per-sec-per-gpu must be positive",
        ),
    ];
    for (req, want) in cases {
        let e = err(req);
        assert!(e.contains(want), "expected `{want}` in `{e}`");
    }
}

#[test]
fn compute_with_gpus_or_hours_and_other_contradictions_are_clear_errors() {
    let e = err(PlanRequest {
        compute: Some(1e21),
        gpus: Some(8),
        gpu_type: Some("H100".into()),
        ..Default::default()
    });
    assert!(
        e.contains("--compute") && e.contains("--gpus/--hours"),
        "{e}"
    );
    let e = err(PlanRequest {
        compute: Some(1e21),
        hours: Some(10.0),
        ..Default::default()
    });
    assert!(e.contains("one or the other"), "{e}");
    let e = err(PlanRequest {
        model: Some(tinyllama()),
        mfu: Some(0.5),
        tokens_per_sec_per_gpu: Some(1000.0),
        ..Default::default()
    });
    assert!(e.contains("alternatives"), "{e}");
    let e = err(PlanRequest {
        model: Some(tinyllama()),
        tokens: Some(1e12),
        compute: Some(1e21),
        ..Default::default()
    });
    assert!(e.contains("over-determined"), "{e}");
    let e = err(PlanRequest {
        tokens: Some(1e12),
        gpu_type: Some("H100".into()),
        ..Default::default()
    });
    assert!(e.contains("nothing to plan"), "{e}");
    let e = err(PlanRequest {
        hours: Some(10.0),
        ..Default::default()
    });
    assert!(e.contains("--hours needs --gpus and --gpu-type"), "{e}");
    // An impossible throughput for the GPU.
    let e = err(PlanRequest {
        model: Some(tinyllama()),
        tokens: Some(1e12),
        gpus: Some(1),
        gpu_type: Some("RTX-3090".into()),
        tokens_per_sec_per_gpu: Some(24_000.0),
        ..Default::default()
    });
    assert!(e.contains("of the RTX-3090's peak"), "{e}");
}

#[test]
fn a_hardware_budget_buys_tokens_for_a_model() {
    // 8 H100s for a week at 40% MFU on TinyLlama-1.1B.
    let p = plan(&PlanRequest {
        model: Some(tinyllama()),
        gpus: Some(8),
        gpu_type: Some("H100-SXM".into()),
        hours: Some(168.0),
        mfu: Some(0.4),
        ..Default::default()
    })
    .unwrap();
    let c = 8.0 * 168.0 * 3600.0 * 989.4e12 * 0.4;
    assert!(rel(p.budget.as_ref().unwrap().flops, c) < 1e-12);
    let d = c / tinyllama_train_flops_per_token(2048.0);
    assert!(rel(p.tokens.unwrap(), d) < 1e-9);
    let t = p.training.unwrap();
    assert!(rel(t.wall_clock_hours.unwrap(), 168.0) < 1e-9);
    assert!(rel(t.cost_usd.unwrap(), 8.0 * 168.0 * 3.0) < 1e-9);
}
