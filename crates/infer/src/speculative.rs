//! The acceptance rule of speculative sampling (Leviathan et al. 2023; Chen et al. 2023): a
//! token `x` drawn from the draft distribution `q` is kept with probability
//! `min(1, p(x)/q(x))`; otherwise a replacement is drawn from `norm(max(0, p − q))`. The result
//! is distributed exactly as `p`, whatever `q` is. With greedy decoding both distributions are
//! one-hot, so a draft token is kept exactly when it is the target's argmax and the
//! replacement is the target's argmax: the output equals the target's own greedy output.
//!
//! The stepping itself (k draft forward passes, one batched target pass verifying k + 1
//! positions, cache rollback) lives in [`crate::runner`].

use std::collections::HashMap;
use tinyllama_engine::sampling::draw;
use tinyllama_model::rng::Rng;

/// Probability of `t` in a sparse distribution.
pub fn prob(dist: &[(u32, f32)], t: u32) -> f32 {
    dist.iter().find(|x| x.0 == t).map(|x| x.1).unwrap_or(0.0)
}

/// Decides on draft token `x` (drawn from `q`) given the target distribution `p`:
/// `Ok(())` keeps it, `Err(t)` rejects it in favour of `t`.
pub fn accept(p: &[(u32, f32)], q: &[(u32, f32)], x: u32, rng: &mut Rng) -> Result<(), u32> {
    let (px, qx) = (prob(p, x), prob(q, x));
    let u = rng.next_f64() as f32;
    // qx > 0 because x was drawn from q; guard anyway.
    if qx > 0.0 && u < px / qx {
        return Ok(());
    }
    Err(residual_draw(p, q, rng))
}

/// Draws from `norm(max(0, p − q))`, or from `p` when that is (numerically) empty, which can
/// only happen when `p ≈ q`.
pub fn residual_draw(p: &[(u32, f32)], q: &[(u32, f32)], rng: &mut Rng) -> u32 {
    let qm: HashMap<u32, f32> = q.iter().copied().collect();
    let mut r: Vec<(u32, f32)> = p
        .iter()
        .map(|&(t, pt)| (t, (pt - qm.get(&t).copied().unwrap_or(0.0)).max(0.0)))
        .filter(|x| x.1 > 0.0)
        .collect();
    let z: f32 = r.iter().map(|x| x.1).sum();
    if z <= 1e-12 {
        return draw(p, rng);
    }
    r.iter_mut().for_each(|x| x.1 /= z);
    draw(&r, rng)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One speculative step of length 1 with fixed p and q: the emitted token's frequencies
    /// must follow p (a chi-squared test on a four-token vocabulary).
    #[test]
    fn acceptance_rule_preserves_the_target_distribution() {
        let p = vec![(0, 0.1), (1, 0.2), (2, 0.3), (3, 0.4)];
        let q = vec![(0, 0.4), (1, 0.3), (2, 0.2), (3, 0.1)];
        let mut rng = Rng::new(7);
        let n = 40_000;
        let mut counts = [0f64; 4];
        for _ in 0..n {
            let x = draw(&q, &mut rng);
            let t = match accept(&p, &q, x, &mut rng) {
                Ok(()) => x,
                Err(t) => t,
            };
            counts[t as usize] += 1.0;
        }
        let chi2: f64 = p
            .iter()
            .map(|&(t, pt)| {
                let e = pt as f64 * n as f64;
                (counts[t as usize] - e).powi(2) / e
            })
            .sum();
        // 3 degrees of freedom: P(chi2 > 16.27) = 0.001.
        assert!(chi2 < 16.27, "chi2 {chi2}, counts {counts:?}");
    }

    #[test]
    fn greedy_is_exact_match() {
        let mut rng = Rng::new(1);
        assert_eq!(accept(&[(5, 1.0)], &[(5, 1.0)], 5, &mut rng), Ok(()));
        assert_eq!(accept(&[(5, 1.0)], &[(3, 1.0)], 3, &mut rng), Err(5));
    }
}
