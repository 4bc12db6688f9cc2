//! The floating-point element type of the CPU backend. Training runs in f32; the whole-model
//! gradient check runs the very same kernels in f64, which is why they are generic.

use std::fmt::Debug;
use std::iter::Sum;
use std::ops::{Add, AddAssign, Div, Mul, MulAssign, Neg, Sub, SubAssign};

pub trait Real:
    Copy
    + Send
    + Sync
    + 'static
    + Default
    + Debug
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
    + Sum
{
    const ZERO: Self;
    const ONE: Self;
    const NEG_INFINITY: Self;
    fn from_f64(x: f64) -> Self;
    fn to_f64(self) -> f64;
    fn from_f32(x: f32) -> Self;
    fn to_f32(self) -> f32;
    fn sqrt(self) -> Self;
    fn ln(self) -> Self;
    fn exp(self) -> Self;
    fn max(self, o: Self) -> Self;
    fn is_finite(self) -> bool;
    /// `self·a + b` with one rounding. Becomes one instruction only inside code compiled with
    /// FMA enabled (see `cpu::small_gemm`); elsewhere it is a slow library call.
    fn mul_add(self, a: Self, b: Self) -> Self;
    /// `x[i] = exp(x[i] - shift)` in place and returns the sum. f32 uses a vectorisable
    /// polynomial (relative error < 2e-7); f64 uses the exact library exp, because the f64 path
    /// exists for finite-difference checks.
    fn exp_shifted_sum(x: &mut [Self], shift: Self) -> Self;

    /// `h = silu(g)·u`; f32 overrides it with a multiversioned SIMD loop.
    fn silu_mul(h: &mut [Self], g: &[Self], u: &[Self]) {
        for i in 0..h.len() {
            let s = Self::ONE / (Self::ONE + (-g[i]).exp());
            h[i] = g[i] * s * u[i];
        }
    }

    /// Dropout of the elements `base..base + x.len()` of a buffer (see
    /// [`crate::backend::dropout_keep`]); f32 overrides it with a multiversioned SIMD loop.
    fn dropout(x: &mut [Self], base: u64, seed: u64, threshold: u64, scale: Self) {
        for (j, v) in x.iter_mut().enumerate() {
            let keep = crate::backend::dropout_keep_below(seed, base + j as u64, threshold);
            *v = if keep { *v * scale } else { Self::ZERO };
        }
    }

    /// [`Real::dropout`] of `src` into `dst` (same length).
    fn dropout_from(
        dst: &mut [Self],
        src: &[Self],
        base: u64,
        seed: u64,
        threshold: u64,
        scale: Self,
    ) {
        for (j, (d, &x)) in dst.iter_mut().zip(src).enumerate() {
            let keep = crate::backend::dropout_keep_below(seed, base + j as u64, threshold);
            *d = if keep { x * scale } else { Self::ZERO };
        }
    }

    /// SwiGLU backward (see `cpu::swiglu`); f32 overrides it.
    fn silu_mul_bwd(dg: &mut [Self], du: &mut [Self], dh: &[Self], g: &[Self], u: &[Self]) {
        for i in 0..dg.len() {
            let s = Self::ONE / (Self::ONE + (-g[i]).exp());
            du[i] = dh[i] * g[i] * s;
            dg[i] = dh[i] * u[i] * s * (Self::ONE + g[i] * (Self::ONE - s));
        }
    }
}

impl Real for f32 {
    const ZERO: f32 = 0.0;
    const ONE: f32 = 1.0;
    const NEG_INFINITY: f32 = f32::NEG_INFINITY;
    fn from_f64(x: f64) -> f32 {
        x as f32
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn from_f32(x: f32) -> f32 {
        x
    }
    fn to_f32(self) -> f32 {
        self
    }
    fn sqrt(self) -> f32 {
        f32::sqrt(self)
    }
    fn ln(self) -> f32 {
        f32::ln(self)
    }
    fn exp(self) -> f32 {
        // Branch-free polynomial so loops that call it vectorise (see cpu::simd).
        crate::cpu::simd::exp_f32(self)
    }
    fn max(self, o: f32) -> f32 {
        f32::max(self, o)
    }
    fn is_finite(self) -> bool {
        f32::is_finite(self)
    }
    #[inline(always)]
    fn mul_add(self, a: f32, b: f32) -> f32 {
        f32::mul_add(self, a, b)
    }
    fn exp_shifted_sum(x: &mut [f32], shift: f32) -> f32 {
        crate::cpu::simd::exp_shifted_sum(x, shift)
    }
    fn silu_mul(h: &mut [f32], g: &[f32], u: &[f32]) {
        crate::cpu::simd::silu_mul(h, g, u)
    }
    fn dropout(x: &mut [f32], base: u64, seed: u64, threshold: u64, scale: f32) {
        crate::cpu::simd::dropout_f32(x, base, seed, threshold, scale)
    }
    fn dropout_from(
        dst: &mut [f32],
        src: &[f32],
        base: u64,
        seed: u64,
        threshold: u64,
        scale: f32,
    ) {
        crate::cpu::simd::dropout_from_f32(dst, src, base, seed, threshold, scale)
    }
    fn silu_mul_bwd(dg: &mut [f32], du: &mut [f32], dh: &[f32], g: &[f32], u: &[f32]) {
        crate::cpu::simd::silu_mul_bwd(dg, du, dh, g, u)
    }
}

impl Real for f64 {
    const ZERO: f64 = 0.0;
    const ONE: f64 = 1.0;
    const NEG_INFINITY: f64 = f64::NEG_INFINITY;
    fn from_f64(x: f64) -> f64 {
        x
    }
    fn to_f64(self) -> f64 {
        self
    }
    fn from_f32(x: f32) -> f64 {
        x as f64
    }
    fn to_f32(self) -> f32 {
        self as f32
    }
    fn sqrt(self) -> f64 {
        f64::sqrt(self)
    }
    fn ln(self) -> f64 {
        f64::ln(self)
    }
    fn exp(self) -> f64 {
        f64::exp(self)
    }
    fn max(self, o: f64) -> f64 {
        f64::max(self, o)
    }
    fn is_finite(self) -> bool {
        f64::is_finite(self)
    }
    #[inline(always)]
    fn mul_add(self, a: f64, b: f64) -> f64 {
        f64::mul_add(self, a, b)
    }
    fn exp_shifted_sum(x: &mut [f64], shift: f64) -> f64 {
        let mut s = 0.0;
        for v in x.iter_mut() {
            *v = (*v - shift).exp();
            s += *v;
        }
        s
    }
}
