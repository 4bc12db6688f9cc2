// RMSNorm, one block per row: y = w · x / sqrt(mean(x²) + eps), the reciprocal root saved per row.
// Activations are bf16, the norm weight is read from its f32 master, all arithmetic is f32.
//
// Backward with g = dout · w:  dx += rstd·g − x·rstd³·(g·x)/dim,  dw += Σ_rows dout·x·rstd.
// The weight gradient is reduced without atomics: block b handles rows [b·rpb, (b+1)·rpb) and
// writes its per-column partial sums to partial[b, :]; `colsum_add` adds them in block order.

extern "C" __global__ void rmsnorm_fwd(bf16* out, float* rstd, const bf16* x, const float* w, int dim, float eps) {
    __shared__ float sh[32];
    const i64 r = blockIdx.x;
    const bf16* xr = x + r * dim;
    float ss = 0.f;
    for (int c = threadIdx.x; c < dim; c += blockDim.x) {
        const float v = tl_f32(xr[c]);
        ss += v * v;
    }
    ss = tl_block_sum(ss, sh);
    const float rs = 1.0f / sqrtf(ss / (float)dim + eps);
    if (threadIdx.x == 0) rstd[r] = rs;
    bf16* o = out + r * dim;
    for (int c = threadIdx.x; c < dim; c += blockDim.x) o[c] = tl_bf16(w[c] * (tl_f32(xr[c]) * rs));
}

// Dynamic shared memory: dim floats (this block's weight-gradient partial sums).
extern "C" __global__ void rmsnorm_bwd(bf16* dx, float* partial, const bf16* dout, const bf16* x, const float* w,
                                       const float* rstd, int dim, int rows, int rows_per_block) {
    __shared__ float sh[32];
    TL_DYN_SMEM(smem);
    float* pw = reinterpret_cast<float*>(smem);
    for (int c = threadIdx.x; c < dim; c += blockDim.x) pw[c] = 0.f;
    const int r0 = blockIdx.x * rows_per_block;
    const int r1 = min(rows, r0 + rows_per_block);
    const float inv_dim = 1.0f / (float)dim;
    for (int r = r0; r < r1; ++r) {
        const bf16* xr = x + (i64)r * dim;
        const bf16* dr = dout + (i64)r * dim;
        bf16* dxr = dx + (i64)r * dim;
        const float rs = rstd[r];
        float dot = 0.f;
        for (int c = threadIdx.x; c < dim; c += blockDim.x) dot += tl_f32(dr[c]) * w[c] * tl_f32(xr[c]);
        dot = tl_block_sum(dot, sh);
        const float k = rs * rs * rs * dot * inv_dim;
        for (int c = threadIdx.x; c < dim; c += blockDim.x) {
            const float xv = tl_f32(xr[c]), dv = tl_f32(dr[c]);
            dxr[c] = tl_bf16(tl_f32(dxr[c]) + rs * dv * w[c] - xv * k);
            pw[c] += dv * xv * rs;  // column c is only ever touched by this thread
        }
    }
    for (int c = threadIdx.x; c < dim; c += blockDim.x) partial[(i64)blockIdx.x * dim + c] = pw[c];
}

// dst[c] += Σ_{p < parts} partial[p, c], in order of p.
extern "C" __global__ void colsum_add(float* dst, const float* partial, int parts, int dim) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= dim) return;
    float acc = 0.f;
    for (int p = 0; p < parts; ++p) acc += partial[(i64)p * dim + c];
    dst[c] += acc;
}
