// Causal attention with grouped KV heads over packed variable-length segments (ops/attention.rs),
// with an optional sliding window and a softmax scale given by the caller. transformer_common.cuh
// is prepended. Two families of kernels with the same arguments and grid shapes: tiled CUDA-core
// FMA kernels for f32 and for head dims that are not multiples of 16, and tensor-core kernels
// (nvcuda::wmma m16n16k16, bf16 in, f32 accumulate; *_mma_*) for bf16 at head dims that are
// multiples of 16, which the launcher takes then. Neither has been tuned on a GPU. At the end
// of the file, the decode kernel over per-sequence KV caches read in place (described there; it
// has not run on a GPU).
//
// Layout: Q [Tq, H·hd], K and V [Tk, Hkv·hd], O like Q, lse [Tq·H] (token-major). Segment s owns
// query rows q_starts[s].. and key rows kv_starts[s]..; its query j sits at key position
// p = kv_len − q_len + j (relative to the segment's first key) and sees the keys at positions
// p − window < i ≤ p, never another segment's (with q_starts == kv_starts this is plain causal
// self-attention; the decode step passes a longer KV cache). No window is window = INT_MAX.
// Scores are q·k · scale. Query head h reads KV head h / (H / Hkv). Work units: tiles of at most
// ATT_TILE = 16 rows of one segment, {segment, start, end} built by the host once per batch (like
// flix_core's Tile); the backward is self-attention (one `starts` array) and uses the same tiles
// as key tiles. The tensor-core kernels take tiles of at most ATT_POS_TILE = 64 positions instead
// (also built once per batch, independent of the heads): the forward and dQ cut each into blocks
// of packed (position, query head) rows of one KV head's group ("Packed rows" below), dK/dV takes
// each as the keys of one block (two past head_dim 128). Every block has 128 threads (4 warps).
//
// FMA kernels:
//   attention_forward_*:  grid (query tiles, H). Keys in chunks of ATT_BK = 32 through shared
//                         memory, from the first key the tile's first row sees to the tile's last
//                         row (chunks wholly before a window are never loaded); online softmax per
//                         row (running max m and sum l, the accumulator rescaled by
//                         exp(m_old − m_new)); writes O and lse = m + log l.
//   attention_bwd_dot_*:  D[t·H + h] = dO · O per (token, head) (both families).
//   attention_bwd_dq_*:   grid (query tiles, H): p = exp(s − lse), ds = p (dO·v − D) · scale,
//                         dQ = Σ_j ds k_j. Keys in chunks of ATT_BK_BWD = 16, over the keys the
//                         tile sees.
//   attention_bwd_dkdv_*: grid (key tiles, Hkv): each block owns dK, dV of its keys for all the
//                         query heads of its group and loops over the queries that see them (the
//                         later ones of the segment, up to the window): dV_j = Σ p dO,
//                         dK_j = Σ ds q. Every dK/dV row has one owner and a fixed summation
//                         order: no atomics, deterministic.
//
// Tensor-core kernels (details above each body): operands in shared memory as bf16, P and dS
// rounded to bf16 for the products that take them (as flash attention 2 does), row statistics
// (m, l, lse, D) and every accumulation in f32. The tiles a block streams come through a
// two-stage cp.async pipeline (16-byte asynchronous copies): the next tile lands while the
// current one is computed.
//   attention_forward_mma_*:   grid (position tiles, H): block (tile, y) owns up to 64 packed
//                              rows, the (position, query head) pairs of KV head y / G's group
//                              (G = H / Hkv), position-major, 16 per warp; each 32-key chunk of
//                              K and V it streams serves all of them (G heads x its positions).
//                              Flash-attention-2 style: each warp computes S = Q Kᵀ for its rows,
//                              runs their online softmax (two lanes per row, m and l in
//                              registers) and accumulates P V into its own wmma fragments, with
//                              no block barrier inside a chunk.
//   attention_bwd_dq_mma_*:    the same grid and packed rows; each warp keeps its rows' Q, dO
//                              (shared), lse, D (registers); per 32-key chunk: S and dP = dO Vᵀ,
//                              dS by its lanes, dQ += dS K into its own f32 fragments.
//   attention_bwd_dkdv_mma_*:  grid (position tiles, Hkv · blocks per tile): a block owns the dK,
//                              dV of up to 64 keys of one KV head (32 past hd 128), K and V loaded
//                              once for the whole group of query heads (GQA/MQA), each warp 16
//                              keys with their dK and dV in register fragments; Q, dO, lse and D
//                              of the group's heads stream through in chunks of 32 query rows (16
//                              past hd 128), and per chunk each warp computes its own Sᵀ = K Qᵀ,
//                              dPᵀ = V dOᵀ, Pᵀ and dSᵀ, then dV += Pᵀ dO and dK += dSᵀ Q, with no
//                              partial sums across warps. One owner per dK/dV row, fixed order:
//                              deterministic, no atomics.
// The same masks as the FMA kernels, and the same skipping: key and query chunks wholly outside
// the causal limit or the window are never visited (and a warp skips the products of a chunk that
// none of its rows or keys sees).
//
// Head dims: every kernel but the dot is compiled for three limits HD = 64, 128 and 256 (entry
// names attention_forward_hd{64,128,256}_{f32,bf16}, attention_forward_mma_hd{64,128,256}_bf16,
// attention_bwd_dq_mma_hd..., ...); the launcher picks the smallest that holds head_dim. HD sizes
// the per-thread accumulators (registers: f32 arrays in the FMA kernels; wmma fragments in the
// tensor-core ones: HD / 16 per warp in the forward and dQ, a warp owning all columns of its 16
// rows; in dK/dV HD / 16 per output (dK, dV) up to 128 and HD / 32 at 256, where two warps split
// each 16 keys' columns). Shared memory is dynamic, sized for the actual head_dim
// (FMA: f32 rows padded to hd + 1 floats, so that threads reading one column of different rows
// hit different banks; tensor cores: bf16 rows of hd + 8). In KiB (rounded up) at hd 64 / 128 /
// 256: FMA forward 23 / 43 / 83, FMA dQ and dK/dV 19 / 35 / 67; tensor-core forward 41 / 65 /
// 113, dQ 59 / 91 / 155, dK/dV 65 / 97 / 83 (at 256 a block holds 32 keys and 16-row query
// chunks). Past the 48 KB default the launcher raises the kernel's limit
// (CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES; the H200 allows 227 KB per block and 228 KB
// per multiprocessor, 1 KB of it reserved per block: two blocks of every kernel fit at hd 128, and
// at hd 256 of every kernel but the tensor-core dQ, which runs one block per multiprocessor
// there). The launcher computes the same sizes (ops/cuda/attention.rs,
// shared_bytes) and every kernel traps at entry if given less.

#include <cuda_pipeline_primitives.h>
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

// ---- Tensor-core kernels (bf16, head_dim a multiple of 16: the launcher's choice then) ----
//
// All products on nvcuda::wmma (m16n16k16, bf16 in, f32 accumulate), operands staged in shared
// memory as bf16. wmma's rules: fragment pointers 32-byte aligned, leading dimensions multiples
// of 16 bytes; every array below starts on a 128-byte boundary and bf16 rows are hd + 8 long
// (hd + 8 is a multiple of 8 elements = 16 bytes; the 8 extra break the bank pattern of rows that
// are a multiple of 128 bytes apart).
//
// The tiles each block streams (K/V chunks in the forward and dQ, Q/dO blocks in dK/dV) come in
// through a two-stage pipeline of 16-byte asynchronous copies (cp.async, through
// <cuda_pipeline_primitives.h>): while the block computes on stage i & 1 the copies of chunk
// i + 1 into the other stage are in flight. Each iteration commits exactly one copy group (empty
// after the last chunk), so __pipeline_wait_prior(1) always means "all but the newest group have
// landed", i.e. the current stage is complete.

#define ATT_MMA_LDS (ATT_BK + 4)  // S and dP, f32, 32-key chunks
#define ATT_MMA_LDP (ATT_BK + 8)  // P and dS, bf16, 32-key chunks
#define ATT_WARPS (ATT_THREADS / 32)

