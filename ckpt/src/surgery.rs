//! Copying one tower out of a checkpoint (`gadms_nn::surgery`'s run-time half).
//!
//! A checkpoint's shapes are only known when it is read, so copying a tower from a file of
//! another preset cannot be checked by the compiler: [`load_text_tower`] and
//! [`load_vision_tower`] check it at run time and fail with an error naming the key and both
//! shapes (`CkptError::Shape`), a missing key (`CkptError::Missing`) or the keys the tower does
//! not have (`CkptError::Unexpected`, e.g. a file whose tower is deeper). The other tower's keys
//! (and a GA-DMS decoder's) in the file are ignored.
//!
//! Key sets (native names, any layout [`read_weights`] accepts: gadms, OpenAI/open_clip, HF):
//! the text tower is `token_embedding.weight`, `positional_embedding`, `transformer.*`,
//! `ln_final.*`, `text_projection` (top level, as OpenAI CLIP's `state_dict`); the vision tower
//! is every `visual.*` key, loaded without the `visual.` prefix.

use crate::bridge::map_to_module;
use crate::clip_io::{Weights, read_weights};
use crate::error::{CkptError, Result};
use crate::layout::in_file_terms;
use crate::tensors::TensorMap;
use dfdx::nn::tensor_collection::TensorCollection;
use dfdx::prelude::Device;
use gadms_nn::Float;
use std::path::Path;

/// Top-level key prefixes of the CLIP text tower (OpenAI names).
pub const TEXT_KEYS: [&str; 5] = [
    "token_embedding.",
    "positional_embedding",
    "transformer.",
    "ln_final.",
    "text_projection",
];

/// The text tower's tensors of a native map.
pub fn text_part(native: &TensorMap) -> TensorMap {
    let mut out = TensorMap {
        metadata: native.metadata.clone(),
        origin: native.origin.clone(),
        ..Default::default()
    };
    for (k, a) in &native.tensors {
        if TEXT_KEYS.iter().any(|p| k.starts_with(p)) {
            out.insert(k.clone(), a.clone());
        }
    }
    out
}

/// The vision tower's tensors of a native map, without the `visual.` prefix.
pub fn vision_part(native: &TensorMap) -> TensorMap {
    let mut out = TensorMap {
        metadata: native.metadata.clone(),
        origin: native.origin.clone(),
        ..Default::default()
    };
    for (k, a) in &native.tensors {
        if let Some(rest) = k.strip_prefix("visual.") {
            out.insert(rest.to_string(), a.clone());
        }
    }
    out
}

fn tower_hint(e: CkptError, tower: &str, prefix: &str) -> CkptError {
    let note = format!(
        " (copying the {tower} tower: the checkpoint's {tower} tower has another shape than the \
         target type)"
    );
    match e {
        CkptError::Shape {
            path,
            key,
            found,
            expected,
            hint,
        } => CkptError::Shape {
            path,
            key: format!("{prefix}{key}"),
            found,
            expected,
            hint: format!("{hint}{note}"),
        },
        CkptError::Missing {
            path,
            key,
            expected,
            hint,
        } => CkptError::Missing {
            path,
            key: format!("{prefix}{key}"),
            expected,
            hint: format!("{hint}{note}"),
        },
        CkptError::Unexpected { path, keys } => CkptError::Unexpected {
            path,
            keys: keys.into_iter().map(|k| format!("{prefix}{k}")).collect(),
        },
        other => other,
    }
}

/// Copies the text tower of already-read weights into `text` (a `TextTower<…>`, possibly
/// `Frozen`), strictly: every tensor of the tower must be in the file with the same shape and
/// the file's text tower may hold nothing more.
pub fn text_from_weights<E: Float, D: Device<E>, T: TensorCollection<E, D>>(
    text: &mut T,
    weights: &Weights,
) -> Result<()> {
    map_to_module(&text_part(&weights.native), text)
        .map_err(|e| in_file_terms(tower_hint(e, "text", ""), &weights.native))
}

/// Copies the vision tower of already-read weights into `visual` (a `VisionTower<…>`,
/// possibly `Frozen`), strictly (see [`text_from_weights`]). The position grid is not resized:
/// the image size must be the target's.
pub fn vision_from_weights<E: Float, D: Device<E>, V: TensorCollection<E, D>>(
    visual: &mut V,
    weights: &Weights,
) -> Result<()> {
    map_to_module(&vision_part(&weights.native), visual)
        .map_err(|e| in_file_terms(tower_hint(e, "vision", "visual."), &weights.native))
}

/// Reads the checkpoint at `path` (any supported layout) and copies its text tower into `text`.
pub fn load_text_tower<E: Float, D: Device<E>, T: TensorCollection<E, D>>(
    text: &mut T,
    path: &Path,
) -> Result<()> {
    text_from_weights(text, &read_weights(path)?)
}

/// Reads the checkpoint at `path` (any supported layout) and copies its vision tower into
/// `visual`.
pub fn load_vision_tower<E: Float, D: Device<E>, V: TensorCollection<E, D>>(
    visual: &mut V,
    path: &Path,
) -> Result<()> {
    vision_from_weights(visual, &read_weights(path)?)
}
