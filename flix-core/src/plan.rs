//! The batch plan (DESIGN §3): everything the kernels need to know about a mixed-feature batch,
//! derived once on the host and validated, so that kernels can trust it without bounds checks.
//!
//! Tokens of a batch are packed row-major; example `s` is the contiguous segment
//! `[segment_starts[s], segment_starts[s + 1])`. Each segment has one slot per feature type holding
//! a value id, or [`ABSENT`]. The low-rank activations of a token are laid out as `[T, R]` with
//! `R = Σ_k r_k`; type `k` owns columns `col_offsets[k]..col_offsets[k + 1]`.

use thiserror::Error;

/// Slot value meaning "this example has no value for this type, or it was dropped".
pub const ABSENT: i32 = -1;

/// Tokens per tile of every batch plan: the FLix CUDA kernels' block of rows (`FLIX_TILE_M`);
/// the CPU paths do not depend on it.
pub const TILE_SIZE: usize = 64;

/// What the plan needs to know of one feature type: its rank and how many values it has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TypeShape {
    pub rank: usize,
    pub num_values: usize,
}

/// One example as the plan sees it: its token count and one value id per type.
/// `slots` may be shorter than the number of types; missing trailing slots are absent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentSpec {
    pub len: usize,
    pub slots: Vec<i32>,
}

/// A run of tokens `[start, end)` inside one segment: the unit of GPU work.
/// `#[repr(C)]` so that a slice of tiles can be copied to the device as it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Tile {
    pub segment: u32,
    pub start: u32,
    pub end: u32,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("the plan needs at least one feature type")]
    NoTypes,
    #[error("feature type {type_index} has rank 0; every type needs rank >= 1")]
    ZeroRank { type_index: usize },
    #[error("tile size must be >= 1")]
    ZeroTileSize,
    #[error("example {example}: {found} feature slots but only {types} feature types")]
    TooManySlots {
        example: usize,
        found: usize,
        types: usize,
    },
    #[error("example {example}: value id {id} for feature type {type_index} is out of range (type has {num_values} values, absent is -1)")]
    ValueOutOfRange {
        example: usize,
        type_index: usize,
        id: i32,
        num_values: usize,
    },
    #[error(
        "example {example}: the batch reaches {total} tokens, more than i32 can index ({max})"
    )]
    TooManyTokens {
        example: usize,
        total: u64,
        max: i32,
    },
    #[error("total rank {total} is more than i32 can index")]
    RankOverflow { total: u64 },
}

/// A validated batch plan. Construct with [`BatchPlan::new`]; all fields are read-only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchPlan {
    types: Vec<TypeShape>,
    col_offsets: Vec<usize>,
    value_base: Vec<usize>,
    segment_starts: Vec<i32>,
    slots: Vec<i32>,
    tile_size: usize,
    tiles: Vec<Tile>,
    users_ptr: Vec<i32>,
    users: Vec<i32>,
}

impl BatchPlan {
    /// Validates `segments` against `types` and derives column offsets, tiles of at most
    /// [`TILE_SIZE`] tokens that never cross a segment, and for each (type, value) the segments
    /// that use it. Zero-length segments are allowed: they get no tile and contribute nothing.
    pub fn new(types: &[TypeShape], segments: &[SegmentSpec]) -> Result<Self, PlanError> {
        Self::with_tile_size_for_tests(types, segments, TILE_SIZE)
    }

