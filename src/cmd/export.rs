//! `gadms export`: weights to an open_clip or Hugging Face directory.

use crate::preset::{Dev, Preset};
use crate::weights::{build_loaded, read_with_preset};
use crate::with_preset;
use anyhow::{Result, bail};
use argh::FromArgs;
use gadms_ckpt::{ExportReport, export_hf, export_open_clip};
use gadms_nn::HasClipSpec;
use std::path::PathBuf;

/// Export weights for other frameworks: `open-clip` (open_clip_model.safetensors +
/// open_clip_config.json, loadable with `open_clip.create_model('local-dir:DIR')`) or `hf`
/// (model.safetensors + config.json for transformers' CLIPModel, with the tokenizer and
/// preprocessor files of CLIPProcessor; the non-square position grid is resampled to a square
/// one).
#[derive(FromArgs)]
#[argh(subcommand, name = "export")]
pub struct ExportArgs {
    /// weight file (OpenAI/open_clip, HF CLIPModel or gadms safetensors)
    #[argh(option)]
    pub weights: PathBuf,
    /// output format: open-clip or hf
    #[argh(option)]
    pub format: String,
    /// output directory (created if missing)
    #[argh(option)]
    pub out: PathBuf,
    /// model preset (vit-b-16 or tiny); inferred from the tensor shapes when omitted
    #[argh(option)]
    pub preset: Option<Preset>,
}

/// Runs the command.
pub fn run(a: ExportArgs) -> Result<()> {
    let hf = match a.format.as_str() {
        "open-clip" | "open_clip" | "openclip" => false,
        "hf" | "huggingface" => true,
        f => bail!("unknown --format '{f}': use open-clip or hf"),
    };
    let (w, preset) = read_with_preset(&a.weights, a.preset)?;
    let dev = Dev::default();
    let mut report: ExportReport = with_preset!(preset, M => {
        let m: M = build_loaded(&dev, w, &a.weights)?;
        if hf { export_hf(&m, &M::SPEC, &a.out)? } else { export_open_clip(&m, &M::SPEC, &a.out)? }
    });
    if hf {
        let spec = preset.spec();
        report
            .files
            .extend(super::hf_processor::write_processor_files(&a.out, &spec)?);
        let (gh, gw) = spec.vision.grid();
        if gh != gw {
            report.notes.push(format!(
                "preprocessor_config.json resizes to {}x{} as gadms does: pass \
                 interpolate_pos_encoding=True to CLIPModel (the {gh}x{gw} grid stored as \
                 {s}x{s} is resampled back, close to but not exactly gadms' model; the open-clip \
                 export keeps the grid as it is)",
                spec.vision.image_h,
                spec.vision.image_w,
                s = gh.max(gw)
            ));
        }
    }
    for n in &report.notes {
        eprintln!("note: {n}");
    }
    for f in &report.files {
        println!("wrote {}", f.display());
    }
    Ok(())
}
