// Tensor-core versions of flix_narrow, flix_wide, flix_dh_db and flix_da for bf16 activations
// (prepended after flix_common.cuh). Same grids, same tiles, same outputs as the FMA versions; the
// products run on the tensor cores through nvcuda::wmma (m16n16k16, bf16 in, f32 accumulate). The
// adapters are read from their bf16 working copy (FlixTypes' pointers are bf16 for these entries;
// the launcher keeps the copy current), 16 bytes (8 values) per asynchronous copy straight into
// the shared-memory operand tiles; the f32 dH of dX and dA is rounded to bf16 as it is staged.
// Everything accumulates in f32. The f32 instantiations keep the FMA versions (exact f32, for
// testing).
//
// wmma's rules, followed below: fragment pointers 32-byte aligned, leading dimensions multiples of
// 16 bytes (8 bf16, 4 floats); every thread of a warp takes part in each wmma call.
#include <cuda_pipeline_primitives.h>
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

// One 8-element piece of a bf16 adapter row into shared memory (`dst` 16-byte aligned): `n` real
// elements from `src`, the rest 0. A whole piece (n >= 8) from a 16-byte aligned address is one
// asynchronous copy, landing by the caller's __pipeline_wait_prior; anything else (a row length
// or rank that is not a multiple of 8, a misaligned base, the end of a row) is loaded element by
// element, and a null `src` (absent type) or n <= 0 writes zeros; those ordinary stores are
// visible after the caller's next __syncthreads.
__device__ __forceinline__ void flix_stage_piece(__nv_bfloat16* dst, const __nv_bfloat16* src,
                                                 int n) {
    if (src == nullptr || n <= 0) {
        *reinterpret_cast<uint4*>(dst) = make_uint4(0, 0, 0, 0);
    } else if (n >= 8 && (reinterpret_cast<unsigned long long>(src) & 15) == 0) {
        __pipeline_memcpy_async(dst, src, 16);
    } else {
#pragma unroll
        for (int q = 0; q < 8; ++q) dst[q] = q < n ? src[q] : __float2bfloat16_rn(0.f);
    }
}

// Columns c .. c+7 of H at row o of B (B_k[f][o][j], contiguous along j) for a tile of
// `segment`, as one piece into `dst` (D = d_out). Columns in one type make one contiguous piece
// (flix_stage_piece); a piece that crosses a type boundary or R reads each column on its own.
// Absent types, columns past R and rows o out of range (`in_range` false) read as 0.
__device__ __forceinline__ void flix_stage_b_piece(__nv_bfloat16* dst, const FlixTypes& p,
                                                   const int* __restrict__ slots,
                                                   unsigned segment, int c, long long o, int D,
                                                   bool in_range) {
    const FlixCol x = flix_col(p, slots, segment, c);
    if (c + 8 <= p.col_off[x.k + 1]) {
        const __nv_bfloat16* src = nullptr;
        if (x.f >= 0 && in_range)
            src = flix_adapter<__nv_bfloat16>(p.b, x.k) + ((long long)x.f * D + o) * x.r + x.j;
        flix_stage_piece(dst, src, 8);
        return;
    }
    for (int q = 0; q < 8; ++q) {
        __nv_bfloat16 v = __float2bfloat16_rn(0.f);
        if (in_range && c + q < p.total_rank) {
            const FlixCol y = flix_col(p, slots, segment, c + q);
            if (y.f >= 0) v = flix_adapter<__nv_bfloat16>(p.b, y.k)[((long long)y.f * D + o) * y.r + y.j];
        }
        dst[q] = v;
    }
}

