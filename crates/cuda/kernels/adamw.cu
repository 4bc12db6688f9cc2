// Fused AdamW on the f32 master weights, as torch.optim.AdamW computes it (and the CPU backend):
//   g' = g·grad_scale;  p ·= decay;  m = b1·m + (1−b1)·g';  v = b2·v + (1−b2)·g'²;
//   p −= step_size · m / (sqrt(v)·inv_bc2 + eps)
// with decay = 1 − lr·wd, step_size = lr / (1 − b1^t), inv_bc2 = 1 / sqrt(1 − b2^t) computed on
// the host. The bf16 copy the passes read (`p16`, may be null) is refreshed in the same pass.

extern "C" __global__ void adamw(float* p, bf16* p16, const float* g, float* m, float* v, i64 n, float b1, float b2,
                                 float one_b1, float one_b2, float eps, float decay, float step_size, float inv_bc2,
                                 float grad_scale) {
    TL_FOR(i, n) {
        const float gi = g[i] * grad_scale;
        float pi = p[i] * decay;
        const float mi = b1 * m[i] + one_b1 * gi;
        const float vi = b2 * v[i] + one_b2 * gi * gi;
        pi -= step_size * mi / (sqrtf(vi) * inv_bc2 + eps);
        p[i] = pi;
        m[i] = mi;
        v[i] = vi;
        if (p16) p16[i] = tl_bf16(pi);
    }
}
