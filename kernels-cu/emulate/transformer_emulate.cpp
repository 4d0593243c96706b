// Runs the transformer kernels' own source (kernels-cu/transformer_*.cu) on the CPU through the
// host emulation (cuda_shim.h), in the order the Rust launchers (flix-kernels/src/ops/cuda/)
// launch them, and compares every output with a plain-loop reference in double: embedding
// (forward, CSR backward), SwiGLU and GeGLU, RoPE (positions restarting per segment, both
// directions), RMSNorm (y, rstd, dX, split dW), attention (packed segments with empty and
// one-token ones, GQA, head_dim not a multiple of 8 and up to 256 (every head-dim limit), sliding
// windows, custom scales; forward, lse, the cached decode step, dQ/dK/dV; the tensor-core forward
// and dQ over packed (position, head) rows with groups of 1, 3 and 80 heads, and dK/dV over blocks
// of 64 keys (32 at head_dim 256) with a warp per 16 keys; the decode kernel over
// per-sequence caches with split rows and their combine),
// cross-entropy (chunked online lse, dlogits, gather/scatter; the GEMMs as host loops), the
// multi-tensor AdamW and two-pass sum of squares; f32 and bf16. Outputs are poisoned with NaN first, so an
// unwritten element fails. Build and run: kernels-cu/emulate/run_transformer.sh
#include "cuda_shim.h"
#include "../transformer_common.cuh"
#include "../transformer_embedding.cu"
#include "../transformer_swiglu.cu"
#include "../transformer_rope.cu"
#include "../transformer_rmsnorm.cu"
#include "../transformer_attention.cu"
#include "../transformer_cross_entropy.cu"
#include "../transformer_optim.cu"

#include <algorithm>
#include <climits>
#include <cstdio>
#include <numeric>
#include <random>
#include <string>

using std::vector;

template <typename T> static T to_t(float v) {
    if constexpr (std::is_same_v<T, float>) return v;
    else return __float2bfloat16_rn(v);
}
template <typename T> static double to_f(T v) {
    if constexpr (std::is_same_v<T, __nv_bfloat16>) return __bfloat162float(v);
    else return v;
}
template <typename T> static constexpr bool is_f32 = std::is_same_v<T, float>;

static int failures = 0;
static std::mt19937_64 rng(7);

// Every element within rtol · (max |ref| + |ref|); NaN fails.
template <typename G>
static void compare(const std::string& what, const vector<G>& got, const vector<double>& ref, double rtol) {
    double scale = 0, worst = 0;
    size_t worst_i = 0;
    for (double r : ref) scale = std::max(scale, std::fabs(r));
    for (size_t i = 0; i < ref.size(); ++i) {
        const double g = to_f(got[i]);
        const double err = std::isnan(g) ? INFINITY : std::fabs(g - ref[i]) / (rtol * (scale + std::fabs(ref[i])) + 1e-30);
        if (err > worst) worst = err, worst_i = i;
    }
    const bool ok = worst <= 1.0 && got.size() == ref.size();
    if (!ok) ++failures;
    std::printf("  %-30s %s worst %.3g of tolerance (got %.6g, want %.6g; %zu elements)\n", what.c_str(),
                ok ? "ok  " : "FAIL", worst, ref.empty() ? 0.0 : double(to_f(got[worst_i])),
                ref.empty() ? 0.0 : ref[worst_i], ref.size());
}

template <typename T> static vector<T> rand_t(size_t n, float scale = 1.f) {
    std::uniform_real_distribution<float> uni(-scale, scale);
    vector<T> v(n);
    for (auto& x : v) x = to_t<T>(uni(rng));
    return v;
}
template <typename T> static vector<double> as_double(const vector<T>& v) {
    vector<double> out(v.size());
    for (size_t i = 0; i < v.size(); ++i) out[i] = to_f(v[i]);
    return out;
}
template <typename T> static vector<T> poisoned(size_t n) { return vector<T>(n, to_t<T>(std::nanf(""))); }
static unsigned long long address(const void* p) { return (unsigned long long)(uintptr_t)p; }
static unsigned blocks_for(size_t n) { return unsigned(std::min<size_t>((n + 255) / 256, 4)); }

template <typename T> static void embedding() {
    const int V = 7, d = 300;
    const vector<unsigned> ids = {4, 0, 4, 2, 6, 0, 4, 1, 1};
    const int T_ = ids.size();
    auto table = rand_t<T>((size_t)V * d);
    auto out = poisoned<T>((size_t)T_ * d);
    const long long n = (long long)T_ * d;
    emulate_launch({blocks_for(n)}, 256, [&] {
        if constexpr (is_f32<T>) embedding_forward_f32(table.data(), ids.data(), out.data(), d, n);
        else embedding_forward_bf16(table.data(), ids.data(), out.data(), d, n);
    });
    vector<double> ref(n);
    for (int t = 0; t < T_; ++t)
        for (int c = 0; c < d; ++c) ref[(size_t)t * d + c] = to_f(table[(size_t)ids[t] * d + c]);
    compare("embedding out", out, ref, 1e-7);

    // CSR as ops/cuda/embedding.rs positions_by_id builds it.
    vector<int> order(T_);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return ids[a] < ids[b]; });
    vector<int> rows, ptr = {0}, pos;
    for (int k = 0; k < T_; ++k) {
        if (k > 0 && ids[order[k - 1]] != ids[order[k]]) ptr.push_back(k);
        if (k == 0 || ids[order[k - 1]] != ids[order[k]]) rows.push_back(ids[order[k]]);
        pos.push_back(order[k]);
    }
    ptr.push_back(T_);
    auto dtable = rand_t<T>((size_t)V * d);
    auto dout = rand_t<T>((size_t)T_ * d);
    auto want = as_double(dtable);
    for (int t = 0; t < T_; ++t)
        for (int c = 0; c < d; ++c) want[(size_t)ids[t] * d + c] += to_f(dout[(size_t)t * d + c]);
    emulate_launch({unsigned(rows.size()), unsigned((d + 255) / 256)}, 256, [&] {
        if constexpr (is_f32<T>) embedding_backward_f32(dtable.data(), dout.data(), rows.data(), ptr.data(), pos.data(), d);
        else embedding_backward_bf16(dtable.data(), dout.data(), rows.data(), ptr.data(), pos.data(), d);
    });
    compare("embedding dTable +=", dtable, want, is_f32<T> ? 1e-6 : 1e-2);
}

