// Elementwise kernels and reductions over whole buffers: fill, scale, residual add, casts,
// the sum of squares behind the global gradient norm, and the non-finite check. Each comes in an
// f32 and a bf16 flavour (the storage types of the backend's buffers).

template <typename T>
__device__ __forceinline__ void fill_impl(T* x, float v, i64 n) {
    TL_FOR(i, n) tl_set(&x[i], v);
}
template <typename T>
__device__ __forceinline__ void scale_impl(T* x, float s, i64 n) {
    TL_FOR(i, n) tl_set(&x[i], tl_val(x[i]) * s);
}
template <typename T>
__device__ __forceinline__ void add_impl(T* dst, const T* src, i64 n) {
    TL_FOR(i, n) tl_set(&dst[i], tl_val(dst[i]) + tl_val(src[i]));
}
extern "C" __global__ void fill_f32(float* x, float v, i64 n) { fill_impl(x, v, n); }
extern "C" __global__ void fill_bf16(bf16* x, float v, i64 n) { fill_impl(x, v, n); }
extern "C" __global__ void scale_f32(float* x, float s, i64 n) { scale_impl(x, s, n); }
extern "C" __global__ void scale_bf16(bf16* x, float s, i64 n) { scale_impl(x, s, n); }
extern "C" __global__ void add_f32(float* dst, const float* src, i64 n) { add_impl(dst, src, n); }
extern "C" __global__ void add_bf16(bf16* dst, const bf16* src, i64 n) { add_impl(dst, src, n); }
extern "C" __global__ void cast_f32_bf16(bf16* dst, const float* src, i64 n) {
    TL_FOR(i, n) dst[i] = tl_bf16(src[i]);
}
extern "C" __global__ void cast_bf16_f32(float* dst, const bf16* src, i64 n) {
    TL_FOR(i, n) dst[i] = tl_f32(src[i]);
}

// Σ x² in f64: each block reduces a fixed strided subset (the grid size is chosen from n alone)
// into partial[blockIdx.x]; `reduce_f64` then adds the partials in index order. Deterministic.
template <typename T>
__device__ __forceinline__ void sumsq_impl(const T* x, i64 n, double* partial) {
    __shared__ double sh[32];
    double acc = 0.0;
    TL_FOR(i, n) {
        const double v = (double)tl_val(x[i]);
        acc += v * v;
    }
    acc = tl_block_sum_f64(acc, sh);
    if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}
extern "C" __global__ void sumsq_f32(const float* x, i64 n, double* partial) { sumsq_impl(x, n, partial); }
extern "C" __global__ void sumsq_bf16(const bf16* x, i64 n, double* partial) { sumsq_impl(x, n, partial); }

// One block: out[0] = Σ partial[0..n) in a fixed order.
extern "C" __global__ void reduce_f64(const double* partial, int n, double* out) {
    __shared__ double sh[32];
    double acc = 0.0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) acc += partial[i];
    acc = tl_block_sum_f64(acc, sh);
    if (threadIdx.x == 0) out[0] = acc;
}

// flag[0] = 1 if any element is NaN or infinite (flag must be zeroed first).
template <typename T>
__device__ __forceinline__ void nonfinite_impl(const T* x, i64 n, int* flag) {
    TL_FOR(i, n) if (!isfinite(tl_val(x[i]))) flag[0] = 1;
}
extern "C" __global__ void nonfinite_f32(const float* x, i64 n, int* flag) { nonfinite_impl(x, n, flag); }
extern "C" __global__ void nonfinite_bf16(const bf16* x, i64 n, int* flag) { nonfinite_impl(x, n, flag); }
