// Causal grouped-query flash attention, forward and backward, on bf16 tensor cores (mma.sync
// m16n8k16, f32 accumulation). Nothing of size T×T is ever stored: the forward pass keeps a
// running max and sum per query row (online softmax) and saves only the log-sum-exp; the backward
// pass recomputes the probabilities tile by tile from it.
//
// Layouts (as the Backend trait defines them): q, out, dq are [batch, tq, n_heads·HD]; k, v, dk,
// dv are [batch, kv_stride, n_kv_heads·HD] (only rows < tk are read or written); lse and D are
// [batch, n_heads, tq] f32. Query t sits at absolute position tk − tq + t and attends to keys
// 0..=that position. Query head h reads key/value head h / (n_heads / n_kv_heads).
//
// Fragment layouts of tl_mma_16816 are documented in common.cuh; "C→A" below is the identity
// that the accumulator fragments of two adjacent 16×8 tiles, packed to bf16, are exactly the A
// fragment of the 16×16 tile they form, so probabilities feed the next product without shuffles.

#define ATT_BR 64  // forward: query rows per block (4 warps × 16)
#define ATT_BC 64  // key/value rows per tile (forward) and per block (backward: 4 warps × 16)
#define ATT_THREADS 128

// Copies `rows` × HD bf16 values (row stride `gstride` elements in global memory, rows at or past
// `valid` read as zero) into shared memory, row-major with row stride `ld`.
template <int HD>
__device__ __forceinline__ void att_load_rows(bf16* dst, int ld, const bf16* src, i64 gstride, int rows, int valid) {
    constexpr int V = HD / 8;  // 16-byte vectors per row
    for (int e = threadIdx.x; e < rows * V; e += blockDim.x) {
        const int r = e / V, c = (e % V) * 8;
        uint4 val = make_uint4(0u, 0u, 0u, 0u);
        if (r < valid) val = *reinterpret_cast<const uint4*>(src + (i64)r * gstride + c);
        *reinterpret_cast<uint4*>(dst + r * ld + c) = val;
    }
}

// The same, stored transposed: dst[c * ld + r] = src[r, c].
template <int HD>
__device__ __forceinline__ void att_load_rows_t(bf16* dst, int ld, const bf16* src, i64 gstride, int rows, int valid) {
    constexpr int V = HD / 8;
    for (int e = threadIdx.x; e < rows * V; e += blockDim.x) {
        const int r = e / V, c = (e % V) * 8;
        uint4 val = make_uint4(0u, 0u, 0u, 0u);
        if (r < valid) val = *reinterpret_cast<const uint4*>(src + (i64)r * gstride + c);
        const bf16* b = reinterpret_cast<const bf16*>(&val);
#pragma unroll
        for (int i = 0; i < 8; ++i) dst[(c + i) * ld + r] = b[i];
    }
}

// A fragment of the 16×16 tile at (row0, col0) of a row-major bf16 matrix in shared memory.
__device__ __forceinline__ void att_frag_a(u32 a[4], const bf16* s, int ld, int row0, int col0) {
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const bf16* p = s + (row0 + g) * ld + col0 + 2 * t;
    a[0] = tl_ld32(p);
    a[1] = tl_ld32(p + 8 * ld);
    a[2] = tl_ld32(p + 8);
    a[3] = tl_ld32(p + 8 * ld + 8);
}

// B fragment (16 × 8, k × n) where the shared matrix holds Bᵀ row-major: s[n][k], rows n0.., cols k0...
__device__ __forceinline__ void att_frag_b(u32 b[2], const bf16* s, int ld, int n0, int k0) {
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const bf16* p = s + (n0 + g) * ld + k0 + 2 * t;
    b[0] = tl_ld32(p);
    b[1] = tl_ld32(p + 8);
}

