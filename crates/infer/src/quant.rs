//! Weight formats of the decoder and conversion from f32. Q8_0 and Q4_0 round exactly as
//! ggml defines them, so a GGUF export of our weights holds the same numbers llama.cpp would
//! compute, and per-block scales are f16 as there.
//!
//! - Q8_0: blocks of 32, `d = max|x| / 127`, `q = round(x / d)` in -127..=127.
//! - Q4_0: blocks of 32, `d = m / -8` where `m` is the value of largest magnitude,
//!   `q = min(15, trunc(x / d + 8.5))` in 0..=15 standing for `q - 8`.

use crate::kernels::QK;
use anyhow::{bail, Result};
use rayon::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightFormat {
    F32,
    Bf16,
    Q8_0,
    Q4_0,
}

impl WeightFormat {
    pub const ALL: [WeightFormat; 4] = [
        WeightFormat::F32,
        WeightFormat::Bf16,
        WeightFormat::Q8_0,
        WeightFormat::Q4_0,
    ];

    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "f32" | "none" => WeightFormat::F32,
            "bf16" => WeightFormat::Bf16,
            "q8_0" | "q8" | "int8" => WeightFormat::Q8_0,
            "q4_0" | "q4" | "int4" => WeightFormat::Q4_0,
            _ => bail!("unknown weight format `{s}`; use f32, bf16, q8_0 or q4_0"),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            WeightFormat::F32 => "f32",
            WeightFormat::Bf16 => "bf16",
            WeightFormat::Q8_0 => "q8_0",
            WeightFormat::Q4_0 => "q4_0",
        }
    }

    /// Storage per weight, scales included.
    pub fn bits_per_weight(self) -> f64 {
        match self {
            WeightFormat::F32 => 32.0,
            WeightFormat::Bf16 => 16.0,
            WeightFormat::Q8_0 => 8.5,
            WeightFormat::Q4_0 => 4.5,
        }
    }

    pub fn is_quantized(self) -> bool {
        matches!(self, WeightFormat::Q8_0 | WeightFormat::Q4_0)
    }
}

/// A `[rows, k]` weight matrix in one of the formats (row-major; for the block formats each
/// row is `k/32` blocks, values and scales in separate arrays).
#[derive(Clone, Debug)]
pub enum Weights {
    F32(Vec<f32>),
    /// f32 in the column panels of [`crate::kernels::panels`] (how linear layers keep f32
    /// weights): `[n, k]`, padded to whole panels.
    F32Panels {
        p: Vec<f32>,
        n: usize,
        k: usize,
    },
    Bf16(Vec<u16>),
    Q8_0 {
        qs: Vec<i8>,
        d: Vec<u16>,
    },
    Q4_0 {
        qs: Vec<u8>,
        d: Vec<u16>,
    },
}

impl Weights {
    pub fn format(&self) -> WeightFormat {
        match self {
            Weights::F32(_) | Weights::F32Panels { .. } => WeightFormat::F32,
            Weights::Bf16(_) => WeightFormat::Bf16,
            Weights::Q8_0 { .. } => WeightFormat::Q8_0,
            Weights::Q4_0 { .. } => WeightFormat::Q4_0,
        }
    }

    pub fn bytes(&self) -> usize {
        match self {
            Weights::F32(v) => 4 * v.len(),
            Weights::F32Panels { p, .. } => 4 * p.len(),
            Weights::Bf16(v) => 2 * v.len(),
            Weights::Q8_0 { qs, d } => qs.len() + 2 * d.len(),
            Weights::Q4_0 { qs, d } => qs.len() + 2 * d.len(),
        }
    }
}

fn f16_bits(x: f32) -> u16 {
    half::f16::from_f32(x).to_bits()
}

/// Rows processed per parallel task when converting.
const ROWS_PER_TASK: usize = 16;

pub fn quantize_q8_0(x: &[f32], rows: usize, k: usize) -> Weights {
    assert!(k.is_multiple_of(QK) && x.len() == rows * k);
    let nb = k / QK;
    let mut qs = vec![0i8; rows * k];
    let mut d = vec![0u16; rows * nb];
    qs.par_chunks_mut(k * ROWS_PER_TASK)
        .zip(d.par_chunks_mut(nb * ROWS_PER_TASK))
        .zip(x.par_chunks(k * ROWS_PER_TASK))
        .for_each(|((qs, d), x)| {
            for ((q, db), xb) in qs.chunks_mut(QK).zip(d.iter_mut()).zip(x.chunks(QK)) {
                let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
                let scale = amax / 127.0;
                let id = if scale != 0.0 { 1.0 / scale } else { 0.0 };
                for (qi, &v) in q.iter_mut().zip(xb) {
                    *qi = (v * id).round() as i8;
                }
                *db = f16_bits(scale);
            }
        });
    Weights::Q8_0 { qs, d }
}

