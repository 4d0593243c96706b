//! A packed batch bound to a device: what every op of a forward or backward pass reads about
//! the batch besides its activations, checked once and (on CUDA) uploaded once, so that no layer
//! uploads it again.
//!
//! Tokens of all sequences are packed one after the other; sequence s owns tokens
//! `starts[s]..starts[s + 1]`, and `positions[t]` is token t's position inside its own sequence.
//! A [`DeviceBatch`] holds three parts, each with its host copy (what the CPU paths and the checks
//! read) and, on CUDA, its device copy: the token ids ([`TokenIds`], for the embedding), the
//! positions ([`TokenPositions`], for RoPE) and the sequence starts with the attention kernels'
//! work tiles ([`SegmentStarts`]); plus the targets (host only: the cross-entropy reads them
//! once per pass) and the optional FLix [`DevicePlan`]. Each op takes the part it reads, so a
//! test of one op builds only that part.

use std::sync::Arc;

use cudarc::driver::CudaSlice;
use flix_core::BatchPlan;

use crate::cuda::launch::upload;
use crate::cuda::CudaBackend;
use crate::error::{KernelError, Result};
use crate::flix::DevicePlan;
use crate::ops::cuda::attention::CudaSegments;
use crate::ops::cuda::embedding::CudaTokenIds;
use crate::Device;

/// One part of a batch: its host copy and, on CUDA, its device form `C`, made once when the part
/// is built.
struct Part<H, C> {
    device: Device,
    host: Vec<H>,
    cuda: Option<C>,
}

impl<H: Clone, C> Part<H, C> {
    fn new(
        device: &Device,
        host: &[H],
        upload: impl FnOnce(&Arc<CudaBackend>) -> Result<C>,
    ) -> Result<Self> {
        let cuda = match device {
            Device::Cpu => None,
            Device::Cuda(backend) => Some(upload(backend)?),
        };
        Ok(Self {
            device: device.clone(),
            host: host.to_vec(),
            cuda,
        })
    }

    /// The device form, for an op `op` whose tensors live on `device`.
    fn cuda(&self, op: &'static str, what: &'static str, device: &Device) -> Result<&C> {
        match &self.cuda {
            Some(c) if self.device.same(device) => Ok(c),
            _ => Err(KernelError::WrongDevice {
                op,
                what,
                expected: device.to_string(),
                found: self.device.to_string(),
            }),
        }
    }
}

/// The token ids of a batch, for the embedding and its backward.
pub struct TokenIds(Part<u32, CudaTokenIds>);

impl TokenIds {
    pub fn new(device: &Device, ids: &[u32]) -> Result<Self> {
        Part::new(device, ids, |backend| CudaTokenIds::upload(backend, ids)).map(Self)
    }
    pub fn device(&self) -> &Device {
        &self.0.device
    }
    pub fn host(&self) -> &[u32] {
        &self.0.host
    }
    /// The device copy, for tensors on `device`.
    pub(crate) fn cuda(&self, op: &'static str, device: &Device) -> Result<&CudaTokenIds> {
        self.0.cuda(op, "token ids", device)
    }
}

/// Each token's position inside its own sequence, for RoPE.
pub struct TokenPositions(Part<u32, CudaSlice<u32>>);

impl TokenPositions {
    pub fn new(device: &Device, positions: &[u32]) -> Result<Self> {
        Part::new(device, positions, |backend| upload(backend, positions)).map(Self)
    }
    pub fn device(&self) -> &Device {
        &self.0.device
    }
    pub fn host(&self) -> &[u32] {
        &self.0.host
    }
    pub(crate) fn cuda(&self, op: &'static str, device: &Device) -> Result<&CudaSlice<u32>> {
        self.0.cuda(op, "token positions", device)
    }
}

/// The sequence starts of a batch (S + 1 offsets rising from 0 to the token count), for
/// attention; on CUDA with the attention kernels' work tiles.
pub struct SegmentStarts(Part<usize, CudaSegments>);

impl SegmentStarts {
    /// Checks that `starts` rise from 0 (the ops check the end against their tensors).
    pub fn new(device: &Device, starts: &[usize]) -> Result<Self> {
        let rises = starts.first() == Some(&0) && starts.windows(2).all(|w| w[0] <= w[1]);
        if !rises {
            return Err(KernelError::Invalid {
                op: "SegmentStarts::new",
                message: format!("sequence starts must rise from 0, found {starts:?}"),
            });
        }
        Part::new(device, starts, |backend| {
            CudaSegments::upload(backend, starts)
        })
        .map(Self)
    }
    pub fn device(&self) -> &Device {
        &self.0.device
    }
    pub fn host(&self) -> &[usize] {
        &self.0.host
    }
    pub(crate) fn cuda(&self, op: &'static str, device: &Device) -> Result<&CudaSegments> {
        self.0.cuda(op, "segment starts", device)
    }
}

const OP: &str = "DeviceBatch::new";

/// The host arrays of a packed batch, borrowed for [`DeviceBatch::new`].
#[derive(Clone, Copy, Debug)]
pub struct PackedTokens<'a> {
    pub tokens: &'a [u32],
    /// The token each position must predict, or a negative value where it is not scored.
    pub targets: &'a [i32],
    pub positions: &'a [u32],
    /// S + 1 token offsets, rising from 0 to the token count.
    pub starts: &'a [usize],
}

/// A packed batch on one device. Build it once per batch with [`DeviceBatch::new`] and pass it
/// to every op of the pass.
pub struct DeviceBatch {
    device: Device,
    tokens: TokenIds,
    targets: Vec<i32>,
    positions: TokenPositions,
    starts: SegmentStarts,
    plan: Option<DevicePlan>,
}

