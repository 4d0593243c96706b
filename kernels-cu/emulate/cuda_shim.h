// A host emulation of the few CUDA features the FLix kernels use, so that the kernels' own source
// runs on a CPU (g++ -std=c++20) against a plain-loop reference when no GPU is at hand. It is a
// development check, not a substitute for running on a GPU: it executes every block's 256
// threads as OS threads meeting at a real barrier for __syncthreads, one block at a time, so
// shared memory is a function-local static. It cannot see races between blocks, memory
// coalescing, or anything about speed.
#pragma once
#include <algorithm>
#include <barrier>
#include <type_traits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};
inline thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;
inline std::barrier<>* g_block_barrier = nullptr;
inline void __syncthreads() { g_block_barrier->arrive_and_wait(); }

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
// One block runs at a time, so a function-local static is exactly one block's shared memory.
#define __shared__ static

inline int min(int a, int b) { return a < b ? a : b; }

struct __nv_bfloat16 {
    uint16_t bits;
};
inline float __bfloat162float(__nv_bfloat16 h) {
    uint32_t u = uint32_t(h.bits) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.bits; }
inline float __uint_as_float(unsigned u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    if (std::isnan(f)) return {0x7fc0};
    u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
    return {uint16_t(u >> 16)};
}

// A kernel stopping itself: on the GPU the launch fails; here the program stops, saying so.
[[noreturn]] inline void __trap() {
    std::fprintf(stderr, "__trap() in an emulated kernel (block %u %u, thread %u)\n", blockIdx.x,
                 blockIdx.y, threadIdx.x);
    std::abort();
}

// Dynamic shared memory (transformer_common.cuh's TF_DYNAMIC_SHARED): one buffer of the most a
// block may ask for on the H200 (227 KB with the opt-in attribute), since one block runs at a
// time. Each block finds it full of NaN, so a read of shared memory that the block did not write
// shows up in its outputs.
#define TF_HOST_EMULATION
inline constexpr unsigned kMaxDynamicSharedBytes = 227 * 1024;
alignas(128) inline float g_dynamic_shared[kMaxDynamicSharedBytes / sizeof(float)];
inline unsigned g_dynamic_shared_bytes = 0;
#define TF_DYNAMIC_SHARED(name) float* name = g_dynamic_shared
inline unsigned tf_dynamic_shared_bytes() { return g_dynamic_shared_bytes; }

// Runs `kernel()` for every thread of every block of `grid`, blocks in order: `threads` workers
// walk the blocks together, meeting at the block's barrier after each one, so that one block's
// shared memory (function-local statics) is never touched by the next while in use.
// `shared_bytes`: the launch's dynamic shared memory, as the launcher passes it.
template <class F>
void emulate_launch(dim3 grid, unsigned threads, unsigned shared_bytes, F kernel) {
    if (shared_bytes > kMaxDynamicSharedBytes) {
        std::fprintf(stderr, "launch asks for %u bytes of dynamic shared memory, more than %u\n",
                     shared_bytes, kMaxDynamicSharedBytes);
        std::abort();
    }
    g_dynamic_shared_bytes = shared_bytes;
    std::barrier<> bar(threads);
    g_block_barrier = &bar;
    std::vector<std::thread> pool;
    pool.reserve(threads);
    for (unsigned t = 0; t < threads; ++t)
        pool.emplace_back([&, t] {
            threadIdx = {t, 0, 0};
            blockDim = {threads, 1, 1};
            gridDim = grid;
            for (unsigned z = 0; z < grid.z; ++z)
                for (unsigned y = 0; y < grid.y; ++y)
                    for (unsigned x = 0; x < grid.x; ++x) {
                        blockIdx = {x, y, z};
                        if (shared_bytes > 0) {
                            if (t == 0)
                                std::fill(std::begin(g_dynamic_shared), std::end(g_dynamic_shared),
                                          std::nanf(""));
                            bar.arrive_and_wait();
                        }
                        kernel();
                        bar.arrive_and_wait();
                    }
        });
    for (auto& th : pool) th.join();
}

template <class F>
void emulate_launch(dim3 grid, unsigned threads, F kernel) {
    emulate_launch(grid, threads, 0, kernel);
}

#define __align__(n) __attribute__((aligned(n)))
struct alignas(16) uint4 {
    unsigned x, y, z, w;
};
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }
