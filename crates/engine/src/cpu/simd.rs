//! Hot elementwise loops compiled several times for different instruction sets and chosen at
//! run time, so one binary uses AVX-512 where the CPU has it and still runs on older x86-64.
//! The bodies are plain loops written so LLVM vectorises them (no data-dependent branches,
//! independent accumulators for reductions).

/// Defines `pub fn $name` that dispatches to an AVX-512, an AVX2+FMA or a baseline build of
/// the same body.
macro_rules! multiversion {
    ($(#[$m:meta])* pub fn $name:ident($($arg:ident : $ty:ty),*) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        pub fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,bmi2")]
                unsafe fn v4($($arg: $ty),*) $(-> $ret)? { body($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn v3($($arg: $ty),*) $(-> $ret)? { body($($arg),*) }
                match $crate::cpu::simd::level() {
                    // SAFETY: the CPU was checked for these features.
                    2 => return unsafe { v4($($arg),*) },
                    1 => return unsafe { v3($($arg),*) },
                    _ => {}
                }
            }
            body($($arg),*)
        }
    };
}
#[allow(unused_imports)]
pub(crate) use multiversion;

/// 2 = AVX-512, 1 = AVX2+FMA, 0 = baseline; detected once.
pub fn level() -> u8 {
    use std::sync::OnceLock;
    static L: OnceLock<u8> = OnceLock::new();
    *L.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512vl")
                && std::is_x86_feature_detected!("avx512bw")
                && std::is_x86_feature_detected!("avx512dq")
                && std::is_x86_feature_detected!("fma")
                && std::is_x86_feature_detected!("bmi2")
            {
                return 2;
            }
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                return 1;
            }
        }
        0
    })
}

/// exp(x) for f32 without branches: x = n·ln2 + r with |r| ≤ ln2/2, exp(r) by a degree-6
/// polynomial, 2^n by building the exponent bits. Inputs below -87 flush to 0, which is what a
/// softmax wants.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    let x = x.clamp(-87.3, 88.7);
    // Round to nearest by adding and subtracting 1.5·2²³ (exact for |v| < 2²²): unlike
    // `f32::round`, which is a libm call on baseline x86-64, this keeps the loop vectorisable.
    const MAGIC: f32 = 12_582_912.0;
    let shifted = x * std::f32::consts::LOG2_E + MAGIC;
    let n = shifted - MAGIC;
    // The same integer read from the bits of `shifted` (its low mantissa bits hold n + 2²²):
    // `n as i32` would be a saturating conversion, which LLVM does lane by lane in scalar code.
    let ni = (shifted.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    // Two-constant Cody–Waite reduction keeps r accurate.
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (0.166_666_67
                    + r * (0.041_666_52 + r * (0.008_333_541 + r * 0.001_394_988_6)))));
    let bits = (ni.wrapping_add(127) as u32) << 23;
    p * f32::from_bits(bits)
}

multiversion! {
    /// `x[i] = exp(x[i] - shift)`; returns the sum (eight-lane partial sums, fixed order).
    pub fn exp_shifted_sum(x: &mut [f32], shift: f32) -> f32 {
        let mut acc = [0f32; 16];
        let mut chunks = x.chunks_exact_mut(16);
        for c in &mut chunks {
            for i in 0..16 {
                c[i] = exp_f32(c[i] - shift);
                acc[i] += c[i];
            }
        }
        // The tail runs as one more full-width chunk padded with -inf (whose exp underflows to
        // ~1e-38, nothing next to a softmax sum ≥ 1), so short and ragged rows — causal
        // attention has one of every length — stay vectorised.
        let rest = chunks.into_remainder();
        let mut pad = [f32::NEG_INFINITY; 16];
        pad[..rest.len()].copy_from_slice(rest);
        for i in 0..16 {
            pad[i] = exp_f32(pad[i] - shift);
            acc[i] += pad[i];
        }
        rest.copy_from_slice(&pad[..rest.len()]);
        acc.iter().sum::<f32>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn fast_exp_is_accurate() {
        let mut worst = 0f64;
        let mut x = -80.0f32;
        while x < 80.0 {
            let rel = ((exp_f32(x) as f64) - (x as f64).exp()).abs() / (x as f64).exp();
            worst = worst.max(rel);
            x += 0.0137;
        }
        assert!(worst < 3e-7, "{worst}");
        assert_eq!(exp_f32(-1000.0), 0.0f32.max(exp_f32(-1000.0)));
        assert!(exp_f32(-1000.0) < 1e-37);
    }
    #[test]
    fn exp_shifted_sum_matches_scalar() {
        let mut v: Vec<f32> = (0..103).map(|i| (i as f32) * 0.1 - 5.0).collect();
        let want: f64 = v.iter().map(|x| ((*x - 2.0) as f64).exp()).sum();
        let got = exp_shifted_sum(&mut v, 2.0);
        assert!(((got as f64) - want).abs() / want < 1e-6);
    }
}

multiversion! {
    /// `h = silu(g) · u` (the SwiGLU forward, f32 fast path).
    pub fn silu_mul(h: &mut [f32], g: &[f32], u: &[f32]) {
        for i in 0..h.len().min(g.len()).min(u.len()) {
            let s = 1.0 / (1.0 + exp_f32(-g[i]));
            h[i] = g[i] * s * u[i];
        }
    }
}

multiversion! {
    /// SwiGLU backward, f32 fast path: `dg = dh·u·σ(g)(1 + g(1 − σ(g)))`, `du = dh·silu(g)`.
    pub fn silu_mul_bwd(dg: &mut [f32], du: &mut [f32], dh: &[f32], g: &[f32], u: &[f32]) {
        let n = dg.len().min(du.len()).min(dh.len()).min(g.len()).min(u.len());
        for i in 0..n {
            let s = 1.0 / (1.0 + exp_f32(-g[i]));
            du[i] = dh[i] * g[i] * s;
            dg[i] = dh[i] * u[i] * s * (1.0 + g[i] * (1.0 - s));
        }
    }
}

multiversion! {
    /// `x[j] = keep(base + j) ? x[j]·scale : 0` (the mask of
    /// [`crate::backend::dropout_keep_below`]: 64-bit multiplies, which AVX-512DQ does in
    /// vectors).
    pub fn dropout_f32(x: &mut [f32], base: u64, seed: u64, threshold: u64, scale: f32) {
        for (j, v) in x.iter_mut().enumerate() {
            let keep = crate::backend::dropout_keep_below(seed, base + j as u64, threshold);
            *v = if keep { *v * scale } else { 0.0 };
        }
    }
}

multiversion! {
    /// [`dropout_f32`] of `src` into `dst`.
    pub fn dropout_from_f32(dst: &mut [f32], src: &[f32], base: u64, seed: u64, threshold: u64, scale: f32) {
        for (j, (d, &x)) in dst.iter_mut().zip(src).enumerate() {
            let keep = crate::backend::dropout_keep_below(seed, base + j as u64, threshold);
            *d = if keep { x * scale } else { 0.0 };
        }
    }
}
