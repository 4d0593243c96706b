//! Feature sets: the value id of every feature type for one example, in registry type order,
//! [`ABSENT`] where the example has no value. This is the slot vector of a
//! [`crate::SegmentSpec`].
//!
//! Unknown values follow the mode. Training: an error naming file, line, type and value, unless
//! the type may grow, in which case the value gets the next id. Inference: the value becomes absent
//! with a warning, which is how an unseen language is served zero-shot by its task feature alone.

use crate::data::Example;
use crate::error::{CoreError, Result};
use crate::plan::{SegmentSpec, ABSENT};
use crate::registry::{known_list, Registry};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Training,
    Inference,
}

/// One value id per type, in registry type order; [`ABSENT`] (-1) where absent or dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeatureSet {
    pub slots: Vec<i32>,
}

impl FeatureSet {
    /// The number of present features.
    pub fn num_present(&self) -> usize {
        self.slots.iter().filter(|&&id| id != ABSENT).count()
    }

    /// The batch plan's view of this example, with `len` tokens.
    pub fn into_segment(self, len: usize) -> SegmentSpec {
        SegmentSpec {
            len,
            slots: self.slots,
        }
    }
}

impl Registry {
    /// The feature set of `example` in `mode`; training may grow the registry (see the module
    /// doc), which is why this takes `&mut self`. Feature fields of types the registry does not
    /// have are not features here and are ignored.
    pub fn encode(&mut self, example: &Example, mode: Mode) -> Result<FeatureSet> {
        match mode {
            Mode::Inference => Ok(self.encode_inference(example)),
            Mode::Training => self.encode_training(example),
        }
    }

    /// Training mode: an unknown value is an error unless its type may grow.
    pub fn encode_training(&mut self, example: &Example) -> Result<FeatureSet> {
        let mut slots = Vec::with_capacity(self.num_types());
        for ft in self.types_mut() {
            let id = match example.features.get(ft.name()) {
                None => ABSENT,
                Some(value) => match ft.id_of(value) {
                    Some(id) => id,
                    None if ft.allow_new_values() => ft.push_value(value)?,
                    None => {
                        return Err(CoreError::UnknownValue {
                            location: example.location.clone(),
                            type_name: ft.name().to_string(),
                            value: value.clone(),
                            known: known_list(ft),
                        })
                    }
                },
            };
            slots.push(id);
        }
        Ok(FeatureSet { slots })
    }

    /// Inference mode: an unknown value becomes absent, with a warning that names it.
    pub fn encode_inference(&self, example: &Example) -> FeatureSet {
        let slots = self
            .types()
            .iter()
            .map(|ft| match example.features.get(ft.name()) {
                None => ABSENT,
                Some(value) => ft.id_of(value).unwrap_or_else(|| {
                    tracing::warn!(
                        "{}: unknown value {value:?} for feature type {:?}; treating it as absent",
                        example.location,
                        ft.name()
                    );
                    ABSENT
                }),
            })
            .collect();
        FeatureSet { slots }
    }
}
