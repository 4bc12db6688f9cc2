//! `tinyllama selftest --device cuda`: every op of the CUDA backend against the CPU backend
//! (`CpuBackend<f32>`) on random inputs, then one full training step of a small model.
//!
//! Inputs are drawn at random and rounded to bf16 before both backends see them, so differences
//! come only from the CUDA side's own roundings (bf16 outputs and intermediates) and summation
//! order. The error of a check is `max |cuda − cpu| / max |cpu|` over the compared outputs (the
//! worst of them), against a stated tolerance chosen for bf16: 2⁻⁸ ≈ 0.4% is one bf16 rounding
//! of the largest value.

use crate::backend::CudaBackend;
use serde::Serialize;
use std::time::Instant;
use tinyllama_engine::{Activations, AttnShape, Backend, BufKind, CpuBackend, Llama};
use tinyllama_model::rng::Rng;
use tinyllama_model::{presets, HostWeights, ModelConfig};

#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub name: String,
    pub shape: String,
    /// Worst relative error (see the module docs); NaN when an output was not finite.
    pub error: f64,
    pub tolerance: f64,
    pub pass: bool,
    pub ms: f64,
}

fn round_bf16(x: f32) -> f32 {
    half::bf16::from_f32(x).to_f32()
}

fn rand(rng: &mut Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| round_bf16(((rng.next_f64() * 2.0 - 1.0) as f32) * scale))
        .collect()
}

/// `max |a − b| / max |b|`, NaN if anything is not finite or the lengths differ.
pub fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    if a.len() != b.len() {
        return f64::NAN;
    }
    let mut worst = 0f64;
    let mut scale = 0f64;
    for (&x, &y) in a.iter().zip(b) {
        if !x.is_finite() || !y.is_finite() {
            return f64::NAN;
        }
        worst = worst.max((x as f64 - y as f64).abs());
        scale = scale.max((y as f64).abs());
    }
    if worst == 0.0 {
        0.0
    } else {
        worst / scale.max(1e-30)
    }
}

/// Runs `f` on both backends and compares every output it returns.
fn compare<F>(out: &mut Vec<Check>, cuda: &CudaBackend, name: &str, shape: String, tol: f64, f: F)
where
    F: Fn(&dyn Runner) -> Vec<Vec<f32>>,
{
    let cpu = CpuBackend::<f32>::new();
    let want = f(&Run(&cpu));
    let t = Instant::now();
    let got = f(&Run(cuda));
    cuda.synchronize();
    let ms = t.elapsed().as_secs_f64() * 1e3;
    let mut error = 0f64;
    for (g, w) in got.iter().zip(&want) {
        let e = rel_err(g, w);
        error = if e.is_nan() || error.is_nan() {
            f64::NAN
        } else {
            error.max(e)
        };
    }
    if got.len() != want.len() {
        error = f64::NAN;
    }
    out.push(Check {
        name: name.into(),
        shape,
        error,
        tolerance: tol,
        pass: error <= tol,
        ms,
    });
}

/// Object-safe access to one backend for the generic op drivers below (buffers stay inside).
pub trait Runner {
    fn run_op(&self, op: &Op) -> Vec<Vec<f32>>;
}

struct Run<'a, B: Backend>(&'a B);

/// The op checks, described as data so one driver runs them on either backend.
pub enum Op {
    Roundtrip(Vec<f32>),
    Elementwise(Vec<f32>, Vec<f32>),
    SumSquares(Vec<f32>),
    AllFinite(Vec<f32>),
    Matmul {
        a: Vec<f32>,
        ta: bool,
        b: Vec<f32>,
        tb: bool,
        m: usize,
        n: usize,
        k: usize,
        c0: Vec<f32>,
        acc: bool,
        c_kind: BufKind,
    },
    Embedding {
        table: Vec<f32>,
        ids: Vec<i32>,
        dout: Vec<f32>,
        dim: usize,
    },
    RmsNorm {
        x: Vec<f32>,
        w: Vec<f32>,
        dout: Vec<f32>,
        dx0: Vec<f32>,
        dim: usize,
    },
    Rope {
        x: Vec<f32>,
        heads: usize,
        hd: usize,
        seq: usize,
        pos0: usize,
    },
    Attention {
        q: Vec<f32>,
        k: Vec<f32>,
        v: Vec<f32>,
        dout: Vec<f32>,
        s: AttnShape,
    },
    SwiGlu(Vec<f32>, Vec<f32>, Vec<f32>),
    HeadLoss {
        x: Vec<f32>,
        w: Vec<f32>,
        targets: Vec<i32>,
        vocab: usize,
        dim: usize,
        chunk: usize,
        scale: f32,
    },
    AdamW {
        p: Vec<f32>,
        g: Vec<f32>,
    },
}

