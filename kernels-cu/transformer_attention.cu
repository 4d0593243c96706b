// Causal attention with grouped KV heads over packed variable-length segments (ops/attention.rs),
// with an optional sliding window and a softmax scale given by the caller. transformer_common.cuh
// is prepended. A straightforward tiled version, correctness first: one head per block, CUDA-core
// FMA, except the bf16 forward at head dims that are multiples of 16, whose two products run on
// the tensor cores (attention_forward_mma_*, below).
//
// Layout: Q [Tq, H·hd], K and V [Tk, Hkv·hd], O like Q, lse [Tq·H] (token-major). Segment s owns
// query rows q_starts[s].. and key rows kv_starts[s]..; its query j sits at key position
// p = kv_len − q_len + j (relative to the segment's first key) and sees the keys at positions
// p − window < i ≤ p, never another segment's (with q_starts == kv_starts this is plain causal
// self-attention; the decode step passes a longer KV cache). No window is window = INT_MAX.
// Scores are q·k · scale. Query head h reads KV head h / (H / Hkv). Work units: tiles of at most
// ATT_TILE rows of one segment, {segment, start, end} built by the host (like flix_core's Tile).
//
//   attention_forward_*:  grid (query tiles, H), 128 threads. Keys in chunks of ATT_BK = 32
//                         through shared memory, from the first key the tile's first row sees to
//                         the tile's last row (chunks wholly before a window are never loaded);
//                         online softmax per row (running max m and sum l, the accumulator
//                         rescaled by exp(m_old − m_new)); writes O and lse = m + log l.
//   attention_bwd_dot_*:  D[t·H + h] = dO · O per (token, head).
//   attention_bwd_dq_*:   grid (query tiles, H): p = exp(s − lse), ds = p (dO·v − D) · scale,
//                         dQ = Σ_j ds k_j. Keys in chunks of ATT_BK_BWD = 16, over the keys the
//                         tile sees.
//   attention_bwd_dkdv_*: grid (key tiles, Hkv): each block owns dK, dV of its keys for all the
//                         query heads of its group and loops over the queries that see them (the
//                         later ones of the segment, up to the window): dV_j = Σ p dO,
//                         dK_j = Σ ds q. Every dK/dV row has one owner and a fixed summation
//                         order: no atomics, deterministic.
//
// Head dims: every kernel but the dot is compiled for three limits HD = 64, 128 and 256 (entry
// names attention_forward_hd{64,128,256}_{f32,bf16}, attention_forward_mma_hd{64,128,256}_bf16,
// ...); the launcher picks the smallest that holds head_dim. HD sizes the per-thread
// accumulators (registers); shared memory is dynamic, sized for the actual head_dim (f32 rows
// padded to hd + 1 floats, so that threads reading one column of different rows hit different
// banks). At hd 256 the FMA forward needs about 83 KB, the tensor-core forward about 61 KB and the
// backward kernels about 66 KB, over the 48 KB default: the launcher raises the kernel's limit
// (CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES; the H200 allows 227 KB per block, so two
// blocks of any of them fit on a multiprocessor). Up to hd 128 all stay under 48 KB.

#include <mma.h>

#define ATT_TILE 16
#define ATT_BK 32
#define ATT_BK_BWD 16
#define ATT_THREADS 128

struct AttTile {
    int segment, start, end;
};

// Shared memory of each kernel in floats for head_dim hd. The launcher
// (flix-kernels/src/ops/cuda/attention.rs, shared_bytes) computes the same sizes, and every
// kernel checks at entry that its launch gave it at least this much (att_require_shared).
__host__ __device__ inline int att_forward_shared_floats(int hd) {
    // Q tile, K and V chunks; scores S [ATT_TILE][ATT_BK + 1]; row max, sum and rescale factor.
    return (ATT_TILE + 2 * ATT_BK) * (hd + 1) + ATT_TILE * (ATT_BK + 1) + 3 * ATT_TILE;
}
__host__ __device__ inline int att_bwd_dq_shared_floats(int hd) {
    // Q and dO tiles, K and V chunks; DS [ATT_TILE][ATT_BK_BWD + 1].
    return (2 * ATT_TILE + 2 * ATT_BK_BWD) * (hd + 1) + ATT_TILE * (ATT_BK_BWD + 1);
}
__host__ __device__ inline int att_bwd_dkdv_shared_floats(int hd) {
    // Q and dO tiles, the block's K and V rows; P and DS [ATT_TILE][ATT_BK_BWD + 1]; lse and D.
    return (2 * ATT_TILE + 2 * ATT_BK_BWD) * (hd + 1) + 2 * ATT_TILE * (ATT_BK_BWD + 1) +
           2 * ATT_TILE;
}

