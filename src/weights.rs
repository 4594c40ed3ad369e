//! Loading a `--weights` file into a preset's model, for every command that takes one: read
//! the file once (any layout `gadms_ckpt::read_weights` knows: OpenAI/open_clip, HF CLIPModel,
//! gadms), pick the preset (flag or inferred from the shapes), build the model and copy the
//! weights in. All safetensors reading goes through `gadms-ckpt`. A directory stands for the
//! weight file in it ([`weight_file`]): a gadms run directory, an open_clip export folder or a
//! Hugging Face model folder.

use crate::preset::Preset;
use anyhow::{Context, Result};
use dfdx::nn::BuildModule;
use dfdx::nn::tensor_collection::TensorCollection;
use gadms_ckpt::{Weights, infer_preset, load_clip_weights, read_weights};
use gadms_nn::HasClipSpec;
use std::path::{Path, PathBuf};

/// Reads `path` and decides the preset: `flag` if given, else the one the shapes fit.
pub fn read_with_preset(path: &Path, flag: Option<Preset>) -> Result<(Weights, Preset)> {
    let file = weight_file(path)?;
    let w = read_weights(&file).with_context(|| format!("reading {}", file.display()))?;
    let preset = match flag {
        Some(p) => p,
        None => {
            let spec = infer_preset(&w.native)?;
            Preset::from_spec(&spec).context("inferred preset is not a named preset")?
        }
    };
    Ok((w, preset))
}

/// Builds a model of type `M` on `dev` and loads `w` into it; prints load notes to stderr.
pub fn build_loaded<D, M>(dev: &D, w: Weights, source: &Path) -> Result<M>
where
    D: dfdx::prelude::Device<f32>,
    M: BuildModule<D, f32> + TensorCollection<f32, D> + HasClipSpec,
{
    let mut m = M::build(dev);
    let report = load_clip_weights(&mut m, &M::SPEC, w)?;
    eprintln!(
        "loaded {} ({} layout) as preset {}",
        source.display(),
        report.layout,
        M::SPEC.name
    );
    for n in report.notes {
        eprintln!("note: {n}");
    }
    Ok(m)
}

/// The files a weight directory is searched for, in this order: a gadms run's best and last
/// CLIP weights, then an open_clip export folder's, then a Hugging Face model folder's
/// (safetensors before PyTorch files).
pub const DIR_FILES: [&str; 6] = [
    "best.safetensors",
    "last.safetensors",
    "open_clip_model.safetensors",
    "model.safetensors",
    "open_clip_pytorch_model.bin",
    "pytorch_model.bin",
];

/// `path` itself when it is a file; for a directory, the first of [`DIR_FILES`] in it.
pub fn weight_file(path: &Path) -> Result<PathBuf> {
    if !path.is_dir() {
        return Ok(path.to_path_buf());
    }
    DIR_FILES
        .iter()
        .map(|f| path.join(f))
        .find(|p| p.is_file())
        .with_context(|| {
            format!(
                "{}: a directory without weights (looked for {})",
                path.display(),
                DIR_FILES.join(", ")
            )
        })
}
