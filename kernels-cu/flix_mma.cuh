// Tensor-core versions of flix_narrow and flix_wide for bf16 activations (prepended after
// flix_common.cuh). Same grids, same tiles, same outputs as the FMA versions; the products run on
// the tensor cores through nvcuda::wmma (m16n16k16, bf16 in, f32 accumulate). The f32 adapters
// (and, for dX, the f32 dH) are rounded to bf16 as they are staged into shared memory; everything
// accumulates in f32. The f32 instantiations keep the FMA versions (exact f32, for testing).
//
// wmma's rules, followed below: fragment pointers 32-byte aligned, leading dimensions multiples of
// 16 bytes (8 bf16, 4 floats); every thread of a warp takes part in each wmma call.
#include <mma.h>

// Stages 64 tokens x 64 elements of a bf16 row-major matrix (row stride D) into Ls[64][LD],
// element by element (the path for widths that are not multiples of 8). Rows past `rows` and
// columns past i_end read as 0.
template <int LD>
__device__ __forceinline__ void flix_stage_rows_scalar(__nv_bfloat16 (*Ls)[LD],
                                                       const __nv_bfloat16* __restrict__ L, int D,
                                                       long long row0, int rows, int i0, int i_end) {
    for (int e = threadIdx.x; e < 64 * 64; e += FLIX_THREADS) {
        const int t = e / 64, i = e % 64;
        __nv_bfloat16 v = __float2bfloat16_rn(0.f);
        if (t < rows && i0 + i < i_end) v = L[(row0 + t) * D + i0 + i];
        Ls[t][i] = v;
    }
}

// flix_narrow on tensor cores (bf16 L). Block tile: 64 tokens x 32 columns; warp w computes the
// 16 x 16 block (rows 16 (w % 4), columns 16 (w / 4)).
template <bool FROM_B>
__device__ void flix_narrow_mma(const __nv_bfloat16* __restrict__ L, int D, const FlixTypes& p,
                                const int* __restrict__ slots, const FlixTile* __restrict__ tiles,
                                float* __restrict__ part, int num_tokens, int split_len) {
    using namespace nvcuda;
    constexpr int M = FLIX_TILE_M, NC = 32, KC = 64, LDS = KC + 8, LDC = NC + 4;
    __shared__ __align__(32) __nv_bfloat16 Ls[M][LDS];   // tokens x i: matrix_a, row-major
    __shared__ __align__(32) __nv_bfloat16 Ws[NC][LDS];  // (i, c) at Ws[c][i]: matrix_b, col-major
    __shared__ __align__(32) float Cs[M][LDC];
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
    const int tid = threadIdx.x, warp = tid / 32, wm = warp % 4, wn = warp / 4;

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

    // When D is a multiple of 8, L moves in 16-byte pieces (no piece crosses i_end, which is a
    // multiple of 64 or D), and the next tile's pieces are loaded into registers before the
    // products of the current one, so that their latency overlaps the work.
    static_assert(M * KC / 8 == 2 * FLIX_THREADS, "two 16-byte pieces of L per thread");
    const bool vec = (D & 7) == 0;
    uint4 next[2];
    auto fetch = [&](int i0) {
#pragma unroll
        for (int q = 0; q < 2; ++q) {
            const int e = tid + q * FLIX_THREADS, t = e / 8, i = (e % 8) * 8;
            next[q] = make_uint4(0, 0, 0, 0);
            if (t < rows && i0 + i < i_end)
                next[q] = *reinterpret_cast<const uint4*>(L + ((long long)tile.start + t) * D + i0 + i);
        }
    };
    if (vec) fetch(i_begin);

    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
    wmma::fill_fragment(acc, 0.f);
    for (int i0 = i_begin; i0 < i_end; i0 += KC) {
        if (vec) {
#pragma unroll
            for (int q = 0; q < 2; ++q) {
                const int e = tid + q * FLIX_THREADS, t = e / 8, i = (e % 8) * 8;
                *reinterpret_cast<uint4*>(&Ls[t][i]) = next[q];
            }
        } else {
            flix_stage_rows_scalar<LDS>(Ls, L, D, tile.start, rows, i0, i_end);
        }
        for (int e = tid; e < NC * KC; e += FLIX_THREADS) {
            const int c = FROM_B ? e % NC : e / KC;
            const int i = FROM_B ? e / NC : e % KC;
            const float* row = wrow[c];
            float v = 0.f;
            if (row != nullptr && i0 + i < i_end) v = row[(long long)(i0 + i) * wstride[c]];
            Ws[c][i] = __float2bfloat16_rn(v);
        }
        __syncthreads();
        if (vec && i0 + KC < i_end) fetch(i0 + KC);
#pragma unroll
        for (int kk = 0; kk < KC; kk += 16) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> a;
            wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> b;
            wmma::load_matrix_sync(a, &Ls[wm * 16][kk], LDS);
            wmma::load_matrix_sync(b, &Ws[wn * 16][kk], LDS);
            wmma::mma_sync(acc, a, b, acc);
        }
        __syncthreads();
    }
    wmma::store_matrix_sync(&Cs[wm * 16][wn * 16], acc, LDC, wmma::mem_row_major);
    __syncthreads();
    for (int e = tid; e < M * NC; e += FLIX_THREADS) {
        const int t = e / NC, c = e % NC;
        if (t < rows && c0 + c < R)
            part[((long long)blockIdx.z * num_tokens + tile.start + t) * R + c0 + c] = Cs[t][c];
    }
}

