// Runs the FLix kernels' own source on the CPU (see cuda_shim.h) in the order the Rust launchers
// (flix-kernels/src/flix/cuda/) launch them, and compares every output with a plain-loop
// reference in double: H, Y and dX (written and accumulated), Y + bias, dA and dB (accumulated
// into random gradients), for f32 and bf16 activations, on batches with absent features, one-token and empty
// segments, widths that are not multiples of any tile, K from 1 to 8, R above 32, runs of tiles
// that cross segments and value changes, segments longer than a run, and the gradient workspace
// split into several groups of runs. The bf16 entries read a bf16 copy of the adapters, as the
// launchers pass it: 16-byte pieces where ranks and widths are multiples of 8, element loads where
// they are not, where a piece crosses a type boundary, and where the copy's base is misaligned.
// Outputs are poisoned with NaN first, so an unwritten element fails. Build and run:
// kernels-cu/emulate/run.sh
#include "cuda_shim.h"
#include "../flix_common.cuh"
#include "../flix_mma.cuh"
#include "../flix_forward.cu"
#include "../flix_backward.cu"

#include <algorithm>
#include <cstdio>
#include <random>
#include <string>
#include <type_traits>

using std::vector;

struct Problem {
    std::string name;
    vector<int> ranks, num_values;
    vector<float> scales;
    vector<int> lens;
    vector<vector<int>> slots;  // per segment, K ids (-1 absent)
    int d_in, d_out;
    size_t group_slots;  // partial slots per gradient-workspace group (the launcher's budget)
    // The bf16 copies of the adapters start one element (2 bytes) past a 16-byte boundary, so
    // that no piece of them can move as one 16-byte copy (the element-by-element fallback).
    bool misaligned_copies = false;
};

// Mirrors params::WIDE_COLS: output columns per expand/dX block.
static constexpr int kWideCols = 256;

// Mirrors params::split_long_dim; `g_target_blocks` mirrors params::target_blocks().
static int g_target_blocks = 528;
static void split_long_dim(int d, int blocks, int* nsplit, int* split_len) {
    const int step = 64, target = g_target_blocks;
    int steps = std::max((d + step - 1) / step, 1);
    int wanted = std::clamp((target + std::max(blocks, 1) - 1) / std::max(blocks, 1), 1, std::min(steps, 65535));
    *split_len = ((steps + wanted - 1) / wanted) * step;
    *nsplit = std::max((d + *split_len - 1) / *split_len, 1);
}

// Mirrors params::run_flushes: per tile {slot, ends, direct} (struct FlixFlush), the first slot of
// each run, and the CSR of each global value's partial slots, ascending. A value with a single
// stretch in the batch goes straight into its gradient (direct) and has no slot.
struct Flushes {
    vector<int> per_tile, run_start, value_ptr, value_slots;
};
static Flushes run_flushes(const vector<int>& slots, int K, const vector<int>& vbase, const vector<unsigned>& tiles) {
    const int nt = tiles.size() / 3, RT = FLIX_RUN_TILES;
    auto value = [&](int i, int k) { return slots[tiles[3 * i] * K + k]; };
    auto run_end = [&](int i) { return std::min(nt, (i / RT + 1) * RT); };
    auto ends_at = [&](int i, int k) { return i + 1 == run_end(i) || value(i + 1, k) != value(i, k); };
    vector<int> stretches(vbase[K], 0);
    for (int i = 0; i < nt; ++i)
        for (int k = 0; k < K; ++k)
            if (ends_at(i, k) && value(i, k) >= 0) ++stretches[vbase[k] + value(i, k)];
    Flushes f;
    f.per_tile.assign(3 * nt, 0);
    f.run_start.push_back(0);
    vector<vector<int>> lists(vbase[K]);
    int next = 0;
    for (int i = 0; i < nt; ++i) {
        int ends = 0, direct = 0;
        bool into_slot = false;
        for (int k = 0; k < K; ++k) {
            if (!ends_at(i, k)) continue;
            ends |= 1 << k;
            const int v = value(i, k);
            if (v < 0) continue;
            if (stretches[vbase[k] + v] == 1) direct |= 1 << k;
            else lists[vbase[k] + v].push_back(next), into_slot = true;
        }
        f.per_tile[3 * i] = into_slot ? next : -1;
        f.per_tile[3 * i + 1] = ends;
        f.per_tile[3 * i + 2] = direct;
        if (into_slot) ++next;
        if (i + 1 == run_end(i)) f.run_start.push_back(next);
    }
    f.value_ptr.push_back(0);
    for (auto& l : lists) {
        f.value_slots.insert(f.value_slots.end(), l.begin(), l.end());
        f.value_ptr.push_back(f.value_slots.size());
    }
    return f;
}

