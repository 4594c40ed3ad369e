//! Whole-model operations: read any supported file into a CLIP type (with preset inference
//! and the position-grid resize), save gadms files, export open_clip and HF directories.

use crate::bridge::{map_to_module, module_to_map};
use crate::error::{CkptError, Result};
use crate::layout::{Layout, in_file_terms, native_to_hf, native_to_openai, to_native};
use crate::resize::{resize_pos_embed, square_grid};
use crate::tensors::{TensorMap, check_finite, read_file, write_atomic, write_file};
use dfdx::nn::tensor_collection::TensorCollection;
use dfdx::prelude::Device;
use gadms_nn::{ClipSpec, Float, PRESETS};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// GA-DMS' fixed temperature τ = 0.02, written as `logit_scale = ln(1/τ)` on export.
pub const LOGIT_SCALE: f32 = 3.912_023; // ln(50)

/// Magic and version written into the metadata of every gadms weight file.
pub const MAGIC: &str = "gadms-clip";
/// Weight-file format version.
pub const FORMAT_VERSION: &str = "1";

/// A weight file read and converted to native names.
#[derive(Debug)]
pub struct Weights {
    /// The layout the file was in.
    pub layout: Layout,
    /// Tensors under native names.
    pub native: TensorMap,
}

/// Reads a weight file in any supported layout and converts it to native names. A tensor
/// holding NaN or ±Inf is refused ([`CkptError::NonFinite`], naming the file's key).
pub fn read_weights(path: &Path) -> Result<Weights> {
    let map = read_file(path)?;
    check_finite(&map)?;
    let (layout, native) = to_native(map)?;
    Ok(Weights { layout, native })
}

fn dims(map: &TensorMap, key: &str) -> Result<Vec<usize>> {
    map.get(key)
        .map(|a| a.shape.clone())
        .ok_or_else(|| CkptError::Missing {
            path: map.origin.clone(),
            key: key.to_string(),
            expected: vec![],
            hint: "needed to tell the model size".into(),
        })
}

fn count_layers(map: &TensorMap, prefix: &str) -> usize {
    (0..)
        .take_while(|i| {
            map.tensors
                .contains_key(&format!("{prefix}{i}.ln_1.weight"))
        })
        .count()
}

/// Sizes readable from the tensors (image size excepted: the grid may be resized).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sizes {
    /// Vision width, heads unknown from shapes (taken from the matching preset).
    pub vision_width: usize,
    /// Patch side.
    pub patch: usize,
    /// Vision MLP width.
    pub vision_mlp: usize,
    /// Vision depth.
    pub vision_layers: usize,
    /// Vision position rows (grid + CLS).
    pub vision_positions: usize,
    /// Vocabulary.
    pub vocab: usize,
    /// Context.
    pub ctx: usize,
    /// Text width.
    pub text_width: usize,
    /// Text MLP width.
    pub text_mlp: usize,
    /// Text depth.
    pub text_layers: usize,
    /// Joint embedding.
    pub embed: usize,
}

/// Reads the model sizes from native tensors.
pub fn sizes(map: &TensorMap) -> Result<Sizes> {
    let conv = dims(map, "visual.conv1.weight")?;
    let vfc = dims(map, "visual.transformer.resblocks.0.mlp.c_fc.weight")?;
    let tok = dims(map, "token_embedding.weight")?;
    let tfc = dims(map, "transformer.resblocks.0.mlp.c_fc.weight")?;
    let tproj = dims(map, "text_projection")?;
    let flat = conv.get(1).copied().unwrap_or(0);
    Ok(Sizes {
        vision_width: conv[0],
        patch: ((flat / 3) as f64).sqrt().round() as usize,
        vision_mlp: vfc[0],
        vision_layers: count_layers(map, "visual.transformer.resblocks."),
        vision_positions: dims(map, "visual.positional_embedding")?[0],
        vocab: tok[0],
        ctx: dims(map, "positional_embedding")?[0],
        text_width: tok[1],
        text_mlp: tfc[0],
        text_layers: count_layers(map, "transformer.resblocks."),
        embed: tproj[1],
    })
}

fn fits(s: &Sizes, p: &ClipSpec) -> bool {
    s.vision_width == p.vision.width
        && s.patch == p.vision.patch
        && s.vision_mlp == p.vision.mlp
        && s.vision_layers == p.vision.layers
        && s.vocab == p.text.vocab
        && s.ctx == p.text.ctx
        && s.text_width == p.text.width
        && s.text_mlp == p.text.mlp
        && s.text_layers == p.text.layers
        && s.embed == p.vision.embed
}

