//! Causal grouped-query attention. Per (sequence, head) the scores `S = q·kᵀ/√d` are one
//! small product (`cpu::small_gemm`, from keys transposed once per sequence and key/value
//! head), the masked softmax runs row by row, and `P·v` is a second product. Only the
//! log-sum-exp of each score row is saved; the backward pass recomputes `P` from it (as
//! FlashAttention does), so saved state is O(T) per head rather than O(T²).
//!
//! Backward, with `D_t = Σ_l dO[t,l]·O[t,l]`:
//!   dP = dO·vᵀ,  dS = P ⊙ (dP − D),  dq = dS·k/√d,  dk = dSᵀ·q/√d,  dv = Pᵀ·dO,
//! where dk and dv sum over the query heads that share a key/value head.

use super::scratch::ScratchPool;
use super::small_gemm::product;
use super::SendPtr;
use crate::backend::AttnShape;
use crate::real::Real;
use rayon::prelude::*;

fn check_shape<T>(s: &AttnShape, q: &[T], k: &[T], v: &[T], out: &[T], lse: &[T]) {
    assert!(s.n_heads.is_multiple_of(s.n_kv_heads) && s.tk >= s.tq && s.kv_stride >= s.tk);
    let qn = s.batch * s.tq * s.n_heads * s.head_dim;
    let kn = ((s.batch - 1) * s.kv_stride + s.tk) * s.n_kv_heads * s.head_dim;
    assert!(
        q.len() >= qn && out.len() >= qn,
        "attention: q/out too short"
    );
    assert!(k.len() >= kn && v.len() >= kn, "attention: k/v too short");
    assert!(
        lse.len() >= s.batch * s.n_heads * s.tq,
        "attention: lse too short"
    );
}

/// Query rows per causal block. Row `t` attends to keys `..tk - tq + t + 1`, so a block of rows
/// `t0..t1` needs keys `..tk - tq + t1` only: blocking skips most of the masked upper triangle
/// (at T = 256, 62.5% of the full T×T work remains). Measured with `examples/attn_timing.rs`
/// at demo-5m's shape: 10–20% faster than one block (32, 64 and 128 rows are within noise of
/// each other); the gemms at head dim 32 are short in k, so the gain is less than the work saved.
const ROW_BLOCK: usize = 64;

/// The row blocks `(t0, t1, kend)` of one (sequence, head), last block first: the first block
/// visited covers every key, which lets the backward pass overwrite dk/dv once and accumulate
/// after.
fn blocks(s: &AttnShape) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
    (0..s.tq.div_ceil(ROW_BLOCK)).rev().map(move |i| {
        let t0 = i * ROW_BLOCK;
        let t1 = (t0 + ROW_BLOCK).min(s.tq);
        (t0, t1, s.tk - s.tq + t1)
    })
}

/// `kt[d·tk + j] = k[b, j, kvh, d]`: one (sequence, key/value head)'s keys (or values)
/// transposed, so the products with them on the right read them along rows.
///
/// # Safety
/// `k` must cover the ranges implied by `s` (checked by the callers).
unsafe fn transpose_kv<T: Real>(kt: &mut [T], k: *const T, s: &AttnShape, b: usize, kvh: usize) {
    let ks = s.n_kv_heads * s.head_dim;
    let base = k.add(b * s.kv_stride * ks + kvh * s.head_dim);
    for j in 0..s.tk {
        let row = std::slice::from_raw_parts(base.add(j * ks), s.head_dim);
        for (d, &x) in row.iter().enumerate() {
            kt[d * s.tk + j] = x;
        }
    }
}

/// Computes `S[t0..t1, ..kend] = scale·q_h·k_hᵀ` for one (sequence, head) into `sbuf`
/// (`[tq, tk]`, row stride `tk`), from the transposed keys `kt` of [`transpose_kv`].
///
/// # Safety
/// Pointers must cover the ranges implied by `s` (checked by the callers).
unsafe fn scores<T: Real>(
    sbuf: &mut [T],
    q: *const T,
    kt: &[T],
    s: &AttnShape,
    b: usize,
    h: usize,
    (t0, t1, kend): (usize, usize, usize),
) {
    let qs = s.n_heads * s.head_dim;
    let scale = T::from_f64(1.0 / (s.head_dim as f64).sqrt());
    product(
        (t1 - t0, kend, s.head_dim),
        sbuf.as_mut_ptr().add(t0 * s.tk),
        s.tk,
        (q.add(b * s.tq * qs + t0 * qs + h * s.head_dim), qs, 1),
        (kt.as_ptr(), s.tk),
        scale,
        false,
    );
}

