// Small element-wise ops the model needs between the big ones (flix-kernels/src/ops/elementwise.rs):
//
//   flix_add_*:       a[i] += b[i]              (the residual stream)
//   flix_scale_*:     x[i] *= alpha             (gradient clipping, loss scaling)
//   flix_sum_rows_*:  db[c] += Σ_r dy[r, c]     (bias gradients), one thread per column summing
//                     its rows in order in f32: deterministic, and coalesced across a warp.
//
// The suffix is the tensors' dtype; arithmetic is f32 throughout. Grid-stride loops: any launch
// shape covers any length.
#include <cuda_bf16.h>

__device__ __forceinline__ float ew_load(const float* p, long long i) { return p[i]; }
__device__ __forceinline__ float ew_load(const __nv_bfloat16* p, long long i) {
    return __bfloat162float(p[i]);
}
__device__ __forceinline__ void ew_store(float* p, long long i, float v) { p[i] = v; }
__device__ __forceinline__ void ew_store(__nv_bfloat16* p, long long i, float v) {
    p[i] = __float2bfloat16_rn(v);
}

#define EW_FOR_EACH(i, n)                                                        \
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < (n); \
         i += (long long)gridDim.x * blockDim.x)

template <typename T>
__device__ void add_body(T* __restrict__ a, const T* __restrict__ b, long long n) {
    EW_FOR_EACH(i, n) { ew_store(a, i, ew_load(a, i) + ew_load(b, i)); }
}

template <typename T>
__device__ void scale_body(T* __restrict__ x, float alpha, long long n) {
    EW_FOR_EACH(i, n) { ew_store(x, i, ew_load(x, i) * alpha); }
}

template <typename T>
__device__ void sum_rows_body(T* __restrict__ db, const T* __restrict__ dy, long long rows,
                              long long cols) {
    EW_FOR_EACH(c, cols) {
        float acc = 0.f;
        for (long long r = 0; r < rows; ++r) acc += ew_load(dy, r * cols + c);
        ew_store(db, c, ew_load(db, c) + acc);
    }
}

extern "C" __global__ void flix_add_f32(float* a, const float* b, long long n) {
    add_body(a, b, n);
}
extern "C" __global__ void flix_add_bf16(__nv_bfloat16* a, const __nv_bfloat16* b, long long n) {
    add_body(a, b, n);
}
extern "C" __global__ void flix_scale_f32(float* x, float alpha, long long n) {
    scale_body(x, alpha, n);
}
extern "C" __global__ void flix_scale_bf16(__nv_bfloat16* x, float alpha, long long n) {
    scale_body(x, alpha, n);
}
extern "C" __global__ void flix_sum_rows_f32(float* db, const float* dy, long long rows,
                                             long long cols) {
    sum_rows_body(db, dy, rows, cols);
}
extern "C" __global__ void flix_sum_rows_bf16(__nv_bfloat16* db, const __nv_bfloat16* dy,
                                              long long rows, long long cols) {
    sum_rows_body(db, dy, rows, cols);
}
