//! GGUF (v2 and v3) reader: header, metadata, tensor infos and dequantization to f32.
//!
//! Every read is bounds-checked against the mapped file, and every count is checked against the
//! bytes that are left before anything is allocated, so a truncated or corrupted file gives a
//! `ModelError::Format` naming the file and the field, never a panic or a huge allocation.

use crate::{ModelError, Result};
use std::path::{Path, PathBuf};
use tch::{Device, Tensor};

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml never has more than 4 dims; a larger count means a corrupted file.
const MAX_DIMS: u32 = 4;

/// One metadata value, with GGUF's own integer widths kept.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<GgufValue>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl GgufValue {
    /// Any integer type that fits in i64.
    pub fn as_i64(&self) -> Option<i64> {
        Some(match *self {
            GgufValue::U8(v) => v as i64,
            GgufValue::I8(v) => v as i64,
            GgufValue::U16(v) => v as i64,
            GgufValue::I16(v) => v as i64,
            GgufValue::U32(v) => v as i64,
            GgufValue::I32(v) => v as i64,
            GgufValue::U64(v) => i64::try_from(v).ok()?,
            GgufValue::I64(v) => v,
            _ => return None,
        })
    }

    /// Any float or integer type, as f64.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => Some(v as f64),
            GgufValue::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            GgufValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The value as JSON (integers stay exact, floats widen to f64).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            GgufValue::U64(v) => Value::from(*v),
            GgufValue::F32(v) => Value::from(*v as f64),
            GgufValue::F64(v) => Value::from(*v),
            GgufValue::Bool(b) => Value::from(*b),
            GgufValue::String(s) => Value::from(s.as_str()),
            GgufValue::Array(a) => Value::Array(a.iter().map(GgufValue::to_json).collect()),
            other => Value::from(other.as_i64().unwrap_or_default()),
        }
    }

    fn type_name(&self) -> &'static str {
        match self {
            GgufValue::U8(_) => "uint8",
            GgufValue::I8(_) => "int8",
            GgufValue::U16(_) => "uint16",
            GgufValue::I16(_) => "int16",
            GgufValue::U32(_) => "uint32",
            GgufValue::I32(_) => "int32",
            GgufValue::F32(_) => "float32",
            GgufValue::Bool(_) => "bool",
            GgufValue::String(_) => "string",
            GgufValue::Array(_) => "array",
            GgufValue::U64(_) => "uint64",
            GgufValue::I64(_) => "int64",
            GgufValue::F64(_) => "float64",
        }
    }
}

/// A ggml tensor type, by its on-disk id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GgmlType(pub u32);

impl GgmlType {
    pub const F32: GgmlType = GgmlType(0);
    pub const F16: GgmlType = GgmlType(1);
    pub const Q4_0: GgmlType = GgmlType(2);
    pub const Q4_1: GgmlType = GgmlType(3);
    pub const Q8_0: GgmlType = GgmlType(8);
    pub const BF16: GgmlType = GgmlType(30);

    /// The name llama.cpp uses (for messages); `TYPE_<id>` for ids it has never had.
    pub fn name(self) -> String {
        const NAMES: &[(u32, &str)] = &[
            (0, "F32"),
            (1, "F16"),
            (2, "Q4_0"),
            (3, "Q4_1"),
            (6, "Q5_0"),
            (7, "Q5_1"),
            (8, "Q8_0"),
            (9, "Q8_1"),
            (10, "Q2_K"),
            (11, "Q3_K"),
            (12, "Q4_K"),
            (13, "Q5_K"),
            (14, "Q6_K"),
            (15, "Q8_K"),
            (16, "IQ2_XXS"),
            (17, "IQ2_XS"),
            (18, "IQ3_XXS"),
            (19, "IQ1_S"),
            (20, "IQ4_NL"),
            (21, "IQ3_S"),
            (22, "IQ2_S"),
            (23, "IQ4_XS"),
            (24, "I8"),
            (25, "I16"),
            (26, "I32"),
            (27, "I64"),
            (28, "F64"),
            (29, "IQ1_M"),
            (30, "BF16"),
            (34, "TQ1_0"),
            (35, "TQ2_0"),
            (39, "MXFP4"),
        ];
        NAMES
            .iter()
            .find(|(id, _)| *id == self.0)
            .map(|(_, n)| n.to_string())
            .unwrap_or_else(|| format!("TYPE_{}", self.0))
    }