/// The preset whose sizes match the tensors (image size may differ: the grid is resized).
pub fn infer_preset(map: &TensorMap) -> Result<ClipSpec> {
    let s = sizes(map)?;
    PRESETS
        .iter()
        .find(|p| fits(&s, p))
        .copied()
        .ok_or_else(|| CkptError::NoPreset {
            path: map.origin.clone(),
            detail: format!("{s:?}; known presets: vit-b-16, tiny{}", custom_note(map)),
        })
}

/// Advice for a file saved from a custom (non-preset) model type, e.g. one made with
/// `gadms_nn::surgery`: the command line can only instantiate the preset types.
fn custom_note(map: &TensorMap) -> &'static str {
    if map.metadata.get("gadms.preset").map(String::as_str) == Some("custom") {
        ". This file was saved from a custom model type (e.g. made with gadms_nn::surgery); \
         the command line runs the preset types only, so embed or export it from Rust with the \
         type that made it (gadms_nn::ClipInference, gadms_ckpt::export_open_clip / export_hf; \
         README \"Model surgery\")"
    } else {
        ""
    }
}

/// The grid of the file's vision positions: from gadms metadata, else a square, else the
/// target grid when the counts agree.
fn source_grid(map: &TensorMap, rows: usize, target: (usize, usize)) -> Result<(usize, usize)> {
    if let Some(g) = map.metadata.get("gadms.grid").and_then(|g| parse_grid(g))
        && g.0 * g.1 + 1 == rows
    {
        return Ok(g);
    }
    if target.0 * target.1 + 1 == rows {
        return Ok(target);
    }
    let key = "visual.positional_embedding";
    let found = map.get(key).map_or(vec![rows], |a| a.shape.clone());
    let mut expected = found.clone();
    expected[0] = target.0 * target.1 + 1;
    square_grid(rows).ok_or_else(|| CkptError::Shape {
        path: map.origin.clone(),
        key: key.into(),
        found,
        expected,
        hint: " (the grid is neither square nor recorded in the file's gadms.grid metadata, so \
               it cannot be resized)"
            .into(),
    })
}

fn parse_grid(s: &str) -> Option<(usize, usize)> {
    let (h, w) = s.split_once('x')?;
    Some((h.trim().parse().ok()?, w.trim().parse().ok()?))
}

/// Resizes `visual.positional_embedding` to `spec`'s grid if it differs; returns a note.
pub fn fit_grid(map: &mut TensorMap, spec: &ClipSpec) -> Result<Option<String>> {
    let key = "visual.positional_embedding";
    let Some(pos) = map.get(key).filter(|p| p.shape.len() == 2) else {
        // (a tensor of another rank is reported by the strict load, with both shapes)
        return Ok(None);
    };
    let target = spec.vision.grid();
    let rows = pos.shape[0];
    let old = source_grid(map, rows, target)?;
    if old == target {
        return Ok(None);
    }
    let resized = resize_pos_embed(map.get(key).expect("checked"), old, target);
    map.insert(key, resized);
    Ok(Some(format!(
        "resized the vision position grid {}x{} -> {}x{} (bilinear, align_corners=False, CLS kept)",
        old.0, old.1, target.0, target.1
    )))
}

/// What loading did.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// The source layout.
    pub layout: Layout,
    /// Notes for the user (grid resize, …).
    pub notes: Vec<String>,
}

/// Loads a weight file of any layout into `model` (whose sizes are `spec`), strictly.
pub fn load_clip<E: Float, D: Device<E>, M: TensorCollection<E, D>>(
    model: &mut M,
    spec: &ClipSpec,
    path: &Path,
) -> Result<LoadReport> {
    load_clip_weights(model, spec, read_weights(path)?)
}

