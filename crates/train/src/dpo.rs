//! Direct Preference Optimization (Rafailov et al., 2023), the sigmoid loss:
//!
//! ```text
//! z = β · ((log π(y_c|x) − log π_ref(y_c|x)) − (log π(y_r|x) − log π_ref(y_r|x)))
//! L = −log σ(z)   averaged over the pairs of the step (all micro-batches, all ranks)
//! ```
//!
//! `log π(y|x)` is the summed log-probability of the reply's tokens (the row's targets). The
//! reference log-probabilities come from the starting model, computed once before the first
//! step and cached in the run directory, so resume never needs the starting weights again.
//!
//! **Gradient without autograd.** `∂L/∂(Σ cross-entropy of the chosen reply) = β·σ(−z)/N` and
//! the rejected reply's is its negative, so a pair's gradient is two weighted ordinary
//! cross-entropy backward passes. The weight needs `z`, hence the policy's log-probabilities
//! first: each row is run forward once for them and once more with its backward pass (a
//! third more compute than one pass; it works on every backend with no new kernel, and the
//! rows of a pair see the same dropout masks in both passes).

use crate::rows::PairRows;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use tinyllama_dist::{Collective, ReduceOp};
use tinyllama_engine::{Activations, Backend, Llama};
use tinyllama_model::atomic::write_atomic;

/// Sums over pairs, reduced over ranks and divided by the pair count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DpoStats {
    pub loss: f64,
    /// Mean `β·(log π − log π_ref)` of the chosen replies (TRL's `rewards/chosen`).
    pub chosen_reward: f64,
    pub rejected_reward: f64,
    /// Mean `z`: chosen minus rejected reward.
    pub margin: f64,
    /// Fraction of pairs with `z > 0`.
    pub accuracy: f64,
    pub pairs: f64,
}

impl DpoStats {
    fn add_pair(&mut self, beta: f64, pol: (f64, f64), refs: (f64, f64)) -> f64 {
        let rc = beta * (pol.0 - refs.0);
        let rr = beta * (pol.1 - refs.1);
        let z = rc - rr;
        self.loss += softplus(-z);
        self.chosen_reward += rc;
        self.rejected_reward += rr;
        self.margin += z;
        self.accuracy += (z > 0.0) as u8 as f64;
        self.pairs += 1.0;
        z
    }

    /// Sums over this rank's pairs → means over every rank's.
    fn reduce(mut self, coll: &dyn Collective) -> Result<Self> {
        let mut v = [
            self.loss,
            self.chosen_reward,
            self.rejected_reward,
            self.margin,
            self.accuracy,
            self.pairs,
        ];
        coll.all_reduce_f64(&mut v, ReduceOp::Sum)?;
        let n = v[5].max(1.0);
        self = DpoStats {
            loss: v[0] / n,
            chosen_reward: v[1] / n,
            rejected_reward: v[2] / n,
            margin: v[3] / n,
            accuracy: v[4] / n,
            pairs: v[5],
        };
        Ok(self)
    }
}

/// `log(1 + e^x)` without overflow.
pub fn softplus(x: f64) -> f64 {
    if x > 0.0 {
        x + (-x).exp().ln_1p()
    } else {
        x.exp().ln_1p()
    }
}

/// `1 / (1 + e^−x)`.
pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// Summed log-probability of a row's targets (one sequence, `acts` of batch 1).
pub fn row_logp<B: Backend>(
    model: &Llama<B>,
    acts: &mut Activations<B>,
    inputs: &[u32],
    targets: &[i32],
) -> Result<f64> {
    let l = model.forward_losses(acts, inputs, targets)?;
    Ok(-l.iter().map(|&x| x as f64).sum::<f64>())
}

/// Log-probabilities `(chosen, rejected)` of every pair under `model`: rank `r` computes pairs
/// `r, r + world, …` and the ranks exchange them, so every rank gets the whole list.
pub fn pair_logps<B: Backend>(
    model: &Llama<B>,
    acts: &mut Activations<B>,
    pairs: &[PairRows],
    coll: &dyn Collective,
) -> Result<Vec<(f64, f64)>> {
    let (rank, world) = (coll.rank(), coll.world());
    let mut out = vec![0.0f64; 2 * pairs.len()];
    for i in (rank..pairs.len()).step_by(world) {
        let p = &pairs[i];
        out[2 * i] = row_logp(model, acts, &p.chosen.inputs, &p.chosen.targets)
            .with_context(|| format!("preference pair {i}, chosen reply"))?;
        out[2 * i + 1] = row_logp(model, acts, &p.rejected.inputs, &p.rejected.targets)
            .with_context(|| format!("preference pair {i}, rejected reply"))?;
    }
    // Each position was written by exactly one rank and is zero elsewhere: a sum gathers them.
    coll.all_reduce_f64(&mut out, ReduceOp::Sum)?;
    Ok(out.chunks(2).map(|c| (c[0], c[1])).collect())
}