// A launch with less shared memory than the layout needs would read and write past it: stop the
// kernel instead (the launch then fails with an error the host sees).
__device__ __forceinline__ void att_require_shared(int floats) {
    if (tf_dynamic_shared_bytes() < (unsigned)floats * 4u) __trap();
}

// The first key position (relative to the segment's first key) that the query at key position p
// sees: p − (window − 1), at least 0. window >= 1; INT_MAX for none (no overflow: p >= 0).
__device__ __forceinline__ int att_first_visible(int p, int window) {
    const int first = p - (window - 1);
    return first > 0 ? first : 0;
}

template <typename T>
__device__ void att_load_rows(float* dst, int ld, const T* src, int row0, int rows, int nrows,
                              int stride, int col0, int hd) {
    for (int e = threadIdx.x; e < nrows * hd; e += blockDim.x) {
        const int r = e / hd, d = e % hd;
        dst[r * ld + d] = r < rows ? tf_to_f32(src[(long long)(row0 + r) * stride + col0 + d]) : 0.f;
    }
}

// A dot product over the head dimension, summed in slices of 64 that are then added: one running
// sum over 256 dimensions rounds about twice as much, which a long context's softmax amplifies
// (as the CPU's attention scores, flix-kernels ops/attention.rs).
__device__ __forceinline__ float att_dot(const float* a, const float* b, int hd) {
    float s = 0.f;
    for (int d0 = 0; d0 < hd; d0 += 64) {
        float part = 0.f;
        const int d1 = d0 + 64 < hd ? d0 + 64 : hd;
        for (int d = d0; d < d1; ++d) part = fmaf(a[d], b[d], part);
        s += part;
    }
    return s;
}

