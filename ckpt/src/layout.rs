//! Key layouts: our native names ↔ OpenAI/open_clip ↔ Hugging Face `CLIPModel`.
//!
//! Native = OpenAI names with two differences: attention keeps `q_proj`/`k_proj`/`v_proj`
//! (OpenAI fuses them into `in_proj_weight` [3W, W] / `in_proj_bias` [3W]) and
//! `visual.conv1.weight` is stored flat as [W, 3·P·P] (OpenAI: [W, 3, P, P]).

use crate::error::{CkptError, Result};
use crate::tensors::{Array, TensorMap};

/// A checkpoint key layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// OpenAI CLIP / open_clip / IRRA names (`visual.conv1.weight`, `in_proj_weight`, …).
    OpenAi,
    /// Hugging Face `CLIPModel` names (`text_model.…`, `vision_model.…`).
    Hf,
    /// gadms' in-memory names (split q/k/v, flat conv1); never written to disk.
    Native,
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Layout::OpenAi => "openai/open_clip",
            Layout::Hf => "hf-clip",
            Layout::Native => "gadms-native",
        })
    }
}

/// Prefixes other training codes put in front of CLIP keys (IRRA: `base_model.`, DDP: `module.`).
const STRIP_PREFIXES: [&str; 3] = ["module.", "base_model.", "model."];

/// Removes a common wrapper prefix such as `base_model.` or `module.` from every key.
pub fn strip_prefix(mut map: TensorMap) -> TensorMap {
    for p in STRIP_PREFIXES {
        if !map.tensors.is_empty() && map.tensors.keys().all(|k| k.starts_with(p)) {
            map.tensors = std::mem::take(&mut map.tensors)
                .into_iter()
                .map(|(k, v)| (k[p.len()..].to_string(), v))
                .collect();
        }
    }
    map
}

/// Decides the layout from the key set.
pub fn detect(map: &TensorMap) -> Result<Layout> {
    let has = |k: &str| map.tensors.contains_key(k);
    if has("text_model.embeddings.token_embedding.weight")
        || has("vision_model.embeddings.patch_embedding.weight")
    {
        return Ok(Layout::Hf);
    }
    if has("visual.conv1.weight") || has("token_embedding.weight") {
        let fused = map
            .tensors
            .keys()
            .any(|k| k.ends_with("attn.in_proj_weight"));
        let split = map
            .tensors
            .keys()
            .any(|k| k.ends_with("attn.q_proj.weight"));
        return Ok(if split && !fused {
            Layout::Native
        } else {
            Layout::OpenAi
        });
    }
    let sample: Vec<&String> = map.tensors.keys().take(4).collect();
    Err(CkptError::UnknownLayout {
        path: map.origin.clone(),
        detail: format!("{} tensors, first keys {sample:?}", map.tensors.len()),
    })
}

fn transpose(a: &Array) -> Array {
    let (r, c) = (a.shape[0], a.shape[1]);
    let mut out = vec![0.0; r * c];
    for i in 0..r {
        for j in 0..c {
            out[j * r + i] = a.data[i * c + j];
        }
    }
    Array::new(vec![c, r], out)
}

fn shape_err(map: &TensorMap, key: &str, a: &Array, form: &str) -> CkptError {
    CkptError::Form {
        path: map.origin.clone(),
        key: key.to_string(),
        found: a.shape.clone(),
        form: form.to_string(),
    }
}

/// Records that native `key` came from the file's `file_key` of shape `shape`.
fn note_source(out: &mut TensorMap, key: &str, file_key: &str, shape: &[usize]) {
    out.sources
        .insert(key.to_string(), (file_key.to_string(), shape.to_vec()));
}

/// `expected`, a native shape of native `key`, as the file's layout holds that tensor
/// (`file_key`): fused q/k/v projections three times as tall, `conv1` [W, 3·P·P] as
/// [W, 3, P, P], Hugging Face projections transposed.
pub fn file_shape(key: &str, file_key: &str, expected: &[usize]) -> Vec<usize> {
    let mut e = expected.to_vec();
    if file_key.ends_with("attn.in_proj_weight") || file_key.ends_with("attn.in_proj_bias") {
        if let Some(rows) = e.first_mut() {
            *rows *= 3;
        }
    } else if key == "visual.conv1.weight" && e.len() == 2 {
        let p = ((e[1] / 3) as f64).sqrt().round() as usize;
        if 3 * p * p == e[1] {
            e = vec![e[0], 3, p, p];
        }
    } else if file_key.ends_with("projection.weight") && e.len() == 2 {
        e.reverse();
    }
    e
}