impl<B: Backend> Runner for Run<'_, B> {
    fn run_op(&self, op: &Op) -> Vec<Vec<f32>> {
        let be = self.0;
        let act = |d: &[f32]| be.upload_as(d, BufKind::Act);
        match op {
            Op::Roundtrip(x) => {
                let a = act(x);
                let f = be.upload(x);
                let w = be.upload_as(x, BufKind::Weight);
                vec![be.download(&a), be.download(&f), be.download(&w)]
            }
            Op::Elementwise(x, y) => {
                let n = x.len();
                let mut a = act(x);
                let b = act(y);
                be.add_assign(&mut a, &b);
                be.scale(&mut a, 0.5);
                let mut f = be.upload(x);
                be.add_assign(&mut f, &b); // mixed kinds
                let mut c = be.zeros_as(n, BufKind::Act);
                be.copy(&mut c, 3, &f, 1, n - 5);
                let mut z = be.upload(y);
                be.fill(&mut z, 0.25);
                vec![
                    be.download(&a),
                    be.download(&f),
                    be.download(&c),
                    be.download(&z),
                ]
            }
            Op::SumSquares(x) => {
                let f = be.upload(x);
                let a = act(x);
                vec![vec![be.sum_squares(&f) as f32, be.sum_squares(&a) as f32]]
            }
            Op::AllFinite(x) => {
                let ok = be.upload(x);
                let mut bad = x.clone();
                bad[x.len() / 2] = f32::NAN;
                let bad = act(&bad);
                let mut inf = x.clone();
                inf[x.len() - 1] = f32::INFINITY;
                let inf = be.upload(&inf);
                vec![vec![
                    be.all_finite(&ok) as i32 as f32,
                    be.all_finite(&bad) as i32 as f32,
                    be.all_finite(&inf) as i32 as f32,
                ]]
            }
            Op::Matmul {
                a,
                ta,
                b,
                tb,
                m,
                n,
                k,
                c0,
                acc,
                c_kind,
            } => {
                let (av, bv) = (act(a), be.upload_as(b, BufKind::Weight));
                let mut c = be.upload_as(c0, *c_kind);
                be.matmul(&mut c, &av, *ta, &bv, *tb, *m, *n, *k, *acc);
                vec![be.download(&c)]
            }
            Op::Embedding {
                table,
                ids,
                dout,
                dim,
            } => {
                let t = be.upload_as(table, BufKind::Weight);
                let idb = be.upload_ids(ids);
                let mut out = be.zeros_as(ids.len() * dim, BufKind::Act);
                be.embedding_fwd(&mut out, &t, &idb, *dim);
                let mut dt = be.upload(&vec![0.5; table.len()]);
                be.embedding_bwd(&mut dt, &act(dout), &idb, *dim);
                vec![be.download(&out), be.download(&dt)]
            }
            Op::RmsNorm {
                x,
                w,
                dout,
                dx0,
                dim,
            } => {
                let rows = x.len() / dim;
                let (xv, wv) = (act(x), be.upload_as(w, BufKind::Weight));
                let mut out = be.zeros_as(x.len(), BufKind::Act);
                let mut rstd = be.zeros(rows);
                be.rmsnorm_fwd(&mut out, &mut rstd, &xv, &wv, *dim, 1e-5);
                let mut dx = act(dx0);
                let mut dw = be.upload(&vec![0.25; *dim]);
                be.rmsnorm_bwd(&mut dx, &mut dw, &act(dout), &xv, &wv, &rstd, *dim);
                vec![
                    be.download(&out),
                    be.download(&rstd),
                    be.download(&dx),
                    be.download(&dw),
                ]
            }
            Op::Rope {
                x,
                heads,
                hd,
                seq,
                pos0,
            } => {
                let table = be.upload(&tinyllama_engine::cpu::rope::table(*hd, 512, 10000.0));
                let mut a = act(x);
                be.rope(&mut a, &table, *heads, *hd, *seq, *pos0, false);
                let fwd = be.download(&a);
                let mut b = act(x);
                be.rope(&mut b, &table, *heads, *hd, *seq, *pos0, true);
                vec![fwd, be.download(&b)]
            }
            Op::Attention { q, k, v, dout, s } => {
                let (qv, kv, vv) = (act(q), act(k), act(v));
                let mut out = be.zeros_as(q.len(), BufKind::Act);
                let mut lse = be.zeros(s.batch * s.n_heads * s.tq);
                be.attention_fwd(&mut out, &mut lse, &qv, &kv, &vv, *s);
                let mut dq = be.zeros_as(q.len(), BufKind::Act);
                let mut dk = be.zeros_as(k.len(), BufKind::Act);
                let mut dv = be.zeros_as(v.len(), BufKind::Act);
                be.attention_bwd(
                    &mut dq,
                    &mut dk,
                    &mut dv,
                    &act(dout),
                    &out,
                    &lse,
                    &qv,
                    &kv,
                    &vv,
                    *s,
                );
                vec![
                    be.download(&out),
                    be.download(&lse),
                    be.download(&dq),
                    be.download(&dk),
                    be.download(&dv),
                ]
            }
            Op::SwiGlu(g, u, dh) => {
                let (gv, uv) = (act(g), act(u));
                let mut h = be.zeros_as(g.len(), BufKind::Act);
                be.swiglu_fwd(&mut h, &gv, &uv);
                let mut dg = be.zeros_as(g.len(), BufKind::Act);
                let mut du = be.zeros_as(g.len(), BufKind::Act);
                be.swiglu_bwd(&mut dg, &mut du, &act(dh), &gv, &uv);
                vec![be.download(&h), be.download(&dg), be.download(&du)]
            }
            Op::HeadLoss {
                x,
                w,
                targets,
                vocab,
                dim,
                chunk,
                scale,
            } => {
                let rows = targets.len();
                let (xv, wv) = (act(x), be.upload_as(w, BufKind::Weight));
                let t = be.upload_ids(targets);
                let mut scratch = be.zeros(chunk * vocab);
                let mut losses = be.zeros(rows);
                be.lm_head_loss(&mut losses, &xv, &wv, &t, *vocab, *dim, &mut scratch, None);
                let eval = be.download(&losses);
                let mut dx = be.zeros_as(rows * dim, BufKind::Act);
                let mut dw = be.upload(&vec![0.125; vocab * dim]);
                be.lm_head_loss(
                    &mut losses,
                    &xv,
                    &wv,
                    &t,
                    *vocab,
                    *dim,
                    &mut scratch,
                    Some((&mut dx, Some(&mut dw), *scale)),
                );
                vec![
                    eval,
                    be.download(&losses),
                    be.download(&dx),
                    be.download(&dw),
                ]
            }
            Op::AdamW { p, g } => {
                let mut pv = be.upload_as(p, BufKind::Weight);
                let gv = be.upload(g);
                let (mut m, mut v) = (be.zeros(p.len()), be.zeros(p.len()));
                for step in 1..=3 {
                    be.adamw(
                        &mut pv, &gv, &mut m, &mut v, 1e-2, 0.9, 0.95, 1e-8, 0.1, step, 0.7,
                    );
                }
                // The bf16 copy must follow the master: read it back through a product with
                // the identity (row 0 of p · I).
                let n = p.len().min(16);
                let eye: Vec<f32> = (0..n * n)
                    .map(|i| if i % (n + 1) == 0 { 1.0 } else { 0.0 })
                    .collect();
                let mut row = be.zeros(n);
                be.matmul(&mut row, &pv, false, &act(&eye), false, 1, n, n, false);
                // Zero on both backends when the copy is the master rounded to bf16 (the CPU
                // backend has no copy: its product is the master itself).
                let stale: Vec<f32> = be
                    .download(&row)
                    .iter()
                    .zip(&be.download(&pv)[..n])
                    .map(|(&c, &p)| round_bf16(c) - round_bf16(p))
                    .collect();
                vec![be.download(&pv), be.download(&m), be.download(&v), stale]
            }
        }
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Smaller shapes (the emulator is slow).
    pub quick: bool,
    pub seed: u64,
}

