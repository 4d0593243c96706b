// Rotary position embeddings in place (ops/rope.rs, Hugging Face's rotate_half convention).
// transformer_common.cuh is prepended. One thread per (token, head, pair i < half):
//   angle = (f32) positions[t] · inv_freq[i]     (f32, as transformers and the CPU path)
//   y1 = x1 cos − x2 sin·sign,  y2 = x2 cos + x1 sin·sign
// sign = +1 forward, −1 backward (the inverse rotation). Positions come from the host, so they
// restart at each segment exactly as the caller numbered them.

template <typename T>
__device__ void rope_body(T* x, const unsigned* positions, const float* inv_freq, int heads,
                          int half, float sin_sign, long long n) {
    TF_FOR_EACH(e, n) {
        const int i = (int)(e % half);
        const long long th = e / half;  // token * heads + head
        const long long t = th / heads;
        const float angle = (float)positions[t] * inv_freq[i];
        const float c = cosf(angle), s = sinf(angle) * sin_sign;
        T* v = x + th * 2 * half;
        const float x1 = tf_to_f32(v[i]), x2 = tf_to_f32(v[i + half]);
        v[i] = tf_from_f32<T>(x1 * c - x2 * s);
        v[i + half] = tf_from_f32<T>(x2 * c + x1 * s);
    }
}

extern "C" __global__ void rope_f32(float* x, const unsigned* positions, const float* inv_freq,
                                    int heads, int half, float sin_sign, long long n) {
    rope_body<float>(x, positions, inv_freq, heads, half, sin_sign, n);
}
extern "C" __global__ void rope_bf16(__nv_bfloat16* x, const unsigned* positions,
                                     const float* inv_freq, int heads, int half, float sin_sign,
                                     long long n) {
    rope_body<__nv_bfloat16>(x, positions, inv_freq, heads, half, sin_sign, n);
}