/// `e` with the key and both shapes of a [`CkptError::Shape`] or [`CkptError::WrongPreset`]
/// said as the file holds the tensor ([`TensorMap::sources`] of `native`): the file's key, its
/// shape in the file, and the model's shape in the file's layout.
pub fn in_file_terms(e: CkptError, native: &TensorMap) -> CkptError {
    let tr = |key: String, found: Vec<usize>, expected: Vec<usize>| match native.sources.get(&key) {
        Some((fk, fs)) => {
            let expected = file_shape(&key, fk, &expected);
            (fk.clone(), fs.clone(), expected)
        }
        None => (key, found, expected),
    };
    match e {
        CkptError::Shape {
            path,
            key,
            found,
            expected,
            hint,
        } => {
            let (key, found, expected) = tr(key, found, expected);
            CkptError::Shape {
                path,
                key,
                found,
                expected,
                hint,
            }
        }
        CkptError::WrongPreset {
            path,
            file_preset,
            model_preset,
            key,
            found,
            expected,
        } => {
            let (key, found, expected) = tr(key, found, expected);
            CkptError::WrongPreset {
                path,
                file_preset,
                model_preset,
                key,
                found,
                expected,
            }
        }
        other => other,
    }
}

/// OpenAI/open_clip → native: split fused attention projections, flatten `conv1`, drop
/// `logit_scale` (GA-DMS uses a fixed temperature) and the TorchScript scalars.
pub fn openai_to_native(map: TensorMap) -> Result<TensorMap> {
    let mut out = TensorMap {
        metadata: map.metadata.clone(),
        origin: map.origin.clone(),
        dtypes: map.dtypes.clone(),
        ..Default::default()
    };
    for (key, a) in &map.tensors {
        if let Some(base) = key.strip_suffix("attn.in_proj_weight") {
            if a.shape.len() != 2 || a.shape[0] != 3 * a.shape[1] {
                return Err(shape_err(&map, key, a, "[3W, W] (q, k, v stacked)"));
            }
            let n = a.shape[1] * a.shape[1];
            for (i, p) in ["q_proj", "k_proj", "v_proj"].iter().enumerate() {
                let part = a.data[i * n..(i + 1) * n].to_vec();
                let k = format!("{base}attn.{p}.weight");
                note_source(&mut out, &k, key, &a.shape);
                out.insert(k, Array::new(vec![a.shape[1]; 2], part));
            }
        } else if let Some(base) = key.strip_suffix("attn.in_proj_bias") {
            if a.shape.len() != 1 || a.shape[0] % 3 != 0 {
                return Err(shape_err(&map, key, a, "[3W] (q, k, v stacked)"));
            }
            let w = a.shape[0] / 3;
            for (i, p) in ["q_proj", "k_proj", "v_proj"].iter().enumerate() {
                let part = a.data[i * w..(i + 1) * w].to_vec();
                let k = format!("{base}attn.{p}.bias");
                note_source(&mut out, &k, key, &a.shape);
                out.insert(k, Array::new(vec![w], part));
            }
        } else if key == "visual.conv1.weight" {
            if a.shape.len() != 4 {
                return Err(shape_err(&map, key, a, "[W, 3, P, P]"));
            }
            let flat = a.shape[1..].iter().product();
            note_source(&mut out, key, key, &a.shape);
            out.insert(
                key.clone(),
                Array::new(vec![a.shape[0], flat], a.data.clone()),
            );
        } else if matches!(
            key.as_str(),
            "logit_scale" | "input_resolution" | "context_length" | "vocab_size"
        ) {
            continue;
        } else {
            out.insert(key.clone(), a.clone());
        }
    }
    Ok(out)
}

