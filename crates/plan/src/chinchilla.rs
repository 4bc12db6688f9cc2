//! Compute-optimal model size and data (Hoffmann et al. 2022, "Training Compute-Optimal Large
//! Language Models").
//!
//! Training compute is approximated as `C ≈ 6·N·D` FLOPs for `N` parameters and `D` tokens.
//! Two answers to "which (N, D) minimise loss for a given C?" are given:
//!
//! * **The rule of thumb** `D = r·N` with `r ≈ 20` tokens per parameter, which is what the
//!   paper's Approaches 1 and 2 (training-curve envelopes and IsoFLOP profiles, both
//!   `N_opt ∝ C^0.50`) amount to and what chose Chinchilla (70B parameters, 1.4T tokens). Then
//!   `C = 6·r·N²`, so `N = √(C / 6r)` and `D = r·N`.
//! * **The parametric fit** of Approach 3, `L(N, D) = E + A/N^α + B/D^β` with the published
//!   constants E = 1.69, A = 406.4, B = 410.7, α = 0.34, β = 0.28. Substituting
//!   `D = C/(6N)` and setting `dL/dN = 0` gives `αA/N^α = βB/D^β`, whose solution is
//!   `N_opt = G·(C/6)^(β/(α+β))`, `D_opt = (C/6)/N_opt`, with `G = (αA / (βB))^(1/(α+β))`.
//!
//! With those rounded constants the exponent is β/(α+β) ≈ 0.45 rather than 0.50, so the fit
//! favours smaller models on more tokens (≈32B on ≈3T tokens at Chinchilla's 5.76e23 FLOPs).
//! The fit also supplies the predicted losses shown for every point.

use serde::{Deserialize, Serialize};

/// Irreducible loss E of the Approach 3 fit (nats per token).
pub const E: f64 = 1.69;
/// Parameter-term coefficient A.
pub const A: f64 = 406.4;
/// Data-term coefficient B.
pub const B: f64 = 410.7;
/// Parameter exponent α.
pub const ALPHA: f64 = 0.34;
/// Data exponent β.
pub const BETA: f64 = 0.28;
/// The rule-of-thumb tokens per parameter.
pub const RULE_TOKENS_PER_PARAM: f64 = 20.0;

/// Predicted loss `L(N, D) = E + A/N^α + B/D^β`.
pub fn loss(n: f64, d: f64) -> f64 {
    E + A / n.powf(ALPHA) + B / d.powf(BETA)
}

/// The constant `G = (αA / (βB))^(1/(α+β))` of the closed-form optimum.
pub fn g() -> f64 {
    (ALPHA * A / (BETA * B)).powf(1.0 / (ALPHA + BETA))
}

/// `(N_opt, D_opt)` minimising the parametric loss at compute `c` under `C = 6ND`.
pub fn parametric_optimum(c: f64) -> (f64, f64) {
    let n = g() * (c / 6.0).powf(BETA / (ALPHA + BETA));
    (n, c / (6.0 * n))
}

/// `(N, D)` with `D = r·N` and `6·N·D = c`.
pub fn rule_optimum(c: f64, tokens_per_param: f64) -> (f64, f64) {
    let n = (c / (6.0 * tokens_per_param)).sqrt();
    (n, tokens_per_param * n)
}

/// The token count for which `n` parameters is the parametric optimum: inverting
/// `N = G·(N·D)^(β/(α+β))` gives `D = (N/G)^((α+β)/β) / N`.
pub fn parametric_tokens_for(n: f64) -> f64 {
    (n / g()).powf((ALPHA + BETA) / BETA) / n
}

/// A model size and token count with its predicted loss.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub params: f64,
    pub tokens: f64,
    pub tokens_per_param: f64,
    /// `L(N, D)` of the parametric fit, nats per token.
    pub predicted_loss: f64,
}

impl Point {
    pub fn new(params: f64, tokens: f64) -> Self {
        Point {
            params,
            tokens,
            tokens_per_param: tokens / params,
            predicted_loss: loss(params, tokens),
        }
    }
}

/// The user's own run against the optima.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunComparison {
    pub point: Point,
    /// `6·N·D` of the run.
    pub compute_6nd: f64,
    /// Its predicted loss minus the parametric optimum's at the same compute.
    pub excess_loss: f64,
    /// Tokens the rule recommends for this many parameters (`r·N`).
    pub rule_tokens_for_params: f64,
    /// Tokens for which this size is the parametric optimum.
    pub parametric_tokens_for_params: f64,
    /// `D / (r·N)`: how many times the rule's token count the run trains on.
    pub times_rule_tokens: f64,
}

