//! Parsing a GGUF file: header, metadata, tensor infos and the data section (memory-mapped).
//!
//! Layout (little-endian; versions 2 and 3 share it): magic `GGUF`, version u32, tensor count
//! u64, metadata count u64, the metadata key/value pairs, one info per tensor (name, number of
//! dimensions u32, `ne` u64 each with the fastest-varying dimension first, GGML type u32, offset
//! u64 into the data section), padding to `general.alignment` (default 32), then the data section.
//! Every size read from the file is checked against the bytes that remain before anything is
//! allocated, with checked arithmetic, so a corrupt or hostile file gives an error, never a panic
//! or an allocation of its choosing.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::dequant::dequantize;
use super::types::GgmlType;
use crate::error::{ModelError, Result};

/// The default of `general.alignment`.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml's limit on tensor dimensions.
const MAX_DIMS: u32 = 4;
/// Nesting depth of arrays beyond which a file is refused (keeps recursion bounded).
const MAX_ARRAY_DEPTH: usize = 16;

/// The type of a metadata value, with its number in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetaType {
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    F32,
    Bool,
    String,
    Array,
    U64,
    I64,
    F64,
}

impl MetaType {
    fn from_id(id: u32) -> Option<Self> {
        use MetaType::*;
        Some(match id {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    /// The name used in error messages (as the GGUF specification spells it).
    pub fn name(self) -> &'static str {
        use MetaType::*;
        match self {
            U8 => "uint8",
            I8 => "int8",
            U16 => "uint16",
            I16 => "int16",
            U32 => "uint32",
            I32 => "int32",
            F32 => "float32",
            Bool => "bool",
            String => "string",
            Array => "array",
            U64 => "uint64",
            I64 => "int64",
            F64 => "float64",
        }
    }

    /// The fewest bytes a value of this type takes (a string or array can be longer).
    fn min_bytes(self) -> u64 {
        use MetaType::*;
        match self {
            U8 | I8 | Bool => 1,
            U16 | I16 => 2,
            U32 | I32 | F32 => 4,
            U64 | I64 | F64 => 8,
            String => 8,    // the length
            Array => 4 + 8, // element type and count
        }
    }
}

/// One metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    /// Elements all of type `element` (which is kept so an empty array still has one).
    Array {
        element: MetaType,
        values: Vec<MetaValue>,
    },
}

impl MetaValue {
    pub fn meta_type(&self) -> MetaType {
        match self {
            MetaValue::U8(_) => MetaType::U8,
            MetaValue::I8(_) => MetaType::I8,
            MetaValue::U16(_) => MetaType::U16,
            MetaValue::I16(_) => MetaType::I16,
            MetaValue::U32(_) => MetaType::U32,
            MetaValue::I32(_) => MetaType::I32,
            MetaValue::U64(_) => MetaType::U64,
            MetaValue::I64(_) => MetaType::I64,
            MetaValue::F32(_) => MetaType::F32,
            MetaValue::F64(_) => MetaType::F64,
            MetaValue::Bool(_) => MetaType::Bool,
            MetaValue::String(_) => MetaType::String,
            MetaValue::Array { .. } => MetaType::Array,
        }
    }

    /// "uint32", or "array of string" for arrays.
    pub fn type_name(&self) -> String {
        match self {
            MetaValue::Array { element, .. } => format!("array of {}", element.name()),
            other => other.meta_type().name().to_string(),
        }
    }

    /// The value as an integer when it is one of the integer types (any width or sign).
    pub fn as_i128(&self) -> Option<i128> {
        Some(match *self {
            MetaValue::U8(v) => v.into(),
            MetaValue::I8(v) => v.into(),
            MetaValue::U16(v) => v.into(),
            MetaValue::I16(v) => v.into(),
            MetaValue::U32(v) => v.into(),
            MetaValue::I32(v) => v.into(),
            MetaValue::U64(v) => v.into(),
            MetaValue::I64(v) => v.into(),
            _ => return None,
        })
    }

    /// The value as a float when it is f32 or f64.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::F32(v) => Some(v.into()),
            MetaValue::F64(v) => Some(v),
            _ => None,
        }
    }
}

