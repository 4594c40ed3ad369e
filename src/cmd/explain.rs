//! `gadms explain`: the GASS score of every caption token for one (image, caption) pair and the
//! dual-masking probabilities they imply (docs/method.md §3, §4.1), as a table, JSON
//! and an HTML page that colours each word by its score.

use crate::cmd::pretrain::GassNormArg;
use crate::preset::Preset;
use crate::report::{check_query, data_uri, escape, page, score_colour};
use crate::weights::{build_loaded, read_with_preset};
use crate::with_preset;
use anyhow::{Context, Result, bail};
use argh::FromArgs;
use dfdx::prelude::*;
use gadms_ckpt::tensors::write_atomic;
use gadms_data::ClipTokenizer;
use gadms_data::image_prep::load_normalized;
use gadms_data::masking::MaskingConfig;
use gadms_nn::ClipInference;
use gadms_nn::clip::Clip;
use gadms_nn::gass::{GassConfig, gass_scores};
use gadms_nn::text::{TextInput, TextTower};
use gadms_nn::vision::VisionTower;
use std::path::PathBuf;

/// Explain a match: GASS scores of the caption's tokens for an image, and the noise /
/// informative masking probabilities p_noise(s), p_info(s) they give.
#[derive(FromArgs)]
#[argh(subcommand, name = "explain")]
pub struct ExplainArgs {
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
    /// the image (JPEG or PNG)
    #[argh(option)]
    pub image: PathBuf,
    /// the caption
    #[argh(option)]
    pub text: String,
    /// write an HTML page colouring each word by its score
    #[argh(option)]
    pub html: Option<PathBuf>,
    /// write {"tokens", "ids", "scores", "p_noise", "p_info"} as JSON
    #[argh(option)]
    pub json: Option<PathBuf>,
    /// text blocks re-run by GASS (default 8, clamped to the tower depth)
    #[argh(option, default = "8")]
    pub gass_layers: usize,
    /// GASS layer-map normalisation: paper (Eq. 3, default) or official
    #[argh(option, default = "GassNormArg::Paper")]
    pub gass_norm: GassNormArg,
}

/// What `--json` writes: one entry per caption token (SOT, EOT and padding excluded).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Explanation {
    /// Readable token strings (`ClipTokenizer::token_strings`).
    pub tokens: Vec<String>,
    /// Token ids.
    pub ids: Vec<u32>,
    /// GASS scores in [0, 1].
    pub scores: Vec<f32>,
    /// Noise-masking probability p_noise(s) (§4.1 Eq. 5).
    pub p_noise: Vec<f64>,
    /// Informative-masking probability p_info(s) (§4.1 Eq. 9).
    pub p_info: Vec<f64>,
}

/// Models that can run GASS for one (image, caption) pair.
pub trait GassExplain {
    /// GASS scores [CTX] of caption `ids` for image `pixels` (one CLIP-normalised image) and
    /// the image–text cosine.
    fn explain_pair(
        &self,
        pixels: Vec<f32>,
        ids: &[u32],
        cfg: &GassConfig,
    ) -> Result<(Vec<f32>, f32)>;
}

impl<
    const IMG_H: usize,
    const IMG_W: usize,
    const PATCH: usize,
    const PATCH_DIM: usize,
    const SEQ: usize,
    const VW: usize,
    const VH: usize,
    const VHD: usize,
    const VF: usize,
    const VL: usize,
    const VOCAB: usize,
    const CTX: usize,
    const TW: usize,
    const TH: usize,
    const THD: usize,
    const TF: usize,
    const TL: usize,
    const EMBED: usize,
    D: Device<f32>,
> GassExplain
    for Clip<
        VisionTower<IMG_H, IMG_W, PATCH, PATCH_DIM, SEQ, VW, VH, VHD, VF, VL, EMBED, f32, D>,
        TextTower<VOCAB, CTX, TW, TH, THD, TF, TL, EMBED, f32, D>,
    >
where
    Self: ClipInference<f32, D>,
{
    fn explain_pair(
        &self,
        pixels: Vec<f32>,
        ids: &[u32],
        cfg: &GassConfig,
    ) -> Result<(Vec<f32>, f32)> {
        let row: [u32; CTX] = ids
            .try_into()
            .map_err(|_| anyhow::anyhow!("caption must have {CTX} token ids, got {}", ids.len()))?;
        let cls = self.image_features(pixels, 1);
        let dev = self.text.text_projection.device().clone();
        let cls_t = dev.tensor_from_vec(cls, (1usize, Const::<EMBED>));
        let input = TextInput::<CTX, D>::new(&dev, &[row]);
        let out = gass_scores(&self.text, cls_t, &input, cfg).map_err(anyhow::Error::msg)?;
        Ok((out.scores, out.cos[0]))
    }
}