// The gated activations of transformer_swiglu.cu: h = act(g) u, dg = dh u act'(g), du = dh act(g),
// against act in double and act' by a central difference of it (independent of the kernels'
// closed forms).
template <typename T, class Forward, class Backward, class Act>
static void gated(const char* name, Forward forward, Backward backward, Act act) {
    const long long n = 1000;
    auto g = rand_t<T>(n, 4.f), u = rand_t<T>(n), dh = rand_t<T>(n);
    auto h = poisoned<T>(n), dg = poisoned<T>(n), du = poisoned<T>(n);
    emulate_launch({blocks_for(n)}, 256, [&] { forward(g.data(), u.data(), h.data(), n); });
    emulate_launch({blocks_for(n)}, 256, [&] { backward(dh.data(), g.data(), u.data(), dg.data(), du.data(), n); });
    vector<double> rh(n), rdg(n), rdu(n);
    for (int i = 0; i < n; ++i) {
        const double gv = to_f(g[i]), uv = to_f(u[i]), d = to_f(dh[i]), e = 1e-5;
        const double slope = (act(gv + e) - act(gv - e)) / (2 * e);
        rh[i] = act(gv) * uv;
        rdu[i] = d * act(gv);
        rdg[i] = d * uv * slope;
    }
    const double tol = is_f32<T> ? 1e-5 : 1e-2;
    compare(std::string(name) + " h", h, rh, tol);
    compare(std::string(name) + " dGate", dg, rdg, tol);
    compare(std::string(name) + " dUp", du, rdu, tol);
}

template <typename T> static void swiglu_and_geglu() {
    auto silu = [](double g) { return g / (1 + std::exp(-g)); };
    // GELU, tanh approximation (torch's gelu(approximate="tanh")).
    auto gelu_tanh = [](double g) {
        return 0.5 * g * (1 + std::tanh(std::sqrt(2 / M_PI) * (g + 0.044715 * g * g * g)));
    };
    if constexpr (is_f32<T>) {
        gated<T>("swiglu", swiglu_forward_f32, swiglu_backward_f32, silu);
        gated<T>("geglu", geglu_forward_f32, geglu_backward_f32, gelu_tanh);
    } else {
        gated<T>("swiglu", swiglu_forward_bf16, swiglu_backward_bf16, silu);
        gated<T>("geglu", geglu_forward_bf16, geglu_backward_bf16, gelu_tanh);
    }
}

template <typename T> static void rope() {
    const int heads = 3, half = 5, hd = 2 * half;
    const vector<unsigned> positions = {0, 1, 2, 0, 0, 1, 2, 3, 40};  // restarting per segment
    const int T_ = positions.size();
    vector<float> inv(half);
    for (int i = 0; i < half; ++i) inv[i] = float(1.0 / std::pow(10000.0, 2.0 * i / hd));
    for (float sign : {1.f, -1.f}) {
        auto x = rand_t<T>((size_t)T_ * heads * hd);
        auto ref = as_double(x);
        for (int t = 0; t < T_; ++t)
            for (int h = 0; h < heads; ++h)
                for (int i = 0; i < half; ++i) {
                    const double a = double(float(positions[t]) * inv[i]);
                    const double c = std::cos(a), s = std::sin(a) * sign;
                    const size_t b = ((size_t)t * heads + h) * hd;
                    const double x1 = to_f(x[b + i]), x2 = to_f(x[b + i + half]);
                    ref[b + i] = x1 * c - x2 * s;
                    ref[b + i + half] = x2 * c + x1 * s;
                }
        const long long n = (long long)T_ * heads * half;
        emulate_launch({blocks_for(n)}, 256, [&] {
            if constexpr (is_f32<T>) rope_f32(x.data(), positions.data(), inv.data(), heads, half, sign, n);
            else rope_bf16(x.data(), positions.data(), inv.data(), heads, half, sign, n);
        });
        compare(sign > 0 ? "rope forward" : "rope backward", x, ref, is_f32<T> ? 1e-5 : 1e-2);
    }
}

template <typename T> static void rmsnorm() {
    const int rows = 70, d = 300;
    const float eps = 1e-5f;
    auto x = rand_t<T>((size_t)rows * d), w = rand_t<T>(d), dy = rand_t<T>((size_t)rows * d);
    auto y = poisoned<T>((size_t)rows * d), dx = poisoned<T>((size_t)rows * d);
    vector<float> rstd(rows, std::nanf(""));
    emulate_launch({unsigned(rows)}, 256, [&] {
        if constexpr (is_f32<T>) rmsnorm_forward_f32(x.data(), w.data(), y.data(), rstd.data(), d, eps);
        else rmsnorm_forward_bf16(x.data(), w.data(), y.data(), rstd.data(), d, eps);
    });
    vector<double> ry((size_t)rows * d), rs(rows), rdx((size_t)rows * d), rdw(d, 0.0);
    vector<float> dw0(d);
    for (auto& v : dw0) v = std::uniform_real_distribution<float>(-1, 1)(rng);
    for (int c = 0; c < d; ++c) rdw[c] = dw0[c];
    for (int r = 0; r < rows; ++r) {
        double ms = 0;
        for (int c = 0; c < d; ++c) ms += std::pow(to_f(x[(size_t)r * d + c]), 2);
        const double s = 1 / std::sqrt(ms / d + eps);
        rs[r] = s;
        double dot = 0;
        for (int c = 0; c < d; ++c) {
            const double xh = to_f(x[(size_t)r * d + c]) * s, g = to_f(dy[(size_t)r * d + c]);
            ry[(size_t)r * d + c] = to_f(w[c]) * xh;
            dot += xh * to_f(w[c]) * g;
            rdw[c] += g * xh;
        }
        for (int c = 0; c < d; ++c) {
            const double xh = to_f(x[(size_t)r * d + c]) * s;
            rdx[(size_t)r * d + c] = s * (to_f(w[c]) * to_f(dy[(size_t)r * d + c]) - xh * dot / d);
        }
    }
    const double tol = is_f32<T> ? 1e-5 : 1e-2;
    compare("rmsnorm y", y, ry, tol);
    compare("rmsnorm rstd", rstd, rs, 1e-5);
    emulate_launch({unsigned(rows)}, 256, [&] {
        if constexpr (is_f32<T>) rmsnorm_backward_f32(dy.data(), x.data(), w.data(), rstd.data(), dx.data(), d);
        else rmsnorm_backward_bf16(dy.data(), x.data(), w.data(), rstd.data(), dx.data(), d);
    });
    compare("rmsnorm dX", dx, rdx, tol);
    // Launcher: 64 rows per split -> 2 splits; dW f32.
    const int per_split = 64, nsplit = (rows + per_split - 1) / per_split;
    vector<float> part((size_t)nsplit * d, std::nanf("")), dw = dw0;
    emulate_launch({unsigned((d + 255) / 256), unsigned(nsplit)}, 256, [&] {
        if constexpr (is_f32<T>) rmsnorm_dw_partial_f32(dy.data(), x.data(), rstd.data(), part.data(), rows, d, per_split);
        else rmsnorm_dw_partial_bf16(dy.data(), x.data(), rstd.data(), part.data(), rows, d, per_split);
    });
    emulate_launch({unsigned((d + 255) / 256)}, 256, [&] { rmsnorm_dw_finish_f32(part.data(), nsplit, d, dw.data()); });
    compare("rmsnorm dW += (2 splits)", dw, rdw, 1e-5);
}