// flix_narrow on tensor cores (bf16 L, bf16 A). Block tile: 64 tokens x 32 columns; warp w
// computes the 16 x 16 block (rows 16 (w % 4), columns 16 (w / 4)). Per 64-wide step of i, the
// next step's L tile (registers) and A rows (16-byte asynchronous copies into the other stage of
// Ws) are in flight while this step computes.
__device__ void flix_narrow_mma(const __nv_bfloat16* __restrict__ L, int D, const FlixTypes& p,
                                const int* __restrict__ slots, const FlixTile* __restrict__ tiles,
                                float* __restrict__ part, int num_tokens, int split_len) {
    using namespace nvcuda;
    constexpr int M = FLIX_TILE_M, NC = 32, KC = 64, LDS = KC + 8, LDC = NC + 4;
    __shared__ __align__(32) __nv_bfloat16 Ls[M][LDS];      // tokens x i: matrix_a, row-major
    __shared__ __align__(32) __nv_bfloat16 Ws[2][NC][LDS];  // (i, c) at Ws[c][i]: matrix_b,
                                                            // col-major, two stages
    __shared__ __align__(32) float Cs[M][LDC];
    __shared__ const __nv_bfloat16* wrow[NC];

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
        const __nv_bfloat16* row = nullptr;
        if (c0 + tid < R) {
            const FlixCol x = flix_col(p, slots, tile.segment, c0 + tid);
            if (x.f >= 0)
                row = flix_adapter<__nv_bfloat16>(p.a, x.k) + ((long long)x.f * x.r + x.j) * D;
        }
        wrow[tid] = row;
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
    // A's rows (bf16, contiguous along i) of a step: one 8-element piece per thread, straight
    // into its stage of Ws.
    static_assert(NC * KC / 8 == FLIX_THREADS, "one piece of A per thread");
    auto fetch_a = [&](int buf, int i0) {
        const int c = tid / (KC / 8), i = (tid % (KC / 8)) * 8;
        const __nv_bfloat16* row = wrow[c];
        flix_stage_piece(&Ws[buf][c][i], row != nullptr ? row + i0 + i : nullptr, i_end - (i0 + i));
    };
    fetch_a(0, i_begin);
    __pipeline_commit();
    if (vec) fetch(i_begin);

    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
    wmma::fill_fragment(acc, 0.f);
    int buf = 0;
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
        __pipeline_wait_prior(0);  // this thread's copies of A for this step have landed
        __syncthreads();
        // The other stage was last read before the previous step's last barrier.
        if (i0 + KC < i_end) {
            fetch_a(buf ^ 1, i0 + KC);
            if (vec) fetch(i0 + KC);
        }
        __pipeline_commit();
#pragma unroll
        for (int kk = 0; kk < KC; kk += 16) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> a;
            wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> b;
            wmma::load_matrix_sync(a, &Ls[wm * 16][kk], LDS);
            wmma::load_matrix_sync(b, &Ws[buf][wn * 16][kk], LDS);
            wmma::mma_sync(acc, a, b, acc);
        }
        __syncthreads();
        buf ^= 1;
    }
    __pipeline_wait_prior(0);
    wmma::store_matrix_sync(&Cs[wm * 16][wn * 16], acc, LDC, wmma::mem_row_major);
    __syncthreads();
    for (int e = tid; e < M * NC; e += FLIX_THREADS) {
        const int t = e / NC, c = e % NC;
        if (t < rows && c0 + c < R)
            part[((long long)blockIdx.z * num_tokens + tile.start + t) * R + c0 + c] = Cs[t][c];
    }
}