// Carves shared memory: `take(bytes)` returns the next array (on a 128-byte boundary) at `base`,
// or null when base is null (sizing only); `offset` is the total so far, in bytes.
struct AttCarver {
    char* base;
    int offset = 0;
    __host__ __device__ char* take(int bytes) {
        char* p = base ? base + offset : nullptr;
        offset += (bytes + 127) / 128 * 128;
        return p;
    }
    __host__ __device__ __nv_bfloat16* bf16(int n) { return reinterpret_cast<__nv_bfloat16*>(take(2 * n)); }
    __host__ __device__ float* f32(int n) { return reinterpret_cast<float*>(take(4 * n)); }
};

// Stage `i` (0 or 1, known only at run time) of a two-stage pair. A select rather than an index:
// indexing the pair with a run-time value would move the whole struct to local memory.
template <typename P>
__device__ __forceinline__ P att_stage(const P (&pair)[2], int i) {
    return i ? pair[1] : pair[0];
}

// The tensor-core kernels' entry check: head_dim a multiple of 16 (the fragments' width; the
// launcher's condition for taking them) and at least `bytes` of dynamic shared memory.
__device__ __forceinline__ void att_require_mma(int hd, int bytes) {
    if (hd % 16 != 0 || tf_dynamic_shared_bytes() < (unsigned)bytes) __trap();
}

// ---- Packed rows: the tensor-core forward and dQ ----
//
// A block of the tensor-core forward or dQ owns up to ATT_BLOCK_ROWS packed rows: the
// (query position, query head) pairs of one KV head g's group of G = H / Hkv query heads,
// position-major (packed row n of a work unit: position start + n / G, head g·G + n % G), 16 per
// warp. The work units are tiles of at most ATT_POS_TILE query positions of one segment (built
// by the host once per batch, like the 16-row tiles; they do not depend on G); a tile of P
// positions holds P·G packed rows, cut into blocks of ATT_BLOCK_ROWS: grid (tiles, H), block
// (tile, y) owning rows (y % G)·ATT_BLOCK_ROWS .. of KV head y / G (P ≤ ATT_POS_TILE = 64 makes
// G blocks enough; those past the tile's rows return at once). So each K/V chunk a block stages
// serves all of its rows: G heads × its positions. With G = 1 a block is 64 positions of one
// head; with G > 64 one position's heads span several blocks; a G that does not divide 64 lets a
// block hold part of a position's heads (every row is independent, so nothing else changes).

#define ATT_POS_TILE 64
#define ATT_BLOCK_ROWS (16 * ATT_WARPS)
#define ATT_FULL_WARP 0xffffffffu
static_assert(ATT_POS_TILE <= ATT_BLOCK_ROWS, "a tile's P*G rows must fit its G blocks");

struct AttPackedRows {
    int group;       // G, query heads per KV head
    int kv_head;     // g
    int first;       // the packed index (within the tile) of the block's row 0
    int rows;        // the block's rows, 0 .. ATT_BLOCK_ROWS
    int tile_start;  // the tile's first query row
    // Query row (token) and head of the block's row r < rows.
    __device__ int token(int r) const { return tile_start + (first + r) / group; }
    __device__ int head(int r) const { return kv_head * group + (first + r) % group; }
};

__device__ __forceinline__ AttPackedRows att_packed_rows(const AttTile& tile, int heads,
                                                         int kv_heads) {
    AttPackedRows pr;
    pr.group = heads / kv_heads;
    pr.kv_head = blockIdx.y / pr.group;
    pr.first = (blockIdx.y % pr.group) * ATT_BLOCK_ROWS;
    const int left = (tile.end - tile.start) * pr.group - pr.first;
    pr.rows = left < 0 ? 0 : left < ATT_BLOCK_ROWS ? left : ATT_BLOCK_ROWS;
    pr.tile_start = tile.start;
    return pr;
}

// The block's packed rows of a [tokens, heads·hd] bf16 matrix (Q or dO) into
// dst[ATT_BLOCK_ROWS][ld] through the copy pipeline (as att_stage_bf16_async: 16-byte copies,
// synchronous for a `src` off a 16-byte boundary); rows past pr.rows become 0.
__device__ void att_stage_packed_async(__nv_bfloat16* dst, int ld, const __nv_bfloat16* src,
                                       const AttPackedRows& pr, int heads, int hd) {
    const bool aligned = (reinterpret_cast<unsigned long long>(src) & 15) == 0;
    const int vecs = hd / 8;
    for (int e = threadIdx.x; e < ATT_BLOCK_ROWS * vecs; e += blockDim.x) {
        const int r = e / vecs, d = (e % vecs) * 8;
        __nv_bfloat16* to = dst + r * ld + d;
        if (r >= pr.rows) {
            *reinterpret_cast<uint4*>(to) = make_uint4(0u, 0u, 0u, 0u);
            continue;
        }
        const __nv_bfloat16* from = src + ((long long)pr.token(r) * heads + pr.head(r)) * hd + d;
        if (aligned) {
            __pipeline_memcpy_async(to, from, 16);
        } else {
            for (int i = 0; i < 8; ++i) to[i] = from[i];
        }
    }
}

// A warp's 16 x hd f32 accumulator (column fragments f: columns 16 f ..) written as bf16 rows
// of dst: row r to element offset row_offset(r) (skipped where r is not a valid row, i.e. the
// offset is negative), each value times row_factor. Through the warp's f32 scratch W
// [16][ATT_MMA_LDS], two fragments at a time; lane pair (2r, 2r + 1) writes row r, 16 columns
// each, with its own row_factor.
template <int FRAGS>
__device__ __forceinline__ void att_warp_store_rows(
    const nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float> (&acc)[FRAGS],
    float* W, __nv_bfloat16* dst, long long row_offset, float row_factor, int hd) {
    const int lane = threadIdx.x % 32, r = lane / 2, half = lane % 2;
#pragma unroll
    for (int f = 0; f < FRAGS; f += 2) {
        if (f * 16 >= hd) break;
        nvcuda::wmma::store_matrix_sync(W, acc[f], ATT_MMA_LDS, nvcuda::wmma::mem_row_major);
        if (f + 1 < FRAGS && (f + 1) * 16 < hd)
            nvcuda::wmma::store_matrix_sync(W + 16, acc[f + 1], ATT_MMA_LDS, nvcuda::wmma::mem_row_major);
        __syncwarp();
        const int col0 = (f + half) * 16;
        if (row_offset >= 0 && col0 < hd) {
#pragma unroll
            for (int c = 0; c < 16; ++c)
                dst[row_offset + col0 + c] =
                    __float2bfloat16_rn(W[r * ATT_MMA_LDS + half * 16 + c] * row_factor);
        }
        __syncwarp();  // read before the next pair overwrites W
    }
}

// The forward's running row maximum m moves only when a chunk's maximum exceeds it by more than
// this (natural-log units): until then P = exp(s − m) stays below e^8 ≈ 3000 (harmless in f32 and
// bf16), and the accumulator is not rescaled. Most chunks then need no rescale, which is the one
// step that takes a warp's accumulator out of its registers (wmma hides which row an element
// belongs to). The result is the same function: O = acc / l and lse = m + log l for any m.
#define ATT_MAX_SLACK 8.f

struct AttMmaShared {
    __nv_bfloat16 *Qb, *Kb[2], *Vb[2], *Pb;
    float* W;
};

