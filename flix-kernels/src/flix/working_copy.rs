//! The bf16 working copy of a layer's adapters (DESIGN §4): the tensor-core kernels read bf16
//! adapter rows, 16 bytes (8 values) per asynchronous copy, from a copy of the f32 master tensors
//! that [`LayerAdapters`] keeps next to them. The copy can never be stale: it records the
//! [`Tensor::stamp`] of the master it was made from, and the launchers refresh it with the cast
//! op whenever that stamp no longer matches (first use, or the master changed). The optimizer
//! writes the copy in the same pass as the update ([`LayerAdapters::optimizer_tensors_mut`],
//! then [`LayerAdapters::copy_written_by_optimizer`]), so a training step pays no separate cast;
//! a forgotten refresh costs time, never correctness.

use std::sync::{Mutex, MutexGuard, PoisonError};

use super::LayerAdapters;
use crate::error::Result;
use crate::ops::cast;
use crate::{DType, Tensor};

/// A copy of one master tensor in another dtype, and the stamps that say whether it is current.
pub(crate) struct WorkingCopy {
    pub(crate) tensor: Tensor,
    /// The master's stamp when the copy last matched it.
    master_stamp: u64,
    /// The copy's own stamp then: a copy written since (by anything but a refresh or a recorded
    /// optimizer step) is no longer trusted.
    copy_stamp: u64,
}

impl WorkingCopy {
    /// Whether the copy holds `master`'s current values (rounded to its dtype).
    pub(crate) fn is_current_for(&self, master: &Tensor, dtype: DType) -> bool {
        self.master_stamp == master.stamp()
            && self.copy_stamp == self.tensor.stamp()
            && self.tensor.dtype() == dtype
            && self.tensor.shape() == master.shape()
            && self.tensor.device().same(master.device())
    }

    /// Records the copy as current when it was written after the master last changed: what
    /// the optimizer's multi-tensor step does, which writes the master and then rounds it into
    /// the copy in one launch (its launcher takes the copy's storage after the master's). A copy
    /// not written since the last record, or written before the master's last change, keeps its
    /// old record (and is refreshed at its next use if that no longer matches).
    fn record_written_after(&mut self, master: &Tensor) {
        let copy = self.tensor.stamp();
        if copy != self.copy_stamp && copy > master.stamp() {
            self.master_stamp = master.stamp();
            self.copy_stamp = copy;
        }
    }
}

/// The working copies of one feature type's A and B (absent until first needed).
#[derive(Default)]
pub(crate) struct TypeCopies {
    pub(crate) a: Option<WorkingCopy>,
    pub(crate) b: Option<WorkingCopy>,
}

/// The per-type copies behind [`LayerAdapters`]' lock. Launchers take `&LayerAdapters` (and
/// models are shared across the server's threads), so the refresh happens under a mutex.
#[derive(Default)]
pub(crate) struct AdapterCopies(Mutex<Vec<TypeCopies>>);

/// The working copies of every type, current and locked for the duration of the launches that
/// read them.
pub(crate) type CurrentCopies<'a> = MutexGuard<'a, Vec<TypeCopies>>;

/// One type's adapters as an optimizer step takes them: the f32 masters and, where the layer
/// keeps one, each master's working copy (for the step to round the update into).
pub struct OptimizerTensors<'a> {
    pub a: &'a mut Tensor,
    pub a_working: Option<&'a mut Tensor>,
    pub b: &'a mut Tensor,
    pub b_working: Option<&'a mut Tensor>,
}

/// Makes `slot` hold `master` in `dtype`: kept when current, else written by the cast op (into
/// the old copy when it has the right dtype, shape and device, else into a new one).
fn refresh(slot: &mut Option<WorkingCopy>, master: &Tensor, dtype: DType) -> Result<()> {
    if slot
        .as_ref()
        .is_some_and(|c| c.is_current_for(master, dtype))
    {
        return Ok(());
    }
    let reusable = slot.take().filter(|c| {
        c.tensor.dtype() == dtype
            && c.tensor.shape() == master.shape()
            && c.tensor.device().same(master.device())
    });
    let mut tensor = match reusable {
        Some(c) => c.tensor,
        None => Tensor::zeros(master.device(), dtype, master.shape())?,
    };
    cast(master, &mut tensor)?;
    *slot = Some(WorkingCopy {
        master_stamp: master.stamp(),
        copy_stamp: tensor.stamp(),
        tensor,
    });
    Ok(())
}

