// Shared pieces of the FLix kernels (DESIGN §1, §4, §5): the per-type parameter struct, dtype
// helpers, and the three GEMM-shaped building blocks every FLix op is made of. This header is
// prepended to flix_forward.cu and flix_backward.cu by kernels-cu/src/lib.rs (NVRTC compiles one
// string per module), so each module has its own copy of the templates.
//
// Notation: T tokens packed row-major in segments; K <= 8 feature types; type k has rank r_k,
// scale s_k and owns columns col_off[k]..col_off[k+1] of the low-rank activations H [T, R];
// slots[s*K + k] is the value id of type k in segment s, or -1 (absent). Adapters of type k:
// A_k [V_k, r_k, d_in], B_k [V_k, d_out, r_k], always f32 (the master copy, DESIGN §4: kernels
// read it directly; at r = 16 the adapters are a few MB, small next to the activations).
//
// Work unit: a tile of at most FLIX_TILE_M tokens that never crosses a segment, so every token of
// a tile uses the same K adapters (the host derives the tile list from the plan's segment starts).
// Everything accumulates in f32: these FMA versions serve f32 activations; bf16 activations run
// the tensor-core versions of flix_mma.cuh (same grids and outputs).
#include <cuda_bf16.h>

#define FLIX_MAX_TYPES 8
#define FLIX_TILE_M 64
#define FLIX_THREADS 256

// Per-type parameters, passed by value. Mirrors `FlixTypesParam` in flix-kernels/src/flix/
// cuda/params.rs (#[repr(C)]; a host test checks size and offsets).
struct FlixTypes {
    const float* a[FLIX_MAX_TYPES];  // A_k base pointer, [V_k, r_k, d_in]
    const float* b[FLIX_MAX_TYPES];  // B_k base pointer, [V_k, d_out, r_k]
    float scale[FLIX_MAX_TYPES];    // s_k = alpha_k / r_k
    int rank[FLIX_MAX_TYPES];       // r_k
    int col_off[FLIX_MAX_TYPES + 1];
    int num_types;                  // K
    int total_rank;                 // R
};

// Mirrors flix_core::plan::Tile (#[repr(C)], three u32).
struct FlixTile {
    unsigned segment, start, end;
};

__device__ __forceinline__ float flix_to_f32(float x) { return x; }
__device__ __forceinline__ float flix_to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T flix_from_f32(float x);
template <> __device__ __forceinline__ float flix_from_f32<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 flix_from_f32<__nv_bfloat16>(float x) {
    return __float2bfloat16_rn(x);
}

// The type owning column c of H (K <= 8: a short linear scan).
__device__ __forceinline__ int flix_type_of_col(const FlixTypes& p, int c) {
    int k = 0;
    while (k + 1 < p.num_types && c >= p.col_off[k + 1]) ++k;
    return k;
}

