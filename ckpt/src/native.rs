//! gadms' native full-model files: every tensor of a model (CLIP, the MTP decoder and, for a
//! fine-tuned model, the ID classifier) under its native name, f32, in one safetensors file
//! marked `gadms.magic = gadms-model` and `gadms.layout = native`.
//!
//! Training writes them as `gadms_model.safetensors` and as a checkpoint's
//! `model.safetensors` (docs/data-format.md, "Run directories"); `--init` reads them back.
//! CLIP-only files (`last.safetensors`, exports) are written by [`crate::save_clip`] instead.

use crate::bridge::{map_to_module, module_shapes, module_to_map};
use crate::tensors::{read_file, write_file};
use crate::{Array, Result, TensorMap};
use dfdx::nn::tensor_collection::TensorCollection;
use dfdx::prelude::Device;
use gadms_nn::Float;
use std::collections::BTreeMap;
use std::path::Path;

/// The `gadms.magic` metadata value of a native full-model file.
pub const MODEL_MAGIC: &str = "gadms-model";

/// Saves every tensor of `model` (native names) and the `extra` tensors (names that `model`
/// does not have, e.g. `classifier.weight` [C, EMBED]) to `path`, atomically. `meta` is added
/// to the file's metadata beside the magic and layout.
pub fn save_model<E: Float, D: Device<E>, M: TensorCollection<E, D>>(
    model: &M,
    extra: Vec<(&str, Array)>,
    meta: &[(&str, String)],
    path: &Path,
) -> Result<()> {
    let mut map = module_to_map(model);
    for (name, a) in extra {
        map.insert(name, a);
    }
    let mut metadata = BTreeMap::from([
        ("gadms.magic".to_string(), MODEL_MAGIC.to_string()),
        ("gadms.layout".to_string(), "native".to_string()),
    ]);
    for (k, v) in meta {
        metadata.insert(k.to_string(), v.clone());
    }
    write_file(path, &map, &metadata)
}

/// Reads a native full-model file: all its tensors and metadata. Whether it is one is
/// [`is_native`]; this function does not check.
pub fn read_model(path: &Path) -> Result<TensorMap> {
    read_file(path)
}

/// Whether `map` was written by [`save_model`] (its `gadms.magic` metadata).
pub fn is_native(map: &TensorMap) -> bool {
    map.metadata.get("gadms.magic").map(String::as_str) == Some(MODEL_MAGIC)
}

/// Loads `map` into `model` (strict: every key of the model, the same shapes, nothing left
/// over). On error `model` may be partly overwritten.
pub fn load_model<E: Float, D: Device<E>, M: TensorCollection<E, D>>(
    map: &TensorMap,
    model: &mut M,
) -> Result<()> {
    map_to_module(map, model)
}

/// Splits `map` into the tensors `model` has (by native name) and the rest, moving them (no
/// copy): for a file that holds several modules side by side (CLIP, decoder, classifier).
pub fn split_for<E: Float, D: Device<E>, M: TensorCollection<E, D>>(
    map: TensorMap,
    model: &M,
) -> (TensorMap, TensorMap) {
    let keys: std::collections::BTreeSet<String> =
        module_shapes(model).into_iter().map(|(k, _)| k).collect();
    let TensorMap {
        tensors,
        metadata,
        origin,
        dtypes,
        sources,
    } = map;
    let (own, rest): (BTreeMap<_, _>, BTreeMap<_, _>) =
        tensors.into_iter().partition(|(k, _)| keys.contains(k));
    let part = |tensors| TensorMap {
        tensors,
        metadata: metadata.clone(),
        origin: origin.clone(),
        dtypes: dtypes.clone(),
        sources: sources.clone(),
    };
    (part(own), part(rest))
}
