// Causal attention with grouped KV heads over packed variable-length segments (ops/attention.rs).
// transformer_common.cuh is prepended. A straightforward tiled version, correctness first
// (CUDA-core FMA, one head per block, no tensor cores).
//
// Layout: Q [Tq, H·hd], K and V [Tk, Hkv·hd], O like Q, lse [Tq·H] (token-major). Segment s owns
// query rows q_starts[s].. and key rows kv_starts[s]..; its query j sits at key position
// kv_len − q_len + j and sees keys up to it, never another segment's (with q_starts ==
// kv_starts this is plain causal self-attention; the decode step passes a longer KV cache).
// Query head h reads KV head h / (H / Hkv). Work units: tiles of at most ATT_TILE rows of one
// segment, {segment, start, end} built by the host (like flix_core's Tile).
//
//   attention_forward_*:  grid (query tiles, H), 128 threads. Keys in chunks of ATT_BK = 32
//                         through shared memory, online softmax per row (running max m and sum
//                         l, the accumulator rescaled by exp(m_old − m_new)); writes O and
//                         lse = m + log l.
//   attention_bwd_dot_*:  D[t·H + h] = dO · O per (token, head).
//   attention_bwd_dq_*:   grid (query tiles, H): p = exp(s − lse), ds = p (dO·v − D) · scale,
//                         dQ = Σ_j ds k_j. Keys in chunks of 16.
//   attention_bwd_dkdv_*: grid (key tiles, Hkv): each block owns dK, dV of its keys for all the
//                         query heads of its group and loops over the later queries of the
//                         segment: dV_j = Σ p dO, dK_j = Σ ds q. Every dK/dV row has one owner
//                         and a fixed summation order: no atomics, deterministic.
// Limits (checked by the launcher): head_dim <= ATT_HD (128).

#define ATT_HD 128
#define ATT_TILE 16
#define ATT_BK 32
#define ATT_BK_BWD 16
#define ATT_THREADS 128

struct AttTile {
    int segment, start, end;
};

// Each thread owns one row (tid / 8) and the dims tid % 8 + 8c of a [16, hd] accumulator.
#define ATT_DIMS (ATT_HD / 8)

template <typename T>
__device__ void att_load_rows(float (*dst)[ATT_HD + 1], const T* src, int row0, int rows, int stride,
                              int col0, int hd) {
    for (int e = threadIdx.x; e < ATT_TILE * hd; e += blockDim.x) {
        const int r = e / hd, d = e % hd;
        dst[r][d] = r < rows ? tf_to_f32(src[(long long)(row0 + r) * stride + col0 + d]) : 0.f;
    }
}

template <int NK, typename T>
__device__ void att_load_keys(float (*dst)[ATT_HD + 1], const T* src, int key0, int key_end,
                              int stride, int col0, int hd) {
    for (int e = threadIdx.x; e < NK * hd; e += blockDim.x) {
        const int j = e / hd, d = e % hd;
        dst[j][d] = key0 + j < key_end ? tf_to_f32(src[(long long)(key0 + j) * stride + col0 + d]) : 0.f;
    }
}

__device__ __forceinline__ float att_dot(const float* a, const float* b, int hd) {
    float s = 0.f;
    for (int d = 0; d < hd; ++d) s = fmaf(a[d], b[d], s);
    return s;
}

