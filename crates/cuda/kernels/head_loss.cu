// Softmax cross-entropy over one chunk of f32 logits rows (the LM head's GEMM writes them; the
// full [rows, vocab] logits never exist). One block per row: an online max/sum pass, the loss
// m + log Σ exp(z − m) − z[target], and with `dlogits` the gradient scale·(softmax − onehot)
// written in bf16 for the two backward GEMMs. Rows whose target is negative get loss 0 and a
// zero gradient.

extern "C" __global__ void xent_rows(const float* logits, int vocab, const int* targets, float* losses,
                                     bf16* dlogits, float scale) {
    __shared__ float sh[32];
    const i64 r = blockIdx.x;
    const float* z = logits + r * vocab;
    const int t = targets[r];
    bf16* dz = dlogits ? dlogits + r * vocab : nullptr;
    if (t < 0) {
        if (threadIdx.x == 0) losses[r] = 0.f;
        if (dz)
            for (int c = threadIdx.x; c < vocab; c += blockDim.x) dz[c] = tl_bf16(0.f);
        return;  // uniform across the block: no barrier is skipped by some threads only
    }
    // Per-thread online max and rescaled sum, then combined across the block.
    float m = -TL_INF, s = 0.f;
    for (int c = threadIdx.x; c < vocab; c += blockDim.x) {
        const float v = z[c];
        if (v > m) {
            s = s * expf(m - v) + 1.f;
            m = v;
        } else {
            s += expf(v - m);
        }
    }
    const float gm = tl_block_max(m, sh);
    s = (m == -TL_INF) ? 0.f : s * expf(m - gm);
    const float sum = tl_block_sum(s, sh);
    if (threadIdx.x == 0) losses[r] = gm + logf(sum) - z[t];
    if (dz) {
        const float inv = scale / sum;
        for (int c = threadIdx.x; c < vocab; c += blockDim.x) {
            float p = expf(z[c] - gm) * inv;
            if (c == t) p -= scale;
            dz[c] = tl_bf16(p);
        }
    }
}