/// Native → OpenAI/open_clip: fuse q/k/v into `in_proj_*`, reshape `conv1` to
/// [W, 3, P, P] (`patch` = P) and add `logit_scale = ln(1/τ)`.
pub fn native_to_openai(map: &TensorMap, patch: usize, logit_scale: f32) -> TensorMap {
    let mut out = TensorMap {
        metadata: map.metadata.clone(),
        origin: map.origin.clone(),
        ..Default::default()
    };
    for (key, a) in &map.tensors {
        if let Some(base) = key.strip_suffix("attn.q_proj.weight") {
            out.insert(
                format!("{base}attn.in_proj_weight"),
                fuse(map, base, "weight"),
            );
        } else if let Some(base) = key.strip_suffix("attn.q_proj.bias") {
            out.insert(format!("{base}attn.in_proj_bias"), fuse(map, base, "bias"));
        } else if key.contains("attn.k_proj.") || key.contains("attn.v_proj.") {
            continue;
        } else if key == "visual.conv1.weight" {
            let shape = vec![a.shape[0], 3, patch, patch];
            out.insert(key.clone(), Array::new(shape, a.data.clone()));
        } else {
            out.insert(key.clone(), a.clone());
        }
    }
    out.insert("logit_scale", Array::new(vec![], vec![logit_scale]));
    out
}

fn fuse(map: &TensorMap, base: &str, what: &str) -> Array {
    let parts: Vec<&Array> = ["q_proj", "k_proj", "v_proj"]
        .iter()
        .map(|p| &map.tensors[&format!("{base}attn.{p}.{what}")])
        .collect();
    let mut shape = parts[0].shape.clone();
    shape[0] *= 3;
    let data = parts.iter().flat_map(|a| a.data.iter().copied()).collect();
    Array::new(shape, data)
}

/// HF layer-part renames (HF suffix, native suffix).
const HF_BLOCK: [(&str, &str); 6] = [
    ("layer_norm1.", "ln_1."),
    ("layer_norm2.", "ln_2."),
    ("self_attn.", "attn."),
    ("mlp.fc1.", "mlp.c_fc."),
    ("mlp.fc2.", "mlp.c_proj."),
    ("", ""),
];

/// HF top-level renames (HF key, native key) for tensors copied as they are.
const HF_PLAIN: [(&str, &str); 9] = [
    (
        "text_model.embeddings.token_embedding.weight",
        "token_embedding.weight",
    ),
    (
        "text_model.embeddings.position_embedding.weight",
        "positional_embedding",
    ),
    ("text_model.final_layer_norm.weight", "ln_final.weight"),
    ("text_model.final_layer_norm.bias", "ln_final.bias"),
    (
        "vision_model.embeddings.class_embedding",
        "visual.class_embedding",
    ),
    (
        "vision_model.embeddings.position_embedding.weight",
        "visual.positional_embedding",
    ),
    ("vision_model.pre_layrnorm.weight", "visual.ln_pre.weight"),
    ("vision_model.pre_layrnorm.bias", "visual.ln_pre.bias"),
    (
        "vision_model.post_layernorm.weight",
        "visual.ln_post.weight",
    ),
];

fn hf_block_key(rest: &str) -> Option<String> {
    // rest = "L.<part>" → "resblocks.L.<native part>"
    let (layer, part) = rest.split_once('.')?;
    let (from, to) = HF_BLOCK.iter().find(|(f, _)| part.starts_with(f))?;
    Some(format!("resblocks.{layer}.{to}{}", &part[from.len()..]))
}

/// HF key → native key and whether the 2-D tensor must be transposed (projections).
fn hf_to_native_key(key: &str) -> Option<(String, bool)> {
    if let Some((_, n)) = HF_PLAIN.iter().find(|(h, _)| *h == key) {
        return Some((n.to_string(), false));
    }
    match key {
        "vision_model.post_layernorm.bias" => return Some(("visual.ln_post.bias".into(), false)),
        "text_projection.weight" => return Some(("text_projection".into(), true)),
        "visual_projection.weight" => return Some(("visual.proj".into(), true)),
        "vision_model.embeddings.patch_embedding.weight" => {
            return Some(("visual.conv1.weight".into(), false));
        }
        _ => {}
    }
    if let Some(rest) = key.strip_prefix("text_model.encoder.layers.") {
        return hf_block_key(rest).map(|k| (format!("transformer.{k}"), false));
    }
    if let Some(rest) = key.strip_prefix("vision_model.encoder.layers.") {
        return hf_block_key(rest).map(|k| (format!("visual.transformer.{k}"), false));
    }
    None
}