// Each thread owns one row (tid / 8) of a [ATT_TILE, hd] accumulator and its dims tid % 8 + 8c,
// c < HD / 8.
template <int HD, typename T>
__device__ void attention_forward_body(const T* q, const T* k, const T* v, T* o, float* lse,
                                       const int* q_starts, const int* kv_starts,
                                       const AttTile* tiles, int heads, int kv_heads, int hd,
                                       float scale, int window) {
    constexpr int DIMS = HD / 8;
    att_require_shared(att_forward_shared_floats(hd));
    TF_DYNAMIC_SHARED(shared);
    const int ld = hd + 1, lds = ATT_BK + 1;
    float* Qs = shared;                  // [ATT_TILE][ld]
    float* Ks = Qs + ATT_TILE * ld;      // [ATT_BK][ld]
    float* Vs = Ks + ATT_BK * ld;        // [ATT_BK][ld]
    float* S = Vs + ATT_BK * ld;         // [ATT_TILE][lds]
    float* row_m = S + ATT_TILE * lds;   // [ATT_TILE]
    float* row_l = row_m + ATT_TILE;     // [ATT_TILE]
    float* row_alpha = row_l + ATT_TILE; // [ATT_TILE]

    const AttTile tile = tiles[blockIdx.x];
    const int h = blockIdx.y, g = h / (heads / kv_heads);
    const int qs0 = q_starts[tile.segment], ks0 = kv_starts[tile.segment];
    const int offset = (kv_starts[tile.segment + 1] - ks0) - (q_starts[tile.segment + 1] - qs0);
    const int rows = tile.end - tile.start;
    // Key positions (relative to ks0) of the tile's first row and of this thread's row. The
    // first row sees the earliest keys, the last row the latest: the tile needs keys
    // [key_begin, key_end) and no chunk outside them.
    const int p_first = offset + (tile.start - qs0);
    const int key_begin = ks0 + att_first_visible(p_first, window);
    const int key_end = ks0 + p_first + rows;
    const int tid = threadIdx.x, r = tid / 8, lane = tid % 8;
    const int row_key_begin = ks0 + att_first_visible(p_first + r, window);
    const int row_key_end = ks0 + p_first + r + 1;

    att_load_rows<T>(Qs, ld, q, tile.start, rows, ATT_TILE, heads * hd, h * hd, hd);
    if (tid < ATT_TILE) {
        row_m[tid] = -INFINITY;
        row_l[tid] = 0.f;
    }
    float acc[DIMS];
#pragma unroll
    for (int c = 0; c < DIMS; ++c) acc[c] = 0.f;

    for (int kb = key_begin; kb < key_end; kb += ATT_BK) {
        __syncthreads();  // Qs and the row state are ready; the last chunk's Ks/Vs/S are consumed
        const int chunk = min(ATT_BK, key_end - kb);
        att_load_rows<T>(Ks, ld, k, kb, chunk, ATT_BK, kv_heads * hd, g * hd, hd);
        att_load_rows<T>(Vs, ld, v, kb, chunk, ATT_BK, kv_heads * hd, g * hd, hd);
        __syncthreads();
#pragma unroll
        for (int c = 0; c < ATT_BK / 8; ++c) {
            const int j = lane + 8 * c;
            const bool valid = r < rows && kb + j >= row_key_begin && kb + j < row_key_end;
            S[r * lds + j] = valid ? att_dot(&Qs[r * ld], &Ks[j * ld], hd) * scale : -INFINITY;
        }
        __syncthreads();
        if (tid < ATT_TILE) {
            float* s_row = &S[tid * lds];
            float m_chunk = -INFINITY;
            for (int j = 0; j < ATT_BK; ++j) m_chunk = fmaxf(m_chunk, s_row[j]);
            const float m_old = row_m[tid], m_new = fmaxf(m_old, m_chunk);
            float alpha = 1.f, l = row_l[tid];
            if (m_new != -INFINITY) {
                alpha = expf(m_old - m_new);  // 0 when m_old is -inf
                l *= alpha;
                for (int j = 0; j < ATT_BK; ++j) {
                    const float p = s_row[j] == -INFINITY ? 0.f : expf(s_row[j] - m_new);
                    s_row[j] = p;
                    l += p;
                }
            } else {
                // Nothing visible yet (a row whose window starts after this chunk).
                for (int j = 0; j < ATT_BK; ++j) s_row[j] = 0.f;
            }
            row_m[tid] = m_new;
            row_l[tid] = l;
            row_alpha[tid] = alpha;
        }
        __syncthreads();
        const float alpha = row_alpha[r];
#pragma unroll
        for (int c = 0; c < DIMS; ++c) acc[c] *= alpha;
        // Keys outer, dims inner (unrolled, so acc stays in registers): each p is read once,
        // and the loop body stays DIMS FMAs long rather than DIMS · ATT_BK.
        for (int j = 0; j < chunk; ++j) {
            const float p = S[r * lds + j];
            const float* v_row = &Vs[j * ld];
#pragma unroll
            for (int c = 0; c < DIMS; ++c) {
                const int d = lane + 8 * c;
                if (d < hd) acc[c] = fmaf(p, v_row[d], acc[c]);
            }
        }
    }
    if (r < rows) {
        // Every row sees at least its own key, so l > 0.
        const long long i = tile.start + r;
        const float l = row_l[r];
#pragma unroll
        for (int c = 0; c < DIMS; ++c) {
            const int d = lane + 8 * c;
            if (d < hd) o[i * heads * hd + h * hd + d] = tf_from_f32<T>(acc[c] / l);
        }
        if (lane == 0) lse[i * heads + h] = row_m[r] + logf(l);
    }
}

// The forward on tensor cores, for bf16 and head_dim a multiple of 16 (the launcher's choice
// then): the same grid, tiles, masking and online softmax as attention_forward_body, with the two
// products on nvcuda::wmma (m16n16k16, bf16 in, f32 accumulate). Q, K and V are staged in shared
// memory as bf16; S = Q Kᵀ (16 x 32 per chunk: warps 0 and 1, one 16 x 16 block each, over
// head_dim), then the row threads mask, scale and exponentiate S into P (rounded to bf16, as
// flash attention does; the row sums stay f32), then all four warps compute the chunk's P V
// (16 x hd: warp w takes the column blocks w, w + 4, ...) into an f32 scratch, which each thread
// folds into its registers (acc · alpha + P V), as the FMA version does.
// wmma's rules: fragment pointers 32-byte aligned, leading dimensions multiples of 16 bytes.
#define ATT_MMA_LDS (ATT_BK + 4)  // S, f32
#define ATT_MMA_LDP (ATT_BK + 8)  // P, bf16