// The tensor-core forward's shared memory at `base` (when not null) for head_dim hd; returns its
// size in bytes. The launcher (shared_bytes, Layout::ForwardMma) computes the same size. Q of
// the block's rows; K and V chunks x 2 stages; per warp an f32 scratch W [16][ATT_MMA_LDS] (S,
// then the rescale and the output) and P [16][ATT_MMA_LDP] in bf16.
__host__ __device__ inline int att_forward_mma_layout(int hd, char* base, AttMmaShared* out) {
    const int ldb = hd + 8;
    AttCarver c{base};
    AttMmaShared sh;
    sh.Qb = c.bf16(ATT_BLOCK_ROWS * ldb);
    for (int s = 0; s < 2; ++s) {
        sh.Kb[s] = c.bf16(ATT_BK * ldb);
        sh.Vb[s] = c.bf16(ATT_BK * ldb);
    }
    sh.W = c.f32(ATT_WARPS * 16 * ATT_MMA_LDS);
    sh.Pb = c.bf16(ATT_WARPS * 16 * ATT_MMA_LDP);
    if (out) *out = sh;
    return c.offset;
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

// The same staging through the copy pipeline: 16-byte asynchronous copies (8 bf16; hd, stride
// and col0 are multiples of 8, so with a 16-byte aligned `src` every copy is aligned), which land
// by the caller's __pipeline_wait_prior; rows past `rows` are zeroed by ordinary stores, visible
// after the caller's next __syncthreads. A `src` not 16-byte aligned (never from the launcher,
// whose tensors are whole allocations) takes the synchronous path instead.
__device__ void att_stage_bf16_async(__nv_bfloat16* dst, int ld, const __nv_bfloat16* src,
                                     int row0, int rows, int nrows, int stride, int col0, int hd) {
    if ((reinterpret_cast<unsigned long long>(src) & 15) != 0) {
        att_stage_bf16(dst, ld, src, row0, rows, nrows, stride, col0, hd);
        return;
    }
    const int vecs = hd / 8;
    for (int e = threadIdx.x; e < nrows * vecs; e += blockDim.x) {
        const int r = e / vecs, d = (e % vecs) * 8;
        __nv_bfloat16* to = dst + r * ld + d;
        if (r < rows)
            __pipeline_memcpy_async(to, src + (long long)(row0 + r) * stride + col0 + d, 16);
        else
            *reinterpret_cast<uint4*>(to) = make_uint4(0u, 0u, 0u, 0u);
    }
}

// Forward, flash-attention-2 style over packed rows (see above): grid (tiles of ATT_POS_TILE
// positions, H). The block streams the keys its rows see, from the first its first position sees
// (window) to its last position (causal), in 32-key chunks of K and V double-buffered through the
// copy pipeline; chunks wholly outside a warp's rows' keys are skipped by that warp. Each warp owns
// 16 rows: their Q (shared), their online softmax (running max m and sum l in registers of the
// two lanes of each row) and their 16 x hd f32 accumulator (HD / 16 wmma fragments in registers).
// Per chunk, warp by warp with no block barrier: S = Q Kᵀ (16 x 32) into the warp's scratch;
// lanes 2r, 2r + 1 mask, scale and exponentiate row r's 16 + 16 keys (P rounded to bf16, as flash
// attention does; max and sum combined by one shuffle); the accumulator is rescaled only when
// a row's m moved (see ATT_MAX_SLACK); acc += P V. At the end O = acc / l and lse = m + log l.
template <int HD>
__device__ void attention_forward_mma_body(const __nv_bfloat16* q, const __nv_bfloat16* k,
                                           const __nv_bfloat16* v, __nv_bfloat16* o, float* lse,
                                           const int* q_starts, const int* kv_starts,
                                           const AttTile* tiles, int heads, int kv_heads, int hd,
                                           float scale, int window) {
    using namespace nvcuda;
    constexpr int FRAGS = HD / 16;  // the warp's accumulator: column blocks 16 f ..
    att_require_mma(hd, att_forward_mma_layout(hd, nullptr, nullptr));
    TF_DYNAMIC_SHARED(shared);
    AttMmaShared sh;
    att_forward_mma_layout(hd, reinterpret_cast<char*>(shared), &sh);
    const int ldb = hd + 8;

    const AttTile tile = tiles[blockIdx.x];
    const AttPackedRows pr = att_packed_rows(tile, heads, kv_heads);
    if (pr.rows == 0) return;  // past the tile's rows: the whole block, before any barrier
    const int qs0 = q_starts[tile.segment], ks0 = kv_starts[tile.segment];
    const int offset = (kv_starts[tile.segment + 1] - ks0) - (q_starts[tile.segment + 1] - qs0);
    // Keys (absolute rows of K) that query token i sees: [first_key(i), last_key(i)].
    auto first_key = [&](int i) { return ks0 + att_first_visible(offset + (i - qs0), window); };
    auto last_key = [&](int i) { return ks0 + offset + (i - qs0); };
    const int key_begin = first_key(pr.token(0)), key_end = last_key(pr.token(pr.rows - 1)) + 1;
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    // This warp's rows and the keys they see; lanes 2r, 2r + 1 hold row r's softmax.
    const int row0 = warp * 16;
    const int warp_rows = pr.rows - row0 < 0 ? 0 : pr.rows - row0 < 16 ? pr.rows - row0 : 16;
    const int warp_key_begin = warp_rows > 0 ? first_key(pr.token(row0)) : key_end;
    const int warp_key_end = warp_rows > 0 ? last_key(pr.token(row0 + warp_rows - 1)) + 1 : key_end;
    const int r = lane / 2, half = lane % 2;
    const bool row_valid = r < warp_rows;
    const int row_key_begin = row_valid ? first_key(pr.token(row0 + r)) : 0;
    const int row_key_end = row_valid ? last_key(pr.token(row0 + r)) + 1 : 0;
    float* W = sh.W + warp * 16 * ATT_MMA_LDS;
    __nv_bfloat16* Pw = sh.Pb + warp * 16 * ATT_MMA_LDP;
    const __nv_bfloat16* Qw = sh.Qb + row0 * ldb;
    const int kv_stride = kv_heads * hd, kv_col = pr.kv_head * hd;

    float row_m = -INFINITY, row_l = 0.f;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[FRAGS];
#pragma unroll
    for (int f = 0; f < FRAGS; ++f) wmma::fill_fragment(acc[f], 0.f);

    // Q and the first chunk travel in the first copy group; iteration `it` fetches chunk it + 1.
    att_stage_packed_async(sh.Qb, ldb, q, pr, heads, hd);
    att_stage_bf16_async(sh.Kb[0], ldb, k, key_begin, min(ATT_BK, key_end - key_begin), ATT_BK,
                         kv_stride, kv_col, hd);
    att_stage_bf16_async(sh.Vb[0], ldb, v, key_begin, min(ATT_BK, key_end - key_begin), ATT_BK,
                         kv_stride, kv_col, hd);
    __pipeline_commit();
    for (int kb = key_begin, it = 0; kb < key_end; kb += ATT_BK, ++it) {
        const int cur = it & 1;
        // Every warp is done with the previous chunk (its stage), so the other stage may be
        // refilled.
        __syncthreads();
        const int next = kb + ATT_BK;
        if (next < key_end) {
            const int chunk = min(ATT_BK, key_end - next);
            att_stage_bf16_async(att_stage(sh.Kb, cur ^ 1), ldb, k, next, chunk, ATT_BK, kv_stride, kv_col, hd);
            att_stage_bf16_async(att_stage(sh.Vb, cur ^ 1), ldb, v, next, chunk, ATT_BK, kv_stride, kv_col, hd);
        }
        __pipeline_commit();
        __pipeline_wait_prior(1);  // this thread's copies of chunk `it` (and Q) have landed
        __syncthreads();           // ... and every other thread's
        if (kb + ATT_BK <= warp_key_begin || kb >= warp_key_end) continue;  // none of its keys
        const __nv_bfloat16 *Kb = att_stage(sh.Kb, cur), *Vb = att_stage(sh.Vb, cur);
        {  // S = Q Kᵀ: the warp's 16 rows x the chunk's two 16-key blocks
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> s0, s1;
            wmma::fill_fragment(s0, 0.f);
            wmma::fill_fragment(s1, 0.f);
            for (int k0 = 0; k0 < hd; k0 += 16) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> a;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> b;
                wmma::load_matrix_sync(a, Qw + k0, ldb);
                wmma::load_matrix_sync(b, Kb + k0, ldb);
                wmma::mma_sync(s0, a, b, s0);
                wmma::load_matrix_sync(b, Kb + 16 * ldb + k0, ldb);
                wmma::mma_sync(s1, a, b, s1);
            }
            wmma::store_matrix_sync(W, s0, ATT_MMA_LDS, wmma::mem_row_major);
            wmma::store_matrix_sync(W + 16, s1, ATT_MMA_LDS, wmma::mem_row_major);
        }
        __syncwarp();
        // Row r's keys half·16 + c: masked, scaled scores; the row's chunk maximum.
        float s_own[16];
        float m_chunk = -INFINITY;
#pragma unroll
        for (int c = 0; c < 16; ++c) {
            const int j = half * 16 + c, key = kb + j;
            const bool valid = row_valid && key >= row_key_begin && key < row_key_end;
            s_own[c] = valid ? W[r * ATT_MMA_LDS + j] * scale : -INFINITY;
            m_chunk = fmaxf(m_chunk, s_own[c]);
        }
        m_chunk = fmaxf(m_chunk, __shfl_xor_sync(ATT_FULL_WARP, m_chunk, 1));
        // The row's m moves only past the slack (always from −inf, where acc and l are still 0
        // and need no rescale); alpha rescales what was summed under the old m.
        const bool moves = m_chunk > row_m + ATT_MAX_SLACK;
        const float m_new = moves ? m_chunk : row_m;
        const float alpha = moves ? expf(row_m - m_new) : 1.f;  // 0 from −inf
        const bool rescale = moves && row_m != -INFINITY;
        float l_own = 0.f;
#pragma unroll
        for (int c = 0; c < 16; ++c) {
            const float p = s_own[c] == -INFINITY ? 0.f : expf(s_own[c] - m_new);
            Pw[r * ATT_MMA_LDP + half * 16 + c] = __float2bfloat16_rn(p);
            l_own += p;
        }
        row_l = row_l * alpha + (l_own + __shfl_xor_sync(ATT_FULL_WARP, l_own, 1));
        row_m = m_new;
        __syncwarp();  // S read (W free), P written
        if (__any_sync(ATT_FULL_WARP, rescale)) {
            // acc · alpha per row, through W two fragments at a time (lane pair 2r, 2r + 1: row r).
#pragma unroll
            for (int f = 0; f < FRAGS; f += 2) {
                if (f * 16 >= hd) break;
                const bool second = f + 1 < FRAGS && (f + 1) * 16 < hd;
                wmma::store_matrix_sync(W, acc[f], ATT_MMA_LDS, wmma::mem_row_major);
                if (second) wmma::store_matrix_sync(W + 16, acc[f + 1], ATT_MMA_LDS, wmma::mem_row_major);
                __syncwarp();
#pragma unroll
                for (int c = 0; c < 16; ++c) W[r * ATT_MMA_LDS + half * 16 + c] *= alpha;
                __syncwarp();
                wmma::load_matrix_sync(acc[f], W, ATT_MMA_LDS, wmma::mem_row_major);
                if (second) wmma::load_matrix_sync(acc[f + 1], W + 16, ATT_MMA_LDS, wmma::mem_row_major);
                __syncwarp();  // loaded before the next pair overwrites W
            }
        }
#pragma unroll
        for (int f = 0; f < FRAGS; ++f) {  // acc[:, 16 f ..] += P · V[:, 16 f ..]
            if (f * 16 >= hd) break;
#pragma unroll
            for (int k0 = 0; k0 < ATT_BK; k0 += 16) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> a;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> b;
                wmma::load_matrix_sync(a, Pw + k0, ATT_MMA_LDP);
                wmma::load_matrix_sync(b, Vb + k0 * ldb + f * 16, ldb);
                wmma::mma_sync(acc[f], a, b, acc[f]);
            }
        }
    }
    // Every valid row sees at least its own key, so l > 0.
    const long long out_row =
        row_valid ? ((long long)pr.token(row0 + r) * heads + pr.head(row0 + r)) * hd : -1;
    att_warp_store_rows<FRAGS>(acc, W, o, out_row, row_valid ? 1.f / row_l : 0.f, hd);
    if (row_valid && half == 0)
        lse[(long long)pr.token(row0 + r) * heads + pr.head(row0 + r)] = row_m + logf(row_l);
}