/// Loads already-read weights into `model` (whose sizes are `spec`), strictly; resizes the
/// position grid when the file's grid differs.
pub fn load_clip_weights<E: Float, D: Device<E>, M: TensorCollection<E, D>>(
    model: &mut M,
    spec: &ClipSpec,
    weights: Weights,
) -> Result<LoadReport> {
    let Weights { layout, mut native } = weights;
    if let Ok(p) = infer_preset(&native)
        && p.name != spec.name
        && spec.name != "custom"
    {
        let (key, found, expected) = first_mismatch(&native, model);
        return Err(in_file_terms(
            CkptError::WrongPreset {
                path: native.origin.clone(),
                file_preset: p.name.into(),
                model_preset: spec.name.into(),
                key,
                found,
                expected,
            },
            &native,
        ));
    }
    // Shape errors name the tensor as the file holds it (key, shape, layout).
    let hint =
        |e: CkptError, native: &TensorMap| in_file_terms(add_preset_hint(e, native, spec), native);
    let mut notes = Vec::new();
    notes.extend(fit_grid(&mut native, spec).map_err(|e| hint(e, &native))?);
    map_to_module(&native, model).map_err(|e| hint(e, &native))?;
    Ok(LoadReport { layout, notes })
}

/// The first key whose shape in `native` differs from the model's.
fn first_mismatch<E: Float, D: Device<E>, M: TensorCollection<E, D>>(
    native: &TensorMap,
    model: &M,
) -> (String, Vec<usize>, Vec<usize>) {
    crate::bridge::module_shapes(model)
        .into_iter()
        .find_map(|(k, want)| {
            let found = native.get(&k)?.shape.clone();
            (found != want).then_some((k, found, want))
        })
        .unwrap_or_default()
}

fn add_preset_hint(e: CkptError, native: &TensorMap, spec: &ClipSpec) -> CkptError {
    match e {
        CkptError::Shape {
            path,
            key,
            found,
            expected,
            ..
        } => {
            let hint = match infer_preset(native) {
                Ok(p) if p.name == spec.name => String::new(),
                Ok(p) => format!(
                    "; the file is a '{}' model, not '{}': pass --preset {}",
                    p.name, spec.name, p.name
                ),
                Err(_) => format!(
                    "; the file fits no preset and this model is '{}'",
                    spec.name
                ),
            };
            CkptError::Shape {
                path,
                key,
                found,
                expected,
                hint,
            }
        }
        other => other,
    }
}

/// gadms metadata for a model of `spec`.
pub fn metadata(spec: &ClipSpec) -> BTreeMap<String, String> {
    let (gh, gw) = spec.vision.grid();
    BTreeMap::from([
        ("gadms.magic".into(), MAGIC.into()),
        ("gadms.version".into(), FORMAT_VERSION.into()),
        ("gadms.preset".into(), spec.name.into()),
        ("gadms.grid".into(), format!("{gh}x{gw}")),
        ("gadms.config".into(), open_clip_model_cfg(spec).to_string()),
    ])
}

/// Saves `model` as an OpenAI/open_clip-layout safetensors file (atomic, with metadata).
pub fn save_clip<E: Float, D: Device<E>, M: TensorCollection<E, D>>(
    model: &M,
    spec: &ClipSpec,
    path: &Path,
) -> Result<()> {
    let native = module_to_map(model);
    let openai = native_to_openai(&native, spec.vision.patch, LOGIT_SCALE);
    write_file(path, &openai, &metadata(spec))
}

/// open_clip model config (`open_clip/model_configs/*.json` form).
pub fn open_clip_model_cfg(spec: &ClipSpec) -> serde_json::Value {
    let v = &spec.vision;
    let t = &spec.text;
    serde_json::json!({
        "embed_dim": spec.embed(),
        "quick_gelu": true,
        "vision_cfg": {
            "image_size": [v.image_h, v.image_w],
            "layers": v.layers,
            "width": v.width,
            "head_width": v.width / v.heads,
            "mlp_ratio": v.mlp as f64 / v.width as f64,
            "patch_size": v.patch,
        },
        "text_cfg": {
            "context_length": t.ctx,
            "vocab_size": t.vocab,
            "width": t.width,
            "heads": t.heads,
            "layers": t.layers,
            "mlp_ratio": t.mlp as f64 / t.width as f64,
        },
    })
}

/// CLIP normalisation mean (RGB).
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// CLIP normalisation std (RGB), written as OpenAI's CLIP and open_clip write it (the f32
/// value is the same with fewer digits).
#[allow(clippy::excessive_precision)]
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

fn write_json(path: &Path, v: &serde_json::Value) -> Result<()> {
    let s = serde_json::to_string_pretty(v).expect("json");
    write_atomic(path, s.as_bytes()).map_err(|msg| CkptError::Write {
        path: path.to_path_buf(),
        msg,
    })
}

