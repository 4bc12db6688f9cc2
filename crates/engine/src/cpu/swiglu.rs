//! SwiGLU: `h = silu(g) · u` with `silu(g) = g·σ(g)`; g and u are the gate and up projections.
//! The loops live in [`Real::silu_mul`] / [`Real::silu_mul_bwd`] so f32 gets a SIMD build.

use crate::real::Real;
use rayon::prelude::*;

const BLOCK: usize = 4096;

pub fn forward<T: Real>(h: &mut [T], g: &[T], u: &[T]) {
    h.par_chunks_mut(BLOCK)
        .zip(g.par_chunks(BLOCK))
        .zip(u.par_chunks(BLOCK))
        .for_each(|((h, g), u)| T::silu_mul(h, g, u));
}

/// dg = dh·u·σ(g)(1 + g(1 − σ(g))), du = dh·silu(g).
pub fn backward<T: Real>(dg: &mut [T], du: &mut [T], dh: &[T], g: &[T], u: &[T]) {
    dg.par_chunks_mut(BLOCK)
        .zip(du.par_chunks_mut(BLOCK))
        .zip(
            dh.par_chunks(BLOCK)
                .zip(g.par_chunks(BLOCK))
                .zip(u.par_chunks(BLOCK)),
        )
        .for_each(|((dg, du), ((dh, g), u))| T::silu_mul_bwd(dg, du, dh, g, u));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::gradcheck::{check, project, rand_vec};

    #[test]
    fn gradients_match_finite_differences() {
        let n = 37;
        let g: Vec<f64> = rand_vec(n, 6).iter().map(|v| v * 4.0).collect();
        let mut u = rand_vec(n, 7);
        let r = rand_vec(n, 8);
        let (mut dg, mut du) = (vec![0.0; n], vec![0.0; n]);
        backward(&mut dg, &mut du, &r, &g, &u);
        let run = |g: &[f64], u: &[f64]| {
            let mut h = vec![0.0; n];
            forward(&mut h, g, u);
            project(&h, &r)
        };
        let u0 = u.clone();
        check("swiglu dg", &mut g.clone(), &dg, 100, |gg| run(gg, &u0));
        check("swiglu du", &mut u, &du, 100, |uu| run(&g, uu));
    }
}