/// Every op check, then the training step.
pub fn run(cuda: &CudaBackend, o: &Options) -> Vec<Check> {
    let mut out = Vec::new();
    let mut rng = Rng::new(o.seed);
    let r = &mut rng;

    let x = rand(r, 1000, 3.0);
    compare(&mut out, cuda, "upload/download", "1000".into(), 0.0, |b| {
        b.run_op(&Op::Roundtrip(x.clone()))
    });
    let (x, y) = (rand(r, 777, 2.0), rand(r, 777, 2.0));
    compare(
        &mut out,
        cuda,
        "add/scale/copy/fill",
        "777".into(),
        8e-3,
        |b| b.run_op(&Op::Elementwise(x.clone(), y.clone())),
    );
    let x = rand(r, 100_003, 1.0);
    compare(
        &mut out,
        cuda,
        "sum_squares (f64)",
        "100003".into(),
        1e-6,
        |b| b.run_op(&Op::SumSquares(x.clone())),
    );
    compare(&mut out, cuda, "all_finite", "100003".into(), 0.0, |b| {
        b.run_op(&Op::AllFinite(x.clone()))
    });

    // Matmuls: every transposition, bf16 output (activations) and f32 accumulation (gradients).
    let (m, n, k) = if o.quick {
        (40, 48, 64)
    } else {
        (200, 136, 264)
    };
    for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
        for (kind, acc, tol) in [(BufKind::Act, false, 8e-3), (BufKind::F32, true, 1e-4)] {
            let (a, b, c0) = (
                rand(r, m * k, 1.0),
                rand(r, k * n, 1.0),
                rand(r, m * n, 4.0),
            );
            let name = format!(
                "matmul {}{} → {}",
                if ta { "Aᵀ" } else { "A" },
                if tb { "Bᵀ" } else { "B" },
                if acc { "f32 +=" } else { "bf16" }
            );
            compare(
                &mut out,
                cuda,
                &name,
                format!("{m}×{k}·{k}×{n}"),
                tol,
                |bk| {
                    bk.run_op(&Op::Matmul {
                        a: a.clone(),
                        ta,
                        b: b.clone(),
                        tb,
                        m,
                        n,
                        k,
                        c0: c0.clone(),
                        acc,
                        c_kind: kind,
                    })
                },
            );
        }
    }

    let (vocab, dim, rows) = (97, 72, 150);
    let table = rand(r, vocab * dim, 1.0);
    let ids: Vec<i32> = (0..rows).map(|_| r.below(20) as i32 * 3).collect();
    let dout = rand(r, rows * dim, 1.0);
    compare(
        &mut out,
        cuda,
        "embedding fwd+bwd",
        format!("{rows} ids, {vocab}×{dim}"),
        8e-3,
        |b| {
            b.run_op(&Op::Embedding {
                table: table.clone(),
                ids: ids.clone(),
                dout: dout.clone(),
                dim,
            })
        },
    );

    for dim in [96, 1000] {
        let rows = if o.quick { 37 } else { 300 };
        let x = rand(r, rows * dim, 2.0);
        let w: Vec<f32> = rand(r, dim, 0.5).iter().map(|v| 1.0 + v).collect();
        let (dout, dx0) = (rand(r, rows * dim, 1.0), rand(r, rows * dim, 1.0));
        compare(
            &mut out,
            cuda,
            "rmsnorm fwd+bwd",
            format!("{rows}×{dim}"),
            1e-2,
            |b| {
                b.run_op(&Op::RmsNorm {
                    x: x.clone(),
                    w: w.clone(),
                    dout: dout.clone(),
                    dx0: dx0.clone(),
                    dim,
                })
            },
        );
    }

    let (heads, hd, seq, rows) = (3, 64, 50, 100);
    let x = rand(r, rows * heads * hd, 2.0);
    compare(
        &mut out,
        cuda,
        "rope fwd/inverse",
        format!("{rows}×{heads}×{hd}, pos0 7"),
        8e-3,
        |b| {
            b.run_op(&Op::Rope {
                x: x.clone(),
                heads,
                hd,
                seq,
                pos0: 7,
            })
        },
    );

    // Attention: training shapes (tq = tk) with ragged tiles, a KV-cache shape (tq < tk,
    // kv_stride > tk), every instantiated head dimension, GQA and MQA.
    let big = !o.quick;
    let shapes = [
        (
            2,
            if big { 200 } else { 70 },
            if big { 200 } else { 70 },
            0,
            4,
            2,
            64,
        ),
        (
            1,
            if big { 130 } else { 33 },
            if big { 250 } else { 97 },
            19,
            4,
            1,
            32,
        ),
        (
            2,
            if big { 129 } else { 65 },
            if big { 129 } else { 65 },
            0,
            2,
            2,
            128,
        ),
    ];
    for (batch, tq, tk, pad, nh, nkv, hd) in shapes {
        let s = AttnShape {
            batch,
            tq,
            tk,
            kv_stride: tk + pad,
            n_heads: nh,
            n_kv_heads: nkv,
            head_dim: hd,
        };
        let q = rand(r, batch * tq * nh * hd, 1.5);
        let kk = rand(r, batch * (tk + pad) * nkv * hd, 1.5);
        let v = rand(r, batch * (tk + pad) * nkv * hd, 1.0);
        let d = rand(r, batch * tq * nh * hd, 1.0);
        compare(
            &mut out,
            cuda,
            "flash attention fwd+bwd",
            format!(
                "b{batch} tq{tq} tk{tk} stride{} h{nh}/{nkv} d{hd}",
                tk + pad
            ),
            3e-2,
            |b| {
                b.run_op(&Op::Attention {
                    q: q.clone(),
                    k: kk.clone(),
                    v: v.clone(),
                    dout: d.clone(),
                    s,
                })
            },
        );
    }

    let n = if o.quick { 5000 } else { 100_000 };
    let (g, u, dh) = (rand(r, n, 4.0), rand(r, n, 2.0), rand(r, n, 1.0));
    compare(
        &mut out,
        cuda,
        "swiglu fwd+bwd",
        format!("{n}"),
        8e-3,
        |b| b.run_op(&Op::SwiGlu(g.clone(), u.clone(), dh.clone())),
    );

    let (rows, dim, vocab) = if o.quick {
        (20, 64, 300)
    } else {
        (300, 128, 5000)
    };
    let x = rand(r, rows * dim, 2.0);
    let w = rand(r, vocab * dim, 0.5);
    let mut targets: Vec<i32> = (0..rows).map(|_| r.below(vocab as u64) as i32).collect();
    targets[1] = -100;
    targets[rows - 2] = -1;
    let chunk = rows / 3 + 1; // several chunks, the last one short
    compare(
        &mut out,
        cuda,
        "fused LM head + cross-entropy",
        format!("{rows} rows, vocab {vocab}, dim {dim}, chunk {chunk}"),
        1e-2,
        |b| {
            b.run_op(&Op::HeadLoss {
                x: x.clone(),
                w: w.clone(),
                targets: targets.clone(),
                vocab,
                dim,
                chunk,
                scale: 1.0 / rows as f32,
            })
        },
    );

    let p = rand(r, 5003, 1.0);
    let g = rand(r, 5003, 0.1);
    compare(
        &mut out,
        cuda,
        "AdamW (f32 master, bf16 copy)",
        "5003".into(),
        1e-5,
        |b| {
            b.run_op(&Op::AdamW {
                p: p.clone(),
                g: g.clone(),
            })
        },
    );

    train_step(&mut out, cuda, o);
    nccl_round_trip(&mut out, cuda);
    out
}