// Mirrors params::run_groups: consecutive runs whose slots fit `budget` (at least one run each).
static vector<std::pair<int, int>> run_groups(const vector<int>& run_start, size_t per_slot, size_t budget) {
    vector<std::pair<int, int>> out;
    const int runs = run_start.size() - 1;
    for (int q0 = 0; q0 < runs;) {
        int q1 = q0 + 1;
        while (q1 < runs && size_t(run_start[q1 + 1] - run_start[q0]) * per_slot <= budget) ++q1;
        out.push_back({q0, q1});
        q0 = q1;
    }
    return out;
}

static float nan_f() { return std::nanf(""); }
template <typename T> static T to_t(float v) {
    if constexpr (std::is_same_v<T, float>) return v;
    else return __float2bfloat16_rn(v);
}
template <typename T> static float to_f(T v) {
    if constexpr (std::is_same_v<T, float>) return v;
    else return __bfloat162float(v);
}

static int failures = 0;

// Every element within atol + rtol |ref|, atol relative to the largest |ref|.
template <typename G>
static void compare(const std::string& what, const vector<G>& got, const vector<double>& ref, double rtol) {
    double scale = 0;
    for (double r : ref) scale = std::max(scale, std::fabs(r));
    double worst = 0;
    size_t worst_i = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
        double g = to_f(got[i]);
        double err = std::isnan(g) ? INFINITY : std::fabs(g - ref[i]) / (rtol * scale + rtol * std::fabs(ref[i]) + 1e-30);
        if (err > worst) worst = err, worst_i = i;
    }
    bool ok = worst <= 1.0;
    if (!ok) ++failures;
    std::printf("  %-28s %s worst %.3g of tolerance at %zu (got %.6g, want %.6g; %zu elements)\n",
                what.c_str(), ok ? "ok  " : "FAIL", worst, worst_i,
                ref.empty() ? 0.0 : double(to_f(got[worst_i])), ref.empty() ? 0.0 : ref[worst_i], ref.size());
}

