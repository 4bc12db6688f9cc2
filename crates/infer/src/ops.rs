//! The elementwise and per-row operations of a decoder layer, row by row so that a row's
//! result never depends on which other rows share the batch.

use crate::simd::multiversion;
use tinyllama_engine::cpu::simd::exp_f32;

multiversion! {
    /// `out = w · x / sqrt(mean(x²) + eps)` for one row (as the engine computes it).
    pub fn rmsnorm_row(out: &mut [f32], x: &[f32], w: &[f32], eps: f32) {
        let mut acc = [0f32; 8];
        let mut it = x.chunks_exact(8);
        for c in &mut it {
            for i in 0..8 {
                acc[i] += c[i] * c[i];
            }
        }
        let mut s = 0f32;
        for &v in it.remainder() {
            s += v * v;
        }
        let ss = acc.iter().copied().sum::<f32>() + s;
        let rs = 1.0 / (ss / x.len() as f32 + eps).sqrt();
        for i in 0..x.len() {
            out[i] = w[i] * (x[i] * rs);
        }
    }
}

multiversion! {
    /// `h = silu(g) · u` with `silu(g) = g / (1 + e^-g)`.
    pub fn swiglu_row(h: &mut [f32], g: &[f32], u: &[f32]) {
        for i in 0..h.len() {
            h[i] = g[i] / (1.0 + exp_f32(-g[i])) * u[i];
        }
    }
}

multiversion! {
    /// `out = Σ_j p[j] · v[j·stride .. j·stride + out.len()]`, the probability-weighted sum of
    /// value rows for one query. Output columns go in blocks of 64 (16 at the end) held in
    /// registers over all keys, so each key costs one load and one FMA per vector.
    pub fn weighted_rows(out: &mut [f32], p: &[f32], v: &[f32], stride: usize) {
        let hd = out.len();
        let mut d0 = 0;
        while d0 + 64 <= hd {
            let mut acc = [0f32; 64];
            for (j, &pj) in p.iter().enumerate() {
                let vr: &[f32; 64] = v[j * stride + d0..j * stride + d0 + 64].try_into().unwrap();
                for l in 0..64 {
                    acc[l] += pj * vr[l];
                }
            }
            out[d0..d0 + 64].copy_from_slice(&acc);
            d0 += 64;
        }
        while d0 + 16 <= hd {
            let mut acc = [0f32; 16];
            for (j, &pj) in p.iter().enumerate() {
                let vr: &[f32; 16] = v[j * stride + d0..j * stride + d0 + 16].try_into().unwrap();
                for l in 0..16 {
                    acc[l] += pj * vr[l];
                }
            }
            out[d0..d0 + 16].copy_from_slice(&acc);
            d0 += 16;
        }
        for (d, o) in out.iter_mut().enumerate().skip(d0) {
            *o = p.iter().enumerate().map(|(j, &pj)| pj * v[j * stride + d]).sum();
        }
    }
}

/// Rotates each `head_dim` slice of `x` (rotate-half convention) by position `pos`, with the
/// engine's `[max_pos, head_dim/2]` cosine-then-sine table.
pub fn rope_row(x: &mut [f32], table: &[f32], head_dim: usize, pos: usize) {
    let half = head_dim / 2;
    let max_pos = table.len() / (2 * half);
    let (cos, sin) = table.split_at(max_pos * half);
    let (c, s) = (
        &cos[pos * half..(pos + 1) * half],
        &sin[pos * half..(pos + 1) * half],
    );
    for head in x.chunks_exact_mut(head_dim) {
        let (a, b) = head.split_at_mut(half);
        for i in 0..half {
            let (x0, x1) = (a[i], b[i]);
            a[i] = x0 * c[i] - x1 * s[i];
            b[i] = x1 * c[i] + x0 * s[i];
        }
    }
}