// ---- The backward on tensor cores ----
//
// Both kernels recompute S = Q Kᵀ and dP = dO Vᵀ on wmma, turn them into P = exp(S · scale − lse)
// and dS = P (dP − D) · scale in f32, round P and dS to bf16 for the next products (as flash
// attention 2 does; the row statistics lse and D stay f32), and accumulate in f32 fragments that
// stay in registers for the whole block: in dQ each warp owns all columns of its 16 packed rows
// (HD / 16 fragments); in dK/dV each warp owns 16 keys, all columns of their dK and dV up to
// hd 128 (2 · HD / 16 fragments) and alternate 16-column blocks past it (see below).

struct AttDqShared {
    __nv_bfloat16 *Qb, *dOb, *Kb[2], *Vb[2], *dSb;
    float *S, *dP;
};

// dQ's shared memory (see att_forward_mma_layout); the launcher's Layout::BackwardDqMma. Q and
// dO of the block's packed rows; K and V chunks x 2 stages; per warp S and dP [16][ATT_MMA_LDS]
// in f32 (S's also the output scratch) and dS [16][ATT_MMA_LDP] in bf16.
__host__ __device__ inline int att_bwd_dq_mma_layout(int hd, char* base, AttDqShared* out) {
    const int ldb = hd + 8;
    AttCarver c{base};
    AttDqShared sh;
    sh.Qb = c.bf16(ATT_BLOCK_ROWS * ldb);
    sh.dOb = c.bf16(ATT_BLOCK_ROWS * ldb);
    for (int s = 0; s < 2; ++s) {
        sh.Kb[s] = c.bf16(ATT_BK * ldb);
        sh.Vb[s] = c.bf16(ATT_BK * ldb);
    }
    sh.S = c.f32(ATT_WARPS * 16 * ATT_MMA_LDS);
    sh.dP = c.f32(ATT_WARPS * 16 * ATT_MMA_LDS);
    sh.dSb = c.bf16(ATT_WARPS * 16 * ATT_MMA_LDP);
    if (out) *out = sh;
    return c.offset;
}

