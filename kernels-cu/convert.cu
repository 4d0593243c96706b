// Precision conversions between the f32 master copies and the bf16 working copies (DESIGN §4:
// bf16 weights and activations on the GPU, f32 master copy of adapters and AdamW state).
// Grid-stride loops: any launch shape covers any length.
#include <cuda_bf16.h>

extern "C" __global__ void flix_cast_f32_to_bf16(const float* __restrict__ src,
                                                 __nv_bfloat16* __restrict__ dst, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        dst[i] = __float2bfloat16_rn(src[i]);
    }
}

extern "C" __global__ void flix_cast_bf16_to_f32(const __nv_bfloat16* __restrict__ src,
                                                 float* __restrict__ dst, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        dst[i] = __bfloat162float(src[i]);
    }
}
