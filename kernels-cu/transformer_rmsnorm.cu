// RMSNorm (ops/rmsnorm.rs). transformer_common.cuh is prepended.
//
//   rmsnorm_forward_*:   one block per row: rstd = 1 / sqrt(mean(x²) + eps) (f32 sum, fixed
//                        tree), y = w · (x · rstd) like transformers; rstd saved per row.
//   rmsnorm_backward_*:  one block per row: x̂ = x · rstd, m = mean(x̂ · w · dy),
//                        dx = rstd · (w · dy − x̂ · m).
//   rmsnorm_dw_partial_*: dW without atomics: grid (ceil(d / 256), nsplit); thread (c, z) sums
//                        dy · x̂ over rows z·rows_per_split .. in order into part[z, c].
//   rmsnorm_dw_finish_*: dw[c] += Σ_z part[z, c] in split order (dw f32, or bf16 for the _bf16
//                        suffix's dw_finish: the suffix names dW's dtype there).

template <typename T>
__device__ void rmsnorm_forward_body(const T* x, const T* w, T* y, float* rstd, int d, float eps) {
    __shared__ float scratch[TF_THREADS];
    const long long row = blockIdx.x;
    const T* xr = x + row * d;
    float acc = 0.f;
    for (int i = threadIdx.x; i < d; i += blockDim.x) {
        const float v = tf_to_f32(xr[i]);
        acc += v * v;
    }
    const float ms = tf_block_sum<float>(acc, scratch) / (float)d;
    const float s = 1.f / sqrtf(ms + eps);
    if (threadIdx.x == 0) rstd[row] = s;
    for (int i = threadIdx.x; i < d; i += blockDim.x)
        y[row * d + i] = tf_from_f32<T>(tf_to_f32(w[i]) * (tf_to_f32(xr[i]) * s));
}

template <typename T>
__device__ void rmsnorm_backward_body(const T* dy, const T* x, const T* w, const float* rstd, T* dx,
                                      int d) {
    __shared__ float scratch[TF_THREADS];
    const long long row = blockIdx.x;
    const float s = rstd[row];
    float acc = 0.f;
    for (int i = threadIdx.x; i < d; i += blockDim.x)
        acc += tf_to_f32(x[row * d + i]) * s * tf_to_f32(w[i]) * tf_to_f32(dy[row * d + i]);
    const float mean = tf_block_sum<float>(acc, scratch) / (float)d;
    for (int i = threadIdx.x; i < d; i += blockDim.x) {
        const float xhat = tf_to_f32(x[row * d + i]) * s;
        dx[row * d + i] = tf_from_f32<T>(s * (tf_to_f32(w[i]) * tf_to_f32(dy[row * d + i]) - xhat * mean));
    }
}

template <typename T>
__device__ void rmsnorm_dw_partial_body(const T* dy, const T* x, const float* rstd, float* part,
                                        int rows, int d, int rows_per_split) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= d) return;
    const int z = blockIdx.y;
    const int r_end = min(rows, (z + 1) * rows_per_split);
    float acc = 0.f;
    for (int r = z * rows_per_split; r < r_end; ++r)
        acc += tf_to_f32(dy[(long long)r * d + c]) * (tf_to_f32(x[(long long)r * d + c]) * rstd[r]);
    part[(long long)z * d + c] = acc;
}

template <typename W>
__device__ void rmsnorm_dw_finish_body(const float* part, int nsplit, int d, W* dw) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= d) return;
    float acc = 0.f;
    for (int z = 0; z < nsplit; ++z) acc += part[(long long)z * d + c];
    dw[c] = tf_from_f32<W>(tf_to_f32(dw[c]) + acc);
}

extern "C" __global__ void rmsnorm_forward_f32(const float* x, const float* w, float* y,
                                               float* rstd, int d, float eps) {
    rmsnorm_forward_body<float>(x, w, y, rstd, d, eps);
}
extern "C" __global__ void rmsnorm_forward_bf16(const __nv_bfloat16* x, const __nv_bfloat16* w,
                                                __nv_bfloat16* y, float* rstd, int d, float eps) {
    rmsnorm_forward_body<__nv_bfloat16>(x, w, y, rstd, d, eps);
}
extern "C" __global__ void rmsnorm_backward_f32(const float* dy, const float* x, const float* w,
                                                const float* rstd, float* dx, int d) {
    rmsnorm_backward_body<float>(dy, x, w, rstd, dx, d);
}
extern "C" __global__ void rmsnorm_backward_bf16(const __nv_bfloat16* dy, const __nv_bfloat16* x,
                                                 const __nv_bfloat16* w, const float* rstd,
                                                 __nv_bfloat16* dx, int d) {
    rmsnorm_backward_body<__nv_bfloat16>(dy, x, w, rstd, dx, d);
}
extern "C" __global__ void rmsnorm_dw_partial_f32(const float* dy, const float* x, const float* rstd,
                                                  float* part, int rows, int d, int rows_per_split) {
    rmsnorm_dw_partial_body<float>(dy, x, rstd, part, rows, d, rows_per_split);
}
extern "C" __global__ void rmsnorm_dw_partial_bf16(const __nv_bfloat16* dy, const __nv_bfloat16* x,
                                                   const float* rstd, float* part, int rows, int d,
                                                   int rows_per_split) {
    rmsnorm_dw_partial_body<__nv_bfloat16>(dy, x, rstd, part, rows, d, rows_per_split);
}
extern "C" __global__ void rmsnorm_dw_finish_f32(const float* part, int nsplit, int d, float* dw) {
    rmsnorm_dw_finish_body<float>(part, nsplit, d, dw);
}
extern "C" __global__ void rmsnorm_dw_finish_bf16(const float* part, int nsplit, int d,
                                                  __nv_bfloat16* dw) {
    rmsnorm_dw_finish_body<__nv_bfloat16>(part, nsplit, d, dw);
}
