// Stand-in for CUDA's nvcuda::wmma in the host emulation (see cuda_shim.h). Every thread holds the
// whole 16 x 16 tile and does the whole product, so warp-collective calls are consistent however
// the hardware spreads a fragment over its 32 lanes (wmma hides that layout from the kernel). The
// pointer-alignment and leading-dimension rules of the real API are checked, since the host would
// otherwise run code the GPU rejects.
#pragma once
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include "cuda_shim.h"

namespace nvcuda {
namespace wmma {
struct row_major {};
struct col_major {};
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
enum layout_t { mem_row_major, mem_col_major };

template <class Use, int M, int N, int K> struct shape_of;
template <int M, int N, int K> struct shape_of<matrix_a, M, N, K> { static constexpr int rows = M, cols = K; };
template <int M, int N, int K> struct shape_of<matrix_b, M, N, K> { static constexpr int rows = K, cols = N; };
template <int M, int N, int K> struct shape_of<accumulator, M, N, K> { static constexpr int rows = M, cols = N; };

template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
    static constexpr int rows = shape_of<Use, M, N, K>::rows, cols = shape_of<Use, M, N, K>::cols;
    float v[rows * cols];  // logical row-major tile
};

inline float wmma_to_f32(float x) { return x; }
inline float wmma_to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }

template <class T>
inline void wmma_check(const void* p, unsigned ldm) {
    if ((reinterpret_cast<uintptr_t>(p) % 32) != 0 || (ldm * sizeof(T)) % 16 != 0) {
        std::fprintf(stderr, "wmma: pointer %p not 32-byte aligned or ldm %u not a multiple of 16 bytes\n", p, ldm);
        std::abort();
    }
}

template <class Use, int M, int N, int K, class T, class Layout>
void load_matrix_sync(fragment<Use, M, N, K, T, Layout>& f, const T* p, unsigned ldm) {
    wmma_check<T>(p, ldm);
    using F = fragment<Use, M, N, K, T, Layout>;
    for (int r = 0; r < F::rows; ++r)
        for (int c = 0; c < F::cols; ++c)
            f.v[r * F::cols + c] = wmma_to_f32(std::is_same_v<Layout, row_major> ? p[r * ldm + c] : p[c * ldm + r]);
}

template <int M, int N, int K>
void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, float>& f, unsigned ldm, layout_t l) {
    wmma_check<float>(p, ldm);
    for (int r = 0; r < M; ++r)
        for (int c = 0; c < N; ++c) (l == mem_row_major ? p[r * ldm + c] : p[c * ldm + r]) = f.v[r * N + c];
}

template <int M, int N, int K>
void load_matrix_sync(fragment<accumulator, M, N, K, float>& f, const float* p, unsigned ldm, layout_t l) {
    wmma_check<float>(p, ldm);
    for (int r = 0; r < M; ++r)
        for (int c = 0; c < N; ++c) f.v[r * N + c] = l == mem_row_major ? p[r * ldm + c] : p[c * ldm + r];
}

template <class Use, int M, int N, int K, class T, class Layout>
void fill_fragment(fragment<Use, M, N, K, T, Layout>& f, float x) {
    for (auto& e : f.v) e = x;
}

template <int M, int N, int K, class T, class LA, class LB>
void mma_sync(fragment<accumulator, M, N, K, float>& d, const fragment<matrix_a, M, N, K, T, LA>& a,
              const fragment<matrix_b, M, N, K, T, LB>& b, const fragment<accumulator, M, N, K, float>& c) {
    float out[M * N];
    for (int m = 0; m < M; ++m)
        for (int n = 0; n < N; ++n) {
            float acc = c.v[m * N + n];
            for (int k = 0; k < K; ++k) acc += a.v[m * K + k] * b.v[k * N + n];
            out[m * N + n] = acc;
        }
    for (int i = 0; i < M * N; ++i) d.v[i] = out[i];
}
}  // namespace wmma
}  // namespace nvcuda
