// Optimizer kernels (ops/adamw.rs, ops/grad_norm.rs). transformer_common.cuh is prepended.
//
//   adamw_step_*:       one AdamW step on f32 master weights and f32 moments; the gradient is
//                       f32 or bf16 (the suffix). Element-wise, the same arithmetic as the CPU.
//   sumsq_partial_*:    partial[b] = Σ g² over the elements that block b's threads visit in a
//                       fixed grid-stride order, in f64, tree-reduced in the block.
//   sumsq_finish:       out[0] = Σ partial[0..n), one block, fixed order. Together: a
//                       deterministic two-pass reduction (same inputs and grid, same bits).
//   scale_*:            x *= coef (gradient clipping).

template <typename G>
__device__ void adamw_body(float* p, const G* grad, float* m, float* v, long long n, float lr,
                           float beta1, float beta2, float eps, float weight_decay, double bc1,
                           double bc2) {
    TF_FOR_EACH(i, n) {
        const float g = tf_to_f32(grad[i]);
        float pi = p[i];
        pi -= lr * weight_decay * pi;
        const float mi = beta1 * m[i] + (1.f - beta1) * g;
        const float vi = beta2 * v[i] + (1.f - beta2) * g * g;
        const double mhat = (double)mi / bc1, vhat = (double)vi / bc2;
        pi -= (float)((double)lr * mhat / (sqrt(vhat) + (double)eps));
        p[i] = pi;
        m[i] = mi;
        v[i] = vi;
    }
}

extern "C" __global__ void adamw_step_f32(float* p, const float* grad, float* m, float* v,
                                          long long n, float lr, float beta1, float beta2,
                                          float eps, float weight_decay, double bc1, double bc2) {
    adamw_body<float>(p, grad, m, v, n, lr, beta1, beta2, eps, weight_decay, bc1, bc2);
}
extern "C" __global__ void adamw_step_bf16(float* p, const __nv_bfloat16* grad, float* m, float* v,
                                           long long n, float lr, float beta1, float beta2,
                                           float eps, float weight_decay, double bc1, double bc2) {
    adamw_body<__nv_bfloat16>(p, grad, m, v, n, lr, beta1, beta2, eps, weight_decay, bc1, bc2);
}

template <typename T>
__device__ void sumsq_partial_body(const T* g, long long n, double* partial) {
    __shared__ double scratch[TF_THREADS];
    double acc = 0.0;
    TF_FOR_EACH(i, n) {
        const double v = tf_to_f32(g[i]);
        acc += v * v;
    }
    const double total = tf_block_sum<double>(acc, scratch);
    if (threadIdx.x == 0) partial[blockIdx.x] = total;
}

extern "C" __global__ void sumsq_partial_f32(const float* g, long long n, double* partial) {
    sumsq_partial_body<float>(g, n, partial);
}
extern "C" __global__ void sumsq_partial_bf16(const __nv_bfloat16* g, long long n, double* partial) {
    sumsq_partial_body<__nv_bfloat16>(g, n, partial);
}

extern "C" __global__ void sumsq_finish(const double* partial, int n, double* out) {
    __shared__ double scratch[TF_THREADS];
    double acc = 0.0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) acc += partial[i];
    const double total = tf_block_sum<double>(acc, scratch);
    if (threadIdx.x == 0) out[0] = total;
}

template <typename T>
__device__ void scale_body(T* x, long long n, float coef) {
    TF_FOR_EACH(i, n) x[i] = tf_from_f32<T>(tf_to_f32(x[i]) * coef);
}
extern "C" __global__ void scale_f32(float* x, long long n, float coef) { scale_body<float>(x, n, coef); }
extern "C" __global__ void scale_bf16(__nv_bfloat16* x, long long n, float coef) {
    scale_body<__nv_bfloat16>(x, n, coef);
}
