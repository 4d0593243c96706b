// Optimizer kernels (ops/adamw.rs, ops/grad_norm.rs). transformer_common.cuh is prepended.
//
// The AdamW step and the gradient sum of squares are multi-tensor kernels: one launch covers every
// trainable tensor of a step, through a table of tensors in device memory (TfMultiTensor, written
// by the launcher in ops/cuda/optim.rs). Each tensor is cut into chunks of TF_CHUNK elements,
// numbered across the table; a block walks the chunks c = blockIdx.x, + gridDim.x, ... and finds
// a chunk's tensor by binary search over the tensors' first chunks (tf_chunk). A step is then a constant
// number of launches, however many tensors the model has.
//
//   multi_adamw_*:        one AdamW step on f32 master weights and f32 moments; the gradient is
//                         f32 or bf16 (the suffix), multiplied by grad_scale (the clipping
//                         coefficient, 1 when not clipping); a tensor with a bf16 working copy
//                         gets the updated master rounded into it. Element-wise, the same
//                         arithmetic as the CPU path.
//   multi_sumsq_partial_*: partial[c] = Σ g² over chunk c, in f64, tree-reduced in the block.
//   sumsq_finish:         out[0] = Σ partial[0..n), one block, fixed order. Together: a
//                         deterministic two-pass reduction (the same tensors give the same bits,
//                         whatever the grid).
//   scale_*:              x *= coef.

#define TF_CHUNK 16384

// One tensor of a multi-tensor launch, as the launcher lays it out (seven 8-byte words). Device
// addresses; 0 where a tensor has no such buffer.
struct TfMultiTensor {
    unsigned long long param;    // f32: the master copy, or the tensor itself when it is f32
    unsigned long long grad;     // f32 or bf16 (the kernel's suffix)
    unsigned long long m, v;     // f32 moments (AdamW only)
    unsigned long long working;  // bf16 working copy of a master, or 0 (AdamW only)
    long long n;                 // elements
    long long first_chunk;       // the tensor's first chunk in the launch's numbering
};

// The index of the tensor that holds chunk c: the last entry whose first_chunk <= c.
__device__ int tf_tensor_of_chunk(const TfMultiTensor* table, int count, long long c) {
    int lo = 0, hi = count - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (table[mid].first_chunk <= c) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

// The element range [begin, end) of chunk c inside its tensor.
struct TfChunk {
    TfMultiTensor tensor;
    long long begin, end;
};
__device__ TfChunk tf_chunk(const TfMultiTensor* table, int count, long long c) {
    const TfMultiTensor t = table[tf_tensor_of_chunk(table, count, c)];
    const long long begin = (c - t.first_chunk) * TF_CHUNK;
    const long long end = begin + TF_CHUNK < t.n ? begin + TF_CHUNK : t.n;
    return {t, begin, end};
}

template <typename G>
__device__ void multi_adamw_body(const TfMultiTensor* table, int count, long long chunks,
                                 float lr, float beta1, float beta2, float eps,
                                 float weight_decay, double bc1, double bc2, float grad_scale) {
    for (long long c = blockIdx.x; c < chunks; c += gridDim.x) {
        const TfChunk chunk = tf_chunk(table, count, c);
        float* p = (float*)chunk.tensor.param;
        const G* grad = (const G*)chunk.tensor.grad;
        float* m = (float*)chunk.tensor.m;
        float* v = (float*)chunk.tensor.v;
        __nv_bfloat16* working = (__nv_bfloat16*)chunk.tensor.working;
        for (long long i = chunk.begin + threadIdx.x; i < chunk.end; i += blockDim.x) {
            const float g = tf_to_f32(grad[i]) * grad_scale;
            float pi = p[i];
            pi -= lr * weight_decay * pi;
            const float mi = beta1 * m[i] + (1.f - beta1) * g;
            const float vi = beta2 * v[i] + (1.f - beta2) * g * g;
            const double mhat = (double)mi / bc1, vhat = (double)vi / bc2;
            pi -= (float)((double)lr * mhat / (sqrt(vhat) + (double)eps));
            p[i] = pi;
            m[i] = mi;
            v[i] = vi;
            if (working) working[i] = __float2bfloat16_rn(pi);
        }
    }
}

#define TF_MULTI_ADAMW(SUFFIX, G)                                                                \
    extern "C" __global__ void multi_adamw_##SUFFIX(                                             \
        const TfMultiTensor* table, int count, long long chunks, float lr, float beta1,         \
        float beta2, float eps, float weight_decay, double bc1, double bc2, float grad_scale) {  \
        multi_adamw_body<G>(table, count, chunks, lr, beta1, beta2, eps, weight_decay, bc1, bc2, \
                            grad_scale);                                                         \
    }
TF_MULTI_ADAMW(f32, float)
TF_MULTI_ADAMW(bf16, __nv_bfloat16)

template <typename T>
__device__ void multi_sumsq_partial_body(const TfMultiTensor* table, int count, long long chunks,
                                         double* partial) {
    __shared__ double scratch[TF_THREADS];
    // The chunk loop's bounds are the same for every thread of the block, so all of them reach
    // the reduction's barriers together.
    for (long long c = blockIdx.x; c < chunks; c += gridDim.x) {
        const TfChunk chunk = tf_chunk(table, count, c);
        const T* g = (const T*)chunk.tensor.grad;
        double acc = 0.0;
        for (long long i = chunk.begin + threadIdx.x; i < chunk.end; i += blockDim.x) {
            const double x = tf_to_f32(g[i]);
            acc += x * x;
        }
        const double total = tf_block_sum<double>(acc, scratch);
        if (threadIdx.x == 0) partial[c] = total;
    }
}

extern "C" __global__ void multi_sumsq_partial_f32(const TfMultiTensor* table, int count,
                                                   long long chunks, double* partial) {
    multi_sumsq_partial_body<float>(table, count, chunks, partial);
}
extern "C" __global__ void multi_sumsq_partial_bf16(const TfMultiTensor* table, int count,
                                                    long long chunks, double* partial) {
    multi_sumsq_partial_body<__nv_bfloat16>(table, count, chunks, partial);
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