    /// (elements per block, bytes per block) for the types this reader dequantizes.
    fn block_layout(self) -> Option<(u64, u64)> {
        Some(match self {
            GgmlType::F32 => (1, 4),
            GgmlType::F16 | GgmlType::BF16 => (1, 2),
            GgmlType::Q4_0 => (32, 18),
            GgmlType::Q4_1 => (32, 20),
            GgmlType::Q8_0 => (32, 34),
            _ => return None,
        })
    }

    pub fn is_supported(self) -> bool {
        self.block_layout().is_some()
    }
}

/// Where one tensor lives in the file. `dims` are in GGUF order (innermost first).
#[derive(Debug, Clone)]
pub struct GgufTensorInfo {
    pub name: String,
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Offset from the start of the data section.
    pub offset: u64,
}

impl GgufTensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Shape in torch order (outermost first): `[out, in]` for a weight matrix.
    pub fn torch_shape(&self) -> Vec<i64> {
        self.dims.iter().rev().map(|&d| d as i64).collect()
    }
}

/// A memory-mapped GGUF file with its parsed header.
pub struct GgufFile {
    path: PathBuf,
    mmap: memmap2::Mmap,
    pub version: u32,
    /// Metadata in file order.
    pub metadata: Vec<(String, GgufValue)>,
    pub tensors: Vec<GgufTensorInfo>,
    pub alignment: u64,
    /// Absolute file offset of the data section.
    pub data_offset: u64,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata_keys", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
        // SAFETY: read-only map; files are replaced by rename (atomic writes), never rewritten in place.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| ModelError::io(path, e))?;
        let header = parse_header(&mmap).map_err(|m| ModelError::format(path, m))?;
        Ok(GgufFile {
            path: path.to_path_buf(),
            mmap,
            version: header.version,
            metadata: header.metadata,
            tensors: header.tensors,
            alignment: header.alignment,
            data_offset: header.data_offset,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    fn required(&self, key: &str) -> Result<&GgufValue> {
        self.get(key)
            .ok_or_else(|| self.error(format!("metadata key `{key}` is missing")))
    }

    fn wrong_type(&self, key: &str, wanted: &str, value: &GgufValue) -> ModelError {
        self.error(format!(
            "metadata key `{key}` is {}, expected {wanted}",
            value.type_name()
        ))
    }

    pub fn get_i64(&self, key: &str) -> Result<i64> {
        let v = self.required(key)?;
        v.as_i64()
            .ok_or_else(|| self.wrong_type(key, "an integer", v))
    }

    pub fn get_f64(&self, key: &str) -> Result<f64> {
        let v = self.required(key)?;
        v.as_f64()
            .ok_or_else(|| self.wrong_type(key, "a number", v))
    }

    pub fn get_str(&self, key: &str) -> Result<&str> {
        let v = self.required(key)?;
        v.as_str()
            .ok_or_else(|| self.wrong_type(key, "a string", v))
    }

    /// An array of strings (token lists, merges).
    pub fn get_str_array(&self, key: &str) -> Result<Vec<&str>> {
        let v = self.required(key)?;
        let items = v
            .as_array()
            .ok_or_else(|| self.wrong_type(key, "an array of strings", v))?;
        items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                item.as_str().ok_or_else(|| {
                    self.error(format!(
                        "metadata key `{key}`: element {i} is {}, expected a string",
                        item.type_name()
                    ))
                })
            })
            .collect()
    }

