//! The host side of the FLix kernels' contract, with no device in sight so that it is tested on
//! any machine: the `#[repr(C)]` mirror of the kernels' `FlixTypes` struct, the limits the
//! kernels need (checked before anything is launched), and the work decomposition (token tiles,
//! split of the long dimension, runs of tiles and their partial slots for the weight gradients,
//! groups of runs for the gradient workspace).

use std::ops::Range;

use cudarc::driver::DeviceRepr;
use flix_core::BatchPlan;

use crate::error::{KernelError, Result};

/// `FLIX_MAX_TYPES` in `kernels-cu/flix_common.cuh`: the per-type arrays of [`FlixTypesParam`].
pub const MAX_TYPES: usize = 8;
/// `FLIX_TILE_M`: tokens per tile (one block's rows in shrink, expand, dH and dX).
pub const TILE_M: usize = flix_core::TILE_SIZE;
/// `FLIX_THREADS`: every FLix kernel runs 256-thread blocks.
pub const THREADS: u32 = 256;
/// Columns of H per shrink/dH block (`NC` in `flix_narrow`).
pub const NARROW_COLS: usize = 32;
/// Step of the long dimension in shrink/dH (`KC` in `flix_narrow`); splits are multiples of it.
pub const NARROW_STEP: usize = 64;
/// Output columns per expand/dX block (`NB` in `flix_wide`).
pub const WIDE_COLS: usize = 256;
/// `FLIX_RUN_TILES`: tiles per run of the weight-gradient kernels (`flix_dh_db`, `flix_da`); a
/// block owns one run and sums its tiles' products in registers.
pub const RUN_TILES: usize = 2;
/// Split the long dimension of shrink/dH until about this many blocks are in flight (four
/// 256-thread blocks on each of an H100's 132 SMs, enough 16-byte loads in flight to cover the
/// memory latency). A constant, not the device's SM count, so that the summation order, and hence
/// the bits, are the same on every card.
pub const TARGET_BLOCKS: usize = 528;
/// Largest f32 workspace for the gradient partial slots; beyond it runs are processed in groups
/// (see [`run_groups`]).
pub const PARTIAL_BUDGET_BYTES: usize = 256 << 20;
/// Largest grid y/z dimension CUDA allows.
const MAX_GRID_YZ: usize = 65_535;

/// Mirror of `struct FlixTypes` (kernels-cu/flix_common.cuh), passed by value to the kernels.
/// Pointers are device addresses of each type's adapters: the f32 masters for the f32 entries,
/// the bf16 working copies for the bf16 entries.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FlixTypesParam {
    pub a: [u64; MAX_TYPES],
    pub b: [u64; MAX_TYPES],
    pub scale: [f32; MAX_TYPES],
    pub rank: [i32; MAX_TYPES],
    pub col_off: [i32; MAX_TYPES + 1],
    pub num_types: i32,
    pub total_rank: i32,
}

// SAFETY: plain old data with the C layout of `struct FlixTypes` (checked by a test below).
unsafe impl DeviceRepr for FlixTypesParam {}

/// Mirror of `struct FlixGrads` (kernels-cu/flix_common.cuh): device addresses of each type's f32
/// gradient (dB or dA), where the weight-gradient kernels add a value's only stretch directly.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlixGradsParam {
    pub g: [u64; MAX_TYPES],
}

// SAFETY: plain old data with the C layout of `struct FlixGrads` (eight pointers).
unsafe impl DeviceRepr for FlixGradsParam {}