// ---------------------------------------------------------------------------------------------
// Forward. grid = (ceil(tq / 64), n_heads, batch), 128 threads; warp w owns query rows
// q0 + 16w .. q0 + 16w + 15 of the block. Dynamic shared memory: att_fwd_smem(HD) bytes.
template <int HD>
__device__ __forceinline__ void attn_fwd_impl(const bf16* __restrict__ q, const bf16* __restrict__ k,
                                              const bf16* __restrict__ v, bf16* __restrict__ out,
                                              float* __restrict__ lse, int tq, int tk, int kv_stride, int n_heads,
                                              int n_kv_heads, float scale_log2) {
    constexpr int LDK = HD + 8;       // K (and Q before it) row-major [64][HD]
    constexpr int LDV = ATT_BC + 8;   // V transposed [HD][64]
    TL_DYN_SMEM(smem);
    bf16* Ks = reinterpret_cast<bf16*>(smem);  // also holds the Q tile at the start
    bf16* Vt = Ks + ATT_BC * LDK;

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
    const int q0 = blockIdx.x * ATT_BR, h = blockIdx.y, b = blockIdx.z;
    const int kvh = h / (n_heads / n_kv_heads);
    const i64 qs = (i64)n_heads * HD, ks = (i64)n_kv_heads * HD;
    const bf16* qb = q + ((i64)b * tq + q0) * qs + (i64)h * HD;
    const bf16* kb = k + (i64)b * kv_stride * ks + (i64)kvh * HD;
    const bf16* vb = v + (i64)b * kv_stride * ks + (i64)kvh * HD;
    const int off = tk - tq;

    // The block's queries, into registers as A fragments (16 rows × HD per warp).
    att_load_rows<HD>(Ks, LDK, qb, qs, ATT_BR, tq - q0);
    __syncthreads();
    u32 qf[HD / 16][4];
#pragma unroll
    for (int kk = 0; kk < HD / 16; ++kk) att_frag_a(qf[kk], Ks, LDK, warp * 16, kk * 16);

    float o[HD / 8][4];
#pragma unroll
    for (int d = 0; d < HD / 8; ++d) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.f;
    float mrow[2] = {-TL_INF, -TL_INF};  // running max (log2 units) of rows g and g + 8
    float lrow[2] = {0.f, 0.f};               // this thread's share of the running sums
    const int qa[2] = {off + q0 + warp * 16 + g, off + q0 + warp * 16 + g + 8};  // absolute positions
    const int kv_end = min(tk, off + min(q0 + ATT_BR, tq));  // keys any row of the block can see

    for (int j0 = 0; j0 < kv_end; j0 += ATT_BC) {
        __syncthreads();  // the previous tile (or the Q tile) is no longer being read
        att_load_rows<HD>(Ks, LDK, kb + (i64)j0 * ks, ks, ATT_BC, tk - j0);
        att_load_rows_t<HD>(Vt, LDV, vb + (i64)j0 * ks, ks, ATT_BC, tk - j0);
        __syncthreads();

        // S = Q·Kᵀ for 16 rows × 64 keys.
        float s[ATT_BC / 8][4];
#pragma unroll
        for (int nt = 0; nt < ATT_BC / 8; ++nt) {
            s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
#pragma unroll
            for (int kk = 0; kk < HD / 16; ++kk) {
                u32 bf[2];
                att_frag_b(bf, Ks, LDK, nt * 8, kk * 16);
                tl_mma_16816(s[nt], qf[kk], bf);
            }
        }
        // Scale to log2 units, mask, and take the new row maxima.
        float mx[2] = {mrow[0], mrow[1]};
#pragma unroll
        for (int nt = 0; nt < ATT_BC / 8; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int col = j0 + nt * 8 + 2 * t4 + (e & 1);
                const float val = col <= qa[e >> 1] ? s[nt][e] * scale_log2 : -TL_INF;
                s[nt][e] = val;
                mx[e >> 1] = fmaxf(mx[e >> 1], val);
            }
        float alpha[2], base[2], rs[2] = {0.f, 0.f};
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
            base[r] = mx[r] == -TL_INF ? 0.f : mx[r];
            alpha[r] = exp2f(mrow[r] - base[r]);  // 0 while nothing has been seen
            mrow[r] = mx[r];
        }
#pragma unroll
        for (int nt = 0; nt < ATT_BC / 8; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const float p = exp2f(s[nt][e] - base[e >> 1]);
                s[nt][e] = p;
                rs[e >> 1] += p;
            }
        lrow[0] = lrow[0] * alpha[0] + rs[0];
        lrow[1] = lrow[1] * alpha[1] + rs[1];
#pragma unroll
        for (int d = 0; d < HD / 8; ++d) {
            o[d][0] *= alpha[0];
            o[d][1] *= alpha[0];
            o[d][2] *= alpha[1];
            o[d][3] *= alpha[1];
        }
        // O += P·V (P through the C→A identity, V from its transposed tile).
#pragma unroll
        for (int kk = 0; kk < ATT_BC / 16; ++kk) {
            u32 pa[4];
            pa[0] = tl_pack(s[2 * kk][0], s[2 * kk][1]);
            pa[1] = tl_pack(s[2 * kk][2], s[2 * kk][3]);
            pa[2] = tl_pack(s[2 * kk + 1][0], s[2 * kk + 1][1]);
            pa[3] = tl_pack(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
            for (int d = 0; d < HD / 8; ++d) {
                u32 bf[2];
                att_frag_b(bf, Vt, LDV, d * 8, kk * 16);
                tl_mma_16816(o[d], pa, bf);
            }
        }
    }

    // Normalise and store; lse = ln Σ exp(s) = ln2 · (max₂ + log₂ Σ).
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        lrow[r] += __shfl_xor_sync(0xffffffffu, lrow[r], 1);
        lrow[r] += __shfl_xor_sync(0xffffffffu, lrow[r], 2);
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        const int row = q0 + warp * 16 + g + 8 * r;
        if (row >= tq) continue;
        const float inv = lrow[r] > 0.f ? 1.f / lrow[r] : 0.f;
        bf16* orow = out + ((i64)b * tq + row) * qs + (i64)h * HD;
#pragma unroll
        for (int d = 0; d < HD / 8; ++d) tl_st32(orow + d * 8 + 2 * t4, tl_pack(o[d][2 * r] * inv, o[d][2 * r + 1] * inv));
        if (t4 == 0) lse[((i64)b * n_heads + h) * tq + row] = TL_LN2 * (mrow[r] + log2f(lrow[r]));
    }
}

