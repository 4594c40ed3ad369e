//! `--init WEIGHTS` of `pretrain` and `finetune`: start from existing weights.
//!
//! Accepted:
//! * an OpenAI / open_clip / IRRA CLIP safetensors file, a Hugging Face `CLIPModel` file or a
//!   gadms CLIP file (`last.safetensors`, `best.safetensors`, `export` output), read by
//!   [`gadms_ckpt::clip_io::load_clip_weights`] (layout detection, dtype upcast, position-grid resize);
//! * a gadms full-model file (`gadms.magic = gadms-model`: `gadms_model.safetensors`, a
//!   checkpoint's `model.safetensors`): its CLIP tensors, and the MTP decoder's when the file
//!   holds them and the model has one (GA-DMS `finetune.py` also loads the decoder, docs/method.md §6.2);
//! * a run directory: its latest checkpoint's `model.safetensors`, else
//!   `gadms_model.safetensors`, else `last.safetensors`.
//!
//! A file of another preset or with other shapes is refused with the key and both shapes
//! (and the `--preset` to use); nothing is half-loaded into a model that is then trained.

use super::run_dir;
use anyhow::{Context, Result, bail};
use dfdx::nn::tensor_collection::TensorCollection;
use dfdx::prelude::Device;
use gadms_ckpt::bridge::map_to_module;
use gadms_ckpt::clip_io::{Weights, load_clip_weights};
use gadms_ckpt::layout::{Layout, to_native};
use gadms_ckpt::native::split_for;
use gadms_ckpt::tensors::read_file;
use gadms_nn::ClipSpec;
use std::path::{Path, PathBuf};

/// What [`load_init`] loaded.
#[derive(Clone, Debug)]
pub struct InitReport {
    /// The file read.
    pub path: PathBuf,
    /// One line for the log.
    pub summary: String,
    /// Whether the decoder was loaded too.
    pub decoder: bool,
}

/// The weight file `--init PATH` names (a run directory resolves to a file in it).
pub fn resolve(path: &Path) -> Result<PathBuf> {
    if !path.exists() {
        bail!("--init {}: no such file or directory", path.display());
    }
    if !path.is_dir() {
        return Ok(path.to_path_buf());
    }
    if path.join(run_dir::POINTER).exists() {
        let (dir, _) = run_dir::latest(path)?;
        return Ok(dir.join(run_dir::MODEL_FILE));
    }
    for name in [run_dir::GADMS_MODEL_FILE, run_dir::LAST_FILE] {
        if path.join(name).exists() {
            return Ok(path.join(name));
        }
    }
    // An open_clip or Hugging Face folder.
    crate::weights::weight_file(path).with_context(|| format!("--init {}", path.display()))
}

/// Loads `--init path` into `clip` (sizes `spec`) and, when given and present in the file,
/// into `decoder`. On error the models may be partly overwritten (the caller exits).
pub fn load_init<D: Device<f32>, C: TensorCollection<f32, D>, M: TensorCollection<f32, D>>(
    clip: &mut C,
    spec: &ClipSpec,
    decoder: Option<&mut M>,
    path: &Path,
) -> Result<InitReport> {
    let file = resolve(path)?;
    let ctx = || format!("--init {}", file.display());
    let map = read_file(&file).with_context(ctx)?;
    gadms_ckpt::tensors::check_finite(&map).with_context(ctx)?;
    if !gadms_ckpt::native::is_native(&map) {
        // The map already read: layout detection and loading, without reading the file again.
        let (layout, native) = to_native(map).with_context(ctx)?;
        let r = load_clip_weights(clip, spec, Weights { layout, native }).with_context(ctx)?;
        let mut summary = format!(
            "--init {}: CLIP weights ({} layout) into the '{}' preset",
            file.display(),
            r.layout,
            spec.name
        );
        for n in r.notes {
            summary += &format!("; {n}");
        }
        return Ok(InitReport {
            path: file,
            summary,
            decoder: false,
        });
    }
    // A gadms full-model file: native names, CLIP and (maybe) decoder keys side by side.
    let (clip_map, rest) = split_for(map, clip);
    load_clip_weights(
        clip,
        spec,
        Weights {
            layout: Layout::Native,
            native: clip_map,
        },
    )
    .with_context(ctx)?;
    let mut loaded_decoder = false;
    if let Some(dec) = decoder
        && !rest.tensors.is_empty()
    {
        let (dec_map, _) = split_for(rest, dec);
        if !dec_map.tensors.is_empty() {
            map_to_module(&dec_map, dec)
                .with_context(|| format!("--init {}: the MTP decoder", file.display()))?;
            loaded_decoder = true;
        }
    }
    Ok(InitReport {
        summary: format!(
            "--init {}: gadms model, CLIP{} into the '{}' preset",
            file.display(),
            if loaded_decoder {
                " and MTP decoder"
            } else {
                ""
            },
            spec.name
        ),
        path: file,
        decoder: loaded_decoder,
    })
}