impl DeviceBatch {
    /// Checks `packed` (one target and one position per token, starts rising from 0 to the
    /// token count) and `plan` (its segments are the batch's sequences), and binds both to
    /// `device`: on CUDA, everything the kernels read is uploaded here, once.
    pub fn new(device: &Device, packed: PackedTokens<'_>, plan: Option<BatchPlan>) -> Result<Self> {
        let PackedTokens {
            tokens,
            targets,
            positions,
            starts,
        } = packed;
        let t = tokens.len();
        if targets.len() != t || positions.len() != t {
            return Err(KernelError::Invalid {
                op: OP,
                message: format!(
                    "{t} tokens but {} targets and {} positions; every token needs one of each",
                    targets.len(),
                    positions.len()
                ),
            });
        }
        let rises = starts.first() == Some(&0)
            && starts.last() == Some(&t)
            && starts.windows(2).all(|w| w[0] <= w[1]);
        if !rises {
            return Err(KernelError::Invalid {
                op: OP,
                message: format!(
                    "sequence starts must rise from 0 to the token count {t}, found {starts:?}"
                ),
            });
        }
        if let Some(plan) = &plan {
            let same = plan.num_segments() + 1 == starts.len()
                && (0..plan.num_segments())
                    .all(|s| plan.segment_range(s) == (starts[s]..starts[s + 1]));
            if !same {
                return Err(KernelError::Invalid {
                    op: OP,
                    message: format!(
                        "the batch plan's segments {:?} differ from the batch's sequences {starts:?}",
                        plan.segment_starts()
                    ),
                });
            }
        }
        let plan = plan.map(|p| DevicePlan::new(device, p)).transpose()?;
        Ok(Self {
            device: device.clone(),
            tokens: TokenIds::new(device, tokens)?,
            targets: targets.to_vec(),
            positions: TokenPositions::new(device, positions)?,
            starts: SegmentStarts::new(device, starts)?,
            plan,
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }
    /// The token ids on the host.
    pub fn tokens(&self) -> &[u32] {
        self.tokens.host()
    }
    /// The token ids as the embedding reads them.
    pub fn token_ids(&self) -> &TokenIds {
        &self.tokens
    }
    pub fn targets(&self) -> &[i32] {
        &self.targets
    }
    /// The positions on the host.
    pub fn positions(&self) -> &[u32] {
        self.positions.host()
    }
    /// The positions as RoPE reads them.
    pub fn token_positions(&self) -> &TokenPositions {
        &self.positions
    }
    /// S + 1 token offsets on the host: sequence s is `starts[s]..starts[s + 1]`.
    pub fn starts(&self) -> &[usize] {
        self.starts.host()
    }
    /// The sequence starts as attention reads them.
    pub fn segments(&self) -> &SegmentStarts {
        &self.starts
    }
    pub fn num_tokens(&self) -> usize {
        self.tokens().len()
    }
    pub fn num_sequences(&self) -> usize {
        self.starts().len() - 1
    }
    /// The FLix plan, when the batch was built with one (a model with adapters needs it).
    pub fn plan(&self) -> Option<&DevicePlan> {
        self.plan.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use flix_core::{SegmentSpec, TypeShape};

    use super::*;

    fn packed<'a>(
        tokens: &'a [u32],
        positions: &'a [u32],
        starts: &'a [usize],
    ) -> PackedTokens<'a> {
        PackedTokens {
            tokens,
            targets: &[-1, -1, -1][..tokens.len()],
            positions,
            starts,
        }
    }

    #[test]
    fn keeps_the_host_arrays_and_the_plan() {
        let types = [TypeShape {
            rank: 2,
            num_values: 3,
        }];
        let segments = [
            SegmentSpec {
                len: 2,
                slots: vec![1],
            },
            SegmentSpec {
                len: 1,
                slots: vec![],
            },
        ];
        let plan = BatchPlan::new(&types, &segments).unwrap();
        let b = DeviceBatch::new(
            &Device::Cpu,
            packed(&[5, 6, 7], &[0, 1, 0], &[0, 2, 3]),
            Some(plan),
        )
        .unwrap();
        assert_eq!(b.tokens(), [5, 6, 7]);
        assert_eq!(b.positions(), [0, 1, 0]);
        assert_eq!(b.num_sequences(), 2);
        assert_eq!(b.plan().unwrap().plan().segment_slots(0), [1]);
    }

    #[test]
    fn bad_starts_and_a_foreign_plan_are_errors() {
        let err = DeviceBatch::new(&Device::Cpu, packed(&[5, 6], &[0, 1], &[0, 3]), None)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("[0, 3]") && err.contains("token count 2"),
            "{err}"
        );

        let err = DeviceBatch::new(&Device::Cpu, packed(&[5, 6], &[0], &[0, 2]), None)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("1 positions"), "{err}");

        let types = [TypeShape {
            rank: 1,
            num_values: 1,
        }];
        let one_segment = [SegmentSpec {
            len: 2,
            slots: vec![0],
        }];
        let plan = BatchPlan::new(&types, &one_segment).unwrap();
        let err = DeviceBatch::new(
            &Device::Cpu,
            packed(&[5, 6], &[0, 0], &[0, 1, 2]),
            Some(plan),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("differ"), "{err}");
    }

    #[test]
    fn a_part_on_another_device_is_refused_by_the_cuda_paths() {
        let starts = SegmentStarts::new(&Device::Cpu, &[0, 2]).unwrap();
        assert!(starts.cuda("test", &Device::Cpu).is_err());
        let err = SegmentStarts::new(&Device::Cpu, &[1, 2])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("[1, 2]"), "{err}");
    }
}
