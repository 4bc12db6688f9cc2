//! Finite-difference gradient checking, used by every op's tests and the whole-model check.
//! Everything runs in f64, so central differences with h = 1e-6 agree with exact gradients to
//! about 1e-8 relative; a wrong backward is off by orders of magnitude more.

/// Deterministic pseudo-random values in [-1, 1) for test inputs.
pub fn rand_vec(n: usize, seed: u64) -> Vec<f64> {
    let mut r = tinyllama_model::rng::Rng::new(seed);
    (0..n).map(|_| r.next_f64() * 2.0 - 1.0).collect()
}

/// Compares `analytic` with central differences of `loss` with respect to `x`, probing every
/// element (or an evenly spaced subset of at most `max_probes`). Panics with the worst element.
pub fn check(
    name: &str,
    x: &mut [f64],
    analytic: &[f64],
    max_probes: usize,
    mut loss: impl FnMut(&[f64]) -> f64,
) {
    assert_eq!(x.len(), analytic.len(), "{name}: gradient length");
    let h = 1e-6;
    let step = (x.len() / max_probes.max(1)).max(1);
    let scale = analytic.iter().fold(0f64, |m, g| m.max(g.abs())).max(1e-3);
    let mut worst = (0.0, 0usize, 0.0, 0.0);
    for i in (0..x.len()).step_by(step) {
        let orig = x[i];
        x[i] = orig + h;
        let up = loss(x);
        x[i] = orig - h;
        let down = loss(x);
        x[i] = orig;
        let numeric = (up - down) / (2.0 * h);
        let err = (numeric - analytic[i]).abs() / scale;
        if err > worst.0 {
            worst = (err, i, numeric, analytic[i]);
        }
    }
    assert!(
        worst.0 < 1e-6,
        "{name}: gradient mismatch at {}: numeric {} vs analytic {} (error {:.2e} of max |g| {scale:.3e})",
        worst.1,
        worst.2,
        worst.3,
        worst.0
    );
}

/// Σ out·r: a scalar whose gradient with respect to `out` is `r`, used to test one op.
pub fn project(out: &[f64], r: &[f64]) -> f64 {
    out.iter().zip(r).map(|(a, b)| a * b).sum()
}
