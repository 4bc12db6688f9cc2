// Token embedding. Forward gathers bf16 rows of the weight copy; backward adds the bf16 output
// gradient into the f32 table gradient without atomics: the host groups the rows by token id
// (`uniq` ids, `starts` into `order`, rows listed in ascending order), one block per distinct
// id sums its rows in that fixed order, so the result is deterministic.

// grid.x = rows; out[r, :] = table[ids[r], :].
extern "C" __global__ void embedding_fwd(bf16* out, const bf16* table, const int* ids, int dim) {
    const i64 r = blockIdx.x;
    const bf16* src = table + (i64)ids[r] * dim;
    bf16* dst = out + r * dim;
    for (int c = threadIdx.x; c < dim; c += blockDim.x) dst[c] = src[c];
}

// grid.x = number of distinct ids; dtable[uniq[u], :] += Σ_{k in starts[u]..starts[u+1]} dout[order[k], :].
extern "C" __global__ void embedding_bwd(float* dtable, const bf16* dout, const int* uniq, const int* starts,
                                         const int* order, int dim) {
    const int u = blockIdx.x;
    const int k0 = starts[u], k1 = starts[u + 1];
    float* dst = dtable + (i64)uniq[u] * dim;
    for (int c = threadIdx.x; c < dim; c += blockDim.x) {
        float acc = 0.f;
        for (int k = k0; k < k1; ++k) acc += tl_f32(dout[(i64)order[k] * dim + c]);
        dst[c] += acc;
    }
}
