// Token embedding (ops/embedding.rs). transformer_common.cuh is prepended.
//
//   forward:  out[t, c] = table[ids[t], c]                  grid-stride over T x d
//   backward: dtable[v, c] += Σ_{t: ids[t] = v} dout[t, c]  in token order, no atomics: the host
//             builds a CSR of token positions per used id (rows[]: the used ids, ascending;
//             pos_ptr/pos: their tokens, ascending), and one thread owns each (used id, column)
//             and adds its tokens' rows in order. Grid (used ids, ceil(d / 256)).

template <typename T>
__device__ void embedding_forward_body(const T* table, const unsigned* ids, T* out, int d,
                                       long long n) {
    TF_FOR_EACH(e, n) {
        const long long t = e / d;
        const int c = (int)(e % d);
        out[e] = table[(long long)ids[t] * d + c];
    }
}

template <typename T>
__device__ void embedding_backward_body(T* dtable, const T* dout, const int* rows,
                                        const int* pos_ptr, const int* pos, int d) {
    const int c = blockIdx.y * blockDim.x + threadIdx.x;
    if (c >= d) return;
    const int u = blockIdx.x;
    T* dst = dtable + (long long)rows[u] * d + c;
    float acc = tf_to_f32(*dst);
    for (int p = pos_ptr[u]; p < pos_ptr[u + 1]; ++p) acc += tf_to_f32(dout[(long long)pos[p] * d + c]);
    *dst = tf_from_f32<T>(acc);
}

extern "C" __global__ void embedding_forward_f32(const float* table, const unsigned* ids,
                                                 float* out, int d, long long n) {
    embedding_forward_body<float>(table, ids, out, d, n);
}
extern "C" __global__ void embedding_forward_bf16(const __nv_bfloat16* table, const unsigned* ids,
                                                  __nv_bfloat16* out, int d, long long n) {
    embedding_forward_body<__nv_bfloat16>(table, ids, out, d, n);
}
extern "C" __global__ void embedding_backward_f32(float* dtable, const float* dout, const int* rows,
                                                  const int* pos_ptr, const int* pos, int d) {
    embedding_backward_body<float>(dtable, dout, rows, pos_ptr, pos, d);
}
extern "C" __global__ void embedding_backward_bf16(__nv_bfloat16* dtable, const __nv_bfloat16* dout,
                                                   const int* rows, const int* pos_ptr,
                                                   const int* pos, int d) {
    embedding_backward_body<__nv_bfloat16>(dtable, dout, rows, pos_ptr, pos, d);
}
