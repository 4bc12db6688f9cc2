//! Times one decoder linear layer (`Linear::forward`) at TinyLlama-1.1B's shapes in each weight
//! format, for 1 activation row (decoding) and 512 rows (prompt processing). Compare kernel sets
//! by running it twice, e.g. with `TINYLLAMA_NO_AMX=1`:
//!
//! ```sh
//! cargo run --release -p tinyllama-infer --example linear_timing -- [formats] [rows]
//! ```
use std::time::Instant;
use tinyllama_infer::linear::Linear;
use tinyllama_infer::quant::WeightFormat;
use tinyllama_model::rng::Rng;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let formats: Vec<WeightFormat> = args
        .get(1)
        .map(|s| {
            s.split(',')
                .map(|f| WeightFormat::parse(f).unwrap())
                .collect()
        })
        .unwrap_or(WeightFormat::ALL.to_vec());
    let rows: Vec<usize> = args
        .get(2)
        .map(|s| s.split(',').map(|r| r.parse().unwrap()).collect())
        .unwrap_or(vec![1, 512]);
    let mut rng = Rng::new(1);
    // (output features, input features): the fused gate/up projection and the down projection.
    for (n, k) in [(11264, 2048), (2048, 5632)] {
        let w: Vec<f32> = (0..n * k).map(|_| rng.normal() as f32 * 0.02).collect();
        for &f in &formats {
            let lin = Linear::new(w.clone(), n, k, f);
            for &m in &rows {
                let x: Vec<f32> = (0..m * k).map(|_| rng.normal() as f32).collect();
                let mut out = vec![0f32; m * n];
                lin.forward(&x, m, &mut out, false);
                // The best of several runs: this measures the kernel, not the machine's noise.
                let reps = if m == 1 { 50 } else { 6 };
                let s = (0..reps)
                    .map(|_| {
                        let t = Instant::now();
                        lin.forward(&x, m, &mut out, false);
                        t.elapsed().as_secs_f64()
                    })
                    .fold(f64::INFINITY, f64::min);
                let gflops = 2.0 * (m * n * k) as f64 / s / 1e9;
                let gbs = lin.w.bytes() as f64 / s / 1e9;
                println!(
                    "{:>5} {n:>5}x{k:<5} rows {m:>4}: {:>9.3} ms  {gflops:>7.1} GFLOP/s  {gbs:>6.1} GB/s of weights",
                    f.name(),
                    s * 1e3
                );
            }
        }
    }
}