/// Metadata in file order, with lookup by key.
#[derive(Clone, Debug, Default)]
pub struct Metadata {
    entries: Vec<(String, MetaValue)>,
    index: HashMap<String, usize>,
}

impl Metadata {
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.index
            .get(key)
            .and_then(|&i| self.entries.get(i))
            .map(|(_, v)| v)
    }

    /// Key/value pairs in the order the file lists them.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &MetaValue)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Where a tensor is and how it is stored.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub ggml_type: GgmlType,
    /// Row-major shape (slowest-varying dimension first): the GGUF `ne` reversed, so a matrix
    /// with `ne = [in, out]` has shape `[out, in]`, as PyTorch and safetensors write it.
    pub shape: Vec<usize>,
    /// Byte offset of the data from the start of the file.
    pub offset: u64,
    /// Bytes of data.
    pub byte_len: u64,
}

impl TensorInfo {
    pub fn num_elements(&self) -> usize {
        self.shape.iter().product()
    }
}

/// The bytes of a file: memory-mapped, or held in memory.
enum Bytes {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl Bytes {
    fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

/// An opened GGUF file (version 2 or 3): parsed metadata and tensor infos, with the data
/// memory-mapped and converted to f32 tensor by tensor on request.
pub struct GgufFile {
    path: PathBuf,
    bytes: Bytes,
    version: u32,
    metadata: Metadata,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    alignment: u64,
    data_offset: u64,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "GgufFile({}, v{}, {} keys, {} tensors)",
            self.path.display(),
            self.version,
            self.metadata.len(),
            self.tensors.len()
        )
    }
}

/// Reads little-endian values from the mapped bytes, tracking the offset for error messages.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn err(&self, at: usize, message: String) -> ModelError {
        gguf_err(self.path, format!("at byte {at}: {message}"))
    }

    fn remaining(&self) -> u64 {
        (self.bytes.len() - self.pos.min(self.bytes.len())) as u64
    }

    /// The next `n` bytes, or an error naming `what` when the file ends first.
    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.err(
                self.pos,
                format!(
                    "{what} needs {n} bytes but the file ends {} bytes later (file is {} bytes; \
                     is it truncated?)",
                    self.remaining(),
                    self.bytes.len()
                ),
            ));
        }
        let start = self.pos;
        self.pos += n as usize;
        Ok(&self.bytes[start..self.pos])
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let slice = self.take(N as u64, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Ok(out)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let at = self.pos;
        let len = self.u64(&format!("the length of {what}"))?;
        if len > self.remaining() {
            return Err(self.err(
                at,
                format!(
                    "{what} has length {len}, past the end of the file ({} bytes remain; is it \
                     truncated?)",
                    self.remaining()
                ),
            ));
        }
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|e| self.err(at + 8, format!("{what} is not valid UTF-8 ({e})")))
    }

    /// A count of items that each take at least `min_bytes`: refused when even the smallest such
    /// items would not fit in the rest of the file, before anything is allocated.
    fn count(&mut self, what: &str, min_bytes: u64) -> Result<usize> {
        let at = self.pos;
        let count = self.u64(&format!("the count of {what}"))?;
        let needed = count.checked_mul(min_bytes);
        if needed.is_none_or(|n| n > self.remaining()) {
            return Err(self.err(
                at,
                format!(
                    "{what}: count {count} needs at least {count} x {min_bytes} bytes but only {} \
                     bytes remain in the file",
                    self.remaining()
                ),
            ));
        }
        usize::try_from(count).map_err(|_| self.err(at, format!("{what}: count {count} too large")))
    }

    fn meta_type(&mut self, what: &str) -> Result<MetaType> {
        let at = self.pos;
        let id = self.u32(&format!("the value type of {what}"))?;
        MetaType::from_id(id).ok_or_else(|| {
            self.err(
                at,
                format!("{what} has unknown metadata value type {id} (known: 0 to 12)"),
            )
        })
    }

    fn value(&mut self, ty: MetaType, what: &str, depth: usize) -> Result<MetaValue> {
        Ok(match ty {
            MetaType::U8 => MetaValue::U8(u8::from_le_bytes(self.array(what)?)),
            MetaType::I8 => MetaValue::I8(i8::from_le_bytes(self.array(what)?)),
            MetaType::U16 => MetaValue::U16(u16::from_le_bytes(self.array(what)?)),
            MetaType::I16 => MetaValue::I16(i16::from_le_bytes(self.array(what)?)),
            MetaType::U32 => MetaValue::U32(u32::from_le_bytes(self.array(what)?)),
            MetaType::I32 => MetaValue::I32(i32::from_le_bytes(self.array(what)?)),
            MetaType::U64 => MetaValue::U64(u64::from_le_bytes(self.array(what)?)),
            MetaType::I64 => MetaValue::I64(i64::from_le_bytes(self.array(what)?)),
            MetaType::F32 => MetaValue::F32(f32::from_le_bytes(self.array(what)?)),
            MetaType::F64 => MetaValue::F64(f64::from_le_bytes(self.array(what)?)),
            MetaType::Bool => {
                let at = self.pos;
                match self.array::<1>(what)?[0] {
                    0 => MetaValue::Bool(false),
                    1 => MetaValue::Bool(true),
                    other => {
                        return Err(self.err(
                            at,
                            format!("{what} is a bool stored as {other}, expected 0 or 1"),
                        ))
                    }
                }
            }
            MetaType::String => MetaValue::String(self.string(what)?),
            MetaType::Array => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(self.err(
                        self.pos,
                        format!("{what} nests arrays more than {MAX_ARRAY_DEPTH} deep"),
                    ));
                }
                let element = self.meta_type(&format!("the elements of {what}"))?;
                let count = self.count(&format!("the elements of {what}"), element.min_bytes())?;
                let mut values = Vec::with_capacity(count);
                for i in 0..count {
                    values.push(self.value(element, &format!("{what}[{i}]"), depth + 1)?);
                }
                MetaValue::Array { element, values }
            }
        })
    }
}