    /// An array of integers (token types).
    pub fn get_i64_array(&self, key: &str) -> Result<Vec<i64>> {
        let v = self.required(key)?;
        let items = v
            .as_array()
            .ok_or_else(|| self.wrong_type(key, "an array of integers", v))?;
        items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                item.as_i64().ok_or_else(|| {
                    self.error(format!(
                        "metadata key `{key}`: element {i} is {}, expected an integer",
                        item.type_name()
                    ))
                })
            })
            .collect()
    }

    pub fn error(&self, message: impl Into<String>) -> ModelError {
        ModelError::format(&self.path, message)
    }

    pub fn tensor_info(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The raw bytes of a tensor of a supported type, checked against the file's end.
    pub fn tensor_bytes(&self, info: &GgufTensorInfo) -> Result<&[u8]> {
        let (block_elems, block_bytes) = info.ggml_type.block_layout().ok_or_else(|| {
            ModelError::Unsupported(format!(
                "{}: tensor `{}` uses quantization {}, and ragtune dequantizes only F32, F16, BF16, Q8_0, Q4_0 and Q4_1",
                self.path.display(),
                info.name,
                info.ggml_type.name()
            ))
        })?;
        let n = info.n_elements();
        let row = info.dims.first().copied().unwrap_or(1);
        if row % block_elems != 0 {
            return Err(self.error(format!(
                "tensor `{}`: {} rows of {row} elements are not a whole number of {block_elems}-element blocks",
                info.name,
                info.ggml_type.name()
            )));
        }
        let size = (n / block_elems) * block_bytes;
        let start = self.data_offset.checked_add(info.offset);
        let end = start.and_then(|s| s.checked_add(size));
        match (start, end) {
            (Some(start), Some(end)) if end <= self.mmap.len() as u64 => {
                Ok(&self.mmap[start as usize..end as usize])
            }
            _ => Err(self.error(format!(
                "tensor `{}` ({} bytes at data offset {}) runs past the end of the file ({} bytes): truncated?",
                info.name,
                size,
                info.offset,
                self.mmap.len()
            ))),
        }
    }

    /// Dequantizes a tensor to f32 values, in file order.
    pub fn dequantize(&self, name: &str) -> Result<Vec<f32>> {
        let info = self
            .tensor_info(name)
            .ok_or_else(|| ModelError::MissingTensor {
                path: self.path.clone(),
                name: name.to_string(),
            })?;
        let bytes = self.tensor_bytes(info)?;
        dequantize(info.ggml_type, bytes, info.n_elements() as usize)
            .map_err(|m| self.error(format!("tensor `{name}`: {m}")))
    }

    /// Dequantizes a tensor into a torch f32 tensor of shape `torch_shape()` on `device`.
    pub fn tensor(&self, name: &str, device: Device) -> Result<Tensor> {
        let values = self.dequantize(name)?;
        let shape = self
            .tensor_info(name)
            .map(|i| i.torch_shape())
            .unwrap_or_default();
        Ok(Tensor::from_slice(&values)
            .f_reshape(&shape)?
            .to_device(device))
    }
}

