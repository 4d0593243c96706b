// Shared pieces of the transformer kernels (transformer_*.cu): dtype helpers and a deterministic
// block reduction. kernels-cu/src/lib.rs prepends this header to each transformer source (NVRTC
// compiles one string per module).
//
// Conventions, as in the FLix kernels: entry points are `extern "C"` with a dtype suffix
// (`_f32`, `_bf16`); activations are f32 or bf16, every sum accumulates in f32 (f64 for the
// gradient norm); nothing uses float atomics, so the same inputs give the same bits. Reductions
// go through shared memory with __syncthreads only (no warp shuffles), which keeps the kernels
// runnable under the host emulation in kernels-cu/emulate/.
#include <cuda_bf16.h>

#define TF_THREADS 256

// NVRTC has no <cmath>; the host emulation gets INFINITY from it.
#ifndef INFINITY
#define INFINITY __int_as_float(0x7f800000)
#endif

// Dynamic shared memory (sized by the launch, so a kernel can fit its layout to its arguments and
// go past the 48 KB of static shared memory): TF_DYNAMIC_SHARED(name) declares `float* name` at
// its start (128-byte aligned, enough for wmma's 32), and tf_dynamic_shared_bytes() says how
// many bytes the launch gave. The host emulation (kernels-cu/emulate/cuda_shim.h) defines both
// itself.
#ifndef TF_HOST_EMULATION
#define TF_DYNAMIC_SHARED(name)                          \
    extern __shared__ __align__(128) float name##_array[]; \
    float* name = name##_array
__device__ __forceinline__ unsigned tf_dynamic_shared_bytes() {
    unsigned bytes;
    asm("mov.u32 %0, %%dynamic_smem_size;" : "=r"(bytes));
    return bytes;
}
#endif

__device__ __forceinline__ float tf_to_f32(float x) { return x; }
__device__ __forceinline__ float tf_to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T tf_from_f32(float x);
template <> __device__ __forceinline__ float tf_from_f32<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 tf_from_f32<__nv_bfloat16>(float x) {
    return __float2bfloat16_rn(x);
}

// Sum of `v` over the block (blockDim.x a power of two, at most TF_THREADS), in a fixed tree
// order; every thread gets the result. `scratch` holds TF_THREADS values of type A.
template <typename A>
__device__ A tf_block_sum(A v, A* scratch) {
    const int tid = threadIdx.x;
    scratch[tid] = v;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s /= 2) {
        if (tid < s) scratch[tid] += scratch[tid + s];
        __syncthreads();
    }
    const A total = scratch[0];
    __syncthreads();  // scratch may be reused right after
    return total;
}

// Maximum of `v` over the block; same contract as tf_block_sum.
__device__ float tf_block_max(float v, float* scratch) {
    const int tid = threadIdx.x;
    scratch[tid] = v;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s /= 2) {
        if (tid < s) scratch[tid] = fmaxf(scratch[tid], scratch[tid + s]);
        __syncthreads();
    }
    const float m = scratch[0];
    __syncthreads();
    return m;
}

// Grid-stride loop over n elements.
#define TF_FOR_EACH(i, n)                                                              \
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < (n);      \
         i += (long long)gridDim.x * blockDim.x)
