//! Property tests of the batch plan against plain-loop recomputations: tiles cover every token
//! exactly once and stay inside their segment, the per-(type, value) segment lists match the slot
//! arrays, offsets are prefix sums; and every kind of bad input gives its own error.
//!
//! The overflow cases use huge segment lengths without allocating them: `BatchPlan::new` stores
//! per segment and per tile, never per token, and checks the running total before it makes the
//! tiles of a segment.

use flix_core::{BatchPlan, PlanError, SegmentSpec, TypeShape, ABSENT};
use proptest::prelude::*;

/// 1..=4 types with rank 1..=5 and 0..=5 values.
fn types() -> impl Strategy<Value = Vec<TypeShape>> {
    prop::collection::vec(
        (1usize..=5, 0usize..=5).prop_map(|(rank, num_values)| TypeShape { rank, num_values }),
        1..=4,
    )
}

/// Segments of 0..=20 tokens, each with 0..=K slots holding a valid id or ABSENT.
fn segments(types: &[TypeShape]) -> impl Strategy<Value = Vec<SegmentSpec>> {
    let id_ranges: Vec<_> = types.iter().map(|t| ABSENT..t.num_values as i32).collect();
    let k = types.len();
    prop::collection::vec(
        (0usize..=20, id_ranges, 0..=k).prop_map(|(len, ids, n)| SegmentSpec {
            len,
            slots: ids[..n].to_vec(),
        }),
        0..=12,
    )
}

fn valid_batch() -> impl Strategy<Value = (Vec<TypeShape>, Vec<SegmentSpec>, usize)> {
    types().prop_flat_map(|t| {
        let segs = segments(&t);
        (Just(t), segs, 1usize..=8)
    })
}

/// The slot of `seg` for type `k`, missing trailing slots being absent.
fn slot(seg: &SegmentSpec, k: usize) -> i32 {
    seg.slots.get(k).copied().unwrap_or(ABSENT)
}

proptest! {
    #[test]
    fn tiles_cover_every_token_once_inside_its_segment((types, segs, tile_size) in valid_batch()) {
        let plan = BatchPlan::with_tile_size_for_tests(&types, &segs, tile_size).unwrap();
        let total: usize = segs.iter().map(|s| s.len).sum();
        prop_assert_eq!(plan.num_tokens(), total);
        prop_assert_eq!(plan.num_segments(), segs.len());
        prop_assert_eq!(plan.tile_size(), tile_size);

        // Segment starts are the prefix sums of the lengths.
        let mut start = 0usize;
        for (s, seg) in segs.iter().enumerate() {
            prop_assert_eq!(plan.segment_range(s), start..start + seg.len);
            start += seg.len;
        }

        let mut covered = vec![0u32; total];
        for tile in plan.tiles() {
            let range = plan.segment_range(tile.segment as usize);
            let (a, b) = (tile.start as usize, tile.end as usize);
            prop_assert!(a < b, "empty tile {:?}", tile);
            prop_assert!(b - a <= tile_size, "tile {:?} longer than {}", tile, tile_size);
            prop_assert!(range.start <= a && b <= range.end, "tile {:?} leaves {:?}", tile, range);
            for c in &mut covered[a..b] {
                *c += 1;
            }
        }
        prop_assert!(covered.iter().all(|&c| c == 1), "coverage {:?}", covered);
    }

    #[test]
    fn offsets_slots_and_users_match_a_plain_recount((types, segs, tile_size) in valid_batch()) {
        let plan = BatchPlan::with_tile_size_for_tests(&types, &segs, tile_size).unwrap();
        let k_types = types.len();
        prop_assert_eq!(plan.types(), &types[..]);
        prop_assert_eq!(plan.num_types(), k_types);

        let (mut col, mut base) = (0usize, 0usize);
        for (k, t) in types.iter().enumerate() {
            prop_assert_eq!(plan.col_offsets()[k], col);
            prop_assert_eq!(plan.value_base()[k], base);
            col += t.rank;
            base += t.num_values;
        }
        prop_assert_eq!(plan.col_offsets()[k_types], col);
        prop_assert_eq!(plan.value_base()[k_types], base);
        prop_assert_eq!(plan.total_rank(), col);

        for (s, seg) in segs.iter().enumerate() {
            let expected: Vec<i32> = (0..k_types).map(|k| slot(seg, k)).collect();
            prop_assert_eq!(plan.segment_slots(s), &expected[..]);
            prop_assert_eq!(&plan.slots()[s * k_types..(s + 1) * k_types], &expected[..]);
        }

        // Users of each (type, value): the non-empty segments whose slot holds it, ascending.
        prop_assert_eq!(plan.users_ptr().len(), base + 1);
        prop_assert_eq!(plan.users_ptr()[0], 0);
        let mut total_users = 0;
        for (k, t) in types.iter().enumerate() {
            for v in 0..t.num_values {
                let mut expected = Vec::new();
                for (s, seg) in segs.iter().enumerate() {
                    if seg.len > 0 && slot(seg, k) == v as i32 {
                        expected.push(s as i32);
                    }
                }
                prop_assert_eq!(plan.users_of(k, v), &expected[..], "type {} value {}", k, v);
                let g = plan.value_base()[k] + v;
                prop_assert_eq!(
                    plan.users_ptr()[g + 1] - plan.users_ptr()[g],
                    expected.len() as i32
                );
                total_users += expected.len();
            }
        }
        prop_assert_eq!(plan.users().len(), total_users);
    }

    #[test]
    fn an_out_of_range_id_names_its_example_and_type(
        (types, mut segs, _) in valid_batch(),
        pick in any::<prop::sample::Index>(),
        which in any::<prop::sample::Index>(),
        too_big in 0i32..1000,
        negative in i32::MIN..ABSENT,
        use_negative in any::<bool>(),
    ) {
        prop_assume!(!segs.is_empty());
        let example = pick.index(segs.len());
        let type_index = which.index(types.len());
        let id = if use_negative { negative } else { types[type_index].num_values as i32 + too_big };
        let seg = &mut segs[example];
        seg.slots.resize(types.len(), ABSENT);
        seg.slots[type_index] = id;
        let err = BatchPlan::new(&types, &segs).unwrap_err();
        prop_assert_eq!(&err, &PlanError::ValueOutOfRange {
            example,
            type_index,
            id,
            num_values: types[type_index].num_values,
        });
        let named = format!("example {}", example);
        prop_assert!(err.to_string().contains(&named), "{}", err);
    }

    #[test]
    fn more_slots_than_types_names_the_example(
        (types, mut segs, _) in valid_batch(),
        pick in any::<prop::sample::Index>(),
        extra in 1usize..3,
    ) {
        prop_assume!(!segs.is_empty());
        let example = pick.index(segs.len());
        segs[example].slots = vec![ABSENT; types.len() + extra];
        prop_assert_eq!(
            BatchPlan::new(&types, &segs).unwrap_err(),
            PlanError::TooManySlots { example, found: types.len() + extra, types: types.len() }
        );
    }

    #[test]
    fn a_rank_zero_type_is_named(mut types in types(), which in any::<prop::sample::Index>()) {
        let type_index = which.index(types.len());
        types[type_index].rank = 0;
        let first = types.iter().position(|t| t.rank == 0).unwrap();
        prop_assert_eq!(
            BatchPlan::new(&types, &[]).unwrap_err(),
            PlanError::ZeroRank { type_index: first }
        );
    }

    #[test]
    fn more_than_i32_max_tokens_is_an_error_naming_the_example(
        small in prop::collection::vec(0usize..100, 0..5),
        huge in (i32::MAX as usize + 1)..=usize::MAX,
        edge in 0u8..3,
        after in 0usize..3,
    ) {
        // `small` then one segment that takes the total past i32::MAX, then a few more: the error
        // names the first example past the limit. The edges: just one token over, and a length of
        // usize::MAX (whose sum with the prefix overflows u64 too).
        let types = [TypeShape { rank: 1, num_values: 1 }];
        let mut segs: Vec<SegmentSpec> =
            small.iter().map(|&len| SegmentSpec { len, slots: vec![0] }).collect();
        let prefix: usize = small.iter().sum();
        let len = match edge {
            0 => i32::MAX as usize + 1 - prefix,
            1 => usize::MAX,
            _ => huge,
        };
        segs.push(SegmentSpec { len, slots: vec![0] });
        segs.extend((0..after).map(|_| SegmentSpec { len: 1, slots: vec![] }));
        let err = BatchPlan::with_tile_size_for_tests(&types, &segs, 1).unwrap_err();
        let example = small.len();
        prop_assert!(
            matches!(err, PlanError::TooManyTokens { example: e, total, max }
                if e == example && total > i32::MAX as u64 && max == i32::MAX),
            "{:?}", err
        );
        let named = format!("example {}", example);
        prop_assert!(err.to_string().contains(&named), "{}", err);
    }
}

