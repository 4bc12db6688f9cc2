//! The CPU backend: `gemm` for matrix products, rayon for everything else, generic over the
//! element type so the same kernels run in f32 for training and f64 for gradient checks.

pub mod adamw;
pub mod amx;
pub mod attention;
pub mod bf16_gemm;
pub mod embedding;
pub mod gemm;
#[cfg(test)]
pub mod gradcheck;
pub mod head_loss;
pub mod rmsnorm;
pub mod rope;
pub mod scratch;
pub mod simd;
pub mod small_gemm;
pub mod swiglu;

use crate::backend::{AttnShape, Backend};
use crate::real::Real;
use gemm::View;
use rayon::prelude::*;
use scratch::ScratchPool;

/// A raw pointer that rayon tasks may share; each task writes a disjoint region.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr<T>(pub *mut T);
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}
impl<T> SendPtr<T> {
    /// A method (not field access) so closures capture the whole `Send` wrapper.
    pub fn get(self) -> *mut T {
        self.0
    }
}

pub struct CpuBackend<T: Real = f32> {
    pool: ScratchPool<T>,
    /// Matrix products with bf16 operands and f32 accumulation (`precision = "bf16"`).
    bf16_matmuls: bool,
    packs: bf16_gemm::PackBuffers,
}

impl<T: Real> CpuBackend<T> {
    pub fn new() -> Self {
        CpuBackend {
            pool: ScratchPool::new(),
            bf16_matmuls: false,
            packs: Default::default(),
        }
    }
}

impl CpuBackend<f32> {
    /// The bf16 mixed-precision backend: the layer products (projections, MLP, LM head and
    /// their gradients) round their operands to bf16 and accumulate in f32, on AMX tiles where
    /// the CPU has them — PyTorch autocast's numerics. Weights, optimizer state, norms,
    /// attention and the loss stay f32.
    pub fn bf16() -> Self {
        CpuBackend {
            bf16_matmuls: true,
            ..Self::new()
        }
    }
}

impl<T: Real> CpuBackend<T> {
    /// `c[c_off + i·c_rs + j] = (accumulate ? c : 0) + Σ_l a(i,l)·b(l,j)` in this backend's
    /// precision.
    #[allow(clippy::too_many_arguments)]
    fn product(
        &self,
        m: usize,
        n: usize,
        k: usize,
        c: &mut [T],
        c_off: usize,
        c_rs: usize,
        a: View<T>,
        b: View<T>,
        accumulate: bool,
    ) {
        if self.bf16_matmuls {
            // Only `CpuBackend::<f32>::bf16()` sets the flag, so T is f32 here.
            assert_eq!(std::any::TypeId::of::<T>(), std::any::TypeId::of::<f32>());
            // SAFETY: T is f32 (checked above): same size, alignment and bit validity.
            let f = |v: View<T>| View {
                data: unsafe {
                    std::slice::from_raw_parts(v.data.as_ptr() as *const f32, v.data.len())
                },
                off: v.off,
                rs: v.rs,
                cs: v.cs,
            };
            let c = unsafe { std::slice::from_raw_parts_mut(c.as_mut_ptr() as *mut f32, c.len()) };
            bf16_gemm::matmul(
                m,
                n,
                k,
                &mut c[c_off..],
                c_rs,
                f(a),
                f(b),
                accumulate,
                &self.packs,
            );
            return;
        }
        gemm::gemm(m, n, k, c, c_off, c_rs, a, b, T::ONE, accumulate, true);
    }
}

/// Whether bf16 products run on AMX tiles here (otherwise they are emulated, slower than f32).
pub fn bf16_is_native() -> bool {
    amx::available()
}

impl<T: Real> Default for CpuBackend<T> {
    fn default() -> Self {
        Self::new()
    }
}

const REDUCE_BLOCK: usize = 8192;

impl<T: Real> Backend for CpuBackend<T> {
    type Buf = Vec<T>;
    type Ids = Vec<i32>;