/// One step's share of this rank: accumulates into `grads` the gradient of the mean DPO loss
/// over `global_pairs` pairs (this rank's `pairs` among them) and returns the step's
/// statistics over every rank. `refs[i]` are the reference log-probabilities of `pairs[i]`.
#[allow(clippy::too_many_arguments)]
pub fn accumulate_step<B: Backend>(
    model: &Llama<B>,
    acts: &mut Activations<B>,
    grads: &mut [B::Buf],
    pairs: &[&PairRows],
    refs: &[(f64, f64)],
    beta: f64,
    global_pairs: usize,
    coll: &dyn Collective,
) -> Result<DpoStats> {
    if global_pairs == 0 {
        bail!("a DPO step needs at least one preference pair");
    }
    let mut st = DpoStats::default();
    let n = global_pairs as f64;
    for (p, &r) in pairs.iter().zip(refs) {
        let pc = row_logp(model, acts, &p.chosen.inputs, &p.chosen.targets)?;
        let pr = row_logp(model, acts, &p.rejected.inputs, &p.rejected.targets)?;
        let z = st.add_pair(beta, (pc, pr), r);
        // ∂L/∂(Σ CE of a reply) = ±β·σ(−z)/N; forward_backward scales the *mean* CE's
        // gradient, so the weight is multiplied by the reply's target count.
        let w = beta * sigmoid(-z) / n;
        for (row, sign) in [(&p.chosen, 1.0), (&p.rejected, -1.0)] {
            let k = row.target_count() as f64;
            model.forward_backward(
                acts,
                grads,
                &row.inputs,
                &row.targets,
                (sign * w * k) as f32,
            )?;
        }
    }
    st.reduce(coll)
}

/// DPO statistics of `pairs` without gradients (validation).
pub fn evaluate<B: Backend>(
    model: &Llama<B>,
    acts: &mut Activations<B>,
    pairs: &[PairRows],
    refs: &[(f64, f64)],
    beta: f64,
    coll: &dyn Collective,
) -> Result<DpoStats> {
    let (rank, world) = (coll.rank(), coll.world());
    let mut st = DpoStats::default();
    for i in (rank..pairs.len()).step_by(world) {
        let p = &pairs[i];
        let pc = row_logp(model, acts, &p.chosen.inputs, &p.chosen.targets)?;
        let pr = row_logp(model, acts, &p.rejected.inputs, &p.rejected.targets)?;
        st.add_pair(beta, (pc, pr), refs[i]);
    }
    st.reduce(coll)
}

/// The cached reference log-probabilities of a run (`dpo-reference.json`), keyed by a hash of
/// the pairs so a cache made for other data is never used.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReferenceCache {
    pub data_hash: String,
    pub train: Vec<(f64, f64)>,
    pub val: Vec<(f64, f64)>,
}

pub const REFERENCE_FILE: &str = "dpo-reference.json";

/// xxh3-64 over every token and target of the pairs, in order.
pub fn pairs_hash(train: &[PairRows], val: &[PairRows]) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for (tag, set) in [(0u8, train), (1u8, val)] {
        h.update(&[tag]);
        h.update(&(set.len() as u64).to_le_bytes());
        for p in set {
            for row in [&p.chosen, &p.rejected] {
                h.update(&(row.inputs.len() as u64).to_le_bytes());
                for &t in &row.inputs {
                    h.update(&t.to_le_bytes());
                }
                for &t in &row.targets {
                    h.update(&t.to_le_bytes());
                }
            }
        }
    }
    format!("{:016x}", h.digest())
}

impl ReferenceCache {
    /// The cache in `run_dir` if it exists and was made for this data.
    pub fn load(run_dir: &Path, data_hash: &str) -> Result<Option<Self>> {
        let path = run_dir.join(REFERENCE_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let c: ReferenceCache = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is damaged; delete it to recompute the reference log-probabilities",
                path.display()
            )
        })?;
        if c.data_hash != data_hash {
            return Ok(None);
        }
        if c.train
            .iter()
            .chain(&c.val)
            .any(|(a, b)| !a.is_finite() || !b.is_finite())
        {
            bail!(
                "{} holds non-finite log-probabilities; delete it to recompute them",
                path.display()
            );
        }
        Ok(Some(c))
    }

    pub fn save(&self, run_dir: &Path) -> Result<()> {
        write_atomic(
            &run_dir.join(REFERENCE_FILE),
            serde_json::to_string(self)?.as_bytes(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softplus_and_sigmoid_are_stable() {
        assert!((softplus(0.0) - 2f64.ln()).abs() < 1e-15);
        assert_eq!(softplus(1000.0), 1000.0);
        assert!(softplus(-1000.0) >= 0.0 && softplus(-1000.0) < 1e-300);
        assert!((sigmoid(0.0) - 0.5).abs() < 1e-15);
        assert_eq!(sigmoid(-1000.0), 0.0);
        assert_eq!(sigmoid(1000.0), 1.0);
        for x in [-3.0, -0.1, 0.7, 5.0] {
            // d softplus(x)/dx = σ(x)
            let h = 1e-6;
            let fd = (softplus(x + h) - softplus(x - h)) / (2.0 * h);
            assert!((fd - sigmoid(x)).abs() < 1e-8);
        }
    }

    #[test]
    fn stats_follow_the_definitions() {
        let mut s = DpoStats::default();
        // Chosen gained 2 nats, rejected lost 1 nat: z = 0.1·(2 − (−1)) = 0.3.
        let z = s.add_pair(0.1, (-8.0, -12.0), (-10.0, -11.0));
        assert!((z - 0.3).abs() < 1e-12);
        assert!((s.loss - softplus(-0.3)).abs() < 1e-12);
        assert_eq!(s.accuracy, 1.0);
        assert!((s.chosen_reward - 0.2).abs() < 1e-12);
        assert!((s.rejected_reward + 0.1).abs() < 1e-12);
    }
}