/// Keys HF files may hold that carry no weights we use.
fn hf_ignored(key: &str) -> bool {
    key == "logit_scale" || key.ends_with("embeddings.position_ids")
}

/// HF `CLIPModel` → native. Unknown keys are an error naming them.
pub fn hf_to_native(map: TensorMap) -> Result<TensorMap> {
    let mut out = TensorMap {
        metadata: map.metadata.clone(),
        origin: map.origin.clone(),
        dtypes: map.dtypes.clone(),
        ..Default::default()
    };
    let mut unknown = Vec::new();
    for (key, a) in &map.tensors {
        if hf_ignored(key) {
            continue;
        }
        let Some((nk, tr)) = hf_to_native_key(key) else {
            unknown.push(key.clone());
            continue;
        };
        note_source(&mut out, &nk, key, &a.shape);
        let a = if tr { transpose(a) } else { a.clone() };
        let a = if nk == "visual.conv1.weight" {
            let flat = a.shape[1..].iter().product();
            Array::new(vec![a.shape[0], flat], a.data)
        } else {
            a
        };
        out.insert(nk, a);
    }
    if !unknown.is_empty() {
        return Err(CkptError::Unexpected {
            path: map.origin.clone(),
            keys: unknown,
        });
    }
    Ok(out)
}

/// Native → HF `CLIPModel` names (conv1 reshaped to [W, 3, P, P], projections transposed,
/// `logit_scale` added).
pub fn native_to_hf(map: &TensorMap, patch: usize, logit_scale: f32) -> TensorMap {
    // Build the inverse of hf_to_native_key over the keys we have.
    let mut out = TensorMap {
        metadata: map.metadata.clone(),
        origin: map.origin.clone(),
        ..Default::default()
    };
    for (key, a) in &map.tensors {
        let (hk, tr) = native_to_hf_key(key);
        let a = if tr { transpose(a) } else { a.clone() };
        let a = if key == "visual.conv1.weight" {
            Array::new(vec![a.shape[0], 3, patch, patch], a.data)
        } else {
            a
        };
        out.insert(hk, a);
    }
    out.insert("logit_scale", Array::new(vec![], vec![logit_scale]));
    out
}

fn native_block_to_hf(rest: &str) -> String {
    // rest = "L.<native part>"
    let (layer, part) = rest.split_once('.').unwrap_or((rest, ""));
    let (from, to) = HF_BLOCK
        .iter()
        .map(|(h, n)| (*n, *h))
        .find(|(n, _)| part.starts_with(n))
        .unwrap_or(("", ""));
    format!("{layer}.{to}{}", &part[from.len()..])
}

fn native_to_hf_key(key: &str) -> (String, bool) {
    if let Some((h, _)) = HF_PLAIN.iter().find(|(_, n)| *n == key) {
        return (h.to_string(), false);
    }
    match key {
        "visual.ln_post.bias" => return ("vision_model.post_layernorm.bias".into(), false),
        "text_projection" => return ("text_projection.weight".into(), true),
        "visual.proj" => return ("visual_projection.weight".into(), true),
        "visual.conv1.weight" => {
            return (
                "vision_model.embeddings.patch_embedding.weight".into(),
                false,
            );
        }
        _ => {}
    }
    if let Some(rest) = key.strip_prefix("visual.transformer.resblocks.") {
        return (
            format!("vision_model.encoder.layers.{}", native_block_to_hf(rest)),
            false,
        );
    }
    if let Some(rest) = key.strip_prefix("transformer.resblocks.") {
        return (
            format!("text_model.encoder.layers.{}", native_block_to_hf(rest)),
            false,
        );
    }
    (key.to_string(), false)
}

/// Converts any supported layout to native names.
pub fn to_native(map: TensorMap) -> Result<(Layout, TensorMap)> {
    let map = strip_prefix(map);
    let layout = detect(&map)?;
    let native = match layout {
        Layout::OpenAi => openai_to_native(map)?,
        Layout::Hf => hf_to_native(map)?,
        Layout::Native => map,
    };
    Ok((layout, native))
}
