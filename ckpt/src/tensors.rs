//! A plain name → f32 array map, read from and written to safetensors files (and read from
//! PyTorch zip checkpoints through [`crate::torch`]).
//!
//! All weights are held as `f32` on the host: F16, BF16 and F64 inputs are converted on read.
//! Integer tensors (only in test fixtures) are read through [`read_ints`].

use crate::error::{CkptError, Result};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One host tensor: shape and row-major f32 data.
#[derive(Clone, Debug, PartialEq)]
pub struct Array {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// `shape.iter().product()` values, row-major.
    pub data: Vec<f32>,
}

impl Array {
    /// A new array; panics if the data length does not match the shape (a programming error).
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "Array::new: shape/data mismatch"
        );
        Array { shape, data }
    }
    /// Element count.
    pub fn numel(&self) -> usize {
        self.data.len()
    }
}

/// Named tensors in key order, plus the file's string metadata.
#[derive(Clone, Debug, Default)]
pub struct TensorMap {
    /// The tensors.
    pub tensors: BTreeMap<String, Array>,
    /// safetensors `__metadata__`.
    pub metadata: BTreeMap<String, String>,
    /// Where it came from (for error messages).
    pub origin: PathBuf,
    /// The widest dtype seen on read (`F32`, `F16`, `BF16`, `F64`), for `inspect`.
    pub dtypes: BTreeMap<String, usize>,
    /// Tensors renamed or reshaped on their way to native names ([`crate::layout::to_native`]):
    /// native key → (the file's key, the file's shape), so that errors name the tensor as the
    /// file holds it.
    pub sources: BTreeMap<String, (String, Vec<usize>)>,
}

impl TensorMap {
    /// Looks up a key.
    pub fn get(&self, key: &str) -> Option<&Array> {
        self.tensors.get(key)
    }
    /// Inserts a tensor.
    pub fn insert(&mut self, key: impl Into<String>, a: Array) {
        self.tensors.insert(key.into(), a);
    }
    /// Total number of scalars.
    pub fn numel(&self) -> usize {
        self.tensors.values().map(Array::numel).sum()
    }
}

fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| CkptError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn parse<'a>(path: &Path, bytes: &'a [u8]) -> Result<SafeTensors<'a>> {
    SafeTensors::deserialize(bytes).map_err(|e| CkptError::Format {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })
}

fn to_f32(path: &Path, key: &str, v: &TensorView<'_>) -> Result<Vec<f32>> {
    let b = v.data();
    let out = match v.dtype() {
        Dtype::F32 => b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        Dtype::F64 => b
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
            .collect(),
        Dtype::F16 => b
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => b
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        other => {
            return Err(CkptError::Dtype {
                path: path.to_path_buf(),
                key: key.to_string(),
                dtype: format!("{other:?}"),
            });
        }
    };
    Ok(out)
}

/// Reads every floating-point tensor of a safetensors file, or of a PyTorch zip checkpoint
/// ([`crate::torch`]), as f32.
///
/// Integer tensors are an error naming the key (weights are never integers).
pub fn read_file(path: &Path) -> Result<TensorMap> {
    let bytes = read_bytes(path)?;
    read_bytes_as_map(path, &bytes, |_| true)
}

/// Like [`read_file`] but keeps only keys for which `keep` is true (others are not decoded,
/// so integer fixtures can sit beside float ones).
pub fn read_file_filtered(path: &Path, keep: impl Fn(&str) -> bool) -> Result<TensorMap> {
    let bytes = read_bytes(path)?;
    read_bytes_as_map(path, &bytes, keep)
}

fn read_bytes_as_map(path: &Path, bytes: &[u8], keep: impl Fn(&str) -> bool) -> Result<TensorMap> {
    if crate::torch::is_zip(bytes) {
        return crate::torch::read_zip(path, bytes, &keep);
    }
    if crate::torch::is_legacy(bytes) {
        return Err(crate::torch::legacy_error(path));
    }
    let st = parse(path, bytes)?;
    let mut map = TensorMap {
        origin: path.to_path_buf(),
        ..Default::default()
    };
    if let Ok((_, meta)) = SafeTensors::read_metadata(bytes)
        && let Some(m) = meta.metadata()
    {
        map.metadata = m.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    }
    for (key, view) in st.tensors() {
        if !keep(&key) {
            continue;
        }
        let data = to_f32(path, &key, &view)?;
        *map.dtypes.entry(format!("{:?}", view.dtype())).or_default() += 1;
        map.insert(key, Array::new(view.shape().to_vec(), data));
    }
    Ok(map)
}

/// Refuses a map holding NaN or ±Inf: the first such tensor (key order) is named with its
/// count of non-finite values. F64 values beyond the f32 range were read as ±Inf and are
/// refused too.
pub fn check_finite(map: &TensorMap) -> Result<()> {
    for (key, a) in &map.tensors {
        let count = a.data.iter().filter(|x| !x.is_finite()).count();
        if count > 0 {
            return Err(CkptError::NonFinite {
                path: map.origin.clone(),
                key: key.clone(),
                count,
            });
        }
    }
    Ok(())
}

/// Reads one integer tensor (I64/I32/U32) as `i64`, with its shape (used by test fixtures).
pub fn read_ints(path: &Path, key: &str) -> Result<(Vec<usize>, Vec<i64>)> {
    let bytes = read_bytes(path)?;
    let st = parse(path, &bytes)?;
    let v = st.tensor(key).map_err(|_| CkptError::Missing {
        path: path.to_path_buf(),
        key: key.to_string(),
        expected: vec![],
        hint: "integer tensor not in file".into(),
    })?;
    let b = v.data();
    let data = match v.dtype() {
        Dtype::I64 => b
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        Dtype::I32 => b
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64)
            .collect(),
        Dtype::U32 => b
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()) as i64)
            .collect(),
        other => {
            return Err(CkptError::Dtype {
                path: path.to_path_buf(),
                key: key.to_string(),
                dtype: format!("{other:?} (wanted an integer tensor)"),
            });
        }
    };
    Ok((v.shape().to_vec(), data))
}

/// Writes tensors as F32 safetensors with `{"format": "pt"}` plus `metadata`, atomically:
/// the bytes go to `<path>.tmp` and are renamed into place, so a crash never leaves a
/// half-written file under the final name.
pub fn write_file(path: &Path, map: &TensorMap, metadata: &BTreeMap<String, String>) -> Result<()> {
    let werr = |msg: String| CkptError::Write {
        path: path.to_path_buf(),
        msg,
    };
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = map
        .tensors
        .iter()
        .map(|(k, a)| {
            let raw: Vec<u8> = a.data.iter().flat_map(|x| x.to_le_bytes()).collect();
            (k.clone(), raw, a.shape.clone())
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = bytes
        .iter()
        .map(|(k, raw, shape)| {
            let v = TensorView::new(Dtype::F32, shape.clone(), raw).expect("shape matches data");
            (k.clone(), v)
        })
        .collect();
    let mut meta: std::collections::HashMap<String, String> = metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    meta.insert("format".into(), "pt".into());
    let data = safetensors::serialize(views, Some(meta)).map_err(|e| werr(e.to_string()))?;
    write_atomic(path, &data).map_err(werr)
}

/// Writes `data` to `path` through a temporary sibling and a rename.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::result::Result<(), String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    // A name of this process and call alone, so two writers of one file never share a
    // temporary (the last rename wins, whole).
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp.{}.{n}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let res = std::fs::write(&tmp, data).and_then(|_| std::fs::rename(&tmp, path));
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.to_string());
    }
    Ok(())
}