impl FlixTypesParam {
    /// Ranks, column offsets and scales from the plan; adapter pointers are left 0 for the
    /// launcher to fill. Checks the kernel limits first.
    pub fn new(op: &'static str, plan: &BatchPlan, scales: &[f32]) -> Result<Self> {
        check_types(op, plan)?;
        if scales.len() != plan.num_types() {
            return Err(KernelError::Invalid {
                op,
                message: format!(
                    "{} scales for {} feature types",
                    scales.len(),
                    plan.num_types()
                ),
            });
        }
        let mut p = Self {
            num_types: plan.num_types() as i32,
            total_rank: plan.total_rank() as i32,
            ..Self::default()
        };
        for (k, t) in plan.types().iter().enumerate() {
            p.rank[k] = t.rank as i32;
            p.scale[k] = scales[k];
        }
        for (k, &off) in plan.col_offsets().iter().enumerate() {
            p.col_off[k] = off as i32;
        }
        Ok(p)
    }
}

/// K <= [`MAX_TYPES`]: the kernels take the per-type parameters in fixed-size arrays.
pub fn check_types(op: &'static str, plan: &BatchPlan) -> Result<()> {
    if plan.num_types() > MAX_TYPES {
        return Err(KernelError::Invalid {
            op,
            message: format!(
                "the plan has {} feature types; the CUDA kernels take at most {MAX_TYPES}",
                plan.num_types()
            ),
        });
    }
    Ok(())
}

/// Everything the kernels index with 32-bit integers or put in a grid dimension fits:
/// T, d_in, d_out, R and one value's gradient block in i32; ceil(d / [`WIDE_COLS`]) within the
/// 65535 limit of grid y.
pub fn check_limits(op: &'static str, plan: &BatchPlan, d_in: usize, d_out: usize) -> Result<()> {
    check_types(op, plan)?;
    let r = plan.total_rank();
    let max_rank = plan.types().iter().map(|t| t.rank).max().unwrap_or(0);
    let sizes = [
        ("tokens T", plan.num_tokens()),
        ("d_in", d_in),
        ("d_out", d_out),
        ("total rank R", r),
        (
            "one value's dA block (rank x d_in)",
            max_rank.saturating_mul(d_in),
        ),
        (
            "one value's dB block (d_out x rank)",
            d_out.saturating_mul(max_rank),
        ),
    ];
    for (what, n) in sizes {
        if n > i32::MAX as usize {
            return Err(KernelError::Invalid {
                op,
                message: format!("{what} is {n}; the CUDA kernels index it with i32"),
            });
        }
    }
    let grids = [
        ("d_in", d_in.div_ceil(WIDE_COLS)),
        ("d_out", d_out.div_ceil(WIDE_COLS)),
    ];
    for (what, blocks) in grids {
        if blocks > MAX_GRID_YZ {
            return Err(KernelError::Invalid {
                op,
                message: format!(
                    "{what} needs {blocks} blocks in one grid dimension; CUDA allows {MAX_GRID_YZ}"
                ),
            });
        }
    }
    Ok(())
}

/// Token tiles of at most `tile_m` tokens that never cross a segment, in token order, as the
/// kernels read them: `[segment, start, end]` triples (`struct FlixTile`). Zero-length segments
/// get none. Independent of the plan's own tile size: the kernels' tile height is fixed.
pub fn tiles(segment_starts: &[i32], tile_m: usize) -> Vec<u32> {
    let mut out = Vec::new();
    for (s, w) in segment_starts.windows(2).enumerate() {
        let (start, end) = (w[0] as usize, w[1] as usize);
        let mut t = start;
        while t < end {
            let e = (t + tile_m).min(end);
            out.extend_from_slice(&[s as u32, t as u32, e as u32]);
            t = e;
        }
    }
    out
}

/// How shrink and dH split their long dimension `d`: `nsplit` ranges of `split_len` elements
/// (a multiple of [`NARROW_STEP`]), none empty, covering `0..d`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Split {
    pub nsplit: usize,
    pub split_len: usize,
}