extern "C" __global__ void __launch_bounds__(ATT_THREADS)
attn_fwd_hd32(const bf16* q, const bf16* k, const bf16* v, bf16* out, float* lse, int tq, int tk, int kv_stride,
              int n_heads, int n_kv_heads, float scale_log2) {
    attn_fwd_impl<32>(q, k, v, out, lse, tq, tk, kv_stride, n_heads, n_kv_heads, scale_log2);
}
extern "C" __global__ void __launch_bounds__(ATT_THREADS)
attn_fwd_hd64(const bf16* q, const bf16* k, const bf16* v, bf16* out, float* lse, int tq, int tk, int kv_stride,
              int n_heads, int n_kv_heads, float scale_log2) {
    attn_fwd_impl<64>(q, k, v, out, lse, tq, tk, kv_stride, n_heads, n_kv_heads, scale_log2);
}
extern "C" __global__ void __launch_bounds__(ATT_THREADS)
attn_fwd_hd128(const bf16* q, const bf16* k, const bf16* v, bf16* out, float* lse, int tq, int tk, int kv_stride,
               int n_heads, int n_kv_heads, float scale_log2) {
    attn_fwd_impl<128>(q, k, v, out, lse, tq, tk, kv_stride, n_heads, n_kv_heads, scale_log2);
}

// ---------------------------------------------------------------------------------------------
// Backward, step 1: D[b, h, t] = Σ_d dO·O (one warp per query row and head), f32.
extern "C" __global__ void attn_bwd_dot(const bf16* dout, const bf16* out, float* D, int batch, int tq, int n_heads,
                                        int head_dim) {
    const i64 task = (i64)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);  // (b, t, h) flattened
    const int lane = threadIdx.x & 31;
    if (task >= (i64)batch * tq * n_heads) return;  // whole warps leave together
    const int h = (int)(task % n_heads);
    const i64 bt = task / n_heads;
    const int t = (int)(bt % tq), b = (int)(bt / tq);
    const bf16* o = out + task * head_dim;
    const bf16* d = dout + task * head_dim;
    float acc = 0.f;
    for (int c = lane; c < head_dim; c += 32) acc += tl_f32(o[c]) * tl_f32(d[c]);
    acc = tl_warp_sum(acc);
    if (lane == 0) D[((i64)b * n_heads + h) * tq + t] = acc;
}

