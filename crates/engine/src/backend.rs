//! The backend trait: every operation the Llama forward and backward passes need, on buffers
//! that live wherever the backend keeps them (host memory for the CPU backend, device memory
//! for CUDA). The model code in [`crate::llama`] is written once against this trait.
//!
//! Conventions, shared by all implementations:
//! - Buffers hold `f32` values as far as the caller is concerned (upload/download convert);
//!   a backend may compute in another precision internally.
//! - Matrices are row-major. A "linear" layer weight is `[out, in]` as PyTorch stores it, so a
//!   forward projection is `y = x · Wᵀ`.
//! - Activations are token-major: a `[B, T, features]` tensor is `rows = B·T` rows.
//! - Ops whose name ends in `_bwd` *accumulate* into weight gradients (so gradient accumulation
//!   over micro-batches needs no extra pass) and *overwrite* activation gradients unless stated.

/// Geometry of one attention call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttnShape {
    pub batch: usize,
    /// Query rows per sequence.
    pub tq: usize,
    /// Key/value rows visible to the last query (keys `0..tk`). Query `t` sits at absolute
    /// position `tk - tq + t` and attends to keys `0..=tk - tq + t` (causal).
    pub tk: usize,
    /// Rows between the starts of consecutive sequences in the key/value buffers (`tk` for
    /// training; the cache capacity for a KV cache).
    pub kv_stride: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
}

/// What a buffer is for. A backend may pick its storage precision from it (mixed precision keeps
/// activations in bf16 and weights as an f32 master with a bf16 copy); to the caller every buffer
/// still holds f32 values through upload/download. The CPU backend ignores it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BufKind {
    /// Full-precision data: weight gradients, optimizer moments, per-row statistics (rstd,
    /// log-sum-exp, losses), tables and scratch. What [`Backend::zeros`] and
    /// [`Backend::upload`] give.
    F32,
    /// A model weight: read by the passes, rewritten by the optimizer.
    Weight,
    /// An activation or activation gradient: the large per-token tensors.
    Act,
}

pub trait Backend: Send + Sync {
    /// A buffer of numbers.
    type Buf: Send + Sync;
    /// A buffer of token ids (negative entries mean "ignore" where targets are concerned).
    type Ids: Send + Sync;

    fn name(&self) -> String;

    /// Waits until all work queued on the device has finished (timing); a no-op for backends
    /// that compute synchronously.
    fn synchronize(&self) {}

