//! PyTorch zip checkpoints (`.pt`, `.pth`, `.bin` written by `torch.save` since PyTorch 1.6):
//! a zip archive holding `PREFIX/data.pkl` (the pickled object) and `PREFIX/data/KEY` (one
//! file of raw little-endian bytes per storage).
//!
//! The pickle is read by [`crate::pickle`], which runs no code. The state dict is the top-level
//! dict if its values are tensors, else its `state_dict` or `model` entry (open_clip training
//! checkpoints, IRRA/GA-DMS `best.pth`). Tensors are range-checked against their storages and
//! converted to f32 into the same [`TensorMap`] the safetensors reader makes. Legacy (non-zip)
//! `torch.save` files and TorchScript archives are refused with the command that converts them.

use crate::error::{CkptError, Result};
use crate::pickle::{self, DType, PickleError, TensorRef, Value};
use crate::tensors::{Array, TensorMap};
use std::io::{Cursor, Read};
use std::path::Path;
use zip::ZipArchive;

/// Start of a legacy `torch.save` file: PROTO 2, then the pickled magic number
/// 0x1950a86a20f9469cfc6c (`torch/serialization.py`, `MAGIC_NUMBER`).
const LEGACY_MAGIC: [u8; 14] = [
    0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19,
];

/// Whether `bytes` start like a zip archive.
pub fn is_zip(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06")
}

/// Whether `bytes` are a legacy (pre-1.6, non-zip) `torch.save` file.
pub fn is_legacy(bytes: &[u8]) -> bool {
    bytes.starts_with(&LEGACY_MAGIC)
}