    fn name(&self) -> String {
        let isa = ["baseline x86-64", "AVX2+FMA", "AVX-512"][simd::level() as usize];
        let precision = if self.bf16_matmuls {
            if amx::available() {
                "bf16 matmuls on AMX, f32 elsewhere".to_string()
            } else {
                "bf16 matmuls emulated (no AMX), f32 elsewhere".to_string()
            }
        } else {
            std::any::type_name::<T>().to_string()
        };
        format!(
            "cpu ({} threads, {isa}, {precision})",
            rayon::current_num_threads(),
        )
    }
    fn host_f32<'a>(&self, buf: &'a Vec<T>) -> Option<&'a [f32]> {
        (buf as &dyn std::any::Any)
            .downcast_ref::<Vec<f32>>()
            .map(|v| v.as_slice())
    }
    fn host_f32_mut<'a>(&self, buf: &'a mut Vec<T>) -> Option<&'a mut [f32]> {
        (buf as &mut dyn std::any::Any)
            .downcast_mut::<Vec<f32>>()
            .map(|v| v.as_mut_slice())
    }
    fn zeros(&self, n: usize) -> Vec<T> {
        vec![T::ZERO; n]
    }
    fn upload(&self, data: &[f32]) -> Vec<T> {
        data.iter().map(|&x| T::from_f32(x)).collect()
    }
    fn download(&self, buf: &Vec<T>) -> Vec<f32> {
        buf.iter().map(|x| x.to_f32()).collect()
    }
    fn write(&self, buf: &mut Vec<T>, offset: usize, data: &[f32]) {
        for (d, s) in buf[offset..offset + data.len()].iter_mut().zip(data) {
            *d = T::from_f32(*s);
        }
    }
    fn len(&self, buf: &Vec<T>) -> usize {
        buf.len()
    }
    fn upload_ids(&self, ids: &[i32]) -> Vec<i32> {
        ids.to_vec()
    }
    fn write_ids(&self, dst: &mut Vec<i32>, ids: &[i32]) {
        dst.clear();
        dst.extend_from_slice(ids);
    }
    fn fill(&self, buf: &mut Vec<T>, value: f32) {
        let v = T::from_f32(value);
        buf.par_chunks_mut(REDUCE_BLOCK).for_each(|c| c.fill(v));
    }
    fn copy(&self, dst: &mut Vec<T>, dst_off: usize, src: &Vec<T>, src_off: usize, n: usize) {
        dst[dst_off..dst_off + n].copy_from_slice(&src[src_off..src_off + n]);
    }
    fn add_assign(&self, dst: &mut Vec<T>, src: &Vec<T>) {
        dst.par_chunks_mut(REDUCE_BLOCK)
            .zip(src.par_chunks(REDUCE_BLOCK))
            .for_each(|(d, s)| {
                for i in 0..d.len() {
                    d[i] += s[i];
                }
            });
    }
    fn scale(&self, buf: &mut Vec<T>, s: f32) {
        let s = T::from_f32(s);
        buf.par_chunks_mut(REDUCE_BLOCK)
            .for_each(|c| c.iter_mut().for_each(|x| *x *= s));
    }
    fn sum_squares(&self, buf: &Vec<T>) -> f64 {
        // Fixed blocks, partial sums collected in order: the same bits for any thread count.
        let parts: Vec<f64> = buf
            .par_chunks(REDUCE_BLOCK)
            .map(|c| {
                let mut acc = [0f64; 4];
                for (i, x) in c.iter().enumerate() {
                    let v = x.to_f64();
                    acc[i & 3] += v * v;
                }
                acc.iter().sum()
            })
            .collect();
        parts.iter().sum()
    }
    fn all_finite(&self, buf: &Vec<T>) -> bool {
        buf.par_chunks(REDUCE_BLOCK)
            .all(|c| c.iter().all(|x| x.is_finite()))
    }
    fn matmul(
        &self,
        c: &mut Vec<T>,
        a: &Vec<T>,
        trans_a: bool,
        b: &Vec<T>,
        trans_b: bool,
        m: usize,
        n: usize,
        k: usize,
        accumulate: bool,
    ) {
        let av = if trans_a {
            View::transposed(a, m)
        } else {
            View::row_major(a, k)
        };
        let bv = if trans_b {
            View::transposed(b, k)
        } else {
            View::row_major(b, n)
        };
        self.product(m, n, k, c, 0, n, av, bv, accumulate);
    }
    fn embedding_fwd(&self, out: &mut Vec<T>, table: &Vec<T>, ids: &Vec<i32>, dim: usize) {
        embedding::forward(out, table, ids, dim)
    }
    fn embedding_bwd(&self, dtable: &mut Vec<T>, dout: &Vec<T>, ids: &Vec<i32>, dim: usize) {
        embedding::backward(dtable, dout, ids, dim)
    }
    fn rmsnorm_fwd(
        &self,
        out: &mut Vec<T>,
        rstd: &mut Vec<T>,
        x: &Vec<T>,
        w: &Vec<T>,
        dim: usize,
        eps: f32,
    ) {
        rmsnorm::forward(out, rstd, x, w, dim, eps as f64)
    }
    fn rmsnorm_bwd(
        &self,
        dx: &mut Vec<T>,
        dw: &mut Vec<T>,
        dout: &Vec<T>,
        x: &Vec<T>,
        w: &Vec<T>,
        rstd: &Vec<T>,
        dim: usize,
    ) {
        rmsnorm::backward(dx, dw, dout, x, w, rstd, dim)
    }
    fn rope(
        &self,
        x: &mut Vec<T>,
        table: &Vec<T>,
        n_heads: usize,
        head_dim: usize,
        seq_len: usize,
        pos0: usize,
        inverse: bool,
    ) {
        rope::apply(x, table, n_heads, head_dim, seq_len, pos0, inverse)
    }
    fn attention_fwd(
        &self,
        out: &mut Vec<T>,
        lse: &mut Vec<T>,
        q: &Vec<T>,
        k: &Vec<T>,
        v: &Vec<T>,
        s: AttnShape,
    ) {
        attention::forward(out, lse, q, k, v, s, &self.pool)
    }
    fn attention_bwd(
        &self,
        dq: &mut Vec<T>,
        dk: &mut Vec<T>,
        dv: &mut Vec<T>,
        dout: &Vec<T>,
        out: &Vec<T>,
        lse: &Vec<T>,
        q: &Vec<T>,
        k: &Vec<T>,
        v: &Vec<T>,
        s: AttnShape,
    ) {
        attention::backward(dq, dk, dv, dout, out, lse, q, k, v, s, &self.pool)
    }
    fn swiglu_fwd(&self, h: &mut Vec<T>, g: &Vec<T>, u: &Vec<T>) {
        swiglu::forward(h, g, u)
    }
    fn swiglu_bwd(&self, dg: &mut Vec<T>, du: &mut Vec<T>, dh: &Vec<T>, g: &Vec<T>, u: &Vec<T>) {
        swiglu::backward(dg, du, dh, g, u)
    }
    fn lm_head_loss(
        &self,
        losses: &mut Vec<T>,
        x: &Vec<T>,
        w: &Vec<T>,
        targets: &Vec<i32>,
        vocab: usize,
        dim: usize,
        scratch: &mut Vec<T>,
        grad: Option<(&mut Vec<T>, Option<&mut Vec<T>>, f32)>,
    ) {
        let grad = grad.map(|(dx, dw, s)| {
            (
                dx.as_mut_slice(),
                dw.map(|w| w.as_mut_slice()),
                T::from_f32(s),
            )
        });
        let mm = |m, n, k, c: &mut [T], c_off, c_rs, a: View<'_, T>, b: View<'_, T>, acc| {
            self.product(m, n, k, c, c_off, c_rs, a, b, acc)
        };
        head_loss::forward_backward(losses, x, w, targets, vocab, dim, scratch, grad, &mm)
    }
    fn head_chunk_rows(&self, vocab: usize) -> usize {
        head_loss::chunk_rows(vocab)
    }
    fn dropout(&self, x: &mut Vec<T>, p: f32, seed: u64) {
        if p == 0.0 {
            return;
        }
        let s = T::from_f32(crate::backend::dropout_scale(p));
        let threshold = crate::backend::dropout_threshold(p);
        x.par_chunks_mut(REDUCE_BLOCK)
            .enumerate()
            .for_each(|(c, chunk)| {
                T::dropout(chunk, (c * REDUCE_BLOCK) as u64, seed, threshold, s)
            });
    }
    fn dropout_from(&self, dst: &mut Vec<T>, src: &Vec<T>, n: usize, p: f32, seed: u64) {
        if p == 0.0 {
            dst[..n].copy_from_slice(&src[..n]);
            return;
        }
        let s = T::from_f32(crate::backend::dropout_scale(p));
        let threshold = crate::backend::dropout_threshold(p);
        dst[..n]
            .par_chunks_mut(REDUCE_BLOCK)
            .zip(src[..n].par_chunks(REDUCE_BLOCK))
            .enumerate()
            .for_each(|(c, (d, x))| {
                T::dropout_from(d, x, (c * REDUCE_BLOCK) as u64, seed, threshold, s)
            });
    }
    fn adamw(
        &self,
        p: &mut Vec<T>,
        g: &Vec<T>,
        m: &mut Vec<T>,
        v: &mut Vec<T>,
        lr: f32,
        beta1: f32,
        beta2: f32,
        eps: f32,
        weight_decay: f32,
        step: u64,
        grad_scale: f32,
    ) {
        adamw::step(
            p,
            g,
            m,
            v,
            lr as f64,
            beta1 as f64,
            beta2 as f64,
            eps as f64,
            weight_decay as f64,
            step,
            grad_scale as f64,
        )
    }
}