// Attention reference in double (the math of ops/attention.rs): the query at key position p of
// its segment sees the keys at positions p − window < j ≤ p (window 0: every earlier key).
struct AttRef {
    vector<double> o, lse, dq, dk, dv;
};
struct AttShape {
    int H, Hkv, hd;
    float scale;
    int window;  // 0: none
};
template <typename T>
static AttRef attention_ref(const vector<T>& q, const vector<T>& k, const vector<T>& v, const vector<T>* dout,
                            const vector<int>& qs, const vector<int>& ks, AttShape sh) {
    const int H = sh.H, Hkv = sh.Hkv, hd = sh.hd;
    const int Tq = qs.back(), Tk = ks.back(), group = H / Hkv;
    const double scale = sh.scale;
    AttRef r{vector<double>((size_t)Tq * H * hd, 0), vector<double>((size_t)Tq * H), vector<double>((size_t)Tq * H * hd, 0),
             vector<double>((size_t)Tk * Hkv * hd, 0), vector<double>((size_t)Tk * Hkv * hd, 0)};
    for (size_t s = 0; s + 1 < qs.size(); ++s) {
        const int off = (ks[s + 1] - ks[s]) - (qs[s + 1] - qs[s]);
        for (int i = qs[s]; i < qs[s + 1]; ++i)
            for (int h = 0; h < H; ++h) {
                const int g = h / group, p = off + (i - qs[s]), last = ks[s] + p;
                const int first = ks[s] + (sh.window > 0 ? std::max(0, p - sh.window + 1) : 0);
                vector<double> sc;
                double m = -INFINITY;
                for (int j = first; j <= last; ++j) {
                    double dot = 0;
                    for (int d = 0; d < hd; ++d) dot += double(to_f(q[((size_t)i * H + h) * hd + d])) * to_f(k[((size_t)j * Hkv + g) * hd + d]);
                    sc.push_back(dot * scale);
                    m = std::max(m, dot * scale);
                }
                double l = 0;
                for (double& x : sc) l += std::exp(x - m);
                r.lse[(size_t)i * H + h] = m + std::log(l);
                vector<double> pr(sc.size());
                for (size_t a = 0; a < sc.size(); ++a) pr[a] = std::exp(sc[a] - m) / l;
                double* o = &r.o[((size_t)i * H + h) * hd];
                for (int j = first; j <= last; ++j)
                    for (int d = 0; d < hd; ++d) o[d] += pr[j - first] * to_f(v[((size_t)j * Hkv + g) * hd + d]);
                if (!dout) continue;
                const T* dO = &(*dout)[((size_t)i * H + h) * hd];
                double D = 0;
                for (int d = 0; d < hd; ++d) D += double(to_f(dO[d])) * o[d];
                for (int j = first; j <= last; ++j) {
                    double dp = 0;
                    for (int d = 0; d < hd; ++d) dp += double(to_f(dO[d])) * to_f(v[((size_t)j * Hkv + g) * hd + d]);
                    const double pj = pr[j - first], ds = pj * (dp - D) * scale;
                    for (int d = 0; d < hd; ++d) {
                        r.dq[((size_t)i * H + h) * hd + d] += ds * to_f(k[((size_t)j * Hkv + g) * hd + d]);
                        r.dk[((size_t)j * Hkv + g) * hd + d] += ds * to_f(q[((size_t)i * H + h) * hd + d]);
                        r.dv[((size_t)j * Hkv + g) * hd + d] += pj * to_f(dO[d]);
                    }
                }
            }
    }
    return r;
}

// Tiles of at most `size` rows that never cross a segment (launch.rs, tiles): ATT_TILE rows for
// the FMA kernels and dK/dV, ATT_POS_TILE positions for the tensor-core forward and dQ.
static vector<int> att_tiles(const vector<int>& starts, int size = ATT_TILE) {
    vector<int> out;
    for (size_t s = 0; s + 1 < starts.size(); ++s)
        for (int a = starts[s]; a < starts[s + 1]; a += size) out.insert(out.end(), {int(s), a, std::min(a + size, starts[s + 1])});
    return out;
}

// The attention kernels of one head-dim limit, picked as the launcher picks them: the smallest
// limit (64, 128, 256) that holds head_dim; for bf16 with head_dim a multiple of 16 the launcher
// takes the tensor-core kernels (`*_mma`, null otherwise), the FMA ones are checked beside them.
template <typename T> struct AttKernels {
    using Forward = void (*)(const T*, const T*, const T*, T*, float*, const int*, const int*, const AttTile*, int, int, int,
                             float, int);
    using Dq = void (*)(const T*, const T*, const T*, const T*, const float*, const float*, T*, const int*, const AttTile*, int,
                        int, int, float, int);
    using DkDv = void (*)(const T*, const T*, const T*, const T*, const float*, const float*, T*, T*, const int*,
                          const AttTile*, int, int, int, float, int);
    Forward forward, forward_mma;
    Dq dq, dq_mma;
    DkDv dkdv, dkdv_mma;
};
#define ATT_KERNELS(HD, SUF)                                                                                                  \
    {attention_forward_hd##HD##_##SUF, nullptr, attention_bwd_dq_hd##HD##_##SUF, nullptr, attention_bwd_dkdv_hd##HD##_##SUF, \
     nullptr}
