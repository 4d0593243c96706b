// FLix backward (DESIGN §4). flix_common.cuh is prepended to this file. From dY [T, d_out] and the
// saved X [T, d_in], H [T, R]:
//
//   dH_k[t, j]  = Σ_o dY[t, o] B_{k,f}[o, j]                  (f32; 0 where type k is absent)
//   dX[t, i]    = Σ_k s_k Σ_j dH_k[t, j] A_{k,f}[j, i]        written (then cuBLAS adds dY W) or added
//   dB_{k,v}   += Σ_{segments s using v} Σ_{t in s} dY[t]ᵀ H_k[t]
//   dA_{k,v}   += s_k Σ_{segments s using v} Σ_{t in s} dH_k[t]ᵀ X[t]
//
// Work decomposition (no float atomics anywhere: same inputs, same bits). For bf16 activations
// every product runs on the tensor cores (flix_mma.cuh), reading the adapters' bf16 working copy
// in 16-byte asynchronous copies (dH: B's rows, two stages; dX: A's rows, two stages) and
// rounding the f32 dH to bf16 as it is staged (dX stages s_k dH, dA dH); the f32 entries use f32
// FMA (flix_common.cuh) on the f32 masters, same grids and outputs.
//   flix_dh_db_*        one pass over dY for dH and dB. Grid (runs x ceil(R/32), 1, nsplit): a
//                       block owns a run of FLIX_RUN_TILES consecutive tiles, 32 columns of H and
//                       a split of d_out; per 64-wide step it stages the dY tile once (16-byte
//                       cp.async, double-buffered) and feeds both dH's partial (registers, one
//                       accumulator per tile, written once as f32 [nsplit, T, R]) and dB's sum
//                       dYᵀH (registers, flushed once per stretch of one value, params::run_flushes,
//                       instead of once per segment): into a partial slot, or, when it is the
//                       value's only stretch in the batch, straight into dB (this block is then the
//                       only writer of those elements: no slot, nothing for the reduce).
//   flix_dh_finish_f32  sums the dH partials in order, zeroes absent types: dH in f32.
//   flix_dx_*           = the expand kernel with s_k A in place of B: grid (tiles, ceil(d_in/256)).
//   flix_da_*           one pass over X for dA: same runs and slots; d_in split only to spread the
//                       work (each split writes its own columns of the slots).
//   flix_grad_reduce_f32 per (type k, value v, element): sums v's partial slots in ascending slot
//                       order, scales, and adds into the f32 gradient. The host runs the pass and
//                       the reduces over groups of runs when the slots would not fit the workspace;
//                       the grouping depends only on the plan and shapes, so the order is fixed.
// A run may cross segments (and value changes) and a long segment spans several runs, so a
// segment's work is spread over many blocks; a value used by consecutive tiles of a run is summed
// in registers and written once.
//
// Cost at the reference shape (T = 8192 in 64 segments of 128 tokens, d = 4096, K = 2, r = 16,
// R = 32, bf16; values drawn uniformly from 90 and 10; 128 tiles, 64 runs of one segment each;
// nsplit = 8). Of the 128 (segment, type) stretches, ~32 are the only use of their value (type 0)
// and go straight into the gradient; the other ~96 fill 64 slots (one per run), ~3/4 of each.
//   dh_db:  reads dY 67.1 MB once (was twice: dH and dB) + H 0.5 MB + used bf16 B ~9.7 MB; writes
//           dH partials 8 x 1.05 = 8.4 MB, dB slots ~3/4 x 64 x 4096 x 32 x 4 B = 25 MB, and
//           adds ~32 direct values into dB (read + write 2 x 8.4 MB); 4.3 GFLOP.
//   finish: reads 8.4 MB, writes 1 MB.     dX: writes 67.1 MB (+ used bf16 A ~9.7 MB), 2.15 GFLOP.
//   da:     reads X 67.1 MB + dH 1 MB, writes ~25 MB of slots, adds ~32 direct values into dA
//           (2 x 8.4 MB); 2.15 GFLOP.
//   reduces: read 2 x 25 MB of slots, read+write the other used gradients 2 x 2 x 10.5 MB.
//   Total ~ 417 MB (~ 436 MB reading the f32 adapters, ~ 530 MB before the one pass over dY)
//   -> ~125 us at 3.35 TB/s; the tensor-core arithmetic is ~10 us.
//   Slots shrink further where consecutive tiles of a run share a value (long segments, a
//   single-value LoRA: one slot per run instead of per segment), and disappear for types whose
//   values are used once per batch (per-example features: no slots and no reduce for them).