/// The fit's constants, carried in the JSON so a reader knows what produced the numbers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fit {
    pub e: f64,
    pub a: f64,
    pub b: f64,
    pub alpha: f64,
    pub beta: f64,
    /// `β/(α+β)`, the exponent of `N_opt ∝ C^a`.
    pub params_exponent: f64,
    pub g: f64,
}

/// The Chinchilla section of a plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Chinchilla {
    /// The compute the optima are for, FLOPs.
    pub compute: f64,
    pub tokens_per_param_rule: f64,
    /// `D = r·N` at this compute.
    pub rule: Point,
    /// The minimum of the parametric fit at this compute.
    pub parametric: Point,
    pub run: Option<RunComparison>,
    pub fit: Fit,
    pub why_they_differ: String,
}

/// Builds the section for compute `c`, a rule ratio `r` and optionally the user's `(N, D)`.
pub fn analyse(c: f64, r: f64, run: Option<(f64, f64)>) -> Chinchilla {
    let (rn, rd) = rule_optimum(c, r);
    let (pn, pd) = parametric_optimum(c);
    let parametric = Point::new(pn, pd);
    let run = run.map(|(n, d)| {
        let point = Point::new(n, d);
        let (on, od) = parametric_optimum(6.0 * n * d);
        let opt_same_compute = loss(on, od);
        RunComparison {
            excess_loss: point.predicted_loss - opt_same_compute,
            compute_6nd: 6.0 * n * d,
            rule_tokens_for_params: r * n,
            parametric_tokens_for_params: parametric_tokens_for(n),
            times_rule_tokens: d / (r * n),
            point,
        }
    });
    let why = format!(
        "Why the two differ: ~20 tokens per parameter is what Hoffmann et al.'s Approaches 1 and \
         2 (training-curve envelopes, IsoFLOP profiles; N_opt ∝ C^0.50) amount to, and it chose \
         Chinchilla: 70B parameters on 1.4T tokens (the rule here uses {r} tokens per \
         parameter). The parametric fit is their Approach 3; with its published, rounded \
         constants (E {E}, A {A}, B {B}, α {ALPHA}, β {BETA}) the optimum grows as N_opt ∝ \
         C^{:.3} and lands on a smaller model trained longer ({:.0} tokens per parameter at this \
         compute); the paper's own Table 2 already gives Approach 3 a smaller exponent (0.46) \
         than Approaches 1 and 2 (0.50, 0.49). A 2024 replication (Besiroglu et al., Epoch AI) \
         found that those constants are rounded, come from a fit that stopped before converging \
         and fit the paper's data poorly; their re-fit agrees with Approaches 1 and 2. Size with \
         the rule; read the fit's losses as rough, relative guidance.",
        BETA / (ALPHA + BETA),
        parametric.tokens_per_param,
    );
    Chinchilla {
        compute: c,
        tokens_per_param_rule: r,
        rule: Point::new(rn, rd),
        parametric,
        run,
        fit: Fit {
            e: E,
            a: A,
            b: B,
            alpha: ALPHA,
            beta: BETA,
            params_exponent: BETA / (ALPHA + BETA),
            g: g(),
        },
        why_they_differ: why,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optimum_is_a_stationary_point_and_a_minimum() {
        for c in [1e18, 1e21, 5.76e23, 1e26] {
            let (n, d) = parametric_optimum(c);
            assert!((6.0 * n * d / c - 1.0).abs() < 1e-12);
            let l = |n: f64| loss(n, c / (6.0 * n));
            assert!(l(n) < l(n * 1.01) && l(n) < l(n / 1.01), "c {c}");
            // The first-order condition αA/N^α = βB/D^β.
            let lhs = ALPHA * A / n.powf(ALPHA);
            let rhs = BETA * B / d.powf(BETA);
            assert!((lhs / rhs - 1.0).abs() < 1e-9);
        }
    }

    #[test]
    fn tokens_for_params_inverts_the_optimum() {
        let (n, d) = parametric_optimum(3.3e21);
        assert!((parametric_tokens_for(n) / d - 1.0).abs() < 1e-9);
    }

    #[test]
    fn run_at_the_optimum_has_no_excess() {
        let c = 1e22;
        let (n, d) = parametric_optimum(c);
        let s = analyse(c, 20.0, Some((n, d)));
        assert!(s.run.unwrap().excess_loss.abs() < 1e-12);
        let s = analyse(c, 20.0, Some((n / 10.0, d * 10.0)));
        assert!(s.run.unwrap().excess_loss > 0.0);
    }
}
