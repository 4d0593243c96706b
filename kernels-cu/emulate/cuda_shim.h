// A host emulation of the few CUDA features the FLix kernels use, so that the kernels' own source
// runs on a CPU (g++ -std=c++20) against a plain-loop reference when no GPU is at hand. It is a
// development check, not a substitute for running on a GPU: it executes every block's threads
// as OS threads meeting at a real barrier for __syncthreads (and each warp's 32 at one of their
// own for __syncwarp and the warp-collective calls), one block at a time, so shared memory is a
// function-local static; asynchronous copies (cp.async through
// <cuda_pipeline_primitives.h>) land only at the wait that covers them. It cannot see races
// between blocks, memory coalescing, or anything about speed.
#pragma once
#include <algorithm>
#include <barrier>
#include <type_traits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <thread>
#include <vector>

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};
inline thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;
inline std::barrier<>* g_block_barrier = nullptr;
inline void __syncthreads() { g_block_barrier->arrive_and_wait(); }

// Warps: the threads 32w .. 32w + 31 of a block share a barrier (__syncwarp) and 32 exchange
// slots through which the warp-collective calls pass their values (__shfl_xor_sync, __any_sync).
// Only full-warp masks are emulated: a kernel passing another one stops.
struct EmulatedWarp {
    std::barrier<>* barrier;
    uint64_t slots[32];
};
inline thread_local EmulatedWarp* g_warp = nullptr;
inline void emulated_full_mask(unsigned mask) {
    if (mask != 0xffffffffu) {
        std::fprintf(stderr, "warp-collective call with mask %#x (only full warps are emulated)\n", mask);
        std::abort();
    }
}
inline void __syncwarp(unsigned mask = 0xffffffffu) {
    emulated_full_mask(mask);
    g_warp->barrier->arrive_and_wait();
}
// Every lane publishes `value`, then reads what lane `from(lane)` published.
template <class F>
inline uint64_t emulated_warp_exchange(uint64_t value, F from) {
    const unsigned lane = threadIdx.x % 32;
    g_warp->slots[lane] = value;
    g_warp->barrier->arrive_and_wait();
    const uint64_t got = from(lane);
    g_warp->barrier->arrive_and_wait();  // every lane has read before the slots are reused
    return got;
}
inline float __shfl_xor_sync(unsigned mask, float value, int lane_mask) {
    emulated_full_mask(mask);
    uint32_t bits;
    std::memcpy(&bits, &value, 4);
    const uint32_t got = uint32_t(emulated_warp_exchange(bits, [&](unsigned lane) {
        return g_warp->slots[lane ^ unsigned(lane_mask)];
    }));
    float out;
    std::memcpy(&out, &got, 4);
    return out;
}
inline int __any_sync(unsigned mask, int predicate) {
    emulated_full_mask(mask);
    return int(emulated_warp_exchange(predicate != 0, [](unsigned) {
        uint64_t any = 0;
        for (uint64_t s : g_warp->slots) any |= s;
        return any;
    }));
}

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

// Asynchronous copies (<cuda_pipeline_primitives.h>: __pipeline_memcpy_async, __pipeline_commit,
// __pipeline_wait_prior), deferred the way the hardware allows: a copy lands no earlier than the
// __pipeline_wait_prior that covers its group, never at issue. Each thread keeps its own
// uncommitted copies and its queue of committed groups; __pipeline_wait_prior(n) performs every
// group but the newest n. A kernel that reads a stage before waiting for it therefore reads what
// was there before (NaN, the previous chunk) and fails the comparison, as it could on the GPU.
struct EmulatedAsyncCopy {
    void* dst;
    const void* src;
    size_t bytes;
};
inline thread_local std::vector<EmulatedAsyncCopy> g_pipeline_open;
inline thread_local std::deque<std::vector<EmulatedAsyncCopy>> g_pipeline_committed;

// The hardware copies 4, 8 or 16 bytes, both addresses aligned to the size; check it here, since
// the host would otherwise run code the GPU rejects.
inline void __pipeline_memcpy_async(void* dst, const void* src, size_t bytes) {
    const uintptr_t d = reinterpret_cast<uintptr_t>(dst), s = reinterpret_cast<uintptr_t>(src);
    if ((bytes != 4 && bytes != 8 && bytes != 16) || d % bytes != 0 || s % bytes != 0) {
        std::fprintf(stderr, "__pipeline_memcpy_async: %zu bytes from %p to %p (size 4, 8 or 16, "
                     "both aligned to it)\n", bytes, src, dst);
        std::abort();
    }
    g_pipeline_open.push_back({dst, src, bytes});
}

inline void __pipeline_commit() {
    g_pipeline_committed.push_back(std::move(g_pipeline_open));
    g_pipeline_open.clear();
}

inline void __pipeline_wait_prior(size_t newest_left_pending) {
    while (g_pipeline_committed.size() > newest_left_pending) {
        for (const auto& c : g_pipeline_committed.front()) std::memcpy(c.dst, c.src, c.bytes);
        g_pipeline_committed.pop_front();
    }
}

// Called by emulate_launch after each block: copies still pending when a block ends were never
// waited for, which the kernels must not do (their data would be unused or arrive late).
inline bool emulated_pipeline_drained() {
    bool empty = g_pipeline_open.empty();
    for (const auto& group : g_pipeline_committed) empty = empty && group.empty();
    g_pipeline_open.clear();
    g_pipeline_committed.clear();
    return empty;
}

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
    // One barrier per warp, of the warp's threads (the last warp may be partial).
    const unsigned num_warps = (threads + 31) / 32;
    std::deque<std::barrier<>> warp_barriers;
    std::vector<EmulatedWarp> warps(num_warps);
    for (unsigned w = 0; w < num_warps; ++w) {
        warp_barriers.emplace_back(std::min(32u, threads - 32 * w));
        warps[w].barrier = &warp_barriers.back();
    }
    std::vector<std::thread> pool;
    pool.reserve(threads);
    for (unsigned t = 0; t < threads; ++t)
        pool.emplace_back([&, t] {
            threadIdx = {t, 0, 0};
            g_warp = &warps[t / 32];
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
                        if (!emulated_pipeline_drained()) {
                            std::fprintf(stderr, "block %u %u thread %u ended with asynchronous "
                                         "copies it never waited for\n", x, y, t);
                            std::abort();
                        }
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
