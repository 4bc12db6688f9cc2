//! This CPU's f32 FMA peak per core: 24 independent chains of 512-bit FMAs with no memory
//! traffic (the ceiling the f32 product kernels are compared with in BENCHMARKS.md). Run one
//! copy per core to see the all-core figure.
//!
//! ```sh
//! cargo run --release -p tinyllama-infer --example fma_peak
//! ```
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn chains(steps: usize) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_set1_ps(0.0); 24];
    let (a, b) = (_mm512_set1_ps(1.000_000_1), _mm512_set1_ps(0.999_999_9));
    for _ in 0..steps {
        for c in acc.iter_mut() {
            *c = _mm512_fmadd_ps(a, *c, b);
        }
    }
    let s = acc
        .iter()
        .fold(_mm512_setzero_ps(), |s, &c| _mm512_add_ps(s, c));
    _mm512_reduce_add_ps(s)
}

fn main() {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("fma")
    {
        let steps = 100_000_000;
        let t = std::time::Instant::now();
        // SAFETY: the features were detected above.
        let r = unsafe { chains(steps) };
        let s = t.elapsed().as_secs_f64();
        let flops = (steps * 24 * 32) as f64;
        println!("{:.1} GFLOP/s on one core (checksum {r})", flops / s / 1e9);
        return;
    }
    println!("needs AVX-512 and FMA");
}