impl AdapterCopies {
    /// The lock, whatever a panicking holder left: a copy whose refresh was cut short keeps its
    /// old record, which then no longer matches, so it is refreshed again.
    fn lock(&self) -> MutexGuard<'_, Vec<TypeCopies>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl LayerAdapters {
    /// The adapters of one linear layer, with no working copy yet (the CUDA launchers make one
    /// at the first use with bf16 activations).
    pub fn new(types: Vec<super::TypeAdapter>) -> Self {
        Self {
            types,
            copies: AdapterCopies::default(),
        }
    }

    /// Every type's copies in `dtype`, refreshed where their master changed, locked until the
    /// guard is dropped (the launchers hold it until their launches are queued).
    pub(crate) fn current_copies(&self, dtype: DType) -> Result<CurrentCopies<'_>> {
        let mut copies = self.copies.lock();
        copies.resize_with(self.types.len(), TypeCopies::default);
        for (t, c) in self.types.iter().zip(copies.iter_mut()) {
            refresh(&mut c.a, &t.a, dtype)?;
            refresh(&mut c.b, &t.b, dtype)?;
        }
        Ok(copies)
    }

    /// Per type, (A, B): whether the layer keeps a working copy in `dtype` that matches its
    /// master now, which a launch would then use without a cast.
    pub fn copies_current(&self, dtype: DType) -> Vec<(bool, bool)> {
        let copies = self.copies.lock();
        self.types
            .iter()
            .enumerate()
            .map(|(k, t)| {
                let c = copies.get(k);
                let current = |w: Option<&WorkingCopy>, m: &Tensor| {
                    w.is_some_and(|w| w.is_current_for(m, dtype))
                };
                (
                    current(c.and_then(|c| c.a.as_ref()), &t.a),
                    current(c.and_then(|c| c.b.as_ref()), &t.b),
                )
            })
            .collect()
    }

    /// Every type's f32 masters with their working copies where the layer keeps them, for an
    /// optimizer step that updates each master and rounds it into its copy in the same pass.
    /// Follow the step with [`LayerAdapters::copy_written_by_optimizer`].
    pub fn optimizer_tensors_mut(&mut self) -> Vec<OptimizerTensors<'_>> {
        let copies = self
            .copies
            .0
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        copies.resize_with(self.types.len(), TypeCopies::default);
        self.types
            .iter_mut()
            .zip(copies.iter_mut())
            .map(|(t, c)| OptimizerTensors {
                a: &mut t.a,
                a_working: c.a.as_mut().map(|w| &mut w.tensor),
                b: &mut t.b,
                b_working: c.b.as_mut().map(|w| &mut w.tensor),
            })
            .collect()
    }

    /// Records, after an optimizer step given [`LayerAdapters::optimizer_tensors_mut`], that the
    /// copies it wrote hold the updated masters, so the next launch does not cast them again. A
    /// copy counts as written by the step only if it was written after its master last changed
    /// (the step writes the master, then the copy); any other copy keeps its old record, and is
    /// refreshed at its next use when the master moved on. So a call at the wrong time costs a
    /// cast, never a stale copy.
    pub fn copy_written_by_optimizer(&mut self) {
        let copies = self
            .copies
            .0
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        for (t, c) in self.types.iter().zip(copies.iter_mut()) {
            if let Some(w) = c.a.as_mut() {
                w.record_written_after(&t.a);
            }
            if let Some(w) = c.b.as_mut() {
                w.record_written_after(&t.b);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flix::TypeAdapter;

    // The CPU has no bf16 tensors; the bookkeeping is dtype-independent, so these tests keep f32
    // copies of f32 masters (the cast op copies them) and watch which launches would cast.

    fn layer() -> Result<LayerAdapters> {
        let t = |shape: &[usize], base: f32| {
            let data = (0..shape.iter().product::<usize>())
                .map(|i| base + i as f32)
                .collect();
            Tensor::cpu(shape, data)
        };
        Ok(LayerAdapters::new(vec![
            TypeAdapter {
                scale: 1.0,
                a: t(&[2, 3, 4], 0.0)?,
                b: t(&[2, 5, 3], 100.0)?,
            },
            TypeAdapter {
                scale: 0.5,
                a: t(&[1, 2, 4], 200.0)?,
                b: t(&[1, 5, 2], 300.0)?,
            },
        ]))
    }

    /// The copies' stamps (what changes when a launch casts) and their values.
    fn copies(ad: &LayerAdapters) -> Result<Vec<(u64, Vec<f32>)>> {
        let copies = ad.current_copies(DType::F32)?;
        let mut out = Vec::new();
        for c in copies.iter() {
            for w in [&c.a, &c.b] {
                let w = w.as_ref().expect("current_copies fills every slot");
                out.push((w.tensor.stamp(), w.tensor.to_f32_vec()?));
            }
        }
        Ok(out)
    }

    fn masters(ad: &LayerAdapters) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::new();
        for t in &ad.types {
            out.push(t.a.to_f32_vec()?);
            out.push(t.b.to_f32_vec()?);
        }
        Ok(out)
    }

    #[test]
    fn first_use_makes_the_copy_and_later_uses_reuse_it() -> Result<()> {
        let ad = layer()?;
        assert_eq!(ad.copies_current(DType::F32), vec![(false, false); 2]);
        let first = copies(&ad)?;
        let values: Vec<_> = first.iter().map(|(_, v)| v.clone()).collect();
        assert_eq!(values, masters(&ad)?);
        assert_eq!(ad.copies_current(DType::F32), vec![(true, true); 2]);
        // Unchanged masters: no cast, the same copies.
        assert_eq!(copies(&ad)?, first);
        // A copy in another dtype is not the one asked for.
        assert_eq!(ad.copies_current(DType::BF16), vec![(false, false); 2]);
        Ok(())
    }

    #[test]
    fn a_changed_master_refreshes_its_copy_only() -> Result<()> {
        let mut ad = layer()?;
        let before = copies(&ad)?;
        ad.types[1].b.cpu_data_mut("test")?[3] = -7.0;
        assert_eq!(
            ad.copies_current(DType::F32),
            vec![(true, true), (true, false)]
        );
        let after = copies(&ad)?;
        for i in 0..3 {
            assert_eq!(after[i], before[i], "copy {i} was cast again");
        }
        assert_ne!(
            after[3].0, before[3].0,
            "the changed master's copy kept its stamp"
        );
        assert_eq!(after[3].1[3], -7.0);
        // A replaced master (a new tensor, the same values) is a new stamp too.
        ad.types[0].a = Tensor::cpu(&[2, 3, 4], masters(&ad)?[0].clone())?;
        assert_eq!(ad.copies_current(DType::F32)[0], (false, true));
        let replaced = copies(&ad)?;
        assert_ne!(replaced[0].0, after[0].0);
        assert_eq!(replaced[1], after[1]);
        Ok(())
    }

    #[test]
    fn a_copy_written_after_its_master_is_recorded_as_current() -> Result<()> {
        let mut ad = layer()?;
        copies(&ad)?;
        // An optimizer step: each master, then its copy (rounded from the updated master).
        for t in ad.optimizer_tensors_mut() {
            let (a, b) = (t.a, t.b);
            for (master, working) in [(a, t.a_working), (b, t.b_working)] {
                let working = working.expect("the layer keeps a copy after a launch");
                master
                    .cpu_data_mut("step")?
                    .iter_mut()
                    .for_each(|v| *v *= 2.0);
                let updated = master.to_f32_vec()?;
                working.cpu_data_mut("step")?.copy_from_slice(&updated);
            }
        }
        assert_eq!(ad.copies_current(DType::F32), vec![(false, false); 2]);
        ad.copy_written_by_optimizer();
        assert_eq!(ad.copies_current(DType::F32), vec![(true, true); 2]);
        let values: Vec<_> = copies(&ad)?.into_iter().map(|(_, v)| v).collect();
        assert_eq!(values, masters(&ad)?);
        Ok(())
    }

    #[test]
    fn a_record_without_a_matching_write_does_not_trust_the_copy() -> Result<()> {
        let mut ad = layer()?;
        copies(&ad)?;
        // The master changed but the step was not given the copy: nothing to record.
        ad.types[0].a.cpu_data_mut("step")?[0] = 42.0;
        ad.copy_written_by_optimizer();
        assert!(!ad.copies_current(DType::F32)[0].0);
        // The copy was written, and the master changed after it: not current either.
        {
            let mut tensors = ad.optimizer_tensors_mut();
            let working = tensors[0].b_working.take().expect("copy");
            working.cpu_data_mut("step")?[0] = 1.0;
            tensors[0].b.cpu_data_mut("step")?[0] = 2.0;
        }
        ad.copy_written_by_optimizer();
        assert_eq!(ad.copies_current(DType::F32)[0], (false, false));
        // The next use casts both again: the copies match the masters.
        let values: Vec<_> = copies(&ad)?.into_iter().map(|(_, v)| v).collect();
        assert_eq!(values, masters(&ad)?);
        Ok(())
    }

    #[test]
    fn layer_adapters_can_be_shared_across_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<LayerAdapters>();
    }
}