struct AttMmaShared {
    __nv_bfloat16 *Qb, *Kb, *Vb, *Pb;
    float *S, *PV, *row_m, *row_l, *row_alpha;
};

// Carves the tensor-core forward's shared memory at `base` (when not null) for head_dim hd and
// returns its size in bytes; every array starts on a 128-byte boundary. The launcher
// (shared_bytes, Layout::ForwardMma) computes the same size.
__host__ __device__ inline int att_forward_mma_layout(int hd, char* base, AttMmaShared* out) {
    const int ldb = hd + 8, ldo = hd + 4;
    int offset = 0;
    auto take = [&](int bytes) {
        char* p = base ? base + offset : nullptr;
        offset += (bytes + 127) / 128 * 128;
        return p;
    };
    char* Qb = take(ATT_TILE * ldb * 2);
    char* Kb = take(ATT_BK * ldb * 2);
    char* Vb = take(ATT_BK * ldb * 2);
    char* S = take(ATT_TILE * ATT_MMA_LDS * 4);
    char* Pb = take(ATT_TILE * ATT_MMA_LDP * 2);
    char* PV = take(ATT_TILE * ldo * 4);
    char* rows = take(3 * ATT_TILE * 4);
    if (out) {
        out->Qb = reinterpret_cast<__nv_bfloat16*>(Qb);
        out->Kb = reinterpret_cast<__nv_bfloat16*>(Kb);
        out->Vb = reinterpret_cast<__nv_bfloat16*>(Vb);
        out->S = reinterpret_cast<float*>(S);
        out->Pb = reinterpret_cast<__nv_bfloat16*>(Pb);
        out->PV = reinterpret_cast<float*>(PV);
        out->row_m = reinterpret_cast<float*>(rows);
        out->row_l = out->row_m + ATT_TILE;
        out->row_alpha = out->row_l + ATT_TILE;
    }
    return offset;
}

// Rows row0.. of a bf16 matrix into dst[nrows][ld] as they are; rows past `rows` become 0.
__device__ void att_stage_bf16(__nv_bfloat16* dst, int ld, const __nv_bfloat16* src, int row0,
                               int rows, int nrows, int stride, int col0, int hd) {
    for (int e = threadIdx.x; e < nrows * hd; e += blockDim.x) {
        const int r = e / hd, d = e % hd;
        dst[r * ld + d] =
            r < rows ? src[(long long)(row0 + r) * stride + col0 + d] : __float2bfloat16_rn(0.f);
    }
}