/// Files an export wrote.
#[derive(Debug, Clone)]
pub struct ExportReport {
    /// Paths written.
    pub files: Vec<PathBuf>,
    /// Notes for the user.
    pub notes: Vec<String>,
}

/// Exports to `dir/open_clip_model.safetensors` + `dir/open_clip_config.json` (the layout
/// `open_clip.create_model('local-dir:DIR')` reads; the config's `model_cfg` is also accepted by
/// `open_clip.model.CLIP(**cfg)`).
pub fn export_open_clip<E: Float, D: Device<E>, M: TensorCollection<E, D>>(
    model: &M,
    spec: &ClipSpec,
    dir: &Path,
) -> Result<ExportReport> {
    let w = dir.join("open_clip_model.safetensors");
    let c = dir.join("open_clip_config.json");
    save_clip(model, spec, &w)?;
    let cfg = serde_json::json!({
        "model_cfg": open_clip_model_cfg(spec),
        "preprocess_cfg": {"mean": CLIP_MEAN, "std": CLIP_STD, "interpolation": "bilinear", "resize_mode": "squash"},
    });
    write_json(&c, &cfg)?;
    Ok(ExportReport {
        files: vec![w, c],
        notes: vec![],
    })
}

/// Exports to `dir/model.safetensors` + `dir/config.json` for `transformers.CLIPModel`.
/// HF CLIP only knows square grids: a non-square grid (24×8) is resampled to a square one of
/// side max(h, w) (24×24, image size 384) and a note says so.
pub fn export_hf<E: Float, D: Device<E>, M: TensorCollection<E, D>>(
    model: &M,
    spec: &ClipSpec,
    dir: &Path,
) -> Result<ExportReport> {
    let mut native = module_to_map(model);
    let (gh, gw) = spec.vision.grid();
    let side = gh.max(gw);
    let mut notes = Vec::new();
    if gh != gw {
        let key = "visual.positional_embedding";
        let pos = resize_pos_embed(
            native.get(key).expect("model has it"),
            (gh, gw),
            (side, side),
        );
        native.insert(key, pos);
        notes.push(format!(
            "HF CLIP needs a square grid: resampled the {gh}x{gw} position grid to {side}x{side} \
             (image size {}x{}); use 384x128 inputs with interpolate_pos_encoding=True or pad to square",
            side * spec.vision.patch,
            side * spec.vision.patch
        ));
    }
    let hf = native_to_hf(&native, spec.vision.patch, LOGIT_SCALE);
    let w = dir.join("model.safetensors");
    let c = dir.join("config.json");
    write_file(&w, &hf, &metadata(spec))?;
    write_json(&c, &hf_config(spec, side * spec.vision.patch))?;
    Ok(ExportReport {
        files: vec![w, c],
        notes,
    })
}

/// `transformers.CLIPConfig` JSON for `spec` with a square image of `image_size`.
pub fn hf_config(spec: &ClipSpec, image_size: usize) -> serde_json::Value {
    let v = &spec.vision;
    let t = &spec.text;
    serde_json::json!({
        "architectures": ["CLIPModel"],
        "model_type": "clip",
        "projection_dim": spec.embed(),
        "logit_scale_init_value": LOGIT_SCALE,
        "torch_dtype": "float32",
        "text_config": {
            "model_type": "clip_text_model",
            "vocab_size": t.vocab,
            "hidden_size": t.width,
            "intermediate_size": t.mlp,
            "num_hidden_layers": t.layers,
            "num_attention_heads": t.heads,
            "max_position_embeddings": t.ctx,
            "hidden_act": "quick_gelu",
            "layer_norm_eps": 1e-5,
            "projection_dim": spec.embed(),
            "bos_token_id": 49406,
            "eos_token_id": 49407,
            "pad_token_id": 0,
        },
        "vision_config": {
            "model_type": "clip_vision_model",
            "hidden_size": v.width,
            "intermediate_size": v.mlp,
            "num_hidden_layers": v.layers,
            "num_attention_heads": v.heads,
            "image_size": image_size,
            "patch_size": v.patch,
            "num_channels": 3,
            "hidden_act": "quick_gelu",
            "layer_norm_eps": 1e-5,
            "projection_dim": spec.embed(),
        },
    })
}
