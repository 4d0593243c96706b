//! Reading and writing named f32 tensors as safetensors files; writes go through
//! [`flix_core::write_atomic`], so a crash never leaves a torn file.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use crate::error::{ModelError, Result};

/// One named tensor to write: shape and f32 data (row-major).
pub struct NamedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

fn weights_err(path: &Path, message: String) -> ModelError {
    ModelError::Weights {
        path: path.to_path_buf(),
        message,
    }
}

/// Writes `tensors` as one safetensors file (f32), atomically.
pub fn save_tensors(path: &Path, tensors: &[NamedTensor]) -> Result<()> {
    save_tensors_with_metadata(path, tensors, None)
}

/// [`save_tensors`] with one `(key, value)` metadata entry. Only one: safetensors writes its
/// metadata map in hash order, so two entries would make the bytes of equal files differ.
pub fn save_tensors_with_metadata(
    path: &Path,
    tensors: &[NamedTensor],
    metadata: Option<(&str, &str)>,
) -> Result<()> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|t| bytemuck::cast_slice::<f32, u8>(&t.data).to_vec())
        .collect();
    let mut views = Vec::with_capacity(tensors.len());
    for (t, b) in tensors.iter().zip(&bytes) {
        let view = TensorView::new(Dtype::F32, t.shape.clone(), b)
            .map_err(|e| weights_err(path, format!("tensor {}: {e}", t.name)))?;
        views.push((t.name.clone(), view));
    }
    let metadata = metadata.map(|(k, v)| HashMap::from([(k.to_string(), v.to_string())]));
    let data = safetensors::serialize(views, metadata)
        .map_err(|e| weights_err(path, format!("cannot serialise: {e}")))?;
    Ok(flix_core::write_atomic(path, &data)?)
}

/// Every tensor of an f32 safetensors file, by name.
pub fn load_tensors(path: &Path) -> Result<BTreeMap<String, NamedTensor>> {
    Ok(load_tensors_with_metadata(path)?.0)
}

/// Every tensor of an f32 safetensors file, by name, and the file's metadata.
#[allow(clippy::type_complexity)]
pub fn load_tensors_with_metadata(
    path: &Path,
) -> Result<(BTreeMap<String, NamedTensor>, HashMap<String, String>)> {
    let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| weights_err(path, format!("not a safetensors file: {e}")))?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != Dtype::F32 {
            return Err(weights_err(
                path,
                format!("tensor {name}: expected F32, found {:?}", view.dtype()),
            ));
        }
        let data: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let shape = view.shape().to_vec();
        out.insert(name.clone(), NamedTensor { name, shape, data });
    }
    let (_, header) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| weights_err(path, format!("not a safetensors file: {e}")))?;
    Ok((out, header.metadata().clone().unwrap_or_default()))
}

/// Takes `name` out of `tensors`, checking its shape.
pub fn take_tensor(
    tensors: &mut BTreeMap<String, NamedTensor>,
    path: &Path,
    name: &str,
    shape: &[usize],
) -> Result<Vec<f32>> {
    let t = tensors
        .remove(name)
        .ok_or_else(|| weights_err(path, format!("missing tensor {name}")))?;
    if t.shape != shape {
        return Err(weights_err(
            path,
            format!(
                "tensor {name}: expected shape {shape:?}, found {:?}",
                t.shape
            ),
        ));
    }
    Ok(t.data)
}