template <int HD>
__device__ void attention_forward_mma_body(const __nv_bfloat16* q, const __nv_bfloat16* k,
                                           const __nv_bfloat16* v, __nv_bfloat16* o, float* lse,
                                           const int* q_starts, const int* kv_starts,
                                           const AttTile* tiles, int heads, int kv_heads, int hd,
                                           float scale, int window) {
    using namespace nvcuda;
    constexpr int DIMS = HD / 8;
    if (tf_dynamic_shared_bytes() < (unsigned)att_forward_mma_layout(hd, nullptr, nullptr)) __trap();
    TF_DYNAMIC_SHARED(shared);
    AttMmaShared sh;
    att_forward_mma_layout(hd, reinterpret_cast<char*>(shared), &sh);
    const int ldb = hd + 8, ldo = hd + 4;

    const AttTile tile = tiles[blockIdx.x];
    const int h = blockIdx.y, g = h / (heads / kv_heads);
    const int qs0 = q_starts[tile.segment], ks0 = kv_starts[tile.segment];
    const int offset = (kv_starts[tile.segment + 1] - ks0) - (q_starts[tile.segment + 1] - qs0);
    const int rows = tile.end - tile.start;
    const int p_first = offset + (tile.start - qs0);
    const int key_begin = ks0 + att_first_visible(p_first, window);
    const int key_end = ks0 + p_first + rows;
    const int tid = threadIdx.x, r = tid / 8, lane = tid % 8, warp = tid / 32;

    att_stage_bf16(sh.Qb, ldb, q, tile.start, rows, ATT_TILE, heads * hd, h * hd, hd);
    if (tid < ATT_TILE) {
        sh.row_m[tid] = -INFINITY;
        sh.row_l[tid] = 0.f;
    }
    float acc[DIMS];
#pragma unroll
    for (int c = 0; c < DIMS; ++c) acc[c] = 0.f;

    for (int kb = key_begin; kb < key_end; kb += ATT_BK) {
        __syncthreads();  // Qb and the row state are ready; the last chunk is consumed
        const int chunk = min(ATT_BK, key_end - kb);
        att_stage_bf16(sh.Kb, ldb, k, kb, chunk, ATT_BK, kv_heads * hd, g * hd, hd);
        att_stage_bf16(sh.Vb, ldb, v, kb, chunk, ATT_BK, kv_heads * hd, g * hd, hd);
        __syncthreads();
        if (warp < ATT_BK / 16) {  // S[:, 16 warp ..] = Q · K[16 warp ..]ᵀ
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> s_acc;
            wmma::fill_fragment(s_acc, 0.f);
            for (int k0 = 0; k0 < hd; k0 += 16) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> a;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> b;
                wmma::load_matrix_sync(a, sh.Qb + k0, ldb);
                wmma::load_matrix_sync(b, sh.Kb + warp * 16 * ldb + k0, ldb);
                wmma::mma_sync(s_acc, a, b, s_acc);
            }
            wmma::store_matrix_sync(sh.S + warp * 16, s_acc, ATT_MMA_LDS, wmma::mem_row_major);
        }
        __syncthreads();
        if (tid < ATT_TILE) {  // row tid: mask, scale, online softmax; P as bf16
            const int row_key_begin = ks0 + att_first_visible(p_first + tid, window);
            const int row_key_end = ks0 + p_first + tid + 1;
            float* s_row = &sh.S[tid * ATT_MMA_LDS];
            float m_chunk = -INFINITY;
            for (int j = 0; j < ATT_BK; ++j) {
                const bool valid = tid < rows && kb + j >= row_key_begin && kb + j < row_key_end;
                s_row[j] = valid ? s_row[j] * scale : -INFINITY;
                m_chunk = fmaxf(m_chunk, s_row[j]);
            }
            const float m_old = sh.row_m[tid], m_new = fmaxf(m_old, m_chunk);
            float alpha = 1.f, l = sh.row_l[tid];
            __nv_bfloat16* p_row = &sh.Pb[tid * ATT_MMA_LDP];
            if (m_new != -INFINITY) {
                alpha = expf(m_old - m_new);  // 0 when m_old is -inf
                l *= alpha;
                for (int j = 0; j < ATT_BK; ++j) {
                    const float p = s_row[j] == -INFINITY ? 0.f : expf(s_row[j] - m_new);
                    p_row[j] = __float2bfloat16_rn(p);
                    l += p;
                }
            } else {
                for (int j = 0; j < ATT_BK; ++j) p_row[j] = __float2bfloat16_rn(0.f);
            }
            sh.row_m[tid] = m_new;
            sh.row_l[tid] = l;
            sh.row_alpha[tid] = alpha;
        }
        __syncthreads();
        for (int n0 = warp * 16; n0 < hd; n0 += 16 * (ATT_THREADS / 32)) {  // PV = P · V
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> pv;
            wmma::fill_fragment(pv, 0.f);
#pragma unroll
            for (int k0 = 0; k0 < ATT_BK; k0 += 16) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> a;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> b;
                wmma::load_matrix_sync(a, sh.Pb + k0, ATT_MMA_LDP);
                wmma::load_matrix_sync(b, sh.Vb + k0 * ldb + n0, ldb);
                wmma::mma_sync(pv, a, b, pv);
            }
            wmma::store_matrix_sync(sh.PV + n0, pv, ldo, wmma::mem_row_major);
        }
        __syncthreads();
        const float alpha = sh.row_alpha[r];
#pragma unroll
        for (int c = 0; c < DIMS; ++c) {
            const int d = lane + 8 * c;
            if (d < hd) acc[c] = fmaf(acc[c], alpha, sh.PV[r * ldo + d]);
        }
    }
    if (r < rows) {
        const long long i = tile.start + r;
        const float l = sh.row_l[r];
#pragma unroll
        for (int c = 0; c < DIMS; ++c) {
            const int d = lane + 8 * c;
            if (d < hd) o[i * heads * hd + h * hd + d] = __float2bfloat16_rn(acc[c] / l);
        }
        if (lane == 0) lse[i * heads + h] = sh.row_m[r] + logf(l);
    }
}

