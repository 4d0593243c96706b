// Shared pieces of the FLix kernels (DESIGN §1, §4, §5): the per-type parameter struct, dtype
// helpers, and the GEMM-shaped building blocks every FLix op is made of (narrow: shrink; wide:
// expand and dX; by runs: dH with dB, and dA). This header is
// prepended to flix_forward.cu and flix_backward.cu by kernels-cu/src/lib.rs (NVRTC compiles one
// string per module), so each module has its own copy of the templates.
//
// Notation: T tokens packed row-major in segments; K <= 8 feature types; type k has rank r_k,
// scale s_k and owns columns col_off[k]..col_off[k+1] of the low-rank activations H [T, R];
// slots[s*K + k] is the value id of type k in segment s, or -1 (absent). Adapters of type k:
// A_k [V_k, r_k, d_in], B_k [V_k, d_out, r_k]: the f32 master copy for the f32 entries, its bf16
// working copy for the bf16 entries (DESIGN §4: the launcher keeps the copy current and passes
// the pointers of the copy the entry reads; at r = 16 the adapters are a few MB, small next to
// the activations).
//
// Work unit: a tile of at most FLIX_TILE_M tokens that never crosses a segment, so every token of
// a tile uses the same K adapters (the host derives the tile list from the plan's segment starts).
// Everything accumulates in f32: these FMA versions serve f32 activations; bf16 activations run
// the tensor-core versions of flix_mma.cuh (same grids and outputs).
#include <cuda_bf16.h>

#define FLIX_MAX_TYPES 8
#define FLIX_TILE_M 64
#define FLIX_THREADS 256
// Tiles per run of the weight-gradient kernels (flix_dh_db, flix_da): a block owns one run.
#define FLIX_RUN_TILES 2