extern "C" __global__ void __launch_bounds__(FLIX_THREADS)
flix_dh_db_f32(const float* dY, int d_out, const float* H, FlixTypes p, const int* slots,
               const FlixTile* tiles, int num_tiles, int q0, const FlixFlush* flush, int f0,
               float* dh_part, int num_tokens, int split_len, float* db_part, FlixGrads db) {
    flix_dh_db(dY, d_out, H, p, slots, tiles, num_tiles, q0, flush, f0, dh_part, num_tokens,
               split_len, db_part, db);
}

// At most 128 registers: two blocks per SM at least (47 KB of shared memory each).
extern "C" __global__ void __launch_bounds__(FLIX_THREADS, 2)
flix_dh_db_bf16(const __nv_bfloat16* dY, int d_out, const __nv_bfloat16* H, FlixTypes p,
                const int* slots, const FlixTile* tiles, int num_tiles, int q0,
                const FlixFlush* flush, int f0, float* dh_part, int num_tokens, int split_len,
                float* db_part, FlixGrads db) {
    flix_dh_db_mma(dY, d_out, H, p, slots, tiles, num_tiles, q0, flush, f0, dh_part, num_tokens,
                   split_len, db_part, db);
}

extern "C" __global__ void __launch_bounds__(FLIX_THREADS)
flix_dh_finish_f32(const float* part, int nsplit, int num_tokens, FlixTypes p, const int* slots,
                   const FlixTile* tiles, float* dH) {
    flix_narrow_finish<float>(part, nsplit, num_tokens, p, slots, tiles, dH, false);
}

extern "C" __global__ void __launch_bounds__(FLIX_THREADS)
flix_dx_f32(const float* dH, int d_in, FlixTypes p, const int* slots, const FlixTile* tiles,
            float* dX, int accumulate) {
    flix_wide<float, float, false>(dH, d_in, p, slots, tiles, dX, accumulate);
}

// At most 128 registers (64 of them accumulators): two blocks per SM.
extern "C" __global__ void __launch_bounds__(FLIX_THREADS, 2)
flix_dx_bf16(const float* dH, int d_in, FlixTypes p, const int* slots, const FlixTile* tiles,
             __nv_bfloat16* dX, int accumulate) {
    flix_wide_mma<float, false>(dH, d_in, p, slots, tiles, dX, accumulate);
}

extern "C" __global__ void __launch_bounds__(FLIX_THREADS)
flix_da_f32(const float* dH, const float* X, int d_in, FlixTypes p, const int* slots,
            const FlixTile* tiles, int num_tiles, int q0, const FlixFlush* flush, int f0,
            int split_len, float* da_part, FlixGrads da) {
    flix_da(dH, X, d_in, p, slots, tiles, num_tiles, q0, flush, f0, split_len, da_part, da);
}

extern "C" __global__ void __launch_bounds__(FLIX_THREADS, 2)
flix_da_bf16(const float* dH, const __nv_bfloat16* X, int d_in, FlixTypes p, const int* slots,
             const FlixTile* tiles, int num_tiles, int q0, const FlixFlush* flush, int f0,
             int split_len, float* da_part, FlixGrads da) {
    flix_da_mma(dH, X, d_in, p, slots, tiles, num_tiles, q0, flush, f0, split_len, da_part, da);
}

// grad[v, row, col] += scale · Σ_{f in slots(value_base + v), s0 <= f < s1}
//                              part[f - s0][(row + row_off) * part_ld + col + col_off]
// slots(g) = value_slots[value_ptr[g] .. value_ptr[g + 1]]: the partial slots of value g in
// ascending order (params::run_flushes), so each element is summed in a fixed order.
// One launch per type: rows x cols is one value's gradient block (dB: d_out x r_k, dA: r_k x
// d_in). Grid: (ceil(rows*cols / 256), min(V_k, 65535)); values beyond grid.y by grid stride.
extern "C" __global__ void __launch_bounds__(FLIX_THREADS)
flix_grad_reduce_f32(float* grad, int num_values, int rows, int cols, const float* part,
                     long long part_seg_stride, int part_ld, int row_off, int col_off,
                     const int* value_ptr, const int* value_slots, int value_base, int s0,
                     int s1, float scale) {
    const long long block_elems = (long long)rows * cols;
    const long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= block_elems) return;
    const int row = (int)(e / cols), col = (int)(e % cols);
    const long long offset = (long long)(row + row_off) * part_ld + col + col_off;
    for (int v = blockIdx.y; v < num_values; v += gridDim.y) {
        const int g = value_base + v;
        float acc = 0.f;
        bool any = false;
        for (int u = value_ptr[g]; u < value_ptr[g + 1]; ++u) {
            const int s = value_slots[u];
            if (s < s0 || s >= s1) continue;
            acc += part[(long long)(s - s0) * part_seg_stride + offset];
            any = true;
        }
        if (any) grad[(long long)v * block_elems + e] += scale * acc;
    }
}