template <typename T>
__device__ void attention_bwd_dot_body(const T* dout, const T* out, float* D, int hd, long long n) {
    TF_FOR_EACH(e, n) {  // e = token * heads + head
        float s = 0.f;
        for (int d = 0; d < hd; ++d) s += tf_to_f32(dout[e * hd + d]) * tf_to_f32(out[e * hd + d]);
        D[e] = s;
    }
}

// p and ds for query row r of a tile (head h) and key j of a chunk; 0 where the pair is masked.
__device__ __forceinline__ void att_p_ds(const float* qr, const float* dor, const float* kj,
                                         const float* vj, float lse_r, float D_r, float scale,
                                         int hd, bool valid, float* p, float* ds) {
    if (!valid) {
        *p = 0.f;
        *ds = 0.f;
        return;
    }
    const float pv = expf(att_dot(qr, kj, hd) * scale - lse_r);
    *p = pv;
    *ds = pv * (att_dot(dor, vj, hd) - D_r) * scale;
}

template <int HD, typename T>
__device__ void attention_bwd_dq_body(const T* q, const T* k, const T* v, const T* dout,
                                      const float* lse, const float* D, T* dq, const int* starts,
                                      const AttTile* tiles, int heads, int kv_heads, int hd,
                                      float scale, int window) {
    constexpr int DIMS = HD / 8;
    att_require_shared(att_bwd_dq_shared_floats(hd));
    TF_DYNAMIC_SHARED(shared);
    const int ld = hd + 1, lds = ATT_BK_BWD + 1;
    float* Qs = shared;                  // [ATT_TILE][ld]
    float* dOs = Qs + ATT_TILE * ld;     // [ATT_TILE][ld]
    float* Ks = dOs + ATT_TILE * ld;     // [ATT_BK_BWD][ld]
    float* Vs = Ks + ATT_BK_BWD * ld;    // [ATT_BK_BWD][ld]
    float* DS = Vs + ATT_BK_BWD * ld;    // [ATT_TILE][lds]

    const AttTile tile = tiles[blockIdx.x];
    const int h = blockIdx.y, g = h / (heads / kv_heads);
    const int s0 = starts[tile.segment];
    const int rows = tile.end - tile.start;
    const int tid = threadIdx.x, r = tid / 8, lane = tid % 8;
    const int i = tile.start + r;
    const int row_key_begin = s0 + att_first_visible(i - s0, window);
    const float lse_r = r < rows ? lse[(long long)i * heads + h] : 0.f;
    const float D_r = r < rows ? D[(long long)i * heads + h] : 0.f;

    att_load_rows<T>(Qs, ld, q, tile.start, rows, ATT_TILE, heads * hd, h * hd, hd);
    att_load_rows<T>(dOs, ld, dout, tile.start, rows, ATT_TILE, heads * hd, h * hd, hd);
    float acc[DIMS];
#pragma unroll
    for (int c = 0; c < DIMS; ++c) acc[c] = 0.f;

    // The tile's keys: from the first its first row sees to its last row.
    for (int kb = s0 + att_first_visible(tile.start - s0, window); kb < tile.end; kb += ATT_BK_BWD) {
        __syncthreads();
        const int chunk = min(ATT_BK_BWD, tile.end - kb);
        att_load_rows<T>(Ks, ld, k, kb, chunk, ATT_BK_BWD, kv_heads * hd, g * hd, hd);
        att_load_rows<T>(Vs, ld, v, kb, chunk, ATT_BK_BWD, kv_heads * hd, g * hd, hd);
        __syncthreads();
#pragma unroll
        for (int c = 0; c < ATT_BK_BWD / 8; ++c) {
            const int j = lane + 8 * c;
            const bool valid = r < rows && kb + j >= row_key_begin && kb + j <= i;
            float p, ds;
            att_p_ds(&Qs[r * ld], &dOs[r * ld], &Ks[j * ld], &Vs[j * ld], lse_r, D_r, scale, hd,
                     valid, &p, &ds);
            DS[r * lds + j] = ds;
        }
        __syncthreads();
        for (int j = 0; j < chunk; ++j) {
            const float ds = DS[r * lds + j];
            const float* k_row = &Ks[j * ld];
#pragma unroll
            for (int c = 0; c < DIMS; ++c) {
                const int d = lane + 8 * c;
                if (d < hd) acc[c] = fmaf(ds, k_row[d], acc[c]);
            }
        }
    }
    if (r < rows) {
#pragma unroll
        for (int c = 0; c < DIMS; ++c) {
            const int d = lane + 8 * c;
            if (d < hd) dq[(long long)i * heads * hd + h * hd + d] = tf_from_f32<T>(acc[c]);
        }
    }
}