// Per-type parameters, passed by value. Mirrors `FlixTypesParam` in flix-kernels/src/flix/
// cuda/params.rs (#[repr(C)]; a host test checks size and offsets).
// The adapter pointers are untyped: f32 (masters) for the f32 entries, bf16 (working copies) for
// the bf16 entries; read them through flix_adapter.
struct FlixTypes {
    const void* a[FLIX_MAX_TYPES];  // A_k base pointer, [V_k, r_k, d_in]
    const void* b[FLIX_MAX_TYPES];  // B_k base pointer, [V_k, d_out, r_k]
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

// Per tile, where the weight-gradient kernels flush their in-block sums (params::run_flushes).
// Within a run of FLIX_RUN_TILES tiles, a type's "stretch" is a maximal sequence of consecutive
// tiles with the same value of that type; bit k of `ends` says that type k's stretch ends at this
// tile (the next tile of the run has another value, or the run ends). Its sum is then dropped
// when the type is absent, added straight into the value's gradient when bit k of `direct` is
// set (the value's only stretch in the batch), and otherwise written to partial slot `slot`;
// then it restarts from 0. `slot` is -1 when no stretch ends here into a slot.
struct FlixFlush {
    int slot, ends, direct;
};

// The f32 gradients a direct flush adds into: dB_k [V_k, d_out, r_k] or dA_k [V_k, r_k, d_in].
// Mirrors `FlixGradsParam` in params.rs.
struct FlixGrads {
    float* g[FLIX_MAX_TYPES];
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

// Type k's A or B (`ptrs` = p.a or p.b) as the entry reads it: W = float (the f32 masters, FMA
// entries) or __nv_bfloat16 (the bf16 working copies, tensor-core entries).
template <typename W>
__device__ __forceinline__ const W* flix_adapter(const void* const (&ptrs)[FLIX_MAX_TYPES], int k) {
    return static_cast<const W*>(ptrs[k]);
}

// Where column c of H reads its type's adapters in a segment: type k, row j = c - col_off[k]
// of the type's rank r, and the segment's value f of type k (-1: absent).
struct FlixCol {
    int k, j, r, f;
};
__device__ __forceinline__ FlixCol flix_col(const FlixTypes& p, const int* __restrict__ slots,
                                            unsigned segment, int c) {
    FlixCol x;
    x.k = flix_type_of_col(p, c);
    x.j = c - p.col_off[x.k];
    x.r = p.rank[x.k];
    x.f = slots[(long long)segment * p.num_types + x.k];
    return x;
}

// ---------------------------------------------------------------------------------------------
// narrow (shrink): part[z, t, c] = Σ_{i in split z} L[t, i] · A_{k,f}[j, i] for the tokens t of one
// tile and 32 columns c = col_off[k] + j of H. d_in is split over grid.z (split_len elements
// each, a multiple of 64): f32 partials, summed in fixed order by narrow_finish. Grid: (tiles x
// ceil(R / 32), 1, nsplit), 256 threads, each 4 tokens x 2 columns. Columns of absent types read
// as 0 (narrow_finish writes 0 there anyway). (dH, the same product with B, is computed together
// with dB by flix_dh_db below.)
template <typename T>
__device__ void flix_narrow(const T* __restrict__ L, int D, const FlixTypes& p,
                            const int* __restrict__ slots, const FlixTile* __restrict__ tiles,
                            float* __restrict__ part, int num_tokens, int split_len) {
    constexpr int M = FLIX_TILE_M, NC = 32, KC = 64;
    __shared__ float Ls[KC][M + 1];
    __shared__ float Ws[KC][NC + 1];
    __shared__ const float* wrow[NC];

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
        if (c < R) {
            const int k = flix_type_of_col(p, c);
            const int f = slots[(long long)tile.segment * p.num_types + k];
            if (f >= 0) row = flix_adapter<float>(p.a, k) + ((long long)f * p.rank[k] + (c - p.col_off[k])) * D;
        }
        wrow[tid] = row;
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
            const int c = e / KC, i = e % KC;  // neighbouring threads read neighbouring i
            const float* row = wrow[c];
            float v = 0.f;
            if (row != nullptr && i0 + i < i_end) v = row[i0 + i];
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
// tile and 256 output columns (wide enough that the per-block costs, the slot lookups, staging H
// and the barriers, are spread over 16K outputs). The reduction runs over R (short) in chunks of
// 32. Grid: (tiles, ceil(N / 256)), 256 threads, each 4 tokens x 16 columns.
//   FROM_B = true  (expand): W_c[o] = B_{k,f}[o, j]          (H already holds s_k)
//   FROM_B = false (dX):     W_c[i] = s_k · A_{k,f}[j, i]
// Absent types contribute nothing (their W reads as 0).
template <typename HT, typename T, bool FROM_B>
__device__ void flix_wide(const HT* __restrict__ H, int N, const FlixTypes& p,
                          const int* __restrict__ slots, const FlixTile* __restrict__ tiles,
                          T* __restrict__ out, int accumulate) {
    constexpr int M = FLIX_TILE_M, NB = 256, KC = 32;
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

    float acc[4][16];
#pragma unroll
    for (int a = 0; a < 4; ++a)
#pragma unroll
        for (int b = 0; b < 16; ++b) acc[a][b] = 0.f;

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
                        row = flix_adapter<float>(p.b, k) + (long long)f * N * r + j;
                        stride = r;
                        scale = 1.f;
                    } else {
                        row = flix_adapter<float>(p.a, k) + ((long long)f * r + j) * N;
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
            float h[4], w[16];
#pragma unroll
            for (int a = 0; a < 4; ++a) h[a] = Hs[kk][ty + 16 * a];
#pragma unroll
            for (int b = 0; b < 16; ++b) w[b] = Ws[kk][tx + 16 * b];
#pragma unroll
            for (int a = 0; a < 4; ++a)
#pragma unroll
                for (int b = 0; b < 16; ++b) acc[a][b] = fmaf(h[a], w[b], acc[a][b]);
        }
        __syncthreads();
    }

#pragma unroll
    for (int a = 0; a < 4; ++a) {
        const int t = ty + 16 * a;
#pragma unroll
        for (int b = 0; b < 16; ++b) {
            const int n = n0 + tx + 16 * b;
            if (t < rows && n < N) {
                T* dst = out + (long long)(tile.start + t) * N + n;
                *dst = flix_from_f32<T>(accumulate ? acc[a][b] + flix_to_f32(*dst) : acc[a][b]);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Weight gradients by runs. A block owns a run of FLIX_RUN_TILES consecutive tiles (it may cross
// segment and value boundaries, and a long segment spans several runs), 32 columns of H and a
// split of the long dimension. It sums the outer products of its tiles in registers and flushes
// each stretch once (FlixFlush) instead of once per segment: partial slot f holds, for each type
// k whose stretch ends at f's tile, Σ_{t in the stretch} (that product) in type k's columns, and
// flix_grad_reduce_f32 then adds the slots of each value in ascending order (the plan's flush
// CSR); a value whose only stretch this is goes straight into its gradient instead (this block
// is then the only writer of those elements). Either way the summation order depends only on
// the plan and the shapes.

// What the end of a tile does to the sum of column c of H in a flush.
enum FlixFlushAction {
    FLIX_KEEP,    // keep summing (the stretch goes on, or c >= R)
    FLIX_DROP,    // restart from 0 (type absent)
    FLIX_SLOT,    // write to the tile's partial slot, restart
    FLIX_DIRECT,  // add into the value's gradient, restart
};
__device__ __forceinline__ FlixFlushAction flix_flush_action(const FlixTypes& p,
                                                             const int* __restrict__ slots,
                                                             unsigned segment, FlixFlush fl, int c) {
    if (c >= p.total_rank) return FLIX_KEEP;
    const int k = flix_type_of_col(p, c);
    if (((fl.ends >> k) & 1) == 0) return FLIX_KEEP;
    if (slots[(long long)segment * p.num_types + k] < 0) return FLIX_DROP;
    return ((fl.direct >> k) & 1) ? FLIX_DIRECT : FLIX_SLOT;
}

// The gradient element a direct flush adds column c of H and long index n to, and its scale:
// dB_k[v, n, j] (DA = false, n in d_out) or s_k dA_k[v, j, n] (DA = true, n in d_in), where
// c = col_off[k] + j and v is type k's value in `segment`.
template <bool DA>
__device__ __forceinline__ float* flix_direct_grad(const FlixTypes& p, const FlixGrads& g,
                                                   const int* __restrict__ slots, unsigned segment,
                                                   int c, int n, int D, float* scale) {
    const int k = flix_type_of_col(p, c);
    const int j = c - p.col_off[k], r = p.rank[k];
    const long long v = slots[(long long)segment * p.num_types + k];
    // Type k's gradient, picked with compile-time indices: a run-time index into the struct
    // would make the compiler copy it to the stack.
    float* grad = nullptr;
#pragma unroll
    for (int q = 0; q < FLIX_MAX_TYPES; ++q)
        if (q == k) grad = g.g[q];
    *scale = DA ? p.scale[k] : 1.f;
    return DA ? grad + (v * r + j) * D + n : grad + (v * D + n) * r + j;
}

// The run of block coordinate `run`: its first tile and tile count (1..FLIX_RUN_TILES).
__device__ __forceinline__ void flix_run_tiles(int run, int num_tiles, int* first, int* count) {
    *first = run * FLIX_RUN_TILES;
    *count = min(FLIX_RUN_TILES, num_tiles - *first);
}

// Stages the 64-token tiles of a run, columns c0..c0+32 of a [T, R] matrix (H or dH, converted
// to the destination type), into dst[r][t][c]; rows past a tile's end and columns past R read
// as 0. Shared by the FMA and the tensor-core weight-gradient kernels.
template <int LD, typename S, typename Dt>
__device__ __forceinline__ void flix_stage_run_cols(Dt (*dst)[FLIX_TILE_M][LD],
                                                    const S* __restrict__ src, int R, int c0,
                                                    const FlixTile* __restrict__ tiles, int first,
                                                    int count) {
    for (int r = 0; r < count; ++r) {
        const FlixTile tile = tiles[first + r];
        const int rows = (int)(tile.end - tile.start);
        for (int e = threadIdx.x; e < FLIX_TILE_M * 32; e += FLIX_THREADS) {
            const int t = e / 32, c = e % 32;
            float v = 0.f;
            if (t < rows && c0 + c < R) v = flix_to_f32(src[((long long)tile.start + t) * R + c0 + c]);
            dst[r][t][c] = flix_from_f32<Dt>(v);
        }
    }
}

// dh_db: one pass over dY computes both
//   dh_part[z, t, c] = Σ_{o in split z} dY[t, o] B_{k,f}[o, j]           (dH's split partial)
//   db_part[slot - f0, o, c] = Σ_{t in the stretch} dY[t, o] H[t, c]     (o in split z; or
//                              added into dB itself, for a value with a single stretch)
// Grid: (runs q0.. x ceil(R / 32), 1, nsplit). Per 64-wide step of its split, the block walks the
// run's tiles: it stages dY's 64 x 64 tile once and uses it for both products (dH's partial per
// tile stays in registers for the whole split, dB's sum per step until its stretch ends).
// 256 threads: dH 4 tokens x 2 columns per tile, dB 4 rows of dY x 2 columns.
__device__ void flix_dh_db(const float* __restrict__ dY, int D, const float* __restrict__ H,
                           const FlixTypes& p, const int* __restrict__ slots,
                           const FlixTile* __restrict__ tiles, int num_tiles, int q0,
                           const FlixFlush* __restrict__ flush, int f0,
                           float* __restrict__ dh_part, int num_tokens, int split_len,
                           float* __restrict__ db_part, const FlixGrads& db) {
    constexpr int M = FLIX_TILE_M, NC = 32, KC = 64, RT = FLIX_RUN_TILES;
    __shared__ float Ls[KC][M + 1];      // dY step: (o, t)
    __shared__ float Ws[KC][NC + 1];     // B step: (o, c)
    __shared__ float Hs[RT][M][NC + 1];  // H of the run's tiles: (t, c)
    __shared__ const float* wrow[NC];
    __shared__ int wstride[NC];

    const int R = p.total_rank;
    const int col_blocks = (R + NC - 1) / NC;
    const int c0 = (blockIdx.x % col_blocks) * NC;
    int first, count;
    flix_run_tiles(q0 + blockIdx.x / col_blocks, num_tiles, &first, &count);
    const int o_begin = blockIdx.z * split_len;
    const int o_end = min(D, o_begin + split_len);
    const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;

    flix_stage_run_cols<NC + 1>(Hs, H, R, c0, tiles, first, count);

    float acc_h[RT][4][2], acc_b[4][2];
#pragma unroll
    for (int a = 0; a < 4; ++a)
#pragma unroll
        for (int b = 0; b < 2; ++b) {
            acc_b[a][b] = 0.f;
#pragma unroll
            for (int r = 0; r < RT; ++r) acc_h[r][a][b] = 0.f;
        }

    for (int o0 = o_begin; o0 < o_end; o0 += KC) {
#pragma unroll
        for (int r = 0; r < RT; ++r) {
            if (r >= count) break;
            const FlixTile tile = tiles[first + r];
            const int rows = (int)(tile.end - tile.start);
            if (tid < NC) {
                const int c = c0 + tid;
                const float* row = nullptr;
                if (c < R) {
                    const int k = flix_type_of_col(p, c);
                    const int f = slots[(long long)tile.segment * p.num_types + k];
                    if (f >= 0) row = flix_adapter<float>(p.b, k) + (long long)f * D * p.rank[k] + (c - p.col_off[k]);
                    wstride[tid] = p.rank[k];
                }
                wrow[tid] = row;
            }
            __syncthreads();
            for (int e = tid; e < M * KC; e += FLIX_THREADS) {
                const int t = e / KC, o = e % KC;
                float v = 0.f;
                if (t < rows && o0 + o < o_end) v = dY[((long long)tile.start + t) * D + o0 + o];
                Ls[o][t] = v;
            }
            for (int e = tid; e < NC * KC; e += FLIX_THREADS) {
                const int c = e % NC, o = e / NC;
                const float* row = wrow[c];
                float v = 0.f;
                if (row != nullptr && o0 + o < o_end) v = row[(long long)(o0 + o) * wstride[c]];
                Ws[o][c] = v;
            }
            __syncthreads();
#pragma unroll 8
            for (int o = 0; o < KC; ++o) {
#pragma unroll
                for (int a = 0; a < 4; ++a)
#pragma unroll
                    for (int b = 0; b < 2; ++b)
                        acc_h[r][a][b] = fmaf(Ls[o][ty + 16 * a], Ws[o][tx + 16 * b], acc_h[r][a][b]);
            }
#pragma unroll 8
            for (int t = 0; t < M; ++t) {
#pragma unroll
                for (int a = 0; a < 4; ++a)
#pragma unroll
                    for (int b = 0; b < 2; ++b)
                        acc_b[a][b] = fmaf(Ls[ty + 16 * a][t], Hs[r][t][tx + 16 * b], acc_b[a][b]);
            }
            const FlixFlush fl = flush[first + r];
            if (fl.ends != 0) {
#pragma unroll
                for (int b = 0; b < 2; ++b) {
                    const int c = c0 + tx + 16 * b;
                    const FlixFlushAction action = flix_flush_action(p, slots, tile.segment, fl, c);
                    if (action == FLIX_KEEP) continue;
#pragma unroll
                    for (int a = 0; a < 4; ++a) {
                        const int o = o0 + ty + 16 * a;
                        if (action == FLIX_SLOT && o < o_end)
                            db_part[((long long)(fl.slot - f0) * D + o) * R + c] = acc_b[a][b];
                        if (action == FLIX_DIRECT && o < o_end) {
                            float scale;
                            float* g = flix_direct_grad<false>(p, db, slots, tile.segment, c, o, D, &scale);
                            *g += scale * acc_b[a][b];
                        }
                        acc_b[a][b] = 0.f;
                    }
                }
            }
            __syncthreads();
        }
    }

#pragma unroll
    for (int r = 0; r < RT; ++r) {
        if (r >= count) break;
        const FlixTile tile = tiles[first + r];
        const int rows = (int)(tile.end - tile.start);
#pragma unroll
        for (int a = 0; a < 4; ++a) {
            const int t = ty + 16 * a;
#pragma unroll
            for (int b = 0; b < 2; ++b) {
                const int c = c0 + tx + 16 * b;
                if (t < rows && c < R)
                    dh_part[((long long)blockIdx.z * num_tokens + tile.start + t) * R + c] =
                        acc_h[r][a][b];
            }
        }
    }
}

// da: da_part[slot - f0, c, i] = Σ_{t in the stretch} dH[t, c] X[t, i] for the 32 rows c of one
// column block of H and the columns i of split z of d_in. Grid: (runs q0.. x ceil(R / 32), 1,
// nsplit); the split costs nothing here (each split writes its own columns), it only spreads the
// work. 256 threads, each 2 rows x 4 columns of a 64-wide step.
__device__ void flix_da(const float* __restrict__ dH, const float* __restrict__ X, int D,
                        const FlixTypes& p, const int* __restrict__ slots,
                        const FlixTile* __restrict__ tiles, int num_tiles, int q0,
                        const FlixFlush* __restrict__ flush, int f0, int split_len,
                        float* __restrict__ da_part, const FlixGrads& da) {
    constexpr int M = FLIX_TILE_M, NC = 32, KC = 64, RT = FLIX_RUN_TILES;
    __shared__ float Xs[M][KC + 1];      // X step: (t, i)
    __shared__ float Gs[RT][M][NC + 1];  // dH of the run's tiles: (t, c)

    const int R = p.total_rank;
    const int col_blocks = (R + NC - 1) / NC;
    const int c0 = (blockIdx.x % col_blocks) * NC;
    int first, count;
    flix_run_tiles(q0 + blockIdx.x / col_blocks, num_tiles, &first, &count);
    const int i_begin = blockIdx.z * split_len;
    const int i_end = min(D, i_begin + split_len);
    const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;

    flix_stage_run_cols<NC + 1>(Gs, dH, R, c0, tiles, first, count);

    float acc[2][4];  // rows c0 + ty + 16 a, columns tx + 16 b of the step
#pragma unroll
    for (int a = 0; a < 2; ++a)
#pragma unroll
        for (int b = 0; b < 4; ++b) acc[a][b] = 0.f;

    for (int i0 = i_begin; i0 < i_end; i0 += KC) {
        for (int r = 0; r < count; ++r) {
            const FlixTile tile = tiles[first + r];
            const int rows = (int)(tile.end - tile.start);
            for (int e = tid; e < M * KC; e += FLIX_THREADS) {
                const int t = e / KC, i = e % KC;
                float v = 0.f;
                if (t < rows && i0 + i < i_end) v = X[((long long)tile.start + t) * D + i0 + i];
                Xs[t][i] = v;
            }
            __syncthreads();
#pragma unroll 8
            for (int t = 0; t < M; ++t) {
#pragma unroll
                for (int a = 0; a < 2; ++a)
#pragma unroll
                    for (int b = 0; b < 4; ++b)
                        acc[a][b] = fmaf(Gs[r][t][ty + 16 * a], Xs[t][tx + 16 * b], acc[a][b]);
            }
            const FlixFlush fl = flush[first + r];
            if (fl.ends != 0) {
#pragma unroll
                for (int a = 0; a < 2; ++a) {
                    const int c = c0 + ty + 16 * a;
                    const FlixFlushAction action = flix_flush_action(p, slots, tile.segment, fl, c);
                    if (action == FLIX_KEEP) continue;
#pragma unroll
                    for (int b = 0; b < 4; ++b) {
                        const int i = i0 + tx + 16 * b;
                        if (action == FLIX_SLOT && i < i_end)
                            da_part[((long long)(fl.slot - f0) * R + c) * D + i] = acc[a][b];
                        if (action == FLIX_DIRECT && i < i_end) {
                            float scale;
                            float* g = flix_direct_grad<true>(p, da, slots, tile.segment, c, i, D, &scale);
                            *g += scale * acc[a][b];
                        }
                        acc[a][b] = 0.f;
                    }
                }
            }
            __syncthreads();
        }
    }
}
