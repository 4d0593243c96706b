// The element-wise and row-wise parts of the chunked linear cross-entropy
// (ops/cross_entropy.rs); the logits of each vocabulary chunk come from cuBLAS (f32 output, also
// for bf16 inputs). transformer_common.cuh is prepended. n = number of scored tokens.
//
//   ce_gather_*:     xsel[r, :] = x[scored[r], :]               (the scored rows, packed)
//   ce_lse_update:   one block per row of the chunk's logits z [n, cw]: running max and sum of
//                    the online log-sum-exp, and the target's logit when it is in the chunk.
//   ce_dlogits_*:    dz[r, j] = scale · (exp(z[r, j] − lse[r]) − 1[c0 + j = target[r]]), written
//                    as f32 or bf16 (the operand dtype of the next two GEMMs).
//   ce_scatter_*:    dx[scored[r], :] = dxsel[r, :]  (dx zeroed first: unscored rows stay 0)

template <typename T>
__device__ void ce_gather_body(const T* x, const int* scored, T* xsel, int d, long long n) {
    TF_FOR_EACH(e, n) {
        const long long r = e / d;
        xsel[e] = x[(long long)scored[r] * d + e % d];
    }
}

extern "C" __global__ void ce_lse_update(const float* z, int cw, int c0, const int* target,
                                         float* row_max, float* row_sum, float* target_logit) {
    __shared__ float scratch[TF_THREADS];
    const long long r = blockIdx.x;
    const float* zr = z + r * cw;
    float m = -INFINITY;
    for (int j = threadIdx.x; j < cw; j += blockDim.x) m = fmaxf(m, zr[j]);
    const float m_old = row_max[r];
    const float m_new = fmaxf(m_old, tf_block_max(m, scratch));
    float s = 0.f;
    for (int j = threadIdx.x; j < cw; j += blockDim.x) s += expf(zr[j] - m_new);
    s = tf_block_sum<float>(s, scratch);
    if (threadIdx.x == 0) {
        row_sum[r] = row_sum[r] * expf(m_old - m_new) + s;
        row_max[r] = m_new;
        const int y = target[r] - c0;
        if (y >= 0 && y < cw) target_logit[r] = zr[y];
    }
}

template <typename DZ>
__device__ void ce_dlogits_body(const float* z, int cw, int c0, const int* target, const float* lse,
                                float scale, DZ* dz, long long n) {
    TF_FOR_EACH(e, n) {
        const long long r = e / cw;
        const int j = (int)(e % cw);
        const float onehot = c0 + j == target[r] ? 1.f : 0.f;
        dz[e] = tf_from_f32<DZ>(scale * (expf(z[e] - lse[r]) - onehot));
    }
}

template <typename T>
__device__ void ce_scatter_body(const float* dxsel, const int* scored, T* dx, int d, long long n) {
    TF_FOR_EACH(e, n) {
        const long long r = e / d;
        dx[(long long)scored[r] * d + e % d] = tf_from_f32<T>(dxsel[e]);
    }
}

extern "C" __global__ void ce_gather_f32(const float* x, const int* scored, float* xsel, int d,
                                         long long n) {
    ce_gather_body<float>(x, scored, xsel, d, n);
}
extern "C" __global__ void ce_gather_bf16(const __nv_bfloat16* x, const int* scored,
                                          __nv_bfloat16* xsel, int d, long long n) {
    ce_gather_body<__nv_bfloat16>(x, scored, xsel, d, n);
}
extern "C" __global__ void ce_dlogits_f32(const float* z, int cw, int c0, const int* target,
                                          const float* lse, float scale, float* dz, long long n) {
    ce_dlogits_body<float>(z, cw, c0, target, lse, scale, dz, n);
}
extern "C" __global__ void ce_dlogits_bf16(const float* z, int cw, int c0, const int* target,
                                           const float* lse, float scale, __nv_bfloat16* dz,
                                           long long n) {
    ce_dlogits_body<__nv_bfloat16>(z, cw, c0, target, lse, scale, dz, n);
}
extern "C" __global__ void ce_scatter_f32(const float* dxsel, const int* scored, float* dx, int d,
                                          long long n) {
    ce_scatter_body<float>(dxsel, scored, dx, d, n);
}
extern "C" __global__ void ce_scatter_bf16(const float* dxsel, const int* scored, __nv_bfloat16* dx,
                                           int d, long long n) {
    ce_scatter_body<__nv_bfloat16>(dxsel, scored, dx, d, n);
}