pub(crate) fn gguf_err(path: &Path, message: String) -> ModelError {
    ModelError::Gguf {
        path: path.to_path_buf(),
        message,
    }
}

impl GgufFile {
    /// Opens and validates `path`: header, metadata, tensor infos and that every tensor's data
    /// lies, aligned and without overlap, inside the file.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        // SAFETY: the map is read-only. Like every GGUF loader, we rely on nobody truncating or
        // rewriting the file while it is open.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_parts(path, Bytes::Mapped(mmap))
    }

    /// Parses a GGUF file held in memory; `path` is only used in error messages.
    pub fn from_bytes(bytes: Vec<u8>, path: &Path) -> Result<Self> {
        Self::from_parts(path, Bytes::Owned(bytes))
    }

    fn from_parts(path: &Path, bytes: Bytes) -> Result<Self> {
        let parsed = Parsed::parse(bytes.as_slice(), path)?;
        Ok(Self {
            path: path.to_path_buf(),
            bytes,
            version: parsed.version,
            metadata: parsed.metadata,
            tensor_index: parsed
                .tensors
                .iter()
                .enumerate()
                .map(|(i, t)| (t.name.clone(), i))
                .collect(),
            tensors: parsed.tensors,
            alignment: parsed.alignment,
            data_offset: parsed.data_offset,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// `general.alignment`, or its default 32.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Byte offset of the data section (tensor offsets in the file are relative to it).
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// Every tensor, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index
            .get(name)
            .and_then(|&i| self.tensors.get(i))
    }

    fn err(&self, message: String) -> ModelError {
        gguf_err(&self.path, message)
    }

    fn required(&self, key: &str) -> Result<&MetaValue> {
        self.metadata
            .get(key)
            .ok_or_else(|| self.err(format!("metadata key `{key}` is missing")))
    }

    fn wrong_type(&self, key: &str, expected: &str, found: &MetaValue) -> ModelError {
        self.err(format!(
            "metadata key `{key}` should be {expected}, found {}",
            found.type_name()
        ))
    }

    pub fn get_u32(&self, key: &str) -> Result<u32> {
        match self.required(key)? {
            MetaValue::U32(v) => Ok(*v),
            other => Err(self.wrong_type(key, "uint32", other)),
        }
    }

    pub fn get_u64(&self, key: &str) -> Result<u64> {
        match self.required(key)? {
            MetaValue::U64(v) => Ok(*v),
            other => Err(self.wrong_type(key, "uint64", other)),
        }
    }

    pub fn get_i32(&self, key: &str) -> Result<i32> {
        match self.required(key)? {
            MetaValue::I32(v) => Ok(*v),
            other => Err(self.wrong_type(key, "int32", other)),
        }
    }

    pub fn get_f32(&self, key: &str) -> Result<f32> {
        match self.required(key)? {
            MetaValue::F32(v) => Ok(*v),
            other => Err(self.wrong_type(key, "float32", other)),
        }
    }

    pub fn get_f64(&self, key: &str) -> Result<f64> {
        match self.required(key)? {
            MetaValue::F64(v) => Ok(*v),
            other => Err(self.wrong_type(key, "float64", other)),
        }
    }

    pub fn get_bool(&self, key: &str) -> Result<bool> {
        match self.required(key)? {
            MetaValue::Bool(v) => Ok(*v),
            other => Err(self.wrong_type(key, "bool", other)),
        }
    }

    pub fn get_str(&self, key: &str) -> Result<&str> {
        match self.required(key)? {
            MetaValue::String(v) => Ok(v),
            other => Err(self.wrong_type(key, "string", other)),
        }
    }

    /// An array of strings (for example `tokenizer.ggml.tokens`).
    pub fn get_str_array(&self, key: &str) -> Result<Vec<&str>> {
        let value = self.required(key)?;
        match value {
            MetaValue::Array {
                element: MetaType::String,
                values,
            } => Ok(values
                .iter()
                .filter_map(|v| match v {
                    MetaValue::String(s) => Some(s.as_str()),
                    _ => None,
                })
                .collect()),
            other => Err(self.wrong_type(key, "array of string", other)),
        }
    }

    /// An array of float32 values.
    pub fn get_f32_array(&self, key: &str) -> Result<Vec<f32>> {
        match self.required(key)? {
            MetaValue::Array {
                element: MetaType::F32,
                values,
            } => Ok(values
                .iter()
                .filter_map(|v| match v {
                    MetaValue::F32(x) => Some(*x),
                    _ => None,
                })
                .collect()),
            other => Err(self.wrong_type(key, "array of float32", other)),
        }
    }

    /// An integer of any width and sign that must fit a usize (writers differ in the integer type
    /// they use for sizes and counts).
    pub fn get_usize(&self, key: &str) -> Result<usize> {
        let value = self.required(key)?;
        let n = value
            .as_i128()
            .ok_or_else(|| self.wrong_type(key, "an integer", value))?;
        usize::try_from(n).map_err(|_| {
            self.err(format!(
                "metadata key `{key}` is {n}, expected a non-negative size"
            ))
        })
    }

    /// A float32 or float64, as f64.
    pub fn get_float(&self, key: &str) -> Result<f64> {
        let value = self.required(key)?;
        value
            .as_f64()
            .ok_or_else(|| self.wrong_type(key, "float32 or float64", value))
    }

    /// The raw bytes of tensor `name`, borrowed from the mapped file.
    pub fn tensor_bytes(&self, name: &str) -> Result<&[u8]> {
        let info = self.tensor_info(name).ok_or_else(|| self.missing(name))?;
        // Offsets were checked against the file length when it was opened.
        let start = info.offset as usize;
        let end = start + info.byte_len as usize;
        self.bytes.as_slice().get(start..end).ok_or_else(|| {
            self.err(format!(
                "tensor `{name}`: data lies past the end of the file"
            ))
        })
    }

    fn missing(&self, name: &str) -> ModelError {
        self.err(format!(
            "no tensor named `{name}` (the file has {} tensors)",
            self.tensors.len()
        ))
    }

    /// The tensor `name` converted to f32, with its row-major shape. The types of
    /// [`GgmlType::DEQUANTIZABLE`] are supported; other types are an error naming the type.
    pub fn tensor_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let info = self.tensor_info(name).ok_or_else(|| self.missing(name))?;
        if !info.ggml_type.can_dequantize() {
            let supported: Vec<String> = GgmlType::DEQUANTIZABLE
                .iter()
                .map(|t| t.name().to_string())
                .collect();
            return Err(self.err(format!(
                "tensor `{name}` has GGML {}, which cannot be converted to f32 here (supported: {})",
                GgmlType::describe_id(info.ggml_type.id()),
                supported.join(", ")
            )));
        }
        let bytes = self.tensor_bytes(name)?;
        let values = dequantize(info.ggml_type, bytes, info.num_elements())
            .map_err(|m| self.err(format!("tensor `{name}`: {m}")))?;
        Ok((info.shape.clone(), values))
    }
}

