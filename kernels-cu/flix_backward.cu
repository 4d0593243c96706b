// FLix backward (DESIGN §4). flix_common.cuh is prepended to this file. From dY [T, d_out] and the
// saved X [T, d_in], H [T, R]:
//
//   dH_k[t, j]  = Σ_o dY[t, o] B_{k,f}[o, j]                  (f32; 0 where type k is absent)
//   dX[t, i]    = Σ_k s_k Σ_j dH_k[t, j] A_{k,f}[j, i]        written (then cuBLAS adds dY W) or added
//   dB_{k,v}   += Σ_{segments s using v} Σ_{t in s} dY[t]ᵀ H_k[t]
//   dA_{k,v}   += s_k Σ_{segments s using v} Σ_{t in s} dH_k[t]ᵀ X[t]
//
// Work decomposition (no float atomics anywhere: same inputs, same bits). For bf16 activations
// dH, dX and the weight-gradient partials run on the tensor cores (flix_mma.cuh; dA's partial
// rounds the f32 dH to bf16 as it stages it); the f32 entries use f32 FMA.
//   flix_dh_partial_*   = the shrink kernel with B in place of A: grid (tiles x ceil(R/32), 1, nsplit),
//                         d_out split nsplit ways into f32 partials.
//   flix_dh_finish_f32  sums the partials in order, zeroes absent types: dH in f32.
//   flix_dx_*           = the expand kernel with s_k A in place of B: grid (tiles, ceil(d_in/64)).
//   flix_db_partial_*   per segment s: P_s[o, c] = Σ_{t in s} dY[t, o] H[t, c]   [S, d_out, R] f32
//   flix_da_partial_*   per segment s: Q_s[c, i] = Σ_{t in s} dH[t, c] X[t, i]   [S, R, d_in] f32
//                       grid (segments, 64-row blocks, 64-column blocks); the token loop is the
//                       reduction, so a long segment is one block's serial work.
//   flix_grad_reduce_f32 per (type k, value v, element): sums the partials of the segments that
//                       use v in the plan's CSR order (users_ptr/users, ascending), scales, and
//                       adds into the f32 gradient. The host runs partial+reduce over groups of
//                       segments when the workspace would be too large; the grouping depends only
//                       on the shapes, so the summation order is still fixed.
//
// Cost at the reference shape (T = 8192 in 64 segments, d = 4096, R = 32, bf16):
//   dH: reads dY 67.1 MB (+ used f32 B ~19 MB), 2.15 GFLOP.   dX: writes 67.1 MB, 2.15 GFLOP.
//   dB partial: reads dY 67.1 MB + H 0.5 MB, writes 64 x 4096 x 32 x 4 B = 33.5 MB; 2.15 GFLOP.
//   dA partial: reads X 67.1 MB + dH 1 MB, writes 33.5 MB; 2.15 GFLOP.
//   reduces: read 2 x 33.5 MB, read+write used grads 2 x 2 x 19 MB.
//   Total ~ 500 MB -> ~150 us at 3.35 TB/s; 8.6 GFLOP -> ~145 us of f32 FMA on an H100.

extern "C" __global__ void __launch_bounds__(FLIX_THREADS)
flix_dh_partial_f32(const float* dY, int d_out, FlixTypes p, const int* slots,
                    const FlixTile* tiles, float* part, int num_tokens, int split_len) {
    flix_narrow<float, true>(dY, d_out, p, slots, tiles, part, num_tokens, split_len);
}

// At most 64 registers: four blocks per SM (the split targets four).
extern "C" __global__ void __launch_bounds__(FLIX_THREADS, 4)
flix_dh_partial_bf16(const __nv_bfloat16* dY, int d_out, FlixTypes p, const int* slots,
                     const FlixTile* tiles, float* part, int num_tokens, int split_len) {
    flix_narrow_mma<true>(dY, d_out, p, slots, tiles, part, num_tokens, split_len);
}

extern "C" __global__ void __launch_bounds__(FLIX_THREADS)
flix_dh_finish_f32(const float* part, int nsplit, int num_tokens, FlixTypes p, const int* slots,
                   const FlixTile* tiles, float* dH) {
    flix_narrow_finish<float>(part, nsplit, num_tokens, p, slots, tiles, dH, false);
}

extern "C" __global__ void __launch_bounds__(FLIX_THREADS)
flix_dx_f32(const float* dH, int d_in, FlixTypes p, const int* slots, const FlixTile* tiles,
            float* dX, int accumulate) {
    flix_wide<float, float, false>(dH, d_in, p, slots, tiles, dX, accumulate);
}

extern "C" __global__ void __launch_bounds__(FLIX_THREADS)
flix_dx_bf16(const float* dH, int d_in, FlixTypes p, const int* slots, const FlixTile* tiles,
             __nv_bfloat16* dX, int accumulate) {
    flix_wide_mma<float, false>(dH, d_in, p, slots, tiles, dX, accumulate);
}

extern "C" __global__ void __launch_bounds__(FLIX_THREADS)
flix_db_partial_f32(const float* dY, int d_out, const float* H, int R, const int* seg_starts,
                    int s0, float* out) {
    flix_seg_outer<float, float>(dY, d_out, H, R, seg_starts, s0, out);
}

extern "C" __global__ void __launch_bounds__(FLIX_THREADS)
flix_db_partial_bf16(const __nv_bfloat16* dY, int d_out, const __nv_bfloat16* H, int R,
                     const int* seg_starts, int s0, float* out) {
    flix_seg_outer_mma<__nv_bfloat16>(dY, d_out, H, R, seg_starts, s0, out);
}

extern "C" __global__ void __launch_bounds__(FLIX_THREADS)
flix_da_partial_f32(const float* dH, int R, const float* X, int d_in, const int* seg_starts,
                    int s0, float* out) {
    flix_seg_outer<float, float>(dH, R, X, d_in, seg_starts, s0, out);
}

extern "C" __global__ void __launch_bounds__(FLIX_THREADS)
flix_da_partial_bf16(const float* dH, int R, const __nv_bfloat16* X, int d_in,
                     const int* seg_starts, int s0, float* out) {
    flix_seg_outer_mma<float>(dH, R, X, d_in, seg_starts, s0, out);
}

// grad[v, row, col] += scale · Σ_{s in users(value_base + v), s0 <= s < s1}
//                              part[s - s0][(row + row_off) * part_ld + col + col_off]
// One launch per type: rows x cols is one value's gradient block (dB: d_out x r_k, dA: r_k x
// d_in). Grid: (ceil(rows*cols / 256), min(V_k, 65535)); values beyond grid.y by grid stride.
extern "C" __global__ void __launch_bounds__(FLIX_THREADS)
flix_grad_reduce_f32(float* grad, int num_values, int rows, int cols, const float* part,
                     long long part_seg_stride, int part_ld, int row_off, int col_off,
                     const int* users_ptr, const int* users, int value_base, int s0, int s1,
                     float scale) {
    const long long block_elems = (long long)rows * cols;
    const long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= block_elems) return;
    const int row = (int)(e / cols), col = (int)(e % cols);
    const long long offset = (long long)(row + row_off) * part_ld + col + col_off;
    for (int v = blockIdx.y; v < num_values; v += gridDim.y) {
        const int g = value_base + v;
        float acc = 0.f;
        bool any = false;
        for (int u = users_ptr[g]; u < users_ptr[g + 1]; ++u) {
            const int s = users[u];
            if (s < s0 || s >= s1) continue;
            acc += part[(long long)(s - s0) * part_seg_stride + offset];
            any = true;
        }
        if (any) grad[(long long)v * block_elems + e] += scale * acc;
    }
}