// dQ over packed rows, like the tensor-core forward: grid (tiles of ATT_POS_TILE positions, H),
// each block up to ATT_BLOCK_ROWS (position, query head) rows of one KV head's group, so each K/V
// chunk it streams (32 keys, double-buffered through the copy pipeline) serves G heads × its
// positions. Each warp owns 16 rows: their Q and dO (shared), lse and D (registers of the two
// lanes of each row) and their 16 x hd f32 dQ (HD / 16 wmma fragments in registers). Per chunk,
// warp by warp: S = Q Kᵀ and dP = dO Vᵀ (16 x 32 each) into the warp's scratch; lanes 2r, 2r + 1
// form row r's dS = P (dP − D) · scale with P = exp(S · scale − lse) (bf16); dQ += dS K.
template <int HD>
__device__ void attention_bwd_dq_mma_body(const __nv_bfloat16* q, const __nv_bfloat16* k,
                                          const __nv_bfloat16* v, const __nv_bfloat16* dout,
                                          const float* lse, const float* D, __nv_bfloat16* dq,
                                          const int* starts, const AttTile* tiles, int heads,
                                          int kv_heads, int hd, float scale, int window) {
    using namespace nvcuda;
    constexpr int FRAGS = HD / 16;  // the warp's dQ: column blocks 16 f ..
    att_require_mma(hd, att_bwd_dq_mma_layout(hd, nullptr, nullptr));
    TF_DYNAMIC_SHARED(shared);
    AttDqShared sh;
    att_bwd_dq_mma_layout(hd, reinterpret_cast<char*>(shared), &sh);
    const int ldb = hd + 8;

    const AttTile tile = tiles[blockIdx.x];
    const AttPackedRows pr = att_packed_rows(tile, heads, kv_heads);
    if (pr.rows == 0) return;  // past the tile's rows: the whole block, before any barrier
    const int s0 = starts[tile.segment];
    // Keys that query token i sees: [first_key(i), i] (self-attention).
    auto first_key = [&](int i) { return s0 + att_first_visible(i - s0, window); };
    const int key_begin = first_key(pr.token(0)), key_end = pr.token(pr.rows - 1) + 1;
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    // This warp's rows and the keys they see; lanes 2r, 2r + 1 form row r's dS.
    const int row0 = warp * 16;
    const int warp_rows = pr.rows - row0 < 0 ? 0 : pr.rows - row0 < 16 ? pr.rows - row0 : 16;
    const int warp_key_begin = warp_rows > 0 ? first_key(pr.token(row0)) : key_end;
    const int warp_key_end = warp_rows > 0 ? pr.token(row0 + warp_rows - 1) + 1 : key_end;
    const int r = lane / 2, half = lane % 2;
    const bool row_valid = r < warp_rows;
    const int row_token = row_valid ? pr.token(row0 + r) : 0;
    const long long row_stat = row_valid ? (long long)row_token * heads + pr.head(row0 + r) : 0;
    const int row_key_begin = row_valid ? first_key(row_token) : 0;
    const int row_key_end = row_valid ? row_token + 1 : 0;
    const float row_lse = row_valid ? lse[row_stat] : 0.f, row_D = row_valid ? D[row_stat] : 0.f;
    float* Sw = sh.S + warp * 16 * ATT_MMA_LDS;
    float* dPw = sh.dP + warp * 16 * ATT_MMA_LDS;
    __nv_bfloat16* dSw = sh.dSb + warp * 16 * ATT_MMA_LDP;
    const __nv_bfloat16 *Qw = sh.Qb + row0 * ldb, *dOw = sh.dOb + row0 * ldb;
    const int kv_stride = kv_heads * hd, kv_col = pr.kv_head * hd;

    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[FRAGS];
#pragma unroll
    for (int f = 0; f < FRAGS; ++f) wmma::fill_fragment(acc[f], 0.f);

    // Q, dO and the first chunk travel in the first copy group; iteration `it` fetches chunk
    // it + 1.
    att_stage_packed_async(sh.Qb, ldb, q, pr, heads, hd);
    att_stage_packed_async(sh.dOb, ldb, dout, pr, heads, hd);
    att_stage_bf16_async(sh.Kb[0], ldb, k, key_begin, min(ATT_BK, key_end - key_begin), ATT_BK,
                         kv_stride, kv_col, hd);
    att_stage_bf16_async(sh.Vb[0], ldb, v, key_begin, min(ATT_BK, key_end - key_begin), ATT_BK,
                         kv_stride, kv_col, hd);
    __pipeline_commit();
    for (int kb = key_begin, it = 0; kb < key_end; kb += ATT_BK, ++it) {
        const int cur = it & 1;
        __syncthreads();  // every warp is done with the previous chunk (stage cur ^ 1)
        const int next = kb + ATT_BK;
        if (next < key_end) {
            const int chunk = min(ATT_BK, key_end - next);
            att_stage_bf16_async(att_stage(sh.Kb, cur ^ 1), ldb, k, next, chunk, ATT_BK, kv_stride, kv_col, hd);
            att_stage_bf16_async(att_stage(sh.Vb, cur ^ 1), ldb, v, next, chunk, ATT_BK, kv_stride, kv_col, hd);
        }
        __pipeline_commit();
        __pipeline_wait_prior(1);
        __syncthreads();
        if (kb + ATT_BK <= warp_key_begin || kb >= warp_key_end) continue;  // none of its keys
        const __nv_bfloat16 *Kb = att_stage(sh.Kb, cur), *Vb = att_stage(sh.Vb, cur);
        // S = Q Kᵀ (pass 0), then dP = dO Vᵀ (pass 1): 16 rows x the chunk's two 16-key blocks.
        for (int pass = 0; pass < 2; ++pass) {
            const __nv_bfloat16* A = pass ? dOw : Qw;
            const __nv_bfloat16* B = pass ? Vb : Kb;
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> p0, p1;
            wmma::fill_fragment(p0, 0.f);
            wmma::fill_fragment(p1, 0.f);
            for (int k0 = 0; k0 < hd; k0 += 16) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> a;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> b;
                wmma::load_matrix_sync(a, A + k0, ldb);
                wmma::load_matrix_sync(b, B + k0, ldb);
                wmma::mma_sync(p0, a, b, p0);
                wmma::load_matrix_sync(b, B + 16 * ldb + k0, ldb);
                wmma::mma_sync(p1, a, b, p1);
            }
            float* out = pass ? dPw : Sw;
            wmma::store_matrix_sync(out, p0, ATT_MMA_LDS, wmma::mem_row_major);
            wmma::store_matrix_sync(out + 16, p1, ATT_MMA_LDS, wmma::mem_row_major);
        }
        __syncwarp();
#pragma unroll
        for (int c = 0; c < 16; ++c) {
            const int j = half * 16 + c, key = kb + j;
            const bool valid = row_valid && key >= row_key_begin && key < row_key_end;
            float ds = 0.f;
            if (valid) {
                const float p = expf(Sw[r * ATT_MMA_LDS + j] * scale - row_lse);
                ds = p * (dPw[r * ATT_MMA_LDS + j] - row_D) * scale;
            }
            dSw[r * ATT_MMA_LDP + j] = __float2bfloat16_rn(ds);
        }
        __syncwarp();
#pragma unroll
        for (int f = 0; f < FRAGS; ++f) {  // dQ[:, 16 f ..] += dS · K[:, 16 f ..]
            if (f * 16 >= hd) break;
#pragma unroll
            for (int k0 = 0; k0 < ATT_BK; k0 += 16) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> a;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> b;
                wmma::load_matrix_sync(a, dSw + k0, ATT_MMA_LDP);
                wmma::load_matrix_sync(b, Kb + k0 * ldb + f * 16, ldb);
                wmma::mma_sync(acc[f], a, b, acc[f]);
            }
        }
    }
    const long long out_row = row_valid ? row_stat * hd : -1;
    att_warp_store_rows<FRAGS>(acc, Sw, dq, out_row, 1.f, hd);
}

// ---- dK/dV on tensor cores: blocks of 64 keys, a warp per 16 keys ----
//
// Flash-attention-2's backward structure: a block owns the dK and dV rows of its keys for the
// whole group of G query heads of its KV head, each warp owns 16 of those keys (their dK and dV
// accumulators in registers, as wmma fragments, for the whole block), and the queries that see the
// block's keys stream through shared memory. Per streamed chunk each warp computes, for its own
// keys only, Sᵀ = K Qᵀ and dPᵀ = V dOᵀ, then Pᵀ = exp(Sᵀ · scale − lse) and
// dSᵀ = Pᵀ (dPᵀ − D) · scale (bf16, as flash attention 2 rounds them), then dV += Pᵀ dO and
// dK += dSᵀ Q. No warp needs another's partial products, so a chunk costs two block barriers (the
// copy pipeline's) however many products it holds.
//
// Sizes by head dim (the kernel's limit HD; the launcher takes the limit from head_dim, so
// att_dkdv_wide(head_dim) == att_dkdv_wide(HD)):
// - hd <= 128: a block is 64 keys (one 64-position tile, the forward's and dQ's work units), a
//   warp 16 keys x every column: 2 · HD / 16 accumulator fragments (8 registers each: 128 at
//   hd 128). Query chunks of 32 rows: each K/V fragment a warp loads serves two 16-query blocks,
//   and the chunk's two barriers and pipeline step are shared by twice the products of a 16-row
//   chunk; 32 rows keep the block at 96.5 KiB of shared memory at hd 128, two blocks per
//   multiprocessor.
// - hd > 128 (the 256 limit): a warp's whole 16 x hd dK and dV would be 256 f32 registers per
//   lane. Two warps share each 16 keys instead, each owning alternate 16-column blocks (warp w:
//   blocks w % 2, w % 2 + 2, ...; 2 · 8 fragments, 128 registers), so a block is 32 keys and a
//   64-position tile gets two blocks (grid y = Hkv · 2). Both warps of a pair compute the pair's
//   full Sᵀ and dPᵀ (over all of head_dim) themselves: no exchange between warps, at the price of
//   computing S and dP twice (1.5x the products of the unsplit layout). Query chunks of 16 rows,
//   so that two blocks still fit a multiprocessor (82.5 KiB).

// Whether head dim (or limit) `hd` takes the split layout above.
__host__ __device__ constexpr bool att_dkdv_wide(int hd) { return hd > 128; }
// Warps that share each 16 keys, each owning every such-th 16-column block of dK and dV.
__host__ __device__ constexpr int att_dkdv_column_split(int hd) { return att_dkdv_wide(hd) ? 2 : 1; }
// Keys per block: 16 per warp pair or per warp.
__host__ __device__ constexpr int att_dkdv_block_keys(int hd) {
    return 16 * ATT_WARPS / att_dkdv_column_split(hd);
}
// Blocks per 64-position tile and KV head: the launcher's grid is (tiles, Hkv · this).
__host__ __device__ constexpr int att_dkdv_blocks_per_tile(int hd) {
    return ATT_POS_TILE / att_dkdv_block_keys(hd);
}
// Query rows per streamed chunk.
__host__ __device__ constexpr int att_dkdv_chunk(int hd) { return att_dkdv_wide(hd) ? 16 : 32; }
static_assert(ATT_POS_TILE % att_dkdv_block_keys(256) == 0 && ATT_POS_TILE % att_dkdv_block_keys(64) == 0,
              "a 64-position tile splits into whole dK/dV blocks");