template <typename T>
static void run(const Problem& pb, uint64_t seed, double rtol) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<float> uni(-1.f, 1.f);
    const int K = pb.ranks.size(), S = pb.lens.size();
    vector<int> starts(S + 1, 0);
    for (int s = 0; s < S; ++s) starts[s + 1] = starts[s] + pb.lens[s];
    const int T_ = starts[S], d_in = pb.d_in, d_out = pb.d_out;
    vector<int> off(K + 1, 0), vbase(K + 1, 0);
    for (int k = 0; k < K; ++k) off[k + 1] = off[k] + pb.ranks[k], vbase[k + 1] = vbase[k] + pb.num_values[k];
    const int R = off[K];
    vector<int> slots;
    for (auto& s : pb.slots) slots.insert(slots.end(), s.begin(), s.end());
    // tiles (params::tiles)
    vector<unsigned> tiles;
    for (int s = 0; s < S; ++s)
        for (int t = starts[s]; t < starts[s + 1]; t += 64)
            tiles.insert(tiles.end(), {unsigned(s), unsigned(t), unsigned(std::min(t + 64, starts[s + 1]))});
    const int ntiles = tiles.size() / 3;

    auto rand_t = [&](size_t n) { vector<T> v(n); for (auto& x : v) x = to_t<T>(uni(rng)); return v; };
    auto rand_f = [&](size_t n) { vector<float> v(n); for (auto& x : v) x = uni(rng); return v; };
    vector<T> X = rand_t((size_t)T_ * d_in), dY = rand_t((size_t)T_ * d_out);
    vector<vector<float>> A(K), B(K), dA(K), dB(K), dA0(K), dB0(K);
    // The bf16 entries read the adapters' bf16 working copy (the launcher's cast of the f32
    // master), the f32 entries the master itself.
    vector<vector<__nv_bfloat16>> A16(K), B16(K);
    const size_t skew = pb.misaligned_copies ? 1 : 0;
    auto bf16_copy = [&](vector<__nv_bfloat16>& to, const vector<float>& from) {
        to.assign(from.size() + skew, __float2bfloat16_rn(nan_f()));
        for (size_t i = 0; i < from.size(); ++i) to[skew + i] = __float2bfloat16_rn(from[i]);
        return to.data() + skew;
    };
    FlixTypes p{};
    p.num_types = K;
    p.total_rank = R;
    for (int k = 0; k < K; ++k) {
        A[k] = rand_f((size_t)pb.num_values[k] * pb.ranks[k] * d_in);
        B[k] = rand_f((size_t)pb.num_values[k] * d_out * pb.ranks[k]);
        dA[k] = dA0[k] = rand_f(A[k].size());
        dB[k] = dB0[k] = rand_f(B[k].size());
        if constexpr (std::is_same_v<T, float>) {
            p.a[k] = A[k].data();
            p.b[k] = B[k].data();
        } else {
            p.a[k] = bf16_copy(A16[k], A[k]);
            p.b[k] = bf16_copy(B16[k], B[k]);
        }
        p.scale[k] = pb.scales[k];
        p.rank[k] = pb.ranks[k];
    }
    for (int k = 0; k <= K; ++k) p.col_off[k] = off[k];
    const auto* tl = reinterpret_cast<const FlixTile*>(tiles.data());
    auto seg_of = [&](int t) { int s = 0; while (starts[s + 1] <= t) ++s; return s; };
    // The bf16 kernels read the adapters' bf16 copy (and stage the f32 dH of dX and dA in
    // shared memory as bf16, flix_mma.cuh); the reference rounds them the same way, so that it
    // can stay tight.
    auto wq = [](float v) { return std::is_same_v<T, float> ? v : __bfloat162float(__float2bfloat16_rn(v)); };

    // ---- shrink (launcher: forward.rs narrow)
    vector<T> H((size_t)T_ * R, to_t<T>(nan_f()));
    {
        int col_blocks = (R + 31) / 32, nsplit, split_len;
        split_long_dim(d_in, ntiles * col_blocks, &nsplit, &split_len);
        vector<float> part((size_t)nsplit * T_ * R, nan_f());
        emulate_launch({unsigned(ntiles * col_blocks), 1, unsigned(nsplit)}, 256, [&] {
            if constexpr (std::is_same_v<T, float>) flix_shrink_f32(X.data(), d_in, p, slots.data(), tl, part.data(), T_, split_len);
            else flix_shrink_bf16(X.data(), d_in, p, slots.data(), tl, part.data(), T_, split_len);
        });
        emulate_launch({unsigned(ntiles), 1, 1}, 256, [&] {
            if constexpr (std::is_same_v<T, float>) flix_shrink_finish_f32(part.data(), nsplit, T_, p, slots.data(), tl, H.data());
            else flix_shrink_finish_bf16(part.data(), nsplit, T_, p, slots.data(), tl, H.data());
        });
    }
    vector<double> Href((size_t)T_ * R, 0.0);
    for (int t = 0; t < T_; ++t)
        for (int k = 0; k < K; ++k) {
            int f = slots[seg_of(t) * K + k];
            if (f < 0) continue;
            for (int j = 0; j < pb.ranks[k]; ++j) {
                double acc = 0;
                for (int i = 0; i < d_in; ++i)
                    acc += double(to_f(X[(size_t)t * d_in + i])) * wq(A[k][((size_t)f * pb.ranks[k] + j) * d_in + i]);
                Href[(size_t)t * R + off[k] + j] = pb.scales[k] * acc;
            }
        }
    compare("H = shrink(X)", H, Href, rtol);

    // ---- expand, written then accumulated (launcher: forward.rs wide)
    vector<double> Yref((size_t)T_ * d_out, 0.0);
    for (int t = 0; t < T_; ++t)
        for (int k = 0; k < K; ++k) {
            int f = slots[seg_of(t) * K + k];
            if (f < 0) continue;
            for (int o = 0; o < d_out; ++o) {
                double acc = 0;
                for (int j = 0; j < pb.ranks[k]; ++j)
                    acc += double(to_f(H[(size_t)t * R + off[k] + j])) * wq(B[k][((size_t)f * d_out + o) * pb.ranks[k] + j]);
                Yref[(size_t)t * d_out + o] += acc;
            }
        }
    for (int accumulate = 0; accumulate < 2; ++accumulate) {
        vector<T> Y = accumulate ? rand_t(Yref.size()) : vector<T>(Yref.size(), to_t<T>(nan_f()));
        vector<double> want = Yref;
        if (accumulate) for (size_t i = 0; i < want.size(); ++i) want[i] += to_f(Y[i]);
        emulate_launch({unsigned(ntiles), unsigned((d_out + kWideCols - 1) / kWideCols), 1}, 256, [&] {
            if constexpr (std::is_same_v<T, float>) flix_expand_f32(H.data(), d_out, p, slots.data(), tl, Y.data(), accumulate);
            else flix_expand_bf16(H.data(), d_out, p, slots.data(), tl, Y.data(), accumulate);
        });
        compare(accumulate ? "Y += expand(H)" : "Y = expand(H)", Y, want, rtol);
    }

    // ---- backward (launcher: backward.rs): dH and dB in one pass over dY, by runs of tiles, in
    // groups of runs whose dB partial slots fit the workspace; each group's partials reduced per
    // type; then dH finished, dX, and dA by runs the same way.
    const Flushes fl = run_flushes(slots, K, vbase, tiles);
    static_assert(sizeof(FlixFlush) == 3 * sizeof(int));
    const auto* flush = reinterpret_cast<const FlixFlush*>(fl.per_tile.data());
    FlixGrads db_ptrs{}, da_ptrs{};  // where direct flushes add
    for (int k = 0; k < K; ++k) db_ptrs.g[k] = dB[k].data(), da_ptrs.g[k] = dA[k].data();
    const int col_blocks = (R + 31) / 32, runs = fl.run_start.size() - 1;
    auto reduce = [&](int which, const vector<float>& part, int f0, int f1) {  // 0 = dB, 1 = dA
        for (int k = 0; k < K; ++k) {
            const int rows = which == 0 ? d_out : pb.ranks[k], cols = which == 0 ? pb.ranks[k] : d_in;
            const int part_ld = which == 0 ? R : d_in, row_off = which == 0 ? 0 : off[k], col_off = which == 0 ? off[k] : 0;
            const float scale = which == 0 ? 1.f : pb.scales[k];
            float* grad = which == 0 ? dB[k].data() : dA[k].data();
            const int nv = pb.num_values[k];
            const long long per_slot = which == 0 ? (long long)d_out * R : (long long)R * d_in;
            emulate_launch({unsigned((rows * cols + 255) / 256), unsigned(std::min(nv, 65535)), 1}, 256, [&] {
                flix_grad_reduce_f32(grad, nv, rows, cols, part.data(), per_slot, part_ld, row_off, col_off,
                                     fl.value_ptr.data(), fl.value_slots.data(), vbase[k], f0, f1, scale);
            });
        }
    };
    vector<float> dH((size_t)T_ * R, nan_f());
    {
        int nsplit, split_len;
        split_long_dim(d_out, runs * col_blocks, &nsplit, &split_len);
        vector<float> dh_part((size_t)nsplit * T_ * R, nan_f());
        for (auto [q0, q1] : run_groups(fl.run_start, 1, pb.group_slots)) {
            const int f0 = fl.run_start[q0], f1 = fl.run_start[q1];
            vector<float> part((size_t)(f1 - f0) * d_out * R, nan_f());
            emulate_launch({unsigned((q1 - q0) * col_blocks), 1, unsigned(nsplit)}, 256, [&] {
                if constexpr (std::is_same_v<T, float>)
                    flix_dh_db_f32(dY.data(), d_out, H.data(), p, slots.data(), tl, ntiles, q0, flush, f0,
                                   dh_part.data(), T_, split_len, part.data(), db_ptrs);
                else
                    flix_dh_db_bf16(dY.data(), d_out, H.data(), p, slots.data(), tl, ntiles, q0, flush, f0,
                                    dh_part.data(), T_, split_len, part.data(), db_ptrs);
            });
            reduce(0, part, f0, f1);
        }
        emulate_launch({unsigned(ntiles), 1, 1}, 256, [&] {
            flix_dh_finish_f32(dh_part.data(), nsplit, T_, p, slots.data(), tl, dH.data());
        });
    }
    vector<double> dHref((size_t)T_ * R, 0.0);
    for (int t = 0; t < T_; ++t)
        for (int k = 0; k < K; ++k) {
            int f = slots[seg_of(t) * K + k];
            if (f < 0) continue;
            for (int j = 0; j < pb.ranks[k]; ++j) {
                double acc = 0;
                for (int o = 0; o < d_out; ++o)
                    acc += double(to_f(dY[(size_t)t * d_out + o])) * wq(B[k][((size_t)f * d_out + o) * pb.ranks[k] + j]);
                dHref[(size_t)t * R + off[k] + j] = acc;
            }
        }
    compare("dH (f32)", dH, dHref, std::is_same_v<T, float> ? rtol : 1e-5);

    vector<T> dX((size_t)T_ * d_in, to_t<T>(nan_f()));
    emulate_launch({unsigned(ntiles), unsigned((d_in + kWideCols - 1) / kWideCols), 1}, 256, [&] {
        if constexpr (std::is_same_v<T, float>) flix_dx_f32(dH.data(), d_in, p, slots.data(), tl, dX.data(), 0);
        else flix_dx_bf16(dH.data(), d_in, p, slots.data(), tl, dX.data(), 0);
    });
    vector<double> dXref((size_t)T_ * d_in, 0.0);
    for (int t = 0; t < T_; ++t)
        for (int k = 0; k < K; ++k) {
            int f = slots[seg_of(t) * K + k];
            if (f < 0) continue;
            for (int i = 0; i < d_in; ++i) {
                double acc = 0;
                for (int j = 0; j < pb.ranks[k]; ++j)
                    acc += double(wq(pb.scales[k] * dH[(size_t)t * R + off[k] + j])) *
                           wq(A[k][((size_t)f * pb.ranks[k] + j) * d_in + i]);
                dXref[(size_t)t * d_in + i] += acc;
            }
        }
    compare("dX = Σ s_k dH_k A", dX, dXref, rtol);
    {
        vector<T> dX2 = rand_t(dXref.size());
        vector<double> want = dXref;
        for (size_t i = 0; i < want.size(); ++i) want[i] += to_f(dX2[i]);
        emulate_launch({unsigned(ntiles), unsigned((d_in + kWideCols - 1) / kWideCols), 1}, 256, [&] {
            if constexpr (std::is_same_v<T, float>) flix_dx_f32(dH.data(), d_in, p, slots.data(), tl, dX2.data(), 1);
            else flix_dx_bf16(dH.data(), d_in, p, slots.data(), tl, dX2.data(), 1);
        });
        compare("dX += Σ s_k dH_k A", dX2, want, rtol);
    }
    {
        vector<T> Yb = rand_t((size_t)T_ * d_out), bias = rand_t(d_out);
        vector<double> want((size_t)T_ * d_out);
        for (size_t e = 0; e < want.size(); ++e) want[e] = double(to_f(Yb[e])) + to_f(bias[e % d_out]);
        const long long n = (long long)want.size();
        emulate_launch({unsigned(std::min<long long>((n + 255) / 256, 65535)), 1, 1}, 256, [&] {
            if constexpr (std::is_same_v<T, float>) flix_add_bias_f32(Yb.data(), bias.data(), n, d_out);
            else flix_add_bias_bf16(Yb.data(), bias.data(), n, d_out);
        });
        compare("Y += bias", Yb, want, rtol);
    }

    // dA: one pass over X by runs, same flushes and groups.
    {
        int nsplit, split_len;
        split_long_dim(d_in, runs * col_blocks, &nsplit, &split_len);
        for (auto [q0, q1] : run_groups(fl.run_start, 1, pb.group_slots)) {
            const int f0 = fl.run_start[q0], f1 = fl.run_start[q1];
            vector<float> part((size_t)(f1 - f0) * R * d_in, nan_f());
            emulate_launch({unsigned((q1 - q0) * col_blocks), 1, unsigned(nsplit)}, 256, [&] {
                if constexpr (std::is_same_v<T, float>)
                    flix_da_f32(dH.data(), X.data(), d_in, p, slots.data(), tl, ntiles, q0, flush, f0, split_len, part.data(), da_ptrs);
                else
                    flix_da_bf16(dH.data(), X.data(), d_in, p, slots.data(), tl, ntiles, q0, flush, f0, split_len, part.data(), da_ptrs);
            });
            reduce(1, part, f0, f1);
        }
    }
    for (int k = 0; k < K; ++k) {
        const int r = pb.ranks[k];
        vector<double> dBref(dB0[k].begin(), dB0[k].end()), dAref(dA0[k].begin(), dA0[k].end());
        for (int t = 0; t < T_; ++t) {
            int f = slots[seg_of(t) * K + k];
            if (f < 0) continue;
            for (int o = 0; o < d_out; ++o)
                for (int j = 0; j < r; ++j)
                    dBref[((size_t)f * d_out + o) * r + j] += double(to_f(dY[(size_t)t * d_out + o])) * to_f(H[(size_t)t * R + off[k] + j]);
            for (int j = 0; j < r; ++j)
                for (int i = 0; i < d_in; ++i)
                    dAref[((size_t)f * r + j) * d_in + i] += pb.scales[k] * double(wq(dH[(size_t)t * R + off[k] + j])) * to_f(X[(size_t)t * d_in + i]);
        }
        compare("dB[" + std::to_string(k) + "] +=", dB[k], dBref, 1e-5);
        compare("dA[" + std::to_string(k) + "] +=", dA[k], dAref, 1e-5);
    }
}