template <typename T>
__device__ void attention_forward_body(const T* q, const T* k, const T* v, T* o, float* lse,
                                       const int* q_starts, const int* kv_starts,
                                       const AttTile* tiles, int heads, int kv_heads, int hd,
                                       float scale) {
    __shared__ float Qs[ATT_TILE][ATT_HD + 1];
    __shared__ float Ks[ATT_BK][ATT_HD + 1];
    __shared__ float Vs[ATT_BK][ATT_HD + 1];
    __shared__ float S[ATT_TILE][ATT_BK + 1];
    __shared__ float row_m[ATT_TILE], row_l[ATT_TILE], row_alpha[ATT_TILE];

    const AttTile tile = tiles[blockIdx.x];
    const int h = blockIdx.y, g = h / (heads / kv_heads);
    const int qs0 = q_starts[tile.segment], ks0 = kv_starts[tile.segment];
    const int offset = (kv_starts[tile.segment + 1] - ks0) - (q_starts[tile.segment + 1] - qs0);
    const int rows = tile.end - tile.start;
    // Query row i sees keys < ks0 + offset + (i − qs0) + 1; the tile's last row sees the most.
    const int key_end = ks0 + offset + (tile.end - qs0);
    const int tid = threadIdx.x, r = tid / 8, lane = tid % 8;
    const int row_key_end = ks0 + offset + (tile.start + r - qs0) + 1;

    att_load_rows<T>(Qs, q, tile.start, rows, heads * hd, h * hd, hd);
    if (tid < ATT_TILE) {
        row_m[tid] = -INFINITY;
        row_l[tid] = 0.f;
    }
    float acc[ATT_DIMS];
#pragma unroll
    for (int c = 0; c < ATT_DIMS; ++c) acc[c] = 0.f;

    for (int kb = ks0; kb < key_end; kb += ATT_BK) {
        __syncthreads();  // Qs and the row state are ready; the last chunk's Ks/Vs/S are consumed
        att_load_keys<ATT_BK, T>(Ks, k, kb, key_end, kv_heads * hd, g * hd, hd);
        att_load_keys<ATT_BK, T>(Vs, v, kb, key_end, kv_heads * hd, g * hd, hd);
        __syncthreads();
#pragma unroll
        for (int c = 0; c < ATT_BK / 8; ++c) {
            const int j = lane + 8 * c;
            const bool valid = r < rows && kb + j < row_key_end;
            S[r][j] = valid ? att_dot(Qs[r], Ks[j], hd) * scale : -INFINITY;
        }
        __syncthreads();
        if (tid < ATT_TILE) {
            float m_chunk = -INFINITY;
            for (int j = 0; j < ATT_BK; ++j) m_chunk = fmaxf(m_chunk, S[tid][j]);
            const float m_old = row_m[tid], m_new = fmaxf(m_old, m_chunk);
            float alpha = 1.f, l = row_l[tid];
            if (m_new != -INFINITY) {
                alpha = expf(m_old - m_new);  // 0 when m_old is -inf
                l *= alpha;
                for (int j = 0; j < ATT_BK; ++j) {
                    const float p = S[tid][j] == -INFINITY ? 0.f : expf(S[tid][j] - m_new);
                    S[tid][j] = p;
                    l += p;
                }
            } else {
                for (int j = 0; j < ATT_BK; ++j) S[tid][j] = 0.f;
            }
            row_m[tid] = m_new;
            row_l[tid] = l;
            row_alpha[tid] = alpha;
        }
        __syncthreads();
        const float alpha = row_alpha[r];
#pragma unroll
        for (int c = 0; c < ATT_DIMS; ++c) {
            const int d = lane + 8 * c;
            if (d < hd) {
                float a = acc[c] * alpha;
                for (int j = 0; j < ATT_BK; ++j) a = fmaf(S[r][j], Vs[j][d], a);
                acc[c] = a;
            }
        }
    }
    if (r < rows) {
        const long long i = tile.start + r;
        const float l = row_l[r];
#pragma unroll
        for (int c = 0; c < ATT_DIMS; ++c) {
            const int d = lane + 8 * c;
            if (d < hd) o[i * heads * hd + h * hd + d] = tf_from_f32<T>(acc[c] / l);
        }
        if (lane == 0) lse[i * heads + h] = row_m[r] + logf(l);
    }
}

template <typename T>
__device__ void attention_bwd_dot_body(const T* dout, const T* out, float* D, int heads, int hd,
                                       long long n) {
    TF_FOR_EACH(e, n) {  // e = token * heads + head
        float s = 0.f;
        for (int d = 0; d < hd; ++d) s += tf_to_f32(dout[e * hd + d]) * tf_to_f32(out[e * hd + d]);
        D[e] = s;
    }
}

// ds for query row r of a tile (head h) and key j of a chunk; 0 where the pair is masked.
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