struct AttDkDvShared {
    __nv_bfloat16 *Kb, *Vb, *Qb[2], *dOb[2], *Pb, *dSb;
    float *S, *dP, *lse[2], *D[2];
};

// dK/dV's shared memory (see att_forward_mma_layout); the launcher's Layout::BackwardDkDvMma. The
// block's K and V rows; Q and dO chunks x 2 stages; per warp Sᵀ and dPᵀ [16][chunk + 4] in f32
// (Sᵀ's also the output scratch) and Pᵀ, dSᵀ [16][chunk + 8] in bf16; lse and D of the chunk's
// queries x 2 stages.
__host__ __device__ inline int att_bwd_dkdv_mma_layout(int hd, char* base, AttDkDvShared* out) {
    const int ldb = hd + 8, keys = att_dkdv_block_keys(hd), chunk = att_dkdv_chunk(hd);
    AttCarver c{base};
    AttDkDvShared sh;
    sh.Kb = c.bf16(keys * ldb);
    sh.Vb = c.bf16(keys * ldb);
    for (int s = 0; s < 2; ++s) {
        sh.Qb[s] = c.bf16(chunk * ldb);
        sh.dOb[s] = c.bf16(chunk * ldb);
    }
    sh.S = c.f32(ATT_WARPS * 16 * (chunk + 4));
    sh.dP = c.f32(ATT_WARPS * 16 * (chunk + 4));
    sh.Pb = c.bf16(ATT_WARPS * 16 * (chunk + 8));
    sh.dSb = c.bf16(ATT_WARPS * 16 * (chunk + 8));
    for (int s = 0; s < 2; ++s) {
        sh.lse[s] = c.f32(chunk);
        sh.D[s] = c.f32(chunk);
    }
    if (out) *out = sh;
    return c.offset;
}

// dK/dV (see above): grid (tiles of ATT_POS_TILE positions, Hkv · att_dkdv_blocks_per_tile);
// block (tile, y) owns keys tile.start + (y % blocks per tile) · block keys .. of KV head
// y / blocks per tile. It walks (query head, chunk) steps in a fixed order: the G heads of the
// group, and for each the query rows from the block's first key (causal) to the last that still
// sees its last key (window) or the segment's end; Q, dO, lse and D of each step are
// double-buffered through the copy pipeline. A warp skips the products of a chunk
// that none of its keys is seen by (both barriers stay uniform). Every dK/dV row has one owner
// and one summation order: no atomics, deterministic.
template <int HD>
__device__ void attention_bwd_dkdv_mma_body(const __nv_bfloat16* q, const __nv_bfloat16* k,
                                            const __nv_bfloat16* v, const __nv_bfloat16* dout,
                                            const float* lse, const float* D, __nv_bfloat16* dk,
                                            __nv_bfloat16* dv, const int* starts,
                                            const AttTile* tiles, int heads, int kv_heads, int hd,
                                            float scale, int window) {
    using namespace nvcuda;
    constexpr int SPLIT = att_dkdv_column_split(HD);
    constexpr int BLOCK_KEYS = att_dkdv_block_keys(HD);
    constexpr int CHUNK = att_dkdv_chunk(HD);
    constexpr int QBLOCKS = CHUNK / 16;        // 16-query blocks per chunk
    constexpr int FRAGS = HD / (16 * SPLIT);   // the warp's column blocks of dK and of dV
    constexpr int LDS = CHUNK + 4, LDP = CHUNK + 8;
    if (att_dkdv_wide(hd) != att_dkdv_wide(HD)) __trap();  // the layout is sized by hd
    att_require_mma(hd, att_bwd_dkdv_mma_layout(hd, nullptr, nullptr));
    TF_DYNAMIC_SHARED(shared);
    AttDkDvShared sh;
    att_bwd_dkdv_mma_layout(hd, reinterpret_cast<char*>(shared), &sh);
    const int ldb = hd + 8;

    const AttTile tile = tiles[blockIdx.x];  // a tile of positions, here of keys
    const int blocks_per_tile = att_dkdv_blocks_per_tile(HD);
    const int g = blockIdx.y / blocks_per_tile, group = heads / kv_heads;
    const int key_begin = tile.start + (blockIdx.y % blocks_per_tile) * BLOCK_KEYS;
    const int keys = min(BLOCK_KEYS, tile.end - key_begin);
    if (keys <= 0) return;  // past a short tile's keys: the whole block, before any barrier
    const int key_end = key_begin + keys;
    const int s_end = starts[tile.segment + 1];
    // The queries that see some key of the block: from its first key to the last query whose
    // window still reaches its last key, key_end − 1 + window − 1 (no overflow for INT_MAX).
    const int q_end = s_end - (key_end - 1) <= window ? s_end : key_end - 1 + window;
    const int chunks_per_head = (q_end - key_begin + CHUNK - 1) / CHUNK;
    const int steps = group * chunks_per_head;
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    // This warp's keys (absolute rows of K) and its column blocks col_block0 + SPLIT · f.
    const int warp_row0 = (warp / SPLIT) * 16;  // within the block
    const int warp_key0 = key_begin + warp_row0;
    const int warp_keys = keys - warp_row0 < 0 ? 0 : keys - warp_row0 < 16 ? keys - warp_row0 : 16;
    const int warp_key_last = warp_key0 + warp_keys - 1;
    const int col_block0 = warp % SPLIT;
    const __nv_bfloat16 *Kw = sh.Kb + warp_row0 * ldb, *Vw = sh.Vb + warp_row0 * ldb;
    float* Sw = sh.S + warp * 16 * LDS;
    float* dPw = sh.dP + warp * 16 * LDS;
    __nv_bfloat16* Pw = sh.Pb + warp * 16 * LDP;
    __nv_bfloat16* dSw = sh.dSb + warp * 16 * LDP;
    const int q_stride = heads * hd, kv_stride = kv_heads * hd, kv_col = g * hd;

    // Step `step` = (head g · group + step / chunks_per_head, chunk step % chunks_per_head) into
    // stage `stage`. lse and D come through the copy pipeline too (4-byte copies): a plain load
    // would stall its warp, and so the next barrier, for a global-memory round trip every chunk.
    auto fetch = [&](int step, int stage) {
        const int h = g * group + step / chunks_per_head;
        const int qb = key_begin + (step % chunks_per_head) * CHUNK;
        const int n = min(CHUNK, q_end - qb);
        att_stage_bf16_async(att_stage(sh.Qb, stage), ldb, q, qb, n, CHUNK, q_stride, h * hd, hd);
        att_stage_bf16_async(att_stage(sh.dOb, stage), ldb, dout, qb, n, CHUNK, q_stride, h * hd, hd);
        if (tid < CHUNK) {
            float *lse_to = att_stage(sh.lse, stage) + tid, *D_to = att_stage(sh.D, stage) + tid;
            if (tid < n) {
                const long long at = (long long)(qb + tid) * heads + h;
                __pipeline_memcpy_async(lse_to, lse + at, 4);
                __pipeline_memcpy_async(D_to, D + at, 4);
            } else {
                *lse_to = 0.f;
                *D_to = 0.f;
            }
        }
    };
    // The block's K and V travel in the first copy group, with the first step's Q and dO.
    att_stage_bf16_async(sh.Kb, ldb, k, key_begin, keys, BLOCK_KEYS, kv_stride, kv_col, hd);
    att_stage_bf16_async(sh.Vb, ldb, v, key_begin, keys, BLOCK_KEYS, kv_stride, kv_col, hd);
    fetch(0, 0);
    __pipeline_commit();
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> dk_acc[FRAGS], dv_acc[FRAGS];
#pragma unroll
    for (int f = 0; f < FRAGS; ++f) {
        wmma::fill_fragment(dk_acc[f], 0.f);
        wmma::fill_fragment(dv_acc[f], 0.f);
    }

    for (int step = 0; step < steps; ++step) {
        const int cur = step & 1;
        __syncthreads();  // every warp is done with the previous step (stage cur ^ 1)
        if (step + 1 < steps) fetch(step + 1, cur ^ 1);
        __pipeline_commit();
        __pipeline_wait_prior(1);  // this thread's copies of step `step` (and K, V) have landed
        __syncthreads();           // ... and every other thread's
        const int qb = key_begin + (step % chunks_per_head) * CHUNK;
        const int n = min(CHUNK, q_end - qb);
        // None of the warp's keys is seen by the chunk: the causal limit (its last query before
        // the warp's first key) or the window (its first query past the warp's last key's).
        if (warp_keys == 0 || qb + n - 1 < warp_key0 || qb - warp_key_last >= window) continue;
        const __nv_bfloat16 *Qc = att_stage(sh.Qb, cur), *dOc = att_stage(sh.dOb, cur);
        const float *lse_c = att_stage(sh.lse, cur), *D_c = att_stage(sh.D, cur);
        // Sᵀ = K Qᵀ (pass 0), then dPᵀ = V dOᵀ (pass 1): the warp's 16 keys x the chunk's queries.
        for (int pass = 0; pass < 2; ++pass) {
            const __nv_bfloat16* A = pass ? Vw : Kw;
            const __nv_bfloat16* B = pass ? dOc : Qc;
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> prod[QBLOCKS];
#pragma unroll
            for (int b = 0; b < QBLOCKS; ++b) wmma::fill_fragment(prod[b], 0.f);
            for (int k0 = 0; k0 < hd; k0 += 16) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> a;
                wmma::load_matrix_sync(a, A + k0, ldb);
#pragma unroll
                for (int b = 0; b < QBLOCKS; ++b) {  // Qᵀ (dOᵀ) is Q (dO) read column-major
                    wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> bt;
                    wmma::load_matrix_sync(bt, B + b * 16 * ldb + k0, ldb);
                    wmma::mma_sync(prod[b], a, bt, prod[b]);
                }
            }
            float* out = pass ? dPw : Sw;
#pragma unroll
            for (int b = 0; b < QBLOCKS; ++b)
                wmma::store_matrix_sync(out + b * 16, prod[b], LDS, wmma::mem_row_major);
        }
        __syncwarp();
        {  // lanes 2r, 2r + 1: key r's Pᵀ and dSᵀ over the chunk's queries half · CHUNK / 2 ..
            const int r = lane / 2, half = lane % 2, key = warp_key0 + r;
#pragma unroll
            for (int c = 0; c < CHUNK / 2; ++c) {
                const int j = half * (CHUNK / 2) + c;
                // Query qb + j sees the key iff 0 <= (qb + j) − key < window.
                const int distance = (qb + j) - key;
                const bool valid = r < warp_keys && j < n && distance >= 0 && distance < window;
                float p = 0.f, ds = 0.f;
                if (valid) {
                    p = expf(Sw[r * LDS + j] * scale - lse_c[j]);
                    ds = p * (dPw[r * LDS + j] - D_c[j]) * scale;
                }
                Pw[r * LDP + j] = __float2bfloat16_rn(p);
                dSw[r * LDP + j] = __float2bfloat16_rn(ds);
            }
        }
        __syncwarp();
        {  // dV += Pᵀ dO, dK += dSᵀ Q over the warp's column blocks
            wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> pt[QBLOCKS],
                dst[QBLOCKS];
#pragma unroll
            for (int b = 0; b < QBLOCKS; ++b) {
                wmma::load_matrix_sync(pt[b], Pw + b * 16, LDP);
                wmma::load_matrix_sync(dst[b], dSw + b * 16, LDP);
            }
#pragma unroll
            for (int f = 0; f < FRAGS; ++f) {
                const int n0 = (col_block0 + SPLIT * f) * 16;
                if (n0 >= hd) break;
#pragma unroll
                for (int b = 0; b < QBLOCKS; ++b) {
                    wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> m;
                    wmma::load_matrix_sync(m, dOc + b * 16 * ldb + n0, ldb);
                    wmma::mma_sync(dv_acc[f], pt[b], m, dv_acc[f]);
                    wmma::load_matrix_sync(m, Qc + b * 16 * ldb + n0, ldb);
                    wmma::mma_sync(dk_acc[f], dst[b], m, dk_acc[f]);
                }
            }
        }
    }
    if (warp_keys == 0) return;
    // dK and dV, fragment by fragment through the warp's Sᵀ scratch into bf16 rows of its keys:
    // lane pair (2r, 2r + 1) writes key r, 8 columns each.
    const int r = lane / 2, c0 = (lane % 2) * 8;
    const long long row = r < warp_keys ? (long long)(warp_key0 + r) * kv_stride + kv_col : -1;
