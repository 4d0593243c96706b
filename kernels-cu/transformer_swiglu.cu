// SwiGLU gate (ops/swiglu.rs). transformer_common.cuh is prepended. Element-wise, grid-stride:
//   forward:  h = silu(g) · u,   silu(g) = g σ(g)
//   backward: dg = dh · u · σ(g) (1 + g (1 − σ(g))),   du = dh · silu(g)

__device__ __forceinline__ float tf_sigmoid(float x) { return 1.f / (1.f + expf(-x)); }

template <typename T>
__device__ void swiglu_forward_body(const T* gate, const T* up, T* h, long long n) {
    TF_FOR_EACH(i, n) {
        const float g = tf_to_f32(gate[i]);
        h[i] = tf_from_f32<T>(g * tf_sigmoid(g) * tf_to_f32(up[i]));
    }
}

template <typename T>
__device__ void swiglu_backward_body(const T* dh, const T* gate, const T* up, T* dgate, T* dup,
                                     long long n) {
    TF_FOR_EACH(i, n) {
        const float g = tf_to_f32(gate[i]), u = tf_to_f32(up[i]), d = tf_to_f32(dh[i]);
        const float s = tf_sigmoid(g);
        dup[i] = tf_from_f32<T>(d * g * s);
        dgate[i] = tf_from_f32<T>(d * u * s * (1.f + g * (1.f - s)));
    }
}

extern "C" __global__ void swiglu_forward_f32(const float* gate, const float* up, float* h,
                                              long long n) {
    swiglu_forward_body<float>(gate, up, h, n);
}
extern "C" __global__ void swiglu_forward_bf16(const __nv_bfloat16* gate, const __nv_bfloat16* up,
                                               __nv_bfloat16* h, long long n) {
    swiglu_forward_body<__nv_bfloat16>(gate, up, h, n);
}
extern "C" __global__ void swiglu_backward_f32(const float* dh, const float* gate, const float* up,
                                               float* dgate, float* dup, long long n) {
    swiglu_backward_body<float>(dh, gate, up, dgate, dup, n);
}
extern "C" __global__ void swiglu_backward_bf16(const __nv_bfloat16* dh, const __nv_bfloat16* gate,
                                                const __nv_bfloat16* up, __nv_bfloat16* dgate,
                                                __nv_bfloat16* dup, long long n) {
    swiglu_backward_body<__nv_bfloat16>(dh, gate, up, dgate, dup, n);
}