// flix_wide on tensor cores: out (bf16) [64 tokens x 64 columns] per block, reduction over R in
// chunks of 32. Warp w computes rows 16 (w % 4) and the two 16-column blocks 2 (w / 4) + {0, 1}.
// HT is the low-rank input: bf16 H (expand) or f32 dH (dX), rounded to bf16 when staged.
template <typename HT, bool FROM_B>
__device__ void flix_wide_mma(const HT* __restrict__ H, int N, const FlixTypes& p,
                              const int* __restrict__ slots, const FlixTile* __restrict__ tiles,
                              __nv_bfloat16* __restrict__ out, int accumulate) {
    using namespace nvcuda;
    constexpr int M = FLIX_TILE_M, NB = 64, KC = 32, LDS = KC + 8, LDC = NB + 4;
    __shared__ __align__(32) __nv_bfloat16 Hs[M][LDS];   // tokens x c: matrix_a, row-major
    __shared__ __align__(32) __nv_bfloat16 Ws[NB][LDS];  // (c, n) at Ws[n][c]: matrix_b, col-major
    __shared__ __align__(32) float Cs[M][LDC];
    __shared__ const float* wrow[KC];
    __shared__ int wstride[KC];
    __shared__ float wscale[KC];

    const FlixTile tile = tiles[blockIdx.x];
    const int rows = (int)(tile.end - tile.start);
    const int R = p.total_rank;
    const int n0 = blockIdx.y * NB;
    const int tid = threadIdx.x, warp = tid / 32, wm = warp % 4, wn = (warp / 4) * 2;

    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2];
    wmma::fill_fragment(acc[0], 0.f);
    wmma::fill_fragment(acc[1], 0.f);
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
            Hs[t][cc] = __float2bfloat16_rn(v);
        }
        for (int e = tid; e < KC * NB; e += FLIX_THREADS) {
            const int cc = FROM_B ? e % KC : e / NB;
            const int n = FROM_B ? e / KC : e % NB;
            const float* row = wrow[cc];
            float v = 0.f;
            if (row != nullptr && n0 + n < N) v = row[(long long)(n0 + n) * wstride[cc]] * wscale[cc];
            Ws[n][cc] = __float2bfloat16_rn(v);
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < KC; kk += 16) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> a;
            wmma::load_matrix_sync(a, &Hs[wm * 16][kk], LDS);
#pragma unroll
            for (int q = 0; q < 2; ++q) {
                wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> b;
                wmma::load_matrix_sync(b, &Ws[(wn + q) * 16][kk], LDS);
                wmma::mma_sync(acc[q], a, b, acc[q]);
            }
        }
        __syncthreads();
    }
    wmma::store_matrix_sync(&Cs[wm * 16][wn * 16], acc[0], LDC, wmma::mem_row_major);
    wmma::store_matrix_sync(&Cs[wm * 16][(wn + 1) * 16], acc[1], LDC, wmma::mem_row_major);
    __syncthreads();
    if ((N & 7) == 0) {
        // 8 columns per thread, one 16-byte store (and load, when accumulating); n0 is a
        // multiple of 64 and N of 8, so a chunk is either wholly inside the row or wholly out.
        for (int e = tid; e < M * NB / 8; e += FLIX_THREADS) {
            const int t = e / (NB / 8), n = (e % (NB / 8)) * 8;
            if (t < rows && n0 + n < N) {
                uint4* dst = reinterpret_cast<uint4*>(out + (long long)(tile.start + t) * N + n0 + n);
                // Word w holds columns n + 2w (low half) and n + 2w + 1 (high half); a bf16 is
                // the top half of an f32, so the halves convert with shifts, no type punning.
                unsigned prev[4] = {0, 0, 0, 0};
                if (accumulate) {
                    const uint4 old = *dst;
                    prev[0] = old.x, prev[1] = old.y, prev[2] = old.z, prev[3] = old.w;
                }
                unsigned word[4];
#pragma unroll
                for (int w = 0; w < 4; ++w) {
                    const float lo = Cs[t][n + 2 * w] + __uint_as_float(prev[w] << 16);
                    const float hi = Cs[t][n + 2 * w + 1] + __uint_as_float(prev[w] & 0xffff0000u);
                    word[w] = (unsigned)__bfloat16_as_ushort(__float2bfloat16_rn(lo)) |
                              ((unsigned)__bfloat16_as_ushort(__float2bfloat16_rn(hi)) << 16);
                }
                *dst = make_uint4(word[0], word[1], word[2], word[3]);
            }
        }
    } else {
        for (int e = tid; e < M * NB; e += FLIX_THREADS) {
            const int t = e / NB, n = e % NB;
            if (t < rows && n0 + n < N) {
                __nv_bfloat16* dst = out + (long long)(tile.start + t) * N + n0 + n;
                const float v = Cs[t][n];
                *dst = __float2bfloat16_rn(accumulate ? v + __bfloat162float(*dst) : v);
            }
        }
    }
}