    fn zeros(&self, n: usize) -> Self::Buf;
    fn upload(&self, data: &[f32]) -> Self::Buf;
    fn download(&self, buf: &Self::Buf) -> Vec<f32>;
    /// Overwrites `buf[offset..offset + data.len()]` from the host.
    fn write(&self, buf: &mut Self::Buf, offset: usize, data: &[f32]);
    fn len(&self, buf: &Self::Buf) -> usize;
    /// [`Backend::zeros`] for a buffer of the given kind.
    fn zeros_as(&self, n: usize, kind: BufKind) -> Self::Buf {
        let _ = kind;
        self.zeros(n)
    }
    /// [`Backend::upload`] into a buffer of the given kind.
    fn upload_as(&self, data: &[f32], kind: BufKind) -> Self::Buf {
        let _ = kind;
        self.upload(data)
    }
    /// The buffer's values in place, when the backend keeps them in host memory as f32 (the
    /// CPU backend in f32). Collectives then run on the buffer itself; other backends return
    /// `None` and are staged through [`Backend::download`] / [`Backend::write`].
    fn host_f32<'a>(&self, buf: &'a Self::Buf) -> Option<&'a [f32]> {
        let _ = buf;
        None
    }
    /// [`Backend::host_f32`], writable.
    fn host_f32_mut<'a>(&self, buf: &'a mut Self::Buf) -> Option<&'a mut [f32]> {
        let _ = buf;
        None
    }
    fn upload_ids(&self, ids: &[i32]) -> Self::Ids;
    fn write_ids(&self, dst: &mut Self::Ids, ids: &[i32]);

    fn fill(&self, buf: &mut Self::Buf, value: f32);
    /// `dst[dst_off..dst_off+n] = src[src_off..src_off+n]`.
    fn copy(&self, dst: &mut Self::Buf, dst_off: usize, src: &Self::Buf, src_off: usize, n: usize);
    /// `dst += src` elementwise (the residual connection).
    fn add_assign(&self, dst: &mut Self::Buf, src: &Self::Buf);
    /// `buf *= s`.
    fn scale(&self, buf: &mut Self::Buf, s: f32);
    /// Σ x² in f64, reduced in a fixed order (deterministic for a given thread count).
    fn sum_squares(&self, buf: &Self::Buf) -> f64;
    /// True when every element is finite.
    fn all_finite(&self, buf: &Self::Buf) -> bool;

    /// `c[m,n] = (accumulate ? c : 0) + op(a) · op(b)`, where `op(a)` is `[m,k]` (stored as
    /// `[k,m]` when `trans_a`) and `op(b)` is `[k,n]` (stored as `[n,k]` when `trans_b`).
    #[allow(clippy::too_many_arguments)]
    fn matmul(
        &self,
        c: &mut Self::Buf,
        a: &Self::Buf,
        trans_a: bool,
        b: &Self::Buf,
        trans_b: bool,
        m: usize,
        n: usize,
        k: usize,
        accumulate: bool,
    );

    /// `out[r] = table[ids[r]]`, rows of width `dim`.
    fn embedding_fwd(&self, out: &mut Self::Buf, table: &Self::Buf, ids: &Self::Ids, dim: usize);
    /// `dtable[ids[r]] += dout[r]`.
    fn embedding_bwd(&self, dtable: &mut Self::Buf, dout: &Self::Buf, ids: &Self::Ids, dim: usize);

    /// `out = x / sqrt(mean(x²) + eps) · w` per row; saves `1/sqrt(mean(x²)+eps)` in `rstd`.
    fn rmsnorm_fwd(
        &self,
        out: &mut Self::Buf,
        rstd: &mut Self::Buf,
        x: &Self::Buf,
        w: &Self::Buf,
        dim: usize,
        eps: f32,
    );
    /// `dx += ∂/∂x`, `dw += ∂/∂w` (both accumulate: `dx` is the residual-stream gradient).
    #[allow(clippy::too_many_arguments)]
    fn rmsnorm_bwd(
        &self,
        dx: &mut Self::Buf,
        dw: &mut Self::Buf,
        dout: &Self::Buf,
        x: &Self::Buf,
        w: &Self::Buf,
        rstd: &Self::Buf,
        dim: usize,
    );

    /// Rotary embedding in place (rotate-half convention), on `[rows, n_heads·head_dim]`;
    /// row `r` is at position `pos0 + r % seq_len`. `table` is `[max_pos, head_dim/2]` cosines
    /// followed by the same number of sines. `inverse` rotates backwards (the backward pass).
    #[allow(clippy::too_many_arguments)]
    fn rope(
        &self,
        x: &mut Self::Buf,
        table: &Self::Buf,
        n_heads: usize,
        head_dim: usize,
        seq_len: usize,
        pos0: usize,
        inverse: bool,
    );

    /// Causal grouped-query attention: `out = softmax(q·kᵀ/sqrt(d) + mask) · v`; saves the
    /// log-sum-exp of every score row (`[batch, n_heads, tq]`) for the backward pass.
    fn attention_fwd(
        &self,
        out: &mut Self::Buf,
        lse: &mut Self::Buf,
        q: &Self::Buf,
        k: &Self::Buf,
        v: &Self::Buf,
        s: AttnShape,
    );
    /// Overwrites `dq`, `dk`, `dv`.
    #[allow(clippy::too_many_arguments)]
    fn attention_bwd(
        &self,
        dq: &mut Self::Buf,
        dk: &mut Self::Buf,
        dv: &mut Self::Buf,
        dout: &Self::Buf,
        out: &Self::Buf,
        lse: &Self::Buf,
        q: &Self::Buf,
        k: &Self::Buf,
        v: &Self::Buf,
        s: AttnShape,
    );

    /// `h = silu(g) · u`.
    fn swiglu_fwd(&self, h: &mut Self::Buf, g: &Self::Buf, u: &Self::Buf);
    /// Overwrites `dg`, `du`.
    fn swiglu_bwd(
        &self,
        dg: &mut Self::Buf,
        du: &mut Self::Buf,
        dh: &Self::Buf,
        g: &Self::Buf,
        u: &Self::Buf,
    );

    /// The fused LM head and softmax cross-entropy over `rows` rows of `x` (`[rows, dim]`)
    /// against `w` (`[vocab, dim]`): writes each row's loss (0 where the target is negative) to
    /// `losses`, never materialising the full logits (it works through `scratch`, which holds at
    /// least [`Backend::head_chunk_rows`] · vocab numbers). With `grad = Some((dx, dw, scale))`
    /// also overwrites `dx` with `scale · ∂Σloss/∂x` and, when `dw` is given, accumulates
    /// `scale · ∂Σloss/∂w` into it (a frozen head passes `None` and skips that product).
    #[allow(clippy::too_many_arguments)]
    #[allow(clippy::type_complexity)]
    fn lm_head_loss(
        &self,
        losses: &mut Self::Buf,
        x: &Self::Buf,
        w: &Self::Buf,
        targets: &Self::Ids,
        vocab: usize,
        dim: usize,
        scratch: &mut Self::Buf,
        grad: Option<(&mut Self::Buf, Option<&mut Self::Buf>, f32)>,
    );
    /// Rows of logits the LM-head loss computes at once for this vocabulary size.
    fn head_chunk_rows(&self, vocab: usize) -> usize;

    /// Inverted dropout in place: `x[i] = x[i] / (1 - p)` where [`dropout_keep`]`(seed, i, p)`,
    /// 0 elsewhere. The mask is a pure function of `(seed, i, p)`, the same on every backend, so
    /// a backward pass regenerates it instead of storing it. `p = 0` leaves `x` unchanged.
    ///
    /// The default goes through the host ([`Backend::download`] / [`Backend::write`]), which
    /// works on any backend; backends override it with an in-place kernel.
    fn dropout(&self, x: &mut Self::Buf, p: f32, seed: u64) {
        if p == 0.0 {
            return;
        }
        let mut h = self.download(x);
        dropout_host(&mut h, p, seed);
        self.write(x, 0, &h);
    }

    /// `dst[..len(src)] = dropout(src)` with the mask of [`Backend::dropout`]: the masked copy
    /// of an input in one pass instead of a copy and a second pass over it. The default copies
    /// and masks in place.
    fn dropout_from(&self, dst: &mut Self::Buf, src: &Self::Buf, n: usize, p: f32, seed: u64) {
        self.copy(dst, 0, src, 0, n);
        self.dropout(dst, p, seed);
    }

    /// One AdamW step as PyTorch's `torch.optim.AdamW` does it: decoupled weight decay
    /// `p *= 1 - lr·wd`, moments updated with `g · grad_scale`, bias-corrected by `step` (≥ 1).
    #[allow(clippy::too_many_arguments)]
    fn adamw(
        &self,
        p: &mut Self::Buf,
        g: &Self::Buf,
        m: &mut Self::Buf,
        v: &mut Self::Buf,
        lr: f32,
        beta1: f32,
        beta2: f32,
        eps: f32,
        weight_decay: f32,
        step: u64,
        grad_scale: f32,
    );
}

