//! Rotary position embedding, Hugging Face's rotate-half convention: within each head the
//! first and second halves form the (real, imaginary) pairs `(x[i], x[i + d/2])`, rotated by
//! `pos · θ^(-2i/d)`. The backward pass is the inverse rotation.

use crate::real::Real;
use rayon::prelude::*;

/// The `[max_pos, d/2]` cosine table followed by the sine table, computed the way transformers
/// computes it (inverse frequencies and angles rounded to f32, then cos/sin) so that logits
/// match to the last bits even in long contexts.
pub fn table(head_dim: usize, max_pos: usize, theta: f64) -> Vec<f32> {
    let half = head_dim / 2;
    let mut t = vec![0f32; 2 * max_pos * half];
    let (cos, sin) = t.split_at_mut(max_pos * half);
    for i in 0..half {
        let inv = (1.0 / theta.powf((2 * i) as f64 / head_dim as f64)) as f32;
        for p in 0..max_pos {
            let angle = (p as f32 * inv) as f64;
            cos[p * half + i] = angle.cos() as f32;
            sin[p * half + i] = angle.sin() as f32;
        }
    }
    t
}

#[allow(clippy::too_many_arguments)]
pub fn apply<T: Real>(
    x: &mut [T],
    table: &[T],
    n_heads: usize,
    head_dim: usize,
    seq_len: usize,
    pos0: usize,
    inverse: bool,
) {
    let half = head_dim / 2;
    let max_pos = table.len() / (2 * half);
    let (cos, sin) = table.split_at(max_pos * half);
    let width = n_heads * head_dim;
    x.par_chunks_mut(width)
        .enumerate()
        .with_min_len(8)
        .for_each(|(r, row)| {
            let pos = pos0 + r % seq_len;
            assert!(
                pos < max_pos,
                "rope: position {pos} beyond the table ({max_pos})"
            );
            let (c, s) = (
                &cos[pos * half..(pos + 1) * half],
                &sin[pos * half..(pos + 1) * half],
            );
            for head in row.chunks_mut(head_dim) {
                let (a, b) = head.split_at_mut(half);
                for i in 0..half {
                    let si = if inverse { -s[i] } else { s[i] };
                    let (x0, x1) = (a[i], b[i]);
                    a[i] = x0 * c[i] - x1 * si;
                    b[i] = x1 * c[i] + x0 * si;
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::gradcheck::{check, project, rand_vec};

    #[test]
    fn backward_is_the_exact_adjoint() {
        let (heads, hd, t, pos0) = (3, 8, 5, 2);
        let tab: Vec<f64> = table(hd, 16, 10000.0).iter().map(|v| *v as f64).collect();
        let mut x = rand_vec(2 * t * heads * hd, 4);
        let r = rand_vec(x.len(), 5);
        let mut dx = r.clone();
        apply(&mut dx, &tab, heads, hd, t, pos0, true);
        check("rope dx", &mut x, &dx, 1000, |xx| {
            let mut y = xx.to_vec();
            apply(&mut y, &tab, heads, hd, t, pos0, false);
            project(&y, &r)
        });
    }

    #[test]
    fn position_zero_is_identity_and_norm_is_kept() {
        let tab = table(8, 4, 10000.0);
        let mut x: Vec<f32> = (0..16).map(|i| i as f32).collect();
        let orig = x.clone();
        apply(&mut x, &tab, 1, 8, 2, 0, false);
        assert_eq!(&x[..8], &orig[..8]);
        let n = |v: &[f32]| v.iter().map(|a| a * a).sum::<f32>();
        assert!((n(&x[8..]) - n(&orig[8..])).abs() < 1e-3);
    }
}