/// NCCL at world size 1 on this GPU, the path a multi-GPU job takes for its gradients and
/// parameters: reduce-scatter and all-gather of device buffers on the backend's stream, and a
/// host all-reduce staged through the device. Skipped (with a line) when NCCL is not installed.
fn nccl_round_trip(out: &mut Vec<Check>, cuda: &CudaBackend) {
    use tinyllama_dist::{Collective, DeviceCollective, ReduceOp, SingleProcess};
    if cuda.device().on_stream(&mut |_| Ok(())).is_none() {
        return; // the emulator: no stream for NCCL to run on
    }
    if crate::discover::libraries().nccl.is_none() {
        eprintln!("NCCL not found (libnccl.so.2): its round trip is skipped");
        return;
    }
    let t = std::time::Instant::now();
    let result = (|| -> anyhow::Result<f64> {
        let nccl = crate::nccl::NcclCollective::open(
            cuda.device().clone(),
            0,
            1,
            crate::nccl::IdExchange::Host(&SingleProcess),
        )?;
        let x: Vec<f32> = (0..4099).map(|i| (i as f32 * 0.37).sin()).collect();
        let a = cuda.upload(&x);
        let mut b = cuda.zeros(x.len());
        let mut c = cuda.zeros(x.len());
        anyhow::ensure!(
            DeviceCollective::reduce_scatter_f32(&nccl, cuda, &a, &mut b)?,
            "reduce-scatter not taken"
        );
        anyhow::ensure!(
            DeviceCollective::all_gather_f32(&nccl, cuda, &b, &mut c)?,
            "all-gather not taken"
        );
        let mut h = [1.5f64, -2.0];
        nccl.all_reduce_f64(&mut h, ReduceOp::Sum)?;
        anyhow::ensure!(h == [1.5, -2.0], "host all-reduce gave {h:?}");
        Ok(rel_err(&cuda.download(&c), &x))
    })();
    let (error, pass) = match result {
        Ok(e) => (e, e == 0.0),
        Err(e) => {
            eprintln!("NCCL round trip failed: {e:#}");
            (f64::NAN, false)
        }
    };
    out.push(Check {
        name: "NCCL round trip (1 rank)".into(),
        shape: "4099".into(),
        error,
        tolerance: 0.0,
        pass,
        ms: t.elapsed().as_secs_f64() * 1e3,
    });
}