/// Whether element `i` survives dropout with probability `p` under `seed`: the top 24 bits of a
/// SplitMix64 hash of `(seed, i)` compared with `p · 2²⁴`, integers only, so every backend and
/// platform draws the same mask.
#[inline]
pub fn dropout_keep(seed: u64, i: u64, p: f32) -> bool {
    dropout_keep_below(seed, i, dropout_threshold(p))
}

/// [`dropout_keep`] with the threshold computed once ([`dropout_threshold`]); branch-free, so
/// the CPU loop over it vectorises.
#[inline(always)]
pub fn dropout_keep_below(seed: u64, i: u64, threshold: u64) -> bool {
    let mut z = seed.wrapping_add(i.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 40) >= threshold
}

/// `p · 2²⁴`, rounded: an element is dropped when its 24-bit hash is below this.
#[inline]
pub fn dropout_threshold(p: f32) -> u64 {
    (p.clamp(0.0, 1.0) as f64 * (1u64 << 24) as f64).round() as u64
}

/// The scale of the surviving elements, `1 / (1 - p)` in f32 (as every backend applies it).
pub fn dropout_scale(p: f32) -> f32 {
    1.0 / (1.0 - p)
}

/// [`Backend::dropout`] on host f32 values.
pub fn dropout_host(x: &mut [f32], p: f32, seed: u64) {
    if p == 0.0 {
        return;
    }
    let s = dropout_scale(p);
    for (i, v) in x.iter_mut().enumerate() {
        *v = if dropout_keep(seed, i as u64, p) {
            *v * s
        } else {
            0.0
        };
    }
}