#define ATT_KERNELS_MMA(HD)                                                                                                    \
    {attention_forward_hd##HD##_bf16,   attention_forward_mma_hd##HD##_bf16,  attention_bwd_dq_hd##HD##_bf16,                  \
     attention_bwd_dq_mma_hd##HD##_bf16, attention_bwd_dkdv_hd##HD##_bf16, attention_bwd_dkdv_mma_hd##HD##_bf16}
template <typename T> static AttKernels<T> att_kernels(int hd) {
    if constexpr (is_f32<T>) {
        if (hd <= 64) return ATT_KERNELS(64, f32);
        if (hd <= 128) return ATT_KERNELS(128, f32);
        return ATT_KERNELS(256, f32);
    } else {
        if (hd % 16 == 0) {
            if (hd <= 64) return ATT_KERNELS_MMA(64);
            if (hd <= 128) return ATT_KERNELS_MMA(128);
            return ATT_KERNELS_MMA(256);
        }
        if (hd <= 64) return ATT_KERNELS(64, bf16);
        if (hd <= 128) return ATT_KERNELS(128, bf16);
        return ATT_KERNELS(256, bf16);
    }
}

// A copy of `v` starting 2 bytes past a 16-byte boundary (for bf16), so that the tensor-core
// kernels' asynchronous copies cannot be used and their synchronous fallback runs.
template <typename T> static vector<T> shifted(const vector<T>& v) {
    vector<T> out(v.size() + 1);
    std::copy(v.begin(), v.end(), out.begin() + 1);
    return out;
}

// Forward, backward (from the kernel's own O and lse, as the launcher does) and the decode step,
// for one shape. The launcher passes INT_MAX for no window and the shared-memory sizes of the
// kernel source's own layout functions. bf16 tolerances (relative to max |ref| + |ref|, see
// compare): inputs are bf16 and exact in the reference, every sum is f32, so the error is the
// output's own bf16 rounding (2⁻⁹ relative) plus, in the tensor-core kernels, P and dS rounded to
// bf16 before their products (2⁻⁹ relative each, partly cancelling over a row): 1e-2 for O and
// the gradients of the tensor-core kernels, 3e-2 for the FMA backward as before. lse is f32 in
// every kernel (1e-5). `misaligned`: also run the tensor-core kernels on inputs off a 16-byte
// boundary and require the same bits.
template <typename T>
static void attention(const AttShape sh, const vector<int>& starts, const vector<int>& qs, const vector<int>& ks,
                      bool misaligned = false) {
    const int H = sh.H, Hkv = sh.Hkv, hd = sh.hd;
    const int window = sh.window > 0 ? sh.window : INT_MAX;
    const auto kern = att_kernels<T>(hd);
    const std::string tag = "hd " + std::to_string(hd) + " " + std::to_string(H) + ":" + std::to_string(Hkv) +
                            (sh.window ? ", window " + std::to_string(sh.window) : std::string()) + ": ";
    const int T_ = starts.back();
    auto q = rand_t<T>((size_t)T_ * H * hd, 2.f), k = rand_t<T>((size_t)T_ * Hkv * hd, 2.f), v = rand_t<T>((size_t)T_ * Hkv * hd);
    auto dout = rand_t<T>((size_t)T_ * H * hd);
    auto o = poisoned<T>((size_t)T_ * H * hd);
    vector<float> lse((size_t)T_ * H, std::nanf(""));
    auto tiles = att_tiles(starts);
    const unsigned ntiles = tiles.size() / 3;
    const auto* tl = reinterpret_cast<const AttTile*>(tiles.data());
    // The tensor-core forward and dQ: tiles of ATT_POS_TILE positions, grid (tiles, H).
    auto pos_tiles = att_tiles(starts, ATT_POS_TILE);
    const unsigned npos_tiles = pos_tiles.size() / 3;
    const auto* ptl = reinterpret_cast<const AttTile*>(pos_tiles.data());
    // The forward the launcher takes (tensor cores where it can), with its shared memory and tiles.
    const auto forward = kern.forward_mma ? kern.forward_mma : kern.forward;
    const unsigned fwd_bytes = kern.forward_mma ? att_forward_mma_layout(hd, nullptr, nullptr) : 4 * att_forward_shared_floats(hd);
    const unsigned fwd_tiles = kern.forward_mma ? npos_tiles : ntiles;
    const auto* fwd_tl = kern.forward_mma ? ptl : tl;
    const std::string fwd_tag = tag + (kern.forward_mma ? "attention (mma) " : "attention ");
    emulate_launch({fwd_tiles, unsigned(H)}, ATT_THREADS, fwd_bytes, [&] {
        forward(q.data(), k.data(), v.data(), o.data(), lse.data(), starts.data(), starts.data(), fwd_tl, H, Hkv, hd, sh.scale, window);
    });
    auto ref = attention_ref(q, k, v, &dout, starts, starts, sh);
    const double tol = is_f32<T> ? 2e-5 : 1e-2;
    compare(fwd_tag + "O", o, ref.o, tol);
    compare(fwd_tag + "lse", lse, ref.lse, 1e-5);
    if (kern.forward_mma) {  // the FMA forward too
        auto o_fma = poisoned<T>(o.size());
        vector<float> lse_fma(lse.size(), std::nanf(""));
        emulate_launch({ntiles, unsigned(H)}, ATT_THREADS, 4 * att_forward_shared_floats(hd), [&] {
            kern.forward(q.data(), k.data(), v.data(), o_fma.data(), lse_fma.data(), starts.data(), starts.data(), tl, H, Hkv, hd, sh.scale,
                         window);
        });
        compare(tag + "attention (FMA) O", o_fma, ref.o, tol);
        compare(tag + "attention (FMA) lse", lse_fma, ref.lse, 1e-5);
    }

    vector<float> D((size_t)T_ * H, std::nanf(""));
    const long long rows = (long long)T_ * H;
    emulate_launch({blocks_for(rows)}, 256, [&] {
        if constexpr (is_f32<T>) attention_bwd_dot_f32(dout.data(), o.data(), D.data(), hd, rows);
        else attention_bwd_dot_bf16(dout.data(), o.data(), D.data(), hd, rows);
    });
    auto dq = poisoned<T>(q.size()), dk = poisoned<T>(k.size()), dv = poisoned<T>(v.size());
    emulate_launch({ntiles, unsigned(H)}, ATT_THREADS, 4 * att_bwd_dq_shared_floats(hd), [&] {
        kern.dq(q.data(), k.data(), v.data(), dout.data(), lse.data(), D.data(), dq.data(), starts.data(), tl, H, Hkv, hd, sh.scale, window);
    });
    emulate_launch({ntiles, unsigned(Hkv)}, ATT_THREADS, 4 * att_bwd_dkdv_shared_floats(hd), [&] {
        kern.dkdv(q.data(), k.data(), v.data(), dout.data(), lse.data(), D.data(), dk.data(), dv.data(), starts.data(), tl, H, Hkv, hd,
                  sh.scale, window);
    });
    const double gtol = is_f32<T> ? 1e-4 : 3e-2;
    const std::string fma_tag = tag + (kern.dq_mma ? "attention (FMA) " : "attention ");
    compare(fma_tag + "dQ", dq, ref.dq, gtol);
    compare(fma_tag + "dK", dk, ref.dk, gtol);
    compare(fma_tag + "dV", dv, ref.dv, gtol);
    if (kern.dq_mma) {
        const unsigned dq_bytes = att_bwd_dq_mma_layout(hd, nullptr, nullptr);
        const unsigned dkdv_bytes = att_bwd_dkdv_mma_layout(hd, nullptr, nullptr);
        auto backward_mma = [&](const T* q_, const T* k_, const T* v_, const T* dout_, vector<T>& dq_, vector<T>& dk_, vector<T>& dv_) {
            emulate_launch({npos_tiles, unsigned(H)}, ATT_THREADS, dq_bytes, [&] {
                kern.dq_mma(q_, k_, v_, dout_, lse.data(), D.data(), dq_.data(), starts.data(), ptl, H, Hkv, hd, sh.scale, window);
            });
            // dK/dV: blocks of 64 keys (32 past hd 128) over the same position tiles.
            emulate_launch({npos_tiles, unsigned(Hkv * att_dkdv_blocks_per_tile(hd))}, ATT_THREADS, dkdv_bytes, [&] {
                kern.dkdv_mma(q_, k_, v_, dout_, lse.data(), D.data(), dk_.data(), dv_.data(), starts.data(), ptl, H, Hkv, hd, sh.scale,
                              window);
            });
        };
        auto mq = poisoned<T>(q.size()), mk = poisoned<T>(k.size()), mv = poisoned<T>(v.size());
        backward_mma(q.data(), k.data(), v.data(), dout.data(), mq, mk, mv);
        const double mtol = 1e-2;
        compare(tag + "attention (mma) dQ", mq, ref.dq, mtol);
        compare(tag + "attention (mma) dK", mk, ref.dk, mtol);
        compare(tag + "attention (mma) dV", mv, ref.dv, mtol);
        if (misaligned) {
            // The synchronous staging must compute the same function bit for bit.
            auto sq = shifted(q), sk = shifted(k), sv = shifted(v), sd = shifted(dout);
            auto o2 = poisoned<T>(o.size()), q2 = poisoned<T>(q.size()), k2 = poisoned<T>(k.size()), v2 = poisoned<T>(v.size());
            vector<float> lse2(lse.size(), std::nanf(""));
            emulate_launch({fwd_tiles, unsigned(H)}, ATT_THREADS, fwd_bytes, [&] {
                forward(sq.data() + 1, sk.data() + 1, sv.data() + 1, o2.data(), lse2.data(), starts.data(), starts.data(), fwd_tl, H, Hkv,
                        hd, sh.scale, window);
            });
            backward_mma(sq.data() + 1, sk.data() + 1, sv.data() + 1, sd.data() + 1, q2, k2, v2);
            const bool same = std::memcmp(o2.data(), o.data(), o.size() * sizeof(T)) == 0 &&
                              std::memcmp(lse2.data(), lse.data(), lse.size() * 4) == 0 &&
                              std::memcmp(q2.data(), mq.data(), mq.size() * sizeof(T)) == 0 &&
                              std::memcmp(k2.data(), mk.data(), mk.size() * sizeof(T)) == 0 &&
                              std::memcmp(v2.data(), mv.data(), mv.size() * sizeof(T)) == 0;
            std::printf("  %-30s %s\n", (tag + "unaligned inputs, same bits").c_str(), same ? "ok" : "FAIL");
            if (!same) ++failures;
        }
    }

    // Decode step: new queries against longer KV caches.
    auto cq = rand_t<T>((size_t)qs.back() * H * hd, 2.f), ck = rand_t<T>((size_t)ks.back() * Hkv * hd, 2.f), cv = rand_t<T>((size_t)ks.back() * Hkv * hd);
    auto co = poisoned<T>(cq.size());
    vector<float> clse((size_t)qs.back() * H);
    auto ctiles = att_tiles(qs, kern.forward_mma ? ATT_POS_TILE : ATT_TILE);
    const auto* ctl = reinterpret_cast<const AttTile*>(ctiles.data());
    emulate_launch({unsigned(ctiles.size() / 3), unsigned(H)}, ATT_THREADS, fwd_bytes, [&] {
        forward(cq.data(), ck.data(), cv.data(), co.data(), clse.data(), qs.data(), ks.data(), ctl, H, Hkv, hd, sh.scale, window);
    });
    compare(fwd_tag + "cached O", co, attention_ref(cq, ck, cv, (const vector<T>*)nullptr, qs, ks, sh).o, tol);
}

template <typename T> static void attention_cases() {
    // Segments: one-token, 20, empty, 35 (crosses tiles and key chunks). Decode: 1 and 3 new
    // queries against caches of 40 and 3 keys, plus an empty segment.
    const vector<int> starts = {0, 1, 21, 21, 56}, qs = {0, 1, 1, 4}, ks = {0, 40, 40, 43};
    // Full causal, the default scale, head_dim not a multiple of 8 (limit 64).
    attention<T>({4, 2, 20, 1.f / std::sqrt(20.f), 0}, starts, qs, ks);
    // Limit 128 with a custom scale and a window of two keys (each query sees itself and the key
    // before; a window of one key would make dQ and dK exactly zero).
    attention<T>({4, 2, 100, 0.37f, 2}, starts, qs, ks);
    // Limit 64 at head_dim 64 (bf16: the tensor-core kernels), a window past a tile.
    attention<T>({2, 1, 64, 0.2f, 24}, starts, qs, ks);
    // Gemma 3's head_dim 256 (limit 256), one KV head, a custom scale; a window shorter than a
    // tile (later tiles start past their segment's first key chunk), one longer than a tile but
    // shorter than the longest segment, and none.
    attention<T>({4, 1, 256, 0.05f, 7}, starts, qs, ks);
    attention<T>({2, 1, 256, 0.08f, 20}, starts, qs, ks);
    attention<T>({2, 2, 256, 0.0625f, 0}, starts, qs, ks);
    // The tensor-core kernels' pipeline: segments of odd lengths 5, 0, 67 (three 32-key chunks,
    // so both stages are refilled), 3 and 37. GQA 8:1 at head_dim 64, causal; MQA at head_dim 128
    // with a window of 20 keys (longer than the short segments, shorter than the long ones);
    // head_dim 48 (a multiple of 16 under the limit 64: some warps own no column block), GQA 2:1,
    // a window past a chunk, on unaligned inputs too.
    const vector<int> odd = {0, 5, 5, 72, 75, 112}, odd_qs = {0, 2, 2, 5}, odd_ks = {0, 70, 70, 73};
    attention<T>({16, 2, 64, 0.125f, 0}, odd, odd_qs, odd_ks);
    attention<T>({4, 1, 128, 0.09f, 20}, odd, odd_qs, odd_ks);
    attention<T>({4, 2, 48, 0.15f, 40}, odd, odd_qs, odd_ks, true);
    if constexpr (!is_f32<T>) {
        // The tensor-core forward's and dQ's packed rows (bf16 only: f32 never takes them).
        // Segments of 150 (three tiles of 64 positions), 1 and 80.
        const vector<int> longer = {0, 150, 151, 231};
        // MHA (G = 1): blocks of 64 positions, several per segment; scores large enough (scale 1
        // at head_dim 64) that row maxima move past the slack and accumulators are rescaled.
        attention<T>({2, 2, 64, 1.f, 0}, longer, odd_qs, odd_ks, true);
        // G = 3, which does not divide 64 (blocks end inside a position's heads), and a window of
        // 50: the rows of one block start their windows in different chunks.
        attention<T>({6, 2, 32, 0.3f, 50}, longer, odd_qs, odd_ks);
        // G = 80, more than a block's 64 rows: each position's heads span two blocks.
        attention<T>({80, 1, 16, 0.25f, 0}, {0, 3, 40}, odd_qs, odd_ks);
        // dK/dV's 64-key blocks: a segment of 200 (three full blocks and one of 8 keys) at
        // hd 128, GQA 4:1, a window of 37 keys, which ends inside a block's keys and whose
        // limit moves across 32-query chunks; hd 256 (blocks of 32 keys, two per tile, each
        // warp pair splitting the columns) over the segments of 150, 1 and 80 with a window of
        // 45, on unaligned inputs too.
        attention<T>({8, 2, 128, 0.1f, 37}, {0, 200, 203, 290}, odd_qs, odd_ks);
        attention<T>({4, 2, 256, 0.06f, 45}, longer, odd_qs, odd_ks, true);
    }
}

// The decode kernel over per-sequence caches read in place (ops/cuda/attention.rs,
// attention_decode_forward), with the sequence table, work units and split rows built as the
// launcher builds them: units of at most ATT_DECODE_KEYS keys from each row's first visible key,
// rows seeing more split and combined. Caches of different lengths and capacities, the rows past
// each length NaN (a read of one shows); one, three, no and one new queries. Checked against the
// double loops over the caches' valid rows packed (the attention reference above).
template <typename T> static void attention_decode(const AttShape sh) {
    const int H = sh.H, Hkv = sh.Hkv, hd = sh.hd, kv_dim = Hkv * hd, group = H / Hkv;
    const std::string tag = "hd " + std::to_string(hd) + " " + std::to_string(H) + ":" + std::to_string(Hkv) +
                            (sh.window ? ", window " + std::to_string(sh.window) : std::string()) + ": decode ";
    struct Sequence {
        int len, capacity, q_len;
    };
    const vector<Sequence> sequences = {{600, 700, 1}, {40, 64, 3}, {7, 16, 0}, {1, 16, 1}};
    vector<vector<T>> kc, vc;
    vector<T> k_packed, v_packed;
    vector<int> qs = {0}, ks = {0};
    for (const auto& sq : sequences) {
        auto k = rand_t<T>((size_t)sq.len * kv_dim, 2.f), v = rand_t<T>((size_t)sq.len * kv_dim);
        k_packed.insert(k_packed.end(), k.begin(), k.end());
        v_packed.insert(v_packed.end(), v.begin(), v.end());
        k.resize((size_t)sq.capacity * kv_dim, to_t<T>(std::nanf("")));
        v.resize((size_t)sq.capacity * kv_dim, to_t<T>(std::nanf("")));
        kc.push_back(std::move(k)), vc.push_back(std::move(v));
        qs.push_back(qs.back() + sq.q_len), ks.push_back(ks.back() + sq.len);
    }
    auto q = rand_t<T>((size_t)qs.back() * H * hd, 2.f);
    vector<AttDecodeSequence> table;
    vector<AttDecodeUnit> units;
    vector<AttDecodeCombine> combines;
    int parts = 0;
    for (size_t s = 0; s < sequences.size(); ++s) {
        const auto& sq = sequences[s];
        table.push_back({address(kc[s].data()), address(vc[s].data()), sq.len, qs[s], sq.q_len, 0});
        for (int j = 0; j < sq.q_len; ++j) {
            const int row = qs[s] + j, position = sq.len - sq.q_len + j, end = position + 1;
            const int first = sh.window > 0 ? std::max(0, position - sh.window + 1) : 0;
            const int pieces = (end - first + ATT_DECODE_KEYS - 1) / ATT_DECODE_KEYS;
            if (pieces > 1) combines.push_back({row, parts, pieces});
            for (int p = 0; p < pieces; ++p) {
                const int begin = first + p * ATT_DECODE_KEYS;
                units.push_back({int(s), row, begin, std::min(begin + ATT_DECODE_KEYS, end), pieces > 1 ? parts + p : -1});
            }
            if (pieces > 1) parts += pieces;
        }
    }
    auto o = poisoned<T>(q.size());
    vector<float> part_ml((size_t)std::max(parts, 1) * H * 2, std::nanf("")), part_acc((size_t)std::max(parts, 1) * H * hd, std::nanf(""));
    using Decode = void (*)(const T*, T*, float*, float*, const AttDecodeSequence*, const AttDecodeUnit*, int, int, int, float);
    using Combine = void (*)(const float*, const float*, T*, const AttDecodeCombine*, int, int);
    Decode decode;
    Combine combine;
    if constexpr (is_f32<T>) {
        decode = hd <= 64 ? attention_decode_hd64_f32 : hd <= 128 ? attention_decode_hd128_f32 : attention_decode_hd256_f32;
        combine = attention_decode_combine_f32;
    } else {
        decode = hd <= 64 ? attention_decode_hd64_bf16 : hd <= 128 ? attention_decode_hd128_bf16 : attention_decode_hd256_bf16;
        combine = attention_decode_combine_bf16;
    }
    emulate_launch({unsigned(units.size()), unsigned(Hkv)}, ATT_THREADS, 4 * att_decode_shared_floats(hd, group), [&] {
        decode(q.data(), o.data(), part_ml.data(), part_acc.data(), table.data(), units.data(), H, Hkv, hd, sh.scale);
    });
    if (!combines.empty())
        emulate_launch({unsigned(combines.size()), unsigned(H)}, ATT_THREADS, [&] {
            combine(part_ml.data(), part_acc.data(), o.data(), combines.data(), H, hd);
        });
    const auto ref = attention_ref(q, k_packed, v_packed, (const vector<T>*)nullptr, qs, ks, sh).o;
    compare(tag + "O (" + std::to_string(combines.size()) + " split rows)", o, ref, is_f32<T> ? 2e-5 : 1e-2);
}

template <typename T> static void attention_decode_cases() {
    // Causal (the 600-key row splits into three units), head_dim 20 (limit 64), GQA 2:1.
    attention_decode<T>({4, 2, 20, 1.f / std::sqrt(20.f), 0});
    // Limit 128 with MQA 8:1 and a window of 300 keys (the long row splits in two).
    attention_decode<T>({8, 1, 100, 0.09f, 300});
    // Gemma 3's head_dim 256, 4:1, a window of 7 (no split; the window starts past 0).
    attention_decode<T>({4, 1, 256, 0.0625f, 7});
    // Limit 64 at head_dim 64, no grouping, causal.
    attention_decode<T>({2, 2, 64, 0.125f, 0});
}

template <typename T> static void cross_entropy() {
    const int t = 6, d = 9, V = 70, chunk = 32;  // chunks of 32, 32, 6
    const vector<int> targets = {3, -1, 69, 40, -1, 0};
    vector<int> scored, tsel;
    for (int i = 0; i < t; ++i)
        if (targets[i] >= 0) scored.push_back(i), tsel.push_back(targets[i]);
    const int n = scored.size();
    auto x = rand_t<T>((size_t)t * d, 3.f), w = rand_t<T>((size_t)V * d);
    auto xsel = poisoned<T>((size_t)n * d);
    emulate_launch({1}, 256, [&] {
        if constexpr (is_f32<T>) ce_gather_f32(x.data(), scored.data(), xsel.data(), d, (long long)n * d);
        else ce_gather_bf16(x.data(), scored.data(), xsel.data(), d, (long long)n * d);
    });
    // z of one chunk, as cuBLAS would give it (f32 out).
    auto logits = [&](int c0, int cw) {
        vector<float> z((size_t)n * cw);
        for (int r = 0; r < n; ++r)
            for (int j = 0; j < cw; ++j) {
                float s = 0;
                for (int i = 0; i < d; ++i) s += to_f(xsel[(size_t)r * d + i]) * to_f(w[(size_t)(c0 + j) * d + i]);
                z[(size_t)r * cw + j] = s;
            }
        return z;
    };
    // The first two chunks go to the kept logits [n, 64] (row stride 64), the last to a scratch
    // chunk (row stride cw), as the launcher lays them out when the budget holds 64 columns.
    const int kept = 64;
    vector<float> kept_z((size_t)n * kept, std::nanf(""));
    vector<float> mx(n, -INFINITY), sm(n, 0.f), tl(n, std::nanf(""));
    for (int c0 = 0; c0 < V; c0 += chunk) {
        const int cw = std::min(chunk, V - c0);
        auto z = logits(c0, cw);
        const float* zp = z.data();
        int ldz = cw;
        if (c0 < kept) {
            for (int r = 0; r < n; ++r)
                for (int j = 0; j < cw; ++j) kept_z[(size_t)r * kept + c0 + j] = z[(size_t)r * cw + j];
            zp = kept_z.data() + c0, ldz = kept;
        }
        emulate_launch({unsigned(n)}, 256, [&] { ce_lse_update(zp, ldz, cw, c0, tsel.data(), mx.data(), sm.data(), tl.data()); });
    }
    vector<float> lse(n, std::nanf("")), logprob(t, 0.f);
    vector<double> loss_sum(1, std::nan(""));
    emulate_launch({1}, 256, [&] {
        ce_finish(mx.data(), sm.data(), tl.data(), scored.data(), n, lse.data(), logprob.data(), loss_sum.data());
    });
    vector<double> rlse(n), rtl(n), rlogprob(t, 0.0), rloss(1, 0.0);
    for (int r = 0; r < n; ++r) {
        double l = 0;
        vector<double> zr(V);
        for (int j = 0; j < V; ++j) {
            zr[j] = 0;
            for (int i = 0; i < d; ++i) zr[j] += double(to_f(x[(size_t)scored[r] * d + i])) * to_f(w[(size_t)j * d + i]);
            l += std::exp(zr[j]);
        }
        rlse[r] = std::log(l);
        rtl[r] = zr[tsel[r]];
        rlogprob[scored[r]] = rtl[r] - rlse[r];
        rloss[0] -= rlogprob[scored[r]];
    }
    compare("cross-entropy lse (3 chunks, 2 kept)", lse, rlse, 1e-5);
    compare("cross-entropy target logit", tl, rtl, 1e-5);
    compare("cross-entropy log p (unscored 0)", logprob, rlogprob, 1e-5);
    compare("cross-entropy loss sum", loss_sum, rloss, 1e-5);
    // dlogits of the last (recomputed) chunk into a packed dz, and of the second (kept) chunk:
    // in place for f32, into a packed bf16 dz for bf16.
    const float scale = 0.5f;
    auto dlogits = [&](const float* z, int ldz, int c0, int cw, T* dz, int lddz) {
        emulate_launch({1}, 256, [&] {
            if constexpr (is_f32<T>) ce_dlogits_f32(z, ldz, cw, c0, tsel.data(), lse.data(), scale, dz, lddz, (long long)n * cw);
            else ce_dlogits_bf16(z, ldz, cw, c0, tsel.data(), lse.data(), scale, dz, lddz, (long long)n * cw);
        });
    };
    auto want_dz = [&](int c0, int cw) {
        vector<double> rdz((size_t)n * cw);
        auto z = logits(c0, cw);
        for (int r = 0; r < n; ++r)
            for (int j = 0; j < cw; ++j) rdz[(size_t)r * cw + j] = scale * (std::exp(double(z[(size_t)r * cw + j]) - rlse[r]) - (c0 + j == tsel[r]));
        return rdz;
    };
    const double dz_tol = is_f32<T> ? 1e-5 : 1e-2;
    {
        const int c0 = 64, cw = V - c0;
        auto z = logits(c0, cw);
        auto dz = poisoned<T>((size_t)n * cw);
        dlogits(z.data(), cw, c0, cw, dz.data(), cw);
        compare("cross-entropy dlogits (recomputed chunk)", dz, want_dz(c0, cw), dz_tol);
    }
    {
        const int c0 = 32, cw = 32;
        vector<T> dz;
        if constexpr (is_f32<T>) {
            dlogits(kept_z.data() + c0, kept, c0, cw, kept_z.data() + c0, kept);
            for (int r = 0; r < n; ++r)
                for (int j = 0; j < cw; ++j) dz.push_back(kept_z[(size_t)r * kept + c0 + j]);
        } else {
            dz = poisoned<T>((size_t)n * cw);
            dlogits(kept_z.data() + c0, kept, c0, cw, dz.data(), cw);
        }
        compare("cross-entropy dlogits (kept chunk)", dz, want_dz(c0, cw), dz_tol);
    }
    vector<float> dxsel((size_t)n * d);
    for (auto& v : dxsel) v = std::uniform_real_distribution<float>(-1, 1)(rng);
    vector<T> dx((size_t)t * d, to_t<T>(0.f));
    emulate_launch({1}, 256, [&] {
        if constexpr (is_f32<T>) ce_scatter_f32(dxsel.data(), scored.data(), dx.data(), d, (long long)n * d);
        else ce_scatter_bf16(dxsel.data(), scored.data(), dx.data(), d, (long long)n * d);
    });
    vector<double> rdx((size_t)t * d, 0.0);
    for (int r = 0; r < n; ++r)
        for (int i = 0; i < d; ++i) rdx[(size_t)scored[r] * d + i] = to_f(to_t<T>(dxsel[(size_t)r * d + i]));
    compare("cross-entropy scatter dx", dx, rdx, 1e-7);
}

// The launcher's table (ops/cuda/optim.rs): each tensor's first chunk, numbered across the
// tensors. Returns the number of chunks.
static long long number_chunks(vector<TfMultiTensor>& table) {
    long long chunks = 0;
    for (auto& t : table) {
        t.first_chunk = chunks;
        chunks += (t.n + TF_CHUNK - 1) / TF_CHUNK;
    }
    return chunks;
}


template <typename G> static void optim() {
    // Three tensors: one small, one of three chunks (the last partial), one of exactly one chunk;
    // the second keeps a bf16 working copy of its f32 master. Fewer blocks than chunks, so blocks
    // walk several chunks.
    const vector<long long> sizes = {5, 2 * TF_CHUNK + 100, TF_CHUNK};
    const float lr = 0.1f, b1 = 0.8f, b2 = 0.95f, eps = 1e-6f, wd = 0.1f, grad_scale = 0.5f;
    vector<vector<float>> p, m, v;
    vector<vector<double>> rp, rm, rv;
    for (long long n : sizes) {
        p.push_back(rand_t<float>(n));
        m.emplace_back(n, 0.f);
        v.emplace_back(n, 0.f);
        rp.emplace_back(p.back().begin(), p.back().end());
        rm.emplace_back(n, 0.0);
        rv.emplace_back(n, 0.0);
    }
    vector<__nv_bfloat16> working = poisoned<__nv_bfloat16>(sizes[1]);
    for (int step = 1; step <= 3; ++step) {
        vector<vector<G>> g;
        for (long long n : sizes) g.push_back(rand_t<G>(n));
        vector<TfMultiTensor> table;
        for (size_t t = 0; t < sizes.size(); ++t)
            table.push_back({address(p[t].data()), address(g[t].data()), address(m[t].data()),
                             address(v[t].data()), t == 1 ? address(working.data()) : 0ull,
                             sizes[t], 0});
        const long long chunks = number_chunks(table);
        const double bc1 = 1 - std::pow(double(b1), step), bc2 = 1 - std::pow(double(b2), step);
        emulate_launch({2}, 256, [&] {
            if constexpr (is_f32<G>)
                multi_adamw_f32(table.data(), 3, chunks, lr, b1, b2, eps, wd, bc1, bc2, grad_scale);
            else
                multi_adamw_bf16(table.data(), 3, chunks, lr, b1, b2, eps, wd, bc1, bc2, grad_scale);
        });
        for (size_t t = 0; t < sizes.size(); ++t)
            for (long long i = 0; i < sizes[t]; ++i) {
                const double gi = to_f(g[t][i]) * grad_scale;
                rp[t][i] *= 1 - double(lr) * wd;
                rm[t][i] = b1 * rm[t][i] + (1 - double(b1)) * gi;
                rv[t][i] = b2 * rv[t][i] + (1 - double(b2)) * gi * gi;
                rp[t][i] -= lr * (rm[t][i] / bc1) / (std::sqrt(rv[t][i] / bc2) + eps);
            }
    }
    for (size_t t = 0; t < sizes.size(); ++t)
        compare("multi-tensor adamw param " + std::to_string(t) + " (3 steps)", p[t], rp[t], 1e-5);
    vector<double> rounded;
    for (float x : p[1]) rounded.push_back(to_f(to_t<__nv_bfloat16>(x)));
    compare("multi-tensor adamw bf16 working copy", working, rounded, 0);

    // The sum of squares over every tensor: the same bits with one block and with three.
    vector<vector<G>> g;
    vector<TfMultiTensor> table;
    double want = 0;
    for (long long n : sizes) {
        g.push_back(rand_t<G>(n));
        table.push_back({0, address(g.back().data()), 0, 0, 0, n, 0});
        for (auto x : g.back()) want += double(to_f(x)) * to_f(x);
    }
    const long long chunks = number_chunks(table);
    vector<double> totals;
    for (unsigned grid : {1u, 3u}) {
        vector<double> part(chunks, NAN), out(1, NAN);
        emulate_launch({grid}, 256, [&] {
            if constexpr (is_f32<G>) multi_sumsq_partial_f32(table.data(), 3, chunks, part.data());
            else multi_sumsq_partial_bf16(table.data(), 3, chunks, part.data());
        });
        emulate_launch({1}, 256, [&] { sumsq_finish(part.data(), int(chunks), out.data()); });
        compare("multi-tensor grad sum of squares, grid " + std::to_string(grid), out, {want}, 1e-12);
        totals.push_back(out[0]);
    }
    if (std::memcmp(&totals[0], &totals[1], sizeof(double)) != 0) {
        std::printf("  FAIL multi-tensor sum of squares differs between grids\n");
        ++failures;
    }

    const long long n = 3000;
    auto x = rand_t<G>(n);
    auto before = as_double(x);
    emulate_launch({blocks_for(n)}, 256, [&] {
        if constexpr (is_f32<G>) scale_f32(x.data(), n, 0.25f);
        else scale_bf16(x.data(), n, 0.25f);
    });
    for (auto& e : before) e *= 0.25;
    compare("scale", x, before, 1e-7);
}

template <typename T> static void all(const char* name) {
    std::printf("%s\n", name);
    embedding<T>();
    swiglu_and_geglu<T>();
    rope<T>();
    rmsnorm<T>();
    attention_cases<T>();
    attention_decode_cases<T>();
    cross_entropy<T>();
    optim<T>();
}

int main() {
    all<float>("f32");
    all<__nv_bfloat16>("bf16");
    std::printf(failures ? "%d FAILURES\n" : "all outputs match the reference\n", failures);
    return failures ? 1 : 0;
}
