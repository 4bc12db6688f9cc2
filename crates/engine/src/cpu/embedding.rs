//! Token embedding: a row gather forward, a scatter-add backward.

use crate::real::Real;
use rayon::prelude::*;

pub fn forward<T: Real>(out: &mut [T], table: &[T], ids: &[i32], dim: usize) {
    out[..ids.len() * dim]
        .par_chunks_mut(dim)
        .zip(ids.par_iter())
        .with_min_len(64)
        .for_each(|(o, &id)| {
            let id = id as usize;
            o.copy_from_slice(&table[id * dim..(id + 1) * dim]);
        });
}

/// Sequential on purpose: rows sharing a token id add into the same gradient row, and a fixed
/// order keeps the result bit-reproducible. It is a few hundred thousand additions a step.
pub fn backward<T: Real>(dtable: &mut [T], dout: &[T], ids: &[i32], dim: usize) {
    for (r, &id) in ids.iter().enumerate() {
        let id = id as usize;
        let (d, s) = (
            &mut dtable[id * dim..(id + 1) * dim],
            &dout[r * dim..(r + 1) * dim],
        );
        for i in 0..dim {
            d[i] += s[i];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::gradcheck::{check, project, rand_vec};

    #[test]
    fn gradients_match_finite_differences() {
        let (vocab, dim) = (7, 4);
        let ids = [3, 1, 3, 6, 0];
        let mut table = rand_vec(vocab * dim, 9);
        let r = rand_vec(ids.len() * dim, 10);
        let mut dt = vec![0.0; vocab * dim];
        backward(&mut dt, &r, &ids, dim);
        check("embedding dtable", &mut table, &dt, 100, |t| {
            let mut o = vec![0.0; ids.len() * dim];
            forward(&mut o, t, &ids, dim);
            project(&o, &r)
        });
    }
}