#pragma unroll
    for (int f = 0; f < FRAGS; ++f) {
        const int n0 = (col_block0 + SPLIT * f) * 16;
        if (n0 >= hd) break;
        for (int out = 0; out < 2; ++out) {
            __syncwarp();  // the scratch's last reader is done
            wmma::store_matrix_sync(Sw, out ? dv_acc[f] : dk_acc[f], LDS, wmma::mem_row_major);
            __syncwarp();
            __nv_bfloat16* dst = out ? dv : dk;
            if (row >= 0) {
#pragma unroll
                for (int c = 0; c < 8; ++c)
                    dst[row + n0 + c0 + c] = __float2bfloat16_rn(Sw[r * LDS + c0 + c]);
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

// The tensor-core kernels for one head-dim limit HD (bf16 only): attention_forward_mma_hd<HD>_bf16,
// attention_bwd_dq_mma_hd<HD>_bf16, attention_bwd_dkdv_mma_hd<HD>_bf16; the same arguments as the
// tiled entries.
#define ATT_MMA_ENTRIES(HD)                                                                        \
    extern "C" __global__ void __launch_bounds__(ATT_THREADS) attention_forward_mma_hd##HD##_bf16( \
        const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v, __nv_bfloat16* o,  \
        float* lse, const int* q_starts, const int* kv_starts, const AttTile* tiles, int heads,    \
        int kv_heads, int hd, float scale, int window) {                                           \
        attention_forward_mma_body<HD>(q, k, v, o, lse, q_starts, kv_starts, tiles, heads,         \
                                       kv_heads, hd, scale, window);                               \
    }                                                                                              \
    extern "C" __global__ void __launch_bounds__(ATT_THREADS) attention_bwd_dq_mma_hd##HD##_bf16(  \
        const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v,                    \
        const __nv_bfloat16* dout, const float* lse, const float* D, __nv_bfloat16* dq,            \
        const int* starts, const AttTile* tiles, int heads, int kv_heads, int hd, float scale,     \
        int window) {                                                                              \
        attention_bwd_dq_mma_body<HD>(q, k, v, dout, lse, D, dq, starts, tiles, heads, kv_heads,   \
                                      hd, scale, window);                                          \
    }                                                                                              \
    extern "C" __global__ void __launch_bounds__(ATT_THREADS)                                      \
        attention_bwd_dkdv_mma_hd##HD##_bf16(                                                      \
            const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v,                \
            const __nv_bfloat16* dout, const float* lse, const float* D, __nv_bfloat16* dk,        \
            __nv_bfloat16* dv, const int* starts, const AttTile* tiles, int heads, int kv_heads,   \
            int hd, float scale, int window) {                                                     \
        attention_bwd_dkdv_mma_body<HD>(q, k, v, dout, lse, D, dk, dv, starts, tiles, heads,       \
                                        kv_heads, hd, scale, window);                              \
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
ATT_MMA_ENTRIES(64)
ATT_MMA_ENTRIES(128)
ATT_MMA_ENTRIES(256)

// ------------------------------------------------------------------------------------------------
// Decode attention over per-sequence KV caches read in place (ops/attention.rs,
// attention_decode_forward). Generation keeps each sequence's keys and values in buffers of its
// own ([capacity, Hkv·hd], the first len rows valid); instead of gathering them into one packed K
// and V every layer of every step, the launcher uploads one small table per call (a single copy):
// per sequence its K and V addresses, its length and its query rows (AttDecodeSequence); the work
// units (AttDecodeUnit); and the rows whose keys were split (AttDecodeCombine).
//
//   attention_decode_hd{64,128,256}_{f32,bf16}: grid (units, Hkv). A unit is one query row and a
//       range of at most ATT_DECODE_KEYS keys of the keys it sees (causal, window counted back
//       from its own position; the host computes the range). The block takes all H / Hkv query
//       heads of its KV head at once, so each K and V row of the range is loaded once per KV head
//       group (GQA/MQA): keys in chunks of ATT_BK through shared memory, scores for every
//       (head, key), an online softmax per head (running max m and sum l, the accumulator rescaled
//       by exp(m_old − m_new)), accumulators in shared memory (each element owned by one thread).
//       A row whose keys fit one unit writes O; a split row writes its partial (m, l, acc) to the
//       workspace (flash-decoding), so long caches spread over many blocks.
//   attention_decode_combine_{f32,bf16}: grid (split rows, H): O = Σ_i e^(m_i − m) acc_i /
//       Σ_i e^(m_i − m) l_i with m = max_i m_i, the parts summed in their fixed order: the result
//       does not depend on the order blocks run in (deterministic, no atomics).
// Queries of one sequence (a prompt's prefill) are separate units, each reading its keys; fine
// for decoding and short prompts, not a prefill kernel. HD bounds head_dim (the launcher picks the
// smallest limit that holds it, as for the other kernels). This kernel has not run on a GPU; it
// is checked by the host emulation (emulate/transformer_emulate.cpp) and the NVRTC compile test.

#define ATT_DECODE_KEYS 256

struct AttDecodeSequence {
    unsigned long long k, v;  // device addresses of the cache's K and V, [capacity, Hkv·hd]
    int len;                  // valid rows
    int q_start, q_len;       // its query rows in Q
    int unused;
};
struct AttDecodeUnit {
    int sequence, row;         // the query row in Q, of this sequence
    int key_begin, key_end;    // positions in the sequence's cache, key_end > key_begin
    int part;                  // < 0: write O; else the partial's index in the workspace
};
struct AttDecodeCombine {
    int row, first_part, parts;  // O row `row` from partials first_part.. first_part + parts
};

__host__ __device__ inline int att_decode_shared_floats(int hd, int group) {
    // Q rows and accumulators of the group's heads; K and V chunks; scores [group][ATT_BK]; row
    // max, sum and rescale factor per head.
    return 2 * group * hd + 2 * ATT_BK * (hd + 1) + group * ATT_BK + 3 * group;
}

template <int HD, typename T>
__device__ void attention_decode_body(const T* q, T* o, float* part_ml, float* part_acc,
                                      const AttDecodeSequence* sequences,
                                      const AttDecodeUnit* units, int heads, int kv_heads, int hd,
                                      float scale) {
    const int group = heads / kv_heads;
    att_require_shared(att_decode_shared_floats(hd, group));
    if (hd > HD) __trap();
    TF_DYNAMIC_SHARED(shared);
    const AttDecodeUnit u = units[blockIdx.x];
    const AttDecodeSequence seq = sequences[u.sequence];
    const int g = blockIdx.y, ld = hd + 1, kv_ld = kv_heads * hd, width = group * hd;
    const T* K = reinterpret_cast<const T*>(seq.k);
    const T* V = reinterpret_cast<const T*>(seq.v);
    float* Qs = shared;              // [group][hd], the group's query heads of the row
    float* Acc = Qs + width;         // [group][hd]
    float* Ks = Acc + width;         // [ATT_BK][ld]
    float* Vs = Ks + ATT_BK * ld;    // [ATT_BK][ld]
    float* S = Vs + ATT_BK * ld;     // [group][ATT_BK], scores then probabilities
    float* M = S + group * ATT_BK;   // [group]
    float* L = M + group;            // [group]
    float* Alpha = L + group;        // [group]
    const int tid = threadIdx.x;
    // Query heads g·group .. (g + 1)·group − 1 are adjacent in the row.
    const long long q_off = (long long)u.row * heads * hd + (long long)g * width;
    for (int e = tid; e < width; e += blockDim.x) {
        Qs[e] = tf_to_f32(q[q_off + e]);
        Acc[e] = 0.f;
    }
    for (int h = tid; h < group; h += blockDim.x) {
        M[h] = -INFINITY;
        L[h] = 0.f;
    }
    __syncthreads();
    for (int k0 = u.key_begin; k0 < u.key_end; k0 += ATT_BK) {
        const int n = min(ATT_BK, u.key_end - k0);
        att_load_rows(Ks, ld, K, k0, n, ATT_BK, kv_ld, g * hd, hd);
        att_load_rows(Vs, ld, V, k0, n, ATT_BK, kv_ld, g * hd, hd);
        __syncthreads();
        for (int e = tid; e < group * ATT_BK; e += blockDim.x) {
            const int h = e / ATT_BK, j = e % ATT_BK;
            S[e] = j < n ? att_dot(Qs + h * hd, Ks + j * ld, hd) * scale : -INFINITY;
        }
        __syncthreads();
        for (int h = tid; h < group; h += blockDim.x) {
            float m = M[h];
            for (int j = 0; j < n; ++j) m = fmaxf(m, S[h * ATT_BK + j]);
            Alpha[h] = expf(M[h] - m);  // 0 on the first chunk (M = −inf, m finite)
            M[h] = m;
        }
        __syncthreads();
        for (int e = tid; e < group * ATT_BK; e += blockDim.x) {
            const int h = e / ATT_BK, j = e % ATT_BK;
            S[e] = j < n ? expf(S[e] - M[h]) : 0.f;
        }
        __syncthreads();
        for (int h = tid; h < group; h += blockDim.x) {
            float sum = 0.f;
            for (int j = 0; j < n; ++j) sum += S[h * ATT_BK + j];
            L[h] = L[h] * Alpha[h] + sum;
        }
        for (int e = tid; e < width; e += blockDim.x) {
            const int h = e / hd, d = e % hd;
            float a = Acc[e] * Alpha[h];
            for (int j = 0; j < n; ++j) a = fmaf(S[h * ATT_BK + j], Vs[j * ld + d], a);
            Acc[e] = a;
        }
        __syncthreads();
    }
    if (u.part < 0) {
        for (int e = tid; e < width; e += blockDim.x) o[q_off + e] = tf_from_f32<T>(Acc[e] / L[e / hd]);
    } else {
        const long long head0 = (long long)u.part * heads + (long long)g * group;
        for (int e = tid; e < width; e += blockDim.x) part_acc[head0 * hd + e] = Acc[e];
        for (int h = tid; h < group; h += blockDim.x) {
            part_ml[(head0 + h) * 2] = M[h];
            part_ml[(head0 + h) * 2 + 1] = L[h];
        }
    }
}

template <typename T>
__device__ void attention_decode_combine_body(const float* part_ml, const float* part_acc, T* o,
                                              const AttDecodeCombine* rows, int heads, int hd) {
    const AttDecodeCombine c = rows[blockIdx.x];
    const int h = blockIdx.y;
    const long long first = (long long)c.first_part * heads + h;  // partial i: first + i·heads
    float m = -INFINITY;
    for (int i = 0; i < c.parts; ++i) m = fmaxf(m, part_ml[(first + (long long)i * heads) * 2]);
    float l = 0.f;
    for (int i = 0; i < c.parts; ++i) {
        const long long p = first + (long long)i * heads;
        l += part_ml[p * 2 + 1] * expf(part_ml[p * 2] - m);
    }
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float a = 0.f;
        for (int i = 0; i < c.parts; ++i) {
            const long long p = first + (long long)i * heads;
            a = fmaf(expf(part_ml[p * 2] - m), part_acc[p * hd + d], a);
        }
        o[((long long)c.row * heads + h) * hd + d] = tf_from_f32<T>(a / l);
    }
}