pub fn forward<T: Real>(
    out: &mut [T],
    lse: &mut [T],
    q: &[T],
    k: &[T],
    v: &[T],
    s: AttnShape,
    pool: &ScratchPool<T>,
) {
    check_shape(&s, q, k, v, out, lse);
    let (qs, ks, hd) = (
        s.n_heads * s.head_dim,
        s.n_kv_heads * s.head_dim,
        s.head_dim,
    );
    let (outp, lsep) = (SendPtr(out.as_mut_ptr()), SendPtr(lse.as_mut_ptr()));
    (0..s.batch * s.n_heads).into_par_iter().for_each(|task| {
        let (b, h) = (task / s.n_heads, task % s.n_heads);
        let kvh = h / (s.n_heads / s.n_kv_heads);
        let mut buf = pool.get(s.tq * s.tk + hd * s.tk);
        let (sbuf, kt) = buf[..(s.tq + hd) * s.tk].split_at_mut(s.tq * s.tk);
        // SAFETY: shapes checked above.
        unsafe { transpose_kv(kt, k.as_ptr(), &s, b, kvh) };
        for blk @ (t0, t1, kend) in blocks(&s) {
            // SAFETY: shapes checked above; this task alone writes out[b, :, h, :] and
            // lse[b, h, :].
            unsafe {
                scores(sbuf, q.as_ptr(), kt, &s, b, h, blk);
                for t in t0..t1 {
                    let lim = s.tk - s.tq + t + 1;
                    let row = &mut sbuf[t * s.tk..t * s.tk + kend];
                    let m = row[..lim].iter().fold(T::NEG_INFINITY, |a, &x| a.max(x));
                    let sum = T::exp_shifted_sum(&mut row[..lim], m);
                    let inv = T::ONE / sum;
                    row[..lim].iter_mut().for_each(|x| *x *= inv);
                    row[lim..].fill(T::ZERO);
                    *lsep.get().add((b * s.n_heads + h) * s.tq + t) = m + sum.ln();
                }
                product(
                    (t1 - t0, hd, kend),
                    outp.get().add(b * s.tq * qs + t0 * qs + h * hd),
                    qs,
                    (sbuf.as_ptr().add(t0 * s.tk), s.tk, 1),
                    (v.as_ptr().add(b * s.kv_stride * ks + kvh * hd), ks),
                    T::ONE,
                    false,
                );
            }
        }
    });
}