/// Dequantizes `n_elements` values of type `ggml_type` from `bytes`. The arithmetic follows the
/// `gguf` Python package operation for operation (f32 throughout), so results are bit-identical.
pub fn dequantize(
    ggml_type: GgmlType,
    bytes: &[u8],
    n_elements: usize,
) -> std::result::Result<Vec<f32>, String> {
    let (block_elems, block_bytes) = ggml_type.block_layout().ok_or_else(|| {
        format!(
            "unsupported quantization {} (ragtune dequantizes F32, F16, BF16, Q8_0, Q4_0, Q4_1)",
            ggml_type.name()
        )
    })?;
    let (block_elems, block_bytes) = (block_elems as usize, block_bytes as usize);
    if !n_elements.is_multiple_of(block_elems) {
        return Err(format!(
            "{n_elements} elements are not a whole number of {block_elems}-element {} blocks",
            ggml_type.name()
        ));
    }
    let needed = n_elements / block_elems * block_bytes;
    if bytes.len() != needed {
        return Err(format!(
            "{} bytes for {n_elements} {} elements, expected {needed}",
            bytes.len(),
            ggml_type.name()
        ));
    }
    let f16 = |b: &[u8]| half::f16::from_le_bytes([b[0], b[1]]).to_f32();
    let mut out = Vec::with_capacity(n_elements);
    match ggml_type {
        GgmlType::F32 => out.extend(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        ),
        GgmlType::F16 => out.extend(bytes.chunks_exact(2).map(f16)),
        GgmlType::BF16 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16)),
        ),
        GgmlType::Q8_0 => {
            for block in bytes.chunks_exact(block_bytes) {
                let d = f16(&block[0..2]);
                out.extend(block[2..].iter().map(|&q| d * (q as i8) as f32));
            }
        }
        GgmlType::Q4_0 => {
            for block in bytes.chunks_exact(block_bytes) {
                let d = f16(&block[0..2]);
                let qs = &block[2..];
                out.extend(qs.iter().map(|&q| d * ((q & 0x0F) as i8 - 8) as f32));
                out.extend(qs.iter().map(|&q| d * ((q >> 4) as i8 - 8) as f32));
            }
        }
        GgmlType::Q4_1 => {
            for block in bytes.chunks_exact(block_bytes) {
                let d = f16(&block[0..2]);
                let m = f16(&block[2..4]);
                let qs = &block[4..];
                out.extend(qs.iter().map(|&q| d * (q & 0x0F) as f32 + m));
                out.extend(qs.iter().map(|&q| d * (q >> 4) as f32 + m));
            }
        }
        _ => unreachable!("block_layout admits only the types matched above"),
    }
    Ok(out)
}

#[derive(Debug)]
struct Header {
    version: u32,
    metadata: Vec<(String, GgufValue)>,
    tensors: Vec<GgufTensorInfo>,
    alignment: u64,
    data_offset: u64,
}

/// A cursor that refuses to read past the end, naming what it was reading.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

type ParseResult<T> = std::result::Result<T, String>;

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &dyn Fn() -> String) -> ParseResult<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        match end {
            Some(end) => {
                let s = &self.bytes[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(format!(
                "truncated file: {} needs {n} bytes at offset {}, but the file has {} bytes",
                what(),
                self.pos,
                self.bytes.len()
            )),
        }
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> ParseResult<[u8; N]> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> ParseResult<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> ParseResult<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> ParseResult<String> {
        let len = self.u64(&|| format!("length of {}", what()))?;
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l <= self.remaining())
            .ok_or_else(|| {
                format!(
                    "{} claims {len} bytes at offset {}, but only {} are left: truncated or corrupted",
                    what(),
                    self.pos,
                    self.remaining()
                )
            })?;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| format!("{} is not valid UTF-8", what()))
    }

    fn value(&mut self, type_id: u32, what: &dyn Fn() -> String) -> ParseResult<GgufValue> {
        Ok(match type_id {
            0 => GgufValue::U8(u8::from_le_bytes(self.array(what)?)),
            1 => GgufValue::I8(i8::from_le_bytes(self.array(what)?)),
            2 => GgufValue::U16(u16::from_le_bytes(self.array(what)?)),
            3 => GgufValue::I16(i16::from_le_bytes(self.array(what)?)),
            4 => GgufValue::U32(u32::from_le_bytes(self.array(what)?)),
            5 => GgufValue::I32(i32::from_le_bytes(self.array(what)?)),
            6 => GgufValue::F32(f32::from_le_bytes(self.array(what)?)),
            7 => match self.array::<1>(what)?[0] {
                0 => GgufValue::Bool(false),
                1 => GgufValue::Bool(true),
                b => return Err(format!("{} is a bool with byte value {b}", what())),
            },
            8 => GgufValue::String(self.string(what)?),
            9 => {
                let elem_type = self.u32(&|| format!("element type of {}", what()))?;
                let len = self.u64(&|| format!("length of {}", what()))?;
                // Every element takes at least one byte, so a count beyond the bytes left is corrupt;
                // checking first keeps a bad count from allocating terabytes.
                let len = usize::try_from(len)
                    .ok()
                    .filter(|&l| l <= self.remaining())
                    .ok_or_else(|| {
                        format!(
                            "{} claims {len} elements, but only {} bytes are left: truncated or corrupted",
                            what(),
                            self.remaining()
                        )
                    })?;
                if elem_type == 9 {
                    return Err(format!(
                        "{} is an array of arrays, which GGUF does not allow",
                        what()
                    ));
                }
                let mut items = Vec::with_capacity(len);
                for i in 0..len {
                    items.push(self.value(elem_type, &|| format!("{}[{i}]", what()))?);
                }
                GgufValue::Array(items)
            }
            10 => GgufValue::U64(u64::from_le_bytes(self.array(what)?)),
            11 => GgufValue::I64(i64::from_le_bytes(self.array(what)?)),
            12 => GgufValue::F64(f64::from_le_bytes(self.array(what)?)),
            other => return Err(format!("{} has unknown value type {other}", what())),
        })
    }
}