    /// [`BatchPlan::new`] with tiles of `tile_size` tokens: for tests that exercise the tiling
    /// itself with small batches. Everything else uses [`TILE_SIZE`].
    #[doc(hidden)]
    pub fn with_tile_size_for_tests(
        types: &[TypeShape],
        segments: &[SegmentSpec],
        tile_size: usize,
    ) -> Result<Self, PlanError> {
        if types.is_empty() {
            return Err(PlanError::NoTypes);
        }
        if let Some(type_index) = types.iter().position(|t| t.rank == 0) {
            return Err(PlanError::ZeroRank { type_index });
        }
        if tile_size == 0 {
            return Err(PlanError::ZeroTileSize);
        }
        let num_types = types.len();

        let mut col_offsets = Vec::with_capacity(num_types + 1);
        let mut value_base = Vec::with_capacity(num_types + 1);
        let (mut cols, mut values) = (0usize, 0usize);
        for t in types {
            col_offsets.push(cols);
            value_base.push(values);
            cols += t.rank;
            values += t.num_values;
        }
        col_offsets.push(cols);
        value_base.push(values);
        if cols > i32::MAX as usize {
            return Err(PlanError::RankOverflow { total: cols as u64 });
        }

        let mut segment_starts = Vec::with_capacity(segments.len() + 1);
        let mut slots = Vec::with_capacity(segments.len() * num_types);
        let mut tiles = Vec::new();
        let mut total: u64 = 0;
        segment_starts.push(0);
        for (example, seg) in segments.iter().enumerate() {
            if seg.slots.len() > num_types {
                return Err(PlanError::TooManySlots {
                    example,
                    found: seg.slots.len(),
                    types: num_types,
                });
            }
            for (type_index, shape) in types.iter().enumerate() {
                let id = seg.slots.get(type_index).copied().unwrap_or(ABSENT);
                if id < ABSENT || (id >= 0 && id as usize >= shape.num_values) {
                    return Err(PlanError::ValueOutOfRange {
                        example,
                        type_index,
                        id,
                        num_values: shape.num_values,
                    });
                }
                slots.push(id);
            }
            let start = total;
            // Saturating: a `len` near usize::MAX must give the overflow error, not a panic.
            total = total.saturating_add(seg.len as u64);
            if total > i32::MAX as u64 {
                return Err(PlanError::TooManyTokens {
                    example,
                    total,
                    max: i32::MAX,
                });
            }
            let mut tile_start = start;
            while tile_start < total {
                let tile_end = (tile_start + tile_size as u64).min(total);
                tiles.push(Tile {
                    segment: example as u32,
                    start: tile_start as u32,
                    end: tile_end as u32,
                });
                tile_start = tile_end;
            }
            segment_starts.push(total as i32);
        }

        // CSR of users per global value index g = value_base[k] + v, segments in ascending order.
        // Zero-length segments are left out: they contribute nothing to any gradient.
        let num_global = values;
        let mut counts = vec![0i32; num_global + 1];
        for (s, seg_slots) in slots.chunks(num_types).enumerate() {
            if segment_starts[s + 1] == segment_starts[s] {
                continue;
            }
            for (k, &id) in seg_slots.iter().enumerate() {
                if id >= 0 {
                    counts[value_base[k] + id as usize + 1] += 1;
                }
            }
        }
        let mut users_ptr = counts;
        for g in 0..num_global {
            users_ptr[g + 1] += users_ptr[g];
        }
        let mut fill = users_ptr.clone();
        let mut users = vec![0i32; users_ptr[num_global] as usize];
        for (s, seg_slots) in slots.chunks(num_types).enumerate() {
            if segment_starts[s + 1] == segment_starts[s] {
                continue;
            }
            for (k, &id) in seg_slots.iter().enumerate() {
                if id >= 0 {
                    let g = value_base[k] + id as usize;
                    users[fill[g] as usize] = s as i32;
                    fill[g] += 1;
                }
            }
        }

        Ok(Self {
            types: types.to_vec(),
            col_offsets,
            value_base,
            segment_starts,
            slots,
            tile_size,
            tiles,
            users_ptr,
            users,
        })
    }

    /// The feature types, in slot order.
    pub fn types(&self) -> &[TypeShape] {
        &self.types
    }
    pub fn num_types(&self) -> usize {
        self.types.len()
    }
    pub fn num_segments(&self) -> usize {
        self.segment_starts.len() - 1
    }
    /// T, the number of packed tokens.
    pub fn num_tokens(&self) -> usize {
        *self.segment_starts.last().unwrap_or(&0) as usize
    }
    /// R = Σ_k r_k, the width of the low-rank activations H.
    pub fn total_rank(&self) -> usize {
        self.col_offsets[self.types.len()]
    }
    /// K + 1 offsets: type k owns columns `col_offsets[k]..col_offsets[k + 1]` of H.
    pub fn col_offsets(&self) -> &[usize] {
        &self.col_offsets
    }
    /// K + 1 offsets into the global value numbering: value v of type k is `value_base[k] + v`.
    pub fn value_base(&self) -> &[usize] {
        &self.value_base
    }
    /// S + 1 token offsets: segment s is `segment_starts[s]..segment_starts[s + 1]`.
    pub fn segment_starts(&self) -> &[i32] {
        &self.segment_starts
    }
    /// The token range of segment `s`.
    pub fn segment_range(&self, s: usize) -> std::ops::Range<usize> {
        self.segment_starts[s] as usize..self.segment_starts[s + 1] as usize
    }
    /// S × K value ids, row-major; [`ABSENT`] where a type is absent or dropped.
    pub fn slots(&self) -> &[i32] {
        &self.slots
    }
    /// The K value ids of segment `s`.
    pub fn segment_slots(&self, s: usize) -> &[i32] {
        let k = self.types.len();
        &self.slots[s * k..(s + 1) * k]
    }
    pub fn tile_size(&self) -> usize {
        self.tile_size
    }
    pub fn tiles(&self) -> &[Tile] {
        &self.tiles
    }
    /// CSR row pointers over global value ids (length `value_base[K] + 1`).
    pub fn users_ptr(&self) -> &[i32] {
        &self.users_ptr
    }
    /// CSR column data: segment indices, ascending within each value.
    pub fn users(&self) -> &[i32] {
        &self.users
    }
    /// The non-empty segments that use value `value` of type `type_index`, in ascending order.
    pub fn users_of(&self, type_index: usize, value: usize) -> &[i32] {
        let g = self.value_base[type_index] + value;
        &self.users[self.users_ptr[g] as usize..self.users_ptr[g + 1] as usize]
    }
}