/// [`TARGET_BLOCKS`], or the value of `FLIX_CUDA_TARGET_BLOCKS` when set (to tune it on a GPU
/// without a rebuild, and for the GPU tests to run shrink/dH unsplit on small batches).
pub fn target_blocks() -> usize {
    std::env::var("FLIX_CUDA_TARGET_BLOCKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(TARGET_BLOCKS)
}

/// Splits `d` so that `blocks` blocks (tiles x column blocks) times the split reach about
/// `target` blocks, each split at least one [`NARROW_STEP`] long.
pub fn split_long_dim(d: usize, blocks: usize, target: usize) -> Split {
    let steps = d.div_ceil(NARROW_STEP).max(1);
    let wanted = target
        .div_ceil(blocks.max(1))
        .clamp(1, steps.min(MAX_GRID_YZ));
    let split_len = steps.div_ceil(wanted) * NARROW_STEP;
    let nsplit = d.div_ceil(split_len).max(1);
    Split { nsplit, split_len }
}

/// The workspace budget of the gradient partials: [`PARTIAL_BUDGET_BYTES`], or the value of
/// `FLIX_CUDA_PARTIAL_BUDGET_BYTES` when set (the GPU tests use it to make small batches run in
/// several groups of runs).
pub fn partial_budget() -> usize {
    std::env::var("FLIX_CUDA_PARTIAL_BUDGET_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(PARTIAL_BUDGET_BYTES)
}

/// Where the weight-gradient kernels write their in-block sums (`struct FlixFlush` and the CSR
/// the reduce reads). Tiles are grouped in runs of [`RUN_TILES`] consecutive tiles (a run may
/// cross segments; a long segment spans several runs), one block per run. Within a run, a
/// type's stretch is a maximal sequence of consecutive tiles with the same value of that type;
/// the block sums each stretch in registers and flushes it once, at the stretch's last tile:
/// - dropped when the type is absent there;
/// - added straight into the value's gradient when it is the value's only stretch in the whole
///   batch ("direct": the block is then the only writer of those gradient elements, so the
///   result is still deterministic), which spares the partial slot and the reduce;
/// - otherwise written to a partial slot, numbered in tile order, which holds the columns of
///   every such type whose stretch ends at its tile; the reduce adds each value's slots.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunFlushes {
    /// Per tile `[slot, ends, direct]`: the tile's partial slot (-1 when no stretch ends there
    /// into a slot), the bit mask of the types whose stretch ends there, and the bit mask of
    /// those whose stretch goes straight into the gradient.
    pub per_tile: Vec<i32>,
    /// Runs + 1 offsets: the slots of run q are `run_start[q]..run_start[q + 1]`.
    pub run_start: Vec<usize>,
    /// CSR over global value ids (`value_base[k] + v`): each value's slots, ascending (none for
    /// a value with a single, direct, stretch).
    pub value_ptr: Vec<i32>,
    pub value_slots: Vec<i32>,
}

/// Ints per tile in [`RunFlushes::per_tile`] (`struct FlixFlush`).
pub const FLUSH_INTS: usize = 3;

impl RunFlushes {
    pub fn num_runs(&self) -> usize {
        self.run_start.len().saturating_sub(1)
    }
}

/// The flush plan of `tiles` (as [`tiles`] makes them) for a plan's `slots` (S x K, -1 absent)
/// and `value_base` (K + 1 offsets of the global value numbering).
pub fn run_flushes(
    slots: &[i32],
    num_types: usize,
    value_base: &[usize],
    tiles: &[u32],
) -> RunFlushes {
    let num_tiles = tiles.len() / 3;
    let value = |i: usize, k: usize| slots[tiles[3 * i] as usize * num_types + k];
    let run_end = |i: usize| ((i / RUN_TILES + 1) * RUN_TILES).min(num_tiles);
    let stretch_ends = |i: usize, k: usize| i + 1 == run_end(i) || value(i + 1, k) != value(i, k);
    let global = |i: usize, k: usize| {
        let v = value(i, k);
        (v >= 0).then(|| value_base[k] + v as usize)
    };

    // Stretches per value over the whole batch: a value with one goes straight to its gradient.
    let num_values = value_base.last().copied().unwrap_or(0);
    let mut stretches = vec![0usize; num_values];
    for i in 0..num_tiles {
        for k in 0..num_types {
            if let (true, Some(g)) = (stretch_ends(i, k), global(i, k)) {
                stretches[g] += 1;
            }
        }
    }

    let mut lists = vec![Vec::new(); num_values];
    let mut per_tile = vec![0i32; FLUSH_INTS * num_tiles];
    let mut run_start = vec![0usize];
    let mut next_slot = 0usize;
    for i in 0..num_tiles {
        let (mut ends, mut direct, mut into_slot) = (0i32, 0i32, false);
        for k in (0..num_types).filter(|&k| stretch_ends(i, k)) {
            ends |= 1 << k;
            match global(i, k) {
                Some(g) if stretches[g] == 1 => direct |= 1 << k,
                Some(g) => {
                    lists[g].push(next_slot as i32);
                    into_slot = true;
                }
                None => {}
            }
        }
        let tile = &mut per_tile[FLUSH_INTS * i..FLUSH_INTS * (i + 1)];
        tile.copy_from_slice(&[if into_slot { next_slot as i32 } else { -1 }, ends, direct]);
        next_slot += usize::from(into_slot);
        if i + 1 == run_end(i) {
            run_start.push(next_slot);
        }
    }
    let mut value_ptr = vec![0i32];
    let mut value_slots = Vec::new();
    for list in lists {
        value_slots.extend(list);
        value_ptr.push(value_slots.len() as i32);
    }
    RunFlushes {
        per_tile,
        run_start,
        value_ptr,
        value_slots,
    }
}

/// Contiguous groups of runs whose partial slots (`per_slot_bytes` each) fit in `budget` bytes;
/// at least one run per group. Depends only on the plan, the shapes and the budget, so the order
/// of the gradient sums is fixed.
pub fn run_groups(run_start: &[usize], per_slot_bytes: usize, budget: usize) -> Vec<Range<usize>> {
    let runs = run_start.len().saturating_sub(1);
    let fits = |q0: usize, q1: usize| {
        (run_start[q1] - run_start[q0]).saturating_mul(per_slot_bytes) <= budget
    };
    let mut groups = Vec::new();
    let mut q0 = 0;
    while q0 < runs {
        let mut q1 = q0 + 1;
        while q1 < runs && fits(q0, q1 + 1) {
            q1 += 1;
        }
        groups.push(q0..q1);
        q0 = q1;
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use flix_core::plan::{SegmentSpec, TypeShape};
    use std::mem::{offset_of, size_of};

    #[test]
    fn param_struct_has_the_layout_of_the_c_struct() {
        // struct FlixTypes: 8 + 8 pointers, 8 floats, 8 ints, 9 ints, 2 ints, padded to 8.
        assert_eq!(offset_of!(FlixTypesParam, a), 0);
        assert_eq!(offset_of!(FlixTypesParam, b), 64);
        assert_eq!(offset_of!(FlixTypesParam, scale), 128);
        assert_eq!(offset_of!(FlixTypesParam, rank), 160);
        assert_eq!(offset_of!(FlixTypesParam, col_off), 192);
        assert_eq!(offset_of!(FlixTypesParam, num_types), 228);
        assert_eq!(offset_of!(FlixTypesParam, total_rank), 232);
        assert_eq!(size_of::<FlixTypesParam>(), 240);
        assert_eq!(std::mem::align_of::<FlixTypesParam>(), 8);
        // struct FlixGrads: 8 pointers.
        assert_eq!(size_of::<FlixGradsParam>(), 64);
        assert_eq!(std::mem::align_of::<FlixGradsParam>(), 8);
    }

    #[test]
    fn kernel_constants_match_the_cuda_header() {
        let header = kernels_cu::FLIX_FORWARD.code;
        for (name, value) in [
            ("FLIX_MAX_TYPES", MAX_TYPES),
            ("FLIX_TILE_M", TILE_M),
            ("FLIX_THREADS", THREADS as usize),
        ] {
            assert!(
                header.contains(&format!("#define {name} {value}\n")),
                "{name} is not {value} in flix_common.cuh"
            );
        }
        assert!(
            header.contains(&format!("#define FLIX_RUN_TILES {RUN_TILES}\n")),
            "FLIX_RUN_TILES is not {RUN_TILES} in flix_common.cuh"
        );
        let narrow = "constexpr int M = FLIX_TILE_M, NC = 32, KC = 64;";
        let wide = "constexpr int M = FLIX_TILE_M, NB = 256, KC = 32;";
        let runs = "constexpr int M = FLIX_TILE_M, NC = 32, KC = 64, RT = FLIX_RUN_TILES;";
        assert_eq!((NARROW_COLS, NARROW_STEP, WIDE_COLS), (32, 64, 256));
        for line in [narrow, wide, runs] {
            assert!(header.contains(line), "flix_common.cuh lost `{line}`");
        }
    }

    fn plan(ranks: &[usize], lens: &[usize]) -> BatchPlan {
        let types: Vec<_> = ranks
            .iter()
            .map(|&rank| TypeShape {
                rank,
                num_values: 3,
            })
            .collect();
        let segs: Vec<_> = lens
            .iter()
            .enumerate()
            .map(|(i, &len)| SegmentSpec {
                len,
                slots: vec![(i % 4) as i32 - 1; ranks.len()],
            })
            .collect();
        BatchPlan::new(&types, &segs).unwrap()
    }

    #[test]
    fn params_follow_the_plan() {
        let p = plan(&[4, 1, 7], &[3, 0, 5]);
        let param = FlixTypesParam::new("test", &p, &[0.5, 2.0, 1.0]).unwrap();
        assert_eq!(param.num_types, 3);
        assert_eq!(param.total_rank, 12);
        assert_eq!(&param.rank[..3], &[4, 1, 7]);
        assert_eq!(&param.col_off[..4], &[0, 4, 5, 12]);
        assert_eq!(&param.scale[..3], &[0.5, 2.0, 1.0]);
        let err = FlixTypesParam::new("test", &p, &[1.0]).unwrap_err();
        assert!(err.to_string().contains("1 scales for 3"), "{err}");
    }

    #[test]
    fn more_than_eight_types_is_rejected_before_launch() {
        let p = plan(&[1; 9], &[2]);
        let err = check_limits("flix::shrink", &p, 8, 8)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("9 feature types") && err.contains("at most 8"),
            "{err}"
        );
        assert!(FlixTypesParam::new("flix::shrink", &p, &[1.0; 9]).is_err());
        assert!(check_limits("flix::shrink", &plan(&[1; 8], &[2]), 8, 8).is_ok());
    }

    #[test]
    fn widths_beyond_the_grid_or_i32_are_rejected() {
        let p = plan(&[2], &[2]);
        let err = check_limits("flix::expand", &p, 8, WIDE_COLS * 65_536)
            .unwrap_err()
            .to_string();
        assert!(err.contains("d_out") && err.contains("65535"), "{err}");
        let err = check_limits("flix::expand", &p, 1 << 31, 8)
            .unwrap_err()
            .to_string();
        assert!(err.contains("d_in is 2147483648"), "{err}");
    }

    #[test]
    fn tiles_cover_every_token_once_and_never_cross_a_segment() {
        let starts = [0, 1, 1, 130, 194, 300];
        let t = tiles(&starts, 64);
        let mut next = 0u32;
        for tile in t.chunks(3) {
            let (s, a, b) = (tile[0] as usize, tile[1], tile[2]);
            assert_eq!(a, next, "tiles are in token order with no gap");
            assert!(b > a && b - a <= 64);
            assert!(starts[s] as u32 <= a && b <= starts[s + 1] as u32);
            next = b;
        }
        assert_eq!(next, 300);
        assert!(
            t.chunks(3).all(|tile| tile[0] != 1),
            "empty segment has no tile"
        );
        assert!(tiles(&[0], 64).is_empty());
    }

    #[test]
    fn splits_cover_the_long_dimension_with_no_empty_split() {
        for d in [0, 1, 63, 64, 65, 1000, 4096, 11008] {
            for blocks in [1, 7, 128, 264, 10_000] {
                let s = split_long_dim(d, blocks, TARGET_BLOCKS);
                assert!(s.nsplit >= 1 && s.split_len.is_multiple_of(NARROW_STEP));
                assert!(s.nsplit * s.split_len >= d, "d={d} blocks={blocks} {s:?}");
                assert!(
                    d == 0 || (s.nsplit - 1) * s.split_len < d,
                    "last split is empty: d={d} blocks={blocks} {s:?}"
                );
                if blocks >= TARGET_BLOCKS {
                    assert_eq!(s.nsplit, 1, "enough blocks: no split");
                }
            }
        }
        assert!(split_long_dim(4096, 8, TARGET_BLOCKS).nsplit > 1);
        assert_eq!(
            split_long_dim(4096, 8, 1).nsplit,
            1,
            "target 1: never split"
        );
    }

    /// Checks a flush plan against its definition, tile by tile: every tile of a run whose
    /// segment uses value v of type k is summed into exactly one flush of v, the one at the end
    /// of its stretch (the next tiles of the run with the same value); that flush is direct when
    /// it is v's only stretch in the batch, and otherwise one of v's slots, which are exactly
    /// those stretch ends, ascending.
    fn check_flushes(slots: &[i32], k_types: usize, value_base: &[usize], tiles: &[u32]) {
        let f = run_flushes(slots, k_types, value_base, tiles);
        let n = tiles.len() / 3;
        let value = |i: usize, k: usize| slots[tiles[3 * i] as usize * k_types + k];
        assert_eq!(f.num_runs(), n.div_ceil(RUN_TILES));
        assert_eq!(f.per_tile.len(), FLUSH_INTS * n);
        // Stretch ends per value, by brute force.
        let mut ends_of: Vec<Vec<usize>> = vec![Vec::new(); value_base[k_types]];
        for i in 0..n {
            let run_end = (i / RUN_TILES * RUN_TILES + RUN_TILES).min(n);
            for k in 0..k_types {
                let v = value(i, k);
                if v >= 0 && (i + 1 == run_end || value(i + 1, k) != v) {
                    ends_of[value_base[k] + v as usize].push(i);
                }
            }
        }
        let mut want: Vec<Vec<i32>> = vec![Vec::new(); value_base[k_types]];
        for i in 0..n {
            let run_end = (i / RUN_TILES * RUN_TILES + RUN_TILES).min(n);
            let (slot, ends, direct) = (
                f.per_tile[FLUSH_INTS * i],
                f.per_tile[FLUSH_INTS * i + 1],
                f.per_tile[FLUSH_INTS * i + 2],
            );
            let mut any_slot = false;
            for k in 0..k_types {
                let v = value(i, k);
                let stretch_ends = i + 1 == run_end || value(i + 1, k) != v;
                assert_eq!((ends >> k) & 1 == 1, stretch_ends, "tile {i} type {k}");
                let only = v >= 0 && ends_of[value_base[k] + v as usize].len() == 1;
                assert_eq!(
                    (direct >> k) & 1 == 1,
                    stretch_ends && only,
                    "tile {i} type {k}"
                );
                if stretch_ends && v >= 0 && !only {
                    want[value_base[k] + v as usize].push(slot);
                    any_slot = true;
                }
            }
            assert_eq!(slot >= 0, any_slot, "tile {i}");
            let run = i / RUN_TILES;
            if slot >= 0 {
                let slot = slot as usize;
                assert!(f.run_start[run] <= slot && slot < f.run_start[run + 1]);
            }
        }
        let got: Vec<Vec<i32>> = f
            .value_ptr
            .windows(2)
            .map(|w| f.value_slots[w[0] as usize..w[1] as usize].to_vec())
            .collect();
        assert_eq!(got, want);
        assert!(got.iter().all(|l| l.windows(2).all(|w| w[0] < w[1])));
        let used: std::collections::BTreeSet<i32> = f
            .per_tile
            .chunks(FLUSH_INTS)
            .map(|p| p[0])
            .filter(|&s| s >= 0)
            .collect();
        assert_eq!(*f.run_start.last().unwrap(), used.len());
    }

    #[test]
    fn flushes_write_each_stretch_once_per_run() {
        // Two types; segments of 130 (3 tiles: crosses a run), 1, 0 (no tile) and 64 tokens.
        let starts = [0, 130, 131, 131, 195];
        let slots = [0, 1, 0, -1, 2, 2, 2, 1];
        let value_base = [0, 3, 6];
        let t = tiles(&starts, 64);
        assert_eq!(t.len() / 3, 5);
        let f = run_flushes(&slots, 2, &value_base, &t);
        // Runs: tiles {0, 1} (segment 0), {2 (segment 0), 3 (segment 1)}, {4 (segment 3)}.
        // Tile 0: nothing ends. Tile 1: both end (run end) -> slot 0. Tile 2: type 0 keeps
        // value 0 into tile 3, type 1 ends (1 -> absent) -> slot 1. Tile 3: both end; type 0's
        // value 0 -> slot 2, type 1 absent. Tile 4: both end; type 0's value 2 has no other
        // stretch (direct), type 1's value 1 -> slot 3.
        // Value ids: type 0's value 0 is 0, type 1's value 1 is 3 + 1 = 4.
        assert_eq!(
            f.per_tile,
            [-1, 0, 0, 0, 0b11, 0, 1, 0b10, 0, 2, 0b11, 0, 3, 0b11, 0b01]
        );
        assert_eq!(f.run_start, [0, 1, 3, 4]);
        assert_eq!(f.value_ptr, [0, 2, 2, 2, 2, 5, 5]);
        assert_eq!(f.value_slots, [0, 2, 0, 1, 3]);
        check_flushes(&slots, 2, &value_base, &t);
        assert_eq!(
            run_flushes(&[], 1, &[0, 0], &[]).per_tile,
            Vec::<i32>::new()
        );
    }

    #[test]
    fn flushes_match_their_definition_on_random_plans() {
        let mut state = 0x2545f4914f6cdd1du64;
        let mut next = |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        for _ in 0..200 {
            let k_types = 1 + next(8) as usize;
            let num_values: Vec<usize> = (0..k_types).map(|_| 1 + next(3) as usize).collect();
            let mut value_base = vec![0];
            for v in &num_values {
                value_base.push(value_base.last().unwrap() + v);
            }
            let segments = next(12) as usize;
            let mut starts = vec![0i32];
            let mut slots = Vec::new();
            for _ in 0..segments {
                let len = [0, 1, 63, 64, 65, 130, 200][next(7) as usize];
                starts.push(starts.last().unwrap() + len);
                for &nv in &num_values {
                    slots.push(next(nv as u64 + 1) as i32 - 1);
                }
            }
            check_flushes(&slots, k_types, &value_base, &tiles(&starts, TILE_M));
        }
    }

    #[test]
    fn run_groups_cover_all_runs_within_budget() {
        let run_start = [0, 2, 3, 3, 7, 8];
        // Runs 0..3 hold 3 slots (30 bytes: fits), 3..5 would hold 5.
        assert_eq!(run_groups(&run_start, 10, 30), vec![0..3, 3..4, 4..5]);
        assert_eq!(run_groups(&run_start, 1, usize::MAX), vec![0..5]);
        assert_eq!(
            run_groups(&run_start, 100, 1),
            vec![0..1, 1..2, 2..3, 3..4, 4..5],
            "at least one run per group"
        );
        assert!(run_groups(&[0], 8, 64).is_empty());
        assert!(run_groups(&[], 8, 64).is_empty());
    }
}