template <typename T>
__device__ void attention_bwd_dq_body(const T* q, const T* k, const T* v, const T* dout,
                                      const float* lse, const float* D, T* dq, const int* starts,
                                      const AttTile* tiles, int heads, int kv_heads, int hd,
                                      float scale) {
    __shared__ float Qs[ATT_TILE][ATT_HD + 1];
    __shared__ float dOs[ATT_TILE][ATT_HD + 1];
    __shared__ float Ks[ATT_BK_BWD][ATT_HD + 1];
    __shared__ float Vs[ATT_BK_BWD][ATT_HD + 1];
    __shared__ float DS[ATT_TILE][ATT_BK_BWD + 1];

    const AttTile tile = tiles[blockIdx.x];
    const int h = blockIdx.y, g = h / (heads / kv_heads);
    const int s0 = starts[tile.segment];
    const int rows = tile.end - tile.start;
    const int tid = threadIdx.x, r = tid / 8, lane = tid % 8;
    const int i = tile.start + r;
    const float lse_r = r < rows ? lse[(long long)i * heads + h] : 0.f;
    const float D_r = r < rows ? D[(long long)i * heads + h] : 0.f;

    att_load_rows<T>(Qs, q, tile.start, rows, heads * hd, h * hd, hd);
    att_load_rows<T>(dOs, dout, tile.start, rows, heads * hd, h * hd, hd);
    float acc[ATT_DIMS];
#pragma unroll
    for (int c = 0; c < ATT_DIMS; ++c) acc[c] = 0.f;

    for (int kb = s0; kb < tile.end; kb += ATT_BK_BWD) {
        __syncthreads();
        att_load_keys<ATT_BK_BWD, T>(Ks, k, kb, tile.end, kv_heads * hd, g * hd, hd);
        att_load_keys<ATT_BK_BWD, T>(Vs, v, kb, tile.end, kv_heads * hd, g * hd, hd);
        __syncthreads();
#pragma unroll
        for (int c = 0; c < ATT_BK_BWD / 8; ++c) {
            const int j = lane + 8 * c;
            float p, ds;
            att_p_ds(Qs[r], dOs[r], Ks[j], Vs[j], lse_r, D_r, scale, hd, r < rows && kb + j <= i,
                     &p, &ds);
            DS[r][j] = ds;
        }
        __syncthreads();
#pragma unroll
        for (int c = 0; c < ATT_DIMS; ++c) {
            const int d = lane + 8 * c;
            if (d < hd) {
                float a = acc[c];
                for (int j = 0; j < ATT_BK_BWD; ++j) a = fmaf(DS[r][j], Ks[j][d], a);
                acc[c] = a;
            }
        }
    }
    if (r < rows) {
#pragma unroll
        for (int c = 0; c < ATT_DIMS; ++c) {
            const int d = lane + 8 * c;
            if (d < hd) dq[(long long)i * heads * hd + h * hd + d] = tf_from_f32<T>(acc[c]);
        }
    }
}

