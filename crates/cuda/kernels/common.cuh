// Shared helpers, prepended to every kernel file before compilation (NVRTC) or emulation.
//
// Conventions: tensors are stored in bf16 (activations, weight copies) or f32 (master weights,
// gradients, optimizer state, statistics); all arithmetic and every reduction is done in f32
// (f64 for the gradient norm). Kernels are `extern "C"` so their names need no mangling.
// Reductions are written so that their summation order depends only on the launch shape, never
// on timing (the same inputs give the same bits), except where a comment says otherwise.

#ifndef TL_EMU
#include <cuda_bf16.h>
#define TL_DYN_SMEM(name) extern __shared__ __align__(16) unsigned char name[]
#endif

typedef __nv_bfloat16 bf16;
typedef unsigned int u32;
typedef long long i64;

// +∞ without <math.h> (NVRTC has no INFINITY).
#define TL_INF __int_as_float(0x7f800000)
#define TL_LOG2E 1.4426950408889634f
#define TL_LN2 0.6931471805599453f

__device__ __forceinline__ float tl_f32(bf16 x) { return __bfloat162float(x); }
// Round to nearest even, as every conversion to bf16 in this backend does.
__device__ __forceinline__ bf16 tl_bf16(float x) { return __float2bfloat16(x); }

// Overloads so templates can read and write either storage type.
__device__ __forceinline__ float tl_val(float x) { return x; }
__device__ __forceinline__ float tl_val(bf16 x) { return tl_f32(x); }
__device__ __forceinline__ void tl_set(float* p, float v) { *p = v; }
__device__ __forceinline__ void tl_set(bf16* p, float v) { *p = tl_bf16(v); }

// Two bf16 values in one 32-bit register, `lo` in the low half (the element order mma expects).
__device__ __forceinline__ u32 tl_pack(float lo, float hi) {
    return (u32)__bfloat16_as_ushort(tl_bf16(lo)) | ((u32)__bfloat16_as_ushort(tl_bf16(hi)) << 16);
}
__device__ __forceinline__ float tl_lo(u32 v) { return tl_f32(__ushort_as_bfloat16((unsigned short)(v & 0xffffu))); }
__device__ __forceinline__ float tl_hi(u32 v) { return tl_f32(__ushort_as_bfloat16((unsigned short)(v >> 16))); }

// 32-bit load/store of a bf16 pair (the address must be 4-byte aligned).
__device__ __forceinline__ u32 tl_ld32(const bf16* p) { return *reinterpret_cast<const u32*>(p); }
__device__ __forceinline__ void tl_st32(bf16* p, u32 v) { *reinterpret_cast<u32*>(p) = v; }

__device__ __forceinline__ float tl_warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ double tl_warp_sum_f64(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float tl_warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
// `sh` is 32 floats of shared memory; the function may be called repeatedly with the same `sh`.
__device__ __forceinline__ float tl_block_sum(float v, float* sh) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = tl_warp_sum(v);
    __syncthreads();  // earlier readers of sh are done
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    float r = lane < nw ? sh[lane] : 0.f;
    return tl_warp_sum(r);
}
__device__ __forceinline__ float tl_block_max(float v, float* sh) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = tl_warp_max(v);
    __syncthreads();
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    float r = lane < nw ? sh[lane] : -TL_INF;
    return tl_warp_max(r);
}
__device__ __forceinline__ double tl_block_sum_f64(double v, double* sh) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = tl_warp_sum_f64(v);
    __syncthreads();
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    double r = lane < nw ? sh[lane] : 0.0;
    return tl_warp_sum_f64(r);
}

// Tensor-core tile product on sm_80+: c (16×8, f32) += a (16×16, bf16, row) · b (16×8, bf16, col).
// Register layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16"), with g = lane / 4 and
// t = lane % 4:
//   a[0] = A[g][2t..2t+1]     a[1] = A[g+8][2t..2t+1]   a[2] = A[g][2t+8..2t+9]   a[3] = A[g+8][2t+8..2t+9]
//   b[0] = B[2t..2t+1][g]     b[1] = B[2t+8..2t+9][g]
//   c[0..1] = C[g][2t..2t+1]  c[2..3] = C[g+8][2t..2t+1]
#ifndef TL_EMU
__device__ __forceinline__ void tl_mma_16816(float c[4], const u32 a[4], const u32 b[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
#endif

// Grid-stride loop over [0, n).
#define TL_FOR(i, n) \
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (i64)gridDim.x * blockDim.x)
