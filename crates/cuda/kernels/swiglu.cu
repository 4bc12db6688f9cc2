// SwiGLU: h = silu(g) · u with silu(g) = g·σ(g), elementwise on bf16 with f32 math.
// Backward: dg = dh·u·σ(g)·(1 + g·(1 − σ(g))), du = dh·silu(g).

__device__ __forceinline__ float tl_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

extern "C" __global__ void swiglu_fwd(bf16* h, const bf16* g, const bf16* u, i64 n) {
    TL_FOR(i, n) {
        const float gv = tl_f32(g[i]);
        h[i] = tl_bf16(gv * tl_sigmoid(gv) * tl_f32(u[i]));
    }
}

extern "C" __global__ void swiglu_bwd(bf16* dg, bf16* du, const bf16* dh, const bf16* g, const bf16* u, i64 n) {
    TL_FOR(i, n) {
        const float gv = tl_f32(g[i]), uv = tl_f32(u[i]), d = tl_f32(dh[i]);
        const float s = tl_sigmoid(gv);
        du[i] = tl_bf16(d * gv * s);
        dg[i] = tl_bf16(d * uv * s * (1.0f + gv * (1.0f - s)));
    }
}