// flix_wide on tensor cores: out (bf16) [64 tokens x 256 columns] per block, reduction over R in
// chunks of 32. Warp w computes rows 16 (w % 4) and the eight 16-column blocks of columns
// 128 (w / 4) .. +128 (64 f32 accumulators per thread).
//   FROM_B = true  (expand): HT = bf16 H; W (c, n) = B_{k,f}[n, j], staged as Ws[n][c]
//                            (matrix_b col-major: 8 consecutive c of one row of B are 16 bytes);
//   FROM_B = false (dX):     HT = f32 dH, staged as s_k dH rounded to bf16; W (c, n) =
//                            A_{k,f}[j, n], staged as Ws[c][n] (matrix_b row-major: 8 consecutive
//                            n of one row of A are 16 bytes).
// W comes from the adapters' bf16 copy in 16-byte asynchronous copies (four per thread and
// chunk) into two stages, the next chunk's in flight while this one computes. Shared memory
// stays under the 48 KB of a static allocation: W 2 x 20 KB (expand; dX 2 x 16.5 KB) + H 5 KB;
// the results leave through Cs (17 KB, over the W stages, which are done by then) a quarter
// (64 columns) at a time.
template <typename HT, bool FROM_B>
__device__ void flix_wide_mma(const HT* __restrict__ H, int N, const FlixTypes& p,
                              const int* __restrict__ slots, const FlixTile* __restrict__ tiles,
                              __nv_bfloat16* __restrict__ out, int accumulate) {
    using namespace nvcuda;
    constexpr int M = FLIX_TILE_M, NB = 256, KC = 32, LDH = KC + 8;
    constexpr int QW = 64, LDC = QW + 4;  // output quarter width, its row stride in Cs
    constexpr int FRAGS = NB / 2 / 16;   // accumulators per warp
    // One stage of W: expand Ws[n][c] (NB rows of KC + 8), dX Ws[c][n] (KC rows of NB + 8).
    constexpr int WROWS = FROM_B ? NB : KC, LDW = FROM_B ? KC + 8 : NB + 8;
    constexpr int W_BYTES = 2 * WROWS * LDW * 2, C_BYTES = M * LDC * 4;
    __shared__ __align__(32) __nv_bfloat16 Hs[M][LDH];  // tokens x c: matrix_a, row-major
    __shared__ __align__(32) unsigned char smem[W_BYTES > C_BYTES ? W_BYTES : C_BYTES];
    auto Ws = reinterpret_cast<__nv_bfloat16 (*)[WROWS][LDW]>(smem);  // two stages
    auto Cs = reinterpret_cast<float (*)[LDC]>(smem);                  // after the last chunk

    const FlixTile tile = tiles[blockIdx.x];
    const int rows = (int)(tile.end - tile.start);
    const int R = p.total_rank;
    const int n0 = blockIdx.y * NB;
    const int tid = threadIdx.x, warp = tid / 32, wm = warp % 4, wn = warp / 4;

    // The chunk's W in 8-element pieces, four per thread. expand: piece (n, 8 q) with q = tid % 4
    // (fixed per thread: one type lookup per chunk); dX: piece (c, 8 m) with m = tid % 32 and
    // c = tid / 32 + 8 u (one row of A per warp and u).
    static_assert(NB * KC / 8 == 4 * FLIX_THREADS, "four pieces of W per thread");
    auto fetch_w = [&](int buf, int c0) {
#pragma unroll
        for (int u = 0; u < 4; ++u) {
            const int e = tid + u * FLIX_THREADS;
            if (FROM_B) {
                const int n = e / (KC / 8), cc = (e % (KC / 8)) * 8;
                flix_stage_b_piece(&Ws[buf][n][cc], p, slots, tile.segment, c0 + cc, n0 + n, N,
                                   n0 + n < N);
            } else {
                const int cc = e / (NB / 8), n = (e % (NB / 8)) * 8;
                const __nv_bfloat16* src = nullptr;
                if (c0 + cc < R) {
                    const FlixCol x = flix_col(p, slots, tile.segment, c0 + cc);
                    if (x.f >= 0)
                        src = flix_adapter<__nv_bfloat16>(p.a, x.k) + ((long long)x.f * x.r + x.j) * N + n0 + n;
                }
                flix_stage_piece(&Ws[buf][cc][n], src, N - (n0 + n));
            }
        }
    };
    // H's column of this thread (256 threads, 32 columns: the same one in every row it stages),
    // with its scale: 1 for expand (H carries s_k already), s_k for dX.
    auto h_scale = [&](int c) {
        if (FROM_B || c >= R) return 1.f;
        return p.scale[flix_type_of_col(p, c)];
    };

    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[FRAGS];
#pragma unroll
    for (int q = 0; q < FRAGS; ++q) wmma::fill_fragment(acc[q], 0.f);
    fetch_w(0, 0);
    __pipeline_commit();
    int buf = 0;
    for (int c0 = 0; c0 < R; c0 += KC) {
        {
            static_assert(FLIX_THREADS % KC == 0, "one column of H per thread");
            const int cc = tid % KC;
            const float scale = h_scale(c0 + cc);
            for (int t = tid / KC; t < M; t += FLIX_THREADS / KC) {
                float v = 0.f;
                if (t < rows && c0 + cc < R)
                    v = flix_to_f32(H[(long long)(tile.start + t) * R + c0 + cc]) * scale;
                Hs[t][cc] = __float2bfloat16_rn(v);
            }
        }
        // The other stage was last read before the previous chunk's last barrier.
        if (c0 + KC < R) fetch_w(buf ^ 1, c0 + KC);
        __pipeline_commit();
        __pipeline_wait_prior(1);  // this thread's copies of this chunk's W have landed
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < KC; kk += 16) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> a;
            wmma::load_matrix_sync(a, &Hs[wm * 16][kk], LDH);
#pragma unroll
            for (int q = 0; q < FRAGS; ++q) {
                const int n = wn * (NB / 2) + q * 16;
                if (FROM_B) {
                    wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> b;
                    wmma::load_matrix_sync(b, &Ws[buf][n][kk], LDW);
                    wmma::mma_sync(acc[q], a, b, acc[q]);
                } else {
                    wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> b;
                    wmma::load_matrix_sync(b, &Ws[buf][kk][n], LDW);
                    wmma::mma_sync(acc[q], a, b, acc[q]);
                }
            }
        }
        __syncthreads();
        buf ^= 1;
    }
    // Nothing is pending after a chunk (the last one's group is empty) unless R = 0; Cs lies over
    // the W stages, so every thread's copies must have landed before the first store.
    __pipeline_wait_prior(0);
    __syncthreads();

    // Quarter qq holds columns 64 qq .. +64: accumulators 4 (qq % 2) .. +4 of the warps with
    // wn = qq / 2.
