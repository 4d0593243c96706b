// The element-wise and row-wise parts of the chunked linear cross-entropy
// (ops/cross_entropy.rs); the logits of each vocabulary chunk come from cuBLAS (f32 output, also
// for bf16 inputs). transformer_common.cuh is prepended. n = number of scored tokens. A chunk's
// logits z [n, cw] have row stride ldz: cw in the scratch chunk, or the kept columns when the
// forward writes (and the backward reads) them in the kept logits [n, kept].
//
//   ce_gather_*:     xsel[r, :] = x[scored[r], :]               (the scored rows, packed)
//   ce_lse_update:   one block per row of the chunk's logits z: running max and sum of the online
//                    log-sum-exp, and the target's logit when it is in the chunk.
//   ce_finish:       one block: lse[r] = max[r] + log sum[r], logprob[scored[r]] = target logit −
//                    lse, and the loss Σ −logprob in double (the one number the host reads).
//   ce_dlogits_*:    dz[r, j] = scale · (exp(z[r, j] − lse[r]) − 1[c0 + j = target[r]]), written
//                    as f32 or bf16 (the operand dtype of the next two GEMMs), row stride lddz
//                    (f32 writes over z itself).
//   ce_scatter_*:    dx[scored[r], :] = dxsel[r, :]  (dx zeroed first: unscored rows stay 0)

template <typename T>
__device__ void ce_gather_body(const T* x, const int* scored, T* xsel, int d, long long n) {
    TF_FOR_EACH(e, n) {
        const long long r = e / d;
        xsel[e] = x[(long long)scored[r] * d + e % d];
    }
}

extern "C" __global__ void ce_lse_update(const float* z, int ldz, int cw, int c0,
                                         const int* target, float* row_max, float* row_sum,
                                         float* target_logit) {
    __shared__ float scratch[TF_THREADS];
    const long long r = blockIdx.x;
    const float* zr = z + r * ldz;
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

extern "C" __global__ void ce_finish(const float* row_max, const float* row_sum,
                                     const float* target_logit, const int* scored, int n,
                                     float* lse, float* logprob, double* loss_sum) {
    __shared__ double scratch[TF_THREADS];
    double loss = 0.0;
    for (int r = threadIdx.x; r < n; r += blockDim.x) {
        const float l = row_max[r] + logf(row_sum[r]);
        const float lp = target_logit[r] - l;
        lse[r] = l;
        logprob[scored[r]] = lp;
        loss -= (double)lp;
    }
    loss = tf_block_sum<double>(loss, scratch);
    if (threadIdx.x == 0) loss_sum[0] = loss;
}

template <typename DZ>
__device__ void ce_dlogits_body(const float* z, int ldz, int cw, int c0, const int* target,
                                const float* lse, float scale, DZ* dz, int lddz, long long n) {
    TF_FOR_EACH(e, n) {
        const long long r = e / cw;
        const int j = (int)(e % cw);
        const float onehot = c0 + j == target[r] ? 1.f : 0.f;
        dz[r * lddz + j] = tf_from_f32<DZ>(scale * (expf(z[r * ldz + j] - lse[r]) - onehot));
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
extern "C" __global__ void ce_dlogits_f32(const float* z, int ldz, int cw, int c0,
                                          const int* target, const float* lse, float scale,
                                          float* dz, int lddz, long long n) {
    ce_dlogits_body<float>(z, ldz, cw, c0, target, lse, scale, dz, lddz, n);
}
extern "C" __global__ void ce_dlogits_bf16(const float* z, int ldz, int cw, int c0,
                                           const int* target, const float* lse, float scale,
                                           __nv_bfloat16* dz, int lddz, long long n) {
    ce_dlogits_body<__nv_bfloat16>(z, ldz, cw, c0, target, lse, scale, dz, lddz, n);
}
extern "C" __global__ void ce_scatter_f32(const float* dxsel, const int* scored, float* dx, int d,
                                          long long n) {
    ce_scatter_body<float>(dxsel, scored, dx, d, n);
}
extern "C" __global__ void ce_scatter_bf16(const float* dxsel, const int* scored, __nv_bfloat16* dx,
                                           int d, long long n) {
    ce_scatter_body<__nv_bfloat16>(dxsel, scored, dx, d, n);
}
