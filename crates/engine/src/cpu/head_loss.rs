//! The LM head fused with softmax cross-entropy. Logits are produced a chunk of rows at a
//! time into a scratch buffer, turned into losses and (when training) into the logit gradient
//! `softmax − onehot` in place, which is then multiplied back through the head at once — so the
//! full `[rows, vocab]` logits never exist (for a 32K vocabulary they would dwarf everything
//! else in memory).

use super::gemm::{Product, View};
use crate::real::Real;
use rayon::prelude::*;

/// Logit elements kept in flight per chunk (32 MiB of f32).
pub const CHUNK_ELEMS: usize = 8 << 20;

pub fn chunk_rows(vocab: usize) -> usize {
    (CHUNK_ELEMS / vocab).max(1)
}

/// See [`crate::backend::Backend::lm_head_loss`].
#[allow(clippy::too_many_arguments)]
#[allow(clippy::type_complexity)]
pub fn forward_backward<T: Real>(
    losses: &mut [T],
    x: &[T],
    w: &[T],
    targets: &[i32],
    vocab: usize,
    dim: usize,
    scratch: &mut [T],
    mut grad: Option<(&mut [T], Option<&mut [T]>, T)>,
    mm: Product<T>,
) {
    let rows = targets.len();
    assert!(x.len() >= rows * dim && w.len() == vocab * dim && losses.len() >= rows);
    let chunk = (scratch.len() / vocab).min(rows).max(1);
    assert!(
        scratch.len() >= chunk * vocab,
        "lm_head_loss: scratch too small"
    );
    for r0 in (0..rows).step_by(chunk) {
        let cr = chunk.min(rows - r0);
        let logits = &mut scratch[..cr * vocab];
        let xv = View {
            data: x,
            off: r0 * dim,
            rs: dim,
            cs: 1,
        };
        mm(
            cr,
            vocab,
            dim,
            logits,
            0,
            vocab,
            xv,
            View::transposed(w, dim),
            false,
        );
        let gscale = grad.as_ref().map(|g| g.2);
        logits
            .par_chunks_mut(vocab)
            .zip(losses[r0..r0 + cr].par_iter_mut())
            .zip(targets[r0..r0 + cr].par_iter())
            .for_each(|((row, loss), &t)| {
                if t < 0 {
                    *loss = T::ZERO;
                    row.fill(T::ZERO);
                    return;
                }
                let t = t as usize;
                let m = row.iter().fold(T::NEG_INFINITY, |a, &v| a.max(v));
                let zt = row[t];
                let sum = T::exp_shifted_sum(row, m);
                *loss = m + sum.ln() - zt;
                if let Some(scale) = gscale {
                    let inv = scale / sum;
                    row.iter_mut().for_each(|p| *p *= inv);
                    row[t] -= scale;
                }
            });
        if let Some((dx, dw, _)) = grad.as_mut() {
            // dx = dlogits·W ; dW += dlogitsᵀ·x
            let dl = View::row_major(logits, vocab);
            mm(
                cr,
                dim,
                vocab,
                dx,
                r0 * dim,
                dim,
                dl,
                View::row_major(w, dim),
                false,
            );
            if let Some(dw) = dw.as_mut() {
                let dlt = View::transposed(logits, vocab);
                mm(vocab, dim, cr, dw, 0, dim, dlt, xv, true);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::gemm::plain;
    use crate::cpu::gradcheck::{check, rand_vec};

    #[test]
    fn gradients_match_finite_differences_across_chunks() {
        let (rows, dim, vocab) = (7, 5, 11);
        let targets = [3, -100, 0, 10, 4, -1, 7];
        let x: Vec<f64> = rand_vec(rows * dim, 11).iter().map(|v| v * 3.0).collect();
        let mut w = rand_vec(vocab * dim, 12);
        let scale = 0.37;
        // A scratch of 3 rows forces several chunks, including a short last one.
        let total = |x: &[f64], w: &[f64]| {
            let mut l = vec![0.0; rows];
            forward_backward(
                &mut l,
                x,
                w,
                &targets,
                vocab,
                dim,
                &mut vec![0.0; 3 * vocab],
                None,
                &plain,
            );
            assert_eq!(l[1], 0.0);
            scale * l.iter().sum::<f64>()
        };
        let (mut dx, mut dw) = (vec![9.0; rows * dim], vec![0.0; vocab * dim]);
        let mut l = vec![0.0; rows];
        forward_backward(
            &mut l,
            &x,
            &w,
            &targets,
            vocab,
            dim,
            &mut vec![0.0; 3 * vocab],
            Some((&mut dx, Some(&mut dw), scale)),
            &plain,
        );
        assert!(
            dx[dim..2 * dim].iter().all(|&g| g == 0.0),
            "ignored rows get zero gradient"
        );
        let w0 = w.clone();
        check("head dx", &mut x.clone(), &dx, 1000, |xx| total(xx, &w0));
        check("head dw", &mut w, &dw, 1000, |ww| total(&x, ww));
    }

    #[test]
    fn frozen_head_gives_the_same_dx_without_dw() {
        let (rows, dim, vocab) = (5, 4, 9);
        let targets = [1, -100, 8, 0, 3];
        let x: Vec<f64> = rand_vec(rows * dim, 21);
        let w = rand_vec(vocab * dim, 22);
        let run = |with_dw: bool| {
            let (mut dx, mut dw, mut l) = (
                vec![0.0; rows * dim],
                vec![0.0; vocab * dim],
                vec![0.0; rows],
            );
            let dw_arg = if with_dw {
                Some(dw.as_mut_slice())
            } else {
                None
            };
            forward_backward(
                &mut l,
                &x,
                &w,
                &targets,
                vocab,
                dim,
                &mut vec![0.0; 2 * vocab],
                Some((&mut dx, dw_arg, 0.5)),
                &plain,
            );
            (l, dx, dw)
        };
        let (l1, dx1, dw1) = run(true);
        let (l2, dx2, dw2) = run(false);
        assert_eq!((l1, dx1), (l2, dx2));
        assert!(dw1.iter().any(|&g| g != 0.0) && dw2.iter().all(|&g| g == 0.0));
    }

    #[test]
    fn loss_is_log_vocab_for_uniform_logits() {
        let (dim, vocab) = (4, 50);
        let mut l = vec![0f32; 2];
        forward_backward(
            &mut l,
            &[0f32; 8],
            &vec![0.1f32; vocab * dim],
            &[5, 49],
            vocab,
            dim,
            &mut vec![0f32; 100],
            None,
            &plain,
        );
        assert!((l[0] - (vocab as f32).ln()).abs() < 1e-5);
    }
}