pub fn quantize_q4_0(x: &[f32], rows: usize, k: usize) -> Weights {
    assert!(k.is_multiple_of(QK) && x.len() == rows * k);
    let nb = k / QK;
    let mut qs = vec![0u8; rows * k / 2];
    let mut d = vec![0u16; rows * nb];
    qs.par_chunks_mut(k / 2 * ROWS_PER_TASK)
        .zip(d.par_chunks_mut(nb * ROWS_PER_TASK))
        .zip(x.par_chunks(k * ROWS_PER_TASK))
        .for_each(|((qs, d), x)| {
            for ((q, db), xb) in qs.chunks_mut(QK / 2).zip(d.iter_mut()).zip(x.chunks(QK)) {
                // The signed value of largest magnitude (the first one on ties) maps to -8.
                let mut amax = 0f32;
                let mut max = 0f32;
                for &v in xb {
                    if v.abs() > amax {
                        amax = v.abs();
                        max = v;
                    }
                }
                let scale = max / -8.0;
                let id = if scale != 0.0 { 1.0 / scale } else { 0.0 };
                let code = |v: f32| ((v * id + 8.5) as i8).min(15) as u8;
                for t in 0..QK / 2 {
                    q[t] = code(xb[t]) | (code(xb[t + QK / 2]) << 4);
                }
                *db = f16_bits(scale);
            }
        });
    Weights::Q4_0 { qs, d }
}

pub fn to_bf16(x: &[f32]) -> Weights {
    Weights::Bf16(
        x.par_iter()
            .with_min_len(4096)
            .map(|&v| half::bf16::from_f32(v).to_bits())
            .collect(),
    )
}

/// Converts a `[rows, k]` f32 matrix. Block formats need `k` to be a multiple of 32; other
/// matrices stay f32 (the caller reports it).
pub fn convert(x: Vec<f32>, rows: usize, k: usize, f: WeightFormat) -> Weights {
    match f {
        WeightFormat::F32 => Weights::F32(x),
        WeightFormat::Bf16 => to_bf16(&x),
        _ if !k.is_multiple_of(QK) => Weights::F32(x),
        WeightFormat::Q8_0 => quantize_q8_0(&x, rows, k),
        WeightFormat::Q4_0 => quantize_q4_0(&x, rows, k),
    }
}

/// Back to f32 by value: f32 weights are handed back without a copy.
pub fn into_f32(w: Weights) -> Vec<f32> {
    match w {
        Weights::F32(v) => v,
        w => dequantize(&w),
    }
}

/// Back to f32 (exactly the values the kernels multiply by).
pub fn dequantize(w: &Weights) -> Vec<f32> {
    use crate::kernels::{bf16_to_f32, f16_to_f32};
    match w {
        Weights::F32(v) => v.clone(),
        Weights::F32Panels { p, n, k } => crate::kernels::panels::unpack(p, *n, *k),
        Weights::Bf16(v) => v.iter().map(|&h| bf16_to_f32(h)).collect(),
        Weights::Q8_0 { qs, d } => qs
            .iter()
            .enumerate()
            .map(|(i, &q)| q as f32 * f16_to_f32(d[i / QK]))
            .collect(),
        Weights::Q4_0 { qs, d } => {
            let mut out = vec![0f32; qs.len() * 2];
            for (b, (q, &db)) in qs.chunks(QK / 2).zip(d).enumerate() {
                let s = f16_to_f32(db);
                for t in 0..QK / 2 {
                    out[b * QK + t] = ((q[t] & 15) as i32 - 8) as f32 * s;
                    out[b * QK + t + QK / 2] = ((q[t] >> 4) as i32 - 8) as f32 * s;
                }
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_0_and_q4_0_round_as_ggml() {
        let x: Vec<f32> = (0..64).map(|i| ((i as f32) * 0.37).sin() * 3.0).collect();
        let q8 = quantize_q8_0(&x, 2, 32);
        let d8 = dequantize(&q8);
        for b in 0..2 {
            let xb = &x[b * 32..(b + 1) * 32];
            let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (a, b) in xb.iter().zip(&d8[b * 32..(b + 1) * 32]) {
                assert!((a - b).abs() <= amax / 127.0 * 0.51 + 1e-3, "{a} {b}");
            }
        }
        let q4 = quantize_q4_0(&x, 2, 32);
        let d4 = dequantize(&q4);
        for b in 0..2 {
            let xb = &x[b * 32..(b + 1) * 32];
            let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (a, b) in xb.iter().zip(&d4[b * 32..(b + 1) * 32]) {
                // Half a step (amax/16), or a whole step where the code clamps at 15.
                assert!((a - b).abs() <= amax / 8.0 * 1.01 + 1e-3, "{a} {b}");
            }
            // The largest-magnitude value is represented exactly (up to the f16 scale).
            let (i, _) = xb.iter().enumerate().fold((0, 0f32), |(bi, bm), (i, v)| {
                if v.abs() > bm {
                    (i, v.abs())
                } else {
                    (bi, bm)
                }
            });
            assert!((d4[b * 32 + i] - xb[i]).abs() < 1e-2 * amax);
        }
        // All-zero blocks stay zero.
        let z = quantize_q4_0(&[0.0; 32], 1, 32);
        assert!(dequantize(&z).iter().all(|&v| v == 0.0));
        assert_eq!(WeightFormat::parse("Q8_0").unwrap(), WeightFormat::Q8_0);
        assert!(WeightFormat::parse("q5_k").is_err());
    }
}