#[test]
fn exactly_i32_max_tokens_is_allowed() {
    // Two segments summing to i32::MAX; large tiles keep the tile list small (2^11 tiles).
    let types = [TypeShape {
        rank: 2,
        num_values: 1,
    }];
    let first = 1usize << 30;
    let segs = [
        SegmentSpec {
            len: first,
            slots: vec![0],
        },
        SegmentSpec {
            len: i32::MAX as usize - first,
            slots: vec![],
        },
    ];
    let plan = BatchPlan::with_tile_size_for_tests(&types, &segs, 1 << 20).unwrap();
    assert_eq!(plan.num_tokens(), i32::MAX as usize);
    assert_eq!(plan.tiles().len(), 1024 + 1024);
    assert_eq!(plan.users_of(0, 0), [0]);
}

#[test]
fn structural_errors() {
    let one = [TypeShape {
        rank: 1,
        num_values: 1,
    }];
    assert_eq!(BatchPlan::new(&[], &[]).unwrap_err(), PlanError::NoTypes);
    assert_eq!(
        BatchPlan::with_tile_size_for_tests(&one, &[], 0).unwrap_err(),
        PlanError::ZeroTileSize
    );
    let wide = [
        TypeShape {
            rank: i32::MAX as usize,
            num_values: 1,
        },
        TypeShape {
            rank: 1,
            num_values: 1,
        },
    ];
    assert_eq!(
        BatchPlan::new(&wide, &[]).unwrap_err(),
        PlanError::RankOverflow {
            total: i32::MAX as u64 + 1
        }
    );
}

#[test]
fn zero_length_segments_get_no_tile_and_use_nothing() {
    let types = [TypeShape {
        rank: 1,
        num_values: 2,
    }];
    let segs = [
        SegmentSpec {
            len: 0,
            slots: vec![1],
        },
        SegmentSpec {
            len: 3,
            slots: vec![1],
        },
        SegmentSpec {
            len: 0,
            slots: vec![0],
        },
    ];
    let plan = BatchPlan::with_tile_size_for_tests(&types, &segs, 2).unwrap();
    assert_eq!(plan.users_of(0, 1), [1]);
    assert!(plan.users_of(0, 0).is_empty());
    assert!(plan.tiles().iter().all(|t| t.segment == 1));
    assert_eq!(plan.tiles().len(), 2);
    assert_eq!(plan.segment_range(2), 3..3);
}