// ---------------------------------------------------------------------------------------------
// narrow: part[z, t, c] = Σ_{i in split z} L[t, i] · W_c[i] for the tokens t of one tile and 32
// columns c of H. The long dimension D (d_in for shrink, d_out for dH) is split over grid.z
// (split_len elements each, a multiple of 64): f32 partials, summed in fixed order by
// narrow_finish. Grid: (tiles x ceil(R / 32), 1, nsplit), 256 threads, each 4 tokens x 2
// columns.
//   FROM_B = false (shrink): W_c[i] = A_{k,f}[j, i]   (contiguous along i)
//   FROM_B = true  (dH):     W_c[o] = B_{k,f}[o, j]   (stride r_k along o)
// Columns of absent types read as 0 (narrow_finish writes 0 there anyway).
template <typename T, bool FROM_B>
__device__ void flix_narrow(const T* __restrict__ L, int D, const FlixTypes& p,
                            const int* __restrict__ slots, const FlixTile* __restrict__ tiles,
                            float* __restrict__ part, int num_tokens, int split_len) {
    constexpr int M = FLIX_TILE_M, NC = 32, KC = 64;
    __shared__ float Ls[KC][M + 1];
    __shared__ float Ws[KC][NC + 1];
    __shared__ const float* wrow[NC];
    __shared__ int wstride[NC];

    // blockIdx.x walks (tile, column block) with the column block fastest, so that the blocks
    // reading one tile of L run together and all but the first find it in L2.
    const int R = p.total_rank;
    const int col_blocks = (R + NC - 1) / NC;
    const FlixTile tile = tiles[blockIdx.x / col_blocks];
    const int rows = (int)(tile.end - tile.start);
    const int c0 = (blockIdx.x % col_blocks) * NC;
    const int i_begin = blockIdx.z * split_len;
    const int i_end = min(D, i_begin + split_len);
    const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;

    if (tid < NC) {
        const int c = c0 + tid;
        const float* row = nullptr;
        int stride = 0;
        if (c < R) {
            const int k = flix_type_of_col(p, c);
            const int j = c - p.col_off[k];
            const int r = p.rank[k];
            const int f = slots[(long long)tile.segment * p.num_types + k];
            if (f >= 0) {
                if (FROM_B) {
                    row = p.b[k] + (long long)f * D * r + j;
                    stride = r;
                } else {
                    row = p.a[k] + ((long long)f * r + j) * D;
                    stride = 1;
                }
            }
        }
        wrow[tid] = row;
        wstride[tid] = stride;
    }
    __syncthreads();

    float acc[4][2];
#pragma unroll
    for (int a = 0; a < 4; ++a)
#pragma unroll
        for (int b = 0; b < 2; ++b) acc[a][b] = 0.f;

    for (int i0 = i_begin; i0 < i_end; i0 += KC) {
        for (int e = tid; e < M * KC; e += FLIX_THREADS) {
            const int t = e / KC, i = e % KC;
            float v = 0.f;
            if (t < rows && i0 + i < i_end) v = flix_to_f32(L[(long long)(tile.start + t) * D + i0 + i]);
            Ls[i][t] = v;
        }
        for (int e = tid; e < NC * KC; e += FLIX_THREADS) {
            // B: neighbouring threads take neighbouring j (contiguous in B); A: neighbouring i.
            const int c = FROM_B ? e % NC : e / KC;
            const int i = FROM_B ? e / NC : e % KC;
            const float* row = wrow[c];
            float v = 0.f;
            if (row != nullptr && i0 + i < i_end) v = row[(long long)(i0 + i) * wstride[c]];
            Ws[i][c] = v;
        }
        __syncthreads();
#pragma unroll 8
        for (int kk = 0; kk < KC; ++kk) {
            float x[4], w[2];
#pragma unroll
            for (int a = 0; a < 4; ++a) x[a] = Ls[kk][ty + 16 * a];
#pragma unroll
            for (int b = 0; b < 2; ++b) w[b] = Ws[kk][tx + 16 * b];
#pragma unroll
            for (int a = 0; a < 4; ++a)
#pragma unroll
                for (int b = 0; b < 2; ++b) acc[a][b] = fmaf(x[a], w[b], acc[a][b]);
        }
        __syncthreads();
    }

#pragma unroll
    for (int a = 0; a < 4; ++a) {
        const int t = ty + 16 * a;
#pragma unroll
        for (int b = 0; b < 2; ++b) {
            const int c = c0 + tx + 16 * b;
            if (t < rows && c < R)
                part[((long long)blockIdx.z * num_tokens + tile.start + t) * R + c] = acc[a][b];
        }
    }
}

// narrow_finish: out[t, c] = (scale ? s_k : 1) · Σ_z part[z, t, c], in split order; 0 where type
// k is absent from t's segment. Grid: one block per tile.
template <typename OutT>
__device__ void flix_narrow_finish(const float* __restrict__ part, int nsplit, int num_tokens,
                                   const FlixTypes& p, const int* __restrict__ slots,
                                   const FlixTile* __restrict__ tiles, OutT* __restrict__ out,
                                   bool apply_scale) {
    const FlixTile tile = tiles[blockIdx.x];
    const int R = p.total_rank;
    const int n = (int)(tile.end - tile.start) * R;
    for (int e = threadIdx.x; e < n; e += blockDim.x) {
        const long long t = tile.start + e / R;
        const int c = e % R;
        const int k = flix_type_of_col(p, c);
        const int f = slots[(long long)tile.segment * p.num_types + k];
        float v = 0.f;
        if (f >= 0) {
            for (int z = 0; z < nsplit; ++z) v += part[((long long)z * num_tokens + t) * R + c];
            if (apply_scale) v *= p.scale[k];
        }
        out[t * R + c] = flix_from_f32<OutT>(v);
    }
}