template <int HD, typename T>
__device__ void attention_bwd_dkdv_body(const T* q, const T* k, const T* v, const T* dout,
                                        const float* lse, const float* D, T* dk, T* dv,
                                        const int* starts, const AttTile* tiles, int heads,
                                        int kv_heads, int hd, float scale, int window) {
    constexpr int DIMS = HD / 8;
    att_require_shared(att_bwd_dkdv_shared_floats(hd));
    TF_DYNAMIC_SHARED(shared);
    const int ld = hd + 1, lds = ATT_BK_BWD + 1;
    float* Qs = shared;                  // [ATT_TILE][ld]
    float* dOs = Qs + ATT_TILE * ld;     // [ATT_TILE][ld]
    float* Ks = dOs + ATT_TILE * ld;     // [ATT_BK_BWD][ld]
    float* Vs = Ks + ATT_BK_BWD * ld;    // [ATT_BK_BWD][ld]
    float* P = Vs + ATT_BK_BWD * ld;     // [ATT_TILE][lds]
    float* DS = P + ATT_TILE * lds;      // [ATT_TILE][lds]
    float* lse_s = DS + ATT_TILE * lds;  // [ATT_TILE]
    float* D_s = lse_s + ATT_TILE;       // [ATT_TILE]

    const AttTile tile = tiles[blockIdx.x];  // a tile of keys
    const int g = blockIdx.y, group = heads / kv_heads;
    const int s_end = starts[tile.segment + 1];
    const int keys = tile.end - tile.start;
    // The queries that see some key of the tile: from its first key to the last query whose
    // window still reaches its last key, tile.end − 1 + window − 1 (no overflow for INT_MAX).
    const int q_end = s_end - (tile.end - 1) <= window ? s_end : tile.end - 1 + window;
    const int tid = threadIdx.x, lane = tid % 8;
    const int jj = tid / 8;  // the key this thread accumulates dK, dV for

    att_load_rows<T>(Ks, ld, k, tile.start, keys, ATT_BK_BWD, kv_heads * hd, g * hd, hd);
    att_load_rows<T>(Vs, ld, v, tile.start, keys, ATT_BK_BWD, kv_heads * hd, g * hd, hd);
    float dk_acc[DIMS], dv_acc[DIMS];
#pragma unroll
    for (int c = 0; c < DIMS; ++c) dk_acc[c] = dv_acc[c] = 0.f;

    for (int local = 0; local < group; ++local) {
        const int h = g * group + local;
        for (int qb = tile.start; qb < q_end; qb += ATT_TILE) {
            const int rows = min(ATT_TILE, q_end - qb);
            __syncthreads();
            att_load_rows<T>(Qs, ld, q, qb, rows, ATT_TILE, heads * hd, h * hd, hd);
            att_load_rows<T>(dOs, ld, dout, qb, rows, ATT_TILE, heads * hd, h * hd, hd);
            if (tid < ATT_TILE) {
                lse_s[tid] = tid < rows ? lse[(long long)(qb + tid) * heads + h] : 0.f;
                D_s[tid] = tid < rows ? D[(long long)(qb + tid) * heads + h] : 0.f;
            }
            __syncthreads();
            {
                const int r = tid / 8;
#pragma unroll
                for (int c = 0; c < ATT_BK_BWD / 8; ++c) {
                    const int j = lane + 8 * c;
                    // Query qb + r sees key tile.start + j iff 0 <= (qb + r) − key < window.
                    const int distance = (qb + r) - (tile.start + j);
                    const bool valid = r < rows && j < keys && distance >= 0 && distance < window;
                    att_p_ds(&Qs[r * ld], &dOs[r * ld], &Ks[j * ld], &Vs[j * ld], lse_s[r],
                             D_s[r], scale, hd, valid, &P[r * lds + j], &DS[r * lds + j]);
                }
            }
            __syncthreads();
            if (jj < keys) {
                for (int r = 0; r < rows; ++r) {
                    const float p = P[r * lds + jj], ds = DS[r * lds + jj];
                    const float *do_row = &dOs[r * ld], *q_row = &Qs[r * ld];
#pragma unroll
                    for (int c = 0; c < DIMS; ++c) {
                        const int d = lane + 8 * c;
                        if (d < hd) {
                            dv_acc[c] = fmaf(p, do_row[d], dv_acc[c]);
                            dk_acc[c] = fmaf(ds, q_row[d], dk_acc[c]);
                        }
                    }
                }
            }
        }
    }
    if (jj < keys) {
        const long long j = tile.start + jj;
#pragma unroll
        for (int c = 0; c < DIMS; ++c) {
            const int d = lane + 8 * c;
            if (d < hd) {
                dk[j * kv_heads * hd + g * hd + d] = tf_from_f32<T>(dk_acc[c]);
                dv[j * kv_heads * hd + g * hd + d] = tf_from_f32<T>(dv_acc[c]);
            }
        }
    }
}

