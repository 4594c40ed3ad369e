//! `gadms embed`: L2-normalised image and text embeddings.

use crate::cmd::tokenize::read_captions;
use crate::eval::{check_finite_rows, encode_captions, encode_images};
use crate::preset::Preset;
use crate::weights::{build_loaded, read_with_preset};
use crate::with_preset;
use anyhow::{Context, Result, bail};
use argh::FromArgs;
use gadms_ckpt::tensors::write_file;
use gadms_ckpt::{Array, TensorMap};
use gadms_data::image_prep::load_normalized;
use gadms_data::{ClipTokenizer, TokenIds};
use gadms_nn::{ClipInference, ClipSpec};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Embed images and/or captions: writes `image_embeds` [N, D] and `text_embeds` [M, D]
/// (f32, L2-normalised, in input order) to a safetensors file. Images are resized to the
/// preset's size (bilinear) and normalised with the CLIP mean/std.
#[derive(FromArgs)]
#[argh(subcommand, name = "embed")]
pub struct EmbedArgs {
    /// device: cpu or cuda[:N] (default cpu; cuda needs a build with the `cuda` feature,
    /// scripts/build-cuda.sh)
    #[argh(option, default = "Default::default()")]
    pub device: crate::device::DeviceChoice,
    /// precision of the matrix products on CUDA: f32 (default), tf32 or bf16 (tensor cores
    /// with f32 sums; docs/gpu.md); the CPU computes in f32 only
    #[argh(option)]
    pub precision: Option<crate::precision::Precision>,
    /// weight file (OpenAI/open_clip, HF CLIPModel or gadms safetensors)
    #[argh(option)]
    pub weights: PathBuf,
    /// model preset (vit-b-16 or tiny); inferred from the tensor shapes when omitted
    #[argh(option)]
    pub preset: Option<Preset>,
    /// caption file, one caption per line
    #[argh(option)]
    pub texts: Option<PathBuf>,
    /// output safetensors file
    #[argh(option)]
    pub out: PathBuf,
    /// images per forward pass (default 16)
    #[argh(option, default = "16")]
    pub batch_size: usize,
    /// image files (JPEG or PNG)
    #[argh(positional)]
    pub images: Vec<PathBuf>,
}

/// Runs the command.
pub fn run(a: EmbedArgs) -> Result<()> {
    if a.images.is_empty() && a.texts.is_none() {
        bail!("nothing to embed: give image files and/or --texts FILE");
    }
    if a.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let ids = match &a.texts {
        Some(p) => Some(tokenize_file(p)?),
        None => None,
    };
    let (w, preset) = read_with_preset(&a.weights, a.preset)?;
    let spec = preset.spec();
    let pixels = load_images(&a.images, &spec)?;
    let (img, txt) = crate::with_device!(a.device, 0, precision = crate::precision::Precision::for_inference(a.precision, a.device)?, D, dev => with_preset!(preset, D, M => {
        let m: M = build_loaded(&dev, w, &a.weights)?;
        crate::eval::with_progress(|| embed_all(&m, &pixels, ids.as_deref(), a.batch_size))?
    }))?;
    write_embeds(&a, &spec, img, txt)
}

fn tokenize_file(path: &Path) -> Result<Vec<TokenIds>> {
    let caps = read_captions(path)?;
    let tok = ClipTokenizer::new()?;
    let mut ids = Vec::with_capacity(caps.len());
    for (i, c) in caps.iter().enumerate() {
        let row = tok
            .encode(c)
            .with_context(|| format!("{}:{}", path.display(), i + 1))?;
        ids.push(row);
    }
    Ok(ids)
}

fn load_images(paths: &[PathBuf], spec: &ClipSpec) -> Result<Vec<Vec<f32>>> {
    let (h, w) = (spec.vision.image_h, spec.vision.image_w);
    paths
        .iter()
        .map(|p| Ok(load_normalized(p, h, w)?))
        .collect()
}

/// (image embeddings, text embeddings), each flat [N, D] and L2-normalised.
type Embeds = (Option<Vec<f32>>, Option<Vec<f32>>);

fn embed_all<D: dfdx::prelude::Device<f32>, M: ClipInference<f32, D>>(
    m: &M,
    pixels: &[Vec<f32>],
    ids: Option<&[TokenIds]>,
    batch: usize,
) -> Result<Embeds> {
    let img = match pixels.is_empty() {
        true => None,
        false => Some(encode_images(m, pixels.len(), batch, |r| {
            Ok(pixels[r].concat())
        })?),
    };
    let d = m.spec().embed();
    if let Some(v) = &img {
        check_finite_rows(v, d, "image")?;
    }
    let txt = ids.map(|ids| encode_captions(m, ids, batch));
    if let Some(v) = &txt {
        check_finite_rows(v, d, "caption")?;
    }
    Ok((img, txt))
}

fn write_embeds(
    a: &EmbedArgs,
    spec: &ClipSpec,
    img: Option<Vec<f32>>,
    txt: Option<Vec<f32>>,
) -> Result<()> {
    let d = spec.embed();
    let mut map = TensorMap::default();
    let mut meta = BTreeMap::from([
        ("gadms.magic".to_string(), "gadms-embeds".to_string()),
        ("gadms.version".to_string(), "1".to_string()),
        ("gadms.preset".to_string(), spec.name.to_string()),
        ("gadms.weights".to_string(), a.weights.display().to_string()),
    ]);
    if let Some(v) = img {
        let n = v.len() / d;
        map.insert("image_embeds", Array::new(vec![n, d], v));
        let names: Vec<String> = a.images.iter().map(|p| p.display().to_string()).collect();
        meta.insert("gadms.images".into(), serde_json::to_string(&names)?);
    }
    if let Some(v) = txt {
        let n = v.len() / d;
        map.insert("text_embeds", Array::new(vec![n, d], v));
        let t = a
            .texts
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        meta.insert("gadms.texts".into(), t);
    }
    write_file(&a.out, &map, &meta)?;
    let count = |k: &str| map.get(k).map_or(0, |x| x.shape[0]);
    println!(
        "wrote {} ({} image embeds, {} text embeds, dim {d})",
        a.out.display(),
        count("image_embeds"),
        count("text_embeds")
    );
    Ok(())
}