fn err(path: &Path, msg: impl Into<String>) -> CkptError {
    CkptError::Torch {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// The error for a legacy file.
pub fn legacy_error(path: &Path) -> CkptError {
    err(
        path,
        "is a legacy (pre-1.6, non-zip) torch.save file, which gadms does not read; re-save it \
         with a current PyTorch: python -c \"import torch; torch.save(torch.load('IN', \
         map_location='cpu', weights_only=True), 'OUT.pth')\" (or convert it to safetensors: \
         python -c \"import torch, safetensors.torch as st; st.save_file({k: v.contiguous() for \
         k, v in torch.load('IN', map_location='cpu', weights_only=True).items()}, \
         'OUT.safetensors')\")",
    )
}

type Archive<'a> = ZipArchive<Cursor<&'a [u8]>>;

/// Reads a PyTorch zip checkpoint already in memory; keeps the keys `keep` accepts.
pub fn read_zip(path: &Path, bytes: &[u8], keep: &dyn Fn(&str) -> bool) -> Result<TensorMap> {
    let mut zip = ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| err(path, format!("is not a readable zip archive ({e})")))?;
    let prefix = archive_prefix(path, &zip)?;
    check_byteorder(path, &mut zip, &prefix)?;
    let pkl = entry(path, &mut zip, &format!("{prefix}data.pkl"), bytes.len())?;
    let top = pickle::load(&pkl).map_err(|e| match e {
        PickleError::Refused(name) => err(
            path,
            format!("the pickle calls {name}; refusing to run code from a checkpoint"),
        ),
        PickleError::Bad(m) => err(
            path,
            format!("data.pkl is not a readable torch pickle: {m}"),
        ),
    })?;
    let dict = state_dict(path, &top)?;
    let mut map = TensorMap {
        origin: path.to_path_buf(),
        ..Default::default()
    };
    for (key, t) in dict {
        if !keep(&key) {
            continue;
        }
        let raw = entry(
            path,
            &mut zip,
            &format!("{prefix}data/{}", t.storage.key),
            bytes.len(),
        )?;
        let array = decode(path, &key, &t, &raw)?;
        *map.dtypes.entry(t.dtype.name().to_string()).or_default() += 1;
        map.insert(key, array);
    }
    Ok(map)
}

/// The `PREFIX/` of `PREFIX/data.pkl`; a TorchScript archive is refused.
fn archive_prefix(path: &Path, zip: &Archive<'_>) -> Result<String> {
    let names: Vec<String> = zip
        .file_names_raw()
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect();
    let pkl = names
        .iter()
        .filter_map(|n| n.strip_suffix("data.pkl"))
        .find(|p| p.is_empty() || (p.ends_with('/') && p.matches('/').count() == 1));
    let Some(prefix) = pkl else {
        return Err(err(
            path,
            "is a zip archive without a data.pkl, so not a torch.save checkpoint",
        ));
    };
    let script = names.iter().any(|n| {
        *n == format!("{prefix}constants.pkl") || n.starts_with(&format!("{prefix}code/"))
    });
    if script {
        return Err(err(
            path,
            "is a TorchScript archive (e.g. OpenAI's jit ViT-B-16.pt), whose pickle holds \
             TorchScript classes that gadms does not read; save its state dict first: python -c \
             \"import torch; torch.save(torch.jit.load('IN', map_location='cpu').state_dict(), \
             'OUT.pth')\"",
        ));
    }
    Ok(prefix.to_string())
}

fn check_byteorder(path: &Path, zip: &mut Archive<'_>, prefix: &str) -> Result<()> {
    let name = format!("{prefix}byteorder");
    if zip.index_for_name(&name).is_none() {
        return Ok(()); // older archives: always little-endian
    }
    let order = entry(path, zip, &name, 16)?;
    if order != b"little" {
        return Err(err(
            path,
            format!(
                "stores big-endian tensors (byteorder {:?})",
                String::from_utf8_lossy(&order)
            ),
        ));
    }
    Ok(())
}

/// Reads one archive entry, at most `cap` bytes (the file's size bounds every stored entry).
fn entry(path: &Path, zip: &mut Archive<'_>, name: &str, cap: usize) -> Result<Vec<u8>> {
    let mut f = zip
        .by_name(name)
        .map_err(|e| err(path, format!("cannot open {name} in the archive ({e})")))?;
    if f.size() > cap as u64 {
        return Err(err(
            path,
            format!("{name} claims {} bytes, more than the file", f.size()),
        ));
    }
    let mut out = Vec::with_capacity(f.size() as usize);
    f.read_to_end(&mut out)
        .map_err(|e| err(path, format!("cannot read {name} in the archive ({e})")))?;
    Ok(out)
}

fn tensor_dict(v: &Value) -> Option<Vec<(String, std::rc::Rc<TensorRef>)>> {
    let pairs = v.pairs()?;
    let tensors: Vec<_> = pairs
        .iter()
        .filter_map(|(k, v)| match (k.as_str(), v) {
            (Some(k), Value::Tensor(t)) => Some((k.to_string(), t.clone())),
            _ => None,
        })
        .collect();
    (!tensors.is_empty()).then_some(tensors)
}

/// The state dict: the top-level dict, or its `state_dict` or `model` entry.
fn state_dict(path: &Path, top: &Value) -> Result<Vec<(String, std::rc::Rc<TensorRef>)>> {
    if let Some(d) = tensor_dict(top) {
        return Ok(d);
    }
    let pairs = top.pairs().unwrap_or_default();
    for want in ["state_dict", "model"] {
        let inner = pairs.iter().find(|(k, _)| k.as_str() == Some(want));
        if let Some(d) = inner.and_then(|(_, v)| tensor_dict(v)) {
            return Ok(d);
        }
    }
    let keys: Vec<&str> = pairs
        .iter()
        .filter_map(|(k, _)| k.as_str())
        .take(10)
        .collect();
    Err(err(
        path,
        format!(
            "holds no state dict (top-level keys {keys:?}); expected a dict of tensors, \
             {{'model': …}} or {{'state_dict': …}}"
        ),
    ))
}

/// The storage element indices of a tensor, in row-major order, range-checked.
fn indices(path: &Path, key: &str, t: &TensorRef, elems: usize) -> Result<Vec<usize>> {
    let oob = || {
        err(
            path,
            format!(
                "tensor '{key}' reads past the end of its storage {}",
                t.storage.key
            ),
        )
    };
    let numel = t
        .size
        .iter()
        .try_fold(1usize, |a, &s| a.checked_mul(s))
        .ok_or_else(oob)?;
    if numel == 0 {
        return Ok(vec![]);
    }
    let last = t
        .size
        .iter()
        .zip(&t.stride)
        .try_fold(t.offset, |a, (&s, &st)| {
            (s - 1).checked_mul(st).and_then(|x| a.checked_add(x))
        });
    if last.is_none_or(|l| l >= elems) {
        return Err(oob());
    }
    if numel > elems {
        return Err(err(
            path,
            format!(
                "tensor '{key}' is an expanded view ({numel} elements over a storage of {elems}); \
                 save tensor.contiguous() instead"
            ),
        ));
    }
    let mut out = Vec::with_capacity(numel);
    let mut idx = vec![0usize; t.size.len()];
    for _ in 0..numel {
        out.push(t.offset + idx.iter().zip(&t.stride).map(|(i, s)| i * s).sum::<usize>());
        for d in (0..idx.len()).rev() {
            idx[d] += 1;
            if idx[d] < t.size[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Ok(out)
}

/// Converts a tensor's storage bytes to f32 (contiguous or strided).
fn decode(path: &Path, key: &str, t: &TensorRef, raw: &[u8]) -> Result<Array> {
    let conv: fn(&[u8]) -> f32 = match t.dtype {
        DType::F32 => |c| f32::from_le_bytes(c.try_into().unwrap()),
        DType::F64 => |c| f64::from_le_bytes(c.try_into().unwrap()) as f32,
        DType::F16 => |c| half::f16::from_le_bytes([c[0], c[1]]).to_f32(),
        DType::BF16 => |c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32(),
        DType::Other(name, _) => {
            return Err(CkptError::Dtype {
                path: path.to_path_buf(),
                key: key.to_string(),
                dtype: name.to_string(),
            });
        }
    };
    let es = t.dtype.size();
    let elems = raw.len().min(t.storage.bytes) / es;
    let data = indices(path, key, t, elems)?
        .into_iter()
        .map(|i| conv(&raw[i * es..(i + 1) * es]))
        .collect();
    Ok(Array::new(t.size.clone(), data))
}