// Backward, step 2. grid = (ceil(tk / 64), n_kv_heads, batch), 128 threads; the block owns keys
// j0 .. j0 + 63 of one key/value head, warp w the 16 keys j0 + 16w ... It walks every query head
// of its group and every query tile that can see its keys, recomputing
//   Pᵀ = exp(K·Qᵀ·scale − lse),  dPᵀ = V·dOᵀ,  dSᵀ = Pᵀ ∘ (dPᵀ − D),
// accumulating dV += Pᵀ·dO and dK += dSᵀ·Q in registers (written once at the end, so dk and dv
// are overwritten, rows with no visible query included), and adding dQ += dS·K into the f32
// accumulator `dq_acc` ([batch, tq, n_heads·HD], zeroed beforehand) with atomics — the one
// place where the summation order is not fixed. Scale factors are applied by the callers
// (dk here, dq in attn_dq_finish).
template <int HD, int BQ>
__device__ __forceinline__ void attn_bwd_impl(const bf16* __restrict__ q, const bf16* __restrict__ k,
                                              const bf16* __restrict__ v, const bf16* __restrict__ dout,
                                              const float* __restrict__ lse, const float* __restrict__ D,
                                              float* __restrict__ dq_acc, bf16* __restrict__ dk,
                                              bf16* __restrict__ dv, int tq, int tk, int kv_stride, int n_heads,
                                              int n_kv_heads, float scale, float scale_log2) {
    constexpr int LDH = HD + 8;      // row-major [rows][HD]
    constexpr int LDQ = BQ + 8;      // transposed [HD][BQ]
    constexpr int LDC = ATT_BC + 8;  // [HD][64] (Kᵀ) and [BQ][64] (dS)
    constexpr int STRIPS = BQ / 16;             // 16-row strips of the dQ tile
    constexpr int WPS = 4 / STRIPS;             // warps per strip
    constexpr int DQ_TILES = HD / 8 / WPS;      // 8-column tiles of dQ per warp
    TL_DYN_SMEM(smem);
    bf16* Ks = reinterpret_cast<bf16*>(smem);  // [64][LDH]
    bf16* Vs = Ks + ATT_BC * LDH;              // [64][LDH]
    bf16* Kt = Vs + ATT_BC * LDH;              // [HD][LDC]
    bf16* Qs = Kt + HD * LDC;                  // [BQ][LDH]
    bf16* Qt = Qs + BQ * LDH;                  // [HD][LDQ]
    bf16* dOs = Qt + HD * LDQ;                 // [BQ][LDH]
    bf16* dOt = dOs + BQ * LDH;                // [HD][LDQ]
    bf16* dSs = dOt + HD * LDQ;                // [BQ][LDC]
    float* lse_s = reinterpret_cast<float*>(dSs + BQ * LDC);  // [BQ], log2 units
    float* D_s = lse_s + BQ;                                 // [BQ]

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
    const int j0 = blockIdx.x * ATT_BC, kvh = blockIdx.y, b = blockIdx.z;
    const int group = n_heads / n_kv_heads;
    const i64 qs = (i64)n_heads * HD, ks = (i64)n_kv_heads * HD;
    const int off = tk - tq;
    const bf16* kb = k + ((i64)b * kv_stride + j0) * ks + (i64)kvh * HD;
    const bf16* vb = v + ((i64)b * kv_stride + j0) * ks + (i64)kvh * HD;

    att_load_rows<HD>(Ks, LDH, kb, ks, ATT_BC, tk - j0);
    att_load_rows<HD>(Vs, LDH, vb, ks, ATT_BC, tk - j0);
    att_load_rows_t<HD>(Kt, LDC, kb, ks, ATT_BC, tk - j0);

    float dka[HD / 8][4], dva[HD / 8][4];
#pragma unroll
    for (int d = 0; d < HD / 8; ++d)
#pragma unroll
        for (int e = 0; e < 4; ++e) dka[d][e] = dva[d][e] = 0.f;
    const int jr[2] = {j0 + warp * 16 + g, j0 + warp * 16 + g + 8};  // this thread's key rows
    // Only queries at positions ≥ j0 see any key of the block.
    const int i_first = (max(0, j0 - off) / BQ) * BQ;

    for (int h = kvh * group; h < (kvh + 1) * group; ++h) {
        const bf16* qh = q + (i64)b * tq * qs + (i64)h * HD;
        const bf16* dh = dout + (i64)b * tq * qs + (i64)h * HD;
        const float* lse_h = lse + ((i64)b * n_heads + h) * tq;
        const float* D_h = D + ((i64)b * n_heads + h) * tq;
        for (int i0 = i_first; i0 < tq; i0 += BQ) {
            __syncthreads();  // the previous tile's shared data is no longer read
            att_load_rows<HD>(Qs, LDH, qh + (i64)i0 * qs, qs, BQ, tq - i0);
            att_load_rows_t<HD>(Qt, LDQ, qh + (i64)i0 * qs, qs, BQ, tq - i0);
            att_load_rows<HD>(dOs, LDH, dh + (i64)i0 * qs, qs, BQ, tq - i0);
            att_load_rows_t<HD>(dOt, LDQ, dh + (i64)i0 * qs, qs, BQ, tq - i0);
            for (int i = threadIdx.x; i < BQ; i += blockDim.x) {
                const bool ok = i0 + i < tq;
                lse_s[i] = ok ? lse_h[i0 + i] * TL_LOG2E : 0.f;
                D_s[i] = ok ? D_h[i0 + i] : 0.f;
            }
            __syncthreads();

            // Sᵀ = K·Qᵀ and dPᵀ = V·dOᵀ: 16 keys × BQ queries per warp.
            float st[BQ / 8][4], dpt[BQ / 8][4];
#pragma unroll
            for (int nt = 0; nt < BQ / 8; ++nt)
#pragma unroll
                for (int e = 0; e < 4; ++e) st[nt][e] = dpt[nt][e] = 0.f;
#pragma unroll
            for (int kk = 0; kk < HD / 16; ++kk) {
                u32 ka[4], va[4];
                att_frag_a(ka, Ks, LDH, warp * 16, kk * 16);
                att_frag_a(va, Vs, LDH, warp * 16, kk * 16);
#pragma unroll
                for (int nt = 0; nt < BQ / 8; ++nt) {
                    u32 bq[2], bo[2];
                    att_frag_b(bq, Qs, LDH, nt * 8, kk * 16);
                    att_frag_b(bo, dOs, LDH, nt * 8, kk * 16);
                    tl_mma_16816(st[nt], ka, bq);
                    tl_mma_16816(dpt[nt], va, bo);
                }
            }
            // Pᵀ (masked) and dSᵀ.
#pragma unroll
            for (int nt = 0; nt < BQ / 8; ++nt)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int ic = nt * 8 + 2 * t4 + (e & 1);
                    const int qi = i0 + ic;
                    const bool vis = qi < tq && jr[e >> 1] <= off + qi;
                    const float p = vis ? exp2f(st[nt][e] * scale_log2 - lse_s[ic]) : 0.f;
                    st[nt][e] = p;
                    dpt[nt][e] = p * (dpt[nt][e] - D_s[ic]);
                }
            // dV += Pᵀ·dO and dK += dSᵀ·Q (k = queries).
#pragma unroll
            for (int kq = 0; kq < BQ / 16; ++kq) {
                u32 pa[4], sa[4];
                pa[0] = tl_pack(st[2 * kq][0], st[2 * kq][1]);
                pa[1] = tl_pack(st[2 * kq][2], st[2 * kq][3]);
                pa[2] = tl_pack(st[2 * kq + 1][0], st[2 * kq + 1][1]);
                pa[3] = tl_pack(st[2 * kq + 1][2], st[2 * kq + 1][3]);
                sa[0] = tl_pack(dpt[2 * kq][0], dpt[2 * kq][1]);
                sa[1] = tl_pack(dpt[2 * kq][2], dpt[2 * kq][3]);
                sa[2] = tl_pack(dpt[2 * kq + 1][0], dpt[2 * kq + 1][1]);
                sa[3] = tl_pack(dpt[2 * kq + 1][2], dpt[2 * kq + 1][3]);
#pragma unroll
                for (int d = 0; d < HD / 8; ++d) {
                    u32 bo[2], bq[2];
                    att_frag_b(bo, dOt, LDQ, d * 8, kq * 16);
                    att_frag_b(bq, Qt, LDQ, d * 8, kq * 16);
                    tl_mma_16816(dva[d], pa, bo);
                    tl_mma_16816(dka[d], sa, bq);
                }
            }
            // dS (queries × keys) to shared memory for dQ.
#pragma unroll
            for (int nt = 0; nt < BQ / 8; ++nt)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int ic = nt * 8 + 2 * t4 + (e & 1);
                    dSs[ic * LDC + warp * 16 + g + 8 * (e >> 1)] = tl_bf16(dpt[nt][e]);
                }
            __syncthreads();
            // dQ tile += dS·K: warp w takes strip w % STRIPS, column tiles (w / STRIPS)·DQ_TILES...
            {
                const int strip = warp % STRIPS, c0 = (warp / STRIPS) * DQ_TILES;
                float dqf[DQ_TILES][4];
#pragma unroll
                for (int d = 0; d < DQ_TILES; ++d) dqf[d][0] = dqf[d][1] = dqf[d][2] = dqf[d][3] = 0.f;
#pragma unroll
                for (int kk = 0; kk < ATT_BC / 16; ++kk) {
                    u32 sa[4];
                    att_frag_a(sa, dSs, LDC, strip * 16, kk * 16);
#pragma unroll
                    for (int d = 0; d < DQ_TILES; ++d) {
                        u32 bk[2];
                        att_frag_b(bk, Kt, LDC, (c0 + d) * 8, kk * 16);
                        tl_mma_16816(dqf[d], sa, bk);
                    }
                }
#pragma unroll
                for (int r = 0; r < 2; ++r) {
                    const int qi = i0 + strip * 16 + g + 8 * r;
                    if (qi >= tq) continue;
                    float* dst = dq_acc + ((i64)b * tq + qi) * qs + (i64)h * HD;
#pragma unroll
                    for (int d = 0; d < DQ_TILES; ++d) {
                        const int col = (c0 + d) * 8 + 2 * t4;
                        atomicAdd(dst + col, dqf[d][2 * r]);
                        atomicAdd(dst + col + 1, dqf[d][2 * r + 1]);
                    }
                }
            }
        }
    }
    // dK (scaled) and dV for this warp's keys.
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        if (jr[r] >= tk) continue;
        bf16* dkr = dk + ((i64)b * kv_stride + jr[r]) * ks + (i64)kvh * HD;
        bf16* dvr = dv + ((i64)b * kv_stride + jr[r]) * ks + (i64)kvh * HD;