#pragma unroll
    for (int qq = 0; qq < NB / QW; ++qq) {
        if (wn == qq / 2) {
#pragma unroll
            for (int q = 0; q < QW / 16; ++q)
                wmma::store_matrix_sync(&Cs[wm * 16][q * 16], acc[(qq % 2) * (QW / 16) + q], LDC,
                                        wmma::mem_row_major);
        }
        __syncthreads();
        const int nq = n0 + qq * QW;
        if ((N & 7) == 0) {
            // 8 columns per thread, one 16-byte store (and load, when accumulating); nq is a
            // multiple of 64 and N of 8, so a chunk is either wholly inside the row or wholly out.
            for (int e = tid; e < M * QW / 8; e += FLIX_THREADS) {
                const int t = e / (QW / 8), n = (e % (QW / 8)) * 8;
                if (t < rows && nq + n < N) {
                    uint4* dst = reinterpret_cast<uint4*>(out + (long long)(tile.start + t) * N + nq + n);
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
            for (int e = tid; e < M * QW; e += FLIX_THREADS) {
                const int t = e / QW, n = e % QW;
                if (t < rows && nq + n < N) {
                    __nv_bfloat16* dst = out + (long long)(tile.start + t) * N + nq + n;
                    const float v = Cs[t][n];
                    *dst = __float2bfloat16_rn(accumulate ? v + __bfloat162float(*dst) : v);
                }
            }
        }
        __syncthreads();
    }
}

// Stages 64 tokens x 64 elements of a bf16 row-major matrix (row stride D) into Ls[64][LD] through
// the copy pipeline: 16-byte asynchronous copies that land by the caller's __pipeline_wait_prior
// (the caller checked that D is a multiple of 8 and L 16-byte aligned, so every copy is aligned
// and no 8-element piece crosses i_end, a multiple of 64 or D). Rows past `rows` and columns past
// i_end are zeroed by ordinary stores, visible after the caller's next __syncthreads.
template <int LD>
__device__ __forceinline__ void flix_stage_rows_async(__nv_bfloat16 (*Ls)[LD],
                                                      const __nv_bfloat16* __restrict__ L, int D,
                                                      long long row0, int rows, int i0, int i_end) {
    for (int e = threadIdx.x; e < 64 * 8; e += FLIX_THREADS) {
        const int t = e / 8, i = (e % 8) * 8;
        if (t < rows && i0 + i < i_end)
            __pipeline_memcpy_async(&Ls[t][i], L + (row0 + t) * D + i0 + i, 16);
        else
            *reinterpret_cast<uint4*>(&Ls[t][i]) = make_uint4(0, 0, 0, 0);
    }
}

// Whether a bf16 matrix of row length D can go through flix_stage_rows_async.
__device__ __forceinline__ bool flix_rows_async_ok(const __nv_bfloat16* L, int D) {
    return (D & 7) == 0 && (reinterpret_cast<unsigned long long>(L) & 15) == 0;
}

// The flush of a weight-gradient sum held in Cs, after every warp stored its accumulator there
// and the block met at a barrier. dB (DA = false): Cs is 64 rows of d_out (from n0) x 32 columns
// of H (from c0); dA (DA = true): 32 columns of H (from c0) x 64 of d_in (from n0). For each
// element whose column of H ends a stretch: write it to the partial slot (`slot_out`, laid out
// like the block with row stride `ld`) or add it into its gradient (direct), then zero it.
// Indices of the long dimension at or past n_end are not written (they hold 0).
template <int ROWS, int COLS, int LDC, bool DA>
__device__ __forceinline__ void flix_flush_block(float (*Cs)[LDC], const FlixTypes& p,
                                                 const int* __restrict__ slots, unsigned segment,
                                                 FlixFlush fl, int c0, int n0, int n_end, int D,
                                                 float* __restrict__ slot_out, long long ld,
                                                 const FlixGrads& grads) {
    for (int e = threadIdx.x; e < ROWS * COLS; e += FLIX_THREADS) {
        const int row = e / COLS, col = e % COLS;
        const int c = c0 + (DA ? row : col);
        const int n = n0 + (DA ? col : row);
        const FlixFlushAction action = flix_flush_action(p, slots, segment, fl, c);
        if (action == FLIX_KEEP) continue;
        if (n < n_end) {
            if (action == FLIX_SLOT) slot_out[row * ld + col] = Cs[row][col];
            if (action == FLIX_DIRECT) {
                float scale;
                float* g = flix_direct_grad<DA>(p, grads, slots, segment, c, n, D, &scale);
                *g += scale * Cs[row][col];
            }
        }
        Cs[row][col] = 0.f;
    }
}

// flix_dh_db on tensor cores (bf16 dY, H and B): same grid, runs, partials and flushes. Per step
// the 64 x 64 tile of dY is staged once, double-buffered through 16-byte asynchronous copies
// (the next step's tile lands while this one is used), and feeds both products:
//   dH (64 tokens x 32 columns): warp w computes the 16 x 16 block (rows 16 (w % 4), columns
//        16 (w / 4)), one accumulator per tile of the run, kept for the whole split;
//   dB (64 rows of dY's step x 32 columns): warp w, rows 16 (w % 4), columns 16 (w / 4); dYᵀ is
//        read as a column-major matrix_a straight from the token-major tile.
// B's rows of a step (64 rows o x 32 columns, staged as Ws[o][c], a row-major matrix_b: 8
// consecutive c of one row of B are 16 bytes) come from the bf16 copy once per step and segment
// (tiles of one segment share them), in their own two stages, copied with the dY tile of the
// step that first needs them. A flush stores the dB accumulators to Cs, writes (to the slot or
// straight into dB) and zeroes the ending columns there, and loads them back.
__device__ void flix_dh_db_mma(const __nv_bfloat16* __restrict__ dY, int D,
                               const __nv_bfloat16* __restrict__ H, const FlixTypes& p,
                               const int* __restrict__ slots, const FlixTile* __restrict__ tiles,
                               int num_tiles, int q0, const FlixFlush* __restrict__ flush, int f0,
                               float* __restrict__ dh_part, int num_tokens, int split_len,
                               float* __restrict__ db_part, const FlixGrads& db) {
    using namespace nvcuda;
    constexpr int M = FLIX_TILE_M, NC = 32, KC = 64, RT = FLIX_RUN_TILES;
    constexpr int LDS = KC + 8, LDH = NC + 8, LDW = NC + 8, LDC = NC + 4;
    __shared__ __align__(32) __nv_bfloat16 Ls[2][M][LDS];   // dY step (t, o), two stages
    __shared__ __align__(32) __nv_bfloat16 Ws[2][KC][LDW];  // B step (o, c), two stages
    __shared__ __align__(32) __nv_bfloat16 Hs[RT][M][LDH];  // H of the run's tiles (t, c)
    __shared__ __align__(32) float Cs[M][LDC];              // accumulators on their way out

    const int R = p.total_rank;
    const int col_blocks = (R + NC - 1) / NC;
    const int c0 = (blockIdx.x % col_blocks) * NC;
    int first, count;
    flix_run_tiles(q0 + blockIdx.x / col_blocks, num_tiles, &first, &count);
    const int o_begin = blockIdx.z * split_len;
    const int o_end = min(D, o_begin + split_len);
    const int tid = threadIdx.x, warp = tid / 32, wm = warp % 4, wn = warp / 4;
    const bool async = flix_rows_async_ok(dY, D);

    // The (step, tile) visit (o0, r) needs new B rows when it starts a step or a new segment.
    auto new_b = [&](int r) {
        return r == 0 || tiles[first + r].segment != tiles[first + r - 1].segment;
    };
    // Stages dY's tile of visit (o0, r) into Ls[buf] and, when it needs them, B's rows into
    // Ws[wbuf]: one 8-column piece per thread (row o = tid / 4, columns 8 (tid % 4)).
    static_assert(KC * NC / 8 == FLIX_THREADS, "one piece of B per thread");
    auto stage = [&](int buf, int wbuf, int o0, int r) {
        const FlixTile tile = tiles[first + r];
        const int rows = (int)(tile.end - tile.start);
        if (async) flix_stage_rows_async<LDS>(Ls[buf], dY, D, tile.start, rows, o0, o_end);
        else flix_stage_rows_scalar<LDS>(Ls[buf], dY, D, tile.start, rows, o0, o_end);
        if (new_b(r)) {
            const int o = tid / (NC / 8), cc = (tid % (NC / 8)) * 8;
            flix_stage_b_piece(&Ws[wbuf][o][cc], p, slots, tile.segment, c0 + cc, o0 + o, D,
                               o0 + o < o_end);
        }
    };
    if (o_begin < o_end) stage(0, 0, o_begin, 0);
    __pipeline_commit();
    flix_stage_run_cols<LDH>(Hs, H, R, c0, tiles, first, count);

    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc_h[RT], acc_b;
#pragma unroll
    for (int r = 0; r < RT; ++r) wmma::fill_fragment(acc_h[r], 0.f);
    wmma::fill_fragment(acc_b, 0.f);

    int buf = 0, wbuf = 0;
    for (int o0 = o_begin; o0 < o_end; o0 += KC) {
#pragma unroll
        for (int r = 0; r < RT; ++r) {
            if (r >= count) break;
            // Start the next visit's copies (the other stages were last read before the barrier
            // that ended the previous visit, or earlier), then wait for this visit's.
            const bool last_tile = r + 1 == count;
            const int next_o0 = last_tile ? o0 + KC : o0;
            const int next_r = last_tile ? 0 : r + 1;
            const bool next_new_b = next_o0 < o_end && new_b(next_r);
            if (next_o0 < o_end) stage(buf ^ 1, wbuf ^ 1, next_o0, next_r);
            __pipeline_commit();
            __pipeline_wait_prior(1);
            __syncthreads();

            const FlixTile tile = tiles[first + r];
#pragma unroll
            for (int kk = 0; kk < KC; kk += 16) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> a;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> b;
                wmma::load_matrix_sync(a, &Ls[buf][wm * 16][kk], LDS);
                wmma::load_matrix_sync(b, &Ws[wbuf][kk][wn * 16], LDW);
                wmma::mma_sync(acc_h[r], a, b, acc_h[r]);
            }
#pragma unroll
            for (int kk = 0; kk < M; kk += 16) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::col_major> a;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> b;
                wmma::load_matrix_sync(a, &Ls[buf][kk][wm * 16], LDS);
                wmma::load_matrix_sync(b, &Hs[r][kk][wn * 16], LDH);
                wmma::mma_sync(acc_b, a, b, acc_b);
            }

            const FlixFlush fl = flush[first + r];
            if (fl.ends != 0) {
                wmma::store_matrix_sync(&Cs[wm * 16][wn * 16], acc_b, LDC, wmma::mem_row_major);
                __syncthreads();
                float* out = db_part + ((long long)(fl.slot - f0) * D + o0) * R + c0;
                flix_flush_block<KC, NC, LDC, false>(Cs, p, slots, tile.segment, fl, c0, o0, o_end,
                                                     D, out, R, db);
                __syncthreads();
                wmma::load_matrix_sync(acc_b, &Cs[wm * 16][wn * 16], LDC, wmma::mem_row_major);
            }
            __syncthreads();
            buf ^= 1;
            if (next_new_b) wbuf ^= 1;
        }
    }
    __pipeline_wait_prior(0);