/// The small model of the training-step check.
pub fn step_model(quick: bool) -> (ModelConfig, usize, usize) {
    let mut cfg = presets::get("micro-1m").expect("preset");
    cfg.vocab_size = if quick { 256 } else { 2048 };
    let (batch, seq) = if quick { (2, 40) } else { (4, 100) };
    (cfg, batch, seq)
}

/// One optimizer step of a small model on both backends: loss, every gradient, the gradient
/// norm, and the loss after the AdamW update.
fn train_step(out: &mut Vec<Check>, cuda: &CudaBackend, o: &Options) {
    let (cfg, batch, seq) = step_model(o.quick);
    let host = HostWeights::init(&cfg, o.seed);
    let mut rng = Rng::new(o.seed ^ 0x5eed);
    let n = batch * seq;
    let inputs: Vec<u32> = (0..n)
        .map(|_| rng.below(cfg.vocab_size as u64) as u32)
        .collect();
    let mut targets: Vec<i32> = (0..n)
        .map(|_| rng.below(cfg.vocab_size as u64) as i32)
        .collect();
    targets[5] = -100;
    let shape = format!("{} params, batch {batch}×{seq}", cfg.num_params());

    fn run<B: Backend>(
        be: B,
        host: &HostWeights,
        batch: usize,
        seq: usize,
        inputs: &[u32],
        targets: &[i32],
    ) -> (f32, Vec<Vec<f32>>, f64, f32) {
        let mut model = Llama::new(be, host).expect("model");
        let mut acts = Activations::new(&model, batch, seq);
        let mut grads = model.zero_grads();
        let loss = model
            .forward_backward(&mut acts, &mut grads, inputs, targets, 1.0)
            .expect("step");
        let norm = grads
            .iter()
            .map(|g| model.backend.sum_squares(g))
            .sum::<f64>()
            .sqrt();
        let g: Vec<Vec<f32>> = grads.iter().map(|g| model.backend.download(g)).collect();
        let (mut m, mut v) = (model.zero_grads(), model.zero_grads());
        let scale = (1.0 / norm.max(1.0)) as f32;
        for i in 0..model.weights.len() {
            let be = &model.backend;
            be.adamw(
                &mut model.weights[i],
                &grads[i],
                &mut m[i],
                &mut v[i],
                3e-3,
                0.9,
                0.95,
                1e-8,
                0.1,
                1,
                scale,
            );
        }
        let after = model
            .forward_losses(&mut acts, inputs, targets)
            .expect("eval");
        let valid = targets.iter().filter(|&&t| t >= 0).count() as f32;
        (loss, g, norm, after.iter().sum::<f32>() / valid)
    }

    let t = Instant::now();
    let (l_cpu, g_cpu, n_cpu, a_cpu) = run(
        CpuBackend::<f32>::new(),
        &host,
        batch,
        seq,
        &inputs,
        &targets,
    );
    let cpu_ms = t.elapsed().as_secs_f64() * 1e3;
    let cuda2 = CudaBackend::with_device(cuda.device().clone());
    let t = Instant::now();
    let (l_gpu, g_gpu, n_gpu, a_gpu) = run(cuda2, &host, batch, seq, &inputs, &targets);
    let ms = t.elapsed().as_secs_f64() * 1e3;
    let _ = cpu_ms;
    let rel = |a: f64, b: f64| (a - b).abs() / b.abs().max(1e-30);
    let mut push = |name: &str, error: f64, tol: f64| {
        out.push(Check {
            name: name.into(),
            shape: shape.clone(),
            error,
            tolerance: tol,
            pass: error <= tol,
            ms,
        })
    };
    push("train step: loss", rel(l_gpu as f64, l_cpu as f64), 5e-3);
    // Per-tensor relative Frobenius error of the gradients; the worst tensor is reported.
    let mut worst = 0f64;
    for (g, c) in g_gpu.iter().zip(&g_cpu) {
        let num: f64 = g.iter().zip(c).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
        let den: f64 = c.iter().map(|b| (*b as f64).powi(2)).sum();
        let e = (num / den.max(1e-30)).sqrt();
        worst = if e.is_nan() { f64::NAN } else { worst.max(e) };
    }
    push("train step: gradients (worst tensor)", worst, 5e-2);
    push("train step: gradient norm", rel(n_gpu, n_cpu), 2e-2);
    push(
        "train step: loss after AdamW",
        rel(a_gpu as f64, a_cpu as f64),
        5e-3,
    );
    let decreased = (a_gpu < l_gpu) && (a_cpu < l_cpu);
    push(
        "train step: loss decreases",
        if decreased { 0.0 } else { 1.0 },
        0.0,
    );
}

/// The pass/fail table.
pub fn table(checks: &[Check]) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "{:<38} {:<40} {:>10} {:>9} {:>9}  result\n",
        "check", "shape", "error", "tol", "ms"
    ));
    for c in checks {
        s.push_str(&format!(
            "{:<38} {:<40} {:>10.2e} {:>9.0e} {:>9.1}  {}\n",
            c.name,
            c.shape,
            c.error,
            c.tolerance,
            c.ms,
            if c.pass { "PASS" } else { "FAIL" }
        ));
    }
    let failed = checks.iter().filter(|c| !c.pass).count();
    s.push_str(&format!(
        "{} checks, {} passed, {} failed\n",
        checks.len(),
        checks.len() - failed,
        failed
    ));
    s
}

/// Runs one op description on any backend (tests and debugging).
pub fn run_on<B: Backend>(be: &B, op: &Op) -> Vec<Vec<f32>> {
    Run(be).run_op(op)
}
