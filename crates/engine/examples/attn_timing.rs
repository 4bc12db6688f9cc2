//! Times the CPU attention forward and backward at demo-5m's training shape (batch 8, T 256,
//! 8 heads, 2 KV heads, head dim 32): a quick look at one op, outside the full training step.
//!   cargo run --release -p tinyllama-engine --example attn_timing
use std::time::Instant;
use tinyllama_engine::cpu::attention::{backward, forward};
use tinyllama_engine::cpu::scratch::ScratchPool;
use tinyllama_engine::AttnShape;

fn main() {
    let s = AttnShape {
        batch: 8,
        tq: 256,
        tk: 256,
        kv_stride: 256,
        n_heads: 8,
        n_kv_heads: 2,
        head_dim: 32,
    };
    let qn = s.batch * s.tq * s.n_heads * s.head_dim;
    let kn = s.batch * s.tk * s.n_kv_heads * s.head_dim;
    let r = |n: usize, k: usize| -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 2654435761 + k) % 1000) as f32 / 1000.0 - 0.5)
            .collect()
    };
    let (q, k, v, dout) = (r(qn, 1), r(kn, 2), r(kn, 3), r(qn, 4));
    let (mut out, mut lse) = (vec![0f32; qn], vec![0f32; s.batch * s.n_heads * s.tq]);
    let (mut dq, mut dk, mut dv) = (vec![0f32; qn], vec![0f32; kn], vec![0f32; kn]);
    let pool = ScratchPool::new();
    let mut best = (f64::INFINITY, f64::INFINITY);
    for _ in 0..30 {
        let t = Instant::now();
        forward(&mut out, &mut lse, &q, &k, &v, s, &pool);
        let f = t.elapsed().as_secs_f64();
        let t = Instant::now();
        backward(
            &mut dq, &mut dk, &mut dv, &dout, &out, &lse, &q, &k, &v, s, &pool,
        );
        let b = t.elapsed().as_secs_f64();
        best = (best.0.min(f), best.1.min(b));
    }
    println!(
        "attention at demo-5m shape, best of 30: forward {:.2} ms, backward {:.2} ms ({} threads)",
        best.0 * 1e3,
        best.1 * 1e3,
        rayon::current_num_threads()
    );
}
