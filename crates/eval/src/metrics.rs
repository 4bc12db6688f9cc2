//! Metrics as lm-evaluation-harness computes them, from per-choice log-likelihoods.
//!
//! - `acc`: the gold choice has the highest log-likelihood (`np.argmax`, first on ties).
//! - `acc_norm`: the same after dividing each log-likelihood by its choice's length in
//!   characters.
//! - standard error of a mean: the sample standard deviation over √n, i.e.
//!   `sqrt(p(1−p)/(n−1))` for a 0/1 metric (the harness's `mean_stderr`).
//! - LAMBADA `perplexity`: `exp(−mean log-likelihood of the last word)`, per passage; its
//!   standard error by the delta method, `ppl · stderr(log-likelihoods)` (the harness
//!   bootstraps instead, which agrees to within bootstrap noise).

use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Metric {
    pub name: &'static str,
    pub value: f64,
    /// `None` when undefined (fewer than two items).
    pub stderr: Option<f64>,
}

pub fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// Sample standard deviation over √n.
pub fn mean_stderr(xs: &[f64]) -> Option<f64> {
    let n = xs.len();
    if n < 2 {
        return None;
    }
    let m = mean(xs);
    let var = xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1) as f64;
    Some((var / n as f64).sqrt())
}

/// Index of the largest value, the first on ties.
pub fn argmax(xs: &[f64]) -> usize {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best
}

/// The prediction under `acc_norm`: log-likelihood per character.
pub fn argmax_norm(lls: &[f64], chars: &[usize]) -> usize {
    let per_char: Vec<f64> = lls.iter().zip(chars).map(|(&l, &c)| l / c as f64).collect();
    argmax(&per_char)
}

pub fn mean_metric(name: &'static str, xs: &[f64]) -> Metric {
    Metric {
        name,
        value: mean(xs),
        stderr: mean_stderr(xs),
    }
}

/// LAMBADA's perplexity over per-passage log-likelihoods.
pub fn perplexity(lls: &[f64]) -> Metric {
    let ppl = (-mean(lls)).exp();
    Metric {
        name: "perplexity",
        value: ppl,
        stderr: mean_stderr(lls).map(|s| ppl * s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_of_a_proportion_is_the_harness_formula() {
        let xs = [1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0];
        let p: f64 = 5.0 / 8.0;
        let want = (p * (1.0 - p) / 7.0).sqrt();
        assert!((mean_stderr(&xs).unwrap() - want).abs() < 1e-12);
        assert_eq!(mean_stderr(&[1.0]), None);
    }

    #[test]
    fn argmax_takes_the_first_tie_and_norm_divides_by_chars() {
        assert_eq!(argmax(&[-1.0, -0.5, -0.5]), 1);
        // -6 over 12 characters beats -4 over 4.
        assert_eq!(argmax_norm(&[-4.0, -6.0], &[4, 12]), 1);
        let p = perplexity(&[-1.0, -3.0]);
        assert!((p.value - 2f64.exp()).abs() < 1e-12);
    }
}