/// What parsing yields before the file handle is attached.
struct Parsed {
    version: u32,
    metadata: Metadata,
    tensors: Vec<TensorInfo>,
    alignment: u64,
    data_offset: u64,
}

impl Parsed {
    fn parse(bytes: &[u8], path: &Path) -> Result<Self> {
        let mut cur = Cursor {
            bytes,
            pos: 0,
            path,
        };
        let magic = cur.array::<4>("the magic number")?;
        if &magic != b"GGUF" {
            return Err(cur.err(
                0,
                format!("bad magic {magic:02x?}: expected \"GGUF\"; this is not a GGUF file"),
            ));
        }
        let version = cur.u32("the version")?;
        match version {
            2 | 3 => {}
            1 => {
                return Err(cur.err(
                    4,
                    "GGUF version 1 is not supported (32-bit counts); convert the file with a \
                     current llama.cpp"
                        .into(),
                ))
            }
            v if v.swap_bytes() == 2 || v.swap_bytes() == 3 => {
                return Err(cur.err(
                    4,
                    format!(
                        "big-endian GGUF (version {}) is not supported",
                        v.swap_bytes()
                    ),
                ))
            }
            v => return Err(cur.err(4, format!("unsupported GGUF version {v} (supported: 2, 3)"))),
        }
        // The smallest tensor info is an empty name (8 bytes) + n_dims (4) + one dimension (8) +
        // type (4) + offset (8); the smallest key/value an empty key (8) + type (4) + one byte.
        let tensor_count = cur.count("tensor infos", 8 + 4 + 8 + 4 + 8)?;
        let kv_count = cur.count("metadata entries", 8 + 4 + 1)?;

        let mut metadata = Metadata::default();
        for i in 0..kv_count {
            let at = cur.pos;
            let key = cur.string(&format!("metadata key {i}"))?;
            let ty = cur.meta_type(&format!("metadata key `{key}`"))?;
            let value = cur.value(ty, &format!("metadata key `{key}`"), 0)?;
            if metadata.index.contains_key(&key) {
                return Err(cur.err(at, format!("duplicate metadata key `{key}`")));
            }
            metadata.index.insert(key.clone(), metadata.entries.len());
            metadata.entries.push((key, value));
        }

        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(MetaValue::U32(a)) if *a > 0 && a.is_power_of_two() => u64::from(*a),
            Some(MetaValue::U32(a)) => {
                return Err(gguf_err(
                    path,
                    format!(
                        "metadata key `general.alignment` is {a}, expected a power of two >= 1"
                    ),
                ))
            }
            Some(other) => {
                return Err(gguf_err(
                    path,
                    format!(
                        "metadata key `general.alignment` should be uint32, found {}",
                        other.type_name()
                    ),
                ))
            }
        };

