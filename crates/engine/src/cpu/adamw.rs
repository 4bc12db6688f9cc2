//! AdamW exactly as `torch.optim.AdamW` (non-fused, non-amsgrad) computes it, so a run can be
//! compared step by step with PyTorch.

use crate::real::Real;
use rayon::prelude::*;

const BLOCK: usize = 8192;

#[allow(clippy::too_many_arguments)]
pub fn step<T: Real>(
    p: &mut [T],
    g: &[T],
    m: &mut [T],
    v: &mut [T],
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    wd: f64,
    step: u64,
    grad_scale: f64,
) {
    assert!(step >= 1 && p.len() == g.len() && p.len() == m.len() && p.len() == v.len());
    let bc1 = 1.0 - beta1.powi(step as i32);
    let bc2_sqrt = (1.0 - beta2.powi(step as i32)).sqrt();
    let (decay, step_size) = (T::from_f64(1.0 - lr * wd), T::from_f64(lr / bc1));
    let (b1, b2, one_b1, one_b2) = (
        T::from_f64(beta1),
        T::from_f64(beta2),
        T::from_f64(1.0 - beta1),
        T::from_f64(1.0 - beta2),
    );
    let (inv_bc2, eps, gs) = (
        T::from_f64(1.0 / bc2_sqrt),
        T::from_f64(eps),
        T::from_f64(grad_scale),
    );
    p.par_chunks_mut(BLOCK)
        .zip(m.par_chunks_mut(BLOCK))
        .zip(v.par_chunks_mut(BLOCK).zip(g.par_chunks(BLOCK)))
        .for_each(|((p, m), (v, g))| {
            for i in 0..p.len() {
                let gi = g[i] * gs;
                p[i] *= decay;
                m[i] = b1 * m[i] + one_b1 * gi;
                v[i] = b2 * v[i] + one_b2 * gi * gi;
                p[i] -= step_size * m[i] / (v[i].sqrt() * inv_bc2 + eps);
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn first_step_moves_each_weight_by_about_lr() {
        let (mut p, mut m, mut v) = (vec![1.0f64, -2.0], vec![0.0; 2], vec![0.0; 2]);
        step(
            &mut p,
            &[0.5, -3.0],
            &mut m,
            &mut v,
            0.1,
            0.9,
            0.95,
            1e-8,
            0.0,
            1,
            1.0,
        );
        // With bias correction the first update is lr·sign(g).
        assert!(
            (p[0] - 0.9).abs() < 1e-6 && (p[1] + 1.9).abs() < 1e-6,
            "{p:?}"
        );
        // Decoupled weight decay shrinks weights with zero gradient.
        let (mut p, mut m, mut v) = (vec![1.0f64], vec![0.0], vec![0.0]);
        step(
            &mut p,
            &[0.0],
            &mut m,
            &mut v,
            0.1,
            0.9,
            0.95,
            1e-8,
            0.5,
            1,
            1.0,
        );
        assert!((p[0] - 0.95).abs() < 1e-12);
    }
}