// ---------------------------------------------------------------------------------------------
// wide: out[t, n] = Σ_c H[t, c] · W_c[n], written (accumulate = 0: the FLix layer's case, so that
// cuBLAS adds the base GEMM on top with beta = 1) or added (accumulate = 1), for the tokens of one
// tile and 64 output columns. The reduction runs over R (short) in chunks of 32. Grid: (tiles,
// ceil(N / 64)), 256 threads, each 4 tokens x 4 columns.
//   FROM_B = true  (expand): W_c[o] = B_{k,f}[o, j]          (H already holds s_k)
//   FROM_B = false (dX):     W_c[i] = s_k · A_{k,f}[j, i]
// Absent types contribute nothing (their W reads as 0).
template <typename HT, typename T, bool FROM_B>
__device__ void flix_wide(const HT* __restrict__ H, int N, const FlixTypes& p,
                          const int* __restrict__ slots, const FlixTile* __restrict__ tiles,
                          T* __restrict__ out, int accumulate) {
    constexpr int M = FLIX_TILE_M, NB = 64, KC = 32;
    __shared__ float Hs[KC][M + 1];
    __shared__ float Ws[KC][NB + 1];
    __shared__ const float* wrow[KC];
    __shared__ int wstride[KC];
    __shared__ float wscale[KC];

    const FlixTile tile = tiles[blockIdx.x];
    const int rows = (int)(tile.end - tile.start);
    const int R = p.total_rank;
    const int n0 = blockIdx.y * NB;
    const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;

    float acc[4][4];
#pragma unroll
    for (int a = 0; a < 4; ++a)
#pragma unroll
        for (int b = 0; b < 4; ++b) acc[a][b] = 0.f;

    for (int c0 = 0; c0 < R; c0 += KC) {
        if (tid < KC) {
            const int c = c0 + tid;
            const float* row = nullptr;
            int stride = 0;
            float scale = 0.f;
            if (c < R) {
                const int k = flix_type_of_col(p, c);
                const int j = c - p.col_off[k];
                const int r = p.rank[k];
                const int f = slots[(long long)tile.segment * p.num_types + k];
                if (f >= 0) {
                    if (FROM_B) {
                        row = p.b[k] + (long long)f * N * r + j;
                        stride = r;
                        scale = 1.f;
                    } else {
                        row = p.a[k] + ((long long)f * r + j) * N;
                        stride = 1;
                        scale = p.scale[k];
                    }
                }
            }
            wrow[tid] = row;
            wstride[tid] = stride;
            wscale[tid] = scale;
        }
        __syncthreads();
        for (int e = tid; e < M * KC; e += FLIX_THREADS) {
            const int t = e / KC, cc = e % KC;
            float v = 0.f;
            if (t < rows && c0 + cc < R) v = flix_to_f32(H[(long long)(tile.start + t) * R + c0 + cc]);
            Hs[cc][t] = v;
        }
        for (int e = tid; e < KC * NB; e += FLIX_THREADS) {
            const int cc = FROM_B ? e % KC : e / NB;
            const int n = FROM_B ? e / KC : e % NB;
            const float* row = wrow[cc];
            float v = 0.f;
            if (row != nullptr && n0 + n < N)
                v = row[(long long)(n0 + n) * wstride[cc]] * wscale[cc];
            Ws[cc][n] = v;
        }
        __syncthreads();
#pragma unroll 8
        for (int kk = 0; kk < KC; ++kk) {
            float h[4], w[4];
#pragma unroll
            for (int a = 0; a < 4; ++a) h[a] = Hs[kk][ty + 16 * a];
#pragma unroll
            for (int b = 0; b < 4; ++b) w[b] = Ws[kk][tx + 16 * b];
#pragma unroll
            for (int a = 0; a < 4; ++a)
#pragma unroll
                for (int b = 0; b < 4; ++b) acc[a][b] = fmaf(h[a], w[b], acc[a][b]);
        }
        __syncthreads();
    }

#pragma unroll
    for (int a = 0; a < 4; ++a) {
        const int t = ty + 16 * a;
#pragma unroll
        for (int b = 0; b < 4; ++b) {
            const int n = n0 + tx + 16 * b;
            if (t < rows && n < N) {
                T* dst = out + (long long)(tile.start + t) * N + n;
                *dst = flix_from_f32<T>(accumulate ? acc[a][b] + flix_to_f32(*dst) : acc[a][b]);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// seg_outer: out[s - s0, m, n] = Σ_{t in segment s} L[t, m] · Rm[t, n] (f32), the per-segment
// partial of a weight gradient. Grid: (segments s0.., ceil(LM / 64), ceil(LN / 64)), 256 threads,
// each 4 x 4 outputs; tokens in chunks of 32. Zero-length segments write nothing: the plan's user
// lists never name them, so the reduce never reads their slot.
template <typename LT, typename RT>
__device__ void flix_seg_outer(const LT* __restrict__ L, int LM, const RT* __restrict__ Rm, int LN,
                               const int* __restrict__ seg_starts, int s0,
                               float* __restrict__ out) {
    constexpr int MB = 64, NB = 64, KT = 32;
    __shared__ float Ls[KT][MB];
    __shared__ float Rs[KT][NB];
    const int s = s0 + blockIdx.x;
    const int t_begin = seg_starts[s], t_end = seg_starts[s + 1];
    if (t_begin == t_end) return;
    const int m0 = blockIdx.y * MB, n0 = blockIdx.z * NB;
    const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;

    float acc[4][4];
#pragma unroll
    for (int a = 0; a < 4; ++a)
#pragma unroll
        for (int b = 0; b < 4; ++b) acc[a][b] = 0.f;

    for (int t0 = t_begin; t0 < t_end; t0 += KT) {
        for (int e = tid; e < KT * MB; e += FLIX_THREADS) {
            const int tt = e / MB, m = e % MB;
            float v = 0.f;
            if (t0 + tt < t_end && m0 + m < LM) v = flix_to_f32(L[(long long)(t0 + tt) * LM + m0 + m]);
            Ls[tt][m] = v;
        }
        for (int e = tid; e < KT * NB; e += FLIX_THREADS) {
            const int tt = e / NB, n = e % NB;
            float v = 0.f;
            if (t0 + tt < t_end && n0 + n < LN) v = flix_to_f32(Rm[(long long)(t0 + tt) * LN + n0 + n]);
            Rs[tt][n] = v;
        }
        __syncthreads();
#pragma unroll 8
        for (int kk = 0; kk < KT; ++kk) {
            float l[4], r[4];
#pragma unroll
            for (int a = 0; a < 4; ++a) l[a] = Ls[kk][ty + 16 * a];
#pragma unroll
            for (int b = 0; b < 4; ++b) r[b] = Rs[kk][tx + 16 * b];
#pragma unroll
            for (int a = 0; a < 4; ++a)
#pragma unroll
                for (int b = 0; b < 4; ++b) acc[a][b] = fmaf(l[a], r[b], acc[a][b]);
        }
        __syncthreads();
    }

    float* dst = out + (long long)blockIdx.x * LM * LN;
#pragma unroll
    for (int a = 0; a < 4; ++a) {
        const int m = m0 + ty + 16 * a;
#pragma unroll
        for (int b = 0; b < 4; ++b) {
            const int n = n0 + tx + 16 * b;
            if (m < LM && n < LN) dst[(long long)m * LN + n] = acc[a][b];
        }
    }
}