#pragma unroll
        for (int d = 0; d < HD / 8; ++d) {
            tl_st32(dkr + d * 8 + 2 * t4, tl_pack(dka[d][2 * r] * scale, dka[d][2 * r + 1] * scale));
            tl_st32(dvr + d * 8 + 2 * t4, tl_pack(dva[d][2 * r], dva[d][2 * r + 1]));
        }
    }
}

extern "C" __global__ void __launch_bounds__(ATT_THREADS)
attn_bwd_hd32(const bf16* q, const bf16* k, const bf16* v, const bf16* dout, const float* lse, const float* D,
              float* dq_acc, bf16* dk, bf16* dv, int tq, int tk, int kv_stride, int n_heads, int n_kv_heads,
              float scale, float scale_log2) {
    attn_bwd_impl<32, 64>(q, k, v, dout, lse, D, dq_acc, dk, dv, tq, tk, kv_stride, n_heads, n_kv_heads, scale,
                            scale_log2);
}
extern "C" __global__ void __launch_bounds__(ATT_THREADS)
attn_bwd_hd64(const bf16* q, const bf16* k, const bf16* v, const bf16* dout, const float* lse, const float* D,
              float* dq_acc, bf16* dk, bf16* dv, int tq, int tk, int kv_stride, int n_heads, int n_kv_heads,
              float scale, float scale_log2) {
    attn_bwd_impl<64, 64>(q, k, v, dout, lse, D, dq_acc, dk, dv, tq, tk, kv_stride, n_heads, n_kv_heads, scale,
                            scale_log2);
}
extern "C" __global__ void __launch_bounds__(ATT_THREADS)
attn_bwd_hd128(const bf16* q, const bf16* k, const bf16* v, const bf16* dout, const float* lse, const float* D,
              float* dq_acc, bf16* dk, bf16* dv, int tq, int tk, int kv_stride, int n_heads, int n_kv_heads,
              float scale, float scale_log2) {
    attn_bwd_impl<128, 32>(q, k, v, dout, lse, D, dq_acc, dk, dv, tq, tk, kv_stride, n_heads, n_kv_heads, scale,
                            scale_log2);
}

// Backward, step 3: dq = scale · dq_acc, to bf16.
extern "C" __global__ void attn_dq_finish(bf16* dq, const float* dq_acc, float scale, i64 n) {
    TL_FOR(i, n) dq[i] = tl_bf16(dq_acc[i] * scale);
}