/// Runs the command.
pub fn run(a: ExplainArgs) -> Result<()> {
    if let Some(w) = check_query(&a.text).map_err(|m| anyhow::anyhow!("--text: {m}"))? {
        eprintln!("warning: {w}");
    }
    let tok = ClipTokenizer::new()?;
    let ids = tok.encode(&a.text).context("--text")?;
    let (w, preset) = read_with_preset(&a.weights, a.preset)?;
    let spec = preset.spec();
    let pixels = load_normalized(&a.image, spec.vision.image_h, spec.vision.image_w)?;
    let depth = spec.text.layers;
    let layers = a.gass_layers.clamp(1, depth.max(1));
    if layers != a.gass_layers {
        eprintln!(
            "note: --gass-layers {} clamped to {layers} (the '{}' text tower has {depth} blocks)",
            a.gass_layers, spec.name
        );
    }
    let cfg = GassConfig {
        layers,
        norm: a.gass_norm.into(),
        ..GassConfig::default()
    };
    let (scores, cos) = crate::with_device!(a.device, 0, precision = crate::precision::Precision::for_inference(a.precision, a.device)?, D, dev => with_preset!(preset, D, M => {
        let m: M = build_loaded(&dev, w, &a.weights)?;
        m.explain_pair(pixels, &ids, &cfg)?
    }))?;
    let eos = ClipTokenizer::eos_index(&ids);
    if eos <= 1 {
        bail!("--text {:?}: the caption has no tokens", a.text);
    }
    let mask = MaskingConfig::default();
    let span = 1..eos;
    let strings = tok.token_strings(&ids);
    let ex = Explanation {
        tokens: strings[span.clone()].to_vec(),
        ids: ids[span.clone()].to_vec(),
        scores: scores[span.clone()].to_vec(),
        p_noise: scores[span.clone()]
            .iter()
            .map(|&s| mask.p_noise(s))
            .collect(),
        p_info: scores[span.clone()]
            .iter()
            .map(|&s| mask.p_info(s))
            .collect(),
    };
    println!(
        "GASS ({} layers, {:?} normalisation) of {:?} for {}; cosine {cos:.4}",
        cfg.layers,
        cfg.norm,
        a.text,
        a.image.display()
    );
    println!(
        "  {:<16} {:>6} {:>8} {:>8}",
        "token", "score", "p_noise", "p_info"
    );
    for i in 0..ex.ids.len() {
        println!(
            "  {:<16} {:>6.3} {:>8.4} {:>8.4}",
            ex.tokens[i], ex.scores[i], ex.p_noise[i], ex.p_info[i]
        );
    }
    if let Some(p) = &a.json {
        let mut s = serde_json::to_string_pretty(&ex)?;
        s.push('\n');
        write_atomic(p, s.as_bytes()).map_err(|m| anyhow::anyhow!("{}: {m}", p.display()))?;
        println!("wrote {}", p.display());
    }
    if let Some(p) = &a.html {
        let img = std::fs::read(&a.image).with_context(|| format!("{}", a.image.display()))?;
        let word_end: Vec<bool> = ex
            .ids
            .iter()
            .map(|&id| tok.vocab_token(id).is_some_and(|t| t.ends_with("</w>")))
            .collect();
        let html = explain_html(
            &a.text,
            &a.image.display().to_string(),
            &img,
            &ex,
            &word_end,
            cos,
        );
        write_atomic(p, html.as_bytes()).map_err(|m| anyhow::anyhow!("{}: {m}", p.display()))?;
        println!("wrote {}", p.display());
    }
    Ok(())
}

/// The `explain` page: the image, the caption with each token's background coloured by its
/// score (hover shows the numbers), a colour legend and the table of values.
pub fn explain_html(
    text: &str,
    image_name: &str,
    image: &[u8],
    ex: &Explanation,
    word_end: &[bool],
    cos: f32,
) -> String {
    let mut b = String::new();
    b.push_str("<h1>GASS explanation</h1>\n");
    b.push_str(&format!(
        "<div class=\"q\">caption: <b>{}</b><br>image: {} &middot; cosine {cos:.4}</div>\n",
        escape(text),
        escape(image_name)
    ));
    b.push_str("<div style=\"display:flex;gap:24px;align-items:flex-start\">\n");
    b.push_str(&format!(
        "<img id=\"image\" alt=\"{}\" src=\"{}\" style=\"height:256px\">\n<div>\n<p id=\"caption\">",
        escape(image_name),
        data_uri(image)
    ));
    for (i, t) in ex.tokens.iter().enumerate() {
        b.push_str(&format!(
            "<span class=\"tok\" data-score=\"{:.4}\" title=\"score {:.3}, p_noise {:.3}, p_info {:.3}\" style=\"background:{}\">{}</span>",
            ex.scores[i],
            ex.scores[i],
            ex.p_noise[i],
            ex.p_info[i],
            score_colour(ex.scores[i]),
            escape(t)
        ));
        if word_end.get(i).copied().unwrap_or(true) {
            b.push(' ');
        }
    }
    b.push_str("</p>\n<p class=\"legend\">score: 0 (noise) ");
    for k in 0..=10 {
        b.push_str(&format!(
            "<span style=\"background:{}\"></span>",
            score_colour(k as f32 / 10.0)
        ));
    }
    b.push_str(" 1 (informative)</p>\n<table>\n<tr><th>token</th><th>id</th><th>score</th><th>p_noise</th><th>p_info</th></tr>\n");
    for i in 0..ex.tokens.len() {
        b.push_str(&format!(
            "<tr><td style=\"text-align:left\">{}</td><td>{}</td><td>{:.3}</td><td>{:.4}</td><td>{:.4}</td></tr>\n",
            escape(&ex.tokens[i]),
            ex.ids[i],
            ex.scores[i],
            ex.p_noise[i],
            ex.p_info[i]
        ));
    }
    b.push_str("</table>\n</div>\n</div>\n");
    page(&format!("gadms explain: {text}"), &b)
}
