// FLix forward (DESIGN §4): shrink then expand. flix_common.cuh is prepended to this file.
//
//   shrink: H[t, off_k + j] = s_k Σ_i X[t, i] A_{k,f}[j, i]     (0 where type k is absent)
//   expand: Y[t, o] = Σ_k Σ_j H[t, off_k + j] B_{k,f}[o, j]     written (the layer's case: cuBLAS
//                                                               then adds X Wᵀ with beta = 1, so
//                                                               Y is read once) or added.
//   add_bias: Y[t, o] += bias[o].
//
// Work decomposition (the bf16 entries run the tensor-core versions of flix_mma.cuh and read the
// adapters' bf16 working copy, the f32 entries the FMA versions of flix_common.cuh and the f32
// masters; same grids and outputs)
//   flix_shrink_*        grid (tiles x ceil(R/32), 1, nsplit): each block reads its tile of X once per
//                        32 columns of H (once in all when R <= 32), for all K features of the
//                        tile's segment; d_in is split nsplit ways (f32 partials) so that a batch
//                        with few tiles still fills the GPU. Per 64-wide step the next step's X
//                        tile (registers) and A rows (bf16, 16-byte cp.async straight into the
//                        other stage of the shared operand tile) are in flight while this one
//                        computes.
//   flix_shrink_finish_* grid (tiles): sums the nsplit partials in order, applies s_k, zeroes
//                        absent types, casts to the activation dtype. Deterministic.
//   flix_expand_*        grid (tiles, ceil(d_out/256)): reduction over R (short) in chunks of 32,
//                        B's rows of the next chunk (bf16, 16-byte cp.async, two stages) in
//                        flight while this one computes; each 64 x 256 tile of Y written once
//                        (16-byte stores when d_out is a multiple of 8).
//
// Cost at the reference shape (T = 8192 in 64 segments, d_in = d_out = 4096, r = 16, K = 2, so
// R = 32; bf16; 128 tiles of 64 tokens, nsplit = 5):
//   shrink: 2·T·d_in·R = 2.15 GFLOP; bytes: X 67.1 MB + used A (bf16 copy, <= 74 values x
//           131 kB) 9.7 MB + partials 5 x 1.0 MB written and read + H 0.5 MB ~ 87 MB -> 26 us at
//           3.35 TB/s (it was 97 MB reading the f32 A).
//   expand: 2.15 GFLOP; bytes: Y 67.1 MB written + used B (bf16) 9.7 MB + H 0.5 MB ~ 77 MB
//           -> 23 us (was 87 MB).
//   The bf16 copy is written by the optimizer's pass (or, after any other change of the f32
//   adapters, by one cast before the first launch that reads it), not by these kernels.
// With f32 FMA (~60 TFLOP/s on an H100, less with the shared-memory loads each FMA needs) the
// arithmetic alone is > 36 us per op; on the tensor cores (bf16, ~990 TFLOP/s dense) it is ~2 us,
// so the bf16 kernels should be bound by memory. Measured on an H200 (BENCHMARKS.md), before they
// read the bf16 copy: shrink 0.119 ms and expand 0.101 ms at this shape, 3-4x this floor.

extern "C" __global__ void __launch_bounds__(FLIX_THREADS)
flix_shrink_f32(const float* X, int d_in, FlixTypes p, const int* slots, const FlixTile* tiles,
                float* part, int num_tokens, int split_len) {
    flix_narrow<float>(X, d_in, p, slots, tiles, part, num_tokens, split_len);
}

// At most 64 registers: four blocks per SM (the split targets four).
extern "C" __global__ void __launch_bounds__(FLIX_THREADS, 4)
flix_shrink_bf16(const __nv_bfloat16* X, int d_in, FlixTypes p, const int* slots,
                 const FlixTile* tiles, float* part, int num_tokens, int split_len) {
    flix_narrow_mma(X, d_in, p, slots, tiles, part, num_tokens, split_len);
}

extern "C" __global__ void __launch_bounds__(FLIX_THREADS)
flix_shrink_finish_f32(const float* part, int nsplit, int num_tokens, FlixTypes p,
                       const int* slots, const FlixTile* tiles, float* H) {
    flix_narrow_finish<float>(part, nsplit, num_tokens, p, slots, tiles, H, true);
}

extern "C" __global__ void __launch_bounds__(FLIX_THREADS)
flix_shrink_finish_bf16(const float* part, int nsplit, int num_tokens, FlixTypes p,
                        const int* slots, const FlixTile* tiles, __nv_bfloat16* H) {
    flix_narrow_finish<__nv_bfloat16>(part, nsplit, num_tokens, p, slots, tiles, H, true);
}

extern "C" __global__ void __launch_bounds__(FLIX_THREADS)
flix_expand_f32(const float* H, int d_out, FlixTypes p, const int* slots, const FlixTile* tiles,
                float* Y, int accumulate) {
    flix_wide<float, float, true>(H, d_out, p, slots, tiles, Y, accumulate);
}

// At most 128 registers (64 of them accumulators): two blocks per SM.
extern "C" __global__ void __launch_bounds__(FLIX_THREADS, 2)
flix_expand_bf16(const __nv_bfloat16* H, int d_out, FlixTypes p, const int* slots,
                 const FlixTile* tiles, __nv_bfloat16* Y, int accumulate) {
    flix_wide_mma<__nv_bfloat16, true>(H, d_out, p, slots, tiles, Y, accumulate);
}

// Y[t, o] += bias[o], grid-stride over the T x d_out elements.
template <typename T>
__device__ void flix_add_bias_body(T* y, const T* bias, long long n, int d_out) {
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < n;
         e += (long long)gridDim.x * blockDim.x) {
        y[e] = flix_from_f32<T>(flix_to_f32(y[e]) + flix_to_f32(bias[e % d_out]));
    }
}

extern "C" __global__ void flix_add_bias_f32(float* y, const float* bias, long long n, int d_out) {
    flix_add_bias_body<float>(y, bias, n, d_out);
}

extern "C" __global__ void flix_add_bias_bf16(__nv_bfloat16* y, const __nv_bfloat16* bias,
                                              long long n, int d_out) {
    flix_add_bias_body<__nv_bfloat16>(y, bias, n, d_out);
}