// Stages rows [row0, row0 + ROWS) x columns [col0, col0 + 64) of a row-major matrix (row stride
// ld_src) into dst[ROWS][LD] as bf16; rows at or past row_end and columns at or past ncols read
// as 0. A bf16 source whose rows are multiples of 8 elements is copied with 16-byte loads (col0
// is a multiple of 64, so no 8-chunk crosses ncols); anything else element by element.
template <int ROWS, int LD, typename S>
__device__ __forceinline__ void flix_stage_bf16(__nv_bfloat16 (*dst)[LD], const S* __restrict__ src,
                                                int ld_src, long long row0, long long row_end,
                                                int col0, int ncols) {
    const int tid = threadIdx.x;
    bool vector_path = false;
    if constexpr (sizeof(S) == 2) vector_path = (ld_src & 7) == 0;
    if (vector_path) {
        for (int e = tid; e < ROWS * 8; e += FLIX_THREADS) {
            const int t = e / 8, c = (e % 8) * 8;
            uint4 v = make_uint4(0, 0, 0, 0);
            if (row0 + t < row_end && col0 + c < ncols)
                v = *reinterpret_cast<const uint4*>(src + (row0 + t) * ld_src + col0 + c);
            *reinterpret_cast<uint4*>(&dst[t][c]) = v;
        }
    } else {
        for (int e = tid; e < ROWS * 64; e += FLIX_THREADS) {
            const int t = e / 64, c = e % 64;
            float v = 0.f;
            if (row0 + t < row_end && col0 + c < ncols) v = flix_to_f32(src[(row0 + t) * ld_src + col0 + c]);
            dst[t][c] = __float2bfloat16_rn(v);
        }
    }
}

// flix_seg_outer on tensor cores: out[s - s0, m, n] = Σ_{t in s} L[t, m] Rm[t, n] for a 64 x 64
// block, tokens in chunks of 32. Lᵀ is read as a column-major matrix_a straight from the staged
// token-major tile. Warp w computes rows 16 (w % 4), columns 16 (2 (w / 4) + {0, 1}).
// L is bf16 dY (dB) or f32 dH (dA, rounded to bf16 as staged); Rm is bf16 H (dB) or X (dA).
template <typename LT>
__device__ void flix_seg_outer_mma(const LT* __restrict__ L, int LM,
                                   const __nv_bfloat16* __restrict__ Rm, int LN,
                                   const int* __restrict__ seg_starts, int s0,
                                   float* __restrict__ out) {
    using namespace nvcuda;
    constexpr int MB = 64, NB = 64, KT = 32, LDS = 64 + 8, LDC = NB + 4;
    __shared__ __align__(32) __nv_bfloat16 Ls[KT][LDS];  // tokens x m: Lᵀ as col-major matrix_a
    __shared__ __align__(32) __nv_bfloat16 Rs[KT][LDS];  // tokens x n: row-major matrix_b
    __shared__ __align__(32) float Cs[MB][LDC];
    const int s = s0 + blockIdx.x;
    const int t_begin = seg_starts[s], t_end = seg_starts[s + 1];
    if (t_begin == t_end) return;
    const int m0 = blockIdx.y * MB, n0 = blockIdx.z * NB;
    const int tid = threadIdx.x, warp = tid / 32, wm = warp % 4, wn = (warp / 4) * 2;

    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2];
    wmma::fill_fragment(acc[0], 0.f);
    wmma::fill_fragment(acc[1], 0.f);
    for (int t0 = t_begin; t0 < t_end; t0 += KT) {
        flix_stage_bf16<KT, LDS>(Ls, L, LM, t0, t_end, m0, LM);
        flix_stage_bf16<KT, LDS>(Rs, Rm, LN, t0, t_end, n0, LN);
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < KT; kk += 16) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::col_major> a;
            wmma::load_matrix_sync(a, &Ls[kk][wm * 16], LDS);
#pragma unroll
            for (int q = 0; q < 2; ++q) {
                wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> b;
                wmma::load_matrix_sync(b, &Rs[kk][(wn + q) * 16], LDS);
                wmma::mma_sync(acc[q], a, b, acc[q]);
            }
        }
        __syncthreads();
    }
    wmma::store_matrix_sync(&Cs[wm * 16][wn * 16], acc[0], LDC, wmma::mem_row_major);
    wmma::store_matrix_sync(&Cs[wm * 16][(wn + 1) * 16], acc[1], LDC, wmma::mem_row_major);
    __syncthreads();
    float* dst = out + (long long)blockIdx.x * LM * LN;
    for (int e = tid; e < MB * NB; e += FLIX_THREADS) {
        const int m = e / NB, n = e % NB;
        if (m0 + m < LM && n0 + n < LN) dst[(long long)(m0 + m) * LN + n0 + n] = Cs[m][n];
    }
}
