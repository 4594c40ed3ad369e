//! Helpers shared by the root integration tests and `gadms-ckpt`'s reference tests (which
//! include this file by path): fixture access and tolerant comparison.
#![allow(dead_code)]

use gadms_ckpt::tensors::{read_file_filtered, read_ints};
use gadms_ckpt::{Array, TensorMap};
use std::path::{Path, PathBuf};

/// Path of a committed fixture: `name` relative to the workspace's `fixtures/` (found from the
/// testing crate's directory upwards).
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|d| d.join("fixtures"))
        .find(|d| d.is_dir())
        .expect("a fixtures/ directory above the crate")
        .join(name)
}

/// The tensors of a fixture whose keys start with `prefix`, with the prefix removed.
pub fn section(file: &str, prefix: &str) -> TensorMap {
    let path = fixture(file);
    let mut m = read_file_filtered(&path, |k| k.starts_with(prefix)).expect("fixture");
    m.tensors = std::mem::take(&mut m.tensors)
        .into_iter()
        .map(|(k, v)| (k[prefix.len()..].to_string(), v))
        .collect();
    m
}

/// One float tensor of a fixture.
pub fn tensor(file: &str, key: &str) -> Array {
    section(file, key)
        .tensors
        .remove("")
        .unwrap_or_else(|| panic!("{key} not in {file}"))
}

/// Token-id rows [B, 77] of a fixture.
pub fn id_rows(file: &str, key: &str) -> Vec<[u32; 77]> {
    let (shape, ids) = read_ints(&fixture(file), key).expect("ids");
    assert_eq!(shape[1], 77);
    ids.chunks_exact(77)
        .map(|r| {
            let v: Vec<u32> = r.iter().map(|&x| x as u32).collect();
            v.try_into().unwrap()
        })
        .collect()
}

/// Max |a−b| / max|b|. Tensors whose reference is essentially zero everywhere (max|b| < 1e-4,
/// e.g. the key-bias gradients, which are exactly zero in exact arithmetic) are compared with
/// an absolute tolerance of 1e-5 instead; the value returned is then `max|a−b| / 1e-1`.
pub fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let diff = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() as f64)
        .fold(0.0, f64::max);
    let scale = b.iter().map(|y| y.abs() as f64).fold(0.0, f64::max);
    if scale < 1e-4 {
        diff / 1e-1
    } else {
        diff / scale
    }
}

/// Asserts relative error ≤ `tol` and equal shapes.
pub fn assert_close(name: &str, got: &Array, want: &Array, tol: f64) {
    assert_eq!(got.shape, want.shape, "{name}: shape");
    let e = rel_err(&got.data, &want.data);
    assert!(e <= tol, "{name}: relative error {e:.3e} > {tol:.0e}");
}

/// Compares every key of `want` against `got` (both must have the same key set, minus `skip`).
pub fn assert_maps_close(what: &str, got: &TensorMap, want: &TensorMap, skip: &[&str], tol: f64) {
    let gk: Vec<&String> = got
        .tensors
        .keys()
        .filter(|k| !skip.contains(&k.as_str()))
        .collect();
    let wk: Vec<&String> = want
        .tensors
        .keys()
        .filter(|k| !skip.contains(&k.as_str()))
        .collect();
    assert_eq!(gk, wk, "{what}: key sets differ");
    let mut worst = (0.0, String::new());
    for k in wk {
        let e = rel_err(&got.tensors[k].data, &want.tensors[k].data);
        assert_eq!(
            got.tensors[k].shape, want.tensors[k].shape,
            "{what} {k}: shape"
        );
        if e > worst.0 {
            worst = (e, k.clone());
        }
    }
    assert!(
        worst.0 <= tol,
        "{what}: worst relative error {:.3e} at {}",
        worst.0,
        worst.1
    );
    eprintln!("{what}: worst relative error {:.3e} ({})", worst.0, worst.1);
}
