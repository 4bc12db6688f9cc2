// Rotary embedding in place on bf16 [rows, n_heads·head_dim], rotate-half convention: within a
// head the pairs are (x[i], x[i + d/2]), rotated by the angle of position pos0 + row % seq_len.
// `table` is the f32 [max_pos, d/2] cosine table followed by the sine table. `inverse` rotates
// backwards (the backward pass). One thread per pair.

extern "C" __global__ void rope(bf16* x, const float* table, i64 rows, int n_heads, int head_dim, int seq_len,
                                int pos0, int max_pos, int inverse) {
    const int half = head_dim / 2;
    const i64 pairs = rows * n_heads * half;
    const float* cos_t = table;
    const float* sin_t = table + (i64)max_pos * half;
    TL_FOR(e, pairs) {
        const int i = (int)(e % half);
        const i64 rh = e / half;  // row * n_heads + head
        const i64 r = rh / n_heads;
        const int pos = pos0 + (int)(r % seq_len);
        const float c = cos_t[(i64)pos * half + i];
        const float s = inverse ? -sin_t[(i64)pos * half + i] : sin_t[(i64)pos * half + i];
        bf16* hp = x + rh * head_dim;
        const float x0 = tl_f32(hp[i]), x1 = tl_f32(hp[i + half]);
        hp[i] = tl_bf16(x0 * c - x1 * s);
        hp[i + half] = tl_bf16(x1 * c + x0 * s);
    }
}