#define ATT_DECODE_ENTRY(HD, SUF, T)                                                               \
    extern "C" __global__ void __launch_bounds__(ATT_THREADS) attention_decode_hd##HD##_##SUF(     \
        const T* q, T* o, float* part_ml, float* part_acc, const AttDecodeSequence* sequences,     \
        const AttDecodeUnit* units, int heads, int kv_heads, int hd, float scale) {                \
        attention_decode_body<HD, T>(q, o, part_ml, part_acc, sequences, units, heads, kv_heads,   \
                                     hd, scale);                                                   \
    }
#define ATT_DECODE_ENTRIES(SUF, T)                                                                 \
    ATT_DECODE_ENTRY(64, SUF, T)                                                                   \
    ATT_DECODE_ENTRY(128, SUF, T)                                                                  \
    ATT_DECODE_ENTRY(256, SUF, T)                                                                  \
    extern "C" __global__ void __launch_bounds__(ATT_THREADS) attention_decode_combine_##SUF(      \
        const float* part_ml, const float* part_acc, T* o, const AttDecodeCombine* rows,           \
        int heads, int hd) {                                                                       \
        attention_decode_combine_body<T>(part_ml, part_acc, o, rows, heads, hd);                   \
    }

ATT_DECODE_ENTRIES(f32, float)
ATT_DECODE_ENTRIES(bf16, __nv_bfloat16)