#[allow(clippy::too_many_arguments)]
pub fn backward<T: Real>(
    dq: &mut [T],
    dk: &mut [T],
    dv: &mut [T],
    dout: &[T],
    out: &[T],
    lse: &[T],
    q: &[T],
    k: &[T],
    v: &[T],
    s: AttnShape,
    pool: &ScratchPool<T>,
) {
    check_shape(&s, q, k, v, out, lse);
    check_shape(&s, dq, dk, dv, dout, lse);
    let (qs, ks, hd) = (
        s.n_heads * s.head_dim,
        s.n_kv_heads * s.head_dim,
        s.head_dim,
    );
    let group = s.n_heads / s.n_kv_heads;
    let scale = T::from_f64(1.0 / (hd as f64).sqrt());
    let (dqp, dkp, dvp) = (
        SendPtr(dq.as_mut_ptr()),
        SendPtr(dk.as_mut_ptr()),
        SendPtr(dv.as_mut_ptr()),
    );
    (0..s.batch * s.n_kv_heads)
        .into_par_iter()
        .for_each(|task| {
            let (b, kvh) = (task / s.n_kv_heads, task % s.n_kv_heads);
            let mut buf = pool.get(2 * s.tq * s.tk + 2 * hd * s.tk);
            let (pbuf, rest) = buf[..2 * (s.tq + hd) * s.tk].split_at_mut(s.tq * s.tk);
            let (dpbuf, rest) = rest.split_at_mut(s.tq * s.tk);
            let (kt, vt) = rest.split_at_mut(hd * s.tk);
            // SAFETY: shapes checked above. V transposed like K, for dP = dO·vᵀ.
            unsafe {
                transpose_kv(kt, k.as_ptr(), &s, b, kvh);
                transpose_kv(vt, v.as_ptr(), &s, b, kvh);
            }
            let kv_off = b * s.kv_stride * ks + kvh * hd;
            for hh in 0..group {
                let h = kvh * group + hh;
                let q_off = b * s.tq * qs + h * hd;
                for (i, blk @ (t0, t1, kend)) in blocks(&s).enumerate() {
                    let rows = t1 - t0;
                    // P and dP share a layout: this block's rows start here in both.
                    let blk_off = t0 * s.tk;
                    let qb_off = q_off + t0 * qs;
                    // The first block of the first head covers every key: it writes dk/dv,
                    // everything after accumulates.
                    let acc = hh > 0 || i > 0;
                    // SAFETY: shapes checked; this task alone writes dq[b,:,h,:] for its heads
                    // and dk/dv[b,:,kvh,:].
                    unsafe {
                        scores(pbuf, q.as_ptr(), kt, &s, b, h, blk);
                        // dP = dO·vᵀ
                        product(
                            (rows, kend, hd),
                            dpbuf.as_mut_ptr().add(blk_off),
                            s.tk,
                            (dout.as_ptr().add(qb_off), qs, 1),
                            (vt.as_ptr(), s.tk),
                            T::ONE,
                            false,
                        );
                        for t in t0..t1 {
                            let lim = s.tk - s.tq + t + 1;
                            let p = &mut pbuf[t * s.tk..t * s.tk + kend];
                            let dp = &mut dpbuf[t * s.tk..t * s.tk + kend];
                            T::exp_shifted_sum(&mut p[..lim], lse[(b * s.n_heads + h) * s.tq + t]);
                            p[lim..].fill(T::ZERO);
                            let (o, d_o) = (
                                &out[q_off + t * qs..q_off + t * qs + hd],
                                &dout[q_off + t * qs..q_off + t * qs + hd],
                            );
                            let dsum: T = o.iter().zip(d_o).map(|(a, b)| *a * *b).sum();
                            for j in 0..lim {
                                dp[j] = p[j] * (dp[j] - dsum);
                            }
                            dp[lim..].fill(T::ZERO);
                        }
                        // dq = scale·dS·k
                        product(
                            (rows, hd, kend),
                            dqp.get().add(qb_off),
                            qs,
                            (dpbuf.as_ptr().add(blk_off), s.tk, 1),
                            (k.as_ptr().add(kv_off), ks),
                            scale,
                            false,
                        );
                        // dk (+)= scale·dSᵀ·q ; dv (+)= Pᵀ·dO, over this block's keys
                        product(
                            (kend, hd, rows),
                            dkp.get().add(kv_off),
                            ks,
                            (dpbuf.as_ptr().add(blk_off), 1, s.tk),
                            (q.as_ptr().add(qb_off), qs),
                            scale,
                            acc,
                        );
                        product(
                            (kend, hd, rows),
                            dvp.get().add(kv_off),
                            ks,
                            (pbuf.as_ptr().add(blk_off), 1, s.tk),
                            (dout.as_ptr().add(qb_off), qs),
                            T::ONE,
                            acc,
                        );
                    }
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::gradcheck::{check, project, rand_vec};

    /// Straightforward reference: explicit loops over every score.
    fn naive(q: &[f64], k: &[f64], v: &[f64], s: &AttnShape) -> Vec<f64> {
        let (qs, ks, hd) = (
            s.n_heads * s.head_dim,
            s.n_kv_heads * s.head_dim,
            s.head_dim,
        );
        let mut out = vec![0.0; s.batch * s.tq * qs];
        for b in 0..s.batch {
            for h in 0..s.n_heads {
                let kvh = h / (s.n_heads / s.n_kv_heads);
                for t in 0..s.tq {
                    let lim = s.tk - s.tq + t + 1;
                    let qv = &q[(b * s.tq + t) * qs + h * hd..][..hd];
                    let sc: Vec<f64> = (0..lim)
                        .map(|j| {
                            let kv = &k[(b * s.kv_stride + j) * ks + kvh * hd..][..hd];
                            qv.iter().zip(kv).map(|(a, b)| a * b).sum::<f64>() / (hd as f64).sqrt()
                        })
                        .collect();
                    let m = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = sc.iter().map(|x| (x - m).exp()).sum();
                    for (j, x) in sc.iter().enumerate() {
                        let p = (x - m).exp() / z;
                        for l in 0..hd {
                            out[(b * s.tq + t) * qs + h * hd + l] +=
                                p * v[(b * s.kv_stride + j) * ks + kvh * hd + l];
                        }
                    }
                }
            }
        }
        out
    }

    fn shapes() -> Vec<AttnShape> {
        vec![
            // training: GQA, tq == tk
            AttnShape {
                batch: 2,
                tq: 5,
                tk: 5,
                kv_stride: 5,
                n_heads: 4,
                n_kv_heads: 2,
                head_dim: 4,
            },
            // decoding against a cache with spare capacity
            AttnShape {
                batch: 2,
                tq: 2,
                tk: 6,
                kv_stride: 9,
                n_heads: 2,
                n_kv_heads: 1,
                head_dim: 6,
            },
            // several causal row blocks (ROW_BLOCK = 64), the last one partial
            AttnShape {
                batch: 1,
                tq: 150,
                tk: 150,
                kv_stride: 150,
                n_heads: 2,
                n_kv_heads: 1,
                head_dim: 3,
            },
            // several row blocks against a longer cache
            AttnShape {
                batch: 2,
                tq: 70,
                tk: 100,
                kv_stride: 110,
                n_heads: 2,
                n_kv_heads: 1,
                head_dim: 2,
            },
        ]
    }

    #[test]
    fn forward_matches_naive() {
        let pool = ScratchPool::new();
        for s in shapes() {
            let qn = s.batch * s.tq * s.n_heads * s.head_dim;
            let kn = s.batch * s.kv_stride * s.n_kv_heads * s.head_dim;
            let (q, k, v) = (rand_vec(qn, 1), rand_vec(kn, 2), rand_vec(kn, 3));
            let (mut out, mut lse) = (vec![0.0; qn], vec![0.0; s.batch * s.n_heads * s.tq]);
            forward(&mut out, &mut lse, &q, &k, &v, s, &pool);
            let want = naive(&q, &k, &v, &s);
            for (a, b) in out.iter().zip(&want) {
                assert!((a - b).abs() < 1e-12, "{a} {b}");
            }
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        let pool = ScratchPool::new();
        for s in shapes() {
            let qn = s.batch * s.tq * s.n_heads * s.head_dim;
            let kn = s.batch * s.kv_stride * s.n_kv_heads * s.head_dim;
            let (mut q, mut k, mut v) = (rand_vec(qn, 4), rand_vec(kn, 5), rand_vec(kn, 6));
            let r = rand_vec(qn, 7);
            let run = |q: &[f64], k: &[f64], v: &[f64]| {
                let (mut out, mut lse) = (vec![0.0; qn], vec![0.0; s.batch * s.n_heads * s.tq]);
                forward(&mut out, &mut lse, q, k, v, s, &pool);
                (out, lse)
            };
            let (out, lse) = run(&q, &k, &v);
            let (mut dq, mut dk, mut dv) = (vec![0.0; qn], vec![0.0; kn], vec![0.0; kn]);
            backward(
                &mut dq, &mut dk, &mut dv, &r, &out, &lse, &q, &k, &v, s, &pool,
            );
            let (q0, k0, v0) = (q.clone(), k.clone(), v.clone());
            check("attention dq", &mut q, &dq, 1000, |x| {
                project(&run(x, &k0, &v0).0, &r)
            });
            check("attention dk", &mut k, &dk, 1000, |x| {
                project(&run(&q0, x, &v0).0, &r)
            });
            check("attention dv", &mut v, &dv, 1000, |x| {
                project(&run(&q0, &k0, x).0, &r)
            });
        }
    }
}
