// Gated MLP activations (ops/swiglu.rs). transformer_common.cuh is prepended. Element-wise,
// grid-stride, h = act(g) · u and its backward dg = dh · u · act'(g), du = dh · act(g), for
//   SwiGLU: act(g) = silu(g) = g σ(g),   act'(g) = σ(g) (1 + g (1 − σ(g)))
//   GeGLU:  act(g) = ½ g (1 + t),  t = tanh(c (g + 0.044715 g³)),  c = √(2/π),
//           act'(g) = ½ (1 + t) + ½ g (1 − t²) c (1 + 3 · 0.044715 g²)

__device__ __forceinline__ float tf_sigmoid(float x) { return 1.f / (1.f + expf(-x)); }

struct SiluGate {
    // act(g) into *value, act'(g) returned.
    __device__ static float eval(float g, float* value) {
        const float s = tf_sigmoid(g);
        *value = g * s;
        return s * (1.f + g * (1.f - s));
    }
};

struct GeluTanhGate {
    __device__ static float eval(float g, float* value) {
        const float c = 0.7978845608f, cubic = 0.044715f;
        const float t = tanhf(c * (g + cubic * g * g * g));
        *value = 0.5f * g * (1.f + t);
        return 0.5f * (1.f + t) + 0.5f * g * (1.f - t * t) * c * (1.f + 3.f * cubic * g * g);
    }
};

template <typename Act, typename T>
__device__ void gated_forward_body(const T* gate, const T* up, T* h, long long n) {
    TF_FOR_EACH(i, n) {
        float a;
        Act::eval(tf_to_f32(gate[i]), &a);
        h[i] = tf_from_f32<T>(a * tf_to_f32(up[i]));
    }
}

template <typename Act, typename T>
__device__ void gated_backward_body(const T* dh, const T* gate, const T* up, T* dgate, T* dup,
                                    long long n) {
    TF_FOR_EACH(i, n) {
        const float u = tf_to_f32(up[i]), d = tf_to_f32(dh[i]);
        float a;
        const float slope = Act::eval(tf_to_f32(gate[i]), &a);
        dup[i] = tf_from_f32<T>(d * a);
        dgate[i] = tf_from_f32<T>(d * u * slope);
    }
}

#define GATED_KERNELS(NAME, ACT)                                                               \
    extern "C" __global__ void NAME##_forward_f32(const float* gate, const float* up, float* h, \
                                                  long long n) {                               \
        gated_forward_body<ACT, float>(gate, up, h, n);                                        \
    }                                                                                          \
    extern "C" __global__ void NAME##_forward_bf16(const __nv_bfloat16* gate,                  \
                                                   const __nv_bfloat16* up, __nv_bfloat16* h,  \
                                                   long long n) {                              \
        gated_forward_body<ACT, __nv_bfloat16>(gate, up, h, n);                                \
    }                                                                                          \
    extern "C" __global__ void NAME##_backward_f32(const float* dh, const float* gate,         \
                                                   const float* up, float* dgate, float* dup,  \
                                                   long long n) {                              \
        gated_backward_body<ACT, float>(dh, gate, up, dgate, dup, n);                          \
    }                                                                                          \
    extern "C" __global__ void NAME##_backward_bf16(                                           \
        const __nv_bfloat16* dh, const __nv_bfloat16* gate, const __nv_bfloat16* up,           \
        __nv_bfloat16* dgate, __nv_bfloat16* dup, long long n) {                               \
        gated_backward_body<ACT, __nv_bfloat16>(dh, gate, up, dgate, dup, n);                  \
    }

GATED_KERNELS(swiglu, SiluGate)
GATED_KERNELS(geglu, GeluTanhGate)