#pragma unroll
    for (int r = 0; r < RT; ++r) {
        if (r >= count) break;
        const FlixTile tile = tiles[first + r];
        const int rows = (int)(tile.end - tile.start);
        wmma::store_matrix_sync(&Cs[wm * 16][wn * 16], acc_h[r], LDC, wmma::mem_row_major);
        __syncthreads();
        for (int e = tid; e < M * NC; e += FLIX_THREADS) {
            const int t = e / NC, c = e % NC;
            if (t < rows && c0 + c < R)
                dh_part[((long long)blockIdx.z * num_tokens + tile.start + t) * R + c0 + c] = Cs[t][c];
        }
        __syncthreads();
    }
}

// flix_da on tensor cores (bf16 X; the f32 dH rounded to bf16 as staged): same grid, runs,
// partials and flushes. X's 64 x 64 step tiles are double-buffered through 16-byte asynchronous
// copies. Warp w computes rows 16 (w / 4) (columns of H) and columns 16 (w % 4) of the 32 x 64
// block; dHᵀ is read as a column-major matrix_a straight from the token-major tile.
__device__ void flix_da_mma(const float* __restrict__ dH, const __nv_bfloat16* __restrict__ X,
                            int D, const FlixTypes& p, const int* __restrict__ slots,
                            const FlixTile* __restrict__ tiles, int num_tiles, int q0,
                            const FlixFlush* __restrict__ flush, int f0, int split_len,
                            float* __restrict__ da_part, const FlixGrads& da) {
    using namespace nvcuda;
    constexpr int M = FLIX_TILE_M, NC = 32, KC = 64, RT = FLIX_RUN_TILES;
    constexpr int LDS = KC + 8, LDH = NC + 8, LDC = KC + 4;
    __shared__ __align__(32) __nv_bfloat16 Xs[2][M][LDS];   // X step (t, i), two stages
    __shared__ __align__(32) __nv_bfloat16 Gs[RT][M][LDH];  // dH of the run's tiles (t, c)
    __shared__ __align__(32) float Cs[NC][LDC];

    const int R = p.total_rank;
    const int col_blocks = (R + NC - 1) / NC;
    const int c0 = (blockIdx.x % col_blocks) * NC;
    int first, count;
    flix_run_tiles(q0 + blockIdx.x / col_blocks, num_tiles, &first, &count);
    const int i_begin = blockIdx.z * split_len;
    const int i_end = min(D, i_begin + split_len);
    const int tid = threadIdx.x, warp = tid / 32, wc = warp / 4, wi = warp % 4;
    const bool async = flix_rows_async_ok(X, D);

    auto stage = [&](int buf, int i0, int r) {
        const FlixTile tile = tiles[first + r];
        const int rows = (int)(tile.end - tile.start);
        if (async) flix_stage_rows_async<LDS>(Xs[buf], X, D, tile.start, rows, i0, i_end);
        else flix_stage_rows_scalar<LDS>(Xs[buf], X, D, tile.start, rows, i0, i_end);
    };
    if (i_begin < i_end) stage(0, i_begin, 0);
    __pipeline_commit();
    flix_stage_run_cols<LDH>(Gs, dH, R, c0, tiles, first, count);

    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
    wmma::fill_fragment(acc, 0.f);
    int buf = 0;
    for (int i0 = i_begin; i0 < i_end; i0 += KC) {
        for (int r = 0; r < count; ++r) {
            const bool last_tile = r + 1 == count;
            const int next_i0 = last_tile ? i0 + KC : i0;
            if (next_i0 < i_end) stage(buf ^ 1, next_i0, last_tile ? 0 : r + 1);
            __pipeline_commit();
            __pipeline_wait_prior(1);
            __syncthreads();

#pragma unroll
            for (int kk = 0; kk < M; kk += 16) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::col_major> a;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> b;
                wmma::load_matrix_sync(a, &Gs[r][kk][wc * 16], LDH);
                wmma::load_matrix_sync(b, &Xs[buf][kk][wi * 16], LDS);
                wmma::mma_sync(acc, a, b, acc);
            }

            const FlixFlush fl = flush[first + r];
            if (fl.ends != 0) {
                wmma::store_matrix_sync(&Cs[wc * 16][wi * 16], acc, LDC, wmma::mem_row_major);
                __syncthreads();
                float* out = da_part + ((long long)(fl.slot - f0) * R + c0) * D + i0;
                flix_flush_block<NC, KC, LDC, true>(Cs, p, slots, tiles[first + r].segment, fl,
                                                    c0, i0, i_end, D, out, D, da);
                __syncthreads();
                wmma::load_matrix_sync(acc, &Cs[wc * 16][wi * 16], LDC, wmma::mem_row_major);
            }
            __syncthreads();
            buf ^= 1;
        }
    }
    __pipeline_wait_prior(0);
}