fn parse_header(bytes: &[u8]) -> ParseResult<Header> {
    let mut r = Reader { bytes, pos: 0 };
    let magic = r.take(4, &|| "the magic number".into())?;
    if magic != MAGIC {
        return Err(format!(
            "not a GGUF file (starts with {magic:?}, expected \"GGUF\")"
        ));
    }
    let version = r.u32(&|| "the version".into())?;
    if !(2..=3).contains(&version) {
        return Err(format!(
            "GGUF version {version} is not supported (only versions 2 and 3)"
        ));
    }
    let n_tensors = r.u64(&|| "the tensor count".into())?;
    let n_kv = r.u64(&|| "the metadata count".into())?;
    // A metadata entry takes at least 13 bytes and a tensor info at least 28.
    if n_kv.saturating_mul(13) > r.remaining() as u64
        || n_tensors.saturating_mul(28) > r.remaining() as u64
    {
        return Err(format!(
            "header claims {n_kv} metadata entries and {n_tensors} tensors, more than the {} bytes left can hold: truncated or corrupted",
            r.remaining()
        ));
    }
    let mut metadata = Vec::with_capacity(n_kv as usize);
    for i in 0..n_kv {
        let key = r.string(&|| format!("the key of metadata entry {i}"))?;
        let type_id = r.u32(&|| format!("the value type of metadata `{key}`"))?;
        let value = r.value(type_id, &|| format!("metadata `{key}`"))?;
        metadata.push((key, value));
    }
    let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some((_, v)) => match v.as_i64() {
            Some(a) if a > 0 && (a as u64).is_power_of_two() => a as u64,
            _ => {
                return Err(format!(
                    "general.alignment is {v:?}, expected a power of two"
                ))
            }
        },
    };
    let mut tensors = Vec::with_capacity(n_tensors as usize);
    for i in 0..n_tensors {
        let name = r.string(&|| format!("the name of tensor {i}"))?;
        let n_dims = r.u32(&|| format!("the dim count of tensor `{name}`"))?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(format!(
                "tensor `{name}` has {n_dims} dims (ggml allows 1 to {MAX_DIMS})"
            ));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for d in 0..n_dims {
            dims.push(r.u64(&|| format!("dim {d} of tensor `{name}`"))?);
        }
        if dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .is_none()
            || dims.iter().any(|&d| d > i64::MAX as u64)
        {
            return Err(format!("tensor `{name}` has dims {dims:?}, which overflow"));
        }
        let ggml_type = GgmlType(r.u32(&|| format!("the type of tensor `{name}`"))?);
        let offset = r.u64(&|| format!("the data offset of tensor `{name}`"))?;
        if offset % alignment != 0 {
            return Err(format!(
                "tensor `{name}` has data offset {offset}, not a multiple of the alignment {alignment}"
            ));
        }
        tensors.push(GgufTensorInfo {
            name,
            dims,
            ggml_type,
            offset,
        });
    }
    let data_offset = (r.pos as u64).div_ceil(alignment) * alignment;
    if !tensors.is_empty() && data_offset > bytes.len() as u64 {
        return Err(format!(
            "truncated file: the data section would start at {data_offset}, past the end ({} bytes)",
            bytes.len()
        ));
    }
    Ok(Header {
        version,
        metadata,
        tensors,
        alignment,
        data_offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(version: u32, n_tensors: u64, n_kv: u64) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        b.extend(version.to_le_bytes());
        b.extend(n_tensors.to_le_bytes());
        b.extend(n_kv.to_le_bytes());
        b
    }

    fn string(b: &mut Vec<u8>, s: &str) {
        b.extend((s.len() as u64).to_le_bytes());
        b.extend(s.as_bytes());
    }

    #[test]
    fn rejects_bad_magic_version_and_huge_counts() {
        assert!(parse_header(b"GGML\x03\0\0\0")
            .unwrap_err()
            .contains("not a GGUF file"));
        assert!(parse_header(&header(1, 0, 0))
            .unwrap_err()
            .contains("version 1"));
        assert!(parse_header(&header(3, u64::MAX, 0))
            .unwrap_err()
            .contains("corrupted"));
        let mut b = header(3, 0, 1);
        string(&mut b, "k");
        b.extend(9u32.to_le_bytes());
        b.extend(8u32.to_le_bytes());
        b.extend(u64::MAX.to_le_bytes());
        assert!(parse_header(&b).unwrap_err().contains("claims"));
    }

    #[test]
    fn parses_every_value_type_and_tensor_infos() {
        let mut b = header(3, 1, 4);
        string(&mut b, "a.u8");
        b.extend(0u32.to_le_bytes());
        b.push(7);
        string(&mut b, "a.f64");
        b.extend(12u32.to_le_bytes());
        b.extend(2.5f64.to_le_bytes());
        string(&mut b, "a.arr");
        b.extend(9u32.to_le_bytes());
        b.extend(5u32.to_le_bytes());
        b.extend(2u64.to_le_bytes());
        b.extend((-3i32).to_le_bytes());
        b.extend(4i32.to_le_bytes());
        string(&mut b, "general.alignment");
        b.extend(4u32.to_le_bytes());
        b.extend(64u32.to_le_bytes());
        string(&mut b, "t");
        b.extend(2u32.to_le_bytes());
        b.extend(3u64.to_le_bytes());
        b.extend(2u64.to_le_bytes());
        b.extend(0u32.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        let header_len = b.len();
        b.resize(header_len.div_ceil(64) * 64 + 6 * 4, 0);
        let h = parse_header(&b).unwrap();
        assert_eq!(h.metadata[0].1, GgufValue::U8(7));
        assert_eq!(h.metadata[1].1.as_f64(), Some(2.5));
        assert_eq!(
            h.metadata[2].1,
            GgufValue::Array(vec![GgufValue::I32(-3), GgufValue::I32(4)])
        );
        assert_eq!(h.alignment, 64);
        assert_eq!(h.data_offset % 64, 0);
        assert_eq!(h.tensors[0].torch_shape(), vec![2, 3]);
        // Every truncation of this header is an error, never a panic.
        for cut in 0..header_len {
            assert!(parse_header(&b[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn dequantizes_q4_1_and_refuses_unknown_types() {
        let mut block = Vec::new();
        block.extend(half::f16::from_f32(0.5).to_le_bytes());
        block.extend(half::f16::from_f32(-1.0).to_le_bytes());
        block.extend([0x21u8; 16]);
        let v = dequantize(GgmlType::Q4_1, &block, 32).unwrap();
        assert_eq!(v[0], 0.5 * 1.0 - 1.0);
        assert_eq!(v[16], 0.5 * 2.0 - 1.0);
        let err = dequantize(GgmlType(12), &[], 0).unwrap_err();
        assert!(err.contains("unsupported quantization Q4_K"), "{err}");
        assert!(dequantize(GgmlType::Q4_1, &block[..19], 32).is_err());
    }
}
