//! RMSNorm: `y = w · x / sqrt(mean(x²) + eps)` per row (Llama's pre-norm; no mean
//! subtraction, no bias).

use crate::real::Real;
use rayon::prelude::*;

/// Rows per task of the weight-gradient reduction. Fixed (not derived from the thread count)
/// so the summation order, and therefore every bit of the result, is the same on any machine.
const DW_BLOCK_ROWS: usize = 64;

#[inline(always)]
fn sum_sq<T: Real>(x: &[T]) -> T {
    let mut acc = [T::ZERO; 8];
    let mut it = x.chunks_exact(8);
    for c in &mut it {
        for i in 0..8 {
            acc[i] += c[i] * c[i];
        }
    }
    let mut s = T::ZERO;
    for &v in it.remainder() {
        s += v * v;
    }
    acc.iter().copied().sum::<T>() + s
}

pub fn forward<T: Real>(out: &mut [T], rstd: &mut [T], x: &[T], w: &[T], dim: usize, eps: f64) {
    let rows = x.len() / dim;
    assert!(out.len() >= rows * dim && rstd.len() >= rows && w.len() == dim);
    let (dimf, eps) = (T::from_f64(dim as f64), T::from_f64(eps));
    out[..rows * dim]
        .par_chunks_mut(dim)
        .zip(rstd[..rows].par_iter_mut())
        .zip(x.par_chunks(dim))
        .with_min_len(16)
        .for_each(|((o, r), xr)| {
            let rs = T::ONE / (sum_sq(xr) / dimf + eps).sqrt();
            *r = rs;
            for i in 0..dim {
                o[i] = w[i] * (xr[i] * rs);
            }
        });
}

/// `dx += ∂L/∂x`, `dw += ∂L/∂w` given `dout = ∂L/∂y`.
/// With g = dout·w: ∂L/∂x = rstd·g − x·rstd³·(g·x)/dim and ∂L/∂w = Σ_rows dout·x·rstd.
pub fn backward<T: Real>(
    dx: &mut [T],
    dw: &mut [T],
    dout: &[T],
    x: &[T],
    w: &[T],
    rstd: &[T],
    dim: usize,
) {
    let rows = x.len() / dim;
    let dimf = T::from_f64(dim as f64);
    let partials: Vec<Vec<T>> = dx[..rows * dim]
        .par_chunks_mut(dim * DW_BLOCK_ROWS)
        .enumerate()
        .map(|(blk, dxb)| {
            let mut pw = vec![T::ZERO; dim];
            for (j, dxr) in dxb.chunks_mut(dim).enumerate() {
                let r = blk * DW_BLOCK_ROWS + j;
                let (xr, dr, rs) = (
                    &x[r * dim..(r + 1) * dim],
                    &dout[r * dim..(r + 1) * dim],
                    rstd[r],
                );
                let mut dot = T::ZERO;
                for i in 0..dim {
                    dot += dr[i] * w[i] * xr[i];
                }
                let c = rs * rs * rs * dot / dimf;
                for i in 0..dim {
                    dxr[i] += rs * dr[i] * w[i] - xr[i] * c;
                    pw[i] += dr[i] * xr[i] * rs;
                }
            }
            pw
        })
        .collect();
    for p in partials {
        for i in 0..dim {
            dw[i] += p[i];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::gradcheck::{check, project, rand_vec};

    #[test]
    fn gradients_match_finite_differences() {
        let (rows, dim, eps) = (5, 12, 1e-5);
        let x = rand_vec(rows * dim, 1);
        let mut w: Vec<f64> = rand_vec(dim, 2).iter().map(|v| 1.0 + 0.5 * v).collect();
        let r = rand_vec(rows * dim, 3);
        let run = |x: &[f64], w: &[f64]| {
            let (mut o, mut rs) = (vec![0.0; rows * dim], vec![0.0; rows]);
            forward(&mut o, &mut rs, x, w, dim, eps);
            (o, rs)
        };
        let (_, rs) = run(&x, &w);
        let (mut dx, mut dw) = (vec![0.0; rows * dim], vec![0.0; dim]);
        backward(&mut dx, &mut dw, &r, &x, &w, &rs, dim);
        let w0 = w.clone();
        check("rmsnorm dx", &mut x.clone(), &dx, 1000, |xx| {
            project(&run(xx, &w0).0, &r)
        });
        check("rmsnorm dw", &mut w, &dw, 1000, |ww| {
            project(&run(&x, ww).0, &r)
        });
    }

    #[test]
    fn normalises_to_unit_rms() {
        let x: Vec<f32> = (0..64).map(|i| i as f32 - 20.0).collect();
        let (mut o, mut rs) = (vec![0f32; 64], vec![0f32; 2]);
        forward(&mut o, &mut rs, &x, &[1.0; 32], 32, 0.0);
        for row in o.chunks(32) {
            let ms: f32 = row.iter().map(|v| v * v).sum::<f32>() / 32.0;
            assert!((ms - 1.0).abs() < 1e-5);
        }
    }
}