// The tiled kernels for one head-dim limit HD and dtype T: attention_forward_hd<HD>_<SUF>, ...
#define ATT_TILED_ENTRIES(HD, SUF, T)                                                              \
    extern "C" __global__ void __launch_bounds__(ATT_THREADS) attention_forward_hd##HD##_##SUF(    \
        const T* q, const T* k, const T* v, T* o, float* lse, const int* q_starts,                 \
        const int* kv_starts, const AttTile* tiles, int heads, int kv_heads, int hd, float scale,  \
        int window) {                                                                              \
        attention_forward_body<HD, T>(q, k, v, o, lse, q_starts, kv_starts, tiles, heads,          \
                                      kv_heads, hd, scale, window);                                \
    }                                                                                              \
    extern "C" __global__ void __launch_bounds__(ATT_THREADS) attention_bwd_dq_hd##HD##_##SUF(     \
        const T* q, const T* k, const T* v, const T* dout, const float* lse, const float* D,       \
        T* dq, const int* starts, const AttTile* tiles, int heads, int kv_heads, int hd,           \
        float scale, int window) {                                                                 \
        attention_bwd_dq_body<HD, T>(q, k, v, dout, lse, D, dq, starts, tiles, heads, kv_heads,    \
                                     hd, scale, window);                                           \
    }                                                                                              \
    extern "C" __global__ void __launch_bounds__(ATT_THREADS) attention_bwd_dkdv_hd##HD##_##SUF(   \
        const T* q, const T* k, const T* v, const T* dout, const float* lse, const float* D,       \
        T* dk, T* dv, const int* starts, const AttTile* tiles, int heads, int kv_heads, int hd,    \
        float scale, int window) {                                                                 \
        attention_bwd_dkdv_body<HD, T>(q, k, v, dout, lse, D, dk, dv, starts, tiles, heads,        \
                                       kv_heads, hd, scale, window);                               \
    }

#define ATT_MMA_ENTRY(HD)                                                                          \
    extern "C" __global__ void __launch_bounds__(ATT_THREADS) attention_forward_mma_hd##HD##_bf16( \
        const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v, __nv_bfloat16* o,  \
        float* lse, const int* q_starts, const int* kv_starts, const AttTile* tiles, int heads,    \
        int kv_heads, int hd, float scale, int window) {                                           \
        attention_forward_mma_body<HD>(q, k, v, o, lse, q_starts, kv_starts, tiles, heads,         \
                                       kv_heads, hd, scale, window);                               \
    }

#define ATT_ENTRIES(SUF, T)                                                                        \
    extern "C" __global__ void attention_bwd_dot_##SUF(const T* dout, const T* out, float* D,      \
                                                       int hd, long long n) {                      \
        attention_bwd_dot_body<T>(dout, out, D, hd, n);                                            \
    }                                                                                              \
    ATT_TILED_ENTRIES(64, SUF, T)                                                                  \
    ATT_TILED_ENTRIES(128, SUF, T)                                                                 \
    ATT_TILED_ENTRIES(256, SUF, T)

ATT_ENTRIES(f32, float)
ATT_ENTRIES(bf16, __nv_bfloat16)
ATT_MMA_ENTRY(64)
ATT_MMA_ENTRY(128)
ATT_MMA_ENTRY(256)
