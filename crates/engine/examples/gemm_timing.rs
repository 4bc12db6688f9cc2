//! Times the f32 gemm against the bf16 (AMX where present) product at demo-5m's training
//! shapes (2,048 tokens): forward `x·Wᵀ`, input gradient `dy·W` and weight gradient `dyᵀ·x`.
//!   cargo run --release -p tinyllama-engine --example gemm_timing
use std::time::Instant;
use tinyllama_engine::cpu::bf16_gemm::{self, PackBuffers};
use tinyllama_engine::cpu::gemm::{gemm, View};

/// (label, m, n, k, lhs, rhs) of one product.
type Case<'a> = (
    &'static str,
    usize,
    usize,
    usize,
    View<'a, f32>,
    View<'a, f32>,
);

fn main() {
    println!("bf16 on AMX: {}", tinyllama_engine::cpu::bf16_is_native());
    let tokens = 2048;
    let packs = PackBuffers::default();
    let mut totals = (0.0, 0.0);
    for (name, out_f, in_f) in [
        ("q|o", 256, 256),
        ("k|v", 64, 256),
        ("gate|up", 704, 256),
        ("down", 256, 704),
        ("head", 4096, 256),
    ] {
        let r = |n: usize, s: usize| -> Vec<f32> {
            (0..n)
                .map(|i| ((i * 2654435761 + s) % 1000) as f32 / 1000.0 - 0.5)
                .collect()
        };
        let (x, w, dy) = (
            r(tokens * in_f, 1),
            r(out_f * in_f, 2),
            r(tokens * out_f, 3),
        );
        // (m, n, k, a, b) for the three products.
        let cases: [Case; 3] = [
            (
                "fwd",
                tokens,
                out_f,
                in_f,
                View::row_major(&x, in_f),
                View::transposed(&w, in_f),
            ),
            (
                "dx",
                tokens,
                in_f,
                out_f,
                View::row_major(&dy, out_f),
                View::row_major(&w, in_f),
            ),
            (
                "dw",
                out_f,
                in_f,
                tokens,
                View::transposed(&dy, out_f),
                View::row_major(&x, in_f),
            ),
        ];
        for (what, m, n, k, a, b) in cases {
            let mut c = vec![0f32; m * n];
            let time = |f: &mut dyn FnMut()| {
                let mut best = f64::INFINITY;
                for _ in 0..20 {
                    let t = Instant::now();
                    f();
                    best = best.min(t.elapsed().as_secs_f64());
                }
                best
            };
            let t32 = time(&mut || gemm(m, n, k, &mut c, 0, n, a, b, 1.0, false, true));
            let t16 = time(&mut || bf16_gemm::matmul(m, n, k, &mut c, n, a, b, false, &packs));
            totals.0 += t32;
            totals.1 += t16;
            let gf = 2.0 * (m * n * k) as f64 / 1e9;
            println!(
                "{name:8} {what:4} {m:5}x{n:5}x{k:5}  f32 {:7.3} ms ({:6.1} GFLOP/s)  bf16 {:7.3} ms ({:6.1} GFLOP/s)  {:.2}x",
                t32 * 1e3, gf / t32, t16 * 1e3, gf / t16, t32 / t16
            );
        }
    }
    println!(
        "total per layer set: f32 {:.2} ms, bf16 {:.2} ms, {:.2}x",
        totals.0 * 1e3,
        totals.1 * 1e3,
        totals.0 / totals.1
    );
}