template <typename T>
__device__ void attention_bwd_dkdv_body(const T* q, const T* k, const T* v, const T* dout,
                                        const float* lse, const float* D, T* dk, T* dv,
                                        const int* starts, const AttTile* tiles, int heads,
                                        int kv_heads, int hd, float scale) {
    __shared__ float Qs[ATT_TILE][ATT_HD + 1];
    __shared__ float dOs[ATT_TILE][ATT_HD + 1];
    __shared__ float Ks[ATT_BK_BWD][ATT_HD + 1];
    __shared__ float Vs[ATT_BK_BWD][ATT_HD + 1];
    __shared__ float P[ATT_TILE][ATT_BK_BWD + 1];
    __shared__ float DS[ATT_TILE][ATT_BK_BWD + 1];
    __shared__ float lse_s[ATT_TILE], D_s[ATT_TILE];

    const AttTile tile = tiles[blockIdx.x];  // a tile of keys
    const int g = blockIdx.y, group = heads / kv_heads;
    const int s_end = starts[tile.segment + 1];
    const int keys = tile.end - tile.start;
    const int tid = threadIdx.x, lane = tid % 8;
    const int jj = tid / 8;  // the key this thread accumulates dK, dV for

    att_load_keys<ATT_BK_BWD, T>(Ks, k, tile.start, tile.end, kv_heads * hd, g * hd, hd);
    att_load_keys<ATT_BK_BWD, T>(Vs, v, tile.start, tile.end, kv_heads * hd, g * hd, hd);
    float dk_acc[ATT_DIMS], dv_acc[ATT_DIMS];
#pragma unroll
    for (int c = 0; c < ATT_DIMS; ++c) dk_acc[c] = dv_acc[c] = 0.f;

    for (int local = 0; local < group; ++local) {
        const int h = g * group + local;
        // Queries before the tile's first key see none of its keys.
        for (int qb = tile.start; qb < s_end; qb += ATT_TILE) {
            const int rows = min(ATT_TILE, s_end - qb);
            __syncthreads();
            att_load_rows<T>(Qs, q, qb, rows, heads * hd, h * hd, hd);
            att_load_rows<T>(dOs, dout, qb, rows, heads * hd, h * hd, hd);
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
                    const bool valid = r < rows && j < keys && tile.start + j <= qb + r;
                    att_p_ds(Qs[r], dOs[r], Ks[j], Vs[j], lse_s[r], D_s[r], scale, hd, valid,
                             &P[r][j], &DS[r][j]);
                }
            }
            __syncthreads();
            if (jj < ATT_BK_BWD) {
#pragma unroll
                for (int c = 0; c < ATT_DIMS; ++c) {
                    const int d = lane + 8 * c;
                    if (d < hd) {
                        float a = dv_acc[c], b = dk_acc[c];
                        for (int r = 0; r < ATT_TILE; ++r) {
                            a = fmaf(P[r][jj], dOs[r][d], a);
                            b = fmaf(DS[r][jj], Qs[r][d], b);
                        }
                        dv_acc[c] = a;
                        dk_acc[c] = b;
                    }
                }
            }
        }
    }
    if (jj < keys) {
        const long long j = tile.start + jj;
#pragma unroll
        for (int c = 0; c < ATT_DIMS; ++c) {
            const int d = lane + 8 * c;
            if (d < hd) {
                dk[j * kv_heads * hd + g * hd + d] = tf_from_f32<T>(dk_acc[c]);
                dv[j * kv_heads * hd + g * hd + d] = tf_from_f32<T>(dv_acc[c]);
            }
        }
    }
}

#define ATT_ENTRIES(SUF, T)                                                                        \
    extern "C" __global__ void __launch_bounds__(ATT_THREADS) attention_forward_##SUF(             \
        const T* q, const T* k, const T* v, T* o, float* lse, const int* q_starts,                 \
        const int* kv_starts, const AttTile* tiles, int heads, int kv_heads, int hd, float scale) { \
        attention_forward_body<T>(q, k, v, o, lse, q_starts, kv_starts, tiles, heads, kv_heads,    \
                                  hd, scale);                                                      \
    }                                                                                              \
    extern "C" __global__ void attention_bwd_dot_##SUF(const T* dout, const T* out, float* D,      \
                                                       int heads, int hd, long long n) {           \
        attention_bwd_dot_body<T>(dout, out, D, heads, hd, n);                                     \
    }                                                                                              \
    extern "C" __global__ void __launch_bounds__(ATT_THREADS) attention_bwd_dq_##SUF(              \
        const T* q, const T* k, const T* v, const T* dout, const float* lse, const float* D,       \
        T* dq, const int* starts, const AttTile* tiles, int heads, int kv_heads, int hd,           \
        float scale) {                                                                             \
        attention_bwd_dq_body<T>(q, k, v, dout, lse, D, dq, starts, tiles, heads, kv_heads, hd,    \
                                 scale);                                                           \
    }                                                                                              \
    extern "C" __global__ void __launch_bounds__(ATT_THREADS) attention_bwd_dkdv_##SUF(            \
        const T* q, const T* k, const T* v, const T* dout, const float* lse, const float* D,       \
        T* dk, T* dv, const int* starts, const AttTile* tiles, int heads, int kv_heads, int hd,    \
        float scale) {                                                                             \
        attention_bwd_dkdv_body<T>(q, k, v, dout, lse, D, dk, dv, starts, tiles, heads, kv_heads,  \
                                   hd, scale);                                                     \
    }

ATT_ENTRIES(f32, float)
ATT_ENTRIES(bf16, __nv_bfloat16)
