//! Loading a `--weights` file into a preset's model, for every command that takes one: read
//! the file once (any layout `gadms_ckpt::read_weights` knows: OpenAI/open_clip, HF CLIPModel,
//! gadms), pick the preset (flag or inferred from the shapes), build the model and copy the
//! weights in. All safetensors reading goes through `gadms-ckpt`.

use crate::preset::{Dev, Preset};
use anyhow::{Context, Result};
use dfdx::nn::BuildModule;
use dfdx::nn::tensor_collection::TensorCollection;
use gadms_ckpt::{Weights, infer_preset, load_clip_weights, read_weights};
use gadms_nn::HasClipSpec;
use std::path::Path;

/// Reads `path` and decides the preset: `flag` if given, else the one the shapes fit.
pub fn read_with_preset(path: &Path, flag: Option<Preset>) -> Result<(Weights, Preset)> {
    let w = read_weights(path)?;
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
pub fn build_loaded<M>(dev: &Dev, w: Weights, source: &Path) -> Result<M>
where
    M: BuildModule<Dev, f32> + TensorCollection<f32, Dev> + HasClipSpec,
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