int main() {
    vector<Problem> problems = {
        {"K=2 absent, empty and 1-token segments, groups of 2", {4, 3}, {5, 3}, {0.5f, 2.f},
         {5, 1, 0, 70, 33, 2}, {{0, 2}, {4, -1}, {1, 1}, {-1, 0}, {0, 2}, {3, 1}}, 70, 67, 2},
        {"LoRA: K=1, rank 1, one value", {1}, {1}, {1.5f}, {9, 60, 1}, {{0}, {0}, {0}}, 130, 9, 8},
        {"K=8, R=36 (two column blocks)", {1, 2, 3, 4, 5, 6, 7, 8}, {2, 2, 2, 2, 2, 2, 2, 2},
         {1, 1, 0.5f, 0.5f, 2, 2, 0.25f, 1}, {3, 65, 4},
         {{0, 1, 0, 1, 0, 1, 0, 1}, {1, -1, 1, 0, -1, 0, 1, 0}, {-1, -1, -1, -1, -1, -1, -1, -1}}, 33, 65, 1},
        {"widths multiple of 8 (16-byte loads)", {16, 8}, {3, 2}, {0.5f, 1.f}, {64, 65, 3},
         {{2, 1}, {0, -1}, {1, 0}}, 136, 72, 3},
        {"rank 40, long segment, all absent in one", {40}, {3}, {0.125f}, {130, 2, 7}, {{2}, {-1}, {0}}, 200, 150, 3},
        // Runs of two tiles that cross segments: type 0 keeps value 0 over three segments and an
        // empty one, type 1 changes inside runs, type 2 goes absent and back; a 100-token
        // segment straddles two runs; widths multiples of 8 (asynchronous copies), d_out over
        // several 64-wide steps; one slot per workspace group.
        {"runs across segments and value changes", {3, 5, 2}, {2, 3, 2}, {1.f, 0.5f, 2.f},
         {64, 64, 1, 0, 64, 100, 64, 30},
         {{0, 1, -1}, {0, 2, 1}, {0, 2, 1}, {1, 1, 1}, {1, 2, -1}, {1, 0, 0}, {1, 0, 0}, {-1, 0, 1}}, 72, 200, 1},
        {"LoRA: one value over runs of long segments", {8}, {1}, {0.25f}, {300, 5, 129}, {{0}, {0}, {0}}, 64, 24, 100},
        // Expand and dX over several 256-column blocks: d_out a multiple of 8 (16-byte stores)
        // ending inside a quarter of the last block, d_in not (element by element).
        {"widths past one 256-column block", {4, 3}, {2, 2}, {1.f, 0.5f}, {20, 70}, {{0, 1}, {1, -1}}, 300, 520, 4},
        // The bf16 adapter copies: every piece of 8 that lies in one type and row moves as one
        // 16-byte copy here (ranks and widths multiples of 8), across two chunks of R in expand
        // and dX (the double-buffered W stages) and two column blocks in shrink and dH.
        {"R = 64 in ranks of 16 and 32: two chunks of R", {16, 16, 32}, {2, 2, 2}, {1.f, 0.5f, 0.25f},
         {70, 30, 64}, {{0, 1, 1}, {1, 0, -1}, {1, -1, 0}}, 80, 96, 2},
        // Ranks 8, 4, 8: type 2 starts at column 12, so pieces of 8 columns cross a type boundary
        // (read column by column) next to whole ones.
        {"ranks 8, 4, 8: pieces across types", {8, 4, 8}, {2, 3, 2}, {1.f, 0.5f, 2.f}, {40, 64, 70},
         {{0, 1, 1}, {1, -1, 0}, {0, 2, -1}}, 64, 264, 2},
        // The same shapes as "widths multiple of 8", with copies that are not 16-byte aligned.
        {"widths multiple of 8, misaligned bf16 copies", {16, 8}, {3, 2}, {0.5f, 1.f}, {64, 65, 3},
         {{2, 1}, {0, -1}, {1, 0}}, 136, 72, 3, true},
    };
    for (auto& pb : problems) {
        std::printf("f32  %s\n", pb.name.c_str());
        run<float>(pb, 1, 1e-5);
        std::printf("bf16 %s\n", pb.name.c_str());
        run<__nv_bfloat16>(pb, 2, 1e-2);
    }
    // Unsplit (FLIX_CUDA_TARGET_BLOCKS=1): shrink and dH loop over the whole long dimension in
    // one block, which the split otherwise never does on batches this small.
    g_target_blocks = 1;
    for (size_t i : {0, 3, 4, 5, 8, 9}) {
        std::printf("f32  %s, unsplit\n", problems[i].name.c_str());
        run<float>(problems[i], 3, 1e-5);
        std::printf("bf16 %s, unsplit\n", problems[i].name.c_str());
        run<__nv_bfloat16>(problems[i], 4, 1e-2);
    }
    std::printf(failures ? "%d FAILURES\n" : "all outputs match the reference\n", failures);
    return failures ? 1 : 0;
}
