//! Choosing the next token from logits: greedy, or temperature with top-k / top-p / min-p
//! filtering and a repetition penalty, all driven by a seedable RNG.

use tinyllama_model::rng::Rng;

#[derive(Clone, Debug)]
pub struct SamplingParams {
    /// 0 means greedy (argmax).
    pub temperature: f32,
    /// Keep only the k most likely tokens (0 = off).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches p (1 = off).
    pub top_p: f32,
    /// Drop tokens whose probability is below min_p times the top token's (0 = off).
    pub min_p: f32,
    /// Divide positive logits (multiply negative ones) of already seen tokens by this (1 = off),
    /// as in the CTRL paper and transformers.
    pub repetition_penalty: f32,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.8,
            top_k: 0,
            top_p: 0.95,
            min_p: 0.0,
            repetition_penalty: 1.0,
        }
    }
}

impl SamplingParams {
    pub fn greedy() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
        }
    }
}

pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// The probability distribution sampling draws from (after penalty, temperature and filters),
/// as (token, probability) pairs; greedy gives a single pair. Speculative decoding needs the
/// distribution itself, not just a draw.
pub fn distribution(logits: &[f32], p: &SamplingParams, history: &[u32]) -> Vec<(u32, f32)> {
    let mut l = logits.to_vec();
    if p.repetition_penalty != 1.0 {
        for &t in history {
            let v = &mut l[t as usize];
            *v = if *v > 0.0 {
                *v / p.repetition_penalty
            } else {
                *v * p.repetition_penalty
            };
        }
    }
    if p.temperature <= 0.0 {
        return vec![(argmax(&l), 1.0)];
    }
    let mut idx: Vec<(u32, f32)> = l
        .iter()
        .enumerate()
        .map(|(i, &v)| (i as u32, v / p.temperature))
        .collect();
    // Stable sort by descending logit, ties by id, so sampling is reproducible.
    idx.sort_by(|a, b| {
        b.1.partial_cmp(&a.1)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.0.cmp(&b.0))
    });
    if p.top_k > 0 && p.top_k < idx.len() {
        idx.truncate(p.top_k);
    }
    let m = idx[0].1;
    let mut probs: Vec<(u32, f32)> = idx
        .iter()
        .map(|&(t, v)| (t, ((v - m) as f64).exp() as f32))
        .collect();
    let z: f32 = probs.iter().map(|x| x.1).sum();
    probs.iter_mut().for_each(|x| x.1 /= z);
    if p.min_p > 0.0 {
        let floor = probs[0].1 * p.min_p;
        probs.retain(|x| x.1 >= floor);
    }
    if p.top_p < 1.0 {
        let mut acc = 0.0;
        let mut keep = probs.len();
        for (i, x) in probs.iter().enumerate() {
            acc += x.1;
            if acc >= p.top_p {
                keep = i + 1;
                break;
            }
        }
        probs.truncate(keep);
    }
    let z: f32 = probs.iter().map(|x| x.1).sum();
    probs.iter_mut().for_each(|x| x.1 /= z);
    probs
}

/// Draws one token from a distribution.
pub fn draw(dist: &[(u32, f32)], rng: &mut Rng) -> u32 {
    let r = rng.next_f64() as f32;
    let mut acc = 0.0;
    for &(t, p) in dist {
        acc += p;
        if r < acc {
            return t;
        }
    }
    dist.last().map(|x| x.0).unwrap_or(0)
}

pub fn sample(logits: &[f32], p: &SamplingParams, history: &[u32], rng: &mut Rng) -> u32 {
    draw(&distribution(logits, p, history), rng)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_top_k_top_p_and_min_p() {
        let logits = [1.0, 3.0, 2.0, -1.0];
        assert_eq!(
            sample(&logits, &SamplingParams::greedy(), &[], &mut Rng::new(0)),
            1
        );
        let p = SamplingParams {
            temperature: 1.0,
            top_k: 2,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
        };
        let d = distribution(&logits, &p, &[]);
        assert_eq!(d.iter().map(|x| x.0).collect::<Vec<_>>(), vec![1, 2]);
        let p = SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 0.5,
            min_p: 0.0,
            repetition_penalty: 1.0,
        };
        assert_eq!(distribution(&logits, &p, &[]).len(), 1);
        let p = SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.3,
            repetition_penalty: 1.0,
        };
        assert_eq!(distribution(&logits, &p, &[]).len(), 2);
        // Sampling frequencies follow the distribution.
        let p = SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
        };
        let mut rng = Rng::new(1);
        let n = 20000;
        let ones = (0..n)
            .filter(|_| sample(&logits, &p, &[], &mut rng) == 1)
            .count() as f64
            / n as f64;
        let want = (3f64).exp()
            / [1.0f64, 3.0, 2.0, -1.0]
                .iter()
                .map(|x| x.exp())
                .sum::<f64>();
        assert!((ones - want).abs() < 0.015, "{ones} vs {want}");
    }

    #[test]
    fn repetition_penalty_demotes_seen_tokens() {
        let logits = [2.0, 1.9];
        let p = SamplingParams {
            temperature: 0.0,
            repetition_penalty: 1.5,
            ..SamplingParams::greedy()
        };
        assert_eq!(sample(&logits, &p, &[0], &mut Rng::new(0)), 1);
    }
}