        // Tensor infos, with their offsets relative to the data section for now.
        let mut infos: Vec<(TensorInfo, u64, usize)> = Vec::with_capacity(tensor_count);
        let mut seen: HashMap<String, usize> = HashMap::with_capacity(tensor_count);
        for i in 0..tensor_count {
            let at = cur.pos;
            let name = cur.string(&format!("the name of tensor {i}"))?;
            if seen.insert(name.clone(), i).is_some() {
                return Err(cur.err(at, format!("duplicate tensor name `{name}`")));
            }
            let dims_at = cur.pos;
            let n_dims = cur.u32(&format!("the dimension count of tensor `{name}`"))?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(cur.err(
                    dims_at,
                    format!("tensor `{name}` has {n_dims} dimensions, expected 1 to {MAX_DIMS}"),
                ));
            }
            let mut ne = Vec::with_capacity(n_dims as usize);
            for d in 0..n_dims {
                ne.push(cur.u64(&format!("dimension {d} of tensor `{name}`"))?);
            }
            let type_at = cur.pos;
            let type_id = cur.u32(&format!("the GGML type of tensor `{name}`"))?;
            let ggml_type = GgmlType::from_id(type_id).ok_or_else(|| {
                cur.err(
                    type_at,
                    format!(
                        "tensor `{name}` has unknown GGML {}",
                        GgmlType::describe_id(type_id)
                    ),
                )
            })?;
            let offset = cur.u64(&format!("the data offset of tensor `{name}`"))?;
            let (shape, byte_len) = sized(&ne, ggml_type)
                .map_err(|m| cur.err(dims_at, format!("tensor `{name}`: {m}")))?;
            infos.push((
                TensorInfo {
                    name,
                    ggml_type,
                    shape,
                    offset: 0,
                    byte_len,
                },
                offset,
                at,
            ));
        }

        let data_offset = align_up(cur.pos as u64, alignment)
            .ok_or_else(|| cur.err(cur.pos, "data section offset overflows".into()))?;
        let file_len = bytes.len() as u64;
        let mut tensors = Vec::with_capacity(infos.len());
        for (mut info, relative, info_at) in infos {
            let name = &info.name;
            if relative % alignment != 0 {
                return Err(cur.err(
                    info_at,
                    format!(
                        "tensor `{name}` has data offset {relative}, not a multiple of the \
                         alignment {alignment}"
                    ),
                ));
            }
            let end = data_offset
                .checked_add(relative)
                .and_then(|start| start.checked_add(info.byte_len));
            if end.is_none_or(|e| e > file_len) {
                return Err(cur.err(
                    info_at,
                    format!(
                        "tensor `{name}`: data at {relative} + {} bytes (from data section start \
                         {data_offset}) runs past the end of the file ({file_len} bytes; is it \
                         truncated?)",
                        info.byte_len
                    ),
                ));
            }
            info.offset = data_offset + relative;
            tensors.push(info);
        }

        // No two tensors may share bytes.
        let mut by_offset: Vec<&TensorInfo> = tensors.iter().collect();
        by_offset.sort_by_key(|t| t.offset);
        for pair in by_offset.windows(2) {
            if let [a, b] = pair {
                if a.offset + a.byte_len > b.offset {
                    return Err(gguf_err(
                        path,
                        format!(
                            "tensors `{}` (bytes {}..{}) and `{}` (bytes {}..{}) overlap",
                            a.name,
                            a.offset,
                            a.offset + a.byte_len,
                            b.name,
                            b.offset,
                            b.offset + b.byte_len
                        ),
                    ));
                }
            }
        }

        Ok(Self {
            version,
            metadata,
            tensors,
            alignment,
            data_offset,
        })
    }
}

fn align_up(n: u64, alignment: u64) -> Option<u64> {
    n.checked_add(alignment - 1)
        .map(|x| x / alignment * alignment)
}

/// Row-major shape and byte length of a tensor with GGUF dimensions `ne` (fastest first).
fn sized(ne: &[u64], ggml_type: GgmlType) -> std::result::Result<(Vec<usize>, u64), String> {
    let mut elements: u64 = 1;
    for &n in ne {
        elements = elements
            .checked_mul(n)
            .ok_or_else(|| format!("dimensions {ne:?} overflow"))?;
    }
    let block = ggml_type.block_size() as u64;
    let inner = ne.first().copied().unwrap_or(1);
    if inner % block != 0 {
        return Err(format!(
            "dimensions {ne:?}: the first (innermost) dimension {inner} is not a multiple of \
             {ggml_type}'s block size {block}"
        ));
    }
    let byte_len = (elements / block)
        .checked_mul(ggml_type.block_bytes() as u64)
        .ok_or_else(|| format!("dimensions {ne:?} overflow"))?;
    let shape = ne
        .iter()
        .rev()
        .map(|&n| usize::try_from(n).map_err(|_| format!("dimension {n} too large")))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok((shape, byte_len))
}
