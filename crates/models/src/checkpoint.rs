//! Weight files: safetensors in and out, and a clear refusal of pickles.
//!
//! Writes are atomic (temp file in the same folder, fsync, rename), so an interrupted save never
//! leaves a half-written model where a good one was.

use crate::{ModelError, Result};
use safetensors::tensor::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

const PICKLE_EXTENSIONS: &[&str] = &["bin", "pt", "pth", "pkl", "pickle", "ckpt"];

/// Errors out on a pickle checkpoint (by extension), naming the conversion to make.
pub fn refuse_pickle(path: &Path) -> Result<()> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    if PICKLE_EXTENSIONS.contains(&ext.as_str()) {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        return Err(ModelError::Pickle {
            path: path.to_path_buf(),
            name,
        });
    }
    Ok(())
}

/// Reads every tensor of a safetensors file onto `device`, keeping each tensor's stored dtype.
pub fn load_safetensors(path: &Path, device: Device) -> Result<HashMap<String, Tensor>> {
    refuse_pickle(path)?;
    let file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
    // SAFETY: the map is read-only and dropped before this function returns; a concurrent writer
    // would at worst give wrong numbers, which the atomic writes of this crate rule out.
    let bytes = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| ModelError::io(path, e))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| ModelError::format(path, format!("not a valid safetensors file: {e}")))?;
    let mut out = HashMap::with_capacity(st.len());
    for (name, view) in st.tensors() {
        let kind = kind_of(view.dtype()).ok_or_else(|| {
            ModelError::format(
                path,
                format!("tensor `{name}` has unsupported dtype {:?}", view.dtype()),
            )
        })?;
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        let tensor = Tensor::f_from_data_size(view.data(), &shape, kind)?.to_device(device);
        out.insert(name, tensor);
    }
    Ok(out)
}

/// Writes `tensors` as safetensors with `{"format": "pt"}` metadata, which transformers and PEFT expect.
/// Tensors stream to the file one at a time from their own memory, so saving a checkpoint costs no
/// second copy of the weights and optimizer state.
pub fn save_safetensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    let mut views = Vec::with_capacity(tensors.len());
    for (name, tensor) in tensors {
        let tensor = tensor.to_device(Device::Cpu).contiguous();
        let dtype = dtype_of(tensor.kind()).ok_or_else(|| {
            ModelError::Unsupported(format!(
                "saving tensor `{name}` of kind {:?}",
                tensor.kind()
            ))
        })?;
        let shape = tensor.size().iter().map(|&d| d as usize).collect();
        views.push((
            name.as_str(),
            TensorBytes {
                tensor,
                dtype,
                shape,
            },
        ));
    }
    let metadata = Some(HashMap::from([("format".to_string(), "pt".to_string())]));
    atomic_write_with(path, |tmp| {
        safetensors::tensor::serialize_to_file(views, metadata, tmp).map_err(|e| match e {
            safetensors::SafeTensorError::IoError(e) => e,
            other => std::io::Error::other(format!("serializing: {other}")),
        })
    })
}

/// A contiguous CPU tensor seen as the bytes safetensors writes.
struct TensorBytes {
    tensor: Tensor,
    dtype: Dtype,
    shape: Vec<usize>,
}

impl safetensors::View for TensorBytes {
    fn dtype(&self) -> Dtype {
        self.dtype
    }

    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        let len = self.data_len();
        if len == 0 {
            return std::borrow::Cow::Borrowed(&[]);
        }
        // SAFETY: the tensor is contiguous, on the CPU, `len` bytes long from its data pointer,
        // and alive (held by `self`) for as long as the borrow.
        std::borrow::Cow::Borrowed(unsafe {
            std::slice::from_raw_parts(self.tensor.data_ptr() as *const u8, len)
        })
    }

    fn data_len(&self) -> usize {
        self.tensor.numel() * self.tensor.kind().elt_size_in_bytes()
    }
}

/// Writes every variable of `vs` under its own name, sorted, cast to `kind` when one is given
/// (exports are float32 whatever dtype the model ran in).
pub fn save_var_store(vs: &tch::nn::VarStore, path: &Path, kind: Option<Kind>) -> Result<()> {
    let mut tensors: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(name, t)| match kind {
            Some(kind) => (name, t.detach().to_kind(kind)),
            None => (name, t),
        })
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    save_safetensors(path, &tensors)
}

/// Writes `bytes` to `path` through a temp file in the same folder, fsynced, then renamed over it.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    atomic_write_with(path, |tmp| std::fs::write(tmp, bytes))
}

/// `write` fills the temp file at the path it is given; the file is then fsynced and renamed
/// over `path`. On any failure the temp file is removed and `path` keeps what it held.
fn atomic_write_with(path: &Path, write: impl FnOnce(&Path) -> std::io::Result<()>) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    let tmp: PathBuf = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ));
    let result = (|| {
        write(&tmp)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(ModelError::io(path, e));
    }
    Ok(())
}

fn kind_of(dtype: Dtype) -> Option<Kind> {
    Some(match dtype {
        Dtype::BOOL => Kind::Bool,
        Dtype::U8 => Kind::Uint8,
        Dtype::I8 => Kind::Int8,
        Dtype::I16 => Kind::Int16,
        Dtype::I32 => Kind::Int,
        Dtype::I64 => Kind::Int64,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        _ => return None,
    })
}

fn dtype_of(kind: Kind) -> Option<Dtype> {
    Some(match kind {
        Kind::Bool => Dtype::BOOL,
        Kind::Uint8 => Dtype::U8,
        Kind::Int8 => Dtype::I8,
        Kind::Int16 => Dtype::I16,
        Kind::Int => Dtype::I32,
        Kind::Int64 => Dtype::I64,
        Kind::Half => Dtype::F16,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Float => Dtype::F32,
        Kind::Double => Dtype::F64,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_dtypes_and_refuses_pickles() {
        let dir = std::env::temp_dir().join(format!("ragtune-ckpt-{}", std::process::id()));
        let path = dir.join("w.safetensors");
        let a = Tensor::arange(6, (Kind::Float, Device::Cpu)).reshape([2, 3]);
        let b = a.to_kind(Kind::BFloat16);
        save_safetensors(
            &path,
            &[
                ("a".into(), a.shallow_clone()),
                ("b".into(), b.shallow_clone()),
            ],
        )
        .unwrap();
        let back = load_safetensors(&path, Device::Cpu).unwrap();
        assert!(back["a"].equal(&a));
        assert_eq!(back["b"].kind(), Kind::BFloat16);
        assert!(back["b"].equal(&b));
        let err = load_safetensors(&dir.join("pytorch_model.bin"), Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(err.contains("pickle") && err.contains("save_file"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
